"""HTML renderer of a :class:`~conformance.report.matrix.Matrix`.

A pure function from a matrix and the bytes of its images to one self-contained page: CSS
inline, images embedded as ``data:`` URIs, a Content-Security-Policy that forbids any
request (``default-src 'none'``; images from ``data:`` only, styles inline only, no base URL,
no form target), no script. Each distinct image is embedded once however many cells show it
(content-addressed: one CSS rule per image, whose class every figure of it names, see
:class:`PageImages`), and at most a budget of bytes of them: the page says how many were
left out, and so does each figure that lacks its image. Cells are colour-coded links;
following one shows that cell's detail panel (CSS ``:target``) with golden | actual | diff
images, an inline-SVG plot of the per-step latent divergence, the metrics against every
golden class, the exception of an error cell, timings and the command that reproduces it.
Columns with bit-identical images share a header above their labels ("same bits"). Every
string taken from a results file or a golden manifest is shown with its control characters,
escape sequences and bidirectional overrides as text
(:func:`~conformance.report.safe_text.visible`), then HTML-escaped.

The page and panel layouts are templates shipped as package data
(``conformance/report/templates/``).
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from collections.abc import Mapping, Sequence
from functools import cache
from html import escape
from importlib import resources
from string import Template

from conformance.metrics import METRICS
from conformance.records import ClassComparison, RecordedMetrics, StepDelta
from conformance.report.matrix import (
    GOLDEN_CHECK,
    Cell,
    CellState,
    Matrix,
    ModuleError,
)
from conformance.report.render import (
    cell_text,
    cell_title,
    class_label,
    environment,
    error_message,
    error_type,
    error_where,
    fmt_number,
    group_names,
    identity_text,
    legend,
    metric_values,
    overview,
    plural,
    same_bits,
)
from conformance.report.safe_text import visible
from conformance.safeio import hard_link_problem

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Bytes of embedded images (base64) a page holds at most by default (``--html-budget``).
DEFAULT_IMAGE_BUDGET = 64 * 10**6

_BAR_COLOURS = {
    CellState.IDENTICAL: "#52b788",
    CellState.WITHIN: "#c5d86d",
    CellState.DIVERGED: "#e5484d",
    CellState.ERROR: "#f76707",
    CellState.MISSING: "#c4c9d0",
}


@cache
def template(name: str) -> Template:
    """A template shipped under ``conformance/report/templates/``."""
    text = resources.files("conformance.report").joinpath("templates", name).read_text("utf-8")
    return Template(text)


def esc(value: object) -> str:
    """Text from an input, on one line (:func:`~conformance.report.safe_text.visible`),
    escaped for HTML element content and attribute values."""
    return escape(visible(value), quote=True)


def esc_block(value: object) -> str:
    """Multi-line text from an input (newlines kept, other controls shown as text), escaped
    for HTML element content (a ``<pre>``)."""
    return escape(visible(value, newlines=True), quote=True)


# -- pieces ----------------------------------------------------------------------------------
def data_uri(data: bytes) -> str:
    """A PNG's bytes as a ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's header, or None when ``data`` is not a PNG."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return (width, height) if width and height else None


def embedded_size(nbytes: int) -> int:
    """Bytes of the page that embedding an image of ``nbytes`` bytes takes (base64)."""
    return 4 * ((nbytes + 2) // 3)


class LeftOut(str):
    """A note in place of an image: left out because the page's image budget was spent.

    :func:`conformance.report.command.read_images` gives these for the images it did not
    read; the renderer counts them in its summary with the ones it leaves out itself.
    """


class PageImages:
    """The images of one page, content-addressed and within a byte budget.

    Each distinct image (by the SHA-256 of its PNG bytes) is embedded once, as a ``data:``
    URI in one CSS rule of the page's ``<style>``; every figure showing it names that rule's
    class. Images are taken in page order while their embedding (base64) fits in
    ``budget`` bytes (None: no limit); an image that does not fit is left out, each figure
    of it says so, and :meth:`summary` counts them.
    """

    def __init__(self, images: Mapping[str, bytes | str], budget: int | None = None) -> None:
        self.images = images
        self.budget = budget
        self.used = 0
        self._rules: list[str] = []
        self._by_digest: dict[str, str | None] = {}  # digest -> class name, None: left out
        self._by_path: dict[str, tuple[str, str | None]] = {}  # path -> (kind, class / note)
        self._left_out: set[str] = set()  # paths
        self._left_out_refs = 0

    def _resolve(self, path: str) -> tuple[str, str | None]:
        linked = hard_link_problem(path)
        if linked is not None:  # never embedded, whoever read its bytes
            return "note", f"not embedded: {linked}"
        found = self.images.get(path)
        if found is None:
            return "absent", None
        if isinstance(found, LeftOut):
            return "budget", str(found)
        if isinstance(found, str):
            return "note", found
        size = png_size(found)
        if size is None:
            return "not-png", None
        digest = hashlib.sha256(found).hexdigest()
        if digest in self._by_digest:
            name = self._by_digest[digest]
            return ("image", name) if name is not None else ("budget", None)
        cost = embedded_size(len(found))
        if self.budget is not None and self.used + cost > self.budget:
            self._by_digest[digest] = None
            return "budget", None
        self.used += cost
        name = f"im{len(self._rules)}"
        self._by_digest[digest] = name
        width, height = size
        self._rules.append(
            f'.{name}{{background-image:url("{data_uri(found)}"),{_CHECKERS};'
            f"aspect-ratio:{width}/{height}}}"
        )
        return "image", name

    def figure(self, name: str, path: str | None) -> str:
        """One image with its caption, or a note saying why it is not there."""
        if not path:
            return _figure('<div class="noimg">not saved</div>', name)
        if path not in self._by_path:
            self._by_path[path] = self._resolve(path)
        kind, value = self._by_path[path]
        if kind == "image":
            body = (
                f'<div class="img {value}" role="img" aria-label="{esc(name)}" '
                f'title="{esc(path)}"></div>'
            )
        else:
            text = {"not-png": "not a PNG file", "absent": "image not found"}.get(kind, value)
            if kind == "budget":
                self._left_out.add(path)
                self._left_out_refs += 1
                text = value or budget_note(self.budget)
            body = (f'<div class="noimg{" budget" if kind == "budget" else ""}">{esc(text)}:'
                    f"<br>{esc(path)}</div>")
        return _figure(body, name)

    def style(self) -> str:
        """The CSS rules of the embedded images, one per distinct image."""
        return "\n".join(self._rules)

    def summary(self) -> str:
        """``N images left out: budget M MB ...`` (HTML), or "" when none was."""
        if not self._left_out:
            return ""
        budget = megabytes(self.budget) if self.budget is not None else "none"
        return (
            f'<p class="warn"><strong>{plural(len(self._left_out), "image")} left out: '
            f"budget {budget}</strong> ({plural(self._left_out_refs, 'reference')}; "
            f"{megabytes(self.used)} of images embedded, each distinct image once). "
            "Their cells' panels say which; <code>--html-budget</code> sets the budget.</p>"
        )


def budget_note(budget: int | None) -> str:
    """The note of a figure whose image was left out for the budget."""
    return f"left out: past the page's image budget of {megabytes(budget or 0)}"


def megabytes(nbytes: int | float) -> str:
    """``64 MB`` (10^6 bytes)."""
    return f"{fmt_number(nbytes / 1e6, 3)} MB"


_CHECKERS = "repeating-conic-gradient(#eee 0 25%,#fff 0 50%)"


def _figure(body: str, name: str) -> str:
    return f"<figure>{body}<figcaption>{esc(name)}</figcaption></figure>"


def cell_images(cell: Cell) -> tuple[tuple[str, str | None], ...]:
    """(caption, path) of the figures a cell's panel shows, in order."""
    a = cell.artifacts
    if cell.check == GOLDEN_CHECK:  # golden sets: the two PNGs, no diff image
        return tuple(
            (name, path)
            for name, path in (("reference golden", a.golden), ("this set's golden", a.actual))
            if path
        )
    if not (a.actual or a.golden or a.diff or a.flip):
        return ()
    shown = (("golden", a.golden), ("actual", a.actual), ("diff", a.diff))
    return (*shown, ("FLIP error", a.flip)) if a.flip else shown


def page_image_paths(matrix: Matrix) -> list[str]:
    """Every image path the page shows, in the order it first shows them (the order the
    image budget is spent in), without repeats. A file with more than one hard link is
    left out (not read: :meth:`PageImages.figure` says why it is not embedded)."""
    seen: dict[str, None] = {}
    for row in matrix.cells:
        for cell in row:
            for _, path in cell_images(cell):
                if path and path not in seen and hard_link_problem(path) is None:
                    seen.setdefault(path)
    return list(seen)


def image_row(cell: Cell, images: PageImages) -> str:
    """golden | actual | diff, or a note when the run saved no images for the cell."""
    figures = cell_images(cell)
    if not figures and cell.check != GOLDEN_CHECK:
        if cell.state is CellState.MISSING:
            return ""
        return (
            '<p class="muted">No images were saved for this cell (failures always save '
            "them; run with <code>--save-images</code> to keep them for every item).</p>"
        )
    return "".join(images.figure(name, path) for name, path in figures)


def module_plot_svg(profile: Sequence[ModuleError], what: str = "", width: int = 520) -> str:
    """Inline SVG: the relative output error of each top-level block along the network
    (``--localize``), on a log scale; blocks whose bits are equal sit on the baseline."""
    if not profile:
        return ""
    row, left, top = 16, 230, 22
    height = top + row * len(profile) + 8
    errors = [m.rel_err for m in profile if m.rel_err is not None and math.isfinite(m.rel_err)
              and m.rel_err > 0]
    lo = math.log10(min(errors)) if errors else -8.0
    hi = math.log10(max(errors)) if errors else 0.0
    lo, hi = min(lo, hi - 1.0), hi
    bar_w = width - left - 70

    def length(rel: float | None) -> float:
        if rel is None or not math.isfinite(rel) or rel <= 0:
            return 0.0
        return 4 + (math.log10(rel) - lo) / (hi - lo) * (bar_w - 4)

    parts = [
        f'<h3>Per-module error along the network</h3><svg class="plot" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="per-module relative error">',
        f'<text x="{left}" y="12">relative output error, log scale ({esc(what)})</text>',
    ]
    first = next((i for i, m in enumerate(profile) if m.bits != "equal"), None)
    for i, m in enumerate(profile):
        y = top + i * row
        colour = "#9aa5b1" if m.bits == "equal" else ("#e5484d" if i == first else "#f08c00")
        value = "equal bits" if m.bits == "equal" else (
            m.bits if m.rel_err is None else fmt_number(m.rel_err, 3))
        parts.append(
            f'<text x="{left - 6}" y="{y + 11}" text-anchor="end">{esc(m.name[-34:])}</text>'
            f'<rect x="{left}" y="{y + 2}" width="{max(length(m.rel_err), 1):.1f}" height="11" '
            f'fill="{colour}"><title>{esc(m.name)}: {esc(value)}</title></rect>'
            f'<text x="{left + length(m.rel_err) + 6:.1f}" y="{y + 11}">{esc(value)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def step_plot_svg(
    deltas: Sequence[StepDelta], first_divergent_step: int | None, width: int = 520
) -> str:
    """Inline SVG: mean and std deltas per step, the first divergent step marked."""
    if not deltas:
        return '<p class="muted">No per-step trace for this cell.</p>'
    height, left, right, top, bottom = 150, 56, 12, 12, 40
    steps = [d.step for d in deltas]
    x0, x1 = min(steps), max(steps)
    span = (x1 - x0) or 1
    values = [v for d in deltas for v in (d.mean_delta, d.std_delta) if math.isfinite(v)]
    ymax = max(values, default=0.0) or 1.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(step: float) -> float:
        return left + (step - x0) / span * plot_w

    xs = [x(d.step) for d in deltas]
    y_scale = plot_h / ymax
    base = top + plot_h
    parts = [
        f'<svg class="plot" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'role="img" aria-label="per-step latent divergence">',
        f'<path d="M{left} {top}V{base}H{left + plot_w}" fill="none" stroke="#9aa5b1"/>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{fmt_number(ymax, 3)}</text>',
        f'<text x="{left - 4}" y="{base + 4}" text-anchor="end">0</text>',
        f'<text x="{left}" y="{base + 14}" text-anchor="middle">{x0}</text>',
        f'<text x="{left + plot_w}" y="{base + 14}" text-anchor="middle">{x1}</text>',
    ]
    unequal = "".join(
        f"M{px - 2:.1f} {base - 4}h4v4h-4z" for px, d in zip(xs, deltas, strict=True) if not d.equal
    )
    if unequal:
        parts.append(f'<path d="{unequal}" fill="#e5484d"><title>latents differ</title></path>')
    if first_divergent_step is not None:
        fx = x(min(max(first_divergent_step, x0), x1))
        parts.append(
            f'<line x1="{fx:.1f}" y1="{top}" x2="{fx:.1f}" y2="{base}" stroke="#e5484d" '
            'stroke-dasharray="4 3"/>'
            f'<text x="{fx + 4:.1f}" y="{top + 10}" style="fill:#e5484d">'
            f"first divergent step {first_divergent_step}</text>"
        )
    base_f = float(top + plot_h)
    for values, colour in (
        ([d.std_delta for d in deltas], "#f08c00"),
        ([d.mean_delta for d in deltas], "#1c7ed6"),
    ):
        # clamped to [0, ymax]; non-finite values (nan, inf) are left out of the line
        points = " ".join(
            [
                f"{px:.1f},{base_f - (ymax if v > ymax else (v if v > 0 else 0.0)) * y_scale:.1f}"
                for px, v in zip(xs, values, strict=True)
                if v - v == 0
            ]
        )
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.8"/>'
        )
    ly = height - 8
    parts.append(
        f'<line x1="{left}" y1="{ly - 4}" x2="{left + 18}" y2="{ly - 4}" stroke="#1c7ed6" '
        f'stroke-width="2"/><text x="{left + 22}" y="{ly}">|mean delta|</text>'
        f'<line x1="{left + 110}" y1="{ly - 4}" x2="{left + 128}" y2="{ly - 4}" '
        f'stroke="#f08c00" stroke-width="2"/><text x="{left + 132}" y="{ly}">|std delta|</text>'
        f'<text x="{left + plot_w}" y="{ly}" text-anchor="end">denoising step</text>'
    )
    parts.append("</svg>")
    note = ""
    if all(d.equal for d in deltas):
        note = '<p class="muted">Latents equal at every step.</p>'
    return "".join(parts) + note


def metrics_table(m: RecordedMetrics | None) -> str:
    """The metrics of the cell's comparison as a key/value table: every registered metric
    (:data:`conformance.metrics.METRICS`) by its label, in its display format."""
    if m is None:
        return '<p class="muted">No metrics.</p>'
    rows = [("identical", "yes" if m.identical else "no")]
    rows += [(metric.label, text) for metric, text in metric_values(m)]
    return kv_table([(esc(k), esc(v)) for k, v in rows])


def kv_table(rows: Sequence[tuple[str, str]]) -> str:
    """A key/value table of HTML ``rows`` (escaped by the caller)."""
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def by_class_table(comparisons: Sequence[ClassComparison]) -> str:
    """This run's image against every golden class that existed, a column per registered
    metric."""
    if not comparisons:
        return '<p class="muted">Not recorded for this cell.</p>'
    metrics = list(METRICS.values())
    head = (
        "<tr><th>golden class</th><th>identical</th>"
        + "".join(f"<th>{esc(m.header)}</th>" for m in metrics)
        + "<th>first step</th></tr>"
    )
    rows = []
    for c in comparisons:
        if c.error is not None or c.metrics is None:
            rows.append(
                f"<tr><td>{esc(c.golden_class)}</td>"
                f'<td colspan="{len(metrics) + 2}">error: {esc(c.error or "no metrics")}</td>'
                "</tr>"
            )
            continue
        m = c.metrics
        step = "-" if c.first_divergent_step is None else str(c.first_divergent_step)
        values = "".join(f"<td>{esc(text)}</td>" for _, text in metric_values(m, compact=True))
        rows.append(
            f"<tr><td>{esc(c.golden_class)}</td><td>{'yes' if m.identical else 'no'}</td>"
            f"{values}<td>{step}</td></tr>"
        )
    return f'<table class="kv grid">{head}{"".join(rows)}</table>'


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{fmt_number(value, 3)} s"


def error_block(cell: Cell) -> str:
    """The exception of an error cell: type, message, device and precision."""
    if cell.state is not CellState.ERROR:
        return ""
    rows = [(k, esc(v)) for k, v in [("type", error_type(cell)), *error_where(cell)]]
    message = error_message(cell)
    text = f"<pre>{esc_block(message)}</pre>" if message else '<p class="muted">No message.</p>'
    return f"<h3>Error</h3>{kv_table(rows)}{text}"


def run_table(cell: Cell) -> str:
    """Checks, timings, memory, source file and the reproduction command."""
    checks = ", ".join(
        f"{c.name} {c.status}" + (f" ({c.tier})" if c.tier else "")
        + (f" via {c.golden_class}" + (f" ({c.chosen_by})" if c.chosen_by else "")
           if c.golden_class and c.check == "own-class" else "")
        + (f", first divergent module {c.module}" if c.module else "") for c in cell.checks
    )
    rows = [
        ("checks", esc(checks or "none")),
        ("check time", _seconds(cell.seconds)),
        ("generation time", _seconds(cell.generate_seconds)),
        (
            "peak memory",
            "-" if cell.peak_memory_mb is None else f"{fmt_number(cell.peak_memory_mb)} MB",
        ),
        (
            "manifest" if cell.check == GOLDEN_CHECK else "results file",
            f"<code>{esc(cell.source or '-')}</code>",
        ),
    ]
    if cell.pixel_sha256:
        rows.append(("pixel SHA-256", f"<code>{esc(cell.pixel_sha256)}</code>"))
    if cell.reproduce:
        name = "recorded by" if cell.check == GOLDEN_CHECK else "reproduce"
        rows.append((name, f"<code>{esc(cell.reproduce)}</code>"))
    return kv_table(rows)


def panel(cell: Cell, panel_id: str, images: PageImages) -> str:
    """The detail panel of one cell."""
    if cell.state is CellState.MISSING:
        what = "Missing: " + cell.reason
        message = ""
    else:
        if cell.check == GOLDEN_CHECK:
            what = f"the {cell.hardware_class} golden set"
            if cell.golden_class:
                what += f" against the reference golden set ({cell.golden_class})"
        else:
            what = f"{cell.check} check on {cell.hardware_class}"
            if cell.golden_class:
                what += f" against the {cell.golden_class} golden"
        if cell.tier:
            what += f" at the {cell.tier} tier"
        what += f": {cell.status}"
        message = (
            f"<h3>Message</h3><pre>{esc_block(cell.message)}</pre>" if cell.message else ""
        )
        if cell.state is CellState.ERROR and cell.error is not None and (
            cell.error.message == cell.message or not cell.error.message
        ):
            message = ""  # the error block shows it
        message = error_block(cell) + message
    return template("panel.html").substitute(
        panel_id=panel_id,
        label=esc(f"{cell.item.id} on {cell.column}"),
        item_id=esc(cell.item.id),
        column=esc(cell.column),
        state=cell.state.value,
        state_text="within tolerance" if cell.state is CellState.WITHIN else cell.state.value,
        what=esc(what),
        message=message,
        images=image_row(cell, images),
        plot=step_plot_svg(cell.step_deltas, cell.first_divergent_step)
        + module_plot_svg(cell.profile, cell.profile_of),
        metrics=metrics_table(cell.metrics),
        by_class=by_class_table(cell.by_class),
        run=run_table(cell),
    )


def _summary_row(matrix: Matrix, j: int) -> str:
    column = matrix.columns[j]
    counts = matrix.counts(j)
    total = sum(counts.values()) or 1
    bar = "".join(
        f'<span style="width:{100 * n / total:.2f}%;background:{_BAR_COLOURS[s]}" '
        f'title="{n} {s.value}"></span>'
        for s, n in counts.items()
        if n
    )
    env = environment(dict(column.fingerprint), threads=True)
    role = "reference" if column.hardware_class == matrix.reference_class else ""
    others = same_bits(matrix, j)
    if others:
        role = "; ".join(r for r in (role, "same bits as " + ", ".join(others)) if r)
    cls = (
        ""
        if column.label == column.hardware_class
        else f'<br><span class="muted">{esc(column.hardware_class)}</span>'
    )
    files = "<br>".join(f"<code>{esc(s)}</code>" for s in column.sources)
    nums = "".join(f'<td class="num">{counts[s]}</td>' for s in CellState)
    return (
        f"<tr><th>{esc(column.label)}{cls}</th>"
        f'<td><div class="bar">{bar}</div><span class="muted">{esc(role)}</span></td>'
        f"{nums}<td>{files}</td><td>{esc(env)}</td><td>{esc(identity_text(column))}</td></tr>"
    )


def _legend() -> str:
    return "".join(
        f'<span><span class="key s-{state.value}">{esc(mark)}</span>{esc(text)}</span>'
        for state, (mark, text) in zip(CellState, legend(), strict=True)
    )


def _group_row(matrix: Matrix) -> str:
    """A header row over the label row: one "same bits" cell spanning each group of
    bit-identical columns (empty when no columns share bits)."""
    if not matrix.shared_groups():
        return ""
    names = group_names(matrix)
    cells = ['<th colspan="3" class="gl">bit-identical columns</th>']
    j = 0
    while j < len(matrix.columns):
        group = matrix.group_of(j)
        if len(group) == 1:
            cells.append("<th></th>")
            j += 1
            continue
        # build_matrix keeps a group's columns adjacent; one cell each if they are not
        span = len(group) if group == tuple(range(j, j + len(group))) else 1
        title = "equal pixels on every item they share: " + ", ".join(
            matrix.columns[k].label for k in group
        )
        cells.append(
            f'<th colspan="{span}" class="grp" title="{esc(title)}">'
            f"{esc(names[j])}: same bits</th>"
        )
        j += span
    return f'<tr class="groups">{"".join(cells)}</tr>'


# -- the page --------------------------------------------------------------------------------
def render_html(
    matrix: Matrix,
    images: Mapping[str, bytes | str],
    title: str = "Conformance matrix",
    budget: int | None = DEFAULT_IMAGE_BUDGET,
) -> str:
    """The matrix as one self-contained HTML page.

    ``images`` maps artifact paths (as the matrix names them) to PNG bytes, or to a note
    saying why the image is not embedded (a :class:`LeftOut` note: for the budget); a path
    missing from it is shown as "image not found", never as a broken image. Each distinct
    image is embedded once, and at most ``budget`` bytes of them (None: no limit; see
    :class:`PageImages`); the page says how many were left out.
    """
    page_images = PageImages(images, budget)
    n_classes = len(matrix.columns)
    header = "".join(
        f'<th class="{"ref" if c.hardware_class == matrix.reference_class else ""}" '
        f'title="{esc(identity_text(c))}">{esc(class_label(matrix, j))}</th>'
        for j, c in enumerate(matrix.columns)
    )
    body: list[str] = []
    panels: list[str] = []
    model = None
    for i, (item, row) in enumerate(zip(matrix.items, matrix.cells, strict=True)):
        if item.model != model:
            model = item.model
            body.append(f'<tr class="group"><th colspan="{3 + n_classes}">{esc(model)}</th></tr>')
        cells = []
        for j, cell in enumerate(row):
            pid = f"c{i}-{j}"
            cells.append(
                f'<td class="s-{cell.state.value}"><a href="#{pid}" '
                f'title="{esc(cell_title(cell))}">{esc(cell_text(cell))}</a></td>'
            )
            panels.append(panel(cell, pid, page_images))
        body.append(
            f'<tr><th class="item"><span class="case">{esc(item.case)}</span></th>'
            f'<th class="item">{esc(item.resolution)}</th>'
            f'<th class="item">{esc(item.precision)}</th>{"".join(cells)}</tr>'
        )
    if not matrix.items:
        body.append(
            f'<tr><td colspan="{3 + n_classes}">No outcomes in the results files.</td></tr>'
        )
    notes = ""
    if matrix.notes:
        notes = (
            '<h3>Notes</h3><ul class="notes">'
            + "".join(f"<li>{esc(n)}</li>" for n in matrix.notes)
            + "</ul>"
        )
    return template("matrix.html").substitute(
        title=esc(title),
        heading=esc(title),
        meta=esc(overview(matrix)),
        summary_rows="\n".join(_summary_row(matrix, j) for j in range(n_classes)),
        legend=_legend(),
        group_row=_group_row(matrix),
        header_cells=header,
        body_rows="\n".join(body),
        notes=notes,
        panels="\n".join(panels),
        image_styles=page_images.style(),
        image_summary=page_images.summary(),
    )
