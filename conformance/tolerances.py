"""Tolerance tiers and their bounds, read from a TOML file.

Tiers:

* ``exact``: same hardware class and same pinned software (see
  :data:`conformance.hardware.PINNED_KEYS`): the decoded-pixel SHA-256 must be equal.
  There are no numbers for it.
* ``close``: same class, but threads or library versions differ.
* ``perceptual``: another hardware class, same precision.
* ``fidelity``: a reduced precision against the fp32 reference on the same device.

``[ladder] order`` lists precisions from most to least faithful: the fidelity tests assert
that mean MAE over the cases does not decrease along it (for what the measurements support).

``close`` and ``perceptual`` have bounds per precision, with ``default`` for precisions not
listed. The numbers and how they were calibrated live in ``conformance/tolerances.toml``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from conformance import PACKAGE_DIR
from conformance.errors import ToleranceFileError, type_name
from conformance.metrics import Metrics
from conformance.precision import PRECISIONS
from conformance.safeio import SETTINGS_LIMIT, key_label, load_toml, show

DEFAULT_TOLERANCES = PACKAGE_DIR / "tolerances.toml"
SCHEMA_VERSION = 1


class Tier(enum.Enum):
    EXACT = "exact"
    CLOSE = "close"
    PERCEPTUAL = "perceptual"
    FIDELITY = "fidelity"


@dataclass(frozen=True)
class Bounds:
    """Limits on :class:`~conformance.metrics.Metrics`; ``None`` means unchecked."""

    mae_max: float | None = None
    max_abs_max: int | None = None
    psnr_min: float | None = None
    ssim_min: float | None = None
    phash_max: int | None = None
    dhash_max: int | None = None

    def violations(self, m: Metrics) -> list[str]:
        """Each bound ``m`` breaks, as ``observed=..., expected ...`` text."""
        out = []
        checks = (
            ("MAE", m.mae, self.mae_max, "<="),
            ("max_abs", m.max_abs, self.max_abs_max, "<="),
            ("PSNR", m.psnr, self.psnr_min, ">="),
            ("SSIM", m.ssim, self.ssim_min, ">="),
            ("pHash distance", m.phash_distance, self.phash_max, "<="),
            ("dHash distance", m.dhash_distance, self.dhash_max, "<="),
        )
        for name, value, bound, op in checks:
            if bound is None:
                continue
            bad = (
                (value > bound or math.isnan(value))
                if op == "<="
                else (value < bound or math.isnan(value))
            )
            if bad:
                out.append(f"{name}: observed={value:.6g}, expected {op} {bound}")
        return out

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v for k, v in values.items() if v is not None}


_BOUND_TYPES = {
    "mae_max": float,
    "max_abs_max": int,
    "psnr_min": float,
    "ssim_min": float,
    "phash_max": int,
    "dhash_max": int,
}
_RANGES = {
    "mae_max": (0.0, 255.0),
    "max_abs_max": (0, 255),
    "psnr_min": (0.0, 200.0),
    "ssim_min": (-1.0, 1.0),
    "phash_max": (0, 64),
    "dhash_max": (0, 64),
}


@dataclass(frozen=True)
class Tolerances:
    path: Path
    tiers: dict[Tier, dict[str, Bounds]]
    ladder: tuple[str, ...] = ()

    def bounds(self, tier: Tier, precision: str) -> Bounds:
        """The bounds for ``precision`` at ``tier`` (``default`` if not listed)."""
        if tier is Tier.EXACT:
            raise ValueError("the exact tier has no bounds: it requires equal pixel hashes")
        table = self.tiers[tier]
        return table.get(precision) or table["default"]


def load_tolerances(path: str | Path | None = None) -> Tolerances:
    path = Path(path) if path is not None else DEFAULT_TOLERANCES
    data = load_toml(path, "tolerance file", SETTINGS_LIMIT, error=ToleranceFileError)
    return parse_tolerances(data, path)


def parse_tolerances(data: dict[str, Any], path: Path) -> Tolerances:
    accepted = ["schema_version", "ladder", *(t.value for t in Tier if t is not Tier.EXACT)]
    for key in data:
        if key == Tier.EXACT.value:
            raise ToleranceFileError(
                path, "[exact] takes no bounds: the exact tier requires equal pixel hashes"
            )
        if key not in accepted:
            raise ToleranceFileError(
                path, f"unknown top-level key {show(key)}; accepted: {', '.join(accepted)}"
            )
    version = data.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise ToleranceFileError(
            path,
            f"schema_version is {show(version)}; this version reads "
            f"schema_version = {SCHEMA_VERSION}",
        )
    tiers: dict[Tier, dict[str, Bounds]] = {}
    for tier in (Tier.CLOSE, Tier.PERCEPTUAL, Tier.FIDELITY):
        table = data.get(tier.value)
        if not isinstance(table, dict):
            raise ToleranceFileError(
                path, f"missing table [{tier.value}] (with at least [{tier.value}.default])"
            )
        if "default" not in table:
            raise ToleranceFileError(path, f"[{tier.value}] needs a [{tier.value}.default] table")
        tiers[tier] = {}
        for precision, body in table.items():
            where = f"[{tier.value}.{key_label(precision)}]"
            if precision != "default" and precision not in PRECISIONS:
                raise ToleranceFileError(
                    path,
                    f"{where}: unknown precision {show(precision)}; accepted: default, "
                    f"{', '.join(PRECISIONS)}",
                )
            if not isinstance(body, dict):
                raise ToleranceFileError(path, f"{where} must be a table, not {type_name(body)}")
            tiers[tier][precision] = _parse_bounds(body, path, where)
    return Tolerances(path, tiers, _parse_ladder(data.get("ladder", {}), path))


def _parse_ladder(table: Any, path: Path) -> tuple[str, ...]:
    if not isinstance(table, dict) or set(table) - {"order"}:
        raise ToleranceFileError(path, "[ladder] takes one key, order = [precision, ...]")
    order = table.get("order", [])
    if not isinstance(order, list) or not all(isinstance(p, str) for p in order):
        raise ToleranceFileError(path, "[ladder] order must be an array of precision names")
    for name in order:
        if name not in PRECISIONS:
            raise ToleranceFileError(
                path, f"[ladder] order: unknown precision {show(name)}; accepted: "
                f"{', '.join(PRECISIONS)}"
            )
    if len(set(order)) != len(order):
        raise ToleranceFileError(path, "[ladder] order lists a precision twice")
    return tuple(order)


def _parse_bounds(body: dict[str, Any], path: Path, where: str) -> Bounds:
    values: dict[str, Any] = {}
    for key, value in body.items():
        expected = _BOUND_TYPES.get(key)
        if expected is None:
            raise ToleranceFileError(
                path, f"{where}: unknown key {show(key)}; accepted: {', '.join(_BOUND_TYPES)}"
            )
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not numeric or (expected is int and not isinstance(value, int)):
            raise ToleranceFileError(
                path,
                f"{where}: key {key!r} must be {'an integer' if expected is int else 'a number'}"
                f", not {type_name(value)} ({show(value)})",
            )
        lo, hi = _RANGES[key]
        if not lo <= value <= hi or (isinstance(value, float) and math.isnan(value)):
            raise ToleranceFileError(path, f"{where}: key {key!r} = {value} is outside {lo}..{hi}")
        values[key] = expected(value)
    if not values:
        raise ToleranceFileError(
            path, f"{where} sets no bound; accepted: {', '.join(_BOUND_TYPES)}"
        )
    return Bounds(**values)
