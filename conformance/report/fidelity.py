"""The precision table: each format against fp32 on the same device, in the style of the
published format comparisons (format, bits per weight, size, MAE, PSNR, SSIM, pHash)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from conformance.precision import PRECISIONS
from conformance.report.results import Check, Outcome
from conformance.report.safe_text import md_inline


def fidelity_rows(
    outcomes: Iterable[Outcome], denoiser_bytes: dict[str, int]
) -> list[dict[str, Any]]:
    """Mean metrics per (model, precision) over the fidelity outcomes that have metrics."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for o in outcomes:
        if o.check == Check.FIDELITY.value and o.metrics:
            groups.setdefault((o.model, o.precision), []).append(o.metrics)
    order = {name: n for n, name in enumerate(PRECISIONS)}
    rows = []
    for (model, prec), ms in sorted(
        groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], len(order)), kv[0][1])
    ):
        finite = [m["psnr"] for m in ms if m["psnr"] is not None]
        rows.append({
            "model": model,
            "precision": prec,
            "bits_per_weight": PRECISIONS[prec].bits_per_weight if prec in PRECISIONS else None,
            "denoiser_bytes": denoiser_bytes.get(f"{model}/{prec}"),
            "items": len(ms),
            "mae": sum(m["mae"] for m in ms) / len(ms),
            "psnr": sum(finite) / len(finite) if finite else math.inf,
            "ssim": sum(m["ssim"] for m in ms) / len(ms),
            "phash_distance": sum(m["phash_distance"] for m in ms) / len(ms),
        })
    return rows


def fidelity_markdown(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of :func:`fidelity_rows` (empty string when there are none); the
    model and format names are escaped (:func:`~conformance.report.safe_text.md_inline`)."""
    if not rows:
        return ""
    lines = [
        "| model | format | bits/weight | denoiser size | items | MAE | PSNR dB | SSIM | pHash d |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        size = f"{r['denoiser_bytes'] / 2**20:.2f} MiB" if r["denoiser_bytes"] else "?"
        psnr = "inf" if math.isinf(r["psnr"]) else f"{r['psnr']:.2f}"
        bits = "?" if r["bits_per_weight"] is None else f"{r['bits_per_weight']:g}"
        lines.append(
            f"| {md_inline(r['model'])} | {md_inline(r['precision'])} | {bits} | {size} "
            f"| {r['items']} | {r['mae']:.3f} | {psnr} | {r['ssim']:.4f} "
            f"| {r['phash_distance']:.2f} |"
        )
    return "\n".join(lines) + "\n"
