"""The conformance matrix: cell logic, identity columns, bit-identical groups, error cells,
golden-set columns, merging, ordering, renderers, the command, a browser."""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import math
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conformance.errors import ConformanceInputError
from conformance.lookup import predicts_same_bits
from conformance.records import StepDelta, to_builtins
from conformance.report import command
from conformance.report.matrix import (
    GOLDEN,
    RUN,
    CellState,
    Column,
    ItemKey,
    Matrix,
    bit_groups,
    build_matrix,
    disambiguate,
    item_key,
    legacy_key,
    load_golden,
    load_run,
    matrix_from_dict,
    precision_key,
)
from conformance.report.render import (
    cell_text,
    group_names,
    md_escape,
    render_json,
    render_markdown,
)
from conformance.report.render_html import page_image_paths, render_html, step_plot_svg
from conformance.report.safe_text import shortened
from tests.runs import summary_of

REF = "cpu-default"
IDENTICAL = {
    "identical": True, "mae": 0.0, "max_abs": 0, "psnr": None, "ssim": 1.0,
    "phash_distance": 0, "dhash_distance": 0,
}


def metrics(identical: bool = False, ssim: float = 0.998, phash: int = 2) -> dict[str, Any]:
    if identical:
        return dict(IDENTICAL)
    return {
        "identical": False, "mae": 0.25, "max_abs": 7, "psnr": 44.1, "ssim": ssim,
        "phash_distance": phash, "dhash_distance": 1,
    }


def steps(n: int = 6, first: int | None = None) -> list[dict[str, Any]]:
    return [
        {
            "step": s,
            "equal": first is None or s < first,
            "mean_delta": 0.0 if first is None or s < first else 0.01 * (s - first + 1),
            "std_delta": 0.0 if first is None or s < first else 0.02 * (s - first + 1),
        }
        for s in range(n)
    ]


def outcome(
    item: str = "tiny-sd/red-circle/64x64/fp32",
    check: str = "reference",
    status: str = "passed",
    cls: str = "cpu-avx2",
    **fields: Any,
) -> dict[str, Any]:
    model, case, res, prec = item.split("/")
    out: dict[str, Any] = {
        "id": item, "check": check, "model": model, "case": case, "resolution": res,
        "precision": prec, "hardware_class": cls, "status": status,
        "tier": "perceptual" if check == "reference" else "exact",
        "golden_class": REF if check == "reference" else cls,
        "metrics": metrics(), "seconds": 0.5, "first_divergent_step": None, "message": "",
        "artifacts": {}, "reproduce": f"pytest x[{item}]", "step_deltas": steps(),
        "by_class": {}, "generate_seconds": 0.4, "peak_memory_mb": 512.0, "variant": None,
    }
    out.update(fields)
    return out


def results(
    path: Path,
    cls: str,
    outcomes: list[dict[str, Any]],
    started_at: str = "2026-01-01T00:00:00Z",
    **top: Any,
) -> Path:
    doc = {
        "schema_version": 1, "hardware_class": cls, "label": cls,
        "fingerprint": {"torch": "2.13.0", "device_name": "CPU", "threads": 1},
        "started_at": started_at, "finished_at": started_at, "stats": {},
        "summary": summary_of(outcomes), "outcomes": outcomes,
    }
    doc.update(top)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def png(colour: tuple[int, int, int], size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def matrix_of(tmp_path: Path, *files: tuple[str, list[dict[str, Any]]]) -> Matrix:
    runs = [
        load_run(results(tmp_path / f"{i}-{cls}" / "results.json", cls, outs))
        for i, (cls, outs) in enumerate(files)
    ]
    return build_matrix(runs)


def only_cell(matrix: Matrix, column: str):
    j = matrix.labels.index(column)
    return matrix.cells[0][j]


# -- cell logic --------------------------------------------------------------------------------
def test_identical(tmp_path):
    m = matrix_of(tmp_path, ("cpu-avx2", [outcome(metrics=metrics(identical=True))]))
    cell = only_cell(m, "cpu-avx2")
    assert cell.state is CellState.IDENTICAL
    assert cell_text(cell) == "="
    assert cell.check == "reference" and cell.golden_class == REF


def test_within_shows_ssim_and_phash(tmp_path):
    m = matrix_of(tmp_path, ("cpu-avx2", [outcome(metrics=metrics(ssim=0.99861, phash=2))]))
    cell = only_cell(m, "cpu-avx2")
    assert cell.state is CellState.WITHIN
    assert cell_text(cell) == "~ 0.998/2"


def test_ssim_never_rounds_up_to_one(tmp_path):
    m = matrix_of(tmp_path, ("cpu-avx2", [outcome(metrics=metrics(ssim=0.99996))]))
    assert cell_text(only_cell(m, "cpu-avx2")) == "~ 0.999/2"


def test_diverged_shows_first_step(tmp_path):
    failed = outcome(
        status="failed", metrics=metrics(ssim=0.7123, phash=18), first_divergent_step=3,
        step_deltas=steps(first=3), message="differs from the cpu-default golden\n  detail",
    )
    cell = only_cell(matrix_of(tmp_path, ("cpu-avx2", [failed])), "cpu-avx2")
    assert cell.state is CellState.DIVERGED
    assert cell_text(cell) == "x 0.712/18 @s3"
    assert cell.step_deltas[3] == StepDelta(3, False, 0.01, 0.02)


def test_error_without_a_record_is_an_error_cell(tmp_path):
    err = outcome(status="error", metrics=None, message="golden is stale", step_deltas=None)
    cell = only_cell(matrix_of(tmp_path, ("cpu-avx2", [err])), "cpu-avx2")
    assert cell.state is CellState.ERROR
    assert cell_text(cell) == "! error"
    assert cell.message == "golden is stale" and cell.error.message == "golden is stale"
    assert cell.error.type is None


def test_failed_without_metrics_is_diverged(tmp_path):
    failed = outcome(status="failed", metrics=None, step_deltas=None)
    cell = only_cell(matrix_of(tmp_path, ("cpu-avx2", [failed])), "cpu-avx2")
    assert cell.state is CellState.DIVERGED and cell_text(cell) == "x failed"


def test_missing_golden_says_why(tmp_path):
    skipped = outcome(status="skipped", metrics=None, message="no golden for it in cpu-default")
    cell = only_cell(matrix_of(tmp_path, ("cpu-avx2", [skipped])), "cpu-avx2")
    assert cell.state is CellState.MISSING
    assert cell_text(cell) == "-"
    assert cell.reason == "no golden for it in cpu-default"


def test_missing_when_not_run_on_a_class(tmp_path):
    m = matrix_of(
        tmp_path,
        ("cpu-avx2", [outcome()]),
        ("cpu-avx512", [outcome("tiny-sd/other/64x64/fp32", cls="cpu-avx512")]),
    )
    assert len(m.items) == 2
    cell = m.cells[m.items.index(ItemKey("tiny-sd", "red-circle", "64x64", "fp32"))][1]
    assert cell.state is CellState.MISSING and cell.reason == "not run on cpu-avx512"


def test_missing_when_only_other_checks_ran(tmp_path):
    cell = only_cell(
        matrix_of(tmp_path, ("cpu-avx2", [outcome(check="repeatable", golden_class=None)])),
        "cpu-avx2",
    )
    assert cell.state is CellState.MISSING
    assert "no reference check" in cell.reason and "repeatable" in cell.reason


def test_reference_column_uses_own_class(tmp_path):
    outs = [
        outcome(check="reference", cls=REF, status="skipped", metrics=None, golden_class=REF,
                message="this machine is the reference class"),
        outcome(check="own-class", cls=REF, metrics=metrics(identical=True),
                by_class={REF: metrics(identical=True) | {"first_divergent_step": None}}),
    ]
    m = matrix_of(tmp_path, (REF, outs))
    cell = only_cell(m, REF)
    assert m.reference_class == REF
    assert cell.state is CellState.IDENTICAL and cell.check == "own-class"
    assert [c.golden_class for c in cell.by_class] == [REF]


def test_recorded_golden_is_missing(tmp_path):
    outs = [outcome(check="own-class", cls=REF, status="recorded", metrics=None,
                    message="recorded golden/x.png")]
    m = build_matrix(
        [load_run(results(tmp_path / "r.json", REF, outs))], reference_class=REF
    )
    cell = only_cell(m, REF)
    assert cell.state is CellState.MISSING
    assert "recorded in this run" in cell.reason and "golden/x.png" in cell.reason


def test_by_class_and_context_come_from_the_other_checks(tmp_path):
    own_by_class = {REF: metrics() | {"first_divergent_step": 2}, "cpu-avx2": IDENTICAL}
    outs = [
        outcome(check="reference"),
        outcome(check="own-class", by_class=own_by_class),
        outcome(check="repeatable", golden_class=None),
        outcome(check="invariance", variant="batch-4", golden_class=None, tier="close"),
        outcome(check="invariance", variant="threads-2", golden_class=None, status="failed"),
    ]
    cell = only_cell(matrix_of(tmp_path, ("cpu-avx2", outs)), "cpu-avx2")
    assert cell.check == "reference" and cell.state is CellState.WITHIN
    assert [c.golden_class for c in cell.by_class] == ["cpu-avx2", REF]
    assert cell.by_class[1].first_divergent_step == 2
    assert [c.name for c in cell.checks] == [
        "repeatable", "own-class", "reference", "invariance[batch-4]", "invariance[threads-2]"
    ]


def test_same_class_files_merge_later_run_wins(tmp_path):
    early = results(tmp_path / "a" / "results.json", "cpu-avx2", [
        outcome(metrics=metrics(ssim=0.91)),
        outcome("tiny-sd/red-circle/96x96/fp32"),
    ], started_at="2026-01-01T00:00:00Z")
    late = results(tmp_path / "b" / "results.json", "cpu-avx2", [
        outcome(metrics=metrics(ssim=0.95)),
    ], started_at="2026-01-02T00:00:00Z")
    # given newest first: start time decides, not argument order
    m = build_matrix([load_run(late), load_run(early)])
    assert m.labels == ("cpu-avx2",)
    assert m.columns[0].sources == (str(early), str(late))
    assert len(m.items) == 2
    assert m.cells[0][0].metrics.ssim == 0.95 and m.cells[0][0].source == str(late)
    assert m.cells[1][0].source == str(early)
    note = " ".join(m.notes)
    assert "merged 2 results files" in note and f"1 from {late}" in note


def test_same_class_without_times_merges_in_argument_order(tmp_path):
    a = results(tmp_path / "a.json", "cpu-avx2", [outcome(metrics=metrics(ssim=0.91))],
                started_at=None)
    b = results(tmp_path / "b.json", "cpu-avx2", [outcome(metrics=metrics(ssim=0.95))],
                started_at=None)
    m = build_matrix([load_run(a), load_run(b)])
    assert m.cells[0][0].metrics.ssim == 0.95


def test_duplicate_outcomes_in_one_file_are_noted(tmp_path):
    m = matrix_of(tmp_path, ("cpu-avx2", [outcome(), outcome()]))
    assert any("appear more than once" in n for n in m.notes)


def test_labels_make_columns(tmp_path):
    t1 = results(tmp_path / "t1.json", REF, [
        outcome(check="own-class", cls=REF, metrics=metrics(identical=True)),
        outcome(check="reference", cls=REF, status="skipped", metrics=None),
    ])
    t2 = results(tmp_path / "t2.json", REF, [
        outcome(check="own-class", cls=REF, tier="close"),
        outcome(check="reference", cls=REF, status="skipped", metrics=None),
    ], label="cpu-default t2", fingerprint={"torch": "2.13.0", "device_name": "CPU", "threads": 2})
    avx = results(tmp_path / "avx.json", "cpu-avx2", [outcome()])
    m = build_matrix([load_run(avx), load_run(t2), load_run(t1)])
    assert m.labels == ("cpu-default", "cpu-default t2", "cpu-avx2")
    states = [c.state for c in m.cells[0]]
    assert states == [CellState.IDENTICAL, CellState.WITHIN, CellState.WITHIN]
    assert m.cells[0][1].check == "own-class" and m.cells[0][1].hardware_class == REF


def test_reference_class_override_is_noted(tmp_path):
    run = load_run(results(tmp_path / "r.json", "cpu-avx2", [outcome()]))
    m = build_matrix([run], reference_class="cpu-avx512")
    assert m.reference_class == "cpu-avx512"
    assert any("asked for as the reference class" in n for n in m.notes)
    assert any("no results file or golden set of the reference class" in n for n in m.notes)


def test_row_order():
    items = [
        ItemKey("tiny-sd", "b", "96x96", "fp32"),
        ItemKey("tiny-sd", "a", "128x64", "fp32"),
        ItemKey("tiny-sd", "a", "96x96", "zz-custom"),
        ItemKey("tiny-sd", "a", "96x96", "gguf-q4_k"),
        ItemKey("tiny-sd", "a", "96x96", "gguf-q8_0"),
        ItemKey("tiny-sd", "a", "96x96", "fp8-e5m2"),
        ItemKey("tiny-sd", "a", "96x96", "fp8-e4m3"),
        ItemKey("tiny-sd", "a", "96x96", "fp16"),
        ItemKey("tiny-sd", "a", "96x96", "bf16"),
        ItemKey("tiny-sd", "a", "96x96", "fp32"),
        ItemKey("tiny-sd", "a", "64x64", "bf16"),
        ItemKey("tiny-flux", "z", "64x64", "fp32"),
    ]
    ordered = [i.id for i in sorted(items, key=item_key)]
    assert ordered == [
        "tiny-flux/z/64x64/fp32",
        "tiny-sd/a/64x64/bf16",
        "tiny-sd/a/128x64/fp32",  # 8192 pixels before 9216
        "tiny-sd/a/96x96/fp32",
        "tiny-sd/a/96x96/bf16",
        "tiny-sd/a/96x96/fp16",
        "tiny-sd/a/96x96/fp8-e4m3",
        "tiny-sd/a/96x96/fp8-e5m2",
        "tiny-sd/a/96x96/gguf-q8_0",
        "tiny-sd/a/96x96/gguf-q4_k",
        "tiny-sd/a/96x96/zz-custom",
        "tiny-sd/b/96x96/fp32",
    ]
    assert precision_key("fp32") < precision_key("gguf-q2_k") < precision_key("int8")


def test_column_order_reference_first_then_natural(tmp_path):
    files = [
        (cls, [outcome(cls=cls)]) for cls in ("cuda-sm89", "cpu-avx512", "cpu-avx2", "cuda-sm100")
    ]
    files.append((REF, [outcome(check="reference", cls=REF, status="skipped", metrics=None)]))
    m = matrix_of(tmp_path, *files)
    assert m.labels == (REF, "cpu-avx2", "cpu-avx512", "cuda-sm89", "cuda-sm100")


def test_artifact_paths_resolved_against_the_results_folder(tmp_path):
    run_dir = tmp_path / "runs" / "avx2"
    (run_dir / "artifacts" / "x").mkdir(parents=True)
    (run_dir / "artifacts" / "x" / "diff.png").write_bytes(png((1, 2, 3)))
    arts = {
        "actual": "artifacts/x/actual.png",  # relative to the results file
        "golden": str(tmp_path / "abs" / "golden.png"),  # absolute: kept
        "diff": "conformance-results/artifacts/x/diff.png",  # relative to the run's cwd
    }
    run = load_run(results(run_dir / "results.json", "cpu-avx2", [outcome(artifacts=arts)]))
    cell = build_matrix([run]).cells[0][0]
    assert cell.artifacts.actual == str(run_dir / "artifacts" / "x" / "actual.png")
    assert cell.artifacts.golden == str(tmp_path / "abs" / "golden.png")
    assert cell.artifacts.diff == str(run_dir / "artifacts" / "x" / "diff.png")


# -- renderers ---------------------------------------------------------------------------------
HOSTILE = "<script>alert(1)</script>|**bold**"


def sample_matrix(tmp_path: Path, with_images: bool = True) -> Matrix:
    """3 items x 3 classes covering every state, hostile text and images."""
    img_dir = tmp_path / "1-cpu-avx2" / "artifacts"  # inside the cpu-avx2 results folder
    img_dir.mkdir(parents=True, exist_ok=True)
    arts = {}
    if with_images:
        for name, colour in (("golden", (0, 0, 255)), ("actual", (255, 0, 0))):
            (img_dir / f"{name}.png").write_bytes(png(colour, 64))
        arts = {"golden": str(img_dir / "golden.png"), "actual": str(img_dir / "actual.png"),
                "diff": str(img_dir / "absent.png")}
    a, b, c = "tiny-sd/red-circle/64x64/fp32", "tiny-sd/red-circle/64x64/bf16", "m/c/64x64/fp32"
    ref_outs = [
        outcome(i, check="own-class", cls=REF, metrics=metrics(identical=True))
        for i in (a, b)
    ] + [
        outcome(i, check="reference", cls=REF, status="skipped", metrics=None)
        for i in (a, b)
    ]
    avx2 = [
        outcome(a, metrics=metrics(ssim=0.9981, phash=2)),
        outcome(b, status="failed", metrics=metrics(ssim=0.71, phash=18), first_divergent_step=3,
                step_deltas=steps(first=3), artifacts=arts, message=HOSTILE),
        outcome(c, status="skipped", metrics=None, message="no golden " + HOSTILE),
    ]
    hostile_cls = "cuda-<b>evil</b>"
    evil = [outcome(a, cls=hostile_cls, metrics=metrics(identical=True))]
    return matrix_of(tmp_path, (REF, ref_outs), ("cpu-avx2", avx2), (hostile_cls, evil))


def test_markdown_table_shape(tmp_path):
    m = sample_matrix(tmp_path)
    text = render_markdown(m)
    lines = text.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("| item |"))
    table = []
    for ln in lines[header:]:
        if not ln.startswith("|"):
            break
        table.append(ln)
    assert len(table) == 2 + len(m.items)
    for ln in table:  # escaped pipes do not split cells
        assert len(re.findall(r"(?<!\\)\|", ln)) == 2 + len(m.columns)
    assert table[1] == "|---|:-:|:-:|:-:|"
    assert "cpu-default (reference)" in table[0]
    assert "| tiny-sd/red-circle/64x64/bf16 | = | x 0.710/18 @s3 | - |" in text
    assert "Legend:" in text
    per_class = [ln for ln in lines if ln.startswith("- **")]
    assert len(per_class) == len(m.columns)
    assert per_class[1].startswith("- **cpu-avx2**: 1 within, 1 diverged, 1 missing")
    assert "<script>" not in text and "<b>" not in text
    assert "\\<script\\>" in text


def test_markdown_escape():
    # the newline is shown as text (\n, its backslash escaped), not collapsed
    assert md_escape("a|b\n<c> & *d* [e](f) `g`") == (
        r"a\|b\\n\<c\> &amp; \*d\* \[e\](f) \`g\`"
    )


def test_markdown_of_an_empty_matrix():
    assert "No outcomes" in render_markdown(build_matrix([]))


def test_json_round_trip(tmp_path):
    m = sample_matrix(tmp_path)
    data = json.loads(render_json(m))
    assert data["columns"][1]["counts"] == {
        "identical": 0, "within": 1, "diverged": 1, "error": 0, "missing": 1
    }
    assert data["rows"][0]["cells"]["cpu-avx2"]["state"] in {s.value for s in CellState}
    assert matrix_from_dict(data) == m


def test_json_non_finite_numbers_become_null(tmp_path):
    bad = outcome(metrics=metrics(ssim=math.nan),
                  step_deltas=[{"step": 0, "equal": False, "mean_delta": math.nan,
                                "std_delta": math.inf}])
    m = matrix_of(tmp_path, ("cpu-avx2", [bad]))
    text = render_json(m)  # allow_nan=False: would raise if any slipped through
    cell = json.loads(text)["rows"][0]["cells"]["cpu-avx2"]
    assert cell["metrics"]["ssim"] is None
    assert cell["step_deltas"] == {
        "step": [0], "equal": [False], "mean_delta": [None], "std_delta": [None]
    }
    assert cell_text(m.cells[0][0]) == "~ nan/2"
    assert "<polyline" in render_html(m, {})


def test_html_escapes_embeds_and_stays_offline(tmp_path):
    m = sample_matrix(tmp_path)
    images = command.read_images(page_image_paths(m), [tmp_path])
    page = render_html(m, images)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "cuda-&lt;b&gt;evil&lt;/b&gt;" in page and "<b>evil" not in page
    assert page.count("data:image/png;base64,") == 2
    assert "image not found" in page and "absent.png" in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//|file:)""", page, re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:|//)", page, re.I)
    assert "@import" not in page
    # every cell links to a panel that exists
    targets = re.findall(r'href="#(c\d+-\d+)"', page)
    assert len(targets) == len(m.items) * len(m.columns)
    assert all(f'id="{t}"' in page for t in targets)
    assert 's-identical' in page and 's-within' in page and 's-diverged' in page
    assert 's-missing' in page


def test_html_notes_images_that_are_not_png(tmp_path):
    m = sample_matrix(tmp_path)
    golden = next(c.artifacts.golden for row in m.cells for c in row if c.artifacts.golden)
    page = render_html(m, {golden: b"<svg onload=alert(1)>"})
    assert "not a PNG file" in page and "onload" not in page


def test_images_outside_the_results_folders_are_not_read(tmp_path):
    inside, outside = tmp_path / "runs", tmp_path / "elsewhere"
    for d in (inside, outside):
        d.mkdir()
        (d / "a.png").write_bytes(png((9, 9, 9)))
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(inside / "big.png")
    link = inside / "link.png"
    link.symlink_to(outside / "a.png")
    names = [str(inside / "a.png"), str(outside / "a.png"), str(link), str(inside / "big.png"),
             str(inside / "absent.png")]
    got = command.read_images(names, [inside], limit=1000)
    assert got[str(inside / "a.png")].startswith(b"\x89PNG")
    assert got[str(outside / "a.png")] == got[str(link)] == (
        "not embedded: outside the results files' folders and golden roots"
    )
    assert got[str(inside / "big.png")].startswith("not embedded: larger than")
    assert str(inside / "absent.png") not in got
    m = sample_matrix(tmp_path)
    golden = next(c.artifacts.golden for row in m.cells for c in row if c.artifacts.golden)
    page = render_html(m, {golden: "not embedded: outside the results files' folders"})
    assert "not embedded: outside the results files&#x27; folders" in page


def test_absolute_paths_from_another_machine_fall_back_to_the_results_folder(tmp_path):
    copy = tmp_path / "copy"
    (copy / "artifacts" / "x").mkdir(parents=True)
    (copy / "artifacts" / "x" / "diff.png").write_bytes(png((1, 2, 3)))
    original = tmp_path / "ci" / "artifacts" / "x" / "golden.png"  # still there
    original.parent.mkdir(parents=True)
    original.write_bytes(png((1, 2, 3)))
    (copy / "artifacts" / "x" / "golden.png").write_bytes(png((1, 2, 3)))
    arts = {
        "diff": "/gone/conformance-results/artifacts/x/diff.png",
        "golden": str(original),
        "actual": "/gone/artifacts/x/actual.png",  # nowhere: kept as written
    }
    run = load_run(results(copy / "results.json", "cpu-avx2", [outcome(artifacts=arts)]))
    assert to_builtins(run.outcomes[0].artifacts) == {
        "diff": str(copy / "artifacts" / "x" / "diff.png"),
        "golden": str(copy / "artifacts" / "x" / "golden.png"),  # the copy beside the file
        "actual": "/gone/artifacts/x/actual.png",
    }


def test_html_says_when_no_images_were_saved(tmp_path):
    page = render_html(sample_matrix(tmp_path, with_images=False), {})
    assert "--save-images" in page and "<img" not in page


def test_step_plot_marks_the_first_divergent_step():
    deltas = [StepDelta(s, s < 3, 0.0 if s < 3 else 0.1 * s, 0.0) for s in range(8)]
    svg = step_plot_svg(deltas, 3)
    assert svg.count("<polyline") == 2
    assert len(re.search(r'points="([^"]*)"', svg)[1].split()) == 8
    assert "first divergent step 3" in svg
    assert "Latents equal" in step_plot_svg([StepDelta(0, True, 0.0, 0.0)], None)
    assert "No per-step trace" in step_plot_svg([], None)


# -- command line ------------------------------------------------------------------------------
def run(args: list[str], capsys) -> tuple[int, str, str]:
    code = command.main(["matrix", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_writes_every_output(tmp_path, capsys):
    sample_matrix(tmp_path)
    files = sorted(str(p) for p in tmp_path.glob("*/results.json"))
    outs = tmp_path / "out"
    code, out, err = run([*files, "--html", str(outs / "m.html"), "--json",
                          str(outs / "m.json"), "--markdown", "-"], capsys)
    assert code == 0 and err == ""
    assert out.startswith("## Conformance matrix")
    assert json.loads((outs / "m.json").read_text())["schema_version"] == 2
    assert (outs / "m.html").read_text().count("data:image/png;base64,") == 2


def test_registered_in_the_conformance_command():
    # the full `conformance` parser imports every extension (torch, diffusers): checking the
    # registration is enough here; command.main reports errors the way conformance.cli does
    from conformance.cli import EXTENSIONS

    if "conformance.report.command" not in EXTENSIONS:
        pytest.skip("conformance.report.command is not in conformance.cli.EXTENSIONS yet")
    assert callable(command.register)


def _good(**over: Any) -> dict[str, Any]:
    return outcome(**over)


BAD_FILES: list[tuple[str, Any, str]] = [
    ("not-json", "{not json", "not valid JSON"),
    ("not-utf8", b"\xff\xfe\x00", "results file is not UTF-8 text"),
    ("schema", {"schema_version": 99, "outcomes": []}, "not a results file of schema_version 1"),
    ("list", [1, 2], "not a results file of schema_version 1"),
    ("no-class", {"schema_version": 1, "outcomes": []}, "key hardware_class is missing"),
    ("label", {"schema_version": 1, "hardware_class": "x", "label": 3, "outcomes": []},
     "label must be a non-empty string"),
    ("outcomes-dict", {"schema_version": 1, "hardware_class": "x", "outcomes": {"a": 1}},
     "malformed outcomes"),
    ("outcome-not-object", {"schema_version": 1, "hardware_class": "x", "outcomes": [3]},
     "malformed outcomes"),
    ("unknown-key", {"schema_version": 1, "hardware_class": "x",
                     "outcomes": [_good(colour="red")]}, "malformed outcomes"),
    ("no-outcomes", {"schema_version": 1, "hardware_class": "x"}, "malformed outcomes"),
    ("fingerprint", {"schema_version": 1, "hardware_class": "x", "fingerprint": [1],
                     "outcomes": []}, "fingerprint must be an object"),
    ("started", {"schema_version": 1, "hardware_class": "x", "started_at": 5,
                 "outcomes": []}, "started_at must be a string"),
    ("identity-type", {"schema_version": 2, "hardware_class": "x", "identity": [1],
                       "outcomes": []}, "identity must be an object or null"),
    ("identity-digest", {"schema_version": 2, "hardware_class": "x",
                         "identity": {"digest": "NOT-HEX"}, "outcomes": []},
     "identity.digest must be a string of lower-case hex digits"),
    ("identity-no-digest", {"schema_version": 2, "hardware_class": "x",
                            "identity": {"class": "x"}, "outcomes": []},
     "key identity.digest is missing"),
    ("identity-class", {"schema_version": 2, "hardware_class": "x",
                        "identity": {"digest": "abcdef123456", "class": 3}, "outcomes": []},
     "identity.class must be a string"),
    ("identity-features", {"schema_version": 2, "hardware_class": "x",
                           "identity": {"digest": "abcdef123456", "features": [1]},
                           "outcomes": []}, "identity.features must be an object or null"),
    ("identity-digests", {"schema_version": 2, "hardware_class": "x",
                          "identity": {"digest": "abcdef123456", "precision_digests": "x"},
                          "outcomes": []}, "identity.precision_digests must be an object or null"),
]
BAD_FIELDS: list[tuple[dict[str, Any], str]] = [
    ({"status": "great"}, "status 'great' is not one of"),
    ({"check": "vibes"}, "check 'vibes' is not one of"),
    ({"id": 5}, "id must be a non-empty string"),
    ({"precision": ""}, "precision '' is not accepted (lower-case letters"),
    ({"tier": 3}, "tier must be a string or null"),
    ({"variant": ["a"]}, "variant must be a string or null"),
    ({"message": None}, "message must be a string"),
    ({"seconds": "fast"}, "seconds must be a finite number of at least 0"),
    ({"peak_memory_mb": True}, "peak_memory_mb must be a finite number of at least 0 or null"),
    ({"first_divergent_step": 1.5}, "first_divergent_step must be an integer or null"),
    ({"metrics": "good"}, "metrics must be an object or null"),
    ({"metrics": {"ssim": 1.0}}, "key metrics.identical is missing"),
    ({"metrics": metrics() | {"ssim": "high"}}, "metrics.ssim must be a number or null"),
    ({"artifacts": {"actual": 3}}, "artifacts.actual must be a string, not a number (3)"),
    ({"artifacts": None}, "artifacts must be an object mapping image names"),
    ({"step_deltas": {"0": 1}}, "step_deltas must be a list or null"),
    ({"step_deltas": [{"step": 0, "equal": 1, "mean_delta": 0, "std_delta": 0}]},
     "step_deltas[0].equal must be true or false"),
    ({"by_class": []}, "by_class must be an object"),
    ({"by_class": {"cpu-x": None}}, "by_class['cpu-x'] must be an object"),
    ({"by_class": {"cpu-x": {"error": 3}}}, "by_class['cpu-x'].error must be a string"),
    ({"by_class": {"cpu-x": metrics() | {"first_divergent_step": "3"}}},
     "by_class['cpu-x'].first_divergent_step must be an integer or null"),
    ({"pixel_sha256": "NOT HEX"}, "pixel_sha256 must be a string of lower-case hex digits"),
    ({"pixel_sha256": 5}, "pixel_sha256 must be a string of lower-case hex digits or null"),
    ({"error": "boom"}, "error must be an object or null"),
    ({"error": {"type": 3}}, "error.type must be a string or null"),
    ({"error": {"type": "E", "message": ["a"]}}, "error.message must be a string or null"),
]


def _assert_one_line_error(code: int, err: str, path: Path, text: str) -> None:
    assert code == 2
    assert err.startswith(f"conformance matrix: error: {path}: "), err
    assert text in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(("name", "content", "text"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_results_file(tmp_path, capsys, name, content, text):
    path = tmp_path / f"{name}.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    code, _, err = run([str(path), "--markdown", "-"], capsys)
    _assert_one_line_error(code, err, path, text)


@pytest.mark.parametrize(("fields", "text"), BAD_FIELDS, ids=[b[1][:40] for b in BAD_FIELDS])
def test_malformed_outcome(tmp_path, capsys, fields, text):
    path = results(tmp_path / "r.json", "cpu-avx2", [outcome(), outcome(**fields)])
    code, _, err = run([str(path), "--markdown", "-"], capsys)
    _assert_one_line_error(code, err, path, "malformed outcomes: outcome 1 ")
    assert text in err


def test_missing_results_file(tmp_path, capsys):
    path = tmp_path / "absent.json"
    code, _, err = run([str(path), "--json", "-"], capsys)
    _assert_one_line_error(code, err, path, "cannot read results file")


def test_folder_without_golden_sets(tmp_path, capsys):
    code, _, err = run([str(tmp_path), "--json", "-"], capsys)
    _assert_one_line_error(code, err, tmp_path, "is a folder but holds no golden sets")


def test_second_file_is_named(tmp_path, capsys):
    good = results(tmp_path / "good.json", "cpu-avx2", [outcome()])
    bad = tmp_path / "bad.json"
    bad.write_text("[")
    code, _, err = run([str(good), str(bad), "--markdown", "-"], capsys)
    _assert_one_line_error(code, err, bad, "not valid JSON")


def test_no_output_requested(tmp_path, capsys):
    path = results(tmp_path / "r.json", "cpu-avx2", [outcome()])
    code, _, err = run([str(path)], capsys)
    assert code == 2 and "give at least one of --html, --markdown, --json" in err


def test_two_outputs_on_stdout(tmp_path, capsys):
    path = results(tmp_path / "r.json", "cpu-avx2", [outcome()])
    code, _, err = run([str(path), "--markdown", "-", "--json", "-"], capsys)
    assert code == 2 and "only one output can go to standard output" in err


def test_unwritable_output(tmp_path, capsys):
    path = results(tmp_path / "r.json", "cpu-avx2", [outcome()])
    (tmp_path / "taken").mkdir()
    code, _, err = run([str(path), "--html", str(tmp_path / "taken")], capsys)
    assert code == 2
    assert err.startswith(f"conformance matrix: error: --html {tmp_path / 'taken'}: cannot write")


def test_no_results_argument_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        command.main(["matrix", "--markdown", "-"])
    assert info.value.code == 2
    assert "RESULTS" in capsys.readouterr().err


def test_load_run_raises_input_error(tmp_path):
    with pytest.raises(ConformanceInputError) as info:
        load_run(tmp_path / "none.json")
    assert info.value.where == str(tmp_path / "none.json")


# -- a real browser --------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which(
    "google-chrome"
)


def screenshot(url: str, out: Path, tmp_path: Path) -> np.ndarray:
    assert CHROMIUM is not None
    profile = tmp_path / f"profile-{out.stem}"
    profile.mkdir()
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", f"--screenshot={out}",
        "--window-size=1280,900", "--hide-scrollbars", url,
    ]
    subprocess.run(cmd, capture_output=True, timeout=90, check=False)
    assert out.is_file(), f"chromium wrote no screenshot: {' '.join(map(str, cmd))}"
    return np.asarray(Image.open(out).convert("RGB")).astype(np.int16)


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium, chromium-browser or google-chrome on PATH "
    "(install it, e.g. apt-get install chromium, to run the browser test)",
)
def test_html_in_a_real_browser(tmp_path):
    m = sample_matrix(tmp_path)
    page = tmp_path / "matrix.html"
    images = command.read_images(page_image_paths(m), [tmp_path])
    page.write_text(render_html(m, images), encoding="utf-8")

    table = screenshot(page.as_uri(), tmp_path / "table.png", tmp_path)
    assert table.shape == (900, 1280, 3)
    assert table.std() > 10, "the screenshot is blank"
    red = (table[..., 0] > 240) & (table[..., 1] < 15) & (table[..., 2] < 15)
    assert red.sum() < 100, "a detail panel is open without being asked for"

    # the diverged cell's panel, opened as a click on its cell would (its URL fragment)
    i = m.items.index(ItemKey("tiny-sd", "red-circle", "64x64", "bf16"))
    opened = screenshot(f"{page.as_uri()}#c{i}-1", tmp_path / "panel.png", tmp_path)
    red = (opened[..., 0] > 240) & (opened[..., 1] < 15) & (opened[..., 2] < 15)
    blue = (opened[..., 2] > 240) & (opened[..., 0] < 15) & (opened[..., 1] < 15)
    # the actual (red) and golden (blue) 64x64 images, shown 200 px wide
    assert red.sum() > 150 * 150 and blue.sum() > 150 * 150


# -- identity columns --------------------------------------------------------------------------
def identity(digest: str, cls: str = "cpu-amd-avx512+bf16",
             model_name: str = "AMD EPYC") -> dict[str, Any]:
    return {
        "class": cls, "digest": digest, "battery_version": 1,
        "precision_digests": {"fp32": digest, "bf16": digest[::-1]},
        "probes": {"linear-64x256x256/fp32": "0" * 16},
        "features": {"vendor": "amd", "model_name": model_name, "flags": ["avx2", "avx512f"],
                     "aten_level": "avx512", "onednn_max_cpu_isa": None},
    }


def results2(path: Path, cls: str, outcomes: list[dict[str, Any]], digest: str,
             model_name: str = "AMD EPYC", **top: Any) -> Path:
    """A schema-2 results file with a measured identity."""
    return results(path, cls, outcomes, schema_version=2,
                   identity=identity(digest, cls, model_name), **top)


def test_one_identity_is_one_column_whatever_the_labels(tmp_path):
    cls = "cpu-amd-avx512+bf16"
    early = results2(tmp_path / "a.json", cls, [outcome(cls=cls, metrics=metrics(ssim=0.91))],
                     "aaaaaaaaaaaa", label="nightly", started_at="2026-01-01T00:00:00Z")
    late = results2(tmp_path / "b.json", cls, [outcome(cls=cls, metrics=metrics(ssim=0.95))],
                    "aaaaaaaaaaaa", started_at="2026-01-02T00:00:00Z")
    m = build_matrix([load_run(late), load_run(early)])
    assert m.labels == (cls,)
    col = m.columns[0]
    assert col.key == "id:aaaaaaaaaaaa" and col.kind == RUN
    assert dict(col.identity)["digest"] == "aaaaaaaaaaaa"
    assert dict(col.identity)["model_name"] == "AMD EPYC"
    assert dict(col.identity)["flags"] == "avx2 avx512f"
    assert dict(col.identity)["digest fp32"] == "aaaaaaaaaaaa"
    assert m.cells[0][0].metrics.ssim == 0.95
    notes = " ".join(m.notes)
    assert "merged 2 results files of one identity" in notes
    assert "carry different labels (nightly, cpu-amd-avx512+bf16)" in notes


def test_different_identities_never_share_a_column(tmp_path):
    amd = results2(tmp_path / "amd.json", "cpu-avx512", [outcome(cls="cpu-avx512")],
                   "111111aaaaaa", label="cpu-avx512")
    intel = results2(tmp_path / "intel.json", "cpu-avx512",
                     [outcome(cls="cpu-avx512", metrics=metrics(ssim=0.93))], "222222bbbbbb",
                     model_name="Intel(R) Xeon(R) Processor", label="cpu-avx512")
    m = build_matrix([load_run(intel), load_run(amd)])
    assert m.labels == ("cpu-avx512 · AMD EPYC", "cpu-avx512 · Intel(R) Xeon(R) Processor")
    assert [c.sources for c in m.columns] == [(str(amd),), (str(intel),)]
    assert m.cells[0][1].metrics.ssim == 0.93 and m.cells[0][1].column == m.labels[1]
    assert any("2 columns would be labelled cpu-avx512" in n for n in m.notes)


def test_same_machine_model_is_told_apart_by_the_digest(tmp_path):
    runs = [
        load_run(results2(tmp_path / f"{d}.json", "cpu-avx512", [outcome(cls="cpu-avx512")], d))
        for d in ("3f9a1c000000", "77aa00000000")
    ]
    assert build_matrix(runs).labels == ("cpu-avx512@3f9a1c", "cpu-avx512@77aa00")
    runs = [
        load_run(results2(tmp_path / f"{d}.json", "cpu-avx512", [outcome(cls="cpu-avx512")], d))
        for d in ("abcdef000001", "abcdef000002")
    ]
    # six digits are not enough: as many as it takes
    assert build_matrix(runs).labels == ("cpu-avx512@abcdef000001", "cpu-avx512@abcdef000002")


def test_schema_1_identity_comes_from_the_fingerprint(tmp_path):
    fp = {"torch": "2.13.0", "device_name": "AMD EPYC", "threads": 1}
    a = results(tmp_path / "a.json", "cpu-avx512", [outcome(cls="cpu-avx512")], fingerprint=fp)
    b = results(tmp_path / "b.json", "cpu-avx512", [outcome(cls="cpu-avx512")],
                fingerprint=fp | {"device_name": "Intel Xeon"})
    c = results(tmp_path / "c.json", "cpu-avx512", [outcome(cls="cpu-avx512")],
                fingerprint=fp | {"torch": "2.14.0"})
    d = results(tmp_path / "d.json", "cpu-avx512", [outcome(cls="cpu-avx512")],
                fingerprint=fp | {"python": "3.12"})  # not a key that changes bits
    m = build_matrix([load_run(p) for p in (a, b, c, d)])
    assert len(m.columns) == 3
    assert all(col.key.startswith("fp:") and col.identity == () for col in m.columns)
    merged = next(col for col in m.columns if len(col.sources) == 2)
    assert merged.sources == (str(a), str(d))
    assert load_run(a).key == legacy_key("cpu-avx512", {"threads": "1"} | fp)
    # the same machine under two torch versions: one device name, so the digest tells them
    assert sum("@" in label for label in m.labels) == 2
    assert any("Intel Xeon" in label for label in m.labels)


def test_every_input_is_accounted_for_in_the_notes(tmp_path):
    a = results(tmp_path / "a.json", "cpu-avx2", [outcome()])
    b = results(tmp_path / "b.json", "cpu-avx2", [outcome("tiny-sd/x/64x64/fp32")])
    empty = results(tmp_path / "empty.json", "cpu-avx512", [],
                    fingerprint={"device_name": "other"})
    m = build_matrix([load_run(p) for p in (a, b, empty)])
    assert m.labels == ("cpu-avx2", "cpu-avx512")
    assert f"column cpu-avx2: results files {a}, {b}" in m.notes
    assert f"column cpu-avx512: results file {empty}" in m.notes
    assert all(c.state is CellState.MISSING for c in (row[1] for row in m.cells))


def test_disambiguated_labels_stay_unique():
    cols = [
        Column("x", "cpu-a", ("1",), key="id:abcdef111111"),
        Column("x", "cpu-a", ("2",), key="id:abcdef222222"),
        Column("x@abcdef11", "cpu-a", ("3",), key="id:999999999999"),
        Column("y", "cpu-a", ("4",), key="fp:123456789abc", kind=GOLDEN),
        Column("y", "cpu-a", ("5",), key="id:123456789abc"),
    ]
    notes: list[str] = []
    labels = disambiguate(cols, notes)
    assert labels == ["x@abcdef11", "x@abcdef22", "x@abcdef11 #2", "y (golden)", "y"]
    assert len(notes) == 1 and "2 columns would be labelled x" in notes[0]


# -- bit-identical groups ----------------------------------------------------------------------
def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def grouped_matrix(tmp_path: Path) -> Matrix:
    a, b, c = "tiny-sd/a/64x64/fp32", "tiny-sd/b/64x64/fp32", "tiny-sd/c/64x64/fp32"
    ref = [outcome(i, check="own-class", cls=REF, metrics=metrics(identical=True),
                   pixel_sha256=sha(i)) for i in (a, b)]
    ref += [outcome(i, check="reference", cls=REF, status="skipped", metrics=None)
            for i in (a, b)]
    avx2 = [outcome(a, pixel_sha256=sha("other")), outcome(b, pixel_sha256=sha(b))]
    avx512 = [outcome(i, cls="cpu-avx512", metrics=metrics(identical=True),
                      pixel_sha256=sha(i)) for i in (a, b)]
    cuda = [outcome(c, cls="cuda-sm89", pixel_sha256=sha(c))]
    plain = [outcome(a, cls="cpu-zen")]  # no digests: schema 1
    return matrix_of(tmp_path, (REF, ref), ("cpu-avx2", avx2), ("cpu-avx512", avx512),
                     ("cuda-sm89", cuda), ("cpu-zen", plain))


def test_bit_identical_columns_are_one_group_and_adjacent(tmp_path):
    m = grouped_matrix(tmp_path)
    assert m.labels == (REF, "cpu-avx512", "cpu-avx2", "cpu-zen", "cuda-sm89")
    assert m.groups == ((0, 1), (2,), (3,), (4,))
    assert m.group_of(1) == (0, 1) and m.shared_groups() == [(0, 1)]
    assert group_names(m) == {0: "A", 1: "A"}
    assert m.cells[0][0].pixel_sha256 == sha("tiny-sd/a/64x64/fp32")
    assert "same bits: cpu-default, cpu-avx512 (equal pixels on every item they share, " \
        "2 items)" in m.notes


def test_groups_in_markdown_html_and_json(tmp_path):
    m = grouped_matrix(tmp_path)
    md = render_markdown(m)
    header = next(ln for ln in md.splitlines() if ln.startswith("| item |"))
    assert r"cpu-default (reference) \[A\] | cpu-avx512 \[A\] | cpu-avx2 |" in header
    assert "Same bits (equal pixels on every item the columns share):" in md
    assert "- **A**: cpu-default, cpu-avx512" in md
    assert any(ln.startswith("- **cpu-avx512**") and ln.endswith("same bits as cpu-default")
               for ln in md.splitlines())
    page = render_html(m, {})
    assert '<tr class="groups">' in page
    assert re.search(r'<th colspan="2" class="grp" title="[^"]*cpu-default, cpu-avx512">'
                     r"A: same bits</th>", page)
    assert "same bits as cpu-avx512" in page
    data = json.loads(render_json(m))
    assert data["groups"] == [[0, 1], [2], [3], [4]]
    assert data["columns"][0]["key"].startswith("fp:") and data["columns"][0]["kind"] == "run"
    assert matrix_from_dict(data) == m


def test_no_group_row_without_shared_bits(tmp_path):
    m = sample_matrix(tmp_path)
    assert m.shared_groups() == [] and len(m.groups) == len(m.columns)
    assert 'class="groups"' not in render_html(m, {})
    assert "Same bits" not in render_markdown(m)


def test_bit_groups_are_consistent_within():
    i, j, k = (ItemKey("m", n, "64x64", "fp32") for n in "ijk")
    assert bit_groups([{i: "1", j: "1"}, {i: "1", k: "2"}, {j: "1", k: "3"}]) == [[0, 1], [2]]
    assert bit_groups([{}, {}, {i: "1"}, {j: "1"}]) == [[0], [1], [2], [3]]  # nothing shared
    assert bit_groups([{i: "1"}, {i: "2"}, {i: "1"}]) == [[0, 2], [1]]


def test_matrix_from_dict_reads_schema_1_and_refuses_others(tmp_path):
    m = sample_matrix(tmp_path)
    data = json.loads(render_json(m))
    old = dict(data, schema_version=1)
    del old["groups"]
    old["columns"] = [{k: v for k, v in c.items() if k not in ("key", "kind", "identity")}
                      for c in data["columns"]]
    for row in old["rows"]:
        for cell in row["cells"].values():
            del cell["pixel_sha256"], cell["error"]
    back = matrix_from_dict(old)
    assert back.groups == tuple((j,) for j in range(len(m.columns)))
    assert back.cells[0][1].state == m.cells[0][1].state
    with pytest.raises(ValueError, match="schema_version 1 or 2"):
        matrix_from_dict(dict(data, schema_version=3))


# -- error cells -------------------------------------------------------------------------------
def test_error_cell_shows_type_and_message_escaped(tmp_path):
    err = outcome(
        "tiny-sd/red-circle/64x64/bf16", status="error", metrics=None, step_deltas=None,
        message="the generation raised",
        error={"type": "Runtime<Error>|x", "message": HOSTILE, "device": "cpu",
               "precision": "bf16"},
    )
    m = matrix_of(tmp_path, ("cpu-avx2", [outcome(), err]))
    cell = m.cells[1][0]
    assert cell.state is CellState.ERROR
    assert (cell.error.type, cell.error.device, cell.error.precision) == (
        "Runtime<Error>|x", "cpu", "bf16")
    assert cell_text(cell) == "! Runtime<Error>|x"
    assert m.totals()[CellState.ERROR] == 1 and m.counts(0)[CellState.ERROR] == 1

    md = render_markdown(m)
    assert r"| tiny-sd/red-circle/64x64/bf16 | ! Runtime\<Error\>\|x |" in md
    assert "Error cells (1)" in md and "1 within, 1 error" in md
    assert r"\<script\>alert(1)\</script\>" in md and "<script>" not in md
    assert "(device cpu, precision bf16)" in md

    page = render_html(m, {})
    assert "<script" not in page.lower()
    assert 'class="s-error"' in page and "! Runtime&lt;Error&gt;|x" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<h3>Error</h3>" in page and "<th>device</th><td>cpu</td>" in page
    assert "1 error" in page

    data = json.loads(render_json(m))
    assert data["rows"][1]["cells"]["cpu-avx2"]["error"]["type"] == "Runtime<Error>|x"
    assert data["columns"][0]["counts"]["error"] == 1
    assert matrix_from_dict(data) == m


def test_shortened_text_ends_in_an_ellipsis_within_its_limit():
    assert shortened("abcdef", 6) == "abcdef"
    assert shortened("abcdefg", 6) == "abc..."


def test_long_error_types_are_shortened_in_the_table(tmp_path):
    err = outcome(status="error", metrics=None, error={"type": "E" * 100, "message": "m"})
    cell = only_cell(matrix_of(tmp_path, ("cpu-avx2", [err])), "cpu-avx2")
    assert cell_text(cell) == "! " + "E" * 37 + "..."


def test_error_on_the_reference_column_own_class(tmp_path):
    outs = [
        outcome(check="reference", cls=REF, status="skipped", metrics=None, golden_class=REF),
        outcome(check="own-class", cls=REF, status="error", metrics=None,
                error={"type": "OutOfMemoryError", "message": "no memory"}),
    ]
    cell = only_cell(matrix_of(tmp_path, (REF, outs)), REF)
    assert cell.state is CellState.ERROR and cell.check == "own-class"
    assert cell.error.message == "no memory"


# -- golden-set columns ------------------------------------------------------------------------
def picture(seed: int = 0, size: int = 16) -> np.ndarray:
    """A smooth image (SSIM stays near 1 under a few changed pixels)."""
    y, x = np.mgrid[0:size, 0:size]
    blob = np.clip(255 - np.hypot(x - 5 - seed * 4, y - 8) * 30, 0, 255)
    return np.stack([blob, x * 8, y * 8 + seed * 50], axis=2).astype(np.uint8)


def nudged(image: np.ndarray) -> np.ndarray:
    out = image.copy()
    out[0, 0, 0] ^= 1
    out[5, 7, 1] ^= 1
    return out


def noise(seed: int = 1, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def golden_identity(cls: str, device: str, salt: str) -> Any:
    from conformance.identity import Identity

    return Identity(
        hardware_class=cls,
        features={"vendor": "amd", "model_name": device, "flags": ["avx2"],
                  "aten_level": "avx2", "env": {}},
        stack={"torch": "2.13.0"},
        probes={"linear-64x256x256/fp32": sha(salt)[:16]},
        precision_digests={"fp32": sha(salt)[:12]},
        battery_version=1,
    )


def record_set(root: Path, cls: str, images: dict[str, np.ndarray], model: str = "tiny-sd",
               device: str = "AMD EPYC", salt: str = "", diverge_at: int | None = None) -> Path:
    """A golden set of ``images`` (case name -> image, fp32, 16x16) as the suite records it."""
    from conformance.cases import Case, Item, Resolution
    from conformance.golden import GoldenStore
    from conformance.trace import StepTrace

    store = GoldenStore(root)
    extra: dict[str, Any] = {}
    if "identity" in inspect.signature(store.record).parameters:
        extra["identity"] = golden_identity(cls, device, salt or f"{cls}/{device}")
    for name, img in images.items():
        case = Case(name, model, f"prompt {name}", "", 1, 3, "euler", 4.0,
                    (Resolution(16, 16),), ("fp32",))
        off = [diverge_at is not None and s >= diverge_at for s in range(3)]
        trace = [
            StepTrace(s, 1.0, sha(f"{name}/{s}/{off[s]}")[:16], 0.1 * s + 0.05 * off[s],
                      1.0, -1.0, 1.0)
            for s in range(3)
        ]
        fingerprint = {"device_name": device, "threads": 1, "torch": "2.13.0",
                       "cpu_isa": cls, "salt": salt}
        store.record(Item(case, Resolution(16, 16), "fp32"), cls, img, trace, fingerprint,
                     "2026-01-01T00:00:00Z", f"conformance run --record [{name}]", **extra)
    return store.set_dir(model, cls) / "manifest.json"


def golden_root(tmp_path: Path) -> Path:
    root = tmp_path / "golden"
    a, b = picture(0), picture(1)
    record_set(root, "cpu-amd-default", {"a": a, "b": b})
    record_set(root, "cpu-amd-avx2", {"a": a, "b": nudged(b)})
    record_set(root, "cpu-amd-avx512", {"a": a, "b": noise()}, diverge_at=1)
    record_set(root, "cpu-amd-avx512+bf16", {"a": a, "b": b})
    (root / "README.md").write_text("not a set")
    return root


def golden_matrix(*roots: Path, **kwargs: Any) -> Matrix:
    return build_matrix([], golden=load_golden(roots, **kwargs))


def test_golden_root_makes_one_column_per_set(tmp_path):
    m = golden_matrix(golden_root(tmp_path))
    ref = "cpu-amd-default"
    assert m.reference_class == ref
    assert m.labels == (ref, "cpu-amd-avx512+bf16", "cpu-amd-avx2", "cpu-amd-avx512")
    assert m.groups == ((0, 1), (2,), (3,))
    assert all(c.kind == GOLDEN and c.key.startswith("golden:") for c in m.columns)
    assert [i.case for i in m.items] == ["a", "b"]
    states = [[c.state for c in row] for row in m.cells]
    assert states == [
        [CellState.IDENTICAL] * 4,
        [CellState.IDENTICAL, CellState.IDENTICAL, CellState.WITHIN, CellState.DIVERGED],
    ]
    within, diverged = m.cells[1][2], m.cells[1][3]
    assert within.metrics.ssim > 0.99 and within.metrics.max_abs == 1
    assert within.tier == "perceptual" and within.golden_class == ref
    assert "within the perceptual bounds" in within.message
    assert diverged.metrics.ssim < 0.5 and "SSIM: observed=" in diverged.message
    assert diverged.first_divergent_step == 1 and not diverged.step_deltas[1].equal
    assert diverged.status == "failed" and diverged.check == "golden-set"
    assert diverged.artifacts.golden.endswith("cpu-amd-default/b-16x16-fp32.png")
    assert diverged.artifacts.actual.endswith("cpu-amd-avx512/b-16x16-fp32.png")
    assert diverged.source.endswith("tiny-sd/cpu-amd-avx512/manifest.json")
    assert diverged.reproduce == "conformance run --record [b]"
    assert any("the reference is cpu-amd-default (the only class named ...-default...)" in n
               for n in m.notes)
    for col in m.columns:
        assert f"column {col.label}: golden set {col.sources[0]}" in m.notes
    assert matrix_from_dict(json.loads(render_json(m))) == m


@pytest.mark.parametrize(
    ("classes", "kwargs", "reference", "why"),
    [
        (("cpu-amd-avx2", "cpu-amd-avx512"), {}, "cpu-amd-avx2", "no class is named"),
        (("cpu-intel-default", "cpu-amd-default"), {}, "cpu-amd-default",
         "as 2 classes are named ...-default..."),
        (("cpu-amd-default", "cpu-amd-avx2"), {"reference_class": "cpu-amd-avx2"},
         "cpu-amd-avx2", "as asked"),
        (("cpu-amd-default", "cpu-amd-avx2"), {"preferred_reference": "cpu-amd-avx2"},
         "cpu-amd-avx2", "the class the results files compared with"),
        (("cpu-amd-default", "cpu-amd-avx2"), {"preferred_reference": "cuda-sm89"},
         "cpu-amd-default", "the only class named"),
    ],
)
def test_golden_reference_choice(tmp_path, classes, kwargs, reference, why):
    root = tmp_path / "golden"
    for cls in classes:
        record_set(root, cls, {"a": picture(0)})
    m = golden_matrix(root, **kwargs)
    assert m.reference_class == reference and m.columns[0].hardware_class == reference
    note = next(n for n in m.notes if n.startswith("golden sets: the reference is"))
    assert f"the reference is {reference} (" in note and why in note


def test_golden_reference_class_without_a_set(tmp_path):
    m = golden_matrix(golden_root(tmp_path), reference_class="cuda-sm89")
    assert m.reference_class == "cuda-sm89"
    assert all(c.state is CellState.MISSING for row in m.cells for c in row)
    assert "no golden set of the reference class cuda-sm89 to compare with" in m.cells[0][0].reason
    assert any("no golden set of the reference class cuda-sm89 (as asked)" in n for n in m.notes)


def test_golden_items_missing_on_either_side(tmp_path):
    root = tmp_path / "golden"
    record_set(root, "cpu-amd-default", {"a": picture(0), "b": picture(1)})
    record_set(root, "cpu-amd-avx2", {"a": picture(0), "c": picture(2)})
    m = golden_matrix(root)
    by_case = {item.case: row for item, row in zip(m.items, m.cells, strict=True)}
    assert by_case["b"][1].reason == "no golden for it in the cpu-amd-avx2 set"
    assert by_case["c"][1].reason == "no golden for it in the reference set (cpu-amd-default)"
    assert by_case["c"][0].reason == "no golden for it in the cpu-amd-default set"
    assert by_case["c"][1].pixel_sha256  # still known: it can group columns


def test_golden_sets_of_two_identities_are_two_columns(tmp_path):
    first, second = tmp_path / "g1", tmp_path / "g2"
    record_set(first, "cpu-amd-default", {"a": picture(0)})
    record_set(first, "cpu-amd-avx2", {"a": picture(0)}, model="tiny-flux")
    record_set(first, "cpu-amd-avx2", {"a": picture(0)})
    record_set(second, "cpu-amd-avx2", {"a": nudged(picture(0))}, device="AMD Ryzen")
    m = golden_matrix(first, second)
    assert m.labels == ("cpu-amd-default", "cpu-amd-avx2 · AMD EPYC", "cpu-amd-avx2 · AMD Ryzen")
    # one identity over two models: one column, two manifests
    assert len(m.columns[1].sources) == 2
    assert [c.state for c in m.cells[-1]] == [
        CellState.IDENTICAL, CellState.IDENTICAL, CellState.WITHIN
    ]


def test_golden_roots_of_one_identity_merge_later_wins(tmp_path):
    first, second = tmp_path / "g1", tmp_path / "g2"
    record_set(first, "cpu-amd-default", {"a": picture(0)})
    record_set(first, "cpu-amd-avx2", {"a": noise()}, salt="same")
    later = record_set(second, "cpu-amd-avx2", {"a": picture(0)}, salt="same")
    m = golden_matrix(first, second, first)
    assert len(m.columns) == 2 and m.cells[0][1].state is CellState.IDENTICAL
    assert m.cells[0][1].source == str(later)
    assert any(f"{later}: 1 golden of the same identity came from an earlier golden root" in n
               for n in m.notes)
    assert any("the same golden root as" in n for n in m.notes)


def test_golden_image_that_does_not_match_its_manifest_is_an_error_cell(tmp_path):
    root = golden_root(tmp_path)
    png_path = root / "tiny-sd" / "cpu-amd-avx2" / "b-16x16-fp32.png"
    png_path.write_bytes(png((1, 2, 3), 16))
    m = golden_matrix(root)
    cell = m.cells[1][m.labels.index("cpu-amd-avx2")]
    assert cell.state is CellState.ERROR and cell.error.type == "ManifestError"
    assert str(png_path) in cell.error.message and "does not match the manifest" in cell.message
    assert "! ManifestError" in render_markdown(m)
    # the reference image is checked too: every comparison with it is an error
    ref_png = root / "tiny-sd" / "cpu-amd-default" / "b-16x16-fp32.png"
    ref_png.write_bytes(png((1, 2, 3), 16))
    m = golden_matrix(root)
    assert [c.state for c in m.cells[1][2:]] == [CellState.ERROR, CellState.ERROR]
    assert str(ref_png) in m.cells[1][3].error.message


def test_golden_tolerances_decide_within(tmp_path, capsys):
    root = golden_root(tmp_path)
    strict = tmp_path / "strict.toml"
    strict.write_text(
        "schema_version = 1\n[close.default]\nmae_max = 0.5\n"
        "[perceptual.default]\nmax_abs_max = 0\n[fidelity.default]\nmae_max = 16.0\n"
    )
    out = tmp_path / "m.json"
    code, _, err = run([str(root), "--json", str(out), "--tolerances", str(strict)], capsys)
    assert code == 0, err
    data = json.loads(out.read_text())
    assert data["rows"][1]["cells"]["cpu-amd-avx2"]["state"] == "diverged"
    bad = tmp_path / "bad.toml"
    bad.write_text("schema_version = 1\n")
    code, _, err = run([str(root), "--json", "-", "--tolerances", str(bad)], capsys)
    _assert_one_line_error(code, err, bad, "tolerance file: key close is missing")


def test_bad_manifest_in_a_golden_root_is_one_line(tmp_path, capsys):
    root = golden_root(tmp_path)
    manifest = root / "tiny-sd" / "cpu-amd-avx2" / "manifest.json"
    manifest.write_text("{")
    code, _, err = run([str(root), "--markdown", "-"], capsys)
    _assert_one_line_error(code, err, manifest, "not valid JSON")


@pytest.mark.parametrize(
    ("where", "text"),
    [
        ("tiny-sd/cpu-amd-default", "it is one golden set: give the golden root"),
        ("tiny-sd", "it holds the golden sets of one model: give the folder above it"),
    ],
)
def test_golden_folder_below_the_root_says_where_the_root_is(tmp_path, capsys, where, text):
    root = golden_root(tmp_path)
    code, _, err = run([str(root / where), "--markdown", "-"], capsys)
    _assert_one_line_error(code, err, root / where, text)


def test_results_and_golden_roots_in_one_call(tmp_path, capsys):
    root = golden_root(tmp_path)
    entries = json.loads((root / "tiny-sd" / "cpu-amd-avx2" / "manifest.json").read_text())
    shas = {e["case"]: e["pixel_sha256"] for e in entries["entries"].values()}
    outs = [
        outcome(f"tiny-sd/{case}/16x16/fp32", cls="cpu-amd-avx2", pixel_sha256=shas[case],
                golden_class="cpu-amd-avx512")
        for case in "ab"
    ]
    res = results(tmp_path / "run" / "results.json", "cpu-amd-avx2", outs)
    out = tmp_path / "out"
    code, md, err = run([str(res), str(root), "--markdown", "-", "--html", str(out / "m.html"),
                         "--json", str(out / "m.json")], capsys)
    assert code == 0, err
    m = matrix_from_dict(json.loads((out / "m.json").read_text()))
    # the runs compared with cpu-amd-avx512: the golden sets do too
    assert m.reference_class == "cpu-amd-avx512"
    assert m.labels[:2] == ("cpu-amd-avx512", "cpu-amd-avx2")
    run_col, golden_col = m.labels.index("cpu-amd-avx2"), m.labels.index("cpu-amd-avx2 (golden)")
    assert m.columns[run_col].kind == RUN and m.columns[golden_col].kind == GOLDEN
    assert m.group_of(run_col) == (run_col, golden_col)  # the run made the set's bits
    assert f"column cpu-amd-avx2: results file {res}" in m.notes
    assert any(n.startswith("column cpu-amd-avx2 (golden): golden set ") for n in m.notes)
    assert "the class the results files compared with" in md
    page = (out / "m.html").read_text()
    assert page.count("data:image/png;base64,") >= 2  # golden PNGs lie in the root: embedded
    assert "this set&#x27;s golden" in page and "reference golden" in page
    assert "<th>manifest</th>" in page


def test_group_row_copes_with_columns_that_are_not_adjacent(tmp_path):
    from dataclasses import replace

    m = grouped_matrix(tmp_path)
    scattered = replace(m, groups=((0, 2), (1,), (3,), (4,)))
    row = re.search(r'<tr class="groups">(.*?)</tr>', render_html(scattered, {}))[1]
    assert row.count('colspan="1" class="grp"') == 2 and row.count("<th></th>") == 3


def test_several_reference_sets_of_other_identities_are_noted(tmp_path):
    first, second = tmp_path / "g1", tmp_path / "g2"
    record_set(first, "cpu-amd-default", {"a": picture(0)})
    record_set(second, "cpu-amd-default", {"a": nudged(picture(0))}, device="AMD Ryzen")
    m = golden_matrix(first, second)
    assert m.labels == ("cpu-amd-default · AMD EPYC", "cpu-amd-default · AMD Ryzen")
    assert [c.state for c in m.cells[0]] == [CellState.IDENTICAL, CellState.WITHIN]
    assert any("2 sets of the reference class cpu-amd-default have different identities" in n
               for n in m.notes)


def test_runs_and_golden_sets_with_other_references_are_noted(tmp_path):
    root = golden_root(tmp_path)
    run_ = load_run(results(tmp_path / "r.json", "cpu-amd-avx2",
                            [outcome("tiny-sd/a/16x16/fp32", golden_class="cuda-sm89")]))
    golden = load_golden([root], preferred_reference="cuda-sm89")
    assert golden.reference_class == "cpu-amd-default"
    m = build_matrix([run_], golden=golden)
    assert m.reference_class == "cuda-sm89"
    assert "the golden sets are compared with cpu-amd-default, the runs with cuda-sm89" in m.notes


def test_unreadable_golden_folders_are_one_line(tmp_path, capsys, monkeypatch):
    from conformance.golden import GoldenStore

    root = golden_root(tmp_path)

    def refuse(self, model):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(GoldenStore, "classes", refuse)
    code, _, err = run([str(root), "--markdown", "-"], capsys)
    _assert_one_line_error(code, err, root / "tiny-sd", "cannot read: Permission denied")
    original = Path.iterdir

    def no_listing(self):
        if self == root:
            raise PermissionError(13, "Permission denied")
        return original(self)

    monkeypatch.setattr(Path, "iterdir", no_listing)
    code, _, err = run([str(root), "--markdown", "-"], capsys)
    _assert_one_line_error(code, err, root, "cannot read the golden root: Permission denied")


def test_localize_profile_is_plotted_along_the_network_and_round_trips(tmp_path):
    """A --localize outcome's per-block errors become the cell's profile, a log-scale bar
    per block in the HTML panel (the first differing block marked), kept by the JSON."""
    loc = {"message": "first divergent module: unet.mid_block", "section": "step0",
           "first_divergent_module": "unet.mid_block", "blocks_section": "step0",
           "blocks": [{"name": "unet.conv_in", "bits": "equal", "rel_err": 0.0},
                      {"name": "unet.mid_block", "bits": "differ", "rel_err": 1e-6},
                      {"name": "unet.up_blocks.0", "bits": "differ", "rel_err": 3e-4},
                      {"name": "unet.conv_out", "bits": "differ", "rel_err": "inf"}]}
    m = matrix_of(tmp_path, ("cpu-avx2", [outcome(localization=loc)]))
    cell = m.cells[0][0]
    assert [p.name for p in cell.profile] == ["unet.conv_in", "unet.mid_block",
                                               "unet.up_blocks.0", "unet.conv_out"]
    assert cell.profile[3].rel_err == math.inf and cell.profile_of == "reference, step0"
    page = render_html(m, {})
    assert "Per-module error along the network" in page
    assert "<title>unet.conv_in: equal bits</title>" in page
    assert 'fill="#e5484d"><title>unet.mid_block' in page  # the first that differs
    data = json.loads(render_json(m))
    assert data["rows"][0]["cells"]["cpu-avx2"]["profile"][3] == ["unet.conv_out", "differ",
                                                                  None]
    back = matrix_from_dict(data).cells[0][0]
    assert [p.name for p in back.profile] == [p.name for p in cell.profile]


def test_malformed_profile_blocks_are_refused(tmp_path):
    bad = outcome(localization={"message": "m", "blocks": [{"name": 3, "bits": "equal"}]})
    path = results(tmp_path / "r.json", "cpu-avx2", [bad])
    with pytest.raises(ConformanceInputError,
                       match=r"localization.blocks\[0\]\.name must be a string"):
        load_run(path)


# -- bit-equivalence per precision -------------------------------------------------------------
def _column(tmp_path: Path, name: str, digests: dict[str, str], shas: dict[str, str]) -> Any:
    cls = f"cpu-{name}-avx2"
    outs = [outcome(f"tiny-sd/red-circle/64x64/{p}", cls=cls, pixel_sha256=sha * 64)
            for p, sha in shas.items()]
    ident = identity(f"{name}00000000"[:12], cls) | {"precision_digests": digests}
    return load_run(results(tmp_path / f"{name}.json", cls, outs, schema_version=2,
                            identity=ident))


def test_columns_group_into_bit_equivalence_classes_per_precision(tmp_path):
    """fp32: a and b share bits (and digests), c does not; bf16: nobody shares."""
    a = _column(tmp_path, "aaa", {"fp32": "d1", "bf16": "e1"}, {"fp32": "1", "bf16": "2"})
    b = _column(tmp_path, "bbb", {"fp32": "d1", "bf16": "e2"}, {"fp32": "1", "bf16": "3"})
    c = _column(tmp_path, "ccc", {"fp32": "d3", "bf16": "e3"}, {"fp32": "4", "bf16": "5"})
    m = build_matrix([a, b, c])
    groups = dict(m.precision_groups)
    assert set(groups) == {"fp32"}
    assert [[m.columns[j].label for j in g] for g in groups["fp32"]] == [
        ["cpu-aaa-avx2", "cpu-bbb-avx2"]]
    assert "fp32: same bits: cpu-aaa-avx2, cpu-bbb-avx2" in m.notes
    assert not any("broken prediction" in n for n in m.notes)
    md = render_markdown(m)
    assert "Same bits per precision (the bit-equivalence classes):" in md
    assert "- fp32: cpu-aaa-avx2, cpu-bbb-avx2" in md
    back = matrix_from_dict(json.loads(render_json(m)))
    assert back.precision_groups == m.precision_groups


def test_a_shared_digest_with_different_images_is_a_broken_prediction(tmp_path):
    a = _column(tmp_path, "aaa", {"fp32": "d1"}, {"fp32": "1"})
    b = _column(tmp_path, "bbb", {"fp32": "d1"}, {"fp32": "2"})
    m = build_matrix([a, b])
    assert any(n.startswith("broken prediction: cpu-aaa-avx2 and cpu-bbb-avx2 share the fp32 "
                            "digest d1 but 1 item differ (tiny-sd/red-circle/64x64/fp32)")
               for n in m.notes), m.notes


def test_digests_of_other_probe_batteries_predict_nothing(tmp_path):
    a = _column(tmp_path, "aaa", {"fp32": "d1"}, {"fp32": "1"})
    b = _column(tmp_path, "bbb", {"fp32": "d1"}, {"fp32": "2"})
    b = replace(b, identity=tuple((k, "2" if k == "battery_version" else v)
                                  for k, v in b.identity))
    assert not any("broken prediction" in n for n in build_matrix([a, b]).notes)


@pytest.mark.parametrize(
    ("mine", "theirs", "same"),
    [
        (("d1", 1), ("d1", 1), True),
        (("d1", 1), ("d2", 1), False),
        (("d1", 1), ("d1", 2), False),
        ((None, 1), (None, 1), False),
    ],
)
def test_the_rule_of_a_shared_digest(mine, theirs, same):
    """One rule for the matrix's notes and for ``validate`` (through ``equal_digest``)."""
    assert predicts_same_bits(*mine, *theirs) is same


def test_the_set_that_decided_an_own_class_check_reaches_the_cell(tmp_path):
    cls = "cpu-aaa-avx2"
    own = outcome(check="own-class", cls=cls, golden_class="cpu-intel-avx512",
                  golden_choice={"by": "identity", "sharing": [], "differs": []})
    m = build_matrix([load_run(results(tmp_path / "r.json", cls, [outcome(cls=cls), own]))])
    check = next(c for c in m.cells[0][0].checks if c.check == "own-class")
    assert (check.golden_class, check.chosen_by) == ("cpu-intel-avx512", "identity")
    back = matrix_from_dict(json.loads(render_json(m)))
    assert back.cells[0][0].checks == m.cells[0][0].checks
    assert "own-class passed (exact) via cpu-intel-avx512 (identity)" in render_html(m, {})
