"""Conformance runs for the project's own tests: a small case file (32x32, 2 steps) on the
shipped tiny models, and readers of a run's results file. The pytester fixtures that run it
(``warm_imports``, ``run``) are in ``conftest.py``."""

from __future__ import annotations

import json
from typing import Any

from conformance.hardware import detect_class

SMALL_CASES = """
schema_version = 1
[axes]
resolutions = ["32x32"]
precisions = ["fp32"]

[cases.dot]
model = "tiny-sd"
prompt = "a red circle on a white background"
seed = 3
steps = 2
scheduler = "euler"
guidance_scale = 4.0
precisions = ["fp32", "bf16"]

[cases.flux-dot]
model = "tiny-flux"
prompt = "a blue square on a black background"
seed = 5
steps = 2
scheduler = "flow-euler"
guidance_scale = 3.5
"""
OWN = detect_class("cpu").name


def results_of(result):
    return json.loads(result.results_path.read_text())


def by_check(result, check):
    return {o["id"]: o for o in results_of(result)["outcomes"] if o["check"] == check}


def summary_of(outcomes: Any) -> dict[str, int]:
    """The ``summary`` a run writes beside ``outcomes`` (the count of each status)."""
    counts: dict[str, int] = {}
    for o in outcomes if isinstance(outcomes, list) else ():
        if isinstance(o, dict) and isinstance(o.get("status"), str):
            counts[o["status"]] = counts.get(o["status"], 0) + 1
    return counts
