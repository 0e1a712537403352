from __future__ import annotations

import math

import pytest

from conformance.errors import ToleranceFileError
from conformance.metrics import Metrics
from conformance.tolerances import DEFAULT_TOLERANCES, Bounds, Tier, load_tolerances

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
                phash_distance=2, dhash_distance=2)
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
    assert "max_abs: observed=3, expected <= 2" in v
    assert len(v) == 5
    assert Bounds(mae_max=1.0).violations(metrics()) == []
    assert Bounds(ssim_min=0.5).violations(metrics(ssim=math.nan))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD.replace("schema_version = 1", "schema_version = 3"), "schema_version is 3"),
        (GOOD + "[exact.default]\nmae_max = 0\n", r"\[exact\] takes no bounds"),
        (GOOD + "[other.default]\nmae_max = 1\n", "unknown top-level key 'other'"),
        (GOOD.replace('"gguf-q8_0"]', '"int2"]'), r"\[ladder\] order: unknown precision 'int2'"),
        (GOOD.replace('"gguf-q8_0"]', '"fp16"]'), r"\[ladder\] order lists a precision twice"),
        (GOOD.replace("order = [", "steps = ["), r"\[ladder\] takes one key"),
        (GOOD.replace('order = ["fp16", "gguf-q8_0"]', "order = 3"), "must be an array"),
        (GOOD.replace("[fidelity.default]\nmae_max = 30.0\n", ""), r"missing table \[fidelity\]"),
        (GOOD.replace("[close.default]\nmae_max = 1.0\n", ""), r"missing table \[close\]"),
        (GOOD.replace("[close.default]", "[close.fp32]"), r"needs a \[close.default\]"),
        (GOOD + "[close.int4]\nmae_max = 1\n", r"\[close.int4\]: unknown precision 'int4'"),
        (GOOD.replace("mae_max = 1.0", "mae = 1.0"), r"\[close.default\]: unknown key 'mae'"),
        (GOOD.replace("mae_max = 1.0", 'mae_max = "1"'), "must be a number, not string"),
        (GOOD.replace("phash_max = 8", "phash_max = 8.5"), "must be an integer, not float"),
        (GOOD.replace("ssim_min = 0.9", "ssim_min = 1.5"), r"'ssim_min' = 1.5 is outside"),
        (GOOD.replace("mae_max = 1.0", "mae_max = nan"), r"'mae_max' = nan is outside"),
        (GOOD.replace("mae_max = 1.0", "mae_max = true"), "must be a number, not boolean"),
        (GOOD.replace("mae_max = 1.0\n", ""), r"\[close.default\] sets no bound"),
        ("schema_version = 1\nclose = 3\n", r"missing table \[close\]"),
        (GOOD + "[close.fp16]\n", r"\[close.fp16\] sets no bound"),
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
