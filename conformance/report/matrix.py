"""The conformance matrix: items x machine configurations, from results files and golden sets.

Each results file is one run on one machine: its ``hardware_class``, a ``label`` (the class,
with the thread count when it is not 1) and, from schema 2 on, the measured ``identity``
whose ``digest`` names the configuration. The matrix has a row per item (model x case x
resolution x precision) and a column per *identity*: results files of one identity merge into
one column (a later run's outcome of an item and check replaces an earlier one's, with a
note); files of different identities never share a column, even under one label, and the
labels are told apart (``cpu-avx512 · Intel(R) Xeon(R)`` or ``cpu-avx512@3f9a1c``). A
schema-1 file (no identity) gets a key derived from its class and the fingerprint keys that
change bits. The notes say which column every input went to.

A cell is that column's comparison against the reference image:

* the ``reference`` outcome when it has metrics;
* the ``own-class`` outcome in the reference class's own columns (there the reference check
  is skipped because the machine *is* the reference class, and the own-class golden is the
  reference image);
* state ``error`` when that outcome is an error (the exception's type and message are kept).

The other checks of the item on that column (repeatable, invariance variants) are kept with
the cell as context.

Golden roots (``<root>/<model>/<class>/manifest.json``) give columns too, one per (class,
identity) set: :func:`load_golden` compares every set's images with the reference set's
(identical when the pixel SHA-256 agree, else the metrics of the two PNGs judged against the
perceptual tolerance, as the reference check of a run is).

Columns whose images are bit-identical on every item they share form one *group*
(:attr:`Matrix.groups`); the columns of a group are adjacent.

:func:`load_run` and :func:`load_golden` read and validate their input (the only I/O here):
input of any shape, at any depth, is either read or refused with a
:class:`~conformance.errors.ConformanceInputError` naming the file and the key, never another
exception;
:func:`build_matrix` is a pure function from runs and golden columns to a :class:`Matrix`; the
renderers in :mod:`conformance.report.render` are pure functions from a matrix to text.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

import msgspec

from conformance.core import Check, Status
from conformance.errors import ConformanceInputError, ManifestError
from conformance.records import (
    STEP_DELTA_FIELDS,
    Artifacts,
    ByClass,
    ClassComparison,
    GenerationError,
    Outcome,
    RecordedMetrics,
    StepDelta,
    decode_hook,
    to_builtins,
)
from conformance.report.results import read_results
from conformance.report.safe_text import bounded
from conformance.safeio import (
    IMAGE_LIMIT,
    JSON_MAX_DEPTH,
    regular_file_problem,
    show,
)

if TYPE_CHECKING:  # pragma: no cover
    from conformance.tolerances import Tolerances

MATRIX_SCHEMA_VERSION = 2
#: Matrix documents :func:`matrix_from_dict` reads (1: before identities, groups, errors).
MATRIX_READABLE_VERSIONS = (1, 2)

#: Fingerprint keys that make the identity key of a results file or golden set without a
#: measured identity (schema 1), with its hardware class.
LEGACY_IDENTITY_KEYS = (
    "device_name", "threads", "torch", "diffusers", "transformers", "cpu_isa",
    "aten_cpu_capability_env",
)
#: Column kinds: a run's results, or a golden set.
RUN, GOLDEN = "run", "golden"
#: ``check`` of the cells of a golden-set column.
GOLDEN_CHECK = "golden-set"

_RESOLUTION = re.compile(r"([0-9]{1,9})x([0-9]{1,9})")
_DIGITS = re.compile(r"([0-9]+)")


class CellState(enum.Enum):
    """How a class's image compares with the reference image."""

    IDENTICAL = "identical"
    WITHIN = "within"
    DIVERGED = "diverged"
    ERROR = "error"
    MISSING = "missing"


# -- records ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ItemKey:
    """One row: a case at one resolution and one precision."""

    model: str
    case: str
    resolution: str
    precision: str

    @property
    def id(self) -> str:
        return f"{self.model}/{self.case}/{self.resolution}/{self.precision}"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The status of one check of the item on this column (all checks, for context)."""

    check: str
    status: str
    tier: str | None
    variant: str | None = None
    #: with ``--localize``: the first divergent module (and its class) of the check's runs
    module: str | None = None
    #: the golden set that decided the check (own-class: chosen by identity), and how
    golden_class: str | None = None
    chosen_by: str | None = None

    @property
    def name(self) -> str:
        return f"{self.check}[{self.variant}]" if self.variant else self.check


class ModuleError(NamedTuple):
    """One top-level block along the network in a ``--localize`` profile: its output bits
    (``equal`` / ``differ`` / ...) and relative error against the other run."""

    name: str
    bits: str
    rel_err: float | None


@dataclass(frozen=True, slots=True)
class Shown:
    """What a cell without an outcome shows: a golden set's cell (its check
    :data:`GOLDEN_CHECK`), or a cell read back from a matrix's JSON."""

    check: str | None = None
    status: str | None = None
    tier: str | None = None
    golden_class: str | None = None
    metrics: RecordedMetrics | None = None
    first_divergent_step: int | None = None
    step_deltas: tuple[StepDelta, ...] = ()
    artifacts: Artifacts = field(default_factory=Artifacts)
    seconds: float | None = None
    generate_seconds: float | None = None
    peak_memory_mb: float | None = None
    message: str = ""
    reproduce: str = ""


_SHOWN = frozenset(f.name for f in fields(Shown))
_NOTHING = Shown()
_T = TypeVar("_T")


class _FromShown(Generic[_T]):
    """A value of a :class:`Cell`: its outcome's, else what it shows (the same name)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, cell: Any, owner: type | None = None) -> _T:
        if cell is None:  # on the class
            return self  # type: ignore[return-value]
        return getattr(cell.outcome or cell.shown, self.name)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True, eq=False)
class Cell:
    """One item on one column (``column`` is its label, ``hardware_class`` its class).

    A run's cell holds the :class:`~conformance.records.Outcome` it shows (``outcome``); a
    golden set's cell, or one read back from a matrix's JSON, what it shows (``shown``).
    ``check``, ``status``, ``tier`` and the measurements are read from either, the enums as
    text (a golden set's check is :data:`GOLDEN_CHECK`). ``by_class`` is in natural order
    of the class (an own-class check's when the shown check has none), ``pixel_sha256`` the
    digest of the column's image of the item (groups bit-identical columns), ``error`` what
    a generation raised, for an ``error`` cell. Two cells are equal when they show the same.
    """

    item: ItemKey
    column: str
    hardware_class: str
    state: CellState
    outcome: Outcome | None = None
    shown: Shown = _NOTHING
    by_class: tuple[ClassComparison, ...] = ()
    reason: str = ""
    source: str = ""
    checks: tuple[CheckResult, ...] = ()
    pixel_sha256: str | None = None
    error: GenerationError | None = None
    #: with ``--localize``: the per-block error along the network where the runs part
    #: (``profile_of`` names the check and section)
    profile: tuple[ModuleError, ...] = ()
    profile_of: str = ""

    @property
    def check(self) -> str | None:
        return self.outcome.check.value if self.outcome is not None else self.shown.check

    @property
    def status(self) -> str | None:
        return self.outcome.status.value if self.outcome is not None else self.shown.status

    @property
    def tier(self) -> str | None:
        if self.outcome is None:
            return self.shown.tier
        return self.outcome.tier.value if self.outcome.tier is not None else None

    golden_class = _FromShown[str | None]()
    metrics = _FromShown[RecordedMetrics | None]()
    first_divergent_step = _FromShown[int | None]()
    artifacts = _FromShown[Artifacts]()
    seconds = _FromShown[float | None]()
    generate_seconds = _FromShown[float | None]()
    peak_memory_mb = _FromShown[float | None]()
    message = _FromShown[str]()
    reproduce = _FromShown[str]()

    @property
    def step_deltas(self) -> tuple[StepDelta, ...]:
        return (self.outcome or self.shown).step_deltas or ()

    def _seen(self) -> tuple[Any, ...]:
        return (self.item, self.column, self.hardware_class, self.state, self.by_class,
                self.reason, self.source, self.checks, self.pixel_sha256, self.error,
                self.profile, self.profile_of, *(getattr(self, n) for n in sorted(_SHOWN)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cell) and self._seen() == other._seen()

    def __hash__(self) -> int:
        return hash(self._seen())


@dataclass(frozen=True, slots=True)
class Column:
    """One column: one identity, and the results files (oldest first) or golden manifests
    merged into it.

    ``key`` is the identity key (``id:<digest>`` for a measured identity, ``fp:<hex>`` derived
    from the fingerprint for schema-1 input; ``golden:`` in front for golden sets); ``kind``
    is :data:`RUN` or :data:`GOLDEN`; ``identity`` the identity record in short (class,
    digest, CPU/GPU model, flags, precision digests), as text pairs.
    """

    label: str
    hardware_class: str
    sources: tuple[str, ...]
    fingerprint: tuple[tuple[str, str], ...] = ()
    started_at: str | None = None
    finished_at: str | None = None
    key: str = ""
    kind: str = RUN
    identity: tuple[tuple[str, str], ...] = ()

    @property
    def device(self) -> str | None:
        """The CPU / GPU model name, from the identity or the fingerprint."""
        return dict(self.identity).get("model_name") or dict(self.fingerprint).get(
            "device_name"
        )


@dataclass(frozen=True, slots=True)
class Run:
    """One validated results file (``key``: its identity key, see :class:`Column`)."""

    path: str
    hardware_class: str
    label: str
    outcomes: tuple[Outcome, ...]
    fingerprint: tuple[tuple[str, str], ...] = ()
    started_at: str | None = None
    finished_at: str | None = None
    key: str = ""
    identity: tuple[tuple[str, str], ...] = ()

    @property
    def identity_key(self) -> str:
        """``key``, or the one derived from class and fingerprint when it was not given."""
        return self.key or legacy_key(self.hardware_class, dict(self.fingerprint))


@dataclass(frozen=True, slots=True)
class GoldenColumn:
    """One golden-set column before it joins a matrix: the column and its cells by item
    (the cells' ``column`` is set to the column's final label by :func:`build_matrix`)."""

    column: Column
    cells: Mapping[ItemKey, Cell]


@dataclass(frozen=True, slots=True)
class GoldenSets:
    """What :func:`load_golden` read: the golden columns, the reference class (the class of
    the reference set) and notes."""

    reference_class: str | None
    columns: tuple[GoldenColumn, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Matrix:
    """Items x columns; ``cells[i][j]`` is item ``i`` on column ``j``."""

    reference_class: str | None
    items: tuple[ItemKey, ...]
    columns: tuple[Column, ...]
    cells: tuple[tuple[Cell, ...], ...]
    notes: tuple[str, ...] = ()
    #: Columns with bit-identical images on every item they share, as column indices: every
    #: column is in exactly one group (alone in its own when it shares no bits), the
    #: columns of a group are adjacent, groups in column order.
    groups: tuple[tuple[int, ...], ...] = ()
    #: Per precision, the columns with bit-identical images on every item of that precision
    #: they share (groups of more than one column, by column index): the bit-equivalence
    #: classes the own-class check's identity lookup relies on.
    precision_groups: tuple[tuple[str, tuple[tuple[int, ...], ...]], ...] = ()

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(c.label for c in self.columns)

    def group_of(self, column: int) -> tuple[int, ...]:
        """The group holding ``column`` (just ``(column,)`` when there are no groups)."""
        for group in self.groups:
            if column in group:
                return group
        return (column,)

    def shared_groups(self) -> list[tuple[int, ...]]:
        """The groups of more than one column, in column order."""
        return [g for g in self.groups if len(g) > 1]

    def counts(self, column: int) -> dict[CellState, int]:
        """Cells of each state in one column (every state present, zeros included)."""
        found = Counter(row[column].state for row in self.cells)
        return {state: found.get(state, 0) for state in CellState}

    def totals(self) -> dict[CellState, int]:
        """Cells of each state in the whole matrix."""
        found = Counter(cell.state for row in self.cells for cell in row)
        return {state: found.get(state, 0) for state in CellState}


# -- ordering --------------------------------------------------------------------------------
def natural_key(text: str) -> tuple[Any, ...]:
    """Sort key that orders digit runs by value (``cpu-avx2`` before ``cpu-avx512``), of any
    length (compared as text of the same length, not converted to a number)."""
    parts = _DIGITS.split(text)
    return tuple(
        (len(p.lstrip("0")), p.lstrip("0"), p) if n % 2 else p for n, p in enumerate(parts)
    )


def resolution_key(text: str) -> tuple[Any, ...]:
    """Pixel count, then width; text that is not ``WxH`` sorts last by name."""
    match = _RESOLUTION.fullmatch(text)
    if not match:
        return (1, 0, 0, text)
    width, height = int(match[1]), int(match[2])
    return (0, width * height, width, text)


def precision_key(name: str) -> tuple[Any, ...]:
    """fp32, bf16, fp16, fp8-e4m3, fp8-e5m2, then gguf-* by bits (most first), then others
    (:func:`conformance.precision.sort_key`: each precision's kind decides)."""
    from conformance.precision import sort_key

    return sort_key(name)


def item_key(item: ItemKey) -> tuple[Any, ...]:
    """Rows: model, case, resolution by pixel count, precision order."""
    return (item.model, item.case, resolution_key(item.resolution), precision_key(item.precision))


def column_key(label: str, hardware_class: str, reference_class: str | None) -> tuple[Any, ...]:
    """Columns: the reference class's first, then by label (digit runs by value)."""
    return (hardware_class != reference_class, natural_key(label))


# -- loading and validation ------------------------------------------------------------------
def resolve_artifact(results_dir: str, value: str) -> str:
    """An artifact path from a results file, made usable from here.

    Relative paths are taken against the results file's folder. Runs write artifacts to
    ``<results folder>/artifacts/...`` but record the path as they named it: relative to
    their working directory when ``--results`` was relative, or absolute, which a results
    folder copied from another machine keeps. So the part of the path from an ``artifacts``
    folder on is looked for under the results file's folder too (first, for absolute paths);
    the first candidate that exists wins. (``os.path`` rather than ``pathlib``: a large
    matrix resolves thousands.)
    """
    absolute = os.path.isabs(value)
    direct = value if absolute else os.path.normpath(os.path.join(results_dir, value))
    parts = value.replace("\\", "/").split("/")
    if "artifacts" not in parts[1:]:
        return direct
    if not absolute and os.path.exists(direct):
        return direct
    for at in range(len(parts) - 1, 0, -1):  # the last "artifacts" folder first
        if parts[at] == "artifacts":
            tail = os.path.normpath(os.path.join(results_dir, *parts[at:]))
            if os.path.exists(tail):
                return tail
    return direct


def _text_value(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_text_value(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return " ".join(_text_value(v) for v in value)
    return _text(value)


def legacy_key(hardware_class: str, fingerprint: Mapping[str, Any]) -> str:
    """The identity key of input without a measured identity: ``fp:`` and 12 hex digits of
    the class and the fingerprint's :data:`LEGACY_IDENTITY_KEYS` (values as text, so that a
    results file's and a golden entry's fingerprints of one machine agree)."""
    values = [
        None if fingerprint.get(k) is None else _text(fingerprint[k])
        for k in LEGACY_IDENTITY_KEYS
    ]
    body = json.dumps([hardware_class, values], separators=(",", ":"))
    return "fp:" + hashlib.sha256(body.encode()).hexdigest()[:12]


def identity_summary(identity: Mapping[str, Any] | None) -> tuple[tuple[str, str], ...]:
    """An identity record in short, as text pairs: class, digest, battery version, the
    features (not the probe digests: there are dozens), one ``digest <precision>`` per
    precision digest."""
    if not identity:
        return ()
    out: list[tuple[str, str]] = []
    for key in ("class", "digest", "battery_version"):
        if identity.get(key) is not None:
            out.append((key, _text(identity[key])))
    features = identity.get("features")
    if isinstance(features, Mapping):
        for key, value in features.items():
            if value not in (None, "", [], {}):
                out.append((str(key), _text_value(value)))
    digests = identity.get("precision_digests")
    if isinstance(digests, Mapping):
        out += [(f"digest {k}", _text(v)) for k, v in digests.items()]
    return tuple(out)


def load_run(path: str | Path) -> Run:
    """Read and validate one results file (:func:`conformance.report.results.read_results`);
    bad input raises ConformanceInputError naming the file and the key. Artifact paths are
    resolved against the file's folder (:func:`resolve_artifact`)."""
    path = Path(path)
    found = read_results(path)
    results_dir = str(path.parent)
    outcomes = tuple(
        replace(o, artifacts=Artifacts(
            **{k: resolve_artifact(results_dir, v) for k, v in o.artifacts.items()}))
        if o.artifacts else o
        for o in found.outcomes
    )
    identity, fingerprint = found.identity, found.fingerprint
    return Run(
        path=str(path),
        hardware_class=found.hardware_class,
        label=found.label,
        outcomes=outcomes,
        fingerprint=tuple((str(k), _text(v)) for k, v in fingerprint.items()),
        started_at=found.started_at,
        finished_at=found.finished_at,
        key=f"id:{identity['digest']}" if identity else legacy_key(found.hardware_class,
                                                                    fingerprint),
        identity=identity_summary(identity),
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


# -- building ---------------------------------------------------------------------------------
def _state(outcome: Outcome) -> CellState:
    if outcome.status is Status.ERROR:
        return CellState.ERROR
    if outcome.status is Status.FAILED:
        return CellState.DIVERGED
    if outcome.status is Status.PASSED:
        identical = outcome.metrics is not None and outcome.metrics.identical
        return CellState.IDENTICAL if identical else CellState.WITHIN
    return CellState.MISSING


def _missing_reason(outcome: Outcome) -> str:
    if outcome.status is Status.RECORDED:
        text = "the golden was recorded in this run, so nothing was compared"
        return f"{text} ({outcome.message})" if outcome.message else text
    return outcome.message or f"{outcome.check.value} check {outcome.status.value}"


def _cell_error(outcome: Outcome) -> GenerationError:
    """The error of an ``error`` outcome (its message when the generation left no record)."""
    if outcome.error is None or outcome.error == GenerationError():
        return GenerationError(message=outcome.message or None)
    return outcome.error


def _check_result(o: Outcome) -> CheckResult:
    return CheckResult(o.check.value, o.status.value, o.tier.value if o.tier else None,
                       o.variant, _module(o), o.golden_class,
                       o.golden_choice.by if o.golden_choice is not None else None)


#: One merged outcome and the results file it came from.
Sourced = tuple[Outcome, str]
#: Merge key of an outcome within a column: (item, check, variant).
OutcomeKey = tuple[ItemKey, Check, str | None]


def _choose(
    found: Mapping[Check, Sourced], hardware_class: str, reference_class: str | None
) -> Sourced | None:
    """The outcome a cell shows (see the module docstring), or None."""
    ref = found.get(Check.REFERENCE)
    own = found.get(Check.OWN_CLASS)
    if ref is not None and ref[0].metrics is not None:
        return ref
    # a diffusion_golden image (its check against its golden), a VAE check (its bounds)
    for check in (Check.FIXTURE, Check.VAE):
        if check in found:
            return found[check]
    if ref is None or ref[0].status in (Status.SKIPPED, Status.RECORDED):
        # nothing compared with the reference: a crash elsewhere is what the cell shows
        for check in (Check.OWN_CLASS, Check.REPEATABLE, Check.FIDELITY, Check.INVARIANCE):
            sourced = found.get(check)
            if sourced is not None and sourced[0].status is Status.ERROR:
                return sourced
    is_reference = hardware_class == reference_class or (
        ref is not None
        and ref[0].status is Status.SKIPPED
        and ref[0].golden_class == hardware_class
    )
    if is_reference and own is not None:
        return own
    return ref


def _image_digest(found: Mapping[Check, Sourced], chosen: Sourced | None) -> str | None:
    """The pixel SHA-256 of the column's image of the item: the shown outcome's, else the
    own-class or reference check's (both checks compare the same generated image)."""
    if chosen is not None and chosen[0].pixel_sha256:
        return chosen[0].pixel_sha256
    for check in (Check.OWN_CLASS, Check.REFERENCE):
        sourced = found.get(check)
        if sourced is not None and sourced[0].pixel_sha256:
            return sourced[0].pixel_sha256
    return None


def _module(outcome: Outcome) -> str | None:
    """``name (Class)`` of the first divergent module a ``--localize`` run named."""
    loc = outcome.localization
    if loc is None or not isinstance(loc.get("first_divergent_module"), str):
        return None
    cls = loc.get("first_divergent_class")
    return loc["first_divergent_module"] + (f" ({cls})" if isinstance(cls, str) else "")


def _by_class(comparisons: Iterable[ClassComparison]) -> tuple[ClassComparison, ...]:
    """The comparisons in natural order of their class."""
    return tuple(sorted(comparisons, key=lambda c: natural_key(c.golden_class)))


def _profile(outcomes: Sequence[Outcome]) -> tuple[tuple[ModuleError, ...], str]:
    """The first ``--localize`` block profile among ``outcomes`` (chosen outcome first)."""
    for o in outcomes:
        loc = o.localization
        blocks = loc.get("blocks") if loc else None
        if blocks:
            rows = tuple(ModuleError(b["name"], b["bits"], None if b.get("rel_err") is None
                                     else float(b["rel_err"])) for b in blocks)
            what = o.check.value + (f"[{o.variant}]" if o.variant else "")
            return rows, f"{what}, {loc.get('blocks_section') or '?'}"
    return (), ""


def make_cell(
    item: ItemKey,
    column: str,
    hardware_class: str,
    outcomes: Sequence[Sourced],
    reference_class: str | None,
) -> Cell:
    """One cell from every outcome of one item on one column."""
    ordered = sorted(outcomes, key=lambda s: (_CHECK_ORDER[s[0].check], s[0].variant or ""))
    checks = tuple(_check_result(o) for o, _ in ordered)
    found = {o.check: (o, src) for o, src in ordered if o.variant is None}
    chosen = _choose(found, hardware_class, reference_class)
    digest = _image_digest(found, chosen)
    if chosen is None:
        if outcomes:
            reason = (
                f"no reference check for this item on {column} "
                f"(checks run: {', '.join(c.name for c in checks)})"
            )
            source = ordered[0][1]
        else:
            reason, source = f"not run on {column}", ""
        return Cell(
            item, column, hardware_class, CellState.MISSING, reason=reason, source=source,
            checks=checks, pixel_sha256=digest,
        )
    outcome, source = chosen
    profile, profile_of = _profile([outcome, *(o for o, _ in ordered)])
    state = _state(outcome)
    by_class = outcome.by_class
    own = found.get(Check.OWN_CLASS)
    if not by_class and own is not None:
        by_class = own[0].by_class
    return Cell(
        item=item,
        column=column,
        hardware_class=hardware_class,
        state=state,
        outcome=outcome,
        by_class=_by_class(by_class.values()),
        reason=_missing_reason(outcome) if state is CellState.MISSING else "",
        source=source,
        checks=checks,
        pixel_sha256=digest,
        error=_cell_error(outcome) if state is CellState.ERROR else None,
        profile=profile,
        profile_of=profile_of,
    )


_CHECK_ORDER = {c: i for i, c in enumerate(Check)}


def _reference_class(runs: Sequence[Run], notes: list[str]) -> str | None:
    seen: Counter[str] = Counter()
    where: dict[str, str] = {}
    for run in runs:
        for o in run.outcomes:
            if o.check is Check.REFERENCE and o.golden_class:
                seen[o.golden_class] += 1
                where.setdefault(o.golden_class, run.path)
    if not seen:
        return None
    ranked = sorted(seen, key=lambda c: (-seen[c], natural_key(c)))
    if len(ranked) > 1:
        notes.append(
            "the results files disagree on the reference class ("
            + ", ".join(f"{c} in {where[c]}" for c in ranked)
            + f"); using {ranked[0]}"
        )
    return ranked[0]


def runs_reference_class(runs: Sequence[Run]) -> str | None:
    """The class the runs' reference checks compared with (the most named), or None."""
    return _reference_class(runs, [])


def _merge(runs: Sequence[Run], label: str, notes: list[str]) -> dict[OutcomeKey, Sourced]:
    """Outcomes of one column's runs (oldest first) by key; a later run's outcome wins."""
    merged: dict[OutcomeKey, Sourced] = {}
    replaced: Counter[str] = Counter()
    for run in runs:
        seen_here: set[OutcomeKey] = set()
        duplicates = 0
        for o in run.outcomes:
            key = (ItemKey(o.model, o.case, o.resolution, o.precision), o.check, o.variant)
            if key in seen_here:
                duplicates += 1
            elif key in merged:
                replaced[run.path] += 1
            seen_here.add(key)
            merged[key] = (o, run.path)
        if duplicates:
            notes.append(
                f"{run.path}: {duplicates} outcomes appear more than once; "
                "the last of each was used"
            )
    if len(runs) > 1:
        order = ", then ".join(r.path for r in runs)
        text = f"{label}: merged {len(runs)} results files of one identity ({order})"
        changes = [f"{replaced[r.path]} from {r.path}" for r in runs if replaced[r.path]]
        if changes:
            text += "; the later run's outcome replaced the earlier one's: " + ", ".join(
                changes
            )
        else:
            text += "; no outcome appeared in more than one"
        notes.append(text)
        classes = sorted({r.hardware_class for r in runs}, key=natural_key)
        if len(classes) > 1:
            notes.append(
                f"{label}: the merged files come from different hardware classes "
                f"({', '.join(classes)}); the column shows {runs[-1].hardware_class}"
            )
        labels = list(dict.fromkeys(r.label for r in runs))
        if len(labels) > 1:
            notes.append(
                f"{label}: the merged files carry different labels ({', '.join(labels)}); "
                f"the column shows {runs[-1].label}"
            )
    return merged


def _clashes(labels: Sequence[str]) -> list[list[int]]:
    where: dict[str, list[int]] = {}
    for j, label in enumerate(labels):
        where.setdefault(label, []).append(j)
    return [idx for idx in where.values() if len(idx) > 1]


def disambiguate(columns: Sequence[Column], notes: list[str] | None = None) -> list[str]:
    """Labels for ``columns``, unique: columns of different identities that would share a
    label are told apart, golden sets from runs by ``(golden)``, then by the CPU / GPU model
    (``label · AMD EPYC``) where the models differ, and by the identity key where they do
    not (``label@3f9a1c``, ``label · AMD EPYC@3f9a1c``; more digits when six are not
    enough)."""
    labels = [c.label for c in columns]
    for idx in _clashes(labels):
        if len({columns[j].kind for j in idx}) > 1:
            for j in idx:
                if columns[j].kind == GOLDEN:
                    labels[j] = f"{labels[j]} (golden)"
    for idx in _clashes(labels):
        base = labels[idx[0]]
        by_device: dict[str | None, list[int]] = {}
        for j in idx:
            by_device.setdefault(columns[j].device, []).append(j)
        several = len([d for d in by_device if d]) > 1
        for device, same in by_device.items():
            named = f"{base} · {device}" if device and several else base
            if device and len(same) == 1 and several:
                labels[same[0]] = named
                continue
            hexes = [columns[j].key.rsplit(":", 1)[-1] for j in same]
            width = 6
            while width < max(map(len, hexes)) and len({h[:width] for h in hexes}) < len(same):
                width += 2
            for j, h in zip(same, hexes, strict=True):
                labels[j] = f"{named}@{h[:width]}"
        if notes is not None:
            notes.append(
                f"{len(idx)} columns would be labelled {base}, but their identities differ "
                f"({', '.join(columns[j].key for j in idx)}); labelled "
                + ", ".join(labels[j] for j in idx)
            )
    while True:  # a disambiguated label that is another column's label: number them
        clashing = _clashes(labels)
        if not clashing:
            return labels
        for idx in clashing:
            for n, j in enumerate(idx[1:], 2):
                labels[j] = f"{labels[j]} #{n}"


def bit_groups(digests: Sequence[Mapping[ItemKey, str]]) -> list[list[int]]:
    """Columns (by their items' pixel digests) with equal bits on every item they share.

    Greedy, in column order: a column joins the first group that it shares at least one item
    with and whose every column agrees with it on every shared item; else it starts its own.
    A column without digests is alone in its group.
    """
    groups: list[list[int]] = []
    for j, mine in enumerate(digests):
        home = None
        if mine:
            for group in groups:
                shared, agree = False, True
                for m in group:
                    other = digests[m]
                    small, big = (mine, other) if len(mine) <= len(other) else (other, mine)
                    for item, sha in small.items():
                        theirs = big.get(item)
                        if theirs is None:
                            continue
                        if theirs != sha:
                            agree = False
                            break
                        shared = True
                    if not agree:
                        break
                if agree and shared:
                    home = group
                    break
        if home is None:
            groups.append([j])
        else:
            home.append(j)
    return groups


def build_matrix(
    runs: Iterable[Run],
    reference_class: str | None = None,
    golden: GoldenSets | None = None,
) -> Matrix:
    """The matrix of ``runs`` (command-line order) and ``golden`` columns; pure.

    Runs of one identity are merged in start-time order (command-line order for ties): for
    an outcome present in both, the later run's wins, and a note says so. Runs of different
    identities are different columns (labels disambiguated). ``reference_class`` overrides
    the class named by the runs' reference outcomes (then the golden sets' reference class).
    """
    runs = list(runs)
    notes: list[str] = []
    found_reference = _reference_class(runs, notes)
    if reference_class is None:
        reference_class = found_reference
    elif found_reference is not None and found_reference != reference_class:
        notes.append(
            f"the runs compared against {found_reference}, but {reference_class} was asked "
            "for as the reference class"
        )
    golden_columns = list(golden.columns) if golden is not None else []
    if golden is not None:
        notes.extend(golden.notes)
        if reference_class is None:
            reference_class = golden.reference_class
        elif golden.reference_class is not None and golden.reference_class != reference_class:
            notes.append(
                f"the golden sets are compared with {golden.reference_class}, the runs with "
                f"{reference_class}"
            )

    by_key: dict[str, list[tuple[int, Run]]] = {}
    for index, run in enumerate(runs):
        by_key.setdefault(run.identity_key, []).append((index, run))
    run_groups = [
        [run for _, run in sorted(group, key=lambda p: (p[1].started_at or "", p[0]))]
        for group in by_key.values()
    ]
    drafts = [
        Column(
            label=group[-1].label,
            hardware_class=group[-1].hardware_class,
            sources=tuple(r.path for r in group),
            fingerprint=group[-1].fingerprint,
            started_at=group[0].started_at,
            finished_at=group[-1].finished_at,
            key=group[-1].identity_key,
            kind=RUN,
            identity=group[-1].identity,
        )
        for group in run_groups
    ] + [g.column for g in golden_columns]
    payloads: list[list[Run] | GoldenColumn] = [*run_groups, *golden_columns]
    labels = disambiguate(drafts, notes)
    columns = [replace(c, label=label) for c, label in zip(drafts, labels, strict=True)]
    order = sorted(
        range(len(columns)),
        key=lambda j: (
            column_key(columns[j].label, columns[j].hardware_class, reference_class),
            columns[j].kind != RUN,
        ),
    )
    if (
        reference_class is not None
        and columns
        and all(c.hardware_class != reference_class for c in columns)
    ):
        notes.append(
            f"no results file or golden set of the reference class {reference_class}; "
            "its own column is absent"
        )

    columns = [columns[j] for j in order]
    rows, by_column = _column_cells(columns, [payloads[j] for j in order], reference_class,
                                    notes)
    columns, by_column, new_groups = _grouped(columns, by_column, rows, notes)
    per_precision = precision_groups(columns, by_column, rows, notes)
    for col in columns:  # every input, and the column it went to
        what = "results file" if col.kind == RUN else "golden set"
        what = what if len(col.sources) == 1 else f"{what}s"
        notes.append(f"column {col.label}: {what} {', '.join(col.sources)}")
    return Matrix(
        reference_class=reference_class,
        items=tuple(rows),
        columns=tuple(columns),
        cells=tuple(zip(*by_column, strict=True)),
        notes=tuple(notes),
        groups=new_groups,
        precision_groups=per_precision,
    )


def precision_groups(
    columns: Sequence[Column], by_column: Sequence[Sequence[Cell]], rows: Sequence[ItemKey],
    notes: list[str],
) -> tuple[tuple[str, tuple[tuple[int, ...], ...]], ...]:
    """Per precision, the groups of columns whose images of that precision are
    bit-identical on every item they share (:func:`bit_groups` on that precision's items),
    with a note for each; and a ``broken prediction`` note for two columns whose identities
    give the precision the same digest but whose images of it differ."""
    out = []
    for precision in sorted({r.precision for r in rows}, key=precision_key):
        digests = _digests(by_column, precision)
        shared = tuple(tuple(g) for g in bit_groups(digests) if len(g) > 1)
        if shared:
            out.append((precision, shared))
            for group in shared:
                notes.append(f"{precision}: same bits: "
                             + ", ".join(columns[j].label for j in group))
        notes.extend(_broken_predictions(columns, digests, precision))
    return tuple(out)


def _digests(by_column: Sequence[Sequence[Cell]], precision: str | None = None
             ) -> list[dict[ItemKey, str]]:
    """Each column's pixel digests by item (of ``precision`` only, when given)."""
    return [{c.item: c.pixel_sha256 for c in cells
             if c.pixel_sha256 and precision in (None, c.item.precision)} for cells in by_column]


def _broken_predictions(columns: Sequence[Column], digests: Sequence[Mapping[ItemKey, str]],
                        precision: str) -> list[str]:
    """Columns whose measured identities share ``precision``'s digest (the suite predicts
    equal bits) but whose images of an item differ."""
    from conformance.lookup import predicts_same_bits

    out = []
    named = [(j, dict(c.identity).get(f"digest {precision}"),
              dict(c.identity).get("battery_version")) for j, c in enumerate(columns)]
    for n, (a, da, va) in enumerate(named):
        for b, db, vb in named[n + 1:]:
            if not predicts_same_bits(da, va, db, vb):
                continue
            differ = sorted(i.id for i, sha in digests[a].items()
                            if digests[b].get(i) not in (None, sha))
            if differ:
                out.append(
                    f"broken prediction: {columns[a].label} and {columns[b].label} share the "
                    f"{precision} digest {da} but {plural(len(differ))} differ "
                    f"({', '.join(differ[:3])}{' ...' if len(differ) > 3 else ''}): the "
                    "probe battery does not see what parts them")
    return out


def _column_cells(
    columns: Sequence[Column],
    payloads: Sequence[list[Run] | GoldenColumn],
    reference_class: str | None,
    notes: list[str],
) -> tuple[list[ItemKey], list[list[Cell]]]:
    """The rows (every item of any column, in row order) and each column's cells: a run
    column's from its merged outcomes (:func:`make_cell`), a golden column's as read."""
    tables: list[dict[ItemKey, list[Sourced]] | Mapping[ItemKey, Cell]] = []
    items: set[ItemKey] = set()
    for col, payload in zip(columns, payloads, strict=True):
        if isinstance(payload, GoldenColumn):
            tables.append(payload.cells)
            items.update(payload.cells)
            continue
        table: dict[ItemKey, list[Sourced]] = {}
        for (item, _, _), value in _merge(payload, col.label, notes).items():
            table.setdefault(item, []).append(value)
        tables.append(table)
        items.update(table)
    rows = sorted(items, key=item_key)
    by_column: list[list[Cell]] = []
    for col, table in zip(columns, tables, strict=True):
        if col.kind == GOLDEN:
            missing = f"no golden for it in the {col.label} set"
            cells = [
                Cell(item, col.label, col.hardware_class, CellState.MISSING,
                     shown=_GOLDEN_MISSING, reason=missing)
                if (cell := table.get(item)) is None
                else replace(cell, column=col.label)  # type: ignore[arg-type]
                for item in rows
            ]
        else:
            cells = [
                make_cell(item, col.label, col.hardware_class, table.get(item, ()),
                          reference_class)
                for item in rows
            ]
        by_column.append(cells)
    return rows, by_column


def _grouped(
    columns: list[Column], by_column: list[list[Cell]], rows: Sequence[ItemKey],
    notes: list[str],
) -> tuple[list[Column], list[list[Cell]], tuple[tuple[int, ...], ...]]:
    """Columns and their cells reordered so that the columns of a bit-identical group are
    adjacent (:func:`bit_groups`), and the groups by new column index."""
    digests = _digests(by_column)
    groups = bit_groups(digests)
    for group in groups:
        if len(group) > 1:
            shared = sum(
                1
                for item in rows
                if sum(1 for j in group if item in digests[j]) > 1
            )
            notes.append(
                "same bits: " + ", ".join(columns[j].label for j in group)
                + f" (equal pixels on every item they share, {plural(shared)})"
            )
    final = [j for group in groups for j in group]
    columns = [columns[j] for j in final]
    by_column = [by_column[j] for j in final]
    position = {j: n for n, j in enumerate(final)}
    new_groups = tuple(tuple(position[j] for j in group) for group in groups)
    return columns, by_column, new_groups


def plural(n: int, word: str = "item") -> str:
    """``1 item``, ``2 items``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# -- golden sets -----------------------------------------------------------------------------
_GOLDEN_MISSING = Shown(check=GOLDEN_CHECK)
_GOLDEN_STATUS = {
    CellState.IDENTICAL: Status.PASSED.value,
    CellState.WITHIN: Status.PASSED.value,
    CellState.DIVERGED: Status.FAILED.value,
    CellState.ERROR: Status.ERROR.value,
    CellState.MISSING: Status.SKIPPED.value,
}


def identity_record(identity: Any) -> dict[str, Any] | None:
    """A manifest's ``identity`` as a plain record: a dict as is, an object by its
    ``to_dict()``; None when the set has none."""
    if identity is None:
        return None
    if isinstance(identity, Mapping):
        return dict(identity)
    to_dict = getattr(identity, "to_dict", None)
    return dict(to_dict()) if callable(to_dict) else None


@dataclass
class _GoldenSet:
    """One manifest of a golden root."""

    root: Path
    store: Any  # conformance.golden.GoldenStore
    model: str
    hardware_class: str
    manifest: Any  # conformance.golden.Manifest
    path: str
    key: str
    identity: dict[str, Any] | None
    fingerprint: dict[str, Any]


@dataclass
class _GoldenDraft:
    """The sets of one (class, identity) column and their entries by item (last root wins)."""

    hardware_class: str
    key: str
    sets: list[_GoldenSet]
    entries: dict[ItemKey, tuple[Any, _GoldenSet]]


#: What parsing a malformed manifest of an unexpected shape can raise (beyond
#: ManifestError), turned into a one-line error naming the manifest.
_MALFORMED = (
    RecursionError, ValueError, TypeError, KeyError, IndexError, AttributeError,
    OverflowError, UnicodeError,
)


def _read_golden_set(
    root: Path, store: Any, model: str, cls: str, path: str
) -> _GoldenSet | None:
    """One golden set's manifest (read and checked by the store: a regular file within
    :data:`~conformance.safeio.MANIFEST_LIMIT`, every key), summed up; None when it went
    away meanwhile."""
    manifest = store.manifest(model, cls)
    if manifest is None:  # pragma: no cover - removed while reading
        return None
    identity = identity_record(getattr(manifest, "identity", None))
    entries = [manifest.entries[k] for k in sorted(manifest.entries)]
    keys = Counter(legacy_key(cls, e.fingerprint) for e in entries)
    fingerprint: dict[str, Any] = {}
    if entries:
        common = keys.most_common(1)[0][0]
        fingerprint = next(
            e.fingerprint for e in entries if legacy_key(cls, e.fingerprint) == common
        )
    digest = identity.get("digest") if identity else None
    if isinstance(digest, str) and digest:
        key = f"golden:id:{digest}"
    else:
        key = "golden:" + legacy_key(cls, fingerprint)
    return _GoldenSet(root, store, model, cls, manifest, path, key, identity, fingerprint)


def _exception_text(exc: BaseException) -> str:
    """``KeyError: 'step'`` of an exception, shortened."""
    if isinstance(exc, RecursionError):
        return f"nested too deeply (more than {JSON_MAX_DEPTH} levels)"
    return f"{type(exc).__name__}: {bounded(str(exc), 160)}"


def _load_golden_image(store: Any, entry: Any, cls: str) -> Any:
    """A golden's pixels (``store.load_image``), after checking that its file is a regular
    file within :data:`~conformance.safeio.IMAGE_LIMIT` (a FIFO would block the read)."""
    path = store.set_dir(entry.model, cls) / entry.file
    problem = regular_file_problem(path)
    if problem is None:
        try:
            if os.path.getsize(path) > IMAGE_LIMIT:
                problem = f"it is larger than {IMAGE_LIMIT} bytes"
        except OSError as exc:
            problem = exc.strerror or str(exc)
    if problem is not None and problem != "no such file":  # that one: load_image says so
        raise ManifestError(path, f"listed in the manifest as {show(entry.id)} but {problem}")
    try:
        return store.load_image(entry, cls)
    except _MALFORMED as exc:
        raise ManifestError(path, f"cannot decode the golden image: {_exception_text(exc)}") \
            from None


def _read_golden_root(root: Path) -> list[_GoldenSet]:
    """Every golden set under ``root``; a bad manifest raises (ManifestError names it)."""
    from conformance.golden import MANIFEST, GoldenStore

    store = GoldenStore(root)
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as exc:
        raise ConformanceInputError(
            root, f"cannot read the golden root: {exc.strerror or exc}"
        ) from None
    found: list[_GoldenSet] = []
    for folder in folders:
        try:
            classes = store.classes(folder.name)
        except OSError as exc:
            raise ConformanceInputError(folder, f"cannot read: {exc.strerror or exc}") from None
        for cls in classes:
            path = str(store.set_dir(folder.name, cls) / MANIFEST)
            gset = _read_golden_set(root, store, folder.name, cls, path)
            if gset is not None:
                found.append(gset)
    if not found:
        hint = ""
        if (root / MANIFEST).is_file():
            hint = "; it is one golden set: give the golden root, two folders up"
        elif any((p / MANIFEST).is_file() for p in folders):
            hint = "; it holds the golden sets of one model: give the folder above it"
        raise ConformanceInputError(
            root,
            f"is a folder but holds no golden sets (<model>/<class>/{MANIFEST}){hint}",
        )
    return found


def _golden_reference(
    drafts: Sequence[_GoldenDraft],
    reference_class: str | None,
    preferred: str | None,
    notes: list[str],
) -> tuple[str | None, _GoldenDraft | None]:
    classes = sorted({d.hardware_class for d in drafts}, key=natural_key)
    if not classes:
        return reference_class, None
    if reference_class is not None:
        chosen, why = reference_class, "as asked"
    elif preferred is not None and preferred in classes:
        chosen, why = preferred, "the class the results files compared with"
    else:
        defaults = [c for c in classes if "-default" in c]
        if len(defaults) == 1:
            chosen, why = defaults[0], "the only class named ...-default..."
        else:
            chosen = classes[0]
            why = "the first class in natural order, " + (
                f"as {len(defaults)} classes are named ...-default..."
                if defaults
                else "as no class is named ...-default..."
            )
    candidates = [d for d in drafts if d.hardware_class == chosen]
    if not candidates:
        notes.append(
            f"golden sets: no golden set of the reference class {chosen} ({why}); "
            "the golden sets are not compared"
        )
        return chosen, None
    reference = candidates[0]
    notes.append(
        f"golden sets: the reference is {chosen} ({why}), from "
        + ", ".join(s.path for s in reference.sets)
    )
    if len(candidates) > 1:
        notes.append(
            f"golden sets: {len(candidates)} sets of the reference class {chosen} have "
            f"different identities ({', '.join(d.key for d in candidates)}); the reference "
            f"is {reference.key}"
        )
    return chosen, reference


def load_golden(
    roots: Iterable[str | Path],
    reference_class: str | None = None,
    tolerances: Tolerances | None = None,
    preferred_reference: str | None = None,
) -> GoldenSets:
    """Columns from the golden sets under ``roots`` (``<root>/<model>/<class>/manifest.json``).

    One column per (class, identity), with the sets of every root and model; a cell is the
    set's golden of the item against the reference set's: identical when the pixel SHA-256
    agree, else the metrics of the two images (the PNGs' digests checked first, as the
    suite's checks do), within or diverged by the ``perceptual`` bounds of ``tolerances``
    (default: the suite's file) for the item's precision, as the reference check of a run.
    A golden image that does not match its manifest is an ``error`` cell naming the file.

    The reference set: of ``reference_class`` when given, else of ``preferred_reference``
    (the class the results files compared with) when there is a set of it, else of the one
    class named ``...-default...``, else of the first class in natural order; the notes say
    which. A bad manifest raises :class:`~conformance.errors.ConformanceInputError` naming it.
    """
    from conformance.tolerances import load_tolerances

    if tolerances is None:
        tolerances = load_tolerances()
    notes: list[str] = []
    drafts = _golden_drafts(roots, notes)
    ref_class, reference = _golden_reference(drafts, reference_class, preferred_reference, notes)
    comparer = _GoldenComparer(reference, ref_class, tolerances)
    columns = [
        _golden_column(draft, {item: comparer.cell(item, entry, gset, draft)
                               for item, (entry, gset) in draft.entries.items()})
        for draft in drafts
    ]
    return GoldenSets(reference_class=ref_class, columns=tuple(columns), notes=tuple(notes))


def _golden_drafts(roots: Iterable[str | Path], notes: list[str]) -> list[_GoldenDraft]:
    """The golden sets under ``roots`` by (class, identity): a root given twice is read
    once, and a later root's golden of an item replaces an earlier one's (with a note)."""
    sets: list[_GoldenSet] = []
    seen: dict[str, Path] = {}
    for root in map(Path, roots):
        real = os.path.realpath(root)
        if real in seen:
            notes.append(f"{root}: the same golden root as {seen[real]}; read once")
            continue
        seen[real] = root
        sets += _read_golden_root(root)
    drafts: dict[tuple[str, str], _GoldenDraft] = {}
    for gset in sets:
        draft = drafts.setdefault(
            (gset.hardware_class, gset.key), _GoldenDraft(gset.hardware_class, gset.key, [], {})
        )
        draft.sets.append(gset)
        replaced = 0
        for entry in gset.manifest.entries.values():
            item = ItemKey(entry.model, entry.case, entry.resolution, entry.precision)
            replaced += item in draft.entries
            draft.entries[item] = (entry, gset)
        if replaced:
            notes.append(
                f"{gset.path}: {plural(replaced, 'golden')} of the same identity came "
                "from an earlier golden root too; this one's were used"
            )
    return list(drafts.values())


class _GoldenComparer:
    """The cells of golden sets against the reference set (its images read once each)."""

    def __init__(self, reference: _GoldenDraft | None, ref_class: str | None,
                 tolerances: Tolerances) -> None:
        self.reference, self.ref_class, self.tolerances = reference, ref_class, tolerances
        self._expected: dict[ItemKey, Any] = {}

    def reference_image(self, item: ItemKey) -> Any:
        if item not in self._expected:
            entry, gset = self.reference.entries[item]  # type: ignore[union-attr]
            try:
                self._expected[item] = _load_golden_image(gset.store, entry, gset.hardware_class)
            except ManifestError as exc:
                self._expected[item] = exc
        if isinstance(self._expected[item], Exception):
            raise self._expected[item]
        return self._expected[item]

    def cell(self, item: ItemKey, entry: Any, gset: _GoldenSet, draft: _GoldenDraft) -> Cell:
        """The cell of one golden of the set ``gset`` (of column ``draft``)."""
        cls, ref_class, reference = draft.hardware_class, self.ref_class, self.reference
        png = str(gset.store.set_dir(entry.model, cls) / entry.file)
        base: dict[str, Any] = {
            "item": item, "column": cls, "hardware_class": cls, "check": GOLDEN_CHECK,
            "golden_class": ref_class, "source": gset.path, "reproduce": entry.command,
            "pixel_sha256": entry.pixel_sha256, "artifacts": Artifacts(actual=png),
        }
        ref = reference.entries.get(item) if reference is not None else None
        if reference is None:
            state, fields = CellState.MISSING, {
                "reason": f"no golden set of the reference class {ref_class} to compare with"
            }
        elif draft is reference:
            state, fields = CellState.IDENTICAL, {
                "metrics": RecordedMetrics.identical_images(),
                "message": "the reference golden set",
                "artifacts": Artifacts(actual=png, golden=png), "golden_class": cls,
            }
        elif ref is None:
            state, fields = CellState.MISSING, {
                "reason": f"no golden for it in the reference set ({ref_class})"
            }
        else:
            state, fields = self._compared(item, entry, gset, cls, png, *ref)
        status = _GOLDEN_STATUS[state]
        values = base | fields | {"status": status}
        return Cell(**{k: v for k, v in values.items() if k not in _SHOWN}, state=state,
                    shown=Shown(**{k: v for k, v in values.items() if k in _SHOWN}),
                    checks=(CheckResult(GOLDEN_CHECK, status, fields.get("tier")),))

    def _compared(self, item: ItemKey, entry: Any, gset: _GoldenSet, cls: str, png: str,
                  ref_entry: Any, ref_set: _GoldenSet) -> tuple[CellState, dict[str, Any]]:
        """A golden against the reference set's golden of the item: its cell's fields."""
        from conformance.metrics import compare
        from conformance.tolerances import Tier
        from conformance.trace import first_divergent_step, step_deltas

        ref_class = self.ref_class
        ref_png = str(ref_set.store.set_dir(ref_entry.model, ref_class) / ref_entry.file)
        mine, theirs = entry.steps(), ref_entry.steps()
        fields: dict[str, Any] = {
            "tier": "perceptual",
            "artifacts": Artifacts(actual=png, golden=ref_png),
            "first_divergent_step": first_divergent_step(mine, theirs),
            "step_deltas": StepDelta.of(step_deltas(mine, theirs)),
        }
        if entry.pixel_sha256 == ref_entry.pixel_sha256:
            return CellState.IDENTICAL, fields | {
                "metrics": RecordedMetrics.identical_images(),
                "message": f"the same pixels as the {ref_class} golden",
            }
        try:
            observed = _load_golden_image(gset.store, entry, cls)
            m = compare(observed, self.reference_image(item))
        except ManifestError as exc:
            return CellState.ERROR, fields | {
                "message": str(exc),
                "error": GenerationError(type=type(exc).__name__, message=str(exc),
                                         precision=item.precision),
            }
        problems = self.tolerances.problems(Tier.PERCEPTUAL, item.precision, m)
        return (CellState.DIVERGED if problems else CellState.WITHIN), fields | {
            "metrics": RecordedMetrics.measured(m),
            "message": (
                f"differs from the {ref_class} golden beyond the perceptual bounds: "
                + "; ".join(problems)
                if problems
                else f"within the perceptual bounds of the {ref_class} golden"
            ),
        }


def _golden_column(draft: _GoldenDraft, cells: Mapping[ItemKey, Cell]) -> GoldenColumn:
    """The column of one (class, identity) of golden sets."""
    cls = draft.hardware_class
    stamps = sorted(e.recorded_at for e, _ in draft.entries.values())
    identity = next((s.identity for s in draft.sets if s.identity), None)
    column = Column(
        label=cls,
        hardware_class=cls,
        sources=tuple(s.path for s in draft.sets),
        fingerprint=tuple((str(k), _text(v)) for k, v in draft.sets[-1].fingerprint.items()),
        started_at=stamps[0] if stamps else None,
        finished_at=stamps[-1] if stamps else None,
        key=draft.key,
        kind=GOLDEN,
        identity=identity_summary(identity),
    )
    return GoldenColumn(column, cells)


# -- data round trip -------------------------------------------------------------------------
def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _metrics_dict(m: RecordedMetrics | None) -> dict[str, Any] | None:
    if m is None:
        return None
    # a metric not recorded is left out: its null would read back as the metric's null value
    return {"identical": m.identical} | {
        k: _finite(v) for k, v in m.values.items() if v is not None
    }


def _steps_dict(deltas: Sequence[StepDelta]) -> dict[str, list[Any]]:
    """Step deltas by field (``{"step": [...], "equal": [...], ...}``): a quarter of the size
    of one object per step, and quick to encode."""
    if not deltas:
        return {name: [] for name in STEP_DELTA_FIELDS}
    return {
        "step": [d.step for d in deltas],
        "equal": [d.equal for d in deltas],
        # x - x == 0 only for finite numbers (see _finite), inline for speed
        "mean_delta": [v if (v := d.mean_delta) - v == 0 else None for d in deltas],
        "std_delta": [v if (v := d.std_delta) - v == 0 else None for d in deltas],
    }


def cell_to_dict(cell: Cell) -> dict[str, Any]:
    """A cell as JSON-ready data (non-finite numbers become null)."""
    return {
        "hardware_class": cell.hardware_class,
        "state": cell.state.value,
        "check": cell.check,
        "status": cell.status,
        "tier": cell.tier,
        "golden_class": cell.golden_class,
        "metrics": _metrics_dict(cell.metrics),
        "first_divergent_step": cell.first_divergent_step,
        "step_deltas": _steps_dict(cell.step_deltas),
        "by_class": {
            c.golden_class: (
                {"error": c.error}
                if c.error is not None
                else (_metrics_dict(c.metrics) or {})
                | {"first_divergent_step": c.first_divergent_step}
            )
            for c in cell.by_class
        },
        "artifacts": to_builtins(cell.artifacts),
        "seconds": _finite(cell.seconds),
        "generate_seconds": _finite(cell.generate_seconds),
        "peak_memory_mb": _finite(cell.peak_memory_mb),
        "message": cell.message,
        "reason": cell.reason,
        "reproduce": cell.reproduce,
        "source": cell.source,
        "checks": [
            {"check": c.check, "variant": c.variant, "status": c.status, "tier": c.tier,
             "module": c.module,
             **({"golden_class": c.golden_class, "chosen_by": c.chosen_by}
                if c.golden_class else {})}
            for c in cell.checks
        ],
        "pixel_sha256": cell.pixel_sha256,
        "error": to_builtins(cell.error),
        **({"profile": [[m.name, m.bits, _finite(m.rel_err)] for m in cell.profile],
            "profile_of": cell.profile_of} if cell.profile else {}),
    }


def matrix_to_dict(matrix: Matrix) -> dict[str, Any]:
    """The matrix as JSON-ready data; :func:`matrix_from_dict` reads it back."""
    return {
        "schema_version": MATRIX_SCHEMA_VERSION,
        "reference_class": matrix.reference_class,
        "columns": [
            {
                "label": c.label,
                "hardware_class": c.hardware_class,
                "sources": list(c.sources),
                "fingerprint": dict(c.fingerprint),
                "started_at": c.started_at,
                "finished_at": c.finished_at,
                "key": c.key,
                "kind": c.kind,
                "identity": dict(c.identity),
                "counts": {s.value: n for s, n in matrix.counts(j).items()},
            }
            for j, c in enumerate(matrix.columns)
        ],
        "groups": [list(g) for g in matrix.groups],
        "precision_groups": {p: [list(g) for g in groups]
                             for p, groups in matrix.precision_groups},
        "rows": [
            {
                "id": item.id,
                "model": item.model,
                "case": item.case,
                "resolution": item.resolution,
                "precision": item.precision,
                "cells": {
                    cell.column: cell_to_dict(cell) for cell in matrix.cells[i]
                },
            }
            for i, item in enumerate(matrix.items)
        ],
        "notes": list(matrix.notes),
    }


def _read(type_: Any, value: Any) -> Any:
    """A record of a matrix's own JSON (a ValueError on another shape)."""
    return msgspec.convert(value, type_, strict=True, dec_hook=decode_hook)


def _cell_from_dict(item: ItemKey, column: str, d: Mapping[str, Any]) -> Cell:
    shown = Shown(
        check=d["check"],
        status=d["status"],
        tier=d["tier"],
        golden_class=d["golden_class"],
        metrics=_read(RecordedMetrics | None, d["metrics"]),
        first_divergent_step=d["first_divergent_step"],
        step_deltas=tuple(
            StepDelta(*fields)
            for fields in zip(
                *(d["step_deltas"][name] for name in STEP_DELTA_FIELDS), strict=True
            )
        ),
        artifacts=_read(Artifacts, d["artifacts"]),
        seconds=d["seconds"],
        generate_seconds=d["generate_seconds"],
        peak_memory_mb=d["peak_memory_mb"],
        message=d["message"],
        reproduce=d["reproduce"],
    )
    return Cell(
        item=item,
        column=column,
        hardware_class=d["hardware_class"],
        state=CellState(d["state"]),
        shown=shown,
        by_class=_by_class(_read(ByClass, d["by_class"]).values()),
        reason=d["reason"],
        source=d["source"],
        checks=tuple(
            CheckResult(c["check"], c["status"], c["tier"], c["variant"], c.get("module"),
                        c.get("golden_class"), c.get("chosen_by"))
            for c in d["checks"]
        ),
        pixel_sha256=d.get("pixel_sha256"),
        error=_read(GenerationError | None, d.get("error")),
        profile=tuple(ModuleError(*m) for m in d.get("profile", ())),
        profile_of=d.get("profile_of", ""),
    )


def matrix_from_dict(data: Mapping[str, Any]) -> Matrix:
    """Read back :func:`matrix_to_dict`'s output (KeyError/ValueError on other shapes)."""
    if data.get("schema_version") not in MATRIX_READABLE_VERSIONS:
        raise ValueError(
            "not a matrix of schema_version "
            + " or ".join(str(v) for v in MATRIX_READABLE_VERSIONS)
        )
    columns = tuple(
        Column(
            label=c["label"],
            hardware_class=c["hardware_class"],
            sources=tuple(c["sources"]),
            fingerprint=tuple(c["fingerprint"].items()),
            started_at=c["started_at"],
            finished_at=c["finished_at"],
            key=c.get("key", ""),
            kind=c.get("kind", RUN),
            identity=tuple(c.get("identity", {}).items()),
        )
        for c in data["columns"]
    )
    items = []
    cells = []
    for row in data["rows"]:
        item = ItemKey(row["model"], row["case"], row["resolution"], row["precision"])
        items.append(item)
        cells.append(
            tuple(
                _cell_from_dict(item, c.label, row["cells"][c.label])
                for c in columns
            )
        )
    groups = data.get("groups")
    if groups is None:  # schema 1: no groups, every column alone
        groups = [[j] for j in range(len(columns))]
    return Matrix(
        reference_class=data["reference_class"],
        items=tuple(items),
        columns=columns,
        cells=tuple(cells),
        notes=tuple(data["notes"]),
        groups=tuple(tuple(int(j) for j in g) for g in groups),
        precision_groups=tuple(
            (str(p), tuple(tuple(int(j) for j in g) for g in gs))
            for p, gs in data.get("precision_groups", {}).items()),
    )
