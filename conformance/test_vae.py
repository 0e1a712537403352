"""VAE precision conformance: decode and round trips in fp32, bf16 and fp16.

Ids read ``MODEL/vae/PRECISION`` (``tiny-sd/vae/bf16``). Each test pins one torch thread and
reads the VAE from ``fixtures/<model>/vae`` (or ``$CONFORMANCE_FIXTURES``); a missing
``config.json`` is a skip naming the path. The numbers come from :mod:`conformance.vae`;
``python benchmarks/vae_report.py`` prints the full table (``docs/vae.md``).

Bounds are written as data below with the measurements they were set from; regenerate the
table and revisit them when the fixtures are retrained.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import torch

from conformance import vae as V
from conformance.metrics import pixel_sha256

if TYPE_CHECKING:
    from diffusers import AutoencoderKL

ROUND_TRIP_SIZE = 64  # the report also covers 96 px; one size keeps the module quick


@dataclass(frozen=True)
class DecodeBounds:
    """Worst image of the seeded batch against the fp32 decode of the same latents."""

    max_mae: float
    min_psnr: float
    min_ssim: float
    max_phash: int


# Every measurement below was taken twice (tiny-sd / tiny-flux, 1 thread, torch 2.13 CPU):
#   [init]    the fixtures as shipped now: VAE weights at their seeded initialisation
#             (scaling_factor 1.0);
#   [trained] VAEs trained with `conformance train`'s recipe for 400 VAE steps
#             (scaling_factor 0.282 / 0.683, shift_factor - / -0.051), what retrained
#             fixtures look like.
# docs/vae.md holds the full table for the fixtures on disk (`python benchmarks/vae_report.py`).

# Decoding the same 4 seeded latents at 64 px in reduced precision against fp32, worst image.
# "A bf16 VAE is visually indistinguishable from fp32", read as: PSNR of 40 dB or more (the
# usual visually-lossless mark), SSIM above 0.995, MAE under two grey levels. Measured:
#   bf16 [init]    MAE 0.64 / 0.68, PSNR 48.2 / 47.5 dB, SSIM 0.99955 / 0.99946, pHash d 2 / 2
#   bf16 [trained] MAE 0.35 / 0.30, PSNR 52.6 / 53.0 dB, SSIM 0.99971 / 0.99911, pHash d 2 / 2
#   fp16 [init]    MAE 0.08 / 0.09, PSNR 58.9 / 58.5 dB, SSIM 0.99996 / 0.99995, pHash d 2 / 2
#   fp16 [trained] MAE 0.04 / 0.03, PSNR 62.3 / 63.3 dB, SSIM 0.99997 / 0.99989, pHash d 0 / 0
# Bounds: bf16 takes those thresholds (7.5 dB under the worst measurement, MAE at 2.2x the
# worst); fp16 keeps ~8 dB under its worst. pHash on decoded noise latents moves by 2 bits
# even at fp16's MAE 0.08, so its bound only catches a different picture.
DECODE_BOUNDS: dict[str, DecodeBounds] = {
    "bf16": DecodeBounds(max_mae=1.5, min_psnr=40.0, min_ssim=0.995, max_phash=8),
    "fp16": DecodeBounds(max_mae=0.3, min_psnr=50.0, min_ssim=0.999, max_phash=6),
}

# Photo round trips at 64 px (5 scikit-image photos; encode, latent mean, decode), fp32.
# The tiny VAEs have 1-2 M parameters and were trained on synthetic shapes, so photographs
# come back as blurred colour fields: PSNR is modest by design (the SD ft-MSE VAE reaches
# ~24.5 dB on COCO). Measured min / mean PSNR of the shipped (trained) fixtures, 64 px:
#   tiny-sd 10.37 / 13.00 dB, tiny-flux 9.93 / 12.98 dB (docs/vae.md); seeded init weights
#   gave 8.00 / 9.86 and 9.14 / 10.47 dB.
# The floor is the trained minimum less about 1 dB: it catches a VAE that returns nothing
# usable (a swapped scaling factor, a black image, untrained weights), not a quality change.
MIN_PHOTO_PSNR = 9.0
# PSNR per photo lost by reduced precision against the fp32 round trip. Measured max drop:
#   bf16 [init] 0.009 / 0.015 dB, [trained] 0.029 / 0.029 dB
#   fp16 [init] 0.001 / 0.001 dB, [trained] 0.000 / 0.000 dB
MAX_PSNR_DROP: dict[str, float] = {"fp32": 0.0, "bf16": 0.25, "fp16": 0.1}

# 8-bit latents (per-channel min/max) against float latents, same precision, per photo.
# PSNR of the 8-bit round trip against the float-latent one, worst photo:
#   fp32 [init] 52.7 / 50.8 dB, [trained] 57.8 / 59.3 dB
#   bf16 [init] 43.4 / 42.9 dB, [trained] 54.9 / 54.5 dB (bf16's own rounding dominates)
#   fp16 [init] 52.5 / 50.7 dB, [trained] 57.6 / 60.1 dB
# PSNR against the photo lost by 8-bit latents: at most 0.005 [init], 0.003 [trained] dB.
# Bounds: ~9-10 dB under the worst measurement; a loss of 0.25 dB is ~50x the measured one
# and still far below what a human sees.
MAX_8BIT_PSNR_LOSS = 0.25
MIN_8BIT_PSNR_VS_FLOAT: dict[str, float] = {"fp32": 42.0, "bf16": 34.0, "fp16": 42.0}
# 3 x f^2 / C bytes of RGB per latent value is 12 for both VAEs (f = 4, C = 4 and f = 8,
# C = 16), less the per-channel ranges: measured 11.6 / 10.7 at 64 px.
MIN_COMPRESSION_VS_RAW = 10.0

PRECISIONS: tuple[str, ...] = V.VAE_PRECISIONS
REDUCED: tuple[str, ...] = tuple(p for p in PRECISIONS if p != "fp32")


def _params(precisions: tuple[str, ...]) -> list[Any]:
    params = [
        pytest.param(model, precision, id=f"{model}/vae/{precision}")
        for model in V.VAE_MODELS
        for precision in precisions
    ]
    assert params, "no (model, precision) pairs to test"
    return params


ALL = _params(PRECISIONS)
REDUCED_ONLY = _params(REDUCED)
assert set(DECODE_BOUNDS) == set(REDUCED), "every reduced precision needs decode bounds"


def _vae_path(model: str) -> Path:
    path = V.vae_dir(model)
    if not (path / "config.json").is_file():
        pytest.skip(f"no VAE fixture for {model}: {path / 'config.json'} is missing")
    return path


class Measurements:
    """Decodes and round trips computed once per module run (the VAEs are read from disk)."""

    def __init__(self) -> None:
        self._vaes: dict[tuple[str, str], AutoencoderKL] = {}
        self._decodes: dict[str, tuple[torch.Tensor, np.ndarray]] = {}
        self._photos: dict[int, dict[str, np.ndarray]] = {}
        self._checks: dict[tuple[str, str, int], tuple[V.RoundTripCheck, V.LatentQuantCheck]] = {}

    def vae(self, model: str, precision: str) -> AutoencoderKL:
        key = (model, precision)
        if key not in self._vaes:
            self._vaes[key] = V.load_vae(_vae_path(model), precision)
        return self._vaes[key]

    def reference_decode(self, model: str) -> tuple[torch.Tensor, np.ndarray]:
        """Seeded latents and their fp32 decode."""
        if model not in self._decodes:
            vae = self.vae(model, "fp32")
            latents = V.seeded_latents(vae, V.DEFAULT_DECODE_SIZE)
            self._decodes[model] = (latents, V.decode_latents(vae, latents))
        return self._decodes[model]

    def photos(self, size: int) -> dict[str, np.ndarray]:
        if size not in self._photos:
            self._photos[size] = V.sample_photos(size)
        return self._photos[size]

    def photo_checks(
        self, model: str, precision: str, size: int = ROUND_TRIP_SIZE
    ) -> tuple[V.RoundTripCheck, V.LatentQuantCheck]:
        key = (model, precision, size)
        if key not in self._checks:
            reference = None if precision == "fp32" else self.photo_checks(model, "fp32", size)[0]
            self._checks[key] = V.photo_checks(
                self.vae(model, precision),
                self.photos(size),
                model=model,
                precision=precision,
                reference=reference,
            )
        return self._checks[key]


@pytest.fixture(scope="module")
def measurements() -> Measurements:
    torch.set_num_threads(1)
    return Measurements()


@pytest.fixture
def require(request: pytest.FixtureRequest) -> Callable[..., None]:
    """``require(ok, what, observed, expected)``: fail with the observed value, the bound and
    the command that reproduces the test."""

    def check(ok: bool, what: str, observed: object, expected: str) -> None:
        __tracebackhide__ = True
        if not ok:
            pytest.fail(
                f"{what}: observed={observed}, expected={expected} [{request.node.name}]\n"
                f"  reproduce: python -m pytest '{request.node.nodeid}' -p no:xdist\n"
                "  full table: python benchmarks/vae_report.py",
                pytrace=False,
            )

    return check


@pytest.mark.parametrize(("model", "precision"), ALL)
def test_decode_repeatable(model: str, precision: str, require: Callable[..., None]) -> None:
    """Two independently loaded VAEs decode the seeded latents to the same bits."""
    torch.set_num_threads(1)
    path = _vae_path(model)
    first, second = V.load_vae(path, precision), V.load_vae(path, precision)
    latents = V.seeded_latents(first, V.DEFAULT_DECODE_SIZE)
    a, b = V.decode_sample(first, latents), V.decode_sample(second, latents)
    require(
        torch.equal(a, b),
        "decoder output differs between two runs",
        f"max |a-b|={float((a.float() - b.float()).abs().max()):.3g}",
        "bit-identical",
    )
    ha = [pixel_sha256(img) for img in V.tensor_to_images(a)]
    hb = [pixel_sha256(img) for img in V.tensor_to_images(b)]
    require(ha == hb, "decoded pixel SHA-256 differs", hb, ha)


@pytest.mark.parametrize(("model", "precision"), REDUCED_ONLY)
def test_decode_close_to_fp32(
    model: str, precision: str, measurements: Measurements, require: Callable[..., None]
) -> None:
    """Reduced-precision decode of the seeded latents stays visually identical to fp32."""
    torch.set_num_threads(1)
    latents, reference = measurements.reference_decode(model)
    check = V.decode_check(
        measurements.vae(model, precision), reference, latents, model=model, precision=precision
    )
    bounds = DECODE_BOUNDS[precision]
    require(
        check.mae <= bounds.max_mae,
        "decode MAE vs fp32",
        f"{check.mae:.4f}",
        f"<= {bounds.max_mae}",
    )
    require(
        check.psnr >= bounds.min_psnr,
        "decode PSNR vs fp32",
        f"{check.psnr:.2f} dB",
        f">= {bounds.min_psnr} dB",
    )
    require(
        check.ssim >= bounds.min_ssim,
        "decode SSIM vs fp32",
        f"{check.ssim:.5f}",
        f">= {bounds.min_ssim}",
    )
    require(
        check.phash_distance <= bounds.max_phash,
        "decode pHash distance vs fp32",
        check.phash_distance,
        f"<= {bounds.max_phash}",
    )


@pytest.mark.parametrize(("model", "precision"), ALL)
def test_photo_round_trip(
    model: str, precision: str, measurements: Measurements, require: Callable[..., None]
) -> None:
    """Photos survive encode-decode above a PSNR floor; reduced precision loses little."""
    torch.set_num_threads(1)
    rt, _ = measurements.photo_checks(model, precision)
    worst = rt.photos[int(np.argmin(rt.psnr))]
    require(
        rt.min_psnr >= MIN_PHOTO_PSNR,
        f"round-trip PSNR of photo {worst!r}",
        f"{rt.min_psnr:.2f} dB",
        f">= {MIN_PHOTO_PSNR} dB ({rt.size} px)",
    )
    require(
        rt.max_psnr_drop <= MAX_PSNR_DROP[precision],
        "round-trip PSNR lost vs fp32",
        f"{rt.max_psnr_drop:.3f} dB",
        f"<= {MAX_PSNR_DROP[precision]} dB",
    )


@pytest.mark.parametrize(("model", "precision"), ALL)
def test_latent_8bit_round_trip(
    model: str, precision: str, measurements: Measurements, require: Callable[..., None]
) -> None:
    """8-bit latents decode close to float latents at about a twelfth of the RGB bytes."""
    torch.set_num_threads(1)
    _, quant = measurements.photo_checks(model, precision)
    require(
        quant.max_psnr_loss <= MAX_8BIT_PSNR_LOSS,
        "PSNR vs photo lost by 8-bit latents",
        f"{quant.max_psnr_loss:.3f} dB",
        f"<= {MAX_8BIT_PSNR_LOSS} dB",
    )
    floor = MIN_8BIT_PSNR_VS_FLOAT[precision]
    require(
        quant.min_psnr_vs_float >= floor,
        "8-bit vs float latent round trip PSNR",
        f"{quant.min_psnr_vs_float:.2f} dB",
        f">= {floor} dB",
    )
    ratio = quant.sizes.ratio_vs_raw
    require(
        ratio >= MIN_COMPRESSION_VS_RAW,
        "raw RGB bytes per 8-bit latent byte",
        f"{ratio:.2f}",
        f">= {MIN_COMPRESSION_VS_RAW}",
    )
