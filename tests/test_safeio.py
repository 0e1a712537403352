"""conformance.safeio: the one reader of files the suite does not control."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance import safeio
from conformance.errors import CaseFileError, ConformanceInputError, OutputError
from tests.limits import time_limit


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "\x1b" not in text, text
    return text


# -- what is a readable file -------------------------------------------------------------


def test_reads_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_bytes(b'{"a": 1}')
    assert safeio.read_bytes(path, "JSON file", 100) == b'{"a": 1}'
    assert safeio.load_json(path, "JSON file", 100) == {"a": 1}


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "cases.toml"
    os.mkfifo(fifo)
    with time_limit(5), pytest.raises(ConformanceInputError, match="FIFO") as info:
        safeio.read_text(fifo, "case file", safeio.CASES_LIMIT)
    assert str(fifo) in one_line(info.value)


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda tmp: tmp, "a directory"),
        (lambda tmp: Path(os.devnull), "a character device"),
        (lambda tmp: _symlink(tmp / "zero", "/dev/zero"), "a character device"),
    ],
)
def test_non_regular_files_are_refused(tmp_path: Path, make, what) -> None:
    path = make(tmp_path)
    with time_limit(5), pytest.raises(ConformanceInputError, match=what) as info:
        safeio.read_bytes(path, "config.json", safeio.CONFIG_LIMIT)
    assert str(path) in one_line(info.value)


def _symlink(link: Path, target: str) -> Path:
    link.symlink_to(target)
    return link


def test_socket_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s"
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(path))
        with time_limit(5), pytest.raises(ConformanceInputError, match="a socket"):
            safeio.read_bytes(path, "manifest", safeio.MANIFEST_LIMIT)
    finally:
        sock.close()


def test_size_cap_is_checked_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.toml"
    with open(path, "wb") as fh:  # sparse: 10 GiB of nothing, read would take minutes
        fh.truncate(10 * 2**30)
    with time_limit(5), pytest.raises(ConformanceInputError, match="read up to 64 KiB") as info:
        safeio.read_bytes(path, "tolerance file", safeio.SETTINGS_LIMIT)
    assert "tolerance file is 10 GiB" in one_line(info.value)


def test_missing_unreadable_and_odd_paths(tmp_path: Path) -> None:
    with pytest.raises(ConformanceInputError, match="no such file"):
        safeio.read_bytes(tmp_path / "absent", "case file", 10)
    with pytest.raises(ConformanceInputError, match="NUL"):
        safeio.read_bytes("a\x00b", "case file", 10)
    with pytest.raises(ConformanceInputError, match="empty path"):
        safeio.read_bytes("", "case file", 10)
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(ConformanceInputError, match="cannot read case file"):
        safeio.read_bytes(loop, "case file", 10)


def test_error_class_is_the_callers(tmp_path: Path) -> None:
    with pytest.raises(CaseFileError):
        safeio.load_toml(tmp_path / "absent", "case file", 10, error=CaseFileError)


def test_text_is_strict_utf8_without_bom(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_bytes(b"a = 1\n# \xc3\x28\n")
    with pytest.raises(ConformanceInputError, match=r"not UTF-8 text \(byte 8, line 2\)"):
        safeio.read_text(path, "case file", 100)
    path.write_bytes(b"\xef\xbb\xbfa = 1\n")
    with pytest.raises(ConformanceInputError, match="byte-order mark"):
        safeio.read_text(path, "case file", 100)


# -- JSON ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": 1, "a": 2}', "key a: appears twice"),
        ('{"a": NaN}', "NaN is not JSON"),
        ('{"a": -Infinity}', "-Infinity is not JSON"),
        ('{"a": 1e999}', "out of range for a float"),
        ('{"a": ' + "9" * 31 + "}", "an integer of 31 digits"),
        ('{"a": ' + "9" * 100_000 + "}", "an integer of 100000 digits"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("[" * 70 + "]" * 70, "nested deeper than 64 levels"),
        ('{"a": "\\ud800"}', "lone surrogate"),
        ('{"\\udfff": 1}', "lone surrogate"),
        ("{broken", "not valid JSON: Expecting property name"),
        ("", "not valid JSON"),
    ],
)
def test_json_refusals(text: str, message: str) -> None:
    with time_limit(10), pytest.raises(ConformanceInputError, match=message) as info:
        safeio.loads_json(text.encode(), "f.json")
    assert one_line(info.value).startswith("f.json: ")


def test_json_object_file(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text("[1]")
    with pytest.raises(ConformanceInputError, match="must hold a JSON object, not an array"):
        safeio.load_json_object(path, "config.json", 100)


@given(st.binary(max_size=300))
def test_load_json_raises_only_input_errors_on_any_bytes(data: bytes) -> None:
    try:
        value = safeio.loads_json(data, "f.json")
    except ConformanceInputError as exc:
        one_line(exc)
    else:
        json.dumps(value, allow_nan=False)  # what was accepted is plain, finite JSON


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=4),
    max_leaves=20,
))
def test_load_json_round_trips_what_it_accepts(value) -> None:
    text = json.dumps(value)
    try:
        back = safeio.loads_json(text, "f.json")
    except ConformanceInputError:
        with pytest.raises(ConformanceInputError):  # from bytes (strings checked only where
            # an escape could make a lone surrogate): the same
            safeio.loads_json(text.encode(), "f.json")
        return  # NaN, infinities, integers over 30 digits, lone surrogates
    assert json.dumps(back) == text
    assert json.dumps(safeio.loads_json(text.encode(), "f.json")) == text


@pytest.mark.parametrize(("text", "value"), [
    ('{"a": 1e-400}', 0.0),  # a three-digit exponent takes the strict path: still accepted
    ('{"a": 1.5e+99}', 1.5e99),
    ('{"a": ' + "1" * 30 + "}", int("1" * 30)),
])
def test_numbers_near_the_limits_are_read(text, value) -> None:
    assert safeio.loads_json(text.encode(), "f.json") == {"a": value}


def test_a_refusal_names_the_key_path() -> None:
    deep = '{"top": {"list": [' + "[" * 70 + "]" * 70 + "]}}"
    with pytest.raises(ConformanceInputError, match=r"key top\.list\[0\](\[0\])+"):
        safeio.loads_json(deep.encode(), "f.json")
    with pytest.raises(ConformanceInputError, match=r"key x\.y\[1\]: a string holds a lone"):
        safeio.loads_json(b'{"x": {"y": ["ok", "\\udc00"]}}', "f.json")


# -- TOML ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a" + ".a" * 100_000 + " = 1\n", "line 1: a dotted key of more than 64 parts"),
        ('"a"' + ' . "b"' * 1000 + " = 1\n", "dotted key of more than 64 parts"),
        ("[" + "a." * 1000 + "a]\n", "dotted key of more than 64 parts"),
        ("x = {" + "a." * 1000 + "a = 1}\n", "dotted key of more than 64 parts"),
        ("a = " + "[" * 50_000 + "]" * 50_000 + "\n", "nested too deeply"),
        (".".join(["k"] * 20) + " = 1\n", "nested deeper than 16 levels"),
        ("x = [" + "1," * 60_000 + "]\n", "more than 50000 keys and array items"),
        ("a = 9223372036854775808\n", "key 'a': 9223372036854775808 is outside the 64-bit"),
        ("[t]\nb = -9223372036854775809\n", "key 't.b'"),
        ("a = 1\nseed = " + "7" * 5000 + "\n", "line 2, key 'seed': an integer with thousands"),
        ('"\\u001b" = 1\n', None),  # a key with ESC parses: callers name it escaped
        ("a = = 1", "invalid TOML"),
    ],
)
def test_toml_refusals(text: str, message: str | None) -> None:
    with time_limit(10):
        if message is None:
            assert safeio.loads_toml(text, "f.toml") == {"\x1b": 1}
            return
        with pytest.raises(ConformanceInputError, match=message) as info:
            safeio.loads_toml(text, "f.toml")
    assert one_line(info.value).startswith("f.toml: ")


def test_dotted_key_scan_is_linear_on_adversarial_text() -> None:
    texts = [
        "a" * 250_000,
        '"' * 250_000,
        "a." * 63 + "b " * 100_000,
        ("a." * 63 + "b\n") * 1900,
        '"\\"".' * 60_000,
    ]
    with time_limit(10):
        for text in texts:
            with contextlib.suppress(ConformanceInputError):
                safeio.loads_toml(text, "f.toml")


@given(st.text(max_size=200))
def test_load_toml_raises_only_input_errors_on_any_text(text: str) -> None:
    try:
        safeio.loads_toml(text, "f.toml")
    except ConformanceInputError as exc:
        one_line(exc)


def test_show_cuts_long_values() -> None:
    assert len(safeio.show("x" * 10_000)) <= 60
    assert safeio.show("\x1b") == "'\\x1b'"


def test_regular_file_problem_and_is_within(tmp_path: Path) -> None:
    assert safeio.regular_file_problem(tmp_path) == "it is a directory, not a regular file"
    assert safeio.regular_file_problem(tmp_path / "x") == "no such file"
    (tmp_path / "f").write_text("x")
    assert safeio.regular_file_problem(tmp_path / "f") is None
    (tmp_path / "out").symlink_to("/etc")
    assert not safeio.is_within(tmp_path / "out" / "passwd", tmp_path)
    assert safeio.is_within(tmp_path / "f", tmp_path)


# -- writing to what is not a regular file -----------------------------------------------------
def test_write_atomic_streams_into_a_device_and_never_replaces_it() -> None:
    """``--results /dev/null``: written in place; a rename over it would replace the machine's
    /dev/null with a regular file (the process runs as root on CI machines)."""
    from conformance.safeio import writable_problem, write_atomic

    assert writable_problem(os.devnull) is None
    write_atomic(os.devnull, b"{}\n", kind="results file")
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    assert not [p for p in Path(os.devnull).parent.glob(".null.*.tmp")]


def test_write_atomic_streams_into_a_fifo_with_a_reader(tmp_path: Path) -> None:
    import threading

    from conformance.safeio import write_atomic

    fifo = tmp_path / "out"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    for _ in range(200):  # the writer refuses a FIFO nobody reads: wait for the reader
        try:
            write_atomic(fifo, b"x" * 100_000, kind="report")
            break
        except OutputError:
            time.sleep(0.01)
    reader.join(5)
    assert got == [b"x" * 100_000] and stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_write_atomic_refuses_a_fifo_without_reader_and_a_socket(tmp_path: Path) -> None:
    from conformance.safeio import write_atomic

    fifo = tmp_path / "out"
    os.mkfifo(fifo)
    with time_limit(5), pytest.raises(OutputError, match=r"out: cannot write report: No such "
                                      "device or address"):
        write_atomic(fifo, b"x", kind="report")
    sock_path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        with pytest.raises(OutputError, match=r"cannot write report: it is a socket; expected a "
                           r"file path \(or a character device or FIFO to stream it to\)"):
            write_atomic(sock_path, b"x", kind="report")
    assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)
