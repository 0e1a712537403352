"""The device kinds the suite runs on, one module each, and the lookups the rest asks.

Every module of this package (but :mod:`~conformance.devices.base`) defines ``KIND``, a
:class:`~conformance.devices.base.DeviceKind`: :mod:`~conformance.devices.cpu`,
:mod:`~conformance.devices.cuda`, :mod:`~conformance.devices.rocm` (a HIP build's ``cuda``
devices), :mod:`~conformance.devices.mps` and :mod:`~conformance.devices.xpu`. A new kind is
one more module: the ``--device`` forms, the hardware-class names, the available devices,
the identity, the fingerprint and the determinism switches all come from here.

Lookups: :func:`parse` (the form of ``--device`` text), :func:`for_device` (the kind that
runs a device here: a ``cuda`` device is ROCm's on a HIP build), :func:`for_class` (the kind
of a hardware class name), :func:`available` (this machine's devices).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterable

from conformance.devices.base import DeviceKind

_NOT_KINDS = frozenset({"base"})


class Registry:
    """Device kinds in their :attr:`~DeviceKind.order`, and what is derived from them."""

    def __init__(self, kinds: Iterable[DeviceKind]) -> None:
        self.kinds: tuple[DeviceKind, ...] = tuple(sorted(kinds, key=lambda k: k.order))
        names = [k.name for k in self.kinds]
        if len(set(names)) != len(names):
            raise ValueError(f"device kinds named twice: {', '.join(sorted(names))}")
        self._by_name = {k.name: k for k in self.kinds}
        forms = [form for k in self.kinds for form in k.forms]
        #: the ``--device`` forms, as help texts and errors list them
        self.device_forms = ", ".join(forms)
        self._device = re.compile("|".join(
            re.escape(form.removesuffix(":N")) + (":[0-9]{1,3}" if form.endswith(":N") else "")
            for form in forms))
        #: one alternation of every kind's class pattern
        self.class_pattern = "(" + "|".join(k.class_pattern for k in self.kinds) + ")"
        self._classes = [(re.compile(k.class_pattern), k) for k in self.kinds]
        hints = [k.class_hint for k in self.kinds]
        #: ``cpu-<vendor>-<level>[+ext...] (...), cuda-sm<NN>, ..., mps or xpu``
        self.class_hints = (", ".join(hints[:-1]) + " or " if len(hints) > 1 else "") + hints[-1]

    def get(self, name: str) -> DeviceKind:
        """The kind called ``name`` (``cpu``, ``cuda``, ``rocm``, ``mps``, ``xpu``)."""
        try:
            return self._by_name[name]
        except KeyError:
            raise ValueError(f"no device kind {name!r}; known: "
                             f"{', '.join(self._by_name)}") from None

    def parse(self, text: str) -> str:
        """Validate the *form* of a device string (availability is checked separately)."""
        value = text.strip().lower()
        if not self._device.fullmatch(value):
            raise ValueError(f"{text!r} is not a device; accepted: {self.device_forms}")
        return value

    def of_type(self, device: str) -> tuple[DeviceKind, ...]:
        """The kinds of ``device``'s device type (asks no torch; ROCm and CUDA share
        ``cuda``)."""
        device_type = device.split(":")[0]
        return tuple(k for k in self.kinds if k.device_type == device_type)

    def for_device(self, device: str) -> DeviceKind:
        """The kind that runs ``device`` (parsed ``--device`` text) on this machine."""
        for kind in self.of_type(device):
            if kind.claims(device):
                return kind
        raise ValueError(f"{device!r} is not a device; accepted: {self.device_forms}")

    def for_class(self, hardware_class: str) -> DeviceKind | None:
        """The kind whose class names ``hardware_class`` follows, or ``None``."""
        for pattern, kind in self._classes:
            if pattern.fullmatch(hardware_class):
                return kind
        return None

    def kind_name(self, hardware_class: str) -> str:
        """``cpu`` / ``cuda`` / ``rocm`` / ``mps`` / ``xpu`` of a class name (its first
        part where no kind's pattern matches it)."""
        kind = self.for_class(hardware_class)
        return kind.name if kind is not None else hardware_class.split("-", 1)[0]

    def available(self) -> list[str]:
        """Devices torch can use on this machine, in ``--device`` syntax."""
        return [device for kind in self.kinds for device in kind.available()]


def discover(package: str = __name__) -> list[DeviceKind]:
    """The ``KIND`` of every module in ``package`` (its ``base`` module and private ones
    aside)."""
    root = importlib.import_module(package)
    kinds = []
    for info in pkgutil.iter_modules(root.__path__):
        if info.name in _NOT_KINDS or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        kind = getattr(module, "KIND", None)
        if not isinstance(kind, DeviceKind):
            raise TypeError(f"{module.__name__} defines no KIND (a DeviceKind)")
        kinds.append(kind)
    return kinds


REGISTRY = Registry(discover())
KINDS = REGISTRY.kinds
DEVICE_FORMS = REGISTRY.device_forms
get = REGISTRY.get
parse = REGISTRY.parse
of_type = REGISTRY.of_type
for_device = REGISTRY.for_device
for_class = REGISTRY.for_class
kind_name = REGISTRY.kind_name
available = REGISTRY.available
