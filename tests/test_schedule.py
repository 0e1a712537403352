"""The conformance scheduler for ``-n N --dist loadgroup`` (conformance/schedule.py)."""

from __future__ import annotations

import heapq

from hypothesis import given, settings
from hypothesis import strategies as st

from conformance import PACKAGE_DIR
from conformance.cases import load_cases
from conformance.generate import VARIANTS
from conformance.schedule import Plan, Unit, choose, plan

CASES = load_cases()  # the shipped default run
VARIANT_CASES = load_cases(PACKAGE_DIR / "cases-variants.toml")


def default_plan() -> Plan:
    return plan(CASES.items(), CASES.compare_pairs(), VARIANTS)


# -- the plan ------------------------------------------------------------------------------
def test_every_item_is_a_group_with_its_pipeline_and_fp32_reference():
    p = default_plan()
    items = CASES.items()
    assert set(p.units) == {i.id for i in items}  # no VAE groups named
    for item in items:
        unit = p.units[item.id]
        assert unit.pipeline == f"{item.model}/{item.precision}"
        assert unit.reference == (item.precision == "fp32")
        if item.precision == "fp32":
            assert unit.needs == ()
        else:
            model, case, res, _ = item.id.split("/")
            assert unit.needs == (f"{model}/{case}/{res}/fp32",)


def test_node_ids_map_to_their_item_group():
    p = default_plan()
    item = next(i for i in CASES.items() if i.precision == "bf16")
    for nodeid in (f"conformance/test_fidelity.py::test_fidelity[{item.id}]",
                   f"conformance/test_golden.py::test_golden[{item.id}]@{item.id}",
                   f"conformance/test_invariance.py::test_invariant[{item.id}-batch-4]"):
        assert p.group_of(nodeid) == item.id
    # tests of no item are their own group
    for nodeid in ("conformance/test_vae.py::test_decode_repeatable[tiny-sd/vae/fp32]",
                   "conformance/test_fidelity.py::test_precision_ladder[tiny-sd]",
                   "conformance/test_other.py::test_plain"):
        assert p.group_of(nodeid) == nodeid


def test_tests_named_together_share_a_group_and_come_last():
    p = plan(CASES.items(), (), VARIANTS, {"tiny-sd/vae/fp32": "tiny-sd/vae",
                                           "tiny-sd/vae/bf16": "tiny-sd/vae"})
    ids = [f"conformance/test_vae.py::test_{t}[tiny-sd/vae/{prec}]"
           for t in ("decode_repeatable", "photo_round_trip") for prec in ("fp32", "bf16")]
    assert {p.group_of(n) for n in ids} == {"tiny-sd/vae"}
    assert p.units["tiny-sd/vae"].pipeline is None
    fp32 = next(g for g, u in p.units.items() if u.pipeline == "tiny-sd/fp32")
    bf16 = next(g for g, u in p.units.items() if u.pipeline == "tiny-sd/bf16")
    known = set(p.units)
    # after a worker's own work and fresh pipelines, before another worker's pipeline
    assert choose(["tiny-sd/vae", fp32], p.units, set(), set(), set(), known) == fp32
    assert choose(["tiny-sd/vae", fp32], p.units, set(), {"tiny-sd/fp32"}, set(),
                  known) == "tiny-sd/vae"
    assert choose(["tiny-sd/vae", bf16], p.units, {"tiny-sd/bf16"}, set(), set(),
                  known) == bf16  # its own, reference not made: still first
    ladder = "conformance/test_fidelity.py::test_precision_ladder[tiny-sd]"
    assert choose([ladder, "tiny-sd/vae"], p.units, set(), set(), set(), known) == \
        "tiny-sd/vae"


def test_compare_tests_join_their_item_and_need_the_base():
    pairs = VARIANT_CASES.compare_pairs()
    assert pairs
    p = plan(VARIANT_CASES.items(), pairs)
    for rel, base, other in pairs:
        nodeid = f"conformance/test_compare.py::test_compare[{other.id}-vs-{base.case.name}]"
        assert p.group_of(nodeid) == other.id
        assert base.id in p.units[other.id].needs
        assert p.units[other.id].pipeline != p.units[base.id].pipeline or \
            other.case.model_spec == base.case.model_spec, rel.name


def test_a_variant_case_is_a_pipeline_of_its_own():
    by_case = {i.case.name: i for i in VARIANT_CASES.items() if i.precision == "fp32"}
    p = plan(VARIANT_CASES.items())
    lora = [i for i in by_case.values() if i.case.lora]
    vae = [i for i in by_case.values() if i.case.vae is not None]
    assert lora and vae
    plain = next(i for i in by_case.values() if not i.case.lora and i.case.vae is None
                 and i.model == lora[0].model)
    keys = {p.units[i.id].pipeline for i in (plain, lora[0], vae[0])}
    assert len(keys) == 3


# -- choosing ------------------------------------------------------------------------------
UNITS = {
    "sd/a/fp32": Unit("sd/fp32", reference=True), "sd/b/fp32": Unit("sd/fp32", reference=True),
    "sd/a/bf16": Unit("sd/bf16", ("sd/a/fp32",)), "sd/b/bf16": Unit("sd/bf16", ("sd/b/fp32",)),
    "fx/a/fp32": Unit("fx/fp32", reference=True), "fx/a/fp16": Unit("fx/fp16", ("fx/a/fp32",)),
}
KNOWN = set(UNITS) | {"vae-test"}


def pick(queue, held=(), elsewhere=(), done=(), given=()):
    return choose(list(queue), UNITS, set(held), set(elsewhere), set(done), KNOWN, set(given))


def test_a_worker_keeps_to_its_pipeline_while_it_has_ready_work():
    assert pick(["fx/a/fp32", "sd/b/fp32"], held={"sd/fp32"}) == "sd/b/fp32"


def test_fresh_pipelines_start_with_the_references_then_the_largest():
    assert pick(["sd/a/bf16", "fx/a/fp32", "sd/a/fp32", "sd/b/fp32"]) == "sd/a/fp32"
    q = ["fx/a/fp16", "sd/a/bf16", "sd/b/bf16"]
    assert pick(q, done={"fx/a/fp32", "sd/a/fp32", "sd/b/fp32"}) == "sd/a/bf16"


def test_a_group_waits_until_its_reference_is_made_or_is_queued_on_the_same_worker():
    q = ["sd/a/bf16", "fx/a/fp16"]
    others = {"sd/fp32", "fx/fp32"}
    assert pick(q, elsewhere=others, done={"fx/a/fp32"}) == "fx/a/fp16"  # sd/a/fp32 not made
    assert pick(q, elsewhere=others, done={"sd/a/fp32"}) == "sd/a/bf16"
    assert pick(q, held={"sd/fp32"}, elsewhere={"fx/fp32"}, given={"sd/a/fp32"}) == "sd/a/bf16"


def test_a_reference_dropped_by_a_filter_does_not_block():
    units = {"sd/a/bf16": Unit("sd/bf16", ("sd/a/fp32",)),
             "fx/a/fp16": Unit("fx/fp16", ("fx/a/fp32",))}
    known = {*units, "fx/a/fp32"}  # sd/a/fp32 is not in the run
    assert choose(["fx/a/fp16", "sd/a/bf16"], units, set(), {"fx/fp32"}, set(), known,
                  set()) == "sd/a/bf16"


def test_stealing_another_workers_pipeline_comes_after_its_own_unready_work():
    q = ["sd/b/fp32", "fx/a/fp16"]
    assert pick(q, held={"fx/fp16"}, elsewhere={"sd/fp32", "fx/fp32"}) == "fx/a/fp16"
    assert pick(["sd/b/fp32"], held={"fx/fp16"}, elsewhere={"sd/fp32"}) == "sd/b/fp32"


def test_tests_of_no_item_come_last():
    assert pick(["vae-test", "sd/a/bf16"], elsewhere={"sd/fp32"}) == "sd/a/bf16"
    assert pick(["vae-test"]) == "vae-test"


# -- a whole run, simulated --------------------------------------------------------------
def simulate(p: Plan, workers: int, cost: dict[str, float], extra: list[str]):
    """Workers take one group at a time when free (as xdist hands them out); returns the
    order, each worker's pipelines and the makespan."""
    queue = list(p.units) + extra
    known = set(queue)
    held: list[set[str]] = [set() for _ in range(workers)]
    given: list[set[str]] = [set() for _ in range(workers)]
    done: set[str] = set()
    clock: list[tuple[float, int, str | None]] = [(0.0, w, None) for w in range(workers)]
    heapq.heapify(clock)
    order: list[tuple[int, str]] = []
    end = 0.0
    while clock:
        now, w, finished = heapq.heappop(clock)
        if finished is not None:
            done.add(finished)
        end = max(end, now)
        if not queue:
            continue
        elsewhere = set().union(*(held[o] for o in range(workers) if o != w))
        group = choose(queue, p.units, held[w], elsewhere, done, known, given[w])
        queue.remove(group)
        unit = p.units.get(group)
        seconds = cost.get(group, 0.1)
        if unit is not None and unit.pipeline is not None:
            if unit.pipeline not in held[w]:
                seconds += 0.3  # a load
            held[w].add(unit.pipeline)
        given[w].add(group)
        order.append((w, group))
        heapq.heappush(clock, (now + seconds, w, group))
    return order, held, end


@settings(max_examples=60, deadline=None)
@given(workers=st.integers(1, 4), seed=st.randoms(use_true_random=False))
def test_every_group_once_and_one_worker_loads_each_pipeline_once(workers, seed):
    p = plan(CASES.items(), CASES.compare_pairs(), VARIANTS,
             {f"{m}/vae/{prec}": f"{m}/vae" for m in ("tiny-sd", "tiny-flux")
              for prec in ("fp32", "bf16")})
    cost = {g: seed.uniform(0.1, 3.0) for g in p.units}
    extra = [f"conformance/test_fidelity.py::test_precision_ladder[m{i}]" for i in range(3)]
    order, held, _ = simulate(p, workers, cost, extra)
    groups = [g for _, g in order]
    assert sorted(groups) == sorted(list(p.units) + extra)
    # the tests of no item are handed out after every item
    assert groups[-len(extra):] == extra or set(groups[-len(extra):]) == set(extra)
    pipelines = {u.pipeline for u in p.units.values() if u.pipeline is not None}
    if workers == 1:
        assert held[0] == pipelines
    # each pipeline on few workers: at most one extra load per worker beyond the first
    assert sum(len(h) for h in held) <= len(pipelines) + 2 * (workers - 1)


def test_two_simulated_workers_share_the_default_run_evenly():
    p = default_plan()
    cost = {g: 1.0 for g in p.units}
    _, held2, two = simulate(p, 2, cost, [])
    _, _, one = simulate(p, 1, cost, [])
    assert one / two > 1.9
    assert sum(len(h) for h in held2) <= len({u.pipeline for u in p.units.values()}) + 2


def test_the_xdist_internals_the_scheduler_uses_are_there():
    """The scheduler subclasses xdist's LoadGroupScheduling: pyproject pins the minor
    version whose internals it uses, and this fails on one that lacks them."""
    import inspect

    from xdist.scheduler import LoadGroupScheduling

    for name in ("_split_scope", "_assign_work_unit"):
        assert callable(getattr(LoadGroupScheduling, name, None)), name
    source = "".join(inspect.getsource(c) for c in LoadGroupScheduling.__mro__
                     if c.__module__.startswith("xdist."))
    assert "self.workqueue" in source and "self.assigned_work" in source
