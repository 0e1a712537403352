"""Repeatability: the same item generated twice in one process is bit-identical
(``conformance/test_repeatability.py``)."""

from __future__ import annotations

from typing import Any

from conformance.cases import Item
from conformance.checks import CheckKind, register
from conformance.core import Check, Tier
from conformance.session import Comparison, ConformanceSession, Verdict


class Repeatable(CheckKind):
    check = Check.REPEATABLE
    localizable = True

    def run(self, session: ConformanceSession, subject: Item, variant: Any) -> Verdict:
        """A second generation against the process's first, at the exact tier."""
        first = session.generation(subject)
        second = session.generate_fresh(subject)
        return session.judge(Comparison(
            subject, Check.REPEATABLE, second, first.image, first.trace, Tier.EXACT,
            "the first generation in this process"))


KIND = register(Repeatable())
