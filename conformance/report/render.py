"""Text renderers of a :class:`~conformance.report.matrix.Matrix`: Markdown and JSON.

Both are pure functions from a matrix to a string. The Markdown fits a GitHub job summary:
one compact table (items x hardware classes) whose cells read

* ``=`` identical to the reference image,
* ``~ 0.998/2`` within tolerance (SSIM / pHash distance),
* ``x 0.712/18 @s3`` diverged (SSIM / pHash distance, first divergent step),
* ``-`` missing (the reasons are listed under the table),

then a summary line per class, the diverged and missing cells, and notes. The HTML renderer
is :mod:`conformance.report.render_html`.
"""

from __future__ import annotations

import json
import math
import re

from conformance.report.matrix import Cell, CellMetrics, CellState, Matrix, matrix_to_dict

#: How many diverged / missing cells the Markdown lists before "... and N more".
MARKDOWN_LIST_LIMIT = 50

#: Cell text marks, also used by the HTML renderer.
MARKS = {
    CellState.IDENTICAL: "=",
    CellState.WITHIN: "~",
    CellState.DIVERGED: "x",
    CellState.MISSING: "-",
}

LEGEND = (
    ("=", "identical to the reference image"),
    ("~ S/P", "within tolerance: SSIM S, pHash distance P"),
    ("x S/P @sN", "diverged (failed or error): SSIM S, pHash distance P, first divergent step N"),
    ("-", "missing: not run, no golden to compare with, or skipped (reasons below)"),
)

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")


# -- shared formatting -----------------------------------------------------------------------
def fmt_ssim(value: float | None) -> str:
    """SSIM to three decimals, truncated so that a non-identical image never reads 1.000."""
    if value is None:
        return "?"
    if not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if value >= 1.0:
        return "1.000"
    return f"{math.floor(value * 1000) / 1000:.3f}"


def fmt_number(value: float | None, digits: int = 4) -> str:
    """An integer as is, a float to ``digits`` significant digits, None as ``?``."""
    if value is None:
        return "?"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return f"{value:.{digits}g}"


def fmt_psnr(metrics: CellMetrics) -> str:
    """PSNR in dB (``inf`` when identical, ``?`` when absent)."""
    if metrics.psnr is None:
        return "inf" if metrics.identical else "?"
    return f"{fmt_number(metrics.psnr)} dB"


def cell_text(cell: Cell) -> str:
    """The short text of a cell (see the module docstring)."""
    mark = MARKS[cell.state]
    if cell.state in (CellState.IDENTICAL, CellState.MISSING):
        return mark
    m = cell.metrics
    text = mark
    if m is not None:
        text += f" {fmt_ssim(m.ssim)}/{fmt_number(m.phash_distance)}"
    if cell.state is CellState.DIVERGED:
        if cell.first_divergent_step is not None:
            text += f" @s{cell.first_divergent_step}"
        if m is None:
            text += " error" if cell.status == "error" else " failed"
    return text


def cell_title(cell: Cell) -> str:
    """A one-line description of a cell (tooltips, lists)."""
    what = f"{cell.item.id} on {cell.column}: {cell.state.value}"
    if cell.state is CellState.MISSING:
        return f"{what}: {first_line(cell.reason)}"
    parts = []
    if cell.metrics is not None:
        m = cell.metrics
        parts.append(
            f"SSIM {fmt_ssim(m.ssim)}, pHash {fmt_number(m.phash_distance)}, "
            f"MAE {fmt_number(m.mae)}"
        )
    if cell.first_divergent_step is not None:
        parts.append(f"first divergent step {cell.first_divergent_step}")
    if cell.golden_class:
        parts.append(f"vs {cell.golden_class}" + (f" ({cell.tier})" if cell.tier else ""))
    return what + (f" ({'; '.join(parts)})" if parts else "")


def first_line(text: str, limit: int = 240) -> str:
    """The first non-empty line of ``text``, shortened to ``limit`` characters."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def class_label(matrix: Matrix, column: int) -> str:
    """A column's label, marked when its class is the reference class."""
    col = matrix.columns[column]
    return f"{col.label} (reference)" if col.hardware_class == matrix.reference_class else col.label


def plural(n: int, word: str) -> str:
    """``1 item``, ``2 items``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def environment(fingerprint: dict[str, str], threads: bool = False) -> str:
    """``AMD EPYC, torch 2.13.0+cpu, diffusers 0.42.1`` from a run's fingerprint."""
    parts = [fingerprint["device_name"]] if "device_name" in fingerprint else []
    keys = ("torch", "diffusers", "threads") if threads else ("torch", "diffusers")
    parts += [f"{k} {fingerprint[k]}" for k in keys if k in fingerprint]
    return ", ".join(parts)


def counts_text(counts: dict[CellState, int]) -> str:
    """``3 identical, 1 within, 0 diverged, 2 missing`` (states with zero cells left out)."""
    parts = [f"{n} {state.value}" for state, n in counts.items() if n]
    return ", ".join(parts) if parts else "no cells"


# -- Markdown --------------------------------------------------------------------------------
def md_escape(text: str) -> str:
    """Text from a results file made inert in Markdown (one line, no markup, no HTML)."""
    text = " ".join(str(text).split()).replace("&", "&amp;")
    return _MD_SPECIAL.sub(r"\\\1", text)


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


def render_markdown(matrix: Matrix, title: str = "Conformance matrix") -> str:
    """The matrix as GitHub-flavoured Markdown (fits a job summary)."""
    n_items, n_classes = len(matrix.items), len(matrix.columns)
    out = [f"## {md_escape(title)}", ""]
    reference = (
        f"reference class **{md_escape(matrix.reference_class)}**"
        if matrix.reference_class
        else "no reference class found in the results"
    )
    out.append(
        f"{plural(n_items, 'item')} x {plural(n_classes, 'column')}, {reference}: "
        f"{counts_text(matrix.totals())}."
    )
    out.append("")
    if not matrix.items:
        out.append("No outcomes in the results files.")
    else:
        header = ["item"] + [md_escape(class_label(matrix, j)) for j in range(n_classes)]
        out.append("| " + " | ".join(header) + " |")
        out.append("|---" + "|:-:" * n_classes + "|")
        for item, row in zip(matrix.items, matrix.cells, strict=True):
            texts = [cell_text(cell) for cell in row]
            out.append(f"| {md_escape(item.id)} | " + " | ".join(texts) + " |")
    out += ["", "Legend: " + "; ".join(f"`{mark}` {text}" for mark, text in LEGEND) + "."]

    out += ["", "Per column:", ""]
    for j, column in enumerate(matrix.columns):
        files = ", ".join(md_escape(s) for s in column.sources)
        env = md_escape(environment(dict(column.fingerprint)))
        line = f"- **{md_escape(class_label(matrix, j))}**: {counts_text(matrix.counts(j))}"
        line += f" (from {files}" + (f"; {env}" if env else "") + ")"
        out.append(line)

    diverged, missing = [], []
    for row in matrix.cells:
        for cell in row:
            if cell.state is CellState.DIVERGED:
                detail = first_line(cell.message.removeprefix(cell.item.id).lstrip(" :"))
                detail = detail or cell.status or ""
                diverged.append(
                    f"{md_escape(cell_title(cell))}" + (f": {md_escape(detail)}" if detail else "")
                )
            elif cell.state is CellState.MISSING:
                missing.append(md_escape(cell_title(cell)))
    out += _md_list("Diverged cells", diverged)
    out += _md_list("Missing cells", missing)
    if matrix.notes:
        out += ["", "Notes:", ""] + [f"- {md_escape(note)}" for note in matrix.notes]
    return "\n".join(out) + "\n"


# -- JSON ------------------------------------------------------------------------------------
def render_json(matrix: Matrix) -> str:
    """The matrix as JSON (``matrix_from_dict(json.loads(...))`` reads it back)."""
    # compact: the C encoder is only used without indentation (about 10x faster)
    return json.dumps(matrix_to_dict(matrix), separators=(",", ":"), allow_nan=False) + "\n"
