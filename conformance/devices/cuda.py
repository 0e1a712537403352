"""NVIDIA GPUs through CUDA: ``cuda-sm<major><minor>`` classes (``cuda-sm89``).

The compute capability names the class; the identity records the GPU's name, SM count,
memory, driver, CUDA and cuDNN versions, the TF32 switches and the enabled SDPA backends.
A deterministic run sets ``CUBLAS_WORKSPACE_CONFIG`` (before cuBLAS initialises), turns off
cuDNN's benchmark autotuning and TF32. A HIP build of torch also calls its devices ``cuda``:
:mod:`conformance.devices.rocm` takes those.
"""

from __future__ import annotations

import os
from typing import Any

from conformance.devices.base import DeviceKind


def _hip() -> bool:
    """Whether this torch is a HIP (ROCm) build."""
    import torch

    return bool(torch.version.hip)


def _index(device: str) -> int:
    import torch

    return torch.device(device).index or 0


def cuda_features(device: str) -> dict[str, Any]:
    """What steers GPU kernel choice: device, SMs, memory, versions, TF32, SDPA backends."""
    import torch

    props = torch.cuda.get_device_properties(_index(device))
    cuda = torch.backends.cuda
    driver = None
    with_driver = getattr(torch._C, "_cuda_getDriverVersion", None)
    if with_driver is not None:
        try:
            driver = with_driver()
        except RuntimeError:  # no driver API
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
        "env": {k: os.environ[k] for k in Cuda.dispatch_env if os.environ.get(k)},
    }


class Cuda(DeviceKind):
    """An NVIDIA GPU (``cuda``, ``cuda:N``) on a CUDA build of torch."""

    name = "cuda"
    device_type = "cuda"
    forms = ("cuda", "cuda:N")
    class_pattern = r"cuda-sm\d+"
    class_hint = "cuda-sm<NN>"
    order = 10
    label = "GPU"
    dispatch_env = ("CUBLAS_WORKSPACE_CONFIG", "PYTORCH_CUDA_ALLOC_CONF")
    worker_per_device = True

    def claims(self, device: str) -> bool:
        return not _hip()

    def backend(self) -> Any:
        import torch

        return torch.cuda

    def class_name(self, device: str) -> str:
        import torch

        props = torch.cuda.get_device_properties(_index(device))
        return f"cuda-sm{props.major}{props.minor}"

    def features(self, device: str) -> dict[str, Any]:
        return cuda_features(device)

    def fingerprint_fields(self, device: str) -> dict[str, Any]:
        import torch

        props = torch.cuda.get_device_properties(_index(device))
        return {
            "device_name": props.name,
            "device_memory_gib": round(props.total_memory / 2**30, 1),
            "cuda": torch.version.cuda,
            "hip": torch.version.hip,
            "cudnn": torch.backends.cudnn.version(),
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        }

    def summary(self, features: dict[str, Any]) -> str:
        return f"sm {features.get('sm')}"

    def feature_line(self, features: dict[str, Any]) -> str:
        f = features
        return (
            f"gpu {f.get('model_name')} sm {f.get('sm')} x{f.get('sm_count')} "
            f"{f.get('memory_gib')} GiB, driver {f.get('driver')}, cuda {f.get('cuda')}, "
            f"cudnn {f.get('cudnn')}, tf32 {f.get('tf32_matmul')}, sdpa "
            + ",".join(k for k, v in (f.get("sdpa_backends") or {}).items() if v)
        )

    def fingerprint_lines(self, fingerprint: dict[str, Any]) -> list[str]:
        fp = fingerprint
        if not (fp.get("cuda") or fp.get("hip")):
            return []
        return [f"conformance: cuda {fp.get('cuda')} hip {fp.get('hip')} cudnn "
                f"{fp.get('cudnn')} tf32={fp.get('tf32_matmul')}"]

    def prepare(self, deterministic: bool) -> None:
        if deterministic:
            # cuBLAS reads this when it initialises; it must be set before the first matmul.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

    def configure(self, deterministic: bool) -> None:
        import torch

        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


KIND = Cuda()
