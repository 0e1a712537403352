"""The measured identity: probe battery, CPU features, class names, identity records, the
own-class tier decision, recording refusals and ``conformance migrate``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance import probes
from conformance.cases import Case, Item, Resolution
from conformance.cli import main
from conformance.golden import MANIFEST, GoldenStore, IdentityMismatchError, parse_manifest
from conformance.hardware import HardwareClass, cpu_class_name, cpu_features
from conformance.identity import Identity, compare, explain, stack_of
from tests.identities import identity_for

AMD_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 avx avx2 fma f16c avx512f avx512bw avx512dq avx512vl avx512_bf16 \
avx512_vnni

processor\t: 1
vendor_id\t: SomethingElse
"""
INTEL_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 207
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 \
amx_tile amx_int8
"""
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd asimdhp sve sve2 bf16 i8mm
CPU implementer\t: 0x41
CPU architecture: 8
CPU part\t: 0xd4f
"""
FP = {"hardware_class": "cpu-amd-avx512+bf16", "device": "cpu", "threads": 1,
      "torch": "2.13.0+cpu", "diffusers": "0.42.1", "transformers": "5.23.0",
      "deterministic": True, "device_name": "AMD EPYC"}


# -- probes -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def battery():
    return probes.run_battery("cpu")


def test_battery_covers_every_operator_and_dtype(battery):
    assert len(battery.digests) == sum(len(p.dtypes) for p in probes.BATTERY)
    assert all(len(v) == 16 and int(v, 16) >= 0 for v in battery.digests.values())
    groups = {p.group for p in probes.BATTERY}
    assert {"GEMM", "conv", "SDPA", "norm", "softmax", "activation", "interpolation",
            "fp8 cast", "GGUF dequantize", "reduction"} <= groups
    assert battery.seconds > 0  # timed by benchmarks/bench_probes.py, not asserted here


def test_battery_is_stable_within_and_across_processes(battery):
    assert probes.run_battery("cpu").digests == battery.digests
    code = ("import json, torch; torch.set_num_threads(1); from conformance import probes; "
            "print(json.dumps(probes.run_battery('cpu').digests))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300).stdout
    assert json.loads(out) == battery.digests


def test_thread_count_is_measured():
    code = ("import json, torch; torch.set_num_threads(2); from conformance import probes; "
            "print(json.dumps(probes.run_battery('cpu').digests))")
    two = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                    text=True, check=True, timeout=300).stdout)
    one = probes.run_battery("cpu").digests
    differ = probes.differing_probes(one, two)
    # full reductions split their partial sums by thread on every CPU; which GEMMs also
    # split by thread depends on the CPU (on an Intel Xeon with AMX the K=1280 one does);
    # on a loaded machine the elementwise exp/sin probe did too once (where its vector
    # loop's scalar tail falls moves with the chunk a thread gets)
    assert "reduce/fp32" in differ, differ
    assert all(k.startswith(("reduce/", "linear-", "exp_sin/")) for k in differ), differ


def test_precision_digests_depend_on_their_probes_only(battery):
    d = dict(battery.digests)
    stack = stack_of(FP)
    before = probes.precision_digests(d, stack, ("fp32", "bf16", "fp16", "fp8-e4m3",
                                                 "gguf-q4_k_m"))
    d["linear-64x256x256/bf16"] = "0" * 16  # a bf16 GEMM changes: only bf16 moves
    after = probes.precision_digests(d, stack, tuple(before))
    assert [p for p in before if before[p] != after[p]] == ["bf16"]
    d["gguf-q4_k-linear/fp32"] = "1" * 16
    after2 = probes.precision_digests(d, stack, tuple(before))
    assert {p for p in before if after[p] != after2[p]} == {"gguf-q4_k_m"}
    d["conv3x3-4x32-8/fp32"] = "2" * 16  # fp32 kernels feed every precision
    after3 = probes.precision_digests(d, stack, tuple(before))
    assert all(after2[p] != after3[p] for p in before)
    assert probes.precision_digest(d, stack | {"threads": 2}, "fp32") != after3["fp32"]


def test_error_probe_is_a_measurement(monkeypatch):
    def boom(make, dtype, device):
        raise RuntimeError("pack_vnni2 is only supported when avx512 is supported")

    monkeypatch.setattr(probes, "BATTERY", (probes.Probe("x", ("bfloat16",), boom, "SDPA"),))
    assert probes.run_battery("cpu").digests == {"x/bf16": "error: RuntimeError"}


def test_summarize_probes():
    assert probes.summarize_probes(["linear-64x256x256/bf16", "linear-77x64x64/bf16",
                                    "sdpa-16h-64q-64kv-d4/bf16"]) == "bf16 GEMM, bf16 SDPA"


# -- CPU features and class names ---------------------------------------------------------
@pytest.mark.parametrize(("text", "level", "env", "name"), [
    (AMD_CPUINFO, "avx512", {}, "cpu-amd-avx512+bf16"),
    (AMD_CPUINFO, "default", {"ATEN_CPU_CAPABILITY": "default"}, "cpu-amd-default+bf16"),
    (INTEL_CPUINFO, "avx512", {}, "cpu-intel-avx512+amx+bf16+fp16"),
    (INTEL_CPUINFO, "avx2", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
     "cpu-intel-avx2+amx+bf16+fp16-onednn_avx512_core"),
    (AMD_CPUINFO, "avx512", {"MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "AVX2"},
     "cpu-amd-avx512+bf16-onednn_avx2-cbwr_compatible"),
    (ARM_CPUINFO, "sve256", {}, "cpu-arm-sve256+sve"),
    ("", "default", {}, None),
])
def test_class_names_carry_what_separates_bits(text, level, env, name):
    features = cpu_features(text, env, level)
    got = cpu_class_name(features)
    HardwareClass(got)  # always a valid class
    if name is not None:
        assert got == name
    assert features["env"] == env


def test_features_keep_the_steering_flags_only():
    f = cpu_features(INTEL_CPUINFO, {}, "avx512")
    assert "amx_bf16" in f["flags"] and "fpu" not in f["flags"]
    assert (f["vendor"], f["family"], f["model"]) == ("intel", "6", "207")


@pytest.mark.parametrize("bad", ["cpu-", "cpu-amd-avx512+", "CPU-amd", "cpu-amd\n",
                                 "cpu-amd-avx512+bf16\x1b[2J", "cpu-" + "a" * 90, "gpu-x"])
def test_class_names_are_validated(bad):
    with pytest.raises(ValueError, match="not a hardware class"):
        HardwareClass(bad)


# -- identity records -------------------------------------------------------------------
def _measured(cls="cpu-amd-avx512+bf16", battery=None, fp=FP, **digests):
    probe_digests = dict(battery.digests) if battery else {"linear/fp32": "a" * 16}
    precs = probes.precision_digests(probe_digests, stack_of(fp), ("fp32", "bf16"))
    precs.update(digests)
    return identity_for(cls, fp, digests=precs, probes=probe_digests)


def test_identity_round_trip_and_tamper_detection(battery):
    ident = _measured(battery=battery)
    data = json.loads(json.dumps(ident.to_dict()))
    assert Identity.from_dict(data) == ident and Identity.from_dict(data).digest == ident.digest
    data["precision_digests"]["fp32"] = "0" * 12
    with pytest.raises(ValueError, match="does not match its contents"):
        Identity.from_dict(data)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d.update(extra=1), r"unknown key identity.extra \(accepted: class, features"),
    (lambda d: d.pop("class"), "key identity.class is missing"),
    (lambda d: d.update(features=[]), "identity.features must be an object, not a list"),
    (lambda d: d.update(probes={"a": 1}),
     r"identity.probes\['a'\] must be a string, not a number \(1\)"),
    (lambda d: d.update(battery_version=True),
     r"identity.battery_version must be an integer or null, not a boolean"),
])
def test_identity_errors_name_the_key(mutate, message):
    data = _measured().to_dict()
    data.pop("digest")
    mutate(data)
    with pytest.raises(ValueError, match=message):
        Identity.from_dict(data)
    with pytest.raises(ValueError, match="must be an object"):
        Identity.from_dict([1])


@given(st.dictionaries(st.text(max_size=5), st.one_of(st.none(), st.integers(), st.text(
    max_size=5), st.lists(st.integers(), max_size=2)), max_size=6))
def test_identity_from_arbitrary_objects_raises_only_valueerror(data):
    try:
        Identity.from_dict(data)
    except ValueError:
        pass


def test_exact_only_where_the_precision_digest_agrees(battery):
    mine = _measured(battery=battery)
    assert compare(mine, mine, "fp32").exact
    theirs = _measured(battery=battery, bf16="f" * 12)
    assert compare(mine, theirs, "fp32").exact
    verdict = compare(mine, theirs, "bf16")
    assert not verdict.exact


def test_explain_names_probes_and_features(battery):
    mine = _measured(battery=battery)
    intel_fp = FP | {"device_name": "Intel(R) Xeon(R) Processor"}
    other_probes = dict(battery.digests)
    for key in ("linear-64x256x256/bf16", "sdpa-16h-64q-64kv-d4/bf16"):
        other_probes[key] = "0" * 16
    theirs = identity_for("cpu-intel-avx512+amx+bf16+fp16", intel_fp, digests={
        "bf16": "e" * 12}, probes=other_probes)
    text = explain(mine, theirs, "bf16")
    assert "bf16 GEMM, bf16 SDPA probes differ (2 of" in text
    assert "vendor amd here, intel in the golden's" in text
    assert "the golden's CPU has amx_bf16, avx512_fp16, this one has none" in text
    verdict = compare(mine, theirs, "bf16")
    assert not verdict.exact and verdict.reason == text


def test_unmeasured_golden_set_falls_back_to_class_features_and_stack(battery):
    mine = _measured(battery=battery)
    legacy = identity_for("cpu-amd-avx512+bf16", FP)
    assert compare(mine, legacy, "fp32").exact
    assert not mine.same_as(legacy)  # but they never share a set
    other_stack = identity_for("cpu-amd-avx512+bf16", FP | {"torch": "2.12.0"})
    verdict = compare(mine, other_stack, "fp32")
    assert not verdict.exact and "torch '2.13.0+cpu' here, '2.12.0' in the golden's" in (
        verdict.reason)
    assert compare(mine, None, "fp32", ["threads 2 != 1"]).reason == "threads 2 != 1"
    assert compare(mine, None, "fp32", []).exact


# -- the golden store -------------------------------------------------------------------
def _item(name="dot", seed=1):
    case = Case(name, "tiny-sd", "a red circle", "", seed, 2, "euler", 4.0,
                (Resolution(16, 8),), ("fp32",))
    return Item(case, Resolution(16, 8), "fp32")


def _image(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (8, 16, 3), dtype=np.uint8)


def test_recording_into_another_identitys_set_refuses_even_with_force(tmp_path):
    store = GoldenStore(tmp_path)
    cls = "cpu-amd-avx512+bf16"
    store.record(_item(), cls, _image(), [], FP, "t", "c", identity=_measured())
    before = (tmp_path / "tiny-sd" / cls / MANIFEST).read_bytes()
    other = _measured(fp32="9" * 12)
    for force in (False, True):
        with pytest.raises(IdentityMismatchError, match="holds the goldens of cpu-amd-avx512"):
            GoldenStore(tmp_path).record(_item("ring", 2), cls, _image(2), [], FP, "t", "c",
                                         force=force, identity=other)
    assert (tmp_path / "tiny-sd" / cls / MANIFEST).read_bytes() == before
    # the same identity adds to its set
    GoldenStore(tmp_path).record(_item("ring", 2), cls, _image(2), [], FP, "t", "c",
                                 identity=_measured())


def test_manifest_identity_must_name_the_sets_class(tmp_path):
    store = GoldenStore(tmp_path)
    store.record(_item(), "cpu-amd-avx512+bf16", _image(), [], FP, "t", "c",
                 identity=_measured())
    path = tmp_path / "tiny-sd" / "cpu-amd-avx512+bf16" / MANIFEST
    data = json.loads(path.read_text())
    data["hardware_class"] = "cpu-amd-avx2+bf16"
    with pytest.raises(Exception, match="identity class 'cpu-amd-avx512"):
        parse_manifest(json.dumps(data), path)


# -- conformance migrate ----------------------------------------------------------------
def _legacy_root(tmp_path, fp=FP | {"hardware_class": "cpu-avx512", "cpu_isa": "avx512"}):
    """A schema-1 golden root as the previous release wrote it."""
    root = tmp_path / "old"
    store = GoldenStore(root)
    for name, seed in (("dot", 1), ("ring", 2)):
        store.record(_item(name, seed), "cpu-avx512", _image(seed), [], fp, "t", "c")
    path = root / "tiny-sd" / "cpu-avx512" / MANIFEST
    data = json.loads(path.read_text())
    data["schema_version"] = 1
    data.pop("identity")
    path.write_text(json.dumps(data))
    return root


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_migrate_keeps_every_golden_and_names_the_class(tmp_path, capsys):
    old = _legacy_root(tmp_path)
    before = _tree(old)
    out = tmp_path / "new"
    assert main(["migrate", str(old), "--out", str(out), "--flags",
                 "avx2,avx512f,avx512_bf16,amx_bf16"]) == 0
    assert _tree(old) == before  # the source is only read
    target = out / "tiny-sd" / "cpu-amd-avx512+amx+bf16"
    manifest = GoldenStore(out).manifest("tiny-sd", "cpu-amd-avx512+amx+bf16")
    assert manifest is not None and len(manifest.entries) == 2
    assert manifest.identity.migrated_from["hardware_class"] == "cpu-avx512"
    assert not manifest.identity.measured
    for entry in manifest.entries.values():
        assert (target / entry.file).read_bytes() == (old / "tiny-sd" / "cpu-avx512" /
                                                      entry.file).read_bytes()
        GoldenStore(out).load_image(entry, "cpu-amd-avx512+amx+bf16")
    assert "2 goldens" in capsys.readouterr().out
    # again: an identical migration is reported, nothing replaced
    assert main(["migrate", str(old), "--out", str(out), "--flags",
                 "avx2,avx512f,avx512_bf16,amx_bf16"]) == 0
    assert "already migrated" in capsys.readouterr().out


def test_migrate_never_replaces_a_set(tmp_path, capsys):
    old = _legacy_root(tmp_path)
    out = tmp_path / "new"
    main(["migrate", str(old), "--out", str(out), "--flags", "avx512_bf16"])
    GoldenStore(out)  # a different set now sits where the next migration would write
    path = out / "tiny-sd" / "cpu-amd-avx512+bf16" / MANIFEST
    data = json.loads(path.read_text())
    data["entries"].pop("tiny-sd/ring/16x8/fp32")
    path.write_text(json.dumps(data))
    before = _tree(out)
    assert main(["migrate", str(old), "--out", str(out), "--flags", "avx512_bf16"]) == 2
    assert "migration never replaces one" in capsys.readouterr().err
    assert _tree(out) == before


@pytest.mark.parametrize(("args", "message"), [
    ([], "--flags: schema-1 fingerprints hold no CPU flags"),
    (["--flags", "avx2;rm"], "not a /proc/cpuinfo flag name"),
    (["--flags", "avx2", "--vendor", "AMD Inc"], "expected a short lower-case name"),
])
def test_migrate_usage_errors(tmp_path, capsys, args, message):
    old = _legacy_root(tmp_path)
    try:
        code = main(["migrate", str(old), "--out", str(tmp_path / "n"), *args])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "n").exists()


def test_migrate_refuses_a_set_of_mixed_machines(tmp_path, capsys):
    old = _legacy_root(tmp_path)
    path = old / "tiny-sd" / "cpu-avx512" / MANIFEST
    data = json.loads(path.read_text())
    data["entries"]["tiny-sd/ring/16x8/fp32"]["fingerprint"]["device_name"] = "Intel Xeon"
    path.write_text(json.dumps(data))
    assert main(["migrate", str(old), "--out", str(tmp_path / "n"), "--flags", "avx2"]) == 2
    assert "recorded under another configuration (device_name" in capsys.readouterr().err


def test_migrate_needs_the_recorded_ate_level(tmp_path, capsys):
    old = _legacy_root(tmp_path, FP | {"hardware_class": "cpu-avx512"})
    assert main(["migrate", str(old), "--out", str(tmp_path / "n"), "--flags", "avx2"]) == 2
    assert "fingerprint lacks cpu_isa" in capsys.readouterr().err


def test_migrate_needs_a_vendor_it_can_read(tmp_path, capsys):
    old = _legacy_root(tmp_path, FP | {"hardware_class": "cpu-avx512", "cpu_isa": "avx512",
                                       "device_name": "Processor"})
    assert main(["migrate", str(old), "--out", str(tmp_path / "n"), "--flags", "avx2"]) == 2
    assert "does not name the vendor; pass --vendor" in capsys.readouterr().err
    assert main(["migrate", str(old), "--out", str(tmp_path / "n"), "--flags", "avx2",
                 "--vendor", "hygon", "--dry-run"]) == 0
    assert "would migrate" in capsys.readouterr().out and not (tmp_path / "n").exists()


def test_migrated_sets_validate(tmp_path, capsys):
    old = _legacy_root(tmp_path)
    out = tmp_path / "new"
    main(["migrate", str(old), "--out", str(out), "--flags", "avx512_bf16"])
    shutil.rmtree(old)
    capsys.readouterr()
    code = main(["validate", str(out), "--reference-dir", str(out)])
    assert code == 0, capsys.readouterr().out


def test_schema_1_sets_are_refused_by_the_store_with_the_fix(tmp_path):
    old = _legacy_root(tmp_path)
    with pytest.raises(Exception, match="conformance migrate"):
        GoldenStore(old).manifest("tiny-sd", "cpu-avx512")


def test_command_line_records_paths_below_the_working_directory_relative(monkeypatch, tmp_path):
    from conformance.hardware import command_line

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["/x/bin/conformance", "record", "--out",
                                      str(tmp_path / "g"), f"--results={tmp_path}/r.json",
                                      "/etc/elsewhere", "-k", "own"])
    assert command_line() == "conformance record --out g --results=r.json /etc/elsewhere -k own"
