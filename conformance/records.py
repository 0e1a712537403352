"""Typed records of a conformance check's outcome, and their one JSON form.

An :class:`Outcome` is what one check of one item ended with: the enums of
:mod:`conformance.core` for what was checked, how it ended and the tier it was held to, and
these records for what was measured:

* :class:`RecordedMetrics`: ``identical`` and a value per registered metric;
* :class:`StepDelta`: how far one denoising step's latents moved from the expected ones;
* :class:`ClassComparison`: the image against the golden of one other class;
* :class:`Artifacts`: the PNGs written for the comparison;
* :class:`GenerationError`: what a generation raised.

:meth:`Outcome.to_json` gives the object a results file holds (schema 2: enum values as
strings); :meth:`Outcome.from_json` reads one back from untrusted input, checking every field
and raising :class:`~conformance.errors.ConformanceInputError` that names the file, the
outcome and the key. The ``parse`` methods of the smaller records raise :class:`FieldError`
(a ``ValueError``) naming the key.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

from conformance.core import Check, Status, Tier
from conformance.errors import ConformanceInputError
from conformance.metrics import METRICS
from conformance.metrics import Metrics as Measured
from conformance.safeio import key_label, show

__all__ = [
    "ARTIFACT_NAMES",
    "Artifacts",
    "ClassComparison",
    "FieldError",
    "GenerationError",
    "GoldenChoice",
    "Outcome",
    "RecordedMetrics",
    "StepDelta",
    "got",
    "is_hex",
    "is_int",
    "is_number",
    "json_kind",
]

#: Integers a results file's number fields may hold (larger ones are not measurements).
_INT_RANGE = 2**63


class FieldError(ValueError):
    """A field of a record that cannot be read; the message names its key."""


# -- what a value is, for messages ------------------------------------------------------------
def is_int(value: Any) -> bool:
    """An int of at most 64 bits (not a bool)."""
    return type(value) is int and -_INT_RANGE <= value < _INT_RANGE


def is_number(value: Any) -> bool:
    """A float (NaN and infinities included: they are shown as such), or an int of at most
    64 bits."""
    return type(value) is float or is_int(value)


_JSON_KINDS = {dict: "an object", list: "a list", str: "a string", type(None): "null"}


def json_kind(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return _JSON_KINDS.get(type(value), type(value).__name__)


def got(value: Any) -> str:
    """``not a string ('high')``: what a field held instead, shortened."""
    if isinstance(value, (dict, list)):
        return f"not {json_kind(value)}"
    if is_number(value) or isinstance(value, bool) or value is None:
        return f"not {json_kind(value)} ({show(value, 30)})"
    if isinstance(value, int):  # an integer outside 64 bits
        return f"not {show(value, 30)} (outside the 64-bit range)"
    return f"not {json_kind(value)} ({show(value, 40)})"


def is_hex(text: str) -> bool:
    """6 to 64 lower-case hex digits (a digest, or the start of one)."""
    return _HEX.fullmatch(text) is not None


_HEX = re.compile(r"[0-9a-f]{6,64}")


def _optional_int(value: Any, key: str) -> int | None:
    if value is not None and not is_int(value):
        raise FieldError(f"{key} must be an integer or null, {got(value)}")
    return value


# -- the records -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RecordedMetrics:
    """Image metrics of one comparison as a results file records them: ``identical`` and a
    value per registered metric (:data:`conformance.metrics.METRICS`; None: not recorded),
    also read as attributes (``metrics.ssim``). A ``null`` reads as the metric's null value
    (PSNR: ``inf``, identical images); keys that are not registered metrics are ignored."""

    identical: bool
    values: Mapping[str, float | None] = field(default_factory=dict)

    def __getattr__(self, name: str) -> float | None:
        if name in METRICS:
            return self.values.get(name)
        raise AttributeError(f"RecordedMetrics has no attribute {name!r}")

    def __hash__(self) -> int:
        return hash((self.identical, tuple(self.values.items())))

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

    @classmethod
    def parse(cls, value: Any, key: str = "metrics") -> RecordedMetrics | None:
        """A metrics object (or null) of a results file; FieldError names the bad key."""
        if value is None:
            return None
        if type(value) is not dict:
            raise FieldError(f"{key} must be an object or null, {got(value)}")
        identical = value.get("identical")
        if type(identical) is not bool:
            raise FieldError(f"{key}.identical must be true or false, {got(identical)}")
        values = {}
        for name, metric in METRICS.items():
            if name in value:
                raw = value[name]
                if raw is not None and not is_number(raw):
                    raise FieldError(f"{key}.{name} must be a number or null, {got(raw)}")
                values[name] = metric.from_json(raw)
        _optional_int(value.get("first_divergent_step"), f"{key}.first_divergent_step")
        return cls(identical, values)

    def to_json(self) -> dict[str, Any]:
        """The results-file object (a metric's null value written as ``null``)."""
        out: dict[str, Any] = {"identical": self.identical}
        for name, value in self.values.items():
            metric = METRICS.get(name)
            out[name] = metric.to_json(value) if metric is not None else value
        return out


class StepDelta(NamedTuple):
    """How far one denoising step's latents moved from the expected ones.

    A named tuple rather than a dataclass: a large matrix holds hundreds of thousands.
    """

    step: int
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

    @classmethod
    def parse_all(cls, value: Any) -> tuple[StepDelta, ...] | None:
        """A results file's ``step_deltas`` (a list of step objects, or null)."""
        if value is None:
            return None
        if type(value) is not list:
            raise FieldError(f"step_deltas must be a list or null, {got(value)}")
        out = []
        for i, d in enumerate(value):
            # exact types (JSON gives no subclasses): fast, and bool is not a number here
            if (
                type(d) is not dict
                or type(d.get("step")) is not int
                or not -_INT_RANGE <= d["step"] < _INT_RANGE
                or type(d.get("equal")) is not bool
                or type(d.get("mean_delta")) not in _NUMBER_TYPES
                or type(d.get("std_delta")) not in _NUMBER_TYPES
            ):
                raise FieldError(_step_delta_problem(i, d))
            out.append(cls(d["step"], d["equal"], float(d["mean_delta"]),
                           float(d["std_delta"])))
        return tuple(out)


_NUMBER_TYPES = (int, float)


def _step_delta_problem(index: int, delta: Any) -> str:
    """Which field of ``step_deltas[index]`` is wrong, and how."""
    where = f"step_deltas[{index}]"
    if type(delta) is not dict:
        return (
            f"{where} must be {{step: integer, equal: boolean, mean_delta: number, "
            f"std_delta: number}}, {got(delta)}"
        )
    for key, ok, what in (
        ("step", is_int, "an integer"),
        ("equal", lambda v: type(v) is bool, "true or false"),
        ("mean_delta", is_number, "a number"),
        ("std_delta", is_number, "a number"),
    ):
        if key not in delta:
            return f"{where}.{key} is missing"
        if not ok(delta[key]):
            return f"{where}.{key} must be {what}, {got(delta[key])}"
    return f"{where} is malformed"  # pragma: no cover - the fast check agrees with these


@dataclass(frozen=True, slots=True)
class ClassComparison:
    """The image against the golden of one class (``error`` when it could not be)."""

    golden_class: str
    metrics: RecordedMetrics | None
    first_divergent_step: int | None
    error: str | None = None

    @classmethod
    def parse(cls, golden_class: str, value: Any) -> ClassComparison:
        """One value of a results file's ``by_class``: metrics and the first divergent step,
        or ``{"error": text}``."""
        key = f"by_class[{show(golden_class)}]"
        if type(value) is not dict:
            raise FieldError(f"{key} must be an object, {got(value)}")
        if "error" in value:
            if not isinstance(value["error"], str):
                raise FieldError(f"{key}.error must be a string, {got(value['error'])}")
            return cls(golden_class, None, None, value["error"])
        metrics = RecordedMetrics.parse(value, key)
        return cls(golden_class, metrics, value.get("first_divergent_step"))

    def to_json(self) -> dict[str, Any]:
        if self.error is not None:
            return {"error": self.error}
        metrics = self.metrics.to_json() if self.metrics is not None else {}
        return metrics | {"first_divergent_step": self.first_divergent_step}


#: How an own-class check chose its golden set (see :mod:`conformance.lookup`).
CHOICE_KINDS = ("identity", "nearest", "class", "missing")
_MAX_CHOICE_PARTS = 64


@dataclass(frozen=True, slots=True)
class GoldenChoice:
    """Which set decided an own-class check and how: ``identity`` (its precision digest
    equals this machine's), ``nearest`` (no set's does: the set that agrees most) or
    ``class`` (this machine's class name, where no identity was measured); ``missing``: no
    set holds the item (a reference check, too). ``sharing``: the
    other sets with the same digest; ``differs``: what differs from the chosen set, in
    words (empty when the tier is exact)."""

    by: str
    sharing: tuple[str, ...] = ()
    differs: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"by": self.by, "sharing": list(self.sharing), "differs": list(self.differs)}

    @classmethod
    def parse(cls, value: Any) -> GoldenChoice | None:
        if value is None:
            return None
        if type(value) is not dict:
            raise FieldError(f"golden_choice must be an object or null, {got(value)}")
        unknown = value.keys() - {"by", "sharing", "differs"}
        if unknown:
            raise FieldError(f"golden_choice.{key_label(min(unknown))} is not a key (it has "
                             "by, sharing, differs)")
        if value.get("by") not in CHOICE_KINDS:
            raise FieldError(f"golden_choice.by must be one of {', '.join(CHOICE_KINDS)}, "
                             f"{got(value.get('by'))}")
        parts = {}
        for key in ("sharing", "differs"):
            seq = value.get(key, [])
            if (type(seq) is not list or len(seq) > _MAX_CHOICE_PARTS
                    or not all(isinstance(x, str) and len(x) <= 4096 for x in seq)):
                raise FieldError(f"golden_choice.{key} must be a list of at most "
                                 f"{_MAX_CHOICE_PARTS} strings, {got(seq)}")
            parts[key] = tuple(seq)
        return cls(value["by"], **parts)


#: The images a failed (or ``--save-images``) comparison writes, in the order they are named.
ARTIFACT_NAMES = ("actual", "golden", "diff", "flip")


@dataclass(frozen=True, slots=True)
class Artifacts:
    """PNG paths of one comparison (a results file writes them relative to its folder)."""

    actual: str | None = None
    golden: str | None = None
    diff: str | None = None
    flip: str | None = None  # NVIDIA FLIP's error map

    def items(self) -> list[tuple[str, str]]:
        """(name, path) of every image written, in :data:`ARTIFACT_NAMES` order."""
        return [(n, p) for n in ARTIFACT_NAMES if (p := getattr(self, n)) is not None]

    def __bool__(self) -> bool:
        return any(getattr(self, n) is not None for n in ARTIFACT_NAMES)

    @classmethod
    def parse(cls, value: Any) -> Artifacts:
        """A results file's ``artifacts``: an object of image names to path strings."""
        if type(value) is not dict:
            raise FieldError(f"artifacts must map names to path strings, {got(value)}")
        for key, path in value.items():
            if key not in ARTIFACT_NAMES:
                raise FieldError(
                    f"artifacts.{key_label(key)} is not an image name (images are named "
                    f"{', '.join(ARTIFACT_NAMES)})"
                )
            if not isinstance(path, str):
                raise FieldError(
                    f"artifacts must map names to path strings: artifacts.{key_label(key)} "
                    f"is {got(path).removeprefix('not ')}"
                )
        return cls(**value)

    def to_json(self) -> dict[str, str]:
        return dict(self.items())


@dataclass(frozen=True, slots=True)
class GenerationError:
    """What a generation raised (an ERROR outcome's ``error``); None where not recorded."""

    type: str | None = None
    message: str | None = None
    device: str | None = None
    precision: str | None = None

    @classmethod
    def parse(cls, value: Any) -> GenerationError | None:
        if value is None:
            return None
        if type(value) is not dict:
            raise FieldError(f"error must be an object or null, {got(value)}")
        names = [f.name for f in fields(cls)]
        for key, text in value.items():
            if key not in names:
                raise FieldError(
                    f"error.{key_label(key)} is not a field of an error ({', '.join(names)})"
                )
            if text is not None and not isinstance(text, str):
                raise FieldError(f"error.{key_label(key)} must be a string or null, {got(text)}")
        return cls(**value)

    def to_json(self) -> dict[str, str | None]:
        return {"type": self.type, "message": self.message, "device": self.device,
                "precision": self.precision}


@dataclass(frozen=True, slots=True)
class ComparedSide:
    """One side of a ``compare`` outcome: its item, generation time, the bytes of its
    pipeline's weights and (CUDA / XPU) its peak device memory, in MiB."""

    id: str
    seconds: float | None = None
    weights_mib: float | None = None
    peak_mib: float | None = None

    @classmethod
    def parse(cls, value: Any, key: str) -> ComparedSide:
        if type(value) is not dict or set(value) != {"id", "seconds", "weights_mib",
                                                     "peak_mib"}:
            raise FieldError(f"{key} must be {{id, seconds, weights_mib, peak_mib}}, "
                             f"{got(value)}")
        if not isinstance(value["id"], str) or not value["id"]:
            raise FieldError(f"{key}.id must be a non-empty string, {got(value['id'])}")
        for name in ("seconds", "weights_mib", "peak_mib"):
            if value[name] is not None and not is_number(value[name]):
                raise FieldError(f"{key}.{name} must be a number or null, {got(value[name])}")
        return cls(**value)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "seconds": self.seconds, "weights_mib": self.weights_mib,
                "peak_mib": self.peak_mib}


@dataclass(frozen=True, slots=True)
class ModelComparison:
    """What a ``compare`` outcome set side by side: the relation of the case file, what it
    expected, and the base and the other side."""

    relation: str
    expect: str
    base: ComparedSide
    other: ComparedSide

    def ratio(self, name: str) -> float | None:
        """other / base of ``seconds``, ``weights_mib`` or ``peak_mib``."""
        a, b = getattr(self.base, name), getattr(self.other, name)
        return b / a if a and b is not None else None

    @classmethod
    def parse(cls, value: Any) -> ModelComparison | None:
        if value is None:
            return None
        if type(value) is not dict or set(value) != {"relation", "expect", "base", "other"}:
            raise FieldError(f"comparison must be {{relation, expect, base, other}} or null, "
                             f"{got(value)}")
        for name in ("relation", "expect"):
            if not isinstance(value[name], str) or not value[name]:
                raise FieldError(f"comparison.{name} must be a non-empty string, "
                                 f"{got(value[name])}")
        return cls(value["relation"], value["expect"],
                   ComparedSide.parse(value["base"], "comparison.base"),
                   ComparedSide.parse(value["other"], "comparison.other"))

    def to_json(self) -> dict[str, Any]:
        return {"relation": self.relation, "expect": self.expect,
                "base": self.base.to_json(), "other": self.other.to_json()}


#: The keys of a ``--localize`` record (:mod:`conformance.localize`) that readers use.
_LOCALIZATION_TEXT = ("first_divergent_module", "first_divergent_class", "message")


def _localization(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if type(value) is not dict:
        raise FieldError(f"localization must be an object or null, {got(value)}")
    for key in _LOCALIZATION_TEXT:
        text = value.get(key)
        if text is not None and not isinstance(text, str):
            raise FieldError(f"localization.{key} must be a string or null, {got(text)}")
    blocks = value.get("blocks")
    if blocks is not None:
        if type(blocks) is not list or len(blocks) > 512:
            raise FieldError(f"localization.blocks must be a list of at most 512 blocks, "
                             f"{got(blocks)}")
        for i, b in enumerate(blocks):
            rel = b.get("rel_err") if type(b) is dict else None
            if (type(b) is not dict or not isinstance(b.get("name"), str)
                    or not isinstance(b.get("bits"), str)
                    or not (rel is None or is_number(rel) or rel in ("inf", "nan"))):
                raise FieldError(f"localization.blocks[{i}] must be {{name: string, bits: "
                                 f"string, rel_err: number or null}}, {got(b)}")
    return value


@dataclass(frozen=True, slots=True)
class Outcome:
    """One check of one item on one machine."""

    id: str
    check: Check
    model: str
    case: str
    resolution: str
    precision: str
    hardware_class: str
    status: Status
    tier: Tier | None
    golden_class: str | None
    metrics: RecordedMetrics | None
    seconds: float
    first_divergent_step: int | None = None
    message: str = ""
    artifacts: Artifacts = Artifacts()
    reproduce: str = ""
    #: None where nothing was compared; () for a comparison without a latent trace
    step_deltas: tuple[StepDelta, ...] | None = None
    #: this image against every golden class that has the item, by class (own-class checks)
    by_class: dict[str, ClassComparison] = field(default_factory=dict)
    generate_seconds: float | None = None
    peak_memory_mb: float | None = None
    variant: str | None = None
    #: SHA-256 of the generated image's pixels (groups bit-identical matrix columns).
    pixel_sha256: str | None = None
    #: For an ERROR outcome raised inside a generation.
    error: GenerationError | None = None
    #: With ``--localize``: where the two runs of a same-machine check part
    #: (:meth:`conformance.localize.Localization.to_dict`, ranking cut to five), as is.
    localization: dict[str, Any] | None = None
    #: A ``compare`` check: the two sides (only then written to the results file)
    comparison: ModelComparison | None = None
    #: An own-class check: how its golden set (``golden_class``) was chosen
    golden_choice: GoldenChoice | None = None

    def to_json(self) -> dict[str, Any]:
        """The object a results file holds for this outcome."""
        out = self._json()
        if self.comparison is not None:
            out["comparison"] = self.comparison.to_json()
        if self.golden_choice is not None:
            out["golden_choice"] = self.golden_choice.to_json()
        return out

    def _json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "check": self.check.value,
            "model": self.model,
            "case": self.case,
            "resolution": self.resolution,
            "precision": self.precision,
            "hardware_class": self.hardware_class,
            "status": self.status.value,
            "tier": None if self.tier is None else self.tier.value,
            "golden_class": self.golden_class,
            "metrics": None if self.metrics is None else self.metrics.to_json(),
            "seconds": self.seconds,
            "first_divergent_step": self.first_divergent_step,
            "message": self.message,
            "artifacts": self.artifacts.to_json(),
            "reproduce": self.reproduce,
            "step_deltas": None if self.step_deltas is None else [
                d._asdict() for d in self.step_deltas
            ],
            "by_class": {cls: c.to_json() for cls, c in self.by_class.items()},
            "generate_seconds": self.generate_seconds,
            "peak_memory_mb": self.peak_memory_mb,
            "variant": self.variant,
            "pixel_sha256": self.pixel_sha256,
            "error": None if self.error is None else self.error.to_json(),
            "localization": self.localization,
        }

    @classmethod
    def from_json(cls, data: Any, where: str | Path, index: int | None = None) -> Outcome:
        """Read an outcome object of untrusted origin (outcome ``index`` of the results file
        ``where``); any problem raises ConformanceInputError naming the file, the outcome and
        the key."""
        subject = "outcome" if index is None else f"outcome {index}"
        if type(data) is not dict:
            at = "" if index is None else f" (outcomes[{index}])"
            raise ConformanceInputError(
                where, f"malformed outcomes: {subject}{at} must be an object, {got(data)}"
            )
        label = show(data["id"]) if isinstance(data.get("id"), str) else "?"
        try:
            return cls(**_outcome_fields(data))
        except FieldError as exc:
            raise ConformanceInputError(
                where, f"malformed outcomes: {subject} ({label}): {exc}"
            ) from None


_FIELDS = tuple(f.name for f in fields(Outcome))
_FIELD_SET = frozenset(_FIELDS)
_REQUIRED = tuple(
    f.name for f in fields(Outcome) if f.default is MISSING and f.default_factory is MISSING
)


def _enum(kind: type[Any], value: Any, key: str, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        what = "a string or null" if optional else "a non-empty string"
        raise FieldError(f"{key} must be {what}, {got(value)}")
    try:
        return kind(value)
    except ValueError:
        accepted = ", ".join(sorted(m.value for m in kind))
        raise FieldError(f"{key} {show(value)} is not one of {accepted}") from None


@functools.cache
def _name_rules() -> tuple[tuple[str, re.Pattern[str], str], ...]:
    """(key, pattern, what is accepted) for the names an outcome carries: what the suite
    itself writes, with the golden manifest's own patterns (a results file is read as
    strictly as a manifest; imported here, on first use, as golden.py is heavy)."""
    from conformance.golden import _CASE, _MODEL, _MODEL_RULE, _PRECISION, _RESOLUTION

    return (
        ("model", _MODEL, _MODEL_RULE),
        ("case", _CASE, "lower-case letters, digits and '-', at most 64"),
        ("resolution", _RESOLUTION, "WIDTHxHEIGHT, sides of 1 to 99999 in digits 0-9"),
        ("precision", _PRECISION, "lower-case letters, digits, '.', '_' and '-', at most 64"),
    )


def _outcome_fields(o: dict[str, Any]) -> dict[str, Any]:
    """The typed fields of one outcome object (FieldError names the key of a problem)."""
    unknown = o.keys() - _FIELD_SET
    if unknown:
        raise FieldError(
            f"unknown key {key_label(min(unknown))} (an outcome has {', '.join(_FIELDS)})"
        )
    missing = [k for k in _REQUIRED if k not in o]
    if missing:
        raise FieldError(f"key {missing[0]} is missing")
    for name in ("id", "model", "case", "resolution", "precision", "status", "check",
                 "hardware_class"):
        if not isinstance(o[name], str) or not o[name]:
            raise FieldError(f"{name} must be a non-empty string, {got(o[name])}")
    for name, pattern, rule in _name_rules():
        if not pattern.fullmatch(o[name]):
            raise FieldError(f"{name} {show(o[name])} is not accepted ({rule})")
    out = dict(o)
    out["check"] = _enum(Check, o["check"], "check")
    out["status"] = _enum(Status, o["status"], "status")
    out["tier"] = _enum(Tier, o["tier"], "tier", optional=True)
    for name in ("golden_class", "variant"):
        if o.get(name) is not None and not isinstance(o[name], str):
            raise FieldError(f"{name} must be a string or null, {got(o[name])}")
    for name in ("message", "reproduce"):
        if name in o and not isinstance(o[name], str):
            raise FieldError(f"{name} must be a string, {got(o[name])}")
    if not is_number(o["seconds"]):
        raise FieldError(f"seconds must be a number, {got(o['seconds'])}")
    for name in ("generate_seconds", "peak_memory_mb"):
        if o.get(name) is not None and not is_number(o[name]):
            raise FieldError(f"{name} must be a number or null, {got(o[name])}")
    _optional_int(o.get("first_divergent_step"), "first_divergent_step")
    out["metrics"] = RecordedMetrics.parse(o["metrics"])
    if "artifacts" in o:
        out["artifacts"] = Artifacts.parse(o["artifacts"])
    out["step_deltas"] = StepDelta.parse_all(o.get("step_deltas"))
    by_class = o.get("by_class", {})
    if type(by_class) is not dict:
        raise FieldError(f"by_class must be an object, {got(by_class)}")
    out["by_class"] = {c: ClassComparison.parse(c, v) for c, v in by_class.items()}
    sha = o.get("pixel_sha256")
    if sha is not None and (type(sha) is not str or not is_hex(sha)):
        raise FieldError(
            f"pixel_sha256 must be a string of lower-case hex digits or null, {got(sha)}"
        )
    out["error"] = GenerationError.parse(o.get("error"))
    out["localization"] = _localization(o.get("localization"))
    out["comparison"] = ModelComparison.parse(o.get("comparison"))
    out["golden_choice"] = GoldenChoice.parse(o.get("golden_choice"))
    return out


