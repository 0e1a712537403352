"""The terminal's verdict: per check, how many outcomes ended how, at which tier, against
which golden set and why not exact; how many items had no golden; goldens no case makes.

Pure functions from outcomes (and golden manifests) to lines; the plugin writes them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from conformance.core import Check, Status
from conformance.records import Outcome
from conformance.report.safe_text import shortened

#: at most this many causes are named per group of outcomes, each cut to this length
TOP_CAUSES = 4
CAUSE_CHARS = 90
_PROBES = re.compile(r"(?P<groups>.+) probes differ(?: \(\d+ of \d+\))?")
_INDENT = " " * 13


def _causes(text: str) -> list[str]:
    """The causes in one part of an outcome's ``differs``: each probe group of a
    ``bf16 GEMM, fp32 SDPA probes differ (8 of 80)`` part on its own (``bf16 GEMM probes``),
    so that items whose probe sets differ in part still count their common causes; other
    parts as they are, cut to :data:`CAUSE_CHARS`."""
    match = _PROBES.fullmatch(text)
    if match:
        return [f"{g} probes" for g in match["groups"].split(", ")]
    return [shortened(text, CAUSE_CHARS)]


def _outcome_causes(outcome: Outcome) -> list[str]:
    """The causes of one outcome's ``differs``, each once."""
    parts = outcome.golden_choice.differs if outcome.golden_choice is not None else ()
    return list(dict.fromkeys(c for part in parts for c in _causes(part)))


def missing_golden(outcome: Outcome) -> bool:
    """Whether ``outcome`` found no golden to compare with (skipped, or failed under
    ``--strict-golden``)."""
    return outcome.golden_choice is not None and outcome.golden_choice.by == "missing"


def check_lines(outcomes: Sequence[Outcome], xfailed: set[tuple[str, Check, str | None]]
                ) -> list[str]:
    """One line per check with its counts by status, then per (tier, golden set) the
    passed and failed outcomes with how the set was chosen and the main causes."""
    def is_xfailed(o: Outcome) -> bool:
        return (o.id, o.check, o.variant) in xfailed

    lines = []
    for check in Check:
        mine = [o for o in outcomes if o.check is check]
        if not mine:
            continue
        status = Counter("xfailed" if is_xfailed(o) else o.status.value for o in mine)
        order = [*(s.value for s in Status), "xfailed"]
        lines.append(f"{check.value:>11}: "
                     + ", ".join(f"{status[k]} {k}" for k in order if status.get(k)))
        groups: dict[tuple[str, str | None, str | None], list[Outcome]] = {}
        for o in mine:
            if o.status in (Status.PASSED, Status.FAILED) and o.tier is not None:
                by = o.golden_choice.by if o.golden_choice is not None else None
                groups.setdefault((o.tier.value, o.golden_class, by), []).append(o)
        for (tier, golden, by), group in sorted(groups.items(),
                                                key=lambda kv: (-len(kv[1]), kv[0][0])):
            xfail = sum(map(is_xfailed, group))
            failed = sum(o.status is Status.FAILED and not is_xfailed(o) for o in group)
            text = f"{_INDENT}{len(group)} {tier}"
            if golden:
                text += f" via {golden}"
            if by == "identity":
                text += " (same digest as this machine)"
            elif by == "nearest":
                text += " (nearest set)"
            if failed:
                text += f", {failed} of them failed"
            if xfail:
                text += f", {xfail} of them xfailed"
            causes = Counter(c for o in group for c in _outcome_causes(o))
            if causes:
                text += ": differ: " + "; ".join(
                    f"{c} ({n})" for c, n in causes.most_common(TOP_CAUSES))
            lines.append(text)
    return lines


def missing_lines(outcomes: Iterable[Outcome], strict: bool) -> list[str]:
    """One line: how many items had no golden, per check and model, and what to do."""
    missing = [o for o in outcomes if missing_golden(o)]
    if not missing:
        return []
    per = Counter((o.check.value, o.model) for o in missing)
    parts = ", ".join(f"{n} {check} ({model})" for (check, model), n in sorted(per.items()))
    if all(o.check is Check.FIXTURE for o in missing):
        then = "failed (a diffusion_golden golden must exist; --record records it)"
    elif strict:
        then = "failed (--strict-golden)"
    else:
        then = "skipped; --strict-golden (or ini conformance_strict_golden = true) fails them"
    return [f"no golden: {parts}: no golden set holds them; {then}; each test's message "
            "gives the command that records it"]


@dataclass(frozen=True)
class Orphan:
    """A golden no item of the case file makes any more (a renamed or removed case)."""

    set_dir: str
    item_id: str


def orphans(manifests: Mapping[str, Iterable[str]], wanted: set[str]) -> list[Orphan]:
    """Entries of the sets (``set folder -> entry ids``) that are not ``wanted`` items."""
    return [Orphan(folder, item_id) for folder, ids in sorted(manifests.items())
            for item_id in sorted(ids) if item_id not in wanted]


def orphan_lines(found: Sequence[Orphan], cases: str, strict: bool, most: int = 10
                 ) -> list[str]:
    return _listed(f"{'error' if strict else 'note'}: {len(found)} golden(s) match no item of "
                   f"{cases} (renamed or removed cases): remove them from their manifest, or "
                   "restore the case", found, most)


def unused_lines(found: Sequence[Orphan], root: str, most: int = 10) -> list[str]:
    """``diffusion_golden`` goldens of the checked modules that no check of the run used."""
    return _listed(f"note: {len(found)} diffusion_golden golden(s) under {root} were not "
                   "used by this run (deselected tests, or renamed or removed names)",
                   found, most)


def _listed(head: str, found: Sequence[Orphan], most: int) -> list[str]:
    """``head`` and the first ``most`` of ``found``, one a line (none: no lines)."""
    if not found:
        return []
    lines = [head, *(f"  {o.set_dir}: {o.item_id}" for o in found[:most])]
    if len(found) > most:
        lines.append(f"  ... and {len(found) - most} more")
    return lines
