"""Models declared in case files (``[models.NAME]``), the built-ins as the same data, and
case variants (LoRA adapters, VAE swaps)."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save_file

from conformance.cases import LORA_WEIGHTS, LoraRef, load_cases, parse_cases
from conformance.errors import CaseFileError, ConformanceInputError
from conformance.models import MODELS, Family, ModelUnavailable, get_model
from conformance.models.specs import (
    BUILTIN_TABLES,
    MODEL_KEYS,
    SourceKind,
    builtin_models,
    parse_hf,
    parse_model,
    pipeline_class,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
TINY_SD = FIXTURES / "tiny-sd"
LORA_DIR = FIXTURES / "tiny-sd-lora"
VAE_MSE = FIXTURES / "tiny-sd-vae-mse"
VARIANTS = ROOT / "conformance" / "cases-variants.toml"

CASE = """
[cases.one]
model = "{model}"
prompt = "a red circle on a white background"
seed = 1
steps = 2
scheduler = "euler"
guidance_scale = 4.0
resolutions = ["64x64"]
precisions = ["fp32"]
"""


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """Offline, and a Hugging Face cache of this test's own (empty unless a test fills it)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    yield


def write(folder: Path, model_table: str, case: str | None = None, model: str = "mine") -> Path:
    path = folder / "cases.toml"
    text = "schema_version = 1\n" + textwrap.dedent(model_table) + "\n" + (
        case if case is not None else CASE.format(model=model))
    path.write_text(text)
    return path


def model_error(tmp_path: Path, table: str, *needles: str, name: str = "mine") -> str:
    path = write(tmp_path, table, model=name)
    with pytest.raises(CaseFileError) as err:
        load_cases(path)
    message = str(err.value)
    assert str(path) in message and f"models[{name!r}]" in message, message
    for needle in needles:
        assert needle in message, message
    return message


def tiny_sd_table(extra: str = "") -> str:
    return f'[models.mine]\nsource = "{TINY_SD}"\n' + extra


def safetensors_file(path: Path) -> Path:
    save_file({"x": torch.zeros(2)}, str(path))
    return path


# ----------------------------------------------------------------------------- built-ins


def test_builtins_are_parsed_from_tables_of_the_case_file_shape() -> None:
    assert list(MODELS) == list(BUILTIN_TABLES) == ["tiny-sd", "tiny-flux", "sd15", "sdxl",
                                                     "flux-schnell"]
    assert builtin_models() == MODELS
    for name, spec in MODELS.items():
        assert spec.builtin and spec.declared_in is None and get_model(name) is spec
        assert set(BUILTIN_TABLES[name]) <= {*MODEL_KEYS, "real"}
        assert issubclass(pipeline_class(str(spec.pipeline)), object)
    assert MODELS["tiny-sd"].source.kind is SourceKind.FIXTURE
    assert MODELS["tiny-sd"].path(FIXTURES) == TINY_SD
    assert (MODELS["sd15"].source.kind, MODELS["sd15"].real) == (SourceKind.REAL, "sd15")
    assert MODELS["tiny-flux"].family is Family.FLUX and MODELS["sdxl"].family is Family.SD
    assert (MODELS["tiny-sd"].resolution_multiple, MODELS["sdxl"].min_side) == (16, 512)


def test_builtin_only_keys_and_schemes_are_refused_in_case_files(tmp_path: Path) -> None:
    model_error(tmp_path, '[models.mine]\nsource = "fixture:tiny-sd"\n', "models['mine'].source",
                "fixture:")
    model_error(tmp_path, tiny_sd_table('real = "sd15"\n'),
                "models['mine'].real is used by the built-in models only")


def test_a_case_file_cannot_redefine_a_builtin(tmp_path: Path) -> None:
    message = model_error(tmp_path, f'[models.tiny-sd]\nsource = "{TINY_SD}"\n', "built-in",
                          name="tiny-sd")
    assert "another name" in message


# ----------------------------------------------------------------------------- sources


def test_directory_source_relative_to_the_case_file(tmp_path: Path) -> None:
    case_dir = tmp_path / "cases"
    case_dir.mkdir()
    rel = Path("..") / Path(*([".."] * len(tmp_path.parts[1:]))) / TINY_SD.relative_to("/")
    cases = load_cases(write(case_dir, f'[models.mine]\nsource = "{rel.as_posix()}"\n'))
    spec = cases.cases[0].spec
    assert spec is not None and cases.cases[0].model_spec is spec
    assert spec.source.kind is SourceKind.DIRECTORY
    assert spec.source.path.resolve() == TINY_SD.resolve()
    assert (spec.pipeline, spec.family) == ("StableDiffusionPipeline", Family.SD)
    assert (spec.resolution_multiple, spec.min_side, spec.max_side) == (8, 64, 2048)
    assert spec.declared_in == case_dir / "cases.toml" and not spec.builtin
    item = cases.items()[0]
    assert item.id == "mine/one/64x64/fp32" and item.model == "mine"


def test_single_file_source_needs_config(tmp_path: Path) -> None:
    ckpt = safetensors_file(tmp_path / "m.safetensors")
    model_error(tmp_path, f'[models.mine]\nsource = "{ckpt.name}"\n', "models['mine'].config",
                "missing")
    cases = load_cases(write(tmp_path, f'[models.mine]\nsource = "m.safetensors"\n'
                                       f'config = "{TINY_SD}"\n'))
    source = cases.cases[0].spec.source
    assert (source.kind, source.path, source.config.path) == (
        SourceKind.SINGLE_FILE, ckpt, TINY_SD)
    assert cases.cases[0].spec.pipeline == "StableDiffusionPipeline"
    model_error(tmp_path, '[models.mine]\nsource = "m.safetensors"\nconfig = "nowhere"\n',
                "models['mine'].config", "nowhere")


def test_gguf_source_needs_base(tmp_path: Path) -> None:
    (tmp_path / "unet.gguf").write_bytes(b"GGUF")
    model_error(tmp_path, '[models.mine]\nsource = "unet.gguf"\n', "models['mine'].base", "missing")
    cases = load_cases(write(tmp_path, f'[models.mine]\nsource = "unet.gguf"\n'
                                       f'base = "{TINY_SD}"\n'))
    source = cases.cases[0].spec.source
    assert (source.kind, source.base.path) == (SourceKind.GGUF, TINY_SD)


def test_config_and_base_only_with_their_source_kind(tmp_path: Path) -> None:
    model_error(tmp_path, tiny_sd_table(f'config = "{TINY_SD}"\n'), "models['mine'].config",
                "single-file source only")
    model_error(tmp_path, tiny_sd_table(f'base = "{TINY_SD}"\n'), "models['mine'].base",
                "gguf source only")


def test_hf_source_not_in_the_cache(tmp_path: Path) -> None:
    message = model_error(tmp_path, '[models.mine]\nsource = "hf:someone/some-model"\n',
                          "models['mine'].pipeline", "not in the Hugging Face cache")
    assert "pipeline = " in message
    cases = load_cases(write(tmp_path, '[models.mine]\nsource = "hf:someone/some-model@v1.0"\n'
                                       'pipeline = "StableDiffusionPipeline"\n'))
    source = cases.cases[0].spec.source
    assert (source.kind, source.repo_id, source.revision) == (
        SourceKind.HF, "someone/some-model", "v1.0")


@pytest.mark.parametrize("spec", [
    "hf:", "hf:noslash", "hf:a/b/c", "hf:a--b/c", "hf:a/b@", "hf:a/../b", "hf:a/b@x..y",
    "hf:-a/b", "hf:a/b c", "hf:a/b.git", "hf:a/b@rev with space",
])
def test_bad_hf_specs(tmp_path: Path, spec: str) -> None:
    assert parse_hf(spec) is None
    model_error(tmp_path, f'[models.mine]\nsource = "{spec}"\npipeline = "FluxPipeline"\n',
                "models['mine'].source", "not a Hugging Face spec")


def test_good_hf_specs() -> None:
    assert parse_hf("hf:black-forest-labs/FLUX.1-schnell") == (
        "black-forest-labs/FLUX.1-schnell", None)
    assert parse_hf("hf:a/b@refs/pr/1") == ("a/b", "refs/pr/1")
    assert parse_hf("hf:a/b@" + "0" * 40) == ("a/b", "0" * 40)


def test_missing_path(tmp_path: Path) -> None:
    model_error(tmp_path, '[models.mine]\nsource = "nowhere/model"\n', "models['mine'].source",
                str(tmp_path / "nowhere" / "model"), "no such file or directory")


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".bin", ".pkl"])
def test_pickled_checkpoints_are_refused(tmp_path: Path, suffix: str) -> None:
    (tmp_path / f"model{suffix}").write_bytes(b"\x80\x04")
    model_error(tmp_path, f'[models.mine]\nsource = "model{suffix}"\n', "models['mine'].source",
                "pickled")


def test_folder_of_pickles_and_folder_without_index(tmp_path: Path) -> None:
    (tmp_path / "pk").mkdir()
    (tmp_path / "pk" / "model.bin").write_bytes(b"\x80")
    model_error(tmp_path, '[models.mine]\nsource = "pk"\n', "models['mine'].source", "pickled")
    (tmp_path / "empty").mkdir()
    model_error(tmp_path, '[models.mine]\nsource = "empty"\n', "no model_index.json")


def test_unsupported_and_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"x")
    model_error(tmp_path, '[models.mine]\nsource = "model.onnx"\n', "unsupported file type")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    model_error(tmp_path, f'[models.mine]\nsource = "bad.safetensors"\nconfig = "{TINY_SD}"\n',
                "models['mine'].source", "not a readable .safetensors")


def test_source_is_required_and_a_string(tmp_path: Path) -> None:
    model_error(tmp_path, '[models.mine]\npipeline = "FluxPipeline"\n',
                "key models['mine'].source is missing: it must be a pipeline directory, a "
                ".safetensors file with config, a .gguf file with base, or "
                "hf:<owner>/<name>[@revision]")
    model_error(tmp_path, '[models.mine]\nsource = 3\n',
                "models['mine'].source must be one line of printable text")
    model_error(tmp_path, '[models.mine]\nsource = ""\n', "models['mine'].source must be one line",
                "not blank", "not an empty string")
    path = write(tmp_path, '[models]\nmine = 3\n')
    with pytest.raises(CaseFileError, match=r"models\['mine'\] must be a \[models\.NAME\] table, "
                       r"not a number \(3\)"):
        load_cases(path)
    path = write(tmp_path, 'models = 3\n')
    with pytest.raises(CaseFileError, match=(
            r"models must be a table of at most 256 \[models\.NAME\] tables")):
        load_cases(path)


def test_a_builtin_table_is_refused_as_the_built_in_models() -> None:
    def refused(table: dict[str, Any]) -> str:
        with pytest.raises(ConformanceInputError) as err:
            parse_model("x", table, "specs.py:BUILTIN_TABLES", Path("."), builtin=True,
                        error=ConformanceInputError)
        return str(err.value)

    fixture = {"source": "fixture:tiny-sd", "pipeline": "StableDiffusionPipeline"}
    assert refused({**fixture, "real": "sd15"}) == (
        "specs.py:BUILTIN_TABLES: built-in models: models['x'].real: must name a real model "
        "and go with an hf: source")
    assert refused({**fixture, "vea": 1}).startswith(
        "specs.py:BUILTIN_TABLES: built-in models: unknown key models['x'].vea (accepted: "
        "source, config, ")
    assert refused({**fixture, "vea": 1}).endswith(", description, real)")
    assert refused({**fixture, "real": 3}).endswith(
        "models['x'].real must be one line of printable text, not blank, of at most 64 "
        "characters, not a number (3)")


@pytest.mark.parametrize(("extra", "message"), [
    ('pipeline = "' + "P" * 129 + '"\n',
     "models['mine'].pipeline must be one line of printable text, not blank, of at most 128"),
    ('description = "a\\u001bb"\n', "models['mine'].description must be one line of "
     "printable text of at most 200 characters, not a string ('a\\x1bb')"),
    ("scheduler = 1\n", "models['mine'].scheduler must be one line of printable text"),
    ('family = ["sd"]\n', "models['mine'].family must be one line of printable text"),
    ("config = 1\n", "models['mine'].config must be one line of printable text"),
])
def test_model_keys_are_declared_types(tmp_path: Path, extra: str, message: str) -> None:
    model_error(tmp_path, tiny_sd_table(extra), message)


def test_a_model_without_a_description_is_described_by_its_source(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 200)
    shutil.copytree(TINY_SD, deep)
    spec = load_cases(write(tmp_path, f'[models.mine]\nsource = "{deep}"\n')).cases[0].spec
    assert spec.description == f"StableDiffusionPipeline from {deep}"


@pytest.mark.parametrize("name", ["Mine", "-x", "a_b", "x" * 65, "a b"])
def test_model_names(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, f'[models."{name}"]\nsource = "{TINY_SD}"\n', model=name)
    with pytest.raises(CaseFileError, match="lower-case letters"):
        load_cases(path)


_KEY_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='"\\')


@given(st.text(_KEY_CHARS, min_size=1, max_size=20).filter(
    lambda k: k not in MODEL_KEYS and k != "real"))
def test_any_unknown_model_key_is_refused_naming_it(key: str) -> None:
    table = {"source": "hf:a/b", "pipeline": "FluxPipeline", key: 1}
    with pytest.raises(CaseFileError) as err:
        parse_model("mine", table, Path("cases.toml"), Path("."))
    message = str(err.value)
    assert message.startswith("cases.toml: case file: unknown key models['mine'].")
    assert repr(key) in message or key in message


# ----------------------------------------------------------------------------- pipeline, family


@pytest.mark.parametrize("name", ["AutoencoderKL", "os", "DiffusionPipeline", "NotAClass",
                                  "torch.nn.Module", "UNet2DConditionModel", "__import__"])
def test_pipeline_must_be_a_diffusers_pipeline(tmp_path: Path, name: str) -> None:
    model_error(tmp_path, tiny_sd_table(f'pipeline = "{name}"\n'), "models['mine'].pipeline",
                "not a diffusers pipeline class" if "." not in name else "not a class name")


def test_model_index_naming_a_non_pipeline(tmp_path: Path) -> None:
    folder = tmp_path / "weird"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    model_error(tmp_path, '[models.mine]\nsource = "weird"\n', "models['mine'].source",
                "model_index.json names", "not a diffusers pipeline")


def test_family_is_derived_and_checked(tmp_path: Path) -> None:
    spec = parse_model("m", {"source": "hf:a/b", "pipeline": "StableDiffusionXLPipeline",
                             "family": "sd"}, "f.toml", tmp_path)
    assert spec.family is Family.SD
    assert parse_model("m", {"source": "hf:a/b", "pipeline": "FluxImg2ImgPipeline"}, "f.toml",
                       tmp_path).family is Family.FLUX
    model_error(tmp_path, tiny_sd_table('family = "flux"\n'), "models['mine'].family",
                "sd pipeline")
    model_error(tmp_path, tiny_sd_table('family = "dit"\n'),
                "models['mine'].family: 'dit' is not one of sd, flux")
    model_error(tmp_path, '[models.mine]\nsource = "hf:a/b"\npipeline = "PixArtSigmaPipeline"\n',
                "models['mine'].family", "cannot be derived")
    spec = parse_model("m", {"source": "hf:a/b", "pipeline": "PixArtSigmaPipeline",
                             "family": "sd"}, "f.toml", tmp_path)
    assert (spec.family, spec.pipeline) == (Family.SD, "PixArtSigmaPipeline")


# ----------------------------------------------------------------------------- components


def test_model_vae_override(tmp_path: Path) -> None:
    spec = load_cases(write(tmp_path, tiny_sd_table(f'vae = "{TINY_SD / "vae"}"\n'))).cases[0].spec
    assert spec.vae == TINY_SD / "vae"
    model_error(tmp_path, tiny_sd_table('vae = "missing"\n'), "models['mine'].vae",
                "no such directory")
    (tmp_path / "novae").mkdir()
    model_error(tmp_path, tiny_sd_table('vae = "novae"\n'), "models['mine'].vae", "no config.json")
    (tmp_path / "novae" / "model.pt").write_bytes(b"\x80")
    model_error(tmp_path, tiny_sd_table('vae = "novae"\n'), "models['mine'].vae", "pickled")
    model_error(tmp_path, tiny_sd_table('vae = 1\n'),
                "models['mine'].vae must be one line of printable text")


def test_model_scheduler_name_or_folder(tmp_path: Path) -> None:
    case = CASE.format(model="mine").replace('scheduler = "euler"\n', "")
    cases = load_cases(write(tmp_path, tiny_sd_table('scheduler = "ddim"\n'), case))
    assert cases.cases[0].scheduler == "ddim"
    assert cases.cases[0].spec.default_scheduler == "ddim"
    with pytest.raises(CaseFileError, match=r"key cases\['one'\]\.scheduler is missing"):
        load_cases(write(tmp_path, tiny_sd_table(), case))
    model_error(tmp_path, tiny_sd_table('scheduler = "flow-euler"\n'), "models['mine'].scheduler",
                "does not fit the sd family")
    spec = load_cases(write(tmp_path, tiny_sd_table(f'scheduler = "{TINY_SD / "scheduler"}"\n'))
                      ).cases[0].spec
    assert spec.scheduler_config == TINY_SD / "scheduler" and spec.default_scheduler is None
    model_error(tmp_path, tiny_sd_table('scheduler = "nope"\n'), "models['mine'].scheduler",
                "neither a scheduler name")


def test_resolution_limits(tmp_path: Path) -> None:
    cases = load_cases(write(tmp_path, tiny_sd_table(
        "resolution_multiple = 16\nmin_side = 32\nmax_side = 128\n")))
    spec = cases.cases[0].spec
    assert (spec.resolution_multiple, spec.min_side, spec.max_side) == (16, 32, 128)
    for extra, needle in (
        ("resolution_multiple = 0\n",
         "models['mine'].resolution_multiple must be an integer in 1..1024, not a number (0)"),
        ("min_side = true\n", "models['mine'].min_side must be an integer in 1..16384"),
        ("max_side = '64'\n", "max_side must be an integer in 1..16384, not a string ('64')"),
        ("min_side = 512\nmax_side = 256\n", "above max_side"),
        ("resolution_multiple = 64\nmax_side = 32\nmin_side = 16\n", "no side fits"),
        ("max_side = 99999\n", "max_side must be an integer in 1..16384, not a number (99999)"),
    ):
        model_error(tmp_path, tiny_sd_table(extra), needle)
    case = CASE.format(model="mine").replace('"64x64"', '"48x48"')
    path = write(tmp_path, tiny_sd_table("resolution_multiple = 32\nmin_side = 32\n"), case)
    with pytest.raises(CaseFileError, match="not a multiple of 32, which mine requires"):
        load_cases(path)


def test_unknown_model_names_the_table_to_add(tmp_path: Path) -> None:
    with pytest.raises(CaseFileError, match=r"unknown model 'other'.*\[models\.NAME\]"):
        load_cases(write(tmp_path, tiny_sd_table(), model="other"))


def test_filter_problem_uses_declared_limits(tmp_path: Path) -> None:
    from conformance.cases import Resolution

    cases = load_cases(write(tmp_path, tiny_sd_table("max_side = 64\nmin_side = 32\n")))
    problem = cases.filter_problem(None, None, [Resolution(128, 128)])
    assert problem and "no selected model can take it" in problem and "mine" in problem


# ----------------------------------------------------------------------------- case variants


def lora_case(body: str, extra: str = "") -> str:
    return CASE.format(model="tiny-sd") + body + "\n" + extra


def case_error(tmp_path: Path, body: str, *needles: str) -> None:
    path = write(tmp_path, "", lora_case(body))
    with pytest.raises(CaseFileError) as err:
        load_cases(path)
    message = str(err.value)
    assert str(path) in message and "cases['one']" in message, message
    for needle in needles:
        assert needle in message, message


def test_lora_key(tmp_path: Path) -> None:
    file = safetensors_file(tmp_path / "a.safetensors")
    (tmp_path / "folder").mkdir()
    safetensors_file(tmp_path / "folder" / LORA_WEIGHTS)
    case = load_cases(write(tmp_path, "", lora_case(
        'lora = [{ path = "a.safetensors", scale = 0.5 }, { path = "folder" }]'))).cases[0]
    assert case.lora == (LoraRef(file, 0.5), LoraRef(tmp_path / "folder" / LORA_WEIGHTS, 1.0))
    params = case.generation_params()
    digest = params["lora"].split("+")[0]
    assert digest.endswith("@0.5") and len(digest.split("@")[0]) == 16
    assert params["lora"].endswith("@1")


@pytest.mark.parametrize(("body", "needles"), [
    ('lora = "a.safetensors"', ("lora must be a list of 1 to 8 tables",)),
    ("lora = []", ("lora must be a list of 1 to 8 tables", "not an empty list")),
    ("lora = [1]", ("lora[0] must be a { path",)),
    ('lora = [{ path = "a.safetensors", weight = 1 }]',
     ("unknown key cases['one'].lora[0].weight",)),
    ("lora = [{ scale = 1 }]", ("key cases['one'].lora[0].path is missing",)),
    ('lora = [{ path = "none.safetensors" }]', ("no such file",)),
    ('lora = [{ path = "a.pt" }]', ("pickled",)),
    ('lora = [{ path = "a.txt" }]', ("expected a .safetensors",)),
    ('lora = [{ path = "bad.safetensors" }]', ("not a readable .safetensors",)),
    ('lora = [{ path = "a.safetensors", scale = 9 }]',
     ("lora[0].scale must be a number in -8.0..8.0",)),
    ('lora = [{ path = "a.safetensors", scale = "1" }]', ("lora[0].scale", "number")),
    ('lora = [{ path = "a.safetensors" }, { path = "a.safetensors" }]', ("twice",)),
    ('lora = [{ path = "empty" }]', (LORA_WEIGHTS,)),
    ("lora = [" + ", ".join(['{ path = "a.safetensors" }'] * 9) + "]", ("1 to 8",)),
    ('lora = [{ path = "a.safetensors" }]\nprecisions = ["fp32", "gguf-q8_0"]',
     ("gguf-q8_0", "fp32, bf16 and fp16 only")),
    ('vae = "missing"', ("cases['one'].vae:", "no such directory")),
    ("vae = 3", ("vae must be one line of printable text",)),
])
def test_variant_errors(tmp_path: Path, body: str, needles: tuple[str, ...]) -> None:
    safetensors_file(tmp_path / "a.safetensors")
    (tmp_path / "a.pt").write_bytes(b"\x80")
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    (tmp_path / "empty").mkdir()
    if body.startswith('lora = [{ path = "a.safetensors" }]\nprecisions'):
        body = body.replace("\nprecisions", "\n").split("\n")[0]
        path = write(tmp_path, "", lora_case(body).replace(
            'precisions = ["fp32"]', 'precisions = ["fp32", "gguf-q8_0"]'))
        with pytest.raises(CaseFileError) as err:
            load_cases(path)
        assert all(n in str(err.value) for n in needles), str(err.value)
        return
    case_error(tmp_path, body, *needles)


def test_case_vae_swap_and_plain_params(tmp_path: Path) -> None:
    plain = load_cases(write(tmp_path, "", lora_case(""))).cases[0]
    assert set(plain.generation_params()) == {"model", "prompt", "negative_prompt", "seed",
                                              "steps", "scheduler", "guidance_scale"}
    case = load_cases(write(tmp_path, "", lora_case(f'vae = "{TINY_SD / "vae"}"'))).cases[0]
    assert case.vae == TINY_SD / "vae"
    assert len(case.generation_params()["vae"]) == 16


def test_parse_cases_keeps_models_of_one_file_to_that_file(tmp_path: Path) -> None:
    data = {"schema_version": 1, "models": {"mine": {"source": str(TINY_SD)}},
            "cases": {"one": {"model": "mine", "prompt": "p", "seed": 1, "steps": 1,
                              "scheduler": "euler", "guidance_scale": 1.0,
                              "resolutions": ["64x64"]}}}
    assert parse_cases(data, tmp_path / "a.toml").cases[0].spec.name == "mine"
    assert "mine" not in MODELS


# ----------------------------------------------------------------------------- the runner


def _image(runner: Any, case_set: Any, name: str) -> np.ndarray:
    item = next(i for i in case_set.items() if i.case.name == name)
    return runner.generate(item).image


@pytest.fixture(scope="module")
def variants() -> Any:
    if not (LORA_DIR / LORA_WEIGHTS).is_file() or not (VAE_MSE / "config.json").is_file():
        pytest.skip("variant fixtures are not built")
    return load_cases(VARIANTS)


def test_variant_case_file_generates_distinct_repeatable_images(variants: Any) -> None:
    pytest.importorskip("peft")
    from conformance.generate import Runner

    torch.set_num_threads(1)
    runner = Runner("cpu")
    plain = _image(runner, variants, "red-circle")
    lora = _image(runner, variants, "red-circle-lora")
    vae = _image(runner, variants, "red-circle-vae-mse")
    declared = _image(runner, variants, "red-circle-declared")
    assert np.array_equal(declared, plain), "the same directory declared as a model"
    mae_lora = float(np.abs(lora.astype(float) - plain).mean())
    mae_vae = float(np.abs(vae.astype(float) - plain).mean())
    assert mae_lora > 60, f"LoRA changed the image by MAE {mae_lora:.1f}/255, expected > 60"
    assert 0 < mae_vae < 20, f"VAE swap changed the image by MAE {mae_vae:.2f}/255"
    # bit for bit again, with the pipelines cached and from a fresh runner
    assert np.array_equal(_image(runner, variants, "red-circle-lora"), lora)
    again = Runner("cpu")
    assert np.array_equal(_image(again, variants, "red-circle-lora"), lora)
    assert np.array_equal(_image(again, variants, "red-circle-vae-mse"), vae)
    assert np.array_equal(_image(again, variants, "red-circle"), plain)
    assert any("+lora:" in label for label in runner.stats.loaded)
    assert any("+vae:tiny-sd-vae-mse" in label for label in runner.stats.loaded)


def test_lora_without_peft_is_a_skip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import builtins

    from conformance.models.lora import apply_lora

    real_import = builtins.__import__

    def no_peft(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "peft":
            raise ImportError("no peft")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_peft)
    with pytest.raises(ModelUnavailable, match="pip install peft"):
        apply_lora(object(), [LoraRef(tmp_path / "x.safetensors", 1.0)])


def test_declared_hf_model_missing_from_the_cache_is_a_skip(tmp_path: Path) -> None:
    from conformance.generate import Runner

    cases = load_cases(write(tmp_path, '[models.mine]\nsource = "hf:someone/tiny@main"\n'
                                       'pipeline = "StableDiffusionPipeline"\n'))
    with pytest.raises(ModelUnavailable) as err:
        Runner("cpu").generate(cases.items()[0])
    message = str(err.value)
    assert "mine" in message and "hf download someone/tiny --revision main" in message


def test_declared_hf_and_single_file_models_load_offline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from conformance.generate import Runner
    from conformance.models import ldm
    from tests.models.test_sources import build_hub_cache

    torch.set_num_threads(1)
    build_hub_cache(tmp_path / "hub", "someone/tiny-sd", TINY_SD)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    ldm.export_single_file(TINY_SD, tmp_path / "tiny-sd.safetensors")
    tables = (
        '[models.from-hub]\nsource = "hf:someone/tiny-sd"\n'
        'resolution_multiple = 16\nmin_side = 32\n'
        '[models.one-file]\nsource = "tiny-sd.safetensors"\nconfig = "hf:someone/tiny-sd"\n'
        'min_side = 32\n'
    )
    case = "".join(CASE.format(model=m).replace("cases.one", f"cases.{m}")
                   for m in ("tiny-sd", "from-hub", "one-file"))
    cases = load_cases(write(tmp_path, tables, case))
    assert cases.cases[1].spec.pipeline == "StableDiffusionPipeline"  # read from the cache
    runner = Runner("cpu")
    images = [runner.generate(item).image for item in cases.items()]
    assert np.array_equal(images[0], images[1]) and np.array_equal(images[0], images[2])
