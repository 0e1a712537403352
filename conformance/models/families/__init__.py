"""Pipeline families: what the suite does differently for SD-style and Flux-style pipelines.

A :class:`Family` holds everything that depends on the sort of pipeline a model is: the
pipeline classes it is known by, its denoiser's attribute (``unet`` / ``transformer``),
whether it takes a negative prompt, which schedulers fit it and the resolution limits a
model table gets when it gives none. One module per family declares it
(:mod:`~conformance.models.families.sd`, :mod:`~conformance.models.families.flux`); a new
family is one more module, named in :data:`FAMILY_MODULES`.

Registered families are also attributes of the class by their upper-case name
(``Family.SD`` is the family ``sd``). Nothing here imports torch or diffusers.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FAMILIES",
    "FAMILY_MODULES",
    "FLOW_MATCHING",
    "NOISE_PREDICTION",
    "Family",
    "denoiser_of",
    "families",
    "get_family",
    "register",
]

#: The scheduler sorts a family takes (see :mod:`conformance.schedulers`).
NOISE_PREDICTION = "noise-prediction"  # epsilon / v prediction: Euler, DDIM, DPM++ ...
FLOW_MATCHING = "flow-matching"


@dataclass(frozen=True, eq=False)
class Family:
    """One pipeline family (compared by identity: each is registered once)."""

    #: the name case files write (``family = "sd"``)
    name: str
    #: the pipeline attribute holding the denoiser
    denoiser: str
    #: which schedulers fit (:data:`NOISE_PREDICTION` or :data:`FLOW_MATCHING`)
    schedulers: str
    #: whether its pipelines take ``negative_prompt``
    negative_prompt: bool
    #: why a case of this family may not name a negative prompt (when it may not)
    no_negative_prompt: str
    #: what a model table's ``family`` key chooses with this name, for messages
    summary: str
    #: resolution limits of a model table that gives none: (multiple, min_side, max_side)
    limits: tuple[int, int, int]
    #: pipeline classes known to be of this family without importing diffusers; the
    #: first ones are also the base classes a pipeline class is checked against
    pipelines: tuple[str, ...]
    #: class-name prefixes of this family's pipelines, for classes derived from none of
    #: :attr:`pipelines` (and prefixes that, though they match, are not)
    name_prefixes: tuple[str, ...] = ()
    not_prefixes: tuple[str, ...] = ()

    @property
    def value(self) -> str:
        """The family's name (what the enum this replaces called its value)."""
        return self.name

    def named_like(self, class_name: str) -> bool:
        """Whether ``class_name`` reads as a pipeline of this family."""
        return class_name.startswith(self.name_prefixes) and not (
            self.not_prefixes and class_name.startswith(self.not_prefixes))

    def __reduce__(self) -> tuple[Any, ...]:
        return get_family, (self.name,)  # unpickled as the registered family

    def __repr__(self) -> str:
        return f"Family.{self.name.upper()}"


#: name -> family, in the order messages list them
FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add ``family`` (a family module calls this once); it also becomes
    ``Family.<NAME>``."""
    attr = family.name.upper().replace("-", "_")
    if family.name in FAMILIES or hasattr(Family, attr):
        raise ValueError(f"family {family.name!r} is registered twice")
    FAMILIES[family.name] = family
    setattr(Family, attr, family)
    return family


def families() -> Iterator[Family]:
    return iter(FAMILIES.values())


def get_family(name: str) -> Family:
    """The family ``name``; ``KeyError`` naming the accepted ones otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown family {name!r}; accepted: {', '.join(FAMILIES)}") from None


def denoiser_of(pipe: Any) -> Any:
    """The denoiser module of a loaded pipeline, whichever family's attribute holds it."""
    for family in FAMILIES.values():
        module = getattr(pipe, family.denoiser, None)
        if module is not None:
            return module
    return None


#: The family modules, in the order their families are listed.
FAMILY_MODULES: tuple[str, ...] = ("sd", "flux")

for _module in FAMILY_MODULES:
    importlib.import_module(f"{__name__}.{_module}")
