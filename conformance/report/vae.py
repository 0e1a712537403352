"""The VAE precision table (``docs/vae.md``, ``python benchmarks/vae_report.py``): every
measurement of :mod:`conformance.vae` for every VAE model and precision, which VAEs and
library versions produced it, and its Markdown. The suite's ``vae`` checks
(:mod:`conformance.checks.vae`) run one measurement per test; this runs them all.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from conformance import PROJECT_ROOT
from conformance.metrics import METRICS
from conformance.precision import REFERENCE_PRECISION
from conformance.vae import (
    DEFAULT_DECODE_SIZE,
    DEFAULT_LATENT_COUNT,
    DEFAULT_SEED,
    DEFAULT_SIZES,
    VAE_MODELS,
    VAE_PRECISIONS,
    DecodeCheck,
    LatentQuantCheck,
    RoundTripCheck,
    decode_check,
    decode_latents,
    downsample_factor,
    load_vae,
    photo_checks,
    precision_dtype,
    sample_photos,
    seeded_latents,
    vae_dir,
)

if TYPE_CHECKING:
    from diffusers import AutoencoderKL


@dataclass(frozen=True)
class VaeInfo:
    """Which VAE a report measured: its directory, latent layout and weights digest."""

    model: str
    path: str
    latent_channels: int
    downsample: int
    scaling_factor: float
    shift_factor: float | None
    weights_sha256: str

    @classmethod
    def of(cls, model: str, path: Path, vae: AutoencoderKL) -> VaeInfo:
        """Describe ``vae``, loaded from ``path``."""
        digest = hashlib.sha256()
        for weights in sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin")):
            digest.update(weights.read_bytes())
        shift = vae.config.get("shift_factor")
        try:
            shown = path.resolve().relative_to(PROJECT_ROOT)
        except ValueError:  # outside the checkout
            shown = path
        return cls(
            model=model,
            path=shown.as_posix(),
            latent_channels=int(vae.config.latent_channels),
            downsample=downsample_factor(vae),
            scaling_factor=float(vae.config.scaling_factor),
            shift_factor=None if shift is None else float(shift),
            weights_sha256=digest.hexdigest(),
        )


@dataclass(frozen=True)
class VaeReport:
    """Every check of one run, with what produced it."""

    decode: tuple[DecodeCheck, ...]
    round_trips: tuple[RoundTripCheck, ...]
    latent_quant: tuple[LatentQuantCheck, ...]
    vaes: tuple[VaeInfo, ...] = field(default_factory=tuple)
    versions: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    threads: int = 1


def library_versions() -> tuple[tuple[str, str], ...]:
    """(name, version) of the libraries the numbers depend on."""
    import diffusers
    import PIL
    import skimage
    import torch

    return (
        ("torch", torch.__version__),
        ("diffusers", diffusers.__version__),
        ("scikit-image", skimage.__version__),
        ("pillow", PIL.__version__),
        ("numpy", np.__version__),
    )


def run_checks(
    models: Sequence[str] = VAE_MODELS,
    precisions: Sequence[str] = VAE_PRECISIONS,
    sizes: Sequence[int] = DEFAULT_SIZES,
    *,
    fixtures_dir: Path | None = None,
    seed: int = DEFAULT_SEED,
    count: int = DEFAULT_LATENT_COUNT,
    decode_size: int = DEFAULT_DECODE_SIZE,
) -> VaeReport:
    """Run the decode, round-trip and 8-bit latent checks for every model x precision.

    VAEs are read from disk on every call (``fixtures_dir`` or the default fixtures).
    fp32 is always computed as the reference, even when not in ``precisions``.
    """
    import torch

    if not models or not precisions or not sizes:
        raise ValueError("models, precisions and sizes must not be empty")
    for p in precisions:
        precision_dtype(p)
    photos = {size: sample_photos(size) for size in sizes}
    decode_rows: list[DecodeCheck] = []
    rt_rows: list[RoundTripCheck] = []
    quant_rows: list[LatentQuantCheck] = []
    infos: list[VaeInfo] = []
    for model in models:
        path = vae_dir(model, fixtures_dir)
        reference_vae = load_vae(path, torch.float32)
        infos.append(VaeInfo.of(model, path, reference_vae))
        latents = seeded_latents(reference_vae, decode_size, count, seed)
        reference = decode_latents(reference_vae, latents)
        references = {
            size: photo_checks(
                reference_vae, photos[size], model=model, precision=REFERENCE_PRECISION
            )
            for size in sizes
        }
        for precision in precisions:
            vae = load_vae(path, precision)  # fp32 too: a fresh load for the repeat
            decode_rows.append(
                decode_check(vae, reference, latents, model=model, precision=precision, seed=seed)
            )
            for size in sizes:
                if precision == REFERENCE_PRECISION:
                    rt, quant = references[size]
                else:
                    rt, quant = photo_checks(
                        vae,
                        photos[size],
                        model=model,
                        precision=precision,
                        reference=references[size][0],
                    )
                rt_rows.append(rt)
                quant_rows.append(quant)
    return VaeReport(
        decode=tuple(decode_rows),
        round_trips=tuple(rt_rows),
        latent_quant=tuple(quant_rows),
        vaes=tuple(infos),
        versions=library_versions(),
        threads=torch.get_num_threads(),
    )


# -- Markdown --------------------------------------------------------------------------------


def _db(value: float) -> str:
    return "identical" if math.isinf(value) else f"{value:.2f}"


def _delta(value: float) -> str:
    return f"{0.0 if abs(value) < 0.0005 else value:.3f}"  # no "-0.000"


def render_markdown(report: VaeReport) -> str:
    """The report as Markdown: the VAEs measured, one table per check, then the versions."""
    lines: list[str] = []
    if report.vaes:
        lines += [
            "## VAEs",
            "",
            "| model | latent channels | downsampling | scaling factor | shift factor "
            "| weights SHA-256 | path |",
            "|---|---:|---:|---:|---:|---|---|",
        ]
        for v in report.vaes:
            shift = "-" if v.shift_factor is None else f"{v.shift_factor:g}"
            lines.append(
                f"| {v.model} | {v.latent_channels} | {v.downsample}x | {v.scaling_factor:g} "
                f"| {shift} | `{v.weights_sha256[:16]}` | `{v.path}` |"
            )
        lines.append("")
    lines += ["## Decode of seeded latents vs fp32", ""]
    if report.decode:
        first = report.decode[0]
        lines += [
            f"{first.count} standard-normal latents (CPU generator, seed {first.seed}) "
            f"decoded to {first.size}x{first.size}; worst image of the batch. The fp32 row "
            "compares two independently loaded fp32 VAEs (bit-repeatability).",
            "",
        ]
    metrics = list(METRICS.values())
    lines += [
        "| model | precision | identical | " + " | ".join(m.header for m in metrics) + " |",
        "|---|---|---|" + "---:|" * len(metrics),
    ]
    for d in report.decode:
        values = " | ".join(m.format(d.metrics.get(m.name)) for m in metrics)
        lines.append(f"| {d.model} | {d.precision} | {'yes' if d.identical else 'no'} | {values} |")
    lines += [
        "",
        "## Photo round trips (encode, latent mean, decode) vs the photo",
        "",
        "| model | precision | size | photos | mean PSNR dB | min PSNR dB | mean SSIM "
        "| min SSIM | max PSNR drop vs fp32 dB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report.round_trips:
        lines.append(
            f"| {r.model} | {r.precision} | {r.size} | {len(r.photos)} | {r.mean_psnr:.2f} "
            f"| {r.min_psnr:.2f} | {r.mean_ssim:.4f} | {r.min_ssim:.4f} "
            f"| {_delta(r.max_psnr_drop)} |"
        )
    lines += [
        "",
        "## 8-bit latents (per-channel min/max) vs float latents",
        "",
        "| model | precision | size | min PSNR vs float dB | min SSIM vs float "
        "| max PSNR loss vs photo dB | latent B | zlib B | raw RGB B | PNG B "
        "| ratio vs raw | ratio vs PNG |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for q in report.latent_quant:
        s = q.sizes
        lines.append(
            f"| {q.model} | {q.precision} | {q.size} | {_db(q.min_psnr_vs_float)} "
            f"| {q.min_ssim_vs_float:.4f} | {_delta(q.max_psnr_loss)} | {s.latent_bytes} "
            f"| {s.latent_zlib_bytes} | {s.raw_rgb_bytes} | {s.png_bytes} "
            f"| {s.ratio_vs_raw:.1f} | {s.ratio_vs_png:.1f} |"
        )
    if report.versions:
        lines += [
            "",
            "Measured with "
            + ", ".join(f"{name} {version}" for name, version in report.versions)
            + f"; {report.threads} torch thread(s).",
        ]
    return "\n".join(lines) + "\n"
