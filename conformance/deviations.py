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

The plugin turns matches into xfail / skip marks in one place; entries that match no
collected test are reported at the end of the run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from conformance import PACKAGE_DIR
from conformance.errors import ConformanceInputError, type_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_DEVIATIONS = PACKAGE_DIR / "deviations.toml"
CHECKS = ("repeatable", "own-class", "reference", "invariance", "fidelity")
ACTIONS = ("xfail", "skip")
_KEYS = ("classes", "ids", "checks", "action", "reason")


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

    def matches(self, hardware_class: str, item_id: str, check: str) -> bool:
        return (
            check in self.checks
            and any(fnmatchcase(hardware_class, p) for p in self.classes)
            and any(fnmatchcase(item_id, p) for p in self.ids)
        )

    def describe(self) -> str:
        return (
            f"deviation #{self.index} (classes={list(self.classes)}, ids={list(self.ids)}, "
            f"checks={list(self.checks)})"
        )


def load_deviations(path: str | Path | None = None) -> list[Deviation]:
    path = Path(path) if path is not None else DEFAULT_DEVIATIONS
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DeviationFileError(path, f"cannot read deviations file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise DeviationFileError(path, f"invalid TOML: {exc}") from None
    return parse_deviations(data, path)


def parse_deviations(data: dict[str, Any], path: Path) -> list[Deviation]:
    for key in data:
        if key not in ("schema_version", "deviation"):
            raise DeviationFileError(
                path, f"unknown top-level key {key!r}; accepted: schema_version, deviation"
            )
    if data.get("schema_version") != 1:
        raise DeviationFileError(
            path, f"schema_version is {data.get('schema_version')!r}; this version reads 1"
        )
    raw = data.get("deviation", [])
    if not isinstance(raw, list):
        raise DeviationFileError(path, "'deviation' must be an array of tables ([[deviation]])")
    return [_parse_one(i, body, path) for i, body in enumerate(raw, start=1)]


def _parse_one(index: int, body: Any, path: Path) -> Deviation:
    where = f"deviation #{index}"
    if not isinstance(body, dict):
        raise DeviationFileError(path, f"{where} must be a table, not {type_name(body)}")
    for key in body:
        if key not in _KEYS:
            raise DeviationFileError(
                path, f"{where}: unknown key {key!r}; accepted: {', '.join(_KEYS)}"
            )
    for key in ("classes", "ids", "action", "reason"):
        if key not in body:
            raise DeviationFileError(path, f"{where}: missing required key {key!r}")
    lists = {}
    for key in ("classes", "ids", "checks"):
        value = body.get(key, list(CHECKS))
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, str) and v for v in value)
        ):
            raise DeviationFileError(
                path, f"{where}: key {key!r} must be a non-empty array of strings"
            )
        lists[key] = tuple(value)
    for check in lists["checks"]:
        if check not in CHECKS:
            raise DeviationFileError(
                path,
                f"{where}: key 'checks': unknown check {check!r}; accepted: {', '.join(CHECKS)}",
            )
    action, reason = body["action"], body["reason"]
    if action not in ACTIONS:
        raise DeviationFileError(
            path, f"{where}: key 'action' is {action!r}; accepted: {', '.join(ACTIONS)}"
        )
    if not isinstance(reason, str) or not reason.strip():
        raise DeviationFileError(path, f"{where}: key 'reason' must be a non-empty string")
    return Deviation(index, lists["classes"], lists["ids"], lists["checks"], action, reason)


def match(
    deviations: Iterable[Deviation], hardware_class: str, item_id: str, check: str
) -> Deviation | None:
    """The first deviation that applies, or ``None``."""
    for dev in deviations:
        if dev.matches(hardware_class, item_id, check):
            return dev
    return None
