"""Resolutions in case files (and ``--resolution``): a side that is refused is named.

``"64x<5000 digits>"`` says the height has 5000 digits; an out-of-range width in a case
file names the file, the case, the key and the side; what is accepted is in every message.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.cases import Resolution, load_cases
from conformance.errors import CaseFileError

ACCEPTED = "write WIDTHxHEIGHT with sides of 1 to 99999 pixels in digits 0-9, e.g. 64x64"
CASE = """schema_version = 1
[axes]
resolutions = ["64x64"]
precisions = ["fp32"]
[cases.a]
model = "tiny-sd"
prompt = "p"
seed = 1
steps = 2
scheduler = "euler"
guidance_scale = 4.0
"""


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("64x" + "9" * 5000, "the height has 5000 digits"),
        ("100000x64", "the width has 6 digits"),
        ("0x64", "the width is 0"),
        ("64x00", "the height is 0"),
        ("x64", "the width is missing"),
        ("64x", "the height is missing"),
        ("\u0666\u0664x64", "the width '\u0666\u0664' is not written in digits 0-9"),
        ("64x+64", "the height '+64' is not written in digits 0-9"),
    ],
)
def test_a_refused_side_is_named(text: str, why: str) -> None:
    with pytest.raises(ValueError) as info:
        Resolution.parse(text)
    message = str(info.value)
    assert message.endswith(f" is not a resolution: {why}; {ACCEPTED}")
    assert len(message) < 250


@pytest.mark.parametrize("text", ["64*64", "64x64x64", "", "6464"])
def test_text_without_one_x_is_not_a_resolution(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f" is not a resolution; {ACCEPTED}")):
        Resolution.parse(text)


def test_a_value_that_is_not_text_is_not_a_resolution() -> None:
    with pytest.raises(ValueError, match=re.escape(f"64 is not a resolution; {ACCEPTED}")):
        Resolution.parse(64)  # type: ignore[arg-type]


@given(st.integers(1, 99999), st.integers(1, 99999))
def test_every_size_in_range_reads_back(width: int, height: int) -> None:
    assert Resolution.parse(f"{width}x{height}") == Resolution(width, height)
    assert Resolution.parse(f" {width}x{height} ") == Resolution(width, height)


@given(st.sampled_from(["width", "height"]), st.integers(100_000, 10**60), st.integers(1, 99999))
def test_every_side_too_long_is_named(side: str, big: int, other: int) -> None:
    text = f"{big}x{other}" if side == "width" else f"{other}x{big}"
    with pytest.raises(ValueError, match=f": the {side} has {len(str(big))} digits; "):
        Resolution.parse(text)


@given(st.text(max_size=40))
def test_any_text_is_a_resolution_or_one_line_saying_what_is_accepted(text: str) -> None:
    try:
        res = Resolution.parse(text)
    except ValueError as exc:
        message = str(exc)
        assert message.endswith(ACCEPTED) and "\n" not in message and len(message) < 300
    else:
        assert Resolution.parse(str(res)) == res and 1 <= min(res.width, res.height)


@pytest.mark.parametrize(
    ("resolution", "where", "message"),
    [
        ("64x" + "7" * 5000, "cases['a'].resolutions[0]: ", "the height has 5000 digits"),
        ("4096x64", "cases['a'].resolutions: ",
         "4096x64: width 4096 is outside 32..256, the range tiny-sd "
         "accepts"),
        ("0x64", "axes.resolutions[0]: ", "the width is 0"),
    ],
)
def test_a_case_file_names_the_file_the_case_the_key_and_the_side(
        tmp_path: Path, resolution: str, where: str, message: str) -> None:
    path = tmp_path / "cases.toml"
    if where.startswith("axes"):
        path.write_text(CASE.replace('["64x64"]', f'["{resolution}"]'))
    else:
        path.write_text(CASE + f'resolutions = ["{resolution}"]\n')
    with pytest.raises(CaseFileError) as info:
        load_cases(path)
    text = str(info.value)
    assert text.startswith(f"{path}: case file: {where}")
    assert message in text and len(text) - len(str(path)) < 240  # bounded, whatever the path
