"""Tensor-name layouts of GGUF files: diffusers' state dict or the original checkpoint.

Two layouts are written and read:

* ``diffusers``: tensor names are exactly the diffusers state-dict keys, so
  ``from_single_file`` skips its key conversion;
* ``original``: the names of the checkpoint the model was first published as, which is
  what the GGUF files people download carry (the Flux conversions read by ComfyUI-GGUF and
  stable-diffusion.cpp, Stable Diffusion 1.x UNets). ``from_single_file`` converts them
  to diffusers names on load.

The original layout is the inverse of diffusers' conversion:

* Flux (``FluxTransformer2DModel``): the black-forest-labs names (``img_in``,
  ``double_blocks.N.img_attn.qkv``, ``single_blocks.N.linear1`` ...). The original fuses
  tensors diffusers keeps apart: ``to_q``/``to_k``/``to_v`` become one ``qkv`` (rows in
  q, k, v order), the single blocks' q/k/v and ``proj_mlp`` become ``linear1`` (q, k, v,
  mlp), and ``norm_out.linear`` is stored as ``final_layer.adaLN_modulation.1`` with its
  two halves in the original (shift, scale) order. No prefix, as in the Flux GGUF files
  people use.
* Stable Diffusion 1.x (``UNet2DConditionModel``): the latent-diffusion names
  (``input_blocks.N``, ``middle_block``, ``output_blocks.N`` ...) under
  ``model.diffusion_model.``, the prefix diffusers' conversion looks for; the names come
  from :func:`conformance.models.ldm.unet_to_ldm`. Nothing is fused.

Every GGML block type quantizes row by row, so a fused tensor quantized with one type holds
exactly the bytes of its parts quantized with that type, and a reordering of rows (the
adaLN halves) moves bytes without changing them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_LAYOUT",
    "LAYOUTS",
    "ORIGINAL_CLASSES",
    "UNET_PREFIX",
    "LayoutError",
    "OriginalTensor",
    "architecture",
    "detect_layout",
    "fuse",
    "original_plan",
    "quantize_original",
]

LAYOUTS: tuple[str, ...] = ("diffusers", "original")
DEFAULT_LAYOUT = "diffusers"
#: Model classes the original layout exists for (diffusers class name -> family).
ORIGINAL_CLASSES: dict[str, str] = {
    "FluxTransformer2DModel": "flux",
    "UNet2DConditionModel": "unet",
}
UNET_PREFIX = "model.diffusion_model."


class LayoutError(ValueError):
    """A state dict or a GGUF file does not fit the layout asked for or detected."""


@dataclass(frozen=True)
class OriginalTensor:
    """One tensor of the original layout and the diffusers tensors it is made of.

    ``parts`` are diffusers state-dict keys, concatenated along dim 0 in this order;
    ``swap_halves`` stores the two halves of dim 0 in the opposite order (diffusers keeps
    adaLN modulation as (scale, shift), the original as (shift, scale)).
    """

    name: str
    parts: tuple[str, ...]
    swap_halves: bool = False

    @property
    def fused(self) -> bool:
        """True when several diffusers tensors make up this one."""
        return len(self.parts) > 1


# ---------------------------------------------------------------------------
# Flux
# ---------------------------------------------------------------------------

#: diffusers module -> original module, outside the transformer blocks.
_FLUX_TOP: dict[str, str] = {
    "x_embedder": "img_in",
    "context_embedder": "txt_in",
    "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
    "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
    "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
    "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
    "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
    "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
    "proj_out": "final_layer.linear",
    "norm_out.linear": "final_layer.adaLN_modulation.1",
}
_FLUX_SWAPPED = frozenset({"final_layer.adaLN_modulation.1"})

#: diffusers module inside ``transformer_blocks.N`` -> (module inside
#: ``double_blocks.N``, position in the fused tensor).
_FLUX_DOUBLE: dict[str, tuple[str, int]] = {
    "norm1.linear": ("img_mod.lin", 0),
    "norm1_context.linear": ("txt_mod.lin", 0),
    "attn.to_q": ("img_attn.qkv", 0),
    "attn.to_k": ("img_attn.qkv", 1),
    "attn.to_v": ("img_attn.qkv", 2),
    "attn.add_q_proj": ("txt_attn.qkv", 0),
    "attn.add_k_proj": ("txt_attn.qkv", 1),
    "attn.add_v_proj": ("txt_attn.qkv", 2),
    "attn.to_out.0": ("img_attn.proj", 0),
    "attn.to_add_out": ("txt_attn.proj", 0),
    "ff.net.0.proj": ("img_mlp.0", 0),
    "ff.net.2": ("img_mlp.2", 0),
    "ff_context.net.0.proj": ("txt_mlp.0", 0),
    "ff_context.net.2": ("txt_mlp.2", 0),
}
#: RMS-norm scales: whole diffusers key (inside the block) -> whole original key.
_FLUX_DOUBLE_NORMS: dict[str, str] = {
    "attn.norm_q.weight": "img_attn.norm.query_norm.scale",
    "attn.norm_k.weight": "img_attn.norm.key_norm.scale",
    "attn.norm_added_q.weight": "txt_attn.norm.query_norm.scale",
    "attn.norm_added_k.weight": "txt_attn.norm.key_norm.scale",
}
_FLUX_SINGLE: dict[str, tuple[str, int]] = {
    "norm.linear": ("modulation.lin", 0),
    "attn.to_q": ("linear1", 0),
    "attn.to_k": ("linear1", 1),
    "attn.to_v": ("linear1", 2),
    "proj_mlp": ("linear1", 3),
    "proj_out": ("linear2", 0),
}
_FLUX_SINGLE_NORMS: dict[str, str] = {
    "attn.norm_q.weight": "norm.query_norm.scale",
    "attn.norm_k.weight": "norm.key_norm.scale",
}
_BLOCK = re.compile(r"^(transformer_blocks|single_transformer_blocks)\.(\d+)\.(.+)$")


def _group_sizes(table: Mapping[str, tuple[str, int]]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for module, pos in table.values():
        sizes[module] = max(sizes.get(module, 0), pos + 1)
    return sizes


_FLUX_GROUP_SIZES = {
    **{f"double_blocks.{{}}.{m}": n for m, n in _group_sizes(_FLUX_DOUBLE).items()},
    **{f"single_blocks.{{}}.{m}": n for m, n in _group_sizes(_FLUX_SINGLE).items()},
}


def _flux_name(key: str) -> tuple[str, int, str] | None:
    """``(original key, position in the fused tensor, size key)`` of a diffusers key."""
    match = _BLOCK.match(key)
    if match is None:
        module, _, leaf = key.rpartition(".")
        original = _FLUX_TOP.get(module)
        return None if original is None else (f"{original}.{leaf}", 0, "")
    kind, index, rest = match.groups()
    double = kind == "transformer_blocks"
    block = "double_blocks" if double else "single_blocks"
    norms = _FLUX_DOUBLE_NORMS if double else _FLUX_SINGLE_NORMS
    if rest in norms:
        return f"{block}.{index}.{norms[rest]}", 0, ""
    module, _, leaf = rest.rpartition(".")
    found = (_FLUX_DOUBLE if double else _FLUX_SINGLE).get(module)
    if found is None:
        return None
    original, pos = found
    return f"{block}.{index}.{original}.{leaf}", pos, f"{block}.{{}}.{original}"


def _flux_plan(keys: Iterable[str]) -> list[OriginalTensor]:
    groups: dict[str, dict[int, str]] = {}
    sizes: dict[str, int] = {}
    unmapped: list[str] = []
    for key in keys:
        found = _flux_name(key)
        if found is None:
            unmapped.append(key)
            continue
        original, pos, size_key = found
        slot = groups.setdefault(original, {})
        if pos in slot:
            raise LayoutError(f"flux: {slot[pos]!r} and {key!r} both map to {original!r}")
        slot[pos] = key
        sizes[original] = _FLUX_GROUP_SIZES.get(size_key, 1)
    _raise_unmapped(unmapped, "FluxTransformer2DModel")
    plan: list[OriginalTensor] = []
    for original in sorted(groups):
        slot = groups[original]
        missing = [p for p in range(sizes[original]) if p not in slot]
        if missing:
            have = ", ".join(repr(slot[p]) for p in sorted(slot))
            raise LayoutError(
                f"flux: the original {original!r} fuses {sizes[original]} tensors but only "
                f"{have} exist"
            )
        module = original.rsplit(".", 1)[0]
        plan.append(OriginalTensor(
            original, tuple(slot[p] for p in sorted(slot)), module in _FLUX_SWAPPED
        ))
    return plan


# ---------------------------------------------------------------------------
# Stable Diffusion UNet
# ---------------------------------------------------------------------------


def _unet_plan(keys: Iterable[str], config: Mapping[str, Any]) -> list[OriginalTensor]:
    from conformance.models.ldm import unet_to_ldm

    for option in ("addition_embed_type", "class_embed_type", "encoder_hid_dim_type"):
        if config.get(option) is not None:
            raise LayoutError(
                f"UNet2DConditionModel with {option}={config[option]!r}: only the Stable "
                "Diffusion 1.x UNet has a known original layout here"
            )
    try:
        # the map only renames: it is applied to the names themselves
        renamed = unet_to_ldm({k: k for k in keys}, config)
    except (KeyError, TypeError, ValueError) as exc:
        raise LayoutError(f"UNet2DConditionModel: no original layout for it ({exc})") from None
    if not all(original.startswith(UNET_PREFIX) for original in renamed):
        raise LayoutError("UNet2DConditionModel: the original layout map lost its prefix")
    return [OriginalTensor(original, (renamed[original],)) for original in sorted(renamed)]


def _raise_unmapped(unmapped: Sequence[str], class_name: str) -> None:
    if unmapped:
        shown = ", ".join(repr(k) for k in sorted(unmapped)[:3])
        more = f" and {len(unmapped) - 3} more" if len(unmapped) > 3 else ""
        raise LayoutError(
            f"{class_name}: {len(unmapped)} tensors have no place in the original layout "
            f"({shown}{more})"
        )


def original_plan(
    class_name: str, config: Mapping[str, Any], keys: Iterable[str]
) -> list[OriginalTensor]:
    """The original-layout tensors of a ``class_name`` state dict with these ``keys``.

    Every key is used exactly once; a key with no place in the original layout, or a
    fused tensor with a part missing, raises :class:`LayoutError`. Sorted by name.
    """
    family = ORIGINAL_CLASSES.get(class_name)
    if family is None:
        raise LayoutError(
            f"no original layout is known for {class_name}; it exists for "
            f"{', '.join(ORIGINAL_CLASSES)}"
        )
    keys = list(keys)
    return _flux_plan(keys) if family == "flux" else _unet_plan(keys, config)


def architecture(class_name: str) -> str:
    """``general.architecture`` of an original-layout file: what the GGUF readers expect."""
    family = ORIGINAL_CLASSES.get(class_name)
    if family is None:
        raise LayoutError(f"no original layout is known for {class_name}")
    return "flux" if family == "flux" else "sd1"


# ---------------------------------------------------------------------------
# fusing, quantizing, detecting
# ---------------------------------------------------------------------------


def _cat(parts: Sequence[Any]) -> Any:
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(list(parts), axis=0)
    import torch

    return torch.cat(list(parts), dim=0)


def fuse(spec: OriginalTensor, parts: Sequence[Any]) -> Any:
    """Concatenate ``parts`` (numpy arrays or torch tensors) the way ``spec`` stores them."""
    if len(parts) != len(spec.parts):
        raise ValueError(f"{spec.name}: expected {len(spec.parts)} parts, got {len(parts)}")
    out = _cat(parts)
    if spec.swap_halves:
        rows = out.shape[0]
        if rows % 2:
            raise ValueError(f"{spec.name}: {rows} rows cannot be split into two halves")
        out = _cat([out[rows // 2:], out[: rows // 2]])
    return out


def quantize_original(
    plan: Iterable[OriginalTensor],
    get_tensor: Callable[[str], Any],
    recipe: Any,
    *,
    linear_names: Collection[str] | None = None,
) -> list[Any]:
    """Quantize a state dict into the original layout following ``plan``.

    Every part is given the type the recipe chooses for its diffusers name (the same
    decision as in the diffusers layout); a fused tensor, which holds one type, takes the
    most precise type of its parts (see :func:`conformance.quant.recipes.combine_decisions`).
    ``get_tensor`` returns the source tensor of a diffusers key.
    """
    from .gguf_io import decide_tensor, quantize_tensor, to_numpy
    from .recipes import combine_decisions, get_recipe

    rec = get_recipe(recipe) if isinstance(recipe, str) else recipe
    linear = None if linear_names is None else frozenset(linear_names)
    out = []
    for spec in plan:
        arrays = []
        decisions = []
        for part in spec.parts:
            arr = to_numpy(get_tensor(part))
            decisions.append(decide_tensor(part, arr, rec, linear))
            arrays.append(arr)
        if len({a.dtype.kind for a in arrays}) > 1:
            raise ValueError(f"{spec.name}: cannot fuse integer and float tensors")
        if len(arrays) > 1:
            arrays = [a.astype(np.result_type(*arrays), copy=False) for a in arrays]
        fused = fuse(spec, arrays)
        decision = combine_decisions(spec.name, tuple(fused.shape), decisions)
        out.append(quantize_tensor(spec.name, fused, decision))
    return out


def detect_layout(
    names: Collection[str],
    diffusers_keys: Collection[str],
    original_names: Collection[str] | None,
    *,
    where: str = "GGUF file",
) -> tuple[str, str]:
    """Which layout tensor ``names`` are in: ``(layout, prefix)``.

    ``diffusers_keys`` is the model's state dict; ``original_names`` the names of its
    original layout (without prefix; ``None`` where there is none). Original names are
    accepted with or without the ``model.diffusion_model.`` prefix (``prefix`` says which).
    A file whose names fit neither, or whose names are incomplete, raises
    :class:`LayoutError` naming ``where`` and an offending tensor.
    """
    found = set(names)
    if not found:
        raise LayoutError(f"{where}: holds no tensors")
    diffusers = set(diffusers_keys)
    if found == diffusers:
        return "diffusers", ""
    prefix = UNET_PREFIX if all(n.startswith(UNET_PREFIX) for n in found) else ""
    stripped = {n[len(prefix):] for n in found}
    original = None if original_names is None else {
        n.removeprefix(UNET_PREFIX) for n in original_names
    }
    if original is not None and stripped == original:
        return "original", prefix
    # name the problem: a tensor neither layout has, else one the closer layout lacks
    in_diffusers = len(found & diffusers)
    in_original = 0 if original is None else len(stripped & original)
    stranger = sorted(
        n for n in found
        if n not in diffusers and (original is None or n[len(prefix):] not in original)
    )
    layouts = ("the diffusers layout" if original is None
               else "the diffusers layout nor the original layout")
    if stranger:
        raise LayoutError(
            f"{where}: tensor {stranger[0]!r} fits neither {layouts} of the model "
            f"({len(stranger)} such tensors of {len(found)})"
        )
    if in_diffusers and in_original:
        raise LayoutError(
            f"{where}: mixes the two layouts ({in_diffusers} diffusers names such as "
            f"{sorted(found & diffusers)[0]!r}, {in_original} original names)"
        )
    if in_original:
        assert original is not None
        missing = sorted(original - stripped)
        raise LayoutError(
            f"{where}: original layout, but tensor {prefix + missing[0]!r} is missing "
            f"({len(missing)} missing)"
        )
    missing = sorted(diffusers - found)
    raise LayoutError(
        f"{where}: diffusers layout, but tensor {missing[0]!r} is missing ({len(missing)} missing)"
    )
