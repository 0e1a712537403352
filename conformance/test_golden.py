"""Golden match: this machine's images against the recorded goldens.

* own class: the golden set of this hardware class, at the exact tier where its measured
  identity predicts this machine's bits for the item's precision, else the close tier;
* reference class: the reference class's golden (``--reference-class``, default
  ``cpu-amd-default+bf16``) at the perceptual tier.
"""

from __future__ import annotations

import pytest


@pytest.mark.conformance_check("own-class")
def test_own_class_golden(conformance_item, conformance_check):
    conformance_check(conformance_item)


@pytest.mark.conformance_check("reference")
def test_reference_golden(conformance_item, conformance_check):
    conformance_check(conformance_item)
