"""A machine's identity: readable class, dispatch features and the measured probe digests.

Two identities are the *same* when their probe digests are equal (or, for golden sets
recorded before the probe battery existed, when class, features and software stack are
equal). The own-class check is exact for a precision only where the golden's digest for
that precision equals this machine's; otherwise :func:`explain` says which probes differ and
which features explain them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import msgspec

from conformance import probes as _probes
from conformance.precision import IDENTITY_PRECISIONS, digest_key, identity_line_precisions
from conformance.schema import Amount, Int64, Problem, problem_of

#: Software stack recorded in an identity (folded into every precision digest).
STACK_KEYS = _probes.STACK_KEYS


@dataclass(frozen=True)
class Identity:
    hardware_class: str
    features: dict[str, Any]
    stack: dict[str, Any]
    probes: dict[str, str] | None = None
    precision_digests: dict[str, str] | None = None
    battery_version: int | None = None
    probe_seconds: float | None = None
    migrated_from: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def measured(self) -> bool:
        return bool(self.precision_digests)

    @property
    def digest(self) -> str:
        """12 hex naming this identity (a matrix column, a golden set's owner)."""
        if self.measured:
            body: Any = [self.hardware_class, self.battery_version,
                         sorted((self.precision_digests or {}).items())]
        else:
            body = [self.hardware_class, _stack(self.stack)]
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()
                              ).hexdigest()[:12]

    def digest_for(self, precision: str) -> str | None:
        """The recorded probe digest that predicts the bits of ``precision``: its own, or
        that of the recorded precision with the same probes
        (:func:`conformance.precision.digest_key`); ``None`` when there is none."""
        return (self.precision_digests or {}).get(digest_key(precision))

    def describe(self) -> str:
        f = self.features
        name = f.get("model_name") or f.get("vendor") or "?"
        from conformance.devices import for_class

        kind = for_class(self.hardware_class)
        flags = kind.summary(f) if kind is not None else ""
        probes = f"probes {self.digest}" if self.measured else "no probe digests"
        return f"{self.hardware_class} ({name}; {flags or 'no flags'}; {probes})"

    def same_as(self, other: Identity) -> bool:
        """Whether both name one machine configuration (one golden set, one column)."""
        if self.measured != other.measured:
            return False  # a measured set and an unmeasured one cannot be shown to agree
        if self.measured:
            return (self.battery_version == other.battery_version
                    and self.precision_digests == other.precision_digests)
        return self.same_class_and_stack(other)

    def same_class_and_stack(self, other: Identity) -> bool:
        """What decides for a set without probe digests: the class name (vendor, ATen
        level, dispatch-steering extensions, overrides) and the software stack."""
        return (self.hardware_class == other.hardware_class
                and _stack(self.stack) == _stack(other.stack))

    def to_dict(self) -> dict[str, Any]:
        return {
            "class": self.hardware_class,
            "digest": self.digest,
            "features": self.features,
            "stack": self.stack,
            "battery_version": self.battery_version,
            "probe_seconds": self.probe_seconds,
            "precision_digests": self.precision_digests,
            "probes": self.probes,
            **({"migrated_from": self.migrated_from} if self.migrated_from else {}),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Identity:
        """Parse an identity record (:class:`IdentityRecord`); raises ``ValueError`` naming
        the bad key."""
        record = problem_of(data, IdentityRecord)
        if isinstance(record, Problem):
            raise ValueError(Problem(("identity", *record.keys), record.text,
                                     record.lead).message())
        ident = cls(
            hardware_class=record.hardware_class,
            features=record.features,
            stack=record.stack,
            probes=record.probes,
            precision_digests=record.precision_digests,
            battery_version=record.battery_version,
            probe_seconds=record.probe_seconds,
            migrated_from=record.migrated_from,
        )
        if record.digest is not msgspec.UNSET and record.digest != ident.digest:
            raise ValueError(
                f"identity digest {record.digest!r} does not match its contents "
                f"({ident.digest}): edited after recording?"
            )
        return ident


class IdentityRecord(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An identity as :meth:`Identity.to_dict` writes it (a golden manifest's, a results
    file's); ``digest``, when there, must be the digest of the rest."""

    hardware_class: str = msgspec.field(name="class")
    features: dict[str, Any]
    stack: dict[str, Any]
    digest: Any = msgspec.UNSET
    battery_version: Int64 | None = None
    probe_seconds: Amount | None = None
    precision_digests: dict[str, str] | None = None
    probes: dict[str, str] | None = None
    migrated_from: Any = None


def _stack(stack: dict[str, Any]) -> dict[str, Any]:
    return {k: stack.get(k) for k in STACK_KEYS}


def stack_of(fingerprint: dict[str, Any]) -> dict[str, Any]:
    return {k: fingerprint.get(k) for k in STACK_KEYS}


def measure(device: str, fingerprint: dict[str, Any]) -> Identity:
    """Run the probe battery on ``device`` and build this process's identity."""
    from conformance.devices import for_device
    from conformance.hardware import detect_class

    features = for_device(device).features(device)
    result = _probes.run_battery(device)
    stack = stack_of(fingerprint)
    return Identity(
        # the fingerprint names the class already (hardware.fingerprint)
        hardware_class=fingerprint.get("hardware_class") or detect_class(device).name,
        features=features,
        stack=stack,
        probes=result.digests,
        precision_digests=_probes.precision_digests(result.digests, stack,
                                                     IDENTITY_PRECISIONS),
        battery_version=_probes.BATTERY_VERSION,
        probe_seconds=result.seconds,
    )


@dataclass(frozen=True)
class Match:
    """Whether a golden of identity ``theirs`` can be held to the exact tier here."""

    exact: bool
    reason: str  # empty when exact and measured


def compare(mine: Identity, theirs: Identity | None, precision: str,
            fingerprint_diffs: list[str] | None = None) -> Match:
    """The tier decision's input for one precision (see module docstring)."""
    if theirs is None:
        diffs = fingerprint_diffs or []
        if diffs:
            return Match(False, "; ".join(diffs))
        return Match(True, "the golden set has no identity; fingerprint keys agree")
    a, b = mine.digest_for(precision), theirs.digest_for(precision)
    if a is not None and b is not None and mine.battery_version == theirs.battery_version:
        if a == b:
            return Match(True, "")
        return Match(False, explain(mine, theirs, precision))
    if mine.same_class_and_stack(theirs):
        return Match(True, "the golden set predates the probe battery; class and software "
                     "stack agree")
    return Match(False, explain(mine, theirs, precision))


def explain(mine: Identity, theirs: Identity, precision: str | None = None) -> str:
    """Why two identities may give different bits: the probes and the features that differ."""
    return "; ".join(differences(mine, theirs, precision)) or "identities differ"


def differences(mine: Identity, theirs: Identity, precision: str | None = None) -> list[str]:
    """What differs between two identities, in words, one part each: the probes (of what
    ``precision`` depends on) by group, the CPU / GPU features, the software stack (thread
    count, library versions)."""
    parts: list[str] = []
    if mine.probes and theirs.probes and mine.battery_version == theirs.battery_version:
        differing = _probes.differing_probes(mine.probes, theirs.probes, precision)
        if differing:
            parts.append(f"{_probes.summarize_probes(differing)} probes differ "
                         f"({len(differing)} of {len(mine.probes)})")
    elif not theirs.measured:
        parts.append("the golden set has no probe digests (recorded before the battery)")
    elif mine.battery_version != theirs.battery_version:
        parts.append(f"probe battery v{mine.battery_version} != v{theirs.battery_version}")
    parts += feature_differences(mine.features, theirs.features)
    for key in STACK_KEYS:
        if mine.stack.get(key) != theirs.stack.get(key):
            parts.append(f"{key} {mine.stack.get(key)!r} here, {theirs.stack.get(key)!r} "
                         "in the golden's")
    if not parts and mine.hardware_class != theirs.hardware_class:
        parts.append(f"class {mine.hardware_class} != {theirs.hardware_class}")
    return parts


def feature_differences(mine: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    out = []
    if mine.get("vendor") != theirs.get("vendor"):
        out.append(f"vendor {mine.get('vendor')} here, {theirs.get('vendor')} in the golden's")
    a, b = set(mine.get("flags") or ()), set(theirs.get("flags") or ())
    if a - b:
        out.append(f"this CPU has {', '.join(sorted(a - b))}, the golden's has none")
    if b - a:
        out.append(f"the golden's CPU has {', '.join(sorted(b - a))}, this one has none")
    if mine.get("aten_level") != theirs.get("aten_level"):
        out.append(f"ATen level {mine.get('aten_level')} here, {theirs.get('aten_level')} "
                   "in the golden's")
    env_a, env_b = mine.get("env") or {}, theirs.get("env") or {}
    for key in sorted(set(env_a) | set(env_b)):
        if key != "ATEN_CPU_CAPABILITY" and env_a.get(key) != env_b.get(key):
            out.append(f"{key}={env_a.get(key)} here, {env_b.get(key)} in the golden's")
    for key in ("sm", "model_name") if mine.get("sm") or theirs.get("sm") else ():
        if mine.get(key) != theirs.get(key):
            out.append(f"{key} {mine.get(key)} here, {theirs.get(key)} in the golden's")
    return out


def format_identity(ident: Identity) -> list[str]:
    """Lines for the report header and ``conformance fingerprint``."""
    f = ident.features
    lines = [f"conformance: identity {ident.hardware_class} [{ident.digest}]"]
    from conformance.devices import for_class

    kind = for_class(ident.hardware_class)
    if kind is not None:
        lines.append(f"conformance: {kind.feature_line(f)}")
    if ident.measured:
        digests = " ".join(f"{k}={v[:6]}" for k, v in (ident.precision_digests or {}).items()
                           if k in identity_line_precisions())
        lines.append(f"conformance: probes {len(ident.probes or {})} in "
                     f"{ident.probe_seconds:.2f} s; {digests}")
    return lines
