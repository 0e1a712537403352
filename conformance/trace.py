"""Per-step latent traces: a digest and a few statistics per denoising step.

Kept with every image (and every golden), so that two runs whose images differ can be
told apart by the first denoising step whose latents differ.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class StepTrace:
    step: int
    timestep: float
    digest: str  # SHA-256 (first 16 hex digits) of the float32 latents, shape included
    mean: float
    std: float
    min: float
    max: float

    @classmethod
    def from_latents(cls, step: int, timestep: Any, latents: Any) -> StepTrace:
        """Summarise a latent tensor (any dtype / device)."""
        x = latents.detach().float().cpu().contiguous()
        h = hashlib.sha256("x".join(map(str, x.shape)).encode() + b":")
        h.update(x.numpy().tobytes())
        return cls(
            step=int(step),
            timestep=float(timestep),
            digest=h.hexdigest()[:16],
            mean=float(x.mean()),
            std=float(x.std()) if x.numel() > 1 else 0.0,
            min=float(x.min()),
            max=float(x.max()),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepTrace:
        return cls(**data)


def step_deltas(
    observed: Sequence[StepTrace], expected: Sequence[StepTrace]
) -> list[dict[str, Any]]:
    """Per step: whether the latent digests are equal and how far mean and std moved."""
    return [
        {
            "step": a.step,
            "equal": a.digest == b.digest,
            "mean_delta": abs(a.mean - b.mean),
            "std_delta": abs(a.std - b.std),
        }
        for a, b in zip(observed, expected, strict=False)
    ]


def first_divergent_step(
    observed: Sequence[StepTrace], expected: Sequence[StepTrace]
) -> int | None:
    """Index of the first step whose latent digests differ; ``None`` if all are equal.

    A trace shorter than the other diverges at the first missing step.
    """
    for a, b in zip(observed, expected, strict=False):
        if a.digest != b.digest:
            return a.step
    if len(observed) != len(expected):
        return min(len(observed), len(expected))
    return None
