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
collected test are reported at the end of the run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from conformance import PACKAGE_DIR
from conformance.errors import ConformanceInputError, type_name
from conformance.hardware import STEERING_FLAGS
from conformance.safeio import SETTINGS_LIMIT, load_toml, require_str, show

DEFAULT_DEVIATIONS = PACKAGE_DIR / "deviations.toml"
CHECKS = ("repeatable", "own-class", "reference", "invariance", "fidelity")
ACTIONS = ("xfail", "skip")
#: ATen CPU dispatch levels (``torch.backends.cpu.get_cpu_capability()``, lower-case)
ATEN_LEVELS = ("default", "no avx", "avx2", "avx512", "sve256", "vsx", "z vector")
_KEYS = ("classes", "ids", "checks", "action", "reason", "cpu_flags", "cpu_isa")
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


def load_deviations(path: str | Path | None = None) -> list[Deviation]:
    path = Path(path) if path is not None else DEFAULT_DEVIATIONS
    data = load_toml(path, "deviations file", SETTINGS_LIMIT, error=DeviationFileError)
    return parse_deviations(data, path)


def parse_deviations(data: dict[str, Any], path: Path) -> list[Deviation]:
    for key in data:
        if key not in ("schema_version", "deviation"):
            raise DeviationFileError(
                path, f"unknown top-level key {show(key)}; accepted: schema_version, deviation"
            )
    version = data.get("schema_version")
    if type(version) is not int or version != 1:
        raise DeviationFileError(
            path, f"schema_version is {show(version)}; this version reads 1"
        )
    raw = data.get("deviation", [])
    if not isinstance(raw, list):
        raise DeviationFileError(path, "'deviation' must be an array of tables ([[deviation]])")
    if len(raw) > MAX_DEVIATIONS:
        raise DeviationFileError(
            path, f"{len(raw)} [[deviation]] entries; a file holds at most {MAX_DEVIATIONS}"
        )
    return [_parse_one(i, body, path) for i, body in enumerate(raw, start=1)]


def _string_list(
    body: dict[str, Any], key: str, default: list[str] | None, path: Path, where: str
) -> tuple[str, ...]:
    value = body.get(key, default)
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str) and v for v in value)
    ):
        raise DeviationFileError(
            path, f"{where}: key {key!r} must be a non-empty array of strings"
        )
    if len(value) > MAX_PATTERNS:
        raise DeviationFileError(
            path, f"{where}: key {key!r} lists {len(value)} values; at most {MAX_PATTERNS}"
        )
    for i, item in enumerate(value):
        require_str(item, path, what=f"{where}: key {key!r} item {i + 1}",
                    max_len=MAX_PATTERN_LEN, error=DeviationFileError)
    return tuple(value)


def _parse_one(index: int, body: Any, path: Path) -> Deviation:
    where = f"deviation #{index}"
    if not isinstance(body, dict):
        raise DeviationFileError(path, f"{where} must be a table, not {type_name(body)}")
    for key in body:
        if key not in _KEYS:
            raise DeviationFileError(
                path, f"{where}: unknown key {show(key)}; accepted: {', '.join(_KEYS)}"
            )
    for key in ("classes", "ids", "action", "reason"):
        if key not in body:
            raise DeviationFileError(path, f"{where}: missing required key {key!r}")
    lists = {
        key: _string_list(body, key, list(CHECKS), path, where)
        for key in ("classes", "ids", "checks")
    }
    for check in lists["checks"]:
        if check not in CHECKS:
            raise DeviationFileError(
                path,
                f"{where}: key 'checks': unknown check {show(check)}; "
                f"accepted: {', '.join(CHECKS)}",
            )
    flags: tuple[str, ...] = ()
    if "cpu_flags" in body:
        flags = _string_list(body, "cpu_flags", None, path, where)
        for flag in flags:
            if flag not in STEERING_FLAGS:
                raise DeviationFileError(
                    path,
                    f"{where}: key 'cpu_flags': {show(flag)} is not a CPU flag the suite "
                    f"reads; accepted: {', '.join(STEERING_FLAGS)}",
                )
    isa: tuple[str, ...] = ()
    if "cpu_isa" in body:
        isa = _string_list(body, "cpu_isa", None, path, where)
        known = {_level(v) for v in ATEN_LEVELS}
        for level in isa:
            if _level(level) not in known:
                raise DeviationFileError(
                    path,
                    f"{where}: key 'cpu_isa': {show(level)} is not an ATen CPU level; "
                    f"accepted: {', '.join(ATEN_LEVELS)}",
                )
    action, reason = body["action"], body["reason"]
    if action not in ACTIONS:
        raise DeviationFileError(
            path, f"{where}: key 'action' is {show(action)}; accepted: {', '.join(ACTIONS)}"
        )
    if not isinstance(reason, str) or not reason.strip():
        raise DeviationFileError(path, f"{where}: key 'reason' must be a non-empty string")
    require_str(reason, path, what=f"{where}: key 'reason'", max_len=MAX_REASON,
                error=DeviationFileError)
    return Deviation(
        index, lists["classes"], lists["ids"], lists["checks"], action, reason, flags, isa
    )


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
