"""Hardware classes and the environment fingerprint.

A *hardware class* names the hardware whose bits a golden set pins: ``cpu-<isa>`` (ATen's CPU
dispatch level: ``default``, ``avx2``, ``avx512``...), ``cuda-sm<major><minor>``,
``rocm-<gfx arch>``, ``mps`` or ``xpu``. Everything else that can change bits (threads,
library and driver versions, TF32, determinism flags) lives in the *fingerprint* kept beside
the class: a golden of the same class with a different fingerprint is compared at the
``close`` tier rather than the ``exact`` one.
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

_CLASS = re.compile(r"^(cpu-[a-z0-9_]+|cuda-sm\d+|rocm-[a-z0-9_]+|mps|xpu)$")
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps|xpu(:\d+)?)$")

DEVICE_FORMS = "cpu, cuda, cuda:N, mps, xpu, xpu:N"

#: Fingerprint keys that must be equal, with the class, for the ``exact`` tier.
PINNED_KEYS = ("torch", "diffusers", "transformers", "threads", "deterministic", "cpu_isa")


@dataclass(frozen=True, order=True)
class HardwareClass:
    """A hardware class name, validated (e.g. ``cpu-avx512``, ``cuda-sm89``)."""

    name: str

    def __post_init__(self) -> None:
        if not _CLASS.match(self.name):
            raise ValueError(
                f"{self.name!r} is not a hardware class; expected cpu-<isa>, cuda-sm<NN>, "
                "rocm-<arch>, mps or xpu"
            )

    def __str__(self) -> str:
        return self.name

    @property
    def is_cpu(self) -> bool:
        return self.name.startswith("cpu-")


def parse_device(text: str) -> str:
    """Validate the *form* of a device string (availability is checked separately)."""
    value = text.strip().lower()
    if not _DEVICE.match(value):
        raise ValueError(f"{text!r} is not a device; accepted: {DEVICE_FORMS}")
    return value


def available_devices() -> list[str]:
    """Devices torch can use on this machine, in ``--device`` syntax."""
    import torch

    out = ["cpu"]
    if torch.cuda.is_available():
        out.append("cuda")
        out.extend(f"cuda:{i}" for i in range(torch.cuda.device_count()))
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        out.append("mps")
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        out.append("xpu")
        out.extend(f"xpu:{i}" for i in range(xpu.device_count()))
    return out


def check_available(device: str) -> str | None:
    """Why ``device`` cannot be used here, or ``None``."""
    available = available_devices()
    if device in available:
        return None
    return f"device {device!r} is not available on this machine; available: {', '.join(available)}"


def cpu_isa() -> str:
    """ATen's CPU dispatch level, lower-case (honours ``ATEN_CPU_CAPABILITY``)."""
    import torch

    return torch.backends.cpu.get_cpu_capability().lower()


def detect_class(device: str) -> HardwareClass:
    """The hardware class of ``device`` on this machine."""
    import torch

    kind = device.split(":")[0]
    if kind == "cpu":
        return HardwareClass(f"cpu-{cpu_isa()}")
    if kind == "cuda":
        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        if torch.version.hip:
            arch = getattr(props, "gcnArchName", "gfx").split(":")[0]
            return HardwareClass(f"rocm-{arch.lower()}")
        return HardwareClass(f"cuda-sm{props.major}{props.minor}")
    return HardwareClass(kind)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_name() -> str:
    """A human name for the CPU (``/proc/cpuinfo`` model name where there is one)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fingerprint(device: str, threads: int) -> dict[str, Any]:
    """Everything besides the class that can change the bits, plus provenance."""
    import torch

    kind = device.split(":")[0]
    fp: dict[str, Any] = {
        "hardware_class": detect_class(device).name,
        "device": device,
        "device_name": cpu_name() if kind == "cpu" else None,
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
    if kind == "cuda":
        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        fp.update(
            device_name=props.name,
            device_memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            hip=torch.version.hip,
            cudnn=torch.backends.cudnn.version(),
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            cublas_workspace_config=os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        )
    elif kind == "mps":
        fp["device_name"] = f"Apple MPS ({platform.machine()})"
    elif kind == "xpu":
        fp["device_name"] = torch.xpu.get_device_name(torch.device(device).index or 0)
    return fp


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def command_line() -> str:
    """The command that started this process, for provenance (``python -m conformance.cli``
    reads as ``conformance``, ``python -m pytest`` as ``pytest``)."""
    program = os.path.basename(sys.argv[0])
    if sys.argv[0].endswith(os.path.join("conformance", "cli.py")):
        program = "conformance"
    elif sys.argv[0].endswith(os.path.join("pytest", "__main__.py")):
        program = "pytest"
    return " ".join([program, *sys.argv[1:]])


def format_fingerprint(fp: dict[str, Any]) -> list[str]:
    """Header lines for ``pytest_report_header``."""
    lines = [
        f"conformance: class={fp['hardware_class']} device={fp['device']} "
        f"({fp.get('device_name') or '?'}) threads={fp['threads']} "
        f"deterministic={fp['deterministic']}",
        f"conformance: python {fp['python']}, torch {fp['torch']}, "
        f"diffusers {fp['diffusers']}, transformers {fp['transformers']}",
    ]
    if fp.get("cuda") or fp.get("hip"):
        lines.append(
            f"conformance: cuda {fp.get('cuda')} hip {fp.get('hip')} cudnn {fp.get('cudnn')} "
            f"tf32={fp.get('tf32_matmul')}"
        )
    return lines
