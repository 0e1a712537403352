"""Precision registry: how a pipeline is loaded for each precision name of the suite.

``fp32`` is the reference. ``bf16`` / ``fp16`` load every component in that dtype through
``torch_dtype``. ``fp8-e4m3`` / ``fp8-e5m2`` store the denoiser's weights in fp8 and compute in
fp32 through diffusers' ``enable_layerwise_casting``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.Enum):
    DTYPE = "dtype"
    FP8_STORAGE = "fp8-storage"


@dataclass(frozen=True)
class Precision:
    name: str
    kind: Kind
    dtype: str
    storage_dtype: str | None
    bits_per_weight: float
    description: str

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
    )
}

REFERENCE_PRECISION = "fp32"
