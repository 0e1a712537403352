"""Typed records of a conformance check's outcome, declared once for the results file.

An :class:`Outcome` is what one check of one item ended with: the enums of
:mod:`conformance.core` for what was checked, how it ended and the tier it was held to, and
these records for what was measured:

* :class:`RecordedMetrics`: ``identical`` and a value per registered metric;
* :class:`StepDelta`: how far one denoising step's latents moved from the expected ones;
* :class:`ClassComparison`: the image against the golden of one other class;
* :class:`Artifacts`: the PNGs written for the comparison;
* :class:`GenerationError`: what a generation raised.

Their fields' types are the results file's schema (2: enum values as strings): msgspec
writes them (:func:`to_builtins`) and reads them back from untrusted input
(:func:`conformance.schema.problem_of` with :func:`decode_hook`), refusing any field that
is not what its type says with a message that names the key. Two shapes msgspec cannot
state are decoded by :func:`decode_hook`: a metrics object (its keys are the registered
metrics of :data:`conformance.metrics.METRICS`) and ``by_class`` (each class's value an
object of metrics or ``{"error": text}``).

Inside one process an outcome moves as an object; :meth:`Outcome.to_json` and
:meth:`Outcome.from_json` are for what crosses a process (a pytest-xdist worker's report).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from conformance.core import Check, Status, Tier
from conformance.errors import ConformanceInputError
from conformance.metrics import METRICS
from conformance.metrics import Metrics as Measured
from conformance.safeio import show
from conformance.schema import (
    Amount,
    CaseName,
    DictKey,
    Hex,
    Int64,
    ModelName,
    NonEmpty,
    Number,
    PrecisionName,
    Problem,
    ResolutionName,
    problem_of,
    refuse,
    refuse_problem,
)

__all__ = [
    "ARTIFACT_NAMES",
    "CHOICE_KINDS",
    "STEP_DELTA_FIELDS",
    "Artifacts",
    "ByClass",
    "ClassComparison",
    "ComparedSide",
    "GenerationError",
    "GoldenChoice",
    "Localization",
    "ModelComparison",
    "Outcome",
    "RecordedMetrics",
    "StepDelta",
    "decode_hook",
    "outcome_problem",
    "to_builtins",
]


class _Value:
    """Equality, hash and repr from ``__slots__``, for the two records that
    :func:`decode_hook` reads (msgspec reads a dataclass or a Struct itself)."""

    __slots__ = ()

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, n) for n in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._fields() == other._fields()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(tuple(v if not isinstance(v, Mapping) else tuple(v.items())
                          for v in self._fields()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{type(self).__name__}({inner})"

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), self._fields()


class RecordedMetrics(_Value):
    """Image metrics of one comparison as a results file records them: ``identical`` and a
    value per registered metric (:data:`conformance.metrics.METRICS`; None: not recorded),
    also read as attributes (``metrics.ssim``). A ``null`` reads as the metric's null value
    (PSNR: ``inf``, identical images); keys that are not registered metrics are ignored."""

    __slots__ = ("identical", "values")
    identical: bool
    values: Mapping[str, float | None]

    def __init__(self, identical: bool, values: Mapping[str, float | None] | None = None):
        object.__setattr__(self, "identical", identical)
        object.__setattr__(self, "values", {} if values is None else values)

    def __getattr__(self, name: str) -> float | None:
        if name in METRICS:
            return self.values.get(name)
        raise AttributeError(f"RecordedMetrics has no attribute {name!r}")

    def get(self, name: str) -> float | None:
        """The value of metric ``name`` (None: not recorded)."""
        return self.values.get(name)

    @classmethod
    def measured(cls, metrics: Measured) -> RecordedMetrics:
        """The record of a comparison's :class:`conformance.metrics.Metrics`."""
        return cls(metrics.identical, dict(metrics.values))

    @classmethod
    def identical_images(cls) -> RecordedMetrics:
        """Every registered metric at its best: the metrics of an image against itself."""
        return cls(True, {n: m.best for n, m in METRICS.items()})


class StepDelta(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    """How far one denoising step's latents moved from the expected ones (a Struct without
    garbage collection: a large matrix holds hundreds of thousands)."""

    step: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1,
                                      description="an integer of at least 0")]
    equal: bool
    mean_delta: float
    std_delta: float

    @classmethod
    def of(cls, deltas: Iterable[Mapping[str, Any]]) -> tuple[StepDelta, ...]:
        """The records of :func:`conformance.trace.step_deltas`'s objects."""
        return tuple(
            cls(int(d["step"]), bool(d["equal"]), float(d["mean_delta"]), float(d["std_delta"]))
            for d in deltas
        )


#: The fields of a :class:`StepDelta`, in order.
STEP_DELTA_FIELDS = StepDelta.__struct_fields__


class ClassComparison(_Value):
    """The image against the golden of one class (``error`` when it could not be)."""

    __slots__ = ("golden_class", "metrics", "first_divergent_step", "error")  # noqa: RUF023
    golden_class: str
    metrics: RecordedMetrics | None
    first_divergent_step: int | None
    error: str | None

    def __init__(self, golden_class: str, metrics: RecordedMetrics | None,
                 first_divergent_step: int | None, error: str | None = None) -> None:
        for name, value in zip(self.__slots__, (golden_class, metrics, first_divergent_step,
                                                error), strict=True):
            object.__setattr__(self, name, value)


#: How an own-class check chose its golden set (see :mod:`conformance.lookup`).
CHOICE_KINDS = ("identity", "nearest", "class", "missing")
_Part = Annotated[str, msgspec.Meta(max_length=4096,
                                    description="a string of at most 4096 characters")]
_Parts = Annotated[tuple[_Part, ...], msgspec.Meta(max_length=64,
                                                   description="a list of at most 64 strings")]


class GoldenChoice(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Which set decided an own-class check and how: ``identity`` (its precision digest
    equals this machine's), ``nearest`` (no set's does: the set that agrees most) or
    ``class`` (this machine's class name, where no identity was measured); ``missing``: no
    set holds the item (a reference check, too). ``sharing``: the
    other sets with the same digest; ``differs``: what differs from the chosen set, in
    words (empty when the tier is exact)."""

    by: Literal["identity", "nearest", "class", "missing"]
    sharing: _Parts = ()
    differs: _Parts = ()


#: The images a failed (or ``--save-images``) comparison writes, in the order they are named.
ARTIFACT_NAMES = ("actual", "golden", "diff", "flip")


class Artifacts(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """PNG paths of one comparison (a results file writes them relative to its folder, and
    only the images written: a path is never ``null``)."""

    actual: str = None  # type: ignore[assignment]
    golden: str = None  # type: ignore[assignment]
    diff: str = None  # type: ignore[assignment]
    flip: str = None  # type: ignore[assignment]  # NVIDIA FLIP's error map

    def items(self) -> list[tuple[str, str]]:
        """(name, path) of every image written, in :data:`ARTIFACT_NAMES` order."""
        return [(n, p) for n in ARTIFACT_NAMES if (p := getattr(self, n)) is not None]

    def __bool__(self) -> bool:
        return any(getattr(self, n) is not None for n in ARTIFACT_NAMES)


class GenerationError(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a generation raised (an ERROR outcome's ``error``); None where not recorded."""

    type: str | None = None
    message: str | None = None
    device: str | None = None
    precision: str | None = None


class ComparedSide(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One side of a ``compare`` outcome: its item, generation time, the bytes of its
    pipeline's weights and (CUDA / XPU) its peak device memory, in MiB."""

    id: NonEmpty
    seconds: Amount | None
    weights_mib: Amount | None
    peak_mib: Amount | None


class ModelComparison(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a ``compare`` outcome set side by side: the relation of the case file, what it
    expected, and the base and the other side."""

    relation: NonEmpty
    expect: NonEmpty
    base: ComparedSide
    other: ComparedSide

    def ratio(self, name: str) -> float | None:
        """other / base of ``seconds``, ``weights_mib`` or ``peak_mib``."""
        a, b = getattr(self.base, name), getattr(self.other, name)
        return b / a if a and b is not None else None


class _Block(msgspec.Struct):
    name: str
    bits: str
    rel_err: Number | Literal["inf", "nan"] | None = None


class _LocalizationKeys(msgspec.Struct):
    """The keys of a ``--localize`` record (:mod:`conformance.localize`) that readers use;
    the record is kept as it is."""

    first_divergent_module: str | None = None
    first_divergent_class: str | None = None
    message: str | None = None
    blocks: Annotated[list[_Block], msgspec.Meta(
        max_length=512, description="a list of at most 512 blocks")] | None = None


class Localization(dict):  # type: ignore[type-arg]
    """An outcome's ``--localize`` record, as the run wrote it (its used keys checked)."""


class ByClass(dict):  # type: ignore[type-arg]
    """An outcome's ``by_class``: golden class -> :class:`ClassComparison`."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """One check of one item on one machine; its fields are the results file's keys."""

    id: NonEmpty
    check: Check
    model: ModelName
    case: CaseName
    resolution: ResolutionName
    precision: PrecisionName
    hardware_class: NonEmpty
    status: Status
    tier: Tier | None
    golden_class: str | None
    metrics: RecordedMetrics | None
    seconds: Amount
    first_divergent_step: Int64 | None = None
    message: str = ""
    artifacts: Annotated[Artifacts, msgspec.Meta(
        description="an object mapping image names (actual, golden, diff, flip) to paths"
    )] = field(default_factory=Artifacts)
    reproduce: str = ""
    #: None where nothing was compared; () for a comparison without a latent trace
    step_deltas: tuple[Annotated[StepDelta, msgspec.Meta(
        description="an object {step, equal, mean_delta, std_delta}")], ...] | None = None
    #: this image against every golden class that has the item, by class (own-class checks)
    by_class: ByClass = field(default_factory=ByClass)
    generate_seconds: Amount | None = None
    peak_memory_mb: Amount | None = None
    variant: str | None = None
    #: SHA-256 of the generated image's pixels (groups bit-identical matrix columns).
    pixel_sha256: Hex | None = None
    #: For an ERROR outcome raised inside a generation.
    error: GenerationError | None = None
    #: With ``--localize``: where the two runs of a same-machine check part
    #: (:meth:`conformance.localize.Localization.to_dict`, ranking cut to five), as is.
    localization: Localization | None = None
    #: A ``compare`` check: the two sides (only then written to the results file)
    comparison: ModelComparison | None = None
    #: An own-class check: how its golden set (``golden_class``) was chosen
    golden_choice: GoldenChoice | None = None

    def to_json(self) -> dict[str, Any]:
        """The object a results file holds for this outcome."""
        return to_builtins(self)

    @classmethod
    def from_json(cls, data: Any, where: str | Path, index: int | None = None) -> Outcome:
        """Read an outcome object of untrusted origin (outcome ``index`` of the results file
        ``where``); any problem raises ConformanceInputError naming the file, the outcome and
        the key."""
        found = problem_of(data, cls, decode_hook)
        if isinstance(found, Problem):
            raise ConformanceInputError(where, outcome_problem(found, data, index))
        return found


#: keys a results file writes only where they hold something
_WRITTEN_IF_SET = ("comparison", "golden_choice")


def to_builtins(record: Any) -> Any:
    """A record (an :class:`Outcome`, a list of them ...) as a results file writes it."""
    out = msgspec.to_builtins(record, enc_hook=_encode)
    if isinstance(record, Outcome):
        for key in _WRITTEN_IF_SET:
            if out[key] is None:
                del out[key]
        # msgspec keeps a tuple a tuple; the JSON text is the same, the object a list
        if out["step_deltas"] is not None:
            out["step_deltas"] = list(out["step_deltas"])
        if "golden_choice" in out:
            out["golden_choice"] |= {k: list(out["golden_choice"][k])
                                     for k in ("sharing", "differs")}
    return out


def _encode(value: Any) -> Any:
    if isinstance(value, RecordedMetrics):
        out: dict[str, Any] = {"identical": value.identical}
        for name, number in value.values.items():
            metric = METRICS.get(name)
            out[name] = metric.to_json(number) if metric is not None else number
        return out
    if isinstance(value, ClassComparison):
        if value.error is not None:
            return {"error": value.error}
        metrics = _encode(value.metrics) if value.metrics is not None else {}
        return metrics | {"first_divergent_step": value.first_divergent_step}
    raise NotImplementedError(f"no JSON form for {type(value).__name__}")


def outcome_problem(problem: Problem, data: Any, index: int | None, start: int = 0) -> str:
    """The message of ``problem`` in outcome ``index`` (``data``; the problem's keys from
    ``start`` on are the outcome's): ``malformed outcomes: outcome 3 ('ID'): KEY ...``."""
    subject = "outcome" if index is None else f"outcome {index}"
    if len(problem.keys) <= start and not problem.lead:  # the outcome itself
        at = "" if index is None else f" (outcomes[{index}])"
        return f"malformed outcomes: {subject}{at} {problem.text}"
    label = show(data["id"]) if type(data) is dict and isinstance(data.get("id"), str) else "?"
    return f"malformed outcomes: {subject} ({label}): {problem.message(start)}"


# -- the shapes msgspec cannot state ----------------------------------------------------------
def decode_hook(type_: type, value: Any) -> Any:
    """msgspec's ``dec_hook`` for the records of this module it does not read itself."""
    if type_ is RecordedMetrics:
        return _metrics(value)
    if type_ is ByClass:
        return _by_class(value)
    if type_ is Localization:
        if type(value) is not dict:
            refuse(value, "an object")
        found = problem_of(value, _LocalizationKeys)
        if isinstance(found, Problem):
            refuse_problem(found)
        return Localization(value)
    raise NotImplementedError(f"{type_.__name__} is not read from a results file")


@functools.cache
def _metrics_keys(names: tuple[str, ...]) -> type[msgspec.Struct]:
    """The metrics object of the registered metrics ``names``: ``identical``, a number or
    null per metric, the first divergent step (other keys are ignored)."""
    return msgspec.defstruct(
        "MetricsObject",
        [("identical", bool), *((n, Number | None, None) for n in names),
         ("first_divergent_step", Int64 | None, None)],
    )


def _metrics(value: Any, keys: tuple[str | int, ...] = ()) -> RecordedMetrics:
    if type(value) is not dict:
        refuse(value, "an object", keys=keys)
    found = problem_of(value, _metrics_keys(tuple(METRICS)))
    if isinstance(found, Problem):
        refuse_problem(found, keys)
    for name, metric in METRICS.items():  # NaN is a measurement (the worst); out of range not
        held = value.get(name)
        lo, hi = metric.range
        # (a rounding hair outside, as an SSIM of 1 + 2e-16, is a measurement too)
        if held is not None and not math.isnan(held) and not lo - 1e-9 <= held <= hi + 1e-9:
            refuse(held, f"a number in {lo:g}..{hi:g} or null", keys=(*keys, name))
    values = {n: m.from_json(value[n]) for n, m in METRICS.items() if n in value}
    return RecordedMetrics(value["identical"], values)


class _ErrorOnly(msgspec.Struct):
    error: str


def _by_class(value: Any) -> ByClass:
    if type(value) is not dict:
        refuse(value, "an object")
    out = ByClass()
    for cls, comparison in value.items():
        keys: tuple[str | int, ...] = (DictKey(cls),)
        if type(comparison) is dict and "error" in comparison:
            found = problem_of(comparison, _ErrorOnly)
            if isinstance(found, Problem):
                refuse_problem(found, keys)
            out[cls] = ClassComparison(cls, None, None, comparison["error"])
        else:
            metrics = _metrics(comparison, keys)
            out[cls] = ClassComparison(cls, metrics, comparison.get("first_divergent_step"))
    return out
