"""The own-class check's golden lookup by identity (conformance.lookup).

Golden sets are planted with identities taken from this machine's own probe battery: renamed
to foreign classes, with chosen probes altered, so that a set predicts this machine's bits
for some precisions and not for others. Nothing here is a hard-coded digest.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.cases import load_cases
from conformance.core import Tier
from conformance.golden import GoldenStore
from conformance.hardware import fingerprint
from conformance.identity import Identity, measure
from conformance.lookup import (
    BY_CLASS,
    BY_IDENTITY,
    BY_NEAREST,
    choose,
    device_kind,
    equal_digest,
    sharing_sets,
)
from conformance.probes import agreeing_probes, precision_digests
from tests.identities import identity_for
from tests.runs import OWN, SMALL_CASES

PRECISIONS = ("fp32", "bf16")


@pytest.fixture(scope="module")
def machine():
    """This machine's measured identity and fingerprint (what a session measures)."""
    fp = fingerprint("cpu", 1)
    return measure("cpu", fp), fp


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    path = tmp_path_factory.mktemp("cases") / "cases.toml"
    path.write_text(SMALL_CASES)
    return {i.id: i for i in load_cases(path).items()}


def planted(mine: Identity, fp: dict, cls: str, alter: frozenset[str] = frozenset(),
            stack: dict | None = None) -> Identity:
    """``mine`` under the class ``cls``, with the probes named in ``alter`` given other
    digests and the precision digests recomputed from them."""
    probes = {k: ("f" * 16 if k in alter else v) for k, v in (mine.probes or {}).items()}
    ident = identity_for(cls, fp, probes=probes, digests={"x": "y"})
    stack = {**ident.stack, **(stack or {})}
    return dataclasses.replace(
        ident, stack=stack,
        precision_digests=precision_digests(probes, stack, tuple(mine.precision_digests or {})))


def plant(store: GoldenStore, item, cls: str, identity: Identity | None, fp: dict,
          seed: int = 0) -> None:
    image = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    store.record(item, cls, image, [], fp, "2026-12-06T00:00:00Z", "test", identity=identity)


def keys_of(mine: Identity, group: str, dtype: str) -> frozenset[str]:
    """The probe keys of one group name prefix (``linear``, ``sdpa``...) and dtype."""
    return frozenset(k for k in mine.probes or {} if k.startswith(group)
                     and k.endswith(f"/{dtype}"))


def no_diffs(_entry):
    return []


# -- equal digest: exact, whatever the class name ------------------------------------------
def test_a_foreign_class_with_this_machines_digest_decides_at_the_exact_tier(
        tmp_path, machine, items):
    mine, fp = machine
    store = GoldenStore(tmp_path)
    item = items["tiny-sd/dot/32x32/fp32"]
    plant(store, item, "cpu-amd-avx2", planted(mine, fp, "cpu-amd-avx2"), fp)
    choice = choose(store, item, OWN, mine, no_diffs)
    assert (choice.golden_class, choice.tier, choice.by) == ("cpu-amd-avx2", Tier.EXACT,
                                                             BY_IDENTITY)
    assert choice.why_not_exact == () and choice.sharing == ()
    assert "chosen by identity: its fp32 digest equals this machine's" in choice.describe()


def test_several_sets_sharing_the_digest_the_own_class_first_then_by_name(
        tmp_path, machine, items):
    mine, fp = machine
    store = GoldenStore(tmp_path)
    item = items["tiny-sd/dot/32x32/fp32"]
    for cls in ("cpu-intel-avx2", "cpu-amd-avx2"):
        plant(store, item, cls, planted(mine, fp, cls), fp)
    choice = choose(store, item, "cpu-zzz-avx512", mine, no_diffs)
    assert choice.golden_class == "cpu-amd-avx2" and choice.sharing == ("cpu-intel-avx2",)
    assert "also cpu-intel-avx2" in choice.describe()
    plant(store, item, OWN, mine, fp)
    choice = choose(store, item, OWN, mine, no_diffs)
    assert choice.golden_class == OWN and set(choice.sharing) == {"cpu-amd-avx2",
                                                                  "cpu-intel-avx2"}


def test_a_digest_equal_for_one_precision_only_decides_that_precision(
        tmp_path, machine, items):
    """bf16 GEMM probes altered: the set still predicts fp32 (exact), not bf16 (nearest,
    perceptual under a foreign name, with the probes named)."""
    mine, fp = machine
    store = GoldenStore(tmp_path)
    theirs = planted(mine, fp, "cpu-amd-avx512+bf16", keys_of(mine, "linear", "bf16"))
    for item_id in ("tiny-sd/dot/32x32/fp32", "tiny-sd/dot/32x32/bf16"):
        plant(store, items[item_id], "cpu-amd-avx512+bf16", theirs, fp)
    exact = choose(store, items["tiny-sd/dot/32x32/fp32"], OWN, mine, no_diffs)
    assert exact.tier is Tier.EXACT and exact.by == BY_IDENTITY
    near = choose(store, items["tiny-sd/dot/32x32/bf16"], OWN, mine, no_diffs)
    assert (near.tier, near.by) == (Tier.PERCEPTUAL, BY_NEAREST)
    assert any("bf16 GEMM probes differ" in w for w in near.why_not_exact), near.why_not_exact
    assert "the nearest set" in near.describe()


# -- nearest: ranked ------------------------------------------------------------------------
def test_nearest_is_the_set_with_most_probes_in_common(tmp_path, machine, items):
    mine, fp = machine
    store = GoldenStore(tmp_path)
    item = items["tiny-sd/dot/32x32/bf16"]
    few = keys_of(mine, "linear-64x256x256", "bf16")
    many = keys_of(mine, "linear", "bf16") | keys_of(mine, "sdpa", "bf16")
    plant(store, item, "cpu-amd-avx2", planted(mine, fp, "cpu-amd-avx2", many), fp)
    plant(store, item, "cpu-intel-avx2", planted(mine, fp, "cpu-intel-avx2", few), fp)
    choice = choose(store, item, OWN, mine, no_diffs)
    assert choice.golden_class == "cpu-intel-avx2" and choice.tier is Tier.PERCEPTUAL


def test_the_own_class_with_other_bits_is_held_to_the_close_tier(tmp_path, machine, items):
    """Same hardware, other threads: the own set is the nearest and gives the close tier,
    and the reason is said in words."""
    mine, fp = machine
    store = GoldenStore(tmp_path)
    item = items["tiny-sd/dot/32x32/fp32"]
    reductions = keys_of(mine, "reduce", "fp32")
    plant(store, item, OWN, planted(mine, fp, OWN, reductions, stack={"threads": 2}), fp)
    plant(store, item, "cpu-amd-avx2",
          planted(mine, fp, "cpu-amd-avx2", reductions | keys_of(mine, "conv", "fp32")), fp)
    choice = choose(store, item, OWN, mine, no_diffs)
    assert (choice.golden_class, choice.tier, choice.by) == (OWN, Tier.CLOSE, BY_NEAREST)
    assert "threads 1 here, 2 in the golden's" in choice.why_not_exact


def test_the_same_device_kind_comes_before_probes_in_common(tmp_path, machine, items):
    mine, fp = machine
    store = GoldenStore(tmp_path)
    item = items["tiny-sd/dot/32x32/bf16"]
    gpu = dataclasses.replace(planted(mine, fp, "cpu-amd-avx2", keys_of(mine, "gelu", "bf16")),
                              hardware_class="cuda-sm90",
                              features={"model_name": "H100", "sm": "9.0"})
    plant(store, item, "cuda-sm90", gpu, fp)
    cpu = planted(mine, fp, "cpu-amd-avx2", keys_of(mine, "linear", "bf16")
                  | keys_of(mine, "conv", "bf16"))
    plant(store, item, "cpu-amd-avx2", cpu, fp)
    assert agreeing_probes(mine.probes, gpu.probes, "bf16") > agreeing_probes(
        mine.probes, cpu.probes, "bf16")
    assert choose(store, item, OWN, mine, no_diffs).golden_class == "cpu-amd-avx2"
    assert device_kind("cuda-sm90") == "cuda" and device_kind(OWN) == "cpu"


# -- no identity, no golden, other cases -------------------------------------------------
def test_without_a_measured_identity_only_the_own_class_is_looked_up(tmp_path, machine, items):
    mine, fp = machine
    store = GoldenStore(tmp_path)
    item = items["tiny-sd/dot/32x32/fp32"]
    plant(store, item, "cpu-amd-avx2", planted(mine, fp, "cpu-amd-avx2"), fp)
    assert choose(store, item, OWN, None, no_diffs) is None
    plant(store, item, OWN, None, fp)
    choice = choose(store, item, OWN, None, lambda e: ["threads 1 != 2"])
    assert (choice.golden_class, choice.tier, choice.by) == (OWN, Tier.CLOSE, BY_CLASS)
    assert choice.why_not_exact == ("threads 1 != 2",)


def test_a_set_without_identity_under_the_own_class_is_exact_when_the_fingerprint_agrees(
        tmp_path, machine, items):
    mine, fp = machine
    store = GoldenStore(tmp_path)
    item = items["tiny-sd/dot/32x32/fp32"]
    plant(store, item, OWN, None, fp)
    choice = choose(store, item, OWN, mine, no_diffs)
    assert (choice.tier, choice.by) == (Tier.EXACT, BY_CLASS)
    assert choose(store, item, OWN, mine, lambda e: ["torch 1 != 2"]).tier is Tier.CLOSE


def test_no_set_holding_the_item_is_none(tmp_path, machine, items):
    mine, fp = machine
    store = GoldenStore(tmp_path)
    assert choose(store, items["tiny-sd/dot/32x32/fp32"], OWN, mine, no_diffs) is None
    plant(store, items["tiny-sd/dot/32x32/bf16"], "cpu-amd-avx2",
          planted(mine, fp, "cpu-amd-avx2"), fp)
    assert choose(store, items["tiny-sd/dot/32x32/fp32"], OWN, mine, no_diffs) is None


def test_another_sets_golden_of_an_older_case_is_passed_over(tmp_path, machine, items):
    mine, fp = machine
    store = GoldenStore(tmp_path)
    item = items["tiny-sd/dot/32x32/fp32"]
    plant(store, item, "cpu-amd-avx2", planted(mine, fp, "cpu-amd-avx2"), fp)
    assert choose(store, item, OWN, mine, no_diffs, fits=lambda e: False) is None


def test_an_unreadable_foreign_set_is_passed_over_the_own_set_raises(tmp_path, machine, items):
    from conformance.errors import ManifestError

    mine, fp = machine
    store = GoldenStore(tmp_path)
    item = items["tiny-sd/dot/32x32/fp32"]
    plant(store, item, "cpu-intel-avx2", planted(mine, fp, "cpu-intel-avx2"), fp)
    (tmp_path / "tiny-sd" / "cpu-amd-avx2").mkdir()
    (tmp_path / "tiny-sd" / "cpu-amd-avx2" / "manifest.json").write_text("{")
    assert choose(GoldenStore(tmp_path), item, OWN, mine,
                  no_diffs).golden_class == "cpu-intel-avx2"
    (tmp_path / "tiny-sd" / OWN).mkdir()
    (tmp_path / "tiny-sd" / OWN / "manifest.json").write_text("{")
    with pytest.raises(ManifestError, match=r"manifest\.json"):
        choose(GoldenStore(tmp_path), item, OWN, mine, no_diffs)


def test_sharing_sets_lists_per_precision_the_sets_with_this_machines_digest(
        tmp_path, machine, items):
    mine, fp = machine
    store = GoldenStore(tmp_path)
    plant(store, items["tiny-sd/dot/32x32/fp32"], "cpu-amd-avx2",
          planted(mine, fp, "cpu-amd-avx2", keys_of(mine, "linear", "bf16")), fp)
    plant(store, items["tiny-flux/flux-dot/32x32/fp32"], "cpu-intel-avx2",
          planted(mine, fp, "cpu-intel-avx2"), fp)
    found = sharing_sets(store, store.models(), mine, PRECISIONS)
    assert found == {"fp32": ["tiny-flux/cpu-intel-avx2", "tiny-sd/cpu-amd-avx2"],
                     "bf16": ["tiny-flux/cpu-intel-avx2"]}


# -- the ranking, for any sets -----------------------------------------------------------
@given(st.lists(st.tuples(st.sampled_from(["cpu-amd-avx2", "cpu-intel-avx2", "cpu-amd-avx512",
                                           "cpu-intel-avx512", "cpu-amd-default"]),
                          st.sets(st.sampled_from(["linear", "sdpa", "conv", "gelu", "reduce",
                                                   "softmax"]), max_size=6),
                          st.booleans()),
                min_size=1, max_size=4, unique_by=lambda t: t[0]))
def test_choice_is_exact_iff_a_set_has_this_digest_else_the_most_probes_in_common(
        tmp_path_factory, machine, items, sets):
    """For any sets: exact exactly when some set's digest equals this machine's; otherwise
    no other set of the same device kind agrees on more probes of the precision."""
    mine, fp = machine
    store = GoldenStore(tmp_path_factory.mktemp("g"))
    item = items["tiny-sd/dot/32x32/bf16"]
    made = {}
    for cls, groups, in_fp32 in sets:
        dtype = "fp32" if in_fp32 else "bf16"
        alter = frozenset().union(*(keys_of(mine, g, dtype) for g in groups))
        made[cls] = planted(mine, fp, cls, alter)
        plant(store, item, cls, made[cls], fp)
    choice = choose(store, item, OWN, mine, no_diffs)
    predicting = [c for c, ident in made.items() if equal_digest(mine, ident, "bf16")]
    assert (choice.tier is Tier.EXACT) == bool(predicting)
    if predicting:
        assert choice.golden_class in predicting
        return
    best = max(agreeing_probes(mine.probes, i.probes, "bf16") for i in made.values())
    assert agreeing_probes(mine.probes, made[choice.golden_class].probes, "bf16") == best
    assert choice.tier is (Tier.CLOSE if choice.golden_class == OWN else Tier.PERCEPTUAL)
