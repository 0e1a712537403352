"""Model against model: each case of a ``[compare.NAME]`` relation against its base case
(same prompt and seed), held to what the relation expects (``conformance/test_compare.py``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from conformance.cases import Item
from conformance.checks import CheckKind, Context, Param, item_param, register
from conformance.core import Check, Tier
from conformance.generate import Generation
from conformance.records import ComparedSide, ModelComparison
from conformance.session import Comparison, ConformanceSession, Verdict

#: the tier a compare relation's ``expect`` holds each image to
EXPECT_TIER = {"identical": Tier.EXACT, "differ": Tier.DIFFER, "close": Tier.CLOSE,
               "perceptual": Tier.PERCEPTUAL}


def _side(item: Item, gen: Generation) -> ComparedSide:
    def mib(n: int | None) -> float | None:
        return None if n is None else round(n / 2**20, 3)

    return ComparedSide(item.id, round(gen.seconds, 4), mib(gen.weights_bytes),
                        mib(gen.peak_bytes))


class Compare(CheckKind):
    check = Check.COMPARE
    argnames = ("conformance_item", "conformance_relation")
    may_be_empty = True  # a case file without [compare.*] relations has no compare test

    def params(self, ctx: Context, *args: Any) -> list[Param]:
        """The other side of each relation's pairs, in the other side's group (it reads the
        base's generation); ids read ITEM-vs-BASECASE."""
        s = ctx.settings
        return [item_param(other, rel.name, id=f"{other.id}-vs-{base.case.name}",
                           needs=(base,))
                for rel, base, other in ctx.cases.compare_pairs(s.models, s.precisions,
                                                                s.resolutions)]

    def run(self, session: ConformanceSession, subject: Item, variant: str | None) -> Verdict:
        """A case against the base case of ``[compare.<relation>]`` (same prompt and seed),
        held to what the relation expects, with both sides' time, weights and memory."""
        rel = next(r for r in session.cases.relations if r.name == variant)
        base_item = Item(session.cases.case(rel.base), subject.resolution, subject.precision)
        base, other = session.generation(base_item), session.generation(subject)
        verdict = session.judge(Comparison(
            subject, Check.COMPARE, other, base.image, base.trace, EXPECT_TIER[rel.expect],
            f"{base_item.id} (the base of [compare.{rel.name}])", variant=rel.name))
        return replace(verdict, comparison=ModelComparison(
            rel.name, rel.expect, _side(base_item, base), _side(subject, other)))


KIND = register(Compare())
