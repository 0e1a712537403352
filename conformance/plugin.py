"""pytest plugin: options, hooks and fixtures only; the work is in :mod:`conformance.session`.

Registered through the ``pytest11`` entry point. It stays inert (no torch import) until a
test asks for a conformance fixture or a conformance option is given.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest

from conformance import PACKAGE_DIR
from conformance.cases import CaseSet, Item, load_cases
from conformance.checks import CheckKind, Context
from conformance.checks import kind as check_kind
from conformance.core import Check, Status
from conformance.deviations import DEFAULT_DEVIATIONS, Deviation, load_deviations, match
from conformance.errors import ConformanceInputError
from conformance.hardware import now_utc, usable_cores
from conformance.heap import freeze_at_exit, long_lived
from conformance.options import OPTION_BY_NAME, OPTIONS, add_options, resolve
from conformance.records import Outcome
from conformance.report.fidelity import compare_markdown, fidelity_markdown, fidelity_rows
from conformance.session import ConformanceSession, Settings, merge_stats
from conformance.tolerances import load_tolerances

PLUGIN_KEY = pytest.StashKey["ConformancePlugin"]()
OUTCOME_KEY = pytest.StashKey[Outcome]()
#: the outcomes a test adds itself: its ``diffusion_golden`` checks (one per golden name),
#: a VAE check's
OUTCOMES_KEY = pytest.StashKey[list[Outcome]]()
_REPORT_ATTR = "conformance_outcome"
_OUTCOMES_ATTR = "conformance_outcomes"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance", "diffusion determinism conformance")
    add_options(group.addoption)
    for opt in OPTIONS:
        if opt.ini:
            parser.addini(opt.dest, opt.help)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "conformance: a conformance item generated from the case file"
    )
    config.addinivalue_line(
        "markers", "conformance_check(kind): which check a conformance test runs "
        "(repeatable, own-class, reference)",
    )
    if _engaged(config):
        _activate(config)
    else:
        # Any other pytest run in this environment: read no file, import no torch, change
        # no setting, until a test that uses the suite's fixtures is collected.
        config.pluginmanager.register(_Dormant(config), "conformance-dormant")


def _engaged(config: pytest.Config) -> bool:
    """Whether this run asks for the suite: a suite option, or arguments inside the package
    (a path, or ``--pyargs conformance``)."""
    for opt in OPTIONS:
        if config.getoption(opt.dest, None) not in (None, False):
            return True
    return _collects_suite(config)


def _collects_suite(config: pytest.Config) -> bool:
    """Whether the run's arguments name the suite's own tests (a path inside the package,
    or ``--pyargs conformance``), not only tests of one's own."""
    pyargs = bool(getattr(config.option, "pyargs", False))
    for arg in config.args:
        target = arg.split("::")[0]
        if pyargs and target.split(".")[0].split("/")[0] == "conformance":
            return True
        try:
            path = Path(target).resolve()
        except (OSError, ValueError):
            continue
        if path == PACKAGE_DIR or PACKAGE_DIR in path.parents:
            return True
    return False


def _activate(config: pytest.Config, fixture: bool = False) -> ConformancePlugin:
    """Read and check the suite's settings files and register the run's plugin
    (``fixture``: for the ``diffusion_golden`` fixture, whose goldens are not the built-in
    suite's ``--golden-dir`` checks)."""
    existing = config.stash.get(PLUGIN_KEY, None)
    if existing is not None:
        return existing
    freeze_at_exit()
    # the built-in checks read --golden-dir: where they run it must exist (a typo is an
    # error, not a run of skips); the fixture's goldens are made by its own --record
    suite = not fixture and _collects_suite(config)
    try:
        settings = _settings(config)
        cases = load_cases(settings.cases_path)
        from conformance.options import (
            check_golden_dir,
            check_record_target,
            check_results_target,
        )

        problems = [
            cases.filter_problem(settings.models, settings.precisions, settings.resolutions),
            check_results_target(settings.results_path),
            check_record_target(settings.golden_dir) if settings.record else
            check_golden_dir(settings.golden_dir, settings.record) if suite else None,
        ]
        if settings.strict_golden and not settings.record and suite and not problems[-1]:
            problems.append(_empty_golden_dir(settings, cases))
        problems = [p for p in problems if p]
        if problems:  # found before any generation, not after the last one
            raise pytest.UsageError("; ".join(problems))
        load_tolerances(settings.tolerances_path)  # reject a bad file before collection
        deviations = load_deviations(settings.deviations_path)
    except (ValueError, ConformanceInputError) as exc:
        raise pytest.UsageError(str(exc)) from None
    from conformance.hardware import check_available

    problem = check_available(settings.device)  # the CPU's is answered without torch
    if problem:
        raise pytest.UsageError(f"--device {settings.device}: {problem}")
    if settings.force and not settings.record:
        raise pytest.UsageError("--force only applies with --record")
    if settings.probe_inputs and not settings.probes:
        raise pytest.UsageError("--probe-inputs only applies with --record --probes")
    if settings.probes and not settings.record:
        raise pytest.UsageError("--probes only applies with --record (a check run reads a "
                                "golden's stored probes with --localize)")
    if not hasattr(config, "workerinput"):
        for key, value in worker_environment(settings.device,
                                             getattr(config.option, "numprocesses", None),
                                             settings.threads).items():
            # set before torch loads OpenMP (it reads them once); xdist workers inherit them
            os.environ.setdefault(key, value)
    for message, category in QUIET:  # a suite of one's own is as quiet as the project's
        line = f"ignore:{message}:{category.__name__}"
        if line not in config.getini("filterwarnings"):
            config.addinivalue_line("filterwarnings", line)  # the tests to come
        # and the test running now, when a fixture activated the suite in its setup
        warnings.filterwarnings("ignore", message=message, category=category)
    plugin = ConformancePlugin(config, settings, cases, deviations)
    config.stash[PLUGIN_KEY] = plugin
    config.pluginmanager.register(plugin, "conformance-session")
    return plugin


#: Warnings of the libraries the suite drives that say nothing about the user's code:
#: diffusers' schedulers call ``np.array(tensor, copy=False)`` under numpy 2 (one per
#: generation: 107 in one record run of one's own suite).
QUIET: tuple[tuple[str, type[Warning]], ...] = (
    ("__array__ implementation doesn't accept a copy keyword", DeprecationWarning),
)


def _empty_golden_dir(settings: Settings, cases: CaseSet) -> str | None:
    """With ``--strict-golden``: why ``--golden-dir`` holds nothing to check against (no
    golden set of any model the run collects), or ``None``."""
    import shlex

    from conformance.golden import GoldenStore

    store = GoldenStore(settings.golden_dir)
    models = list(dict.fromkeys(
        i.model for i in cases.items(settings.models, settings.precisions,
                                     settings.resolutions)))
    try:
        if any(store.classes(m) for m in models):
            return None
    except ConformanceInputError:
        return None  # the items report the unreadable set
    record = shlex.join(["conformance", "record", "--golden-dir", str(settings.golden_dir),
                         *(["--cases", str(settings.cases_path)] if settings.cases_path
                           else [])])
    return (f"--golden-dir {settings.golden_dir}: holds no golden set of "
            f"{', '.join(models)} (--strict-golden); record them with: {record}")


def _machine_lines(machines: list[dict[str, Any]]) -> list[str]:
    """The header lines of the machine the workers measured (what a single process prints
    at the start), and a warning when the workers measured different identities."""
    from conformance.hardware import format_fingerprint
    from conformance.identity import Identity, format_identity

    first = machines[0]
    lines = format_fingerprint(first["fingerprint"])
    if first["identity"] is not None:
        lines += format_identity(Identity.from_dict(first["identity"]))
    digests = {(m["identity"] or {}).get("digest") for m in machines}
    if len(digests) > 1:
        lines.append(f"conformance: the {len(machines)} workers measured different identities "
                     f"({', '.join(sorted(str(d) for d in digests))}); the results file names "
                     "the first")
    return lines


def worker_environment(device: str, workers: Any, threads: int = 1) -> dict[str, str]:
    """What the processes of a CPU run need in their environment before torch loads OpenMP
    (the controller sets it for itself and its xdist workers).

    ``OMP_WAIT_POLICY=PASSIVE`` whenever the run's own threads can outnumber the cores they
    get: several workers, or ``--threads`` above 1 in one process. OpenMP threads that spin
    while they wait starve whatever else runs on the cores (another worker, a neighbour on a
    shared machine). Measured on a 2-core Intel Xeon VM, 24 generations of tiny-sd at
    ``--threads 2 -n 0``, whole runs, median of 3-4: with another process busy beside it,
    OpenMP's default took 50.8 s (up to 142 s) and passive waiting 19.4 s (up to 22 s); on
    the quiet machine the default took 13.7 s and passive 30.3 s. A shared CI machine is
    rarely quiet, so the run takes the policy without the 7x worst case; a value the user
    set (``OMP_WAIT_POLICY=ACTIVE`` on a dedicated machine) is kept. Waiting changes no
    bit. A single-threaded process keeps OpenMP's default (its invariance check's one
    ``threads-2`` generation is too short to matter either way)."""
    from conformance.devices import of_type

    if not any(kind.host_threads for kind in of_type(str(device))):
        return {}
    several = isinstance(workers, int) and workers >= 2
    if not several and not (isinstance(threads, int) and threads >= 2):
        return {}
    return {"OMP_WAIT_POLICY": "PASSIVE"}


_SUITE_FIXTURES = frozenset({"conformance_item", "conformance_model", "conformance_variant",
                             "conformance_relation", "conformance_vae",
                             "conformance_check", "conformance_session"})


class _Dormant:
    """Stands in for the suite in runs that did not ask for it (see ``pytest_configure``)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if self.config.stash.get(PLUGIN_KEY, None) is not None:
            return  # active: the session plugin parametrizes
        if _SUITE_FIXTURES.isdisjoint(metafunc.fixturenames):
            return
        _activate(self.config).pytest_generate_tests(metafunc)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """An xdist controller whose workers used ``diffusion_golden``: the first report
        that carries outcomes activates the run's plugin here (it writes the results)."""
        if self.config.stash.get(PLUGIN_KEY, None) is not None:
            return
        if getattr(report, _OUTCOMES_ATTR, None):
            _activate(self.config, fixture=True).pytest_runtest_logreport(report)


def pytest_unconfigure(config: pytest.Config) -> None:
    plugin = config.stash.get(PLUGIN_KEY, None)
    if plugin is not None:
        config.pluginmanager.unregister(plugin)
        del config.stash[PLUGIN_KEY]
    dormant = config.pluginmanager.get_plugin("conformance-dormant")
    if dormant is not None:
        config.pluginmanager.unregister(dormant)


# An outcome moves as an object inside a process; its JSON form (the results file's) only
# crosses from an xdist worker to the controller, and is read back there as untrusted input.
@pytest.hookimpl(wrapper=True)
def pytest_report_to_serializable(config: pytest.Config, report: Any) -> Generator[None, Any, Any]:
    data = yield
    if isinstance(data, dict):
        for attr in (_REPORT_ATTR, _OUTCOMES_ATTR):
            value = data.get(attr)
            if isinstance(value, Outcome):
                data[attr] = value.to_json()
            elif isinstance(value, list):
                data[attr] = [o.to_json() for o in value]
    return data


@pytest.hookimpl(wrapper=True)
def pytest_report_from_serializable(config: pytest.Config, data: Any) -> Generator[None, Any, Any]:
    report = yield
    nodeid = getattr(report, "nodeid", "")
    raw = getattr(report, _REPORT_ATTR, None)
    if isinstance(raw, dict):
        setattr(report, _REPORT_ATTR, Outcome.from_json(raw, nodeid))
    many = getattr(report, _OUTCOMES_ATTR, None)
    if isinstance(many, list):
        setattr(report, _OUTCOMES_ATTR, [Outcome.from_json(o, nodeid) for o in many])
    return report


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` for a conformance run: one worker per GPU with ``--device cuda`` / ``xpu``
    (each worker takes one device), else one per core divided by ``--threads`` (each worker
    pins that many threads). Other runs keep xdist's own choice."""
    if not _engaged(config):
        return None
    try:
        device = resolve("device", config.getoption("conformance_device", None), None)
        threads = resolve("threads", config.getoption("conformance_threads", None), None)
    except (ValueError, ConformanceInputError, pytest.UsageError):
        return None  # the option error is reported by pytest_configure
    from conformance.devices import for_device

    kind = for_device(str(device))
    if kind.worker_per_device:
        return max(1, kind.device_count()) if ":" not in str(device) else 1
    return max(1, usable_cores() // max(1, int(threads or 1)))


#: the name hypothesis registers its pytest plugin under (its ``pytest11`` entry point)
HYPOTHESIS_PLUGIN = "hypothesispytest"


def _set_aside_unused_hypothesis(config: pytest.Config) -> None:
    """Unregister hypothesis' pytest plugin when no test of the run imported hypothesis.

    That plugin's terminal summary imports hypothesis to look for observability files, in
    every run: about 1 s at the end of a conformance run (pytest also rewrites the asserts
    of its 70 modules), after the last test. A run in which nothing imported hypothesis has
    nothing for it to report. Called in ``pytest_sessionfinish``, which pytest's terminal
    reporter runs before the summary."""
    if "hypothesis" in sys.modules:
        return
    plugin = config.pluginmanager.get_plugin(HYPOTHESIS_PLUGIN)
    if plugin is not None:
        config.pluginmanager.unregister(plugin)


def _settings(config: pytest.Config) -> Settings:
    def get(name: str) -> Any:
        opt = OPTION_BY_NAME[name]
        ini = config.getini(opt.dest) if opt.ini else None
        ini_dir = config.inipath.parent if config.inipath else None
        return resolve(name, config.getoption(opt.dest), ini or None, ini_dir)

    return Settings(
        device=get("device"),
        threads=get("threads"),
        models=get("model"),
        precisions=get("precision"),
        resolutions=get("resolution"),
        golden_dir=Path(get("golden-dir")),
        cases_path=get("cases"),
        tolerances_path=get("tolerances"),
        reference_class=get("reference-class"),
        record=get("record"),
        force=get("force"),
        results_path=Path(get("results")),
        deviations_path=get("deviations"),
        save_images=get("save-images"),
        localize=get("localize"),
        probes=get("probes"),
        probe_inputs=get("probe-inputs"),
        strict_golden=get("strict-golden"),
    )


def _worker_device(device: str, config: pytest.Config) -> str:
    """Under xdist, ``--device cuda`` puts worker ``gwN`` on GPU ``N % count``."""
    from conformance.devices import for_device

    workerinput = getattr(config, "workerinput", None)
    kind = for_device(device)
    if ":" in device or workerinput is None or not kind.worker_per_device:
        return device
    index = int(workerinput["workerid"].removeprefix("gw"))
    return f"{device}:{index % max(kind.device_count(), 1)}"


class ConformancePlugin:
    """Per-run state; the heavy :class:`ConformanceSession` is created on first use."""

    def __init__(
        self,
        config: pytest.Config,
        settings: Settings,
        cases: CaseSet,
        deviations: list[Deviation],
    ) -> None:
        self.config = config
        self.settings = settings
        self.cases = cases
        self.deviations = deviations
        self.used_deviations: set[int] = set()
        self._session: ConformanceSession | None = None
        self.outcomes: list[Outcome] = []
        self.worker_stats: list[dict[str, Any]] = []
        self.started = time.perf_counter()
        self.started_at = now_utc()
        #: what each xdist worker measured of the machine (class, fingerprint, identity)
        self.worker_machines: list[dict[str, Any]] = []
        self.results_path: Path | None = None
        self._shared_dir: str | None = None
        self.xfailed: set[tuple[str, Check, str | None]] = set()
        #: goldens that no item of the case file makes (found at session finish)
        self.orphans: list[Any] = []
        #: ``diffusion_golden`` goldens no check of this run used
        self.unused: list[Any] = []
        #: the workers' notices (:meth:`_notices`), and why the results file was not written
        self.worker_notices: list[str] = []
        self.results_error = ""

    @property
    def is_worker(self) -> bool:
        return hasattr(self.config, "workerinput")

    @property
    def session(self) -> ConformanceSession:
        if self._session is None:
            with long_lived():  # torch, diffusers and the probe battery: kept to the end
                self._session = self._open_session()
            self._session.rootdir = self.config.rootpath
        return self._session

    def _open_session(self) -> ConformanceSession:
        from dataclasses import replace

        from conformance.gencache import WORKER_KEY, SharedGenerations
        from conformance.generate import Runner, configure_torch
        from conformance.hardware import command_line, detect_class, fingerprint
        from conformance.identity import measure

        device = _worker_device(self.settings.device, self.config)
        configure_torch(self.settings.threads, deterministic=True, device=device)
        settings = replace(self.settings, device=device)
        fp = fingerprint(device, self.settings.threads)
        workerinput = getattr(self.config, "workerinput", {})
        shared_dir = workerinput.get(WORKER_KEY)
        # a worker's own argv is xdist's ("-c"): a golden names the command the user ran
        main_argv = workerinput.get("mainargv")
        return ConformanceSession(
            settings,
            detect_class(device),
            fp,
            Runner(device),
            identity=measure(device, fp),
            shared=SharedGenerations(shared_dir) if shared_dir else None,
            command=command_line(main_argv) if main_argv else None,
        )

    def engaged(self) -> bool:
        """Whether this run is a conformance run (for the report header)."""
        return _engaged(self.config)

    def _all_stats(self) -> list[dict[str, Any]]:
        """Runner stats of every process that generated (workers, or this process)."""
        parts = list(self.worker_stats)
        if self._session is not None and self._session.runner.stats.loads:
            parts.append(self._session.stats())
        return parts

    # -- hooks -------------------------------------------------------------------------
    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist controller: every worker gets the run's shared generation folder."""
        from conformance.gencache import WORKER_KEY

        if self._shared_dir is None:
            import tempfile

            self._shared_dir = tempfile.mkdtemp(prefix="conformance-generations-")
        node.workerinput[WORKER_KEY] = self._shared_dir

    @pytest.hookimpl(optionalhook=True, tryfirst=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        """``--dist loadgroup``: the conformance scheduler (conformance/schedule.py), which
        keeps each pipeline on one worker and hands out a group once its fp32 reference
        is made. Other ``--dist`` modes keep xdist's own."""
        if config.getvalue("dist") != "loadgroup":
            return None
        from conformance.checks import schedule_params
        from conformance.schedule import make_scheduler, plan_params

        return make_scheduler(config, log, plan_params(schedule_params(self.context())))

    @property
    def is_controller(self) -> bool:
        """An xdist controller: its workers generate and measure; it imports no torch."""
        workers = getattr(self.config.option, "numprocesses", None)
        return not self.is_worker and isinstance(workers, int) and workers > 0 and (
            getattr(self.config.option, "dist", "no") != "no")

    def pytest_report_header(self, config: pytest.Config) -> list[str] | None:
        if not self.engaged() or self.is_worker:
            return None
        from conformance.hardware import format_fingerprint
        from conformance.identity import format_identity

        if self.is_controller:  # the workers measure the machine: the summary names it
            from conformance.golden import GoldenStore
            from conformance.session import golden_provenance

            st = self.settings
            return [
                f"conformance: device={st.device} threads={st.threads} (class, identity and "
                "fingerprint: measured by the workers, printed in the summary)",
                f"conformance: golden dir {st.golden_dir}, reference class "
                f"{st.reference_class}, cases {self.cases.path}"
                + (" [recording]" if st.record else ""),
                *golden_provenance(GoldenStore(st.golden_dir), [
                    i.model for i in self.cases.items(st.models, st.precisions, st.resolutions)]),
            ]
        s = self.session
        lines = format_fingerprint(s.fingerprint)
        if s.identity is not None:
            lines += format_identity(s.identity)
        if not _collects_suite(config):  # only tests of one's own (diffusion_golden)
            return [*lines, f"conformance: diffusion_golden goldens in {self.fixture_root()}"
                    + (" [recording]" if s.settings.record else "")]
        lines.append(
            f"conformance: golden dir {s.settings.golden_dir}, reference class "
            f"{s.settings.reference_class}, cases {s.cases.path}"
            + (" [recording]" if s.settings.record else "")
        )
        lines += s.golden_provenance()
        return lines

    def context(self) -> Context:
        """What the check kinds parametrize from: the case file and the run's filters."""
        return Context(self.cases, self.settings)

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        s = self.settings
        if "conformance_model" in metafunc.fixturenames:
            models = dict.fromkeys(
                i.model for i in self.cases.items(s.models, s.precisions, s.resolutions)
            )
            metafunc.parametrize("conformance_model", list(models))
        marker = metafunc.definition.get_closest_marker("conformance_check")
        if not marker or not marker.args:
            return
        try:
            kind = check_kind(str(marker.args[0]))
        except ValueError as exc:  # one line naming the test, no traceback
            raise pytest.Collector.CollectError(
                f"{metafunc.definition.nodeid}: conformance_check: {exc}") from None
        if kind.argnames[0] not in metafunc.fixturenames:
            return
        params = kind.params(self.context(), *marker.args[1:])
        if not params and not kind.may_be_empty:
            raise pytest.UsageError(
                f"no conformance items in {self.cases.path} match the filters "
                f"(--model {s.models}, --precision {s.precisions}, "
                f"--resolution {[str(r) for r in s.resolutions or []] or None})"
            )
        # a test of a case file item is marked as one, in the item's xdist group
        metafunc.parametrize(kind.argnames, [
            pytest.param(*p.values, id=p.id, marks=[] if p.item is None else [
                pytest.mark.conformance, pytest.mark.xdist_group(p.group)])
            for p in params])

    def _filtered_out(self, test: pytest.Item) -> bool:
        """Whether a collected test of the suite is outside this run, as its check kind
        says: an empty parameter set (a compare test without relations, a check whose
        filters left it no item), a VAE check of another model or precision."""
        name = _check_kind(test)
        if name is None or not hasattr(test, "fixturenames"):
            return False
        kind = _kind(name, test.nodeid)
        if kind.argnames[0] not in test.fixturenames:
            return False
        callspec = getattr(test, "callspec", None)
        return kind.deselect(callspec.params if callspec is not None else {}, self.context())

    def pytest_collection_modifyitems(self, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        """Known deviations become xfail / skip marks here, and only here. A case file
        without ``[compare.*]`` relations has no compare test (not a skipped one), a check
        the filters leave no item to has none (not a ``[NOTSET]`` one), and the VAE checks
        follow ``--model`` and ``--precision`` too."""
        idle = [t for t in items if self._filtered_out(t)]
        if idle:
            items[:] = [t for t in items if t not in idle]
            config.hook.pytest_deselected(items=idle)
        if not self.deviations:
            return
        if self._session is not None:
            hardware_class = self.session.hardware_class.name
            identity = self.session.identity
            features = identity.features if identity is not None else None
        else:  # the class and the features only: no probe battery, no model library
            from conformance.devices import for_device
            from conformance.hardware import detect_class

            device = _worker_device(self.settings.device, self.config)
            hardware_class = detect_class(device).name
            features = for_device(device).features(device)
        for test in items:
            check = _check_kind(test)
            callspec = getattr(test, "callspec", None)
            item = callspec.params.get("conformance_item") if callspec else None
            if check is None or not isinstance(item, Item):  # e.g. an empty parameter set
                continue
            # named by its ids and checks, whatever machine it is written for
            self.used_deviations.update(d.index for d in self.deviations
                                        if d.names(item.id, check))
            dev = match(self.deviations, hardware_class, item.id, check, features)
            if dev is None:
                continue
            reason = f"known deviation on {hardware_class}: {dev.reason}"
            mark = pytest.mark.xfail(reason=reason) if dev.action == "xfail" else (
                pytest.mark.skip(reason=reason))
            test.add_marker(mark)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        outcome = item.stash.get(OUTCOME_KEY, None)
        if outcome is not None and report.when == "call":
            setattr(report, _REPORT_ATTR, outcome)
        own = item.stash.get(OUTCOMES_KEY, None)
        if own and report.when == "call":
            setattr(report, _OUTCOMES_ATTR, list(own))
        return report

    def pytest_report_teststatus(
        self, report: pytest.TestReport, config: pytest.Config
    ) -> tuple[str, str, str] | None:
        outcome = getattr(report, _REPORT_ATTR, None)
        if outcome and report.when == "call" and outcome.status is Status.RECORDED:
            return "recorded", "R", "RECORDED"
        own = getattr(report, _OUTCOMES_ATTR, None)
        if (own and report.when == "call" and report.passed
                and any(o.status is Status.RECORDED for o in own)):
            return "recorded", "R", "RECORDED"
        return None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        outcome = getattr(report, _REPORT_ATTR, None)
        if outcome and report.when == "call":
            self.outcomes.append(outcome)
            if hasattr(report, "wasxfail"):  # a known deviation: pytest counts it xfailed
                self.xfailed.add((outcome.id, outcome.check, outcome.variant))
        if report.when == "call":
            self.outcomes.extend(getattr(report, _OUTCOMES_ATTR, None) or ())

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        output = getattr(node, "workeroutput", {})
        raw = output.get("conformance_stats")
        if raw:
            self.worker_stats.append(json.loads(raw))
        machine = output.get("conformance_machine")
        if machine:
            self.worker_machines.append(json.loads(machine))
        self.worker_notices += output.get("conformance_notices", ())
        # deviations are applied where collection happens: on the workers
        self.used_deviations.update(output.get("conformance_deviations", ()))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        _set_aside_unused_hypothesis(self.config)
        if self._shared_dir is not None:
            import shutil

            shutil.rmtree(self._shared_dir, ignore_errors=True)
            self._shared_dir = None
        if self.is_worker:
            self.config.workeroutput["conformance_deviations"] = sorted(  # type: ignore[attr-defined]
                self.used_deviations)
            self.config.workeroutput["conformance_notices"] = self._notices()  # type: ignore[attr-defined]
            if self._session is not None:
                self.config.workeroutput["conformance_stats"] = json.dumps(  # type: ignore[attr-defined]
                    self._session.stats()
                )
                self.config.workeroutput["conformance_machine"] = json.dumps(  # type: ignore[attr-defined]
                    self._session.machine())
            return
        if not self.outcomes:
            return
        self.orphans = self._orphans()
        self.unused = self._unused_fixture_goldens()
        if self.orphans and self.settings.strict_golden:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        from conformance.session import write_results

        stats = merge_stats(self._all_stats())
        wall = time.perf_counter() - self.started
        try:
            if self.is_controller and self.worker_machines:
                self.results_path = write_results(
                    self.settings.results_path, self.outcomes, self.worker_machines[0],
                    self.started_at, stats, wall)
            else:
                self.results_path = self.session.write_results(self.outcomes, stats, wall)
        except ConformanceInputError as exc:  # a full disk at the end: one line, rc 1
            self.results_error = f"results not written: {exc}"
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def fixture_root(self) -> Path:
        """Where the ``diffusion_golden`` goldens live: the folder ``--golden-dir`` (or its
        ini key or environment variable) names, else ``golden/`` under the rootdir; never
        the installed package's."""
        opt = OPTION_BY_NAME["golden-dir"]
        given = (self.config.getoption(opt.dest, None) or self.config.getini(opt.dest)
                 or os.environ.get("CONFORMANCE_GOLDEN_DIR"))
        return Path(self.settings.golden_dir) if given else self.config.rootpath / "golden"

    def fixture_check(self, node: pytest.Item, golden: Any, name: str, item: Item,
                      generation: Any, pipe: Any = None, rerun: Any = None) -> Outcome:
        """One ``diffusion_golden`` check: the outcome, kept for the report; a failure,
        an error or a missing golden fails the test (with the command to reproduce or to
        record)."""
        __tracebackhide__ = True
        from dataclasses import replace

        from conformance.fixture import UserRunner

        root = self.fixture_root()
        if self.settings.record:
            from conformance.options import check_record_target

            problem = check_record_target(root)
            if problem:
                raise pytest.UsageError(problem)
        base = self.session
        runner = None if pipe is None else UserRunner(base.runner, pipe, rerun)
        session = base.for_fixture(root, runner)
        session._generations[item.id] = generation
        outcome = session.evaluate(item, Check.FIXTURE, golden.nodeid)
        outcome = replace(outcome, id=f"{golden.nodeid}/{name}")
        node.stash.setdefault(OUTCOMES_KEY, []).append(outcome)
        return conclude(check_kind(Check.FIXTURE), outcome, golden.nodeid)

    def _unused_fixture_goldens(self) -> list[Any]:
        """``diffusion_golden`` goldens of the modules this run checked that no check of
        the run used (deselected tests, renamed or removed names)."""
        from conformance.golden import GoldenStore
        from conformance.report.summary import orphans

        mine = [o for o in self.outcomes if o.check is Check.FIXTURE]
        if not mine:
            return []
        store = GoldenStore(self.fixture_root())
        used = {f"{o.model}/{o.case}/{o.resolution}/{o.precision}" for o in mine}
        return orphans({str(store.set_dir(model, cls)): list(manifest.entries)
                        for model, cls, manifest in store.readable_sets(o.model for o in mine)},
                       used)

    def _notices(self) -> list[str]:
        """What this process repaired on the way (a rebuilt cache file, an adopted PNG of an
        interrupted record): said once in the summary, as each was also said on stderr."""
        from conformance.generate import CACHE_NOTICES

        store = self._session.store.notices if self._session is not None else []
        return [*CACHE_NOTICES, *store]

    def _orphans(self) -> list[Any]:
        """Goldens of the run's models, precisions and resolutions that no item of the case
        file makes (only for runs that checked goldens: own-class outcomes)."""
        from conformance.golden import GoldenStore
        from conformance.report.summary import orphans

        if not any(o.check is Check.OWN_CLASS for o in self.outcomes):
            return []
        s = self.settings
        items = self.cases.items(s.models, s.precisions, s.resolutions)
        resolutions = {str(r) for r in s.resolutions} if s.resolutions else None
        store = GoldenStore(s.golden_dir)
        sets = {str(store.set_dir(model, cls)): [
            e.id for e in manifest.entries.values()
            if (s.precisions is None or e.precision in s.precisions)
            and (resolutions is None or e.resolution in resolutions)]
            for model, cls, manifest in store.readable_sets(i.model for i in items)}
        return orphans(sets, {i.id for i in items})

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker or not self.outcomes:
            return
        tr = terminalreporter
        tr.section("conformance")
        if self.is_controller and self.worker_machines:
            for line in _machine_lines(self.worker_machines):
                tr.write_line(line)
        from conformance.report.summary import check_lines, missing_lines, orphan_lines

        for line in check_lines(self.outcomes, self.xfailed):
            tr.write_line(line)
        for line in missing_lines(self.outcomes, self.settings.strict_golden):
            tr.write_line(line)
        for line in orphan_lines(self.orphans, str(self.cases.path),
                                 self.settings.strict_golden):
            tr.write_line(line, red=self.settings.strict_golden)
        if self.unused:
            from conformance.report.summary import unused_lines

            for line in unused_lines(self.unused, str(self.fixture_root())):
                tr.write_line(line)
        st = merge_stats(self._all_stats())
        table = fidelity_markdown(fidelity_rows(self.outcomes, st["denoiser_bytes"]))
        if table:
            tr.write_line("precision against fp32 on this device (means over cases):")
            for line in table.splitlines():
                tr.write_line(line)
        table = compare_markdown(self.outcomes)
        if table:
            tr.write_line("model against model (same prompt and seed; against the base case):")
            for line in table.splitlines():
                tr.write_line(line)
        if st["model_loads"] or st["generations"]:
            tr.write_line(
                f"model loads: {st['model_loads']} ({st['load_seconds']:.1f} s), generations: "
                f"{st['generations']} ({st['generate_seconds']:.1f} s in pipeline calls), "
                f"reused from another process: {st['reused']}, processes: {st['processes']}"
            )
        if self.results_path:
            tr.write_line(f"results: {self.results_path}")
        if self.results_error:
            tr.write_line(self.results_error, red=True)
        for line in dict.fromkeys([*self._notices(), *self.worker_notices]):
            tr.write_line(line)
        # an entry whose ids and checks name no test of a whole run is stale (a renamed or
        # removed case); one written for another machine is not. The packaged deviations
        # are written for the packaged cases: with a case file of one's own they are not
        # reported unless the file was named; a filtered run (--model, -k ...) says nothing
        s = self.settings
        whole_run = not (s.models or s.precisions or s.resolutions
                         or self.config.getoption("keyword", "")
                         or self.config.getoption("markexpr", ""))
        report_unused = whole_run and (s.deviations_path is not None
                                       or s.cases_path is None) and any(
            o.check is not Check.FIXTURE for o in self.outcomes)
        for dev in self.deviations if report_unused else ():
            if dev.index not in self.used_deviations:
                tr.write_line(
                    f"{s.deviations_path or DEFAULT_DEVIATIONS}: {dev.describe()} names no "
                    "collected test (a renamed or removed case?)"
                )


def _check_kind(test: pytest.Item | Any) -> str | None:
    marker = test.get_closest_marker("conformance_check")
    return str(marker.args[0]) if marker and marker.args else None


def conclude(kind: CheckKind, outcome: Outcome, nodeid: str) -> Outcome:
    """The test's end from its check's outcome: a failure or an error fails it (as its
    kind words it: the message and the command to reproduce it), a skip skips it."""
    __tracebackhide__ = True
    if outcome.status in (Status.FAILED, Status.ERROR):
        pytest.fail(kind.failure(outcome, nodeid), pytrace=False)
    if outcome.status is Status.SKIPPED:
        pytest.skip(outcome.message)
    return outcome


def _kind(name: str, nodeid: str) -> CheckKind:
    """The registry's kind of a ``conformance_check`` mark; an unknown name is a usage
    error naming the test and the known kinds."""
    try:
        return check_kind(name)
    except ValueError as exc:
        raise pytest.UsageError(f"{nodeid}: conformance_check: {exc}") from None


# -- fixtures ---------------------------------------------------------------------------
def _plugin(config: pytest.Config) -> ConformancePlugin:
    return config.stash[PLUGIN_KEY]


@pytest.fixture(scope="session")
def conformance_session(pytestconfig: pytest.Config) -> ConformanceSession:
    """The process's :class:`~conformance.session.ConformanceSession`."""
    return _plugin(pytestconfig).session


@pytest.fixture
def conformance_item(request: pytest.FixtureRequest) -> Item:
    """The conformance item this test runs (parametrized from the case file)."""
    return request.param


@pytest.fixture
def conformance_model(request: pytest.FixtureRequest) -> str:
    """A model of the case file (after the filters): per-model checks run once for each."""
    return request.param


@pytest.fixture
def conformance_relation(request: pytest.FixtureRequest) -> str:
    """The ``[compare.NAME]`` relation a compare test checks its item in."""
    return request.param


@pytest.fixture
def conformance_vae(request: pytest.FixtureRequest) -> Any:
    """The VAE check this test runs (a :class:`~conformance.checks.vae.VaeItem`)."""
    return request.param


@pytest.fixture
def conformance_variant(request: pytest.FixtureRequest) -> str:
    """The invariance variant this test applies (see conformance.generate.VARIANTS)."""
    return request.param


@pytest.fixture
def diffusion_golden(request: pytest.FixtureRequest) -> Any:
    """Golden checks of one's own pipeline code: ``diffusion_golden.check(image, name=...)``
    and ``diffusion_golden.generate(pipe, name=..., seed=..., **call_kwargs)`` (see
    :mod:`conformance.fixture`). A missing golden fails; ``--record`` records it."""
    from conformance.fixture import DiffusionGolden

    try:
        plugin = _activate(request.config, fixture=True)
    except pytest.UsageError as exc:
        pytest.fail(f"diffusion_golden: {exc}", pytrace=False)
    # before the test's own code runs: torch's threads pinned (--threads), deterministic
    # algorithms on, this machine's identity measured
    plugin.session  # noqa: B018
    node = request.node

    def evaluate(golden: Any, name: str, item: Item, generation: Any, pipe: Any = None,
                 rerun: Any = None) -> Outcome:
        __tracebackhide__ = True
        return plugin.fixture_check(node, golden, name, item, generation, pipe, rerun)

    try:  # the module's place beside its goldens, whatever the run's rootdir
        module = os.path.relpath(node.path, plugin.fixture_root().resolve().parent)
    except (ValueError, OSError):  # another drive
        module = None
    return DiffusionGolden(node.nodeid, plugin.settings.device, evaluate, module=module)


@pytest.fixture
def conformance_check(
    request: pytest.FixtureRequest, conformance_session: ConformanceSession
) -> Callable[..., Outcome]:
    """Run the test's check (its ``conformance_check`` mark) and map the outcome to
    pass / fail / skip."""
    kind = _check_kind(request.node)
    if kind is None:
        raise pytest.UsageError(
            f"{request.node.nodeid}: uses conformance_check without a "
            "@pytest.mark.conformance_check(kind) mark"
        )

    check_of = _kind(kind, request.node.nodeid)

    def check(item: Any, variant: str | None = None) -> Outcome:
        __tracebackhide__ = True
        outcome = conformance_session.evaluate(
            item, check_of.check, request.node.nodeid, variant=variant
        )
        request.node.stash[OUTCOME_KEY] = outcome
        return conclude(check_of, outcome, request.node.nodeid)

    return check
