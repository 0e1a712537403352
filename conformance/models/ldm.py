"""Export a diffusers Stable Diffusion 1.x pipeline as one original-layout checkpoint.

Checkpoints people download for Stable Diffusion 1.x (``v1-5-pruned-emaonly.safetensors``
and its fine-tunes) hold the whole pipeline in one state dict, with the key names of the
original latent-diffusion code base:

* ``model.diffusion_model.*``: the UNet (``input_blocks``, ``middle_block``,
  ``output_blocks``, ``time_embed``, ``out``);
* ``first_stage_model.*``: the autoencoder (``encoder.down.N.block.M``,
  ``decoder.up.N.block.M``, ``mid.block_1``, ``mid.attn_1`` ...), with 1x1 convolutions as
  attention projections;
* ``cond_stage_model.transformer.text_model.*``: the CLIP text encoder.

:func:`to_ldm_state_dict` maps a diffusers ``StableDiffusionPipeline`` directory onto that
layout, so the suite can test ``from_single_file`` loading on its own tiny model. The map is
derived from the component configs (block types, layers per block); every tensor is copied
bit for bit and a tensor the map does not cover is an error, not a silent omission.

Sub-command::

    conformance export-single-file SRC_DIR --out FILE.safetensors [--force]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.errors import ConformanceInputError, OutputError
from conformance.models import load_config, read_json_object, shard_files

__all__ = [
    "CLIP_PREFIX",
    "PICKLE_SUFFIXES",
    "UNET_PREFIX",
    "VAE_PREFIX",
    "clip_to_ldm",
    "export_single_file",
    "read_component",
    "register",
    "run_export",
    "to_ldm_state_dict",
    "unet_to_ldm",
    "vae_to_ldm",
]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."

#: Weight files that run code when loaded; never read.
PICKLE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"})

#: The pipeline and component classes the original layout exists for.
PIPELINE_CLASS = "StableDiffusionPipeline"
COMPONENT_CLASSES = {
    "unet": "UNet2DConditionModel",
    "vae": "AutoencoderKL",
    "text_encoder": "CLIPTextModel",
}

_UNET_RESNET = (
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("time_emb_proj.", "emb_layers.1."),
    ("conv_shortcut.", "skip_connection."),
)
_VAE_RESNET = (
    ("norm1.", "norm1."),
    ("conv1.", "conv1."),
    ("norm2.", "norm2."),
    ("conv2.", "conv2."),
    ("conv_shortcut.", "nin_shortcut."),
)
_VAE_ATTENTION = (
    ("group_norm.", "norm."),
    ("to_q.", "q."),
    ("to_k.", "k."),
    ("to_v.", "v."),
    ("to_out.0.", "proj_out."),
)

Tensor = Any  # torch.Tensor; kept loose so the module imports without torch


@dataclass(frozen=True)
class _Rule:
    """Keys under ``src`` go under ``dst``; ``parts`` renames the first part of the rest."""

    src: str
    dst: str
    parts: tuple[tuple[str, str], ...] | None = None
    conv_1x1: bool = False

    def apply(self, rest: str, tensor: Tensor) -> tuple[str, Tensor] | None:
        if self.parts is None:
            new_rest = rest
        else:
            for old, new in self.parts:
                if rest.startswith(old):
                    new_rest = new + rest[len(old):]
                    break
            else:
                return None
        if self.conv_1x1 and rest.endswith("weight") and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]
        return self.dst + new_rest, tensor


def _apply_rules(
    state: Mapping[str, Tensor], rules: Iterable[_Rule], component: str
) -> dict[str, Tensor]:
    """Rename every key of ``state`` by the longest matching rule; unmatched keys are errors."""
    ordered = sorted(rules, key=lambda r: len(r.src), reverse=True)
    out: dict[str, Tensor] = {}
    unmapped: list[str] = []
    for key, tensor in state.items():
        for rule in ordered:
            if key.startswith(rule.src):
                renamed = rule.apply(key[len(rule.src):], tensor)
                if renamed is not None:
                    break
        else:
            unmapped.append(key)
            continue
        new_key, new_tensor = renamed
        if new_key in out:
            raise ValueError(f"{component}: two tensors map to {new_key!r}")
        out[new_key] = new_tensor
    if unmapped:
        shown = ", ".join(sorted(unmapped)[:5])
        more = f" and {len(unmapped) - 5} more" if len(unmapped) > 5 else ""
        raise ValueError(
            f"{component}: {len(unmapped)} tensors have no place in the original layout "
            f"({shown}{more}); is this a Stable Diffusion 1.x {component}?"
        )
    return out


def _per_block(value: int | list[int] | tuple[int, ...], blocks: int, name: str) -> list[int]:
    if isinstance(value, int):
        return [value] * blocks
    if len(value) != blocks:
        raise ValueError(f"unet config: {name} has {len(value)} entries for {blocks} blocks")
    return list(value)


def unet_to_ldm(state: Mapping[str, Tensor], config: Mapping[str, Any]) -> dict[str, Tensor]:
    """A ``UNet2DConditionModel`` state dict with the original ``model.diffusion_model`` keys.

    ``config`` is the UNet's ``config.json``: the block types and ``layers_per_block`` fix
    which ``input_blocks.N`` / ``output_blocks.N`` each diffusers block becomes.
    """
    down = list(config["down_block_types"])
    up = list(config["up_block_types"])
    layers = _per_block(config["layers_per_block"], len(down), "layers_per_block")
    if config.get("mid_block_type", "UNetMidBlock2DCrossAttn") != "UNetMidBlock2DCrossAttn":
        raise ValueError(f"unet config: mid_block_type {config['mid_block_type']!r} is not "
                         "UNetMidBlock2DCrossAttn, the only one the original layout has")
    p = UNET_PREFIX
    rules = [
        _Rule("time_embedding.linear_1.", p + "time_embed.0."),
        _Rule("time_embedding.linear_2.", p + "time_embed.2."),
        _Rule("conv_in.", p + "input_blocks.0.0."),
        _Rule("conv_norm_out.", p + "out.0."),
        _Rule("conv_out.", p + "out.2."),
        # class-conditioned and SDXL-style UNets: the label embedding MLP
        _Rule("class_embedding.linear_1.", p + "label_emb.0.0."),
        _Rule("class_embedding.linear_2.", p + "label_emb.0.2."),
        _Rule("add_embedding.linear_1.", p + "label_emb.0.0."),
        _Rule("add_embedding.linear_2.", p + "label_emb.0.2."),
        _Rule("mid_block.resnets.0.", p + "middle_block.0.", _UNET_RESNET),
        _Rule("mid_block.attentions.0.", p + "middle_block.1."),
        _Rule("mid_block.resnets.1.", p + "middle_block.2.", _UNET_RESNET),
    ]
    index = 1
    for b, block_type in enumerate(down):
        for j in range(layers[b]):
            rules.append(_Rule(f"down_blocks.{b}.resnets.{j}.", f"{p}input_blocks.{index}.0.",
                               _UNET_RESNET))
            if "CrossAttn" in block_type:
                rules.append(_Rule(f"down_blocks.{b}.attentions.{j}.",
                                   f"{p}input_blocks.{index}.1."))
            index += 1
        if b < len(down) - 1:
            rules.append(_Rule(f"down_blocks.{b}.downsamplers.0.conv.",
                               f"{p}input_blocks.{index}.0.op."))
            index += 1
    up_layers = list(reversed(layers))
    index = 0
    for b, block_type in enumerate(up):
        attention = "CrossAttn" in block_type
        for j in range(up_layers[b] + 1):
            rules.append(_Rule(f"up_blocks.{b}.resnets.{j}.", f"{p}output_blocks.{index}.0.",
                               _UNET_RESNET))
            if attention:
                rules.append(_Rule(f"up_blocks.{b}.attentions.{j}.",
                                   f"{p}output_blocks.{index}.1."))
            if j == up_layers[b] and b < len(up) - 1:
                slot = 2 if attention else 1
                rules.append(_Rule(f"up_blocks.{b}.upsamplers.0.conv.",
                                   f"{p}output_blocks.{index}.{slot}.conv."))
            index += 1
    return _apply_rules(state, rules, "unet")


def vae_to_ldm(state: Mapping[str, Tensor], config: Mapping[str, Any]) -> dict[str, Tensor]:
    """An ``AutoencoderKL`` state dict with the original ``first_stage_model`` keys.

    Attention projections become 1x1 convolution kernels (``[C, C, 1, 1]``), as stored
    there; decoder up block ``i`` is ``decoder.up.{n-1-i}`` (the original counts from the
    lowest resolution).
    """
    n = len(config["block_out_channels"])
    p = VAE_PREFIX
    rules = [
        _Rule("quant_conv.", p + "quant_conv."),
        _Rule("post_quant_conv.", p + "post_quant_conv."),
    ]
    for part in ("encoder", "decoder"):
        rules += [
            _Rule(f"{part}.conv_in.", f"{p}{part}.conv_in."),
            _Rule(f"{part}.conv_out.", f"{p}{part}.conv_out."),
            _Rule(f"{part}.conv_norm_out.", f"{p}{part}.norm_out."),
            _Rule(f"{part}.mid_block.resnets.0.", f"{p}{part}.mid.block_1.", _VAE_RESNET),
            _Rule(f"{part}.mid_block.resnets.1.", f"{p}{part}.mid.block_2.", _VAE_RESNET),
            _Rule(f"{part}.mid_block.attentions.0.", f"{p}{part}.mid.attn_1.", _VAE_ATTENTION,
                  conv_1x1=True),
        ]
    layers = int(config["layers_per_block"])
    for i in range(n):
        # the decoder has one resnet more per block than the encoder
        rules += [
            _Rule(f"encoder.down_blocks.{i}.resnets.{j}.", f"{p}encoder.down.{i}.block.{j}.",
                  _VAE_RESNET)
            for j in range(layers)
        ]
        rules += [
            _Rule(f"decoder.up_blocks.{i}.resnets.{j}.",
                  f"{p}decoder.up.{n - 1 - i}.block.{j}.", _VAE_RESNET)
            for j in range(layers + 1)
        ]
        rules += [
            _Rule(f"encoder.down_blocks.{i}.downsamplers.0.conv.",
                  f"{p}encoder.down.{i}.downsample.conv."),
            _Rule(f"decoder.up_blocks.{i}.upsamplers.0.conv.",
                  f"{p}decoder.up.{n - 1 - i}.upsample.conv."),
        ]
    return _apply_rules(state, rules, "vae")


def clip_to_ldm(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A ``CLIPTextModel`` state dict under ``cond_stage_model.transformer.text_model``.

    Accepts both the flat key layout of recent transformers (``embeddings.*``) and the
    older wrapped one (``text_model.embeddings.*``).
    """
    out: dict[str, Tensor] = {}
    for key, tensor in state.items():
        rest = key.removeprefix("text_model.")
        if not rest.startswith(("embeddings.", "encoder.", "final_layer_norm.")):
            raise ValueError(f"text_encoder: tensor {key!r} is not part of a CLIP text model")
        out[CLIP_PREFIX + rest] = tensor
    return out


def read_component(directory: Path) -> dict[str, Tensor]:
    """All tensors of a diffusers / transformers component folder (``*.safetensors``).

    Follows a ``*.safetensors.index.json`` shard index when there is one. A folder whose
    weights are only pickles (``.bin``, ``.pt`` ...) is refused, naming the files.
    """
    from safetensors.torch import load_file

    indexes = sorted(directory.glob("*.safetensors.index.json"))
    if indexes:
        files = shard_files(indexes[0])
    else:
        found = sorted(directory.glob("*.safetensors"))
        # "model.fp16.safetensors" is a variant: used only when it is all there is
        files = [f for f in found if f.name.count(".") == 1]
        if not files and len(found) > 1:
            names = ", ".join(f.name for f in found)
            raise ConformanceInputError(directory, f"several weight variants ({names}) and no "
                                        "main weights; keep one")
        files = files or found
    if not files:
        pickled = sorted(
            f.name for f in directory.glob("*") if f.suffix.lower() in PICKLE_SUFFIXES
        )
        if pickled:
            raise ConformanceInputError(
                directory / pickled[0],
                "pickled checkpoints are not loaded: convert to safetensors",
            )
        raise ConformanceInputError(directory, "no *.safetensors weights in this folder")
    state: dict[str, Tensor] = {}
    for file in files:
        if not file.is_file():
            raise ConformanceInputError(file, "weight file named by the shard index is missing")
        try:
            part = load_file(str(file))
        except Exception as exc:  # safetensors raises its own error types
            raise ConformanceInputError(file, f"not a readable .safetensors file ({exc})") from None
        twice = sorted(set(part) & set(state))
        if twice:
            raise ConformanceInputError(
                file, f"tensor {twice[0]!r} is also in another shard of {directory}"
            )
        state.update(part)
    return state


def to_ldm_state_dict(src: str | Path) -> dict[str, Tensor]:
    """The whole ``StableDiffusionPipeline`` at ``src`` as one original-layout state dict.

    Raises :class:`ConformanceInputError` naming the file for anything that is not a
    diffusers Stable Diffusion 1.x pipeline directory with safetensors weights.
    """
    root = Path(src)
    index_path = root / "model_index.json"
    if not root.is_dir():
        raise ConformanceInputError(root, "not a directory; expected a diffusers pipeline folder")
    if not index_path.is_file():
        raise ConformanceInputError(
            root, "no model_index.json; expected a diffusers pipeline folder"
        )
    index = read_json_object(index_path)
    class_name = index.get("_class_name")
    if class_name != PIPELINE_CLASS:
        raise ConformanceInputError(
            index_path, f"_class_name is {class_name!r}; only {PIPELINE_CLASS} can be exported "
            "to the original Stable Diffusion 1.x layout"
        )
    converters: dict[str, Callable[[dict[str, Tensor], dict[str, Any]], dict[str, Tensor]]] = {
        "unet": unet_to_ldm,
        "vae": vae_to_ldm,
        "text_encoder": lambda state, _config: clip_to_ldm(state),
    }
    out: dict[str, Tensor] = {}
    for name, expected in COMPONENT_CLASSES.items():
        entry = index.get(name)
        if not isinstance(entry, list) or len(entry) != 2 or entry[1] != expected:
            raise ConformanceInputError(
                index_path, f"component {name} is {entry!r}; expected a {expected}"
            )
        folder = root / name
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise ConformanceInputError(folder, "no config.json in the component folder")
        config = load_config(config_path)
        state = read_component(folder)
        try:
            out.update(converters[name](state, config))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConformanceInputError(
                folder, f"cannot map to the original layout ({exc})"
            ) from None
    return out


def export_single_file(src: str | Path, out: str | Path, force: bool = False) -> Path:
    """Write the pipeline at ``src`` as one original-layout ``.safetensors`` file at ``out``.

    The output path is checked before the conversion; the file is written with
    :func:`conformance.safeio.write_atomic` (a temporary file beside ``out``, renamed into
    place, with the user's umask), so an interrupted export leaves no partial file and a
    full disk is an :class:`~conformance.errors.OutputError` naming ``out`` and the cause.
    Returns ``out``.
    """
    from safetensors.torch import save

    from conformance.safeio import writable_problem, write_atomic

    target = Path(out)
    if target.suffix.lower() != ".safetensors":
        raise ConformanceInputError("--out", f"{out}: must end with .safetensors")
    if target.is_dir():
        raise ConformanceInputError("--out", f"{out}: is a directory; expected a file path")
    if target.exists() and not force:
        raise ConformanceInputError("--out", f"{out}: already exists; pass --force to overwrite")
    if not target.parent.is_dir():
        raise ConformanceInputError("--out", f"{out}: directory {target.parent} does not exist")
    problem = writable_problem(target)
    if problem is not None:
        raise ConformanceInputError("--out", f"{out}: {problem}")
    state = to_ldm_state_dict(src)
    metadata = {"format": "pt", "conformance.source": Path(src).name}
    data = save({k: v.contiguous() for k, v in state.items()}, metadata=metadata)
    del state
    return write_atomic(target, data, kind="single-file checkpoint")


def run_export(args: argparse.Namespace) -> int:
    """Entry point of ``export-single-file``; returns the process exit status."""
    try:
        path = export_single_file(args.src, args.out, force=args.force)
    except OutputError as exc:  # a full disk, a folder that cannot be written: not usage
        print(f"conformance export-single-file: error: {exc}", file=sys.stderr)
        return 1
    except ConformanceInputError as exc:
        print(f"conformance export-single-file: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} (original Stable Diffusion layout, from {args.src})")
    return 0


def register(subparsers: Any) -> None:
    """Add the ``export-single-file`` sub-command to an argparse ``subparsers`` object."""
    parser = subparsers.add_parser(
        "export-single-file",
        help="export a diffusers StableDiffusionPipeline as one original-layout checkpoint",
        description=(
            "Write a diffusers StableDiffusionPipeline directory as one .safetensors file "
            "with the original Stable Diffusion 1.x key layout (model.diffusion_model.*, "
            "first_stage_model.*, cond_stage_model.transformer.*), loadable with "
            "StableDiffusionPipeline.from_single_file(FILE, config=SRC_DIR)."
        ),
    )
    parser.add_argument("src", metavar="SRC_DIR", help="diffusers pipeline directory")
    parser.add_argument("--out", metavar="FILE.safetensors", required=True,
                        help="output file")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    parser.set_defaults(func=run_export)
