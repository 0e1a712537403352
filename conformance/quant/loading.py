"""Loading GGUF files into diffusers models and inspecting what stayed quantized."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .layout import UNET_PREFIX, LayoutError, detect_layout, original_plan

__all__ = [
    "GGUFLayout",
    "QuantizationReport",
    "gguf_layout",
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


@dataclass(frozen=True)
class GGUFLayout:
    """The tensor-name layout of a GGUF file, as :func:`gguf_layout` found it."""

    layout: str
    """``"diffusers"`` or ``"original"``"""
    prefix: str = ""
    """``"model.diffusion_model."`` when the original names carry that prefix, else ``""``"""
    architecture: str | None = None
    """the file's ``general.architecture``, if any"""


def _original_class(model_cls: type) -> str | None:
    """The class of :data:`~conformance.quant.layout.ORIGINAL_CLASSES` ``model_cls`` is."""
    import diffusers

    from .layout import ORIGINAL_CLASSES

    for name in ORIGINAL_CLASSES:
        known = getattr(diffusers, name, None)
        if isinstance(known, type) and issubclass(model_cls, known):
            return name
    return None


def _empty_state(model_cls: Any, config_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model's config and its state dict on the meta device (names and shapes only)."""
    from accelerate import init_empty_weights

    config = dict(model_cls.load_config(str(config_dir), local_files_only=True))
    with init_empty_weights():
        model = model_cls.from_config(config)
    return config, model.state_dict()


def _gguf_names(path: Path) -> tuple[list[str], str | None]:
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # gguf-py raises many types for a file it cannot parse
        raise LayoutError(f"{path}: not a readable GGUF file ({exc})") from None
    arch = reader.fields.get("general.architecture")
    return [t.name for t in reader.tensors], None if arch is None else str(arch.contents())


def gguf_layout(
    model_cls: Any, gguf_path: str | os.PathLike[str], config_dir: str | os.PathLike[str]
) -> GGUFLayout:
    """Detect from its tensor names which layout a GGUF file of ``model_cls`` is in.

    The names are compared with the state dict of ``model_cls`` built from
    ``config_dir/config.json`` (diffusers layout) and with that state dict's original
    names (:func:`conformance.quant.layout.original_plan`; Flux and SD 1.x UNets), with or
    without the ``model.diffusion_model.`` prefix. A file that fits neither raises
    :class:`~conformance.quant.layout.LayoutError` naming the file and an offending tensor.
    """
    return _detect(model_cls, Path(gguf_path), Path(config_dir))[0]


def _detect(model_cls: Any, path: Path, config_dir: Path) -> tuple[GGUFLayout, dict[str, Any]]:
    names, arch = _gguf_names(path)
    config, state = _empty_state(model_cls, config_dir)
    original: list[str] | None = None
    class_name = _original_class(model_cls)
    if class_name is not None:
        try:
            original = [t.name for t in original_plan(class_name, config, sorted(state))]
        except LayoutError:
            original = None  # this configuration has no original layout
    where = f"{path}" + ("" if arch is None else f" (general.architecture {arch!r})")
    layout, prefix = detect_layout(
        names, state, original, where=f"{where}, for {model_cls.__name__}"
    )
    return GGUFLayout(layout, prefix, arch), state


#: Width diffusers' Flux conversion assumes for ``single_blocks.N.linear1`` (FLUX.1's).
_DIFFUSERS_FLUX_SPLIT = (3072, 3072, 3072, 12288)
_PATCH_LOCK = threading.Lock()


@contextmanager
def _flux_single_block_width(state: dict[str, Any]) -> Iterator[None]:
    """Let diffusers' Flux conversion split ``linear1`` at the model's own width.

    diffusers' ``convert_flux_transformer_checkpoint_to_diffusers`` splits every
    ``single_blocks.N.linear1`` into q, k, v and the MLP input with the fixed sizes of
    FLUX.1 (3072, 3072, 3072, 12288), so a narrower Flux fails there. For such a model,
    and only while the conversion runs, that one ``torch.split`` call of the conversion
    module gets the model's real sizes (read from its state dict); the conversion itself
    (names, order, chunking, the adaLN swap) stays diffusers'. At the FLUX.1 width this
    does nothing.
    """
    key = "single_transformer_blocks.0."
    parts = [f"{key}attn.to_q.weight", f"{key}attn.to_k.weight", f"{key}attn.to_v.weight",
             f"{key}proj_mlp.weight"]
    if not all(p in state for p in parts):
        yield
        return
    real = tuple(int(state[p].shape[0]) for p in parts)
    if real == _DIFFUSERS_FLUX_SPLIT:
        yield
        return
    from diffusers.loaders import single_file_utils

    torch_module = single_file_utils.torch

    class _SplitAtModelWidth:
        def __getattr__(self, name: str) -> Any:
            return getattr(torch_module, name)

        @staticmethod
        def split(tensor: Any, split_size: Any, dim: int = 0) -> Any:
            if (isinstance(split_size, (list, tuple))
                    and tuple(split_size) == _DIFFUSERS_FLUX_SPLIT
                    and tensor.shape[dim] == sum(real)):
                split_size = real
            return torch_module.split(tensor, split_size, dim)

    with _PATCH_LOCK:
        single_file_utils.torch = _SplitAtModelWidth()
        try:
            yield
        finally:
            single_file_utils.torch = torch_module


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

    Both layouts load (see :func:`gguf_layout`, which detects the layout from the tensor
    names first and refuses a file that fits neither):

    * diffusers layout: the names equal the model's state-dict keys and diffusers skips
      its key conversion;
    * original layout: diffusers' own conversion (``convert_flux_transformer_...`` /
      ``convert_ldm_unet_checkpoint``) maps the names, splitting fused tensors. SD UNet
      names without the ``model.diffusion_model.`` prefix, which that conversion looks
      for, are read with diffusers' checkpoint reader and handed over with the prefix.

    Only classes diffusers can load from a single file qualify (see
    :func:`supports_single_file`). Extra keyword arguments are passed on.
    """
    from diffusers import GGUFQuantizationConfig

    path = Path(gguf_path)
    if path.suffix.lower() != ".gguf":
        raise ValueError(f"{path}: diffusers only recognises GGUF files by the .gguf suffix")
    config = Path(config_dir)
    if not (config / "config.json").is_file():
        raise FileNotFoundError(f"{config}: no config.json in the config directory")
    found, state = _detect(model_cls, path, config)
    options: dict[str, Any] = {
        "quantization_config": GGUFQuantizationConfig(compute_dtype=compute_dtype),
        "config": str(config),
        "local_files_only": True,
        **kwargs,
    }
    if found.layout == "diffusers":
        return model_cls.from_single_file(str(path), **options)
    with _flux_single_block_width(state):
        if _original_class(model_cls) == "UNet2DConditionModel" and not found.prefix:
            from diffusers.loaders.single_file_utils import load_single_file_checkpoint

            checkpoint = load_single_file_checkpoint(str(path), local_files_only=True)
            checkpoint = {UNET_PREFIX + name: t for name, t in checkpoint.items()}
            return model_cls.from_single_file(checkpoint, **options)
        return model_cls.from_single_file(str(path), **options)


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
