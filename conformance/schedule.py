"""How a conformance run under ``-n N --dist loadgroup`` hands its tests to the workers.

Each conformance item is one xdist group (its checks share one generation). xdist's own
``loadgroup`` hands the groups out in queue order, so both workers soon hold every
(model, precision) pipeline, and a worker whose fidelity check needs the fp32 image of the
same case waits for the worker that is making it. This scheduler hands a free worker:

1. a group of a pipeline it already holds, whose fp32 reference is finished;
2. else a group of a pipeline no worker holds yet (fp32 first: they are the references;
   then the pipeline with the most groups left), reference finished;
3. else a group of a pipeline it holds whose reference is not finished (it waits for it, or
   makes it itself when no worker has it yet: never twice, see ``gencache``);
4. else the VAE checks, one group per model (they share that model's fp32 decodes in one
   process); else a group of a pipeline another worker holds (one more load, to keep
   both busy to the end), most groups left first;
5. tests of no item last: the precision ladder reads every precision's generation, which
   by then is made.

The pipeline and the groups an item needs come from the case file (:func:`plan`), so the
controller imports neither torch nor diffusers for it. Bits never depend on the order:
every worker pins its threads, and a generation another worker made is read, not redone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from conformance.precision import REFERENCE_PRECISION


@dataclass(frozen=True)
class Unit:
    """What the scheduler knows of one xdist group."""

    #: the pipeline's :func:`~conformance.generate.pipeline_label` (the case's own model
    #: spec, VAE swap and LoRA make it another); None for a group of tests of no item
    pipeline: str | None
    #: groups whose generation this group's checks read (the fp32 reference, a compare base)
    needs: tuple[str, ...] = ()
    #: an item at the reference precision (the other items' references)
    reference: bool = False


def pipeline_key(item: Any) -> str:
    """The pipeline an item runs on, as the scheduler names it."""
    from conformance.generate import pipeline_label

    case = item.case
    return pipeline_label(case.model_spec.name, item.precision, case.vae, case.lora)


def _unit(item: Any) -> Unit:
    return Unit(pipeline_key(item), reference=item.precision == REFERENCE_PRECISION)


@dataclass(frozen=True)
class Plan:
    """The run's groups (item ids) and, per test parameter id, the group it belongs to."""

    units: dict[str, Unit]
    #: a test's parameter id (what its node id holds in brackets) -> its group
    groups: dict[str, str]

    def group_of(self, nodeid: str) -> str:
        """The group of a test node id; a test of no item (VAE check, ladder) is its own.

        The groups come from the case file, not from ``@group`` node id suffixes: with
        pytest 9.2 xdist 3.8's ``loadgroup`` no longer adds them (pytest-xdist#1386)."""
        if nodeid.rfind("@") > nodeid.rfind("]"):
            nodeid = nodeid[: nodeid.rfind("@")]
        if nodeid.endswith("]") and "[" in nodeid:
            return self.groups.get(nodeid[nodeid.index("[") + 1 : -1], nodeid)
        return nodeid


def plan(items: Iterable[Any], pairs: Iterable[tuple[Any, Any, Any]] = (),
         variants: Iterable[str] = (), together: Mapping[str, str] | None = None) -> Plan:
    """The :class:`Plan` of tests of ``items`` (:class:`~conformance.cases.Item`, each its
    own test), ``pairs`` (what ``Cases.compare_pairs`` returns: tests ITEM-vs-BASECASE),
    ``variants`` (tests ITEM-VARIANT of every item) and ``together`` (parameter ids of tests
    of no item -> the group they share): :func:`plan_params` of those tests."""
    from conformance.checks import Param, item_param

    params: list[Param] = [Param((), pid, group) for pid, group in (together or {}).items()]
    for item in items:
        params.append(item_param(item))
        params += [item_param(item, v, id=f"{item.id}-{v}") for v in variants]
    params += [item_param(other, rel, id=f"{other.id}-vs-{base.case.name}", needs=(base,))
               for rel, base, other in pairs]
    return plan_params(params)


def plan_params(params: Iterable[Any]) -> Plan:
    """The run's :class:`Plan` from its tests (:class:`~conformance.checks.Param`, what the
    check kinds parametrize): each test's id in its group; per item its pipeline and the
    items it reads (the fp32 reference of a non-fp32 item; what a test of it needs, such as
    a compare relation's base); a group of tests of no item has no pipeline (the VAE checks
    of one model reuse one process's fp32 decodes)."""
    from conformance.cases import Item

    units: dict[str, Unit] = {}
    needs: dict[str, list[str]] = {}
    groups: dict[str, str] = {}
    for param in params:
        groups[param.id] = param.group
        item = param.item
        if item is None:
            units.setdefault(param.group, Unit(None))
            continue
        units[item.id] = _unit(item)
        if item.precision != REFERENCE_PRECISION:
            needs.setdefault(item.id, []).append(
                Item(item.case, item.resolution, REFERENCE_PRECISION).id)
        for base in param.needs:
            units.setdefault(base.id, _unit(base))
            needs.setdefault(item.id, []).append(base.id)
    return Plan({gid: replace(u, needs=tuple(dict.fromkeys(needs.get(gid, ()))))
                 for gid, u in units.items()}, groups)


def choose(queue: Sequence[str], units: Mapping[str, Unit], held: set[str],
           held_elsewhere: set[str], done: set[str], known: set[str],
           given: set[str] = frozenset()) -> str:  # type: ignore[assignment]
    """The group of ``queue`` (not empty) a free worker takes next (see the module text).

    ``held``: pipelines this worker holds; ``held_elsewhere``: pipelines other workers
    hold; ``done``: finished groups; ``known``: every group of the run (a needed group that
    is not one, e.g. dropped by ``-k``, counts as ready: whoever needs it makes it);
    ``given``: groups already handed to this worker (it runs them first, so a group that
    needs one of them is ready too)."""
    left = Counter(units[g].pipeline for g in queue if g in units)

    def ready(group: str) -> bool:
        return all(n in done or n in given or n not in known for n in units[group].needs)

    def rank(index: int, group: str) -> tuple[int, int, int, int]:
        unit = units.get(group)
        if unit is None:
            return (5, 0, 0, index)
        if unit.pipeline is None:  # before taking over another worker's pipeline
            return (4, -1, 0, index)
        pipeline, is_ready = unit.pipeline, ready(group)
        if pipeline in held and is_ready:
            return (1, 0, 0, index)
        if pipeline not in held and pipeline not in held_elsewhere and is_ready:
            return (2, 0 if unit.reference else 1, -left[pipeline], index)
        if pipeline in held:
            return (3, 0, 0, index)
        return (4, 0 if is_ready else 1, -left[pipeline], index)

    return min(enumerate(queue), key=lambda pair: rank(*pair))[1]


def make_scheduler(config: Any, log: Any, the_plan: Plan) -> Any:
    """xdist's ``loadgroup`` scheduling with :func:`choose` picking each worker's next
    group (imported here: xdist is needed only for ``-n``)."""
    from xdist.scheduler import LoadGroupScheduling

    class PipelineAffinityScheduling(LoadGroupScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return the_plan.group_of(nodeid)

        def _pipelines(self, work: Mapping[str, Any]) -> set[str]:
            """The pipelines a worker holds: those of the groups it was given."""
            units = (the_plan.units.get(scope) for scope in work)
            return {u.pipeline for u in units if u is not None and u.pipeline is not None}

        def _assign_work_unit(self, node: Any) -> None:
            """xdist's assignment of the queue's first group, with :func:`choose`'s
            group moved to the front first."""
            mine = self.assigned_work.get(node, {})
            elsewhere = set().union(*(self._pipelines(work) for other, work
                                      in self.assigned_work.items() if other is not node))
            assigned = {s for work in self.assigned_work.values() for s in work}
            done = {s for work in self.assigned_work.values()
                    for s, tests in work.items() if all(tests.values())}
            scope = choose(list(self.workqueue), the_plan.units, self._pipelines(mine),
                           elsewhere, done, set(self.workqueue) | assigned, set(mine))
            self.workqueue.move_to_end(scope, last=False)
            super()._assign_work_unit(node)

    return PipelineAffinityScheduling(config, log)
