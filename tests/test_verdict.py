"""A verdict on any machine: the own-class check finds its golden by identity in a real run,
``--strict-golden`` fails what is missing, and the terminal says at which tier and why.

Each test records this machine's goldens with the suite's own ``--record``, then moves the
set under a foreign class name with an identity taken from this machine's own (optionally
with some probes altered), as a contributed set of another machine would arrive.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from conformance.cases import load_cases
from conformance.golden import GoldenStore
from conformance.hardware import fingerprint
from conformance.identity import Identity
from conformance.probes import precision_digests
from tests.identities import identity_for
from tests.runs import OWN, by_check, results_of

FOREIGN = "cpu-amd-avx2"


def move_to_class(golden, model: str, cls: str, alter: str = "") -> None:
    """Move ``model``'s set of this machine to class ``cls``: its identity becomes this
    machine's probes under ``cls`` (the probes of dtype ``alter`` changed), its precision
    digests recomputed from them."""
    src = golden / model / OWN
    data = json.loads((src / "manifest.json").read_text())
    mine = Identity.from_dict(data["identity"])
    probes = {k: ("f" * 16 if alter and k.endswith(f"/{alter}") else v)
              for k, v in mine.probes.items()}
    ident = identity_for(cls, fingerprint("cpu", 1), probes=probes, digests={"x": "y"})
    ident = dataclasses.replace(ident, stack=mine.stack, precision_digests=precision_digests(
        probes, mine.stack, tuple(mine.precision_digests)))
    data["hardware_class"] = cls
    data["identity"] = ident.to_dict()
    (src / "manifest.json").write_text(json.dumps(data))
    shutil.move(src, golden / model / cls)


def test_a_foreign_class_with_this_machines_bits_gives_exact_verdicts(run):
    run("--record", "--model", "tiny-sd")
    move_to_class(run("--collect-only").golden, "tiny-sd", FOREIGN)
    r = run("--model", "tiny-sd")
    own = by_check(r, "own-class")
    assert {o["tier"] for o in own.values()} == {"exact"}, own
    assert {o["golden_class"] for o in own.values()} == {FOREIGN}
    assert {o["golden_choice"]["by"] for o in own.values()} == {"identity"}
    assert all("chosen by identity" in o["message"] for o in own.values())
    r.stdout.fnmatch_lines(["*own-class: 2 passed",
                            f"*2 exact via {FOREIGN} (same digest as this machine)"])


def test_differing_probes_give_the_nearest_set_at_the_perceptual_tier_with_causes(run):
    """bf16 probes altered: fp32 stays exact, bf16 is judged perceptually against the same
    set, and both the outcome and the summary name the probes that differ."""
    run("--record", "--model", "tiny-sd")
    move_to_class(run("--collect-only").golden, "tiny-sd", FOREIGN, alter="bf16")
    r = run("--model", "tiny-sd")
    own = by_check(r, "own-class")
    fp32, bf16 = own["tiny-sd/dot/32x32/fp32"], own["tiny-sd/dot/32x32/bf16"]
    assert fp32["tier"] == "exact" and fp32["golden_choice"]["by"] == "identity"
    assert bf16["tier"] == "perceptual" and bf16["golden_choice"]["by"] == "nearest", bf16
    assert bf16["status"] == "passed"
    assert any("bf16 GEMM" in d and "probes differ" in d
               for d in bf16["golden_choice"]["differs"]), bf16
    r.stdout.fnmatch_lines([f"*1 exact via {FOREIGN} (same digest as this machine)",
                            f"*1 perceptual via {FOREIGN} (nearest set): differ: bf16 GEMM "
                            "probes (1)*"])


def test_missing_goldens_skip_by_default_and_the_summary_counts_them(run, tmp_path):
    r = run("--golden-dir", str(tmp_path / "goldne"), "--model", "tiny-sd")
    assert r.ret == pytest.ExitCode.USAGE_ERROR  # the folder does not exist (a typo?)
    r.stderr.fnmatch_lines(["*--golden-dir *goldne: does not exist; give the folder of your "
                            "golden sets, or create it by recording with --record*"])
    run("--record", "--model", "tiny-flux")
    r = run("--model", "tiny-sd")
    r.assert_outcomes(passed=2, skipped=4)  # own-class and reference: no set holds them
    r.stdout.fnmatch_lines(["*no golden: 2 own-class (tiny-sd), 2 reference (tiny-sd): no "
                            "golden set holds them; skipped; --strict-golden*"])
    own = by_check(r, "own-class")["tiny-sd/dot/32x32/fp32"]
    assert own["status"] == "skipped" and own["golden_choice"] == {
        "by": "missing", "sharing": [], "differs": []}
    assert "tiny-sd holds no golden set" in own["message"]
    assert "--record --model tiny-sd --precision fp32 --resolution 32x32" in own["message"]


def test_strict_golden_fails_missing_goldens_with_the_command_to_record(run):
    run("--record", "--model", "tiny-sd", "--precision", "fp32")
    r = run("--model", "tiny-sd", "--strict-golden")
    assert r.ret == pytest.ExitCode.TESTS_FAILED
    r.assert_outcomes(passed=3, failed=3)  # bf16's own-class, both reference checks
    own = by_check(r, "own-class")
    assert own["tiny-sd/dot/32x32/fp32"]["status"] == "passed"
    assert own["tiny-sd/dot/32x32/bf16"]["status"] == "failed"
    r.stdout.fnmatch_lines(["*no golden: 1 own-class (tiny-sd), 2 reference (tiny-sd)*failed "
                            "(--strict-golden)*"])
    r.stdout.fnmatch_lines(["*_ test_own_class_golden[[]tiny-sd/dot/32x32/bf16[]] _*",
                            "no golden for tiny-sd/dot/32x32/bf16: *--record --model tiny-sd "
                            "--precision bf16 --resolution 32x32"])


def test_strict_golden_refuses_an_empty_golden_dir(run, pytester):
    golden = run("--collect-only").golden
    r = run("--strict-golden")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines([f"*--golden-dir {golden}: holds no golden set of tiny-sd, "
                            "tiny-flux (--strict-golden); record them with: conformance record "
                            f"--golden-dir {golden} --cases *"])
    ini = ("-c", str(pytester.path / "tox.ini"), "--rootdir", str(pytester.path))
    pytester.makeini("[pytest]\nconformance_strict_golden = true\n")
    assert run(*ini).ret == pytest.ExitCode.USAGE_ERROR  # the ini key does the same
    pytester.makeini("[pytest]\nconformance_strict_golden = false\n")
    assert run(*ini).ret == pytest.ExitCode.OK
    pytester.makeini("[pytest]\nconformance_strict_golden = maybe\n")
    r = run(*ini)
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(["*ini option conformance_strict_golden: 'maybe' is not a boolean; "
                            "write one of true, yes, on, 1, false, no, off, 0*"])


def test_goldens_no_case_makes_are_listed_and_fail_under_strict(run, tmp_path):
    r = run("--record", "--model", "tiny-sd")
    manifest = r.golden / "tiny-sd" / OWN / "manifest.json"
    data = json.loads(manifest.read_text())
    old = data["entries"].pop("tiny-sd/dot/32x32/bf16")
    old["id"] = "tiny-sd/renamed/32x32/bf16"
    old["case"] = "renamed"
    data["entries"][old["id"]] = old
    manifest.write_text(json.dumps(data))
    r = run("--model", "tiny-sd")
    assert r.ret == pytest.ExitCode.OK
    r.stdout.fnmatch_lines(["note: 1 golden(s) match no item of *cases.toml (renamed or "
                            "removed cases)*", f"  *tiny-sd/{OWN}: tiny-sd/renamed/32x32/bf16"])
    r = run("--model", "tiny-sd", "--strict-golden")
    assert r.ret == pytest.ExitCode.TESTS_FAILED
    r.stdout.fnmatch_lines(["error: 1 golden(s) match no item of *"])


def test_localize_against_a_golden_without_probes_says_how_to_add_them(run):
    run("--record", "--model", "tiny-sd")
    golden = run("--collect-only").golden
    move_to_class(golden, "tiny-sd", FOREIGN, alter="bf16")
    store = GoldenStore(golden)
    entry = store.lookup_id("tiny-sd", "tiny-sd/dot/32x32/bf16", FOREIGN)
    image = store.load_image(entry, FOREIGN).copy()
    image[0, 0] ^= 1  # one pixel off: a golden this machine does not reproduce
    item = next(i for i in load_cases(golden.parent / "cases.toml").items()
                if i.id == entry.id)
    store.record(item, FOREIGN, image, entry.steps(), entry.fingerprint, entry.recorded_at,
                 entry.command, force=True,
                 identity=store.manifest("tiny-sd", FOREIGN).identity)
    r = run("--model", "tiny-sd", "--precision", "bf16", "--localize", "-k", "own_class")
    own = by_check(r, "own-class")["tiny-sd/dot/32x32/bf16"]
    assert own["tier"] == "perceptual"
    assert (f"--localize: the {FOREIGN} golden of tiny-sd/dot/32x32/bf16 has no stored "
            "module probes") in own["message"]
    assert "--probes" in own["localization"]["message"]


def test_a_record_refusal_says_what_differs_in_words(run):
    run("--record", "--model", "tiny-sd", "--precision", "fp32")
    r = run("--record", "--force", "--threads", "2", "--model", "tiny-sd", "--precision",
            "fp32", "-k", "own_class")
    own = by_check(r, "own-class")["tiny-sd/dot/32x32/fp32"]
    assert own["status"] == "error"
    assert "what differs:" in own["message"] and "threads 2 here, 1 in the golden's" in (
        own["message"])
    import torch

    torch.set_num_threads(1)


def test_results_and_matrix_say_which_set_decided(run, tmp_path):
    from conformance.report.matrix import build_matrix, load_run

    run("--record", "--model", "tiny-sd")
    move_to_class(run("--collect-only").golden, "tiny-sd", FOREIGN)
    r = run("--model", "tiny-sd")
    assert results_of(r)["outcomes"]
    matrix = build_matrix([load_run(r.results_path)])
    checks = [c for row in matrix.cells for cell in row for c in cell.checks
              if c.check == "own-class"]
    assert {(c.golden_class, c.chosen_by) for c in checks} == {(FOREIGN, "identity")}


def test_a_results_file_that_cannot_be_written_at_the_end_is_one_line(run, monkeypatch):
    """A disk that fills during the run: the results file fails at the end with one line
    naming it and the cause, exit status 1, no traceback; what was repaired on the way (a
    rebuilt cache file) is said in the summary."""
    from conformance import generate, session
    from conformance.errors import OutputError

    def full(path, *args, **kwargs):
        raise OutputError(path, "cannot write results file: No space left on device")

    monkeypatch.setattr(session, "write_results", full)
    monkeypatch.setattr(generate, "CACHE_NOTICES", ["conformance: x.gguf: rebuilt"])
    r = run("--model", "tiny-sd", "--precision", "fp32", "-k", "repeatable")
    assert r.ret == pytest.ExitCode.TESTS_FAILED
    r.stdout.fnmatch_lines(["results not written: *results.json: cannot write results file: "
                            "No space left on device", "conformance: x.gguf: rebuilt"])
    assert "Traceback" not in r.stdout.str() + r.stderr.str()
