"""VAE precision conformance: decode and round trips in fp32, bf16 and fp16.

Ids read ``MODEL/vae/PRECISION`` (``tiny-sd/vae/bf16``). Each test pins one torch thread and
reads the VAE from ``fixtures/<model>/vae`` (or ``$CONFORMANCE_FIXTURES``); a missing
``config.json`` is a skip naming the path. The numbers come from :mod:`conformance.vae`;
``python benchmarks/vae_report.py`` prints the full table (``docs/vae.md``).

The bounds are the ``[vae.decode.*]``, ``[vae.roundtrip.*]`` and ``[vae.latent8.*]`` tables of
the tolerance file (``--tolerances``; the packaged ``conformance/tolerances.toml``, with the
measurements they were set from, by default). A tolerance file without ``[vae]`` tables leaves
these checks on the packaged file's.

Each test's outcome (check ``vae``, item ``MODEL/vae-KIND/SIZExSIZE/PRECISION``) goes to the
results file and the matrix beside the other checks' (:mod:`conformance.checks.vae`).
"""

from __future__ import annotations

import pytest


@pytest.mark.conformance_check("vae", "repeatable")
def test_decode_repeatable(conformance_vae, conformance_check):
    """Two independently loaded VAEs decode the seeded latents to the same bits."""
    conformance_check(conformance_vae)


@pytest.mark.conformance_check("vae", "decode")
def test_decode_close_to_fp32(conformance_vae, conformance_check):
    """Reduced-precision decode of the seeded latents stays visually identical to fp32."""
    conformance_check(conformance_vae)


@pytest.mark.conformance_check("vae", "roundtrip")
def test_photo_round_trip(conformance_vae, conformance_check):
    """Photos survive encode-decode above a floor; reduced precision loses little."""
    conformance_check(conformance_vae)


@pytest.mark.conformance_check("vae", "latent8")
def test_latent_8bit_round_trip(conformance_vae, conformance_check):
    """8-bit latents decode close to float latents at about a twelfth of the RGB bytes."""
    conformance_check(conformance_vae)
