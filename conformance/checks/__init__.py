"""The suite's check kinds, one module each, and the registry the plugin, the session and the
xdist scheduler ask about them.

A kind (:class:`CheckKind`, one instance per :class:`~conformance.core.Check`) declares:

* what its tests are parametrized with (:meth:`CheckKind.params`): one :class:`Param` per
  test, with its id (what the node id holds in brackets), the item whose generation it reads
  and the xdist group it runs in (:func:`conformance.schedule.plan_params`);
* which collected tests of it a run leaves out (:meth:`CheckKind.deselect`);
* how it runs and is judged (:meth:`CheckKind.run`, a
  :class:`~conformance.session.Verdict`; the pipeline checks through the session's one judge
  at the tier the kind holds the comparison to);
* what reproduces an outcome and how a failure reads (:meth:`CheckKind.reproduce`,
  :meth:`CheckKind.failure`).

Adding a kind: its :class:`~conformance.core.Check` value (the results files' vocabulary), a
module here that registers an instance (every module of this package is loaded on first use),
and, for tests of the suite, a ``conformance/test_*.py`` entry whose tests carry
``@pytest.mark.conformance_check("VALUE")`` and use the ``conformance_check`` fixture.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from conformance.core import Check

if TYPE_CHECKING:
    from conformance.cases import CaseSet, Item
    from conformance.records import Outcome
    from conformance.session import ConformanceSession, Settings, Verdict


def _modules() -> list[str]:
    """The modules of this package: each registers one kind when imported."""
    return [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]


_KINDS: dict[Check, CheckKind] = {}


@dataclass(frozen=True)
class Context:
    """What a kind parametrizes from: the run's case file and settings (its filters)."""

    cases: CaseSet
    settings: Settings

    def items(self) -> list[Item]:
        """The case file's items that the run's ``--model``, ``--precision`` and
        ``--resolution`` filters keep."""
        s = self.settings
        return self.cases.items(s.models, s.precisions, s.resolutions)


@dataclass(frozen=True)
class Param:
    """One test of a kind: its values (in the order of :attr:`CheckKind.argnames`), its id,
    and what the xdist scheduler needs of it."""

    values: tuple[Any, ...]
    id: str
    #: the xdist group it runs in: the item it reads, or a group of tests of no item
    group: str
    #: the item whose pipeline and generation it reads (None: a test of no item)
    item: Item | None = None
    #: other items whose generations it reads (a compare relation's base)
    needs: tuple[Item, ...] = ()


class CheckKind:
    """One check kind: what its tests take, how it runs, is judged and reported.

    The defaults fit a check of one case file item (``conformance_item``) that generates it
    on this machine."""

    check: ClassVar[Check]
    #: the fixtures its tests are parametrized through
    argnames: ClassVar[tuple[str, ...]] = ("conformance_item",)
    #: whether no test at all is fine where the filters leave no item (else a usage error)
    may_be_empty: ClassVar[bool] = False
    #: whether it runs pipelines here (the outcome records the peak memory)
    generates: ClassVar[bool] = True
    #: whether both sides are generated here, so ``--localize`` probes both again
    localizable: ClassVar[bool] = False

    def params(self, ctx: Context, *args: Any) -> list[Param]:
        """The tests of this kind in a run (``args``: the ``conformance_check`` mark's
        arguments after the kind)."""
        return [item_param(item) for item in ctx.items()]

    def deselect(self, values: dict[str, Any], ctx: Context) -> bool:
        """Whether a collected test of this kind (its parameter values) is outside the run:
        an empty parameter set (``[NOTSET]``) by default."""
        from conformance.cases import Item

        return not isinstance(values.get(self.argnames[0]), Item)

    def run(self, session: ConformanceSession, subject: Any, variant: str | None) -> Verdict:
        """The check's verdict on ``subject`` (raises what
        :meth:`~conformance.session.ConformanceSession.evaluate` turns into SKIPPED or
        ERROR)."""
        raise NotImplementedError

    def baseline(self, session: ConformanceSession, item: Item) -> Item:
        """The item a localizable check's expected side was generated from."""
        return item

    def reproduce(self, session: ConformanceSession, nodeid: str) -> str:
        """The command that runs this check again (a test of the suite by its name)."""
        return session.reproduce_command(nodeid)

    def failure(self, outcome: Outcome, nodeid: str) -> str:
        """What a failed or erroneous outcome's test says."""
        return f"{outcome.message}\n  reproduce: {outcome.reproduce}"


def item_param(item: Item, *rest: Any, id: str | None = None,
               needs: Sequence[Item] = ()) -> Param:
    """A test of ``item`` (and ``rest``), in the item's group.

    The xdist group of an item's tests is the item itself: its checks share one generation
    in one process; what they need from other items (the fp32 reference of a fidelity
    check) comes through the run's shared generations, so small groups cost at most one
    more pipeline load per worker and balance the workers (one (model, precision) group,
    tiny-sd fp16 on CPU, was 40 % of the run)."""
    return Param((item, *rest), id or item.id, item.id, item, tuple(needs))


def register(kind: CheckKind) -> CheckKind:
    """Make ``kind`` the registry's one for its check."""
    _KINDS[kind.check] = kind
    return kind


def _load() -> None:
    if len(_KINDS) < len(Check):
        for name in _modules():
            importlib.import_module(f"conformance.checks.{name}")
    missing = [c.value for c in Check if c not in _KINDS]
    if missing:
        raise LookupError(f"no check kind registered for {', '.join(missing)}")


def kind(check: Check | str) -> CheckKind:
    """The kind of ``check`` (a :class:`~conformance.core.Check` or its value); a value no
    kind has is a ``ValueError`` naming the known ones."""
    _load()
    try:
        return _KINDS[Check(check)]
    except ValueError:
        raise ValueError(f"unknown check kind {check!r}; known: "
                         f"{', '.join(c.value for c in Check)}") from None


def kinds() -> list[CheckKind]:
    """Every kind, in the order of :class:`~conformance.core.Check`."""
    _load()
    return [_KINDS[c] for c in Check]


def schedule_params(ctx: Context) -> list[Param]:
    """Every kind's tests, for the xdist scheduler (parameter ids and their groups)."""
    return [p for k in kinds() for p in k.params(ctx)]


__all__ = ["CheckKind", "Context", "Param", "item_param", "kind", "kinds",
           "register", "schedule_params"]
