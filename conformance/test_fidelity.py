"""Fidelity: each reduced precision against fp32 on the same device.

``test_fidelity`` bounds MAE / SSIM / pHash distance per precision (``[fidelity.*]`` in the
tolerance file). ``test_precision_ladder`` checks, per model, that mean MAE over the cases
does not decrease along ``[ladder] order`` (more bits, closer to fp32), for the adjacent
pairs present in this run.
"""

from __future__ import annotations

import itertools

import pytest


@pytest.mark.conformance_check("fidelity")
def test_fidelity(conformance_item, conformance_check):
    conformance_check(conformance_item)


def test_precision_ladder(conformance_model, conformance_session):
    model = conformance_model
    order = conformance_session.tolerances.ladder
    items = [i for i in conformance_session.items() if i.model == model]
    present = [p for p in order if any(i.precision == p for i in items)]
    if not any(i.precision == "fp32" for i in items) or len(present) < 2:
        pytest.skip(f"{model}: fewer than two ladder precisions besides fp32 in this run")
    means = conformance_session.ladder_means(model)
    table = ", ".join(f"{p}: MAE {means[p]['mae']:.3f}" for p in present)
    for better, worse in itertools.pairwise(present):
        assert means[better]["mae"] <= means[worse]["mae"], (
            f"{model}: mean MAE vs fp32 of {better} ({means[better]['mae']:.3f}) exceeds "
            f"{worse} ({means[worse]['mae']:.3f}); ladder {table}"
        )
