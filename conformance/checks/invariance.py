"""Invariance: changes that should not change the image, each against the plain generation
(``conformance/test_invariance.py``; the variants are :data:`conformance.generate.VARIANTS`).
"""

from __future__ import annotations

from conformance.cases import Item
from conformance.checks import CheckKind, Context, Param, item_param, register
from conformance.core import Check, Tier
from conformance.precision import REFERENCE_PRECISION
from conformance.session import Comparison, ConformanceSession, Verdict


def invariance_items(items: list[Item]) -> list[Item]:
    """One item per case for the invariance checks: the reference precision where the case
    has it (else its first precision), at the case's first resolution."""
    by_case: dict[tuple[str, str], list[Item]] = {}
    for item in items:
        by_case.setdefault((item.model, item.case.name), []).append(item)
    out = []
    for group in by_case.values():
        reference = [i for i in group if i.precision == REFERENCE_PRECISION] or group
        out.append(reference[0])
    return out


class Invariance(CheckKind):
    check = Check.INVARIANCE
    argnames = ("conformance_item", "conformance_variant")
    localizable = True

    def params(self, ctx: Context, *args: object) -> list[Param]:
        """Every variant of one item per case; ids read ITEM-VARIANT."""
        from conformance.generate import VARIANTS

        return [item_param(item, variant, id=f"{item.id}-{variant}")
                for item in invariance_items(ctx.items()) for variant in VARIANTS]

    def run(self, session: ConformanceSession, subject: Item, variant: str | None) -> Verdict:
        """The plain generation against one with ``variant`` applied, at the close tier."""
        variant = variant or ""
        base = session.generation(subject)
        other = session.generate_fresh(subject, variant)
        return session.judge(Comparison(
            subject, Check.INVARIANCE, other, base.image, base.trace, Tier.CLOSE,
            f"the generation without {variant}", variant=variant))


KIND = register(Invariance())
