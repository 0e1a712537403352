"""GGUF: the denoiser quantized with ``conformance quantize`` (the recipe is the part of the
name after ``gguf-``), cached (:func:`conformance.generate.gguf_file`) and loaded through the
project's GGUF loader, dequantized to float32 per layer at run time; the other components
stay float32.

Their images depend on the battery's float32 probes and on every GGUF dequantize probe. The
matrix sorts them after the other kinds, most bits first (the digits of the recipe name).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from conformance.precision import Precision, PrecisionKind, register

_DIGITS = re.compile(r"([0-9]+)")


class GgufKind(PrecisionKind):
    name = "gguf"
    prefix = "gguf-"
    probe_prefix = "gguf-"

    def depends_on_probe(self, precision: Precision, key: str, owner: PrecisionKind | None
                         ) -> bool:
        return key.endswith("/fp32") and owner in (None, self)

    def sort_key(self, name: str, index: int | None) -> tuple[Any, ...]:
        bits = _DIGITS.search(name.removeprefix(self.prefix))
        value = (int(bits[1]) if len(bits[1]) < 10 else 10**9) if bits else 0
        return (1, 0, -value, name)

    def denoiser(self, precision: Precision, source: Path) -> Any:
        import json

        import diffusers
        import torch

        from conformance.quant.loading import load_gguf_model

        gguf = _file(precision, source)
        class_name = json.loads((source / "config.json").read_text())["_class_name"]
        return load_gguf_model(getattr(diffusers, class_name), gguf, source,
                               compute_dtype=torch.float32)

    def stored_bytes(self, precision: Precision, source: Path) -> int:
        return _file(precision, source).stat().st_size


def _file(precision: Precision, source: Path) -> Path:
    """The cached GGUF file of the denoiser folder ``source`` for ``precision``."""
    from conformance.generate import gguf_file

    return gguf_file(source, str(precision.recipe))


KIND = GgufKind()

#: (recipe, bits per weight of its ordinary Linear weights), most bits first
RECIPES: tuple[tuple[str, float], ...] = (
    ("q8_0", 8.5), ("q6_k", 6.5625), ("q5_k_m", 5.5), ("q4_k_m", 4.5), ("q4_0", 4.5),
    ("q3_k_m", 3.4375), ("q2_k", 2.625),
)

register(KIND, (
    Precision(f"gguf-{recipe}", KIND, "float32", None, bits,
              f"denoiser quantized to GGUF {recipe.upper()} (conformance quantize), "
              "dequantized to float32 per layer at run time", recipe,
              identity_line=recipe == "q8_0")
    for recipe, bits in RECIPES
))
