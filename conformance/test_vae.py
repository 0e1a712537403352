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
results file and the matrix beside the other checks' (:func:`vae_outcome`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import torch

from conformance import vae as V
from conformance.core import Check, Status, Tier
from conformance.heap import long_lived
from conformance.metrics import Metrics, pixel_sha256
from conformance.options import OPTION_BY_NAME, resolve
from conformance.records import Outcome, RecordedMetrics
from conformance.tolerances import DEFAULT_TOLERANCES, Tolerances, VaeBounds, load_tolerances

if TYPE_CHECKING:
    from diffusers import AutoencoderKL

ROUND_TRIP_SIZE = 64  # the report also covers 96 px; one size keeps the module quick

PRECISIONS: tuple[str, ...] = V.VAE_PRECISIONS
REDUCED: tuple[str, ...] = tuple(p for p in PRECISIONS if p != "fp32")


def _params(precisions: tuple[str, ...]) -> list[Any]:
    params = [
        pytest.param(model, precision, id=V.vae_test_id(model, precision))
        for model in V.VAE_MODELS
        for precision in precisions
    ]
    assert params, "no (model, precision) pairs to test"
    return params


ALL = _params(PRECISIONS)
REDUCED_ONLY = _params(REDUCED)


def tolerance_file(config: pytest.Config) -> Path:
    """The run's tolerance file (``--tolerances``, ini, environment or the packaged one)."""
    opt = OPTION_BY_NAME["tolerances"]
    ini = config.getini(opt.dest) if opt.ini else None
    path = resolve("tolerances", config.getoption(opt.dest, None), ini or None)
    return Path(path) if path is not None else DEFAULT_TOLERANCES


def _vae_path(model: str) -> Path:
    path = V.vae_dir(model)
    if not (path / "config.json").is_file():
        pytest.skip(f"no VAE fixture for {model}: {path / 'config.json'} is missing")
    return path


class Measurements:
    """Decodes and round trips computed once per module run (the VAEs are read from disk)."""

    def __init__(self) -> None:
        self._vaes: dict[tuple[str, str], AutoencoderKL] = {}
        self._decodes: dict[str, tuple[torch.Tensor, np.ndarray]] = {}
        self._photos: dict[int, dict[str, np.ndarray]] = {}
        self._checks: dict[tuple[str, str, int], tuple[V.RoundTripCheck, V.LatentQuantCheck]] = {}

    def vae(self, model: str, precision: str) -> AutoencoderKL:
        key = (model, precision)
        if key not in self._vaes:
            with long_lived():  # kept for the process (see conformance/heap.py)
                self._vaes[key] = V.load_vae(_vae_path(model), precision)
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

    def photo_checks(
        self, model: str, precision: str, size: int = ROUND_TRIP_SIZE
    ) -> tuple[V.RoundTripCheck, V.LatentQuantCheck]:
        key = (model, precision, size)
        if key not in self._checks:
            reference = None if precision == "fp32" else self.photo_checks(model, "fp32", size)[0]
            self._checks[key] = V.photo_checks(
                self.vae(model, precision),
                self.photos(size),
                model=model,
                precision=precision,
                reference=reference,
            )
        return self._checks[key]


@pytest.fixture(scope="module")
def measurements() -> Measurements:
    torch.set_num_threads(1)
    return Measurements()


@pytest.fixture(scope="module")
def tolerances(pytestconfig: pytest.Config) -> Tolerances:
    """The run's tolerance file, or the packaged one when it has no ``[vae]`` tables."""
    loaded = load_tolerances(tolerance_file(pytestconfig))
    return loaded if loaded.vae else load_tolerances(DEFAULT_TOLERANCES)


@pytest.fixture
def bounds(tolerances: Tolerances) -> Callable[[str, str], VaeBounds]:
    """``bounds(table, precision)``: the ``[vae.<table>.<precision>]`` bounds (a failure
    naming the file when it has none)."""

    def get(table: str, precision: str) -> VaeBounds:
        __tracebackhide__ = True
        try:
            return tolerances.vae_bounds(table, precision)
        except LookupError as exc:
            pytest.fail(str(exc), pytrace=False)

    return get


@pytest.fixture
def require(request: pytest.FixtureRequest) -> Callable[..., None]:
    """``require(ok, what, observed, expected)``: fail with the observed value, the bound and
    the command that reproduces the test."""

    def check(ok: bool, what: str, observed: object, expected: str) -> None:
        __tracebackhide__ = True
        if not ok:
            pytest.fail(
                f"{what}: observed={observed}, expected={expected} [{request.node.name}]\n"
                f"  reproduce: python -m pytest '{request.node.nodeid}' -p no:xdist\n"
                "  full table: python benchmarks/vae_report.py",
                pytrace=False,
            )

    return check


@pytest.fixture
def within(request: pytest.FixtureRequest) -> Callable[[list[str], str, VaeBounds], None]:
    """``within(problems, what, bounds)``: fail listing every bound broken, the table they
    come from and the command that reproduces the test."""

    def check(problems: list[str], what: str, bounds: VaeBounds) -> None:
        __tracebackhide__ = True
        if problems:
            listed = "\n".join(f"  {p}" for p in problems)
            pytest.fail(
                f"{what} beyond {bounds.where} [{request.node.name}]:\n{listed}\n"
                f"  reproduce: python -m pytest '{request.node.nodeid}' -p no:xdist\n"
                "  full table: python benchmarks/vae_report.py",
                pytrace=False,
            )

    return check


@pytest.fixture
def vae_outcome(request: pytest.FixtureRequest) -> Callable[..., None]:
    """``vae_outcome(model, precision, kind, size, tier, metrics, problems)``: the test's
    outcome for the results file and the matrix (check ``vae``), kept with the test
    before it passes or fails; nothing where the suite's plugin is not active."""
    import time

    from conformance.plugin import OUTCOMES_KEY, PLUGIN_KEY

    start = time.perf_counter()

    def record(model: str, precision: str, kind: str, size: int, tier: Tier,
               metrics: Metrics | None, problems: list[str]) -> None:
        plugin = request.config.stash.get(PLUGIN_KEY, None)
        if plugin is None:
            return
        outcome = Outcome(
            id=f"{model}/vae-{kind}/{size}x{size}/{precision}", check=Check.VAE, model=model,
            case=f"vae-{kind}", resolution=f"{size}x{size}", precision=precision,
            hardware_class=plugin.session.hardware_class.name,
            status=Status.FAILED if problems else Status.PASSED, tier=tier, golden_class=None,
            metrics=None if metrics is None else RecordedMetrics.measured(metrics),
            seconds=round(time.perf_counter() - start, 4),
            message="; ".join(problems) or f"within the [vae] bounds ({request.node.name})",
            reproduce=f"pytest --pyargs conformance -k '{request.node.name}'",
        )
        request.node.stash.setdefault(OUTCOMES_KEY, []).append(outcome)

    return record


def _worst(metrics: tuple[Metrics, ...]) -> Metrics:
    """The comparison with the lowest PSNR (the worst photo)."""
    return min(metrics, key=lambda m: m.psnr)


@pytest.mark.parametrize(("model", "precision"), ALL)
def test_decode_repeatable(model: str, precision: str, require: Callable[..., None],
                           vae_outcome: Callable[..., None]) -> None:
    """Two independently loaded VAEs decode the seeded latents to the same bits."""
    from conformance.metrics import compare

    torch.set_num_threads(1)
    path = _vae_path(model)
    first, second = V.load_vae(path, precision), V.load_vae(path, precision)
    latents = V.seeded_latents(first, V.DEFAULT_DECODE_SIZE)
    a, b = V.decode_sample(first, latents), V.decode_sample(second, latents)
    images_a, images_b = V.tensor_to_images(a), V.tensor_to_images(b)
    ha = [pixel_sha256(img) for img in images_a]
    hb = [pixel_sha256(img) for img in images_b]
    same = torch.equal(a, b)
    vae_outcome(model, precision, "repeatable", V.DEFAULT_DECODE_SIZE, Tier.EXACT,
                compare(images_b[0], images_a[0]),
                [] if same and ha == hb else ["decoder output differs between two runs"])
    require(
        same,
        "decoder output differs between two runs",
        f"max |a-b|={float((a.float() - b.float()).abs().max()):.3g}",
        "bit-identical",
    )
    require(ha == hb, "decoded pixel SHA-256 differs", hb, ha)


@pytest.mark.parametrize(("model", "precision"), REDUCED_ONLY)
def test_decode_close_to_fp32(
    model: str,
    precision: str,
    measurements: Measurements,
    bounds: Callable[[str, str], VaeBounds],
    within: Callable[..., None],
    vae_outcome: Callable[..., None],
) -> None:
    """Reduced-precision decode of the seeded latents stays visually identical to fp32."""
    torch.set_num_threads(1)
    latents, reference = measurements.reference_decode(model)
    limits = bounds("decode", precision)
    check = V.decode_check(
        measurements.vae(model, precision), reference, latents, model=model, precision=precision
    )
    problems = V.decode_violations(check, limits)
    vae_outcome(model, precision, "decode", check.size, Tier.FIDELITY, check.metrics, problems)
    within(problems, "decode vs fp32 (worst image)", limits)


@pytest.mark.parametrize(("model", "precision"), ALL)
def test_photo_round_trip(
    model: str,
    precision: str,
    measurements: Measurements,
    bounds: Callable[[str, str], VaeBounds],
    within: Callable[..., None],
    vae_outcome: Callable[..., None],
) -> None:
    """Photos survive encode-decode above a floor; reduced precision loses little."""
    torch.set_num_threads(1)
    limits = bounds("roundtrip", precision)
    rt, _ = measurements.photo_checks(model, precision)
    problems = V.round_trip_violations(rt, limits)
    vae_outcome(model, precision, "roundtrip", rt.size, Tier.FIDELITY, _worst(rt.metrics),
                problems)
    within(problems, f"photo round trip ({rt.size} px)", limits)


@pytest.mark.parametrize(("model", "precision"), ALL)
def test_latent_8bit_round_trip(
    model: str,
    precision: str,
    measurements: Measurements,
    bounds: Callable[[str, str], VaeBounds],
    within: Callable[..., None],
    vae_outcome: Callable[..., None],
) -> None:
    """8-bit latents decode close to float latents at about a twelfth of the RGB bytes."""
    torch.set_num_threads(1)
    limits = bounds("latent8", precision)
    _, quant = measurements.photo_checks(model, precision)
    problems = V.latent8_violations(quant, limits)
    vae_outcome(model, precision, "latent8", quant.size, Tier.FIDELITY,
                _worst(quant.vs_float), problems)
    within(problems, f"8-bit latents ({quant.size} px)", limits)
