"""Hardware classes, the machine's identity and the environment fingerprint.

A *hardware class* is the readable name of a golden set and of a matrix column. It carries
what is known to separate bits: on CPUs ``cpu-<vendor>-<ATen level>`` plus the instruction
set extensions that steer torch's and oneDNN's kernel choice (``+amx``, ``+bf16`` for
AVX512-BF16, ``+fp16`` for AVX512-FP16, ``+sve`` on Arm) and any dispatch override from the
environment (``-onednn_avx2`` for ``ONEDNN_MAX_CPU_ISA=AVX2``, ``-cbwr_compatible`` for
``MKL_CBWR``), e.g. ``cpu-amd-avx512+bf16`` or ``cpu-intel-avx512+amx+bf16+fp16``;
``cuda-sm<major><minor>``, ``rocm-<gfx arch>``, ``mps`` or ``xpu`` on accelerators. Each
device kind's rules live in its module of :mod:`conformance.devices`; this module asks them.

The *identity* is what is measured: the class, the CPU/GPU features, and the digests of the
probe battery (:mod:`conformance.probes`) folded into one digest per precision. The exact
tier applies only where a golden's precision digest equals this machine's. The
*fingerprint* keeps the rest for provenance (library versions, platform, TF32 flags...).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import sys
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from conformance import devices
from conformance.devices.cpu import (  # noqa: F401 - the CPU's names, used across the package
    CLASS_TAGS,
    DISPATCH_ENV,
    STEERING_FLAGS,
    cpu_class_name,
    cpu_features,
    cpu_isa,
    cpu_name,
)
from conformance.devices.cuda import cuda_features  # noqa: F401

_CLASS = re.compile(devices.REGISTRY.class_pattern)
_MAX_CLASS = 80

DEVICE_FORMS = devices.DEVICE_FORMS
#: The hardware class forms, for messages (``cpu-<vendor>-<level>[+ext...] (...), ...``).
CLASS_FORMS = devices.REGISTRY.class_hints

#: Fingerprint keys that must be equal, with the class, for the ``exact`` tier.
PINNED_KEYS = ("torch", "diffusers", "transformers", "threads", "deterministic", "cpu_isa")


@dataclass(frozen=True, order=True)
class HardwareClass:
    """A hardware class name, validated (e.g. ``cpu-amd-avx512+bf16``, ``cuda-sm89``)."""

    name: str

    def __post_init__(self) -> None:
        if (not isinstance(self.name, str) or len(self.name) > _MAX_CLASS
                or not _CLASS.fullmatch(self.name)):
            raise ValueError(
                f"{self.name!r} is not a hardware class; expected {CLASS_FORMS}"
            )

    def __str__(self) -> str:
        return self.name

    @property
    def is_cpu(self) -> bool:
        return devices.kind_name(self.name) == "cpu"


def parse_device(text: str) -> str:
    """Validate the *form* of a device string (availability is checked separately)."""
    return devices.parse(text)


def available_devices() -> list[str]:
    """Devices torch can use on this machine, in ``--device`` syntax."""
    return devices.available()


def check_available(device: str) -> str | None:
    """Why ``device`` cannot be used here, or ``None`` (the CPU is always there: asking
    imports no torch)."""
    if device == "cpu":
        return None
    available = available_devices()
    if device in available:
        return None
    return f"device {device!r} is not available on this machine; available: {', '.join(available)}"


def detect_class(device: str) -> HardwareClass:
    """The hardware class of ``device`` on this machine."""
    return HardwareClass(devices.for_device(device).class_name(device))


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def fingerprint(device: str, threads: int) -> dict[str, Any]:
    """Everything besides the class that can change the bits, plus provenance (the host
    CPU's ATen level on every device: the pipeline's host code runs there)."""
    import torch

    kind = devices.for_device(device)
    fp: dict[str, Any] = {
        "hardware_class": detect_class(device).name,
        "device": device,
        "device_name": None,
        "cpu_isa": cpu_isa(),
        "threads": threads,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "diffusers": _version("diffusers"),
        "transformers": _version("transformers"),
        "numpy": _version("numpy"),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "aten_cpu_capability_env": os.environ.get("ATEN_CPU_CAPABILITY"),
    }
    fp.update(kind.fingerprint_fields(device))
    return fp


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # pragma: no cover - platforms without affinity


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def command_line(argv: list[str] | None = None) -> str:
    """The command that started this process (or ``argv``: an xdist worker passes its
    controller's), for provenance (``python -m conformance`` reads as ``conformance``,
    ``python -m pytest`` as ``pytest``)."""
    argv = list(sys.argv if argv is None else argv)
    program = os.path.basename(argv[0])
    if argv[0].endswith((os.path.join("conformance", "cli.py"),
                         os.path.join("conformance", "__main__.py"))):
        program = "conformance"
    elif argv[0].endswith(os.path.join("pytest", "__main__.py")):
        program = "pytest"
    return " ".join([program, *(_relative(a) for a in argv[1:])])


def _relative(arg: str) -> str:
    """An absolute path below the working directory, as a relative one (``--opt=PATH``
    too): provenance should not carry the recording user's home folder."""
    prefix, sep, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
    if not os.path.isabs(value):
        return arg
    cwd = os.getcwd()
    try:
        if os.path.commonpath([cwd, value]) != cwd:
            return arg
    except ValueError:
        return arg
    rel = os.path.relpath(value, cwd)
    return f"{prefix}{sep}{rel}" if sep else rel


def format_fingerprint(fp: dict[str, Any]) -> list[str]:
    """Header lines for ``pytest_report_header``."""
    lines = [
        f"conformance: class={fp['hardware_class']} device={fp['device']} "
        f"({fp.get('device_name') or '?'}) threads={fp['threads']} "
        f"deterministic={fp['deterministic']}",
        f"conformance: python {fp['python']}, torch {fp['torch']}, "
        f"diffusers {fp['diffusers']}, transformers {fp['transformers']}",
    ]
    kind = devices.for_class(str(fp.get("hardware_class")))
    if kind is not None:
        lines += kind.fingerprint_lines(fp)
    return lines
