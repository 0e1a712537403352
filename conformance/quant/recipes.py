"""Per-tensor GGML type selection ("recipes") for diffusers state dicts.

A recipe maps every tensor of a state dict to a GGML type plus a short reason.
The rules mirror what GGUF conversions of diffusion models do in practice:

* only ``nn.Linear`` weights are block-quantized, because diffusers' GGUF
  loader only swaps ``nn.Linear`` modules for ``GGUFLinear``; any other
  quantized tensor (conv kernel, embedding table, norm) would break loading;
* 1-D tensors (biases, norm scales) stay F32, other non-Linear tensors and
  the input/timestep embedding projections stay F16 (F32 if they overflow
  half precision, and F32 in the ``bf16`` recipe, which is lossless for
  bfloat16 sources);
* in the mixed ``_m`` recipes (and ``q2_k``) the layers most sensitive to
  quantization error get one level more: attention value and output
  projections, feed-forward down projections and transformer output
  projections; the model's final output projection gets Q6_K, as llama.cpp
  does for ``output.weight``;
* a tensor whose rows (last dimension) are not a multiple of the chosen
  type's block size falls back to a 32-weight block type, or F16;
* a tensor the original checkpoint layout fuses from several diffusers tensors (Flux's
  ``qkv``) holds one type: the most precise of the types its parts get, so no part is
  stored below its recipe type (llama.cpp likewise raises fused ``attn_qkv`` one level
  in its ``_m`` recipes).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from gguf import GGMLQuantizationType as QT
from gguf import LlamaFileType

from .ggml import bits_per_weight, block_info

__all__ = [
    "RECIPES",
    "RECIPE_NAMES",
    "Decision",
    "Recipe",
    "choose_type",
    "combine_decisions",
    "get_recipe",
    "plan",
]

F16_MAX = 65504.0

#: Quality ladder used for "one level higher".
_LADDER: tuple[QT, ...] = (QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K, QT.Q8_0)

#: Replacement when the rows do not fit a 256-weight super-block.
_SMALL_BLOCK_FALLBACK: dict[QT, QT] = {
    QT.Q2_K: QT.Q4_0,
    QT.Q3_K: QT.Q4_0,
    QT.Q4_K: QT.Q5_0,
    QT.Q5_K: QT.Q5_0,
    QT.Q6_K: QT.Q8_0,
}


@dataclass(frozen=True)
class Recipe:
    """A named quantization recipe.

    ``base`` is the type of ordinary Linear weights; ``sensitive`` the type of
    attention value/output and feed-forward down projections; ``final`` the
    type of the model's final output projection. ``file_type`` is the
    llama.cpp ``general.file_type`` code written into the GGUF metadata.
    """

    name: str
    base: QT
    sensitive: QT
    final: QT
    file_type: int
    description: str

    @property
    def is_float(self) -> bool:
        """True for the unquantized recipes (f32, f16, bf16)."""
        return self.base in (QT.F32, QT.F16, QT.BF16)


def _bump(qtype: QT) -> QT:
    idx = _LADDER.index(qtype)
    return _LADDER[min(idx + 1, len(_LADDER) - 1)]


def _mixed(name: str, base: QT, file_type: int, description: str) -> Recipe:
    return Recipe(name, base, _bump(base), QT.Q6_K, file_type, description)


def _uniform(name: str, qtype: QT, file_type: int, description: str) -> Recipe:
    return Recipe(name, qtype, qtype, qtype, file_type, description)


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        _uniform("q8_0", QT.Q8_0, LlamaFileType.MOSTLY_Q8_0, "8.5 bpw, all Linear weights Q8_0"),
        _uniform("q6_k", QT.Q6_K, LlamaFileType.MOSTLY_Q6_K, "6.56 bpw, all Linear weights Q6_K"),
        _mixed("q5_k_m", QT.Q5_K, LlamaFileType.MOSTLY_Q5_K_M, "Q5_K, sensitive layers Q6_K"),
        _mixed("q4_k_m", QT.Q4_K, LlamaFileType.MOSTLY_Q4_K_M, "Q4_K, sensitive layers Q5_K"),
        _mixed("q3_k_m", QT.Q3_K, LlamaFileType.MOSTLY_Q3_K_M, "Q3_K, sensitive layers Q4_K"),
        _mixed("q2_k", QT.Q2_K, LlamaFileType.MOSTLY_Q2_K, "Q2_K, sensitive layers Q3_K"),
        _uniform("q5_0", QT.Q5_0, LlamaFileType.MOSTLY_Q5_0, "5.5 bpw, all Linear weights Q5_0"),
        _uniform("q4_0", QT.Q4_0, LlamaFileType.MOSTLY_Q4_0, "4.5 bpw, all Linear weights Q4_0"),
        _uniform("bf16", QT.BF16, LlamaFileType.MOSTLY_BF16, "Linear weights bfloat16"),
        _uniform("f16", QT.F16, LlamaFileType.MOSTLY_F16, "float16"),
        _uniform("f32", QT.F32, LlamaFileType.ALL_F32, "float32, no quantization"),
    )
}
#: Accepted recipe names, in order of decreasing size.
RECIPE_NAMES: tuple[str, ...] = tuple(RECIPES)


def get_recipe(name: str) -> Recipe:
    """Return the recipe called ``name`` (case-insensitive, ``-`` accepted for ``_``).

    Raises ``KeyError`` with the accepted names if it does not exist.
    """
    key = name.strip().lower().replace("-", "_")
    if key not in RECIPES:
        raise KeyError(f"unknown quantization type {name!r}; accepted: {', '.join(RECIPE_NAMES)}")
    return RECIPES[key]


@dataclass(frozen=True)
class Decision:
    """The GGML type chosen for one tensor and why."""

    name: str
    shape: tuple[int, ...]
    qtype: QT
    reason: str


_SENSITIVE_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(^|\.)(to_v|add_v_proj|v_proj)$"), "attention value projection"),
    (re.compile(r"(^|\.)(to_out\.0|to_add_out|out_proj|o_proj)$"), "attention output projection"),
    (re.compile(r"(^|\.)ff(_context)?\.net\.2$"), "feed-forward down projection"),
    (re.compile(r"(^|\.)(down_proj|fc2)$"), "feed-forward down projection"),
    (re.compile(r"single_transformer_blocks\.\d+\.proj_out$"), "attention+MLP output projection"),
    (re.compile(r"\.proj_out$"), "transformer output projection"),
)
_FINAL_MODULES = frozenset({"proj_out", "final_layer.linear"})
_EMBED_COMPONENT = re.compile(r"embed")


def _module_path(name: str) -> tuple[str, str]:
    if "." in name:
        module, leaf = name.rsplit(".", 1)
        return module, leaf
    return "", name


def _float_fallback(recipe: Recipe, max_abs: float | None) -> tuple[QT, str]:
    if recipe.base in (QT.F32, QT.BF16):
        return QT.F32, "F32"
    if max_abs is not None and max_abs > F16_MAX:
        return QT.F32, "F32 (values exceed the float16 range)"
    return QT.F16, "F16"


def _fit_rows(qtype: QT, row: int) -> tuple[QT | None, str]:
    """Return ``qtype`` or a fallback whose block divides ``row`` (``None``: none fits)."""
    block, _ = block_info(qtype)
    if row % block == 0:
        return qtype, ""
    fallback = _SMALL_BLOCK_FALLBACK.get(qtype)
    if fallback is not None and row % block_info(fallback)[0] == 0:
        return fallback, f"; rows of {row} are not a multiple of {block}, {fallback.name} instead"
    return None, f"; rows of {row} fit no block size"


def choose_type(
    name: str,
    shape: Sequence[int],
    recipe: Recipe | str,
    *,
    linear_names: Collection[str] | None = None,
    is_float: bool = True,
    max_abs: float | None = None,
) -> Decision:
    """Decide the GGML type of one tensor.

    ``linear_names`` is the set of ``nn.Linear`` weight names of the model
    (``{f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Linear)}``);
    without it every 2-D ``*.weight`` tensor is treated as a Linear weight.
    ``is_float=False`` marks integer tensors, which are kept as they are
    (returned type ``I32``; the writer keeps the source integer width).
    ``max_abs`` (largest finite magnitude) lets the recipe keep values that
    overflow half precision in F32.
    """
    rec = get_recipe(recipe) if isinstance(recipe, str) else recipe
    shape = tuple(int(s) for s in shape)
    if not is_float:
        return Decision(name, shape, QT.I32, "integer tensor kept as is")
    if max_abs is not None and max_abs > F16_MAX and rec.base not in (QT.F32, QT.BF16):
        return Decision(name, shape, QT.F32, "values exceed the float16 range, kept F32")
    if rec.base == QT.F32:
        return Decision(name, shape, QT.F32, "f32 recipe")

    module, leaf = _module_path(name)
    if len(shape) <= 1:
        kind = "bias" if leaf == "bias" else "1-D tensor (norm/scale)"
        return Decision(name, shape, QT.F32, f"{kind} kept F32")

    if linear_names is not None:
        is_linear = name in linear_names
    else:
        is_linear = leaf == "weight" and len(shape) == 2
    if not is_linear:
        qtype, label = _float_fallback(rec, max_abs)
        what = "conv kernel" if len(shape) > 2 else "not an nn.Linear weight"
        return Decision(name, shape, qtype, f"{what}, kept {label}")

    if rec.is_float:
        return Decision(name, shape, rec.base, f"Linear weight, {rec.name} recipe")

    if any(_EMBED_COMPONENT.search(part) for part in module.split(".")):
        qtype, label = _float_fallback(rec, max_abs)
        return Decision(name, shape, qtype, f"embedding projection, kept {label}")

    if module in _FINAL_MODULES:
        target, why = rec.final, "final output projection"
    else:
        target, why = rec.base, "Linear weight"
        for pattern, label in _SENSITIVE_PATTERNS:
            if pattern.search(module):
                target, why = rec.sensitive, label
                break
        if target != rec.base:
            why = f"{why}, one level up"
        else:
            why = "Linear weight"

    fitted, note = _fit_rows(target, shape[-1])
    if fitted is None:
        qtype, label = _float_fallback(rec, max_abs)
        return Decision(name, shape, qtype, f"{why}{note}, kept {label}")
    return Decision(name, shape, fitted, f"{why}{note}")


def plan(
    shapes: Mapping[str, Sequence[int]] | Iterable[tuple[str, Sequence[int]]],
    recipe: Recipe | str,
    *,
    linear_names: Collection[str] | None = None,
) -> list[Decision]:
    """Apply :func:`choose_type` to every ``(name, shape)`` (float tensors assumed)."""
    items = shapes.items() if isinstance(shapes, Mapping) else shapes
    rec = get_recipe(recipe) if isinstance(recipe, str) else recipe
    return [choose_type(n, s, rec, linear_names=linear_names) for n, s in items]


def _precision(qtype: QT) -> tuple[float, bool]:
    """Sort key: bits per weight, then K-quant over legacy type at equal size."""
    return bits_per_weight(qtype), qtype.name.endswith("_K")


def combine_decisions(name: str, shape: Sequence[int], parts: Sequence[Decision]) -> Decision:
    """The decision for tensor ``name`` fused from tensors decided as ``parts``.

    One part: its decision under the new name. Several parts of one type: that type.
    Parts of different types: the most precise of them, with the reason saying so.
    """
    if not parts:
        raise ValueError(f"{name}: no parts to combine")
    shape = tuple(int(s) for s in shape)
    first = parts[0]
    if len(parts) == 1:
        return Decision(name, shape, first.qtype, first.reason)
    joined = ", ".join(p.name for p in parts)
    if all(p.qtype == first.qtype for p in parts):
        return Decision(name, shape, first.qtype, f"{first.reason}; fused from {joined}")
    best = max(parts, key=lambda p: _precision(p.qtype))
    types = "/".join(p.qtype.name for p in parts)
    return Decision(
        name, shape, best.qtype,
        f"fused from {joined} ({types}): the most precise, {best.reason} ({best.name})",
    )
