"""``conformance init`` and the suite installed from a wheel, outside this checkout."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conformance import PACKAGE_DIR, PROJECT_ROOT
from conformance.cli import main
from conformance.init import files, init
from conformance.options import check_record_target, resolve

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_init_writes_a_starter_suite_that_reads(tmp_path):
    written = init(tmp_path / "suite")
    names = sorted(str(p.relative_to(tmp_path / "suite")) for p in written)
    assert names == sorted(files("tiny-sd", "cpu-x-avx2"))
    assert "test_my_pipeline.py" in names
    from conformance.cases import load_cases
    from conformance.tolerances import load_tolerances

    cases = load_cases(tmp_path / "suite" / "cases.toml")
    assert [i.id for i in cases.items()] == ["tiny-sd/starter/64x64/fp32",
                                             "tiny-sd/starter/64x64/bf16"]
    load_tolerances(tmp_path / "suite" / "tolerances.toml")
    assert (tmp_path / "suite" / "golden").is_dir()
    ini = (tmp_path / "suite" / "pytest.ini").read_text()
    assert "testpaths = conformance ." in ini and "conformance_golden_dir = golden" in ini
    from conformance.hardware import detect_class

    assert f"conformance_reference_class = {detect_class('cpu').name}" in ini


def test_flux_starter(tmp_path):
    init(tmp_path, "tiny-flux")
    data = tomllib.loads((tmp_path / "cases.toml").read_text())
    assert data["cases"]["starter"]["model"] == "tiny-flux"


def test_init_never_replaces_a_file(tmp_path, capsys):
    (tmp_path / "cases.toml").write_text("mine")
    (tmp_path / "golden").mkdir()
    (tmp_path / "golden" / "README.md").write_text("mine too")
    before = _snapshot(tmp_path)
    code = main(["init", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "already holds cases.toml, golden/README.md; nothing was written" in err
    assert _snapshot(tmp_path) == before  # not even the files that were free


def test_init_errors_name_the_flag_or_the_path(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert main(["init", str(tmp_path / "afile")]) == 2
    assert "afile: exists and is not a folder" in capsys.readouterr().err
    assert main(["init", str(tmp_path), "--model", "sdxl"]) == 2
    err = capsys.readouterr().err
    assert "--model: 'sdxl' has no starter case; accepted: tiny-sd, tiny-flux" in err
    assert "Traceback" not in err and not list(tmp_path.glob("*.toml"))


def test_ini_paths_are_relative_to_the_ini_file(tmp_path):
    assert resolve("golden-dir", None, "golden", tmp_path) == tmp_path / "golden"
    assert resolve("golden-dir", None, "/abs/golden", tmp_path) == Path("/abs/golden")
    assert resolve("golden-dir", tmp_path / "cli", "golden", tmp_path) == tmp_path / "cli"
    assert resolve("device", None, "cpu", tmp_path) == "cpu"  # not a path option
    (tmp_path / "cases.toml").write_text("")
    assert resolve("cases", None, "cases.toml", tmp_path) == tmp_path / "cases.toml"
    with pytest.raises(ValueError, match=r"ini option conformance_cases: .*is not an existing"):
        resolve("cases", None, "missing.toml", tmp_path)


def test_recording_into_the_installed_packages_goldens_is_refused():
    problem = check_record_target(PACKAGE_DIR / "_data" / "golden")
    assert problem and "the installed package's copy of the project's golden sets" in problem
    assert check_record_target(PROJECT_ROOT / "golden") is None  # this checkout's own


def test_every_package_is_in_the_wheel_list():
    """pyproject.toml lists the packages (the data folders are mapped into the wheel)."""
    listed = set(tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
                 ["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(PROJECT_ROOT).parts)
             for p in PACKAGE_DIR.rglob("__init__.py")}
    assert found <= listed, f"add to pyproject.toml [tool.setuptools] packages: {found - listed}"


#: what the wheel is built from: the project file, the readme it names, the package and the
#: two data folders
WHEEL_SOURCES = ("pyproject.toml", "README.md", "conformance", "fixtures", "golden")
#: a file a checkout that ran the fixture tooling holds: the wheel must leave it out
STRAY_BYTECODE = Path("fixtures", "build", "__pycache__", "tiny.cpython-312.pyc")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The project built as a wheel and installed (not editable) into a folder of its own.

    Built from a copy of :data:`WHEEL_SOURCES`: a build in the checkout would write its
    ``build/`` folder there and carry the stale files an earlier build left in it."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in WHEEL_SOURCES:
        if (PROJECT_ROOT / name).is_dir():
            shutil.copytree(PROJECT_ROOT / name, source / name)
        else:
            shutil.copy2(PROJECT_ROOT / name, source / name)
    (source / STRAY_BYTECODE).parent.mkdir(exist_ok=True)
    (source / STRAY_BYTECODE).write_bytes(b"")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(work / "dist"), str(source)],
        capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout + build.stderr
    wheel = next((work / "dist").glob("*.whl"))
    target = work / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                           "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=600)
    assert inst.returncode == 0, inst.stdout + inst.stderr
    return target, wheel


def test_the_wheel_carries_the_models_and_not_the_tooling_that_builds_them(installed):
    """``fixtures/`` goes into the wheel as data, less ``fixtures/build/`` (the checkout's
    tooling, its bytecode included); no module of that tooling is left in the package."""
    _target, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    data = "conformance/_data/fixtures/"
    fixtures = PROJECT_ROOT / "fixtures"
    expected = {data + p.relative_to(fixtures).as_posix() for p in fixtures.rglob("*")
                if p.is_file() and p.relative_to(fixtures).parts[0] != "build"
                and "__pycache__" not in p.parts}
    assert {n for n in names if n.startswith(data)} == expected
    listed = json.loads((fixtures / "checksums.json").read_text())
    assert {f"{data}{model}/{rel}" for model, files in listed.items() for rel in files} <= names
    assert [n for n in names if "__pycache__" in n or n.endswith(".pyc")] == []
    tooling = {"train", "tiny", "data", "tokenizers", "montage", "lora_fit"}
    assert [n for n in names if n.startswith("conformance/models/")
            and n.removesuffix(".py").rsplit("/", 1)[1] in tooling] == []
    assert "conformance/models/lora.py" in names  # applying a LoRA stays


def test_a_suite_outside_the_checkout(installed, pytester):
    """pip-installed package, empty folder: init, record, check; the models and the code
    come from the installed wheel, nothing from this checkout."""
    target, _wheel = installed
    env = {"PYTHONPATH": str(target), "CONFORMANCE_CACHE": str(pytester.path / ".cache")}
    os.environ.update(env)  # pytester.run inherits the environment
    try:
        where = pytester.run(sys.executable, "-c", "import conformance; "
                             "print(conformance.__file__); print(conformance.PROJECT_ROOT)")
        lines = where.stdout.lines
        assert lines[0].startswith(str(target)) and lines[1].startswith(str(target)), lines
        cli = [sys.executable, "-m", "conformance.cli"]
        assert pytester.run(*cli, "init").ret == 0
        pytest_cmd = [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p",
                      "no:cacheprovider", "--device", "cpu"]
        record = pytester.run(*pytest_cmd, "--record")
        assert record.ret == 0, record.stdout.str()[-3000:]
        record.stdout.fnmatch_lines(["*own-class: 2 recorded*", "*fixture: 2 recorded*"])
        assert "DeprecationWarning" not in record.stdout.str()  # as quiet as the checkout
        check = pytester.run(*pytest_cmd)
        assert check.ret == 0, check.stdout.str()[-3000:]
        out = check.stdout.str()
        assert re.search(r"own-class: 2 passed", out), out[-3000:]
        assert re.search(r"fixture: 2 passed", out), out[-3000:]
        # this machine is the reference class: its reference checks say so, not a command
        assert "reference: 2 skipped" in out
        assert "failed" not in out.splitlines()[-1]
        results = json.loads((pytester.path / "conformance-results" / "results.json")
                             .read_text())
        assert {o["check"] for o in results["outcomes"]} >= {"repeatable", "own-class",
                                                             "fixture"}
        manifests = list((pytester.path / "golden").glob("tiny-sd/*/manifest.json"))
        assert len(manifests) == 1
        # every command the run prints runs where it is printed: a missing golden's record
        # command, then a failure's reproduce line
        shutil.rmtree(pytester.path / "golden" / "test_my_pipeline")
        missing = pytester.run(*pytest_cmd, "test_my_pipeline.py")
        assert missing.ret == 1
        record_line = next(x for x in missing.stdout.lines if "; record this machine's" in x)
        command = record_line.split(" with: ", 1)[1]
        assert "site-packages" not in command and str(target) not in command
        again = pytester.run("sh", "-c", command)
        assert again.ret == 0, again.stdout.str()[-3000:]
        again.stdout.fnmatch_lines(["*fixture: 2 recorded*"])
        repro_line = next(x for x in missing.stdout.lines if x.strip().startswith("reproduce:"))
        repro = pytester.run("sh", "-c", repro_line.split("reproduce: ", 1)[1])
        assert repro.ret == 0, repro.stdout.str()[-3000:]  # recorded since: it passes
    finally:
        for key in env:
            os.environ.pop(key, None)
