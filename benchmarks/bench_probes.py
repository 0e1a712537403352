"""Time the probe battery (the measured identity) on a device: import, first and warm runs.

    python benchmarks/bench_probes.py [--device cpu] [--repeat 5]

Target: well under 2 s on CPU per process.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    t0 = time.perf_counter()
    import torch

    torch.set_num_threads(args.threads)
    from conformance import probes

    t1 = time.perf_counter()
    first = probes.run_battery(args.device)
    t2 = time.perf_counter()
    warm = [probes.run_battery(args.device).seconds for _ in range(args.repeat)]
    print(f"imports (torch, conformance): {t1 - t0:.2f} s")
    print(f"first battery: {t2 - t1:.2f} s wall ({first.seconds:.3f} s in kernels; the rest "
          "imports diffusers' GGUF code and gguf-py)")
    print(f"warm battery: median {statistics.median(warm):.3f} s, max {max(warm):.3f} s over "
          f"{len(warm)} runs; {len(first.digests)} probes")
    slowest = []
    for probe in probes.BATTERY:
        make = probes._maker(0)
        start = time.perf_counter()
        for dtype in probe.dtypes:
            probe.run(make, getattr(torch, dtype), args.device)
        slowest.append((time.perf_counter() - start, probe.name))
    print("slowest probes:", ", ".join(f"{n} {s * 1000:.0f} ms" for s, n in
                                       sorted(slowest, reverse=True)[:4]))


if __name__ == "__main__":
    main()
