"""One pytester test (or more) per command-line option of the plugin, error branches included.

Runs the real conformance test modules (``--pyargs conformance``) on the shipped tiny models
with a small case file (32x32, 2 steps) so each run takes about a second.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil

import numpy as np
import pytest
import torch

from conformance import PACKAGE_DIR
from conformance.cases import load_cases
from conformance.golden import GoldenStore
from conformance.identity import Identity
from tests.runs import OWN, SMALL_CASES, by_check, results_of


# --device -----------------------------------------------------------------------------
def test_device_bad_form_is_usage_error(run):
    r = run("--device", "gpu0")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(["*argument --device: 'gpu0' is not a device; accepted: cpu, cuda*"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_not_available_is_usage_error(run):
    r = run("--device", "cuda:1")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(["*--device cuda:1: device 'cuda:1' is not available*available: cpu*"])


def test_device_cpu_header_prints_fingerprint(run):
    r = run("--device", "cpu", "--collect-only")
    r.stdout.fnmatch_lines([f"conformance: class={OWN} device=cpu * threads=1 *",
                            "conformance: python *, torch *, diffusers *, transformers *"])


# --threads ----------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["0", "two", "-3"])
def test_threads_rejects_bad_values(run, value):
    r = run("--threads", value)
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines([f"*argument --threads: '{value}' is not a thread count*"])


def test_threads_other_count_is_close_tier(run):
    recorded = run("--record", "--model", "tiny-sd", "--precision", "fp32")
    recorded.assert_outcomes(passed=1, skipped=1)
    r = run("--threads", "2", "--model", "tiny-sd", "--precision", "fp32")
    own = by_check(r, "own-class")["tiny-sd/dot/32x32/fp32"]
    assert own["tier"] == "close"
    # the measured identity says why: the thread-split reductions and the declared count
    assert "fp32 reduction probes differ" in own["message"], own["message"]
    assert "threads 2 here, 1 in the golden's" in own["message"]
    assert results_of(r)["fingerprint"]["threads"] == 2
    torch.set_num_threads(1)


# --model / --precision / --resolution -----------------------------------------------
@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--model", "Sd99", "'Sd99' is not a model name (lower-case letters, digits and "
         "'-'); built-in: tiny-sd, tiny-flux, sd15"),
        ("--model", ",", "empty model list"),
        ("--precision", "fp64", "unknown precision 'fp64'; accepted: fp32, bf16"),
        ("--resolution", "64*64", "'64*64' is not a resolution; write WIDTHxHEIGHT"),
        ("--resolution", "", "empty resolution list"),
    ],
)
def test_filter_errors(run, flag, value, message):
    r = run(flag, value)
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines([f"*argument {flag}: {message}*"])


def test_a_model_no_case_uses_is_a_usage_error_naming_the_case_file(run):
    r = run("--model", "sd99")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(["*--model sd99: no case in *cases.toml uses it; the cases use *"])


@pytest.mark.parametrize(
    ("flag", "value", "ids"),
    [
        ("--model", "tiny-flux", {"tiny-flux/flux-dot/32x32/fp32"}),
        ("--precision", "bf16", {"tiny-sd/dot/32x32/bf16"}),
        ("--resolution", "32x32", {"tiny-sd/dot/32x32/fp32", "tiny-sd/dot/32x32/bf16",
                                   "tiny-flux/flux-dot/32x32/fp32"}),
    ],
)
def test_filters_select_items(run, flag, value, ids):
    r = run(flag, value, "--collect-only", "-q")
    got = {line.split("[", 1)[1].rstrip("]") for line in r.outlines if "::test_repeatable[" in line}
    assert got == ids


def test_filters_matching_nothing_is_an_error(run):
    r = run("--resolution", "64x64")
    assert r.ret == pytest.ExitCode.USAGE_ERROR  # before collection, not after the run
    r.stderr.fnmatch_lines(["*--resolution 64x64*"])


# --record / --golden-dir / --force ------------------------------------------------------
def test_missing_golden_skips_with_reason_and_command(run):
    r = run("--model", "tiny-sd", "--precision", "fp32")
    r.assert_outcomes(passed=1, skipped=2)
    r.stdout.fnmatch_lines([
        "*no golden for tiny-sd/dot/32x32/fp32: *golden/tiny-sd holds no golden set; record "
        f"this machine's ({OWN}) with: cd * && pytest --pyargs conformance --device cpu "
        "--threads 1 --cases * --record --model tiny-sd*",
    ])


def test_record_is_reported_as_recorded_and_then_matches(run):
    r = run("--record")
    r.stdout.fnmatch_lines(["*own-class: 3 recorded*", "*3 passed, 3 skipped*3 recorded in*"])
    assert "3 passed" in r.stdout.str()  # the repeatability items
    store = GoldenStore(r.golden)
    assert store.classes("tiny-sd") == [OWN]
    r2 = run()
    r2.stdout.fnmatch_lines([f"conformance: tiny-sd goldens: {OWN}; {OWN}: 2 recorded up to "
                             "*with torch *, diffusers *, 1 thread(s)"])
    r2.assert_outcomes(passed=6, skipped=3)
    assert {o["tier"] for o in by_check(r2, "own-class").values()} == {"exact"}


def test_record_never_overwrites(run):
    run("--record")
    r = run("--record")
    r.assert_outcomes(passed=6, skipped=3)  # existing goldens are checked, not replaced
    assert "recorded" not in r.stdout.str().splitlines()[-1]


def test_force_requires_record(run):
    r = run("--force")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(["*--force only applies with --record*"])


def test_record_force_replaces(run):
    run("--record")
    r = run("--record", "--force")
    r.stdout.fnmatch_lines(["*3 recorded*"])
    assert all(o["message"].startswith("replaced ") for o in by_check(r, "own-class").values())


def test_golden_dir_points_the_lookup(run, tmp_path):
    r = run("--record", "--model", "tiny-flux")
    assert (r.golden / "tiny-flux" / OWN / "manifest.json").is_file()
    assert not (r.golden / "tiny-sd").exists()


# failures -------------------------------------------------------------------------------
def _plant_wrong_golden(golden_dir, item_id, cases_path, fingerprint=None):
    """A golden whose pixels differ from what the item generates (recorded via the store)."""
    item = next(i for i in load_cases(cases_path).items() if i.id == item_id)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (item.resolution.height, item.resolution.width, 3), np.uint8)
    from conformance.hardware import fingerprint as fp

    # as the suite records: deterministic algorithms on (whatever this process has set)
    recorded = fp("cpu", 1) | {"deterministic": True}
    GoldenStore(golden_dir).record(item, OWN, image, [], fingerprint or recorded,
                                   "2026-01-01T00:00:00Z", "test")


def test_failure_shows_metrics_artifacts_step_and_reproduce(run, tmp_path):
    _plant_wrong_golden(tmp_path / "golden", "tiny-sd/dot/32x32/fp32", tmp_path / "cases.toml")
    r = run("--model", "tiny-sd", "--precision", "fp32")
    r.assert_outcomes(passed=1, failed=1, skipped=1)
    r.stdout.fnmatch_lines([
        f"*tiny-sd/dot/32x32/fp32 differs from the {OWN} golden at the exact tier*",
        "*the decoded pixels differ*",
        "*pixel_sha256: observed=* expected=*",
        "*metrics: MAE=* SSIM=* pHash_d=*",
        "*first divergent step: 0 of 0*",
        "*images: actual=*actual.png, golden=*golden.png, diff=*diff.png*",
        "*case: model=tiny-sd seed=3 steps=2 scheduler=euler*",
        "*reproduce: *pytest --pyargs conformance -k "
        "'test_own_class_golden[[]tiny-sd/dot/32x32/fp32[]]' --device cpu*",
    ])
    own = by_check(r, "own-class")["tiny-sd/dot/32x32/fp32"]
    assert own["status"] == "failed" and own["tier"] == "exact"
    # the printed command runs where it is printed, and reproduces the failure
    import subprocess

    again = subprocess.run(["bash", "-c", own["reproduce"] + " -p no:cacheprovider"],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 1, again.stdout[-2000:] + again.stderr[-2000:]
    assert "1 failed" in again.stdout.splitlines()[-1]
    # every option that changes what is compared is in the reproducing command
    assert f"--golden-dir {tmp_path / 'golden'}" in own["reproduce"]
    assert f"--cases {tmp_path / 'cases.toml'}" in own["reproduce"]
    for path in own["artifacts"].values():
        assert path.endswith(".png") and path.startswith("artifacts/")  # results-relative
        assert (r.results_path.parent / "artifacts").exists()
    from PIL import Image

    assert Image.open(r.results_path.parent / own["artifacts"]["diff"]).size == (32, 32)
    # NVIDIA FLIP's error map beside the plain difference, and the matrix panel shows it
    assert set(own["artifacts"]) == {"actual", "golden", "diff", "flip"}
    assert Image.open(r.results_path.parent / own["artifacts"]["flip"]).size == (32, 32)
    from conformance.cli import main

    html = tmp_path / "m.html"
    # (this class as the reference: its cell is the own-class comparison that failed)
    assert main(["matrix", str(r.results_path), "--html", str(html),
                 "--reference-class", OWN]) == 0
    assert "FLIP error" in html.read_text()


def test_stale_golden_is_an_error_not_a_skip(run, tmp_path):
    run("--record", "--model", "tiny-sd", "--precision", "fp32")
    changed = tmp_path / "changed.toml"
    changed.write_text(SMALL_CASES.replace("seed = 3", "seed = 4"))
    r = run("--model", "tiny-sd", "--precision", "fp32", cases_file=changed)
    r.assert_outcomes(passed=1, failed=1, skipped=1)
    r.stdout.fnmatch_lines(["*golden for tiny-sd/dot/32x32/fp32 is stale*seed: 3 -> 4*--force*"])
    assert by_check(r, "own-class")["tiny-sd/dot/32x32/fp32"]["status"] == "error"
    r = run("--model", "tiny-sd", "--precision", "fp32", "--record", "--force",
            cases_file=changed)
    assert by_check(r, "own-class")["tiny-sd/dot/32x32/fp32"]["status"] == "recorded"


def test_broken_manifest_is_a_failure_naming_the_file(run):
    r = run("--record", "--model", "tiny-flux")
    manifest = r.golden / "tiny-flux" / OWN / "manifest.json"
    manifest.write_text(manifest.read_text()[:50])
    r = run("--model", "tiny-flux")
    r.assert_outcomes(passed=1, failed=1, skipped=1)
    r.stdout.fnmatch_lines([f"*{manifest}: not valid JSON (truncated or edited?)*"])


# --reference-class / --tolerances ---------------------------------------------------------
def test_reference_class_bad_value(run):
    r = run("--reference-class", "gpu")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(["*argument --reference-class: 'gpu' is not a hardware class*"])


def test_reference_class_is_compared_at_perceptual_tier(run, tmp_path):
    run("--record", "--model", "tiny-flux")
    other = "cpu-avx2" if OWN != "cpu-avx2" else "cpu-default"
    src = tmp_path / "golden" / "tiny-flux" / OWN
    dst = tmp_path / "golden" / "tiny-flux" / other
    dst.mkdir()
    for f in src.iterdir():
        text = f.read_bytes()
        if f.name == "manifest.json":
            data = json.loads(text.replace(OWN.encode(), other.encode()))
            data["identity"].pop("digest")  # the class is part of it: computed anew
            data["identity"] = Identity.from_dict(data["identity"]).to_dict()
            text = json.dumps(data).encode()
        (dst / f.name).write_bytes(text)
    r = run("--model", "tiny-flux", "--reference-class", other)
    r.assert_outcomes(passed=3)
    ref = by_check(r, "reference")["tiny-flux/flux-dot/32x32/fp32"]
    assert ref["tier"] == "perceptual" and ref["golden_class"] == other
    r = run("--model", "tiny-flux", "--reference-class", OWN)
    r.stdout.fnmatch_lines([f"*this machine is the reference class {OWN}*"])


def test_tolerances_file_errors_are_usage_errors(run, tmp_path):
    bad = tmp_path / "tol.toml"
    bad.write_text("schema_version = 1\n[close.default]\nmae = 1\n")
    r = run("--tolerances", str(bad))
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(
        [f"*{bad}: tolerance file: unknown key close[[]'default'[]].mae (accepted: mae_max*"])
    r = run("--tolerances", str(tmp_path / "missing.toml"))
    r.stderr.fnmatch_lines(["*argument --tolerances: * is not an existing file*"])


def test_tolerances_bound_the_close_tier(run, tmp_path):
    _plant_wrong_golden(tmp_path / "golden", "tiny-sd/dot/32x32/fp32", tmp_path / "cases.toml",
                        fingerprint={"threads": 7})
    loose = tmp_path / "loose.toml"
    loose.write_text("schema_version = 1\n[close.default]\nmae_max = 255.0\n"
                     "[perceptual.default]\nmae_max = 255.0\n[fidelity.default]\nmae_max = 255.0\n")
    r = run("--model", "tiny-sd", "--precision", "fp32", "--tolerances", str(loose))
    r.assert_outcomes(passed=2, skipped=1)
    strict = tmp_path / "strict.toml"
    strict.write_text("schema_version = 1\n[close.default]\nmae_max = 0.5\n"
                      "[perceptual.default]\nmae_max = 0.5\n[fidelity.default]\nmae_max = 0.5\n")
    r = run("--model", "tiny-sd", "--precision", "fp32", "--tolerances", str(strict))
    r.assert_outcomes(passed=1, failed=1, skipped=1)
    r.stdout.fnmatch_lines(
        ["*at the close tier (not exact because *", "*MAE: observed=*, expected <= 0.5*"]
    )


# --cases / --results ------------------------------------------------------------------
def test_cases_file_errors(run, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(SMALL_CASES.replace('scheduler = "euler"', 'scheduler = "heun"'))
    r = run(cases_file=bad)
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(
        [f"*{bad}: case file: cases[[]'dot'[]].scheduler 'heun' is not one of euler, *"])
    r = run("--cases", str(tmp_path / "nope.toml"), cases_file=None)
    r.stderr.fnmatch_lines(["*argument --cases: * is not an existing file*"])


def test_results_file_schema(run):
    r = run("--record")
    doc = results_of(r)
    assert doc["schema_version"] == 2
    assert doc["identity"]["class"] == OWN and len(doc["identity"]["digest"]) == 12
    assert doc["hardware_class"] == OWN and doc["fingerprint"]["hardware_class"] == OWN
    assert doc["stats"]["model_loads"] == 3  # tiny-sd fp32, tiny-sd bf16, tiny-flux fp32
    st = doc["stats"]
    # the step callback's digests are timed inside the pipeline calls they are part of
    assert 0 < st["trace_seconds"] < st["generate_seconds"]
    assert st["vae_check_seconds"] == 0  # no VAE check in this run
    required = {"id", "model", "case", "resolution", "precision", "hardware_class", "status",
                "tier", "golden_class", "metrics", "seconds"}
    assert len(doc["outcomes"]) == 9
    for o in doc["outcomes"]:
        assert required <= set(o)
    r.stdout.fnmatch_lines([f"*results: {r.results_path}*"])


def test_results_merged_across_xdist_workers(run):
    run("--record")
    r = run("-n", "2")
    doc = results_of(r)
    assert len(doc["outcomes"]) == 9
    assert doc["stats"]["processes"] == 2
    assert {o["status"] for o in doc["outcomes"]} == {"passed", "skipped"}
    assert doc["stats"]["trace_seconds"] > 0


def test_merged_stats_sum_every_process():
    from conformance.session import merge_stats

    a = {"model_loads": 2, "load_seconds": 0.5, "generations": 3, "generate_seconds": 2.0,
         "trace_seconds": 0.1, "vae_check_seconds": 0.25, "reused": 1, "loaded": ["x/fp32"],
         "denoiser_bytes": {"x/fp32": 10}}
    b = {"model_loads": 1, "load_seconds": 0.25, "generations": 2, "generate_seconds": 1.0,
         "trace_seconds": 0.05, "loaded": ["y/bf16"], "denoiser_bytes": {"y/bf16": 5}}
    st = merge_stats([a, b])  # b: a process that ran no VAE check and reused nothing
    assert st == {"model_loads": 3, "load_seconds": 0.75, "generations": 5,
                  "generate_seconds": 3.0, "trace_seconds": 0.15, "vae_check_seconds": 0.25,
                  "reused": 1, "loaded": ["x/fp32", "y/bf16"],
                  "denoiser_bytes": {"x/fp32": 10, "y/bf16": 5}, "processes": 2}


# ini and environment ----------------------------------------------------------------------
def test_ini_and_environment_values(run, pytester, monkeypatch):
    pytester.makeini("[pytest]\nconformance_threads = 3\n")
    r = run("--collect-only", "-c", str(pytester.path / "tox.ini"), "--rootdir", str(pytester.path))
    r.stdout.fnmatch_lines(["*threads=3*"])
    monkeypatch.setenv("CONFORMANCE_THREADS", "zero")
    pytester.makeini("[pytest]\n")
    r = run("--collect-only", "-c", str(pytester.path / "tox.ini"), "--rootdir", str(pytester.path))
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(["*environment variable CONFORMANCE_THREADS: 'zero' is not a thread*"])
    torch.set_num_threads(1)


# --deviations -----------------------------------------------------------------------------
def test_deviations_become_marks_and_unused_ones_are_reported(run, tmp_path):
    run("--record")
    dev = tmp_path / "dev.toml"
    dev.write_text(
        "schema_version = 1\n"
        f'[[deviation]]\nclasses = ["{OWN}"]\nids = ["tiny-sd/dot/32x32/bf16"]\n'
        'checks = ["own-class"]\naction = "xfail"\nreason = "bf16 differs here"\n'
        '[[deviation]]\nclasses = ["*"]\nids = ["tiny-flux/*"]\nchecks = ["repeatable"]\n'
        'action = "skip"\nreason = "not this run"\n'
        '[[deviation]]\nclasses = ["cuda-*"]\nids = ["*"]\naction = "skip"\nreason = "gpu"\n'
        '[[deviation]]\nclasses = ["*"]\nids = ["tiny-sd/gone/*"]\naction = "skip"\n'
        'reason = "a removed case"\n'
    )
    r = run("--deviations", str(dev), "-rxs")
    r.assert_outcomes(passed=4, skipped=4, xpassed=1)
    r.stdout.fnmatch_lines([
        f"*{dev}: deviation #4 (classes=?'*'?, ids=?'tiny-sd/gone/*'?*names no collected "
        "test (a renamed or removed case?)*",
        f"*known deviation on {OWN}: not this run*",
    ])
    # written for another machine (the GPU entry) is not stale; a filtered run says nothing
    assert "deviation #3" not in r.stdout.str()
    r = run("--deviations", str(dev), "--model", "tiny-sd")
    assert "names no collected test" not in r.stdout.str()


def test_deviations_file_errors(run, tmp_path):
    bad = tmp_path / "dev.toml"
    bad.write_text('schema_version = 1\n[[deviation]]\nclasses = ["*"]\n')
    r = run("--deviations", str(bad))
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines([f"*{bad}: deviations file: key deviation[[]0[]].ids is missing*"])


# invariance and fidelity ----------------------------------------------------------------------
def test_invariance_items_one_per_case_per_variant(run):
    r = run("--collect-only", "-q", modules=("test_invariance.py",))
    ids = [line.split("[", 1)[1].rstrip("]") for line in r.outlines if "::test_invariant[" in line]
    from conformance.generate import VARIANTS

    assert len(ids) == 2 * len(VARIANTS)  # two cases; fp32 at the first resolution
    assert all("/fp32-" in i for i in ids)
    assert "tiny-sd/dot/32x32/fp32-batch-4" in ids


def test_invariance_and_fidelity_outcomes(run, tmp_path):
    # 2-step 32x32 images are far from what the shipped fidelity bounds were calibrated on
    loose = tmp_path / "loose.toml"
    loose.write_text("schema_version = 1\n[close.default]\nmae_max = 255.0\n"
                     "[perceptual.default]\nmae_max = 255.0\n[fidelity.default]\nmae_max = 255.0\n")
    r = run("--model", "tiny-sd", "--tolerances", str(loose),
            modules=("test_invariance.py", "test_fidelity.py"))
    r.assert_outcomes(passed=7, skipped=1)  # 6 variants + bf16 fidelity; ladder needs 2 rungs
    outcomes = results_of(r)["outcomes"]
    inv = [o for o in outcomes if o["check"] == "invariance"]
    assert {o["variant"] for o in inv} == {"threads-2", "attention-slicing", "sdpa-math",
                                            "batch-4", "nondeterministic", "cfg-split"}
    assert all(o["tier"] in ("exact", "close") for o in inv)
    fid = [o for o in outcomes if o["check"] == "fidelity"]
    assert [(o["precision"], o["tier"]) for o in fid] == [("bf16", "fidelity")]
    r.stdout.fnmatch_lines(["*precision against fp32 on this device*",
                            "*| tiny-sd | bf16 | 16 |*"])


def test_fidelity_with_only_fp32_is_not_an_error(run):
    r = run("--precision", "fp32", "--model", "tiny-sd", modules=("test_fidelity.py",))
    assert r.ret == pytest.ExitCode.OK
    # the empty fidelity set is deselected (no [NOTSET] test); the tiny-sd ladder skips
    r.assert_outcomes(skipped=1, deselected=1)
    assert "NOTSET" not in r.stdout.str()


def test_real_model_cases_skip_with_how_to_get_weights(run, monkeypatch, tmp_path):
    for var in ("CONFORMANCE_SD15", "CONFORMANCE_SDXL", "CONFORMANCE_FLUX",
                "CONFORMANCE_FLUX_GGUF", "HF_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = run("-k", "repeatable", cases_file=PACKAGE_DIR / "cases-real.toml")
    assert r.ret == pytest.ExitCode.OK
    r.assert_outcomes(skipped=len(load_cases(PACKAGE_DIR / "cases-real.toml").items()),
                      deselected=32)
    out = r.stdout.str()
    for var, repo in (("CONFORMANCE_SD15", "stable-diffusion-v1-5/stable-diffusion-v1-5"),
                      ("CONFORMANCE_FLUX", "black-forest-labs/FLUX.1-schnell")):
        assert var in out and repo in out


# measured identity and crashes ----------------------------------------------------------
def test_generation_crash_is_an_error_outcome_and_an_error_cell(run, monkeypatch, tmp_path):
    """An exception inside a generation is an ERROR outcome with its type, message, device
    and precision (in the results and the matrix), never a bare traceback or a lost item."""
    from conformance.generate import Runner

    real = Runner.generate

    def crashing(self, item, variant=None):
        if item.precision == "bf16":
            raise RuntimeError("pack_vnni2 is only supported when avx512 is supported")
        return real(self, item, variant) if variant else real(self, item)

    monkeypatch.setattr(Runner, "generate", crashing)
    r = run("--model", "tiny-sd", "--record")
    assert "Traceback" not in r.stdout.str()
    r.stdout.fnmatch_lines(["*tiny-sd/dot/32x32/bf16: generation raised RuntimeError: "
                            "pack_vnni2 is only supported when avx512 is supported "
                            "(device cpu, precision bf16)*"])
    outcomes = [o for o in results_of(r)["outcomes"] if o["precision"] == "bf16"
                and o["status"] != "skipped"]  # no reference golden: nothing generated
    assert {o["check"] for o in outcomes} == {"repeatable", "own-class"}
    for o in outcomes:
        assert o["status"] == "error"
        assert o["error"] == {"type": "RuntimeError", "message": "pack_vnni2 is only supported "
                              "when avx512 is supported", "device": "cpu", "precision": "bf16"}
    from conformance.cli import main

    md = tmp_path / "m.md"
    assert main(["matrix", str(r.results_path), "--markdown", str(md)]) == 0
    assert "RuntimeError" in md.read_text()


def test_foreign_identity_in_the_own_set_downgrades_to_close(run):
    """A golden set of this class recorded by a configuration whose probes differ is held to
    the close tier, with the probes and features named, not failed at the exact tier."""
    run("--record", "--model", "tiny-sd", "--precision", "fp32")
    from conformance.probes import precision_digests

    mpath = next(iter((run("--collect-only").golden / "tiny-sd").glob("*/manifest.json")))
    data = json.loads(mpath.read_text())
    ident = data["identity"]
    ident["probes"]["sdpa-16h-64q-64kv-d4/fp32"] = "0" * 16
    # a steering flag this machine lacks (the golden's CPU "has" it)
    extra = next(f for f in ("amx_bf16", "amx_fp16", "sme") if f not in ident["features"]["flags"])
    ident["features"]["flags"] = [*ident["features"]["flags"], extra]
    ident["precision_digests"] = precision_digests(ident["probes"], ident["stack"],
                                                   tuple(ident["precision_digests"]))
    ident.pop("digest")
    data["identity"] = Identity.from_dict(ident).to_dict()
    mpath.write_text(json.dumps(data))
    r = run("--model", "tiny-sd", "--precision", "fp32")
    own = by_check(r, "own-class")["tiny-sd/dot/32x32/fp32"]
    assert own["status"] == "passed" and own["tier"] == "close", own
    assert "fp32 SDPA probes differ (1 of" in own["message"]
    assert f"the golden's CPU has {extra}, this one has none" in own["message"]
    # and recording into that set refuses: it is another configuration's
    r = run("--record", "--force", "--model", "tiny-sd", "--precision", "fp32")
    own = by_check(r, "own-class")["tiny-sd/dot/32x32/fp32"]
    assert own["status"] == "error" and "holds the goldens of" in own["message"]


# the plugin in other projects' runs -----------------------------------------------------
FOREIGN_TEST = """
import sys


def test_nothing_of_the_suite_happened():
    assert "torch" not in sys.modules
    assert "diffusers" not in sys.modules
"""


def test_plugin_is_inert_in_a_foreign_run(tmp_path):
    """A pytest run of another project, with the plugin installed, imports no torch, reads
    none of the suite's files and changes no setting (a fresh interpreter, so nothing this
    test run imported counts)."""
    import subprocess
    import sys

    (tmp_path / "test_foreign.py").write_text(FOREIGN_TEST)
    (tmp_path / "conftest.py").write_text("")
    trace = tmp_path / "opened.txt"
    code = (
        "import builtins, io, os, sys\n"
        f"log = open({str(trace)!r}, 'w')\n"
        "real = io.open\n"
        "def spy(file, *a, **k):\n"
        "    log.write(str(file) + '\\n'); log.flush()\n"
        "    return real(file, *a, **k)\n"
        "builtins.open = io.open = spy\n"
        "import pytest\n"
        "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', 'test_foreign.py']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
    opened = trace.read_text()
    for name in ("cases.toml", "tolerances.toml", "deviations.toml", "manifest.json"):
        assert name not in opened, f"the plugin read {name} in a foreign run"


def test_plugin_leaves_torch_settings_alone_in_a_foreign_run(pytester):
    pytester.makepyfile(test_settings="""
        import torch

        def test_defaults():
            assert not torch.are_deterministic_algorithms_enabled()
    """)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider")  # a fresh interpreter
    r.assert_outcomes(passed=1)


def test_two_workers_make_the_generations_of_one(run, tmp_path):
    """-n 2 makes exactly the generations -n 0 makes (the fidelity item's fp32 reference is
    read from the other worker's generation, not made again) and gives the same bits."""
    modules = ("test_golden.py", "test_repeatability.py", "test_fidelity.py")
    serial = run("--model", "tiny-sd", "--record", modules=modules)
    one = results_of(serial)
    commands = _recorded_commands(serial.golden)
    shutil.rmtree(serial.golden)
    parallel = run("--model", "tiny-sd", "--record", "-n", "2", "--dist", "loadgroup",
                   modules=modules)
    two = results_of(parallel)
    assert two["stats"]["processes"] == 2
    assert two["stats"]["generations"] == one["stats"]["generations"]
    assert two["stats"]["reused"] >= 1
    # the scheduler keeps each pipeline on one worker: the second one loads one more
    assert one["stats"]["model_loads"] <= two["stats"]["model_loads"] \
        <= one["stats"]["model_loads"] + 1, (one["stats"]["loaded"], two["stats"]["loaded"])
    sha = {(o["id"], o["check"]): o["pixel_sha256"] for o in one["outcomes"]}
    assert {(o["id"], o["check"]): o["pixel_sha256"] for o in two["outcomes"]} == sha
    parallel.stdout.fnmatch_lines(["*reused from another process: *, processes: 2*"])
    # the goldens name the command the user ran, not the worker's own argv
    assert _recorded_commands(parallel.golden) == commands


def _recorded_commands(root):
    return {e["command"] for m in root.glob("*/*/manifest.json")
            for e in json.loads(m.read_text())["entries"].values()}


def test_unusable_results_and_record_targets_fail_before_any_generation(run, tmp_path):
    (tmp_path / "adir").mkdir()
    r = run("--results", str(tmp_path / "adir"))
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(["*argument --results: * is a directory; give a file path*"])
    (tmp_path / "afile").write_text("x")
    r = run("--record", "--golden-dir", str(tmp_path / "afile"))
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    assert "argument --golden-dir" in r.stderr.str() and "is not a directory" in r.stderr.str()
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written


def test_localize_names_the_first_divergent_module(run):
    """--localize: an invariance variant whose latents part is generated again with module
    probes, and the outcome names where (ground truth: SDPA's math backend changes an
    attention module's own computation)."""
    r = run("--model", "tiny-sd", "--precision", "fp32", "--localize",
            "-k", "sdpa-math or nondeterministic", modules=("test_invariance.py",))
    outcomes = {o["variant"]: o for o in results_of(r)["outcomes"]
                if o["check"] == "invariance"}
    sdpa = outcomes["sdpa-math"]
    if sdpa["first_divergent_step"] is None and sdpa["metrics"]["identical"]:
        pytest.skip("the math backend gives the same bits on this machine")
    loc = sdpa["localization"]
    assert loc["divergent"] and loc["first_divergent_module"], loc
    assert "Attention" in (loc["first_divergent_class"] or ""), loc
    assert "first divergent module" in sdpa["message"]
    # the profile along the network, for the report's plot: top-level blocks in order
    names = [b["name"] for b in loc["blocks"]]
    assert loc["blocks_section"] == loc["section"] and names, loc
    assert any(b["bits"] == "differ" for b in loc["blocks"])
    plain = outcomes.get("nondeterministic")
    if plain is not None and plain["metrics"]["identical"] and (
            plain["first_divergent_step"] is None):
        assert plain["localization"] is None  # nothing parted: nothing probed


def test_n_auto_counts_workers_by_cores_and_threads(run):
    import os as _os

    cores = len(_os.sched_getaffinity(0))
    r = run("-n", "auto", "--model", "tiny-sd", "--precision", "fp32")
    r.stdout.fnmatch_lines([f"*{cores} workers*"] if cores > 1 else ["*1 worker*"])
    r = run("-n", "auto", "--threads", str(cores), "--model", "tiny-sd", "--precision", "fp32")
    r.stdout.fnmatch_lines(["*1 worker*"])
    torch.set_num_threads(1)


def test_localized_module_reaches_the_matrix(run, tmp_path):
    r = run("--model", "tiny-sd", "--precision", "fp32", "--localize", "-k", "sdpa-math",
            modules=("test_invariance.py", "test_golden.py"))
    from conformance.cli import main

    html = tmp_path / "m.html"
    assert main(["matrix", str(r.results_path), "--html", str(html), "--json",
                 str(tmp_path / "m.json")]) == 0
    loc = by_check(r, "invariance")["tiny-sd/dot/32x32/fp32"]["localization"]
    if not (loc and loc["first_divergent_module"]):
        pytest.skip("the math backend gives the same bits on this machine")
    assert loc["first_divergent_module"] in html.read_text()
    assert loc["first_divergent_module"] in (tmp_path / "m.json").read_text()


# [compare.NAME] -------------------------------------------------------------------------
def _dot(name: str, model: str = "tiny-sd", steps: int = 2, extra: str = "") -> str:
    """A [cases.NAME] of the dot case's prompt and seed (what a compare relation needs)."""
    return (f'\n[cases.{name}]\nmodel = "{model}"\n'
            'prompt = "a red circle on a white background"\nseed = 3\n'
            f'steps = {steps}\nscheduler = "euler"\nguidance_scale = 4.0\n{extra}')


def _compare_cases(tmp_path, relations: str):
    from conformance import PROJECT_ROOT

    fixtures = PROJECT_ROOT / "fixtures"
    text = (SMALL_CASES
            + f'\n[models.sd-copy]\nsource = "{fixtures / "tiny-sd"}"\n'
              "resolution_multiple = 16\nmin_side = 32\nmax_side = 256\n"
            + _dot("dot-copy", model="sd-copy")
            + _dot("dot-vae", extra=f'vae = "{fixtures / "tiny-sd-vae-mse"}"\n')
            + _dot("dot-3", steps=3)
            + relations)
    path = tmp_path / "compare.toml"
    path.write_text(text)
    return path


def test_compare_relations_judge_each_side_and_record_both(run, tmp_path):
    cases = _compare_cases(tmp_path, """
[compare.same]
base = "dot"
against = ["dot-copy"]
expect = "identical"

[compare.vae]
base = "dot"
against = ["dot-vae"]
""")
    r = run("--model", "sd-copy,tiny-sd", "--precision", "fp32", cases_file=cases,
            modules=("test_compare.py",))
    outcomes = {o["variant"]: o for o in results_of(r)["outcomes"] if o["check"] == "compare"}
    assert set(outcomes) == {"same", "vae"}
    same, vae = outcomes["same"], outcomes["vae"]
    assert same["status"] == "passed" and same["tier"] == "exact", same["message"]
    assert vae["status"] == "passed" and vae["tier"] == "differ"
    assert vae["metrics"]["mae"] > 1
    c = vae["comparison"]
    assert c["relation"] == "vae" and c["expect"] == "differ"
    assert c["base"]["id"] == "tiny-sd/dot/32x32/fp32"
    assert c["other"]["id"] == "tiny-sd/dot-vae/32x32/fp32"
    assert c["base"]["seconds"] > 0 and c["base"]["weights_mib"] > 1
    assert c["base"]["peak_mib"] is None  # no per-generation peak on the CPU
    r.stdout.fnmatch_lines(["*model against model*", "*| vae | dot | dot-vae | 32x32 | fp32 "
                            "| differ | passed |*"])


def test_compare_relations_fail_when_the_expectation_does_not_hold(run, tmp_path):
    cases = _compare_cases(tmp_path, """
[compare.should-differ]
base = "dot"
against = ["dot-copy"]
expect = "differ"

[compare.should-match]
base = "dot"
against = ["dot-3"]
expect = "identical"
""")
    r = run("--model", "sd-copy,tiny-sd", "--precision", "fp32", cases_file=cases,
            modules=("test_compare.py",))
    outcomes = {o["variant"]: o for o in results_of(r)["outcomes"] if o["check"] == "compare"}
    assert outcomes["should-differ"]["status"] == "failed"
    assert "bit-identical to the base's: the variant changed nothing" in \
        outcomes["should-differ"]["message"]
    assert outcomes["should-match"]["status"] == "failed"
    assert "the decoded pixels differ" in outcomes["should-match"]["message"]


def test_no_compare_test_without_relations(run):
    """A case file without [compare.*] has no compare test: deselected, not skipped."""
    r = run("--model", "tiny-sd", "--precision", "fp32", modules=("test_compare.py",))
    last = r.stdout.str().splitlines()[-1]
    assert "1 deselected" in last and "skipped" not in last and "passed" not in last, last


# --record --probes and --localize against a golden's stored probes -----------------------
def test_goldens_store_probes_and_localize_names_the_module_that_parts(run):
    import gzip

    from conformance.golden import encode_png
    from conformance.metrics import pixel_sha256

    r = run("--record", "--probes", "--probe-inputs", "--model", "tiny-sd",
            "--precision", "fp32,bf16")
    recorded = by_check(r, "own-class")["tiny-sd/dot/32x32/fp32"]
    assert "module probes of step 0: dot-32x32-fp32.probes.json.gz" in recorded["message"]
    assert "unet's input: " in recorded["message"]
    set_dir = r.golden / "tiny-sd" / OWN
    manifest = json.loads((set_dir / "manifest.json").read_text())
    entry = manifest["entries"]["tiny-sd/dot/32x32/fp32"]
    assert entry["probes"]["steps"] == [0]
    # another machine's golden, made here: one module's bits and the image differ
    probes_path = set_dir / entry["probes"]["file"]
    records = json.loads(gzip.decompress(probes_path.read_bytes()))
    step0 = next(s for s in records["sections"] if s["name"] == "step0")
    conv_in = next(rec for rec in step0["records"] if rec["name"] == "unet.conv_in")
    conv_in["out"]["digest"] = conv_in["out_all"] = "0" * 16
    data = gzip.compress(json.dumps(records).encode())
    probes_path.write_bytes(data)
    png_path = set_dir / entry["file"]
    from PIL import Image

    image = np.asarray(Image.open(png_path).convert("RGB")).copy()
    image[0, 0, 0] ^= 1
    png = encode_png(image)
    png_path.write_bytes(png)
    entry.update(pixel_sha256=pixel_sha256(image), file_sha256=hashlib.sha256(png).hexdigest())
    entry["probes"]["sha256"] = hashlib.sha256(data).hexdigest()
    (set_dir / "manifest.json").write_text(json.dumps(manifest))

    r = run("--localize", "--model", "tiny-sd", "--precision", "fp32,bf16")
    own = by_check(r, "own-class")["tiny-sd/dot/32x32/fp32"]
    assert own["status"] == "failed"
    loc = own["localization"]
    assert loc["first_divergent_module"] == "unet.conv_in", loc
    assert loc["against"] == f"the {OWN} golden's stored probes"
    assert "first divergent module: unet.conv_in" in own["message"]
    # the golden machine's own UNet input, replayed here: this UNet computes the same
    assert loc["replay"]["reproduced"] is True and loc["replay"]["name"] == "unet", loc
    assert "replay: unet (UNet2DConditionModel) reproduces the captured output" in \
        own["message"]
    # a capture whose recorded output differs from what this UNet gives on it
    from conformance.localize import InputCapture

    inputs_path = set_dir / entry["probes"]["inputs"]["file"]
    capture = InputCapture.load(inputs_path)
    blob = dataclasses.replace(capture, output_digest="0" * 16).to_bytes()
    inputs_path.write_bytes(blob)
    entry["probes"]["inputs"]["sha256"] = hashlib.sha256(blob).hexdigest()
    (set_dir / "manifest.json").write_text(json.dumps(manifest))
    r = run("--localize", "--model", "tiny-sd", "--precision", "fp32,bf16")
    loc = by_check(r, "own-class")["tiny-sd/dot/32x32/fp32"]["localization"]
    assert loc["replay"]["reproduced"] is False
    assert "the module itself computes differently here" in loc["replay"]["message"]
    # the other items' goldens agree bit for bit: nothing is probed for them
    others = [o for o in results_of(r)["outcomes"]
              if o["check"] == "own-class" and o["id"] != "tiny-sd/dot/32x32/fp32"]
    assert others and all(o["localization"] is None for o in others)


def test_probes_needs_record(run):
    r = run("--probes")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(["*--probes only applies with --record*"])
    r = run("--record", "--probe-inputs")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(["*--probe-inputs only applies with --record --probes*"])


def test_record_probes_adds_them_to_goldens_this_machine_reproduces(run):
    run("--record", "--model", "tiny-sd", "--precision", "fp32")
    r = run("--record", "--probes", "--model", "tiny-sd", "--precision", "fp32")
    own = by_check(r, "own-class")["tiny-sd/dot/32x32/fp32"]
    assert own["status"] == "passed" and own["tier"] == "exact"
    assert "module probes of step 0 added: dot-32x32-fp32.probes.json.gz" in own["message"]
    assert (r.golden / "tiny-sd" / OWN / "dot-32x32-fp32.probes.json.gz").is_file()


def test_workers_of_a_cpu_run_wait_passively():
    """Several CPU workers, or several threads in one process, can oversubscribe the cores:
    their OpenMP threads wait passively; one single-threaded process, or a GPU run, keeps
    OpenMP's default."""
    from conformance.plugin import worker_environment

    assert worker_environment("cpu", 2) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert worker_environment("cpu", 0) == {} and worker_environment("cpu", None) == {}
    assert worker_environment("cpu", 1) == {} and worker_environment("cuda", 4) == {}
    assert worker_environment("cpu", "auto") == {}  # not yet resolved: nothing assumed
    # one process with several threads waits passively too; one thread keeps the default
    assert worker_environment("cpu", 0, 2) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert worker_environment("cpu", None, 1) == {} and worker_environment("cuda", 0, 4) == {}


def test_an_xdist_controller_imports_no_torch_and_names_the_workers_machine(pytester, tmp_path):
    """With -n 2 the workers generate and measure; the controller imports neither torch nor
    diffusers, prints the machine the workers measured in the summary, and writes it to
    the results file."""
    cases = tmp_path / "cases.toml"
    cases.write_text(SMALL_CASES)
    pytester.makepyfile(ctlcheck="""
        import sys

        def pytest_unconfigure(config):  # after the results and the summary are written
            if not hasattr(config, "workerinput"):
                print("CONTROLLER-TORCH", "torch" in sys.modules, "diffusers" in sys.modules)
    """)
    results = tmp_path / "out" / "results.json"
    (tmp_path / "golden").mkdir()
    r = pytester.runpytest_subprocess(
        str(PACKAGE_DIR / "test_repeatability.py"), "-p", "ctlcheck", "-p", "no:randomly",
        "-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup", "--device", "cpu",
        "--cases", str(cases), "--model", "tiny-sd", "--precision", "fp32",
        "--golden-dir", str(tmp_path / "golden"), "--results", str(results), "-s")
    r.stdout.fnmatch_lines(["*class, identity and fingerprint: measured by the workers*",
                            f"*conformance: identity {OWN} [[]*",
                            "*CONTROLLER-TORCH False False*"])
    doc = json.loads(results.read_text())
    assert doc["hardware_class"] == OWN and doc["identity"]["class"] == OWN
    assert doc["fingerprint"]["threads"] == 1


def test_packaged_deviations_are_not_reported_unmatched_for_ones_own_cases(run):
    """A run of a case file of one's own does not list the packaged deviations (written for
    the packaged cases) as unmatched; a deviations file it names still is."""
    r = run("--model", "tiny-sd", "--precision", "fp32")
    assert "names no collected test" not in r.stdout.str()


GRID_CASES = "schema_version = 1\n[axes]\nresolutions = [\"32x32\"]\n" + "".join(f"""
[cases.c{n}]
model = "tiny-sd"
prompt = "a red circle on a white background"
seed = {n}
steps = 2
scheduler = "euler"
guidance_scale = 4.0
precisions = ["fp32", "bf16", "fp16"]
""" for n in range(4))


def test_two_workers_keep_an_items_checks_and_each_pipeline_together(run, tmp_path):
    """-n 2 --dist loadgroup: every check of an item runs on one worker (xdist 3.8's own
    loadgroup no longer groups under pytest 9.2), each (model, precision) pipeline is
    loaded by one worker, plus at most two more (the second worker's first pipeline, while
    the fp32 references it needs are being made, and one taken over at the end to keep both
    busy: the bound tests/test_schedule.py checks for any costs): the same generations as
    -n 0 (the fidelity verdicts of this 2-step case do not matter here)."""
    cases = tmp_path / "grid.toml"
    cases.write_text(GRID_CASES)
    modules = ("test_golden.py", "test_repeatability.py", "test_fidelity.py")
    serial = results_of(run("--record", cases_file=cases, modules=modules))
    shutil.rmtree(tmp_path / "golden")
    r = run("--record", "-n", "2", "--dist", "loadgroup", "-v", cases_file=cases,
            modules=modules)
    two = results_of(r)
    assert two["stats"]["generations"] == serial["stats"]["generations"]
    assert serial["stats"]["model_loads"] == 3
    assert two["stats"]["model_loads"] <= 3 + 2, two["stats"]["loaded"]
    workers: dict[str, set[str]] = {}
    for line in r.stdout.lines:
        m = re.match(r"\[(gw\d+)\].*::test_\w+\[([^\]]+)\]", line)
        if m and m.group(2).count("/") == 3:  # an item's check (not the ladder)
            workers.setdefault(m.group(2), set()).add(m.group(1))
    assert len(workers) == 12
    assert all(len(w) == 1 for w in workers.values()), workers


# the end of a run ------------------------------------------------------------------------
def test_a_conformance_run_that_uses_no_hypothesis_does_not_import_it():
    """hypothesis' pytest plugin imports hypothesis in its terminal summary (about 1 s);
    the suite sets that plugin aside when no test imported hypothesis (a fresh interpreter:
    this test run has imported it)."""
    import subprocess
    import sys

    code = ("import sys, pytest\n"
            f"pytest.main([{str(PACKAGE_DIR / 'test_golden.py')!r}, '--device', 'cpu', "
            "'--collect-only', '-q', '-p', 'no:cacheprovider'])\n"
            "print('hypothesis' in sys.modules, file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.stderr.strip().splitlines()[-1] == "False", proc.stderr[-2000:]


def test_hypothesis_plugin_stays_when_a_test_imported_hypothesis(monkeypatch):
    import sys
    import types

    from conformance.plugin import HYPOTHESIS_PLUGIN, _set_aside_unused_hypothesis

    class Plugins:
        def __init__(self):
            self.registered = {HYPOTHESIS_PLUGIN: object()}

        def get_plugin(self, name):
            return self.registered.get(name)

        def unregister(self, plugin):
            self.registered = {k: v for k, v in self.registered.items() if v is not plugin}

    config = types.SimpleNamespace(pluginmanager=Plugins())
    monkeypatch.setitem(sys.modules, "hypothesis", types.ModuleType("hypothesis"))
    _set_aside_unused_hypothesis(config)
    assert HYPOTHESIS_PLUGIN in config.pluginmanager.registered
    monkeypatch.delitem(sys.modules, "hypothesis")
    _set_aside_unused_hypothesis(config)
    assert config.pluginmanager.registered == {}
    _set_aside_unused_hypothesis(config)  # none registered (-p no:hypothesispytest): nothing


def test_filters_reach_the_vae_checks(run):
    r = run("--model", "tiny-sd", "--precision", "fp32", "--collect-only", "-q",
            modules=("test_vae.py",))
    ids = [line for line in r.stdout.lines if "::" in line]
    assert ids and all("[tiny-sd/vae/fp32]" in line for line in ids), ids
    r = run("--precision", "bf16", "--collect-only", "-q", modules=("test_vae.py",))
    ids = [line for line in r.stdout.lines if "::" in line]
    assert {line.split("[")[1] for line in ids} == {"tiny-sd/vae/bf16]", "tiny-flux/vae/bf16]"}


def test_a_record_command_never_points_into_the_installed_package(monkeypatch, tmp_path):
    """Run from the installed package, the default --golden-dir is its read-only copy of the
    project's sets: the printed record command records into golden/ here instead."""
    from conformance import options
    from conformance.session import Settings

    packaged = tmp_path / "conformance" / "_data" / "golden"
    packaged.mkdir(parents=True)
    monkeypatch.setattr(options, "PACKAGE_DIR", tmp_path / "conformance")
    settings = Settings(golden_dir=packaged)
    assert str(packaged) in settings.command_flags()  # what was compared with
    record = settings.command_flags(record=True)
    assert record[record.index("--golden-dir") + 1] == "golden"
    assert options.check_record_target(packaged).startswith(
        f"--golden-dir {packaged}: is the installed package's copy")
    assert options.check_record_target(tmp_path / "mine") is None


def test_vae_checks_are_outcomes_in_results_and_matrix(run):
    from conformance.report.matrix import build_matrix, load_run

    r = run("--model", "tiny-sd", "--precision", "bf16", modules=("test_vae.py",))
    r.assert_outcomes(passed=4)
    r.stdout.fnmatch_lines(["*vae: 4 passed*", "*3 fidelity*", "*1 exact*"])
    vae = by_check(r, "vae")
    assert sorted(vae) == ["tiny-sd/vae-decode/64x64/bf16", "tiny-sd/vae-latent8/64x64/bf16",
                           "tiny-sd/vae-repeatable/64x64/bf16",
                           "tiny-sd/vae-roundtrip/64x64/bf16"]
    decode = vae["tiny-sd/vae-decode/64x64/bf16"]
    assert decode["tier"] == "fidelity" and decode["metrics"]["psnr"] > 30
    assert vae["tiny-sd/vae-repeatable/64x64/bf16"]["metrics"]["identical"] is True
    matrix = build_matrix([load_run(r.results_path)])
    cells = {item.id: row[0] for item, row in zip(matrix.items, matrix.cells, strict=True)}
    assert cells["tiny-sd/vae-repeatable/64x64/bf16"].state.value == "identical"
    assert cells["tiny-sd/vae-decode/64x64/bf16"].state.value == "within"


def test_a_vae_check_beyond_its_bounds_is_a_failed_outcome(run, tmp_path):
    from conformance import PACKAGE_DIR

    text = (PACKAGE_DIR / "tolerances.toml").read_text()
    tight = tmp_path / "tight.toml"
    tight.write_text(text.replace("[vae.decode.bf16]\nmae_max = 1.5\npsnr_min = 40.0",
                                  "[vae.decode.bf16]\nmae_max = 1.5\npsnr_min = 99.0"))
    r = run("--model", "tiny-sd", "--precision", "bf16", "--tolerances", str(tight),
            "-k", "close_to_fp32", modules=("test_vae.py",))
    r.assert_outcomes(failed=1)
    decode = by_check(r, "vae")["tiny-sd/vae-decode/64x64/bf16"]
    assert decode["status"] == "failed" and "psnr" in decode["message"].lower()
    r.stdout.fnmatch_lines(["*vae: 1 failed*", "*1 fidelity, 1 of them failed*"])
