"""Real-model sources: every weights layout loads offline and gives the fixture's image.

The tiny fixture pipelines stand in for real checkpoints, laid out in each format users
keep weights in: a diffusers directory, an original-layout single ``.safetensors`` file
(made by ``conformance.models.ldm``), a GGUF denoiser (made by ``conformance quantize``)
over a base directory, and a Hugging Face cache looked up by repo id.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conformance.errors import ConformanceInputError
from conformance.models import Family, ModelUnavailable, ldm
from conformance.models.sources import (
    REAL_MODELS,
    Layout,
    RealModel,
    get_real_model,
    hub_cache_dir,
    load,
    resolve,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
TINY_SD_DIR = FIXTURES / "tiny-sd"
TINY_FLUX_DIR = FIXTURES / "tiny-flux"

TINY_SD = RealModel(
    name="tiny-sd",
    family=Family.SD,
    env="CONFORMANCE_TEST_SD",
    repo_id="conformance-test/tiny-sd",
    pipeline_class="StableDiffusionPipeline",
    hint="hf download conformance-test/tiny-sd",
)
TINY_FLUX = RealModel(
    name="tiny-flux",
    family=Family.FLUX,
    env="CONFORMANCE_TEST_FLUX",
    repo_id="conformance-test/tiny-flux",
    pipeline_class="FluxPipeline",
    hint="hf download conformance-test/tiny-flux",
    gguf_env="CONFORMANCE_TEST_FLUX_GGUF",
)
TEST_VARIABLES = (
    TINY_SD.env,
    TINY_SD.config_env,
    TINY_FLUX.env,
    TINY_FLUX.config_env,
    "CONFORMANCE_TEST_FLUX_GGUF",
)

PROMPT = "a red square on a white background"
SEED = 3


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """Offline, one thread, and a Hugging Face cache of this test's own (empty by default)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable once, at import: switch the live flag off too
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    for name in TEST_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _require(directory: Path) -> Path:
    if not (directory / "model_index.json").is_file():
        pytest.skip(f"fixture {directory} is not built (python -m fixtures.build train)")
    return directory


def generate(pipe: Any, family: Family) -> np.ndarray:
    """One 32x32, 2-step image as float32 RGB in [0, 1]."""
    with torch.inference_mode():
        result = pipe(
            prompt=PROMPT,
            num_inference_steps=2,
            height=32,
            width=32,
            guidance_scale=5.0 if family is Family.SD else 0.0,
            generator=torch.Generator("cpu").manual_seed(SEED),
            output_type="np",
        )
    return np.asarray(result.images[0], dtype=np.float32)


def _plain(directory: Path) -> Any:
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(directory), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def sd_reference() -> tuple[Any, np.ndarray]:
    """The plain fixture pipeline and its image: what every layout must reproduce."""
    pipe = _plain(_require(TINY_SD_DIR))
    return pipe, generate(pipe, Family.SD)


@pytest.fixture(scope="module")
def flux_reference() -> np.ndarray:
    return generate(_plain(_require(TINY_FLUX_DIR)), Family.FLUX)


def assert_same_image(observed: np.ndarray, expected: np.ndarray, context: str) -> None:
    __tracebackhide__ = True
    diff = float(np.abs(observed - expected).max())
    assert observed.shape == expected.shape and diff == 0.0, (
        f"observed max |diff|={diff}, expected=0 [{context}]"
    )


def build_hub_cache(cache: Path, repo_id: str, source: Path) -> Path:
    """Lay ``source`` out as huggingface_hub does: blobs, a snapshot of links, refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    revision = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / revision
    (repo / "blobs").mkdir(parents=True)
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        blob = repo / "blobs" / digest
        if not blob.exists():
            blob.symlink_to(file.resolve())
        link = snapshot / file.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return snapshot


# ----------------------------------------------------------------------------- registry


def test_registry_names_the_real_models() -> None:
    assert sorted(REAL_MODELS) == ["flux-schnell", "sd15", "sdxl"]
    sd15, sdxl, flux = (get_real_model(n) for n in ("sd15", "sdxl", "flux-schnell"))
    assert (sd15.repo_id, sd15.pipeline_class, sd15.env) == (
        "stable-diffusion-v1-5/stable-diffusion-v1-5", "StableDiffusionPipeline",
        "CONFORMANCE_SD15",
    )
    assert (sdxl.repo_id, sdxl.pipeline_class, sdxl.env) == (
        "stabilityai/stable-diffusion-xl-base-1.0", "StableDiffusionXLPipeline",
        "CONFORMANCE_SDXL",
    )
    assert (flux.repo_id, flux.pipeline_class, flux.env, flux.gguf_env) == (
        "black-forest-labs/FLUX.1-schnell", "FluxPipeline", "CONFORMANCE_FLUX",
        "CONFORMANCE_FLUX_GGUF",
    )
    assert sd15.family is Family.SD and flux.family is Family.FLUX
    assert sd15.config_env == "CONFORMANCE_SD15_CONFIG"
    for model in REAL_MODELS.values():
        assert model.repo_id in model.hint and model.hint.startswith("hf download ")
    with pytest.raises(KeyError, match="known: flux-schnell, sd15, sdxl"):
        get_real_model("sd3")


def test_hub_cache_dir_precedence(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    assert hub_cache_dir({"HF_HUB_CACHE": "/a", "HF_HOME": home}) == Path("/a")
    assert hub_cache_dir({"HUGGINGFACE_HUB_CACHE": "/b", "HF_HOME": home}) == Path("/b")
    assert hub_cache_dir({"HF_HOME": home}) == Path(home) / "hub"
    assert hub_cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/huggingface/hub")
    assert hub_cache_dir({}) == Path.home() / ".cache" / "huggingface" / "hub"


# ----------------------------------------------------------------------------- layouts


def test_directory(monkeypatch: pytest.MonkeyPatch, sd_reference: tuple[Any, np.ndarray]) -> None:
    monkeypatch.setenv(TINY_SD.env, str(TINY_SD_DIR))
    resolved = resolve(TINY_SD)
    assert (resolved.layout, resolved.path, resolved.gguf) == (Layout.DIRECTORY, TINY_SD_DIR, None)
    pipe = load(resolved, torch.float32)
    assert_same_image(generate(pipe, Family.SD), sd_reference[1], resolved.describe())


def test_single_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sd_reference: tuple[Any, np.ndarray]
) -> None:
    checkpoint = ldm.export_single_file(TINY_SD_DIR, tmp_path / "tiny-sd.safetensors")
    keys = set(load_file(str(checkpoint)))
    prefixes = {k.split(".")[0] for k in keys}
    assert prefixes == {"model", "first_stage_model", "cond_stage_model"}
    monkeypatch.setenv(TINY_SD.env, str(checkpoint))
    monkeypatch.setenv(TINY_SD.config_env, str(TINY_SD_DIR))
    resolved = resolve(TINY_SD)
    assert (resolved.layout, resolved.path, resolved.config) == (
        Layout.SINGLE_FILE, checkpoint, TINY_SD_DIR
    )
    pipe = load(resolved, torch.float32)
    reference, image = sd_reference
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(pipe, name).state_dict(), getattr(reference, name).state_dict()
        assert ours.keys() == theirs.keys(), name
        unequal = [k for k in theirs if not torch.equal(ours[k], theirs[k])]
        assert not unequal, f"{name}: {len(unequal)} tensors differ, e.g. {unequal[:3]}"
    assert_same_image(generate(pipe, Family.SD), image, resolved.describe())


def test_single_file_takes_configs_from_the_hub_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    snapshot = build_hub_cache(tmp_path / "hub", TINY_SD.repo_id, _require(TINY_SD_DIR))
    checkpoint = ldm.export_single_file(TINY_SD_DIR, tmp_path / "tiny-sd.safetensors")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv(TINY_SD.env, str(checkpoint))
    resolved = resolve(TINY_SD)
    assert (resolved.layout, resolved.config) == (Layout.SINGLE_FILE, snapshot)
    assert type(load(resolved).unet).__name__ == "UNet2DConditionModel"


def test_gguf_denoiser_over_a_base_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flux_reference: np.ndarray
) -> None:
    from gguf import GGMLQuantizationType, GGUFReader

    from conformance.quant.command import run_quantize
    from conformance.quant.loading import quantization_report

    gguf = tmp_path / "transformer-q8_0.gguf"
    args = argparse.Namespace(
        src=str(TINY_FLUX_DIR / "transformer"), qtype="q8_0", out=str(gguf), force=False
    )
    assert run_quantize(args) == 0
    monkeypatch.setenv(TINY_FLUX.env, str(TINY_FLUX_DIR))
    monkeypatch.setenv("CONFORMANCE_TEST_FLUX_GGUF", str(gguf))
    resolved = resolve(TINY_FLUX)
    assert (resolved.layout, resolved.gguf) == (Layout.DIRECTORY, gguf)
    pipe = load(resolved, torch.float32, gguf=resolved.gguf, compute_dtype=torch.float32)

    stored = {
        t.name.removesuffix(".weight")
        for t in GGUFReader(str(gguf)).tensors
        if t.tensor_type == GGMLQuantizationType.Q8_0
    }
    report = quantization_report(pipe.transformer)
    assert stored and report.consistent
    assert set(report.quantized) == stored
    assert set(report.counts()) == {"Q8_0"}
    assert report.plain_linear.isdisjoint(stored)

    image = generate(pipe, Family.FLUX)
    diff = np.abs(image - flux_reference)
    assert float(diff.max()) <= 0.05 and float(diff.mean()) <= 0.01, (
        f"observed max |diff|={diff.max():.4f} mean={diff.mean():.5f}, expected <= 0.05 / "
        f"0.01 [{resolved.describe()}]"
    )


def test_hub_cache_by_repo_id(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sd_reference: tuple[Any, np.ndarray]
) -> None:
    snapshot = build_hub_cache(tmp_path / "hub", TINY_SD.repo_id, TINY_SD_DIR)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    resolved = resolve(TINY_SD)
    assert (resolved.layout, resolved.path) == (Layout.HF_CACHE, snapshot)
    pipe = load(resolved, torch.float32)
    assert_same_image(generate(pipe, Family.SD), sd_reference[1], resolved.describe())


def test_hub_cache_under_hf_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    snapshot = build_hub_cache(tmp_path / "hf-home" / "hub", TINY_SD.repo_id, TINY_SD_DIR)
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    assert resolve(TINY_SD).path == snapshot


def test_fp16_only_component_selects_the_variant(tmp_path: Path) -> None:
    root = tmp_path / "sd"
    for file in (p for p in _require(TINY_SD_DIR).rglob("*") if p.is_file()):
        rel = file.relative_to(TINY_SD_DIR)
        name = rel.name.replace(".safetensors", ".fp16.safetensors")
        link = root / rel.parent / (name if rel.parts[0] == "unet" else rel.name)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(file)
    resolved = resolve(TINY_SD, {TINY_SD.env: str(root)})
    assert resolved.variant == "fp16"
    assert type(load(resolved).unet).__name__ == "UNet2DConditionModel"


# ----------------------------------------------------------------------------- errors


def _input_error(model: RealModel, environ: dict[str, str], *fragments: str) -> str:
    __tracebackhide__ = True
    with pytest.raises(ConformanceInputError) as info:
        resolve(model, environ)
    text = str(info.value)
    for fragment in fragments:
        assert fragment in text, f"observed={text!r}, expected to contain {fragment!r}"
    return text


def test_missing_path_names_variable_and_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "sd15.safetensors"
    _input_error(TINY_SD, {TINY_SD.env: str(missing)}, "$CONFORMANCE_TEST_SD", str(missing),
                 "no such file")


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".bin"])
def test_pickled_checkpoint_is_refused(tmp_path: Path, suffix: str) -> None:
    pickled = tmp_path / f"v1-5-pruned{suffix}"
    pickled.write_bytes(b"\x80\x02}q\x00.")
    _input_error(TINY_SD, {TINY_SD.env: str(pickled)}, str(pickled),
                 "pickled checkpoints are not loaded: convert to safetensors")


def test_pipeline_directory_with_pickled_weights_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "sd"
    (root / "unet").mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps({"unet": ["diffusers", "X"]}))
    (root / "unet" / "config.json").write_text("{}")
    (root / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x02.")
    _input_error(TINY_SD, {TINY_SD.env: str(root)}, "unet/diffusion_pytorch_model.bin",
                 "pickled checkpoints are not loaded", "$CONFORMANCE_TEST_SD")
    build_hub_cache(tmp_path / "hub", TINY_SD.repo_id, root)
    _input_error(TINY_SD, {"HF_HUB_CACHE": str(tmp_path / "hub")},
                 "unet/diffusion_pytorch_model.bin", "Hugging Face cache of conformance-test")


def test_folder_of_pickles_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model.ckpt").write_bytes(b"\x80\x02.")
    _input_error(TINY_SD, {TINY_SD.env: str(tmp_path)}, "model.ckpt", "convert to safetensors")


def test_folder_without_pipeline(tmp_path: Path) -> None:
    _input_error(TINY_SD, {TINY_SD.env: str(tmp_path)}, "$CONFORMANCE_TEST_SD",
                 "no model_index.json")


def test_unsupported_and_gguf_files_as_base(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    _input_error(TINY_SD, {TINY_SD.env: str(tmp_path / "notes.txt")}, "unsupported file type")
    (tmp_path / "t.gguf").write_bytes(b"GGUF")
    _input_error(TINY_FLUX, {TINY_FLUX.env: str(tmp_path / "t.gguf")},
                 "holds only the transformer", "set CONFORMANCE_TEST_FLUX_GGUF to it")


def test_unreadable_safetensors_names_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a safetensors file")
    _input_error(TINY_SD, {TINY_SD.env: str(bad)}, str(bad), "not a readable .safetensors")


def test_single_file_without_configs(tmp_path: Path) -> None:
    checkpoint = tmp_path / "sd.safetensors"
    save_file({"x": torch.zeros(1)}, str(checkpoint))
    env = {TINY_SD.env: str(checkpoint), "HF_HUB_CACHE": str(tmp_path / "hub")}
    _input_error(TINY_SD, env, "CONFORMANCE_TEST_SD_CONFIG", TINY_SD.repo_id, "hf download")
    env[TINY_SD.config_env] = str(tmp_path)
    _input_error(TINY_SD, env, "$CONFORMANCE_TEST_SD_CONFIG", "no model_index.json")


def test_empty_cache_means_unavailable_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable) as info:
        resolve(get_real_model("sd15"), {"HF_HUB_CACHE": str(tmp_path / "hub")})
    text = str(info.value)
    for fragment in ("CONFORMANCE_SD15", "stable-diffusion-v1-5/stable-diffusion-v1-5",
                     "hf download", str(tmp_path / "hub")):
        assert fragment in text, f"observed={text!r}, expected to contain {fragment!r}"


def test_partial_cache_without_model_index_is_unavailable(tmp_path: Path) -> None:
    source = tmp_path / "partial"
    (source / "unet").mkdir(parents=True)
    (source / "unet" / "config.json").write_text("{}")
    build_hub_cache(tmp_path / "hub", TINY_SD.repo_id, source)
    with pytest.raises(ModelUnavailable, match="conformance-test/tiny-sd"):
        resolve(TINY_SD, {"HF_HUB_CACHE": str(tmp_path / "hub")})


def test_gguf_variable_errors(tmp_path: Path) -> None:
    env = {TINY_FLUX.env: str(_require(TINY_FLUX_DIR))}
    _input_error(TINY_FLUX, {**env, "CONFORMANCE_TEST_FLUX_GGUF": str(tmp_path / "t.gguf")},
                 "$CONFORMANCE_TEST_FLUX_GGUF", "no such file")
    (tmp_path / "t.safetensors").write_bytes(b"")
    _input_error(TINY_FLUX, {**env, "CONFORMANCE_TEST_FLUX_GGUF": str(tmp_path / "t.safetensors")},
                 "expected a .gguf file of the transformer")


def test_load_failures_name_the_file(tmp_path: Path) -> None:
    wrong = tmp_path / "not-sd.safetensors"
    save_file({"unrelated.weight": torch.zeros(2, 2)}, str(wrong))
    resolved = resolve(TINY_SD, {TINY_SD.env: str(wrong), TINY_SD.config_env: str(TINY_SD_DIR)})
    call = r"StableDiffusionPipeline\.from_single_file failed"
    with pytest.raises(ConformanceInputError, match=call) as e:
        load(resolved)
    assert str(wrong) in str(e.value)

    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"GGUF" + bytes(60))
    resolved = resolve(TINY_FLUX, {TINY_FLUX.env: str(_require(TINY_FLUX_DIR)),
                                   "CONFORMANCE_TEST_FLUX_GGUF": str(garbage)})
    with pytest.raises(ConformanceInputError, match="cannot load as a GGUF") as e:
        load(resolved, gguf=resolved.gguf)
    assert str(garbage) in str(e.value)

    no_loader = RealModel("x", Family.SD, TINY_SD.env, "x/y", "NoSuchPipeline", "hf download x/y")
    checkpoint = ldm.export_single_file(TINY_SD_DIR, tmp_path / "sd.safetensors")
    resolved = resolve(no_loader, {TINY_SD.env: str(checkpoint),
                                   TINY_SD.config_env: str(TINY_SD_DIR)})
    with pytest.raises(ConformanceInputError, match="cannot load single-file checkpoints"):
        load(resolved)


# ----------------------------------------------------------------------------- ldm export


def export_cli(*argv: str) -> int:
    """Parse ``argv`` with a parser holding only ``export-single-file`` and run it."""
    parser = argparse.ArgumentParser(prog="conformance")
    sub = parser.add_subparsers(dest="command", required=True)
    ldm.register(sub)
    args = parser.parse_args(["export-single-file", *argv])
    return int(args.func(args))


def assert_cli_error(capsys: pytest.CaptureFixture[str], rc: int, *fragments: str) -> None:
    __tracebackhide__ = True
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    assert lines[0].startswith("conformance export-single-file: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], f"observed={lines[0]!r}, expected to contain {fragment!r}"


def test_export_cli_writes_and_needs_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sd.safetensors"
    assert export_cli(str(_require(TINY_SD_DIR)), "--out", str(out)) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    state = load_file(str(out))
    assert "model.diffusion_model.input_blocks.0.0.weight" in state
    assert "cond_stage_model.transformer.text_model.final_layer_norm.weight" in state
    assert state["first_stage_model.encoder.mid.attn_1.q.weight"].shape[2:] == (1, 1)
    before = out.stat().st_mtime_ns
    assert_cli_error(capsys, export_cli(str(TINY_SD_DIR), "--out", str(out)),
                     "already exists", "--force")
    assert out.stat().st_mtime_ns == before
    assert export_cli(str(TINY_SD_DIR), "--out", str(out), "--force") == 0


def test_export_cli_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "sd.safetensors")
    assert_cli_error(capsys, export_cli(str(TINY_SD_DIR), "--out", str(tmp_path / "sd.ckpt")),
                     "--out", "must end with .safetensors")
    nested = str(tmp_path / "no" / "x.safetensors")
    assert_cli_error(capsys, export_cli(str(TINY_SD_DIR), "--out", nested), "does not exist")
    (tmp_path / "dir.safetensors").mkdir()
    directory = str(tmp_path / "dir.safetensors")
    assert_cli_error(capsys, export_cli(str(TINY_SD_DIR), "--out", directory), "is a directory")
    assert_cli_error(capsys, export_cli(str(tmp_path / "missing"), "--out", out),
                     "not a directory")
    assert_cli_error(capsys, export_cli(str(tmp_path), "--out", out), "no model_index.json")
    assert_cli_error(capsys, export_cli(str(_require(TINY_FLUX_DIR)), "--out", out),
                     "FluxPipeline", "only StableDiffusionPipeline")
    root = tmp_path / "pickled"
    for name in ("unet", "vae", "text_encoder"):
        (root / name).mkdir(parents=True)
        (root / name / "config.json").write_text(
            (TINY_SD_DIR / name / "config.json").read_text()
        )
    (root / "model_index.json").write_text((TINY_SD_DIR / "model_index.json").read_text())
    (root / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x02.")
    assert_cli_error(capsys, export_cli(str(root), "--out", out),
                     "diffusion_pytorch_model.bin", "pickled checkpoints are not loaded")
    assert not Path(out).exists()
    with pytest.raises(SystemExit) as info:
        export_cli(str(TINY_SD_DIR))
    assert info.value.code == 2
    assert "--out" in capsys.readouterr().err


def test_ldm_maps_reject_unknown_tensors() -> None:
    config = json.loads((_require(TINY_SD_DIR) / "unet" / "config.json").read_text())
    with pytest.raises(ValueError, match=r"1 tensors have no place .*extra\.weight"):
        ldm.unet_to_ldm({"extra.weight": torch.zeros(1)}, config)
    with pytest.raises(ValueError, match="not part of a CLIP text model"):
        ldm.clip_to_ldm({"logit_scale": torch.zeros(1)})
    wrapped = ldm.clip_to_ldm({"text_model.final_layer_norm.bias": torch.zeros(1)})
    assert list(wrapped) == ["cond_stage_model.transformer.text_model.final_layer_norm.bias"]


# ----------------------------------------------------------------------------- declared models


def _declared(table: dict[str, Any], base: Path) -> Any:
    from conformance.models.specs import parse_model

    return parse_model("mine", table, base / "cases.toml", base)


def test_cached_snapshot_by_revision(tmp_path: Path) -> None:
    from conformance.models.sources import _cached_snapshot

    snapshot = build_hub_cache(tmp_path / "hub", TINY_SD.repo_id, _require(TINY_SD_DIR))
    cache = tmp_path / "hub"
    assert _cached_snapshot(TINY_SD.repo_id, cache) == snapshot
    assert _cached_snapshot(TINY_SD.repo_id, cache, "main") == snapshot
    assert _cached_snapshot(TINY_SD.repo_id, cache, snapshot.name) == snapshot
    assert _cached_snapshot(TINY_SD.repo_id, cache, "v9") is None
    assert _cached_snapshot("someone/else", cache) is None


def test_resolve_declared_layouts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from conformance.models.sources import resolve_declared

    _require(TINY_SD_DIR)
    resolved = resolve_declared(_declared({"source": str(TINY_SD_DIR)}, tmp_path))
    assert (resolved.layout, resolved.path, resolved.pipeline_class) == (
        Layout.DIRECTORY, TINY_SD_DIR, None)
    (tmp_path / "unet.gguf").write_bytes(b"GGUF")
    resolved = resolve_declared(_declared({"source": "unet.gguf", "base": str(TINY_SD_DIR)},
                                          tmp_path))
    assert (resolved.layout, resolved.path, resolved.gguf) == (
        Layout.DIRECTORY, TINY_SD_DIR, tmp_path / "unet.gguf")
    checkpoint = ldm.export_single_file(TINY_SD_DIR, tmp_path / "tiny-sd.safetensors")
    resolved = resolve_declared(_declared(
        {"source": checkpoint.name, "config": str(TINY_SD_DIR)}, tmp_path))
    assert (resolved.layout, resolved.path, resolved.config) == (
        Layout.SINGLE_FILE, checkpoint, TINY_SD_DIR)
    assert resolved.model.pipeline_class == "StableDiffusionPipeline"

    spec = _declared({"source": "hf:someone/tiny@v2", "pipeline": "StableDiffusionPipeline"},
                     tmp_path)
    with pytest.raises(ModelUnavailable, match=r"hf download someone/tiny --revision v2"):
        resolve_declared(spec)
    snapshot = build_hub_cache(tmp_path / "hub", "someone/tiny", TINY_SD_DIR)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    spec = _declared({"source": "hf:someone/tiny"}, tmp_path)
    resolved = resolve_declared(spec)
    assert (resolved.layout, resolved.path) == (Layout.HF_CACHE, snapshot)
    with pytest.raises(ModelUnavailable, match="base hf:someone/other"):
        resolve_declared(_declared({"source": "unet.gguf", "base": "hf:someone/other",
                                    "pipeline": "StableDiffusionPipeline"}, tmp_path))


def test_load_with_a_declared_class_and_components(tmp_path: Path) -> None:
    from diffusers import AutoencoderKL

    from conformance.models.sources import resolve_declared

    _require(TINY_SD_DIR)
    spec = _declared({"source": str(TINY_SD_DIR),
                      "pipeline": "StableDiffusionImg2ImgPipeline"}, tmp_path)
    resolved = resolve_declared(spec)
    assert resolved.pipeline_class == "StableDiffusionImg2ImgPipeline"
    vae = AutoencoderKL.from_pretrained(str(TINY_SD_DIR / "vae"))
    pipe = load(resolved, torch.float32, components={"vae": vae})
    assert type(pipe).__name__ == "StableDiffusionImg2ImgPipeline" and pipe.vae is vae
