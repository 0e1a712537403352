"""What the suite knows of one device kind: the interface every kind module implements.

A kind answers, each in one place: the ``--device`` forms it owns, whether it runs a device
here, which devices of it this machine has, its hardware-class names (the pattern and how
this machine's is read), the features recorded in the identity, the fingerprint fields,
the determinism switches, the environment variables that steer its kernels, the peak memory
query, how to wait for its queued work and how the noise generator is made.

Nothing here imports torch at module level: the option parser and an xdist controller ask
the registry for forms and class patterns without it.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar


def env_suffix(features: dict[str, Any]) -> str:
    """``, env NAME=value ...`` of the recorded dispatch variables (empty without any)."""
    env = features.get("env") or {}
    return f", env {' '.join(f'{k}={v}' for k, v in env.items())}" if env else ""


class DeviceKind:
    """One device kind (CPU, CUDA, ROCm, MPS, XPU); subclasses override what differs."""

    #: the kind's name: the first part of its hardware classes (``cpu``, ``cuda``, ``rocm``)
    name: ClassVar[str] = ""
    #: torch's device type for it (``cuda`` for ROCm too: a HIP build of torch calls it so)
    device_type: ClassVar[str] = ""
    #: the ``--device`` forms it owns, as the help text writes them (``N``: an index); a kind
    #: that shares another's device type owns none
    forms: ClassVar[tuple[str, ...]] = ()
    #: regular expression of its hardware class names (part of one alternation)
    class_pattern: ClassVar[str] = ""
    #: how its class names read in messages (``cuda-sm<NN>``)
    class_hint: ClassVar[str] = ""
    #: its place in listings (the help text, the forms in an error message)
    order: ClassVar[int] = 0
    #: what a machine of the kind is called in messages (``a CPU with those features``)
    label: ClassVar[str] = "device"
    #: environment variables that change which kernels run; the set ones are recorded in its
    #: features (``env``) and prefixed to the commands a run prints
    dispatch_env: ClassVar[tuple[str, ...]] = ()
    #: its kernels run on this process's CPU threads (``--threads`` and OpenMP matter)
    host_threads: ClassVar[bool] = False
    #: ``-n auto`` starts one worker per device, and ``--device TYPE`` puts worker ``gwN``
    #: on device ``N % count``
    worker_per_device: ClassVar[bool] = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    # -- which devices ---------------------------------------------------------------
    def claims(self, device: str) -> bool:
        """Whether this kind runs ``device`` (of its device type) on this machine; two
        kinds sharing a device type tell apart by the torch build."""
        return True

    def backend(self) -> Any:
        """torch's module for the kind (``torch.cuda``, ``torch.xpu``), or ``None``."""
        return None

    def is_available(self) -> bool:
        backend = self.backend()
        return bool(backend is not None and backend.is_available())

    def device_count(self) -> int:
        """How many devices of the kind torch sees (0 where it sees none)."""
        return int(self.backend().device_count()) if self.is_available() else 0

    def available(self) -> list[str]:
        """This kind's usable devices in ``--device`` syntax (none for a kind owning no
        forms)."""
        if not self.forms or not self.is_available():
            return []
        out = [self.device_type]
        if any(form.endswith(":N") for form in self.forms):
            out.extend(f"{self.device_type}:{i}" for i in range(self.device_count()))
        return out

    # -- what the machine is -----------------------------------------------------------
    def class_name(self, device: str) -> str:
        """This machine's hardware class for ``device`` (validated by the caller)."""
        return self.name

    def features(self, device: str) -> dict[str, Any]:
        """What steers the kind's kernel choice here, recorded in the identity."""
        return {"env": self.env()}

    def fingerprint_fields(self, device: str) -> dict[str, Any]:
        """The kind's fingerprint keys (``device_name`` and whatever else it records)."""
        return {}

    def summary(self, features: dict[str, Any]) -> str:
        """The short part of :meth:`Identity.describe` (``sm 8.9``, a CPU's flags)."""
        return ""

    def feature_line(self, features: dict[str, Any]) -> str:
        """The identity header line after ``conformance: `` (name, versions, flags)."""
        return f"{self.name} {features.get('model_name')}"

    def fingerprint_lines(self, fingerprint: dict[str, Any]) -> list[str]:
        """Extra fingerprint header lines (library versions of the kind)."""
        return []

    def env(self, environ: dict[str, str] | None = None) -> dict[str, str]:
        """The set :attr:`dispatch_env` variables."""
        environ = os.environ if environ is None else environ
        return {k: environ[k] for k in self.dispatch_env if environ.get(k)}

    def pin_env(self, hardware_class: str) -> dict[str, str]:
        """Variables under which this kind's machine computes like ``hardware_class``'s
        (a lower ATen level on a CPU); empty where none can."""
        return {}

    # -- running on it -----------------------------------------------------------------
    def prepare(self, deterministic: bool) -> None:
        """Environment the kind's libraries read when they initialise (before any work)."""

    def configure(self, deterministic: bool) -> None:
        """The kind's own determinism switches (after ``use_deterministic_algorithms``)."""

    def synchronize(self, device: str) -> None:
        """Wait for the work queued on ``device`` (a clock read after it is honest)."""
        backend = self.backend()
        if backend is not None and hasattr(backend, "synchronize"):
            backend.synchronize(device)

    def reset_peak_memory(self, device: str) -> None:
        backend = self._allocator()
        if backend is not None:
            backend.reset_peak_memory_stats(device)

    def peak_memory_bytes(self, device: str) -> int | None:
        """Peak memory allocated on ``device`` since the last reset; ``None`` for a kind
        whose allocator keeps no peak."""
        backend = self._allocator()
        return None if backend is None else int(backend.max_memory_allocated(device))

    def _allocator(self) -> Any:
        backend = self.backend()
        if backend is None or not hasattr(backend, "max_memory_allocated"):
            return None
        return backend

    def generator(self, seed: int) -> Any:
        """The noise generator for ``seed``: a CPU ``torch.Generator`` on every kind, so
        that the initial noise is the same bits on every device."""
        import torch

        return torch.Generator("cpu").manual_seed(seed)
