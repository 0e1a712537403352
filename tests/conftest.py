"""Shared setup for the project's own tests."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

from conformance import PACKAGE_DIR
from conformance.cases import load_cases
from tests.runs import SMALL_CASES

# Thread count changes the bits on CPU, and the two cores of a CI machine are shared.
torch.set_num_threads(1)

settings.register_profile(
    "default", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture(scope="module")
def warm_imports(tmp_path_factory):
    """Import everything a conformance run imports, once, before pytester snapshots modules.

    In-process pytester runs drop modules first imported inside them; torch registers
    operator libraries at import time and cannot import them twice.
    """
    from conformance.generate import Runner

    path = tmp_path_factory.mktemp("warm") / "cases.toml"
    path.write_text(SMALL_CASES)
    runner = Runner("cpu")
    for item in load_cases(path).items():
        runner.generate(item)


@pytest.fixture
def run(pytester, tmp_path, warm_imports):
    cases = tmp_path / "cases.toml"
    cases.write_text(SMALL_CASES)
    golden = tmp_path / "golden"
    golden.mkdir()  # an empty store, as `conformance init` makes (a missing one is refused)
    results = tmp_path / "out" / "results.json"

    def go(*args, cases_file=cases, modules=("test_golden.py", "test_repeatability.py")):
        base = [*(str(PACKAGE_DIR / m) for m in modules), "-p", "no:randomly", "-rs",
                "--golden-dir", str(golden), "--results", str(results)]
        if cases_file is not None:
            base += ["--cases", str(cases_file)]
        result = pytester.runpytest(*base, *args)
        result.golden, result.results_path = golden, results
        return result

    return go
