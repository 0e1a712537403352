"""Image metrics on decoded uint8 RGB arrays (H x W x 3), and the registry that names them.

* :func:`pixel_sha256` hashes the decoded pixels (with the shape), never file bytes, so two
  PNG encoders that write different bytes for the same image agree.
* :data:`METRICS` is the registry: one :class:`Metric` per measurement, with its function,
  which direction is better, its range, display format, tolerance key and table labels.
  Results files, tolerance files, the matrix and every report take their metric names,
  columns and formats from it, so adding a metric is one :func:`register_metric` call (and
  its bounds in the tolerance file).
* :func:`compare` computes every registered metric that is part of the default comparison:
  MAE (0-255 scale), max abs difference, PSNR (dB; ``inf`` when equal), SSIM (scikit-image,
  ``data_range=255``, over colour channels), pHash / dHash Hamming distances (imagehash,
  64-bit hashes) and the mean NVIDIA FLIP error (``flip-evaluator``, LDR, sRGB input, 67
  pixels per degree).
* :func:`diff_map` and :func:`flip_map` render where two images differ.
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

HASH_SIZE = 8  # 64-bit perceptual hashes


def as_rgb_uint8(image: Any) -> np.ndarray:
    """Validate and return an H x W x 3 uint8 array (accepts PIL images)."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {arr.dtype} {arr.shape}")
    return arr


def pixel_sha256(image: Any) -> str:
    """SHA-256 of ``"HxWx3:"`` followed by the raw row-major pixel bytes."""
    arr = np.ascontiguousarray(as_rgb_uint8(image))
    h = hashlib.sha256(f"{arr.shape[0]}x{arr.shape[1]}x{arr.shape[2]}:".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def _pair(observed: Any, expected: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_rgb_uint8(observed), as_rgb_uint8(expected)
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: observed {a.shape}, expected {b.shape}")
    return a, b


# -- perceptual hashes -----------------------------------------------------------------------


@dataclass(frozen=True)
class PerceptualHash:
    """A 64-bit perceptual hash; hex string in and out; ``a - b`` is the Hamming distance."""

    kind: str
    hex: str

    def __sub__(self, other: PerceptualHash) -> int:
        if self.kind != other.kind:
            raise ValueError(f"cannot compare a {self.kind} hash with a {other.kind} hash")
        return (int(self.hex, 16) ^ int(other.hex, 16)).bit_count()

    def __str__(self) -> str:
        return self.hex


def _hash(image: np.ndarray, kind: str) -> PerceptualHash:
    import imagehash
    from PIL import Image

    pil = Image.fromarray(as_rgb_uint8(image), "RGB")
    function = imagehash.phash if kind == "phash" else imagehash.dhash
    return PerceptualHash(kind, str(function(pil, hash_size=HASH_SIZE)))


def perceptual_hashes(image: Any) -> tuple[PerceptualHash, PerceptualHash]:
    """(pHash, dHash) of an RGB image."""
    return _hash(image, "phash"), _hash(image, "dhash")


# -- metric functions: (observed, expected) uint8 RGB of one shape -> value ------------------


def _abs_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


def mae(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference, 0-255 scale."""
    return float(np.mean(_abs_diff(a, b)))


def max_abs(a: np.ndarray, b: np.ndarray) -> int:
    """Largest absolute channel difference."""
    return int(np.max(_abs_diff(a, b))) if a.size else 0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB (``inf`` when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity over the colour channels (window 7, smaller for tiny images;
    NaN for images under 3 pixels a side that differ)."""
    from skimage.metrics import structural_similarity

    win = min(7, a.shape[0], a.shape[1])
    win -= 1 - win % 2  # odd
    if win < 3:
        return 1.0 if np.array_equal(a, b) else float("nan")
    value = structural_similarity(a, b, channel_axis=2, data_range=255, win_size=win)
    return float(min(1.0, max(-1.0, value)))


def phash_distance(a: np.ndarray, b: np.ndarray) -> int:
    """Hamming distance of the 64-bit pHashes."""
    return _hash(a, "phash") - _hash(b, "phash")


def dhash_distance(a: np.ndarray, b: np.ndarray) -> int:
    """Hamming distance of the 64-bit dHashes."""
    return _hash(a, "dhash") - _hash(b, "dhash")


def _flip_error(observed: np.ndarray, expected: np.ndarray, magma: bool) -> np.ndarray:
    import flip_evaluator

    reference = np.ascontiguousarray(expected, dtype=np.float32) / np.float32(255)
    test = np.ascontiguousarray(observed, dtype=np.float32) / np.float32(255)
    # a fresh parameters dict each call: the library fills in the one it is given
    error_map, _, _ = flip_evaluator.evaluate(
        reference, test, "LDR", applyMagma=magma, computeMeanError=False, parameters={}
    )
    return np.asarray(error_map)


def flip(a: np.ndarray, b: np.ndarray) -> float:
    """Mean NVIDIA FLIP error (LDR, sRGB, 67 pixels per degree) of ``a`` against the
    reference ``b``: 0 for equal images, at most 1. Averaged here in float64 from the
    per-pixel error map, so the value does not depend on the library's summation order."""
    return float(np.mean(_flip_error(a, b, magma=False), dtype=np.float64))


# -- the registry ----------------------------------------------------------------------------


class Better(enum.Enum):
    """Which way a metric improves."""

    LOWER = "lower"
    HIGHER = "higher"


def _is_fixed(fmt: str) -> int | None:
    """The decimals of a ``{:.Nf}`` format, else None."""
    if fmt.startswith("{:.") and fmt.endswith("f}") and fmt[3:-2].isdigit():
        return int(fmt[3:-2])
    return None


@dataclass(frozen=True)
class Metric:
    """One registered measurement of an observed image against an expected one.

    ``name`` is its key in results files and :class:`Metrics`; ``bound`` the key of its
    limit in a tolerance table (``mae_max``, ``ssim_min``: a maximum when lower is better,
    a minimum when higher is). ``range`` is where its values lie (``hi`` may be ``inf``);
    ``bound_range`` where a tolerance bound may lie (default ``range``). ``fmt`` is the
    display format of tables and messages, ``compact_fmt`` that of the matrix cells;
    fixed-point formats round toward the worse side, so a value never reads better than it
    is (a non-identical SSIM never shows as 1.000). ``label`` names it in messages and
    key/value tables, ``short`` in column headers and the one-line summary; ``unit`` follows
    a value where one is shown. ``default``: :func:`compare` computes it unless asked not
    to; ``headline``: the matrix cells show it. ``null`` is the value a JSON ``null`` stands
    for (PSNR writes its ``inf`` as ``null``). ``symmetric``: swapping the images keeps the
    value; ``monotone``: the same perturbation, grown, never reads better.
    """

    name: str
    function: Callable[[np.ndarray, np.ndarray], float]
    better: Better
    range: tuple[float, float]
    fmt: str
    bound: str
    label: str
    short: str
    integer: bool = False
    unit: str = ""
    default: bool = True
    headline: bool = False
    compact_fmt: str | None = None
    bound_range: tuple[float, float] | None = None
    null: float | None = None
    symmetric: bool = True
    monotone: bool = True
    description: str = ""

    @property
    def best(self) -> float:
        """The value of an image against itself."""
        value = self.range[0] if self.better is Better.LOWER else self.range[1]
        return int(value) if self.integer and math.isfinite(value) else value

    @property
    def op(self) -> str:
        """How an observed value must relate to its bound: ``<=`` or ``>=``."""
        return "<=" if self.better is Better.LOWER else ">="

    @property
    def limits(self) -> tuple[float, float]:
        """Where a tolerance bound may lie."""
        return self.bound_range or self.range

    @property
    def header(self) -> str:
        """Column header: the short name with the unit (``PSNR dB``)."""
        return f"{self.short} {self.unit}" if self.unit else self.short

    def coerce(self, value: Any) -> float:
        """``value`` as this metric's type (int for integer metrics, else float)."""
        if self.integer and isinstance(value, (int, float)) and float(value).is_integer():
            return int(value)
        return float(value)

    def measure(self, observed: np.ndarray, expected: np.ndarray) -> float:
        """The metric of two validated images of one shape."""
        return self.coerce(self.function(observed, expected))

    def passes(self, value: float, bound: float) -> bool:
        """Whether ``value`` is within ``bound`` (NaN never is)."""
        if math.isnan(value):
            return False
        return value <= bound if self.better is Better.LOWER else value >= bound

    def worse(self, a: float, b: float) -> float:
        """The worse of two values (NaN is the worst)."""
        if math.isnan(a) or math.isnan(b):
            return math.nan
        return max(a, b) if self.better is Better.LOWER else min(a, b)

    def worst(self, values: Iterable[float]) -> float:
        """The worst of ``values`` (NaN if any is)."""
        out: float | None = None
        for v in values:
            out = v if out is None else self.worse(out, v)
        if out is None:
            raise ValueError(f"no {self.name} values")
        return out

    def to_json(self, value: float | None) -> Any:
        """The results-file form of a value (``null`` for :attr:`null`)."""
        if value is None or (self.null is not None and value == self.null):
            return None
        return value

    def from_json(self, value: Any) -> float | None:
        """A results-file value back (``null`` is :attr:`null`, or None: not recorded)."""
        if value is None:
            return self.null
        return self.coerce(value)

    def format(self, value: float | None, compact: bool = False, unit: bool = False) -> str:
        """``value`` in this metric's display format (``?`` for None)."""
        if value is None:
            return "?"
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        text = self._number(value, self.compact_fmt if compact and self.compact_fmt else self.fmt)
        return f"{text} {self.unit}" if unit and self.unit else text

    def _number(self, value: float, fmt: str) -> str:
        if self.integer and float(value).is_integer():
            return str(int(value))
        if self.integer:
            fmt = "{:.2f}"  # a mean of integer values
        decimals = _is_fixed(fmt)
        if decimals is None:
            return fmt.format(value)
        scale = 10**decimals
        scaled = value * scale
        nearest = round(scaled)
        if abs(scaled - nearest) <= 1e-6 * max(1.0, abs(scaled)):
            steps = nearest  # on the grid but for representation error
        elif self.better is Better.LOWER:
            steps = math.ceil(scaled)
        else:
            steps = math.floor(scaled)
        best = self.best
        if value != best and math.isfinite(best) and steps == round(best * scale):
            steps += 1 if self.better is Better.LOWER else -1
        return f"{steps / scale:.{decimals}f}"


#: The registered metrics by name, in the order tables show them.
METRICS: dict[str, Metric] = {}
#: Names a metric cannot take: the attributes of :class:`Metrics`.
_RESERVED = frozenset({"identical", "values", "get", "to_dict", "from_dict", "summary"})


def register_metric(metric: Metric) -> Metric:
    """Add ``metric`` to :data:`METRICS` (its name and bound key must be new)."""
    if not metric.name.isidentifier() or metric.name.startswith("_") or metric.name in _RESERVED:
        raise ValueError(f"metric name {metric.name!r} is not a usable identifier")
    if metric.name in METRICS:
        raise ValueError(f"a metric named {metric.name!r} is registered already")
    if any(m.bound == metric.bound for m in METRICS.values()):
        raise ValueError(f"bound key {metric.bound!r} belongs to another metric")
    lo, hi = metric.range
    if not lo < hi or math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"metric {metric.name!r}: range {metric.range} is empty")
    METRICS[metric.name] = metric
    return metric


def unregister_metric(name: str) -> Metric:
    """Remove a metric from :data:`METRICS` (and return it)."""
    return METRICS.pop(name)


def metric(name: str) -> Metric:
    """The registered metric ``name``."""
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"no metric {name!r}; registered: {', '.join(METRICS)}") from None


def bound_keys() -> dict[str, Metric]:
    """Tolerance keys of the registered metrics -> their metric."""
    return {m.bound: m for m in METRICS.values()}


def headline_metrics() -> list[Metric]:
    """The metrics the matrix cells show, in registry order."""
    return [m for m in METRICS.values() if m.headline]


for _metric in (
    Metric("mae", mae, Better.LOWER, (0.0, 255.0), "{:.4f}", "mae_max", "MAE", "MAE",
           description="mean absolute difference, 0-255"),
    Metric("max_abs", max_abs, Better.LOWER, (0, 255), "{:d}", "max_abs_max", "max abs",
           "max abs", integer=True, description="largest absolute channel difference"),
    Metric("psnr", psnr, Better.HIGHER, (0.0, math.inf), "{:.2f}", "psnr_min", "PSNR", "PSNR",
           unit="dB", bound_range=(0.0, 200.0), null=math.inf,
           description="peak signal-to-noise ratio; inf (null) when equal"),
    Metric("ssim", ssim, Better.HIGHER, (-1.0, 1.0), "{:.5f}", "ssim_min", "SSIM", "SSIM",
           headline=True, compact_fmt="{:.3f}", description="structural similarity"),
    Metric("phash_distance", phash_distance, Better.LOWER, (0, 64), "{:d}", "phash_max",
           "pHash distance", "pHash d", integer=True, headline=True, monotone=False,
           description="Hamming distance of 64-bit pHashes (bits of DCT coefficients against "
           "their median: a small change to a flat region can flip more than a large one)"),
    Metric("dhash_distance", dhash_distance, Better.LOWER, (0, 64), "{:d}", "dhash_max",
           "dHash distance", "dHash d", integer=True, monotone=False,
           description="Hamming distance of 64-bit dHashes (signs of neighbour differences "
           "after downscaling: ties a small change breaks can flip back)"),
    Metric("flip", flip, Better.LOWER, (0.0, 1.0), "{:.4f}", "flip_max", "FLIP", "FLIP",
           description="mean NVIDIA FLIP error (LDR)"),
):
    register_metric(_metric)
del _metric


# -- results ---------------------------------------------------------------------------------


class Metrics:
    """How far an observed image is from an expected one: ``identical`` and one value per
    measured metric, read as attributes (``m.mae``) or with :meth:`get`.

    Immutable; equal when ``identical`` and every value are. A registered metric that was
    not measured raises :class:`AttributeError` as an attribute and is None from :meth:`get`.
    """

    __slots__ = ("identical", "values")
    identical: bool
    values: Mapping[str, float]

    def __init__(
        self, identical: bool, values: Mapping[str, float] | None = None, **named: float
    ) -> None:
        given = dict(values or {}) | named
        unknown = [k for k in given if k not in METRICS]
        if unknown:
            raise TypeError(
                f"unknown metric {', '.join(map(repr, unknown))}; registered: "
                f"{', '.join(METRICS)}"
            )
        ordered = {k: METRICS[k].coerce(given[k]) for k in METRICS if k in given}
        object.__setattr__(self, "identical", bool(identical))
        object.__setattr__(self, "values", MappingProxyType(ordered))

    def __getattr__(self, name: str) -> float:
        if name in METRICS:
            try:
                return self.values[name]
            except KeyError:
                raise AttributeError(f"{name} was not measured") from None
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Metrics is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        return (Metrics, (self.identical, dict(self.values)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Metrics):
            return NotImplemented
        return self.identical == other.identical and dict(self.values) == dict(other.values)

    def __hash__(self) -> int:
        return hash((self.identical, tuple(self.values.items())))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.values.items())
        return f"Metrics(identical={self.identical}, {inner})"

    def __iter__(self) -> Iterator[tuple[Metric, float]]:
        """(metric, value) of every measured value, in registry order."""
        for name, value in self.values.items():
            if name in METRICS:
                yield METRICS[name], value

    def get(self, name: str, default: float | None = None) -> float | None:
        return self.values.get(name, default)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"identical": self.identical}
        out.update({m.name: m.to_json(v) for m, v in self})
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Metrics:
        """Read :meth:`to_dict` back; keys that are not registered metrics are ignored."""
        return cls(
            bool(data["identical"]),
            {n: m.from_json(data[n]) for n, m in METRICS.items() if n in data},
        )

    def summary(self) -> str:
        """``MAE=0.0312 max_abs=2 PSNR=61.20dB SSIM=0.99994 ...`` on one line."""
        return " ".join(
            f"{m.short.replace(' ', '_')}={m.format(v)}{m.unit if math.isfinite(v) else ''}"
            for m, v in self
        )


def compare(observed: Any, expected: Any, metrics: Iterable[str] | None = None) -> Metrics:
    """The registered metrics of ``observed`` against ``expected`` (same shape required):
    those that are part of the default comparison, or the ones named in ``metrics``.

    Identical images get every metric's best value without computing it.
    """
    a, b = _pair(observed, expected)
    names = [n for n, m in METRICS.items() if m.default] if metrics is None else list(metrics)
    chosen = [metric(n) for n in names]
    identical = bool(np.array_equal(a, b))
    return Metrics(
        identical, {m.name: m.best if identical else m.measure(a, b) for m in chosen}
    )


def worst(metrics: Iterable[Metrics]) -> Metrics:
    """Each metric's worst value over ``metrics`` (identical only if all are); a metric
    counts when every one of them measured it."""
    ms = list(metrics)
    if not ms:
        raise ValueError("no metrics to take the worst of")
    names = [n for n in ms[0].values if all(n in m.values for m in ms)]
    return Metrics(
        all(m.identical for m in ms),
        {n: METRICS[n].worst(m.values[n] for m in ms) for n in names if n in METRICS},
    )


# -- difference images -----------------------------------------------------------------------


def diff_map(observed: Any, expected: Any) -> np.ndarray:
    """An RGB heat map of the per-pixel max channel difference.

    Black is equal; the colour runs red -> yellow -> white up to the largest difference in the
    pair, so a single-LSB difference is visible too (the scale is per image).
    """
    a, b = _pair(observed, expected)
    mag = np.max(_abs_diff(a, b), axis=2).astype(np.float64)
    peak = mag.max()
    t = mag / peak if peak > 0 else mag
    r = np.clip(t * 3.0, 0, 1)
    g = np.clip(t * 3.0 - 1.0, 0, 1)
    bl = np.clip(t * 3.0 - 2.0, 0, 1)
    return (np.stack([r, g, bl], axis=2) * 255).round().astype(np.uint8)


def flip_map(observed: Any, expected: Any) -> np.ndarray:
    """The FLIP error map of ``observed`` against ``expected`` as uint8 RGB: the library's
    magma colour map on an absolute 0..1 scale (near-black is no perceived difference,
    bright yellow the largest), so maps of different pairs compare."""
    a, b = _pair(observed, expected)
    colours = _flip_error(a, b, magma=True)
    return np.clip(np.rint(colours * 255.0), 0, 255).astype(np.uint8)
