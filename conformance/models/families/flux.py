"""FLUX.1: a transformer denoiser, flow-matching schedulers, distilled guidance (no
negative prompt)."""

from __future__ import annotations

from conformance.models.families import FLOW_MATCHING, Family, register

FLUX = register(Family(
    name="flux",
    denoiser="transformer",
    schedulers=FLOW_MATCHING,
    negative_prompt=False,
    no_negative_prompt="uses distilled guidance and takes no negative prompt",
    summary="flow matching, no negative prompt",
    limits=(16, 64, 2048),
    pipelines=("FluxPipeline",),
    name_prefixes=("Flux",),
))
