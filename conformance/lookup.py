"""Which golden decides an item's own-class check: chosen by what this machine computes.

A golden set's class name (``cpu-intel-avx512+amx+bf16+fp16``) is a guess at the bits its
machine produced; its identity's precision digests measure them (:mod:`conformance.probes`).
So the own-class check looks its golden up by the measured identity, not by the name. Among
the sets of the item's model that hold the item (same case parameters, same size):

1. **equal digest**: a set whose digest for the item's precision equals this machine's (same
   probe battery) predicts the very bits: the **exact** tier. Where several do, this
   machine's own class name is taken first, then the first by name; the others are named
   (:attr:`Choice.sharing`), and any of them would decide the same (``conformance validate``
   reports sets that share a digest but hold different images: a broken prediction).
2. **nearest**: otherwise the set that agrees with this machine most, ranked by

   a. the same device kind (``cpu``, ``cuda``, ``rocm``, ``mps``, ``xpu``);
   b. the most probes the precision depends on with equal digests (a set without probe
      digests counts none);
   c. the most software-stack keys equal (torch, diffusers, transformers, threads,
      deterministic);
   d. this machine's own class name;
   e. the class name, alphabetically (a stable last resort);

   held to the **close** tier when its class name is this machine's (the same hardware with
   other threads or libraries) and to the **perceptual** tier otherwise, with what differs
   named in words (:func:`conformance.identity.differences`).
3. **none**: no set of the model holds the item: the check is skipped (or, with
   ``--strict-golden``, fails).

A set without a measured identity (recorded before the probe battery) predicts exactness
only under this machine's own class name, as it always did (class and software stack, or
the pinned fingerprint keys, agree). A process that measured no identity (unit tests of the
session) looks up its own class name only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from conformance.cases import Item
from conformance.core import Tier
from conformance.errors import ConformanceInputError
from conformance.golden import GoldenEntry, GoldenStore
from conformance.identity import Identity, differences
from conformance.identity import compare as compare_identity
from conformance.probes import STACK_KEYS, agreeing_probes

#: How a set was chosen (the ``by`` of :class:`Choice`, written to results files).
BY_IDENTITY = "identity"
BY_NEAREST = "nearest"
BY_CLASS = "class"


def device_kind(hardware_class: str) -> str:
    """``cpu`` / ``cuda`` / ``rocm`` / ``mps`` / ``xpu`` of a class name."""
    from conformance.devices import kind_name

    return kind_name(hardware_class)


@dataclass(frozen=True)
class Choice:
    """The golden set that decides an item's own-class check, and at which tier."""

    golden_class: str
    entry: GoldenEntry
    tier: Tier
    by: str  # BY_IDENTITY, BY_NEAREST or BY_CLASS
    #: why the tier is not exact, in words (empty when exact)
    why_not_exact: tuple[str, ...] = ()
    #: the other sets whose digest equals this machine's (they predict the same bits)
    sharing: tuple[str, ...] = ()

    def describe(self) -> str:
        """``the X golden (identity: same fp32 bits as this machine; also Y)``, for
        messages."""
        text = f"the {self.golden_class} golden"
        if self.by == BY_IDENTITY:
            also = f"; also {', '.join(self.sharing)}" if self.sharing else ""
            return f"{text} (chosen by identity: its {self.entry.precision} digest equals " \
                   f"this machine's{also})"
        if self.by == BY_NEAREST:
            return f"{text} (the nearest set: no set predicts this machine's " \
                   f"{self.entry.precision} bits)"
        return text


@dataclass(frozen=True)
class _Candidate:
    golden_class: str
    entry: GoldenEntry
    identity: Identity | None


def candidates(store: GoldenStore, item: Item, own_class: str,
               fits: Callable[[GoldenEntry], bool]) -> list[_Candidate]:
    """The sets of ``item.model`` holding ``item`` (an entry that ``fits``: same case
    parameters and size). The own class's set is read as before: a problem with it raises
    (the check reports it); another set that cannot be read is passed over here (the
    own-class outcome's ``by_class`` names its problem)."""
    out = []
    for cls in store.classes(item.model):
        try:
            entry = store.lookup(item, cls)
            manifest = store.manifest(item.model, cls) if entry is not None else None
        except ConformanceInputError:
            if cls == own_class:
                raise
            continue
        if entry is None or manifest is None:
            continue
        if cls != own_class and not fits(entry):
            continue  # another set's golden of an older case: not this item's
        out.append(_Candidate(cls, entry, manifest.identity))
    return out


def equal_digest(mine: Identity, theirs: Identity | None, precision: str) -> bool:
    """Whether two measured identities (same probe battery) give ``precision`` one digest:
    the suite's prediction that their images of that precision are bit-identical."""
    if theirs is None or not mine.measured or not theirs.measured:
        return False
    return predicts_same_bits(mine.digest_for(precision), mine.battery_version,
                              theirs.digest_for(precision), theirs.battery_version)


def predicts_same_bits(digest: str | None, battery: object, other_digest: str | None,
                       other_battery: object) -> bool:
    """The rule of :func:`equal_digest` on a precision's two digests and the versions of
    the probe batteries that measured them (identities in any shape: records, or the
    matrix's text summaries): a digest, the same on both sides, of one battery."""
    return digest is not None and digest == other_digest and battery == other_battery


def _rank(mine: Identity, own_class: str, precision: str,
          cand: _Candidate) -> tuple[Any, ...]:
    """Sort key of a candidate that does not predict this machine's bits (smaller first)."""
    theirs = cand.identity
    probes = -1
    stack = 0
    if theirs is not None:
        if mine.probes and theirs.probes and mine.battery_version == theirs.battery_version:
            probes = agreeing_probes(mine.probes, theirs.probes, precision)
        stack = sum(mine.stack.get(k) == theirs.stack.get(k) for k in STACK_KEYS)
    return (device_kind(cand.golden_class) != device_kind(own_class), -probes, -stack,
            cand.golden_class != own_class, cand.golden_class)


def choose(store: GoldenStore, item: Item, own_class: str, mine: Identity | None,
           fingerprint_diffs: Callable[[GoldenEntry], list[str]],
           fits: Callable[[GoldenEntry], bool] = lambda _e: True) -> Choice | None:
    """The set that decides ``item``'s own-class check on this machine (module docstring),
    or ``None`` when no set of the model holds the item. ``fingerprint_diffs(entry)``: the
    pinned fingerprint keys that differ from the entry's (for sets without an identity)."""
    if mine is None:  # nothing measured: this class's own set, as recorded
        entry = store.lookup(item, own_class)
        if entry is None:
            return None
        diffs = fingerprint_diffs(entry)
        return Choice(own_class, entry, Tier.CLOSE if diffs else Tier.EXACT, BY_CLASS,
                      tuple(diffs))
    found = candidates(store, item, own_class, fits)
    if not found:
        return None
    precision = item.precision
    equal = sorted((c for c in found if equal_digest(mine, c.identity, precision)),
                   key=lambda c: (c.golden_class != own_class, c.golden_class))
    if equal:
        first = equal[0]
        return Choice(first.golden_class, first.entry, Tier.EXACT, BY_IDENTITY,
                      sharing=tuple(c.golden_class for c in equal[1:]))
    own = next((c for c in found if c.golden_class == own_class), None)
    if own is not None and (own.identity is None or not own.identity.measured):
        # a set recorded before the battery: class name, stack or fingerprint decide
        match = compare_identity(mine, own.identity, precision, fingerprint_diffs(own.entry))
        if match.exact:
            return Choice(own_class, own.entry, Tier.EXACT, BY_CLASS)
    best = min(found, key=lambda c: _rank(mine, own_class, precision, c))
    tier = Tier.CLOSE if best.golden_class == own_class else Tier.PERCEPTUAL
    if best.identity is None:
        why = tuple(fingerprint_diffs(best.entry)) or ("the golden set has no identity",)
    else:
        why = tuple(differences(mine, best.identity, precision))
    return Choice(best.golden_class, best.entry, tier, BY_NEAREST, why)


def sharing_sets(store: GoldenStore, models: list[str], mine: Identity,
                 precisions: tuple[str, ...]) -> dict[str, list[str]]:
    """Per precision, the golden sets (``model/class``) whose digest equals this machine's:
    the sets whose goldens this machine is predicted to reproduce bit for bit. Sets that
    cannot be read are left out."""
    out: dict[str, list[str]] = {p: [] for p in precisions}
    for model, cls, manifest in store.readable_sets(models):
        for p in precisions:
            if equal_digest(mine, manifest.identity, p):
                out[p].append(f"{model}/{cls}")
    return out
