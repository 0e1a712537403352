"""The conformance matrix: items x hardware classes, built from many results files.

Each results file is one run on one machine (its ``hardware_class``, and a ``label`` naming
its column: the class, with the thread count when it is not 1; the class when the file has
no label). The matrix has a row per item (model x case x resolution x precision) and a column
per label; results files with the same label are merged. A cell is that column's comparison
against the reference image:

* the ``reference`` outcome when it has metrics;
* the ``own-class`` outcome in the reference class's own columns (there the reference check
  is skipped because the machine *is* the reference class, and the own-class golden is the
  reference image).

The other checks of the item on that column (repeatable, invariance variants) are kept with
the cell as context.

:func:`load_run` reads and validates one results file (the only I/O here);
:func:`build_matrix` is a pure function from runs to a :class:`Matrix`; the renderers in
:mod:`conformance.report.render` are pure functions from a matrix to text.
"""

from __future__ import annotations

import enum
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from conformance.errors import ConformanceInputError
from conformance.report.results import Check, Outcome, Status, read_results

MATRIX_SCHEMA_VERSION = 1

#: Precisions in the order rows show them; ``gguf-*`` follow (most bits first), then others.
PRECISION_ORDER = ("fp32", "bf16", "fp16", "fp8-e4m3", "fp8-e5m2")

_METRIC_NUMBERS = ("mae", "max_abs", "psnr", "ssim", "phash_distance", "dhash_distance")
_RESOLUTION = re.compile(r"^(\d+)x(\d+)$")
_DIGITS = re.compile(r"(\d+)")


class CellState(enum.Enum):
    """How a class's image compares with the reference image."""

    IDENTICAL = "identical"
    WITHIN = "within"
    DIVERGED = "diverged"
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
class CellMetrics:
    """Image metrics of one comparison (``psnr`` None: identical or not recorded)."""

    identical: bool
    mae: float | None = None
    max_abs: float | None = None
    psnr: float | None = None
    ssim: float | None = None
    phash_distance: float | None = None
    dhash_distance: float | None = None


class StepDelta(NamedTuple):
    """How far one denoising step's latents moved from the golden's.

    A named tuple rather than a dataclass: a large matrix holds hundreds of thousands.
    """

    step: int
    equal: bool
    mean_delta: float
    std_delta: float


@dataclass(frozen=True, slots=True)
class ClassComparison:
    """This run's image against the golden of one class (``error`` when it could not)."""

    golden_class: str
    metrics: CellMetrics | None
    first_divergent_step: int | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Artifacts:
    """PNG paths (resolved against the results file's folder) of one comparison."""

    actual: str | None = None
    golden: str | None = None
    diff: str | None = None


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The status of one check of the item on this column (all checks, for context)."""

    check: str
    status: str
    tier: str | None
    variant: str | None = None

    @property
    def name(self) -> str:
        return f"{self.check}[{self.variant}]" if self.variant else self.check


@dataclass(frozen=True, slots=True)
class Cell:
    """One item on one column (``column`` is its label, ``hardware_class`` its class)."""

    item: ItemKey
    column: str
    hardware_class: str
    state: CellState
    check: str | None = None
    status: str | None = None
    tier: str | None = None
    golden_class: str | None = None
    metrics: CellMetrics | None = None
    first_divergent_step: int | None = None
    step_deltas: tuple[StepDelta, ...] = ()
    by_class: tuple[ClassComparison, ...] = ()
    artifacts: Artifacts = Artifacts()
    seconds: float | None = None
    generate_seconds: float | None = None
    peak_memory_mb: float | None = None
    message: str = ""
    reason: str = ""
    reproduce: str = ""
    source: str = ""
    checks: tuple[CheckResult, ...] = ()


@dataclass(frozen=True, slots=True)
class Column:
    """One column (a label) and the results files merged into it (oldest first)."""

    label: str
    hardware_class: str
    sources: tuple[str, ...]
    fingerprint: tuple[tuple[str, str], ...] = ()
    started_at: str | None = None
    finished_at: str | None = None


@dataclass(frozen=True, slots=True)
class Run:
    """One validated results file."""

    path: str
    hardware_class: str
    label: str
    outcomes: tuple[Outcome, ...]
    fingerprint: tuple[tuple[str, str], ...] = ()
    started_at: str | None = None
    finished_at: str | None = None


@dataclass(frozen=True, slots=True)
class Matrix:
    """Items x columns; ``cells[i][j]`` is item ``i`` on column ``j``."""

    reference_class: str | None
    items: tuple[ItemKey, ...]
    columns: tuple[Column, ...]
    cells: tuple[tuple[Cell, ...], ...]
    notes: tuple[str, ...] = ()

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(c.label for c in self.columns)

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
    """Sort key that orders digit runs by value (``cpu-avx2`` before ``cpu-avx512``)."""
    return tuple(int(p) if p.isdigit() else p for p in _DIGITS.split(text))


def resolution_key(text: str) -> tuple[Any, ...]:
    """Pixel count, then width; text that is not ``WxH`` sorts last by name."""
    match = _RESOLUTION.match(text)
    if not match:
        return (1, 0, 0, text)
    width, height = int(match[1]), int(match[2])
    return (0, width * height, width, text)


def precision_key(name: str) -> tuple[Any, ...]:
    """fp32, bf16, fp16, fp8-e4m3, fp8-e5m2, then gguf-* by bits (most first), then others."""
    if name in PRECISION_ORDER:
        return (0, PRECISION_ORDER.index(name), 0, name)
    if name.startswith("gguf-"):
        bits = _DIGITS.search(name.removeprefix("gguf-"))
        return (1, 0, -int(bits[1]) if bits else 0, name)
    return (2, 0, 0, name)


def item_key(item: ItemKey) -> tuple[Any, ...]:
    """Rows: model, case, resolution by pixel count, precision order."""
    return (item.model, item.case, resolution_key(item.resolution), precision_key(item.precision))


def column_key(label: str, hardware_class: str, reference_class: str | None) -> tuple[Any, ...]:
    """Columns: the reference class's first, then by label (digit runs by value)."""
    return (hardware_class != reference_class, natural_key(label))


# -- loading and validation ------------------------------------------------------------------
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_metrics(value: Any, where: str, allow_error: bool = False) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        return f"{where} must be an object or null"
    if allow_error and "error" in value:
        return None if isinstance(value["error"], str) else f"{where}.error must be a string"
    if not isinstance(value.get("identical"), bool):
        return f"{where}.identical must be true or false"
    for key in _METRIC_NUMBERS:
        if value.get(key) is not None and not _is_number(value[key]):
            return f"{where}.{key} must be a number or null"
    fds = value.get("first_divergent_step")
    if fds is not None and not _is_int(fds):
        return f"{where}.first_divergent_step must be an integer or null"
    return None


def _outcome_problem(o: Outcome) -> str | None:
    """What is wrong with one outcome's fields, or None."""
    for name in ("id", "model", "case", "resolution", "precision", "status", "check"):
        if not isinstance(getattr(o, name), str) or not getattr(o, name):
            return f"{name} must be a non-empty string"
    if o.check not in _CHECKS:
        return f"check {o.check!r} is not one of {', '.join(sorted(_CHECKS))}"
    if o.status not in _STATUSES:
        return f"status {o.status!r} is not one of {', '.join(sorted(_STATUSES))}"
    for name in ("tier", "golden_class", "variant"):
        if getattr(o, name) is not None and not isinstance(getattr(o, name), str):
            return f"{name} must be a string or null"
    for name in ("message", "reproduce"):
        if not isinstance(getattr(o, name), str):
            return f"{name} must be a string"
    if not _is_number(o.seconds):
        return "seconds must be a number"
    for name in ("generate_seconds", "peak_memory_mb"):
        if getattr(o, name) is not None and not _is_number(getattr(o, name)):
            return f"{name} must be a number or null"
    if o.first_divergent_step is not None and not _is_int(o.first_divergent_step):
        return "first_divergent_step must be an integer or null"
    problem = _check_metrics(o.metrics, "metrics")
    if problem:
        return problem
    if not isinstance(o.artifacts, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in o.artifacts.items()
    ):
        return "artifacts must map names to path strings"
    if o.step_deltas is not None:
        if not isinstance(o.step_deltas, list):
            return "step_deltas must be a list or null"
        for i, d in enumerate(o.step_deltas):
            # exact types (JSON gives no subclasses): fast, and bool is not a number here
            if (
                type(d) is not dict
                or type(d.get("step")) is not int
                or type(d.get("equal")) is not bool
                or type(d.get("mean_delta")) not in _NUMBER_TYPES
                or type(d.get("std_delta")) not in _NUMBER_TYPES
            ):
                return (
                    f"step_deltas[{i}] must be {{step: integer, equal: boolean, "
                    "mean_delta: number, std_delta: number}"
                )
    if not isinstance(o.by_class, dict):
        return "by_class must be an object"
    for cls, value in o.by_class.items():
        if value is None:
            return f"by_class[{cls!r}] must be an object"
        problem = _check_metrics(value, f"by_class[{cls!r}]", allow_error=True)
        if problem:
            return problem
    return None


_CHECKS = frozenset(c.value for c in Check)
_NUMBER_TYPES = (int, float)
_STATUSES = frozenset(s.value for s in Status)


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


def load_run(path: str | Path) -> Run:
    """Read and validate one results file; bad input raises ConformanceInputError."""
    path = Path(path)
    data, outcomes = read_results(path)
    cls = data.get("hardware_class")
    if not isinstance(cls, str) or not cls:
        raise ConformanceInputError(path, "hardware_class must be a non-empty string")
    label = data.get("label", cls)
    if label is None:
        label = cls
    if not isinstance(label, str) or not label:
        raise ConformanceInputError(path, "label must be a non-empty string")
    if not isinstance(data.get("outcomes"), list):
        raise ConformanceInputError(path, "outcomes must be a list")
    fingerprint = data.get("fingerprint") or {}
    if not isinstance(fingerprint, dict):
        raise ConformanceInputError(path, "fingerprint must be an object")
    stamps = {k: data.get(k) for k in ("started_at", "finished_at")}
    for key, value in stamps.items():
        if value is not None and not isinstance(value, str):
            raise ConformanceInputError(path, f"{key} must be a string")
    results_dir = str(path.parent)
    checked = []
    for index, outcome in enumerate(outcomes):
        problem = _outcome_problem(outcome)
        if problem:
            label = outcome.id if isinstance(outcome.id, str) else "?"
            raise ConformanceInputError(
                path, f"malformed outcomes: outcome {index} ({label!r}): {problem}"
            )
        if outcome.artifacts:
            outcome = replace(
                outcome,
                artifacts={
                    k: resolve_artifact(results_dir, v) for k, v in outcome.artifacts.items()
                },
            )
        checked.append(outcome)
    return Run(
        path=str(path),
        hardware_class=cls,
        label=label,
        outcomes=tuple(checked),
        fingerprint=tuple((str(k), _text(v)) for k, v in fingerprint.items()),
        started_at=stamps["started_at"],
        finished_at=stamps["finished_at"],
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


# -- building ---------------------------------------------------------------------------------
def _metrics(data: Mapping[str, Any] | None) -> CellMetrics | None:
    if data is None:
        return None
    return CellMetrics(
        identical=bool(data["identical"]),
        mae=data.get("mae"),
        max_abs=data.get("max_abs"),
        psnr=data.get("psnr"),
        ssim=data.get("ssim"),
        phash_distance=data.get("phash_distance"),
        dhash_distance=data.get("dhash_distance"),
    )


def _by_class(data: Mapping[str, Mapping[str, Any]]) -> tuple[ClassComparison, ...]:
    out = []
    for cls in sorted(data, key=natural_key):
        value = data[cls]
        if "error" in value:
            out.append(ClassComparison(cls, None, None, str(value["error"])))
        else:
            out.append(ClassComparison(cls, _metrics(value), value.get("first_divergent_step")))
    return tuple(out)


def _steps(data: list[dict[str, Any]] | None) -> tuple[StepDelta, ...]:
    if not data:
        return ()
    return tuple(
        [
            StepDelta(d["step"], d["equal"], float(d["mean_delta"]), float(d["std_delta"]))
            for d in data
        ]
    )


def _artifacts(data: Mapping[str, str]) -> Artifacts:
    if not data:
        return Artifacts()
    return Artifacts(data.get("actual"), data.get("golden"), data.get("diff"))


def _state(outcome: Outcome) -> CellState:
    if outcome.status in (Status.FAILED.value, Status.ERROR.value):
        return CellState.DIVERGED
    if outcome.status == Status.PASSED.value:
        identical = bool(outcome.metrics and outcome.metrics.get("identical"))
        return CellState.IDENTICAL if identical else CellState.WITHIN
    return CellState.MISSING


def _missing_reason(outcome: Outcome) -> str:
    if outcome.status == Status.RECORDED.value:
        text = "the golden was recorded in this run, so nothing was compared"
        return f"{text} ({outcome.message})" if outcome.message else text
    return outcome.message or f"{outcome.check} check {outcome.status}"


#: One merged outcome and the results file it came from.
Sourced = tuple[Outcome, str]
#: Merge key of an outcome within a column: (item, check, variant).
OutcomeKey = tuple[ItemKey, str, str | None]


def _choose(
    found: Mapping[str, Sourced], hardware_class: str, reference_class: str | None
) -> Sourced | None:
    """The outcome a cell shows (see the module docstring), or None."""
    ref = found.get(Check.REFERENCE.value)
    own = found.get(Check.OWN_CLASS.value)
    if ref is not None and ref[0].metrics is not None:
        return ref
    is_reference = hardware_class == reference_class or (
        ref is not None
        and ref[0].status == Status.SKIPPED.value
        and ref[0].golden_class == hardware_class
    )
    if is_reference and own is not None:
        return own
    return ref


def make_cell(
    item: ItemKey,
    column: str,
    hardware_class: str,
    outcomes: Sequence[Sourced],
    reference_class: str | None,
) -> Cell:
    """One cell from every outcome of one item on one column."""
    ordered = sorted(outcomes, key=lambda s: (_CHECK_ORDER.get(s[0].check, 9), s[0].variant or ""))
    checks = tuple(CheckResult(o.check, o.status, o.tier, o.variant) for o, _ in ordered)
    found = {o.check: (o, src) for o, src in ordered if o.variant is None}
    chosen = _choose(found, hardware_class, reference_class)
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
            checks=checks,
        )
    outcome, source = chosen
    state = _state(outcome)
    by_class = outcome.by_class
    own = found.get(Check.OWN_CLASS.value)
    if not by_class and own is not None:
        by_class = own[0].by_class
    return Cell(
        item=item,
        column=column,
        hardware_class=hardware_class,
        state=state,
        check=outcome.check,
        status=outcome.status,
        tier=outcome.tier,
        golden_class=outcome.golden_class,
        metrics=_metrics(outcome.metrics),
        first_divergent_step=outcome.first_divergent_step,
        step_deltas=_steps(outcome.step_deltas),
        by_class=_by_class(by_class or {}),
        artifacts=_artifacts(outcome.artifacts),
        seconds=outcome.seconds,
        generate_seconds=outcome.generate_seconds,
        peak_memory_mb=outcome.peak_memory_mb,
        message=outcome.message,
        reason=_missing_reason(outcome) if state is CellState.MISSING else "",
        reproduce=outcome.reproduce,
        source=source,
        checks=checks,
    )


_CHECK_ORDER = {c.value: i for i, c in enumerate(Check)}


def _reference_class(runs: Sequence[Run], notes: list[str]) -> str | None:
    seen: Counter[str] = Counter()
    where: dict[str, str] = {}
    for run in runs:
        for o in run.outcomes:
            if o.check == Check.REFERENCE.value and o.golden_class:
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


def _merge(runs: Sequence[Run], notes: list[str]) -> dict[OutcomeKey, Sourced]:
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
        text = f"{runs[0].label}: merged {len(runs)} results files ({order})"
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
                f"{runs[0].label}: the merged files come from different hardware classes "
                f"({', '.join(classes)}); the column shows {runs[-1].hardware_class}"
            )
    return merged


def build_matrix(runs: Iterable[Run], reference_class: str | None = None) -> Matrix:
    """The matrix of ``runs`` (command-line order); pure.

    Runs with the same label are merged in start-time order (command-line order for ties):
    for an outcome present in both, the later run's wins, and a note says so.
    ``reference_class`` overrides the class named by the runs' reference outcomes.
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
    by_label: dict[str, list[tuple[int, Run]]] = {}
    for index, run in enumerate(runs):
        by_label.setdefault(run.label, []).append((index, run))
    groups = [
        [run for _, run in sorted(group, key=lambda p: (p[1].started_at or "", p[0]))]
        for group in by_label.values()
    ]
    groups.sort(key=lambda g: column_key(g[-1].label, g[-1].hardware_class, reference_class))
    if (
        reference_class is not None
        and runs
        and all(g[-1].hardware_class != reference_class for g in groups)
    ):
        notes.append(
            f"no results file of the reference class {reference_class}; "
            "its own column is absent"
        )

    columns: list[Column] = []
    tables: list[dict[ItemKey, list[Sourced]]] = []
    items: set[ItemKey] = set()
    for group in groups:
        last = group[-1]
        table: dict[ItemKey, list[Sourced]] = {}
        for (item, _, _), value in _merge(group, notes).items():
            table.setdefault(item, []).append(value)
        tables.append(table)
        items.update(table)
        columns.append(
            Column(
                label=last.label,
                hardware_class=last.hardware_class,
                sources=tuple(r.path for r in group),
                fingerprint=last.fingerprint,
                started_at=group[0].started_at,
                finished_at=last.finished_at,
            )
        )
    rows = sorted(items, key=item_key)
    cells = tuple(
        tuple(
            make_cell(item, col.label, col.hardware_class, table.get(item, ()), reference_class)
            for col, table in zip(columns, tables, strict=True)
        )
        for item in rows
    )
    return Matrix(
        reference_class=reference_class,
        items=tuple(rows),
        columns=tuple(columns),
        cells=cells,
        notes=tuple(notes),
    )


def image_paths(matrix: Matrix) -> list[str]:
    """Every artifact path the matrix names, sorted, without repeats."""
    paths = {
        p
        for row in matrix.cells
        for cell in row
        for p in (cell.artifacts.actual, cell.artifacts.golden, cell.artifacts.diff)
        if p
    }
    return sorted(paths)


# -- data round trip -------------------------------------------------------------------------
def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _metrics_dict(m: CellMetrics | None) -> dict[str, Any] | None:
    if m is None:
        return None
    return {"identical": m.identical} | {k: _finite(getattr(m, k)) for k in _METRIC_NUMBERS}


def _steps_dict(deltas: Sequence[StepDelta]) -> dict[str, list[Any]]:
    """Step deltas by field (``{"step": [...], "equal": [...], ...}``): a quarter of the size
    of one object per step, and quick to encode."""
    if not deltas:
        return {name: [] for name in StepDelta._fields}
    steps, equal, mean, std = zip(*deltas, strict=True)
    return {
        "step": list(steps),
        "equal": list(equal),
        # x - x == 0 only for finite numbers (see _finite), inline for speed
        "mean_delta": [v if v - v == 0 else None for v in mean],
        "std_delta": [v if v - v == 0 else None for v in std],
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
        "artifacts": {
            k: v
            for k, v in (
                ("actual", cell.artifacts.actual),
                ("golden", cell.artifacts.golden),
                ("diff", cell.artifacts.diff),
            )
            if v
        },
        "seconds": _finite(cell.seconds),
        "generate_seconds": _finite(cell.generate_seconds),
        "peak_memory_mb": _finite(cell.peak_memory_mb),
        "message": cell.message,
        "reason": cell.reason,
        "reproduce": cell.reproduce,
        "source": cell.source,
        "checks": [
            {"check": c.check, "variant": c.variant, "status": c.status, "tier": c.tier}
            for c in cell.checks
        ],
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
                "counts": {s.value: n for s, n in matrix.counts(j).items()},
            }
            for j, c in enumerate(matrix.columns)
        ],
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


def _cell_from_dict(item: ItemKey, column: str, d: Mapping[str, Any]) -> Cell:
    return Cell(
        item=item,
        column=column,
        hardware_class=d["hardware_class"],
        state=CellState(d["state"]),
        check=d["check"],
        status=d["status"],
        tier=d["tier"],
        golden_class=d["golden_class"],
        metrics=_metrics(d["metrics"]),
        first_divergent_step=d["first_divergent_step"],
        step_deltas=tuple(
            StepDelta(*fields)
            for fields in zip(
                *(d["step_deltas"][name] for name in StepDelta._fields), strict=True
            )
        ),
        by_class=_by_class(d["by_class"]),
        artifacts=_artifacts(d["artifacts"]),
        seconds=d["seconds"],
        generate_seconds=d["generate_seconds"],
        peak_memory_mb=d["peak_memory_mb"],
        message=d["message"],
        reason=d["reason"],
        reproduce=d["reproduce"],
        source=d["source"],
        checks=tuple(
            CheckResult(c["check"], c["status"], c["tier"], c["variant"]) for c in d["checks"]
        ),
    )


def matrix_from_dict(data: Mapping[str, Any]) -> Matrix:
    """Read back :func:`matrix_to_dict`'s output (KeyError/ValueError on other shapes)."""
    if data.get("schema_version") != MATRIX_SCHEMA_VERSION:
        raise ValueError(f"not a matrix of schema_version {MATRIX_SCHEMA_VERSION}")
    columns = tuple(
        Column(
            label=c["label"],
            hardware_class=c["hardware_class"],
            sources=tuple(c["sources"]),
            fingerprint=tuple(c["fingerprint"].items()),
            started_at=c["started_at"],
            finished_at=c["finished_at"],
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
    return Matrix(
        reference_class=data["reference_class"],
        items=tuple(items),
        columns=columns,
        cells=tuple(cells),
        notes=tuple(data["notes"]),
    )
