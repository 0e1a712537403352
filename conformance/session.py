"""The conformance session: settings, generation cache, and the one check algorithm.

Plain Python, no pytest: :meth:`ConformanceSession.evaluate` turns an item and a check kind
into an :class:`~conformance.records.Outcome`; the pytest plugin only maps outcomes to
pass / fail / skip and collects them.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from conformance.cases import CaseSet, Item, Resolution, load_cases
from conformance.core import Check, Status, Tier
from conformance.errors import ConformanceInputError
from conformance.gencache import SharedGenerations
from conformance.generate import Generation, ModelUnavailable, Runner
from conformance.golden import GoldenEntry, GoldenStore, encode_png
from conformance.hardware import PINNED_KEYS, HardwareClass, command_line, now_utc
from conformance.identity import Identity
from conformance.metrics import (
    Metrics,
    compare,
    diff_map,
    flip_map,
    headline_metrics,
    pixel_sha256,
)
from conformance.precision import REFERENCE_PRECISION
from conformance.records import (
    Artifacts,
    ClassComparison,
    GenerationError,
    GoldenChoice,
    ModelComparison,
    Outcome,
    RecordedMetrics,
    StepDelta,
)
from conformance.report.results import results_document
from conformance.tolerances import Tolerances, load_tolerances
from conformance.trace import StepTrace, first_divergent_step, step_deltas

#: The golden set every machine is compared with at the perceptual tier: the embedded
#: models recorded on an AMD EPYC with ATen's portable (non-vectorised) kernels.
REFERENCE_CLASS = "cpu-amd-default+bf16"


@dataclass(frozen=True)
class Settings:
    device: str = "cpu"
    threads: int = 1
    models: tuple[str, ...] | None = None
    precisions: tuple[str, ...] | None = None
    resolutions: tuple[Resolution, ...] | None = None
    golden_dir: Path = Path("golden")
    cases_path: Path | None = None
    tolerances_path: Path | None = None
    reference_class: str = REFERENCE_CLASS
    record: bool = False
    force: bool = False
    results_path: Path = Path("conformance-results") / "results.json"
    save_images: bool = False
    localize: bool = False
    deviations_path: Path | None = None
    probes: bool = False
    probe_inputs: bool = False
    strict_golden: bool = False

    def command_flags(self, record: bool = False) -> list[str]:
        """Flags that reproduce what this session generated and what it compared with:
        every setting that differs from its default (``record``: for a command that records,
        which never writes into the installed package's golden sets: ``golden/`` here)."""
        flags = ["--device", self.device, "--threads", str(self.threads)]
        default = Settings()
        golden_dir = self.golden_dir
        if record:
            from conformance.options import is_packaged

            if is_packaged(golden_dir):
                golden_dir = None  # the suite's default: named below, as a folder here
                flags += ["--golden-dir", "golden"]
        for flag, value, default_value in (
            ("--cases", self.cases_path, default.cases_path),
            ("--golden-dir", golden_dir, default.golden_dir),
            ("--tolerances", self.tolerances_path, default.tolerances_path),
            ("--deviations", self.deviations_path, default.deviations_path),
            ("--reference-class", self.reference_class, default.reference_class),
        ):
            if value is not None and value != default_value:
                flags += [flag, str(value)]
        if self.strict_golden:
            flags.append("--strict-golden")
        return flags


def pinned_differences(observed: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """Pinned fingerprint keys whose values differ, as ``key observed != expected``."""
    return [
        f"{k} {observed.get(k)!r} != {expected.get(k)!r}"
        for k in PINNED_KEYS
        if observed.get(k) != expected.get(k)
    ]


@dataclass(frozen=True)
class Comparison:
    """What one check compares: an observed generation against an expected image and its
    latent trace, the tier it is held to, and why that tier (when it is not exact)."""

    item: Item
    check: Check
    observed: Generation
    expected_image: np.ndarray
    expected_trace: Sequence[StepTrace]
    tier: Tier
    expected: str  # what the expected image is, for messages: "the cpu-... golden"
    golden_class: str | None = None
    why_not_exact: Sequence[str] = ()
    variant: str | None = None
    expected_sha: str = ""


#: What the comparisons against every other class measure (the matrix shows these).
_BY_CLASS_METRICS = tuple(dict.fromkeys(["mae", *(m.name for m in headline_metrics())]))

@dataclass(frozen=True)
class Verdict:
    """The fields of an :class:`~conformance.records.Outcome` that its check decides
    (:meth:`ConformanceSession.evaluate` adds the item's and the timings)."""

    status: Status
    message: str = ""
    tier: Tier | None = None
    golden_class: str | None = None
    metrics: RecordedMetrics | None = None
    first_divergent_step: int | None = None
    step_deltas: tuple[StepDelta, ...] | None = None
    by_class: dict[str, ClassComparison] = field(default_factory=dict)
    artifacts: Artifacts = field(default_factory=Artifacts)
    generate_seconds: float | None = None
    error: GenerationError | None = None
    localization: dict[str, Any] | None = None
    comparison: ModelComparison | None = None
    golden_choice: GoldenChoice | None = None


class GenerationFailed(Exception):
    """A generation raised: the check becomes an ERROR outcome naming the exception."""

    def __init__(self, item: Item, device: str, exc: BaseException) -> None:
        text = str(exc).strip()
        self.error = GenerationError(
            type=type(exc).__name__,
            message=text.splitlines()[0][:500] if text else "",
            device=device,
            precision=item.precision,
        )
        super().__init__(
            f"{item.id}: generation raised {self.error.type}: {self.error.message} "
            f"(device {device}, precision {item.precision})"
        )


class ConformanceSession:
    """Everything one process needs to run conformance items."""

    def __init__(
        self,
        settings: Settings,
        hardware_class: HardwareClass,
        fingerprint: dict[str, Any],
        runner: Runner | None = None,
        identity: Identity | None = None,
        shared: SharedGenerations | None = None,
        command: str | None = None,
    ) -> None:
        self.settings = settings
        self.command = command or command_line()  # what a recorded golden says made it
        self.hardware_class = hardware_class
        self.fingerprint = fingerprint
        self.identity = identity
        self.shared = shared
        self.cases: CaseSet = load_cases(settings.cases_path)
        self.tolerances: Tolerances = load_tolerances(settings.tolerances_path)
        self.store = GoldenStore(settings.golden_dir)
        self.runner = runner or Runner(settings.device)
        self.started_at = now_utc()
        from conformance.vae import model_seconds

        self._vae_seconds_before = model_seconds()  # the clock is the process's
        self.outcomes: list[Outcome] = []
        self._generations: dict[str, Generation] = {}
        self._failures: dict[str, GenerationFailed] = {}
        #: a missing golden fails whatever ``--strict-golden`` says (the fixture's session)
        self.missing_fails = False
        #: the pytest run's rootdir: printed commands run from there (None: here)
        self.rootdir: Path | None = None
        self._stores: dict[Path, GoldenStore] = {}

    def for_fixture(self, golden_dir: Path, runner: Any | None = None) -> ConformanceSession:
        """This session's machine, files and checks on another golden store (the
        ``diffusion_golden`` fixture's), a missing golden failing. ``runner`` stands in for
        the session's runner where the fixture has the user's pipeline (``--probes`` and
        ``--localize`` call it again); without one they do not apply."""
        import copy

        other = copy.copy(self)
        s = self.settings
        other.settings = replace(s, golden_dir=golden_dir, probes=s.probes and runner is not None,
                                 localize=s.localize and runner is not None)
        other.store = self._stores.setdefault(golden_dir, GoldenStore(golden_dir))
        other.runner = runner if runner is not None else self.runner
        other.missing_fails = True
        other._generations, other._failures = {}, {}
        return other

    def golden_provenance(self) -> list[str]:
        """One line per model: the golden classes present and how this class's were made."""
        return golden_provenance(self.store, [i.model for i in self.items()],
                                 self.hardware_class.name)

    # -- items ------------------------------------------------------------------------
    def items(self) -> list[Item]:
        s = self.settings
        return self.cases.items(s.models, s.precisions, s.resolutions)

    @property
    def artifacts_dir(self) -> Path:
        """Failure (and ``--save-images``) images: ``artifacts/`` beside the results file."""
        return self.settings.results_path.parent.resolve() / "artifacts"

    def generation(self, item: Item) -> Generation:
        """The item's image, generated once per process (a failure, too, is kept)."""
        if item.id in self._failures:
            raise self._failures[item.id]
        if item.id not in self._generations:
            try:
                if self.shared is None:
                    self._generations[item.id] = self.generate_fresh(item)
                else:  # made once per run, whichever process needs it first
                    owner = self.identity.digest if self.identity else self.settings.device
                    gen, _ = self.shared.get_or_make(f"{owner}|{item.id}",
                                                     lambda: self.generate_fresh(item))
                    self._generations[item.id] = gen  # type: ignore[assignment]
            except GenerationFailed as exc:
                self._failures[item.id] = exc
                raise
        return self._generations[item.id]

    def generate_fresh(self, item: Item, variant: str | None = None) -> Generation:
        """A fresh generation; an exception inside the pipeline becomes GenerationFailed."""
        try:
            return self.runner.generate(item, variant)
        except (ModelUnavailable, ConformanceInputError):
            raise
        except Exception as exc:
            raise GenerationFailed(item, self.settings.device, exc) from exc

    # -- the check ---------------------------------------------------------------------
    def evaluate(
        self, item: Any, check: Check, nodeid: str = "", variant: str | None = None
    ) -> Outcome:
        """Run one check on ``item`` (its kind's subject: a case file item, a VAE check's
        :class:`~conformance.checks.vae.VaeItem`); never raises for bad goldens (they
        become ERROR)."""
        from conformance.checks import kind as check_kind

        kind = check_kind(check)
        start = time.perf_counter()
        try:
            verdict = kind.run(self, item, variant)
        except ModelUnavailable as exc:
            verdict = Verdict(Status.SKIPPED, str(exc))
        except ConformanceInputError as exc:
            verdict = Verdict(Status.ERROR, str(exc))
        except GenerationFailed as exc:
            verdict = Verdict(Status.ERROR, str(exc), error=exc.error)
        peak = self.runner.peak_memory_mb() if kind.generates else None
        sha = None
        if item.id in self._generations and verdict.status is not Status.SKIPPED:
            sha = pixel_sha256(self._generations[item.id].image)
        outcome = Outcome(
            id=item.id, check=check, model=item.model, case=item.case.name,
            resolution=str(item.resolution), precision=item.precision,
            hardware_class=self.hardware_class.name, variant=variant,
            reproduce=kind.reproduce(self, nodeid),
            peak_memory_mb=peak, pixel_sha256=sha,
            seconds=round(time.perf_counter() - start, 4), **vars(verdict),
        )
        self.outcomes.append(outcome)
        return outcome

    def reference_item(self, item: Item) -> Item:
        """The same case and resolution at the reference precision (fp32)."""
        return Item(item.case, item.resolution, REFERENCE_PRECISION)

    def ladder_means(self, model: str) -> dict[str, dict[str, float]]:
        """Mean MAE / SSIM / pHash distance against fp32 per precision over ``model``'s items."""
        sums: dict[str, list[Metrics]] = {}
        for item in self.items():
            if item.model != model or item.precision == REFERENCE_PRECISION:
                continue
            gen = self.generation(item)
            ref = self.generation(self.reference_item(item))
            sums.setdefault(item.precision, []).append(compare(gen.image, ref.image))
        return {
            prec: {
                "n": len(ms),
                "mae": sum(m.mae for m in ms) / len(ms),
                "ssim": sum(m.ssim for m in ms) / len(ms),
                "phash_distance": sum(m.phash_distance for m in ms) / len(ms),
            }
            for prec, ms in sums.items()
        }

    def missing(self, item: Item, golden_class: str, own: bool) -> Verdict:
        """No golden to compare with: skipped, or failed with ``--strict-golden`` (and for
        the ``diffusion_golden`` fixture, as in syrupy and pytest-mpl)."""
        fails = self.settings.strict_golden or self.missing_fails
        status = Status.FAILED if fails else Status.SKIPPED
        return Verdict(status, self._missing_reason(item, golden_class, own),
                       golden_class=golden_class, golden_choice=GoldenChoice("missing"))

    def check_fresh(self, item: Item, golden_class: str, entry: GoldenEntry) -> None:
        """A golden recorded from other case parameters is stale: an error naming them."""
        stale = param_changes(item.case.generation_params(), entry.params)
        if stale:
            raise ConformanceInputError(
                self.store.set_dir(item.model, golden_class) / entry.file,
                f"golden for {item.id} is stale: the case changed since recording "
                f"({'; '.join(stale)}); re-record with --record --force",
            )

    def golden_image(self, item: Item, golden_class: str, entry: GoldenEntry) -> np.ndarray:
        """The golden's pixels, checked against the case (stale) and the item's size."""
        self.check_fresh(item, golden_class, entry)
        expected = self.store.load_image(entry, golden_class)
        width, height = item.resolution.width, item.resolution.height
        if expected.shape[:2] != (height, width):
            raise ConformanceInputError(
                self.store.set_dir(item.model, golden_class) / entry.file,
                f"golden is {expected.shape[1]}x{expected.shape[0]} but {item.id} generates "
                f"{width}x{height}",
            )
        return expected

    def store_probes(self, item: Item) -> str:
        """Probe step 0 of ``item`` and store the records (and, with ``--probe-inputs``,
        the denoiser's step-0 input) beside its golden; what was written, for messages."""
        from conformance.localize import probe_item

        root = item.case.model_spec.family.denoiser if self.settings.probe_inputs else ""
        capture = [f"step0/{root}"] if self.settings.probe_inputs else []
        run = probe_item(self.runner, item, steps=(0,), stop_early=True, capture=capture)
        inputs = run.captures.get(f"step0/{root}")
        if capture and inputs is None:
            problem = run.capture_problems.get(f"step0/{root}", "not captured")
            raise ConformanceInputError(f"--probe-inputs ({item.id})", problem)
        path = self.store.record_probes(item, self.hardware_class.name, run.records,
                                        self.identity, inputs, now_utc(), self.command)
        text = f"{path.name}, {path.stat().st_size} bytes"
        if inputs is not None:
            text += f"; {root}'s input: {inputs.nbytes} bytes"
        return text

    def judge(self, cmp: Comparison) -> Verdict:
        """The one verdict of every check: the tier decides what must hold (exact: pixels
        and every step's latents; the other tiers: the tolerance file's bounds for the
        precision), then metrics, the per-step trace, images and the message follow."""
        from conformance.checks import kind as check_kind

        item, obs = cmp.item, cmp.observed
        metrics = compare(obs.image, cmp.expected_image)
        step = first_divergent_step(obs.trace, cmp.expected_trace)
        exact = metrics.identical and (step is None or not cmp.expected_trace)
        problems = self.tolerances.problems(cmp.tier, item.precision, metrics,
                                            step if cmp.expected_trace else None)
        localization = None
        if self.settings.localize and not exact and check_kind(cmp.check).localizable:
            localization = self._localize(cmp, step)
        elif self.settings.localize and not exact and cmp.golden_class is not None:
            localization = self._localize_against_golden(cmp)
        verdict = Verdict(
            Status.PASSED,
            # an invariance row reads exact when the variant changed no bit; every other
            # check reports the tier it was held to
            tier=Tier.EXACT if exact and cmp.check is Check.INVARIANCE else cmp.tier,
            golden_class=cmp.golden_class,
            metrics=RecordedMetrics.measured(metrics),
            first_divergent_step=step,
            step_deltas=StepDelta.of(step_deltas(obs.trace, cmp.expected_trace)),
            generate_seconds=round(obs.seconds, 4),
            localization=localization,
        )
        where = [localization["message"] + (f" (against {localization['against']})"
                                             if "against" in localization else "")
                 ] if localization else []
        if not problems:
            artifacts = self._write_artifacts(cmp) if self.settings.save_images else Artifacts()
            return replace(verdict, artifacts=artifacts,
                           message=_passed_message(cmp, metrics, exact, where))
        artifacts = self._write_artifacts(cmp)
        message = self._explain(cmp, metrics, step, artifacts, [*problems, *where])
        return replace(verdict, status=Status.FAILED, artifacts=artifacts, message=message)

    def _localize(self, cmp: Comparison, step: int | None) -> dict[str, Any]:
        """Generate both sides again with module probes on the first divergent step (or,
        when every step's latents agree, on the VAE decode) and name the module."""
        from conformance.checks import kind as check_kind
        from conformance.localize import localize, probe_item

        expected = check_kind(cmp.check).baseline(self, cmp.item)
        steps = (step,) if step is not None else ()
        a = probe_item(self.runner, expected, steps=steps, stop_early=step is not None)
        b = probe_item(self.runner, cmp.item, variant=cmp.variant, steps=steps,
                       stop_early=step is not None)
        found = localize(a.records, b.records, top=5)
        return _with_profile(found.to_dict(), a.records, b.records)

    def _localize_against_golden(self, cmp: Comparison) -> dict[str, Any]:
        """Probe this item here at the golden's probed steps and name the first module whose
        bits differ from the golden's stored probes (another machine's run); when the golden
        has none, a message saying so and how they are added (``--record --probes``)."""
        from conformance.localize import localize, probe_item

        assert cmp.golden_class is not None
        entry = self.store.lookup(cmp.item, cmp.golden_class)
        golden = self.store.load_probes(entry, cmp.golden_class) if entry else None
        if golden is None:
            return {"message": (
                f"--localize: the {cmp.golden_class} golden of {cmp.item.id} has no stored "
                "module probes, so nothing here can be compared module by module; a machine "
                f"of that set's identity adds them with: {self.record_command(cmp.item)} "
                "--probes")}
        here = probe_item(self.runner, cmp.item, steps=tuple(golden.steps), stop_early=True)
        found = localize(golden, here.records, top=5).to_dict()
        found["against"] = f"the {cmp.golden_class} golden's stored probes"
        inputs = self.store.load_inputs(entry, cmp.golden_class)
        if inputs is not None:
            # the Polygraphy --load-inputs idea: the golden machine's own denoiser input, run
            # here, tells this denoiser's computation from what it was given
            from conformance.localize import replay

            result = replay(self.runner.pipeline_for(cmp.item), inputs)
            found["replay"] = result.to_dict()
            found["message"] = f"{found['message']}; replay: {result.message}"
        return _with_profile(found, golden, here.records)

    def against_every_class(self, item: Item, gen: Generation) -> dict[str, ClassComparison]:
        """Metrics of this generation against every golden class that has the item."""
        out: dict[str, ClassComparison] = {}
        for cls in self.store.classes(item.model):
            try:
                entry = self.store.lookup(item, cls)
                if entry is None:
                    continue
                expected = self.store.load_image(entry, cls)
            except ConformanceInputError as exc:
                out[cls] = ClassComparison(cls, None, None, error=str(exc))
                continue
            if expected.shape != gen.image.shape:
                out[cls] = ClassComparison(cls, None, None, error="size differs")
                continue
            # the matrix cells' numbers only: every class, every item, so kept cheap
            out[cls] = ClassComparison(
                cls, RecordedMetrics.measured(compare(gen.image, expected, _BY_CLASS_METRICS)),
                first_divergent_step(gen.trace, entry.steps()),
            )
        return out

    def record(self, item: Item) -> Verdict:
        gen = self.generation(item)
        path, replaced = self.store.record(
            item,
            self.hardware_class.name,
            gen.image,
            gen.trace,
            self.fingerprint,
            recorded_at=now_utc(),
            command=self.command,
            force=self.settings.force,
            identity=self.identity,
        )
        verb = "replaced" if replaced else "recorded"
        if self.settings.probes:
            verb += f" (module probes of step 0: {self.store_probes(item)})"
        return Verdict(Status.RECORDED, f"{verb} {path}", tier=Tier.EXACT,
                       golden_class=self.hardware_class.name)

    # -- messages and artifacts --------------------------------------------------------
    def env_prefix(self) -> str:
        """``ATEN_CPU_CAPABILITY=avx2 `` and the like: the dispatch variables this run was
        made under (they change its class and bits), for the commands it prints."""
        env = (self.identity.features.get("env") or {}) if self.identity is not None else {}
        return "".join(f"{k}={shlex.quote(str(v))} " for k, v in sorted(env.items()))

    def _where(self) -> str:
        """``cd ROOTDIR && `` when the run's rootdir (where its ini file and node ids are
        read from) is not the working folder, else nothing."""
        if self.rootdir is None:
            return ""
        try:
            if Path.cwd().resolve() == self.rootdir.resolve():
                return ""
        except OSError:
            pass
        return f"cd {shlex.quote(str(self.rootdir))} && "

    def reproduce_command(self, nodeid: str, builtin: bool = True) -> str:
        """The command that runs this check again, where it is printed: a test of one's own
        by its node id; a test of the suite by its name in the installed package
        (``--pyargs conformance -k NAME``: its node id depends on where the package is)."""
        if not nodeid:
            target = ["--pyargs", "conformance"]
        elif builtin:
            target = ["--pyargs", "conformance", "-k", nodeid.rsplit("::", 1)[-1]]
        else:
            target = [nodeid]
        return self._where() + self.env_prefix() + shlex.join(
            ["pytest", *target, *self.settings.command_flags()])

    def record_command(self, item: Item, env: str | None = None) -> str:
        """The command that records ``item``'s golden: on this machine, under the dispatch
        variables this run was made under, or under ``env`` (``NAME=value ``) instead."""
        prefix = self.env_prefix() if env is None else env
        nodeid = getattr(item.case, "nodeid", "")
        if nodeid:  # a diffusion_golden golden: its own test records it
            return self._where() + prefix + shlex.join(
                ["pytest", nodeid, *self.settings.command_flags(record=True), "--record"])
        return self._where() + prefix + shlex.join(
            ["pytest", "--pyargs", "conformance", *self.settings.command_flags(record=True),
             "--record",
             "--model", item.model, "--precision", item.precision,
             "--resolution", str(item.resolution)]
        )

    def _missing_reason(self, item: Item, golden_class: str, own: bool) -> str:
        manifest = self.store.set_dir(item.model, golden_class) / "manifest.json"
        if own:
            try:
                sets = self.store.classes(item.model)
            except ConformanceInputError:
                sets = []
            where = (f"none of the {item.model} sets ({', '.join(sets)}) under "
                     f"{_display_path(self.store.root)} holds it" if sets else
                     f"{_display_path(self.store.root / item.model)} holds no golden set")
            return (f"no golden for {item.id}: {where}; record this machine's "
                    f"({golden_class}) with: {self.record_command(item)}")
        from conformance.devices import for_class

        reason = f"no golden for {item.id} in class {golden_class} ({manifest})"
        hint = ""
        kind = for_class(golden_class)
        pin = kind.pin_env(golden_class) if kind is not None else {}
        if kind is not None and pin:
            env = " ".join(f"{k}={v}" for k, v in pin.items())
            hint = (f" (a {kind.label} with those features, under {env}: "
                    f"{self.record_command(item, env=env + ' ')})")
        return f"{reason}; it is recorded on a {golden_class} machine{hint}"

    def _write_artifacts(self, cmp: Comparison) -> Artifacts:
        """The observed and expected images of a comparison, their difference and FLIP
        maps, as PNGs under :attr:`artifacts_dir`."""
        actual, expected = cmp.observed.image, cmp.expected_image
        out = self.artifacts_dir / cmp.item.id / cmp.check.value
        if cmp.variant:
            out = out / cmp.variant
        out.mkdir(parents=True, exist_ok=True)
        base = self.artifacts_dir.parent
        paths = {}
        for name, image in (
            ("actual", actual),
            ("golden", expected),
            ("diff", diff_map(actual, expected)),
            ("flip", flip_map(actual, expected)),
        ):
            path = out / f"{name}.png"
            path.write_bytes(encode_png(image))
            # relative to the results file's folder: results and images move together
            paths[name] = path.relative_to(base).as_posix()
        return Artifacts(**paths)

    def _explain(self, cmp: Comparison, metrics: Metrics, step: int | None,
                 artifacts: Artifacts, problems: list[str]) -> str:
        """The message of a failed comparison: what differs, by how much, from which step,
        the images, and the case."""
        item, case = cmp.item, cmp.item.case
        headline = (f"{f'with {cmp.variant} ' if cmp.variant else ''}differs from "
                    f"{cmp.expected} at the {cmp.tier.value} tier")
        if cmp.why_not_exact:
            headline += f" (not exact because {'; '.join(cmp.why_not_exact)})"
        observed_sha = pixel_sha256(cmp.observed.image)
        expected_sha = cmp.expected_sha or pixel_sha256(cmp.expected_image)
        n_steps = len(cmp.expected_trace)
        lines = [f"{item.id} {headline}"]
        lines += [f"  {p}" for p in problems]
        lines.append(
            f"  pixel_sha256: observed={observed_sha[:16]}... expected={expected_sha[:16]}..."
        )
        lines.append(f"  metrics: {metrics.summary()}")
        lines.append(
            "  first divergent step: "
            + (f"{step} of {n_steps}" if step is not None else "none (latents equal at every step)")
        )
        if artifacts:
            base = self.artifacts_dir.parent
            lines.append(
                "  images: " + ", ".join(f"{k}={_display_path(base / v)}"
                                         for k, v in artifacts.items())
            )
        lines.append(
            f"  case: model={case.model} seed={case.seed} steps={case.steps} "
            f"scheduler={case.scheduler} guidance={case.guidance_scale} "
            f"prompt={case.prompt!r} device={self.settings.device} "
            f"threads={self.settings.threads} class={self.hardware_class}"
        )
        return "\n".join(lines)

    # -- results -----------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        from conformance.vae import model_seconds

        st = self.runner.stats
        return {
            "model_loads": st.loads,
            "load_seconds": round(st.load_seconds, 3),
            "generations": st.generations,
            "generate_seconds": round(st.generate_seconds, 3),
            "trace_seconds": round(st.trace_seconds, 3),
            "vae_check_seconds": round(model_seconds() - self._vae_seconds_before, 3),
            "reused": self.shared.reused if self.shared is not None else 0,
            "loaded": list(st.loaded),
            "denoiser_bytes": dict(st.denoiser_bytes),
        }

    def write_results(
        self, outcomes: list[Outcome], stats: dict[str, Any], wall_seconds: float
    ) -> Path:
        return write_results(
            self.settings.results_path, outcomes, self.machine(), self.started_at, stats,
            wall_seconds)

    def machine(self) -> dict[str, Any]:
        """What a results file says of the machine: class, fingerprint, identity (an xdist
        worker sends it to the controller, which measures nothing itself)."""
        return {"hardware_class": self.hardware_class.name, "fingerprint": self.fingerprint,
                "identity": None if self.identity is None else self.identity.to_dict()}


def golden_provenance(store: GoldenStore, models: Sequence[str],
                      hardware_class: str | None = None) -> list[str]:
    """One line per model: the golden classes present and, for ``hardware_class``, how its
    goldens were made (an xdist controller, which measures no class, gives none)."""
    lines = []
    for model in dict.fromkeys(models):
        try:
            classes = store.classes(model)
        except ConformanceInputError as exc:  # the items of that model report it
            lines.append(f"conformance: {model} goldens: unreadable: {exc}")
            continue
        line = f"conformance: {model} goldens: {', '.join(classes) or 'none'}"
        if hardware_class is None:
            lines.append(line)
            continue
        try:
            manifest = store.manifest(model, hardware_class)
        except ConformanceInputError as exc:
            manifest = None
            line += f" ({hardware_class}: unreadable: {exc.message})"
        if manifest and manifest.entries:
            entry = max(manifest.entries.values(), key=lambda e: e.recorded_at)
            fp = entry.fingerprint
            line += (
                f"; {hardware_class}: {len(manifest.entries)} recorded up to "
                f"{entry.recorded_at} with torch {fp.get('torch')}, diffusers "
                f"{fp.get('diffusers')}, {fp.get('threads')} thread(s)"
            )
        lines.append(line)
    return lines


def write_results(path: Path, outcomes: list[Outcome], machine: dict[str, Any],
                  started_at: str, stats: dict[str, Any], wall_seconds: float) -> Path:
    """The run's results file (written to a temporary file, then renamed into place, with
    the user's umask); a full disk or an unwritable folder is an
    :class:`~conformance.errors.OutputError` naming the file and the cause, and leaves no
    temporary file."""
    from conformance.safeio import write_atomic

    doc = results_document(
        outcomes, machine["hardware_class"], machine["fingerprint"], started_at, now_utc(),
        stats | {"wall_seconds": round(wall_seconds, 3)}, identity=machine["identity"],
    )
    text = json.dumps(doc, indent=1) + "\n"
    return write_atomic(path, text.encode("utf-8"), kind="results file")


#: the most blocks a localization's profile keeps
PROFILE_BLOCKS = 64


def _with_profile(found: dict[str, Any], a: Any, b: Any) -> dict[str, Any]:
    """``found`` with ``blocks``: the relative output error of every top-level block along
    the network in the section where the runs part (the first probed section otherwise),
    for the report's per-module plot."""
    from conformance.blocks import block_rows
    from conformance.localize import json_number

    tables = block_rows(a, b)
    section = found.get("section") if found.get("section") in tables else next(iter(tables), None)
    rows = tables.get(section, []) if section else []
    found["blocks_section"] = section
    found["blocks"] = [{"name": r.name, "bits": r.bits,
                        "rel_err": None if r.rel_err is None else json_number(r.rel_err)}
                       for r in rows[:PROFILE_BLOCKS]]
    return found


def _passed_message(cmp: Comparison, metrics: Metrics, exact: bool, where: list[str]) -> str:
    """``identical to the ... golden`` or ``within the close tier of ...`` with the metrics,
    why the tier is not exact, and where a localized run parts."""
    what = ("differs from" if cmp.tier is Tier.DIFFER else "identical to" if exact
            else f"within the {cmp.tier.value} tier of")
    detail = "" if exact and cmp.tier is not Tier.DIFFER else f" ({metrics.summary()})"
    note = (f" ({cmp.tier.value} tier because {'; '.join(cmp.why_not_exact)})"
            if cmp.why_not_exact else "")
    prefix = f"{cmp.variant}: " if cmp.variant else ""
    return f"{prefix}{what} {cmp.expected}{detail}{note}" + "".join(f"; {w}" for w in where)


def _display_path(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (for messages)."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def merge_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum per-process runner stats (xdist workers)."""
    seconds = ("load_seconds", "generate_seconds", "trace_seconds", "vae_check_seconds")
    out: dict[str, Any] = {"model_loads": 0, "load_seconds": 0.0, "generations": 0,
                           "generate_seconds": 0.0, "trace_seconds": 0.0,
                           "vae_check_seconds": 0.0, "reused": 0, "loaded": [],
                           "denoiser_bytes": {}, "processes": len(parts)}
    for p in parts:
        for k in ("model_loads", "generations", "reused", *seconds):
            out[k] += p.get(k, 0)
        out["loaded"] += p.get("loaded", [])
        out["denoiser_bytes"].update(p.get("denoiser_bytes", {}))
    for k in seconds:
        out[k] = round(out[k], 3)
    return out


def param_changes(now: dict[str, Any], then: dict[str, Any]) -> list[str]:
    return [
        f"{k}: {then.get(k)!r} -> {now.get(k)!r}"
        for k in sorted(set(now) | set(then))
        if now.get(k) != then.get(k)
    ]
