"""Scheduler names a case file may use, mapped to diffusers classes and config overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conformance.models.base import Family


@dataclass(frozen=True)
class SchedulerSpec:
    name: str
    class_name: str
    families: frozenset[Family]
    overrides: dict[str, Any] = field(default_factory=dict)


_EPS = frozenset({Family.SD})
_FLOW = frozenset({Family.FLUX})

SCHEDULERS: dict[str, SchedulerSpec] = {
    spec.name: spec
    for spec in (
        SchedulerSpec("euler", "EulerDiscreteScheduler", _EPS),
        SchedulerSpec("euler-ancestral", "EulerAncestralDiscreteScheduler", _EPS),
        SchedulerSpec("ddim", "DDIMScheduler", _EPS),
        SchedulerSpec("pndm", "PNDMScheduler", _EPS),
        SchedulerSpec("dpmpp-2m", "DPMSolverMultistepScheduler", _EPS),
        SchedulerSpec(
            "dpmpp-2m-karras", "DPMSolverMultistepScheduler", _EPS, {"use_karras_sigmas": True}
        ),
        SchedulerSpec("flow-euler", "FlowMatchEulerDiscreteScheduler", _FLOW),
    )
}


def build_scheduler(name: str, base_config: Any) -> Any:
    """Instantiate scheduler ``name`` from a pipeline's scheduler config."""
    import diffusers

    spec = SCHEDULERS[name]
    cls = getattr(diffusers, spec.class_name)
    return cls.from_config(base_config, **spec.overrides)
