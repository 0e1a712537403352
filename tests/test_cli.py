from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from conformance import PROJECT_ROOT, __version__
from conformance.cli import MOVED, main, moved_message


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_no_command_is_an_error(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "required: COMMAND" in capsys.readouterr().err


def test_cases_lists_ids(capsys):
    assert main(["cases", "--model", "tiny-sd", "--precision", "fp32"]) == 0
    out, err = capsys.readouterr()
    ids = out.split()
    assert ids and all(i.startswith("tiny-sd/") and i.endswith("/fp32") for i in ids)
    assert f"{len(ids)} items from" in err


def test_cases_bad_file_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "c.toml"
    bad.write_text("schema_version = 1\n[cases.x]\nmodel = 3\n")
    assert main(["cases", "--cases", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"conformance cases: error: {bad}: case file: cases['x'].model must be")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cases", "--precision", "int3"], "argument --precision: unknown precision 'int3'"),
        (["cases", "--resolution", "big"], "argument --resolution: 'big' is not a resolution"),
        (["cases", "--cases", "/nonexistent.toml"], "argument --cases: '/nonexistent.toml' is not"),
        (["fingerprint", "--device", "tpu"], "argument --device: 'tpu' is not a device"),
        (["fingerprint", "--threads", "0"], "argument --threads: '0' is not a thread count"),
    ],
)
def test_bad_flags(capsys, args, message):
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_models_lists_registry(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "tiny-sd" in out and "tiny-flux" in out and "present" in out
    assert "declared" not in out


def test_models_lists_a_case_files_own(capsys):
    from conformance import PACKAGE_DIR

    assert main(["models", "--cases", str(PACKAGE_DIR / "cases-variants.toml")]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("tiny-sd-local"))
    assert "declared" in line and "fixtures/tiny-sd" in line and "cases-variants.toml" in line


def test_fingerprint_json(capsys):
    assert main(["fingerprint", "--threads", "1"]) == 0
    fp = json.loads(capsys.readouterr().out)
    assert fp["hardware_class"].startswith("cpu-") and fp["threads"] == 1
    assert fp["deterministic"] is True


def test_fingerprint_names_the_golden_sets_with_this_machines_bits(capsys, tmp_path):
    """A set planted with this machine's own identity under a foreign class name shares
    every precision; one whose bf16 probes were altered shares every precision but bf16."""
    import dataclasses

    import numpy as np

    from conformance.cases import Case, Item, Resolution
    from conformance.golden import GoldenStore
    from conformance.hardware import fingerprint
    from conformance.identity import measure
    from conformance.probes import precision_digests

    fp = fingerprint("cpu", 1)
    mine = measure("cpu", fp)
    store = GoldenStore(tmp_path)
    item = Item(Case("dot", "tiny-sd", "a red circle", "", 1, 2, "euler", 4.0,
                     (Resolution(8, 8),), ("fp32",)), Resolution(8, 8), "fp32")
    image = np.zeros((8, 8, 3), np.uint8)
    for cls, dtype in (("cpu-amd-avx2", None), ("cpu-intel-avx2", "bf16")):
        probes = {k: ("f" * 16 if dtype and k.endswith(f"/{dtype}") else v)
                  for k, v in mine.probes.items()}
        ident = dataclasses.replace(
            mine, hardware_class=cls, probes=probes,
            precision_digests=precision_digests(probes, mine.stack,
                                                tuple(mine.precision_digests)))
        store.record(item, cls, image, [], fp, "2026-12-06T00:00:00Z", "t", identity=ident)
    assert main(["fingerprint", "--golden-dir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    sharing = json.loads(out)["bit_equivalent_goldens"]
    assert sharing["fp32"] == ["tiny-sd/cpu-amd-avx2", "tiny-sd/cpu-intel-avx2"]
    assert sharing["bf16"] == ["tiny-sd/cpu-amd-avx2"]
    assert f"golden sets under {tmp_path} with this machine's bits" in err
    assert any(line.split()[:1] == ["fp32"] and "cpu-amd-avx2 (tiny-sd); cpu-intel-avx2 "
               "(tiny-sd)" in line for line in err.splitlines()), err
    assert main(["fingerprint", "--golden-dir", str(tmp_path / "none")]) == 0
    err = capsys.readouterr().err
    assert "none: checked against the nearest set (close or perceptual tier)" in err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a CPU-only machine")
def test_fingerprint_unavailable_device(capsys):
    assert main(["fingerprint", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "--device: device 'cuda' is not available on this machine; available: cpu" in err


@pytest.mark.parametrize(("argv", "command"), [
    (["train", "tiny-sd", "--out", "fixtures/tiny-sd", "--force"],
     "python -m fixtures.build train tiny-sd --out fixtures/tiny-sd --force"),
    (["lora", "fit", "--out", "my adapter"],
     "python -m fixtures.build lora fit --out 'my adapter'"),
    (["montage"], "python -m fixtures.build montage"),
    (["montage", "--help"], "python -m fixtures.build montage --help"),
], ids=["train", "lora-fit", "montage", "help"])
def test_a_moved_command_says_in_one_line_where_it_went(capsys, argv, command):
    """``conformance train`` / ``lora`` / ``montage`` left for the fixture tooling of a source
    checkout: one line with the command that runs it now, its arguments kept."""
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (f"conformance {argv[0]}: moved to the fixture tooling of a source checkout; "
                   f"from the checkout's root run: {command}\n")


def test_the_moved_commands_are_no_sub_commands_but_the_help_names_them(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    listing = out.split("positional arguments:", 1)[1].split("options:", 1)[0]
    assert set(re.findall(r"^ {4}([a-z][\w-]*)", listing, re.M)).isdisjoint(MOVED)
    assert "python -m fixtures.build" in out.split("options:", 1)[1]
    assert moved_message([]) is None
    assert moved_message(["cases", "train"]) is None  # only as the sub-command


def test_run_help(capsys):
    assert main(["run", "--help"]) == 0
    assert "pytest --pyargs conformance" in capsys.readouterr().out


def test_record_and_run_pass_through_to_pytest(tmp_path):
    cases = tmp_path / "cases.toml"
    cases.write_text(
        'schema_version = 1\n[cases.dot]\nmodel = "tiny-sd"\nprompt = "a red circle on a '
        'white background"\nseed = 1\nsteps = 2\nscheduler = "euler"\nguidance_scale = 4.0\n'
        'resolutions = ["32x32"]\n'
    )
    common = ["--cases", str(cases), "--golden-dir", str(tmp_path / "g"),
              "--results", str(tmp_path / "r.json"), "-q", "-p", "no:cacheprovider"]
    rec = subprocess.run([sys.executable, "-m", "conformance.cli", "record", *common],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert rec.returncode == 0, rec.stdout + rec.stderr
    assert "1 recorded" in rec.stdout
    run = subprocess.run([sys.executable, "-m", "conformance.cli", "run", *common],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    own = [o for o in doc["outcomes"] if o["check"] == "own-class"]
    assert [o["status"] for o in own] == ["passed"] and own[0]["tier"] == "exact"


def test_interrupted_record_loses_nothing_and_resumes(tmp_path):
    """Kill `conformance record` after its first golden; what is on disk validates, and a
    second run records the rest without touching what is there."""
    import os
    import signal
    import time

    cases = tmp_path / "cases.toml"
    body = "".join(
        f'[cases.c{n}]\nmodel = "tiny-sd"\nprompt = "a red circle on a white background"\n'
        f'seed = {n}\nsteps = 8\nscheduler = "euler"\nguidance_scale = 4.0\n'
        for n in range(8)
    )
    cases.write_text('schema_version = 1\n[axes]\nresolutions = ["32x32"]\n' + body)
    out = tmp_path / "set"
    cmd = [sys.executable, "-m", "conformance.cli", "record", "--cases", str(cases),
           "--out", str(out), "--results", str(tmp_path / "r.json"), "-q", "-k", "own_class",
           "-p", "no:cacheprovider"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    manifest = next(iter([]), None)
    deadline = time.time() + 240
    while time.time() < deadline:
        found = list(out.glob("*/*/manifest.json"))
        if found and json.loads(found[0].read_text() or "{}").get("entries"):
            manifest = found[0]
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert manifest is not None, "no golden was written in time"
    first = json.loads(manifest.read_text())["entries"]
    assert 1 <= len(first) < 8
    valid = subprocess.run([sys.executable, "-m", "conformance.cli", "validate", str(out),
                            "--reference-dir", str(out)], capture_output=True, text=True)
    leftovers = [p for p in manifest.parent.iterdir() if p.name.endswith(".tmp")]
    assert valid.returncode == 0 or leftovers, valid.stdout
    kept = {k: v["file_sha256"] for k, v in first.items()}
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    final = json.loads(manifest.read_text())["entries"]
    assert len(final) == 8
    assert {k: final[k]["file_sha256"] for k in kept} == kept
    valid = subprocess.run([sys.executable, "-m", "conformance.cli", "validate", str(out),
                            "--reference-dir", str(out)], capture_output=True, text=True)
    assert valid.returncode == 0, valid.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--isas", "sse9", "--out", "x"], "accepted ISA levels are default, avx2, avx512"),
        (["--threads", "0", "--out", "x"], "give thread counts >= 1"),
        (["--threads", "a", "--out", "x"], "give thread counts >= 1"),
    ],
)
def test_cpu_matrix_bad_flags(capsys, args, message):
    with pytest.raises(SystemExit) as info:
        main(["cpu-matrix", *args])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_cpu_matrix_refuses_non_empty_out(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["cpu-matrix", "--out", str(tmp_path)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_cpu_matrix_end_to_end(tmp_path):
    cases = tmp_path / "cases.toml"
    cases.write_text(
        'schema_version = 1\n[cases.dot]\nmodel = "tiny-flux"\nprompt = "a red circle on a '
        'white background"\nseed = 1\nsteps = 2\nscheduler = "flow-euler"\n'
        'guidance_scale = 3.5\nresolutions = ["32x32"]\n'
    )
    out = tmp_path / "m"
    proc = subprocess.run(
        [sys.executable, "-m", "conformance.cli", "cpu-matrix", "--isas", "avx2,default",
         "--threads", "1", "--out", str(out), "--", "--cases", str(cases),
         "-k", "golden or repeatable"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr.index("ATEN_CPU_CAPABILITY=default") < proc.stderr.index(
        "ATEN_CPU_CAPABILITY=avx2")
    from conformance.hardware import cpu_class_name, cpu_features

    default = cpu_class_name(cpu_features(aten_level="default"))
    avx2 = cpu_class_name(cpu_features(aten_level="avx2"))
    md = (out / "matrix.md").read_text()
    assert default in md and avx2 in md
    assert (out / "matrix.html").is_file() and (out / "matrix.json").is_file()
    assert (out / "golden" / "tiny-flux" / default / "manifest.json").is_file()


@pytest.mark.parametrize("argv", [["--help"], ["validate", "golden"], ["matrix", "golden",
                                                                      "--markdown", "-"]])
def test_cheap_commands_import_neither_torch_nor_diffusers(argv):
    code = ("import sys\nfrom conformance.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, 'diffusers' in sys.modules, file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          timeout=300, cwd=PROJECT_ROOT)
    assert proc.stderr.strip().splitlines()[-1] == "False False", proc.stderr[-2000:]
    if argv == ["--help"]:
        for name in ("quantize", "validate", "matrix", "migrate"):
            assert name in proc.stdout


def test_python_dash_m_conformance_is_the_command(tmp_path) -> None:
    """``python -m conformance`` where the script is not on PATH; a golden it records names
    the command as ``conformance``."""
    import subprocess
    import sys

    from conformance import PACKAGE_DIR
    from conformance.hardware import command_line

    proc = subprocess.run([sys.executable, "-m", "conformance", "--version"],
                          capture_output=True, text=True, cwd=PACKAGE_DIR.parent, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("conformance ")
    main = str(PACKAGE_DIR / "__main__.py")
    assert command_line([main, "validate", "golden"]) == "conformance validate golden"
