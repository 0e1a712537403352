"""Tests of the shipped tiny models: checksums, sizes, pipelines, sample structure.

The tooling that builds them (data set, tokenizers, training, LoRA fitting) is tested in
``tests/test_fixtures_build.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conformance.models import checksums
from fixtures.build import data, tiny

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- fixtures


@pytest.mark.parametrize("name", tiny.MODEL_NAMES)
def test_fixture_matches_checksums(name: str) -> None:
    assert checksums.verify_fixture(FIXTURES / name) == []


def test_fixtures_have_no_pickles_and_fit_budget() -> None:
    files = [p for n in tiny.MODEL_NAMES for p in (FIXTURES / n).rglob("*") if p.is_file()]
    assert files
    assert not [p for p in files if p.suffix in {".bin", ".pt", ".pth", ".pkl", ".ckpt"}]
    assert sum(p.stat().st_size for p in files) < 30 * 1024 * 1024


def test_verify_fixture_reports_problems(tmp_path: Path) -> None:
    fx = tmp_path / "tiny-x"
    fx.mkdir()
    (fx / "a.json").write_text("{}")
    (fx / "b.json").write_text("[]")
    checksums.write_checksums(tmp_path, ["tiny-x"])
    assert checksums.verify_fixture(fx) == []
    (fx / "a.json").write_text('{"x": 1}')
    (fx / "b.json").unlink()
    (fx / "c.json").write_text("1")
    problems = checksums.verify_fixture(fx)
    assert len(problems) == 3
    assert any(p.startswith("changed file: tiny-x/a.json") for p in problems)
    assert "missing file: tiny-x/b.json" in problems
    assert "extra file: tiny-x/c.json" in problems


_PIPES: dict[str, Any] = {}


def _pipe(name: str) -> Any:
    from diffusers import DiffusionPipeline

    if name not in _PIPES:
        pipe = DiffusionPipeline.from_pretrained(str(FIXTURES / name), local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        _PIPES[name] = pipe
    return _PIPES[name]


def test_fixtures_load_as_expected_pipelines() -> None:
    from diffusers import FluxPipeline, StableDiffusionPipeline

    sd = _pipe("tiny-sd")
    assert isinstance(sd, StableDiffusionPipeline)
    assert sd.safety_checker is None and sd.feature_extractor is None
    assert sd.vae_scale_factor == 4
    assert type(sd.scheduler).__name__ == "EulerDiscreteScheduler"
    flux = _pipe("tiny-flux")
    assert isinstance(flux, FluxPipeline)
    assert flux.vae.config.latent_channels == 16
    assert flux.vae.quant_conv is None and flux.vae.post_quant_conv is None
    assert type(flux.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    inner = flux.transformer.inner_dim
    assert inner % 256 == 0
    assert sum(flux.transformer.config.axes_dims_rope) == flux.transformer.config.attention_head_dim
    for mod_name, mod in flux.transformer.named_modules():
        if isinstance(mod, torch.nn.Linear) and (
            mod_name.startswith(("transformer_blocks", "single_transformer_blocks"))
        ):
            assert mod.in_features % 256 == 0, mod_name
    for comp in (sd.unet, sd.vae, flux.transformer, flux.vae):
        assert next(comp.parameters()).dtype == torch.float32


# ----------------------------------------------------------------------------- structure


def structure_stats(img: np.ndarray) -> tuple[float, float]:
    """(contrast, roughness) of an RGB uint8 image.

    contrast: standard deviation of the grey levels. roughness: mean absolute difference between
    neighbouring grey levels divided by the contrast (about 1.15 for i.i.d. uniform noise; small
    for flat regions separated by edges).
    """
    g = img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    contrast = float(g.std())
    grad = np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean()
    return contrast, float(grad / 2.0 / max(contrast, 1e-6))


def looks_structured(img: np.ndarray) -> bool:
    contrast, roughness = structure_stats(img)
    return contrast > 12.0 and roughness < 0.45


def test_structure_check_rejects_noise() -> None:
    rng = np.random.default_rng(0)
    for size in (64, 96):
        noise = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        assert not looks_structured(noise)
        assert not looks_structured(np.full((size, size, 3), 128, dtype=np.uint8))
    imgs, _ = data.generate(4, 64, seed=0)
    assert all(looks_structured(i) for i in imgs)


@pytest.mark.parametrize("name", tiny.MODEL_NAMES)
@pytest.mark.parametrize("size", [64, 96])
def test_fixture_samples_have_structure(name: str, size: int) -> None:
    pipe = _pipe(name)
    kwargs = dict(tiny.SAMPLING_DEFAULTS[name])
    kwargs["num_inference_steps"] = 8
    gen = torch.Generator("cpu").manual_seed(0)
    img = pipe(
        "a red circle above a blue square on a white background",
        height=size,
        width=size,
        generator=gen,
        **kwargs,
    ).images[0]
    arr = np.asarray(img)
    assert arr.shape == (size, size, 3)
    contrast, roughness = structure_stats(arr)
    assert looks_structured(arr), (contrast, roughness)


# ----------------------------------------------------------------------------- training summaries


def test_training_summary_is_shipped() -> None:
    for name in tiny.MODEL_NAMES:
        summary_file = FIXTURES / name / "training.json"
        if not summary_file.exists():
            pytest.skip("fixtures are random-init (not trained yet)")
        summary = json.loads(summary_file.read_text())
        assert summary["model"] == name
        assert summary["stages"][0]["name"] == "vae"


# ----------------------------------------------------------------------------- variant fixtures

VARIANT_FIXTURES = ("tiny-sd-lora", "tiny-sd-vae-mse")


@pytest.mark.parametrize("name", VARIANT_FIXTURES)
def test_variant_fixture_matches_checksums(name: str) -> None:
    from conformance.models import verify_fixture_once

    assert checksums.verify_fixture(FIXTURES / name) == []
    verify_fixture_once(FIXTURES / name)  # what the runner does before loading


def test_variant_fixtures_are_small_safetensors() -> None:
    lora = FIXTURES / "tiny-sd-lora"
    vae = FIXTURES / "tiny-sd-vae-mse"
    assert sorted(p.name for p in lora.iterdir()) == ["lora.json",
                                                       "pytorch_lora_weights.safetensors"]
    assert (lora / "pytorch_lora_weights.safetensors").stat().st_size < 1024 * 1024
    assert sorted(p.name for p in vae.iterdir()) == [
        "config.json", "diffusion_pytorch_model.safetensors", "training.json"]
    assert (vae / "diffusion_pytorch_model.safetensors").stat().st_size < 1536 * 1024
    summary = json.loads((lora / "lora.json").read_text())
    assert summary["model"] == "tiny-sd" and summary["effect"]["0.8"]["mae"] > 60
    vae_summary = json.loads((vae / "training.json").read_text())
    assert vae_summary["stages"][0]["name"] == "vae-decoder-mse"
    assert vae_summary["weights_dtype"] == "float16"


def test_mse_vae_keeps_the_encoder_and_changes_the_decoder() -> None:
    from diffusers import AutoencoderKL

    base = AutoencoderKL.from_pretrained(str(FIXTURES / "tiny-sd" / "vae"))
    mse = AutoencoderKL.from_pretrained(str(FIXTURES / "tiny-sd-vae-mse"))
    assert mse.config.scaling_factor == base.config.scaling_factor
    for name, tensor in base.encoder.state_dict().items():
        assert torch.equal(mse.encoder.state_dict()[name], tensor.half().float()), name
    changed = [n for n, t in base.decoder.state_dict().items()
               if not torch.equal(mse.decoder.state_dict()[n], t.half().float())]
    assert len(changed) > len(base.decoder.state_dict()) // 2
