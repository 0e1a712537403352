"""The suite's vocabulary: what a check is, how it ended, and the tier it was held to.

Everything that records, judges or reports an outcome uses these three enums (their values
are what results files and manifests hold).
"""

from __future__ import annotations

import enum


class Check(enum.Enum):
    """What an outcome checked."""

    REPEATABLE = "repeatable"
    OWN_CLASS = "own-class"
    REFERENCE = "reference"
    INVARIANCE = "invariance"
    FIDELITY = "fidelity"


class Status(enum.Enum):
    """How a check ended."""

    PASSED = "passed"
    FAILED = "failed"
    RECORDED = "recorded"
    SKIPPED = "skipped"
    ERROR = "error"


class Tier(enum.Enum):
    """What a comparison must satisfy: ``exact`` (pixels and every step's latents equal),
    or the tolerance file's bounds for ``close``, ``perceptual`` or ``fidelity``."""

    EXACT = "exact"
    CLOSE = "close"
    PERCEPTUAL = "perceptual"
    FIDELITY = "fidelity"
