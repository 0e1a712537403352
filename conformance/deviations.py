"""Known deviations as data: per hardware class, which items are expected to fail and why.

A deviations file (TOML)::

    schema_version = 1

    [[deviation]]
    classes = ["cuda-sm75"]           # fnmatch patterns over the hardware class
    ids = ["tiny-sd/*/96x96/*"]       # fnmatch patterns over item ids
    checks = ["reference"]            # optional (default: all): repeatable, own-class,
                                      # reference, invariance, fidelity
    action = "xfail"                  # xfail or skip
    reason = "attention is split on 4 GB cards above 576 px"
    cpu_flags = ["amx_bf16"]          # optional: every flag must be in this CPU's flags
    cpu_isa = ["default", "avx2"]     # optional: ATen's CPU dispatch level must be one

``cpu_flags`` and ``cpu_isa`` match by CPU feature rather than by host: an entry with
either only matches when :func:`match` is given the CPU features
(:func:`conformance.hardware.cpu_features`: ``flags`` and ``aten_level``).

The plugin turns matches into xfail / skip marks in one place; entries that match no
collected test are reported at the end of the run. The file is decoded once into the
declared :class:`DeviationFile` by :mod:`conformance.schema`; every refusal is one
:class:`DeviationFileError` naming the file and the key path (``deviation[0].reason``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any

import msgspec

from conformance import PACKAGE_DIR
from conformance.errors import ConformanceInputError
from conformance.hardware import STEERING_FLAGS
from conformance.safeio import SETTINGS_LIMIT, load_toml, show
from conformance.schema import Problem, convert, line, one_of

DEFAULT_DEVIATIONS = PACKAGE_DIR / "deviations.toml"
CHECKS = ("repeatable", "own-class", "reference", "invariance", "fidelity")
ACTIONS = ("xfail", "skip")
#: ATen CPU dispatch levels (``torch.backends.cpu.get_cpu_capability()``, lower-case)
ATEN_LEVELS = ("default", "no avx", "avx2", "avx512", "sve256", "vsx", "z vector")
KIND = "deviations file"
#: caps on the shape of a deviations file
MAX_DEVIATIONS = 1000
MAX_PATTERNS = 256
MAX_PATTERN_LEN = 256
MAX_REASON = 1000


class DeviationFileError(ConformanceInputError):
    """A problem in a deviations file."""


@dataclass(frozen=True)
class Deviation:
    index: int
    classes: tuple[str, ...]
    ids: tuple[str, ...]
    checks: tuple[str, ...]
    action: str
    reason: str
    cpu_flags: tuple[str, ...] = ()
    cpu_isa: tuple[str, ...] = ()

    def matches(
        self,
        hardware_class: str,
        item_id: str,
        check: str,
        features: Mapping[str, Any] | None = None,
    ) -> bool:
        """Whether this entry applies; ``features`` (``flags``, ``aten_level``) is needed
        for an entry with ``cpu_flags`` or ``cpu_isa``, which never matches without it."""
        if not (
            check in self.checks
            and any(fnmatchcase(hardware_class, p) for p in self.classes)
            and any(fnmatchcase(item_id, p) for p in self.ids)
        ):
            return False
        if not (self.cpu_flags or self.cpu_isa):
            return True
        if features is None:
            return False
        flags = features.get("flags") or ()
        if self.cpu_flags and (
            isinstance(flags, str) or not all(f in set(flags) for f in self.cpu_flags)
        ):
            return False
        if self.cpu_isa:
            level = _level(features.get("aten_level"))
            if level not in {_level(v) for v in self.cpu_isa}:
                return False
        return True

    def names(self, item_id: str, check: str) -> bool:
        """Whether this entry's ids and checks name the test (on any machine): an entry
        that names no collected test is stale (a renamed or removed case)."""
        return check in self.checks and any(fnmatchcase(item_id, p) for p in self.ids)

    def describe(self) -> str:
        extra = ""
        if self.cpu_flags:
            extra += f", cpu_flags={list(self.cpu_flags)}"
        if self.cpu_isa:
            extra += f", cpu_isa={list(self.cpu_isa)}"
        return (
            f"deviation #{self.index} (classes={list(self.classes)}, ids={list(self.ids)}, "
            f"checks={list(self.checks)}{extra})"
        )


def _level(value: Any) -> str:
    """An ATen level in one spelling: ``Z VECTOR``, ``z_vector`` and ``zvector`` are one."""
    return re.sub(r"[^a-z0-9]", "", str(value or "").lower())


_Pattern = line(MAX_PATTERN_LEN, empty=False, blank=True)
_Patterns = Annotated[list[_Pattern], msgspec.Meta(
    min_length=1, max_length=MAX_PATTERNS,
    description=f"a non-empty list of at most {MAX_PATTERNS} fnmatch patterns")]


class DeviationTable(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A ``[[deviation]]`` table, as written."""

    classes: _Patterns
    ids: _Patterns
    checks: Annotated[list[one_of(CHECKS)], msgspec.Meta(  # type: ignore[valid-type]
        min_length=1, max_length=MAX_PATTERNS, description="a non-empty list of checks",
    )] = msgspec.field(default_factory=lambda: list(CHECKS))
    action: one_of(ACTIONS)  # type: ignore[valid-type]
    reason: line(MAX_REASON, empty=False)  # type: ignore[valid-type]
    cpu_flags: Annotated[list[one_of(STEERING_FLAGS)], msgspec.Meta(  # type: ignore[valid-type]
        min_length=1, max_length=MAX_PATTERNS,
        description="a non-empty list of CPU flags the suite reads",
    )] = msgspec.field(default_factory=list)
    cpu_isa: Annotated[list[_Pattern], msgspec.Meta(
        min_length=1, max_length=MAX_PATTERNS, description="a non-empty list of ATen CPU levels",
    )] = msgspec.field(default_factory=list)


class DeviationFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A deviations file, as written."""

    schema_version: int
    deviation: Annotated[
        list[Annotated[DeviationTable, msgspec.Meta(description="a [[deviation]] table")]],
        msgspec.Meta(max_length=MAX_DEVIATIONS, description=(
            f"an array of tables ([[deviation]]), at most {MAX_DEVIATIONS}")),
    ] = msgspec.field(default_factory=list)


def load_deviations(path: str | Path | None = None) -> list[Deviation]:
    path = Path(path) if path is not None else DEFAULT_DEVIATIONS
    data = load_toml(path, KIND, SETTINGS_LIMIT, error=DeviationFileError)
    return parse_deviations(data, path)


def parse_deviations(data: dict[str, Any], path: Path) -> list[Deviation]:
    """Validate parsed TOML ``data`` read from ``path``: decoded into :class:`DeviationFile`,
    then the ATen levels (written in any of their spellings) checked."""
    version = data.get("schema_version")
    if type(version) is not int or version != 1:
        raise DeviationFileError(
            path, f"schema_version is {show(version)}; this version reads 1"
        )
    file = convert(data, DeviationFile, path, kind=KIND, error=DeviationFileError)
    known = {_level(v) for v in ATEN_LEVELS}
    out = []
    for i, entry in enumerate(file.deviation):
        for j, level in enumerate(entry.cpu_isa):
            if _level(level) not in known:
                where = Problem(("deviation", i, "cpu_isa", j), "").path()
                raise DeviationFileError(path, f"{KIND}: {where}: {show(level)} is not an ATen "
                                         f"CPU level; accepted: {', '.join(ATEN_LEVELS)}")
        out.append(Deviation(i + 1, tuple(entry.classes), tuple(entry.ids), tuple(entry.checks),
                             entry.action, entry.reason, tuple(entry.cpu_flags),
                             tuple(entry.cpu_isa)))
    return out


def match(
    deviations: Iterable[Deviation],
    hardware_class: str,
    item_id: str,
    check: str,
    features: Mapping[str, Any] | None = None,
) -> Deviation | None:
    """The first deviation that applies, or ``None``.

    ``features`` is :func:`conformance.hardware.cpu_features` (keys ``flags``: list of str,
    ``aten_level``: str); entries with ``cpu_flags`` / ``cpu_isa`` need it to match.
    """
    for dev in deviations:
        if dev.matches(hardware_class, item_id, check, features):
            return dev
    return None
