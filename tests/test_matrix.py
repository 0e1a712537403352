"""The conformance matrix: cell logic, merging, ordering, renderers, the command, a browser."""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conformance.errors import ConformanceInputError
from conformance.report import command
from conformance.report.matrix import (
    CellState,
    ItemKey,
    Matrix,
    StepDelta,
    build_matrix,
    image_paths,
    item_key,
    load_run,
    matrix_from_dict,
    precision_key,
)
from conformance.report.render import cell_text, md_escape, render_json, render_markdown
from conformance.report.render_html import render_html, step_plot_svg

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
        "started_at": started_at, "finished_at": started_at, "stats": {}, "summary": {},
        "outcomes": outcomes,
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


def test_error_without_metrics_is_diverged(tmp_path):
    err = outcome(status="error", metrics=None, message="golden is stale", step_deltas=None)
    cell = only_cell(matrix_of(tmp_path, ("cpu-avx2", [err])), "cpu-avx2")
    assert cell.state is CellState.DIVERGED
    assert cell_text(cell) == "x error"
    assert cell.message == "golden is stale"


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
    ], label="cpu-default t2")
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
    assert any("no results file of the reference class" in n for n in m.notes)


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
    assert md_escape("a|b\n<c> & *d* [e](f) `g`") == r"a\|b \<c\> &amp; \*d\* \[e\](f) \`g\`"


def test_markdown_of_an_empty_matrix():
    assert "No outcomes" in render_markdown(build_matrix([]))


def test_json_round_trip(tmp_path):
    m = sample_matrix(tmp_path)
    data = json.loads(render_json(m))
    assert data["columns"][1]["counts"] == {
        "identical": 0, "within": 1, "diverged": 1, "missing": 1
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
    images = command.read_images(image_paths(m), [tmp_path])
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
        "not embedded: outside the results files' folders"
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
    assert run.outcomes[0].artifacts == {
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
    assert json.loads((outs / "m.json").read_text())["schema_version"] == 1
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
    ("not-utf8", b"\xff\xfe\x00", "cannot read results file"),
    ("schema", {"schema_version": 99, "outcomes": []}, "not a results file of schema_version 1"),
    ("list", [1, 2], "not a results file of schema_version 1"),
    ("no-class", {"schema_version": 1, "outcomes": []}, "hardware_class must be"),
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
]
BAD_FIELDS: list[tuple[dict[str, Any], str]] = [
    ({"status": "great"}, "status 'great' is not one of"),
    ({"check": "vibes"}, "check 'vibes' is not one of"),
    ({"id": 5}, "id must be a non-empty string"),
    ({"precision": ""}, "precision must be a non-empty string"),
    ({"tier": 3}, "tier must be a string or null"),
    ({"variant": ["a"]}, "variant must be a string or null"),
    ({"message": None}, "message must be a string"),
    ({"seconds": "fast"}, "seconds must be a number"),
    ({"peak_memory_mb": True}, "peak_memory_mb must be a number or null"),
    ({"first_divergent_step": 1.5}, "first_divergent_step must be an integer or null"),
    ({"metrics": "good"}, "metrics must be an object or null"),
    ({"metrics": {"ssim": 1.0}}, "metrics.identical must be true or false"),
    ({"metrics": metrics() | {"ssim": "high"}}, "metrics.ssim must be a number or null"),
    ({"artifacts": {"actual": 3}}, "artifacts must map names to path strings"),
    ({"artifacts": None}, "artifacts must map names to path strings"),
    ({"step_deltas": {"0": 1}}, "step_deltas must be a list or null"),
    ({"step_deltas": [{"step": 0, "equal": 1, "mean_delta": 0, "std_delta": 0}]},
     "step_deltas[0] must be"),
    ({"by_class": []}, "by_class must be an object"),
    ({"by_class": {"cpu-x": None}}, "by_class['cpu-x'] must be an object"),
    ({"by_class": {"cpu-x": {"error": 3}}}, "by_class['cpu-x'].error must be a string"),
    ({"by_class": {"cpu-x": metrics() | {"first_divergent_step": "3"}}},
     "by_class['cpu-x'].first_divergent_step must be an integer or null"),
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


def test_directory_as_results_file(tmp_path, capsys):
    code, _, err = run([str(tmp_path), "--json", "-"], capsys)
    _assert_one_line_error(code, err, tmp_path, "cannot read results file")


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
    images = command.read_images(image_paths(m), [tmp_path])
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
