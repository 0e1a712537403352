"""Identities for test golden sets: features consistent with a class name."""

from __future__ import annotations

from typing import Any

from conformance.hardware import CLASS_TAGS, cpu_class_name
from conformance.identity import Identity, stack_of

_FLAG_OF_TAG = {tag: flag for flag, tag in CLASS_TAGS}


def identity_for(cls: str, fp: dict[str, Any], digests: dict[str, str] | None = None,
                 probes: dict[str, str] | None = None) -> Identity:
    """An identity whose features imply ``cls`` (``cpu-<vendor>-<level>[+tag...]``)."""
    name, *tags = cls.split("+")
    _, vendor, level = name.split("-", 2)
    features = {"vendor": vendor, "model_name": fp.get("device_name"), "family": None,
                "model": None, "machine": "x86_64",
                "flags": sorted(_FLAG_OF_TAG[t] for t in tags), "aten_level": level, "env": {}}
    assert cpu_class_name(features) == cls, (cpu_class_name(features), cls)
    return Identity(cls, features, stack_of(fp), probes=probes, precision_digests=digests,
                    battery_version=1 if digests else None)
