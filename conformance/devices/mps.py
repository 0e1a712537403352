"""Apple GPUs through Metal Performance Shaders: the class ``mps``.

One device per machine (``--device mps``). The identity records the machine, the macOS
version and the memory Metal recommends; ``PYTORCH_ENABLE_MPS_FALLBACK`` is recorded with
the features because it sends the operators MPS lacks to the CPU (other kernels, other
bits). MPS keeps no peak-allocation counter: its generations report the process's peak RSS.
Not run on Apple hardware by the suite's own tests: they exercise it with a stand-in
``torch.backends.mps`` / ``torch.mps``.
"""

from __future__ import annotations

import platform
from typing import Any

from conformance.devices.base import DeviceKind, env_suffix


class Mps(DeviceKind):
    """The Apple GPU of this Mac."""

    name = "mps"
    device_type = "mps"
    forms = ("mps",)
    class_pattern = "mps"
    class_hint = "mps"
    order = 30
    label = "Mac"
    dispatch_env = ("PYTORCH_ENABLE_MPS_FALLBACK",)

    def backend(self) -> Any:
        import torch

        return getattr(torch, "mps", None)

    def is_available(self) -> bool:
        import torch

        mps = getattr(torch.backends, "mps", None)
        return bool(mps is not None and mps.is_available())

    def device_count(self) -> int:
        return 1 if self.is_available() else 0

    def device_name(self) -> str:
        return f"Apple MPS ({platform.machine()})"

    def features(self, device: str) -> dict[str, Any]:
        backend = self.backend()
        recommended = getattr(backend, "recommended_max_memory", None)
        return {
            "vendor": "apple",
            "model_name": self.device_name(),
            "machine": platform.machine(),
            "macos": platform.mac_ver()[0] or None,
            "memory_gib": round(recommended() / 2**30, 1) if recommended else None,
            "env": self.env(),
        }

    def fingerprint_fields(self, device: str) -> dict[str, Any]:
        return {"device_name": self.device_name()}

    def summary(self, features: dict[str, Any]) -> str:
        return f"macOS {features.get('macos')}"

    def feature_line(self, features: dict[str, Any]) -> str:
        f = features
        return (f"mps {f.get('model_name')}, macOS {f.get('macos')}, "
                f"{f.get('memory_gib')} GiB"
                + env_suffix(f))

    def synchronize(self, device: str) -> None:
        self.backend().synchronize()  # one device: torch.mps takes no index

    def _allocator(self) -> Any:
        return None


KIND = Mps()
