"""Model against model: each case of a ``[compare.NAME]`` relation against its base case
(the same prompt and seed; another model, a LoRA, a swapped VAE, other steps), held to what
the relation expects (``differ``, ``identical``, ``close``, ``perceptual``), with the
metrics, each side's generation time, weights and peak device memory in the results.
"""

from __future__ import annotations

import pytest


@pytest.mark.conformance_check("compare")
def test_compare(conformance_item, conformance_relation, conformance_check):
    conformance_check(conformance_item, conformance_relation)
