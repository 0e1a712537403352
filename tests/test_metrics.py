from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from conformance.metrics import (
    Metrics,
    PerceptualHash,
    compare,
    diff_map,
    perceptual_hashes,
    pixel_sha256,
)

sides = st.integers(min_value=8, max_value=40)


@st.composite
def images(draw, shape=None):
    h, w = shape or (draw(sides), draw(sides))
    return draw(arrays(np.uint8, (h, w, 3)))


@st.composite
def image_pairs(draw):
    a = draw(images())
    b = draw(images(shape=a.shape[:2]))
    return a, b


@given(images())
def test_identity_gives_zero_distance(img):
    m = compare(img, img.copy())
    assert m.identical
    assert m.mae == 0 and m.max_abs == 0
    assert math.isinf(m.psnr)
    assert m.ssim == 1.0
    assert m.phash_distance == 0 and m.dhash_distance == 0


@given(image_pairs())
def test_metrics_are_symmetric(pair):
    a, b = pair
    ab, ba = compare(a, b), compare(b, a)
    assert ab.mae == ba.mae and ab.max_abs == ba.max_abs
    assert ab.psnr == pytest.approx(ba.psnr)
    assert ab.ssim == pytest.approx(ba.ssim, abs=1e-9)
    assert ab.phash_distance == ba.phash_distance
    assert ab.dhash_distance == ba.dhash_distance


@given(image_pairs())
def test_metrics_are_bounded(pair):
    a, b = pair
    m = compare(a, b)
    assert 0 <= m.mae <= 255 and 0 <= m.max_abs <= 255
    assert m.mae <= m.max_abs
    assert -1.0 <= m.ssim <= 1.0
    assert 0 <= m.phash_distance <= 64 and 0 <= m.dhash_distance <= 64
    assert m.psnr >= 0
    assert m.identical == np.array_equal(a, b)


@given(images())
def test_one_lsb_change_is_seen(img):
    other = img.copy()
    other[0, 0, 0] ^= 1
    m = compare(img, other)
    assert not m.identical and m.max_abs == 1
    assert pixel_sha256(img) != pixel_sha256(other)


@given(image_pairs())
def test_metrics_round_trip(pair):
    m = compare(*pair)
    assert Metrics.from_dict(m.to_dict()) == m


def test_pixel_sha256_includes_shape():
    flat = np.zeros((4, 8, 3), np.uint8)
    assert pixel_sha256(flat) != pixel_sha256(flat.reshape(8, 4, 3))


def test_pixel_sha256_ignores_memory_layout():
    img = np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3)
    assert pixel_sha256(img) == pixel_sha256(np.asfortranarray(img))


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3))]
)
def test_rejects_non_rgb_uint8(bad):
    with pytest.raises(ValueError, match="uint8 RGB"):
        pixel_sha256(bad)


def test_compare_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        compare(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8))
    with pytest.raises(ValueError, match="shapes differ"):
        diff_map(np.zeros((8, 8, 3), np.uint8), np.zeros((9, 8, 3), np.uint8))


@given(image_pairs())
def test_diff_map_is_black_exactly_where_equal(pair):
    a, b = pair
    d = diff_map(a, b)
    assert d.shape == a.shape and d.dtype == np.uint8
    equal = np.all(a == b, axis=2)
    assert np.all(d[equal] == 0)
    assert np.all(d[~equal].max(axis=1) > 0)


def test_perceptual_hash_value_object():
    a = PerceptualHash("phash", "ffff000000000000")
    b = PerceptualHash("phash", "0fff000000000001")
    assert a - b == 5 == b - a
    assert str(a) == "ffff000000000000"
    with pytest.raises(ValueError, match="cannot compare"):
        a - PerceptualHash("dhash", "0" * 16)


def test_perceptual_hashes_are_hex16():
    rng = np.random.default_rng(0)
    ph, dh = perceptual_hashes(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    assert len(ph.hex) == 16 and len(dh.hex) == 16
    int(ph.hex, 16), int(dh.hex, 16)


def test_ssim_of_tiny_images_is_defined():
    a = np.zeros((2, 2, 3), np.uint8)
    b = a.copy()
    b[0, 0] = 9
    assert compare(a, a).ssim == 1.0
    assert math.isnan(compare(a, b).ssim)
