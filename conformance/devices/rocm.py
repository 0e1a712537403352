"""AMD GPUs through ROCm: ``rocm-<gfx arch>`` classes (``rocm-gfx90a``).

A HIP build of torch calls these devices ``cuda`` (``--device cuda``, ``cuda:N``): this kind
takes them where ``torch.version.hip`` is set. Everything but the class name is CUDA's
(:mod:`conformance.devices.cuda`: features, fingerprint, determinism switches, memory).
Not run on ROCm hardware by the suite's own tests: they exercise it with a stand-in torch.
"""

from __future__ import annotations

from conformance.devices.cuda import Cuda, _hip, _index


class Rocm(Cuda):
    """An AMD GPU on a HIP build of torch (device type ``cuda``)."""

    name = "rocm"
    forms = ()  # CUDA's forms name its devices
    class_pattern = r"rocm-[a-z0-9_]+"
    class_hint = "rocm-<arch>"
    order = 20

    def claims(self, device: str) -> bool:
        return _hip()

    def class_name(self, device: str) -> str:
        import torch

        props = torch.cuda.get_device_properties(_index(device))
        arch = getattr(props, "gcnArchName", "gfx").split(":")[0]
        return f"rocm-{arch.lower()}"


KIND = Rocm()
