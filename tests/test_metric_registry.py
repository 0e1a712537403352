"""The metric registry: properties every registered metric has, FLIP, and a metric added by one
registration reaching results, tolerances and every renderer."""

from __future__ import annotations

import itertools
import json
import math
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from conformance.metrics import (
    METRICS,
    Better,
    Metric,
    Metrics,
    compare,
    flip,
    flip_map,
    register_metric,
    unregister_metric,
    worst,
)
from conformance.records import Outcome
from conformance.report.fidelity import fidelity_markdown, fidelity_rows
from conformance.report.matrix import build_matrix, load_run, matrix_from_dict
from conformance.report.render import cell_text, legend, render_json, render_markdown
from conformance.report.render_html import by_class_table, metrics_table, render_html
from tests.runs import summary_of

ALL = list(METRICS.values())
sides = st.integers(min_value=8, max_value=32)


@st.composite
def images(draw: Any, shape: tuple[int, int] | None = None, lo: int = 0, hi: int = 255) -> Any:
    h, w = shape or (draw(sides), draw(sides))
    return draw(arrays(np.uint8, (h, w, 3), elements=st.integers(lo, hi)))


@st.composite
def image_pairs(draw: Any) -> tuple[np.ndarray, np.ndarray]:
    a = draw(images())
    return a, draw(images(shape=a.shape[:2]))


def _fraction_differing(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.any(a != b, axis=2)))


#: A metric the renderers have never heard of.
FAKE = Metric(
    "fake", _fraction_differing, Better.LOWER, (0.0, 1.0), "{:.3f}", "fake_max",
    "fake metric", "Fake", headline=True, description="share of pixels that differ",
)


@pytest.fixture
def fake_metric() -> Iterator[Metric]:
    """:data:`FAKE`, registered for one test."""
    register_metric(FAKE)
    try:
        yield FAKE
    finally:
        unregister_metric(FAKE.name)


# -- properties of every registered metric --------------------------------------------------
@pytest.mark.parametrize("metric", ALL, ids=[m.name for m in ALL])
@given(img=images())
def test_identity_gives_the_best_value(metric: Metric, img: np.ndarray) -> None:
    assert metric.measure(img, img.copy()) == metric.best
    assert compare(img, img.copy()).get(metric.name) == metric.best


@pytest.mark.parametrize("metric", [m for m in ALL if m.symmetric], ids=lambda m: m.name)
@given(pair=image_pairs())
def test_symmetric_metrics_are_symmetric(metric: Metric, pair: Any) -> None:
    a, b = pair
    assert metric.measure(a, b) == pytest.approx(metric.measure(b, a), abs=1e-9)


@pytest.mark.parametrize("metric", ALL, ids=[m.name for m in ALL])
@given(pair=image_pairs())
def test_values_lie_in_the_range(metric: Metric, pair: Any) -> None:
    value = metric.measure(*pair)
    lo, hi = metric.range
    assert lo <= value <= hi
    assert isinstance(value, int) if metric.integer else isinstance(value, float)
    assert metric.worse(value, metric.best) == value  # nothing beats identity


@st.composite
def growing_perturbations(draw: Any) -> tuple[np.ndarray, np.ndarray, int, int]:
    """An image away from the clipping limits, a +-1/0 pattern and two amplitudes."""
    a = draw(images(lo=64, hi=191))
    pattern = draw(arrays(np.int16, a.shape, elements=st.sampled_from([-1, 0, 1])))
    small = draw(st.integers(1, 62))
    return a, pattern, small, draw(st.integers(small + 1, 63))


@pytest.mark.parametrize("metric", ALL, ids=[m.name for m in ALL])
@given(case=growing_perturbations())
def test_direction_agrees_with_a_growing_perturbation(metric: Metric, case: Any) -> None:
    a, pattern, small, large = case
    near = (a + small * pattern).astype(np.uint8)
    far = (a + large * pattern).astype(np.uint8)
    v_near, v_far = metric.measure(near, a), metric.measure(far, a)
    # every perturbation is no better than none ...
    assert metric.worse(v_near, metric.best) == v_near
    assert metric.worse(v_far, metric.best) == v_far
    # ... and, for the metrics that promise it, growing it never reads better
    if metric.monotone:
        assert metric.worse(v_near, v_far) == v_far
    if np.any(pattern) and metric.name in ("mae", "max_abs", "psnr"):
        assert v_far != v_near


def test_registry_entries_are_complete() -> None:
    bounds = [m.bound for m in ALL]
    assert len(set(bounds)) == len(bounds)
    for m in ALL:
        assert m.bound.startswith(m.name.split("_")[0])
        assert m.bound.endswith("_max" if m.better is Better.LOWER else "_min")
        assert m.label and m.short and m.description
        assert m.format(m.best)
    assert [m.name for m in ALL] == [
        "mae", "max_abs", "psnr", "ssim", "phash_distance", "dhash_distance", "flip"
    ]


def test_registering_checks_names_and_keys() -> None:
    with pytest.raises(ValueError, match="registered already"):
        register_metric(METRICS["mae"])
    with pytest.raises(ValueError, match="bound key 'mae_max' belongs to another metric"):
        register_metric(Metric("mae2", _fraction_differing, Better.LOWER, (0, 1), "{:.3f}",
                               "mae_max", "x", "x"))
    for name in ("identical", "to_dict", "_hidden", "not-an-identifier"):
        with pytest.raises(ValueError, match="not a usable identifier"):
            register_metric(Metric(name, _fraction_differing, Better.LOWER, (0, 1), "{:.3f}",
                                   "x_max", "x", "x"))
    with pytest.raises(ValueError, match="range"):
        register_metric(Metric("empty", _fraction_differing, Better.LOWER, (1, 1), "{:.3f}",
                               "empty_max", "x", "x"))
    assert "mae2" not in METRICS and "empty" not in METRICS


def test_formats_round_toward_the_worse_side() -> None:
    ssim, mae, psnr = METRICS["ssim"], METRICS["mae"], METRICS["psnr"]
    assert ssim.format(0.99996, compact=True) == "0.999"  # never 1.000 unless identical
    assert ssim.format(1.0, compact=True) == "1.000"
    assert ssim.format(0.71, compact=True) == "0.710"
    assert mae.format(0.00001) == "0.0001"  # never 0.0000 unless identical
    assert mae.format(0.0) == "0.0000" and mae.format(0.5) == "0.5000"
    assert psnr.format(math.inf) == "inf" and psnr.format(40.0, unit=True) == "40.00 dB"
    assert METRICS["phash_distance"].format(2) == "2"
    assert METRICS["phash_distance"].format(1.5) == "1.50"  # a mean
    assert mae.format(None) == "?" and mae.format(math.nan) == "nan"


# -- Metrics records ---------------------------------------------------------------------------
@given(pair=image_pairs())
def test_metrics_hold_every_default_metric_and_round_trip(pair: Any) -> None:
    m = compare(*pair)
    assert list(m.values) == [n for n, spec in METRICS.items() if spec.default]
    data = json.loads(json.dumps(m.to_dict()))
    assert Metrics.from_dict(data) == m
    assert pickle.loads(pickle.dumps(m)) == m
    assert m.summary().split()[0].startswith("MAE=")
    assert "FLIP=" in m.summary()


def test_metrics_attributes_and_errors() -> None:
    m = Metrics(False, {"mae": 1.0}, ssim=0.5)
    assert m.mae == 1.0 and m.ssim == 0.5 and m.get("flip") is None
    with pytest.raises(AttributeError, match="flip was not measured"):
        _ = m.flip
    with pytest.raises(AttributeError):
        _ = m.nothing
    with pytest.raises(TypeError, match="unknown metric 'lpips'"):
        Metrics(False, lpips=0.1)
    with pytest.raises(AttributeError):
        m.mae = 2.0
    assert Metrics.from_dict({"identical": True, "psnr": None, "first_divergent_step": 3}) == (
        Metrics(True, psnr=math.inf)
    )


def test_compare_can_name_its_metrics() -> None:
    a = np.zeros((8, 8, 3), np.uint8)
    b = a.copy()
    b[0, 0] = 10
    m = compare(a, b, metrics=["mae", "max_abs"])
    assert dict(m.values) == {"mae": pytest.approx(30 / 192), "max_abs": 10}
    with pytest.raises(KeyError, match="no metric 'lpips'; registered: mae"):
        compare(a, b, metrics=["lpips"])


def test_worst_takes_each_metric_the_bad_way() -> None:
    a = Metrics(True, mae=0.0, ssim=1.0, psnr=math.inf)
    b = Metrics(False, mae=2.0, ssim=0.9, psnr=30.0)
    assert worst([a, b]) == Metrics(False, mae=2.0, ssim=0.9, psnr=30.0)
    assert worst([a]) == a
    assert math.isnan(worst([b, Metrics(False, mae=1.0, ssim=math.nan, psnr=1.0)]).ssim)


# -- FLIP --------------------------------------------------------------------------------------
@given(img=images())
def test_flip_of_identical_images_is_zero(img: np.ndarray) -> None:
    assert flip(img, img.copy()) == 0.0


def test_flip_grows_with_noise() -> None:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:48]
    base = np.stack([x * 4, y * 4, (x + y) * 2], axis=2).astype(np.int16) + 32
    noise = rng.standard_normal(base.shape)
    values = [
        flip(np.clip(base + sigma * noise, 0, 255).astype(np.uint8), base.astype(np.uint8))
        for sigma in (0, 1, 4, 16, 64)
    ]
    assert values[0] == 0.0
    assert all(x < y for x, y in itertools.pairwise(values)), values
    assert 0.0 < values[-1] < 1.0


def test_flip_is_deterministic_and_in_the_default_comparison() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    assert flip(a, b) == flip(a, b) == compare(a, b).flip
    assert METRICS["flip"].bound == "flip_max" and METRICS["flip"].range == (0.0, 1.0)


def test_flip_map_is_an_rgb_image() -> None:
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
    same = flip_map(a, a)
    assert same.shape == (16, 20, 3) and same.dtype == np.uint8
    assert same.max() < 40  # magma's dark end where nothing differs
    other = flip_map(255 - a, a)
    assert other.mean() > same.mean() + 40
    with pytest.raises(ValueError, match="shapes differ"):
        flip_map(a, a[:8])


# -- a newly registered metric reaches every consumer -----------------------------------------
def _outcome(metrics: dict[str, Any], **kw: Any) -> dict[str, Any]:
    base = {
        "id": "tiny-sd/dot/32x32/fp16", "model": "tiny-sd", "case": "dot",
        "resolution": "32x32", "precision": "fp16", "hardware_class": "cpu-avx2",
        "check": "reference", "status": "passed",
        "tier": "perceptual", "golden_class": "cpu-default", "metrics": metrics,
        "first_divergent_step": None, "message": "", "reproduce": "", "seconds": 0.1,
        "by_class": {"cpu-default": metrics | {"first_divergent_step": None}},
    }
    return base | kw


def _results(tmp_path: Path, outcomes: list[dict[str, Any]]) -> Path:
    path = tmp_path / "results.json"
    path.write_text(json.dumps({
        "schema_version": 1, "hardware_class": "cpu-avx2", "label": "cpu-avx2",
        "fingerprint": {"torch": "2.13.0"}, "started_at": "2026-01-01T00:00:00Z",
        "finished_at": "2026-01-01T00:00:00Z", "stats": {},
        "summary": summary_of(outcomes), "outcomes": outcomes,
    }))
    return path


def test_a_registered_metric_reaches_results_and_renderers(
    tmp_path: Path, fake_metric: Metric
) -> None:
    a = np.zeros((8, 8, 3), np.uint8)
    b = a.copy()
    b[:2] = 3  # a quarter of the pixels
    m = compare(b, a)
    assert m.fake == 0.25 and m.to_dict()["fake"] == 0.25
    assert "Fake=0.250" in m.summary()

    run = load_run(_results(tmp_path, [_outcome(m.to_dict())]))
    matrix = build_matrix([run])
    cell = matrix.cells[0][0]
    assert cell.metrics.fake == 0.25
    ssim, phash = METRICS["ssim"].format(m.ssim, compact=True), m.phash_distance
    assert cell_text(cell) == f"~ {ssim}/{phash}/0.250"  # the headline metrics, fake's too
    assert legend()[1] == ("~ S/P/F", "within tolerance: SSIM S, pHash distance P, fake metric F")

    md = render_markdown(matrix)
    assert f"| ~ {ssim}/{phash}/0.250 |" in md
    assert "`~ S/P/F` within tolerance: SSIM S, pHash distance P, fake metric F" in md

    kv = metrics_table(cell.metrics)
    assert "<th>fake metric</th><td>0.250</td>" in kv
    grid = by_class_table(cell.by_class)
    assert "<th>Fake</th>" in grid and "<td>0.250</td>" in grid
    page = render_html(matrix, {})
    assert "<th>fake metric</th><td>0.250</td>" in page and "<th>Fake</th>" in page

    again = matrix_from_dict(json.loads(render_json(matrix)))
    assert again.cells[0][0].metrics.fake == 0.25

    fid = Outcome.from_json(_outcome(m.to_dict(), check="fidelity", tier="fidelity"), "test")
    table = fidelity_markdown(fidelity_rows([fid], {}))
    header = table.splitlines()[0]
    assert header.endswith("| FLIP | Fake |")
    assert table.splitlines()[2].endswith("| 0.250 |")


def test_renderers_show_every_registered_metric_without_a_fake(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    m = compare(a ^ 1, a)
    matrix = build_matrix([load_run(_results(tmp_path, [_outcome(m.to_dict())]))])
    kv = metrics_table(matrix.cells[0][0].metrics)
    for metric in METRICS.values():
        assert f"<th>{metric.label}</th>" in kv
    assert "<th>FLIP</th>" in by_class_table(matrix.cells[0][0].by_class)
