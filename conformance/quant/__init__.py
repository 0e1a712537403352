"""GGUF quantization of diffusers models: GGML block quantizers, recipes, file I/O, and
:func:`quantize_model`, what ``conformance quantize`` runs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .ggml import (
    QUANTIZED_TYPES,
    SUPPORTED_TYPES,
    QuantRangeError,
    bits_per_weight,
    block_info,
    dequantize,
    quantize,
)
from .recipes import RECIPE_NAMES, RECIPES, Decision, Recipe, choose_type, get_recipe, plan

if TYPE_CHECKING:  # pragma: no cover
    from .command import Quantized


def quantize_model(src: str | Path, recipe: str, out: str | Path, *, force: bool = False,
                   layout: str = "diffusers") -> Quantized:
    """Quantize the model at ``src`` with ``recipe`` into the GGUF file ``out``: see
    :func:`conformance.quant.command.quantize_model` (imported on use: it loads torch,
    safetensors and gguf-py)."""
    from .command import quantize_model as run

    return run(src, recipe, out, force=force, layout=layout)


__all__ = [
    "QUANTIZED_TYPES",
    "RECIPES",
    "RECIPE_NAMES",
    "SUPPORTED_TYPES",
    "Decision",
    "QuantRangeError",
    "Recipe",
    "bits_per_weight",
    "block_info",
    "choose_type",
    "dequantize",
    "get_recipe",
    "plan",
    "quantize",
    "quantize_model",
]
