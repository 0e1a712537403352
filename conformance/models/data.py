"""Synthetic captioned-shapes data set, deterministic from a seed.

Every sample is a scene description (shapes, colours, layout, background, placement jitter)
drawn with PIL at 4x supersampling and downsampled with a box filter. A scene is independent of
the output size, so the same scene can be rendered at 64, 96 or any other size; positions and
sizes are relative to the canvas.

Captions follow three layouts::

    a red circle on a white background
    a red circle above a blue square on a black background
    a red circle left of a blue square on a gradient background
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (40, 70, 230),
    "yellow": (245, 215, 20),
    "purple": (150, 40, 190),
    "orange": (250, 130, 10),
}
BACKGROUNDS: tuple[str, ...] = ("white", "black", "gray", "gradient")
LAYOUTS: tuple[str, ...] = ("single", "above", "left of")
SUPERSAMPLE = 4

_BG_SOLID: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 250),
    "black": (10, 10, 10),
    "gray": (128, 128, 128),
}
_GRADIENT_TOP = np.array([25, 35, 90], dtype=np.float64)
_GRADIENT_BOTTOM = np.array([225, 225, 240], dtype=np.float64)


@dataclass(frozen=True)
class Shape:
    """One shape: kind, colour name, centre (fractions of the canvas) and radius (fraction)."""

    kind: str
    colour: str
    cx: float
    cy: float
    r: float


@dataclass(frozen=True)
class Scene:
    """A full scene: the shapes to draw, the background and the layout word."""

    shapes: tuple[Shape, ...]
    background: str
    layout: str

    @property
    def caption(self) -> str:
        first = self.shapes[0]
        subject = f"a {first.colour} {first.kind}"
        if self.layout != "single":
            second = self.shapes[1]
            subject += f" {self.layout} a {second.colour} {second.kind}"
        return f"{subject} on a {self.background} background"


def vocabulary() -> list[str]:
    """Every word that can appear in a caption, in a fixed order."""
    words = ["a", "on", "background", "above", "left", "of"]
    words += list(SHAPES) + list(COLOURS) + list(BACKGROUNDS)
    seen: dict[str, None] = {}
    for w in words:
        seen.setdefault(w, None)
    return list(seen)


def all_captions() -> list[str]:
    """Every caption the generator can produce (pairs use two distinct objects)."""
    objects = [(c, s) for c in COLOURS for s in SHAPES]
    out: list[str] = []
    for bg in BACKGROUNDS:
        for c, s in objects:
            out.append(f"a {c} {s} on a {bg} background")
        for layout in ("above", "left of"):
            for c1, s1 in objects:
                for c2, s2 in objects:
                    if (c1, s1) != (c2, s2):
                        out.append(f"a {c1} {s1} {layout} a {c2} {s2} on a {bg} background")
    return out


def random_scene(rng: random.Random) -> Scene:
    """Draw one scene from ``rng``: 1/3 single shape, 1/3 above, 1/3 left of."""
    layout = rng.choice(LAYOUTS)
    background = rng.choice(BACKGROUNDS)
    kinds = list(SHAPES)
    colours = list(COLOURS)
    first = (rng.choice(colours), rng.choice(kinds))
    if layout == "single":
        r = rng.uniform(0.2, 0.3)
        cx = 0.5 + rng.uniform(-0.08, 0.08)
        cy = 0.5 + rng.uniform(-0.08, 0.08)
        return Scene((Shape(first[1], first[0], cx, cy, r),), background, layout)
    while True:
        second = (rng.choice(colours), rng.choice(kinds))
        if second != first:
            break
    r1 = rng.uniform(0.14, 0.2)
    r2 = rng.uniform(0.14, 0.2)
    along = rng.uniform(-0.04, 0.04)
    across1 = 0.5 + rng.uniform(-0.1, 0.1)
    across2 = 0.5 + rng.uniform(-0.1, 0.1)
    a1 = 0.27 + along
    a2 = 0.73 + along
    if layout == "above":
        s1 = Shape(first[1], first[0], across1, a1, r1)
        s2 = Shape(second[1], second[0], across2, a2, r2)
    else:
        s1 = Shape(first[1], first[0], a1, across1, r1)
        s2 = Shape(second[1], second[0], a2, across2, r2)
    return Scene((s1, s2), background, layout)


def _background(kind: str, size: int) -> Image.Image:
    if kind == "gradient":
        t = np.linspace(0.0, 1.0, size)[:, None]
        rows = (_GRADIENT_TOP[None, :] * (1.0 - t) + _GRADIENT_BOTTOM[None, :] * t).round()
        arr = np.broadcast_to(rows[:, None, :], (size, size, 3)).astype(np.uint8)
        return Image.fromarray(np.ascontiguousarray(arr), "RGB")
    return Image.new("RGB", (size, size), _BG_SOLID[kind])


def render(scene: Scene, size: int, supersample: int = SUPERSAMPLE) -> Image.Image:
    """Draw ``scene`` at ``size`` x ``size`` pixels (RGB)."""
    big = size * supersample
    img = _background(scene.background, big)
    draw = ImageDraw.Draw(img)
    for sh in scene.shapes:
        cx, cy, r = sh.cx * big, sh.cy * big, sh.r * big
        fill = COLOURS[sh.colour]
        if sh.kind == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif sh.kind == "square":
            h = r * 0.85
            draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
        elif sh.kind == "triangle":
            pts = [(cx, cy - r), (cx - r * 0.95, cy + r * 0.7), (cx + r * 0.95, cy + r * 0.7)]
            draw.polygon(pts, fill=fill)
        else:  # pragma: no cover - guarded by SHAPES
            raise ValueError(f"unknown shape {sh.kind!r}")
    if supersample > 1:
        img = img.resize((size, size), Image.Resampling.BOX)
    return img


def scenes(seed: int) -> Iterator[Scene]:
    """An endless, deterministic stream of scenes for ``seed``."""
    rng = random.Random(seed)
    while True:
        yield random_scene(rng)


def generate(n: int, size: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """``n`` images (uint8, shape ``(n, size, size, 3)``) and their captions from ``seed``."""
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    captions: list[str] = []
    for i, scene in zip(range(n), scenes(seed), strict=False):
        images[i] = np.asarray(render(scene, size))
        captions.append(scene.caption)
    return images, captions


@dataclass
class ShapesDataset:
    """Pre-rendered images at one or more sizes; sizes use independent seeds.

    ``batches`` yields ``(size, images, captions)`` cycling through the sizes in order, one batch
    per size per round, so mixed-size training alternates resolutions.
    """

    sizes: tuple[int, ...]
    counts: tuple[int, ...]
    seed: int

    def __post_init__(self) -> None:
        if len(self.sizes) != len(self.counts):
            raise ValueError("sizes and counts must have the same length")
        self.images: dict[int, np.ndarray] = {}
        self.captions: dict[int, list[str]] = {}
        for i, (size, count) in enumerate(zip(self.sizes, self.counts, strict=True)):
            imgs, caps = generate(count, size, self.seed * 1000 + i)
            self.images[size] = imgs
            self.captions[size] = caps

    def batches(
        self, batch_sizes: Sequence[int], seed: int
    ) -> Iterator[tuple[int, np.ndarray, list[str]]]:
        """Endless batches; ``batch_sizes[i]`` is the batch size used for ``sizes[i]``."""
        rng = np.random.default_rng(seed)
        while True:
            for size, bs in zip(self.sizes, batch_sizes, strict=True):
                idx = rng.integers(0, len(self.captions[size]), size=bs)
                yield size, self.images[size][idx], [self.captions[size][j] for j in idx]


def to_tensor_range(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW in [-1, 1]."""
    return (images.astype(np.float32) / 127.5 - 1.0).transpose(0, 3, 1, 2).copy()
