"""Reading files the suite does not control, with caps on size, shape and types.

Every settings file, model config, shard index, checksum list, manifest or results file
the suite reads from disk goes through this module. Its guarantees:

* only regular files are read: a FIFO, a device, a directory or a socket is refused after
  an ``os.stat`` and again after an ``O_NONBLOCK`` open, so nothing ever blocks on a pipe;
* a file larger than the cap its caller names (one of the ``*_LIMIT`` constants below)
  is refused before it is read, and reading stops one byte past the cap if it grows;
* text is strict UTF-8;
* JSON: no duplicate keys, no number literal that overflows a float, integers of at most
  :data:`JSON_MAX_INT_DIGITS` digits, nesting at most :data:`JSON_MAX_DEPTH` deep, no lone
  surrogates in strings; ``NaN`` / ``Infinity`` only where a declared type of
  :mod:`conformance.schema` holds a float (never in an untyped read); every refusal names
  the key;
* TOML: at most :data:`TOML_MAX_DOTTED_PARTS` parts per dotted key (checked before
  parsing: tomllib needs memory quadratic in that count, so 200 KB of one dotted key takes
  gigabytes), and after parsing at most :data:`TOML_MAX_KEYS` keys and array items in all,
  :data:`TOML_MAX_DEPTH` levels and integers within TOML's 64-bit range.

Every refusal is a :class:`~conformance.errors.ConformanceInputError` (or the subclass the
caller passes as ``error``) whose message names the file, the key where there is one, and
what is accepted. The values inside a file are checked by the declared types of
:mod:`conformance.schema`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from conformance.errors import ConformanceInputError, OutputError, type_name
from conformance.report.safe_text import bounded

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "CASES_LIMIT",
    "CHECKSUMS_LIMIT",
    "CONFIG_LIMIT",
    "IMAGE_LIMIT",
    "JSON_MAX_DEPTH",
    "JSON_MAX_INT_DIGITS",
    "MANIFEST_LIMIT",
    "RESULTS_LIMIT",
    "SETTINGS_LIMIT",
    "SHARD_INDEX_LIMIT",
    "TOML_MAX_DEPTH",
    "TOML_MAX_DOTTED_PARTS",
    "TOML_MAX_KEYS",
    "deep_key",
    "hard_link_problem",
    "is_within",
    "key_label",
    "load_json",
    "load_json_object",
    "load_toml",
    "loads_json",
    "loads_toml",
    "new_file_mode",
    "read_bytes",
    "read_text",
    "regular_file_problem",
    "show",
    "writable_problem",
    "write_atomic",
]

KiB = 1024
MiB = 1024 * KiB

# -- size caps, in bytes, per kind of file ---------------------------------------------------
#: tolerance and deviations files (the shipped ones are under 4 KiB)
SETTINGS_LIMIT = 64 * KiB
#: case files: room for about a thousand cases (the shipped ones are under 3 KiB)
CASES_LIMIT = 256 * KiB
#: a model's config.json, model_index.json or scheduler_config.json (real ones: < 10 KiB)
CONFIG_LIMIT = 1 * MiB
#: a *.safetensors.index.json shard index (FLUX.1's transformer: about 120 KiB)
SHARD_INDEX_LIMIT = 16 * MiB
#: fixtures/checksums.json
CHECKSUMS_LIMIT = 1 * MiB
#: a golden set's manifest
MANIFEST_LIMIT = 16 * MiB
#: a results JSON of a run
RESULTS_LIMIT = 256 * MiB
#: a golden or actual image (a 2048x2048 RGB PNG is at most 12 MiB)
IMAGE_LIMIT = 64 * MiB

# -- shape caps ---------------------------------------------------------------------------------
JSON_MAX_DEPTH = 64
#: Python parses integers in time quadratic in their length; nothing real has more digits
JSON_MAX_INT_DIGITS = 30
TOML_MAX_DEPTH = 16
TOML_MAX_KEYS = 50_000
TOML_MAX_DOTTED_PARTS = 64
_INT64 = (-(2**63), 2**63 - 1)

_FILE_TYPES = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def show(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to at most ``limit`` characters: safe to print, one line."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"<an integer of about {int(value.bit_length() * 0.30103) + 1} digits>"
    try:
        text = repr(value)
    except Exception:  # a repr that fails says nothing useful either
        return f"<{type(value).__name__}>"
    return bounded(text, limit)


def _human(size: int) -> str:
    for unit, scale in (("GiB", 1024 * MiB), ("MiB", MiB), ("KiB", KiB)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    for test, name in _FILE_TYPES:
        if test(mode):
            return name
    return "not a regular file"


def gunzip_bounded(data: bytes, limit: int, where: str,
                   error: type[ConformanceInputError] = ConformanceInputError) -> bytes:
    """The gzip member ``data`` inflated, refusing more than ``limit`` bytes of output (a
    gzip bomb), a truncated stream and data that is not gzip; errors name ``where``."""
    import zlib

    inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflate.decompress(data, limit + 1)
    except zlib.error as exc:
        raise error(where, f"is not a gzip file ({exc})") from None
    if len(out) > limit or inflate.unconsumed_tail:
        raise error(where, f"inflates to more than {limit} bytes")
    if not inflate.eof:
        raise error(where, "is a truncated gzip file")
    return out


def read_bytes(
    path: str | os.PathLike[str],
    kind: str,
    limit: int,
    *,
    error: type[ConformanceInputError] = ConformanceInputError,
) -> bytes:
    """The bytes of the regular file ``path`` (a ``kind``: "case file", "config.json" ...).

    Refuses anything that is not a regular file, and a file over ``limit`` bytes.
    """
    try:
        name = os.fspath(path)
    except TypeError:
        raise error(str(path), f"{kind}: not a file path ({type_name(path)})") from None
    if isinstance(name, bytes):  # pragma: no cover - the suite passes text paths
        name = os.fsdecode(name)
    if not name:
        raise error("''", f"{kind}: empty path")
    if "\x00" in name:
        raise error(show(name), f"{kind}: the path contains a NUL character")
    try:
        st = os.stat(name)
    except FileNotFoundError:
        raise error(path, f"cannot read {kind}: no such file") from None
    except (OSError, ValueError) as exc:
        raise error(path, f"cannot read {kind}: {os_reason(exc)}") from None
    _check_stat(st, path, kind, limit, error)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    flags |= getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(name, flags)
    except OSError as exc:
        raise error(path, f"cannot read {kind}: {os_reason(exc)}") from None
    try:
        _check_stat(os.fstat(fd), path, kind, limit, error)  # replaced since the stat
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 * MiB, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise error(path, f"cannot read {kind}: {os_reason(exc)}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise error(path, f"{kind} grew past {_human(limit)} while read; the limit is "
                    f"{_human(limit)}")
    return b"".join(chunks)


def os_reason(exc: BaseException) -> str:
    """The cause of an I/O failure in one line: ``strerror`` of an ``OSError``; for a
    ``SafetensorError`` (``... Os { code: 28, ... message: "No space left on device" }``)
    the operating system's message inside it; else the exception's first line."""
    reason = getattr(exc, "strerror", None)
    if reason:
        return str(reason)
    text = str(exc)
    found = re.search(r'message: "([^"\n]{1,200})"', text)
    if found:
        return found[1]
    return (text.splitlines() or [type(exc).__name__])[0][:200]


def _check_stat(
    st: os.stat_result, path: Any, kind: str, limit: int, error: type[ConformanceInputError]
) -> None:
    what = _not_regular(st.st_mode)
    if what is not None:
        raise error(path, f"cannot read {kind}: it is {what}; expected a regular file")
    if st.st_size > limit:
        raise error(
            path, f"{kind} is {_human(st.st_size)}; files of this kind are read up to "
            f"{_human(limit)}"
        )


def read_text(
    path: str | os.PathLike[str],
    kind: str,
    limit: int,
    *,
    error: type[ConformanceInputError] = ConformanceInputError,
) -> str:
    """The text of ``path``: :func:`read_bytes`, then strict UTF-8 (no byte-order mark)."""
    return _decode(read_bytes(path, kind, limit, error=error), path, kind, error)


def _decode(
    raw: bytes, where: Any, kind: str, error: type[ConformanceInputError]
) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise error(
            where, f"{kind} is not UTF-8 text (byte {exc.start}, line {line}); save it as UTF-8"
        ) from None
    if text.startswith("\ufeff"):
        raise error(where, f"{kind} starts with a byte-order mark; save it as UTF-8 without one")
    return text


# -- JSON ------------------------------------------------------------------------------------


class _Problem:
    """What a JSON hook refused, kept in the tree where it was found (so that the message
    can name the key) instead of raised."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class _Duplicated(dict):  # type: ignore[type-arg]
    """An object with a key given twice (the key in ``duplicate``)."""

    duplicate: str = ""


#: how Python's json writes the non-finite floats (the only spellings read)
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _json_hooks(nonfinite: bool) -> tuple[dict[str, Any], list[bool]]:
    """``json.loads`` hooks that keep what they refuse as :class:`_Problem` /
    :class:`_Duplicated` in the tree, and a list that is not empty when they did."""
    found: list[bool] = []

    def parse_int(text: str) -> int | _Problem:
        if len(text) > JSON_MAX_INT_DIGITS and len(text.lstrip("-")) > JSON_MAX_INT_DIGITS:
            found.append(True)
            return _Problem(f"an integer of {len(text.lstrip('-'))} digits; at most "
                            f"{JSON_MAX_INT_DIGITS} digits are read")
        return int(text)

    def parse_float(text: str) -> float | _Problem:
        if len(text) > 400:
            found.append(True)
            return _Problem(f"a number written with {len(text)} characters; at most 400 "
                            "are read")
        value = float(text)
        if not math.isfinite(value):
            found.append(True)
            return _Problem(f"the number {show(text, 40)} is out of range for a float")
        return value

    def parse_constant(text: str) -> float | _Problem:
        if nonfinite:
            return _NONFINITE[text]
        found.append(True)
        return _Problem(f"{text} is not JSON; write a finite number or null")

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
             "parse_float": parse_float, "parse_constant": parse_constant}
    return hooks, found


def _find_problem(value: Any) -> tuple[str, str] | None:
    """(key, text) of the first :class:`_Problem` or duplicated key in a parsed tree."""
    stack: list[tuple[Any, tuple[Any, ...] | None]] = [(value, None)]
    while stack:
        node, trail = stack.pop()
        if isinstance(node, _Problem):
            return _key_path(trail) or "the top level", node.text
        if isinstance(node, dict):
            if isinstance(node, _Duplicated):
                return (_key_path((trail, node.duplicate)),
                        "appears twice in one object; write each key once")
            stack.extend((v, (trail, k)) for k, v in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((v, (trail, i)) for i, v in reversed(list(enumerate(node))))
    return None


def loads_json(
    data: bytes | str,
    where: Any,
    *,
    kind: str = "JSON file",
    max_depth: int = JSON_MAX_DEPTH,
    error: type[ConformanceInputError] = ConformanceInputError,
    nonfinite: bool = False,
) -> Any:
    """Parse JSON ``data`` (read from ``where``) with this module's rules.

    The non-finite floats, spelt as Python's json writes them (``NaN``, ``Infinity``,
    ``-Infinity``), are read only with ``nonfinite``: by :mod:`conformance.schema`, whose
    declared types then decide where a float may hold one. A number literal that
    overflows a float is refused either way. Every refusal names the key.
    """
    text = _decode(data, where, kind, error) if isinstance(data, bytes) else data
    hooks, flagged = _json_hooks(nonfinite)
    try:
        value = json.loads(text, **hooks)
    except RecursionError:
        raise error(where, f"{kind}: key {deep_key(text, max_depth)}: nested too deeply; "
                    f"at most {max_depth} levels are read") from None
    except json.JSONDecodeError as exc:
        raise error(
            where, f"{kind}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except (ValueError, OverflowError) as exc:
        raise error(where, f"{kind}: not valid JSON ({show(str(exc), 80)})") from None
    found = _find_problem(value) if flagged else None
    if found is not None:
        raise error(where, f"{kind}: key {found[0]}: {found[1]}")
    _check_tree(value, where, kind, max_depth, None, error,
                strings=not isinstance(data, bytes) or bool(_SURROGATE_ESCAPE.search(text)))
    return value


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


def load_json(
    path: str | os.PathLike[str],
    kind: str,
    limit: int,
    *,
    max_depth: int = JSON_MAX_DEPTH,
    error: type[ConformanceInputError] = ConformanceInputError,
) -> Any:
    """Read and parse the JSON file ``path`` (see :func:`loads_json`)."""
    raw = read_bytes(path, kind, limit, error=error)
    return loads_json(raw, path, kind=kind, max_depth=max_depth, error=error)


def load_json_object(
    path: str | os.PathLike[str],
    kind: str,
    limit: int,
    *,
    error: type[ConformanceInputError] = ConformanceInputError,
) -> dict[str, Any]:
    """:func:`load_json` for a file that must hold one JSON object."""
    value = load_json(path, kind, limit, error=error)
    if not isinstance(value, dict):
        raise error(path, f"{kind} must hold a JSON object, not {_json_type(value)}")
    return value


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def key_label(key: Any) -> str:
    """A TOML/JSON key for messages: bare when it is a bare key, else quoted and cut."""
    if isinstance(key, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", key):
        return key
    return show(key)


def _key_path(trail: tuple[Any, ...] | None) -> str:
    """The dotted path (``a.b[2].c``) of a trail of ``(parent_trail, key)`` links."""
    parts: list[str] = []
    while trail is not None:
        trail, key = trail
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key_label(key)}")
    return "".join(reversed(parts)).removeprefix(".")


#: a JSON escape of a UTF-16 surrogate; without one, a document parsed from strict UTF-8
#: holds no lone surrogate, and its strings need no check
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _check_tree(
    value: Any,
    where: Any,
    kind: str,
    max_depth: int,
    max_items: int | None,
    error: type[ConformanceInputError],
    int_range: tuple[int, int] | None = None,
    strings: bool = True,
) -> None:
    """Depth, item count, integer range and (with ``strings``) lone surrogates over a
    parsed tree. Key paths are built only for a message."""
    stack: list[tuple[Any, int, tuple[Any, ...] | None]] = [(value, 0, None)]
    items = 0
    containers = (dict, list)
    # the values with something to check: containers, and strings / integers when asked
    visited = containers + ((str,) if strings else ()) + ((int,) if int_range else ())
    while stack:
        node, depth, trail = stack.pop()
        if isinstance(node, containers):
            if depth >= max_depth:
                raise error(
                    where, f"{kind}: key {_short_key(_key_path(trail)) or 'the top level'}: "
                    f"nested too deeply; values nested deeper than {max_depth} levels are "
                    "not read"
                )
            items += len(node)
            if max_items is not None and items > max_items:
                raise error(where, f"{kind}: more than {max_items} keys and array items")
            if isinstance(node, dict):
                for k, v in node.items():
                    if strings:
                        _check_string(k, where, kind, trail, error)
                    if isinstance(v, visited):
                        stack.append((v, depth + 1, (trail, k)))
            else:
                stack.extend((v, depth + 1, (trail, i)) for i, v in enumerate(node)
                             if isinstance(v, visited))
        elif isinstance(node, str):
            _check_string(node, where, kind, trail, error)
        elif int_range and isinstance(node, int) and not isinstance(node, bool):
            if not int_range[0] <= node <= int_range[1]:
                raise error(
                    where, f"{kind}: key {_key_path(trail)!r}: {show(node, 40)} is outside "
                    "the 64-bit integer range TOML allows"
                )


def _check_string(
    text: str, where: Any, kind: str, trail: tuple[Any, ...] | None,
    error: type[ConformanceInputError]
) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        key = _key_path(trail)
        raise error(
            where, f"{kind}: {f'key {key}: ' if key else ''}a string holds a lone "
            "surrogate (\\ud800-\\udfff), which is not text"
        ) from None


# -- TOML ------------------------------------------------------------------------------------

#: a bare, basic-string or literal-string key part. No possessive quantifiers (Python 3.11
#: only): each part has one way to match, and a shorter match is followed by a key character
#: where the pattern needs a dot, so backtracking fails at once and the scan stays linear
_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')"""
#: ``TOML_MAX_DOTTED_PARTS + 1`` key parts joined by dots, starting at a part boundary
_DOTTED_RUN = re.compile(
    rf"(?<![A-Za-z0-9_-])(?:{_KEY_PART}[ \t]*\.[ \t]*){{{TOML_MAX_DOTTED_PARTS}}}{_KEY_PART}"
)


def loads_toml(
    text: str,
    where: Any,
    *,
    kind: str = "TOML file",
    max_keys: int = TOML_MAX_KEYS,
    max_depth: int = TOML_MAX_DEPTH,
    error: type[ConformanceInputError] = ConformanceInputError,
) -> dict[str, Any]:
    """Parse TOML ``text`` (read from ``where``) with this module's caps."""
    run = _DOTTED_RUN.search(text)
    if run is not None:
        line = text.count("\n", 0, run.start()) + 1
        raise error(
            where, f"{kind}: line {line}: a dotted key of more than {TOML_MAX_DOTTED_PARTS} "
            f"parts; at most {TOML_MAX_DOTTED_PARTS} are read"
        )
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(where, f"invalid TOML: {exc}") from None
    except RecursionError:
        raise error(where, f"invalid TOML: nested too deeply; at most {max_depth} levels") \
            from None
    except (ValueError, OverflowError) as exc:  # e.g. an integer of thousands of digits
        reason = show(str(exc), 100)
        run = re.search(r"[0-9][0-9_]{4000}", text)
        if "integer string conversion" in str(exc) and run is not None:
            line_start = text.rfind("\n", 0, run.start()) + 1
            line = text.count("\n", 0, run.start()) + 1
            key = text[line_start:run.start()].split("=", 1)[0].strip(" \t[{,")
            at = f"line {line}" + (f", key {show(key, 40)}" if key else "")
            reason = f"{at}: an integer with thousands of digits; TOML integers are 64-bit"
        raise error(where, f"invalid TOML: {reason}") from None
    _check_tree(data, where, kind, max_depth, max_keys, error, int_range=_INT64)
    return data


def load_toml(
    path: str | os.PathLike[str],
    kind: str,
    limit: int,
    *,
    max_keys: int = TOML_MAX_KEYS,
    max_depth: int = TOML_MAX_DEPTH,
    error: type[ConformanceInputError] = ConformanceInputError,
) -> dict[str, Any]:
    """Read and parse the TOML file ``path`` (see :func:`loads_toml`)."""
    text = read_text(path, kind, limit, error=error)
    return loads_toml(text, path, kind=kind, max_keys=max_keys, max_depth=max_depth,
                      error=error)


def regular_file_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` is not an existing regular file (without opening it), or ``None``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "no such file"
    except (OSError, ValueError) as exc:
        return os_reason(exc)
    what = _not_regular(st.st_mode)
    return None if what is None else f"it is {what}, not a regular file"


def hard_link_problem(path: str | os.PathLike[str]) -> str | None:
    """Why the regular file at ``path`` is not taken as a file of its folder: it has more
    than one hard link, so another of its names may lie anywhere on the file system (a
    hard link passes every check on paths, ``realpath`` included); else ``None``, also
    for a path that cannot be looked at (its reader says why)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
        return (f"the file has {st.st_nlink} hard links (another name may be outside the "
                "results files' folders); copy it in instead of linking it")
    return None


def is_within(path: Path, root: Path) -> bool:
    """Whether ``path``, with symbolic links resolved, lies inside ``root`` (resolved)."""
    try:
        resolved = path.resolve(strict=False)
        base = root.resolve(strict=False)
    except (OSError, RuntimeError, ValueError):
        return False
    return resolved == base or base in resolved.parents


# -- writing ---------------------------------------------------------------------------------


def current_umask() -> int:
    """The process's file-creation mask: read from ``/proc/self/status`` where the kernel
    reports it (Linux 4.7+), else set and put back at once."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8) & 0o777
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask & 0o777


def new_file_mode() -> int:
    """The mode a new file gets from ``open()``: ``0o666`` less the umask (a temporary file
    from :func:`tempfile.mkstemp` is ``0o600`` whatever the umask)."""
    return 0o666 & ~current_umask()


def write_atomic(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    kind: str = "file",
    error: type[ConformanceInputError] = OutputError,
) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, flushed to
    disk and renamed into place, with the mode of a file the user creates (``0o666`` less
    the umask, so a team's umask makes it group-readable).

    Any failure of the operating system (a full disk, a read-only or unwritable folder, a
    path that is not a folder) removes the temporary file and raises ``error`` (an
    :class:`~conformance.errors.OutputError`) naming ``path``, the ``kind`` of file and the
    reason, e.g. ``results.json: cannot write results file: No space left on device``; the
    file at ``path`` is then what it was before.
    """
    import tempfile

    target = Path(path)
    stream = _stream_target(target, kind, error)
    if stream is not None:  # /dev/null, /dev/stdout, a FIFO: written in place, never replaced
        _write_stream(target, stream, data, kind, error)
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as exc:
        raise error(target.parent, f"cannot create the folder for the {kind}: "
                    f"{os_reason(exc)}") from None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except (OSError, ValueError) as exc:
        raise error(target, f"cannot write {kind}: {os_reason(exc)}") from None
    try:
        try:
            os.fchmod(fd, new_file_mode())
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                if written <= 0:  # a file system that takes nothing more says so this way
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except OSError as exc:
        _remove(tmp)
        raise error(target, f"cannot write {kind}: {os_reason(exc)}") from None
    except BaseException:
        _remove(tmp)
        raise
    return target


def _stream_target(target: Path, kind: str, error: type[ConformanceInputError]) -> int | None:
    """The ``stat`` mode of an existing character device or FIFO at ``target`` (links
    followed: ``/dev/stdout``), which :func:`write_atomic` writes in place rather than
    renaming a file over it (as root that would replace ``/dev/null`` for the whole machine);
    ``None`` for a regular file or a new path. Any other kind of file is refused."""
    try:
        mode = os.stat(target).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return mode
    raise error(target, f"cannot write {kind}: it is {_not_regular(mode)}; expected a file "
                "path (or a character device or FIFO to stream it to)")


def _write_stream(target: Path, mode: int, data: bytes, kind: str,
                  error: type[ConformanceInputError]) -> None:
    """``data`` written to the character device or FIFO ``target`` (a FIFO without a reader
    is refused at once rather than waited for)."""
    flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_NONBLOCK if stat.S_ISFIFO(mode) else 0)
    try:
        fd = os.open(target, flags)
        try:
            if stat.S_ISFIFO(mode):
                os.set_blocking(fd, True)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
    except OSError as exc:
        raise error(target, f"cannot write {kind}: {os_reason(exc)}") from None


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def writable_problem(path: str | os.PathLike[str]) -> str | None:
    """Why a file cannot be written at ``path`` (by :func:`write_atomic`), or ``None``:
    checked before any work, so that a run does not fail at its end. ``path`` must not be a
    folder; the nearest folder that exists above it must be one, and a temporary file must
    be creatable there (it is removed at once; the folders between are not created)."""
    import tempfile

    if "\x00" in os.fsdecode(path):
        return "the path contains a NUL character"
    try:
        target = Path(os.fspath(path))
        with contextlib.suppress(OSError):
            mode = os.stat(target).st_mode
            if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):  # streamed in place
                return None if os.access(target, os.W_OK) else (
                    "cannot be written: Permission denied")
        if target.is_dir():
            return "is a folder; expected a file path"
        folder = target.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            return f"{folder} is not a folder"
        fd, tmp = tempfile.mkstemp(prefix=".conformance-probe.", suffix=".tmp", dir=folder)
    except (OSError, ValueError) as exc:
        return f"cannot be written: {os_reason(exc)}"
    os.close(fd)
    _remove(tmp)
    return None


def _owner(path: Path) -> str:
    """`` (owned by uid N, mode 0NNN)`` for a file that exists, else ``""``."""
    try:
        st = os.lstat(path)
    except OSError:
        return ""
    return f" (owned by uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})"


def _open_lock(path: Path, what: str, hint: str) -> int:
    """A descriptor of the lock file ``path``, created (``0o666`` less the umask, so the
    user's team can take it too) when missing. A lock file made by another user that this one
    may only read is opened read-only: ``flock`` needs no write access. Never follows a link
    and never blocks on a FIFO."""
    flags = os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | flags, 0o666)
    except OSError as exc:
        fd = -1
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            try:
                fd = os.open(path, os.O_RDONLY | flags)
            except OSError:
                fd = -1
        if fd < 0:
            raise OutputError(path, f"cannot open {what}: {os_reason(exc)}{_owner(path)}"
                              f"{'; ' + hint if hint else ''}") from None
    try:
        st = os.fstat(fd)
    except OSError as exc:  # pragma: no cover - fstat of an open descriptor
        os.close(fd)
        raise OutputError(path, f"cannot use {what}: {os_reason(exc)}") from None
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise OutputError(path, f"{what} is {_not_regular(st.st_mode)}, not a regular file; "
                          "remove it")
    return fd


@contextlib.contextmanager
def exclusive_lock(path: Path, what: str = "the lock file", hint: str = "") -> Iterator[None]:
    """An exclusive ``flock`` on the lock file ``path`` for the block (``what`` names it in
    messages, ``hint`` says how to mend an unopenable one). The kernel releases it when the
    holder exits or is killed, so it is never stale; the file is never removed (removing it
    would let two writers lock two different files). A lock file that cannot be opened or
    locked is an :class:`~conformance.errors.OutputError` naming it and the cause."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: single-writer assumption
        yield
        return
    fd = _open_lock(path, what, hint)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # retried on EINTR by Python itself (PEP 475)
        except OSError as exc:
            raise OutputError(path, f"cannot lock {what}: {os_reason(exc)}") from None
        yield
    finally:
        os.close(fd)  # releases the lock
