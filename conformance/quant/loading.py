"""Loading GGUF files into diffusers models and inspecting what stayed quantized."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "QuantizationReport",
    "linear_weight_names",
    "load_gguf_model",
    "quantization_report",
    "quantized_modules",
    "supports_single_file",
]


def linear_weight_names(model: torch.nn.Module) -> set[str]:
    """Names of the ``nn.Linear`` weights of ``model`` (``"<module>.weight"``)."""
    return {
        f"{name}.weight"
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    }


def supports_single_file(model_cls: type) -> bool:
    """True if diffusers' ``from_single_file`` (and so GGUF loading) accepts ``model_cls``."""
    import diffusers
    from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES

    for name in SINGLE_FILE_LOADABLE_CLASSES:
        loadable = getattr(diffusers, name, None)
        if isinstance(loadable, type) and issubclass(model_cls, loadable):
            return True
    return False


def load_gguf_model(
    model_cls: Any,
    gguf_path: str | os.PathLike[str],
    config_dir: str | os.PathLike[str],
    compute_dtype: torch.dtype = torch.float32,
    **kwargs: Any,
) -> Any:
    """Load a GGUF file into ``model_cls`` through diffusers' single-file loader.

    ``config_dir`` is a local directory holding the model's ``config.json``
    directly (diffusers' ``config=`` argument accepts a repo id or a local
    directory; with ``config`` given, no subfolder is appended). The call is::

        model_cls.from_single_file(
            str(gguf_path),
            quantization_config=GGUFQuantizationConfig(compute_dtype=compute_dtype),
            config=str(config_dir),
            local_files_only=True,
        )

    Tensor names in the file must equal the model's state-dict keys, in which
    case diffusers skips key conversion. Only classes diffusers can load from a
    single file qualify (see :func:`supports_single_file`). Extra keyword
    arguments are passed on.
    """
    from diffusers import GGUFQuantizationConfig

    path = Path(gguf_path)
    if path.suffix.lower() != ".gguf":
        raise ValueError(f"{path}: diffusers only recognises GGUF files by the .gguf suffix")
    config = Path(config_dir)
    if not (config / "config.json").is_file():
        raise FileNotFoundError(f"{config}: no config.json in the config directory")
    return model_cls.from_single_file(
        str(path),
        quantization_config=GGUFQuantizationConfig(compute_dtype=compute_dtype),
        config=str(config),
        local_files_only=True,
        **kwargs,
    )


def quantized_modules(model: torch.nn.Module) -> dict[str, str]:
    """Map module name -> GGML type name for every module whose weight is a GGUFParameter.

    This inspects the live module tree, so it reflects the state at the time
    of the call (e.g. after a forward pass).
    """
    from diffusers.quantizers.gguf.utils import GGUFParameter

    out: dict[str, str] = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, GGUFParameter):
            out[name] = _type_name(weight.quant_type)
    return out


def _type_name(quant_type: Any) -> str:
    from gguf import GGMLQuantizationType

    try:
        return GGMLQuantizationType(int(quant_type)).name
    except (TypeError, ValueError):
        return str(quant_type)


@dataclass
class QuantizationReport:
    """Which modules of a model run on GGUF-quantized weights."""

    quantized: dict[str, str] = field(default_factory=dict)
    """module name -> GGML type, for modules holding a GGUFParameter weight"""
    gguf_linear: set[str] = field(default_factory=set)
    """modules that are diffusers ``GGUFLinear`` layers"""
    plain_linear: set[str] = field(default_factory=set)
    """``nn.Linear`` modules that are not GGUF-quantized (kept in float)"""

    def counts(self) -> dict[str, int]:
        """Number of quantized modules per GGML type."""
        out: dict[str, int] = {}
        for qtype in self.quantized.values():
            out[qtype] = out.get(qtype, 0) + 1
        return dict(sorted(out.items()))

    @property
    def consistent(self) -> bool:
        """True when every GGUFLinear holds a GGUFParameter and vice versa."""
        return set(self.quantized) == self.gguf_linear


def quantization_report(model: torch.nn.Module) -> QuantizationReport:
    """Report GGUF-quantized modules (GGUFParameter weights, GGUFLinear layers)."""
    from diffusers.quantizers.gguf.utils import GGUFLinear

    report = QuantizationReport(quantized=quantized_modules(model))
    for name, module in model.named_modules():
        if isinstance(module, GGUFLinear):
            report.gguf_linear.add(name)
        elif isinstance(module, torch.nn.Linear):
            report.plain_linear.add(name)
    return report
