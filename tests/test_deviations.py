from __future__ import annotations

import pytest

from conformance.deviations import (
    DEFAULT_DEVIATIONS,
    DeviationFileError,
    load_deviations,
    match,
)

GOOD = """schema_version = 1
[[deviation]]
classes = ["cuda-sm7*"]
ids = ["tiny-sd/*/96x96/*"]
checks = ["reference"]
action = "xfail"
reason = "attention split on small cards"

[[deviation]]
classes = ["*"]
ids = ["tiny-flux/*"]
action = "skip"
reason = "flux not supported here"
"""


def write(tmp_path, text):
    p = tmp_path / "dev.toml"
    p.write_text(text)
    return p


def test_default_file_is_valid():
    e5m2, amx = load_deviations(DEFAULT_DEVIATIONS)
    assert e5m2.checks == ("fidelity",) and e5m2.action == "xfail"
    assert amx.cpu_flags == ("amx_bf16",) and amx.cpu_isa == ("default", "avx2")
    assert len(amx.checks) == 5 and amx.action == "xfail"
    assert "pack_vnni2 is only supported when avx512 is supported" in amx.reason


@pytest.mark.parametrize(
    ("hardware_class", "item_id", "features", "matched"),
    [
        ("cpu-intel-default+amx", "tiny-sd/a/64x64/bf16",
         {"flags": ["avx2", "amx_bf16"], "aten_level": "default"}, True),
        ("cpu-intel-avx2+amx", "tiny-flux/b/32x32/bf16",
         {"flags": ["amx_bf16"], "aten_level": "AVX2"}, True),
        ("cpu-intel-avx512+amx", "tiny-sd/a/64x64/bf16",
         {"flags": ["amx_bf16"], "aten_level": "avx512"}, False),
        ("cpu-intel-avx2", "tiny-sd/a/64x64/bf16",
         {"flags": ["avx2"], "aten_level": "avx2"}, False),
        ("cpu-intel-avx2+amx", "tiny-sd/a/64x64/fp32",
         {"flags": ["amx_bf16"], "aten_level": "avx2"}, False),
        ("cuda-sm89", "tiny-sd/a/64x64/bf16",
         {"flags": ["amx_bf16"], "aten_level": "avx2"}, False),
        ("cpu-intel-avx2+amx", "tiny-sd/a/64x64/bf16", None, False),
    ],
)
def test_default_amx_entry_matches_by_cpu_feature(hardware_class, item_id, features, matched):
    devs = load_deviations(DEFAULT_DEVIATIONS)
    for check in ("repeatable", "own-class", "reference", "invariance", "fidelity"):
        dev = match(devs, hardware_class, item_id, check, features=features)
        if matched:
            assert dev is not None and dev.cpu_flags == ("amx_bf16",), check
        else:
            assert dev is None or not dev.cpu_flags, check


def test_cpu_feature_keys(tmp_path):
    text = GOOD + 'cpu_flags = ["avx512_bf16", "avx512f"]\ncpu_isa = ["Z VECTOR", "avx512"]\n'
    devs = load_deviations(write(tmp_path, text))
    flux = devs[1]
    assert flux.cpu_flags == ("avx512_bf16", "avx512f")
    item = "tiny-flux/b/64x64/fp32"
    both = {"flags": ["avx512f", "avx512_bf16"], "aten_level": "AVX512"}
    assert match(devs, "cpu-x", item, "repeatable", both) is flux
    assert match(devs, "cpu-x", item, "repeatable", {**both, "aten_level": "zvector"}) is flux
    assert match(devs, "cpu-x", item, "repeatable", {**both, "flags": ["avx512f"]}) is None
    assert match(devs, "cpu-x", item, "repeatable", {**both, "aten_level": "avx2"}) is None
    assert match(devs, "cpu-x", item, "repeatable", {"flags": "avx512f avx512_bf16",
                                                     "aten_level": "avx512"}) is None
    assert match(devs, "cpu-x", item, "repeatable") is None
    # entries without CPU keys match with or without features
    assert match(devs, "cuda-sm75", "tiny-sd/a/96x96/fp16", "reference", both).index == 1
    assert "cpu_flags=['avx512_bf16', 'avx512f'], cpu_isa=['Z VECTOR', 'avx512']" in (
        flux.describe())


def test_matching(tmp_path):
    devs = load_deviations(write(tmp_path, GOOD))
    assert match(devs, "cuda-sm75", "tiny-sd/a/96x96/fp16", "reference").index == 1
    assert match(devs, "cuda-sm75", "tiny-sd/a/96x96/fp16", "own-class") is None
    assert match(devs, "cuda-sm89", "tiny-sd/a/96x96/fp16", "reference") is None
    assert match(devs, "cpu-avx2", "tiny-flux/b/64x64/fp32", "repeatable").action == "skip"
    assert devs[1].checks == ("repeatable", "own-class", "reference", "invariance", "fidelity")
    assert "deviation #1 (classes=['cuda-sm7*']" in devs[0].describe()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("schema_version = 1", "schema_version = 0"), "schema_version is 0"),
        (('action = "xfail"', 'action = "fail"'),
         r"deviation\[0\]\.action 'fail' is not one of xfail, skip"),
        (('checks = ["reference"]', 'checks = ["golden"]'),
         r"deviation\[0\]\.checks\[0\] 'golden' is not one of repeatable, "),
        (('checks = ["reference"]', "checks = []"),
         r"deviation\[0\]\.checks must be a non-empty list of checks"),
        (('ids = ["tiny-sd/*/96x96/*"]', 'ids = "x"'),
         r"deviation\[0\]\.ids must be a non-empty list of at most 256 "),
        (('reason = "attention split on small cards"', 'reason = " "'),
         r"deviation\[0\]\.reason must be one line of printable text, not blank"),
        (('reason = "attention split on small cards"', ""),
         r"key deviation\[0\]\.reason is missing"),
        (('action = "xfail"', 'action = "xfail"\nwhy = 1'),
         r"unknown key deviation\[0\]\.why \(accepted: classes, "),
        (("schema_version = 1", "schema_version = 1\nextra = 2"),
         r"unknown key extra \(accepted: schema_version, deviation\)"),
        (("schema_version = 1", "schema_version = true"), "schema_version is True"),
        (("schema_version = 1", "schema_version = 1.0"), "schema_version is 1.0"),
        (('action = "xfail"', 'action = "xfail"\ncpu_flags = ["amx"]'),
         r"deviation\[0\]\.cpu_flags\[0\] 'amx' is not one of avx, avx2, "),
        (('action = "xfail"', 'action = "xfail"\ncpu_flags = []'),
         r"\.cpu_flags must be a non-empty list of CPU flags the suite reads, not an empty list"),
        (('action = "xfail"', 'action = "xfail"\ncpu_flags = "amx_bf16"'),
         r"\.cpu_flags must be a non-empty list of CPU flags the suite reads, not a string"),
        (('action = "xfail"', 'action = "xfail"\ncpu_isa = ["avx1024"]'),
         r"deviation\[0\]\.cpu_isa\[0\]: 'avx1024' is not an ATen CPU level; accepted: "
         r"default, no avx, avx2"),
        (('action = "xfail"', 'action = "xfail"\ncpu_isa = [2]'),
         r"deviation\[0\]\.cpu_isa\[0\] must be one line of printable text"),
    ],
)
def test_errors(tmp_path, edit, message):
    path = write(tmp_path, GOOD.replace(*edit, 1))
    with pytest.raises(DeviationFileError, match=message) as info:
        load_deviations(path)
    assert str(info.value).startswith(str(path))


def test_structural_errors(tmp_path):
    with pytest.raises(DeviationFileError, match="array of tables"):
        load_deviations(write(tmp_path, "schema_version = 1\ndeviation = 3\n"))
    with pytest.raises(DeviationFileError, match=(
            r"deviation\[0\] must be a \[\[deviation\]\] table")):
        load_deviations(write(tmp_path, "schema_version = 1\ndeviation = [3]\n"))
    with pytest.raises(DeviationFileError, match="invalid TOML"):
        load_deviations(write(tmp_path, "[[deviation]"))
    with pytest.raises(DeviationFileError, match="cannot read"):
        load_deviations(tmp_path / "none.toml")


def test_an_entry_names_tests_by_its_ids_and_checks_on_any_machine():
    from conformance.deviations import Deviation

    dev = Deviation(1, ("cuda-*",), ("tiny-sd/*/*/bf16",), ("own-class",), "skip", "gpu",
                    cpu_flags=("amx_bf16",))
    assert dev.names("tiny-sd/dot/64x64/bf16", "own-class")  # whatever the machine
    assert not dev.names("tiny-sd/dot/64x64/fp32", "own-class")
    assert not dev.names("tiny-sd/dot/64x64/bf16", "reference")
    assert not dev.matches("cpu-amd-avx2", "tiny-sd/dot/64x64/bf16", "own-class")
