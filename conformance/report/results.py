"""Outcome records and the results file.

An :class:`Outcome` is a plain, serializable record of one conformance check. A results file
holds every outcome of one run (xdist workers merged by the controller) with the machine's
hardware class and fingerprint::

    {"schema_version": 2, "hardware_class": "cpu-amd-avx512+bf16",
     "label": "cpu-amd-avx512+bf16", "identity": {...}, "fingerprint": {...},
     "started_at": "...", "finished_at": "...", "stats": {...}, "outcomes": [...]}
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from conformance.core import Check, Status
from conformance.errors import ConformanceInputError

__all__ = ["Check", "Outcome", "Status", "read_results", "results_document"]

SCHEMA_VERSION = 2
#: Results files this version reads (1: before the measured identity).
READABLE_VERSIONS = (1, 2)


@dataclass(frozen=True)
class Outcome:
    id: str
    check: str
    model: str
    case: str
    resolution: str
    precision: str
    hardware_class: str
    status: str
    tier: str | None
    golden_class: str | None
    metrics: dict[str, Any] | None
    seconds: float
    first_divergent_step: int | None = None
    message: str = ""
    artifacts: dict[str, str] = field(default_factory=dict)
    reproduce: str = ""
    step_deltas: list[dict[str, Any]] | None = None
    by_class: dict[str, dict[str, Any]] = field(default_factory=dict)
    generate_seconds: float | None = None
    peak_memory_mb: float | None = None
    variant: str | None = None
    #: SHA-256 of the generated image's pixels (groups bit-identical matrix columns).
    pixel_sha256: str | None = None
    #: For an ERROR outcome raised inside a generation: ``type``, ``message``, ``device``,
    #: ``precision``.
    error: dict[str, str] | None = None
    #: With ``--localize``: where the two runs of a same-machine check part
    #: (:meth:`conformance.localize.Localization.to_dict`, ranking cut to five).
    localization: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Outcome:
        return cls(**data)


def results_document(
    outcomes: Iterable[Outcome],
    hardware_class: str,
    fingerprint: dict[str, Any],
    started_at: str,
    finished_at: str,
    stats: dict[str, Any],
    label: str | None = None,
    identity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The results document; ``label`` names the run's matrix column (default: the class,
    with the thread count when it is not 1)."""
    if label is None:
        threads = fingerprint.get("threads", 1)
        label = hardware_class if threads == 1 else f"{hardware_class} t{threads}"
    ordered = sorted(outcomes, key=lambda o: (o.id, o.check, o.variant or ""))
    return {
        "schema_version": SCHEMA_VERSION,
        "hardware_class": hardware_class,
        "label": label,
        "identity": identity,
        "fingerprint": fingerprint,
        "started_at": started_at,
        "finished_at": finished_at,
        "stats": stats,
        "summary": dict(Counter(o.status for o in ordered)),
        "outcomes": [o.to_dict() for o in ordered],
    }


def read_results(path: Path) -> tuple[dict[str, Any], list[Outcome]]:
    """Read a results file; bad input raises ConformanceInputError naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConformanceInputError(path, f"cannot read results file: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConformanceInputError(path, f"not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("schema_version") not in READABLE_VERSIONS:
        raise ConformanceInputError(
            path, "not a results file of schema_version "
            + " or ".join(str(v) for v in READABLE_VERSIONS)
        )
    try:
        outcomes = [Outcome.from_dict(o) for o in data["outcomes"]]
    except (KeyError, TypeError) as exc:
        raise ConformanceInputError(path, f"malformed outcomes: {exc}") from None
    return data, outcomes
