"""The results file: every outcome of one run, written and read through one JSON path.

A results file holds every outcome of one run (xdist workers merged by the controller) with
the machine's hardware class and fingerprint::

    {"schema_version": 2, "hardware_class": "cpu-amd-avx512+bf16",
     "label": "cpu-amd-avx512+bf16", "identity": {...}, "fingerprint": {...},
     "started_at": "...", "finished_at": "...", "stats": {...}, "outcomes": [...]}

:func:`results_document` writes it (each outcome by :func:`conformance.records.to_builtins`);
:func:`read_results` reads one, from any machine, as untrusted input: decoded once into
:class:`ResultsDocument` (its outcomes :class:`~conformance.records.Outcome` records) by
:mod:`conformance.schema`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import msgspec

from conformance.core import Check, Status
from conformance.errors import ConformanceInputError
from conformance.records import Outcome, decode_hook, outcome_problem, to_builtins
from conformance.safeio import RESULTS_LIMIT, key_label, loads_json, read_bytes, show
from conformance.schema import Hex, NonEmpty, Problem, got, json_kind, problem_of

__all__ = [
    "Check", "Outcome", "ResultsDocument", "ResultsFile", "Status", "read_results",
    "results_document",
]

SCHEMA_VERSION = 2
#: Results files this version reads (1: before the measured identity).
READABLE_VERSIONS = (1, 2)


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
    ordered = sorted(outcomes, key=lambda o: (o.id, o.check.value, o.variant or ""))
    return {
        "schema_version": SCHEMA_VERSION,
        "hardware_class": hardware_class,
        "label": label,
        "identity": identity,
        "fingerprint": fingerprint,
        "started_at": started_at,
        "finished_at": finished_at,
        "stats": stats,
        "summary": dict(Counter(o.status.value for o in ordered)),
        "outcomes": [to_builtins(o) for o in ordered],
    }


class Identity(msgspec.Struct, frozen=True):
    """A results file's measured identity: the keys readers use (the rest kept as is)."""

    digest: Hex
    class_: str | None = msgspec.field(default=None, name="class")
    features: dict[str, Any] | None = None
    precision_digests: dict[str, Any] | None = None
    probes: dict[str, Any] | None = None


class ResultsDocument(msgspec.Struct, frozen=True):
    """A results file's declared keys (``stats`` and ``summary`` are read as they are)."""

    schema_version: int
    hardware_class: NonEmpty
    outcomes: Annotated[list[Outcome], msgspec.Meta(description="a list of outcome objects")]
    label: NonEmpty | None = None
    fingerprint: dict[str, Any] | None = None
    identity: Identity | None = None
    started_at: str | None = None
    finished_at: str | None = None


@dataclass(frozen=True, slots=True)
class ResultsFile:
    """A results file, read and checked: its run's fields and its outcomes (``data``: the
    whole document, stats and summary included)."""

    path: str
    hardware_class: str
    label: str
    fingerprint: dict[str, Any]
    identity: dict[str, Any] | None
    started_at: str | None
    finished_at: str | None
    outcomes: tuple[Outcome, ...]
    data: dict[str, Any]


def read_results(path: str | Path) -> ResultsFile:
    """Read a results file: a regular file of at most
    :data:`~conformance.safeio.RESULTS_LIMIT` bytes of UTF-8 JSON, an object of a readable
    ``schema_version`` whose ``outcomes`` is a list of outcome objects, decoded into
    :class:`ResultsDocument` by :mod:`conformance.schema` (whose rules say what is read:
    ``NaN`` and ``Infinity`` where a float is, as runs write them for a latent trace that
    went non-finite; the matrix shows them as ``nan`` / ``inf``, and its JSON as null).
    Every problem is a :class:`~conformance.errors.ConformanceInputError` naming the file
    and the key, whatever the shape of the JSON.
    """
    raw = read_bytes(path, "results file", RESULTS_LIMIT)
    data = loads_json(raw, path, kind="results file", nonfinite=True)
    version = data.get("schema_version") if isinstance(data, dict) else None
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise ConformanceInputError(
            path, "not a results file of schema_version "
            + " or ".join(str(v) for v in READABLE_VERSIONS)
            + (f" (schema_version: {show(version, 40)})" if isinstance(data, dict) else
               f" (the top level is {json_kind(data)}, not an object)")
        )
    found = problem_of(data, ResultsDocument, decode_hook)
    if isinstance(found, Problem):
        raise ConformanceInputError(path, _message(found, data))
    problem = _summary_problem(data, found.outcomes)
    if problem:
        raise ConformanceInputError(path, problem)
    return ResultsFile(
        path=str(path), hardware_class=found.hardware_class,
        label=found.label or found.hardware_class, fingerprint=data.get("fingerprint") or {},
        identity=data.get("identity"), started_at=found.started_at,
        finished_at=found.finished_at, outcomes=tuple(found.outcomes), data=data,
    )


def _message(problem: Problem, data: dict[str, Any]) -> str:
    """A problem of a results document in words: one of an outcome names it."""
    keys = problem.keys
    if keys[:1] != ("outcomes",):
        return problem.message()
    if len(keys) == 1:
        return f"malformed outcomes: {problem.message()}"
    index = keys[1]
    assert isinstance(index, int)
    return outcome_problem(problem, data["outcomes"][index], index, start=2)


#: the most statuses a summary may name (there are a handful)
_MAX_SUMMARY_KEYS = 32


def _counts(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    listed = ", ".join(f"{key_label(k)} {n}" for k, n in sorted(counts.items()) if n) or "none"
    return f"{listed} ({total} outcome{'s' if total != 1 else ''})"


def _summary_problem(data: dict[str, Any], outcomes: tuple[Outcome, ...]) -> str | None:
    """Why the file's ``summary`` (the count of each status, written with the outcomes)
    disagrees with its ``outcomes`` (a file cut short or edited), or ``None``. A file
    without a summary (written by hand) has nothing to disagree with."""
    if "summary" not in data:
        return None
    summary = data["summary"]
    if not isinstance(summary, dict) or len(summary) > _MAX_SUMMARY_KEYS or any(
            type(n) is not int or n < 0 for n in summary.values()):
        return (f"key 'summary' must be an object of status names and counts (integers >= 0)"
                f", {got(summary)}" if not isinstance(summary, dict) else
                "key 'summary' must be an object of status names and counts (integers >= 0, "
                f"at most {_MAX_SUMMARY_KEYS} names)")
    declared = {k: n for k, n in summary.items() if n}
    found = dict(Counter(o.status.value for o in outcomes))
    if declared == found:
        return None
    return (f"the outcomes disagree with the file's own summary: the summary counts "
            f"{_counts(declared)}, the outcomes list holds {_counts(found)}; the file was cut "
            "short or edited (write it again with --results)")
