"""The package works on the oldest Python its metadata admits (``requires-python``): every
module compiles there and every module-level regular expression compiles there (possessive
quantifiers and atomic groups, for one, are Python 3.11 only). Skipped where no such
interpreter is installed."""

from __future__ import annotations

import glob
import importlib
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conformance import PACKAGE_DIR, PROJECT_ROOT


def _oldest_version() -> str:
    text = (PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'^requires-python\s*=\s*">=\s*(3\.\d+)"', text, re.MULTILINE)
    assert match, "pyproject.toml names no requires-python lower bound"
    return match.group(1)


def _interpreter(version: str) -> str:
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = [shutil.which(f"python{version}"),
                  *sorted(glob.glob(os.path.join(root, "versions", f"{version}.*", "bin",
                                                 f"python{version}")))]
    for exe in filter(None, candidates):
        try:
            proc = subprocess.run([exe, "--version"], capture_output=True, text=True,
                                  timeout=30)
        except OSError:
            continue
        if proc.returncode == 0 and proc.stdout.split()[-1].startswith(version + "."):
            return exe
    pytest.skip(f"no Python {version} interpreter on this machine")


def test_every_module_compiles_on_the_oldest_python(tmp_path):
    version = _oldest_version()
    if sys.version.startswith(version + "."):
        pytest.skip(f"this is Python {version}: the whole suite runs on it")
    exe = _interpreter(version)
    proc = subprocess.run([exe, "-m", "compileall", "-q", str(PACKAGE_DIR)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPYCACHEPREFIX": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _module_patterns() -> dict[str, tuple[str, int]]:
    """Every compiled pattern held at module level by the package's modules (not its test
    modules, which pytest collects)."""
    found: dict[str, tuple[str, int]] = {}
    for info in pkgutil.walk_packages([str(PACKAGE_DIR)], "conformance."):
        if info.name.rsplit(".", 1)[-1].startswith(("test_", "conftest")):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if isinstance(value, re.Pattern) and isinstance(value.pattern, str):
                found[f"{info.name}.{name}"] = (value.pattern, value.flags)
    return found


def test_module_level_patterns_compile_on_the_oldest_python():
    version = _oldest_version()
    if sys.version.startswith(version + "."):
        pytest.skip(f"this is Python {version}: the whole suite runs on it")
    exe = _interpreter(version)
    patterns = _module_patterns()
    assert "conformance.safeio._DOTTED_RUN" in patterns  # the scan reached the package
    code = ("import json, re, sys\n"
            "bad = {}\n"
            "for name, (pattern, flags) in json.load(sys.stdin).items():\n"
            "    try:\n"
            "        re.compile(pattern, flags)\n"
            "    except re.error as exc:\n"
            "        bad[name] = str(exc)\n"
            "print(json.dumps(bad))\n")
    proc = subprocess.run([exe, "-c", code], input=json.dumps(patterns), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {}, f"these do not compile on Python {version}"


def test_the_pattern_scan_finds_a_311_only_pattern():
    """The check above can fail: a possessive quantifier is refused by Python 3.10."""
    version = _oldest_version()
    if sys.version.startswith(version + "."):
        pytest.skip(f"this is Python {version}")
    exe = _interpreter(version)
    proc = subprocess.run([exe, "-c", "import re; re.compile('a++')"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0 and "multiple repeat" in proc.stderr
    assert Path(exe).name == f"python{version}"
