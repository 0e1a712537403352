"""Invariance: changes that should not change the image, each against the plain generation.

Variants (see ``conformance.generate.VARIANTS``): 2 threads instead of the pinned count,
attention slicing, the math SDPA backend, the item as image 0 of a batch of 4, and
deterministic algorithms off. One item per case (the fp32 item at its first resolution);
the outcome's tier says whether the variant was bit-identical (exact) or only within the
close tier's bounds.
"""

from __future__ import annotations

import pytest


@pytest.mark.conformance_check("invariance")
def test_invariant(conformance_item, conformance_variant, conformance_check):
    conformance_check(conformance_item, conformance_variant)
