"""Tiny diffusion pipelines: architecture configs and random-init builders.

``build_tiny_sd`` writes a ``StableDiffusionPipeline`` directory and ``build_tiny_flux`` a
``FluxPipeline`` directory (safetensors only) that ``DiffusionPipeline.from_pretrained(path,
local_files_only=True)`` loads. ``conformance.models.train`` trains the same architectures and
saves them with ``save_pipeline``.

tiny-flux is laid out for GGUF K-quants: every ``nn.Linear`` inside the transformer blocks has
``in_features`` a multiple of 256 (inner dim 256 = 4 heads x 64, RoPE axes 8 + 28 + 28 = 64);
only the three input embedders (latent patches 64, T5 width 64, CLIP pooled width 64) are
narrower.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
)

from conformance.models.tokenizers import (
    CLIP_MAX_LENGTH,
    T5_MAX_LENGTH,
    build_clip_tokenizer,
    build_t5_tokenizer,
)

MODEL_NAMES: tuple[str, ...] = ("tiny-sd", "tiny-flux")
TRAIN_SIZES: tuple[int, ...] = (64, 96)

SD_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [16, 32, 64],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 8,
    "sample_size": 64,
    "scaling_factor": 1.0,
}

SD_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [32, 64, 64],
    "layers_per_block": 1,
    "attention_head_dim": 4,
    "cross_attention_dim": 64,
    "norm_num_groups": 8,
}

SD_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
    "steps_offset": 1,
}

FLUX_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [16, 32, 64, 64],
    "layers_per_block": 1,
    "latent_channels": 16,
    "norm_num_groups": 8,
    "sample_size": 64,
    "scaling_factor": 1.0,
    "shift_factor": 0.0,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}

FLUX_TRANSFORMER_CONFIG: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 1,
    "num_single_layers": 1,
    "attention_head_dim": 64,
    "num_attention_heads": 4,
    "joint_attention_dim": 64,
    "pooled_projection_dim": 64,
    "guidance_embeds": False,
    "axes_dims_rope": [8, 28, 28],
}

FLUX_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 64,
    "max_image_seq_len": 1024,
}

FLUX_T5_CONFIG: dict[str, Any] = {
    "d_model": 64,
    "d_kv": 16,
    "d_ff": 128,
    "num_layers": 2,
    "num_heads": 4,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",
    "dropout_rate": 0.0,
    "is_encoder_decoder": False,
    "use_cache": False,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
}

# Keyword arguments for the pipeline call that the trained fixtures were tuned with.
SAMPLING_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny-sd": {"num_inference_steps": 20, "guidance_scale": 4.0},
    "tiny-flux": {
        "num_inference_steps": 12,
        "true_cfg_scale": 4.0,
        "negative_prompt": "",
        "max_sequence_length": T5_MAX_LENGTH,
    },
}


def clip_text_config(tokenizer: CLIPTokenizer) -> CLIPTextConfig:
    """2-layer, width-64 CLIP text encoder sized to ``tokenizer``."""
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=CLIP_MAX_LENGTH,
        hidden_act="quick_gelu",
        projection_dim=64,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _seeded(seed: int) -> None:
    torch.manual_seed(seed)


# CLIP's default init (std 0.02 for token and position embeddings) leaves a frozen random
# encoder's outputs nearly caption-independent: cosine 0.87 between the outputs for "red" and
# "blue" at the same position and 0.97 between "white" and "black", which a tiny UNet cannot
# learn to bind in a short run. With std 0.3 for both, words and positions stay apart (cosine
# about 0.5 for different words at one position and for one word at two positions).
CLIP_TOKEN_EMBEDDING_STD = 0.3
CLIP_POSITION_EMBEDDING_STD = 0.3


def random_clip_text_model(
    tokenizer: CLIPTokenizer, seed: int, wide_embeddings: bool = True
) -> CLIPTextModel:
    """Frozen-random CLIP text encoder; ``wide_embeddings`` re-draws the token / position
    embeddings with a larger spread (tiny-sd's recipe; tiny-flux keeps the default init)."""
    _seeded(seed)
    model = CLIPTextModel(clip_text_config(tokenizer)).eval()
    if not wide_embeddings:
        return model
    gen = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        tok = model.get_input_embeddings()
        tok.weight.copy_(torch.randn(tok.weight.shape, generator=gen) * CLIP_TOKEN_EMBEDDING_STD)
        pos = model.embeddings.position_embedding
        pos.weight.copy_(torch.randn(pos.weight.shape, generator=gen) * CLIP_POSITION_EMBEDDING_STD)
    return model


def sd_components(seed: int) -> dict[str, Any]:
    """Random-init components of tiny-sd (fp32), deterministic from ``seed``."""
    tokenizer = build_clip_tokenizer()
    text_encoder = random_clip_text_model(tokenizer, seed)
    _seeded(seed + 1)
    vae = AutoencoderKL(**SD_VAE_CONFIG)
    _seeded(seed + 2)
    unet = UNet2DConditionModel(**SD_UNET_CONFIG)
    scheduler = EulerDiscreteScheduler(**SD_SCHEDULER_CONFIG)
    return {
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "unet": unet,
        "scheduler": scheduler,
    }


def flux_components(seed: int) -> dict[str, Any]:
    """Random-init components of tiny-flux (fp32), deterministic from ``seed``."""
    tokenizer = build_clip_tokenizer()
    tokenizer_2 = build_t5_tokenizer()
    text_encoder = random_clip_text_model(tokenizer, seed, wide_embeddings=False)
    _seeded(seed + 1)
    t5_cfg = T5Config(vocab_size=len(tokenizer_2), **FLUX_T5_CONFIG)
    text_encoder_2 = T5EncoderModel(t5_cfg).eval()
    _seeded(seed + 2)
    vae = AutoencoderKL(**FLUX_VAE_CONFIG)
    _seeded(seed + 3)
    transformer = FluxTransformer2DModel(**FLUX_TRANSFORMER_CONFIG)
    scheduler = FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER_CONFIG)
    return {
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "text_encoder_2": text_encoder_2,
        "tokenizer_2": tokenizer_2,
        "transformer": transformer,
        "scheduler": scheduler,
    }


def make_sd_pipeline(components: dict[str, Any]) -> StableDiffusionPipeline:
    return StableDiffusionPipeline(
        **components,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def make_flux_pipeline(components: dict[str, Any]) -> FluxPipeline:
    return FluxPipeline(**components)


def save_pipeline(pipe: StableDiffusionPipeline | FluxPipeline, out_dir: str | Path) -> Path:
    """Save ``pipe`` as safetensors and normalise the directory for reproducible checksums.

    The CLIP tokenizer also gets ``vocab.json`` + ``merges.txt``; no pickle files are written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(out), safe_serialization=True)
    from conformance.models.tokenizers import save_clip_tokenizer

    save_clip_tokenizer(out / "tokenizer")
    for bad in list(out.rglob("*.bin")) + list(out.rglob("*.pt")) + list(out.rglob("*.pkl")):
        bad.unlink()
    return out


def _replace_dir(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(out.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)


def write_dir(out: str | Path, fill: Callable[[Path], Any], kind: str = "model folder") -> Any:
    """Write the folder ``out`` by ``fill(tmp)`` into ``<out>.tmp`` beside it, then swap it
    into place; returns what ``fill`` returns.

    Every file and folder written takes the user's umask (:func:`_user_modes`: the
    ``0o600`` of ``safetensors`` files does not survive). A failure of the operating
    system (a full disk, a read-only folder), also where ``safetensors`` reports it as its
    own error, removes the temporary folder and raises
    :class:`~conformance.errors.OutputError` naming ``out`` and the cause, e.g.
    ``out: cannot write model folder: No space left on device``; ``out`` is then what it
    was before.
    """
    from safetensors import SafetensorError

    from conformance.errors import OutputError
    from conformance.safeio import os_reason

    target = Path(out)
    tmp = target.with_name(target.name + ".tmp")
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        result = fill(tmp)
        _user_modes(tmp)
        _replace_dir(tmp, target)
    except OutputError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except (OSError, SafetensorError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(target, f"cannot write {kind}: {os_reason(exc)}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _user_modes(root: Path) -> None:
    """Give every file under ``root`` the mode of a file the user creates (``0o666`` less
    the umask) and every folder ``0o777`` less it: ``safetensors`` writes its files
    ``0o600`` whatever the umask, which a team's shared fixtures folder cannot read."""
    from conformance.safeio import new_file_mode

    files = new_file_mode()
    folders = files | ((files & 0o444) >> 2)  # x where r: 0o644 -> 0o755, 0o640 -> 0o750
    os.chmod(root, folders)
    for folder, dirs, names in os.walk(root):
        for name in dirs:
            if not os.path.islink(os.path.join(folder, name)):
                os.chmod(os.path.join(folder, name), folders)
        for name in names:
            if not os.path.islink(os.path.join(folder, name)):
                os.chmod(os.path.join(folder, name), files)


def write_json(path: Path, data: Any, kind: str = "summary") -> Path:
    """``data`` as indented, key-sorted JSON at ``path``
    (:func:`conformance.safeio.write_atomic`)."""
    from conformance.safeio import write_atomic

    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    return write_atomic(path, text.encode("utf-8"), kind=kind)


def _build(kind: str, out_dir: str | Path, seed: int) -> Path:
    if kind == "tiny-sd":
        pipe: StableDiffusionPipeline | FluxPipeline = make_sd_pipeline(sd_components(seed))
    else:
        pipe = make_flux_pipeline(flux_components(seed))
    write_dir(out_dir, lambda tmp: save_pipeline(pipe, tmp), f"{kind} pipeline folder")
    return Path(out_dir)


def build_tiny_sd(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a random-init tiny ``StableDiffusionPipeline`` to ``out_dir``."""
    return _build("tiny-sd", out_dir, seed)


def build_tiny_flux(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a random-init tiny ``FluxPipeline`` to ``out_dir``."""
    return _build("tiny-flux", out_dir, seed)


def parameter_counts(pipe: StableDiffusionPipeline | FluxPipeline) -> dict[str, int]:
    """Parameter count per ``torch.nn.Module`` component of ``pipe``."""
    out: dict[str, int] = {}
    for name, comp in pipe.components.items():
        if isinstance(comp, torch.nn.Module):
            out[name] = sum(p.numel() for p in comp.parameters())
    return out


def describe(pipe: StableDiffusionPipeline | FluxPipeline) -> str:
    """One JSON line with the parameter counts (for logs)."""
    return json.dumps(parameter_counts(pipe), sort_keys=True)
