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
    (only,) = load_deviations(DEFAULT_DEVIATIONS)
    assert only.checks == ("fidelity",) and only.action == "xfail"


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
        (('action = "xfail"', 'action = "fail"'), "key 'action' is 'fail'; accepted: xfail, skip"),
        (('checks = ["reference"]', 'checks = ["golden"]'), "unknown check 'golden'"),
        (('checks = ["reference"]', "checks = []"), "'checks' must be a non-empty array"),
        (('ids = ["tiny-sd/*/96x96/*"]', 'ids = "x"'), "'ids' must be a non-empty array"),
        (('reason = "attention split on small cards"', 'reason = " "'), "'reason' must be"),
        (('reason = "attention split on small cards"', ""), "missing required key 'reason'"),
        (('action = "xfail"', 'action = "xfail"\nwhy = 1'), "unknown key 'why'"),
        (("schema_version = 1", "schema_version = 1\nextra = 2"), "unknown top-level key"),
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
    with pytest.raises(DeviationFileError, match="must be a table"):
        load_deviations(write(tmp_path, "schema_version = 1\ndeviation = [3]\n"))
    with pytest.raises(DeviationFileError, match="invalid TOML"):
        load_deviations(write(tmp_path, "[[deviation]"))
    with pytest.raises(DeviationFileError, match="cannot read"):
        load_deviations(tmp_path / "none.toml")
