"""Scheduler names a case file may use, mapped to diffusers classes and config overrides.

Each scheduler is of one sort (noise prediction or flow matching); it fits the families that
take that sort (:attr:`conformance.models.families.Family.schedulers`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conformance.models.families import FLOW_MATCHING, NOISE_PREDICTION, Family, families


@dataclass(frozen=True)
class SchedulerSpec:
    name: str
    class_name: str
    #: :data:`~conformance.models.families.NOISE_PREDICTION` or ``FLOW_MATCHING``
    sort: str
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def families(self) -> frozenset[Family]:
        """The families this scheduler fits."""
        return frozenset(f for f in families() if f.schedulers == self.sort)


_EPS = NOISE_PREDICTION
_FLOW = FLOW_MATCHING

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
