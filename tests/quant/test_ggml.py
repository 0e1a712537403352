"""Properties of the GGML quantizers, the recipes and the GGUF writer/reader."""

from __future__ import annotations

import time
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as QT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conformance.quant import ggml, gguf_io, recipes
from conformance.quant.recipes import choose_type, get_recipe

torch.set_num_threads(1)

K_TYPES = (QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K)
ALL_TYPES = ggml.QUANTIZED_TYPES
EXPECTED_SIZES = {
    QT.Q2_K: (256, 84),
    QT.Q3_K: (256, 110),
    QT.Q4_K: (256, 144),
    QT.Q5_K: (256, 176),
    QT.Q6_K: (256, 210),
    QT.Q4_0: (32, 18),
    QT.Q5_0: (32, 22),
    QT.Q8_0: (32, 34),
}
# Largest per-block reconstruction error allowed, as a fraction of the block's max |w|.
REL_BOUND = {
    QT.Q2_K: 0.65,
    QT.Q3_K: 0.40,
    QT.Q4_K: 0.20,
    QT.Q5_K: 0.10,
    QT.Q6_K: 0.045,
    QT.Q4_0: 0.13,
    QT.Q5_0: 0.07,
    QT.Q8_0: 0.005,
}
# Absolute slack for blocks whose scales sit in the fp16 subnormal range.
ABS_FLOOR = 2.0**-22
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SCALES = (1e-6, 1e-3, 1.0, 1e2, 1e4)
KINDS = ("gaussian", "uniform", "heavy", "sparse", "positive", "levels", "raw")


@st.composite
def weight_blocks(draw: st.DrawFn, block_size: int, max_scale: float = 1e4) -> np.ndarray:
    """Float32 arrays of 1-3 blocks: assorted distributions, scales and outliers."""
    n_blocks = draw(st.integers(1, 3))
    shape = (n_blocks, block_size)
    scale = draw(st.sampled_from([s for s in SCALES if s <= max_scale]))
    kind = draw(st.sampled_from(KINDS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "raw":
        elems = st.floats(-1.0, 1.0, width=32, allow_subnormal=False)
        x = draw(hnp.arrays(np.float32, shape, elements=elems)).astype(np.float64)
    elif kind == "gaussian":
        x = rng.standard_normal(shape)
    elif kind == "uniform":
        x = rng.uniform(-1.0, 1.0, shape)
    elif kind == "heavy":
        x = np.clip(rng.standard_t(2.0, shape), -50.0, 50.0)
    elif kind == "sparse":
        x = rng.standard_normal(shape) * (rng.random(shape) < 0.1)
    elif kind == "positive":
        x = np.abs(rng.standard_normal(shape)) + draw(st.floats(0.0, 5.0))
    else:
        x = rng.choice(np.array([-1.0, -0.5, 0.0, 0.25, 1.0]), shape)
    for _ in range(draw(st.integers(0, 2))):
        idx = draw(st.integers(0, x.size - 1))
        x.flat[idx] = draw(st.floats(-50.0, 50.0, allow_subnormal=False))
    return (x * scale).astype(np.float32)


def _block_errors(x: np.ndarray, y: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    xb = x.reshape(-1, block_size).astype(np.float64)
    yb = y.reshape(-1, block_size).astype(np.float64)
    return np.abs(xb - yb).max(axis=1), np.abs(xb).max(axis=1)


def _assert_reconstructs(x: np.ndarray, qtype: QT) -> np.ndarray:
    data = ggml.quantize(x, qtype)
    block_size, type_size = ggml.block_info(qtype)
    assert data.dtype == np.uint8
    assert data.shape == (*x.shape[:-1], x.shape[-1] // block_size * type_size)
    y = gguf.quants.dequantize(data, qtype)
    assert y.shape == x.shape
    err, amax = _block_errors(x, y, block_size)
    limit = REL_BOUND[qtype] * amax + ABS_FLOOR
    assert np.all(err <= limit), (qtype.name, float((err / np.maximum(amax, 1e-30)).max()))
    return data


def _diffusers_dequantize(data: np.ndarray, qtype: QT) -> np.ndarray:
    from diffusers.quantizers.gguf.utils import GGUFParameter, dequantize_gguf_tensor

    param = GGUFParameter(torch.from_numpy(np.ascontiguousarray(data)), quant_type=qtype)
    return dequantize_gguf_tensor(param).float().numpy()


# ---------------------------------------------------------------------------
# quantizer properties (every type)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
def test_block_sizes_match_ggml(qtype: QT) -> None:
    assert ggml.block_info(qtype) == EXPECTED_SIZES[qtype]


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
def test_gguf_dequantize_reconstructs(qtype: QT) -> None:
    block_size = ggml.block_info(qtype)[0]

    @SETTINGS
    @given(weight_blocks(block_size))
    def check(x: np.ndarray) -> None:
        _assert_reconstructs(x, qtype)

    check()


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
def test_diffusers_dequantizer_agrees_with_gguf(qtype: QT) -> None:
    block_size = ggml.block_info(qtype)[0]

    # diffusers dequantizes in float16, so stay inside its range
    @SETTINGS
    @given(weight_blocks(block_size, max_scale=1e2))
    def check(x: np.ndarray) -> None:
        data = ggml.quantize(x, qtype)
        ref = gguf.quants.dequantize(data, qtype)
        got = _diffusers_dequantize(data, qtype)
        assert got.shape == ref.shape
        diff, _ = _block_errors(ref, got, block_size)
        ref_max = np.abs(ref.reshape(-1, block_size)).max(axis=1)
        assert np.all(diff <= 4e-3 * ref_max + 1e-7)

    check()


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("rows", [1, 3])
def test_byte_length_is_blocks_times_type_size(qtype: QT, rows: int) -> None:
    block_size, type_size = ggml.block_info(qtype)
    x = np.random.default_rng(0).standard_normal((rows, 4 * block_size)).astype(np.float32)
    data = ggml.quantize(x, qtype)
    assert data.nbytes == rows * 4 * type_size
    assert data.shape == (rows, 4 * type_size)
    # a 3-D tensor keeps its leading dimensions
    data3 = ggml.quantize(x.reshape(1, rows, -1), qtype)
    assert data3.shape == (1, rows, 4 * type_size)
    assert np.array_equal(data3.reshape(data.shape), data)


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
def test_rejects_bad_row_length_and_non_finite(qtype: QT) -> None:
    block_size = ggml.block_info(qtype)[0]
    with pytest.raises(ValueError, match="multiple"):
        ggml.quantize(np.zeros((2, block_size + 1), np.float32), qtype)
    bad = np.zeros((1, block_size), np.float32)
    bad[0, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ggml.quantize(bad, qtype)
    bad[0, 3] = np.inf
    with pytest.raises(ValueError, match="NaN"):
        ggml.quantize(bad, qtype)


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
def test_values_beyond_fp16_scales_raise(qtype: QT) -> None:
    block_size = ggml.block_info(qtype)[0]
    x = np.full((1, block_size), 1e12, np.float32)
    x[0, 0] = -1e12
    with pytest.raises(ggml.QuantRangeError):
        ggml.quantize(x, qtype)


# ---------------------------------------------------------------------------
# edge cases
# ---------------------------------------------------------------------------


def _edge_cases(block_size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    shape = (2, 2 * block_size)
    outlier = (rng.standard_normal(shape) * 0.01).astype(np.float32)
    outlier[0, 5] = 100.0
    outlier[1, block_size + 3] = -100.0
    return {
        "zeros": np.zeros(shape, np.float32),
        "constant": np.full(shape, 0.37, np.float32),
        "negative_constant": np.full(shape, -2.5, np.float32),
        "huge": (rng.standard_normal(shape) * 1e4).astype(np.float32),
        "tiny": (rng.standard_normal(shape) * 1e-6).astype(np.float32),
        "outlier": outlier,
    }


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
def test_edge_cases(qtype: QT) -> None:
    block_size = ggml.block_info(qtype)[0]
    cases = _edge_cases(block_size)
    for name, x in cases.items():
        data = _assert_reconstructs(x, qtype)
        y = gguf.quants.dequantize(data, qtype)
        if name == "zeros":
            assert np.all(y == 0.0)
        if name == "tiny":
            # scale invariance down to the fp16 subnormal granularity of the block scales
            unit = x / np.float32(1e-6)
            unit_y = gguf.quants.dequantize(ggml.quantize(unit, qtype), qtype)
            unit_rmse = np.sqrt(np.mean((unit_y - unit) ** 2))
            assert np.sqrt(np.mean((y - x) ** 2)) <= 1.5e-6 * unit_rmse + 3e-8
        if name == "outlier":
            for row, col in ((0, 5), (1, block_size + 3)):
                assert abs(y[row, col] - x[row, col]) <= REL_BOUND[qtype] * 100.0
            assert np.sign(y[0, 5]) == 1 and np.sign(y[1, block_size + 3]) == -1
        if name.endswith("constant") and qtype in K_TYPES:
            assert np.abs(y - x).max() <= 0.01 * np.abs(x).max()


def test_reference_types_match_gguf_py_bit_for_bit() -> None:
    x = np.random.default_rng(3).standard_normal((8, 1024)).astype(np.float32)
    for qtype in (QT.Q8_0, QT.Q4_0, QT.Q5_0):
        ours = ggml.quantize(x, qtype)
        theirs = gguf.quants.quantize(x, qtype)
        assert np.array_equal(ours, theirs), qtype.name


def test_tiny_blocks_beat_reference_flush_to_zero() -> None:
    x = (np.random.default_rng(4).standard_normal((4, 256)) * 1e-6).astype(np.float32)
    for qtype in (QT.Q8_0, QT.Q4_0, QT.Q5_0):
        ours = gguf.quants.dequantize(ggml.quantize(x, qtype), qtype)
        ref = gguf.quants.dequantize(gguf.quants.quantize(x, qtype), qtype)
        assert np.abs(ours - x).mean() < np.abs(ref - x).mean(), qtype.name


def test_rmse_ordering_on_gaussian_weights() -> None:
    x = np.random.default_rng(11).standard_normal((128, 1024)).astype(np.float32)
    rmse = {}
    for qtype in ALL_TYPES:
        y = gguf.quants.dequantize(ggml.quantize(x, qtype), qtype)
        rmse[qtype] = float(np.sqrt(np.mean((y - x) ** 2)))
    order = [QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K, QT.Q8_0]
    values = [rmse[t] for t in order]
    assert values == sorted(values, reverse=True), rmse
    # K-quants beat the legacy formats of equal size
    assert rmse[QT.Q4_K] < rmse[QT.Q4_0]
    assert rmse[QT.Q5_K] < rmse[QT.Q5_0]
    # sanity: Q4_K within the usual range for unit Gaussians
    assert 0.05 < rmse[QT.Q4_K] < 0.09


def test_one_million_weights_quantize_fast() -> None:
    x = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    for qtype in K_TYPES:
        start = time.perf_counter()
        ggml.quantize(x, qtype)
        assert time.perf_counter() - start < 5.0, qtype.name


def test_float_types() -> None:
    x = np.random.default_rng(0).standard_normal((3, 10)).astype(np.float32)
    assert ggml.quantize(x, QT.F32).dtype == np.float32
    assert ggml.quantize(x, QT.F16).dtype == np.float16
    bf = ggml.quantize(x, QT.BF16)
    assert bf.dtype == np.uint8 and bf.shape == (3, 20)
    assert np.allclose(gguf.quants.dequantize(bf, QT.BF16), x, rtol=1e-2)
    with pytest.raises(ggml.QuantRangeError):
        ggml.quantize(np.array([1e6], np.float32), QT.F16)


# ---------------------------------------------------------------------------
# recipes
# ---------------------------------------------------------------------------

LINEAR = {
    "blocks.0.attn.to_q.weight",
    "blocks.0.attn.to_v.weight",
    "blocks.0.attn.to_out.0.weight",
    "blocks.0.ff.net.2.weight",
    "blocks.0.small.weight",
    "blocks.0.odd.weight",
    "time_embedding.linear_1.weight",
    "proj_out.weight",
}


@pytest.mark.parametrize(
    ("recipe", "name", "shape", "expected"),
    [
        ("q4_k_m", "blocks.0.attn.to_q.weight", (256, 256), QT.Q4_K),
        ("q4_k_m", "blocks.0.attn.to_v.weight", (256, 256), QT.Q5_K),
        ("q4_k_m", "blocks.0.attn.to_out.0.weight", (256, 256), QT.Q5_K),
        ("q4_k_m", "blocks.0.ff.net.2.weight", (256, 1024), QT.Q5_K),
        ("q4_k_m", "proj_out.weight", (16, 256), QT.Q6_K),
        ("q4_k_m", "blocks.0.small.weight", (64, 128), QT.Q5_0),
        ("q4_k_m", "blocks.0.odd.weight", (64, 100), QT.F16),
        ("q4_k_m", "time_embedding.linear_1.weight", (256, 256), QT.F16),
        ("q4_k_m", "blocks.0.attn.to_q.bias", (256,), QT.F32),
        ("q4_k_m", "blocks.0.norm.weight", (256,), QT.F32),
        ("q4_k_m", "conv_in.weight", (32, 4, 3, 3), QT.F16),
        ("q4_k_m", "class_embedding.weight", (10, 256), QT.F16),
        ("q5_k_m", "blocks.0.attn.to_q.weight", (256, 256), QT.Q5_K),
        ("q5_k_m", "blocks.0.attn.to_out.0.weight", (256, 256), QT.Q6_K),
        ("q3_k_m", "blocks.0.attn.to_q.weight", (256, 256), QT.Q3_K),
        ("q3_k_m", "blocks.0.attn.to_v.weight", (256, 256), QT.Q4_K),
        ("q3_k_m", "blocks.0.small.weight", (64, 128), QT.Q4_0),
        ("q2_k", "blocks.0.attn.to_q.weight", (256, 256), QT.Q2_K),
        ("q2_k", "blocks.0.ff.net.2.weight", (256, 1024), QT.Q3_K),
        ("q6_k", "blocks.0.attn.to_out.0.weight", (256, 256), QT.Q6_K),
        ("q6_k", "blocks.0.small.weight", (64, 128), QT.Q8_0),
        ("q8_0", "blocks.0.attn.to_out.0.weight", (256, 256), QT.Q8_0),
        ("q8_0", "proj_out.weight", (16, 256), QT.Q8_0),
        ("q4_0", "blocks.0.attn.to_q.weight", (256, 256), QT.Q4_0),
        ("q5_0", "blocks.0.small.weight", (64, 128), QT.Q5_0),
        ("bf16", "blocks.0.attn.to_q.weight", (256, 256), QT.BF16),
        ("bf16", "conv_in.weight", (32, 4, 3, 3), QT.F32),
        ("f16", "blocks.0.attn.to_q.weight", (256, 256), QT.F16),
        ("f16", "blocks.0.norm.weight", (256,), QT.F32),
        ("f32", "blocks.0.attn.to_q.weight", (256, 256), QT.F32),
    ],
)
def test_recipe_decisions(recipe: str, name: str, shape: tuple[int, ...], expected: QT) -> None:
    decision = choose_type(name, shape, recipe, linear_names=LINEAR)
    assert decision.qtype == expected, decision
    assert decision.reason


def test_recipe_linear_set_versus_heuristic() -> None:
    # a 2-D weight that is not in the Linear set (e.g. an nn.Embedding) stays float
    d = choose_type("tok.weight", (512, 256), "q4_k_m", linear_names={"other.weight"})
    assert d.qtype == QT.F16 and "not an nn.Linear" in d.reason
    # without a Linear set, 2-D *.weight tensors count as Linear
    assert choose_type("tok.weight", (512, 256), "q4_k_m").qtype == QT.Q4_K
    # huge values stay F32 rather than overflowing fp16 scales
    d = choose_type("a.weight", (4, 256), "q4_k_m", max_abs=1e5)
    assert d.qtype == QT.F32
    assert choose_type("ids", (4,), "q4_k_m", is_float=False).qtype == QT.I32


def test_recipe_names_and_errors() -> None:
    assert set(recipes.RECIPE_NAMES) == {
        "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q3_k_m", "q2_k",
        "q4_0", "q5_0", "f16", "bf16", "f32",
    }  # fmt: skip
    assert get_recipe("Q4_K_M") is get_recipe("q4-k-m")
    with pytest.raises(KeyError, match="accepted: q8_0"):
        get_recipe("q4_k_s")
    for rec in recipes.RECIPES.values():
        if rec.name.endswith("_m") or rec.name == "q2_k":
            ladder = [QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K]
            assert ladder.index(rec.sensitive) == ladder.index(rec.base) + 1


@settings(max_examples=60, deadline=None)
@given(
    recipe=st.sampled_from(recipes.RECIPE_NAMES),
    leaf=st.sampled_from(["weight", "bias"]),
    module=st.sampled_from(["a.to_q", "a.to_out.0", "a.ff.net.2", "proj_out", "x_embedder"]),
    shape=st.lists(st.integers(1, 1100), min_size=1, max_size=4).map(tuple),
    linear=st.booleans(),
)
def test_recipe_invariants(
    recipe: str, leaf: str, module: str, shape: tuple[int, ...], linear: bool
) -> None:
    name = f"{module}.{leaf}"
    linear_names = {name} if linear and len(shape) == 2 and leaf == "weight" else set()
    d = choose_type(name, shape, recipe, linear_names=linear_names)
    block_size = ggml.block_info(d.qtype)[0]
    assert shape[-1] % block_size == 0
    if d.qtype in ggml.QUANTIZED_TYPES or d.qtype == QT.BF16:
        # diffusers only handles quantized weights inside nn.Linear modules
        assert name in linear_names
    if len(shape) == 1:
        assert d.qtype == QT.F32


# ---------------------------------------------------------------------------
# GGUF file round trip
# ---------------------------------------------------------------------------


def _toy_state_dict() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "blocks.0.attn.to_q.weight": torch.randn(64, 256, generator=g),
        "blocks.0.attn.to_q.bias": torch.randn(64, generator=g),
        "blocks.0.attn.to_out.0.weight": torch.randn(256, 512, generator=g).to(torch.bfloat16),
        "blocks.0.small.weight": torch.randn(8, 96, generator=g),
        "blocks.0.odd.weight": torch.randn(8, 100, generator=g).half(),
        "conv_in.weight": torch.randn(8, 4, 3, 3, generator=g),
        "proj_out.weight": torch.randn(16, 256, generator=g),
        "position_ids": torch.arange(7),
    }


@pytest.mark.parametrize("recipe", recipes.RECIPE_NAMES)
def test_gguf_round_trip(tmp_path: Path, recipe: str) -> None:
    sd = _toy_state_dict()
    path = tmp_path / "toy.gguf"
    written = gguf_io.save_state_dict_gguf(
        path, sd, recipe, metadata={"diffusers.class_name": "Toy", "toy.count": 3}
    )
    assert [p.name for p in tmp_path.iterdir()] == ["toy.gguf"]  # no temp file left

    reader = gguf.GGUFReader(str(path))
    assert [t.name for t in reader.tensors] == list(sd)
    by_name = {t.name: t for t in written}
    for t in reader.tensors:
        expected = by_name[t.name]
        assert QT(t.tensor_type) == expected.qtype
        assert tuple(reversed(t.shape.tolist())) == tuple(sd[t.name].shape)
        assert np.array_equal(np.asarray(t.data).view(np.uint8).ravel(),
                              expected.data.view(np.uint8).ravel())  # fmt: skip

    back = gguf_io.read_gguf(path)
    for name, tensor in sd.items():
        item = back[name]
        assert item.shape == tuple(tensor.shape)
        values = item.dequantize()
        src = gguf_io.to_numpy(tensor).astype(values.dtype)
        if item.qtype in (QT.F32, QT.I64):
            assert np.array_equal(values, src)
        else:
            assert values.shape == src.shape
            assert np.abs(values - src).max() <= 0.75 * np.abs(src).max() + 1e-6

    meta = gguf_io.read_metadata(path)
    assert meta["general.architecture"] == "diffusers"
    assert meta["general.file_type"] == get_recipe(recipe).file_type
    assert meta["diffusers.recipe"] == recipe
    assert meta["diffusers.class_name"] == "Toy"
    assert meta["toy.count"] == 3


def test_write_gguf_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"old")
    tensors = gguf_io.quantize_state_dict({"a.weight": np.ones((2, 256), np.float32)}, "q8_0")
    gguf_io.write_gguf(path, tensors)
    assert gguf_io.read_gguf(path)["a.weight"].qtype == QT.Q8_0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]


def test_quantize_state_dict_names_non_finite_tensor() -> None:
    sd = {"ok.weight": np.ones((2, 256), np.float32), "bad.weight": np.ones((2, 256), np.float32)}
    sd["bad.weight"][1, 7] = np.inf
    with pytest.raises(ValueError, match=r"bad\.weight"):
        gguf_io.quantize_state_dict(sd, "q4_k_m")
