from __future__ import annotations

import math

import numpy as np
import pytest

from conformance.errors import ToleranceFileError
from conformance.metrics import METRICS, Metrics, bound_keys
from conformance.tolerances import DEFAULT_TOLERANCES, Bounds, Tier, load_tolerances
from tests.test_metric_registry import fake_metric  # noqa: F401 (a fixture)

GOOD = """schema_version = 1
[ladder]
order = ["fp16", "gguf-q8_0"]
[fidelity.default]
mae_max = 30.0
[close.default]
mae_max = 1.0
[perceptual.default]
ssim_min = 0.9
phash_max = 8
[perceptual.bf16]
mae_max = 3.0
"""


def write(tmp_path, text):
    p = tmp_path / "tol.toml"
    p.write_text(text)
    return p


def metrics(**kw):
    base = dict(identical=False, mae=0.5, max_abs=3, psnr=40.0, ssim=0.99,
                phash_distance=2, dhash_distance=2, flip=0.02)
    return Metrics(**(base | kw))


def test_default_file_loads():
    tol = load_tolerances()
    assert tol.path == DEFAULT_TOLERANCES
    for tier in (Tier.CLOSE, Tier.PERCEPTUAL, Tier.FIDELITY):
        assert tol.bounds(tier, "fp32").to_dict()


def test_precision_falls_back_to_default(tmp_path):
    tol = load_tolerances(write(tmp_path, GOOD))
    assert tol.bounds(Tier.PERCEPTUAL, "bf16") == Bounds(mae_max=3.0)
    assert tol.bounds(Tier.PERCEPTUAL, "fp16") == Bounds(ssim_min=0.9, phash_max=8)
    assert tol.ladder == ("fp16", "gguf-q8_0")
    with pytest.raises(ValueError, match="exact tier has no bounds"):
        tol.bounds(Tier.EXACT, "fp32")


def test_violations_name_metric_observed_and_bound():
    b = Bounds(mae_max=1.0, ssim_min=0.995, phash_max=1, psnr_min=50.0, max_abs_max=2,
               dhash_max=1)
    v = b.violations(metrics())
    assert "SSIM: observed=0.99, expected >= 0.995" in v
    assert "pHash distance: observed=2, expected <= 1" in v
    assert "PSNR: observed=40, expected >= 50.0" in v
    assert "max abs: observed=3, expected <= 2" in v
    assert len(v) == 5
    assert Bounds(mae_max=1.0).violations(metrics()) == []
    assert Bounds(ssim_min=0.5).violations(metrics(ssim=math.nan))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD.replace("schema_version = 1", "schema_version = 3"), "schema_version is 3"),
        (GOOD + "[exact.default]\nmae_max = 0\n", r"\[exact\] takes no bounds"),
        (GOOD + "[differ.default]\nmae_max = 0\n",
         r"\[differ\] takes no bounds: the differ tier requires unequal pixel hashes"),
        (GOOD + "[other.default]\nmae_max = 1\n",
         r"unknown key other \(accepted: schema_version, ladder, close, perceptual"),
        (GOOD.replace('"gguf-q8_0"]', '"int2"]'),
         r"ladder\.order\[1\] 'int2' is not one of fp32, "),
        (GOOD.replace('"gguf-q8_0"]', '"fp16"]'), r"ladder\.order: lists a precision twice"),
        (GOOD.replace("order = [", "steps = ["), r"unknown key ladder\.steps \(accepted: order\)"),
        (GOOD.replace('order = ["fp16", "gguf-q8_0"]', "order = 3"),
         "ladder.order must be a list of precision names, not a number"),
        (GOOD.replace("[fidelity.default]\nmae_max = 30.0\n", ""),
         r"tolerance file: key fidelity is missing"),
        (GOOD.replace("[close.default]\nmae_max = 1.0\n", ""), r"key close is missing"),
        (GOOD.replace("[close.default]", "[close.fp32]"), r"key close\['default'\] is missing"),
        (GOOD + "[close.int4]\nmae_max = 1\n",
         r"key close\['int4'\] is not one of default, fp32, "),
        (GOOD.replace("mae_max = 1.0", "mae = 1.0"),
         r"unknown key close\['default'\]\.mae \(accepted: mae_max, "),
        (GOOD.replace("mae_max = 1.0", 'mae_max = "1"'),
         r"close\['default'\]\.mae_max must be a number in 0\.0\.\.255\.0, not a string"),
        (GOOD.replace("phash_max = 8", "phash_max = 8.5"),
         r"\.phash_max must be an integer in 0\.\.64, not a number \(8\.5\)"),
        (GOOD.replace("ssim_min = 0.9", "ssim_min = 1.5"),
         r"\.ssim_min must be a number in -1\.0\.\.1\.0, not a number \(1\.5\)"),
        (GOOD.replace("mae_max = 1.0", "mae_max = nan"),
         r"\.mae_max must be a number in 0\.0\.\.255\.0, not a number \(nan\)"),
        (GOOD.replace("mae_max = 1.0", "mae_max = true"), r"must be a number in .*, not a boolean"),
        (GOOD.replace("mae_max = 1.0\n", ""),
         r"close\['default'\]: sets no bound; accepted: mae_max"),
        ("schema_version = 1\nclose = 3\n",
         r"close must be a table of \[close\.PRECISION\] tables, not a number \(3\)"),
        (GOOD + "[close.fp16]\n", r"close\['fp16'\]: sets no bound"),
        ("schema_version = ", "invalid TOML"),
    ],
)
def test_errors(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ToleranceFileError, match=message) as info:
        load_tolerances(path)
    assert str(info.value).startswith(str(path))


def test_unreadable(tmp_path):
    with pytest.raises(ToleranceFileError, match="cannot read"):
        load_tolerances(tmp_path / "missing.toml")


# -- keys from the metric registry -------------------------------------------------------------
def test_bound_keys_are_the_registered_metrics():
    assert list(bound_keys()) == [m.bound for m in METRICS.values()]
    assert {"mae_max", "ssim_min", "flip_max"} <= set(bound_keys())
    assert Bounds(flip_max=0.05).violations(metrics(flip=0.07)) == [
        "FLIP: observed=0.07, expected <= 0.05"
    ]
    with pytest.raises(TypeError, match="unknown bound 'mae'; accepted: mae_max, "):
        Bounds(mae=1.0)


def test_unknown_key_lists_every_registered_bound(tmp_path):
    path = write(tmp_path, GOOD.replace("mae_max = 1.0", "lpips_max = 0.1"))
    with pytest.raises(ToleranceFileError) as info:
        load_tolerances(path)
    message = str(info.value)
    assert message.startswith(
        f"{path}: tolerance file: unknown key close['default'].lpips_max (accepted: ")
    assert message.endswith(", ".join(m.bound for m in METRICS.values()) + ")")


@pytest.mark.usefixtures("fake_metric")
def test_a_registered_metric_brings_its_bound_key(tmp_path):
    text = GOOD.replace("mae_max = 1.0", "mae_max = 1.0\nfake_max = 0.25")
    tol = load_tolerances(write(tmp_path, text))
    bounds = tol.bounds(Tier.CLOSE, "fp32")
    assert bounds.fake_max == 0.25 and bounds.to_dict() == {"mae_max": 1.0, "fake_max": 0.25}
    assert bounds.violations(metrics()) == ["fake metric: not measured, expected <= 0.25"]
    m = Metrics(False, {"mae": 0.1, "fake": 0.5})
    assert bounds.violations(m) == ["fake metric: observed=0.5, expected <= 0.25"]
    with pytest.raises(ToleranceFileError, match=(
            r"\.fake_max must be a number in 0\.0\.\.1\.0, not a number \(2\.0\)")):
        load_tolerances(write(tmp_path, text.replace("fake_max = 0.25", "fake_max = 2.0")))


def test_bounds_of_an_unmeasured_metric_fail_closed():
    m = Metrics(False, {"mae": 0.1})
    assert Bounds(mae_max=1.0, flip_max=0.1).violations(m) == [
        "FLIP: not measured, expected <= 0.1"
    ]


def test_bounds_value_semantics():
    a = Bounds(ssim_min=0.9, mae_max=1.0)
    assert a == Bounds(mae_max=1.0, ssim_min=0.9) and hash(a) == hash(Bounds(mae_max=1.0,
                                                                               ssim_min=0.9))
    assert a.mae_max == 1.0 and a.psnr_min is None
    assert repr(a) == "Bounds(mae_max=1.0, ssim_min=0.9)"
    with pytest.raises(AttributeError):
        a.mae_max = 2.0
    with pytest.raises(AttributeError):
        _ = a.not_a_key


# -- [vae] tables ------------------------------------------------------------------------------
VAE = """
[vae.decode.bf16]
mae_max = 1.5
psnr_min = 40.0
[vae.decode.default]
mae_max = 0.5
[vae.roundtrip.fp32]
psnr_min = 9.0
psnr_drop_max = 0.0
[vae.latent8.fp16]
psnr_min = 42.0
compression_min = 10.0
"""


def test_vae_tables(tmp_path):
    tol = load_tolerances(write(tmp_path, GOOD + VAE))
    decode = tol.vae_bounds("decode", "bf16")
    assert decode.metrics == Bounds(mae_max=1.5, psnr_min=40.0) and not decode.extra
    assert tol.vae_bounds("decode", "fp16").metrics == Bounds(mae_max=0.5)  # default
    rt = tol.vae_bounds("roundtrip", "fp32")
    assert rt.metrics == Bounds(psnr_min=9.0) and dict(rt.extra) == {"psnr_drop_max": 0.0}
    assert rt.where == f"[vae.roundtrip.fp32] of {tmp_path / 'tol.toml'}"
    assert rt.extra_violation("psnr_drop_max", 0.01, "lost", "dB") == (
        "lost: observed=0.01 dB, expected <= 0.0 dB"
    )
    assert rt.extra_violation("psnr_drop_max", 0.0, "lost") is None
    q = tol.vae_bounds("latent8", "fp16")
    assert q.extra_violation("compression_min", 9.5, "ratio") == (
        "ratio: observed=9.5, expected >= 10.0"
    )
    with pytest.raises(LookupError, match=r"no \[vae.latent8.bf16\] table \(nor "):
        tol.vae_bounds("latent8", "bf16")


def test_vae_tables_are_optional(tmp_path):
    tol = load_tolerances(write(tmp_path, GOOD))
    assert tol.vae == {}
    with pytest.raises(LookupError, match=r"tol\.toml: no"):
        tol.vae_bounds("decode", "bf16")


def test_one_lookup_for_the_tiers_and_the_vae_tables(tmp_path):
    from conformance.tolerances import MissingBounds

    tol = load_tolerances(write(tmp_path, GOOD + VAE))
    assert tol.lookup("close", "bf16") == tol.bounds(Tier.CLOSE, "bf16")
    assert tol.lookup("vae.decode", "fp16") == tol.vae_bounds("decode", "fp16")
    with pytest.raises(MissingBounds) as caught:
        tol.lookup("vae.latent8", "bf16")
    assert isinstance(caught.value, ToleranceFileError) and isinstance(caught.value, LookupError)
    assert str(caught.value) == (f"{tmp_path / 'tol.toml'}: no [vae.latent8.bf16] table (nor "
                                 "[vae.latent8.default]) bounds the VAE checks")
    with pytest.raises(ValueError, match=r"no VAE table 'encode'; known: decode, roundtrip"):
        tol.lookup("vae.encode", "bf16")
    with pytest.raises(ValueError, match="the exact tier has no bounds"):
        tol.lookup("exact", "bf16")
    with pytest.raises(ValueError, match="the differ tier has no bounds"):
        tol.bounds(Tier.DIFFER, "bf16")
    with pytest.raises(ValueError):
        tol.lookup("nope", "bf16")


def test_a_tier_without_its_table_is_named():
    from dataclasses import replace

    from conformance.tolerances import MissingBounds

    tol = load_tolerances()
    with pytest.raises(MissingBounds, match=r"no \[close.bf16\] table \(nor \[close.default\]\) "
                                            "bounds the close tier"):
        replace(tol, tiers={}).lookup("close", "bf16")


def test_default_file_bounds_every_vae_check():
    tol = load_tolerances()
    for precision in ("fp32", "bf16", "fp16"):
        for table in ("roundtrip", "latent8"):
            assert tol.vae_bounds(table, precision).metrics.psnr_min is not None
    for precision in ("bf16", "fp16"):
        assert tol.vae_bounds("decode", precision).metrics.flip_max is not None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[vae.encode.bf16]\nmae_max = 1\n",
         r"unknown key vae\.encode \(accepted: decode, roundtrip, latent8\)"),
        ("[vae.decode.gguf-q8_0]\nmae_max = 1\n",
         r"key vae\.decode\['gguf-q8_0'\] is not one of default, fp32"),
        ("[vae.decode.bf16]\npsnr_drop_max = 1\n",
         r"unknown key vae\.decode\['bf16'\]\.psnr_drop_max \(accepted: mae_max, "),
        ("[vae.roundtrip.bf16]\nlpips_max = 1\n",
         r"unknown key vae\.roundtrip\['bf16'\]\.lpips_max \(accepted: .*flip_max, "
         r"psnr_drop_max\)$"),
        ("[vae.latent8.bf16]\ncompression_min = -1.0\n",
         r"\.compression_min must be a number in 0\.0\.\.1000000\.0, not a number \(-1\.0\)"),
        ("[vae.latent8.bf16]\npsnr_loss_max = true\n",
         r"\.psnr_loss_max must be a number in 0\.0\.\.200\.0, not a boolean"),
        ("[vae.roundtrip.fp32]\n", r"vae\.roundtrip\['fp32'\]: sets no bound"),
        ("[vae]\ndecode = 3\n",
         r"vae\.decode must be a table of \[vae\.decode\.PRECISION\] tables, not a number"),
        ("vae = 3\n", r"vae must be a \[vae\] table, not a number \(3\)"),
    ],
)
def test_vae_errors(tmp_path, text, message):
    body = GOOD + text if text.startswith("[") else text + GOOD
    path = write(tmp_path, body)
    with pytest.raises(ToleranceFileError, match=message) as info:
        load_tolerances(path)
    assert str(info.value).startswith(str(path))


def test_one_rule_per_tier():
    """Tolerances.problems: exact is pixels and latents, differ is not-identical, the other
    tiers are the bounds of the precision."""
    from conformance.metrics import compare

    tol = load_tolerances()
    a = np.zeros((8, 8, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 200
    same, other = compare(a, a), compare(a, b)
    assert tol.problems(Tier.EXACT, "fp32", same) == []
    assert tol.problems(Tier.EXACT, "fp32", same, first_divergent_step=3) == [
        "the latents differ from step 3 on"]
    assert tol.problems(Tier.EXACT, "fp32", other) == ["the decoded pixels differ"]
    assert tol.problems(Tier.DIFFER, "fp32", other) == []
    assert "bit-identical" in tol.problems(Tier.DIFFER, "fp32", same)[0]
    assert tol.problems(Tier.CLOSE, "fp32", same) == []
    assert tol.problems(Tier.CLOSE, "fp32", other) == \
        tol.bounds(Tier.CLOSE, "fp32").violations(other) != []
