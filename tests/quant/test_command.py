"""The ``quantize`` sub-command: error branches and end-to-end loading in diffusers."""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from gguf import GGMLQuantizationType as QT
from safetensors.torch import load_file, save_file

from conformance.quant import command, ggml, gguf_io
from conformance.quant.loading import (
    linear_weight_names,
    load_gguf_model,
    quantization_report,
    quantized_modules,
)
from conformance.quant.recipes import RECIPE_NAMES

torch.set_num_threads(1)

WEIGHTS = "diffusion_pytorch_model.safetensors"


def run_cli(*argv: str) -> int:
    """Parse ``argv`` with a parser holding only the quantize sub-command and run it."""
    parser = argparse.ArgumentParser(prog="conformance")
    sub = parser.add_subparsers(dest="cmd")
    command.register(sub)
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def quantize(src: Path | str, out: Path | str, qtype: str = "q8_0", *extra: str) -> int:
    """Run ``quantize SRC --type TYPE --out OUT [extra...]``."""
    return run_cli("quantize", str(src), "--type", qtype, "--out", str(out), *extra)


def assert_error(capsys: pytest.CaptureFixture[str], rc: int, *fragments: str) -> str:
    """Exit status 2 and exactly one ``error:`` line on stderr containing ``fragments``."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# ---------------------------------------------------------------------------
# tiny models
# ---------------------------------------------------------------------------


class TinyModel:
    """A saved random-init model, its fp32 reference output and example inputs."""

    def __init__(self, cls: type, directory: Path, model: Any, inputs: dict[str, Any]) -> None:
        self.cls = cls
        self.directory = directory
        self.inputs = inputs
        self.keys = set(model.state_dict())
        self.linear = linear_weight_names(model)
        with torch.no_grad():
            self.reference = model(**inputs).sample


@pytest.fixture(scope="module")
def flux(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    model = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=64,
        num_attention_heads=4,  # inner dim 256: every block Linear has rows of 256k
        joint_attention_dim=256,
        pooled_projection_dim=256,
        guidance_embeds=False,
        axes_dims_rope=(16, 24, 24),
    ).eval()
    directory = tmp_path_factory.mktemp("flux")
    model.save_pretrained(directory)
    g = torch.Generator().manual_seed(1)
    inputs = {
        "hidden_states": torch.randn(1, 16, 16, generator=g),
        "encoder_hidden_states": torch.randn(1, 8, 256, generator=g),
        "pooled_projections": torch.randn(1, 256, generator=g),
        "timestep": torch.tensor([0.5]),
        "img_ids": torch.zeros(16, 3),
        "txt_ids": torch.zeros(8, 3),
    }
    return TinyModel(FluxTransformer2DModel, directory, model, inputs)


@pytest.fixture(scope="module")
def unet(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    model = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 256),  # attention blocks at 256 channels
        layers_per_block=1,
        cross_attention_dim=256,
        attention_head_dim=64,
        norm_num_groups=32,
        use_linear_projection=True,
    ).eval()
    directory = tmp_path_factory.mktemp("unet")
    model.save_pretrained(directory)
    g = torch.Generator().manual_seed(1)
    inputs = {
        "sample": torch.randn(1, 4, 8, 8, generator=g),
        "timestep": torch.tensor([10]),
        "encoder_hidden_states": torch.randn(1, 5, 256, generator=g),
    }
    return TinyModel(UNet2DConditionModel, directory, model, inputs)


def _copy_model(src: Path, dst: Path, mutate: Callable[[dict[str, torch.Tensor]], None]) -> Path:
    dst.mkdir()
    shutil.copy(src / "config.json", dst / "config.json")
    state = load_file(str(src / WEIGHTS))
    mutate(state)
    save_file(state, str(dst / WEIGHTS))
    return dst


# ---------------------------------------------------------------------------
# error branches
# ---------------------------------------------------------------------------


def test_missing_src(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = quantize(tmp_path / "nope", tmp_path / "o.gguf")
    assert_error(capsys, rc, "nope", "no such file", "config.json + *.safetensors")


def test_directory_without_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m").mkdir()
    rc = quantize(tmp_path / "m", tmp_path / "o.gguf")
    assert_error(capsys, rc, "no config.json")


def test_pipeline_directory_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pipe").mkdir()
    (tmp_path / "pipe" / "model_index.json").write_text("{}")
    rc = quantize(tmp_path / "pipe", tmp_path / "o.gguf")
    assert_error(capsys, rc, "no config.json", "pipeline")


def test_pickled_weights_in_directory_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flux: TinyModel
) -> None:
    model = tmp_path / "m"
    model.mkdir()
    shutil.copy(flux.directory / "config.json", model / "config.json")
    (model / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04not really")
    rc = quantize(model, tmp_path / "o.gguf")
    assert_error(capsys, rc, "diffusion_pytorch_model.bin", "rejected", ".safetensors")


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin"])
def test_pickled_file_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    src = tmp_path / f"model{suffix}"
    src.write_bytes(b"\x80\x04")
    rc = quantize(src, tmp_path / "o.gguf")
    assert_error(capsys, rc, str(src), "pickled", "rejected")


def test_unsupported_file_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "weights.npz"
    src.write_bytes(b"")
    rc = quantize(src, tmp_path / "o.gguf")
    assert_error(capsys, rc, "unsupported file type", ".npz")


def test_corrupt_safetensors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "broken.safetensors"
    src.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    rc = quantize(src, tmp_path / "o.gguf")
    assert_error(capsys, rc, "broken.safetensors", "not a readable .safetensors")


@pytest.mark.parametrize(
    ("config_text", "fragment"),
    [
        ("{broken", "cannot read config.json"),
        ("[1, 2]", "JSON object"),
        ('{"in_channels": 4}', "no _class_name"),
        ('{"_class_name": "NotAModel"}', "not a diffusers model class"),
        ('{"_class_name": "StableDiffusionPipeline"}', "not a diffusers model class"),
    ],
)
def test_bad_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config_text: str, fragment: str
) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text(config_text)
    save_file({"a.weight": torch.ones(2, 256)}, str(model / WEIGHTS))
    rc = quantize(model, tmp_path / "o.gguf")
    assert_error(capsys, rc, fragment)


def test_directory_without_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"_class_name": "UNet2DModel"}')
    rc = quantize(model, tmp_path / "o.gguf")
    assert_error(capsys, rc, "no *.safetensors")


def test_ambiguous_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"_class_name": "UNet2DModel"}')
    for name in ("a.safetensors", "b.safetensors"):
        save_file({"x.weight": torch.ones(2, 256)}, str(model / name))
    rc = quantize(model, tmp_path / "o.gguf")
    assert_error(capsys, rc, "several .safetensors", "a.safetensors, b.safetensors")


def test_shard_index_with_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"_class_name": "UNet2DModel"}')
    index = {"weight_map": {"x.weight": "diffusion_pytorch_model-00001-of-00002.safetensors"}}
    (model / f"{WEIGHTS}.index.json").write_text(json.dumps(index))
    rc = quantize(model, tmp_path / "o.gguf")
    assert_error(capsys, rc, "shard file", "00001-of-00002", "is missing")


def test_unknown_type_lists_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flux: TinyModel
) -> None:
    rc = quantize(flux.directory, tmp_path / "o.gguf", "q4_k_s")
    line = assert_error(capsys, rc, "--type q4_k_s", "accepted:")
    for name in RECIPE_NAMES:
        assert name in line
    assert not (tmp_path / "o.gguf").exists()


def test_existing_output_needs_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flux: TinyModel
) -> None:
    out = tmp_path / "o.gguf"
    out.write_bytes(b"keep me")
    rc = quantize(flux.directory, out)
    assert_error(capsys, rc, "--out", "already exists", "--force")
    assert out.read_bytes() == b"keep me"
    rc = quantize(flux.directory, out, "q8_0", "--force")
    assert rc == 0
    assert gguf_io.read_gguf(out)  # replaced by a valid GGUF file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.gguf"]


@pytest.mark.parametrize(
    ("out_name", "fragment"),
    [("model.safetensors", "must end with .gguf"), ("missing/o.gguf", "does not exist")],
)
def test_bad_output_path(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flux: TinyModel,
    out_name: str,
    fragment: str,
) -> None:
    rc = quantize(flux.directory, tmp_path / out_name)
    assert_error(capsys, rc, "--out", fragment)


def test_output_is_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flux: TinyModel
) -> None:
    (tmp_path / "dir.gguf").mkdir()
    rc = quantize(flux.directory, tmp_path / "dir.gguf")
    assert_error(capsys, rc, "is a directory")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flux: TinyModel, bad: float
) -> None:
    victim = "transformer_blocks.0.attn.to_k.weight"

    def poison(state: dict[str, torch.Tensor]) -> None:
        state[victim][3, 5] = bad

    model = _copy_model(flux.directory, tmp_path / "m", poison)
    out = tmp_path / "o.gguf"
    rc = quantize(model, out, "q4_k_m")
    assert_error(capsys, rc, victim, "NaN or infinite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # nothing written


def test_single_file_without_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "w.safetensors"
    save_file({"lin.weight": torch.randn(4, 256), "lin.bias": torch.randn(4)}, str(src))
    out = tmp_path / "w.gguf"
    assert quantize(src, out, "q6_k") == 0
    captured = capsys.readouterr()
    assert "bits/weight" in captured.out and "Q6_K" in captured.out
    assert "treated as an nn.Linear" in captured.err
    tensors = gguf_io.read_gguf(out)
    assert tensors["lin.weight"].qtype == QT.Q6_K
    assert tensors["lin.bias"].qtype == QT.F32


def test_class_without_single_file_support_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from diffusers import UNet2DModel

    model = UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 32),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
    )
    model.save_pretrained(tmp_path / "m")
    assert quantize(tmp_path / "m", tmp_path / "o.gguf") == 0
    err = capsys.readouterr().err
    assert "cannot load UNet2DModel with from_single_file" in err


# ---------------------------------------------------------------------------
# end to end: quantize, load with diffusers, run
# ---------------------------------------------------------------------------

# max relative L2 error of the model output vs the fp32 model
OUTPUT_TOLERANCE = {"q8_0": 0.02, "q4_k_m": 0.15}


@pytest.mark.parametrize("recipe", ["q4_k_m", "q8_0"])
@pytest.mark.parametrize("which", ["flux", "unet"])
def test_end_to_end_quantized_model_runs_quantized(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    which: str,
    recipe: str,
) -> None:
    from diffusers.quantizers.gguf.utils import GGUFLinear, GGUFParameter

    tiny: TinyModel = request.getfixturevalue(which)
    out = tmp_path / f"{which}-{recipe}.gguf"
    assert quantize(tiny.directory, out, recipe) == 0
    summary = capsys.readouterr().out
    assert "bits/weight" in summary and "total" in summary

    stored = gguf_io.read_gguf(out, copy=False)
    assert set(stored) == tiny.keys  # names equal the state dict: no key conversion
    expected = {
        name.removesuffix(".weight"): t.qtype.name
        for name, t in stored.items()
        if t.qtype in ggml.QUANTIZED_TYPES
    }
    assert expected, "nothing was quantized"
    assert {f"{m}.weight" for m in expected} <= tiny.linear  # only nn.Linear weights

    model = load_gguf_model(tiny.cls, out, tiny.directory, torch.float32)

    seen: dict[str, tuple[bool, Any]] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, GGUFLinear):

            def hook(mod: torch.nn.Module, _args: Any, name: str = name) -> None:
                seen[name] = (isinstance(mod.weight, GGUFParameter), mod.weight.quant_type)

            handles.append(module.register_forward_pre_hook(hook))
    with torch.no_grad():
        output = model(**tiny.inputs).sample
    for handle in handles:
        handle.remove()

    # every quantized layer ran on its GGUF weights, with the type written in the file
    assert set(seen) == set(expected)
    for name, (is_gguf, quant_type) in seen.items():
        assert is_gguf, name
        assert QT(int(quant_type)).name == expected[name], name
    # and is still quantized after the forward pass
    assert quantized_modules(model) == expected
    report = quantization_report(model)
    assert report.consistent
    if recipe == "q4_k_m":
        assert {"Q4_K", "Q5_K"} <= set(report.counts())
    else:
        assert set(report.counts()) == {"Q8_0"}

    rel = float((output - tiny.reference).norm() / tiny.reference.norm())
    assert torch.isfinite(output).all()
    assert rel < OUTPUT_TOLERANCE[recipe], rel


@pytest.mark.parametrize("recipe", ["q8_0", "q6_k"])
@pytest.mark.parametrize("which", ["flux", "unet"])
def test_original_layout_runs_like_diffusers_layout(
    request: pytest.FixtureRequest, tmp_path: Path, which: str, recipe: str
) -> None:
    """Other block structures than the shipped models': the two layouts still agree exactly."""
    tiny: TinyModel = request.getfixturevalue(which)
    outputs = {}
    for layout in ("diffusers", "original"):
        out = tmp_path / f"{layout}.gguf"
        assert quantize(tiny.directory, out, recipe, "--layout", layout) == 0
        model = load_gguf_model(tiny.cls, out, tiny.directory, torch.float32)
        assert quantization_report(model).consistent
        with torch.no_grad():
            outputs[layout] = model(**tiny.inputs).sample
    names = set(gguf_io.read_gguf(tmp_path / "original.gguf", copy=False))
    assert not names & tiny.keys  # no diffusers name left
    assert torch.equal(outputs["diffusers"], outputs["original"])


def test_load_gguf_model_argument_errors(tmp_path: Path, flux: TinyModel) -> None:
    with pytest.raises(ValueError, match=r"\.gguf"):
        load_gguf_model(flux.cls, tmp_path / "model.safetensors", flux.directory)
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        load_gguf_model(flux.cls, tmp_path / "model.gguf", tmp_path)


def test_recipe_q4_k_m_layer_choices(tmp_path: Path, flux: TinyModel) -> None:
    out = tmp_path / "f.gguf"
    assert quantize(flux.directory, out, "q4_k_m") == 0
    types = {name: t.qtype for name, t in gguf_io.read_gguf(out, copy=False).items()}
    assert types["transformer_blocks.0.attn.to_q.weight"] == QT.Q4_K
    assert types["transformer_blocks.0.attn.to_out.0.weight"] == QT.Q5_K
    assert types["transformer_blocks.0.ff.net.2.weight"] == QT.Q5_K
    assert types["single_transformer_blocks.0.proj_out.weight"] == QT.Q5_K
    assert types["proj_out.weight"] == QT.Q6_K
    assert types["x_embedder.weight"] == QT.F16
    assert types["transformer_blocks.0.attn.to_q.bias"] == QT.F32


def test_quantize_model_is_the_command_without_its_printing(tmp_path):
    """The public API: the same file the command writes, a result to read, and errors as
    exceptions naming the argument."""
    import pytest as _pytest

    from conformance.models import get_model
    from conformance.quant import quantize_model
    from conformance.quant.command import CommandError

    unet = get_model("tiny-sd").path() / "unet"
    done = quantize_model(unet, "q8_0", tmp_path / "u.gguf")
    assert done.path == tmp_path / "u.gguf" and done.path.is_file()
    assert done.recipe.name == "q8_0" and done.tensors
    assert done.summary().startswith(f"wrote {tmp_path / 'u.gguf'} (recipe q8_0")
    with _pytest.raises(CommandError, match="exists"):
        quantize_model(unet, "q8_0", tmp_path / "u.gguf")  # never over a file unasked
    assert quantize_model(unet, "q8_0", tmp_path / "u.gguf", force=True).path.is_file()
    with _pytest.raises(CommandError, match="--type q9: unknown type; accepted: "):
        quantize_model(unet, "q9", tmp_path / "v.gguf")


@pytest.mark.parametrize(
    ("src", "out", "message"),
    [
        ("", "o.gguf", "SRC '': the path must not be empty"),
        ("m\x1b[2J", "o.gguf", r"SRC 'm\x1b[2J': the path: 'm\x1b[2J' holds the control "
                               "character U+001B; write one line of printable text"),
        ("m", " ", "--out ' ': the path must not be empty"),
        ("m", "o\n.gguf", "--out 'o\\n.gguf': the path: 'o\\n.gguf' holds the control "
                         "character U+000A"),
        ("m", "x" * 4097 + ".gguf", "the path has 4102 characters; at most 4096"),
    ],
)
def test_paths_are_one_line_of_text(src: str, out: str, message: str) -> None:
    from conformance.quant.command import CommandError, _resolve_output, resolve_source

    with pytest.raises(CommandError) as info:
        if src != "m":
            resolve_source(src)
        else:
            _resolve_output(out, force=False)
    assert message in str(info.value)
