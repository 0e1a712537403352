"""Tests of the tiny models: data set, tokenizers, shipped fixtures, sample structure, CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conformance.models import checksums, data, tiny, tokenizers, train

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- data set


def test_dataset_is_deterministic_from_seed() -> None:
    a_img, a_cap = data.generate(12, 64, seed=7)
    b_img, b_cap = data.generate(12, 64, seed=7)
    c_img, c_cap = data.generate(12, 64, seed=8)
    assert a_img.shape == (12, 64, 64, 3) and a_img.dtype == np.uint8
    assert np.array_equal(a_img, b_img) and a_cap == b_cap
    assert not np.array_equal(a_img, c_img) or a_cap != c_cap


def test_dataset_sizes_share_scenes() -> None:
    _, cap64 = data.generate(4, 64, seed=3)
    img96, cap96 = data.generate(4, 96, seed=3)
    assert img96.shape == (4, 96, 96, 3)
    assert cap64 == cap96
    allowed = set(data.all_captions())
    assert all(c in allowed for c in cap64)


def test_dataset_captions_cover_layouts_and_vocabulary() -> None:
    _, caps = data.generate(300, 32, seed=0)
    assert any(" above " in c for c in caps)
    assert any(" left of " in c for c in caps)
    assert any(" above " not in c and " left of " not in c for c in caps)
    words = set(data.vocabulary())
    assert {w for c in caps for w in c.split()} <= words


def test_dataset_batches_alternate_sizes() -> None:
    ds = data.ShapesDataset((64, 96), (10, 6), seed=1)
    it = ds.batches((4, 2), seed=0)
    sizes = [next(it)[1].shape[1:3] for _ in range(4)]
    assert sizes == [(64, 64), (96, 96), (64, 64), (96, 96)]


def test_render_draws_requested_colour() -> None:
    scene = data.Scene((data.Shape("square", "red", 0.5, 0.5, 0.3),), "white", "single")
    img = np.asarray(data.render(scene, 64))
    assert tuple(img[32, 32]) == data.COLOURS["red"]
    assert tuple(img[2, 2]) == (250, 250, 250)
    assert scene.caption == "a red square on a white background"


# ----------------------------------------------------------------------------- tokenizers


def test_clip_tokenizer_roundtrip(tmp_path: Path) -> None:
    from transformers import AutoTokenizer, CLIPTokenizer

    tokenizers.save_clip_tokenizer(tmp_path)
    assert (tmp_path / "vocab.json").is_file() and (tmp_path / "merges.txt").is_file()
    built = tokenizers.build_clip_tokenizer()
    loaded = CLIPTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    auto = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    caption = "a red circle left of a blue square on a gradient background"
    ids = built(caption).input_ids
    assert loaded(caption).input_ids == ids == auto(caption).input_ids
    assert len(ids) == len(caption.split()) + 2  # one token per word + bos/eos
    assert loaded.decode(ids, skip_special_tokens=True) == caption
    assert loaded.model_max_length == 77
    padded = loaded(caption, padding="max_length", max_length=77).input_ids
    assert len(padded) == 77
    # words outside the caption vocabulary still tokenize
    assert loaded.decode(loaded("zebra 42").input_ids, skip_special_tokens=True) == "zebra 4 2"


def test_t5_tokenizer_roundtrip(tmp_path: Path) -> None:
    from transformers import AutoTokenizer, T5Tokenizer

    tokenizers.save_t5_tokenizer(tmp_path)
    built = tokenizers.build_t5_tokenizer()
    loaded = T5Tokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    auto = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    caption = "a green triangle above a purple square on a black background"
    ids = built(caption).input_ids
    assert loaded(caption).input_ids == ids == auto(caption).input_ids
    assert len(ids) == len(caption.split()) + 1  # one piece per word + </s>
    assert ids[-1] == loaded.eos_token_id
    assert loaded.decode(ids, skip_special_tokens=True) == caption
    assert loaded.convert_tokens_to_ids("<extra_id_0>") == len(loaded) - 1
    assert len([t for t in loaded.get_vocab() if t.startswith("<extra_id_")]) == 100


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


# ----------------------------------------------------------------------------- CLI


def _train_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="conformance")
    sub = parser.add_subparsers(dest="cmd")
    train.register(sub)
    args = parser.parse_args(argv)
    rc: int = args.func(args)
    return rc


def test_train_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    rc = _train_cli(["train", "tiny-sd", "--out", str(out), "--steps-vae", "1"])
    assert rc != 0
    err = capsys.readouterr().err
    assert str(out) in err and "--force" in err
    assert (out / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_train_parser_defaults() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd")
    train.register(sub)
    args = parser.parse_args(["train", "tiny-flux", "--out", "x"])
    assert args.threads == 1 and args.seed == 0 and not args.force
    assert args.steps_vae is None and args.steps_denoiser is None
    assert callable(args.func)


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


def test_lora_fit_is_deterministic(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    from safetensors.torch import load_file

    from conformance.models.lora import WEIGHTS, LoraRecipe, fit_lora

    recipe = LoraRecipe(steps=2, images=32, batch=4)
    fit_lora(recipe, FIXTURES / "tiny-sd", tmp_path / "a")
    fit_lora(recipe, FIXTURES / "tiny-sd", tmp_path / "b")
    a, b = (tmp_path / x / WEIGHTS for x in "ab")
    assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "a" / "lora.json").read_bytes() == (tmp_path / "b" / "lora.json"
                                                            ).read_bytes()
    state = load_file(str(a))
    assert state and all(k.startswith("unet.") for k in state)
    assert any("lora_A" in k for k in state) and any("lora_B" in k for k in state)


def test_vae_mse_finetune_is_deterministic(tmp_path: Path) -> None:
    from dataclasses import replace

    recipe = replace(train.RECIPES["tiny-sd-vae-mse"], steps_vae=2, n_images=(8, 4))
    train.finetune_component(recipe, tmp_path / "a", FIXTURES / "tiny-sd")
    train.finetune_component(recipe, tmp_path / "b", FIXTURES / "tiny-sd")
    name = "diffusion_pytorch_model.safetensors"
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert json.loads((tmp_path / "a" / "config.json").read_text())["_class_name"] == \
        "AutoencoderKL"


def test_lora_cli_is_registered_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from conformance.cli import main

    out = tmp_path / "lora"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert main(["lora", "fit", "--out", str(out), "--steps", "1"]) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "precious"
    with pytest.raises(SystemExit):
        main(["lora", "fit", "--model", "tiny-flux", "--out", str(out)])
