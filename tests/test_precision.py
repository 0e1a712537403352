"""The precision registry: kinds, their precisions, the probes and identity digests they use,
their order in reports, and the ``gguf-q4_0`` precision end to end on tiny-sd."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import conformance.precision as registry
from conformance.identity import Identity, compare
from conformance.precision import (
    IDENTITY_PRECISIONS,
    KINDS,
    PRECISIONS,
    Precision,
    PrecisionKind,
    depends_on_probe,
    digest_key,
    dtype_precisions,
    identity_line_precisions,
    sort_key,
)
from conformance.probes import BATTERY, precision_digests, probe_key

KEYS = [probe_key(probe, dtype) for probe in BATTERY for dtype in probe.dtypes]


def test_every_precision_belongs_to_a_registered_kind() -> None:
    assert list(KINDS) == ["dtype", "fp8-storage", "gguf"]
    for name, precision in PRECISIONS.items():
        assert KINDS[precision.kind.name] is precision.kind
        assert name.startswith(precision.kind.prefix)
        assert precision.bits_per_weight > 0 and precision.description
    assert dtype_precisions() == ["fp32", "bf16", "fp16"]
    assert {p.recipe for p in PRECISIONS.values() if p.kind.name == "gguf"} >= {"q4_0", "q8_0"}


def test_every_gguf_recipe_is_a_quantize_recipe() -> None:
    from conformance.quant.recipes import RECIPES

    for precision in PRECISIONS.values():
        if precision.recipe is not None:
            assert precision.recipe in RECIPES, precision.name


def test_register_refuses_a_second_kind_or_name_and_a_foreign_precision(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry, "KINDS", dict(KINDS))
    monkeypatch.setattr(registry, "PRECISIONS", dict(PRECISIONS))

    class Other(PrecisionKind):
        name = "other"

    other = Other()
    with pytest.raises(ValueError, match="precision kind 'dtype' is registered twice"):
        registry.register(KINDS["dtype"], ())
    with pytest.raises(ValueError, match="precision 'fp32' is registered twice"):
        registry.register(other, (Precision("fp32", other, "float32", None, 32, "again"),))

    class Third(PrecisionKind):
        name = "third"

    with pytest.raises(ValueError, match="precision 'int8' is not of kind 'third'"):
        registry.register(Third(), (Precision("int8", other, "float32", None, 8, "int8"),))


def test_each_kind_depends_on_its_own_probes() -> None:
    def wanted(precision: str) -> set[str]:
        return {k for k in KEYS if depends_on_probe(precision, k)}

    plain = {k for k in KEYS if k.endswith("/fp32") and not k.startswith(("fp8-", "gguf-"))}
    assert wanted("fp32") == plain
    assert wanted("bf16") == plain | {k for k in KEYS if k.endswith("/bf16")}
    assert wanted("fp8-e4m3") == plain | {"fp8-e4m3-linear/fp32"}
    assert wanted("fp8-e5m2") == plain | {"fp8-e5m2-linear/fp32"}
    gguf = {k for k in KEYS if k.startswith("gguf-")}
    assert len(gguf) == 3
    assert wanted("gguf-q8_0") == wanted("gguf-q4_0") == plain | gguf
    assert wanted("int8") == plain  # a name no kind knows: the float32 probes of no kind


def test_a_new_precision_is_predicted_by_the_recorded_digest_with_its_probes() -> None:
    for name in IDENTITY_PRECISIONS:
        assert digest_key(name) == name
    assert digest_key("gguf-q4_0") == "gguf-q8_0"
    assert digest_key("int8") == "int8"
    for name in PRECISIONS:  # every precision has a digest an identity records
        assert digest_key(name) in IDENTITY_PRECISIONS
    # and that digest is the one its own probes give
    digests = {k: f"{n:016x}" for n, k in enumerate(KEYS)}
    stack = {"torch": "2.13.0", "threads": 1}
    mine = precision_digests(digests, stack, tuple(PRECISIONS))
    assert all(mine[p] == mine[digest_key(p)] for p in PRECISIONS)


def _identity(digests: dict[str, str]) -> Identity:
    return Identity("cpu-x", {}, {}, probes={}, precision_digests=digests, battery_version=1)


def test_identity_digests_of_an_unrecorded_precision_come_from_its_stand_in() -> None:
    mine = _identity({"fp32": "a" * 12, "gguf-q8_0": "b" * 12})
    same = _identity({"fp32": "a" * 12, "gguf-q8_0": "b" * 12})
    other = _identity({"fp32": "a" * 12, "gguf-q8_0": "c" * 12})
    assert mine.digest_for("gguf-q4_0") == "b" * 12
    assert mine.digest_for("int8") is None
    assert compare(mine, same, "gguf-q4_0").exact
    assert not compare(mine, other, "gguf-q4_0").exact


def test_identity_records_the_same_precisions_as_before() -> None:
    assert IDENTITY_PRECISIONS == (
        "fp32", "bf16", "fp16", "fp8-e4m3", "fp8-e5m2",
        "gguf-q8_0", "gguf-q6_k", "gguf-q5_k_m", "gguf-q4_k_m", "gguf-q3_k_m", "gguf-q2_k",
    )
    assert identity_line_precisions() == ("fp32", "bf16", "fp16", "fp8-e4m3", "gguf-q8_0")


def test_reports_sort_by_kind_then_bits() -> None:
    assert sorted(PRECISIONS, key=sort_key) == [
        "fp32", "bf16", "fp16", "fp8-e4m3", "fp8-e5m2", "gguf-q8_0", "gguf-q6_k",
        "gguf-q5_k_m", "gguf-q4_0", "gguf-q4_k_m", "gguf-q3_k_m", "gguf-q2_k",
    ]
    # names of another version: gguf-* by the digits of their recipe, the rest last
    assert sort_key("gguf-q5_1") < sort_key("gguf-q4_k_m") < sort_key("gguf-iq1_s")
    assert sort_key("gguf-q2_k") < sort_key("fp8-e3m4") < sort_key("int8")
    assert sort_key("gguf-x") == (1, 0, 0, "gguf-x")


# -- gguf-q4_0 on tiny-sd ---------------------------------------------------------------------

TINY_SD_UNET = Path(__file__).resolve().parent.parent / "fixtures" / "tiny-sd" / "unet"


@pytest.fixture(scope="module")
def q4_0_file(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if not (TINY_SD_UNET / "config.json").is_file():
        pytest.skip("tiny-sd fixture is not built")
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONFORMANCE_CACHE", str(cache))
        precision = PRECISIONS["gguf-q4_0"]
        yield precision.kind.stored_bytes(precision, TINY_SD_UNET), cache


def test_gguf_q4_0_stores_linear_weights_as_q4_0_within_its_bound(q4_0_file: Any) -> None:
    """Q4_0: blocks of 32 weights, one float16 scale d = max|w| / 8 (signed), 4-bit levels
    -8..7: every weight comes back within |d| of the original (half a level, a whole one
    where the top level clips), plus the float16 rounding of d."""
    from gguf import GGMLQuantizationType as QT
    from safetensors.numpy import load_file

    from conformance.quant.gguf_io import read_gguf

    size, cache = q4_0_file
    (path,) = (cache / "gguf").glob("*-q4_0.gguf")
    assert path.stat().st_size == size
    tensors = read_gguf(path)
    original = load_file(str(TINY_SD_UNET / "diffusion_pytorch_model.safetensors"))
    types = {t.qtype for t in tensors.values()}
    assert QT.Q4_0 in types and not types & {QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K}
    checked = 0
    for name, tensor in tensors.items():
        if tensor.qtype != QT.Q4_0:
            continue
        weights = original[name].astype(np.float32).reshape(-1, 32)
        error = np.abs(tensor.dequantize().reshape(-1, 32) - weights).max(axis=1)
        bound = np.abs(weights).max(axis=1) / 8 * (1 + 8 * 2.0**-11) + 2.0**-24
        assert (error <= bound).all(), name
        checked += 1
    assert checked >= 4
    # about 4.5 bits per weight for the quantized tensors
    q4 = [t for t in tensors.values() if t.qtype == QT.Q4_0]
    bits = 8 * sum(t.data.nbytes for t in q4) / sum(int(np.prod(t.shape)) for t in q4)
    assert bits == pytest.approx(PRECISIONS["gguf-q4_0"].bits_per_weight)


def test_gguf_q4_0_pipeline_generates_near_fp32(q4_0_file: Any) -> None:
    import torch

    from conformance.generate import Runner

    size, cache = q4_0_file
    torch.set_num_threads(1)
    runner = Runner("cpu")
    images = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONFORMANCE_CACHE", str(cache))
        for precision in ("fp32", "gguf-q4_0"):
            pipe = runner.pipeline("tiny-sd", precision)
            with torch.inference_mode():
                out = pipe("a red circle on a white background", num_inference_steps=4,
                           guidance_scale=4.0, height=32, width=32, output_type="np",
                           generator=torch.Generator("cpu").manual_seed(1))
            images[precision] = out.images[0]
    assert type(runner.pipeline("tiny-sd", "gguf-q4_0").unet).__name__ == "UNet2DConditionModel"
    mae = float(np.abs(images["gguf-q4_0"] - images["fp32"]).mean()) * 255
    assert 0 < mae < 15, mae
    # the stored GGUF file (tiny-sd's convolutions stay float16), not 4.5/32 of fp32
    sizes = runner.stats.denoiser_bytes
    assert sizes["tiny-sd/gguf-q4_0"] == size < sizes["tiny-sd/fp32"] / 2
    print(f"gguf-q4_0 vs fp32: MAE {mae:.2f}/255, denoiser {size} of "
          f"{sizes['tiny-sd/fp32']} bytes")


# -- what only plain-dtype precisions take ----------------------------------------------------


def test_lora_adapters_refuse_a_quantized_precision(tmp_path: Path) -> None:
    from conformance.cases import load_cases
    from conformance.errors import CaseFileError

    cases = tmp_path / "cases.toml"
    cases.write_text(
        'schema_version = 1\n[cases.one]\nmodel = "tiny-sd"\nprompt = "a"\nseed = 0\n'
        'steps = 2\nguidance_scale = 1.0\nscheduler = "euler"\nresolutions = ["32x32"]\n'
        'precisions = ["fp32", "fp8-e4m3", "gguf-q4_0"]\n'
        'lora = [{ path = "x.safetensors" }]\n')
    with pytest.raises(CaseFileError) as err:
        load_cases(cases)
    assert str(err.value).endswith(
        "cases['one'].lora: LoRA adapters run at fp32, bf16 and fp16 only (the case lists "
        "fp8-e4m3, gguf-q4_0); set precisions for this case")


def test_real_checkpoints_refuse_a_quantized_precision() -> None:
    from conformance.generate import Runner
    from conformance.models import MODELS, ModelUnavailable

    with pytest.raises(ModelUnavailable, match="sd15: precision gguf-q4_0 is built from local "
                       "pipeline directories only"):
        Runner("cpu")._load_real(MODELS["sd15"], "gguf-q4_0")
