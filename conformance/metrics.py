"""Image metrics on decoded uint8 RGB arrays (H x W x 3).

* :func:`pixel_sha256` hashes the decoded pixels (with the shape), never file bytes, so two
  PNG encoders that write different bytes for the same image agree.
* :func:`compare` gives MAE (0-255 scale), max abs difference, PSNR (dB; ``inf`` when equal),
  SSIM (scikit-image, ``data_range=255``, over colour channels) and pHash / dHash Hamming
  distances (imagehash, 64-bit hashes).
* :func:`diff_map` renders where two images differ.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
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


def perceptual_hashes(image: Any) -> tuple[PerceptualHash, PerceptualHash]:
    """(pHash, dHash) of an RGB image."""
    import imagehash
    from PIL import Image

    pil = Image.fromarray(as_rgb_uint8(image), "RGB")
    return (
        PerceptualHash("phash", str(imagehash.phash(pil, hash_size=HASH_SIZE))),
        PerceptualHash("dhash", str(imagehash.dhash(pil, hash_size=HASH_SIZE))),
    )


@dataclass(frozen=True)
class Metrics:
    """How far an observed image is from an expected one."""

    identical: bool
    mae: float
    max_abs: int
    psnr: float
    ssim: float
    phash_distance: int
    dhash_distance: int

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["psnr"] = None if math.isinf(self.psnr) else self.psnr  # null = identical
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Metrics:
        data = dict(data)
        data["psnr"] = math.inf if data.get("psnr") is None else float(data["psnr"])
        return cls(**data)

    def summary(self) -> str:
        psnr = "inf" if math.isinf(self.psnr) else f"{self.psnr:.2f}"
        return (
            f"MAE={self.mae:.4f} max_abs={self.max_abs} PSNR={psnr}dB SSIM={self.ssim:.5f} "
            f"pHash_d={self.phash_distance} dHash_d={self.dhash_distance}"
        )


def mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    win = min(7, a.shape[0], a.shape[1])
    win -= 1 - win % 2  # odd
    if win < 3:
        return 1.0 if np.array_equal(a, b) else float("nan")
    value = structural_similarity(a, b, channel_axis=2, data_range=255, win_size=win)
    return float(min(1.0, max(-1.0, value)))


def compare(observed: Any, expected: Any) -> Metrics:
    """All metrics of ``observed`` against ``expected`` (same shape required)."""
    a, b = as_rgb_uint8(observed), as_rgb_uint8(expected)
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: observed {a.shape}, expected {b.shape}")
    identical = bool(np.array_equal(a, b))
    pa, da = perceptual_hashes(a)
    pb, db = perceptual_hashes(b)
    return Metrics(
        identical=identical,
        mae=mae(a, b),
        max_abs=int(np.max(np.abs(a.astype(np.int16) - b.astype(np.int16)))),
        psnr=psnr(a, b),
        ssim=1.0 if identical else ssim(a, b),
        phash_distance=pa - pb,
        dhash_distance=da - db,
    )


def diff_map(observed: Any, expected: Any) -> np.ndarray:
    """An RGB heat map of the per-pixel max channel difference.

    Black is equal; the colour runs red -> yellow -> white up to the largest difference in the
    pair, so a single-LSB difference is visible too (the scale is per image).
    """
    a, b = as_rgb_uint8(observed), as_rgb_uint8(expected)
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: observed {a.shape}, expected {b.shape}")
    mag = np.max(np.abs(a.astype(np.int16) - b.astype(np.int16)), axis=2).astype(np.float64)
    peak = mag.max()
    t = mag / peak if peak > 0 else mag
    r = np.clip(t * 3.0, 0, 1)
    g = np.clip(t * 3.0 - 1.0, 0, 1)
    bl = np.clip(t * 3.0 - 2.0, 0, 1)
    return (np.stack([r, g, bl], axis=2) * 255).round().astype(np.uint8)
