"""VAE precision checks: decode and encode-decode round trips per precision, 8-bit latents.

The VAE is the last step of every pipeline, so a precision's error there lands on every pixel.
This module measures it on the suite's tiny VAEs (``fixtures/<model>/vae``, diffusers
``AutoencoderKL`` directories) without pytest:

* :func:`decode_check` decodes the same seeded latents (CPU ``torch.Generator``) in a given
  precision and compares the pixels with the fp32 decode (every registered metric of
  :func:`conformance.metrics.compare`, worst image of the batch);
* :func:`photo_checks` encodes real photographs bundled with scikit-image
  (:func:`sample_photos`), takes the latent mean (no sampling), decodes, and compares with the
  photo; it also quantizes the latents to 8 bits per value with a per-channel min/max
  (:func:`quantize_latents_8bit`), decodes those, and accounts the bytes against raw RGB and
  PNG: the latent-space image compression idea, measured;
* :func:`decode_violations`, :func:`round_trip_violations` and :func:`latent8_violations`
  judge the checks against the ``vae.*`` tables of a tolerance file
  (:meth:`conformance.tolerances.Tolerances.lookup`); :mod:`conformance.checks.vae` runs
  them as the suite's ``vae`` checks; :mod:`conformance.report.vae` runs the whole table
  (``docs/vae.md``) and formats it.

Latents are "pipeline latents": :func:`encode_images` applies ``shift_factor`` and
``scaling_factor`` (and ``latents_mean`` / ``latents_std`` when the config has them) the way
the pipelines do after encoding, and :func:`decode_latents` undoes them before decoding.
Decoded samples are widened to float32 before ``/ 2 + 0.5``, ``* 255`` and rounding to uint8.
(The pipelines' image processor denormalizes in the VAE's dtype and widens afterwards, which
in bf16 adds up to about one grey level of its own.) The tables thus measure the VAE's
arithmetic, not the output cast.
No fp32 upcast of the VAE is applied in reduced precision (``force_upcast`` is ignored): the
point is to measure the VAE computing in that dtype.
"""

from __future__ import annotations

import contextlib
import io
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from conformance.metrics import METRICS, Metrics, as_rgb_uint8, compare, worst
from conformance.models import get_model
from conformance.precision import PRECISIONS, dtype_precisions

if TYPE_CHECKING:
    import torch
    from diffusers import AutoencoderKL

    from conformance.tolerances import VaeBounds

#: Models whose VAE the checks cover (names of :data:`conformance.models.MODELS`).
VAE_MODELS: tuple[str, ...] = ("tiny-sd", "tiny-flux")
#: Precisions the checks cover; the first is the reference.
VAE_PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")

#: Photographs of scikit-image's data directory used for round trips: name -> file.
PHOTO_FILES: dict[str, str] = {
    "astronaut": "astronaut.png",
    "coffee": "coffee.png",
    "chelsea": "chelsea.png",
    "rocket": "rocket.jpg",
    "immunohistochemistry": "ihc.png",
}
DEFAULT_SEED = 0
DEFAULT_LATENT_COUNT = 4
DEFAULT_DECODE_SIZE = 64
DEFAULT_SIZES: tuple[int, ...] = (64, 96)
#: PNG settings for the size accounting (deterministic for a given zlib).
PNG_COMPRESS_LEVEL = 9
ZLIB_LEVEL = 9


class MissingVaeError(FileNotFoundError):
    """A VAE directory (``config.json`` + weights) that is not there."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(
            f"no VAE at {path}: {path / 'config.json'} does not exist "
            "(expected a diffusers AutoencoderKL directory; run `python -m fixtures.build "
            "train` from a source checkout or set $CONFORMANCE_FIXTURES)"
        )


class MissingPhotoError(FileNotFoundError):
    """A photograph that is not bundled with the installed scikit-image."""


# -- loading ---------------------------------------------------------------------------------


def vae_dir(model: str, fixtures_dir: Path | None = None) -> Path:
    """The VAE directory of registered model ``model`` (``<fixtures>/<model>/vae``)."""
    return get_model(model).verified_path(fixtures_dir) / "vae"


def precision_dtype(precision: str) -> torch.dtype:
    """The torch dtype of a plain-dtype precision name (``fp32``, ``bf16``, ``fp16``)."""
    spec = PRECISIONS.get(precision)
    if spec is None or not spec.kind.plain:
        accepted = ", ".join(dtype_precisions())
        raise ValueError(f"VAE precision {precision!r} is not one of: {accepted}")
    return spec.torch_dtype()


def load_vae(path: str | Path, dtype: torch.dtype | str) -> AutoencoderKL:
    """Load the VAE in local directory ``path`` in ``dtype``, in eval mode, as a pipeline's
    VAE swap is loaded (:func:`conformance.generate.load_vae`: offline, safetensors only, a
    shipped fixture checked against its checksums).

    ``dtype`` is a ``torch.dtype`` or a precision name. Raises :class:`MissingVaeError`
    naming the path when ``path/config.json`` is absent; nothing is downloaded.
    """
    from conformance.generate import load_vae as load_component

    path = Path(path)
    if not (path / "config.json").is_file():
        raise MissingVaeError(path)
    torch_dtype = precision_dtype(dtype) if isinstance(dtype, str) else dtype
    vae = load_component(path, torch_dtype)
    vae.eval()
    vae.requires_grad_(False)
    return vae


def downsample_factor(vae: AutoencoderKL) -> int:
    """Pixels per latent along each side (``2 ** (len(block_out_channels) - 1)``)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


# -- photographs -----------------------------------------------------------------------------


def photo_path(name: str) -> Path:
    """The file of photograph ``name`` in the installed scikit-image's data directory."""
    import skimage.data

    try:
        filename = PHOTO_FILES[name]
    except KeyError:
        raise KeyError(f"unknown photo {name!r}; known photos: {', '.join(PHOTO_FILES)}") from None
    path = Path(skimage.data.__file__).resolve().parent / filename
    if not path.is_file():
        raise MissingPhotoError(
            f"{path} is not bundled with this scikit-image; it would need a download, which "
            "the checks never do"
        )
    return path


def center_square(image: Any, size: int) -> np.ndarray:
    """Center-crop a PIL image to a square and resize it (LANCZOS) to ``size`` x ``size``."""
    from PIL import Image

    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    rgb = image.convert("RGB")
    w, h = rgb.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    square = rgb.crop((left, top, left + side, top + side))
    return np.array(square.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def sample_photos(size: int, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Bundled scikit-image photographs as ``size`` x ``size`` x 3 uint8 arrays, by name.

    Center-cropped and resized with LANCZOS; the same bytes on every call. Reads the files
    of scikit-image's own data directory directly, so nothing is fetched.
    """
    from PIL import Image

    out: dict[str, np.ndarray] = {}
    for name in PHOTO_FILES if names is None else names:
        with Image.open(photo_path(name)) as img:
            out[name] = center_square(img, size)
    return out


# -- latents and pixels ----------------------------------------------------------------------


def _latent_stats(vae: AutoencoderKL, like: torch.Tensor) -> tuple[Any, Any] | None:
    import torch

    mean, std = vae.config.get("latents_mean"), vae.config.get("latents_std")
    if mean is None or std is None:
        return None

    shape = (1, len(mean), 1, 1)
    return (
        torch.tensor(mean, dtype=like.dtype).view(shape),
        torch.tensor(std, dtype=like.dtype).view(shape),
    )


def scale_latents(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """VAE latents -> pipeline latents (after ``encode``), as the pipelines scale them."""
    scale = vae.config.scaling_factor
    stats = _latent_stats(vae, latents)
    if stats is not None:  # SDXL-style per-channel statistics
        mean, std = stats
        return (latents - mean) * scale / std
    shift = vae.config.get("shift_factor") or 0.0
    return (latents - shift) * scale


def unscale_latents(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Pipeline latents -> VAE latents (before ``decode``): the inverse of
    :func:`scale_latents`."""
    scale = vae.config.scaling_factor
    stats = _latent_stats(vae, latents)
    if stats is not None:
        mean, std = stats
        return latents * std / scale + mean
    shift = vae.config.get("shift_factor") or 0.0
    return latents / scale + shift


def images_to_tensor(images: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """``N x H x W x 3`` uint8 -> ``N x 3 x H x W`` in [-1, 1] (computed in float32)."""
    import torch

    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"expected N x H x W x 3 uint8 images, got {images.dtype} {images.shape}")
    x = torch.from_numpy(np.array(images, dtype=np.uint8)).permute(0, 3, 1, 2).float()
    return (x / 127.5 - 1.0).to(dtype)


def tensor_to_images(sample: torch.Tensor) -> np.ndarray:
    """Decoder output (``N x 3 x H x W``, about [-1, 1]) -> ``N x H x W x 3`` uint8."""
    import torch

    x = (sample.float() / 2 + 0.5).clamp(0, 1)
    x = (x.permute(0, 2, 3, 1) * 255).round()
    return x.to(torch.uint8).numpy()


def _batch(images: Any) -> tuple[np.ndarray, bool]:
    arr = np.asarray(images)
    if arr.ndim == 3:
        return as_rgb_uint8(arr)[None], True
    return arr, False


def _check_side(vae: AutoencoderKL, shape: Sequence[int]) -> None:
    factor = downsample_factor(vae)
    for side in shape:
        if side % factor:
            raise ValueError(
                f"image side {side} is not a multiple of {factor}, the VAE's downsampling factor"
            )


class _ModelClock:
    """Seconds this process spent inside the VAE's own encode and decode calls (the VAE
    checks' model work, beside the pipelines'; benchmarks/bench_suite.py reads it)."""

    seconds = 0.0

    @classmethod
    @contextlib.contextmanager
    def timing(cls) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            cls.seconds += time.perf_counter() - start


def model_seconds() -> float:
    """Seconds spent in VAE encode / decode calls made through this module."""
    return _ModelClock.seconds


def encode_images(vae: AutoencoderKL, images: Any) -> torch.Tensor:
    """Encode uint8 images (one ``H x W x 3`` or a batch) to float32 pipeline latents.

    Uses the latent distribution's mean (deterministic; no sampling), scaled as the pipelines
    scale encoded latents (in the VAE's dtype), then widened to float32 losslessly.
    """
    import torch

    batch, _ = _batch(images)
    _check_side(vae, batch.shape[1:3])
    x = images_to_tensor(batch, vae.dtype)
    with torch.inference_mode(), _ModelClock.timing():
        mean = vae.encode(x).latent_dist.mean
        return scale_latents(vae, mean).float()


def decode_sample(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """The decoder's raw output (``N x 3 x H x W``, VAE dtype) for pipeline latents.

    The latents are cast to the VAE's dtype first and unscaled in it, as the pipelines do.
    """
    import torch

    if latents.ndim != 4:
        raise ValueError(f"expected N x C x h x w latents, got shape {tuple(latents.shape)}")
    with torch.inference_mode(), _ModelClock.timing():
        z = unscale_latents(vae, latents.to(vae.dtype))
        return vae.decode(z).sample


def decode_latents(vae: AutoencoderKL, latents: torch.Tensor) -> np.ndarray:
    """Decode pipeline latents (``N x C x h x w``) to ``N x H x W x 3`` uint8 images."""
    return tensor_to_images(decode_sample(vae, latents))


def round_trip(vae: AutoencoderKL, image: Any) -> np.ndarray:
    """Encode (latent mean) and decode ``image`` (``H x W x 3`` or a batch) back to uint8."""
    batch, single = _batch(image)
    out = decode_latents(vae, encode_images(vae, batch))
    return out[0] if single else out


def seeded_latents(
    vae: AutoencoderKL, size: int, count: int = DEFAULT_LATENT_COUNT, seed: int = DEFAULT_SEED
) -> torch.Tensor:
    """``count`` standard-normal float32 pipeline latents for ``size`` x ``size`` images.

    Drawn from a CPU ``torch.Generator`` seeded with ``seed``: the same values everywhere.
    """
    import torch

    _check_side(vae, (size, size))
    side = size // downsample_factor(vae)
    shape = (count, vae.config.latent_channels, side, side)
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float32)


# -- 8-bit latents ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class QuantizedLatents:
    """Latents stored as one uint8 code per value plus a float32 (min, max) per channel.

    ``codes`` has the latents' shape ``N x C x h x w``; ``low`` / ``high`` are ``N x C``.
    A value is ``low + code * (high - low) / 255``.
    """

    codes: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @property
    def nbytes(self) -> int:
        """Stored size: the codes plus the per-channel ranges."""
        return int(self.codes.nbytes + self.low.nbytes + self.high.nbytes)

    def to_bytes(self) -> bytes:
        """Codes, then ``low`` and ``high`` (little-endian float32): what :attr:`nbytes`
        counts."""
        return (
            self.codes.tobytes()
            + self.low.astype("<f4").tobytes()
            + self.high.astype("<f4").tobytes()
        )

    def zlib_nbytes(self, level: int = ZLIB_LEVEL) -> int:
        """Size of :meth:`to_bytes` after zlib (an entropy-coded container)."""
        return len(zlib.compress(self.to_bytes(), level))


def quantize_latents_8bit(latents: Any) -> QuantizedLatents:
    """Quantize ``N x C x h x w`` latents to 8 bits with a min/max range per channel.

    Each value lands within half a step, ``(max - min) / 255 / 2``, of its channel's grid.
    Raises ``ValueError`` for another rank or non-finite values.
    """
    x = latents.detach().float().cpu().numpy() if hasattr(latents, "detach") else latents
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"expected N x C x h x w latents, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("latents contain NaN or infinity; they cannot be quantized")
    x = x.astype(np.float32)
    low = x.min(axis=(2, 3))
    high = x.max(axis=(2, 3))
    span = (high.astype(np.float64) - low)[:, :, None, None]
    step = np.where(span > 0, span / 255.0, 1.0)
    codes = np.rint((x - low[:, :, None, None].astype(np.float64)) / step)
    codes = np.clip(codes, 0, 255).astype(np.uint8)
    return QuantizedLatents(codes=codes, low=low, high=high)


def dequantize_latents_8bit(quantized: QuantizedLatents) -> torch.Tensor:
    """The float32 latents :class:`QuantizedLatents` stands for."""
    import torch

    low = quantized.low.astype(np.float64)[:, :, None, None]
    span = quantized.high.astype(np.float64)[:, :, None, None] - low
    values = low + quantized.codes.astype(np.float64) * (span / 255.0)
    return torch.from_numpy(values.astype(np.float32))


def png_nbytes(image: np.ndarray) -> int:
    """Size of ``image`` as a PNG (Pillow, ``compress_level`` 9)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(as_rgb_uint8(image), "RGB").save(
        buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL
    )
    return buf.tell()


@dataclass(frozen=True)
class CompressionSizes:
    """Bytes of the same images as raw RGB, PNG, 8-bit latents and zlib'd 8-bit latents."""

    raw_rgb_bytes: int
    png_bytes: int
    latent_bytes: int
    latent_zlib_bytes: int

    @property
    def ratio_vs_raw(self) -> float:
        """Raw RGB bytes per 8-bit latent byte."""
        return self.raw_rgb_bytes / self.latent_bytes

    @property
    def ratio_vs_png(self) -> float:
        """PNG bytes per 8-bit latent byte."""
        return self.png_bytes / self.latent_bytes


def compression_sizes(quantized: QuantizedLatents, images: Any) -> CompressionSizes:
    """Account the bytes of ``quantized`` against the images it encodes (one or a batch)."""
    batch, _ = _batch(images)
    if batch.shape[0] != quantized.codes.shape[0]:
        raise ValueError(
            f"{batch.shape[0]} images for {quantized.codes.shape[0]} quantized latents"
        )
    return CompressionSizes(
        raw_rgb_bytes=int(batch.nbytes),
        png_bytes=sum(png_nbytes(img) for img in batch),
        latent_bytes=quantized.nbytes,
        latent_zlib_bytes=quantized.zlib_nbytes(),
    )


# -- checks ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodeCheck:
    """Decoding the same seeded latents in ``precision`` against fp32: every registered metric
    (:func:`conformance.metrics.compare`) at its worst over the batch, read as
    ``check.metrics`` or as attributes (``check.mae``, ``check.identical``).

    For fp32 itself the reference is a second, independently loaded fp32 VAE, so the row
    says whether the decode is bit-repeatable.
    """

    model: str
    precision: str
    size: int
    seed: int
    count: int
    metrics: Metrics

    @property
    def identical(self) -> bool:
        return self.metrics.identical

    def __getattr__(self, name: str) -> Any:
        if name in METRICS:
            return getattr(self.metrics, name)
        raise AttributeError(f"DecodeCheck has no attribute {name!r}")


@dataclass(frozen=True)
class RoundTripCheck:
    """Encode-decode round trips of the photos in ``precision``: the registered metrics of
    each round trip against its photo."""

    model: str
    precision: str
    size: int
    photos: tuple[str, ...]
    metrics: tuple[Metrics, ...]
    #: Largest per-photo PSNR lost against the fp32 round trip (0 for fp32).
    max_psnr_drop: float

    @property
    def psnr(self) -> tuple[float, ...]:
        return tuple(m.psnr for m in self.metrics)

    @property
    def ssim(self) -> tuple[float, ...]:
        return tuple(m.ssim for m in self.metrics)

    @property
    def mean_psnr(self) -> float:
        return float(np.mean(self.psnr))

    @property
    def min_psnr(self) -> float:
        return min(self.psnr)

    @property
    def mean_ssim(self) -> float:
        return float(np.mean(self.ssim))

    @property
    def min_ssim(self) -> float:
        return min(self.ssim)


@dataclass(frozen=True)
class LatentQuantCheck:
    """Round trips through 8-bit latents in ``precision`` against the float-latent ones."""

    model: str
    precision: str
    size: int
    photos: tuple[str, ...]
    #: 8-bit round trip against the float-latent round trip, per photo.
    vs_float: tuple[Metrics, ...]
    #: 8-bit round trip against the photo, per photo.
    vs_photo: tuple[Metrics, ...]
    #: Per photo: PSNR (vs photo) of the float-latent round trip minus that of the 8-bit one.
    psnr_loss: tuple[float, ...]
    sizes: CompressionSizes

    @property
    def psnr_vs_float(self) -> tuple[float, ...]:
        return tuple(m.psnr for m in self.vs_float)

    @property
    def ssim_vs_float(self) -> tuple[float, ...]:
        return tuple(m.ssim for m in self.vs_float)

    @property
    def psnr_vs_photo(self) -> tuple[float, ...]:
        return tuple(m.psnr for m in self.vs_photo)

    @property
    def min_psnr_vs_float(self) -> float:
        return min(self.psnr_vs_float)

    @property
    def min_ssim_vs_float(self) -> float:
        return min(self.ssim_vs_float)

    @property
    def max_psnr_loss(self) -> float:
        return max(self.psnr_loss)


def decode_check(
    vae: AutoencoderKL,
    reference: np.ndarray,
    latents: torch.Tensor,
    *,
    model: str,
    precision: str,
    seed: int = DEFAULT_SEED,
) -> DecodeCheck:
    """Decode ``latents`` with ``vae`` and compare each image with ``reference`` (fp32)."""
    observed = decode_latents(vae, latents)
    if observed.shape != reference.shape:
        raise ValueError(f"decoded {observed.shape}, reference {reference.shape}")
    metrics = [compare(o, r) for o, r in zip(observed, reference, strict=True)]
    return DecodeCheck(
        model=model,
        precision=precision,
        size=int(observed.shape[1]),
        seed=seed,
        count=len(metrics),
        metrics=worst(metrics),
    )


def photo_checks(
    vae: AutoencoderKL,
    photos: Mapping[str, np.ndarray],
    *,
    model: str,
    precision: str,
    reference: RoundTripCheck | None = None,
) -> tuple[RoundTripCheck, LatentQuantCheck]:
    """Round-trip ``photos`` through ``vae`` with float and with 8-bit latents.

    ``reference`` is the fp32 :class:`RoundTripCheck` of the same photos, for the PSNR drop
    (``None``: this is the reference, drop 0).
    """
    if not photos:
        raise ValueError("no photos to round-trip")
    names = tuple(photos)
    batch = np.stack([as_rgb_uint8(photos[n]) for n in names])
    latents = encode_images(vae, batch)
    decoded = decode_latents(vae, latents)
    quantized = quantize_latents_8bit(latents)
    decoded_8bit = decode_latents(vae, dequantize_latents_8bit(quantized))

    rt = tuple(compare(d, p) for d, p in zip(decoded, batch, strict=True))
    q_float = tuple(compare(q, d) for q, d in zip(decoded_8bit, decoded, strict=True))
    q_photo = tuple(compare(q, p) for q, p in zip(decoded_8bit, batch, strict=True))
    if reference is None:
        drop = 0.0
    else:
        if reference.photos != names:
            raise ValueError(f"reference photos {reference.photos} differ from {names}")
        drop = max(r.psnr - p.psnr for r, p in zip(reference.metrics, rt, strict=True))
    size = int(batch.shape[1])
    return (
        RoundTripCheck(
            model=model,
            precision=precision,
            size=size,
            photos=names,
            metrics=rt,
            max_psnr_drop=drop,
        ),
        LatentQuantCheck(
            model=model,
            precision=precision,
            size=size,
            photos=names,
            vs_float=q_float,
            vs_photo=q_photo,
            psnr_loss=tuple(f.psnr - q.psnr for f, q in zip(rt, q_photo, strict=True)),
            sizes=compression_sizes(quantized, batch),
        ),
    )


# -- bounds ----------------------------------------------------------------------------------


def _per_photo(photos: Sequence[str], metrics: Sequence[Metrics], bounds: VaeBounds) -> list[str]:
    return [
        f"photo {name!r}: {problem}"
        for name, m in zip(photos, metrics, strict=True)
        for problem in bounds.metrics.violations(m)
    ]


def decode_violations(check: DecodeCheck, bounds: VaeBounds) -> list[str]:
    """What of ``[vae.decode.<precision>]`` the worst decoded image breaks."""
    return bounds.metrics.violations(check.metrics)


def round_trip_violations(check: RoundTripCheck, bounds: VaeBounds) -> list[str]:
    """What of ``[vae.roundtrip.<precision>]`` the round trips break: the metric bounds per
    photo (against the photo), and ``psnr_drop_max`` (PSNR lost against fp32)."""
    out = _per_photo(check.photos, check.metrics, bounds)
    drop = bounds.extra_violation(
        "psnr_drop_max", check.max_psnr_drop, "PSNR lost against the fp32 round trip", "dB"
    )
    return out + ([drop] if drop else [])


def latent8_violations(check: LatentQuantCheck, bounds: VaeBounds) -> list[str]:
    """What of ``[vae.latent8.<precision>]`` the 8-bit latents break: the metric bounds per
    photo (against the float-latent round trip), ``psnr_loss_max`` (PSNR against the photo
    lost) and ``compression_min`` (raw RGB bytes per latent byte)."""
    out = _per_photo(check.photos, check.vs_float, bounds)
    for problem in (
        bounds.extra_violation(
            "psnr_loss_max", check.max_psnr_loss, "PSNR against the photo lost", "dB"
        ),
        bounds.extra_violation(
            "compression_min", check.sizes.ratio_vs_raw, "raw RGB bytes per 8-bit latent byte"
        ),
    ):
        if problem:
            out.append(problem)
    return out
