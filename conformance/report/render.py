"""Text renderers of a :class:`~conformance.report.matrix.Matrix`: Markdown and JSON.

Both are pure functions from a matrix to a string. The Markdown fits a GitHub job summary:
one compact table (items x columns, one column per machine configuration) whose cells read

* ``=`` identical to the reference image,
* ``~ 0.998/2`` within tolerance (the headline metrics of the registry,
  :data:`conformance.metrics.METRICS`: SSIM / pHash distance),
* ``x 0.712/18 @s3`` diverged (the headline metrics, first divergent step),
* ``! RuntimeError`` error: the check raised (type in the cell, message listed below),
* ``-`` missing (the reasons are listed under the table),

with bit-identical columns marked ``[A]``, ``[B]``... in the header; then the groups of
bit-identical columns, a summary line per column, the diverged, error and missing cells, and
notes. Every string from an input (labels, classes, item ids, messages, exception text,
file names, the title) goes through :func:`md_escape`: control characters and terminal
escape sequences shown as text, one line, no Markdown markup, link or HTML, so that it stays
in its cell and cannot forge a line of the report. The JSON is ASCII (every other character
escaped). The HTML renderer is :mod:`conformance.report.render_html`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

from conformance.metrics import METRICS, Metric, headline_metrics
from conformance.records import RecordedMetrics
from conformance.report.matrix import (
    GOLDEN,
    Cell,
    CellState,
    Column,
    Matrix,
    matrix_to_dict,
    plural,
)
from conformance.report.safe_text import md_inline as md_escape
from conformance.report.safe_text import shortened

#: How many diverged / missing cells the Markdown lists before "... and N more".
MARKDOWN_LIST_LIMIT = 50

#: Cell text marks, also used by the HTML renderer.
MARKS = {
    CellState.IDENTICAL: "=",
    CellState.WITHIN: "~",
    CellState.DIVERGED: "x",
    CellState.ERROR: "!",
    CellState.MISSING: "-",
}



def _symbol(metric: Metric) -> str:
    return metric.short[:1].upper()


def legend() -> tuple[tuple[str, str], ...]:
    """(mark, meaning) per cell state, in CellState order (the headline metrics named)."""
    heads = headline_metrics()
    marks = "/".join(_symbol(m) for m in heads)
    named = ", ".join(f"{m.label} {_symbol(m)}" for m in heads)
    within = f"~ {marks}" if heads else "~"
    diverged = f"x {marks} @sN" if heads else "x @sN"
    return (
        ("=", "identical to the reference image"),
        (within, "within tolerance" + (f": {named}" if heads else "")),
        (diverged, "diverged (failed): " + (f"{named}, " if heads else "")
         + "first divergent step N"),
        ("! T", "error: the check raised an exception of type T (messages below)"),
        ("-", "missing: not run, no golden to compare with, or skipped (reasons below)"),
    )
#: Longest exception type name a table cell shows.
ERROR_TYPE_LIMIT = 40


# -- shared formatting -----------------------------------------------------------------------
def fmt_number(value: float | None, digits: int = 4) -> str:
    """An integer as is, a float to ``digits`` significant digits, None as ``?``."""
    if value is None:
        return "?"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return f"{value:.{digits}g}"


def metric_values(metrics: RecordedMetrics, compact: bool = False) -> list[tuple[Metric, str]]:
    """(metric, formatted value) of every registered metric, in registry order (``?`` for
    one not recorded)."""
    return [
        (m, m.format(metrics.get(m.name), compact=compact, unit=not compact))
        for m in METRICS.values()
    ]


def error_type(cell: Cell) -> str:
    """The exception type of an error cell (``error`` when it was not recorded)."""
    return (cell.error.type if cell.error is not None else None) or "error"


def error_message(cell: Cell) -> str:
    """The exception message of an error cell (else the outcome's message)."""
    return (cell.error.message if cell.error is not None else None) or cell.message


def error_text(cell: Cell) -> str:
    """``Type: message (device cpu, precision bf16)`` of an error cell, on one line."""
    text = error_type(cell)
    message = first_line(error_message(cell))
    if message:
        text += f": {message}"
    where = [f"{k} {v}" for k, v in error_where(cell)]
    return text + (f" ({', '.join(where)})" if where else "")


def error_where(cell: Cell) -> list[tuple[str, str]]:
    """(``device`` / ``precision``, value) of an error cell's exception, those recorded."""
    if cell.error is None:
        return []
    return [(k, v) for k, v in (("device", cell.error.device),
                                ("precision", cell.error.precision)) if v]


def cell_text(cell: Cell) -> str:
    """The short text of a cell (see the module docstring); an error cell's holds text from
    the results file (escape it)."""
    mark = MARKS[cell.state]
    if cell.state is CellState.ERROR:
        return f"{mark} {shortened(error_type(cell), ERROR_TYPE_LIMIT)}"
    if cell.state in (CellState.IDENTICAL, CellState.MISSING):
        return mark
    m = cell.metrics
    text = mark
    heads = headline_metrics()
    if m is not None and heads:
        text += " " + "/".join(h.format(m.get(h.name), compact=True) for h in heads)
    if cell.state is CellState.DIVERGED:
        if cell.first_divergent_step is not None:
            text += f" @s{cell.first_divergent_step}"
        if m is None:
            text += " failed"
    return text


def cell_title(cell: Cell) -> str:
    """A one-line description of a cell (tooltips, lists)."""
    what = f"{cell.item.id} on {cell.column}: {cell.state.value}"
    if cell.state is CellState.MISSING:
        return f"{what}: {first_line(cell.reason)}"
    if cell.state is CellState.ERROR:
        return f"{what}: {error_text(cell)}"
    parts = []
    if cell.metrics is not None:
        parts.append(
            ", ".join(
                f"{metric.label} {text}"
                for metric, text in metric_values(cell.metrics, compact=True)
                if cell.metrics.get(metric.name) is not None
            )
        )
    if cell.first_divergent_step is not None:
        parts.append(f"first divergent step {cell.first_divergent_step}")
    if cell.golden_class:
        parts.append(f"vs {cell.golden_class}" + (f" ({cell.tier})" if cell.tier else ""))
    return what + (f" ({'; '.join(parts)})" if parts else "")


def first_line(text: str, limit: int = 240) -> str:
    """The first non-empty line of ``text``, shortened to ``limit`` characters."""
    return shortened(next((ln.strip() for ln in text.splitlines() if ln.strip()), ""), limit)


def class_label(matrix: Matrix, column: int) -> str:
    """A column's label, marked when its class is the reference class."""
    col = matrix.columns[column]
    return f"{col.label} (reference)" if col.hardware_class == matrix.reference_class else col.label


def group_names(matrix: Matrix) -> dict[int, str]:
    """``A``, ``B``, ... for the columns of each group of bit-identical columns (columns
    alone in their group have none)."""
    names: dict[int, str] = {}
    for n, group in enumerate(matrix.shared_groups()):
        name = ""
        n += 1
        while n:
            n, rest = divmod(n - 1, 26)
            name = chr(ord("A") + rest) + name
        names.update(dict.fromkeys(group, name))
    return names


def same_bits(matrix: Matrix, column: int) -> list[str]:
    """Labels of the other columns with the same bits as ``column``."""
    return [matrix.columns[j].label for j in matrix.group_of(column) if j != column]


def identity_text(column: Column) -> str:
    """``identity 3f9a1c2b4d5e``, or where the column's key came from."""
    digest = dict(column.identity).get("digest")
    what = "golden set, " if column.kind == GOLDEN else ""
    if digest:
        return f"{what}identity {digest}"
    if not column.key:
        return what.removesuffix(", ")
    return f"{what}no measured identity (key {column.key.rsplit(':', 1)[-1]} from the fingerprint)"


def environment(fingerprint: dict[str, str], threads: bool = False) -> str:
    """``AMD EPYC, torch 2.13.0+cpu, diffusers 0.42.1`` from a run's fingerprint."""
    parts = [fingerprint["device_name"]] if "device_name" in fingerprint else []
    keys = ("torch", "diffusers", "threads") if threads else ("torch", "diffusers")
    parts += [f"{k} {fingerprint[k]}" for k in keys if k in fingerprint]
    return ", ".join(parts)


def overview(matrix: Matrix, strong: Callable[[str], str] = str) -> str:
    """``52 items x 6 columns, reference class X: 126 identical, 142 within`` (``strong``
    marks up the class)."""
    reference = (
        f"reference class {strong(matrix.reference_class)}"
        if matrix.reference_class
        else "no reference class found in the results"
    )
    return (f"{plural(len(matrix.items), 'item')} x {plural(len(matrix.columns), 'column')}, "
            f"{reference}: {counts_text(matrix.totals())}")


def counts_text(counts: dict[CellState, int]) -> str:
    """``3 identical, 1 within, 0 diverged, 2 missing`` (states with zero cells left out)."""
    parts = [f"{n} {state.value}" for state, n in counts.items() if n]
    return ", ".join(parts) if parts else "no cells"


# -- Markdown --------------------------------------------------------------------------------
def _md_list(title: str, lines: list[str]) -> list[str]:
    if not lines:
        return []
    shown = lines[:MARKDOWN_LIST_LIMIT]
    out = ["", f"<details><summary>{title} ({len(lines)})</summary>", ""]
    out += [f"- {line}" for line in shown]
    if len(lines) > len(shown):
        out.append(f"- ... and {len(lines) - len(shown)} more (see the JSON or HTML matrix)")
    out += ["", "</details>"]
    return out


def md_cell(cell: Cell) -> str:
    """A cell's table text in Markdown (an error cell's exception type escaped)."""
    text = cell_text(cell)
    return md_escape(text) if cell.state is CellState.ERROR else text


def render_markdown(matrix: Matrix, title: str = "Conformance matrix") -> str:
    """The matrix as GitHub-flavoured Markdown (fits a job summary)."""
    n_classes = len(matrix.columns)
    out = [f"## {md_escape(title)}", "", overview(matrix, lambda c: f"**{md_escape(c)}**") + ".",
           ""]
    groups = group_names(matrix)
    if not matrix.items:
        out.append("No outcomes in the results files.")
    else:
        header = ["item"] + [
            md_escape(class_label(matrix, j))
            + (f" {md_escape('[' + groups[j] + ']')}" if j in groups else "")
            for j in range(n_classes)
        ]
        out.append("| " + " | ".join(header) + " |")
        out.append("|---" + "|:-:" * n_classes + "|")
        for item, row in zip(matrix.items, matrix.cells, strict=True):
            texts = [md_cell(cell) for cell in row]
            out.append(f"| {md_escape(item.id)} | " + " | ".join(texts) + " |")
    out += ["", "Legend: " + "; ".join(f"`{mark}` {text}" for mark, text in legend()) + "."]
    shared = matrix.shared_groups()
    if shared:
        out += ["", "Same bits (equal pixels on every item the columns share):", ""]
        out += [
            f"- **{groups[g[0]]}**: " + ", ".join(md_escape(matrix.columns[j].label) for j in g)
            for g in shared
        ]

    if matrix.precision_groups:
        out += ["", "Same bits per precision (the bit-equivalence classes):", ""]
        out += [
            f"- {md_escape(precision)}: " + "; ".join(
                ", ".join(md_escape(matrix.columns[j].label) for j in g) for g in groups)
            for precision, groups in matrix.precision_groups
        ]

    out += ["", "Per column:", ""]
    for j, column in enumerate(matrix.columns):
        files = ", ".join(md_escape(s) for s in column.sources)
        env = md_escape(
            "; ".join(t for t in (environment(dict(column.fingerprint)), identity_text(column))
                      if t)
        )
        line = f"- **{md_escape(class_label(matrix, j))}**: {counts_text(matrix.counts(j))}"
        line += f" (from {files}" + (f"; {env}" if env else "") + ")"
        others = same_bits(matrix, j)
        if others:
            line += "; same bits as " + ", ".join(md_escape(o) for o in others)
        out.append(line)

    diverged, errors, missing = [], [], []
    for row in matrix.cells:
        for cell in row:
            if cell.state is CellState.DIVERGED:
                detail = first_line(cell.message.removeprefix(cell.item.id).lstrip(" :"))
                detail = detail or cell.status or ""
                diverged.append(
                    f"{md_escape(cell_title(cell))}" + (f": {md_escape(detail)}" if detail else "")
                )
            elif cell.state is CellState.ERROR:
                errors.append(md_escape(cell_title(cell)))
            elif cell.state is CellState.MISSING:
                missing.append(md_escape(cell_title(cell)))
    out += _md_list("Diverged cells", diverged)
    out += _md_list("Error cells", errors)
    out += _md_list("Missing cells", missing)
    if matrix.notes:
        out += ["", "Notes:", ""] + [f"- {md_escape(note)}" for note in matrix.notes]
    return "\n".join(out) + "\n"


# -- JSON ------------------------------------------------------------------------------------
def render_json(matrix: Matrix) -> str:
    """The matrix as JSON (``matrix_from_dict(json.loads(...))`` reads it back)."""
    # compact: the C encoder is only used without indentation (about 10x faster)
    return json.dumps(matrix_to_dict(matrix), separators=(",", ":"), allow_nan=False) + "\n"
