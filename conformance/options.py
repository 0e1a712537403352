"""Command-line options, defined once for the pytest plugin and the ``conformance`` command.

Each option's ``type`` function rejects bad values at parse time with a message that names
the value and what is accepted (argparse prefixes the flag). :func:`resolve` applies
command line > ini file > default in one place. :func:`check_results_target` and
:func:`check_record_target` check, before any work, that what a run will write can be
written.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance import PACKAGE_DIR, PROJECT_ROOT
from conformance.cases import Resolution
from conformance.hardware import DEVICE_FORMS, HardwareClass, parse_device
from conformance.models import MODELS
from conformance.precision import PRECISIONS
from conformance.safeio import os_reason, regular_file_problem, show, writable_problem
from conformance.schema import integer_text, text_problem

MAX_THREADS = 1024
#: the longest value any option takes (a comma list of every model, a long path)
MAX_VALUE = 4096
MAX_LIST = 64


def _text(text: str, what: str) -> str:
    """One line of printable text (no control characters, at most MAX_VALUE long)."""
    problem = text_problem(text, what, MAX_VALUE)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def _device(text: str) -> str:
    _text(text, "the device")
    if not text.isascii():
        raise argparse.ArgumentTypeError(
            f"{show(text)} is not a device; write it in ASCII, e.g. cpu, cuda:0"
        )
    try:
        return parse_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _threads(text: str) -> int:
    threads = integer_text(text, 1, MAX_THREADS)
    if threads is None:
        raise argparse.ArgumentTypeError(
            f"{show(text)} is not a thread count; use an integer 1..{MAX_THREADS} in digits 0-9"
        )
    return threads


def _split(text: str, what: str) -> list[str]:
    values = [v.strip(" ") for v in _text(text, f"the {what} list").split(",")]
    values = [v for v in values if v]
    if len(values) > MAX_LIST:
        raise argparse.ArgumentTypeError(
            f"{len(values)} {what} values; at most {MAX_LIST}"
        )
    for v in values:
        if values.count(v) > 1:
            raise argparse.ArgumentTypeError(f"{what} list names {show(v)} twice")
    return values


def _choice_list(choices: dict[str, Any], what: str) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        values = tuple(_split(text, what))
        if not values:
            raise argparse.ArgumentTypeError(f"empty {what} list; accepted: {', '.join(choices)}")
        for v in values:
            if v not in choices:
                raise argparse.ArgumentTypeError(
                    f"unknown {what} {show(v)}; accepted: {', '.join(choices)}"
                )
        return values

    return parse


_MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")


def _model_list(text: str) -> tuple[str, ...]:
    """Model names: the built-ins or a case file's own (the case file is read later; a name
    no case uses is reported then, with the names the cases use)."""
    values = tuple(_split(text, "model"))
    if not values:
        raise argparse.ArgumentTypeError(f"empty model list; built-in: {', '.join(MODELS)}")
    for v in values:
        if not _MODEL_NAME.fullmatch(v):
            raise argparse.ArgumentTypeError(
                f"{show(v)} is not a model name (lower-case letters, digits and '-'); "
                f"built-in: {', '.join(MODELS)}, or a [models.NAME] of the case file")
    return values


def _resolutions(text: str) -> tuple[Resolution, ...]:
    values = _split(text, "resolution")
    if not values:
        raise argparse.ArgumentTypeError("empty resolution list; write e.g. 64x64,96x96")
    try:
        parsed = tuple(Resolution.parse(v) for v in values)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if len(set(parsed)) != len(parsed):
        raise argparse.ArgumentTypeError("the resolution list names one resolution twice")
    return parsed


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _boolean(text: str) -> bool:
    value = _text(text, "value").strip(" ").lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(
        f"{show(text)} is not a boolean; write one of {', '.join(_TRUE + _FALSE)}")


def _hardware_class(text: str) -> str:
    _text(text, "the hardware class")
    try:
        return HardwareClass(text.strip(" ")).name
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _path(text: str, what: str) -> Path:
    if not isinstance(text, str) or not text.strip(" "):
        raise argparse.ArgumentTypeError(f"empty {what} path")
    if "\x00" in text:
        raise argparse.ArgumentTypeError(f"{show(text)}: the path contains a NUL character")
    return Path(_text(text, f"the {what} path"))


def _existing_file(text: str) -> Path:
    path = _path(text, "file")
    problem = regular_file_problem(path)
    if problem:
        raise argparse.ArgumentTypeError(f"{show(text)} is not an existing file ({problem})")
    return path


def _directory(text: str) -> Path:
    path = _path(text, "directory")
    try:
        if path.exists() and not path.is_dir():
            raise argparse.ArgumentTypeError(f"{show(text)} exists and is not a directory")
    except OSError as exc:  # a name too long for the file system, ...
        raise argparse.ArgumentTypeError(f"{show(text)}: {os_reason(exc)}") from None
    return path


def _results_file(text: str) -> Path:
    path = _path(text, "results")
    try:
        is_dir = path.is_dir()
    except OSError as exc:  # a name too long for the file system, ...
        raise argparse.ArgumentTypeError(f"{show(text)}: {os_reason(exc)}") from None
    if is_dir:
        raise argparse.ArgumentTypeError(
            f"{show(text)} is a directory; give a file path, e.g. {path / 'results.json'}"
        )
    return path


@dataclass(frozen=True)
class Option:
    name: str  # flag without dashes, e.g. "device"
    help: str
    type: Callable[[str], Any] | None = None
    default: Any = None
    flag: bool = False
    metavar: str | None = None
    ini: bool = False

    @property
    def dest(self) -> str:
        return "conformance_" + self.name.replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    Option("device", f"device to generate on: {DEVICE_FORMS} (default: cpu)",
           _device, "cpu", metavar="DEV", ini=True),
    Option("threads", "torch intra-op threads per process (default: 1); thread count changes "
           "the bits on CPU", _threads, 1, metavar="N", ini=True),
    Option("model", "only these models (comma list): built-in " + ", ".join(MODELS)
           + ", or a [models.NAME] of the case file", _model_list, metavar="LIST"),
    Option("precision", "only these precisions (comma list): " + ", ".join(PRECISIONS),
           _choice_list(PRECISIONS, "precision"), metavar="LIST"),
    Option("resolution", "only these resolutions (comma list of WxH, e.g. 64x64)",
           _resolutions, metavar="LIST"),
    Option("golden-dir", "golden store root (default: the project's golden/)", _directory,
           PROJECT_ROOT / "golden", metavar="DIR", ini=True),
    Option("cases", "case file (TOML; default: the packaged conformance/cases.toml)",
           _existing_file, None, metavar="FILE", ini=True),
    Option("tolerances", "tolerance file (TOML; default: conformance/tolerances.toml)",
           _existing_file, None, metavar="FILE", ini=True),
    Option("deviations", "known-deviations file (TOML; default: conformance/deviations.toml)",
           _existing_file, None, metavar="FILE", ini=True),
    Option("reference-class", "hardware class every other class is compared with at the "
           "perceptual tier (default: cpu-amd-default+bf16)", _hardware_class,
           "cpu-amd-default+bf16", metavar="CLASS", ini=True),
    Option("record", "record missing goldens for this machine's hardware class (existing "
           "ones are checked, not replaced)", flag=True),
    Option("force", "with --record: replace existing goldens", flag=True),
    Option("strict-golden", "a missing golden fails instead of skipping, as does an empty "
           "--golden-dir and a golden no case of the case file makes any more (ini: "
           "conformance_strict_golden = true)", _boolean, flag=True, ini=True),
    Option("save-images", "write actual / golden / diff images for every item, not only "
           "failures (for the matrix report)", flag=True),
    Option("localize", "where the bits of two runs part, name the first divergent module: "
           "for repeatable, invariance and fidelity checks both sides are generated again "
           "with forward hooks on every module (conformance.localize); for golden checks, "
           "this machine's run is probed against the golden's stored probes (--probes)",
           flag=True),
    Option("probes", "with --record: store each golden's module probes of denoising step 0 "
           "beside it (<stem>.probes.json.gz), so --localize on another machine names the "
           "first module whose bits differ from this one's", flag=True),
    Option("probe-inputs", "with --record --probes: also store the denoiser's step-0 input "
           "(<stem>.inputs.safetensors, at most 4 MiB), so --localize elsewhere replays it "
           "there: does that denoiser compute differently, or was only its input different",
           flag=True),
    Option("results", "results JSON to write (default: conformance-results/results.json); "
           "failure images go to an artifacts/ folder beside it", _results_file,
           Path("conformance-results") / "results.json", metavar="PATH", ini=True),
)

OPTION_BY_NAME = {o.name: o for o in OPTIONS}


def add_options(addoption: Callable[..., Any], prefix: str = "--") -> None:
    """Register every option through ``addoption`` (pytest group or argparse parser)."""
    for opt in OPTIONS:
        if opt.flag:
            addoption(prefix + opt.name, action="store_true", default=False, dest=opt.dest,
                      help=opt.help)
        else:
            addoption(prefix + opt.name, type=opt.type, default=None, dest=opt.dest,
                      metavar=opt.metavar, help=opt.help)


#: options that name a file or folder: an ini file's relative value is relative to the ini
#: file (as pytest's own ``testpaths`` are), not to the folder pytest was started in
PATH_OPTIONS = frozenset({"golden-dir", "cases", "tolerances", "deviations", "results"})


def resolve(name: str, cli_value: Any, ini_value: str | None,
            ini_dir: Path | None = None) -> Any:
    """command line > ini > environment (``CONFORMANCE_<NAME>``) > default; a relative path
    in the ini file is taken relative to ``ini_dir`` (the ini file's folder)."""
    opt = OPTION_BY_NAME[name]
    if opt.flag and (cli_value or not opt.ini):
        return bool(cli_value)
    if opt.flag:
        cli_value = None  # not given: the ini file or the environment decides
    if cli_value is not None:
        return cli_value
    env = os.environ.get("CONFORMANCE_" + name.upper().replace("-", "_"))
    if ini_value and ini_dir is not None and name in PATH_OPTIONS:
        stripped = ini_value.strip(" ")
        if stripped and "\x00" not in stripped and not Path(stripped).is_absolute():
            ini_value = str(ini_dir / stripped)
    for source, text in (("ini", ini_value), ("env", env)):
        if text:
            try:
                return opt.type(text) if opt.type else text
            except argparse.ArgumentTypeError as exc:
                where = (
                    f"ini option conformance_{name.replace('-', '_')}"
                    if source == "ini"
                    else f"environment variable CONFORMANCE_{name.upper().replace('-', '_')}"
                )
                raise ValueError(f"{where}: {exc}") from None
    return bool(opt.default) if opt.flag else opt.default


def _creatable_dir(folder: Path) -> str | None:
    """Why ``folder`` cannot be used or created to write files in, or ``None``."""
    probe = folder
    while True:
        try:
            if probe.exists() or probe.is_symlink():
                break
        except (OSError, ValueError) as exc:
            return f"cannot inspect {probe} ({exc})"
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        what = "a file" if probe.is_file() else "not a directory"
        return f"cannot create {folder}: {probe} is {what}"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"cannot write in {probe}: permission denied"
    return None


def check_results_target(path: str | os.PathLike[str]) -> str | None:
    """Why the results JSON cannot be written at ``path`` (with ``artifacts/`` beside it),
    or ``None``. Call it before the run starts: nothing is created."""
    target = Path(path)
    flag = f"--results {target}"
    if target.is_dir():
        return f"{flag}: is a directory; give a file path, e.g. {target / 'results.json'}"
    if target.exists() or target.is_symlink():
        problem = regular_file_problem(target)
        if problem:
            return f"{flag}: {problem}; give the path of a regular file to write"
        if not os.access(target, os.W_OK):
            return f"{flag}: the file is not writable"
    problem = _creatable_dir(target.parent)
    if problem:
        return f"{flag}: {problem}"
    artifacts = target.parent / "artifacts"
    if artifacts.exists() and not artifacts.is_dir():
        return f"{flag}: {artifacts} (where failure images go) exists and is not a directory"
    problem = writable_problem(target)  # a file can really be made there (not /proc ...)
    return f"{flag}: {problem}" if problem else None


def check_golden_dir(golden_dir: str | os.PathLike[str], record: bool) -> str | None:
    """Why a run cannot read goldens from ``golden_dir``, or ``None``: a folder that does
    not exist is a typo unless the run records into it."""
    root = Path(golden_dir)
    if record or root.is_dir():
        return None
    if root.exists() or root.is_symlink():
        return f"--golden-dir {root}: is not a directory"
    return (f"--golden-dir {root}: does not exist; give the folder of your golden sets, or "
            "create it by recording with --record")


def is_packaged(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` is (inside) the installed package's copy of the project's files
    (``conformance/_data``): read-only for the suite."""
    installed = PACKAGE_DIR / "_data"
    try:
        resolved = Path(folder).resolve()
    except (OSError, ValueError, RuntimeError):
        return False
    return resolved == installed or installed in resolved.parents


def check_record_target(golden_dir: str | os.PathLike[str]) -> str | None:
    """Why goldens cannot be recorded under ``golden_dir``, or ``None`` (nothing is
    created)."""
    root = Path(golden_dir)
    flag = f"--golden-dir {root}"
    if root.exists() and not root.is_dir():
        return f"{flag}: exists and is not a directory"
    if is_packaged(root):
        return (f"{flag}: is the installed package's copy of the project's golden sets; "
                "record into a folder of your own (`conformance init` writes a suite that "
                "does, or give --golden-dir DIR)")
    problem = _creatable_dir(root)
    return f"{flag}: {problem}" if problem else None
