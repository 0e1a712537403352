"""Golden match against this machine's own golden set (``conformance/test_golden.py``): the
golden the machine's measured identity chooses (:func:`conformance.lookup.choose`), exact
where a set's digest equals this machine's, else the nearest set at the close or perceptual
tier; recorded under this machine's class with ``--record``."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from conformance.cases import Item
from conformance.checks import CheckKind, register
from conformance.core import Check, Status, Tier
from conformance.records import GoldenChoice
from conformance.session import (
    Comparison,
    ConformanceSession,
    Verdict,
    param_changes,
    pinned_differences,
)


def own_class(session: ConformanceSession, item: Item, check: Check) -> Verdict:
    """This machine's image against the golden its identity chooses, as ``check`` (the
    own-class check, or a ``diffusion_golden`` image's)."""
    from conformance.lookup import choose

    s = session.settings
    own = session.hardware_class.name
    own_entry = session.store.lookup(item, own)
    if s.record and (own_entry is None or s.force):
        return session.record(item)
    if own_entry is not None:
        session.check_fresh(item, own, own_entry)  # a stale own golden is an error
    params = item.case.generation_params()
    size = (item.resolution.width, item.resolution.height)
    choice = choose(
        session.store, item, own, session.identity,
        lambda e: pinned_differences(session.fingerprint, e.fingerprint),
        fits=lambda e: not param_changes(params, e.params) and (e.width, e.height) == size,
    )
    if choice is None:
        return session.missing(item, own, True)
    entry = choice.entry
    expected = session.golden_image(item, choice.golden_class, entry)
    gen = session.generation(item)
    verdict = session.judge(Comparison(
        item, check, gen, expected, entry.steps(), choice.tier,
        choice.describe(), golden_class=choice.golden_class,
        why_not_exact=choice.why_not_exact, expected_sha=entry.pixel_sha256))
    verdict = replace(
        verdict, by_class=session.against_every_class(item, gen),
        golden_choice=GoldenChoice(choice.by, choice.sharing, choice.why_not_exact))
    if (s.record and s.probes and choice.golden_class == own
            and entry.probes is None
            and verdict.status is Status.PASSED and verdict.tier is Tier.EXACT):
        # an existing golden this machine reproduces bit for bit takes its probes
        verdict = replace(verdict, message=f"{verdict.message}; module probes of step 0 "
                          f"added: {session.store_probes(item)}")
    return verdict


class OwnClass(CheckKind):
    check = Check.OWN_CLASS

    def run(self, session: ConformanceSession, subject: Item, variant: Any) -> Verdict:
        return own_class(session, subject, Check.OWN_CLASS)


KIND = register(OwnClass())
