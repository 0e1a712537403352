"""VAE checks (``conformance/test_vae.py``): a model's VAE alone, per precision.

Four measurements (:data:`MEASURES`) of :mod:`conformance.vae`: two independently loaded
VAEs decode seeded latents to the same bits (exact tier); reduced precision decodes them
close to fp32; photos survive the encode-decode round trip; 8-bit latents decode close to
float ones (fidelity tier). Tests read ``MODEL/vae/PRECISION`` and follow ``--model`` and
``--precision``; each outcome's item is ``MODEL/vae-KIND/SIZExSIZE/PRECISION``.

The VAEs are loaded as a pipeline's VAE swap is (:func:`conformance.vae.load_vae`); the
bounds are the ``vae.decode``, ``vae.roundtrip`` and ``vae.latent8`` tables of the run's
tolerance file (:meth:`conformance.tolerances.Tolerances.lookup`), the packaged file's where
the run's has no ``[vae]`` tables.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conformance import vae as V
from conformance.checks import CheckKind, Context, Param, register
from conformance.core import Check, Status, Tier
from conformance.metrics import Metrics, compare, pixel_sha256
from conformance.records import Outcome, RecordedMetrics
from conformance.session import ConformanceSession, Verdict
from conformance.tolerances import DEFAULT_TOLERANCES, Tolerances, VaeBounds, load_tolerances

if TYPE_CHECKING:
    import numpy as np
    import torch
    from diffusers import AutoencoderKL

ROUND_TRIP_SIZE = 64  # the report also covers 96 px; one size keeps the checks quick
REDUCED: tuple[str, ...] = tuple(p for p in V.VAE_PRECISIONS if p != "fp32")
#: the command that prints every measurement of every VAE
FULL_TABLE = "python benchmarks/vae_report.py"


def vae_test_id(model: str, precision: str) -> str:
    """The parameter id of a VAE check's test: ``MODEL/vae/PRECISION``."""
    return f"{model}/vae/{precision}"


@dataclass(frozen=True)
class Measure:
    """One VAE measurement: its test, the precisions it covers, the size it measures at,
    and what a failure calls it."""

    test: str
    precisions: tuple[str, ...]
    size: int
    what: str


#: The measurements, by the kind name of their outcomes' items (``vae-KIND``).
MEASURES: dict[str, Measure] = {
    "repeatable": Measure("test_decode_repeatable", V.VAE_PRECISIONS, V.DEFAULT_DECODE_SIZE,
                          "decoder output differs between two runs"),
    "decode": Measure("test_decode_close_to_fp32", REDUCED, V.DEFAULT_DECODE_SIZE,
                      "decode vs fp32 (worst image)"),
    "roundtrip": Measure("test_photo_round_trip", V.VAE_PRECISIONS, ROUND_TRIP_SIZE,
                         f"photo round trip ({ROUND_TRIP_SIZE} px)"),
    "latent8": Measure("test_latent_8bit_round_trip", V.VAE_PRECISIONS, ROUND_TRIP_SIZE,
                       f"8-bit latents ({ROUND_TRIP_SIZE} px)"),
}


@dataclass(frozen=True)
class VaeCase:
    """What an outcome names as a VAE check's case: ``vae-KIND``."""

    name: str
    model: str


@dataclass(frozen=True)
class VaeItem:
    """A VAE check's subject, named as an item: ``MODEL/vae-KIND/SIZExSIZE/PRECISION``."""

    model: str
    precision: str
    measure: str

    @property
    def size(self) -> int:
        return MEASURES[self.measure].size

    @property
    def resolution(self) -> str:
        return f"{self.size}x{self.size}"

    @property
    def case(self) -> VaeCase:
        return VaeCase(f"vae-{self.measure}", self.model)

    @property
    def id(self) -> str:
        return f"{self.model}/{self.case.name}/{self.resolution}/{self.precision}"

    @property
    def test_name(self) -> str:
        """The test's name (``test_...[MODEL/vae/PRECISION]``)."""
        return f"{MEASURES[self.measure].test}[{vae_test_id(self.model, self.precision)}]"


class Measurements:
    """VAEs, decodes and round trips computed once per process (the VAEs read from disk)."""

    def __init__(self) -> None:
        self._vaes: dict[tuple[str, str], AutoencoderKL] = {}
        self._decodes: dict[str, tuple[torch.Tensor, np.ndarray]] = {}
        self._photos: dict[int, dict[str, np.ndarray]] = {}
        self._checks: dict[tuple[str, str, int], tuple[V.RoundTripCheck, V.LatentQuantCheck]] = {}

    def vae(self, model: str, precision: str) -> AutoencoderKL:
        key = (model, precision)
        if key not in self._vaes:
            from conformance.heap import long_lived

            with long_lived():  # kept for the process (see conformance/heap.py)
                self._vaes[key] = V.load_vae(vae_path(model), precision)
        return self._vaes[key]

    def reference_decode(self, model: str) -> tuple[torch.Tensor, np.ndarray]:
        """Seeded latents and their fp32 decode."""
        if model not in self._decodes:
            vae = self.vae(model, "fp32")
            latents = V.seeded_latents(vae, V.DEFAULT_DECODE_SIZE)
            self._decodes[model] = (latents, V.decode_latents(vae, latents))
        return self._decodes[model]

    def photos(self, size: int) -> dict[str, np.ndarray]:
        if size not in self._photos:
            self._photos[size] = V.sample_photos(size)
        return self._photos[size]

    def photo_checks(self, model: str, precision: str, size: int = ROUND_TRIP_SIZE
                     ) -> tuple[V.RoundTripCheck, V.LatentQuantCheck]:
        key = (model, precision, size)
        if key not in self._checks:
            reference = None if precision == "fp32" else self.photo_checks(model, "fp32", size)[0]
            self._checks[key] = V.photo_checks(self.vae(model, precision), self.photos(size),
                                               model=model, precision=precision,
                                               reference=reference)
        return self._checks[key]


def vae_path(model: str) -> Any:
    """The model's VAE folder; a missing one makes the check a skip naming the file."""
    from conformance.generate import ModelUnavailable

    path = V.vae_dir(model)
    if not (path / "config.json").is_file():
        raise ModelUnavailable(f"no VAE fixture for {model}: {path / 'config.json'} is missing")
    return path


@functools.lru_cache(maxsize=1)
def _packaged() -> Tolerances:
    return load_tolerances(DEFAULT_TOLERANCES)


def vae_tolerances(tolerances: Tolerances) -> Tolerances:
    """The run's tolerance file, or the packaged one when it has no ``[vae]`` tables."""
    return tolerances if tolerances.vae else _packaged()


@dataclass(frozen=True)
class Measured:
    """What one VAE measurement found: the worst comparison, what it broke, and the text a
    failure shows (its first line: what, where, which test; then one line per problem)."""

    tier: Tier
    metrics: Metrics | None
    problems: list[str]
    failure: list[str]


def _beyond(what: str, bounds: VaeBounds, problems: list[str], name: str) -> list[str]:
    return [f"{what} beyond {bounds.where} [{name}]:", *(f"  {p}" for p in problems)]


def _worst(metrics: tuple[Metrics, ...]) -> Metrics:
    """The comparison with the lowest PSNR (the worst photo)."""
    return min(metrics, key=lambda m: m.psnr)


def measure(subject: VaeItem, tolerances: Tolerances, cache: Measurements) -> Measured:
    """Run ``subject``'s measurement and judge it against its bounds."""
    model, precision, name = subject.model, subject.precision, subject.test_name
    what = MEASURES[subject.measure].what
    if subject.measure == "repeatable":
        return _repeatable(model, precision, what, name)
    limits = tolerances.lookup(f"vae.{subject.measure}", precision)
    assert isinstance(limits, VaeBounds)
    if subject.measure == "decode":
        latents, reference = cache.reference_decode(model)
        check = V.decode_check(cache.vae(model, precision), reference, latents, model=model,
                               precision=precision)
        problems = V.decode_violations(check, limits)
        return Measured(Tier.FIDELITY, check.metrics, problems,
                        _beyond(what, limits, problems, name))
    rt, quant = cache.photo_checks(model, precision)
    if subject.measure == "roundtrip":
        problems = V.round_trip_violations(rt, limits)
        return Measured(Tier.FIDELITY, _worst(rt.metrics), problems,
                        _beyond(what, limits, problems, name))
    problems = V.latent8_violations(quant, limits)
    return Measured(Tier.FIDELITY, _worst(quant.vs_float), problems,
                    _beyond(what, limits, problems, name))


def _repeatable(model: str, precision: str, what: str, name: str) -> Measured:
    """Two independently loaded VAEs decode the seeded latents to the same bits."""
    import torch

    path = vae_path(model)
    first, second = V.load_vae(path, precision), V.load_vae(path, precision)
    latents = V.seeded_latents(first, V.DEFAULT_DECODE_SIZE)
    a, b = V.decode_sample(first, latents), V.decode_sample(second, latents)
    images_a, images_b = V.tensor_to_images(a), V.tensor_to_images(b)
    ha = [pixel_sha256(img) for img in images_a]
    hb = [pixel_sha256(img) for img in images_b]
    same = torch.equal(a, b)
    problems = [] if same and ha == hb else [what]
    if not same:
        failure = [f"{what}: observed=max |a-b|={float((a.float() - b.float()).abs().max()):.3g}"
                   f", expected=bit-identical [{name}]"]
    else:
        failure = [f"decoded pixel SHA-256 differs: observed={hb}, expected={ha} [{name}]"]
    return Measured(Tier.EXACT, compare(images_b[0], images_a[0]), problems, failure)


class Vae(CheckKind):
    check = Check.VAE
    argnames = ("conformance_vae",)
    generates = False

    def __init__(self) -> None:
        self.cache = Measurements()
        #: the failure text of each failed outcome (by item id) of this process
        self._failures: dict[str, list[str]] = {}

    def params(self, ctx: Context, *args: Any) -> list[Param]:
        """Every VAE model and precision the measurement (the mark's second argument;
        none: every precision) covers, in one group per model: the model's checks share
        one process's fp32 decodes. The run's filters deselect tests, they do not drop
        them (:meth:`deselect`)."""
        kinds = [args[0]] if args else ["repeatable"]
        return [Param((VaeItem(model, precision, kind),), vae_test_id(model, precision),
                      f"{model}/vae")
                for kind in kinds for model in V.VAE_MODELS
                for precision in MEASURES[kind].precisions]

    def deselect(self, values: dict[str, Any], ctx: Context) -> bool:
        """A VAE check of a model or precision the run's ``--model`` and ``--precision``
        leave out."""
        subject = values.get(self.argnames[0])
        if not isinstance(subject, VaeItem):
            return True
        s = ctx.settings
        return ((s.models is not None and subject.model not in s.models)
                or (s.precisions is not None and subject.precision not in s.precisions))

    def run(self, session: ConformanceSession, subject: VaeItem, variant: Any) -> Verdict:
        import torch

        torch.set_num_threads(1)
        found = measure(subject, vae_tolerances(session.tolerances), self.cache)
        if found.problems:
            self._failures[subject.id] = found.failure
        return Verdict(
            Status.FAILED if found.problems else Status.PASSED,
            "; ".join(found.problems) or f"within the [vae] bounds ({subject.test_name})",
            tier=found.tier,
            metrics=None if found.metrics is None else RecordedMetrics.measured(found.metrics))

    def reproduce(self, session: ConformanceSession, nodeid: str) -> str:
        return f"pytest --pyargs conformance -k '{nodeid.rsplit('::', 1)[-1]}'"

    def failure(self, outcome: Outcome, nodeid: str) -> str:
        """The measurement's own text (what, the bounds' table, each problem), the command
        that runs the test alone and the one that prints every measurement; an error
        (a tolerance file without the table) as its message."""
        lines = self._failures.pop(outcome.id, None)
        if lines is None:
            return outcome.message
        return "\n".join([*lines, f"  reproduce: python -m pytest '{nodeid}' -p no:xdist",
                          f"  full table: {FULL_TABLE}"])


KIND = register(Vae())
