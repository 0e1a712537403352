"""Generations shared between the processes of one run (pytest-xdist workers).

``--dist loadgroup`` keeps a (model, precision) on one worker, but the fidelity and ladder
checks also need the fp32 image of the same case, which another worker makes. Each worker
asks this store first: the first to need an image makes it under a per-key file lock and
writes it (image, latent trace, seconds) to the run's folder; the others wait for that lock
and read it back. A run therefore makes every generation once, whatever the worker count.

Keys carry the identity digest of the worker's device, so two GPUs whose bits may differ
never share an image. The folder lives for one run (the controller removes it).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from conformance.golden import atomic_write
from conformance.safeio import exclusive_lock
from conformance.trace import StepTrace

#: Key of ``config.workerinput`` that carries the folder to the workers.
WORKER_KEY = "conformance_generations"


class SharedGenerations:
    """A folder of finished generations, one ``.npz`` per key."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.reused = 0

    def _path(self, key: str, suffix: str) -> Path:
        return self.directory / (hashlib.sha256(key.encode()).hexdigest()[:32] + suffix)

    def get_or_make(self, key: str, make: Callable[[], object]) -> tuple[object, bool]:
        """The generation for ``key`` and whether it was made by another process.

        ``make`` returns a :class:`~conformance.generate.Generation`; an exception it
        raises propagates and nothing is stored (the next process tries again)."""
        from conformance.generate import Generation

        path = self._path(key, ".npz")
        with exclusive_lock(self._path(key, ".lock"), "the shared generation store's lock file"):
            if path.exists():
                with np.load(path, allow_pickle=False) as data:
                    meta = json.loads(bytes(data["meta"]).decode("utf-8"))
                    image = np.array(data["image"])
                self.reused += 1
                return Generation(meta["item_id"], image,
                                  [StepTrace.from_dict(s) for s in meta["trace"]],
                                  float(meta["seconds"]), meta.get("weights_bytes"),
                                  meta.get("peak_bytes")), True
            gen = make()
            assert isinstance(gen, Generation)
            meta = {"key": key, "item_id": gen.item_id, "seconds": gen.seconds,
                    "weights_bytes": gen.weights_bytes, "peak_bytes": gen.peak_bytes,
                    "trace": [s.to_dict() for s in gen.trace], "pid": os.getpid()}
            buf = io.BytesIO()
            np.savez(buf, image=gen.image,
                     meta=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8))
            atomic_write(path, buf.getvalue())
            return gen, False
