"""Generations shared between the processes of a run."""

from __future__ import annotations

import multiprocessing
from types import SimpleNamespace

import numpy as np
import pytest

from conformance.gencache import SharedGenerations
from conformance.generate import Generation
from conformance.trace import StepTrace


def _gen(seed: int = 0) -> Generation:
    rng = np.random.default_rng(seed)
    trace = [StepTrace(0, 999.0, "0123456789abcdef", 0.1, 1.0, -2.0, 2.0)]
    return Generation("tiny-sd/dot/16x8/fp32", rng.integers(0, 256, (8, 16, 3), np.uint8),
                      trace, 0.5, weights_bytes=1234, peak_bytes=None)


def test_made_once_then_read_back_bit_for_bit(tmp_path):
    made = []
    a, b = SharedGenerations(tmp_path), SharedGenerations(tmp_path)
    first, reused = a.get_or_make("k", lambda: made.append(1) or _gen())
    assert not reused
    second, reused = b.get_or_make("k", lambda: made.append(1) or _gen(1))
    assert reused and made == [1] and b.reused == 1
    assert np.array_equal(first.image, second.image) and second.image.dtype == np.uint8
    assert second.trace == first.trace and second.seconds == first.seconds
    assert (second.weights_bytes, second.peak_bytes) == (1234, None)


def test_a_failure_is_not_stored(tmp_path):
    store = SharedGenerations(tmp_path)

    def boom():
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        store.get_or_make("k", boom)
    gen, reused = store.get_or_make("k", _gen)
    assert not reused and gen.item_id == "tiny-sd/dot/16x8/fp32"


def _worker(directory, key, queue):
    store = SharedGenerations(directory)
    _, reused = store.get_or_make(key, _gen)
    queue.put(reused)


def test_concurrent_processes_make_it_once(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), "shared", queue))
             for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    flags = sorted(queue.get(timeout=5) for _ in procs)
    assert flags == [False, True, True]


def test_weights_bytes_count_every_component_once():
    import torch

    from conformance.generate import weights_bytes

    shared = torch.nn.Linear(4, 3)  # 12 + 3 floats

    pipe = SimpleNamespace(components={"a": shared, "b": shared,
                                       "c": torch.nn.Linear(2, 2).half(), "tokenizer": object()})
    assert weights_bytes(pipe) == (12 + 3) * 4 + (4 + 2) * 2


def test_a_lock_path_that_is_not_a_file_is_one_line(tmp_path):
    """The store takes the same lock as a golden set's writers: a FIFO at the lock's path
    neither blocks the run nor raises a raw OSError."""
    import os

    from conformance.errors import OutputError

    store = SharedGenerations(tmp_path)
    os.mkfifo(store._path("k", ".lock"))
    with pytest.raises(OutputError, match="the shared generation store's lock file is a FIFO "
                       r"\(named pipe\), not a regular file; remove it"):
        store.get_or_make("k", _gen)
