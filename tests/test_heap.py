"""conformance.heap: the collector is off while long-lived objects are made, their own
cyclic garbage is freed at the end, the survivors are frozen, and the caller's collector
setting is kept."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from conformance import heap


@pytest.fixture(autouse=True)
def _restore_collector() -> Iterator[None]:
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    if enabled:
        gc.enable()
    else:
        gc.disable()


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycle() -> weakref.ref[_Node]:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_no_collection_inside_and_enabled_again_after() -> None:
    gc.enable()
    with heap.long_lived():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_survivors_are_frozen() -> None:
    gc.enable()
    before = gc.get_freeze_count()
    with heap.long_lived():
        kept = [_Node() for _ in range(100)]
    assert gc.get_freeze_count() >= before + 100
    scanned = {id(o) for o in gc.get_objects()}  # what later collections look at
    assert not scanned & {id(n) for n in kept}


def test_garbage_made_inside_is_collected_not_frozen() -> None:
    gc.enable()
    with heap.long_lived():
        dead = _cycle()
        assert dead() is not None  # the collector is off: the cycle is still there
    assert dead() is None


def test_a_collector_the_caller_turned_off_stays_off() -> None:
    gc.disable()
    with heap.long_lived():
        pass
    assert not gc.isenabled()


def test_an_error_inside_freezes_nothing_and_turns_the_collector_back_on() -> None:
    gc.enable()
    before = gc.get_freeze_count()
    with pytest.raises(RuntimeError, match="load failed"), heap.long_lived():
        half_built = [_Node() for _ in range(100)]  # noqa: F841
        raise RuntimeError("load failed")
    assert gc.isenabled()
    assert gc.get_freeze_count() == before


def test_freeze_at_exit_registers_once(monkeypatch: pytest.MonkeyPatch) -> None:
    registered: list[object] = []
    monkeypatch.setattr(heap, "_EXIT_HOOKED", False)
    monkeypatch.setattr(heap.atexit, "register", registered.append)
    heap.freeze_at_exit()
    heap.freeze_at_exit()
    assert registered == [gc.freeze]
