"""conformance.schema: files read into declared types, refusals in one line that name the
file, the key path and what is accepted."""

from __future__ import annotations

import enum
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance import safeio, schema
from conformance.errors import ConformanceInputError, ManifestError
from conformance.schema import DictKey, Finite, Int64, NonEmpty, Problem, matching
from tests.limits import time_limit


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


Hex = matching("[0-9a-f]{6,64}", "a string of lower-case hex digits")


class Point(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    x: Int64
    y: Finite = 0.0


@dataclass(frozen=True, slots=True)
class Item:
    name: NonEmpty
    step: Int64 | None = None
    colour: Colour | None = None
    sha: Hex | None = None
    value: float = 0.0
    points: list[Point] = field(default_factory=list)
    by_name: dict[str, Point] = field(default_factory=dict)


class Doc(msgspec.Struct, forbid_unknown_fields=True):
    items: list[Item]
    free: dict[str, Any] = {}


def refused(text: str | bytes, type_: Any = Doc, **kw: Any) -> str:
    with pytest.raises(ConformanceInputError) as info:
        schema.decode_json(text.encode() if isinstance(text, str) else text, type_,
                           "f.json", kind="test file", **kw)
    message = str(info.value)
    assert message.startswith("f.json: test file: "), message
    assert "\n" not in message and "\x1b" not in message
    return message.removeprefix("f.json: test file: ")


def doc(**item: Any) -> str:
    return json.dumps({"items": [{"name": "a"} | item]})


def test_reads_a_document_into_its_types(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(doc(step=3, colour="red", sha="abcdef12", value=1,
                        points=[{"x": 1, "y": 2}], by_name={"k": {"x": 2}}))
    got = schema.read_json(path, Doc, "test file", 1000)
    assert got.items == [Item("a", 3, Colour.RED, "abcdef12", 1.0, [Point(1, 2.0)],
                              {"k": Point(2)})]
    assert isinstance(got.items[0].value, float)


@pytest.mark.parametrize(("item", "message"), [
    ({"step": "1"}, "items[0].step must be an integer or null, not a string ('1')"),
    ({"step": True}, "items[0].step must be an integer or null, not a boolean (True)"),
    ({"step": 1.0}, "items[0].step must be an integer or null, not a number (1.0)"),
    ({"step": 2**64}, "items[0].step must be an integer or null, not 18446744073709551616 "
                      "(outside the 64-bit range)"),
    ({"name": ""}, "items[0].name must be a non-empty string, not an empty string"),
    ({"name": None}, "items[0].name must be a non-empty string, not null (None)"),
    ({"colour": "\x1b[2Jgreen"}, "items[0].colour '\\x1b[2Jgreen' is not one of blue, red"),
    ({"colour": 3}, "items[0].colour must be a string or null, not a number (3)"),
    ({"sha": "abcdef12\n"}, "items[0].sha must be a string of lower-case hex digits or null, "
                            "not a string ('abcdef12\\n')"),
    ({"sha": 7}, "items[0].sha must be a string of lower-case hex digits or null, not a "
                 "number (7)"),
    ({"value": "1"}, "items[0].value must be a number, not a string ('1')"),
    ({"points": {"x": 1}}, "items[0].points must be a list, not an object"),
    ({"points": [{"x": 1}, {"x": 1, "z": 2}]},
     "unknown key items[0].points[1].z (accepted: x, y)"),
    ({"points": [{"y": 1}]}, "key items[0].points[0].x is missing"),
    ({"points": [{"x": 1, "y": math.inf}]},
     "items[0].points[0].y must be a finite number, not a number (inf)"),
    ({"by_name": {"ok": {"x": 1}, "cpu-x": {"x": "1"}}},
     "items[0].by_name['cpu-x'].x must be an integer, not a string ('1')"),
    ({"by_name": {"k": 3}}, "items[0].by_name['k'] must be an object, not a number (3)"),
    ({"colour": "red", "extra": 1}, "unknown key items[0].extra (accepted: name, step, "
                                    "colour, sha, value, points, by_name)"),
    ({"k" * 10_000: 1}, "unknown key items[0].'kkkkkkkkkkkkkkk"),
])
def test_refusals_name_the_key_and_what_is_accepted(item: dict[str, Any], message: str):
    assert refused(doc(**item)).startswith(message)


def test_refusals_at_the_top_level() -> None:
    assert refused("[1]") == "the top level must be an object, not a list"
    assert refused("{}") == "key items is missing: it must be a list"
    assert refused('{"items": [], "x": 1}') == "unknown key x (accepted: items, free)"
    assert refused('{"items": [3]}') == "items[0] must be an object, not a number (3)"


def test_the_parser_refusals_name_the_file_and_key() -> None:
    assert refused('{"items": [], "items": []}').startswith(
        "key items: appears twice in one object")
    assert refused('{"items": [], "free": {"n": ' + "9" * 40 + "}}").startswith(
        "key free.n: an integer of 40 digits")
    assert refused('{"items": [], "free": {"n": 1e999}}').startswith(
        "key free.n: the number '1e999' is out of range")
    assert refused("{broken").startswith("not valid JSON")
    with pytest.raises(ConformanceInputError, match=r"^f\.json: test file is not UTF-8 text"):
        schema.decode_json(b'{"items": ["\xff"]}', Doc, "f.json", kind="test file")


def test_one_rule_for_non_finite_numbers(tmp_path: Path) -> None:
    text = doc(value=math.nan)
    assert "NaN" in text
    assert math.isnan(schema.decode_json(text, Doc, "f.json").items[0].value)
    assert schema.decode_json(doc(value=-math.inf), Doc, "f.json").items[0].value == -math.inf
    assert refused(doc(step=math.nan)).startswith("items[0].step must be an integer or null")
    assert refused(doc(name=math.inf)).startswith("items[0].name must be a non-empty string")
    path = tmp_path / "c.json"
    path.write_text(doc(value=math.nan))
    with pytest.raises(ConformanceInputError, match=r"key items\[0\]\.value: NaN is not JSON"):
        safeio.load_json(path, "config.json", 1000)


def test_the_reader_is_bounded(tmp_path: Path) -> None:
    fifo = tmp_path / "d.json"
    os.mkfifo(fifo)
    with time_limit(5), pytest.raises(ConformanceInputError, match="FIFO"):
        schema.read_json(fifo, Doc, "test file", 1000)
    big = tmp_path / "big.json"
    big.write_text(doc(name="x" * 2000))
    with pytest.raises(ConformanceInputError, match="read up to 1000 bytes"):
        schema.read_json(big, Doc, "test file", 1000)
    with pytest.raises(ManifestError, match="no such file"):
        schema.read_json(tmp_path / "absent.json", Doc, "manifest", 1000, error=ManifestError)


class Settings(msgspec.Struct, forbid_unknown_fields=True):
    name: NonEmpty
    seeds: list[Int64] = []


def test_toml_is_read_into_its_type(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('name = "x"\nseeds = [1, 2]\n')
    assert schema.read_toml(path, Settings, "settings file", 1000) == Settings("x", [1, 2])
    path.write_text('name = "x"\nseeds = [1, "2"]\n')
    with pytest.raises(ConformanceInputError) as info:
        schema.read_toml(path, Settings, "settings file", 1000)
    assert str(info.value) == (f"{path}: settings file: seeds[1] must be an integer, not a "
                               "string ('2')")


class Pair:
    """A type msgspec cannot state: decoded by a hook."""

    def __init__(self, a: int, b: int) -> None:
        self.a, self.b = a, b


def pair_hook(type_: type, value: Any) -> Any:
    if type_ is Pair:
        if type(value) is not dict:
            schema.refuse(value, "an object of a and b")
        if type(value.get("a")) is not int:
            schema.refuse(value.get("a"), "an integer", keys=("a",))
        if "b" not in value:
            schema.refuse(value, text="has no b")
        return Pair(value["a"], value.get("b", 0))
    raise NotImplementedError


class WithPair(msgspec.Struct):
    pair: Pair | None = None
    pairs: dict[str, Pair] = {}


def test_a_hook_refuses_with_the_key_path() -> None:
    def ref(text: str) -> str:
        return refused(text, WithPair, dec_hook=pair_hook)

    assert ref('{"pair": [1]}') == "pair must be an object of a and b or null, not a list"
    assert ref('{"pair": {"a": "1", "b": 1}}') == "pair.a must be an integer, not a string ('1')"
    assert ref('{"pairs": {"p": {"a": 1}}}') == "pairs['p'] has no b"
    got = schema.decode_json('{"pair": {"a": 1, "b": 2}}', WithPair, "f", dec_hook=pair_hook)
    assert (got.pair.a, got.pair.b) == (1, 2)


def test_problem_paths() -> None:
    problem = Problem(("outcomes", 3, "by_class", DictKey("a b"), "mae"), "must be x")
    assert problem.message() == "outcomes[3].by_class['a b'].mae must be x"
    assert problem.message(2) == "by_class['a b'].mae must be x"
    assert str(Problem((), "must be x")) == "the top level must be x"
    assert schema.problem_of({"items": []}, Doc) == Doc([])


def test_an_unforeseen_error_is_still_one_line(monkeypatch) -> None:
    def broken(*args: Any) -> Problem:
        raise RuntimeError("a bug")

    monkeypatch.setattr(schema, "_describe", broken)
    assert refused(doc(step="x")).startswith("the top level is not accepted: 'Expected")
    monkeypatch.undo()
    assert schema._describe("Something new", {}, Doc, None).message() == (
        "the top level is not accepted: 'Something new'")


def test_got_and_json_kind() -> None:
    assert schema.got({"a": 1}) == "not an object"
    assert schema.got(None) == "not null (None)"
    assert schema.got("x" * 100).endswith("chars))")
    assert schema.json_kind(True) == "a boolean"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=12,
)
KEYS = ("name", "step", "colour", "sha", "value", "points", "by_name", "other")


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(KEYS), value=json_values, nested=st.booleans())
def test_any_json_value_at_any_key_is_one_error_naming_the_file(key, value, nested) -> None:
    item: dict[str, Any] = {"name": "a"}
    if nested:
        item["points"] = [{"x": 1, key: value}]
    else:
        item[key] = value
    text = json.dumps({"items": [item], "free": {key: value}})
    try:
        schema.decode_json(text.encode(), Doc, "f.json", kind="test file")
    except ConformanceInputError as exc:
        message = str(exc)
        assert message.startswith("f.json: test file: ") and "\n" not in message


class Source(msgspec.Struct):
    path: schema.when_missing(NonEmpty, "a folder or hf:<owner>/<name>")  # type: ignore[valid-type]


def test_a_missing_key_says_what_it_names_and_a_wrong_value_its_form() -> None:
    assert refused("{}", Source) == "key path is missing: it must be a folder or hf:<owner>/<name>"
    assert refused('{"path": ""}', Source) == "path must be a non-empty string, not an empty string"
