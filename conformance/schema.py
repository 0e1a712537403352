"""Declared types for the files the suite reads, and the one reader in front of them.

A file the suite does not control (a results file, a golden manifest, a settings file) is
read by :func:`read_json` or :func:`read_toml` into a declared type: a
:class:`msgspec.Struct` or a dataclass whose fields say what each key holds, with
:data:`Int64`, :data:`Finite`, :data:`NonEmpty` and :func:`matching` for the constraints
that types alone do not state. Reading goes in three steps:

1. :func:`conformance.safeio.read_bytes`: a regular file only (opened ``O_NONBLOCK`` and
   checked with ``fstat``, so a FIFO or a device never blocks), within the size cap of its
   kind, strict UTF-8;
2. :func:`conformance.safeio.loads_json` (or ``load_toml``): no key twice, integers of at
   most 30 digits, bounded nesting, no lone surrogates. The one rule for non-finite
   numbers: ``NaN``, ``Infinity`` and ``-Infinity`` (as Python's json writes them) are read,
   and the declared type decides: a ``float`` field holds them (a run writes them for a
   latent trace that went non-finite), :data:`Finite`, ``int`` and ``str`` fields refuse
   them, and an untyped read (``safeio.load_json``) refuses them everywhere;
3. :func:`msgspec.convert` into the declared type, strictly (no ``"1"`` for ``1``, no
   ``true`` for ``1``, unknown keys refused).

Every refusal is one :class:`~conformance.errors.ConformanceInputError` (or the subclass
the caller names): ``FILE: KIND: KEY.PATH must be WHAT IS ACCEPTED, not WHAT IT HELD``,
whatever the shape of the input; :class:`Problem` is the same refusal with its key path
apart, for readers that word the place themselves (an outcome of a results file).

Types that msgspec cannot state (an object whose keys are a registry's names, a union of
two object shapes) are decoded by a ``dec_hook`` that calls :func:`refuse` for what it does
not accept; the message then names the key the same way.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import re
import sys
import threading
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TypeVar

import msgspec

from conformance.errors import ConformanceInputError
from conformance.safeio import key_label, load_toml, loads_json, read_bytes, show

__all__ = [
    "CASE",
    "MODEL",
    "PRECISION",
    "RESOLUTION",
    "Amount",
    "CaseName",
    "DictKey",
    "Finite",
    "Hex",
    "Int64",
    "ModelName",
    "NonEmpty",
    "Number",
    "PrecisionName",
    "Problem",
    "ResolutionName",
    "convert",
    "decode_json",
    "got",
    "integer_text",
    "json_kind",
    "key_problem",
    "line",
    "matching",
    "named",
    "number_in",
    "one_of",
    "problem_of",
    "read_json",
    "read_toml",
    "refuse",
    "refuse_problem",
    "text_problem",
    "to_builtins",
    "when_missing",
]

T = TypeVar("T")
DecHook = Callable[[type, Any], Any]

#: An integer of at most 64 bits (a bool is not one).
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1, description="an integer")]
#: A finite number (an integer is read as a float; NaN and the infinities are refused).
Finite = Annotated[float, msgspec.Meta(ge=-sys.float_info.max, le=sys.float_info.max,
                                       description="a finite number")]
#: A string of at least one character.
NonEmpty = Annotated[str, msgspec.Meta(min_length=1, description="a non-empty string")]
#: A number as a measurement is written: an integer of at most 64 bits (kept an int) or a
#: float, NaN and the infinities included.
Number = Annotated[Int64 | float, msgspec.Meta(description="a number")]
#: A measured amount (seconds, MiB): a finite number, 0 or more.
Amount = Annotated[
    Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
    | Annotated[float, msgspec.Meta(ge=0, le=sys.float_info.max)],
    msgspec.Meta(description="a finite number of at least 0")]


def matching(regex: str, accepted: str) -> Any:
    """A string type that ``regex`` must match whole (``\\Z``: a trailing newline does not
    slip through as it does with ``$``); ``accepted`` says in words what does (``must be
    ACCEPTED, not ...``)."""
    return Annotated[str, msgspec.Meta(pattern=f"^(?:{regex})\\Z", description=accepted)]


def named(regex: str, rule: str) -> Any:
    """A name type: :func:`matching`, refused as ``KEY 'VALUE' is not accepted (RULE)``."""
    return Annotated[str, msgspec.Meta(pattern=f"^(?:{regex})\\Z", description=rule,
                                       extra={"form": "rule"})]


#: what :func:`line` refuses: control characters (C0, DEL, C1), line and paragraph
#: separators, lone surrogates and the bidirectional controls (trojan-source reordering)
_UNPRINTABLE = ("\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\u061c\u200e\u200f"
                "\u202a-\u202e\u2066-\u2069")


def line(most: int, *, empty: bool = True, blank: bool | None = None,
         accepted: str | None = None) -> Any:
    """A string type: one line of printable text of at most ``most`` characters (no control
    character, so no newline, tab or terminal escape; no line or paragraph separator, no
    bidirectional control, no lone surrogate). ``empty=False`` refuses ``""``; ``blank``
    (by default as ``empty``) ``False`` refuses text of white space only. ``accepted``
    words it (``must be ACCEPTED, not ...``) where the default does not fit."""
    blank = empty if blank is None else blank
    text = f"[^{_UNPRINTABLE}]*"
    if not blank:
        text = f"(?=[^{_UNPRINTABLE}]*?[^\\s{_UNPRINTABLE}]){text}"
    size = (f"of at most {most} characters" if empty or not blank
            else f"of 1 to {most} characters")
    words = accepted or f"one line of printable text{'' if blank else ', not blank,'} {size}"
    return Annotated[str, msgspec.Meta(pattern=f"^(?:{text})\\Z", max_length=most,
                                       min_length=0 if empty else 1, description=words)]


_UNPRINTABLE_CHAR = re.compile(f"[{_UNPRINTABLE}]")
_INTEGER_TEXT = re.compile(r"[ \t]*([+-]?[0-9]{1,30})[ \t]*")


def text_problem(text: str, what: str, most: int, *, empty: bool = True) -> str | None:
    """Why ``what``, a command-line value, is not what :func:`line` accepts, in words that
    name the refused character (``WHAT: 'a\\x1b' holds the control character U+001B; write
    one line of printable text``), its length or, with ``empty=False``, that it is blank;
    None when it is accepted."""
    if len(text) > most:
        return f"{what} has {len(text)} characters; at most {most}"
    bad = _UNPRINTABLE_CHAR.search(text)
    if bad:
        return (f"{what}: {show(text)} holds the control character U+{ord(bad[0]):04X}; "
                "write one line of printable text")
    if not empty and not text.strip():
        return f"{what} must not be empty"
    return None


def integer_text(text: str, lo: int, hi: int) -> int | None:
    """The integer in ``lo..hi`` that a command-line value writes in the digits 0-9 (a sign
    and spaces or tabs around it allowed; no ``_``, no other script's digits, at most 30
    digits), or None."""
    found = _INTEGER_TEXT.fullmatch(text)
    return int(found[1]) if found and lo <= int(found[1]) <= hi else None


def number_in(lo: float, hi: float, *, integer: bool = False, accepted: str | None = None
              ) -> Any:
    """A number within ``lo..hi`` (an ``int`` type with ``integer``, else a ``float`` one
    that takes integers too; NaN is refused): ``must be an integer in LO..HI, not ...``."""
    if integer:
        meta = msgspec.Meta(ge=int(lo), le=int(hi),
                            description=accepted or f"an integer in {lo}..{hi}")
        return Annotated[int, meta]
    meta = msgspec.Meta(ge=float(lo), le=float(hi),
                        description=accepted or f"a number in {lo}..{hi}")
    return Annotated[float, meta]


def one_of(choices: Iterable[str]) -> Any:
    """A ``Literal`` of ``choices`` (a registry's names): ``'X' is not one of A, B`` for
    another string, ``must be one of A, B, not ...`` for a value of another type."""
    names = tuple(choices)
    return Annotated[Literal[names], msgspec.Meta(description=f"one of {', '.join(names)}")]


# -- the names a file of the suite carries ------------------------------------------------
#: a model's name in a golden manifest, a results file or a validation
MODEL = r"[a-z0-9][a-z0-9._-]{0,63}"
MODEL_RULE = "lower-case letters, digits, '.', '_' and '-', at most 64"
#: a case's name
CASE = r"[a-z0-9][a-z0-9-]{0,63}"
CASE_RULE = "lower-case letters, digits and '-', at most 64"
#: a precision's name (``fp32``, ``gguf-q4_k``, ``fp8.e4m3``)
PRECISION = r"[a-z0-9][a-z0-9._-]{0,63}"
PRECISION_RULE = "lower-case letters, digits, '.', '_' and '-', at most 64"
#: a resolution, ``WIDTHxHEIGHT``
RESOLUTION = r"[1-9][0-9]{0,4}x[1-9][0-9]{0,4}"
RESOLUTION_RULE = "WIDTHxHEIGHT, sides of 1 to 99999 in digits 0-9"

ModelName = named(MODEL, MODEL_RULE)
CaseName = named(CASE, CASE_RULE)
PrecisionName = named(PRECISION, PRECISION_RULE)
ResolutionName = named(RESOLUTION, RESOLUTION_RULE)
#: 6 to 64 lower-case hex digits (a digest, or the start of one)
Hex = matching("[0-9a-f]{6,64}", "a string of lower-case hex digits")


# -- what a value is, for messages ---------------------------------------------------------
_JSON_KINDS = {dict: "an object", list: "a list", str: "a string", type(None): "null"}
_INT_RANGE = 2**63


def json_kind(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return _JSON_KINDS.get(type(value), type(value).__name__)


def got(value: Any) -> str:
    """``not a string ('high')``: what a field held instead, shortened and escaped."""
    if isinstance(value, (dict, list)):
        return f"not {json_kind(value)}"
    if isinstance(value, int) and not isinstance(value, bool) and not (
            -_INT_RANGE <= value < _INT_RANGE):
        return f"not {show(value, 30)} (outside the 64-bit range)"
    if isinstance(value, (int, float, bool)) or value is None:
        return f"not {json_kind(value)} ({show(value, 30)})"
    return f"not {json_kind(value)} ({show(value, 40)})"


# -- a refusal, with its key path apart ----------------------------------------------------
class DictKey(str):
    """A key of a mapping (not a field of a record) in a key path: shown ``['cpu-x']``."""

    __slots__ = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Problem:
    """Why a value was refused: the keys from the document's top to the value (field names
    and dict keys as strings, list indices as ints) and the words after them."""

    keys: tuple[str | int, ...]
    text: str
    #: words before the key path ("key ", "unknown key ")
    lead: str = ""

    def path(self, start: int = 0) -> str:
        """The key path (``outcomes[0].by_class['cpu-x'].mae``) from key ``start`` on."""
        out = []
        for key in self.keys[start:]:
            if isinstance(key, int):
                out.append(f"[{key}]")
            elif isinstance(key, DictKey):
                out.append(f"[{show(str(key))}]")
            else:
                out.append(f".{key_label(key)}")
        return "".join(out).removeprefix(".")

    def message(self, start: int = 0) -> str:
        """``KEY.PATH must be ...`` (the path from key ``start`` on)."""
        return f"{self.lead}{self.path(start) or 'the top level'} {self.text}"

    def __str__(self) -> str:
        return self.message()


@dataclasses.dataclass(frozen=True, slots=True)
class _Refusal:
    keys: tuple[str | int, ...]
    value: Any
    accepted: str | None
    text: str | None
    lead: str


_MARK = "\x00refused by a decoding hook"
_local = threading.local()


def refuse(value: Any, accepted: str | None = None, *, keys: tuple[str | int, ...] = (),
           text: str | None = None, lead: str = "") -> NoReturn:
    """Refuse ``value`` from inside a ``dec_hook``: ``keys`` below the hook's value lead to
    it; the message says ``must be ACCEPTED, not ...`` (``or null`` added where the field is
    optional), or ``text`` as given (after ``lead`` and the key path)."""
    _local.refusal = _Refusal(tuple(keys), value, accepted, text, lead)
    raise ValueError(_MARK)


def refuse_problem(problem: Problem, keys: tuple[str | int, ...] = ()) -> NoReturn:
    """Refuse with a :class:`Problem` of a value below a hook's (``keys`` before its own)."""
    refuse(None, keys=keys + problem.keys, text=problem.text, lead=problem.lead)


def to_builtins(value: Any, enc_hook: Callable[[Any], Any] | None = None) -> Any:
    """``value`` (records, enums, tuples) as the JSON values a file of the suite holds; a
    float keeps NaN and the infinities (Python's json writes them as ``NaN`` /
    ``Infinity``)."""
    return msgspec.to_builtins(value, enc_hook=enc_hook)


# -- reading -----------------------------------------------------------------------------
def read_json(
    path: str | Path,
    type_: type[T] | Any,
    kind: str,
    limit: int,
    *,
    error: type[ConformanceInputError] = ConformanceInputError,
    dec_hook: DecHook | None = None,
) -> T:
    """The JSON file ``path`` (a ``kind``, at most ``limit`` bytes) as ``type_``."""
    raw = read_bytes(path, kind, limit, error=error)
    return decode_json(raw, type_, path, kind=kind, error=error, dec_hook=dec_hook)


def decode_json(
    data: bytes | str,
    type_: type[T] | Any,
    where: str | Path,
    *,
    kind: str = "JSON file",
    error: type[ConformanceInputError] = ConformanceInputError,
    dec_hook: DecHook | None = None,
) -> T:
    """JSON ``data`` (read from ``where``) as ``type_`` (see the module's rules)."""
    tree = loads_json(data, where, kind=kind, error=error, nonfinite=True)
    return convert(tree, type_, where, kind=kind, error=error, dec_hook=dec_hook)


def read_toml(
    path: str | Path,
    type_: type[T] | Any,
    kind: str,
    limit: int,
    *,
    error: type[ConformanceInputError] = ConformanceInputError,
    dec_hook: DecHook | None = None,
) -> T:
    """The TOML file ``path`` (read by :func:`conformance.safeio.load_toml`) as ``type_``."""
    tree = load_toml(path, kind, limit, error=error)
    return convert(tree, type_, path, kind=kind, error=error, dec_hook=dec_hook)


def convert(
    tree: Any,
    type_: type[T] | Any,
    where: str | Path,
    *,
    kind: str | None = None,
    error: type[ConformanceInputError] = ConformanceInputError,
    dec_hook: DecHook | None = None,
) -> T:
    """A parsed ``tree`` as ``type_``; a refusal raises ``error`` naming ``where``, the key
    path and what is accepted (``kind: `` before it when given)."""
    found = problem_of(tree, type_, dec_hook)
    if isinstance(found, Problem):
        raise error(where, f"{kind}: {found}" if kind else str(found))
    return found


def problem_of(tree: Any, type_: type[T] | Any, dec_hook: DecHook | None = None) -> T | Problem:
    """``tree`` as ``type_``, or the :class:`Problem` that refuses it (never another
    exception for a tree of JSON or TOML values)."""
    unknown = _unknown_key(tree, type_, ())
    if unknown is not None:
        return unknown
    try:
        return msgspec.convert(tree, type_, strict=True, dec_hook=dec_hook)
    except msgspec.ValidationError as exc:
        try:
            return _describe(str(exc), tree, type_, dec_hook)
        except Exception:  # the words of an unforeseen error: still one line, never a crash
            return Problem((), f"is not accepted: {show(str(exc), 200)}")


def key_problem(mapping: Mapping[Any, Any], type_: Any,
                keys: tuple[str | int, ...] = ()) -> Problem | None:
    """The first key of ``mapping`` (the object at ``keys``) that ``type_`` (a name type, a
    ``Literal``) refuses, as ``key KEYS['KEY'] is not accepted (RULE)`` or ``key
    KEYS['KEY'] is not one of ...``; None when it takes them all. (msgspec does not say
    which key of an object it refused: declare the object's keys ``str`` and check them
    with this.)"""
    for key in mapping:
        found = problem_of(key, type_)
        if isinstance(found, Problem):
            return Problem((*keys, DictKey(key) if isinstance(key, str) else key),
                           found.text.removeprefix(f"{show(key)} "), lead="key ")
    return None


# -- msgspec's errors in words -------------------------------------------------------------
_AT = re.compile(r" - at `\$(?P<path>[^`]*)`\Z", re.S)
_SEGMENT = re.compile(r"\.([^.\[`]+)|\[(\d+)\]|(\[\.\.\.\])")
_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
          "null": "null", "object": "an object", "array": "a list", "bytes": "bytes"}
_DICT_KEY = object()  # a ``[...]`` segment: msgspec does not say which key of a dict


def _describe(message: str, tree: Any, type_: Any, dec_hook: DecHook | None) -> Problem:
    at = _AT.search(message)
    text = message[: at.start()] if at else message
    segments: list[Any] = []
    for m in _SEGMENT.finditer(at["path"] if at else ""):
        segments.append(m[1] if m[1] is not None else int(m[2]) if m[2] else _DICT_KEY)
    node, tp, keys = _walk(tree, type_, segments, dec_hook)
    optional = _optional(tp)
    if text == _MARK:
        refusal: _Refusal = _local.refusal
        if refusal.text is not None:
            return Problem(keys + refusal.keys, refusal.text, refusal.lead)
        accepted = refusal.accepted or "accepted"
        if optional and not refusal.keys:
            accepted += " or null"
        return Problem(keys + refusal.keys, f"must be {accepted}, {got(refusal.value)}")
    expected = re.match(r"Expected `([^`]*)`, got `[^`]*`\Z", text)
    if expected:
        words = [_WORDS.get(w.strip(), w.strip()) for w in expected[1].split("|")]
        accepted = ", ".join(words[:-1]) + (" or " if len(words) > 1 else "") + words[-1]
        described = _description(tp)
        if described:
            accepted = described + (" or null" if optional else "")
        return Problem(keys, f"must be {accepted}, {got(node)}")
    if text.startswith("Expected `"):  # a constraint: a range, a pattern, a length
        if _extra(tp).get("form") == "rule":
            return Problem(keys, f"{show(node)} is not accepted ({_description(tp)})")
        described = _description(tp) or show(text.removeprefix("Expected "), 120)
        return Problem(keys, f"must be {described}{' or null' if optional else ''}, "
                             f"{_held(node)}")
    if text.startswith("Invalid enum value"):
        return Problem(keys, f"{show(node)} is not one of {', '.join(_choices(tp))}")
    if text.startswith("Object contains unknown field"):
        return _unknown(node, tp, keys) or Problem(keys, "holds an unknown key")
    missing = re.match(r"Object missing required field `([A-Za-z0-9_]+)`\Z", text)
    if missing:
        return Problem((*keys, missing[1]), "is missing" + _needs(tp, missing[1]), lead="key ")
    return Problem(keys, f"is not accepted: {show(text, 200)}")


def _held(node: Any) -> str:
    """:func:`got` for a value a constraint refused: a list, an object or a string says its
    length, which is what a length constraint is about."""
    if isinstance(node, list):
        return f"not a list of {len(node)} items" if node else "not an empty list"
    if isinstance(node, dict):
        return f"not an object of {len(node)} keys" if node else "not an empty object"
    if isinstance(node, str) and not node:
        return "not an empty string"
    if isinstance(node, str) and len(node) > 40:
        return f"not a string of {len(node)} characters ({show(node, 40)})"
    return got(node)


def _needs(tp: Any, name: str) -> str:
    """``: it must be WHAT IS ACCEPTED`` for the missing field ``name`` of record type
    ``tp`` (its declared description, or its type in words), or ``""``."""
    try:
        field_tp = _field_type(tp, name)
    except Exception:  # a type the walk does not know: the key alone
        return ""
    described = _extra(field_tp).get("missing") or _description(field_tp)
    if described is None and _choices(field_tp):
        described = f"one of {', '.join(_choices(field_tp))}"
    if described is None:
        members = [m for m in _members(field_tp) if m is not type(None)]
        names = {int: "int", float: "float", str: "str", bool: "bool", list: "array",
                 tuple: "array", dict: "object"}
        words = [_WORDS[names[typing.get_origin(m) or m]] for m in members
                 if (typing.get_origin(m) or m) in names]
        if len(words) != len(members) or not words:
            return ""
        described = " or ".join(dict.fromkeys(words))
    return f": it must be {described}"


def when_missing(type_: Any, accepted: str) -> Any:
    """``type_``, whose key, when missing, is refused as ``key K is missing: it must be
    ACCEPTED`` (what the key names, where its type's own words say only its form)."""
    return Annotated[type_, msgspec.Meta(extra={"missing": accepted})]


def _walk(tree: Any, type_: Any, segments: list[Any],
          dec_hook: DecHook | None) -> tuple[Any, Any, tuple[str | int, ...]]:
    """The value, its declared type and the keys at msgspec's path ``segments``."""
    node, tp, keys = tree, type_, ()
    for seg in segments:
        if seg is _DICT_KEY:
            value_type = _value_type(tp)
            seg = DictKey(_failing_key(node, value_type, dec_hook))
            tp = value_type
        elif isinstance(seg, int):
            tp = _item_type(tp)
        else:
            tp = _field_type(tp, seg)
        keys += (seg,)
        try:
            node = node[seg]
        except (KeyError, IndexError, TypeError):
            node = None
    return node, tp, keys


def _failing_key(node: Any, value_type: Any, dec_hook: DecHook | None) -> Any:
    """The first key of the dict ``node`` whose value ``value_type`` refuses."""
    for key, value in node.items():
        try:
            msgspec.convert(value, value_type, strict=True, dec_hook=dec_hook)
        except msgspec.ValidationError:
            return key
    return "?"


def _members(tp: Any) -> list[Any]:
    """The members of a union (one for a plain type), each without its ``Annotated``."""
    if typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(tp) for m in _members(arg)]
    return [tp]


def _optional(tp: Any) -> bool:
    return type(None) in _members(tp)


def _description(tp: Any) -> str | None:
    """The ``description`` of the ``Annotated`` meta of ``tp`` (or of its non-null member)."""
    candidates = [tp] + ([a for a in typing.get_args(tp) if a is not type(None)]
                         if typing.get_origin(tp) in (typing.Union, types.UnionType) else [])
    for candidate in candidates:
        if typing.get_origin(candidate) is Annotated:
            for meta in typing.get_args(candidate)[1:]:
                if isinstance(meta, msgspec.Meta) and meta.description:
                    return meta.description
    return None


def _extra(tp: Any) -> dict[str, Any]:
    """The ``extra`` of every :class:`msgspec.Meta` of an ``Annotated`` type, merged."""
    out: dict[str, Any] = {}
    if typing.get_origin(tp) is Annotated:
        for meta in typing.get_args(tp)[1:]:
            if isinstance(meta, msgspec.Meta) and meta.extra:
                out.update(meta.extra)
    return out


def _choices(tp: Any) -> list[str]:
    """What an enum (sorted) or a ``Literal`` (in its order) accepts."""
    for member in _members(tp):
        if isinstance(member, type) and issubclass(member, enum.Enum):
            return sorted(str(m.value) for m in member)
        if typing.get_origin(member) is typing.Literal:
            return [str(a) for a in typing.get_args(member)]
    return []


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _is_record(tp: Any) -> bool:
    return isinstance(tp, type) and (issubclass(tp, msgspec.Struct)
                                     or dataclasses.is_dataclass(tp))


@functools.cache
def _encoded_hints(cls: type) -> dict[str, Any]:
    """A record's declared field types by the keys a file gives them (a Struct field
    renamed with ``msgspec.field(name=...)`` by that name: ``class``, not ``cls``)."""
    hints = _hints(cls)
    if issubclass(cls, msgspec.Struct):
        return {f.encode_name: hints[f.name] for f in msgspec.structs.fields(cls)}
    return hints


def _field_type(tp: Any, name: str) -> Any:
    for member in _members(tp):
        if _is_record(member) and name in _encoded_hints(member):
            return _encoded_hints(member)[name]
    return Any


def _item_type(tp: Any) -> Any:
    for member in _members(tp):
        if typing.get_origin(member) in (list, tuple, set, frozenset):
            return typing.get_args(member)[0]
    return Any


def _value_type(tp: Any) -> Any:
    for member in _members(tp):
        if typing.get_origin(member) in (dict, Mapping):
            return typing.get_args(member)[1]
    return Any


def _field_names(cls: type) -> tuple[str, ...]:
    if issubclass(cls, msgspec.Struct):
        return tuple(f.encode_name for f in msgspec.structs.fields(cls))
    return tuple(f.name for f in dataclasses.fields(cls))


def _unknown(node: Any, tp: Any, keys: tuple[str | int, ...]) -> Problem | None:
    """The first key of the object ``node`` that its record type ``tp`` does not have."""
    for member in _members(tp):
        if _is_record(member) and type(node) is dict:
            names = _field_names(member)
            unknown = node.keys() - set(names)
            if unknown:
                return Problem((*keys, min(unknown)), f"(accepted: {', '.join(names)})",
                               lead="unknown key ")
    return None


@functools.cache
def _holds_dataclass(tp: Any, _inside: frozenset[Any] = frozenset()) -> bool:
    """Whether a value of ``tp`` may hold a dataclass: msgspec refuses unknown keys for a
    Struct declared ``forbid_unknown_fields``, and for a dataclass this module does."""
    for member in _members(tp):
        if dataclasses.is_dataclass(member):
            return True
        if member in _inside:  # a type that holds itself
            continue
        inner = _inside | {member}
        parts = (_hints(member).values() if _is_record(member) else
                 [a for a in typing.get_args(member) if a is not Ellipsis])
        if any(_holds_dataclass(part, inner) for part in parts):
            return True
    return False


def _unknown_key(tree: Any, tp: Any, keys: tuple[str | int, ...]) -> Problem | None:
    """The first key of an object that its declared dataclass does not have, or None."""
    if not _holds_dataclass(tp):
        return None
    for member in _members(tp):
        if dataclasses.is_dataclass(member) and type(tree) is dict:
            found = _unknown(tree, member, keys)
            if found is not None:
                return found
            hints = _hints(member)
            for name in _field_names(member):
                if name in tree and _holds_dataclass(hints.get(name, Any)):
                    found = _unknown_key(tree[name], hints[name], (*keys, name))
                    if found is not None:
                        return found
            return None
        if _is_record(member) and type(tree) is dict:  # a Struct: its fields
            for name, hint in _hints(member).items():
                if name in tree and _holds_dataclass(hint):
                    found = _unknown_key(tree[name], hint, (*keys, name))
                    if found is not None:
                        return found
            return None
        origin = typing.get_origin(member)
        if origin in (list, tuple) and type(tree) is list:
            item = typing.get_args(member)[0]
            for i, value in enumerate(tree):
                found = _unknown_key(value, item, (*keys, i))
                if found is not None:
                    return found
            return None
        if origin in (dict, Mapping) and type(tree) is dict:
            value_type = typing.get_args(member)[1]
            for key, value in tree.items():
                found = _unknown_key(value, value_type, (*keys, DictKey(key)))
                if found is not None:
                    return found
            return None
    return None
