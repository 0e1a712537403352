"""``conformance validate`` on a corpus of bad golden sets: each gives a clear message naming
the file, exit 1, no traceback, and the input is left exactly as it was."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conformance.cases import Case, Item, Resolution
from conformance.cli import main
from conformance.golden import MANIFEST, GoldenStore
from tests.identities import identity_for

OTHER = "cpu-amd-avx2"
REF = "cpu-amd-default+bf16"
FP = {"hardware_class": OTHER, "device": "cpu", "threads": 1, "torch": "2.13.0",
      "diffusers": "0.42.1", "device_name": "AMD EPYC"}


def _item(name="dot", seed=1):
    case = Case(name, "tiny-sd", "a red circle", "", seed, 2, "euler", 4.0,
                (Resolution(16, 8),), ("fp32",))
    return Item(case, Resolution(16, 8), "fp32")


def _image(seed=0):
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, 16 * 8 * 3).reshape(8, 16, 3)
    return np.clip(base + rng.normal(0, 2, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture
def golden(tmp_path):
    """A golden root with a valid reference set and a valid contributed set."""
    root = tmp_path / "golden"
    store = GoldenStore(root)
    for cls, fp in ((REF, FP | {"hardware_class": REF}), (OTHER, FP)):
        for name, seed in (("dot", 1), ("ring", 2)):
            store.record(_item(name, seed), cls, _image(seed), [], fp, "2026-01-01T00:00:00Z",
                         "conformance record", identity=identity_for(cls, fp))
    return root


def set_dir(root, cls=OTHER):
    return root / "tiny-sd" / cls


def manifest_edit(root, fn, cls=OTHER):
    path = set_dir(root, cls) / MANIFEST
    data = json.loads(path.read_text())
    fn(data, data["entries"]["tiny-sd/dot/16x8/fp32"])
    path.write_text(json.dumps(data))


def png(root, name="dot-16x8-fp32.png"):
    return set_dir(root) / name


def rewrite_png(root, img, keep_sha=False):
    """Replace the dot PNG and, unless keep_sha, fix its file SHA so later checks run."""
    path = png(root)
    img.save(path, format=img.format or "PNG") if hasattr(img, "save") else path.write_bytes(img)
    if not keep_sha:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        manifest_edit(root, lambda d, e: e.update(file_sha256=digest))


def snapshot(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            data = b"" if os.path.isdir(p) or os.path.islink(p) else open(p, "rb").read()
            out[p] = (st.st_mode, st.st_mtime_ns, hashlib.sha256(data).hexdigest(),
                      os.readlink(p) if os.path.islink(p) else None)
    return out


def validate(capsys, *args):
    """In this process (--jobs 1); the worker processes have tests of their own."""
    code = main(["validate", *map(str, args), *(() if "--jobs" in args else ("--jobs", "1"))])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_valid_sets_pass(golden, capsys):
    code, out, err = validate(capsys, golden, "--reference-dir", golden)
    assert code == 0, out
    assert "2 golden sets, 4 images verified, 0 problems" in err


def test_committed_goldens_pass(capsys):
    from conformance import PROJECT_ROOT

    root = PROJECT_ROOT / "golden"
    if not any(root.glob("*/*/manifest.json")):
        pytest.skip("no committed golden sets")
    code, out, _err = validate(capsys, root)
    assert code == 0, out


def _big_png(root):
    Image.new("RGB", (5000, 4000)).save(png(root))
    rewrite_png(root, png(root).read_bytes())


CORPUS = [
    # (kind, mutation, expected substring in the problem line, file the line names)
    ("truncated manifest",
     lambda r: (set_dir(r) / MANIFEST).write_text((set_dir(r) / MANIFEST).read_text()[:80]),
     "not valid JSON (truncated or edited?)", MANIFEST),
    ("manifest not JSON", lambda r: (set_dir(r) / MANIFEST).write_text("<xml/>"),
     "not valid JSON", MANIFEST),
    ("manifest not UTF-8", lambda r: (set_dir(r) / MANIFEST).write_bytes(b"\xff\xfe{}"),
     "is not UTF-8 text", MANIFEST),
    ("unknown schema version", lambda r: manifest_edit(r, lambda d, e: d.update(schema_version=99)),
     "schema_version is 99", MANIFEST),
    ("manifest top level is a list", lambda r: (set_dir(r) / MANIFEST).write_text("[]"),
     "top level must be an object", MANIFEST),
    ("entry lacks a key", lambda r: manifest_edit(r, lambda d, e: e.pop("file_sha256")),
     "key file_sha256 is missing", MANIFEST),
    ("entry key of the wrong type", lambda r: manifest_edit(r, lambda d, e: e.update(height="8")),
     "height must be an integer, not a string ('8')", MANIFEST),
    ("duplicate entries for one file",
     lambda r: manifest_edit(r, lambda d, e: d["entries"]["tiny-sd/ring/16x8/fp32"].update(
         file=e["file"])),
     "is also used by", MANIFEST),
    ("id does not match its fields", lambda r: manifest_edit(r, lambda d, e: e.update(case="x")),
     "does not match its fields", MANIFEST),
    ("unknown entry key", lambda r: manifest_edit(r, lambda d, e: e.update(seed=1)),
     "unknown key seed (accepted: id, model", MANIFEST),
    ("traversal path", lambda r: manifest_edit(r, lambda d, e: e.update(file="../../x.png")),
     "not a plain lower-case .png name", MANIFEST),
    ("absolute path", lambda r: manifest_edit(r, lambda d, e: e.update(file="/etc/x.png")),
     "not a plain lower-case .png name", MANIFEST),
    ("manifest class differs from the folder",
     lambda r: manifest_edit(r, lambda d, e: d.update(hardware_class="cpu-avx512")),
     "hardware_class is 'cpu-avx512' but the directory is 'cpu-amd-avx2'", MANIFEST),
    ("fingerprint class differs",
     lambda r: manifest_edit(r, lambda d, e: e["fingerprint"].update(hardware_class="cuda-sm89")),
     "fingerprint class 'cuda-sm89' is not the set's 'cpu-amd-avx2'", MANIFEST),
    ("fingerprint incomplete",
     lambda r: manifest_edit(r, lambda d, e: e["fingerprint"].pop("torch")),
     "fingerprint lacks torch", MANIFEST),
    ("params of another model",
     lambda r: manifest_edit(r, lambda d, e: e["params"].update(model="tiny-flux")),
     "params model 'tiny-flux' is not 'tiny-sd'", MANIFEST),
    ("wrong file SHA-256", lambda r: manifest_edit(r, lambda d, e: e.update(file_sha256="0" * 64)),
     "file SHA-256", "dot-16x8-fp32.png"),
    ("wrong pixel SHA-256",
     lambda r: manifest_edit(r, lambda d, e: e.update(pixel_sha256="a" * 64)),
     "decoded pixels do not match", "dot-16x8-fp32.png"),
    ("truncated PNG", lambda r: rewrite_png(r, png(r).read_bytes()[:60]),
     "does not decode as PNG", "dot-16x8-fp32.png"),
    ("JPEG named .png", lambda r: (Image.fromarray(_image(1)).save(png(r), format="JPEG"),
                                   rewrite_png(r, png(r).read_bytes())),
     "is JPEG, not PNG", "dot-16x8-fp32.png"),
    ("oversized image (decompression bomb)", _big_png,
     "is 5000x4000 pixels, over the limit", "dot-16x8-fp32.png"),
    ("wrong size", lambda r: (Image.new("RGB", (8, 8)).save(png(r)),
                              rewrite_png(r, png(r).read_bytes())),
     "is 8x8, the manifest says 16x8", "dot-16x8-fp32.png"),
    ("wrong mode", lambda r: (Image.new("RGBA", (16, 8)).save(png(r)),
                              rewrite_png(r, png(r).read_bytes())),
     "has mode RGBA, expected RGB", "dot-16x8-fp32.png"),
    ("declared PNG missing", lambda r: png(r).unlink(),
     "declared as 'tiny-sd/dot/16x8/fp32' but missing", "dot-16x8-fp32.png"),
    ("symlinked PNG", lambda r: (png(r).rename(r / "elsewhere.png"),
                                 png(r).symlink_to(r / "elsewhere.png")),
     "is a symbolic link", "dot-16x8-fp32.png"),
    ("symlinked manifest", lambda r: ((set_dir(r) / MANIFEST).rename(r / "m.json"),
                                      (set_dir(r) / MANIFEST).symlink_to(r / "m.json")),
     "is not a regular file", MANIFEST),
    ("undeclared file", lambda r: (set_dir(r) / "extra-16x8-fp32.png").write_bytes(
        png(r).read_bytes()),
     "is not declared in manifest.json", "extra-16x8-fp32.png"),
    ("pickle file", lambda r: (set_dir(r) / "weights.pkl").write_bytes(pickle.dumps({"a": 1})),
     "is a pickle; golden sets hold only PNG images", "weights.pkl"),
    ("pickle disguised as PNG", lambda r: (set_dir(r) / "x.png").write_bytes(pickle.dumps([1])),
     "is a pickle", "x.png"),
    ("torch checkpoint", lambda r: (set_dir(r) / "model.ckpt").write_bytes(b"PK\x03\x04rest"),
     "is a zip archive", "model.ckpt"),
    ("ELF executable", lambda r: (set_dir(r) / "tool").write_bytes(b"\x7fELF\x02\x01\x01"),
     "is an ELF executable", "tool"),
    ("script", lambda r: (set_dir(r) / "run.sh").write_text("#!/bin/sh\nrm -rf /\n"),
     "is a script", "run.sh"),
    ("executable bit", lambda r: png(r).chmod(0o755),
     "has an executable permission bit", "dot-16x8-fp32.png"),
    ("sub-folder", lambda r: (set_dir(r) / "more").mkdir(),
     "is a folder; a golden set holds only", "more"),
    ("diverges from the reference class",
     lambda r: GoldenStore(r).record(_item("dot", 1), OTHER, 255 - _image(1), [], FP, "t", "c",
                                     force=True, identity=identity_for(OTHER, FP)),
     "differs from the cpu-amd-default+bf16 golden beyond the perceptual tier",
     "dot-16x8-fp32.png"),
    ("set names no identity",
     lambda r: manifest_edit(r, lambda d, e: d.update(identity=None)),
     "names no identity", MANIFEST),
    ("identity edited after recording",  # the digest of an unmeasured identity covers the stack
     lambda r: manifest_edit(r, lambda d, e: d["identity"]["stack"].update(torch="2.99.0")),
     "does not match its contents", MANIFEST),
    ("identity features edited after recording",
     lambda r: manifest_edit(r, lambda d, e: d["identity"]["features"].update(vendor="intel")),
     "the identity's CPU features imply class 'cpu-intel-avx2'", MANIFEST),
    ("entry recorded under another configuration",
     lambda r: manifest_edit(r, lambda d, e: e["fingerprint"].update(threads=2)),
     "was recorded under another configuration than the set's identity (threads differ)",
     MANIFEST),
    ("entry from another CPU model",
     lambda r: manifest_edit(r, lambda d, e: e["fingerprint"].update(device_name="Intel Xeon")),
     "(device_name differ)", MANIFEST),
    ("schema 1 set", lambda r: manifest_edit(r, lambda d, e: (d.update(schema_version=1),
                                                               d.pop("identity"))),
     "convert the set with: conformance migrate", MANIFEST),
    ("parameters differ from the reference",
     lambda r: manifest_edit(r, lambda d, e: e["params"].update(prompt="a blue square")),
     "generation parameters differ from the cpu-amd-default+bf16 golden", "dot-16x8-fp32.png"),
]


@pytest.mark.parametrize(("kind", "mutate", "message", "names"), CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_input_corpus(golden, capsys, kind, mutate, message, names):
    mutate(golden)
    before = snapshot(golden)
    code, out, _err = validate(capsys, golden, "--reference-dir", golden)
    assert code == 1, f"{kind}: {out}"
    lines = [line for line in out.splitlines() if message in line]
    assert lines, f"{kind}: expected {message!r} in:\n{out}"
    assert any(names in line.split(": ", 1)[0] for line in lines), lines
    assert snapshot(golden) == before, "validate modified its input"


def test_bad_folder_name_and_paths(golden, capsys, tmp_path):
    shutil.copytree(set_dir(golden), golden / "tiny-sd" / "gpu!")
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to(golden)
    code, out, _ = validate(capsys, golden, tmp_path / "file.txt", tmp_path / "empty",
                            tmp_path / "link", tmp_path / "absent", "--reference-dir", golden)
    assert code == 1
    for text in ("folder name: 'gpu!' is not a hardware class", "file.txt: is not a folder",
                 "empty: holds no golden set", "link: is a symbolic link",
                 "absent: does not exist"):
        assert text in out, out


def test_every_problem_is_reported_at_once(golden, capsys):
    manifest_edit(golden, lambda d, e: e.update(file_sha256="0" * 64))
    (set_dir(golden) / "weights.pkl").write_bytes(pickle.dumps(1))
    png(golden, "ring-16x8-fp32.png").chmod(0o700)
    code, out, err = validate(capsys, golden, "--reference-dir", golden)
    assert code == 1 and len(out.splitlines()) == 3
    assert "3 problems" in err


def _broken_set(golden):
    """Two more sets with problems, so that the workers have several sets to share."""
    store = GoldenStore(golden)
    for cls in ("cpu-amd-avx512+bf16", "cpu-intel-avx512"):
        fp = FP | {"hardware_class": cls}
        store.record(_item("dot", 1), cls, _image(1), [], fp, "2026-01-01T00:00:00Z",
                     "conformance record", identity=identity_for(cls, fp))
    (golden / "tiny-sd" / "cpu-intel-avx512" / "notes.txt").write_text("x")
    manifest_edit(golden, lambda d, e: e.update(file_sha256="0" * 64))


def test_sets_checked_in_worker_processes_report_as_in_one(golden):
    """--jobs 2 (a fresh interpreter, as the command runs: workers are forked there) gives
    the lines, the order and the summary of --jobs 1."""
    _broken_set(golden)

    def command(jobs):
        return subprocess.run(
            [sys.executable, "-m", "conformance.cli", "validate", str(golden),
             "--reference-dir", str(golden), "--jobs", jobs],
            capture_output=True, text=True, timeout=300)

    one, two = command("1"), command("2")
    assert one.returncode == two.returncode == 1
    assert one.stdout == two.stdout and one.stdout.count("\n") >= 2
    assert one.stderr == two.stderr and "4 golden sets, 6 images verified, 2 problems" in one.stderr


def _die(_set_dir):
    os._exit(3)  # a worker killed mid-set (out of memory, a signal)


def test_a_worker_that_dies_is_replaced_by_this_process(golden, capsys, monkeypatch):
    from conformance import validate as module

    _broken_set(golden)
    expected = validate(capsys, golden, "--reference-dir", golden, "--jobs", "1")

    monkeypatch.setattr(module, "_validate_in_worker", _die)
    monkeypatch.setattr(module, "_start_method", lambda: "fork")  # carries the patch along
    assert validate(capsys, golden, "--reference-dir", golden, "--jobs", "2") == expected


def test_worker_count():
    from conformance.hardware import usable_cores
    from conformance.validate import _jobs

    assert _jobs(None, 100) == min(usable_cores(), 8)
    assert _jobs(None, 1) == 1 and _jobs(4, 2) == 2 and _jobs(3, 10) == 3


@pytest.mark.parametrize("value", ["0", "-1", "two", "257", "1_0", "\u0663"])
def test_jobs_must_be_a_positive_number(capsys, value):
    with pytest.raises(SystemExit) as info:
        main(["validate", "x", "--jobs", value])
    assert info.value.code == 2
    assert (f"argument --jobs: {value!r} is not a number of processes; use an integer 1..256 "
            "in digits 0-9") in capsys.readouterr().err


def test_usage_errors(capsys):
    with pytest.raises(SystemExit) as info:
        main(["validate"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["validate", "x", "--reference-class", "nope"])
    assert info.value.code == 2
    assert "argument --reference-class" in capsys.readouterr().err


def test_command_line_process_has_no_traceback(golden):
    (set_dir(golden) / MANIFEST).write_text("{")
    proc = subprocess.run([sys.executable, "-m", "conformance.cli", "validate", str(golden),
                           "--reference-dir", str(golden)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    assert "not valid JSON" in proc.stdout and "Traceback" not in proc.stderr


def _renamed_identity(root, cls, fp, digest="b"):
    """Rewrite a set's identity as if another machine (with the same class name) made it."""
    path = set_dir(root, cls) / MANIFEST
    data = json.loads(path.read_text())
    ident = identity_for(cls, fp, digests={"fp32": digest * 12})
    data["identity"] = ident.to_dict()
    path.write_text(json.dumps(data))


def test_identity_whose_features_imply_another_class(golden, capsys):
    path = set_dir(golden) / MANIFEST
    data = json.loads(path.read_text())
    ident = identity_for(OTHER, FP).to_dict()
    ident["features"]["flags"] = ["amx_bf16"]
    ident.pop("digest")
    data["identity"] = ident
    path.write_text(json.dumps(data))
    code, out, _ = validate(capsys, golden, "--reference-dir", golden)
    assert code == 1
    assert "the identity's CPU features imply class 'cpu-amd-avx2+amx', not the folder's " \
           "'cpu-amd-avx2'" in out


def test_contribution_that_would_replace_another_machines_set(golden, capsys, tmp_path):
    """Same path, another measured identity: both named, even with identical goldens."""
    base = tmp_path / "base"
    _renamed_identity(golden, OTHER, FP, digest="a")
    shutil.copytree(golden, base)
    _renamed_identity(golden, OTHER, FP, digest="b")
    before = snapshot(base)
    code, out, _ = validate(capsys, set_dir(golden), "--reference-dir", golden, "--base", base)
    assert code == 1
    line = next(x for x in out.splitlines() if "would replace the goldens of" in x)
    assert f"probes {identity_for(OTHER, FP, {'fp32': 'a' * 12}).digest}" in line, line
    assert f"probes {identity_for(OTHER, FP, {'fp32': 'b' * 12}).digest}" in line, line
    assert snapshot(base) == before


def test_measured_identity_replaces_an_unmeasured_one_only_by_reproducing(golden, capsys,
                                                                         tmp_path):
    """A set recorded before the probe battery, recorded again on a machine of its class:
    accepted with a notice when every golden's pixels and trace are reproduced."""
    base = tmp_path / "base"
    shutil.copytree(golden, base)
    _renamed_identity(golden, OTHER, FP)
    code, out, err = validate(capsys, set_dir(golden), "--reference-dir", golden,
                              "--base", base)
    assert code == 0, out
    assert "measures the identity of a set recorded without probe digests (2 goldens " \
           "reproduced" in err
    step = {"step": 0, "timestep": 999.0, "digest": "0" * 16, "mean": 0.0, "std": 1.0,
            "min": -1.0, "max": 1.0}
    manifest_edit(golden, lambda d, e: e.update(trace=[step]))
    code, out, _ = validate(capsys, set_dir(golden), "--reference-dir", golden, "--base", base)
    assert code == 1
    assert "1 golden(s) differ in pixels or latents: tiny-sd/dot/16x8/fp32" in out
    manifest_edit(golden, lambda d, e: d["entries"].pop("tiny-sd/ring/16x8/fp32"))
    code, out, _ = validate(capsys, set_dir(golden), "--reference-dir", golden, "--base", base)
    assert code == 1
    assert "1 golden(s) are missing: tiny-sd/ring/16x8/fp32" in out
    assert "takes a measured identity only by reproducing every golden" in out


def test_contribution_may_add_but_not_drop_or_change(golden, capsys, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(golden, base)
    # same identity, one more golden: fine
    GoldenStore(golden).record(_item("star", 3), OTHER, _image(3), [], FP, "t", "c",
                               identity=identity_for(OTHER, FP))
    code, out, _ = validate(capsys, set_dir(golden), "--reference-dir", golden, "--base", base)
    assert code == 0, out
    # drop one and change another
    def drop_and_change(d, e):
        d["entries"].pop("tiny-sd/ring/16x8/fp32")
        e.update(pixel_sha256="c" * 64)
    manifest_edit(golden, drop_and_change)
    code, out, _ = validate(capsys, set_dir(golden), "--reference-dir", golden, "--base", base)
    assert code == 1
    assert "drops 1 recorded golden(s) of the base set: tiny-sd/ring/16x8/fp32" in out
    assert "changes the pixels of 1 recorded golden(s) of the same identity" in out


def test_base_must_be_a_folder(golden, capsys, tmp_path):
    code, _out, err = validate(capsys, golden, "--base", tmp_path / "nope")
    assert code == 2 and "--base" in err


# -- broken predictions: sets that share a digest but not their images ---------------------------
def _measured_set(root, cls, digest, image_seed):
    fp = FP | {"hardware_class": cls}
    ident = identity_for(cls, fp, digests={"fp32": digest}, probes={"x/fp32": digest * 4})
    GoldenStore(root).record(_item(), cls, _image(image_seed), [], fp, "2026-01-01T00:00:00Z",
                             "conformance record", identity=ident)


def test_sets_sharing_a_digest_with_different_goldens_are_a_broken_prediction(
        tmp_path, capsys):
    root = tmp_path / "g"
    _measured_set(root, "cpu-amd-avx2", "d1", 1)
    _measured_set(root, "cpu-intel-avx2", "d1", 1)   # same digest, same image: fine
    assert main(["validate", str(root), "--reference-dir", str(root), "--jobs", "1"]) == 0
    _measured_set(root, "cpu-intel-avx512", "d1", 2)  # same digest, other image: broken
    _measured_set(root, "cpu-amd-avx512", "d9", 3)    # another digest: free to differ
    assert main(["validate", str(root), "--reference-dir", str(root), "--jobs", "1"]) == 1
    out = capsys.readouterr().out
    assert out.count("broken prediction") == 2, out  # against each of the two equal sets
    assert "shares the fp32 digest d1 with" in out and "tiny-sd/dot/16x8/fp32 differ" in out
    assert "cpu-amd-avx512" not in out


def test_a_contribution_is_checked_against_the_base_sets_for_broken_predictions(
        tmp_path, capsys):
    base, contrib = tmp_path / "base", tmp_path / "contrib"
    _measured_set(base, "cpu-amd-avx2", "d1", 1)
    _measured_set(contrib, "cpu-intel-avx2", "d1", 2)
    assert main(["validate", str(contrib), "--base", str(base), "--reference-dir", str(base),
                 "--jobs", "1"]) == 1
    out = capsys.readouterr().out
    assert "broken prediction: shares the fp32 digest d1 with" in out
    assert str(base / "tiny-sd" / "cpu-amd-avx2") in out
