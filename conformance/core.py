"""The suite's vocabulary: what a check is, how it ended, and the tier it was held to.

Everything that records, judges or reports an outcome uses these three enums (their values
are what results files and manifests hold). Each is a ``str`` too, equal to its value
(``Status.PASSED == "passed"``), so that code comparing with the text still reads them; text
shows them by ``.value``.
"""

from __future__ import annotations

import enum


class Check(str, enum.Enum):
    """What an outcome checked (how each is parametrized, run and judged: its kind in
    :mod:`conformance.checks`)."""

    REPEATABLE = "repeatable"
    OWN_CLASS = "own-class"
    REFERENCE = "reference"
    INVARIANCE = "invariance"
    FIDELITY = "fidelity"
    #: a case of the case file against a base case of the same prompt and seed
    #: (``[compare.NAME]``)
    COMPARE = "compare"
    #: an image of a test's own code against its golden (the ``diffusion_golden`` fixture),
    #: looked up and judged as the own-class check is
    FIXTURE = "fixture"
    #: a VAE alone (``conformance/test_vae.py``): decodes and round trips per precision
    VAE = "vae"


class Status(str, enum.Enum):
    """How a check ended."""

    PASSED = "passed"
    FAILED = "failed"
    RECORDED = "recorded"
    SKIPPED = "skipped"
    ERROR = "error"


class Tier(str, enum.Enum):
    """What a comparison must satisfy: ``exact`` (pixels and every step's latents equal),
    the tolerance file's bounds for ``close``, ``perceptual`` or ``fidelity``, or ``differ``
    (a compare relation's variant must change the image: not bit-identical)."""

    EXACT = "exact"
    CLOSE = "close"
    PERCEPTUAL = "perceptual"
    FIDELITY = "fidelity"
    DIFFER = "differ"
