"""Precision registry: how a pipeline is loaded for each precision name of the suite.

``fp32`` is the reference. ``bf16`` / ``fp16`` load every component in that dtype through
``torch_dtype``. ``fp8-e4m3`` / ``fp8-e5m2`` store the denoiser's weights in fp8 and compute in
fp32 through diffusers' ``enable_layerwise_casting``. ``gguf-*`` quantize the denoiser with
``conformance quantize`` (recipe = the part after ``gguf-``), then load it through diffusers'
``from_single_file(..., quantization_config=GGUFQuantizationConfig(compute_dtype=float32))``;
the other components stay fp32.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.Enum):
    DTYPE = "dtype"
    FP8_STORAGE = "fp8-storage"
    GGUF = "gguf"


@dataclass(frozen=True)
class Precision:
    name: str
    kind: Kind
    dtype: str
    storage_dtype: str | None
    bits_per_weight: float
    description: str
    recipe: str | None = None

    def torch_dtype(self):  # -> torch.dtype (torch imported lazily)
        import torch

        return getattr(torch, self.dtype)

    def torch_storage_dtype(self):
        import torch

        return getattr(torch, self.storage_dtype) if self.storage_dtype else None


PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("fp32", Kind.DTYPE, "float32", None, 32, "all components in float32"),
        Precision("bf16", Kind.DTYPE, "bfloat16", None, 16, "all components in bfloat16"),
        Precision("fp16", Kind.DTYPE, "float16", None, 16, "all components in float16"),
        Precision(
            "fp8-e4m3",
            Kind.FP8_STORAGE,
            "float32",
            "float8_e4m3fn",
            8,
            "denoiser weights stored as float8 e4m3, computed in float32",
        ),
        Precision(
            "fp8-e5m2",
            Kind.FP8_STORAGE,
            "float32",
            "float8_e5m2",
            8,
            "denoiser weights stored as float8 e5m2, computed in float32",
        ),
        *(
            Precision(f"gguf-{recipe}", Kind.GGUF, "float32", None, bits,
                      f"denoiser quantized to GGUF {recipe.upper()} (conformance quantize), "
                      "dequantized to float32 per layer at run time", recipe)
            for recipe, bits in (
                ("q8_0", 8.5), ("q6_k", 6.5625), ("q5_k_m", 5.5), ("q4_k_m", 4.5),
                ("q3_k_m", 3.4375), ("q2_k", 2.625),
            )
        ),
    )
}

REFERENCE_PRECISION = "fp32"
