"""The declared types of the settings files: :func:`conformance.schema.line`,
:func:`~conformance.schema.number_in`, :func:`~conformance.schema.one_of` and
:func:`~conformance.schema.key_problem`, and the refusals they give in a settings file; the
checks of a command-line value, :func:`~conformance.schema.text_problem` and
:func:`~conformance.schema.integer_text`."""

from __future__ import annotations

import math
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance import safeio
from conformance.cases import parse_cases
from conformance.deviations import parse_deviations
from conformance.errors import ConformanceInputError
from conformance.schema import (
    CaseName,
    Problem,
    integer_text,
    key_problem,
    line,
    number_in,
    one_of,
    problem_of,
    text_problem,
)
from conformance.tolerances import parse_tolerances


def refused(value: Any, type_: Any) -> str:
    found = problem_of(value, type_)
    assert isinstance(found, Problem), found
    return found.message()


# -- line -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    ["a\nb", "trailing\n", "tab\there", "\x1b[2J", "del\x7f", "c1\x85", "ls\u2028", "ps\u2029",
     "rtl\u202eoverride", "isolate\u2066", "alm\u061c", "\ud800"],
)
def test_a_line_refuses_what_drives_a_terminal_or_breaks_a_line(text: str) -> None:
    assert refused(text, line(100)) == (
        f"the top level must be one line of printable text of at most 100 characters, "
        f"not a string ({safeio.show(text, 40)})")


def test_a_line_takes_printable_text_of_any_script() -> None:
    for text in ("a red circle", "ünïcödé 🙂 👩\u200d🔬", "", "x" * 100, "  "):
        assert problem_of(text, line(100)) == text
    assert "at most 100 characters" in refused("x" * 101, line(100))
    assert refused(3, line(100)).endswith("not a number (3)")


#: what a line refuses, by Unicode category: controls, line and paragraph separators, lone
#: surrogates, and the bidirectional controls
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _unprintable(text: str) -> bool:
    return any(unicodedata.category(c) in ("Cc", "Zl", "Zp", "Cs") or c in _BIDI for c in text)


@given(st.text(max_size=30))
def test_a_line_and_a_command_line_value_refuse_the_same(text: str) -> None:
    """A line refuses a control character by its Unicode category, the length above its
    most and (``empty=False``) blank text; a command-line value the same, in words."""
    bad = _unprintable(text) or len(text) > 20
    assert isinstance(problem_of(text, line(20)), Problem) is bad
    assert (text_problem(text, "v", 20) is not None) is bad
    blank = bad or not text.strip()
    assert isinstance(problem_of(text, line(20, empty=False)), Problem) is blank
    assert (text_problem(text, "v", 20, empty=False) is not None) is blank


@pytest.mark.parametrize(
    "text",
    ["a\nb", "trailing\n", "tab\there", "\x1b[2J", "del\x7f", "c1\x85", "ls\u2028",
     "rtl\u202eoverride", "\ud800"],
)
def test_a_command_line_value_names_the_control_character(text: str) -> None:
    problem = text_problem(text, "the device", 100)
    assert problem == (f"the device: {safeio.show(text)} holds the control character "
                       f"U+{ord(next(c for c in text if _unprintable(c))):04X}; write one "
                       "line of printable text")
    assert "\n" not in problem and "\x1b" not in problem


def test_a_command_line_value_of_any_script() -> None:
    for text in ("a red circle", "ünïcödé 🙂 👩\u200d🔬", "", "x" * 4096):
        assert text_problem(text, "v", 4096) is None
    assert text_problem("x" * 4097, "v", 4096) == "v has 4097 characters; at most 4096"
    assert text_problem("  ", "the path", 9, empty=False) == "the path must not be empty"
    assert text_problem(" a ", "the path", 9, empty=False) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3", 3), ("-12", None), ("+7", 7), (" 4\t", 4), ("1024", 1024), ("0", None),
        ("1025", None), ("٣", None), ("1_000", None), ("0x10", None), ("", None),
        ("3\n", None), ("1" * 31, None), ("1e3", None), ("true", None), ("3.0", None),
    ],
)
def test_integer_text(text: str, expected: int | None) -> None:
    assert integer_text(text, 1, 1024) == expected


@given(st.text(max_size=40))
def test_integer_text_of_anything(text: str) -> None:
    """An integer is read from ASCII digits only, with a sign and spaces or tabs around."""
    out = integer_text(text, -(10**6), 10**6)
    if out is not None:
        assert type(out) is int and -(10**6) <= out <= 10**6
        assert text.strip(" \t").lstrip("+-").isascii() and int(text) == out


def test_empty_and_blank_lines() -> None:
    assert refused("", line(9, empty=False)) == (
        "the top level must be one line of printable text, not blank, of at most 9 "
        "characters, not an empty string")
    assert isinstance(problem_of(" \u3000", line(9, empty=False)), Problem)
    pattern = line(9, empty=False, blank=True)
    assert problem_of(" ", pattern) == " "
    assert refused("", pattern) == ("the top level must be one line of printable text of 1 "
                                    "to 9 characters, not an empty string")
    assert refused(1, line(9, accepted="a pattern")) == (
        "the top level must be a pattern, not a number (1)")


# -- number_in --------------------------------------------------------------------------------
def test_a_number_in_a_range() -> None:
    unit = number_in(0.0, 1.0)
    assert problem_of(1, unit) == 1.0 and type(problem_of(1, unit)) is float
    for bad, held in ((math.nan, "a number (nan)"), (math.inf, "a number (inf)"),
                      (1.5, "a number (1.5)"), (True, "a boolean (True)"),
                      ("0.5", "a string ('0.5')")):
        assert refused(bad, unit) == f"the top level must be a number in 0.0..1.0, not {held}"
    count = number_in(0, 64, integer=True)
    assert problem_of(64, count) == 64
    for bad, held in ((8.5, "a number (8.5)"), (65, "a number (65)"), (False, "a boolean")):
        assert refused(bad, count).startswith(
            f"the top level must be an integer in 0..64, not {held}")
    assert refused(-1, number_in(0, 9, integer=True, accepted="a seed")) == (
        "the top level must be a seed, not a number (-1)")


# -- one_of -----------------------------------------------------------------------------------
def test_one_of_names_the_choices_in_their_order() -> None:
    action = one_of(("xfail", "skip"))
    assert problem_of("skip", action) == "skip"
    assert refused("fail", action) == "the top level 'fail' is not one of xfail, skip"
    assert refused(1, action) == "the top level must be one of xfail, skip, not a number (1)"


# -- key_problem ------------------------------------------------------------------------------
def test_key_problem_names_the_first_refused_key() -> None:
    assert key_problem({"one": 1, "two": 2}, CaseName, ("cases",)) is None
    found = key_problem({"one": 1, "Two\n": 2, "x y": 3}, CaseName, ("cases",))
    assert str(found) == ("key cases['Two\\n'] is not accepted (lower-case letters, digits "
                          "and '-', at most 64)")
    found = key_problem({"fp64": {}}, one_of(("default", "fp32")), ("close",))
    assert str(found) == "key close['fp64'] is not one of default, fp32"
    assert key_problem({}, CaseName) is None


# -- in the settings files --------------------------------------------------------------------
CASE = {"model": "tiny-sd", "prompt": "p", "seed": 1, "steps": 1, "scheduler": "euler",
        "guidance_scale": 1.0, "resolutions": ["64x64"]}


def message(parse: Any, data: dict[str, Any]) -> str:
    with pytest.raises(ConformanceInputError) as info:
        parse(data, Path("f.toml"))
    return str(info.value)


def test_a_key_left_out_is_not_offered_as_null() -> None:
    """TOML has no null: a key a settings file may leave out is refused without 'or null'."""
    for key, value in (("vae", 3), ("lora", "a"), ("resolutions", 3), ("precisions", [])):
        text = message(parse_cases, {"schema_version": 1,
                                     "cases": {"one": {**CASE, key: value}}})
        assert text.startswith(f"f.toml: case file: cases['one'].{key} must be "), text
        assert "null" not in text, text


def test_the_schema_version_is_checked_before_the_keys() -> None:
    for parse in (parse_cases, parse_tolerances, parse_deviations):
        assert "schema_version is 9" in message(parse, {"schema_version": 9, "colour": 1})
        assert "schema_version is None" in message(parse, {"colour": 1})


def test_the_defaults_of_keys_left_out() -> None:
    case = parse_cases({"schema_version": 1, "cases": {"one": CASE}}, Path("f.toml")).cases[0]
    assert (case.precisions, case.lora, case.vae, case.negative_prompt) == (
        ("fp32",), (), None, "")
    (dev,) = parse_deviations({"schema_version": 1, "deviation": [
        {"classes": ["*"], "ids": ["*"], "action": "skip", "reason": "r"}]}, Path("d.toml"))
    assert len(dev.checks) == 5 and dev.cpu_flags == () and dev.cpu_isa == ()
    assert parse_deviations({"schema_version": 1}, Path("d.toml")) == []
