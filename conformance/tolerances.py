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
listed. A table of bounds takes the tolerance key of any registered metric
(:data:`conformance.metrics.METRICS`: ``mae_max``, ``ssim_min``, ``flip_max``...), and only
those.

The optional ``[vae.decode.<precision>]``, ``[vae.roundtrip.<precision>]`` and
``[vae.latent8.<precision>]`` tables (``default`` for precisions not listed) bound the VAE
checks of :mod:`conformance.vae`: metric bounds as above, plus the keys of
:data:`VAE_EXTRA_KEYS`. The numbers and how they were calibrated live in
``conformance/tolerances.toml``.

The file is decoded once into its declared type (:func:`file_type`: each bound a number in
its metric's range, built from the metric registry) by :mod:`conformance.schema`; every
refusal is one :class:`~conformance.errors.ToleranceFileError` naming the file and the key
path (``close['default'].mae_max``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, NoReturn

import msgspec
from msgspec import UNSET, UnsetType

from conformance import PACKAGE_DIR
from conformance.core import Tier
from conformance.errors import ToleranceFileError
from conformance.metrics import Metric, Metrics, bound_keys
from conformance.precision import PRECISIONS, dtype_precisions
from conformance.safeio import SETTINGS_LIMIT, key_label, load_toml, show
from conformance.schema import DictKey, Problem, convert, key_problem, number_in, one_of

DEFAULT_TOLERANCES = PACKAGE_DIR / "tolerances.toml"
SCHEMA_VERSION = 1


class Bounds:
    """Limits on :class:`~conformance.metrics.Metrics` by tolerance key (``mae_max=1.0``,
    ``ssim_min=0.99``), for registered metrics only; a key not given is unchecked (reads
    None as an attribute)."""

    __slots__ = ("limits",)
    limits: Mapping[str, float]

    def __init__(self, **limits: float) -> None:
        keys = bound_keys()
        unknown = [k for k in limits if k not in keys]
        if unknown:
            raise TypeError(
                f"unknown bound {', '.join(map(repr, unknown))}; accepted: {', '.join(keys)}"
            )
        ordered = {k: limits[k] for k in keys if limits.get(k) is not None}
        object.__setattr__(self, "limits", MappingProxyType(ordered))

    def __getattr__(self, name: str) -> float | None:
        if name in bound_keys():
            return self.limits.get(name)
        raise AttributeError(f"Bounds has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Bounds is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_bounds, (dict(self.limits),))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Bounds):
            return NotImplemented
        return dict(self.limits) == dict(other.limits)

    def __hash__(self) -> int:
        return hash(tuple(self.limits.items()))

    def __repr__(self) -> str:
        return f"Bounds({', '.join(f'{k}={v!r}' for k, v in self.limits.items())})"

    def items(self) -> list[tuple[Metric, float]]:
        """(metric, bound) of every bound set, in registry order."""
        keys = bound_keys()
        return [(keys[k], v) for k, v in self.limits.items() if k in keys]

    def violations(self, m: Metrics) -> list[str]:
        """Each bound ``m`` breaks, as ``observed=..., expected ...`` text; a bounded metric
        that ``m`` did not measure is one too (``not measured``)."""
        out = []
        for metric, bound in self.items():
            value = m.get(metric.name)
            if value is None:
                out.append(f"{metric.label}: not measured, expected {metric.op} {bound}")
            elif not metric.passes(value, bound):
                out.append(f"{metric.label}: observed={value:.6g}, expected {metric.op} {bound}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return dict(self.limits)


def _bounds(limits: dict[str, float]) -> Bounds:
    return Bounds(**limits)


@dataclass(frozen=True)
class ExtraKey:
    """A VAE bound that is not a registered metric's: its type, range and meaning."""

    kind: type
    range: tuple[float, float]
    op: str
    meaning: str


#: Keys of the VAE tables besides metric bounds, per table.
VAE_EXTRA_KEYS: dict[str, dict[str, ExtraKey]] = {
    "decode": {},
    "roundtrip": {
        "psnr_drop_max": ExtraKey(
            float, (0.0, 200.0), "<=", "PSNR per photo lost against the fp32 round trip, dB"
        ),
    },
    "latent8": {
        "psnr_loss_max": ExtraKey(
            float, (0.0, 200.0), "<=", "PSNR against the photo lost by 8-bit latents, dB"
        ),
        "compression_min": ExtraKey(
            float, (0.0, 1e6), ">=", "raw RGB bytes per stored 8-bit latent byte"
        ),
    },
}
#: What each VAE table's metric bounds compare.
VAE_TABLES: dict[str, str] = {
    "decode": "seeded latents decoded in the precision against the fp32 decode, worst image",
    "roundtrip": "photos encoded (latent mean) and decoded against the photo, worst photo",
    "latent8": "the 8-bit latents' round trip against the float latents', worst photo",
}


@dataclass(frozen=True)
class VaeBounds:
    """One VAE table: bounds on the registered metrics, and its extra keys."""

    metrics: Bounds
    extra: Mapping[str, float] = field(default_factory=dict)
    where: str = ""

    def extra_violation(self, key: str, value: float, what: str, unit: str = "") -> str | None:
        """``what: observed=..., expected <= bound`` when ``value`` breaks extra key ``key``
        (None when it holds or the table does not set the key)."""
        bound = self.extra.get(key)
        if bound is None:
            return None
        table = next(keys for keys in VAE_EXTRA_KEYS.values() if key in keys)
        op = table[key].op
        ok = (value <= bound) if op == "<=" else (value >= bound)
        if ok and not math.isnan(value):
            return None
        suffix = f" {unit}" if unit else ""
        return f"{what}: observed={value:.6g}{suffix}, expected {op} {bound}{suffix}"


@dataclass(frozen=True)
class Tolerances:
    path: Path
    tiers: dict[Tier, dict[str, Bounds]]
    ladder: tuple[str, ...] = ()
    #: ``vae[table][precision]``; empty when the file has no ``[vae]`` tables.
    vae: dict[str, dict[str, VaeBounds]] = field(default_factory=dict)

    def problems(self, tier: Tier, precision: str, metrics: Metrics,
                 first_divergent_step: int | None = None) -> list[str]:
        """What does not hold of a comparison at ``tier``: the one rule every check, the
        golden validator and the matrix's golden columns judge by. ``exact``: the decoded
        pixels and every step's latents are equal (``first_divergent_step`` None);
        ``differ``: the pixels are not; the other tiers: the bounds for ``precision``."""
        if tier is Tier.EXACT:
            return ((["the decoded pixels differ"] if not metrics.identical else [])
                    + ([f"the latents differ from step {first_divergent_step} on"]
                       if first_divergent_step is not None else []))
        if tier is Tier.DIFFER:
            return (["the image is bit-identical to the base's: the variant changed nothing"]
                    if metrics.identical else [])
        return self.bounds(tier, precision).violations(metrics)

    def lookup(self, table: str, precision: str) -> Bounds | VaeBounds:
        """The bounds of tolerance table ``table`` for ``precision`` (the table's
        ``default`` where it lists no such precision): a tier's (``close``, ``perceptual``,
        ``fidelity``: :class:`Bounds`) or a VAE check's (``vae.decode``, ``vae.roundtrip``,
        ``vae.latent8``: :class:`VaeBounds`). The one lookup of every check's bounds; a
        table without either is a :class:`MissingBounds` naming the file and the table."""
        if table.startswith("vae."):
            name = table.removeprefix("vae.")
            if name not in VAE_TABLES:
                raise ValueError(f"no VAE table {name!r}; known: {', '.join(VAE_TABLES)}")
            found: Mapping[str, Bounds | VaeBounds] = self.vae.get(name, {})
            what = "the VAE checks"
        else:
            tier = Tier(table)
            if tier in (Tier.EXACT, Tier.DIFFER):
                raise ValueError(
                    f"the {tier.value} tier has no bounds: it compares pixel hashes")
            found, what = self.tiers.get(tier, {}), f"the {tier.value} tier"
        bounds = found.get(precision) or found.get("default")
        if bounds is None:
            raise MissingBounds(
                self.path, f"no [{table}.{precision}] table (nor [{table}.default]) bounds "
                f"{what}")
        return bounds

    def bounds(self, tier: Tier, precision: str) -> Bounds:
        """The bounds for ``precision`` at ``tier`` (``default`` if not listed)."""
        found = self.lookup(tier.value, precision)
        assert isinstance(found, Bounds)
        return found

    def vae_bounds(self, table: str, precision: str) -> VaeBounds:
        """The ``[vae.<table>.<precision>]`` bounds (``default`` if not listed).

        Raises :class:`MissingBounds` (a ``LookupError``) naming the file and the table
        when there are none."""
        found = self.lookup(f"vae.{table}", precision)
        assert isinstance(found, VaeBounds)
        return found


class MissingBounds(ToleranceFileError, LookupError):
    """A tolerance file without the table (nor its ``default``) that bounds a check."""


# -- the file's declared shape ---------------------------------------------------------------
KIND = "tolerance file"
#: the tiers a tolerance file bounds (``exact`` and ``differ`` compare pixel hashes)
BOUNDED = (Tier.CLOSE, Tier.PERCEPTUAL, Tier.FIDELITY)
#: a key's bound: (key, integer, lowest, highest)
_Spec = tuple[tuple[str, bool, float, float], ...]


class LadderTable(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[ladder]``: precisions from most to least faithful."""

    order: Annotated[list[one_of(PRECISIONS)], msgspec.Meta(  # type: ignore[valid-type]
        description="a list of precision names")] = msgspec.field(default_factory=list)


def _table(name: str) -> msgspec.Meta:
    return msgspec.Meta(description=f"a {name} table")


@functools.cache
def _bounds_table(name: str, spec: _Spec) -> type[msgspec.Struct]:
    """A table of bounds: each key of ``spec`` a number (an integer where it says so) in its
    range, left out where it is not set (``UNSET``)."""
    return msgspec.defstruct(
        name,
        [(key, number_in(lo, hi, integer=integer) | UnsetType, UNSET)
         for key, integer, lo, hi in spec],
        kw_only=True, frozen=True, forbid_unknown_fields=True,
    )


@functools.cache
def file_type(metrics: _Spec) -> type[msgspec.Struct]:
    """The declared tolerance file for the bound keys ``metrics`` (:func:`_metric_spec`:
    the metric registry's, which a plugin may extend)."""
    vae_tables = [
        (name, _tables(f"vae.{name}", _bounds_table(f"Vae{name.title()}", metrics + tuple(
            (key, e.kind is int, *e.range) for key, e in VAE_EXTRA_KEYS[name].items()))),
         msgspec.field(default_factory=dict))
        for name in VAE_TABLES
    ]
    vae = msgspec.defstruct("VaeTables", vae_tables, kw_only=True, frozen=True,
                            forbid_unknown_fields=True)
    return msgspec.defstruct(
        "ToleranceFile",
        [("schema_version", int),
         ("ladder", Annotated[LadderTable, _table("[ladder]")],
          msgspec.field(default_factory=LadderTable)),
         *((t.value, _tables(t.value, _bounds_table("Bounds", metrics))) for t in BOUNDED),
         ("vae", Annotated[vae, _table("[vae]")], msgspec.field(default_factory=vae))],
        kw_only=True, frozen=True, forbid_unknown_fields=True,
    )


def _tables(name: str, bounds: type[msgspec.Struct]) -> Any:
    """``[NAME.PRECISION]`` tables of ``bounds``, by precision."""
    return Annotated[dict[str, Annotated[bounds, _table(f"[{name}.PRECISION]")]],
                     msgspec.Meta(description=f"a table of [{name}.PRECISION] tables")]


def _metric_spec() -> _Spec:
    return tuple((key, m.integer, *m.limits) for key, m in bound_keys().items())


def _refuse(path: Path, keys: tuple[str | int, ...], text: str) -> NoReturn:
    """A refusal found after decoding: ``FILE: tolerance file: KEY.PATH: TEXT``."""
    raise ToleranceFileError(path, f"{KIND}: {Problem(keys, '').path()}: {text}")


def load_tolerances(path: str | Path | None = None) -> Tolerances:
    path = Path(path) if path is not None else DEFAULT_TOLERANCES
    data = load_toml(path, KIND, SETTINGS_LIMIT, error=ToleranceFileError)
    return parse_tolerances(data, path)


def parse_tolerances(data: dict[str, Any], path: Path) -> Tolerances:
    """Validate parsed TOML ``data`` read from ``path``: decoded into :func:`file_type`,
    then what the types do not state (the precisions named, a ``default`` per tier, at least
    one bound per table, a precision once in the ladder)."""
    version = data.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise ToleranceFileError(
            path,
            f"schema_version is {show(version)}; this version reads "
            f"schema_version = {SCHEMA_VERSION}",
        )
    for tier in (Tier.EXACT, Tier.DIFFER):
        if tier.value in data:
            raise ToleranceFileError(
                path, f"[{tier.value}] takes no bounds: the {tier.value} tier requires "
                + ("equal pixel hashes" if tier is Tier.EXACT else "unequal pixel hashes")
            )
    spec = _metric_spec()
    file = convert(data, file_type(spec), path, kind=KIND, error=ToleranceFileError)
    precision = one_of(("default", *PRECISIONS))
    tiers: dict[Tier, dict[str, Bounds]] = {}
    for tier in BOUNDED:
        table = getattr(file, tier.value)
        _check_keys(path, table, precision, (tier.value,))
        if "default" not in table:
            raise ToleranceFileError(path, f"{KIND}: key {tier.value}['default'] is missing")
        tiers[tier] = {name: Bounds(**_values(path, body, (tier.value, DictKey(name))))
                       for name, body in table.items()}
    order = file.ladder.order
    if len(set(order)) != len(order):
        _refuse(path, ("ladder", "order"), "lists a precision twice")
    return Tolerances(path, tiers, tuple(order), _vae(path, file.vae))


def _check_keys(path: Path, table: Mapping[str, Any], type_: Any,
                keys: tuple[str | int, ...]) -> None:
    problem = key_problem(table, type_, keys)
    if problem is not None:
        raise ToleranceFileError(path, f"{KIND}: {problem}")


def _values(path: Path, body: msgspec.Struct, keys: tuple[str | int, ...]) -> dict[str, Any]:
    """The bounds a decoded table sets (at least one)."""
    values = {k: v for k in body.__struct_fields__ if (v := getattr(body, k)) is not UNSET}
    if not values:
        _refuse(path, keys, f"sets no bound; accepted: {', '.join(body.__struct_fields__)}")
    return values


def _vae(path: Path, tables: msgspec.Struct) -> dict[str, dict[str, VaeBounds]]:
    dtypes = one_of(("default", *dtype_precisions()))
    out: dict[str, dict[str, VaeBounds]] = {}
    for name in VAE_TABLES:
        table = getattr(tables, name)
        if not table:
            continue
        _check_keys(path, table, dtypes, ("vae", name))
        extra = VAE_EXTRA_KEYS[name]
        out[name] = {}
        for precision, body in table.items():
            values = _values(path, body, ("vae", name, DictKey(precision)))
            out[name][precision] = VaeBounds(
                Bounds(**{k: v for k, v in values.items() if k not in extra}),
                MappingProxyType({k: v for k, v in values.items() if k in extra}),
                f"[vae.{name}.{key_label(precision)}] of {path}",
            )
    return out
