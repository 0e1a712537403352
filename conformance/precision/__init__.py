"""Precision registry: every precision name of the suite, and what its kind does differently.

A precision is data (:class:`Precision`: a name, the compute dtype, bits per weight, a
description, a recipe); its *kind* (:class:`PrecisionKind`) is the one place that says how
the suite treats precisions of that sort: how a pipeline is loaded for it, which probes of
the battery decide its bits, where the matrix sorts it, whether VAE checks, LoRA adapters
and real checkpoints take it. One module per kind declares the kind and its precisions:

* :mod:`conformance.precision.dtype`: ``fp32`` (the reference), ``bf16``, ``fp16``: every
  component loaded in that dtype through ``torch_dtype``;
* :mod:`conformance.precision.fp8`: ``fp8-e4m3`` / ``fp8-e5m2``: the denoiser's weights
  stored in fp8 and computed in fp32 through diffusers' ``enable_layerwise_casting``;
* :mod:`conformance.precision.gguf`: ``gguf-*``: the denoiser quantized with ``conformance
  quantize`` (recipe = the part after ``gguf-``), loaded through diffusers' GGUF loader with
  ``compute_dtype=float32``; the other components stay fp32.

A new precision of an existing kind is one more entry in its module's data; a new kind is one
more module, named in :data:`KIND_MODULES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "IDENTITY_PRECISIONS",
    "KINDS",
    "PRECISIONS",
    "REFERENCE_PRECISION",
    "Precision",
    "PrecisionKind",
    "depends_on_probe",
    "digest_key",
    "dtype_precisions",
    "identity_line_precisions",
    "probe_filter",
    "register",
    "sort_key",
]


@dataclass(frozen=True)
class Precision:
    """One precision name and how its weights are stored and computed."""

    name: str
    kind: PrecisionKind
    #: the dtype every component is loaded in (``torch`` attribute name)
    dtype: str
    #: the denoiser's storage dtype where it differs from ``dtype`` (fp8)
    storage_dtype: str | None
    bits_per_weight: float
    description: str
    #: the ``conformance quantize`` recipe (GGUF)
    recipe: str | None = None
    #: whether ``conformance fingerprint`` and the report header show its probe digest
    identity_line: bool = False

    def torch_dtype(self):  # -> torch.dtype (torch imported lazily)
        import torch

        return getattr(torch, self.dtype)

    def torch_storage_dtype(self):
        import torch

        return getattr(torch, self.storage_dtype) if self.storage_dtype else None


class PrecisionKind:
    """What the suite does differently for one sort of precision.

    The defaults are those of a precision that loads every component in one dtype; a kind
    module overrides what its precisions do otherwise.
    """

    #: the kind's name (``fp8-storage``)
    name: str = ""
    #: what precision names of this kind begin with (``gguf-``), ``""`` for none; names of
    #: this kind the registry does not know (from another version's results) sort with it
    prefix: str = ""
    #: probes of the battery only precisions of this kind depend on (names beginning so)
    probe_prefix: str = ""
    #: every component in the precision's dtype: VAE checks, LoRA adapters and real
    #: checkpoints take these precisions only
    plain: bool = False

    def depends_on_probe(self, precision: Precision, key: str, owner: PrecisionKind | None
                         ) -> bool:
        """Whether images of ``precision`` depend on probe ``key`` (``NAME/DTYPE``), whose
        probe belongs to kind ``owner`` (``None``: a probe every precision runs through)."""
        return owner is None and key.endswith("/fp32")

    def sort_key(self, name: str, index: int | None) -> tuple[Any, ...]:
        """Where precision ``name`` sorts in the matrix; ``index`` is its place in
        :data:`PRECISIONS` (``None``: a name this version does not know)."""
        if index is None:
            return (2, 0, 0, name)
        return (0, index, 0, name)

    def denoiser(self, precision: Precision, source: Path) -> Any:
        """The denoiser module to load in place of the one in folder ``source``, or
        ``None`` to load it from there in :attr:`Precision.dtype`."""
        return None

    def stored_bytes(self, precision: Precision, source: Path) -> int:
        """Bytes of the denoiser's weights as stored at ``precision`` (``source`` holds the
        float32 ``*.safetensors``)."""
        fp32_bytes = sum(f.stat().st_size for f in source.glob("*.safetensors"))
        return round(fp32_bytes * precision.bits_per_weight / 32)

    def prepare(self, precision: Precision, denoiser: Any) -> None:
        """Adjust the loaded pipeline's denoiser (fp8 storage casts its weights)."""


#: name -> precision, in the order messages list them and reports show them
PRECISIONS: dict[str, Precision] = {}
#: name -> kind
KINDS: dict[str, PrecisionKind] = {}

REFERENCE_PRECISION = "fp32"

#: The precisions whose probe digests a measured identity records. An identity's digest
#: folds all of them, so adding a name here changes every machine's identity (golden sets
#: recorded before no longer name this machine): a precision whose probes are those of one
#: listed here is predicted by that one's digest instead (:func:`digest_key`).
IDENTITY_PRECISIONS: tuple[str, ...] = (
    "fp32", "bf16", "fp16", "fp8-e4m3", "fp8-e5m2",
    "gguf-q8_0", "gguf-q6_k", "gguf-q5_k_m", "gguf-q4_k_m", "gguf-q3_k_m", "gguf-q2_k",
)


def register(kind: PrecisionKind, precisions: Iterable[Precision]) -> None:
    """Add ``kind`` and its precisions to the registry (a kind module calls this once)."""
    if kind.name in KINDS:
        raise ValueError(f"precision kind {kind.name!r} is registered twice")
    KINDS[kind.name] = kind
    for precision in precisions:
        if precision.name in PRECISIONS:
            raise ValueError(f"precision {precision.name!r} is registered twice")
        if precision.kind is not kind:
            raise ValueError(f"precision {precision.name!r} is not of kind {kind.name!r}")
        PRECISIONS[precision.name] = precision


def dtype_precisions() -> list[str]:
    """The precisions that load every component in one dtype (``fp32``, ``bf16``,
    ``fp16``): what VAE checks, LoRA adapters and real checkpoints take."""
    return [n for n, p in PRECISIONS.items() if p.kind.plain]


def identity_line_precisions() -> tuple[str, ...]:
    """The precisions whose digests the identity line shows."""
    return tuple(n for n, p in PRECISIONS.items() if p.identity_line)


def _probe_owner(key: str) -> PrecisionKind | None:
    return next((k for k in KINDS.values() if k.probe_prefix and key.startswith(k.probe_prefix)),
                None)


def depends_on_probe(precision: str, key: str) -> bool:
    """Whether the images of ``precision`` depend on probe ``key`` (``NAME/DTYPE``); a name
    the registry does not know depends on the float32 probes of no kind."""
    spec = PRECISIONS.get(precision)
    owner = _probe_owner(key)
    if spec is None:
        return owner is None and key.endswith("/fp32")
    return spec.kind.depends_on_probe(spec, key, owner)


def probe_filter(precision: str) -> Callable[[str], bool]:
    """:func:`depends_on_probe` for one precision."""
    return lambda key: depends_on_probe(precision, key)


def digest_key(precision: str) -> str:
    """The precision whose identity digest predicts the bits of ``precision``: itself when
    identities record it, else the first of :data:`IDENTITY_PRECISIONS` that depends on the
    same probes of the battery (``gguf-q4_0``: ``gguf-q8_0``). A precision with probes of
    its own and no recorded digest is returned unchanged (identities hold no digest for it)."""
    if precision in IDENTITY_PRECISIONS or precision not in PRECISIONS:
        return precision
    from conformance.probes import BATTERY, probe_key

    keys = [probe_key(probe, dtype) for probe in BATTERY for dtype in probe.dtypes]
    mine = [depends_on_probe(precision, k) for k in keys]
    for name in IDENTITY_PRECISIONS:
        if name in PRECISIONS and [depends_on_probe(name, k) for k in keys] == mine:
            return name
    return precision


def sort_key(name: str) -> tuple[Any, ...]:
    """Where precision ``name`` sorts in reports: fp32, bf16, fp16, fp8-e4m3, fp8-e5m2, then
    gguf-* by bits (most first), then names no kind knows."""
    spec = PRECISIONS.get(name)
    if spec is not None:
        return spec.kind.sort_key(name, list(PRECISIONS).index(name))
    kind = next((k for k in KINDS.values() if k.prefix and name.startswith(k.prefix)), None)
    return kind.sort_key(name, None) if kind is not None else (2, 0, 0, name)


#: The kind modules, in the order their precisions are listed.
KIND_MODULES: tuple[str, ...] = ("dtype", "fp8", "gguf")

for _module in KIND_MODULES:
    importlib.import_module(f"{__name__}.{_module}")
