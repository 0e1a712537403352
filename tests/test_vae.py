"""Unit tests for conformance.vae: photos, latent scaling, 8-bit latents, records, Markdown."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import math
import re
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from diffusers.configuration_utils import FrozenDict
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from conformance import vae as V
from conformance.metrics import METRICS, Metrics, pixel_sha256
from conformance.report import vae as R
from conformance.tolerances import load_tolerances

# A VAE small enough to build per test: 2 blocks = 2x downsampling, 4 latent channels.
SMALL_VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2,
    "block_out_channels": [8, 8],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 4,
    "sample_size": 16,
    "scaling_factor": 0.5,
    "shift_factor": 0.25,
}


@pytest.fixture
def small_vae_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "small" / "vae"
    AutoencoderKL(**SMALL_VAE_CONFIG).save_pretrained(path)
    return path


class _StubVae:
    """Just enough of an AutoencoderKL for the latent scaling functions."""

    def __init__(self, **config: object) -> None:
        self.config = FrozenDict(config)


# -- photos ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [16, 64])
def test_sample_photos_shape_dtype_and_names(size: int) -> None:
    photos = V.sample_photos(size)
    assert list(photos) == list(V.PHOTO_FILES)
    for img in photos.values():
        assert img.shape == (size, size, 3)
        assert img.dtype == np.uint8
        assert img.std() > 5  # a photograph, not a flat field


def test_sample_photos_are_deterministic() -> None:
    first = {k: pixel_sha256(v) for k, v in V.sample_photos(32).items()}
    second = {k: pixel_sha256(v) for k, v in V.sample_photos(32).items()}
    assert first == second
    assert len(set(first.values())) == len(first)  # five different photos


def test_sample_photos_subset() -> None:
    photos = V.sample_photos(8, ["coffee"])
    assert list(photos) == ["coffee"]


def test_photo_files_are_bundled_with_scikit_image() -> None:
    import skimage.data

    data_dir = Path(skimage.data.__file__).resolve().parent
    for name in V.PHOTO_FILES:
        assert V.photo_path(name).parent == data_dir


def test_unknown_photo_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="astronaut"):
        V.sample_photos(8, ["moonwalk"])


def test_missing_photo_file_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(V.PHOTO_FILES, "absent", "absent-photo.png")
    with pytest.raises(V.MissingPhotoError, match=r"absent-photo\.png is not bundled"):
        V.sample_photos(8, ["absent"])


def test_center_square_crops_the_middle() -> None:
    arr = np.zeros((10, 30, 3), np.uint8)
    arr[:, 10:20] = 200  # the central square is bright, the sides black
    out = V.center_square(Image.fromarray(arr), 10)
    assert out.shape == (10, 10, 3)
    assert out.min() == 200


def test_center_square_rejects_a_bad_size() -> None:
    with pytest.raises(ValueError, match="size must be positive, got 0"):
        V.center_square(Image.new("RGB", (4, 4)), 0)


# -- loading ---------------------------------------------------------------------------------


def test_missing_vae_dir_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "vae"
    with pytest.raises(V.MissingVaeError) as info:
        V.load_vae(path, "fp32")
    assert str(path / "config.json") in str(info.value)
    assert info.value.path == path
    assert isinstance(info.value, FileNotFoundError)


def test_vae_dir_follows_the_fixtures_dir(tmp_path: Path) -> None:
    assert V.vae_dir("tiny-flux", tmp_path) == tmp_path / "tiny-flux" / "vae"


@pytest.mark.parametrize(
    ("name", "dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)]
)
def test_precision_dtype(name: str, dtype: torch.dtype) -> None:
    assert V.precision_dtype(name) is dtype


@pytest.mark.parametrize("name", ["fp8-e4m3", "gguf-q8_0", "float32"])
def test_precision_dtype_rejects_non_dtype_precisions(name: str) -> None:
    with pytest.raises(ValueError, match=rf"{name!r} is not one of: fp32, bf16, fp16"):
        V.precision_dtype(name)


@pytest.mark.parametrize("dtype", ["bf16", torch.float16])
def test_load_vae_in_dtype(small_vae_dir: Path, dtype: str | torch.dtype) -> None:
    vae = V.load_vae(small_vae_dir, dtype)
    expected = V.precision_dtype(dtype) if isinstance(dtype, str) else dtype
    assert vae.dtype == expected
    assert not vae.training
    assert V.downsample_factor(vae) == 2


# -- latents and pixels ----------------------------------------------------------------------


def test_scale_unscale_with_shift() -> None:
    stub = _StubVae(scaling_factor=0.5, shift_factor=0.25)
    z = torch.linspace(-2, 2, 16).view(1, 4, 2, 2)
    scaled = V.scale_latents(stub, z)
    assert torch.allclose(scaled, (z - 0.25) * 0.5)
    assert torch.allclose(V.unscale_latents(stub, scaled), z)


def test_scale_without_shift_factor() -> None:
    stub = _StubVae(scaling_factor=0.18215, shift_factor=None)
    z = torch.ones(1, 4, 2, 2)
    assert torch.allclose(V.scale_latents(stub, z), z * 0.18215)


def test_scale_with_latent_statistics() -> None:
    stub = _StubVae(scaling_factor=0.5, latents_mean=[0.0, 1.0], latents_std=[2.0, 4.0])
    z = torch.ones(1, 2, 1, 1)
    scaled = V.scale_latents(stub, z)
    assert scaled.flatten().tolist() == [0.25, 0.0]
    assert torch.allclose(V.unscale_latents(stub, scaled), z)


def test_pixel_conversion_round_trips_uint8() -> None:
    images = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3) * 2
    back = V.tensor_to_images(V.images_to_tensor(images, torch.float32))
    np.testing.assert_array_equal(back, images)


def test_images_to_tensor_rejects_other_layouts() -> None:
    with pytest.raises(ValueError, match="N x H x W x 3 uint8"):
        V.images_to_tensor(np.zeros((4, 4, 3), np.uint8), torch.float32)


def test_round_trip_shapes_and_repeatability(small_vae_dir: Path) -> None:
    vae = V.load_vae(small_vae_dir, "fp32")
    photo = V.sample_photos(16, ["astronaut"])["astronaut"]
    out = V.round_trip(vae, photo)
    assert out.shape == photo.shape and out.dtype == np.uint8
    assert pixel_sha256(out) == pixel_sha256(V.round_trip(vae, photo))
    batch = V.round_trip(vae, np.stack([photo, photo]))
    assert batch.shape == (2, 16, 16, 3)
    latents = V.encode_images(vae, photo)
    assert latents.shape == (1, 4, 8, 8) and latents.dtype == torch.float32


def test_encode_rejects_sides_off_the_downsampling_grid(small_vae_dir: Path) -> None:
    vae = V.load_vae(small_vae_dir, "fp32")
    with pytest.raises(ValueError, match="side 15 is not a multiple of 2"):
        V.encode_images(vae, np.zeros((15, 16, 3), np.uint8))


def test_decode_rejects_unbatched_latents(small_vae_dir: Path) -> None:
    vae = V.load_vae(small_vae_dir, "fp32")
    with pytest.raises(ValueError, match=r"N x C x h x w latents, got shape \(4, 8, 8\)"):
        V.decode_latents(vae, torch.zeros(4, 8, 8))


def test_seeded_latents_are_fixed(small_vae_dir: Path) -> None:
    vae = V.load_vae(small_vae_dir, "fp32")
    a = V.seeded_latents(vae, 16, count=3, seed=7)
    b = V.seeded_latents(vae, 16, count=3, seed=7)
    assert a.shape == (3, 4, 8, 8) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, V.seeded_latents(vae, 16, count=3, seed=8))


# -- 8-bit latents ---------------------------------------------------------------------------

latent_arrays = st.tuples(
    st.integers(1, 2), st.integers(1, 4), st.integers(1, 5), st.integers(1, 5)
).flatmap(
    lambda shape: arrays(
        np.float32,
        shape,
        elements=st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32),
    )
)


@given(latent_arrays)
def test_dequantize_is_within_half_a_step_per_channel(x: np.ndarray) -> None:
    q = V.quantize_latents_8bit(torch.from_numpy(x))
    y = V.dequantize_latents_8bit(q).numpy()
    assert y.shape == x.shape and y.dtype == np.float32
    lo = x.min(axis=(2, 3), keepdims=True).astype(np.float64)
    hi = x.max(axis=(2, 3), keepdims=True).astype(np.float64)
    half_step = (hi - lo) / 255 / 2
    # plus the float32 rounding of the dequantized value low + code * step: a few ulps of the
    # channel's largest magnitude (a value near 0 in a channel of +-1e4 rounds at 1e4's ulp)
    slack = np.maximum(np.abs(lo), np.abs(hi)) * 2.0**-21 + 1e-30
    err = np.abs(y.astype(np.float64) - x)
    assert np.all(err <= half_step * (1 + 1e-9) + slack)


@given(latent_arrays)
def test_quantize_uses_the_full_code_range(x: np.ndarray) -> None:
    q = V.quantize_latents_8bit(x)
    assert q.codes.dtype == np.uint8 and q.codes.shape == x.shape
    assert q.low.shape == q.high.shape == x.shape[:2]
    span = q.high - q.low
    codes = q.codes.reshape(*x.shape[:2], -1)
    assert np.all(codes.min(axis=2) == 0)
    assert np.all(codes.max(axis=2)[span > 0] == 255)


def test_constant_channels_come_back_exactly() -> None:
    x = torch.full((1, 3, 4, 4), -1.5)
    q = V.quantize_latents_8bit(x)
    assert torch.equal(V.dequantize_latents_8bit(q), x)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_quantize_rejects_non_finite_values(bad: float) -> None:
    x = torch.zeros(1, 1, 2, 2)
    x[0, 0, 1, 1] = bad
    with pytest.raises(ValueError, match="NaN or infinity"):
        V.quantize_latents_8bit(x)


def test_quantize_rejects_other_ranks() -> None:
    with pytest.raises(ValueError, match=r"got shape \(4, 2, 2\)"):
        V.quantize_latents_8bit(torch.zeros(4, 2, 2))


def test_bytes_accounting() -> None:
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    q = V.quantize_latents_8bit(x)
    assert q.nbytes == 2 * 4 * 8 * 8 + 2 * 4 * 4 * 2  # codes + float32 (low, high) per channel
    assert len(q.to_bytes()) == q.nbytes
    assert 0 < q.zlib_nbytes() <= q.nbytes + 64
    images = np.stack(list(V.sample_photos(32, ["coffee", "rocket"]).values()))
    sizes = V.compression_sizes(q, images)
    assert sizes.raw_rgb_bytes == 2 * 32 * 32 * 3
    pngs = 0
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG", compress_level=V.PNG_COMPRESS_LEVEL)
        pngs += len(buf.getvalue())
    assert sizes.png_bytes == pngs
    assert sizes.latent_bytes == q.nbytes
    assert sizes.ratio_vs_raw == pytest.approx(6144 / 576)
    assert sizes.ratio_vs_png == pytest.approx(pngs / 576)


def test_bytes_accounting_needs_one_image_per_latent() -> None:
    q = V.quantize_latents_8bit(torch.zeros(2, 4, 2, 2))
    with pytest.raises(ValueError, match="1 images for 2 quantized latents"):
        V.compression_sizes(q, np.zeros((8, 8, 3), np.uint8))


# -- checks and Markdown ---------------------------------------------------------------------


def _m(psnr: float, ssim: float, identical: bool = False, **more: float) -> Metrics:
    return Metrics(identical, psnr=psnr, ssim=ssim, **more)


IDENTICAL = Metrics(True, {n: m.best for n, m in METRICS.items()})
BF16 = Metrics(False, mae=0.64, max_abs=6, psnr=48.17, ssim=0.9995, phash_distance=2,
               dhash_distance=1, flip=0.018)


def _report() -> R.VaeReport:
    sizes = V.CompressionSizes(
        raw_rgb_bytes=12288, png_bytes=9000, latent_bytes=1056, latent_zlib_bytes=1000
    )
    return R.VaeReport(
        decode=(
            V.DecodeCheck("tiny-sd", "fp32", 64, 0, 4, IDENTICAL),
            V.DecodeCheck("tiny-sd", "bf16", 64, 0, 4, BF16),
        ),
        round_trips=(
            V.RoundTripCheck(
                "tiny-sd", "fp32", 64, ("a", "b"), (_m(10.0, 0.5), _m(12.0, 0.7)), 0.0
            ),
            V.RoundTripCheck(
                "tiny-sd", "bf16", 64, ("a", "b"), (_m(9.9, 0.5), _m(12.0, 0.7)), 0.1
            ),
        ),
        latent_quant=(
            V.LatentQuantCheck(
                "tiny-sd",
                "fp32",
                64,
                ("a", "b"),
                (_m(50.0, 0.999), _m(math.inf, 1.0, identical=True)),
                (_m(10.0, 0.5), _m(12.0, 0.6)),
                (0.0, 0.01),
                sizes,
            ),
        ),
        vaes=(R.VaeInfo("tiny-sd", "fixtures/tiny-sd/vae", 4, 4, 0.28205, None, "ab" * 32),),
        versions=(("torch", "2.13.0"),),
        threads=1,
    )


def _table_rows(markdown: str, header_start: str) -> list[str]:
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def test_records_aggregate_per_photo_values() -> None:
    report = _report()
    rt = report.round_trips[1]
    assert rt.min_psnr == 9.9 and rt.mean_psnr == pytest.approx(10.95)
    assert rt.min_ssim == 0.5 and rt.mean_ssim == pytest.approx(0.6)
    q = report.latent_quant[0]
    assert q.min_psnr_vs_float == 50.0 and q.max_psnr_loss == 0.01 and q.min_ssim_vs_float == 0.999
    assert q.psnr_vs_photo == (10.0, 12.0)
    d = report.decode[1]
    assert d.mae == 0.64 and d.flip == 0.018 and not d.identical and report.decode[0].identical


def test_markdown_has_one_table_per_check_with_a_row_per_record() -> None:
    md = R.render_markdown(_report())
    assert md.count("## ") == 4
    for header, records in (
        ("| model | latent channels", 1),
        ("| model | precision | identical", 2),
        ("| model | precision | size | photos", 2),
        ("| model | precision | size | min PSNR vs float", 1),
    ):
        rows = _table_rows(md, header)
        assert len(rows) == 2 + records  # header, rule, records
        assert len({row.count("|") for row in rows}) == 1  # every row has every column
    assert "| tiny-sd | fp32 | yes | 0.0000 | 0 | inf | 1.00000 | 0 | 0 | 0.0000 |" in md
    assert "| tiny-sd | bf16 | no | 0.6400 | 6 | 48.17 | 0.99950 | 2 | 1 | 0.0180 |" in md
    header = "| model | precision | identical | " + " | ".join(m.header for m in METRICS.values())
    assert header + " |" in md
    assert "| 11.6 | 8.5 |" in md  # compression ratios vs raw and vs PNG
    assert "| tiny-sd | 4 | 4x | 0.28205 | - | `abababababababab` | `fixtures/tiny-sd/vae` |" in md
    assert md.rstrip().endswith("torch 2.13.0; 1 torch thread(s).")


def test_markdown_of_an_empty_report_still_has_the_headers() -> None:
    md = R.render_markdown(R.VaeReport(decode=(), round_trips=(), latent_quant=()))
    assert sum(line.startswith("|---") for line in md.splitlines()) == 3
    assert "## VAEs" not in md and "Measured with" not in md


def test_run_checks_end_to_end(tmp_path: Path, small_vae_dir: Path) -> None:
    fixtures = tmp_path / "fixtures"
    (fixtures / "tiny-sd").mkdir(parents=True)
    small_vae_dir.rename(fixtures / "tiny-sd" / "vae")
    report = R.run_checks(
        ["tiny-sd"], ["fp32", "bf16"], [16], fixtures_dir=fixtures, count=2, decode_size=16
    )
    assert [(d.model, d.precision) for d in report.decode] == [
        ("tiny-sd", "fp32"),
        ("tiny-sd", "bf16"),
    ]
    assert report.decode[0].identical and math.isinf(report.decode[0].psnr)
    assert len(report.round_trips) == len(report.latent_quant) == 2
    assert report.round_trips[0].max_psnr_drop == 0.0
    assert report.round_trips[1].photos == tuple(V.PHOTO_FILES)
    assert report.latent_quant[0].sizes.raw_rgb_bytes == 5 * 16 * 16 * 3
    assert "| tiny-sd | bf16 |" in R.render_markdown(report)
    (info,) = report.vaes
    assert (info.model, info.latent_channels, info.downsample) == ("tiny-sd", 4, 2)
    assert (info.scaling_factor, info.shift_factor) == (0.5, 0.25)
    weights = (fixtures / "tiny-sd" / "vae" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert info.weights_sha256 == hashlib.sha256(weights).hexdigest()


def test_run_checks_names_a_missing_vae(tmp_path: Path) -> None:
    with pytest.raises(V.MissingVaeError, match=re.escape(str(tmp_path / "tiny-flux" / "vae"))):
        R.run_checks(["tiny-flux"], ["fp32"], [16], fixtures_dir=tmp_path)


def test_run_checks_rejects_unknown_precisions(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'int8' is not one of"):
        R.run_checks(["tiny-sd"], ["int8"], [16], fixtures_dir=tmp_path)
    with pytest.raises(ValueError, match="must not be empty"):
        R.run_checks([], ["fp32"], [16], fixtures_dir=tmp_path)


# -- benchmarks/vae_report.py ----------------------------------------------------------------


def _report_script() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "vae_report.py"
    spec = importlib.util.spec_from_file_location("vae_report", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_report_script_writes_markdown(
    tmp_path: Path, small_vae_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fixtures = tmp_path / "fixtures"
    (fixtures / "tiny-sd").mkdir(parents=True)
    small_vae_dir.rename(fixtures / "tiny-sd" / "vae")
    out = tmp_path / "docs" / "vae.md"
    argv = [
        "--fixtures",
        str(fixtures),
        "--models",
        "tiny-sd",
        "--precisions",
        "fp32",
        "--sizes",
        "16",
        "--count",
        "1",
        "--out",
        str(out),
    ]
    assert _report_script().main(argv) == 0
    written = out.read_text(encoding="utf-8")
    assert written.startswith("# VAE precision")
    assert "| tiny-sd | fp32 | yes |" in written
    captured = capsys.readouterr()
    assert captured.out == written
    assert f"written: {out}" in captured.err


def test_report_script_names_a_missing_vae(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--fixtures",
        str(tmp_path),
        "--models",
        "tiny-sd",
        "--sizes",
        "16",
        "--out",
        str(tmp_path / "vae.md"),
    ]
    assert _report_script().main(argv) == 2
    err = capsys.readouterr().err
    assert f"vae_report: no VAE at {tmp_path / 'tiny-sd' / 'vae'}" in err
    assert not (tmp_path / "vae.md").exists()


# -- bounds from the tolerance file ----------------------------------------------------------

TIERS = """schema_version = 1
[close.default]
mae_max = 0.5
[perceptual.default]
mae_max = 2.0
[fidelity.default]
mae_max = 16.0
"""
VAE_BOUNDS = """
[vae.decode.bf16]
mae_max = 1.5
psnr_min = 40.0
flip_max = 0.05
[vae.roundtrip.default]
psnr_min = 9.0
psnr_drop_max = 0.25
[vae.latent8.default]
psnr_min = 42.0
psnr_loss_max = 0.25
compression_min = 10.0
"""


def _tolerances(tmp_path: Path, text: str):
    path = tmp_path / "tol.toml"
    path.write_text(text)
    return load_tolerances(path)


def test_checks_within_the_file_bounds(tmp_path: Path) -> None:
    tol = _tolerances(tmp_path, TIERS + VAE_BOUNDS)
    report = _report()
    assert V.decode_violations(report.decode[1], tol.vae_bounds("decode", "bf16")) == []
    assert V.round_trip_violations(report.round_trips[0], tol.vae_bounds("roundtrip", "fp32")) == []
    assert V.latent8_violations(report.latent_quant[0], tol.vae_bounds("latent8", "fp32")) == []


def test_a_tighter_file_bound_fails_each_check(tmp_path: Path) -> None:
    tight = (
        VAE_BOUNDS.replace("flip_max = 0.05", "flip_max = 0.01")
        .replace("psnr_min = 9.0", "psnr_min = 11.0")
        .replace("psnr_drop_max = 0.25", "psnr_drop_max = 0.05")
        .replace("compression_min = 10.0", "compression_min = 12.0")
        .replace("psnr_loss_max = 0.25", "psnr_loss_max = 0.005")
    )
    tol = _tolerances(tmp_path, TIERS + tight)
    report = _report()
    assert V.decode_violations(report.decode[1], tol.vae_bounds("decode", "bf16")) == [
        "FLIP: observed=0.018, expected <= 0.01"
    ]
    assert V.round_trip_violations(report.round_trips[1], tol.vae_bounds("roundtrip", "bf16")) == [
        "photo 'a': PSNR: observed=9.9, expected >= 11.0",
        "PSNR lost against the fp32 round trip: observed=0.1 dB, expected <= 0.05 dB",
    ]
    assert V.latent8_violations(report.latent_quant[0], tol.vae_bounds("latent8", "fp32")) == [
        "PSNR against the photo lost: observed=0.01 dB, expected <= 0.005 dB",
        "raw RGB bytes per 8-bit latent byte: observed=11.6364, expected >= 12.0",
    ]


def test_packaged_vae_bounds_hold_for_a_real_decode(small_vae_dir: Path) -> None:
    tol = load_tolerances()
    reference_vae = V.load_vae(small_vae_dir, "fp32")
    latents = V.seeded_latents(reference_vae, 16, count=2)
    reference = V.decode_latents(reference_vae, latents)
    again = V.decode_check(
        V.load_vae(small_vae_dir, "fp32"), reference, latents, model="small", precision="fp32"
    )
    assert again.identical and again.flip == 0.0 and math.isinf(again.psnr)
    assert set(again.metrics.values) == {n for n, m in METRICS.items() if m.default}
    assert V.decode_violations(again, tol.vae_bounds("decode", "fp16")) == []


TIGHT_DECODE = """
[vae.decode.bf16]
mae_max = 0.001
"""


def test_the_vae_tests_read_their_bounds_from_the_file(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    from conformance import PACKAGE_DIR

    if not (V.vae_dir("tiny-sd") / "config.json").is_file():
        pytest.skip("no tiny-sd VAE fixture")
    module = str(PACKAGE_DIR / "test_vae.py")
    select = ["-k", "test_decode_close_to_fp32 and tiny-sd and bf16", "-p", "no:cacheprovider"]
    tight = tmp_path / "tight.toml"
    tight.write_text(TIERS + TIGHT_DECODE)
    result = pytester.runpytest(module, "--tolerances", str(tight), *select)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        f"*decode vs fp32 (worst image) beyond [[]vae.decode.bf16[]] of {tight}*",
        "*MAE: observed=*, expected <= 0.001*",
    ])
    result = pytester.runpytest(module, *select)
    result.assert_outcomes(passed=1)
    # a file without [vae] tables keeps the packaged bounds
    plain = tmp_path / "plain.toml"
    plain.write_text(TIERS)
    result = pytester.runpytest(module, "--tolerances", str(plain), *select)
    result.assert_outcomes(passed=1)


def test_encode_and_decode_time_counts_as_model_time(small_vae_dir: Path) -> None:
    """The VAE checks' own encode/decode calls are timed (the benchmark counts them as
    model work beside the pipeline calls); a refused input adds nothing."""
    vae = V.load_vae(small_vae_dir, "fp32")
    before = V.model_seconds()
    V.round_trip(vae, np.zeros((16, 16, 3), np.uint8))
    after = V.model_seconds()
    assert after > before
    with pytest.raises(ValueError):
        V.decode_latents(vae, torch.zeros(4, 8, 8))
    assert V.model_seconds() == after
