"""The precision table: each format against fp32 on the same device, in the style of the
published format comparisons (format, bits per weight, size, then the mean of every
registered metric, :data:`conformance.metrics.METRICS`)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from conformance.core import Check
from conformance.metrics import METRICS
from conformance.precision import PRECISIONS
from conformance.records import Outcome, RecordedMetrics
from conformance.report.safe_text import md_inline


def _mean(values: list[float]) -> float | None:
    """The mean of the finite values; ``inf`` when every value is infinite (PSNR of
    identical images); None when there are none."""
    finite = [v for v in values if math.isfinite(v)]
    if finite:
        return sum(finite) / len(finite)
    return values[0] if values and all(v == values[0] for v in values) else None


def fidelity_rows(
    outcomes: Iterable[Outcome], denoiser_bytes: dict[str, int]
) -> list[dict[str, Any]]:
    """Mean metrics per (model, precision) over the fidelity outcomes that have metrics;
    a row holds a key per registered metric (None where no outcome recorded it)."""
    groups: dict[tuple[str, str], list[RecordedMetrics]] = {}
    for o in outcomes:
        if o.check is Check.FIDELITY and o.metrics is not None:
            groups.setdefault((o.model, o.precision), []).append(o.metrics)
    order = {name: n for n, name in enumerate(PRECISIONS)}
    rows = []
    for (model, prec), ms in sorted(
        groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], len(order)), kv[0][1])
    ):
        row: dict[str, Any] = {
            "model": model,
            "precision": prec,
            "bits_per_weight": PRECISIONS[prec].bits_per_weight if prec in PRECISIONS else None,
            "denoiser_bytes": denoiser_bytes.get(f"{model}/{prec}"),
            "items": len(ms),
        }
        for name in METRICS:
            values = [m.get(name) for m in ms]
            row[name] = _mean([float(v) for v in values if v is not None])
        rows.append(row)
    return rows


def fidelity_markdown(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of :func:`fidelity_rows` (empty string when there are none), a column
    per registered metric in its display format; the model and format names are escaped
    (:func:`~conformance.report.safe_text.md_inline`)."""
    if not rows:
        return ""
    metrics = list(METRICS.values())
    lines = [
        "| model | format | bits/weight | denoiser size | items | "
        + " | ".join(m.header for m in metrics)
        + " |",
        "|---|---|--:|--:|--:|" + "--:|" * len(metrics),
    ]
    for r in rows:
        size = f"{r['denoiser_bytes'] / 2**20:.2f} MiB" if r["denoiser_bytes"] else "?"
        bits = "?" if r["bits_per_weight"] is None else f"{r['bits_per_weight']:g}"
        values = " | ".join(m.format(r.get(m.name)) for m in metrics)
        lines.append(
            f"| {md_inline(r['model'])} | {md_inline(r['precision'])} | {bits} | {size} "
            f"| {r['items']} | {values} |"
        )
    return "\n".join(lines) + "\n"


def compare_markdown(outcomes: Iterable[Outcome]) -> str:
    """The model-against-model table of the ``compare`` outcomes (empty string when there
    are none): per other case and precision, the metrics against the base case, each side's
    generation time and weights, and other / base."""
    rows = sorted((o for o in outcomes if o.check is Check.COMPARE and o.comparison),
                  key=lambda o: (o.variant or "", o.case, o.resolution, o.precision))
    if not rows:
        return ""
    metrics = list(METRICS.values())

    def num(value: float | None, fmt: str) -> str:
        return "?" if value is None else format(value, fmt)

    lines = [
        "| relation | base | case | resolution | precision | expect | status | "
        + " | ".join(m.header for m in metrics)
        + " | base s | case s | time ratio | base MiB | case MiB | peak MiB base / case |",
        "|---|---|---|---|---|---|---|" + "--:|" * (len(metrics) + 6),
    ]
    for o in rows:
        c = o.comparison
        assert c is not None
        values = " | ".join(m.format(o.metrics.get(m.name) if o.metrics else None)
                            for m in metrics)
        peak = ("n/a (CPU)" if c.base.peak_mib is None and c.other.peak_mib is None else
                f"{num(c.base.peak_mib, '.1f')} / {num(c.other.peak_mib, '.1f')}")
        lines.append(
            f"| {md_inline(c.relation)} | {md_inline(c.base.id.split('/')[1])} "
            f"| {md_inline(o.case)} | {o.resolution} | {md_inline(o.precision)} "
            f"| {md_inline(c.expect)} | {o.status.value} | {values} "
            f"| {num(c.base.seconds, '.2f')} | {num(c.other.seconds, '.2f')} "
            f"| {num(c.ratio('seconds'), '.2f')} | {num(c.base.weights_mib, '.2f')} "
            f"| {num(c.other.weights_mib, '.2f')} | {peak} |"
        )
    return "\n".join(lines) + "\n"
