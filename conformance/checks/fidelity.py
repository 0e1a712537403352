"""Fidelity: each reduced precision against fp32 on the same device, within the
``[fidelity.*]`` bounds (``conformance/test_fidelity.py``)."""

from __future__ import annotations

from typing import Any

from conformance.cases import Item
from conformance.checks import CheckKind, Context, Param, item_param, register
from conformance.core import Check, Tier
from conformance.precision import REFERENCE_PRECISION
from conformance.session import Comparison, ConformanceSession, Verdict


class Fidelity(CheckKind):
    check = Check.FIDELITY
    localizable = True
    may_be_empty = True  # e.g. --precision fp32: nothing to compare, not an error

    def params(self, ctx: Context, *args: Any) -> list[Param]:
        """Every item but the reference precision's."""
        return [item_param(i) for i in ctx.items() if i.precision != REFERENCE_PRECISION]

    def run(self, session: ConformanceSession, subject: Item, variant: Any) -> Verdict:
        """This precision against fp32 on the same device, at the fidelity tier."""
        gen = session.generation(subject)
        ref = session.generation(session.reference_item(subject))
        return session.judge(Comparison(
            subject, Check.FIDELITY, gen, ref.image, ref.trace, Tier.FIDELITY,
            f"{REFERENCE_PRECISION} on this device"))

    def baseline(self, session: ConformanceSession, item: Item) -> Item:
        return session.reference_item(item)


KIND = register(Fidelity())
