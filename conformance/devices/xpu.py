"""Intel GPUs through torch's XPU backend: the class ``xpu``.

``--device xpu`` / ``xpu:N``; several devices take one xdist worker each, like CUDA's. The
identity records the device's name, vendor, driver and runtime versions, compute units and
memory; ``ONEDNN_DEFAULT_FPMATH_MODE`` is recorded with the features because oneDNN's GPU
kernels honour it too (it allows bf16 / tf32 arithmetic inside fp32 operators). No switch
beyond ``torch.use_deterministic_algorithms`` is known to pin its kernels. Not run on Intel
GPU hardware by the suite's own tests: they exercise it with a stand-in ``torch.xpu``.
"""

from __future__ import annotations

from typing import Any

from conformance.devices.base import DeviceKind, env_suffix


def _index(device: str) -> int:
    import torch

    return torch.device(device).index or 0


class Xpu(DeviceKind):
    """An Intel GPU (``xpu``, ``xpu:N``)."""

    name = "xpu"
    device_type = "xpu"
    forms = ("xpu", "xpu:N")
    class_pattern = "xpu"
    class_hint = "xpu"
    order = 40
    label = "GPU"
    dispatch_env = ("ONEDNN_DEFAULT_FPMATH_MODE",)
    worker_per_device = True

    def backend(self) -> Any:
        import torch

        return getattr(torch, "xpu", None)

    def features(self, device: str) -> dict[str, Any]:
        props = self.backend().get_device_properties(_index(device))
        total = getattr(props, "total_memory", None)
        return {
            "vendor": str(getattr(props, "vendor", "intel")).lower(),
            "model_name": getattr(props, "name", None),
            "driver": getattr(props, "driver_version", None),
            "runtime": getattr(props, "version", None),
            "compute_units": getattr(props, "max_compute_units", None),
            "memory_gib": round(total / 2**30, 1) if total else None,
            "env": self.env(),
        }

    def fingerprint_fields(self, device: str) -> dict[str, Any]:
        return {"device_name": self.backend().get_device_name(_index(device))}

    def summary(self, features: dict[str, Any]) -> str:
        return f"driver {features.get('driver')}"

    def feature_line(self, features: dict[str, Any]) -> str:
        f = features
        return (f"xpu {f.get('model_name')} ({f.get('vendor')}) x{f.get('compute_units')} "
                f"{f.get('memory_gib')} GiB, driver {f.get('driver')}, runtime "
                f"{f.get('runtime')}"
                + env_suffix(f))


KIND = Xpu()
