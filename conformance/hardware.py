"""Hardware classes, the machine's identity and the environment fingerprint.

A *hardware class* is the readable name of a golden set and of a matrix column. It carries
what is known to separate bits: on CPUs ``cpu-<vendor>-<ATen level>`` plus the instruction
set extensions that steer torch's and oneDNN's kernel choice (``+amx``, ``+bf16`` for
AVX512-BF16, ``+fp16`` for AVX512-FP16, ``+sve`` on Arm) and any dispatch override from the
environment (``-onednn_avx2`` for ``ONEDNN_MAX_CPU_ISA=AVX2``, ``-cbwr_compatible`` for
``MKL_CBWR``), e.g. ``cpu-amd-avx512+bf16`` or ``cpu-intel-avx512+amx+bf16+fp16``;
``cuda-sm<major><minor>``, ``rocm-<gfx arch>``, ``mps`` or ``xpu`` on accelerators.

The *identity* is what is measured: the class, the CPU/GPU features, and the digests of the
probe battery (:mod:`conformance.probes`) folded into one digest per precision. The exact
tier applies only where a golden's precision digest equals this machine's. The
*fingerprint* keeps the rest for provenance (library versions, platform, TF32 flags...).
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
import re
import sys
from dataclasses import dataclass
from importlib import metadata
from typing import Any

_CLASS = re.compile(
    r"(cpu-[a-z0-9][a-z0-9_]*(-[a-z0-9][a-z0-9_]*)*(\+[a-z0-9_]+)*(-[a-z0-9_]+)*"
    r"|cuda-sm\d+|rocm-[a-z0-9_]+|mps|xpu)"
)
_MAX_CLASS = 80
_DEVICE = re.compile(r"(cpu|cuda(:[0-9]{1,3})?|mps|xpu(:[0-9]{1,3})?)")

DEVICE_FORMS = "cpu, cuda, cuda:N, mps, xpu, xpu:N"

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
                f"{self.name!r} is not a hardware class; expected cpu-<vendor>-<level>[+ext...]"
                " (e.g. cpu-amd-avx512+bf16), cuda-sm<NN>, rocm-<arch>, mps or xpu"
            )

    def __str__(self) -> str:
        return self.name

    @property
    def is_cpu(self) -> bool:
        return self.name.startswith("cpu-")


def parse_device(text: str) -> str:
    """Validate the *form* of a device string (availability is checked separately)."""
    value = text.strip().lower()
    if not _DEVICE.fullmatch(value):
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


#: CPU flags that steer kernel dispatch in torch / oneDNN / MKL (x86 ``flags``, Arm
#: ``Features`` in /proc/cpuinfo); recorded in the identity.
STEERING_FLAGS = (
    "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq", "avx512vl",
    "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
    "amx_int8", "amx_fp16", "asimd", "asimdhp", "sve", "sve2", "bf16", "i8mm", "sme",
)
#: Flags that become class tags (they separate the bits the suite has measured).
CLASS_TAGS = (("amx_bf16", "amx"), ("avx512_bf16", "bf16"), ("avx512_fp16", "fp16"),
              ("sve", "sve"))
#: Environment variables that change which kernels run.
DISPATCH_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_CBWR",
                "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_DEFAULT_FPMATH_MODE")
_ENV_SUFFIX = {"ONEDNN_MAX_CPU_ISA": "onednn", "DNNL_MAX_CPU_ISA": "onednn", "MKL_CBWR": "cbwr",
               "MKL_ENABLE_INSTRUCTIONS": "mkl", "ONEDNN_DEFAULT_FPMATH_MODE": "fpmath"}
_VENDORS = {"authenticamd": "amd", "genuineintel": "intel", "hygongenuine": "hygon",
            "centaurhauls": "centaur", "0x41": "arm", "0x61": "apple", "0xc0": "ampere",
            "0x48": "hisilicon", "0x46": "fujitsu", "0x51": "qualcomm", "0x4e": "nvidia"}


@functools.lru_cache(maxsize=1)
def _read_cpuinfo() -> str:
    """/proc/cpuinfo, read once per process ("" where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            return fh.read(1 << 20)
    except OSError:
        return ""


def _cpuinfo(text: str | None = None) -> dict[str, str]:
    """The first processor block of /proc/cpuinfo (or of ``text``) as key -> value."""
    if text is None:
        text = _read_cpuinfo()
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if out:
                break
            continue
        key, _, value = line.partition(":")
        out.setdefault(key.strip().lower(), value.strip())
    return out


def cpu_features(cpuinfo: str | None = None, env: dict[str, str] | None = None,
                 aten_level: str | None = None) -> dict[str, Any]:
    """What steers CPU kernel dispatch here: vendor, model, flags, ATen level, overrides."""
    info = _cpuinfo(cpuinfo)
    env = dict(os.environ) if env is None else env
    raw_vendor = (info.get("vendor_id") or info.get("cpu implementer") or "").lower()
    vendor = _VENDORS.get(raw_vendor) or re.sub(r"[^a-z0-9]", "", raw_vendor) or (
        platform.machine().lower() or "unknown")
    flags = set((info.get("flags") or info.get("features") or "").split())
    return {
        "vendor": vendor,
        "model_name": info.get("model name") or platform.processor() or platform.machine(),
        "family": info.get("cpu family") or info.get("cpu architecture"),
        "model": info.get("model") or info.get("cpu part"),
        "machine": platform.machine(),
        "flags": sorted(f for f in STEERING_FLAGS if f in flags),
        "aten_level": aten_level if aten_level is not None else cpu_isa(),
        "env": {k: env[k] for k in DISPATCH_ENV if env.get(k)},
    }


def cpu_class_name(features: dict[str, Any]) -> str:
    """``cpu-<vendor>-<level>[+tag...][-override...]`` from :func:`cpu_features`."""
    def clean(text: str) -> str:
        return re.sub(r"[^a-z0-9_]", "_", str(text).lower()).strip("_") or "x"

    flags = set(features.get("flags") or ())
    name = f"cpu-{clean(features.get('vendor') or 'unknown')}-{clean(features['aten_level'])}"
    name += "".join(f"+{tag}" for flag, tag in CLASS_TAGS if flag in flags)
    env = features.get("env") or {}
    for key in DISPATCH_ENV[1:]:
        if env.get(key):
            name += f"-{_ENV_SUFFIX[key]}_{clean(env[key])}"
    return name


def cuda_features(device: str) -> dict[str, Any]:
    """What steers GPU kernel choice: device, SMs, memory, versions, TF32, SDPA backends."""
    import torch

    index = torch.device(device).index or 0
    props = torch.cuda.get_device_properties(index)
    cuda = torch.backends.cuda
    driver = None
    with_driver = getattr(torch._C, "_cuda_getDriverVersion", None)
    if with_driver is not None:
        try:
            driver = with_driver()
        except RuntimeError:  # pragma: no cover - no driver API
            driver = None
    return {
        "vendor": "amd" if torch.version.hip else "nvidia",
        "model_name": props.name,
        "sm": f"{props.major}.{props.minor}",
        "sm_count": props.multi_processor_count,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "driver": driver,
        "cuda": torch.version.cuda,
        "hip": torch.version.hip,
        "cudnn": torch.backends.cudnn.version(),
        "tf32_matmul": cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "sdpa_backends": {
            name: bool(getattr(cuda, f"{name}_sdp_enabled", lambda: None)())
            for name in ("flash", "mem_efficient", "math", "cudnn")
        },
        "env": {k: os.environ[k] for k in ("CUBLAS_WORKSPACE_CONFIG",
                                             "PYTORCH_CUDA_ALLOC_CONF") if os.environ.get(k)},
    }


def detect_class(device: str) -> HardwareClass:
    """The hardware class of ``device`` on this machine."""
    import torch

    kind = device.split(":")[0]
    if kind == "cpu":
        return HardwareClass(cpu_class_name(cpu_features()))
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
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


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


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # pragma: no cover - platforms without affinity


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def command_line(argv: list[str] | None = None) -> str:
    """The command that started this process (or ``argv``: an xdist worker passes its
    controller's), for provenance (``python -m conformance.cli`` reads as ``conformance``,
    ``python -m pytest`` as ``pytest``)."""
    argv = list(sys.argv if argv is None else argv)
    program = os.path.basename(argv[0])
    if argv[0].endswith(os.path.join("conformance", "cli.py")):
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
    if fp.get("cuda") or fp.get("hip"):
        lines.append(
            f"conformance: cuda {fp.get('cuda')} hip {fp.get('hip')} cudnn {fp.get('cudnn')} "
            f"tf32={fp.get('tf32_matmul')}"
        )
    return lines
