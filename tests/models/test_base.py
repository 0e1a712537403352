"""Every model folder the suite loads gets the same bounds, whichever way it was named.

A fixtures folder given by ``$CONFORMANCE_FIXTURES`` (or a ``fixtures_dir`` argument, a
``--base`` folder, the Hugging Face cache, a case file's folder) is checked as a declared
model is: each ``config.json`` and ``scheduler_config.json`` within the size bounds of
:func:`conformance.models.check_config`, safetensors only, shard indexes inside the folder,
its ``checksums.json`` where there is one; all before any weights or tensors are made. A
config that asks for a million UNet layers is one line naming the file, the key and what is
accepted, at once (it hung past 90 s at 5.4 GB before).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conformance import models as models_module
from conformance.errors import ConformanceInputError
from conformance.models import MODELS, FixtureIntegrityError, checksums
from conformance.models import base as models_base
from conformance.models.sources import MAX_COMPONENTS, check_model_folder
from tests.limits import time_limit

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"

#: (file, key, bomb value, what the message says is accepted)
BOMBS = [
    ("unet/config.json", "layers_per_block", 1_000_000,
     "1000000 is out of range; accepted: an integer 1..16 or an array of at most 8 of them"),
    ("scheduler/scheduler_config.json", "num_train_timesteps", 500_000_000,
     "500000000 is out of range; accepted: an integer 1..100000"),
    ("text_encoder/config.json", "vocab_size", 10**9,
     "1000000000 is out of range; accepted: an integer 1..300000"),
    ("vae/config.json", "block_out_channels", [64] * 9,
     "an array of 9 entries; accepted: an integer 1..8192 or an array of at most 8 of them"),
]
BOMB_IDS = [key for _, key, _, _ in BOMBS]


def fixtures_with(root: Path, rel: str, key: str, value: Any, model: str = "tiny-sd") -> Path:
    """A fixtures folder at ``root`` holding a copy of ``model`` whose ``rel`` sets ``key``
    to ``value``; returns the edited config's path."""
    shutil.copytree(FIXTURES / model, root / model)
    config = root / model / rel
    data = json.loads(config.read_text())
    data[key] = value
    config.write_text(json.dumps(data))
    return config


def expected(config: Path, key: str, accepted: str) -> str:
    return f"{config}: key {key!r}: {accepted}"


@pytest.mark.parametrize(("rel", "key", "value", "accepted"), BOMBS, ids=BOMB_IDS)
def test_a_bomb_in_a_conformance_fixtures_folder_is_one_line_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rel: str, key: str, value: Any,
        accepted: str) -> None:
    from diffusers import DiffusionPipeline  # noqa: F401  (imported outside the time limit)

    from conformance.generate import Runner

    config = fixtures_with(tmp_path, rel, key, value)
    monkeypatch.setenv(models_module.FIXTURES_ENV, str(tmp_path))
    with time_limit(20), pytest.raises(ConformanceInputError) as info:
        Runner("cpu").pipeline("tiny-sd", "fp32")
    assert str(info.value) == expected(config, key, accepted)


def test_checksums_that_vouch_for_a_bomb_do_not_let_it_through(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = fixtures_with(tmp_path, "unet/config.json", "layers_per_block", 1_000_000)
    checksums.write_checksums(tmp_path, ["tiny-sd"])
    monkeypatch.setattr(models_base, "_VERIFIED", {})
    with time_limit(20), pytest.raises(ConformanceInputError) as info:
        MODELS["tiny-sd"].verified_path(tmp_path)
    assert str(info.value) == expected(config, "layers_per_block", BOMBS[0][3])


def test_checksums_are_still_checked_first(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A fixture that differs from the checksums beside it says so (restore it), before
    its configs are read."""
    shutil.copytree(FIXTURES / "tiny-sd", tmp_path / "tiny-sd")
    checksums.write_checksums(tmp_path, ["tiny-sd"])
    monkeypatch.setattr(models_base, "_VERIFIED", {})
    (tmp_path / "tiny-sd" / "unet" / "config.json").write_text('{"layers_per_block": 1000000}')
    with pytest.raises(FixtureIntegrityError, match=r"unet/config\.json: sha256"):
        MODELS["tiny-sd"].verified_path(tmp_path)


def test_the_shipped_fixtures_pass_the_bounds() -> None:
    for name in ("tiny-sd", "tiny-flux", "tiny-sd-vae-mse"):
        assert check_model_folder(FIXTURES / name, name) is None
    assert MODELS["tiny-flux"].verified_path(FIXTURES) == FIXTURES / "tiny-flux"


def test_a_vae_only_fixtures_folder_is_checked_too(tmp_path: Path) -> None:
    """``conformance vae`` reads ``<fixtures>/<model>/vae`` without a model_index.json."""
    from conformance.vae import vae_dir

    (tmp_path / "tiny-sd").mkdir()
    shutil.copytree(FIXTURES / "tiny-sd" / "vae", tmp_path / "tiny-sd" / "vae")
    assert vae_dir("tiny-sd", tmp_path) == tmp_path / "tiny-sd" / "vae"
    config = tmp_path / "tiny-sd" / "vae" / "config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"latent_channels": 10**6}))
    with pytest.raises(ConformanceInputError) as info:
        vae_dir("tiny-sd", tmp_path)
    assert str(info.value) == expected(config, "latent_channels",
                                       "1000000 is out of range; accepted: an integer 1..1024")


def test_a_component_of_pickles_only_is_refused_without_a_model_index(tmp_path: Path) -> None:
    (tmp_path / "m" / "vae").mkdir(parents=True)
    pickle = tmp_path / "m" / "vae" / "diffusion_pytorch_model.bin"
    pickle.write_bytes(b"\x80\x04")
    with pytest.raises(ConformanceInputError) as info:
        check_model_folder(tmp_path / "m", "model m")
    assert str(info.value) == (f"{pickle}: pickled checkpoints are not loaded: convert to "
                               "safetensors (found via model m)")


def test_a_folder_of_too_many_components_is_refused(tmp_path: Path) -> None:
    for i in range(MAX_COMPONENTS + 1):
        (tmp_path / "m" / f"c{i}").mkdir(parents=True)
    with pytest.raises(ConformanceInputError) as info:
        check_model_folder(tmp_path / "m", "model m")
    assert str(info.value) == (f"{tmp_path / 'm'}: {MAX_COMPONENTS + 1} component folders and "
                               f"no model_index.json; a model folder has at most "
                               f"{MAX_COMPONENTS}")
    shutil.rmtree(tmp_path / "m" / "c0")
    assert check_model_folder(tmp_path / "m", "model m") is None


def test_a_folder_that_is_not_there_is_left_to_the_caller(tmp_path: Path) -> None:
    from conformance.generate import ModelUnavailable, Runner

    assert check_model_folder(tmp_path / "absent", "x") is None
    (tmp_path / "file").write_bytes(b"")
    assert check_model_folder(tmp_path / "file", "x") is None
    with pytest.raises(ModelUnavailable, match=r"model_index\.json missing"):
        Runner("cpu", fixtures_dir=tmp_path).pipeline("tiny-sd", "fp32")


def test_a_pipeline_folder_reports_its_variant(tmp_path: Path) -> None:
    root = tmp_path / "sd"
    shutil.copytree(FIXTURES / "tiny-sd", root)
    weights = root / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_name("diffusion_pytorch_model.fp16.safetensors"))
    assert check_model_folder(root, "sd") == "fp16"
    assert check_model_folder(FIXTURES / "tiny-sd", "sd") is None


def test_a_bomb_in_the_hugging_face_cache_is_one_line(tmp_path: Path) -> None:
    from conformance.models.sources import resolve
    from tests.models.test_sources import TINY_SD, build_hub_cache

    source = tmp_path / "src"
    fixtures_with(source, "scheduler/scheduler_config.json", "num_train_timesteps", 500_000_000)
    snapshot = build_hub_cache(tmp_path / "hub", TINY_SD.repo_id, source / "tiny-sd")
    with time_limit(20), pytest.raises(ConformanceInputError) as info:
        resolve(TINY_SD, {"HF_HUB_CACHE": str(tmp_path / "hub")})
    assert str(info.value) == expected(snapshot / "scheduler" / "scheduler_config.json",
                                       "num_train_timesteps", BOMBS[1][3])


def _lora(base: Path, out: Path) -> Any:
    from fixtures.build.lora_fit import LoraRecipe, fit_lora

    return fit_lora(LoraRecipe(steps=1), base, out)


def _finetune(base: Path, out: Path) -> Any:
    from fixtures.build.train import RECIPES, finetune_component

    return finetune_component(RECIPES["tiny-sd-vae-mse"], out, base)


def _montage(base: Path, out: Path) -> Any:
    from fixtures.build.montage import load

    return load(base.name, base.parent)


@pytest.mark.parametrize("command", [_lora, _finetune, _montage],
                         ids=["lora-fit", "train-finetune", "montage"])
def test_the_model_commands_check_their_base_folder(
        tmp_path: Path, command: Callable[[Path, Path], Any]) -> None:
    config = fixtures_with(tmp_path, "vae/config.json", "layers_per_block", 1_000_000)
    with time_limit(20), pytest.raises(ConformanceInputError) as info:
        command(tmp_path / "tiny-sd", tmp_path / "out")
    assert str(info.value) == expected(config, "layers_per_block", BOMBS[0][3])
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def unet_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bounds") / "m"
    shutil.copytree(FIXTURES / "tiny-sd" / "unet", root / "unet")
    return root


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.integers(-(10**30) + 1, 10**30 - 1), st.integers(-2, 20), st.booleans(),
                 st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=5)))
def test_any_layers_per_block_outside_the_bounds_is_refused_by_name(
        unet_folder: Path, value: Any) -> None:
    """For every value: accepted exactly when it is an integer 1..16, else one line naming
    the file, the key and what is accepted."""
    config = unet_folder / "unet" / "config.json"
    data = json.loads((FIXTURES / "tiny-sd" / "unet" / "config.json").read_text())
    with tempfile.NamedTemporaryFile("w", dir=config.parent, delete=False) as fh:
        json.dump(data | {"layers_per_block": value}, fh)
    Path(fh.name).replace(config)
    ok = type(value) is int and 1 <= value <= 16
    if ok:
        assert check_model_folder(unet_folder, "m") is None
        return
    with pytest.raises(ConformanceInputError) as info:
        check_model_folder(unet_folder, "m")
    text = str(info.value)
    assert text.startswith(f"{config}: key 'layers_per_block': ")
    assert text.endswith("; accepted: an integer 1..16 or an array of at most 8 of them")
    assert "\n" not in text and len(text) < 300


def test_a_conformance_run_on_a_bomb_reports_the_line_and_goes_on(
        run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pytest plugin: each item of the model is an error with the line, quickly, and
    the other model's items still run."""
    fixtures = tmp_path / "fx"
    config = fixtures_with(fixtures, "unet/config.json", "layers_per_block", 1_000_000)
    shutil.copytree(FIXTURES / "tiny-flux", fixtures / "tiny-flux")
    monkeypatch.setenv(models_module.FIXTURES_ENV, str(fixtures))
    with time_limit(240):
        result = run("-k", "dot and fp32", modules=("test_repeatability.py",))
    out = result.stdout.str()
    line = expected(config, "layers_per_block", BOMBS[0][3])
    assert line in out and "Traceback" not in out
    outcomes = json.loads(result.results_path.read_text())["outcomes"]
    status = {o["id"]: (o["status"], o["message"]) for o in outcomes}
    assert status["tiny-sd/dot/32x32/fp32"] == ("error", line)
    assert status["tiny-flux/flux-dot/32x32/fp32"][0] == "passed"


def test_an_integer_longer_than_the_json_reader_takes_is_refused_before_the_bounds(
        unet_folder: Path) -> None:
    """Past 30 digits the JSON reader refuses the number itself (parsing it costs time
    quadratic in its length), naming the file and the cap."""
    config = unet_folder / "unet" / "config.json"
    config.write_text('{"layers_per_block": 1' + "0" * 30 + "}")
    with pytest.raises(ConformanceInputError) as info:
        check_model_folder(unet_folder, "m")
    assert str(info.value) == (f"{config}: model config: key layers_per_block: an integer of "
                               "31 digits; at most 30 digits are read")
