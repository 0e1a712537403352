"""Stable Diffusion 1.x / 2.x and SDXL: a UNet denoiser, noise-prediction (epsilon / v)
schedulers, classifier-free guidance over a negative prompt."""

from __future__ import annotations

from conformance.models.families import NOISE_PREDICTION, Family, register

SD = register(Family(
    name="sd",
    denoiser="unet",
    schedulers=NOISE_PREDICTION,
    negative_prompt=True,
    no_negative_prompt="",
    summary="UNet, epsilon/v schedulers, negative prompts",
    limits=(8, 64, 2048),
    pipelines=("StableDiffusionPipeline", "StableDiffusionXLPipeline"),
    name_prefixes=("StableDiffusion",),
    not_prefixes=("StableDiffusion3",),
))
