"""The names an outcome of a results file carries are what the suite itself writes.

``model``, ``case``, ``resolution`` and ``precision`` are read with the golden manifest's
own patterns (:mod:`conformance.golden`): a results file with a 5000-digit precision or
resolution string, or a name no case file can give, is one line naming the file, the
outcome and the key, and ``conformance matrix`` draws nothing from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.cases import load_cases
from conformance.errors import ConformanceInputError
from conformance.golden import _CASE, _MODEL, _PRECISION, _RESOLUTION
from conformance.precision import PRECISIONS
from conformance.records import Outcome
from conformance.safeio import show
from tests.report.test_command import document, run, write
from tests.report.test_matrix import outcome

ROOT = Path(__file__).resolve().parents[1]
RULES = {
    "model": "lower-case letters, digits, '.', '_' and '-', at most 64",
    "case": "lower-case letters, digits and '-', at most 64",
    "resolution": "WIDTHxHEIGHT, sides of 1 to 99999 in digits 0-9",
    "precision": "lower-case letters, digits, '.', '_' and '-', at most 64",
}
BAD = [
    ("resolution", "9" * 5000 + "x1"),
    ("resolution", "1x" + "9" * 5000),
    ("precision", "gguf-q" + "9" * 5000),
    ("resolution", "\u0663x\u0663"),
    ("resolution", "0x64"),
    ("resolution", "064x64"),
    ("resolution", "100000x64"),
    ("model", "Tiny-SD"),
    ("model", "../x"),
    ("model", "m" * 65),
    ("case", "red.circle"),
    ("case", "red circle"),
    ("precision", "FP32"),
    ("precision", "fp32\n"),
]


@pytest.mark.parametrize(("key", "value"), BAD, ids=[f"{k}-{v[:12]!r}" for k, v in BAD])
def test_a_name_the_suite_cannot_write_is_refused_by_key(key: str, value: str) -> None:
    data = outcome() | {key: value}
    with pytest.raises(ConformanceInputError) as info:
        Outcome.from_json(data, "runs/r.json", 0)
    message = str(info.value)
    assert message == (f"runs/r.json: malformed outcomes: outcome 0 "
                       f"('tiny-sd/red-circle/64x64/fp32'): {key} {show(value)} is not "
                       f"accepted ({RULES[key]})")
    assert len(message) < 250 and "\n" not in message


def test_the_matrix_refuses_a_5000_digit_precision(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    item = "m/c/64x64/gguf-q" + "9" * 5000
    path = write(tmp_path / "a" / "results.json", document([outcome(item)]))
    code, out, err = run([str(path), "--markdown", str(tmp_path / "m.md")], capsys)
    assert code == 2 and out == ""
    assert err.splitlines() == [
        f"conformance matrix: error: {path}: malformed outcomes: outcome 0 ({show(item)}): "
        f"precision {show(item[10:])} is not accepted ({RULES['precision']})"]
    assert not (tmp_path / "m.md").exists()


def _shipped_items() -> list[Any]:
    files = sorted((ROOT / "conformance").glob("cases*.toml"))
    assert len(files) >= 4
    return [item for f in files for item in load_cases(f).items()]


def test_every_item_of_the_shipped_case_files_is_accepted() -> None:
    """What the suite itself writes reads back: every item of every shipped case file, in
    every precision."""
    for item in _shipped_items():
        for precision in PRECISIONS:
            data = outcome() | {"id": item.id, "model": item.model, "case": item.case.name,
                                "resolution": str(item.resolution), "precision": precision}
            assert Outcome.from_json(data, "r.json").precision == precision


names = {
    "model": st.from_regex(_MODEL, fullmatch=True),
    "case": st.from_regex(_CASE, fullmatch=True),
    "resolution": st.from_regex(_RESOLUTION, fullmatch=True),
    "precision": st.from_regex(_PRECISION, fullmatch=True),
}


@given(st.fixed_dictionaries(names))
def test_any_name_of_the_patterns_reads_back(fields: dict[str, str]) -> None:
    data = outcome() | fields
    read = Outcome.from_json(data, "r.json")
    assert Outcome.from_json(read.to_json(), "r.json") == read
    assert {k: getattr(read, k) for k in fields} == fields


@given(st.sampled_from(sorted(names)), st.text(max_size=80))
def test_any_other_text_is_refused(key: str, value: str) -> None:
    pattern = {"model": _MODEL, "case": _CASE, "resolution": _RESOLUTION,
               "precision": _PRECISION}[key]
    data = outcome() | {key: value}
    if value and pattern.fullmatch(value):
        assert getattr(Outcome.from_json(data, "r.json"), key) == value
        return
    with pytest.raises(ConformanceInputError) as info:
        Outcome.from_json(data, "r.json", 0)
    message = str(info.value)
    assert f"): {key} " in message and "\n" not in message and len(message) < 400
