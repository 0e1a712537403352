"""The results file: every outcome of one run, written and read through one JSON path.

A results file holds every outcome of one run (xdist workers merged by the controller) with
the machine's hardware class and fingerprint::

    {"schema_version": 2, "hardware_class": "cpu-amd-avx512+bf16",
     "label": "cpu-amd-avx512+bf16", "identity": {...}, "fingerprint": {...},
     "started_at": "...", "finished_at": "...", "stats": {...}, "outcomes": [...]}

:func:`results_document` writes it (each outcome by :meth:`Outcome.to_json`);
:func:`read_results` reads one, from any machine, as untrusted input (each outcome by
:meth:`Outcome.from_json`).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.core import Check, Status
from conformance.errors import ConformanceInputError
from conformance.records import Outcome, got, is_hex, json_kind
from conformance.safeio import (
    JSON_MAX_DEPTH,
    JSON_MAX_INT_DIGITS,
    RESULTS_LIMIT,
    key_label,
    read_text,
    show,
)

__all__ = [
    "Check", "Outcome", "ResultsFile", "Status", "deep_key", "read_results",
    "results_document", "too_deep",
]

SCHEMA_VERSION = 2
#: Results files this version reads (1: before the measured identity).
READABLE_VERSIONS = (1, 2)


def results_document(
    outcomes: Iterable[Outcome],
    hardware_class: str,
    fingerprint: dict[str, Any],
    started_at: str,
    finished_at: str,
    stats: dict[str, Any],
    label: str | None = None,
    identity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The results document; ``label`` names the run's matrix column (default: the class,
    with the thread count when it is not 1)."""
    if label is None:
        threads = fingerprint.get("threads", 1)
        label = hardware_class if threads == 1 else f"{hardware_class} t{threads}"
    ordered = sorted(outcomes, key=lambda o: (o.id, o.check.value, o.variant or ""))
    return {
        "schema_version": SCHEMA_VERSION,
        "hardware_class": hardware_class,
        "label": label,
        "identity": identity,
        "fingerprint": fingerprint,
        "started_at": started_at,
        "finished_at": finished_at,
        "stats": stats,
        "summary": dict(Counter(o.status.value for o in ordered)),
        "outcomes": [o.to_json() for o in ordered],
    }


@dataclass(frozen=True, slots=True)
class ResultsFile:
    """A results file, read and checked: its run's fields and its outcomes (``data``: the
    whole document, stats and summary included)."""

    path: str
    hardware_class: str
    label: str
    fingerprint: dict[str, Any]
    identity: dict[str, Any] | None
    started_at: str | None
    finished_at: str | None
    outcomes: tuple[Outcome, ...]
    data: dict[str, Any]


def read_results(path: str | Path) -> ResultsFile:
    """Read a results file: a regular file of at most
    :data:`~conformance.safeio.RESULTS_LIMIT` bytes of UTF-8 JSON (read by
    :func:`conformance.safeio.read_text`), an object of a readable ``schema_version`` whose
    ``outcomes`` is a list of outcome objects.

    As :mod:`conformance.safeio`'s JSON: no key twice in one object, integers of at most
    :data:`~conformance.safeio.JSON_MAX_INT_DIGITS` digits, numbers of at most 400
    characters, no nesting so deep that the parser gives up (the message names the key
    where the nesting passes :data:`~conformance.safeio.JSON_MAX_DEPTH` levels; the free-form
    parts, fingerprint and identity, are held to that depth). Unlike it, ``NaN`` and
    ``Infinity`` are read, as runs write them for a latent trace that went non-finite (the
    matrix shows them as ``nan`` / ``inf``, and its JSON as null); a field that must be an
    integer or a string refuses them. Every problem is a
    :class:`~conformance.errors.ConformanceInputError` naming the file and the key, whatever
    the shape of the JSON.
    """
    data = _load(path)
    if "outcomes" not in data:
        raise ConformanceInputError(
            path, "malformed outcomes: key 'outcomes' is missing; it must be a list of outcome "
            "objects"
        )
    raw = data["outcomes"]
    if not isinstance(raw, list):
        raise ConformanceInputError(
            path, f"malformed outcomes: key 'outcomes' must be a list of outcome objects, "
            f"{got(raw)}"
        )
    run = _run_fields(path, data)
    outcomes = tuple(Outcome.from_json(o, path, index) for index, o in enumerate(raw))
    problem = _summary_problem(data, outcomes)
    if problem:
        raise ConformanceInputError(path, problem)
    return ResultsFile(path=str(path), outcomes=outcomes, data=data, **run)


#: the most statuses a summary may name (there are a handful)
_MAX_SUMMARY_KEYS = 32


def _counts(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    listed = ", ".join(f"{key_label(k)} {n}" for k, n in sorted(counts.items()) if n) or "none"
    return f"{listed} ({total} outcome{'s' if total != 1 else ''})"


def _summary_problem(data: dict[str, Any], outcomes: tuple[Outcome, ...]) -> str | None:
    """Why the file's ``summary`` (the count of each status, written with the outcomes)
    disagrees with its ``outcomes`` (a file cut short or edited), or ``None``. A file
    without a summary (written by hand) has nothing to disagree with."""
    if "summary" not in data:
        return None
    summary = data["summary"]
    if not isinstance(summary, dict) or len(summary) > _MAX_SUMMARY_KEYS or any(
            type(n) is not int or n < 0 for n in summary.values()):
        return (f"key 'summary' must be an object of status names and counts (integers >= 0)"
                f", {got(summary)}" if not isinstance(summary, dict) else
                "key 'summary' must be an object of status names and counts (integers >= 0, "
                f"at most {_MAX_SUMMARY_KEYS} names)")
    declared = {k: n for k, n in summary.items() if n}
    found = dict(Counter(o.status.value for o in outcomes))
    if declared == found:
        return None
    return (f"the outcomes disagree with the file's own summary: the summary counts "
            f"{_counts(declared)}, the outcomes list holds {_counts(found)}; the file was cut "
            "short or edited (write it again with --results)")


def _load(path: str | Path) -> dict[str, Any]:
    """The document of a readable ``schema_version`` (see :func:`read_results`)."""
    text = read_text(path, "results file", RESULTS_LIMIT)
    hooks, flagged = _json_hooks()
    try:
        data = json.loads(text, **hooks)
    except RecursionError:
        raise ConformanceInputError(
            path, f"key {deep_key(text, JSON_MAX_DEPTH)}: nested too deeply; results files "
            f"nest at most {JSON_MAX_DEPTH} levels"
        ) from None
    except json.JSONDecodeError as exc:
        raise ConformanceInputError(
            path, f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except (ValueError, OverflowError) as exc:
        raise ConformanceInputError(path, f"not valid JSON: {show(str(exc), 80)}") from None
    found = _find_problem(data) if flagged else None
    if found is not None:
        raise ConformanceInputError(path, f"key {found[0]}: {found[1]}")
    version = data.get("schema_version") if isinstance(data, dict) else None
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise ConformanceInputError(
            path, "not a results file of schema_version "
            + " or ".join(str(v) for v in READABLE_VERSIONS)
            + (f" (schema_version: {show(version, 40)})" if isinstance(data, dict) else
               f" (the top level is {json_kind(data)}, not an object)")
        )
    return data


def _run_fields(path: str | Path, data: dict[str, Any]) -> dict[str, Any]:
    """The run's fields of a results document, checked."""
    cls = data.get("hardware_class")
    if not isinstance(cls, str) or not cls:
        raise ConformanceInputError(path, f"hardware_class must be a non-empty string, {got(cls)}")
    label = data.get("label", cls)
    if label is None:
        label = cls
    if not isinstance(label, str) or not label:
        raise ConformanceInputError(path, f"label must be a non-empty string, {got(label)}")
    fingerprint = data.get("fingerprint") or {}
    if not isinstance(fingerprint, dict):
        raise ConformanceInputError(path, f"fingerprint must be an object, {got(fingerprint)}")
    stamps = {k: data.get(k) for k in ("started_at", "finished_at")}
    for key, value in stamps.items():
        if value is not None and not isinstance(value, str):
            raise ConformanceInputError(path, f"{key} must be a string, {got(value)}")
    identity = data.get("identity")
    for key, value in (("fingerprint", fingerprint), ("identity", identity)):
        deep = too_deep(value, key, JSON_MAX_DEPTH - 2)
        if deep is not None:
            raise ConformanceInputError(
                path, f"key {deep}: nested too deeply; results files nest at most "
                f"{JSON_MAX_DEPTH} levels"
            )
    problem = _identity_problem(identity)
    if problem:
        raise ConformanceInputError(path, problem)
    return {"hardware_class": cls, "label": label, "fingerprint": fingerprint,
            "identity": identity, **stamps}


def _identity_problem(identity: Any) -> str | None:
    """What is wrong with a results file's ``identity`` (None or an object), or None."""
    if identity is None:
        return None
    if not isinstance(identity, dict):
        return f"identity must be an object or null, {got(identity)}"
    digest = identity.get("digest")
    if not isinstance(digest, str) or not is_hex(digest):
        return f"identity.digest must be a string of lower-case hex digits, {got(digest)}"
    if identity.get("class") is not None and not isinstance(identity["class"], str):
        return f"identity.class must be a string, {got(identity['class'])}"
    for key in ("features", "precision_digests", "probes"):
        if identity.get(key) is not None and not isinstance(identity[key], dict):
            return f"identity.{key} must be an object or null, {got(identity[key])}"
    return None


# -- hardened JSON -----------------------------------------------------------------------------
class _Problem:
    """What a JSON hook found wrong, kept in the tree where it was found (so that the
    message can name the key) instead of raised."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class _Duplicated(dict):  # type: ignore[type-arg]
    """An object with a key given twice (the key in ``duplicate``)."""

    duplicate: str = ""


def _json_hooks() -> tuple[dict[str, Any], list[bool]]:
    """``json.loads`` hooks that keep what they refuse as :class:`_Problem` /
    :class:`_Duplicated` in the tree, and a list that is not empty when they did."""
    found: list[bool] = []

    def parse_int(text: str) -> int | _Problem:
        if len(text) > JSON_MAX_INT_DIGITS and len(text.lstrip("-")) > JSON_MAX_INT_DIGITS:
            found.append(True)
            return _Problem(
                f"an integer of {len(text.lstrip('-'))} digits; at most "
                f"{JSON_MAX_INT_DIGITS} digits are read"
            )
        return int(text)

    def parse_float(text: str) -> float | _Problem:
        if len(text) > 400:
            found.append(True)
            return _Problem(
                f"a number written with {len(text)} characters; at most 400 are read"
            )
        return float(text)  # NaN, Infinity and overflow are kept: shown as nan / inf / null

    def object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) == len(pairs):
            return out
        found.append(True)
        seen: set[str] = set()
        dup = _Duplicated(out)
        for key, _ in pairs:
            if key in seen:
                dup.duplicate = key
                break
            seen.add(key)
        return dup

    hooks = {"object_pairs_hook": object_pairs, "parse_int": parse_int,
             "parse_float": parse_float}
    return hooks, found


def _key_path(parent: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key_label(key)}" if parent else key_label(key)


def _find_problem(value: Any) -> tuple[str, str] | None:
    """(key, text) of the first :class:`_Problem` or duplicated key in a parsed tree."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        node, key = stack.pop()
        if isinstance(node, _Problem):
            return key or "the top level", node.text
        if isinstance(node, dict):
            if isinstance(node, _Duplicated):
                return (_key_path(key, node.duplicate),
                        "appears twice in one object; write each key once")
            stack.extend((v, _key_path(key, k)) for k, v in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((v, _key_path(key, i)) for i, v in reversed(list(enumerate(node))))
    return None


_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{},:]')


def deep_key(text: str, depth: int) -> str:
    """The key at which ``text`` (JSON) nests deeper than ``depth`` levels (a rough scan, for
    the message when the parser gave up)."""
    path: list[Any] = []  # per open container: the current key or index
    last_string = None
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token in "[{":
            if len(path) >= depth:
                return _short_key("".join(
                    f"[{p}]" if isinstance(p, int) else f".{key_label(p)}" for p in path
                ).lstrip(".")) or "the top level"
            path.append(0 if token == "[" else "?")
        elif token in "]}":
            if path:
                path.pop()
        elif token == ",":
            if path and isinstance(path[-1], int):
                path[-1] += 1
        elif token == ":":
            if path and last_string is not None:
                try:
                    path[-1] = json.loads(last_string)
                except ValueError:
                    path[-1] = "?"
        else:
            last_string = token
    return "the top level"


def _short_key(key: str, limit: int = 60) -> str:
    """A key path of a deep nesting, cut (``outcomes[0].metrics[0][0]...``)."""
    return key if len(key) <= limit else key[: limit - 3] + "..."


def too_deep(value: Any, key: str, limit: int = JSON_MAX_DEPTH) -> str | None:
    """The key of the first list or object in ``value`` (at ``key``) that is nested deeper
    than ``limit`` levels below it (cut to 60 characters), or None."""
    stack: list[tuple[Any, int, str]] = [(value, 0, key)]
    while stack:
        node, depth, where = stack.pop()
        if isinstance(node, (dict, list)):
            if depth >= limit:
                return _short_key(where)
            items = node.items() if isinstance(node, dict) else enumerate(node)
            stack.extend((v, depth + 1, _key_path(where, k)) for k, v in items)
    return None
