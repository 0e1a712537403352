"""The matrix command against hostile input: results files and golden manifests of the wrong
shape at any depth, text that tries to forge report lines, file names that are not UTF-8,
and images that would make the HTML page unbounded."""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conformance import golden as golden_module
from conformance.errors import ConformanceInputError
from conformance.report import command
from conformance.report import results as results_module
from conformance.report.fidelity import fidelity_markdown
from conformance.report.matrix import build_matrix, load_golden, load_run
from conformance.report.render import render_json, render_markdown
from conformance.report.render_html import (
    LeftOut,
    PageImages,
    embedded_size,
    page_image_paths,
    render_html,
)
from conformance.report.safe_text import md_inline, visible
from tests.runs import summary_of

ROOT = Path(__file__).resolve().parents[2]
REF = "cpu-default"
ESC = "\x1b"
#: Characters no output may hold raw: ESC, CSI (8-bit), BEL, CR, bidi overrides / isolates,
#: line separator.
FORBIDDEN = re.compile("[\x1b\x9b\x07\r\u202a-\u202e\u2066-\u2069\u2028\u2029]")
#: An error message of the corpus prints at most this many characters.
ERROR_BOUND = 3200


def metrics(identical: bool = False) -> dict[str, Any]:
    return {"identical": identical, "mae": 0.0 if identical else 0.25, "max_abs": 0,
            "psnr": None if identical else 44.0, "ssim": 1.0 if identical else 0.998,
            "phash_distance": 0, "dhash_distance": 0}


def outcome(item: str = "tiny-sd/red-circle/64x64/fp32", **fields: Any) -> dict[str, Any]:
    model, case, res, prec = item.split("/")
    out: dict[str, Any] = {
        "id": item, "check": "reference", "model": model, "case": case, "resolution": res,
        "precision": prec, "hardware_class": "cpu-avx2", "status": "passed",
        "tier": "perceptual", "golden_class": REF, "metrics": metrics(), "seconds": 0.5,
        "first_divergent_step": None, "message": "", "artifacts": {}, "reproduce": "pytest x",
        "step_deltas": [{"step": 0, "equal": True, "mean_delta": 0.0, "std_delta": 0.0}],
        "by_class": {}, "generate_seconds": 0.4, "peak_memory_mb": 512.0, "variant": None,
    }
    out.update(fields)
    return out


def document(outcomes: list[Any] | None = None, **top: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema_version": 2, "hardware_class": "cpu-avx2", "label": "cpu-avx2",
        "identity": None, "fingerprint": {"device_name": "CPU", "torch": "2.13.0"},
        "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:00Z",
        "stats": {}, "outcomes": [outcome()] if outcomes is None else outcomes,
    }
    doc["summary"] = summary_of(doc["outcomes"])
    doc.update(top)
    return doc


def write(path: Path, content: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_text(json.dumps(content), encoding="utf-8")
    return path


def png(colour: tuple[int, int, int], size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def noise_png(seed: int, size: int) -> bytes:
    buf = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def run(args: list[str], capsys) -> tuple[int, str, str]:
    code = command.main(["matrix", *args])
    out, err = capsys.readouterr()
    return code, out, err


def nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


def with_outcome_text(text: str) -> str:
    """A results file's JSON with ``text`` as the raw JSON of its one outcome's metrics."""
    doc = json.dumps(document([outcome(metrics="@@")]))
    return doc.replace('"@@"', text)


# -- the corpus: results files -----------------------------------------------------------------
# (name, content: a document, raw JSON text or bytes, substrings the one-line error must hold)
BIG = "9" * 5000
RESULTS_CORPUS: list[tuple[str, Any, tuple[str, ...]]] = [
    ("outcomes-a-dict", document(outcomes={"a": 1}),
     ("outcomes must be a list of outcome objects, not an object",)),
    ("outcomes-missing", {k: v for k, v in document().items() if k != "outcomes"},
     ("malformed outcomes: key outcomes is missing",)),
    ("outcome-a-number", document([3]), ("outcomes[0]", "must be an object")),
    ("outcome-a-list", document([outcome(), ["x"]]), ("outcomes[1]", "must be an object")),
    ("outcome-unknown-key", document([outcome(colour="red")]), ("unknown key colour",)),
    ("outcome-missing-key", document([{k: v for k, v in outcome().items() if k != "seconds"}]),
     ("key seconds is missing",)),
    ("metrics-a-list", document([outcome(metrics=[1, 2])]),
     ("outcome 0", "metrics must be an object or null, not a list")),
    ("metrics-value-an-object", document([outcome(metrics=metrics() | {"ssim": {"a": 1}})]),
     ("metrics.ssim must be a number or null",)),
    ("step-deltas-of-strings", document([outcome(step_deltas=["a", "b"])]),
     ("step_deltas[0] must be", "not a string")),
    ("step-deltas-an-object", document([outcome(step_deltas={"0": 1})]),
     ("step_deltas must be a list or null",)),
    ("step-deltas-step-a-bool", document([outcome(step_deltas=[
        {"step": True, "equal": True, "mean_delta": 0, "std_delta": 0}])]), ("step_deltas[0]",)),
    ("step-deltas-step-past-64-bits", document([outcome(step_deltas=[
        {"step": 10**20, "equal": True, "mean_delta": 0, "std_delta": 0}])]),
     ("step_deltas[0]",)),
    ("by-class-value-a-number", document([outcome(by_class={"cpu-x": 3})]),
     ("by_class['cpu-x'] must be an object",)),
    ("by-class-value-a-list", document([outcome(by_class={"cpu-x": [metrics()]})]),
     ("by_class['cpu-x'] must be an object, not a list",)),
    ("by-class-value-a-string", document([outcome(by_class={"cpu-x": "fine"})]),
     ("by_class['cpu-x'] must be an object",)),
    ("by-class-deep-field", document([outcome(by_class={"cpu-x": metrics() | {"mae": [1]}})]),
     ("by_class['cpu-x'].mae must be a number or null",)),
    ("by-class-an-array", document([outcome(by_class=[1])]), ("by_class must be an object",)),
    ("huge-int-seconds", with_outcome_text("null").replace('"seconds": 0.5', f'"seconds": {BIG}'),
     ("key outcomes[0].seconds", "an integer of 5000 digits")),
    ("huge-int-in-stats", json.dumps(document()).replace('"stats": {}', f'"stats": {{"n": {BIG}}}'),
     ("key stats.n", "an integer of 5000 digits")),
    ("int-past-64-bits", document([outcome(first_divergent_step=10**25)]),
     ("first_divergent_step must be an integer or null",)),
    ("long-float", with_outcome_text("null").replace('"seconds": 0.5',
                                                      '"seconds": 0.' + "1" * 500),
     ("key outcomes[0].seconds", "a number written with 502 characters")),
    ("nan-as-class", json.dumps(document()).replace('"hardware_class": "cpu-avx2", "label"',
                                                     '"hardware_class": NaN, "label"'),
     ("hardware_class must be a non-empty string", "not a number (nan)")),
    ("nan-as-step", json.dumps(document([outcome(first_divergent_step=math.nan)])),
     ("first_divergent_step must be an integer or null",)),
    ("infinity-as-step-index", json.dumps(document([outcome(step_deltas=[
        {"step": math.inf, "equal": True, "mean_delta": 0, "std_delta": 0}])])),
     ("step_deltas[0]",)),
    ("nested-10000-at-top", nested(10_000), ("nested too deeply", "key [0][0]")),
    ("nested-10000-in-metrics", with_outcome_text(nested(10_000)),
     ("nested too deeply", "key outcomes[0].metrics[0]")),
    ("nested-100-in-fingerprint", json.dumps(document()).replace(
        '"fingerprint": {', '"fingerprint": {"deep": ' + nested(100) + ", "),
     ("key fingerprint.deep[0]", "nested too deeply")),
    ("nested-100-in-identity", json.dumps(document(identity={
        "digest": "abcdef123456", "features": {"x": "@@"}})).replace('"@@"', nested(100)),
     ("key identity.features.x[0]", "nested too deeply")),
    ("duplicate-key", json.dumps(document()).replace('"status": "passed"',
                                                      '"status": "passed", "status": "failed"'),
     ("key outcomes[0].status", "appears twice")),
    ("schema-version-true", document(schema_version=True), ("not a results file",)),
    ("schema-version-huge", json.dumps(document()).replace('"schema_version": 2',
                                                            f'"schema_version": {BIG}'),
     ("key schema_version", "5000 digits")),
    ("top-level-a-list", [document()], ("not a results file", "the top level is a list")),
    ("top-level-null", "null", ("not a results file",)),
    ("truncated", json.dumps(document())[:-40], ("not valid JSON", "line 1")),
    ("empty", "", ("not valid JSON",)),
    ("byte-order-mark", b"\xef\xbb\xbf" + json.dumps(document()).encode(),
     ("byte-order mark",)),
    ("not-utf8", b'{"schema_version": 2, "label": "\xff\xfe"}', ("not UTF-8 text",)),
    ("error-a-list", document([outcome(status="error", error=["boom"])]),
     ("error must be an object or null",)),
    ("error-message-an-object", document([outcome(status="error", error={"message": {}})]),
     ("error.message must be a string or null",)),
    ("artifacts-a-list", document([outcome(artifacts=["a.png"])]),
     ("artifacts must be an object mapping image names",)),
    ("artifact-path-a-number", document([outcome(artifacts={"actual": 3})]),
     ("artifacts.actual",)),
    ("pixel-sha-with-newline", document([outcome(pixel_sha256="abcdef123456\n")]),
     ("pixel_sha256 must be a string of lower-case hex digits",)),
    ("identity-digest-with-newline", document(identity={"digest": "abcdef123456\n"}),
     ("identity.digest must be a string of lower-case hex digits",)),
    ("label-an-object", document(label={"a": 1}), ("label must be a non-empty string",)),
    ("fingerprint-a-list", document(fingerprint=[1]), ("fingerprint must be an object",)),
    ("tier-not-a-tier", document([outcome(tier="\x1b[2J\nFAKE")]),
     ("tier '\\x1b[2J\\nFAKE' is not one of close, differ, exact, fidelity, perceptual",)),
    ("artifact-of-another-name", document([outcome(artifacts={"colour": "a.png"})]),
     ("unknown key artifacts.colour (accepted: actual, golden, diff, flip)",)),
    ("error-of-another-key", document([outcome(status="error", error={"colour": "red"})]),
     ("unknown key error.colour (accepted: type, message",)),
    ("check-a-megabyte-long", document([outcome(check="x" * 1_000_000)]),
     ("check 'xxxx", "chars) is not one of")),
    ("key-a-megabyte-long", document([outcome() | {"k" * 1_000_000: 1}]),
     ("unknown key 'kkkk",)),
]


def _unchanged(path: Path) -> tuple[bytes, int]:
    st = path.stat()
    return path.read_bytes(), st.st_mtime_ns


def _assert_refused(code: int, out: str, err: str, path: Path, texts: tuple[str, ...]) -> None:
    assert code in (1, 2), err
    assert out == ""
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.endswith("\n"), err[:500]
    assert len(err) < ERROR_BOUND, len(err)
    assert err.startswith(f"conformance matrix: error: {visible(str(path))}: "), err[:300]
    for text in texts:
        assert text in err, (text, err[:600])
    assert not FORBIDDEN.search(err)


@pytest.mark.parametrize(
    ("name", "content", "texts"), RESULTS_CORPUS, ids=[c[0] for c in RESULTS_CORPUS]
)
def test_hostile_results_file(tmp_path, capsys, name, content, texts):
    path = write(tmp_path / f"{name}.json", content)
    before = _unchanged(path)
    out_dir = tmp_path / "out"
    code, out, err = run([str(path), "--markdown", str(out_dir / "m.md"), "--json",
                          str(out_dir / "m.json"), "--html", str(out_dir / "m.html")], capsys)
    _assert_refused(code, out, err, path, texts)
    assert _unchanged(path) == before
    assert not out_dir.exists()  # nothing half-written


def test_the_corpus_is_large_and_covers_every_kind():
    assert len(RESULTS_CORPUS) + len(FILE_CORPUS) + len(GOLDEN_CORPUS) >= 20
    assert len({c[0] for c in RESULTS_CORPUS}) == len(RESULTS_CORPUS)


# -- the corpus: files that are not what they seem --------------------------------------------
def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _device(path: Path) -> None:
    path.symlink_to("/dev/zero")


def _oversize(path: Path) -> None:
    write(path, document())


FILE_CORPUS: list[tuple[str, Any, tuple[str, ...]]] = [
    ("fifo", _fifo, ("a FIFO (named pipe)", "expected a regular file")),
    ("device", _device, ("a character device",)),
    ("oversize", _oversize, ("files of this kind are read up to",)),
    ("absent", lambda path: None, ("cannot read results file: no such file",)),
]


@pytest.mark.parametrize(("name", "make", "texts"), FILE_CORPUS, ids=[c[0] for c in FILE_CORPUS])
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_results_file_that_is_not_a_regular_file(tmp_path, capsys, monkeypatch, name, make,
                                                 texts):
    path = tmp_path / f"{name}.json"
    make(path)
    if name == "oversize":
        monkeypatch.setattr(results_module, "RESULTS_LIMIT", 100)
    code, out, err = run([str(path), "--markdown", "-"], capsys)  # a FIFO would block here
    _assert_refused(code, out, err, path, texts)


# -- the corpus: golden roots ------------------------------------------------------------------
def record_set(root: Path, cls: str = "cpu-amd-default", case: str = "a") -> Path:
    """A one-image golden set recorded as the suite records one; returns its manifest."""
    import inspect

    from conformance.cases import Case, Item, Resolution
    from conformance.golden import GoldenStore
    from conformance.identity import Identity
    from conformance.trace import StepTrace

    store = GoldenStore(root)
    extra: dict[str, Any] = {}
    if "identity" in inspect.signature(store.record).parameters:
        extra["identity"] = Identity(
            hardware_class=cls, features={"vendor": "amd", "model_name": "AMD EPYC"},
            stack={"torch": "2.13.0"}, probes={"p": "0" * 16},
            precision_digests={"fp32": "ab" * 6}, battery_version=1,
        )
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    item = Item(Case(case, "tiny-sd", "p", "", 1, 3, "euler", 4.0, (Resolution(16, 16),),
                     ("fp32",)), Resolution(16, 16), "fp32")
    trace = [StepTrace(s, 1.0, f"{s:016x}", 0.1, 1.0, -1.0, 1.0) for s in range(3)]
    store.record(item, cls, image, trace, {"device_name": "AMD EPYC", "threads": 1},
                 "2026-01-01T00:00:00Z", "conformance run --record", **extra)
    return store.set_dir("tiny-sd", cls) / "manifest.json"


def _edit(manifest: Path, change) -> None:
    data = json.loads(manifest.read_text())
    text = change(data)
    manifest.write_text(text if isinstance(text, str) else json.dumps(data))


def _entry(data: dict[str, Any]) -> dict[str, Any]:
    return next(iter(data["entries"].values()))


GOLDEN_CORPUS: list[tuple[str, Any, tuple[str, ...]]] = [
    ("entries-a-list", lambda d: d.__setitem__("entries", [1]), ("entries",)),
    ("trace-of-strings", lambda d: _entry(d).__setitem__("trace", ["a", "b"]), ("trace",)),
    ("trace-step-missing", lambda d: _entry(d).__setitem__("trace", [{"x": 1}]), ("trace",)),
    ("identity-a-list", lambda d: d.__setitem__("identity", [1]), ("identity",)),
    ("fingerprint-deep", lambda d: json.dumps(d).replace(
        '"fingerprint": {', '"fingerprint": {"deep": ' + nested(100) + ", "),
     ("fingerprint",)),
    ("nested-10000", lambda d: nested(10_000), ("nested too deeply",)),
    ("huge-int", lambda d: json.dumps(d).replace('"width": 16', f'"width": {BIG}'), ()),
    ("oversize", lambda d: None, ("files of this kind are read up to",)),
]


@pytest.mark.parametrize(("name", "change", "texts"), GOLDEN_CORPUS,
                         ids=[c[0] for c in GOLDEN_CORPUS])
def test_hostile_golden_manifest(tmp_path, capsys, monkeypatch, name, change, texts):
    root = tmp_path / "golden"
    manifest = record_set(root)
    if name == "oversize":
        monkeypatch.setattr(golden_module, "MANIFEST_LIMIT", 100)
    else:
        _edit(manifest, change)
    before = _unchanged(manifest)
    code, out, err = run([str(root), "--markdown", "-"], capsys)
    _assert_refused(code, out, err, manifest, texts)
    assert _unchanged(manifest) == before


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_golden_image_that_is_a_fifo_is_an_error_cell_not_a_hang(tmp_path, capsys):
    root = tmp_path / "golden"
    record_set(root, "cpu-amd-default")
    other = record_set(root, "cpu-amd-avx2")
    # the other set's image differs (so it is compared) and is a FIFO
    data = json.loads(other.read_text())
    entry = _entry(data)
    entry["pixel_sha256"] = "f" * 64
    other.write_text(json.dumps(data))
    image = other.parent / entry["file"]
    image.unlink()
    os.mkfifo(image)
    code, out, err = run([str(root), "--markdown", "-"], capsys)
    assert code == 0, err
    assert "error" in out and "a FIFO" in out


# -- accepted oddities do not crash --------------------------------------------------------------
def test_odd_but_valid_values_render(tmp_path, capsys):
    outs = [
        # (a 5000-digit resolution or precision, digits of another script: refused, see
        # tests/test_records_names.py)
        outcome("m/c/64x64/fp32", status="failed", metrics=metrics() | {"ssim": math.nan},
                first_divergent_step=2**62, step_deltas=[
                    {"step": 2**62, "equal": False, "mean_delta": math.inf,
                     "std_delta": math.nan},
                    {"step": 2**63 - 1, "equal": False, "mean_delta": 1e308, "std_delta": 0}]),
        outcome("m/c/64x64/bf16", by_class={"cpu²": metrics(), "cpu-" + "7" * 3000: metrics()}),
    ]
    a = write(tmp_path / "a" / "results.json", document(outs, label="cpu²"))
    b = write(tmp_path / "b" / "results.json", document([outcome()], label="cpu-" + "9" * 900,
                                                        hardware_class="cpu-" + "9" * 900))
    out_dir = tmp_path / "out"
    code, _, err = run([str(a), str(b), "--markdown", str(out_dir / "m.md"), "--json",
                          str(out_dir / "m.json"), "--html", str(out_dir / "m.html")], capsys)
    assert code == 0, err
    json.loads((out_dir / "m.json").read_text())  # strict JSON: non-finite numbers are null


# -- safe text -----------------------------------------------------------------------------------
def test_visible_makes_every_kind_of_hidden_character_text():
    assert visible("a\x1b[31mred\x1b[0m") == "a\\x1b[31mred\\x1b[0m"  # CSI
    assert visible("\x1b]8;;https://evil\x07link\x1b]8;;\x07") == (
        "\\x1b]8;;https://evil\\x07link\\x1b]8;;\\x07"  # OSC 8 hyperlink
    )
    assert visible("\x9b2J") == "\\x9b2J"  # 8-bit CSI
    assert visible("one\ntwo\rthree\tfour") == "one\\ntwo\\rthree\\tfour"
    assert visible("one\ntwo\tx\ry", newlines=True) == "one\ntwo\tx\\ry"
    assert visible("abc\u202edcba\u2066x\u2069") == "abc\\u202edcba\\u2066x\\u2069"
    assert visible("a\u2028b\u200bc\ufeffd") == "a\\u2028b\\u200bc\\ufeffd"
    assert visible("x\U000e0041") == "x\\U000e0041"  # a tag character
    assert visible(os.fsdecode(b"r\xff.json")) == "r\\xff.json"  # surrogateescape
    assert visible("\ud800") == "\\ud800"
    assert visible("plain text, ünïcödé and emoji 😀") == "plain text, ünïcödé and emoji 😀"
    assert visible("x" * 100, limit=40).endswith("...(100 chars)")
    visible(os.fsdecode(b"\xff\x1b")).encode("utf-8", "strict")  # encodes


def test_md_inline_cannot_break_a_table_or_make_links():
    assert md_inline("a|b") == "a\\|b"
    assert md_inline("[x](https://evil)") == "\\[x\\](https\\://evil)"
    assert md_inline("<img src=x onerror=alert(1)>") == "\\<img src=x onerror=alert(1)\\>"
    assert md_inline("`code` *em* _em_ ~~del~~") == "\\`code\\` \\*em\\* \\_em\\_ \\~\\~del\\~\\~"
    assert md_inline("see www.evil.example or http://evil.example") == (
        "see www\\.evil.example or http\\://evil.example"
    )
    assert md_inline("&#124; &lt;") == "&amp;\\#124; &amp;lt;"
    assert md_inline("# title") == "\\# title"
    assert md_inline("- item") == "\\- item" and md_inline("1. item") == "1\\. item"
    assert md_inline("line\n| forged | row |") == "line\\\\n\\| forged \\| row \\|"
    assert md_inline("@someone #12 $x$") == "\\@someone \\#12 \\$x\\$"


HOSTILE_TEXTS = {
    "ansi": "\x1b[2J\x1b[31mFAKE PASS\x1b[0m",
    "osc": "\x1b]0;title\x07\x1b]8;;https://evil\x07click\x1b]8;;\x07",
    "newline": "x\n| forged | row | here |\n\n## Forged heading",
    "bidi": "cpu-\u202etxt.exe\u202c",
    "markdown": "[click](https://evil.example) <img src=x> `code` | pipe www.evil.example",
    "cr": "ok\rFORGED",
}


def hostile_matrix_inputs(tmp_path: Path) -> list[Path]:
    paths = []
    for n, (kind, text) in enumerate(HOSTILE_TEXTS.items()):
        outs = [
            outcome(status="failed", message=text, first_divergent_step=1,
                    reproduce=text, golden_class=REF),
            outcome("tiny-sd/red-circle/64x64/bf16", status="error", metrics=None,
                    message=text, error={"type": text, "message": text, "device": text,
                                         "precision": text}),
            outcome("tiny-sd/red-circle/64x64/fp16", status="skipped", metrics=None,
                    message=text, by_class={text: metrics(), "x": {"error": text}}),
        ]
        fingerprint = {"device_name": text, "torch": text}
        paths.append(write(tmp_path / f"{n}-{kind}" / "results.json",
                           document(outs, label=f"{kind} {text}", hardware_class=f"cls-{kind}",
                                    fingerprint=fingerprint)))
    return paths


def test_hostile_text_cannot_forge_markdown_or_terminal_lines(tmp_path, capsys):
    paths = hostile_matrix_inputs(tmp_path)
    code, out, err = run([*map(str, paths), "--markdown", "-", "--title",
                          "Title \x1b[2J\n# forged"], capsys)
    assert code == 0, err
    assert not FORBIDDEN.search(out)
    lines = out.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("| item |"))
    table = []
    for ln in lines[header:]:
        if not ln.startswith("|"):
            break
        table.append(ln)
    assert len(table) == 2 + 3  # header, rule, three items
    for ln in table:  # escaped pipes do not split cells
        assert len(re.findall(r"(?<!\\)\|", ln)) == 2 + len(paths), ln
    assert not any(ln.startswith("## Forged") for ln in lines)
    assert sum(ln.startswith("## ") for ln in lines) == 1
    assert "](https://" not in out and not re.search(r"(?<!\\)<img", out)
    assert set(re.findall(r"(?<!\\)</?([a-z]+)", out)) == {"details", "summary"}
    assert "www.evil" not in out and "https://evil" not in out  # no bare autolinks
    assert "FAKE PASS" in out  # the text is there, shown, not executed
    assert "\\\\x1b\\[2J" in out  # ESC as text (backslash and bracket escaped for Markdown)


def test_hostile_text_in_html_and_json(tmp_path, capsys):
    paths = hostile_matrix_inputs(tmp_path)
    out_dir = tmp_path / "out"
    code, _, err = run([*map(str, paths), "--html", str(out_dir / "m.html"), "--json",
                        str(out_dir / "m.json")], capsys)
    assert code == 0, err
    page = (out_dir / "m.html").read_text(encoding="utf-8")
    assert not FORBIDDEN.search(page)
    assert "<img" not in page and "<script" not in page.lower()
    assert "\\x1b[2J" in page and "\\u202e" in page
    raw = (out_dir / "m.json").read_bytes()
    assert raw.isascii()  # every non-ASCII character, control and bidi escaped by JSON
    data = json.loads(raw)
    assert any(c["label"].startswith("ansi \x1b[2J") for c in data["columns"])  # data as is


def test_error_messages_are_one_safe_line(tmp_path, capsys):
    bad = write(tmp_path / "bad.json", document([outcome(status="x\x1b[2J\n\u202eforged")]))
    code, out, err = run([str(bad), "--markdown", "-"], capsys)
    _assert_refused(code, out, err, bad, ("status 'x\\x1b[2J\\n\\u202eforged' is not one of",))


def _run_cli(args: list[bytes], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, PYTHONIOENCODING="utf-8:strict", LC_ALL="C.UTF-8",
               OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable.encode(), b"-m", b"conformance.report.command", b"matrix", *args],
        cwd=cwd, env=env, capture_output=True, timeout=120, check=False,
    )


@pytest.mark.skipif(sys.platform == "win32", reason="file names of bytes are POSIX")
def test_undecodable_file_names_print_under_strict_utf8(tmp_path):
    folder = os.fsencode(tmp_path) + b"/run-\xff\xfe-\x1b[2J"
    os.mkdir(folder)
    good = folder + b"/results.json"
    with open(good, "w", encoding="utf-8") as fh:
        json.dump(document(), fh)
    bad = folder + b"/bad\xe9.json"
    with open(bad, "w", encoding="utf-8") as fh:
        fh.write("{not json")

    done = _run_cli([bad, b"--markdown", b"-"], tmp_path)
    assert done.returncode == 2, done.stderr
    err = done.stderr.decode("utf-8")  # strict: the output is UTF-8
    assert "Traceback" not in err and err.count("\n") == 1
    assert "run-\\xff\\xfe-\\x1b[2J/bad\\xe9.json: results file: not valid JSON" in err
    assert "\x1b" not in err

    done = _run_cli([good, b"--markdown", b"-"], tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode("utf-8")
    assert "run-\\\\xff\\\\xfe-\\\\x1b\\[2J" in out and "\x1b" not in out

    html = os.fsencode(tmp_path) + b"/m\xff.html"
    done = _run_cli([good, b"--html", html, b"--json", b"-"], tmp_path)
    assert done.returncode == 0, done.stderr
    json.loads(done.stdout)
    with open(html, encoding="utf-8") as fh:
        assert "run-\\xff\\xfe-\\x1b[2J" in fh.read()


def test_fidelity_table_escapes_its_names():
    rows = [{"model": "m|x\n# forged", "precision": "fp16`", "bits_per_weight": 16,
             "denoiser_bytes": None, "items": 1, "mae": 0.5, "psnr": math.inf, "ssim": 0.99,
             "phash_distance": 1.0}]
    text = fidelity_markdown(rows)
    assert text.count("\n") == 3
    assert "m\\|x\\\\n\\# forged" in text and "fp16\\`" in text


# -- bounded HTML ------------------------------------------------------------------------------
def _shared_image_results(tmp_path: Path, refs: int, image: bytes, name: str = "big.png"
                          ) -> Path:
    folder = tmp_path / "run"
    write(folder / "artifacts" / name, image)
    arts = {k: f"artifacts/{name}" for k in ("actual", "golden", "diff")}
    outs = [outcome(f"m/case-{i:04d}/64x64/fp32", status="failed", artifacts=arts)
            for i in range(refs)]
    return write(folder / "results.json", document(outs))


def test_one_image_named_by_a_thousand_outcomes_is_embedded_once(tmp_path, capsys):
    image = noise_png(0, 580)  # about 1 MB
    assert 0.9e6 < len(image) < 1.2e6
    results = _shared_image_results(tmp_path, 1000, image)
    page_file = tmp_path / "m.html"
    code, _, err = run([str(results), "--html", str(page_file)], capsys)
    assert code == 0, err
    page = page_file.read_text(encoding="utf-8")
    inputs = len(image) + results.stat().st_size
    assert page.count("data:image/png;base64,") == 1
    assert page.count('class="img im0"') == 3000
    assert len(page.encode()) < 3 * inputs  # was 2600x: 3000 copies of the image
    assert "left out" not in page


def test_images_past_the_budget_are_left_out_with_notes(tmp_path, capsys):
    folder = tmp_path / "run"
    images = {f"i{n}.png": noise_png(n, 64) for n in range(3)}  # about 12 kB each
    for name, data in images.items():
        write(folder / "artifacts" / name, data)
    outs = [
        outcome(f"m/case-{n}/64x64/fp32", status="failed",
                artifacts={"actual": f"artifacts/i{n}.png", "golden": "artifacts/i0.png"})
        for n in range(3)
    ]
    results = write(folder / "results.json", document(outs))
    cost = embedded_size(len(images["i0.png"]))
    budget_mb = (cost * 1.5) / 1e6  # room for one image
    page_file = tmp_path / "m.html"
    code, _, err = run([str(results), "--html", str(page_file), "--html-budget",
                        f"{budget_mb:.6f}"], capsys)
    assert code == 0, err
    page = page_file.read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 1  # i0, shared by every golden
    assert page.count("left out: past the page&#x27;s image budget of") == 2  # i1, i2: one each
    assert re.search(r"<strong>2 images left out: budget 0\.0\d+ MB</strong>", page)
    assert len(page.encode()) < 3 * cost + 200_000


def test_budget_zero_embeds_nothing_and_says_so(tmp_path, capsys):
    results = _shared_image_results(tmp_path, 5, png((255, 0, 0)))
    page_file = tmp_path / "m.html"
    code, _, err = run([str(results), "--html", str(page_file), "--html-budget", "0"], capsys)
    assert code == 0, err
    page = page_file.read_text(encoding="utf-8")
    assert "data:image/png" not in page
    assert "1 image left out: budget 0 MB" in page and "15 references" in page


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "lots", "1e9"])
def test_bad_budget_is_a_usage_error(tmp_path, capsys, value):
    results = write(tmp_path / "r.json", document())
    with pytest.raises(SystemExit) as info:
        command.main(["matrix", str(results), "--html", str(tmp_path / "m.html"),
                      "--html-budget", value])
    assert info.value.code == 2
    assert "--html-budget" in capsys.readouterr().err


def test_the_reader_stops_reading_when_the_budget_is_spent(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    names = []
    for n in range(5):
        write(folder / f"i{n}.png", noise_png(n, 32 + n))  # distinct sizes
        names.append(str(folder / f"i{n}.png"))
    write(folder / "copy.png", noise_png(0, 32))  # the bytes of i0
    names.append(str(folder / "copy.png"))
    read: list[str] = []
    real_read = command.read_bytes

    def counting(path, *args, **kwargs):
        read.append(str(path))
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(command, "read_bytes", counting)
    budget = embedded_size(os.path.getsize(names[0])) + 10
    got = command.read_images(names, [folder], budget=budget)
    assert isinstance(got[names[0]], bytes)
    assert got[names[-1]] is got[names[0]]  # equal bytes: one object, embedded once
    assert all(isinstance(got[n], LeftOut) for n in names[1:-1])
    assert read == [names[0], names[-1]]  # the others were never read


def test_page_images_dedupe_by_content_not_by_path():
    data = png((0, 0, 255))
    images = PageImages({"a.png": data, "b.png": bytes(data), "c.png": b"GIF89a"}, budget=None)
    figures = [images.figure(n, p) for n, p in (("x", "a.png"), ("y", "b.png"), ("z", "c.png"))]
    assert 'class="img im0"' in figures[0] and 'class="img im0"' in figures[1]
    assert "not a PNG file" in figures[2]
    assert images.style().count("data:image/png;base64,") == 1


def test_the_page_keeps_a_strict_policy(tmp_path, capsys):
    results = _shared_image_results(tmp_path, 2, png((0, 255, 0)))
    page_file = tmp_path / "m.html"
    assert run([str(results), "--html", str(page_file)], capsys)[0] == 0
    page = page_file.read_text(encoding="utf-8")
    policy = re.search(r'Content-Security-Policy" content="([^"]*)"', page)[1]
    assert policy.split("; ") == [
        "default-src 'none'", "img-src data:", "style-src 'unsafe-inline'", "base-uri 'none'",
        "form-action 'none'",
    ]
    assert "<script" not in page.lower() and "<img" not in page
    assert not re.search(r"url\(\s*(?!['\"]?data:image/png;base64,)", page)


def test_page_image_paths_follow_the_page(tmp_path):
    results = _shared_image_results(tmp_path, 3, png((1, 2, 3)))
    m = build_matrix([load_run(results)])
    assert page_image_paths(m) == [str(results.parent / "artifacts" / "big.png")]
    page = render_html(m, {}, budget=None)
    assert "image not found" in page


def test_golden_roots_alone_still_render(tmp_path, capsys):
    root = tmp_path / "golden"
    record_set(root, "cpu-amd-default")
    record_set(root, "cpu-amd-avx2")
    m = build_matrix([], golden=load_golden([root]))
    assert "cpu-amd-avx2" in render_markdown(m)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which(
    "google-chrome"
)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium, chromium-browser or google-chrome")
def test_a_shared_image_shows_in_every_panel_in_a_real_browser(tmp_path, capsys):
    results = _shared_image_results(tmp_path, 3, png((255, 0, 0), 64))
    page_file = tmp_path / "m.html"
    assert run([str(results), "--html", str(page_file)], capsys)[0] == 0
    assert page_file.read_text(encoding="utf-8").count("data:image/png;base64,") == 1
    for i in (0, 2):  # the first panel naming the image and a later one
        shot = tmp_path / f"panel{i}.png"
        profile = tmp_path / f"profile{i}"
        subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1280,900",
             "--hide-scrollbars", f"{page_file.as_uri()}#c{i}-0"],
            capture_output=True, timeout=90, check=False,
        )
        pixels = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
        red = (pixels[..., 0] > 240) & (pixels[..., 1] < 15) & (pixels[..., 2] < 15)
        # golden, actual and diff: the one red 64x64 image, shown 200 px wide, three times
        assert red.sum() > 3 * 150 * 150, (i, red.sum())


def test_an_output_never_overwrites_an_input(tmp_path, capsys):
    results = write(tmp_path / "r.json", document())
    before = _unchanged(results)
    code, out, err = run([str(results), "--json", str(results)], capsys)
    assert code == 2 and "is one of the input files" in err and out == ""
    assert _unchanged(results) == before


# -- any value at any place ----------------------------------------------------------------------
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**40), 10**40)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8)
    | st.sampled_from(["", "passed", "reference", "abcdef123456", "64x64", "\x1b[2J\n"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _rich_document() -> dict[str, Any]:
    return document(
        [
            outcome(status="failed", first_divergent_step=1, by_class={REF: metrics()},
                    artifacts={"actual": "artifacts/a.png"}, pixel_sha256="ab" * 32),
            outcome("m/c/64x64/bf16", status="error", metrics=None,
                    error={"type": "E", "message": "m", "device": "cpu", "precision": "bf16"}),
        ],
        identity={"digest": "abcdef123456", "class": "cpu-avx2",
                  "features": {"model_name": "x", "flags": ["a"]},
                  "precision_digests": {"fp32": "abc"}},
    )


RICH_PATHS = _paths(_rich_document())


@given(where=st.sampled_from(RICH_PATHS), value=JSON_VALUES, add_key=st.booleans())
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_value_anywhere_is_read_or_refused_in_one_line(tmp_path, where, value, add_key):
    doc = _rich_document()
    node: Any = doc
    for part in where[:-1]:
        node = node[part]
    if not where:
        doc = value
    elif add_key and isinstance(node, dict):
        node["extra key"] = value
    else:
        node[where[-1]] = value
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    try:
        m = build_matrix([load_run(path)])
    except ConformanceInputError as exc:
        text = str(command.safe_error(exc))
        assert "\n" not in text and len(text) < ERROR_BOUND
        assert text.startswith(str(path))
        return
    render_markdown(m)
    json.loads(render_json(m))
    render_html(m, {})


@pytest.fixture(scope="module")
def recorded_manifest(tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("golden")
    manifest = record_set(root)
    return root, manifest.read_text()


@given(value=JSON_VALUES, pick=st.integers(0, 10_000), add_key=st.booleans())
@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_value_anywhere_in_a_manifest_is_read_or_refused(recorded_manifest, value, pick,
                                                             add_key):
    root, text = recorded_manifest
    doc = json.loads(text)
    paths = _paths(doc)
    where = paths[pick % len(paths)]
    node: Any = doc
    for part in where[:-1]:
        node = node[part]
    if not where:
        doc = value
    elif add_key and isinstance(node, dict):
        node["extra key"] = value
    else:
        node[where[-1]] = value
    manifest = next(root.glob("*/*/manifest.json"))
    manifest.write_text(json.dumps(doc), encoding="utf-8")
    try:
        try:
            m = build_matrix([], golden=load_golden([root]))
        except ConformanceInputError as exc:
            assert "\n" not in str(command.safe_error(exc))
            return
        render_markdown(m)
        render_html(m, {})
    finally:
        manifest.write_text(text, encoding="utf-8")


def test_a_tolerance_file_that_cannot_be_read_is_refused_with_results_alone(tmp_path: Path,
                                                                          capsys) -> None:
    """``--tolerances`` judges golden columns; given with results files alone it is still
    read, so a wrong path is said, not ignored."""
    from conformance import cli

    results = tmp_path / "results.json"
    results.write_text("{}")
    assert cli.main(["matrix", str(results), "--json", "-", "--tolerances",
                     str(tmp_path / "nope.toml")]) == 2
    assert capsys.readouterr().err.endswith(f"{tmp_path / 'nope.toml'}: cannot read tolerance "
                                            "file: no such file\n")
