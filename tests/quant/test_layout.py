"""GGUF files in the original checkpoint layout: writing, detection, loading, equality.

The shipped tiny models (``fixtures/tiny-sd`` UNet, ``fixtures/tiny-flux`` transformer)
are quantized in both layouts with ``conformance quantize``; diffusers' own
``from_single_file`` conversion loads the original layout, and both layouts must give the
same dequantized weights and the same pixels.
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as QT
from safetensors.torch import load_file

from conformance.quant import command, ggml, gguf_io
from conformance.quant.layout import (
    UNET_PREFIX,
    LayoutError,
    OriginalTensor,
    fuse,
    original_plan,
)
from conformance.quant.loading import _flux_single_block_width, gguf_layout, load_gguf_model
from conformance.quant.recipes import Decision, combine_decisions

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
WEIGHTS = "diffusion_pytorch_model.safetensors"
MODELS = {
    "flux": (FIXTURES / "tiny-flux", "transformer", "FluxTransformer2DModel"),
    "sd": (FIXTURES / "tiny-sd", "unet", "UNet2DConditionModel"),
}
# (model, recipe) pairs whose two layouts hold the same bytes for every weight: every recipe
# for the SD UNet (nothing fused) and the uniform recipes for Flux (fused parts agree)
IDENTICAL = [("flux", "q8_0"), ("flux", "q6_k"), ("sd", "q8_0"), ("sd", "q4_k_m")]


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="conformance")
    command.register(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def model_class(which: str) -> Any:
    import diffusers

    return getattr(diffusers, MODELS[which][2])


def model_dir(which: str) -> Path:
    root, component, _ = MODELS[which]
    return root / component


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str, str], Path]:
    """``(model, recipe, layout) -> path``, quantized once per module."""
    folder = tmp_path_factory.mktemp("gguf-layout")
    made: dict[tuple[str, str, str], Path] = {}

    def get(which: str, recipe: str, layout: str) -> Path:
        key = (which, recipe, layout)
        if key not in made:
            out = folder / f"{which}-{recipe}-{layout}.gguf"
            rc = run_cli("quantize", str(model_dir(which)), "--type", recipe,
                         "--out", str(out), "--layout", layout)
            assert rc == 0
            made[key] = out
        return made[key]

    return get


def dequantized(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    from diffusers.quantizers.gguf.utils import GGUFParameter, dequantize_gguf_tensor

    return {
        name: (dequantize_gguf_tensor(t) if isinstance(t, GGUFParameter) else t).float()
        for name, t in model.state_dict().items()
    }


def storage(model: torch.nn.Module) -> dict[str, str]:
    """How every tensor is held: its GGML type, or its torch dtype when not quantized."""
    from diffusers.quantizers.gguf.utils import GGUFParameter

    return {
        name: QT(int(t.quant_type)).name if isinstance(t, GGUFParameter) else str(t.dtype)
        for name, t in model.state_dict().items()
    }


def load(which: str, path: Path) -> Any:
    return load_gguf_model(model_class(which), path, model_dir(which), torch.float32)


def rewrite(src: Path, dst: Path, rename: Callable[[str], str | None], arch: str) -> Path:
    """Copy a GGUF file's tensors (bytes unchanged) under new names (``None`` drops one)."""
    tensors = []
    for name, t in gguf_io.read_gguf(src).items():
        new = rename(name)
        if new is not None:
            tensors.append(gguf_io.QuantizedTensor(new, t.qtype, t.shape, t.data))
    return gguf_io.write_gguf(dst, tensors, arch=arch)


# ---------------------------------------------------------------------------
# what is written
# ---------------------------------------------------------------------------


def test_original_names_and_metadata(gguf_file: Callable[[str, str, str], Path]) -> None:
    flux = gguf_io.read_gguf(gguf_file("flux", "q8_0", "original"), copy=False)
    assert {"img_in.weight", "txt_in.weight", "double_blocks.0.img_attn.qkv.weight",
            "double_blocks.0.txt_attn.qkv.bias", "single_blocks.0.linear1.weight",
            "single_blocks.0.linear2.weight", "final_layer.adaLN_modulation.1.weight",
            "double_blocks.0.img_attn.norm.query_norm.scale"} <= set(flux)
    assert not any(n.startswith(("transformer_blocks.", UNET_PREFIX)) for n in flux)
    assert flux["double_blocks.0.img_attn.qkv.weight"].shape == (768, 256)
    assert flux["single_blocks.0.linear1.weight"].shape == (3 * 256 + 1024, 256)
    assert flux["double_blocks.0.img_attn.qkv.weight"].qtype == QT.Q8_0

    sd = gguf_io.read_gguf(gguf_file("sd", "q8_0", "original"), copy=False)
    assert all(n.startswith(UNET_PREFIX) for n in sd)
    assert f"{UNET_PREFIX}input_blocks.1.0.in_layers.0.weight" in sd
    assert f"{UNET_PREFIX}middle_block.1.transformer_blocks.0.attn1.to_q.weight" in sd
    assert len(sd) == len(load_file(str(model_dir("sd") / WEIGHTS)))

    for which, arch in (("flux", "flux"), ("sd", "sd1")):
        meta = gguf_io.read_metadata(gguf_file(which, "q8_0", "original"))
        assert meta["general.architecture"] == arch
        assert meta["general.file_type"] == 7  # MOSTLY_Q8_0
        assert meta["general.quantization_version"] == 2
        assert meta["conformance.recipe"] == "q8_0"
        assert not any(key.startswith("diffusers.") for key in meta)
    # the default layout is unchanged
    assert gguf_io.read_metadata(gguf_file("flux", "q8_0", "diffusers"))[
        "general.architecture"] == "diffusers"


def test_fused_tensor_bytes_are_the_parts_bytes(
    gguf_file: Callable[[str, str, str], Path],
) -> None:
    """Row-wise block quantization: the fused qkv holds exactly q, k and v's bytes."""
    ours = gguf_io.read_gguf(gguf_file("flux", "q8_0", "diffusers"), copy=False)
    orig = gguf_io.read_gguf(gguf_file("flux", "q8_0", "original"), copy=False)
    fused = orig["double_blocks.0.img_attn.qkv.weight"].data
    parts = [ours[f"transformer_blocks.0.attn.to_{x}.weight"].data for x in "qkv"]
    assert np.array_equal(fused, np.concatenate(parts))
    linear1 = orig["single_blocks.0.linear1.weight"].data
    names = ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"]
    parts = [ours[f"single_transformer_blocks.0.{n}.weight"].data for n in names]
    assert np.array_equal(linear1, np.concatenate(parts))
    ada = orig["final_layer.adaLN_modulation.1.weight"].data
    scale, shift = np.split(ours["norm_out.linear.weight"].data, 2)
    assert np.array_equal(ada, np.concatenate([shift, scale]))


def test_fused_qkv_round_trip_through_diffusers_conversion() -> None:
    """diffusers state -> original layout (ours) -> diffusers' conversion: bit for bit."""
    from diffusers.loaders.single_file_utils import (
        convert_flux_transformer_checkpoint_to_diffusers,
    )

    state = load_file(str(model_dir("flux") / WEIGHTS))
    plan = original_plan("FluxTransformer2DModel", {}, state)
    fused = {spec.name: fuse(spec, [state[p] for p in spec.parts]) for spec in plan}
    d = 256
    qkv = fused["double_blocks.0.img_attn.qkv.weight"]
    for i, x in enumerate("qkv"):  # original order: q, k, v
        part = state[f"transformer_blocks.0.attn.to_{x}.weight"]
        assert torch.equal(qkv[i * d:(i + 1) * d], part)
    with _flux_single_block_width(state):
        back = convert_flux_transformer_checkpoint_to_diffusers(dict(fused))
    assert back.keys() == state.keys()
    for name, tensor in state.items():
        assert torch.equal(back[name], tensor), name


def test_plan_at_flux1_width_needs_no_help_from_the_loader() -> None:
    """At FLUX.1's real size (meta tensors) diffusers' conversion inverts the plan as is."""
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel
    from diffusers.loaders.single_file_utils import (
        convert_flux_transformer_checkpoint_to_diffusers,
    )

    with init_empty_weights():
        model = FluxTransformer2DModel(guidance_embeds=True)  # FLUX.1-dev: 19 + 38 blocks
    state = model.state_dict()
    plan = original_plan("FluxTransformer2DModel", {}, state)
    assert sum(len(s.parts) for s in plan) == len(state)
    assert "guidance_in.in_layer.weight" in {s.name for s in plan}
    fused = {spec.name: fuse(spec, [state[p] for p in spec.parts]) for spec in plan}
    assert fused["single_blocks.37.linear1.weight"].shape == (21504, 3072)
    back = convert_flux_transformer_checkpoint_to_diffusers(dict(fused))
    assert {k: tuple(v.shape) for k, v in back.items()} == {
        k: tuple(v.shape) for k, v in state.items()
    }


def test_plan_refuses_incomplete_or_unknown_state_dicts() -> None:
    to_k = "transformer_blocks.0.attn.to_k.weight"
    keys = set(load_file(str(model_dir("flux") / WEIGHTS)))
    with pytest.raises(LayoutError, match=r"'double_blocks\.0\.img_attn\.qkv\.weight' fuses 3"):
        original_plan("FluxTransformer2DModel", {}, keys - {to_k})
    with pytest.raises(LayoutError, match=r"no place in the original layout \('extra\.weight'\)"):
        original_plan("FluxTransformer2DModel", {}, keys | {"extra.weight"})
    with pytest.raises(LayoutError, match="no original layout is known for SD3Transformer2DModel"):
        original_plan("SD3Transformer2DModel", {}, keys)


def test_fused_decision_takes_the_most_precise_part() -> None:
    q = Decision("a.to_q.weight", (256, 256), QT.Q4_K, "Linear weight")
    v = Decision("a.to_v.weight", (256, 256), QT.Q5_K, "attention value projection, one level up")
    got = combine_decisions("qkv.weight", (768, 256), [q, q, v])
    assert got.qtype == QT.Q5_K and got.shape == (768, 256) and "most precise" in got.reason
    same = combine_decisions("qkv.weight", (768, 256), [q, q, q])
    assert same.qtype == QT.Q4_K and "fused from" in same.reason
    assert combine_decisions("x", (256, 256), [q]).qtype == QT.Q4_K


def test_fuse_swaps_halves_and_checks_parts() -> None:
    spec = OriginalTensor("final.weight", ("a",), swap_halves=True)
    arr = np.arange(8, dtype=np.float32).reshape(4, 2)
    assert np.array_equal(fuse(spec, [arr]), arr[[2, 3, 0, 1]])
    with pytest.raises(ValueError, match="expected 1 parts"):
        fuse(spec, [arr, arr])


# ---------------------------------------------------------------------------
# both layouts load to the same model and draw the same image
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("which", "recipe"), IDENTICAL)
def test_layouts_load_bit_identical(
    gguf_file: Callable[[str, str, str], Path], which: str, recipe: str
) -> None:
    ours = load(which, gguf_file(which, recipe, "diffusers"))
    orig = load(which, gguf_file(which, recipe, "original"))
    assert storage(orig) == storage(ours)
    assert any(v.startswith("Q") for v in storage(ours).values())
    a, b = dequantized(ours), dequantized(orig)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_flux_q4_k_m_fused_tensors_take_the_higher_type(
    gguf_file: Callable[[str, str, str], Path],
) -> None:
    """q4_k_m raises q/k (Q4_K) to their fused v's Q5_K; everything else is identical."""
    from diffusers.quantizers.gguf.utils import GGUFParameter, dequantize_gguf_tensor

    ours = load("flux", gguf_file("flux", "q4_k_m", "diffusers"))
    orig = load("flux", gguf_file("flux", "q4_k_m", "original"))
    kinds_ours, kinds_orig = storage(ours), storage(orig)
    fused_parts = {p for spec in original_plan("FluxTransformer2DModel", {}, kinds_ours)
                   if spec.fused for p in spec.parts}
    assert kinds_ours["transformer_blocks.0.attn.to_q.weight"] == "Q4_K"
    assert kinds_ours["transformer_blocks.0.attn.to_v.weight"] == "Q5_K"
    source = load_file(str(model_dir("flux") / WEIGHTS))
    a, b = dequantized(ours), dequantized(orig)
    for name in a:
        if name not in fused_parts:
            assert kinds_orig[name] == kinds_ours[name], name
            assert torch.equal(a[name], b[name]), name
        elif name.endswith(".weight"):
            assert kinds_orig[name] == "Q5_K", name
            qtype = QT[kinds_orig[name]]
            raw = torch.from_numpy(ggml.quantize(source[name].numpy(), qtype))
            expected = dequantize_gguf_tensor(GGUFParameter(raw, quant_type=qtype)).float()
            assert torch.equal(b[name], expected), name
        else:  # biases stay F32, unchanged
            assert torch.equal(a[name], b[name]), name


@pytest.fixture(scope="module")
def pipelines() -> dict[str, Any]:
    from diffusers import DiffusionPipeline

    return {
        which: DiffusionPipeline.from_pretrained(
            str(MODELS[which][0]), local_files_only=True, dtype=torch.float32
        )
        for which in MODELS
    }


def _generate(pipe: Any, which: str, denoiser: Any) -> np.ndarray:
    setattr(pipe, MODELS[which][1], denoiser)
    out = pipe(
        prompt="a red circle above a blue square",
        num_inference_steps=2,
        height=32,
        width=32,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    )
    return np.asarray(out.images)


@pytest.mark.parametrize(("which", "recipe"), IDENTICAL)
def test_layouts_draw_the_same_pixels(
    gguf_file: Callable[[str, str, str], Path],
    pipelines: dict[str, Any],
    which: str,
    recipe: str,
) -> None:
    pipe = pipelines[which]
    images = {
        layout: _generate(pipe, which, load(which, gguf_file(which, recipe, layout)))
        for layout in ("diffusers", "original")
    }
    assert images["diffusers"].shape == (1, 32, 32, 3)
    assert float(images["diffusers"].std()) > 0
    assert np.array_equal(images["diffusers"], images["original"])


def test_sd_original_layout_without_prefix_loads(
    tmp_path: Path, gguf_file: Callable[[str, str, str], Path]
) -> None:
    src = gguf_file("sd", "q8_0", "original")
    bare = rewrite(src, tmp_path / "bare.gguf", lambda n: n.removeprefix(UNET_PREFIX), "sd1")
    found = gguf_layout(model_class("sd"), bare, model_dir("sd"))
    assert (found.layout, found.prefix, found.architecture) == ("original", "", "sd1")
    a = dequantized(load("sd", src))
    b = dequantized(load("sd", bare))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_flux_original_layout_with_prefix_loads(
    tmp_path: Path, gguf_file: Callable[[str, str, str], Path]
) -> None:
    src = gguf_file("flux", "q8_0", "original")
    prefixed = rewrite(src, tmp_path / "prefixed.gguf", lambda n: UNET_PREFIX + n, "flux")
    found = gguf_layout(model_class("flux"), prefixed, model_dir("flux"))
    assert (found.layout, found.prefix) == ("original", UNET_PREFIX)
    a = dequantized(load("flux", src))
    b = dequantized(load("flux", prefixed))
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------
# detection errors, CLI errors, offline loading
# ---------------------------------------------------------------------------


def test_names_fitting_neither_layout_are_refused(
    tmp_path: Path, gguf_file: Callable[[str, str, str], Path]
) -> None:
    src = gguf_file("flux", "q8_0", "diffusers")
    odd = rewrite(src, tmp_path / "odd.gguf",
                  lambda n: "blocks.0.mystery.weight" if n == "x_embedder.weight" else n,
                  "diffusers")
    with pytest.raises(LayoutError, match=r"odd\.gguf.*'blocks\.0\.mystery\.weight'"):
        load("flux", odd)
    with pytest.raises(LayoutError, match=r"odd\.gguf.*fits neither"):
        gguf_layout(model_class("flux"), odd, model_dir("flux"))

    # a Flux file is neither layout of the UNet
    with pytest.raises(LayoutError, match=r"flux-q8_0-original\.gguf.*'flux'.*fits neither"):
        load("sd", gguf_file("flux", "q8_0", "original"))

    short = rewrite(gguf_file("flux", "q8_0", "original"), tmp_path / "short.gguf",
                    lambda n: None if n == "img_in.bias" else n, "flux")
    with pytest.raises(LayoutError, match=r"short\.gguf.*'img_in\.bias' is missing"):
        load("flux", short)

    mixed = rewrite(src, tmp_path / "mixed.gguf",
                    lambda n: "img_in.weight" if n == "x_embedder.weight" else n, "diffusers")
    with pytest.raises(LayoutError, match=r"mixed\.gguf.*mixes the two layouts"):
        load("flux", mixed)


def test_unknown_layout_is_an_argparse_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        run_cli("quantize", str(model_dir("sd")), "--type", "q8_0",
                "--out", str(tmp_path / "x.gguf"), "--layout", "comfy")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--layout" in err and "invalid choice: 'comfy'" in err
    assert "'diffusers'" in err and "'original'" in err
    assert not list(tmp_path.iterdir())

    # called without argparse (as the suite's generator does)
    args = argparse.Namespace(src=str(model_dir("sd")), qtype="q8_0",
                              out=str(tmp_path / "x.gguf"), force=False, layout="comfy")
    assert command.run_quantize(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --layout 'comfy': unknown layout; accepted: diffusers, original"


def test_original_layout_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from diffusers import UNet2DModel
    from safetensors.torch import save_file

    UNet2DModel(sample_size=8, block_out_channels=(32, 32), norm_num_groups=8,
                down_block_types=("DownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "UpBlock2D"),
                layers_per_block=1).save_pretrained(tmp_path / "m")
    rc = run_cli("quantize", str(tmp_path / "m"), "--type", "q8_0",
                 "--out", str(tmp_path / "a.gguf"), "--layout", "original")
    err = capsys.readouterr().err
    assert rc == 2 and "no original layout is known for UNet2DModel" in err
    assert "FluxTransformer2DModel, UNet2DConditionModel" in err

    lone = tmp_path / "lone" / "w.safetensors"
    lone.parent.mkdir()
    save_file({"lin.weight": torch.randn(4, 256)}, str(lone))
    rc = run_cli("quantize", str(lone), "--type", "q8_0",
                 "--out", str(tmp_path / "b.gguf"), "--layout", "original")
    err = capsys.readouterr().err
    assert rc == 2 and "needs the model's config.json" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lone", "m"]  # nothing written


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Record (and refuse) every attempt to resolve a host or open a connection."""
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args[1] if len(args) > 1 else args)
        raise OSError("network access attempted during a GGUF load")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: refuse(None, a))
    yield attempts


def test_loading_stays_offline(
    monkeypatch: pytest.MonkeyPatch,
    no_network: list[Any],
    gguf_file: Callable[[str, str, str], Path],
) -> None:
    import huggingface_hub.constants

    paths = {(w, layout): gguf_file(w, "q8_0", layout)
             for w in MODELS for layout in ("diffusers", "original")}
    # no attempt to reach the hub even where it would be allowed ...
    for (which, _layout), path in paths.items():
        load(which, path)
    assert no_network == []
    # ... and it works with the hub switched off
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    for (which, _layout), path in paths.items():
        assert load(which, path) is not None
    assert no_network == []
