"""Vectorised numpy quantizers producing GGML block layouts.

Every quantizer takes a float array whose last dimension is a multiple of the
type's block size and returns ``uint8`` bytes shaped ``(*shape[:-1], row_bytes)``
in the exact layout that ``gguf.quants.dequantize`` (and llama.cpp / diffusers)
decode.

Block layouts (256 weights per super-block for the K types):

=======  =====  ==========================================================
type     bytes  layout
=======  =====  ==========================================================
Q2_K     84     scales[16] (lo nibble scale, hi nibble min) | qs[64] | d | dmin
Q3_K     110    hmask[32] | qs[64] | scales[12] (6-bit, offset 32) | d
Q4_K     144    d | dmin | scales[12] (6-bit scale/min pairs) | qs[128]
Q5_K     176    d | dmin | scales[12] | qh[32] | qs[128]
Q6_K     210    ql[128] | qh[64] | scales[16] (int8) | d
=======  =====  ==========================================================

``d``/``dmin`` are IEEE half floats. The scale search follows the classic GGML
approach: per sub-block, try a small family of candidate scales around
``nmax / range`` and keep the one with the lowest squared error (closed-form
least-squares for scale and offset at each candidate; the error is unweighted,
which minimises RMSE, the metric this suite reports); then
quantize the sub-block scales against one half-float super-scale and
re-quantize the weights with the final, stored scales.

Two deliberate deviations from the reference code: the integer sub-scales are
computed against the *stored* half-float super-scale (rounded up, never
flushed to zero), and for each sub-block both the floor and the ceiling of the
integer sub-scale are tried, keeping the one with the lower error. Blocks whose
super-scale falls into the fp16 subnormal range (weights around 1e-6) therefore
still reconstruct instead of collapsing to zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT

__all__ = [
    "QK_K",
    "QUANTIZED_TYPES",
    "SUPPORTED_TYPES",
    "QuantRangeError",
    "bits_per_weight",
    "block_info",
    "dequantize",
    "quantize",
    "quantize_blocks",
]

QK_K = 256
_F16_MIN_NORMAL = np.float32(2.0**-14)
_NEGLIGIBLE = np.float32(1e-30)  # ranges below this are far under fp16 resolution: treat as 0
_CHUNK_WEIGHTS = 1 << 17  # weights per vectorised chunk (512 KiB of float32, cache friendly)

#: Block-quantized GGML types this module can write.
QUANTIZED_TYPES: tuple[QT, ...] = (
    QT.Q2_K,
    QT.Q3_K,
    QT.Q4_K,
    QT.Q5_K,
    QT.Q6_K,
    QT.Q4_0,
    QT.Q5_0,
    QT.Q8_0,
)
#: Every GGML type :func:`quantize` accepts (block types plus plain floats).
SUPPORTED_TYPES: tuple[QT, ...] = (*QUANTIZED_TYPES, QT.BF16, QT.F16, QT.F32)


class QuantRangeError(ValueError):
    """Raised when weights are too large for the half-float block scales of a type."""


def block_info(qtype: QT) -> tuple[int, int]:
    """Return ``(weights_per_block, bytes_per_block)`` for ``qtype``."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    return int(block_size), int(type_size)


def bits_per_weight(qtype: QT) -> float:
    """Return the storage cost of ``qtype`` in bits per weight."""
    block_size, type_size = block_info(qtype)
    return 8.0 * type_size / block_size


# ---------------------------------------------------------------------------
# half-float helpers
# ---------------------------------------------------------------------------


def _f16_up(value: np.ndarray) -> np.ndarray:
    """Round ``value`` to half precision with magnitude >= ``|value|``.

    Non-zero values that would underflow become the smallest subnormal.
    Raises :class:`QuantRangeError` if a value does not fit in fp16.
    """
    value = np.asarray(value, dtype=np.float32)
    with np.errstate(over="ignore"):
        half = value.astype(np.float16)
    if not np.all(np.isfinite(half)):
        raise QuantRangeError(
            "block scale exceeds the float16 range (weights too large for this GGML type)"
        )
    mag = np.abs(half).astype(np.float32)
    short = mag < np.abs(value)
    if np.any(short):
        bumped = np.nextafter(np.abs(half), np.float16(np.inf))
        half = np.where(short, np.copysign(bumped, value).astype(np.float16), half)
        if not np.all(np.isfinite(half)):
            raise QuantRangeError(
                "block scale exceeds the float16 range (weights too large for this GGML type)"
            )
    return half.astype(np.float16)


def _f16_bytes(half: np.ndarray) -> np.ndarray:
    """View a ``(n,)`` float16 array as ``(n, 2)`` little-endian bytes."""
    return np.ascontiguousarray(half.astype("<f2")).view(np.uint8).reshape(-1, 2)


# ---------------------------------------------------------------------------
# scale searches
#
# Sub-blocks are processed as *columns*: ``xt`` has shape ``(n, m)`` where
# column ``j`` holds the ``n`` weights of sub-block ``j``. Reductions over a
# sub-block then run along axis 0 as contiguous vector adds, which is several
# times faster in numpy than reducing many short rows.
# ---------------------------------------------------------------------------


def _columns(blocks: np.ndarray, sub: int) -> np.ndarray:
    """``(nb, 256)`` blocks -> ``(sub, nb * 256 // sub)`` sub-block columns."""
    return np.ascontiguousarray(blocks.reshape(-1, sub).T)


def _rows(levels_t: np.ndarray, n_blocks: int) -> np.ndarray:
    """Inverse of :func:`_columns` for level arrays: ``(sub, m)`` -> ``(nb, 256)``."""
    return np.ascontiguousarray(levels_t.T).reshape(n_blocks, -1)


def _safe_recip(v: np.ndarray) -> np.ndarray:
    """``1 / v`` where ``v != 0``, else 0."""
    nz = v != 0
    return np.where(nz, np.float32(1.0) / np.where(nz, v, np.float32(1.0)), np.float32(0.0))


def _quantize_levels(
    xt: np.ndarray, inv: np.ndarray, lo: float, hi: float, out: np.ndarray
) -> np.ndarray:
    """``clip(rint(xt * inv), lo, hi)`` written into ``out``."""
    np.multiply(xt, inv, out=out)
    np.rint(out, out=out)
    np.clip(out, lo, hi, out=out)
    return out


def _symmetric_scale(xt: np.ndarray, nmax: int) -> np.ndarray:
    """Best signed scale per column for levels ``[-nmax, nmax - 1]``.

    Candidates map the element with the largest magnitude to
    ``-(nmax + 0.1 k)`` for ``k`` in ``-9..9``; for each, the least-squares
    scale ``sum(x l) / sum(l l)`` is computed and the candidate with the
    smallest squared error (the largest ``sum(x l)**2 / sum(l l)``) wins.
    """
    m = xt.shape[1]
    idx = np.argmax(np.abs(xt), axis=0)
    vmax = xt[idx, np.arange(m)]
    zero = np.abs(vmax) <= _NEGLIGIBLE
    inv_vmax = np.float32(1.0) / np.where(zero, np.float32(1.0), vmax)
    best_score = np.full(m, -np.inf, dtype=np.float32)
    best_scale = np.zeros(m, dtype=np.float32)
    lv = np.empty_like(xt)
    tmp = np.empty_like(xt)
    for k in range(-9, 10):
        iscale = -(np.float32(nmax) + np.float32(0.1) * k) * inv_vmax
        _quantize_levels(xt, iscale, -nmax, nmax - 1, lv)
        sumlx = np.multiply(xt, lv, out=tmp).sum(axis=0)
        suml2 = np.multiply(lv, lv, out=tmp).sum(axis=0)
        ok = suml2 > 0
        safe = np.where(ok, suml2, np.float32(1.0))
        score = np.where(ok, sumlx * sumlx / safe, -np.inf)
        better = score > best_score
        best_score = np.where(better, score, best_score)
        best_scale = np.where(better, sumlx / safe, best_scale)
    return np.where(zero, np.float32(0.0), best_scale).astype(np.float32)


def _affine_scale(
    xt: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int
) -> tuple[np.ndarray, np.ndarray]:
    """Best ``(scale, offset)`` per column so that ``x ~ scale * l - offset``.

    ``l`` is in ``[0, nmax]``, ``scale >= 0`` and ``offset >= 0`` (the grid
    always contains zero or starts below it). Candidates stretch the column's
    range by ``nmax + rmin + rdelta * k``; each candidate's levels get a
    closed-form least-squares fit of scale and offset, and the fit with the
    smallest squared error wins (the plain min/max grid is always a candidate).
    """
    n = xt.shape[0]
    lo = np.minimum(xt.min(axis=0), np.float32(0.0))
    span = xt.max(axis=0) - lo
    flat = span <= _NEGLIGIBLE
    span = np.where(flat, np.float32(1.0), span)
    xs = xt - lo
    lv = np.empty_like(xt)
    tmp = np.empty_like(xt)
    sum_x = xt.sum(axis=0).astype(np.float64)
    sum_x2 = np.multiply(xt, xt, out=tmp).sum(axis=0).astype(np.float64)

    def stats(iscale: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        _quantize_levels(xs, iscale, 0, nmax, lv)
        sum_l = lv.sum(axis=0).astype(np.float64)
        sum_l2 = np.multiply(lv, lv, out=tmp).sum(axis=0).astype(np.float64)
        sum_xl = np.multiply(xt, lv, out=tmp).sum(axis=0).astype(np.float64)
        return sum_l, sum_l2, sum_xl

    def error(
        s: np.ndarray, m0: np.ndarray, sum_l: np.ndarray, sum_l2: np.ndarray, sum_xl: np.ndarray
    ) -> np.ndarray:
        # sum((s l + m0 - x)^2) expanded
        return (
            s * s * sum_l2
            + 2 * s * m0 * sum_l
            - 2 * s * sum_xl
            + n * m0 * m0
            - 2 * m0 * sum_x
            + sum_x2
        )

    best_scale = (span / np.float32(nmax)).astype(np.float64)
    best_lo = lo.astype(np.float64)
    best_err = error(best_scale, best_lo, *stats(np.float32(nmax) / span))

    for k in range(nstep + 1):
        sum_l, sum_l2, sum_xl = stats(np.float32(rmin + rdelta * k + nmax) / span)
        det = n * sum_l2 - sum_l * sum_l
        ok = det > 0
        safe_det = np.where(ok, det, 1.0)
        this_scale = (n * sum_xl - sum_x * sum_l) / safe_det
        this_lo = (sum_l2 * sum_x - sum_l * sum_xl) / safe_det
        pos = this_lo > 0
        this_scale = np.where(pos, sum_xl / np.where(sum_l2 > 0, sum_l2, 1.0), this_scale)
        this_lo = np.where(pos, 0.0, this_lo)
        err = error(this_scale, this_lo, sum_l, sum_l2, sum_xl)
        better = ok & (err < best_err) & (this_scale > 0)
        best_err = np.where(better, err, best_err)
        best_scale = np.where(better, this_scale, best_scale)
        best_lo = np.where(better, this_lo, best_lo)

    scale = np.where(flat, 0.0, best_scale).astype(np.float32)
    offset = np.where(flat, -lo, -best_lo).astype(np.float32)
    return scale, np.maximum(offset, np.float32(0.0))


def _super_scale(values: np.ndarray, levels: int) -> np.ndarray:
    """fp16 super-scale per row so that ``levels * d`` covers the row's largest value."""
    return _f16_up(values.max(axis=1) / np.float32(levels))


def _signed_super_scale(values: np.ndarray, lo: int) -> np.ndarray:
    """fp16 super-scale mapping each row's largest-magnitude signed value to ``lo`` (< 0)."""
    idx = np.argmax(np.abs(values), axis=1)[:, None]
    vmax = np.take_along_axis(values, idx, axis=1)[:, 0]
    return _f16_up(vmax / np.float32(lo))


def _fit_affine(
    xt: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    subs: int,
    sub_levels: int,
    nmax: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Quantize per-sub-block ``scale``/``offset`` to ints and the weights to levels.

    ``xt`` holds ``subs`` sub-block columns per super-block. Each super-block
    gets fp16 ``d``/``dmin``; for every sub-block the floor and the ceiling of
    both integer multipliers are tried (four combinations) and the one with
    the lowest squared error after re-quantizing the weights is kept.
    Returns ``(d, dmin, ls, lm, levels_t)`` with ``ls``/``lm`` shaped
    ``(blocks, subs)`` and ``levels_t`` shaped like ``xt``.
    """
    n = xt.shape[0]
    n_blocks = scale.size // subs
    d = _super_scale(scale.reshape(n_blocks, subs), sub_levels)
    dmin = _super_scale(offset.reshape(n_blocks, subs), sub_levels)
    d_col = np.repeat(d.astype(np.float32), subs)
    m_col = np.repeat(dmin.astype(np.float32), subs)
    ls0 = np.floor(scale * _safe_recip(d_col))
    lm0 = np.floor(offset * _safe_recip(m_col))
    sum_x = xt.sum(axis=0)
    y = np.empty_like(xt)
    lv = np.empty_like(xt)
    tmp = np.empty_like(xt)
    best_err = np.full(scale.shape, np.inf, dtype=np.float32)
    best_ls = np.zeros(scale.shape, dtype=np.float32)
    best_lm = np.zeros(scale.shape, dtype=np.float32)
    for ds in (0, 1):
        ls = np.clip(ls0 + ds, 0, sub_levels)
        step = d_col * ls
        inv = _safe_recip(step)
        for dm in (0, 1):
            lm = np.clip(lm0 + dm, 0, sub_levels)
            off = m_col * lm
            np.add(xt, off, out=y)
            _quantize_levels(y, inv, 0, nmax, lv)
            sum_l2 = np.multiply(lv, lv, out=tmp).sum(axis=0)
            sum_ly = np.multiply(lv, y, out=tmp).sum(axis=0)
            # sum((step l - off - x)^2) up to the constant sum(x^2)
            err = step * step * sum_l2 - 2 * step * sum_ly + 2 * off * sum_x + n * off * off
            better = err < best_err
            best_err = np.where(better, err, best_err)
            best_ls = np.where(better, ls, best_ls)
            best_lm = np.where(better, lm, best_lm)
    np.add(xt, m_col * best_lm, out=y)
    _quantize_levels(y, _safe_recip(d_col * best_ls), 0, nmax, lv)
    return (
        d,
        dmin,
        best_ls.astype(np.uint8).reshape(n_blocks, subs),
        best_lm.astype(np.uint8).reshape(n_blocks, subs),
        lv.astype(np.uint8),
    )


def _fit_symmetric(
    xt: np.ndarray, scale: np.ndarray, subs: int, sub_lo: int, sub_hi: int, lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantize signed sub-block scales to ints in ``[sub_lo, sub_hi]`` and weights to levels.

    Levels are in ``[lo, hi]`` and returned shifted by ``-lo`` (starting at 0),
    shaped like ``xt``. Floor and ceiling of each integer sub-scale are tried;
    the lower squared error wins. Returns ``(d, ints, levels_t)`` with ``ints``
    shaped ``(blocks, subs)``.
    """
    n_blocks = scale.size // subs
    d = _signed_super_scale(scale.reshape(n_blocks, subs), sub_lo)
    d_col = np.repeat(d.astype(np.float32), subs)
    base = np.floor(scale * _safe_recip(d_col))
    lv = np.empty_like(xt)
    tmp = np.empty_like(xt)
    best_err = np.full(scale.shape, np.inf, dtype=np.float32)
    best_sc = np.zeros(scale.shape, dtype=np.float32)
    for delta in (0, 1):
        sc = np.clip(base + delta, sub_lo, sub_hi)
        step = d_col * sc
        _quantize_levels(xt, _safe_recip(step), lo, hi, lv)
        sum_l2 = np.multiply(lv, lv, out=tmp).sum(axis=0)
        sum_lx = np.multiply(lv, xt, out=tmp).sum(axis=0)
        err = step * step * sum_l2 - 2 * step * sum_lx  # + sum(x^2)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_sc = np.where(better, sc, best_sc)
    _quantize_levels(xt, _safe_recip(d_col * best_sc), lo, hi, lv)
    lv -= lo
    return d, best_sc.astype(np.int8).reshape(n_blocks, subs), lv.astype(np.uint8)


# ---------------------------------------------------------------------------
# bit packing helpers
# ---------------------------------------------------------------------------


def _pack_bits(levels: np.ndarray, groups: int, bits: int) -> np.ndarray:
    """Pack ``levels`` shaped ``(n, groups, k, width)`` into ``(n, groups * width)``.

    Entry ``[g, j, p]`` lands in byte ``g * width + p`` at bit ``j * bits``.
    """
    n, g, k, width = levels.shape
    assert g == groups and k * bits <= 8
    out = np.zeros((n, g, width), dtype=np.uint8)
    for j in range(k):
        out |= (levels[:, :, j, :] << np.uint8(j * bits)).astype(np.uint8)
    return out.reshape(n, g * width)


def _pack_k_scales(sc: np.ndarray, mn: np.ndarray) -> np.ndarray:
    """Pack eight 6-bit scales and eight 6-bit mins into 12 bytes (Q4_K/Q5_K)."""
    out = np.empty((sc.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)
    out[:, 4:8] = mn[:, 0:4] | ((mn[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:8] & 0x0F) | ((mn[:, 4:8] & 0x0F) << 4)
    return out


# ---------------------------------------------------------------------------
# K-quant block quantizers: input (n, 256) float32, output (n, type_size) uint8
# ---------------------------------------------------------------------------


def _q2_k(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    xt = _columns(blocks, 16)
    scale, offset = _affine_scale(xt, nmax=3, rmin=-0.5, rdelta=0.1, nstep=15)
    d, dmin, ls, lm, lt = _fit_affine(xt, scale, offset, 16, 15, 3)
    lv = _rows(lt, n).reshape(n, 2, 4, 32)
    out = np.empty((n, 84), dtype=np.uint8)
    out[:, 0:16] = ls | (lm << 4)
    out[:, 16:80] = _pack_bits(lv, 2, 2)
    out[:, 80:82] = _f16_bytes(d)
    out[:, 82:84] = _f16_bytes(dmin)
    return out


def _q3_k(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    xt = _columns(blocks, 16)
    d, sc, lt = _fit_symmetric(xt, _symmetric_scale(xt, 4), 16, -32, 31, -4, 3)
    lv = _rows(lt, n)
    low = (lv & 3).reshape(n, 2, 4, 32)
    high = (lv >> 2).reshape(n, 1, 8, 32)
    u = (sc.astype(np.int16) + 32).astype(np.uint8)
    scales = np.empty((n, 12), dtype=np.uint8)
    scales[:, 0:8] = (u[:, 0:8] & 0x0F) | ((u[:, 8:16] & 0x0F) << 4)
    scales[:, 8:12] = _pack_bits((u >> 4).reshape(n, 1, 4, 4), 1, 2)
    out = np.empty((n, 110), dtype=np.uint8)
    out[:, 0:32] = _pack_bits(high, 1, 1)
    out[:, 32:96] = _pack_bits(low, 2, 2)
    out[:, 96:108] = scales
    out[:, 108:110] = _f16_bytes(d)
    return out


def _q45_k_common(
    blocks: np.ndarray, nmax: int, rmin: float, nstep: int
) -> tuple[np.ndarray, np.ndarray]:
    """Shared Q4_K/Q5_K search: returns the 16-byte header and ``(n, 256)`` levels."""
    n = blocks.shape[0]
    xt = _columns(blocks, 32)
    scale, offset = _affine_scale(xt, nmax=nmax, rmin=rmin, rdelta=0.1, nstep=nstep)
    d, dmin, ls, lm, lt = _fit_affine(xt, scale, offset, 8, 63, nmax)
    head = np.empty((n, 16), dtype=np.uint8)
    head[:, 0:2] = _f16_bytes(d)
    head[:, 2:4] = _f16_bytes(dmin)
    head[:, 4:16] = _pack_k_scales(ls, lm)
    return head, _rows(lt, n)


def _q4_k(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    head, lv = _q45_k_common(blocks, nmax=15, rmin=-1.0, nstep=20)
    out = np.empty((n, 144), dtype=np.uint8)
    out[:, 0:16] = head
    out[:, 16:144] = _pack_bits(lv.reshape(n, 4, 2, 32), 4, 4)
    return out


def _q5_k(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    head, lv = _q45_k_common(blocks, nmax=31, rmin=-0.5, nstep=15)
    out = np.empty((n, 176), dtype=np.uint8)
    out[:, 0:16] = head
    out[:, 16:48] = _pack_bits((lv >> 4).reshape(n, 1, 8, 32), 1, 1)
    out[:, 48:176] = _pack_bits((lv & 0x0F).reshape(n, 4, 2, 32), 4, 4)
    return out


def _q6_k(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    xt = _columns(blocks, 16)
    d, sc, lt = _fit_symmetric(xt, _symmetric_scale(xt, 32), 16, -128, 127, -32, 31)
    lv = _rows(lt, n)
    out = np.empty((n, 210), dtype=np.uint8)
    out[:, 0:128] = _pack_bits((lv & 0x0F).reshape(n, 2, 2, 64), 2, 4)
    out[:, 128:192] = _pack_bits((lv >> 4).reshape(n, 2, 4, 32), 2, 2)
    out[:, 192:208] = sc.view(np.uint8)
    out[:, 208:210] = _f16_bytes(d)
    return out


# ---------------------------------------------------------------------------
# 32-weight block types: reference results from gguf-py, tiny blocks repaired
# ---------------------------------------------------------------------------


def _signed_absmax(blocks: np.ndarray) -> np.ndarray:
    idx = np.argmax(np.abs(blocks), axis=1)[:, None]
    return np.take_along_axis(blocks, idx, axis=1)[:, 0]


def _tiny_rows(blocks: np.ndarray, divisor: float) -> np.ndarray:
    """Rows whose scale ``absmax / divisor`` is not a normal half float."""
    amax = np.abs(blocks).max(axis=1)
    return (amax > 0) & (amax / np.float32(divisor) < _F16_MIN_NORMAL)


def _q8_0_exact(blocks: np.ndarray) -> np.ndarray:
    amax = np.abs(blocks).max(axis=1)
    d = _f16_up(amax / np.float32(127))
    d32 = d.astype(np.float32)[:, None]
    safe = np.where(d32 > 0, d32, np.float32(1.0))
    q = np.where(d32 > 0, np.clip(np.rint(blocks / safe), -127, 127), 0).astype(np.int8)
    return np.concatenate([_f16_bytes(d), q.view(np.uint8)], axis=1)


def _q4_0_exact(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    d = _f16_up(_signed_absmax(blocks) / np.float32(-8))
    d32 = d.astype(np.float32)[:, None]
    safe = np.where(d32 != 0, d32, np.float32(1.0))
    q = np.where(d32 != 0, np.clip(np.rint(blocks / safe), -8, 7), 0) + 8
    q = q.astype(np.uint8).reshape(n, 1, 2, 16)
    return np.concatenate([_f16_bytes(d), _pack_bits(q, 1, 4)], axis=1)


def _q5_0_exact(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    d = _f16_up(_signed_absmax(blocks) / np.float32(-16))
    d32 = d.astype(np.float32)[:, None]
    safe = np.where(d32 != 0, d32, np.float32(1.0))
    q = np.where(d32 != 0, np.clip(np.rint(blocks / safe), -16, 15), 0) + 16
    q = q.astype(np.uint8)
    qh = np.packbits((q >> 4).astype(np.uint8), axis=1, bitorder="little")
    qs = _pack_bits((q & 0x0F).reshape(n, 1, 2, 16), 1, 4)
    return np.concatenate([_f16_bytes(d), qh, qs], axis=1)


def _with_reference(
    qtype: QT, divisor: float, exact: Callable[[np.ndarray], np.ndarray]
) -> Callable[[np.ndarray], np.ndarray]:
    def run(blocks: np.ndarray) -> np.ndarray:
        amax = float(np.abs(blocks).max()) if blocks.size else 0.0
        if amax / divisor > 65504.0:
            raise QuantRangeError(
                f"block scale exceeds the float16 range for {qtype.name} (max |w| = {amax:.4g})"
            )
        n, block_size = blocks.shape
        group = math.gcd(n, 256) if n else 1
        rows = blocks.reshape(n // group, group * block_size)
        # tiny blocks overflow the reference's 1/d; they are re-encoded below
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            out = np.array(gguf.quants.quantize(rows, qtype), dtype=np.uint8, copy=True)
        out = out.reshape(n, -1)
        tiny = _tiny_rows(blocks, divisor)
        if np.any(tiny):
            out[tiny] = exact(blocks[tiny])
        return out

    return run


_BLOCK_QUANTIZERS: dict[QT, Callable[[np.ndarray], np.ndarray]] = {
    QT.Q2_K: _q2_k,
    QT.Q3_K: _q3_k,
    QT.Q4_K: _q4_k,
    QT.Q5_K: _q5_k,
    QT.Q6_K: _q6_k,
    QT.Q8_0: _with_reference(QT.Q8_0, 127.0, _q8_0_exact),
    QT.Q4_0: _with_reference(QT.Q4_0, 8.0, _q4_0_exact),
    QT.Q5_0: _with_reference(QT.Q5_0, 16.0, _q5_0_exact),
}


def quantize_blocks(blocks: np.ndarray, qtype: QT) -> np.ndarray:
    """Quantize ``(n_blocks, block_size)`` float weights to ``(n_blocks, type_size)`` bytes."""
    if qtype not in _BLOCK_QUANTIZERS:
        raise ValueError(f"{qtype.name} is not a block-quantized type supported here")
    block_size, type_size = block_info(qtype)
    blocks = np.ascontiguousarray(blocks, dtype=np.float32)
    if blocks.ndim != 2 or blocks.shape[1] != block_size:
        raise ValueError(f"expected blocks of shape (n, {block_size}), got {blocks.shape}")
    if not np.all(np.isfinite(blocks)):
        raise ValueError("cannot quantize NaN or infinite weights")
    fn = _BLOCK_QUANTIZERS[qtype]
    out = np.empty((blocks.shape[0], type_size), dtype=np.uint8)
    step = max(1, _CHUNK_WEIGHTS // block_size)
    with np.errstate(invalid="ignore", divide="ignore"):
        for start in range(0, blocks.shape[0], step):
            out[start : start + step] = fn(blocks[start : start + step])
    return out


def quantize(array: np.ndarray, qtype: QT) -> np.ndarray:
    """Quantize ``array`` to GGML type ``qtype``.

    Returns the raw bytes as ``uint8`` shaped ``(*shape[:-1], row_bytes)`` for
    block types and BF16, or a ``float16``/``float32`` array for F16/F32.
    Raises ``ValueError`` if the last dimension is not a multiple of the block
    size or the data holds NaN/inf, and :class:`QuantRangeError` if the values
    overflow the type's half-float scales.
    """
    qtype = QT(qtype)
    data = np.asarray(array)
    if qtype == QT.F32:
        return np.ascontiguousarray(data, dtype=np.float32)
    if qtype == QT.F16:
        with np.errstate(over="ignore"):
            half = np.ascontiguousarray(data, dtype=np.float16)
        if np.any(np.isinf(half) & np.isfinite(data)):
            raise QuantRangeError("values exceed the float16 range")
        return half
    if qtype == QT.BF16:
        return np.asarray(gguf.quants.quantize(data.astype(np.float32), QT.BF16), dtype=np.uint8)
    if qtype not in _BLOCK_QUANTIZERS:
        raise ValueError(f"unsupported GGML type {qtype.name}")
    block_size, type_size = block_info(qtype)
    if data.ndim == 0 or data.shape[-1] % block_size != 0:
        raise ValueError(
            f"last dimension {data.shape[-1] if data.ndim else 0} is not a multiple of "
            f"the {qtype.name} block size {block_size}"
        )
    shape = data.shape
    blocks = data.astype(np.float32, copy=False).reshape(-1, block_size)
    out = quantize_blocks(blocks, qtype)
    return out.reshape(*shape[:-1], shape[-1] // block_size * type_size)


def dequantize(data: np.ndarray, qtype: QT) -> np.ndarray:
    """Decode GGML bytes back to float32 (delegates to ``gguf.quants.dequantize``)."""
    return np.asarray(gguf.quants.dequantize(np.asarray(data), QT(qtype)), dtype=np.float32)
