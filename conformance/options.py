"""Command-line options, defined once for the pytest plugin and the ``conformance`` command.

Each option's ``type`` function rejects bad values at parse time with a message that names
the value and what is accepted (argparse prefixes the flag). :func:`resolve` applies
command line > ini file > default in one place.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance import PROJECT_ROOT
from conformance.cases import Resolution
from conformance.hardware import HardwareClass, parse_device
from conformance.models import MODELS
from conformance.precision import PRECISIONS


def _device(text: str) -> str:
    try:
        return parse_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _threads(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1 or value > 1024:
        raise argparse.ArgumentTypeError(f"{text!r} is not a thread count; use an integer >= 1")
    return value


def _choice_list(choices: dict[str, Any], what: str) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        values = tuple(v.strip() for v in text.split(",") if v.strip())
        if not values:
            raise argparse.ArgumentTypeError(f"empty {what} list; accepted: {', '.join(choices)}")
        for v in values:
            if v not in choices:
                raise argparse.ArgumentTypeError(
                    f"unknown {what} {v!r}; accepted: {', '.join(choices)}"
                )
        return values

    return parse


def _resolutions(text: str) -> tuple[Resolution, ...]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError("empty resolution list; write e.g. 64x64,96x96")
    try:
        return tuple(Resolution.parse(v) for v in values)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _hardware_class(text: str) -> str:
    try:
        return HardwareClass(text.strip()).name
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text!r} is not an existing file")
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
    Option("device", "device to generate on: cpu, cuda, cuda:N, mps, xpu (default: cpu)",
           _device, "cpu", metavar="DEV", ini=True),
    Option("threads", "torch intra-op threads per process (default: 1); thread count changes "
           "the bits on CPU", _threads, 1, metavar="N", ini=True),
    Option("model", "only these models (comma list): " + ", ".join(MODELS),
           _choice_list(MODELS, "model"), metavar="LIST"),
    Option("precision", "only these precisions (comma list): " + ", ".join(PRECISIONS),
           _choice_list(PRECISIONS, "precision"), metavar="LIST"),
    Option("resolution", "only these resolutions (comma list of WxH, e.g. 64x64)",
           _resolutions, metavar="LIST"),
    Option("golden-dir", "golden store root (default: the project's golden/)", Path,
           PROJECT_ROOT / "golden", metavar="DIR", ini=True),
    Option("cases", "case file (TOML; default: the packaged conformance/cases.toml)",
           _existing_file, None, metavar="FILE", ini=True),
    Option("tolerances", "tolerance file (TOML; default: conformance/tolerances.toml)",
           _existing_file, None, metavar="FILE", ini=True),
    Option("deviations", "known-deviations file (TOML; default: conformance/deviations.toml)",
           _existing_file, None, metavar="FILE", ini=True),
    Option("reference-class", "hardware class every other class is compared with at the "
           "perceptual tier (default: cpu-default)", _hardware_class, "cpu-default",
           metavar="CLASS", ini=True),
    Option("record", "record missing goldens for this machine's hardware class (existing "
           "ones are checked, not replaced)", flag=True),
    Option("force", "with --record: replace existing goldens", flag=True),
    Option("save-images", "write actual / golden / diff images for every item, not only "
           "failures (for the matrix report)", flag=True),
    Option("results", "results JSON to write (default: conformance-results/results.json); "
           "failure images go to an artifacts/ folder beside it", Path,
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


def resolve(name: str, cli_value: Any, ini_value: str | None) -> Any:
    """command line > ini > environment (``CONFORMANCE_<NAME>``) > default."""
    opt = OPTION_BY_NAME[name]
    if opt.flag:
        return bool(cli_value)
    if cli_value is not None:
        return cli_value
    env = os.environ.get("CONFORMANCE_" + name.upper().replace("-", "_"))
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
    return opt.default
