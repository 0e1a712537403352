"""The pipeline families registry: each family's data, what the suite derives from it, and a
family added at run time."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from conformance.cases import parse_cases
from conformance.errors import CaseFileError
from conformance.models import MODELS, Family
from conformance.models.families import (
    FAMILIES,
    FLOW_MATCHING,
    denoiser_of,
    get_family,
    register,
)
from conformance.models.specs import KNOWN_PIPELINES, family_of, parse_model
from conformance.schedulers import SCHEDULERS


def test_the_registered_families_and_their_names() -> None:
    assert list(FAMILIES) == ["sd", "flux"]
    assert Family.SD is FAMILIES["sd"] is get_family("sd") and Family.FLUX is FAMILIES["flux"]
    assert (Family.SD.value, Family.SD.denoiser, Family.FLUX.denoiser) == (
        "sd", "unet", "transformer")
    assert repr(Family.FLUX) == "Family.FLUX"
    assert MODELS["sdxl"].family is Family.SD and MODELS["tiny-flux"].family is Family.FLUX
    assert pickle.loads(pickle.dumps(MODELS["tiny-sd"])).family is Family.SD
    with pytest.raises(KeyError, match="unknown family 'sd3'; accepted: sd, flux"):
        get_family("sd3")


def test_what_the_suite_derives_from_the_families() -> None:
    assert KNOWN_PIPELINES == {"StableDiffusionPipeline": Family.SD,
                               "StableDiffusionXLPipeline": Family.SD,
                               "FluxPipeline": Family.FLUX}
    assert (Family.SD.limits, Family.FLUX.limits) == ((8, 64, 2048), (16, 64, 2048))
    fits = {name: {f.name for f in spec.families} for name, spec in SCHEDULERS.items()}
    assert fits == {**{n: {"sd"} for n in SCHEDULERS if n != "flow-euler"},
                    "flow-euler": {"flux"}}
    assert Family.SD.negative_prompt and not Family.FLUX.negative_prompt
    assert Family.SD.named_like("StableDiffusionImg2ImgPipeline")
    assert not Family.SD.named_like("StableDiffusion3Pipeline")
    assert Family.FLUX.named_like("FluxFillPipeline")


def test_family_of_a_pipeline_class() -> None:
    pytest.importorskip("diffusers")
    assert family_of("StableDiffusionImg2ImgPipeline") is Family.SD
    assert family_of("FluxImg2ImgPipeline") is Family.FLUX
    assert family_of("StableDiffusion3Pipeline") is None


def test_denoiser_of_a_pipeline() -> None:
    unet, transformer = object(), object()
    assert denoiser_of(SimpleNamespace(unet=unet)) is unet
    assert denoiser_of(SimpleNamespace(transformer=transformer)) is transformer
    assert denoiser_of(SimpleNamespace(unet=None, transformer=transformer)) is transformer
    assert denoiser_of(SimpleNamespace(vae=object())) is None


def test_a_family_is_registered_once() -> None:
    with pytest.raises(ValueError, match="family 'sd' is registered twice"):
        register(Family.SD)


def test_the_missing_family_message_lists_every_family(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text('{"_class_name": "PixArtSigmaPipeline"}')
    with pytest.raises(CaseFileError) as err:
        parse_model("mine", {"source": str(tmp_path)}, tmp_path / "c.toml", tmp_path)
    assert ('set family = "sd" (UNet, epsilon/v schedulers, negative prompts) or "flux" '
            '(flow matching, no negative prompt)') in str(err.value)


@pytest.fixture
def toy() -> Iterator[Family]:
    family = register(Family(
        name="toy", denoiser="transformer", schedulers=FLOW_MATCHING, negative_prompt=False,
        no_negative_prompt="takes no negative prompt", summary="a test family",
        limits=(32, 32, 512), pipelines=("ToyPipeline",), name_prefixes=("Toy",)))
    try:
        yield family
    finally:
        del FAMILIES["toy"]
        delattr(Family, "TOY")


def test_a_new_family_is_one_registration(toy: Family, tmp_path: Path) -> None:
    """A family module's one register() call is all the suite needs: its name is accepted
    in model tables, its limits apply, its schedulers fit and its negative-prompt rule
    holds."""
    assert Family.TOY is toy and get_family("toy") is toy  # type: ignore[attr-defined]
    assert toy in SCHEDULERS["flow-euler"].families
    assert toy not in SCHEDULERS["euler"].families
    assert toy.named_like("ToyImg2ImgPipeline")
    (tmp_path / "model_index.json").write_text('{"_class_name": "PixArtSigmaPipeline"}')
    spec = parse_model("mine", {"source": str(tmp_path), "family": "toy"}, tmp_path / "c.toml",
                       tmp_path)
    assert spec.family is toy
    assert (spec.resolution_multiple, spec.min_side, spec.max_side) == (32, 32, 512)
    case = {"model": "mine", "prompt": "p", "seed": 1, "steps": 1, "guidance_scale": 1.0,
            "scheduler": "flow-euler", "resolutions": ["64x64"], "precisions": ["fp32"]}
    data = {"schema_version": 1, "models": {"mine": {"source": str(tmp_path),
                                                      "family": "toy"}},
            "cases": {"one": case}}
    assert parse_cases(data, tmp_path / "c.toml").cases[0].spec.family is toy
    data["cases"]["one"] = {**case, "negative_prompt": "blur"}
    with pytest.raises(CaseFileError, match=r"mine \(toy family\) takes no negative prompt; "
                       "remove the key"):
        parse_cases(data, tmp_path / "c.toml")
    data["cases"]["one"] = {**case, "scheduler": "euler"}
    with pytest.raises(CaseFileError, match=r"'euler' does not fit mine \(toy family\); "
                       "accepted: flow-euler"):
        parse_cases(data, tmp_path / "c.toml")


def test_a_base_class_that_fails_to_import_is_no_base() -> None:
    from conformance.models.specs import _exported

    class Broken:
        def __getattr__(self, name: str) -> object:
            raise ImportError(f"cannot import {name}")

    assert _exported(Broken(), "FluxPipeline") is None
