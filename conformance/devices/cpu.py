"""The CPU: ``cpu-<vendor>-<ATen level>[+ext...][-override...]`` classes, from /proc/cpuinfo.

The class carries the instruction set extensions that steer torch's and oneDNN's kernel
choice (``+amx``, ``+bf16`` for AVX512-BF16, ``+fp16`` for AVX512-FP16, ``+sve`` on Arm) and
any dispatch override from the environment (``-onednn_avx2`` for
``ONEDNN_MAX_CPU_ISA=AVX2``, ``-cbwr_compatible`` for ``MKL_CBWR``). The committed golden
sets are named by these rules: a change here renames them.
"""

from __future__ import annotations

import functools
import os
import platform
import re
from typing import Any

from conformance.devices.base import DeviceKind, env_suffix

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


def cpu_isa() -> str:
    """ATen's CPU dispatch level, lower-case (honours ``ATEN_CPU_CAPABILITY``)."""
    import torch

    return torch.backends.cpu.get_cpu_capability().lower()


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


def cpu_name() -> str:
    """A human name for the CPU (``/proc/cpuinfo`` model name where there is one)."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


class Cpu(DeviceKind):
    """The host CPU: always there; threads, ISA level and flags decide its bits."""

    name = "cpu"
    device_type = "cpu"
    forms = ("cpu",)
    class_pattern = r"cpu-[a-z0-9][a-z0-9_]*(-[a-z0-9][a-z0-9_]*)*(\+[a-z0-9_]+)*(-[a-z0-9_]+)*"
    class_hint = "cpu-<vendor>-<level>[+ext...] (e.g. cpu-amd-avx512+bf16)"
    order = 0
    label = "CPU"
    dispatch_env = DISPATCH_ENV
    host_threads = True

    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return 1

    def available(self) -> list[str]:
        return ["cpu"]

    def class_name(self, device: str) -> str:
        return cpu_class_name(cpu_features())

    def features(self, device: str) -> dict[str, Any]:
        return cpu_features()

    def fingerprint_fields(self, device: str) -> dict[str, Any]:
        return {"device_name": cpu_name()}

    def summary(self, features: dict[str, Any]) -> str:
        return ", ".join(features.get("flags") or [])

    def feature_line(self, features: dict[str, Any]) -> str:
        f = features
        return (
            f"cpu {f.get('model_name')} ({f.get('vendor')}, family "
            f"{f.get('family')} model {f.get('model')}), ATen {f.get('aten_level')}, "
            f"flags {' '.join(f.get('flags') or []) or '-'}"
            + env_suffix(f)
        )

    def pin_env(self, hardware_class: str) -> dict[str, str]:
        """``ATEN_CPU_CAPABILITY`` at the class's ATen level (the second part of the name):
        a CPU with the class's extensions then dispatches as that class's machine did."""
        parts = hardware_class.split("-")
        if len(parts) < 3:
            return {}
        return {"ATEN_CPU_CAPABILITY": parts[2].split("+")[0]}


KIND = Cpu()
