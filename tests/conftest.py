"""Shared setup for the project's own tests."""

from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, settings

# Thread count changes the bits on CPU, and the two cores of a CI machine are shared.
torch.set_num_threads(1)

settings.register_profile(
    "default", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")
