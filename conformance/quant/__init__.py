"""GGUF quantization of diffusers models: GGML block quantizers, recipes, file I/O."""

from __future__ import annotations

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
]
