"""Limits for the hostile-input tests: fail instead of hanging."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Raise TimeoutError after ``seconds`` (SIGALRM; the tests run in the main thread)."""

    def expired(signum, frame):  # pragma: no cover - only on a hang
        raise TimeoutError(f"took more than {seconds} s")

    before = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)
