"""The session's one judge and its helpers, without a model: synthetic generations against
synthetic expected images and latent traces, at each tier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conformance.core import Check, Status, Tier
from conformance.generate import Generation
from conformance.hardware import HardwareClass
from conformance.session import (
    Comparison,
    ConformanceSession,
    Settings,
    merge_stats,
    param_changes,
    pinned_differences,
)
from conformance.trace import StepTrace

CLASS = "cpu-intel-avx512"


@pytest.fixture
def session(tmp_path: Path) -> ConformanceSession:
    settings = Settings(golden_dir=tmp_path / "golden",
                        results_path=tmp_path / "results" / "results.json")
    return ConformanceSession(settings, HardwareClass(CLASS), {}, runner=object())


@pytest.fixture
def item(session: ConformanceSession):
    return next(i for i in session.items() if i.precision == "fp32")


def _trace(*digests: str) -> list[StepTrace]:
    return [StepTrace(n, 999.0 - n, d, 0.1, 1.0, -2.0, 2.0) for n, d in enumerate(digests)]


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (16, 16, 3), np.uint8)


def _cmp(item, image: np.ndarray, expected: np.ndarray, tier: Tier,
         trace=("aa" * 8, "bb" * 8), expected_trace=("aa" * 8, "bb" * 8)) -> Comparison:
    observed = Generation(item.id, image, _trace(*trace), 0.25)
    return Comparison(item, Check.OWN_CLASS, observed, expected, _trace(*expected_trace), tier,
                      f"the {CLASS} golden", golden_class=CLASS)


def test_exact_passes_on_equal_pixels_and_latents(session, item) -> None:
    image = _image()
    verdict = session.judge(_cmp(item, image, image.copy(), Tier.EXACT))
    assert verdict.status is Status.PASSED and verdict.tier is Tier.EXACT
    assert verdict.metrics.identical and verdict.first_divergent_step is None
    assert not verdict.artifacts  # images only where a comparison failed (or --save-images)


def test_exact_fails_on_one_pixel_and_names_tier_metrics_and_images(session, item) -> None:
    image = _image()
    expected = image.copy()
    expected[3, 4, 0] ^= 1
    verdict = session.judge(_cmp(item, image, expected, Tier.EXACT))
    assert verdict.status is Status.FAILED and not verdict.metrics.identical
    first = verdict.message.splitlines()[0]
    assert first == f"{item.id} differs from the {CLASS} golden at the exact tier"
    assert "  metrics: " in verdict.message and "first divergent step: none" in verdict.message
    written = [session.artifacts_dir.parent / p for _, p in verdict.artifacts.items()]
    assert written and all(p.is_file() for p in written)


def test_exact_fails_when_only_the_latents_differ(session, item) -> None:
    image = _image()
    verdict = session.judge(_cmp(item, image, image.copy(), Tier.EXACT,
                                 trace=("aa" * 8, "cc" * 8)))
    assert verdict.status is Status.FAILED and verdict.first_divergent_step == 1
    assert "first divergent step: 1 of 2" in verdict.message


def test_close_holds_the_tolerance_files_bounds(session, item) -> None:
    image = _image()
    near = image.copy()
    near[0, 0, 0] ^= 1  # one level of one channel of one pixel
    verdict = session.judge(_cmp(item, near, image, Tier.CLOSE))
    assert verdict.status is Status.PASSED and verdict.tier is Tier.CLOSE
    far = 255 - image
    verdict = session.judge(_cmp(item, far, image, Tier.CLOSE))
    mae = np.abs(far.astype(int) - image).mean()
    assert verdict.metrics.mae == pytest.approx(mae)
    assert verdict.status is Status.FAILED
    bounds = session.tolerances.bounds(Tier.CLOSE, "fp32")
    assert f"  MAE: observed={mae:.3f}, expected <= {bounds.mae_max}" in verdict.message


def test_settings_flags_reproduce_what_differs_from_the_defaults(tmp_path: Path) -> None:
    assert Settings().command_flags() == ["--device", "cpu", "--threads", "1"]
    flags = Settings(threads=2, golden_dir=tmp_path, strict_golden=True).command_flags()
    assert flags == ["--device", "cpu", "--threads", "2", "--golden-dir", str(tmp_path),
                     "--strict-golden"]


def test_pinned_and_param_differences_are_named() -> None:
    assert param_changes({"steps": 4, "seed": 1}, {"steps": 8, "seed": 1}) == ["steps: 8 -> 4"]
    assert param_changes({"a": 1}, {"a": 1}) == []
    same = {"torch": "2.13.0", "threads": 1}
    assert pinned_differences(same, dict(same)) == []
    assert pinned_differences({**same, "threads": 2}, same) == ["threads 2 != 1"]


def test_worker_stats_are_summed() -> None:
    merged = merge_stats([{"model_loads": 2, "load_seconds": 0.1234, "loaded": ["a"]},
                          {"model_loads": 1, "load_seconds": 0.2, "loaded": ["b"],
                           "denoiser_bytes": {"m": 3}}])
    assert merged["model_loads"] == 3 and merged["load_seconds"] == 0.323
    assert merged["loaded"] == ["a", "b"] and merged["processes"] == 2
    assert merged["denoiser_bytes"] == {"m": 3}
