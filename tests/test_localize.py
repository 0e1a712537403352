"""Per-module divergence localisation on the shipped tiny models (32x32, 2 steps).

Ground truth: one item generated plain and with each invariance variant applied the way
``Runner.generate`` applies it; the localiser must name an attention module for the
attention variants and a GEMM / conv module for the thread count, or say that there is no
divergent module when the variant leaves the bits alone on this machine. A module patched
to compute differently must be named exactly, and replaying its captured input must tell
it apart from an unchanged module.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
from typing import Any

import msgspec
import pytest
import torch

from conformance import PACKAGE_DIR
from conformance.cases import Item, Resolution, load_cases
from conformance.generate import VARIANTS, Runner
from conformance.localize import (
    MAX_CAPTURE_BYTES,
    InputCapture,
    ModuleProbe,
    ModuleRecord,
    NonFinite,
    ProbeComplete,
    ProbeFileError,
    ProbeRecords,
    ProjectionSpec,
    Section,
    TensorStats,
    localize,
    pipeline_components,
    probe_item,
    replay,
)

RES = Resolution(32, 32)
ATTN1 = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1"
ATTENTION = re.compile(r"Attention|Attn")
GEMM_CONV = (torch.nn.Linear, torch.nn.Conv2d)


def _case(name: str):
    case = next(c for c in load_cases().cases if c.name == name)
    return dataclasses.replace(case, steps=2)


@pytest.fixture(scope="module")
def runner():
    torch.set_num_threads(1)
    return Runner("cpu")


@pytest.fixture(scope="module")
def sd_item():
    return Item(_case("red-circle"), RES, "fp32")


@pytest.fixture(scope="module")
def flux_item():
    return Item(_case("purple-circle"), RES, "fp32")


@pytest.fixture(scope="module")
def sd_base(runner, sd_item):
    """The plain run, every step probed, with attn1's input captured."""
    return probe_item(runner, sd_item, steps=None, capture=[f"step0/{ATTN1}"])


def _hook_count(pipe) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks)
               for root, _role in pipeline_components(pipe).values() for m in root.modules())


def _bits_differ(a: ProbeRecords, b: ProbeRecords) -> bool:
    other = {(s, r.name): r for s, r in b.records()}
    return any(other.get((s, r.name)) is None or other[(s, r.name)].out_all != r.out_all
               for s, r in a.records())


def test_no_hooks_unless_requested(runner, sd_item):
    pipe = runner.pipeline(sd_item.model, sd_item.precision)
    assert _hook_count(pipe) == 0
    before = [t.digest for t in runner.generate(sd_item).trace]
    probe = ModuleProbe(pipe)
    assert _hook_count(pipe) == 0  # constructing registers nothing
    with probe:
        assert _hook_count(pipe) > 0
        during = [t.digest for t in runner.generate(sd_item).trace]
    assert _hook_count(pipe) == 0
    assert [t.digest for t in runner.generate(sd_item).trace] == before == during


def test_records_cover_components_in_order(sd_base):
    rec = sd_base.records
    assert [s.name for s in rec.sections] == ["text", "step0", "step1", "decode"]
    step0 = rec.section("step0")
    names = [r.name for r in step0.records]
    assert names[-1] == "unet"  # the root returns last
    assert names.index(f"{ATTN1}.to_q") < names.index(ATTN1)
    # modules called several times per step get #2, #3
    assert "unet.down_blocks.0.resnets.0.nonlinearity#2" in names
    assert "text_encoder#2" in [r.name for r in rec.section("text").records]  # negative prompt
    first = step0.records[0]
    assert re.fullmatch(r"[0-9a-f]{16}", first.out.digest) and len(first.out.proj) == 8
    assert rec.meta["item"] == "tiny-sd/red-circle/32x32/fp32"


def test_records_round_trip_json(sd_base, tmp_path):
    rec = sd_base.records
    assert ProbeRecords.from_json(rec.to_json()) == rec
    path = rec.save(tmp_path / "probe.json")
    assert ProbeRecords.load(path) == rec
    sizes = _section_bytes(rec)
    assert set(sizes) == {"text", "step0", "step1", "decode"} and all(sizes.values())


def _mutate(data: dict, edit) -> dict:
    data = copy.deepcopy(data)
    edit(data)
    return data


R0 = "sections[1].records[0]"


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.update(kind="other"), "kind 'other' is not one of conformance-module-probes"),
    (lambda d: d.update(schema_version=2), "schema_version is 2; this version reads 1"),
    (lambda d: d.update(extra=1),
     "unknown key extra (accepted: schema_version, kind, projection, meta, sections)"),
    (lambda d: d["sections"][1]["records"][0]["out"].update(digest="xyz"),
     f"{R0}.out.digest must be a digest (16 lower-case hex digits), not a string ('xyz')"),
    (lambda d: d["sections"][1]["records"][0]["out"].update(proj=[1.0]),
     f"{R0}.out.proj must be a list of 8 numbers (the file's projection.dim), not a list of 1"),
    (lambda d: d["sections"][1]["records"][0]["out"].update(mean="big"),
     f'{R0}.out.mean must be a number or one of "nan", "inf", "-inf", not a string (\'big\')'),
    (lambda d: d["sections"][1]["records"][0].update(name="a/../b"),
     f"{R0}.name must be a module path (dotted names of letters, digits and '_', optionally "
     "#N), not a string ('a/../b')"),
    (lambda d: d["sections"][1]["records"][0].update(t1=10**6),
     "records are not in the order calls returned"),
    (lambda d: d["sections"][1].update(records=[
        dict(d["sections"][1]["records"][0], name="unet.a", t0=1, t1=4),
        dict(d["sections"][1]["records"][1], name="unet.b", t0=3, t1=6)]),
     "sections[1].records[1] (unet.b, 3..6) overlaps unet.a (1..4) without nesting in it"),
    (lambda d: d["sections"][1].update(name="step-1"),
     "sections[1].name must be text, decode or stepN, not a string ('step-1')"),
    (lambda d: d["sections"].append(d["sections"][1]),
     "sections[4].name 'step0' appears twice (also sections[1])"),
])
def test_invalid_records_refused(sd_base, edit, message):
    data = _mutate(sd_base.records.to_dict(), edit)
    with pytest.raises(ProbeFileError, match=re.escape(message)):
        ProbeRecords.from_dict(data)
    with pytest.raises(ProbeFileError) as err:  # from a file: its name and kind first
        ProbeRecords.from_json(json.dumps(data), "x.probes.json")
    assert str(err.value).startswith("x.probes.json: probe file: ") and message in str(err.value)


def test_non_finite_values_round_trip(sd_base):
    data = sd_base.records.to_dict()
    data["sections"][1]["records"][0]["out"]["absmax"] = "inf"
    data["sections"][1]["records"][0]["out"]["mean"] = "nan"
    rec = ProbeRecords.from_dict(data)
    assert json.loads(rec.to_json())["sections"][1]["records"][0]["out"]["absmax"] == "inf"
    out = rec.sections[1].records[0].out
    assert math.isnan(out.mean) and out.absmax == math.inf and not out.finite


# -- probe records without a model: the declared types and the relations after them -------


def _stats(**edit: Any) -> TensorStats:
    return msgspec.structs.replace(TensorStats("0" * 16, "float32", (1, 4), 0.5, 1.0, 2.0,
                                               (1.0,) * 8), **edit)


def _small() -> dict[str, Any]:
    """A probe file of one step: the UNet (0..3) calling conv_in (1..2)."""
    stats = _stats()
    records = (
        ModuleRecord(name="unet.conv_in", cls="Conv2d", t0=1, t1=2, out=stats,
                     out_all="0" * 16, inp=stats, in_all="0" * 16),
        ModuleRecord(name="unet", cls="UNet2DConditionModel", t0=0, t1=3, out=stats,
                     out_all="0" * 16, inp=None, in_all=None),
    )
    rec = ProbeRecords(schema_version=1, kind="conformance-module-probes",
                       projection=ProjectionSpec(8, 1, 65536, "a" * 16), meta={"item": "x"},
                       sections=(Section("step0", records),))
    assert ProbeRecords.from_dict(rec.to_dict()) == rec
    return rec.to_dict()


def _record(data: dict[str, Any], index: int = 0) -> dict[str, Any]:
    return data["sections"][0]["records"][index]


S0 = "sections[0].records"


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.update(schema_version=True), "schema_version is True; this version reads 1"),
    (lambda d: d.pop("kind"), "key kind is missing"),
    (lambda d: d.update(meta=[]), "meta must be an object, not a list"),
    (lambda d: d["projection"].update(dim=0), "projection.dim must be an integer 1..64, not a "
     "number (0)"),
    (lambda d: d["projection"].update(seed=-1), "projection.seed must be an integer "
     "0..9223372036854775807"),
    (lambda d: d["projection"].update(basis="Z"), "projection.basis must be a digest"),
    (lambda d: _record(d).update({"class": "1x"}),
     f"{S0}[0].class must be a class name, not a string ('1x')"),
    (lambda d: _record(d).update(name="a" * 1025), f"{S0}[0].name must be a module path"),
    (lambda d: _record(d).update(t0=True), f"{S0}[0].t0 must be an integer 0..1099511627776, "
     "not a boolean (True)"),
    (lambda d: _record(d)["in"].update(dtype="Float 32"),
     f"{S0}[0].in.dtype must be a dtype name, not a string ('Float 32')"),
    (lambda d: _record(d)["in"].update(shape=[-1]), f"{S0}[0].in.shape[0] must be a "
     "non-negative integer below 2**48, not a number (-1)"),
    (lambda d: _record(d)["in"].update(shape=[1] * 17), f"{S0}[0].in.shape must be a list of "
     "at most 16 non-negative integers, not a list"),
    (lambda d: _record(d)["in"].update(std=True), f'{S0}[0].in.std must be a number or one of '
     '"nan", "inf", "-inf", not a boolean (True)'),
    (lambda d: _record(d)["in"].update(proj=[1.0] * 65), f"{S0}[0].in.proj must be a list of "
     "at most 64 numbers, not a list"),
    (lambda d: _record(d)["in"].update(extra=1), f"unknown key {S0}[0].in.extra (accepted: "
     "digest, dtype, shape, mean, std, absmax, proj)"),
    (lambda d: _record(d).update(t1=1), f"{S0}[0].t1 (1) must be after t0 (1)"),
    (lambda d: _record(d).update(out_all=None), f"{S0}[0].out_all is null but out is not"),
    (lambda d: _record(d).update({"in": None}), f"{S0}[0].in_all is set but in is null"),
    (lambda d: _record(d)["in"].update(proj=[1.0] * 4), f"{S0}[0].in.proj must be a list of 8 "
     "numbers (the file's projection.dim), not a list of 4"),
    (lambda d: d["sections"][0]["records"].insert(1, dict(_record(d), t0=4, t1=5)),
     f"{S0}[1].name 'unet.conv_in': the module call is listed twice"),
    (lambda d: _record(d, 1).update(t0=1), f"{S0}[1] (unet): event positions 1/3 are reused"),
])
def test_probe_files_are_refused_with_the_key(edit, message):
    data = _small()
    edit(data)
    with pytest.raises(ProbeFileError) as err:
        ProbeRecords.from_json(json.dumps(data), "p.json")
    assert err.value.where == "p.json"
    assert err.value.message.startswith(f"probe file: {message}"), err.value.message


def test_probe_files_hold_no_nan_tokens():
    """Non-finite statistics are written as strings: a NaN token is refused by name."""
    data = _small()
    text = json.dumps(data).replace('"std": 1.0', '"std": NaN', 1)
    with pytest.raises(ProbeFileError, match=r"^p.json: probe file: key sections\[0\]\.records"
                       r"\[0\]\.out\.std: NaN is not JSON"):
        ProbeRecords.from_json(text, "p.json")
    for bad in ('"x"', "[", "{}"):
        with pytest.raises(ProbeFileError, match=r"^p\.json: probe file: "):
            ProbeRecords.from_json(bad, "p.json")


def test_non_finite_statistics_are_written_as_strings():
    stats = _stats(mean=math.nan, absmax=math.inf, proj=(1.0, -math.inf, 2.0))
    assert all(isinstance(v, NonFinite) for v in (stats.mean, stats.absmax, stats.proj[1]))
    assert type(stats.std) is float and type(stats.proj[0]) is float
    data = _small()
    _record(data)["out"].update(mean="nan", absmax="inf", proj=[1.0, "-inf", *[0.0] * 6])
    rec = ProbeRecords.from_dict(data)
    out = rec.sections[0].records[0].out
    assert math.isnan(out.mean) and out.absmax == math.inf and out.proj[1] == -math.inf
    assert rec.to_dict() == data and "NaN" not in rec.to_json()


def test_records_are_the_files_keys_in_its_order():
    """The declared fields write the layout the committed goldens' probe files hold."""
    data = _small()
    assert list(data) == ["schema_version", "kind", "projection", "meta", "sections"]
    assert list(_record(data)) == ["name", "class", "t0", "t1", "out", "out_all", "in",
                                   "in_all"]
    assert list(_record(data)["out"]) == ["digest", "dtype", "shape", "mean", "std", "absmax",
                                          "proj"]
    text = ProbeRecords.from_dict(data).to_json()
    assert text == json.dumps(data, allow_nan=False)  # Python's json separators, as before


def test_meta_is_written_as_pythons_json_writes_it():
    """Free-form meta: a subclass of str (torch's version string) is its text; what JSON
    cannot hold is refused when writing."""

    class Version(str):
        pass

    rec = ProbeRecords.from_dict(_small())
    rec = msgspec.structs.replace(rec, meta={"torch": Version("2.13.0"), "threads": 1})
    assert json.loads(rec.to_json())["meta"] == {"torch": "2.13.0", "threads": 1}
    with pytest.raises(TypeError, match="object"):
        msgspec.structs.replace(rec, meta={"x": object()}).to_json()


def test_projections_of_two_files_must_agree():
    a = ProbeRecords.from_dict(_small())
    other = _small()
    other["projection"]["seed"] = 2
    with pytest.raises(ProbeFileError, match=r"^B: projection \{'dim': 8, 'seed': 2, 'chunk': "
                       r"65536, 'basis': 'a{16}'\} differs from A's \{'dim': 8, 'seed': 1"):
        localize(a, ProbeRecords.from_dict(other))


def test_identical_runs_have_no_divergent_module(runner, sd_item, sd_base):
    again = probe_item(runner, sd_item, steps=None)
    loc = localize(sd_base.records, again.records)
    assert not loc.divergent and loc.first_divergent_module is None
    assert loc.message.startswith("no divergent module")
    assert loc.compared == sum(len(s.records) for s in sd_base.records.sections)


def _module(pipe, name: str):
    """The module a record names (``#N`` ignored)."""
    comp, _, rest = name.split("#", 1)[0].partition(".")
    return getattr(pipe, comp).get_submodule(rest)


def _contains_gemm_or_conv(pipe, name: str) -> bool:
    return any(isinstance(m, GEMM_CONV) for m in _module(pipe, name).modules())


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "batch-4"])
def test_variant_is_localised(runner, sd_item, sd_base, variant, record_property):
    other = probe_item(runner, sd_item, steps=None, variant=variant)
    loc = localize(sd_base.records, other.records)
    record_property("localised", loc.message)
    plain_trace = [t.digest for t in sd_base.generation.trace]
    variant_trace = [t.digest for t in other.generation.trace]
    assert loc.divergent == _bits_differ(sd_base.records, other.records)
    if plain_trace != variant_trace or not (
        sd_base.generation.image == other.generation.image).all():
        assert loc.divergent
    if not loc.divergent:
        assert loc.message.startswith("no divergent module"), loc.message
        print(f"{variant}: bit-identical on this machine: {loc.message}")
        return
    print(f"{variant}: {loc.message}")
    assert loc.input_identical and loc.origin in ("leaf", "own-code")
    assert loc.ranking and loc.ranking[0].role == "cause"
    pipe = runner.pipeline(sd_item.model, sd_item.precision)
    name, cls = loc.first_divergent_module, loc.first_divergent_class
    if variant in ("sdpa-math", "attention-slicing"):
        assert ATTENTION.search(cls), loc.message
        if loc.origin == "own-code":  # the attention product between the projections
            assert loc.before is not None
    elif variant == "threads-2":
        assert _contains_gemm_or_conv(pipe, name), loc.message
    else:  # nondeterministic: whatever it names must be a real module call
        assert _module(pipe, name) is not None


def test_flux_sdpa_math_is_localised(runner, flux_item):
    plain = probe_item(runner, flux_item, steps=None)
    other = probe_item(runner, flux_item, steps=None, variant="sdpa-math")
    loc = localize(plain.records, other.records)
    if not loc.divergent:
        assert loc.message.startswith("no divergent module")
        return
    assert ATTENTION.search(loc.first_divergent_class), loc.message
    names = {r.name for _s, r in plain.records.records()}
    assert any(n.startswith("transformer.single_transformer_blocks.0") for n in names)
    assert any(n.startswith("text_encoder_2.") for n in names)


def test_bf16_against_fp32(runner, sd_item, sd_base):
    bf16 = probe_item(runner, dataclasses.replace(sd_item, precision="bf16"), steps=None)
    loc = localize(sd_base.records, bf16.records)
    assert loc.divergent and loc.input_identical
    # the embedding tables are stored in bf16: the very first lookup differs
    assert loc.first_divergent_module == "text_encoder.embeddings.token_embedding"
    assert loc.first_divergent_class == "Embedding" and loc.origin == "leaf"
    unet = next(c for c in _comparisons(sd_base.records, bf16.records) if c[0] == "unet")
    assert 1e-4 < unet[1] < 0.5 and unet[2] > 0.99  # bf16-sized, not garbage


def _comparisons(a, b):
    from conformance.localize import cosine_similarity, relative_error

    other = {r.name: r for r in b.section("step0").records}
    for r in a.section("step0").records:
        rb = other[r.name]
        yield r.name, relative_error(r.out, rb.out), cosine_similarity(r.out, rb.out)


def test_patched_module_is_named_exactly(runner, sd_item, sd_base, monkeypatch):
    pipe = runner.pipeline(sd_item.model, sd_item.precision)
    conv = pipe.unet.mid_block.resnets[0].conv1
    original = conv.forward
    monkeypatch.setattr(conv, "forward", lambda x: original(x) * (1 + 2**-12))
    other = probe_item(runner, sd_item, steps=(0,))
    loc = localize(sd_base.records, other.records)
    assert loc.first_divergent_module == "unet.mid_block.resnets.0.conv1"
    assert (loc.first_divergent_class, loc.origin, loc.input_identical) == ("Conv2d", "leaf", True)
    assert loc.message == ("first divergent module: unet.mid_block.resnets.0.conv1 (Conv2d) "
                           "at step 0, input identical: this module computes differently")
    # its callers only carry the difference; the next modules get a different input
    roles = {c.name: c.role for c in loc.ranking}
    assert roles["unet.mid_block.resnets.0.conv1"] == "cause"
    assert "unet.mid_block" not in roles  # contains the cause, is not one


def test_patched_attention_product_is_own_code(runner, sd_item, sd_base, monkeypatch):
    from diffusers.models.attention_processor import AttnProcessor

    pipe = runner.pipeline(sd_item.model, sd_item.precision)
    attn = pipe.unet.up_blocks[1].attentions[0].transformer_blocks[0].attn2
    monkeypatch.setattr(attn, "processor", AttnProcessor())  # baddbmm + softmax, not SDPA
    other = probe_item(runner, sd_item, steps=(0,))
    loc = localize(sd_base.records, other.records)
    assert loc.first_divergent_module == \
        "unet.up_blocks.1.attentions.0.transformer_blocks.0.attn2"
    assert loc.origin == "own-code" and (loc.after, loc.before) == ("to_v", "to_out.0")


def test_input_outside_probes(runner, sd_item):
    """Probing step 1 only: the UNet's input already differs when attention slicing
    changed step 0."""
    plain = probe_item(runner, sd_item, steps=(1,), components=("denoiser",))
    sliced = probe_item(runner, sd_item, steps=(1,), components=("denoiser",),
                        variant="attention-slicing")
    assert [s.name for s in plain.records.sections] == ["step1"]
    loc = localize(plain.records, sliced.records)
    if not _bits_differ(plain.records, sliced.records):
        pytest.skip("attention slicing leaves the bits alone on this machine")
    assert loc.first_divergent_module == "unet" and loc.origin == "outside-probes"
    assert loc.input_identical is False and "outside the probed modules" in loc.message


def test_step_from_callback(runner, sd_item):
    pipe = runner.pipeline(sd_item.model, sd_item.precision)
    with ModuleProbe(pipe, steps=(1,), components=("denoiser",)) as probe, \
            torch.inference_mode():
        pipe(prompt="a dot", num_inference_steps=2, height=32, width=32,
             generator=torch.Generator("cpu").manual_seed(0), output_type="np",
             callback_on_step_end=probe.callback)
    assert [s.name for s in probe.result().sections] == ["step1"]


def test_stop_early_records_first_step_only(runner, sd_item):
    run = probe_item(runner, sd_item, steps=(0,), stop_early=True)
    assert run.generation is None
    assert [s.name for s in run.records.sections] == ["text", "step0"]


def test_replay_reproduces_and_detects(runner, sd_item, sd_base, monkeypatch):
    key = f"step0/{ATTN1}"
    capture = sd_base.captures[key]
    data = capture.to_bytes()
    header = int.from_bytes(data[:8], "little")
    assert data[8:9] == b"{" and header < len(data)  # safetensors, not a pickle
    loaded = InputCapture.from_bytes(data)
    assert loaded.output_digest == capture.output_digest and loaded.name == ATTN1
    pipe = runner.pipeline(sd_item.model, sd_item.precision)
    same = replay(pipe, loaded)
    assert same.reproduced and "computes the same" in same.message
    attn = _module(pipe, ATTN1)
    original = attn.to_out[0].forward
    monkeypatch.setattr(attn.to_out[0], "forward", lambda x: original(x) + 2**-20)
    changed = replay(pipe, loaded)
    assert not changed.reproduced and "computes differently here" in changed.message


def test_replay_under_sdpa_math(runner, sd_item, sd_base):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    pipe = runner.pipeline(sd_item.model, sd_item.precision)
    capture = sd_base.captures[f"step0/{ATTN1}"]
    with sdpa_kernel(SDPBackend.MATH):
        result = replay(pipe, capture)
    other = probe_item(runner, sd_item, steps=(0,), components=("denoiser",),
                       variant="sdpa-math")
    attn1 = next(r for r in other.records.section("step0").records if r.name == ATTN1)
    plain = next(r for r in sd_base.records.section("step0").records if r.name == ATTN1)
    assert attn1.in_all == plain.in_all  # self-attention: the latents are not touched yet
    # the replay agrees with what the full run under the math backend recorded
    assert result.reproduced == (attn1.out_all == capture.output_digest)


def test_capture_bounds(runner, sd_item, tmp_path):
    pipe = runner.pipeline(sd_item.model, sd_item.precision)
    probe = ModuleProbe(pipe, capture=["unet.conv_in"], capture_limit=1024,
                        components=("denoiser",), stop_after_steps=True)
    with probe, pytest.raises(ProbeComplete):
        runner.generate(sd_item)
    assert "above the 1024-byte bound" in probe.capture_problems["step0/unet.conv_in"]
    with pytest.raises(ProbeFileError, match="bytes"):
        InputCapture.from_bytes(b"\0" * (MAX_CAPTURE_BYTES + 2**20 + 1))
    with pytest.raises(ProbeFileError, match="safetensors"):
        InputCapture.from_bytes(b"\x80\x04garbage-pickle")
    bad = tmp_path / "capture.safetensors"
    from safetensors.torch import save

    bad.write_bytes(save({"t0": torch.zeros(2)}))
    with pytest.raises(ProbeFileError, match="metadata"):
        InputCapture.load(bad)


#: diffusers' ``UNet2DConditionModel`` config of SDXL base 1.0 (stabilityai), for sizing
SDXL_UNET_CONFIG = {
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 2048,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816,
    "sample_size": 128,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "use_linear_projection": True,
}


def _json_bytes(record) -> int:
    """Size of a record as a probe file writes it."""
    return len(json.dumps(msgspec.to_builtins(record)))


def _section_bytes(records: ProbeRecords) -> dict[str, int]:
    return {s.name: _json_bytes(s) for s in records.sections}


def _record_bytes(records: ProbeRecords) -> float:
    sizes = [_json_bytes(r) + 1 for _s, r in records.records()]
    return sum(sizes) / len(sizes)


def _step_bytes(modules) -> int:
    """One probed step of a denoiser with these ``(name, class)`` modules: a record per
    module, each with a 4-D output and input and full-precision floats."""
    stats = TensorStats("0" * 16, "float32", (2, 1280, 128, 128), -0.12345678901234567,
                        1.2345678901234567, 12.345678901234567, (-123.45678901234567,) * 8)
    return sum(_json_bytes(ModuleRecord(name=f"unet.{name}" if name else "unet", cls=cls,
                                        t0=10000 + 2 * i, t1=10001 + 2 * i, out=stats,
                                        out_all="0" * 16, inp=stats, in_all="0" * 16)) + 1
               for i, (name, cls) in enumerate(modules))


def test_sizes(sd_base, record_property):
    """Record size per probed step: tiny-sd measured, SDXL's UNet from its module list."""
    from diffusers import UNet2DConditionModel

    tiny = _section_bytes(sd_base.records)["step0"]
    with torch.device("meta"):  # the module list only, no weights
        unet = UNet2DConditionModel(**SDXL_UNET_CONFIG)
    modules = [(n, type(m).__name__) for n, m in unet.named_modules()]
    sdxl = _step_bytes(modules)
    record_property("tiny_sd_step_bytes", tiny)
    record_property("sdxl_step_bytes", sdxl)
    print(f"tiny-sd: {tiny} bytes per step ({len(sd_base.records.section('step0').records)} "
          f"calls, {_record_bytes(sd_base.records):.0f} B each); SDXL UNet: {len(modules)} "
          f"modules, about {sdxl / 2**20:.2f} MiB per step")
    assert 1800 < len(modules) < 2100  # SDXL base: 1930 modules
    assert 50_000 < tiny < 1_000_000 and 2**20 < sdxl < 4 * 2**20


# -- conformance blocks -----------------------------------------------------------------------


@pytest.fixture
def blocks(monkeypatch, capsys):
    import conformance.cli as cli

    if "conformance.blocks" not in cli.EXTENSIONS:
        monkeypatch.setattr(cli, "EXTENSIONS", (*cli.EXTENSIONS, "conformance.blocks"))

    def go(*args: str):
        code = cli.main(["blocks", *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return go


SMALL = ("--case", "red-circle", "--resolution", "32x32", "--steps", "2")


def test_blocks_fp32_against_bf16(blocks, tmp_path):
    js, md, saved = tmp_path / "b.json", tmp_path / "b.md", tmp_path / "a.json"
    code, out, err = blocks("tiny-sd@fp32", "tiny-sd@bf16", *SMALL, "--json", str(js),
                            "--markdown", str(md), "--save", str(saved))
    assert code == 0, err
    doc = json.loads(js.read_text())
    step0 = next(s for s in doc["sections"] if s["name"] == "step0")["rows"]
    names = [r["name"] for r in step0]
    assert names[-1] == "unet" and "unet.mid_block" in names and "unet.up_blocks.2" in names
    assert all(r["bits"] in ("equal", "differ") for r in step0)
    assert all(r["cosine"] > 0.99 and r["rel_err"] < 0.1 for r in step0)
    assert doc["localization"]["divergent"] and doc["modules"]["only_a"] == []
    assert "| `unet.mid_block` | UNetMidBlock2DCrossAttn | differ |" in md.read_text()
    assert "first divergent module: text_encoder.embeddings.token_embedding" in out
    # a saved probe file against a fresh run: same machine, same bits
    code, out, err = blocks(str(saved), "tiny-sd@fp32", "--steps", "2")
    assert code == 0, err
    assert "no divergent module" in out


def test_blocks_mismatched_modules(blocks, sd_base, tmp_path):
    a = tmp_path / "a.json"
    sd_base.records.save(a)
    data = sd_base.records.to_dict()
    for sec in data["sections"]:
        sec["records"] = [r for r in sec["records"] if not r["name"].startswith(
            "unet.mid_block")]
    b = tmp_path / "b.json"
    b.write_text(json.dumps(data))
    code, out, err = blocks(str(a), str(b))
    assert code == 0, err
    n_a = len({r.base_name for _s, r in sd_base.records.records()})
    n_b = len({r.base_name for _s, r in ProbeRecords.load(b).records()})
    assert (f"A has {n_a} modules, B {n_b}: not the same architecture; compared by name "
            "where they match") in out
    assert re.search(r"unet\.mid_block\s+UNetMidBlock2DCrossAttn\s+only-a", out)


@pytest.mark.parametrize(("args", "arg", "message"), [
    (("foo", "tiny-sd", *SMALL), "A", "unknown model 'foo'"),
    (("tiny-sd@bf17", "tiny-sd", *SMALL), "A", "unknown precision 'bf17'"),
    (("tiny-sd", "tiny-sd+warp", *SMALL), "B", "unknown variant 'warp'"),
    (("tiny-sd", "missing.json", *SMALL), "B", "does not exist"),
    (("tiny-sd", "tiny-sd"), "--case", "required"),
    (("tiny-sd", "tiny-sd", "--case", "nope"), "--case", "no case 'nope'"),
    (("tiny-sd", "tiny-sd", *SMALL, "--probe-steps", "7"), "--probe-steps", "past the last"),
])
def test_blocks_errors(blocks, args, arg, message):
    code, _out, err = blocks(*args)
    assert code == 2
    assert f"error: {arg}: " in err and message in err


VARIANTS_FILE = str(PACKAGE_DIR / "cases-variants.toml")
SMALL_VARIANTS = ("--cases", VARIANTS_FILE, "--resolution", "32x32", "--steps", "2")


def test_blocks_of_a_swapped_vae_name_the_decoder(blocks, tmp_path):
    """case: sides run a case as declared: the VAE swap leaves the text encoder and the UNet
    bit-identical and parts in the VAE decode."""
    js = tmp_path / "b.json"
    code, out, err = blocks("case:red-circle", "case:red-circle-vae-mse", *SMALL_VARIANTS,
                            "--full", "--json", str(js))
    assert code == 0, err
    doc = json.loads(js.read_text())
    rows = {s["name"]: s["rows"] for s in doc["sections"]}
    assert all(r["bits"] == "equal" for r in rows["step0"]), rows["step0"]
    assert any(r["bits"] == "differ" for r in rows["decode"])
    assert doc["localization"]["first_divergent_module"].startswith("vae.")
    assert "A case:red-circle@fp32 vs B case:red-circle-vae-mse@fp32" in out


def test_blocks_of_a_declared_model_and_its_builtin(blocks):
    """A [models.NAME] of the case file is a model side too: the same weights, same bits."""
    code, out, err = blocks("tiny-sd-local", "tiny-sd", "--case", "red-circle",
                            *SMALL_VARIANTS)
    assert code == 0, err
    assert "no divergent module" in out


def test_blocks_unknown_case_side(blocks):
    code, _out, err = blocks("case:nope", "tiny-sd", *SMALL_VARIANTS)
    assert code == 2 and "error: --case: no case 'nope'" in err
    # with --case naming another case, the side's own case is looked up for that side
    code, _out, err = blocks("case:nope", "tiny-sd", "--case", "red-circle", *SMALL_VARIANTS)
    assert code == 2 and "error: A: no case 'nope'" in err
    code, _out, err = blocks("case:red-circle@fp64", "tiny-sd", *SMALL_VARIANTS)
    assert code == 2 and "error: A: " in err and "unknown precision 'fp64'" in err


@pytest.mark.parametrize("content", ['{"schema_version": 1}', "[", "{}", '"x"'])
def test_blocks_invalid_probe_file(blocks, tmp_path, content):
    path = tmp_path / "probe.json"
    path.write_text(content)
    code, _out, err = blocks("tiny-sd", str(path), *SMALL)
    assert code == 2 and "error: B: " in err and str(path) in err
