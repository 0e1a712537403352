"""Golden match against the reference class's golden set (``--reference-class``, default
``cpu-amd-default+bf16``) at the perceptual tier (``conformance/test_golden.py``)."""

from __future__ import annotations

from typing import Any

from conformance.cases import Item
from conformance.checks import CheckKind, register
from conformance.core import Check, Status, Tier
from conformance.session import Comparison, ConformanceSession, Verdict


class Reference(CheckKind):
    check = Check.REFERENCE

    def run(self, session: ConformanceSession, subject: Item, variant: Any) -> Verdict:
        """This machine's image against the reference class's golden; skipped on a machine
        of that class (its own-class check covers it)."""
        golden_class = session.settings.reference_class
        if golden_class == session.hardware_class.name:
            return Verdict(
                Status.SKIPPED,
                f"this machine is the reference class {golden_class}; "
                "the own-class check covers it",
                golden_class=golden_class,
            )
        entry = session.store.lookup(subject, golden_class)
        if entry is None:
            return session.missing(subject, golden_class, False)
        expected = session.golden_image(subject, golden_class, entry)
        gen = session.generation(subject)
        return session.judge(Comparison(
            subject, Check.REFERENCE, gen, expected, entry.steps(), Tier.PERCEPTUAL,
            f"the {golden_class} golden", golden_class=golden_class,
            expected_sha=entry.pixel_sha256))


KIND = register(Reference())
