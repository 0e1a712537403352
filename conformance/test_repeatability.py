"""Repeatability: the same item generated twice in one process is bit-identical."""

from __future__ import annotations

import pytest


@pytest.mark.conformance_check("repeatable")
def test_repeatable(conformance_item, conformance_check):
    """Pixels and every step's latents equal between two generations with the same seed."""
    conformance_check(conformance_item)
