"""Sample the tiny fixtures: a captioned montage and a reduced-precision comparison.

``conformance montage --out docs/montage.png`` draws a grid with one row per prompt and one
column per (model, resolution), each sample made with the model's ``SAMPLING_DEFAULTS`` and a
fixed seed on one CPU thread. ``precision_table`` measures bf16 / fp16 against fp32 (MAE, SSIM,
pHash distance) on ``PRECISION_PROMPTS``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image, ImageDraw, ImageFont

from conformance.models.tiny import MODEL_NAMES, SAMPLING_DEFAULTS

FIXTURES_DIR = Path(__file__).resolve().parents[2] / "fixtures"

MONTAGE_PROMPTS: tuple[str, ...] = (
    "a red circle on a white background",
    "a blue square on a black background",
    "a yellow triangle on a gray background",
    "a green circle on a gradient background",
    "a red circle above a blue square on a white background",
    "a yellow triangle above a purple circle on a black background",
    "a orange square left of a green triangle on a gray background",
    "a blue circle left of a red square on a gradient background",
)

PRECISION_PROMPTS: tuple[str, ...] = (
    *MONTAGE_PROMPTS,
    "a purple square on a white background",
    "a orange circle on a black background",
    "a blue triangle on a gradient background",
    "a green square above a red triangle on a gray background",
    "a purple triangle above a yellow square on a white background",
    "a red triangle left of a blue circle on a black background",
    "a yellow circle left of a purple square on a white background",
    "a green triangle left of a orange circle on a gradient background",
)


def load(model: str, fixtures: Path = FIXTURES_DIR, dtype: torch.dtype = torch.float32) -> Any:
    """Load a tiny fixture pipeline from ``fixtures/<model>`` (offline), after the bounds
    every model folder gets (:func:`conformance.models.sources.check_model_folder`)."""
    from conformance.models.sources import check_model_folder

    check_model_folder(fixtures / model, f"model {model} {fixtures / model}")
    with warnings.catch_warnings():
        # diffusers >= 0.36 prefers ``dtype=``; older releases only know ``torch_dtype``
        warnings.simplefilter("ignore", FutureWarning)
        pipe = DiffusionPipeline.from_pretrained(
            str(fixtures / model), local_files_only=True, torch_dtype=dtype,
            use_safetensors=True,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample(
    pipe: Any, model: str, prompt: str, size: int, seed: int, **overrides: Any
) -> Image.Image:
    """One image with the model's sampling defaults (``overrides`` win)."""
    kwargs: dict[str, Any] = dict(SAMPLING_DEFAULTS[model])
    kwargs.update(overrides)
    gen = torch.Generator("cpu").manual_seed(seed)
    out = pipe(prompt, height=size, width=size, generator=gen, **kwargs)
    image: Image.Image = out.images[0]
    return image


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - old Pillow
        return ImageFont.load_default()


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    cur = ""
    for word in text.split():
        if cur and len(cur) + 1 + len(word) > width:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}".strip()
    if cur:
        lines.append(cur)
    return lines


def make_montage(
    prompts: Sequence[str] = MONTAGE_PROMPTS,
    models: Sequence[str] = MODEL_NAMES,
    sizes: Sequence[int] = (64, 96),
    seed: int = 0,
    tile: int = 192,
    fixtures: Path = FIXTURES_DIR,
) -> Image.Image:
    """A grid: rows are prompts; columns are (model, size); captions drawn on the left/top."""
    label_w, head_h, pad = 230, 40, 6
    cols = [(m, s) for m in models for s in sizes]
    width = label_w + len(cols) * (tile + pad) + pad
    height = head_h + len(prompts) * (tile + pad) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font, small = _font(15), _font(13)
    for j, (m, s) in enumerate(cols):
        x = label_w + pad + j * (tile + pad)
        draw.text((x + 4, 10), f"{m} {s}x{s}", fill=(0, 0, 0), font=font)
    for i, prompt in enumerate(prompts):
        y = head_h + i * (tile + pad)
        for k, line in enumerate(_wrap(prompt, 28)):
            draw.text((8, y + 8 + 18 * k), line, fill=(0, 0, 0), font=small)
    for j, (m, s) in enumerate(cols):
        pipe = load(m, fixtures)
        x = label_w + pad + j * (tile + pad)
        for i, prompt in enumerate(prompts):
            img = sample(pipe, m, prompt, s, seed + i)
            y = head_h + i * (tile + pad)
            canvas.paste(img.resize((tile, tile), Image.Resampling.NEAREST), (x, y))
    return canvas


def phash_distance(a: Image.Image, b: Image.Image) -> int:
    import imagehash

    return int(imagehash.phash(a) - imagehash.phash(b))


def compare_images(ref: Image.Image, other: Image.Image) -> dict[str, float]:
    """MAE (0..255), SSIM (data_range 255, channel_axis 2) and pHash distance."""
    from skimage.metrics import structural_similarity

    a = np.asarray(ref.convert("RGB"), dtype=np.float64)
    b = np.asarray(other.convert("RGB"), dtype=np.float64)
    return {
        "mae": float(np.abs(a - b).mean()),
        "ssim": float(structural_similarity(a, b, channel_axis=2, data_range=255)),
        "phash": float(phash_distance(ref, other)),
    }


def precision_table(
    models: Sequence[str] = MODEL_NAMES,
    dtypes: Sequence[str] = ("bf16", "fp16"),
    prompts: Sequence[str] = PRECISION_PROMPTS,
    size: int = 64,
    seed: int = 0,
    fixtures: Path = FIXTURES_DIR,
) -> dict[str, dict[str, dict[str, float]]]:
    """Mean / worst MAE, SSIM and pHash distance of each dtype against fp32, per model."""
    torch_dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    result: dict[str, dict[str, dict[str, float]]] = {}
    for m in models:
        ref_pipe = load(m, fixtures)
        refs = [sample(ref_pipe, m, p, size, seed + i) for i, p in enumerate(prompts)]
        result[m] = {}
        for name in dtypes:
            pipe = load(m, fixtures, torch_dtypes[name])
            t0 = time.perf_counter()
            rows = [
                compare_images(r, sample(pipe, m, p, size, seed + i))
                for i, (r, p) in enumerate(zip(refs, prompts, strict=True))
            ]
            result[m][name] = {
                "mae_mean": float(np.mean([r["mae"] for r in rows])),
                "mae_max": float(np.max([r["mae"] for r in rows])),
                "ssim_mean": float(np.mean([r["ssim"] for r in rows])),
                "ssim_min": float(np.min([r["ssim"] for r in rows])),
                "phash_mean": float(np.mean([r["phash"] for r in rows])),
                "phash_max": float(np.max([r["phash"] for r in rows])),
                "seconds_per_image": (time.perf_counter() - t0) / len(prompts),
            }
    return result


def _run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    img = make_montage(seed=args.seed, fixtures=Path(args.fixtures), sizes=tuple(args.sizes))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
    print(
        f"wrote {out} ({img.width}x{img.height}) in {time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
    )
    return 0


def register(subparsers: Any) -> None:
    """Add the ``montage`` sub-command to an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "montage",
        help="draw a captioned grid of tiny-model samples",
        description="Sample every tiny fixture at several sizes and save a captioned grid.",
    )
    p.add_argument("--out", required=True, help="output PNG path")
    p.add_argument("--fixtures", default=str(FIXTURES_DIR), help="fixture directory")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 96])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=_run)
