"""The default conformance run at -n 0 and at -n 2, back to back on this machine.

    python benchmarks/bench_suite.py [--workers 2] [--profile] [-- extra pytest args]

Prints, for each configuration: wall time, generations (and how many were reused from
another process), model loads, the share of the wall time spent inside pipeline calls
(summed over processes, divided by the process count), then the speed-up of -n N over
-n 0 and the harness overhead of -n 0 (wall time outside pipeline calls, as a share of the
wall). ``--profile`` also runs -n 0 under cProfile and lists the largest costs outside the
pipeline calls. Targets: overhead <= 10 %, speed-up >= 1.8x on two cores, and the same
number of generations in both.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(label: str, args: list[str], out: Path, profile: bool = False) -> dict:
    results = out / f"{label}.json"
    cmd = [sys.executable]
    if profile:
        cmd += ["-m", "cProfile", "-o", str(out / f"{label}.prof")]
    cmd += ["-m", "pytest", "conformance", "--device", "cpu", "-q", "-p", "no:cacheprovider",
            "--results", str(results), *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    tail = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    if not results.is_file():
        sys.exit(f"{label}: no results file (exit {proc.returncode}): {tail}\n{proc.stderr}")
    doc = json.loads(results.read_text())
    st = doc["stats"]
    processes = max(1, st.get("processes") or 1)
    return {"label": label, "wall": wall, "exit": proc.returncode, "tail": tail,
            "generations": st["generations"], "reused": st.get("reused", 0),
            "loads": st["model_loads"], "load_seconds": st["load_seconds"],
            "generate_seconds": st["generate_seconds"], "processes": processes,
            "in_pipeline": st["generate_seconds"] / processes / wall}


def overhead_items(prof: Path, n: int = 12) -> list[str]:
    stats = pstats.Stats(str(prof))
    rows = []
    for (file, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if "conformance" in file or func in ("from_pretrained", "_find_and_load"):
            rows.append((ct, f"{Path(file).name}:{func}"))
    rows.sort(reverse=True)
    return [f"{ct:7.1f} s  {name}" for ct, name in rows[:n]]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--profile", action="store_true")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER)
    args = p.parse_args()
    extra = [a for a in args.pytest_args if a != "--"]
    out = Path(tempfile.mkdtemp(prefix="bench-suite-"))
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    serial = run("n0", ["-n", "0", *extra], out, profile=args.profile)
    parallel = run(f"n{args.workers}", ["-n", str(args.workers), "--dist", "loadgroup",
                                        *extra], out)
    for r in (serial, parallel):
        print(f"{r['label']:>4}: wall {r['wall']:7.1f} s | generations {r['generations']} "
              f"(+{r['reused']} reused) | loads {r['loads']} ({r['load_seconds']:.1f} s) | "
              f"in pipeline calls {100 * r['in_pipeline']:.0f} % of wall x "
              f"{r['processes']} process(es) | exit {r['exit']}: {r['tail']}")
    speedup = serial["wall"] / parallel["wall"]
    overhead = 1 - serial["generate_seconds"] / serial["wall"]
    print(f"speed-up -n {args.workers} over -n 0: {speedup:.2f}x (target >= 1.8x)")
    print(f"harness overhead at -n 0: {100 * overhead:.1f} % of the wall (target <= 10 %)")
    same = serial["generations"] == parallel["generations"]
    print(f"generations equal: {same} ({serial['generations']} vs {parallel['generations']})")
    if args.profile:
        print("largest costs under -n 0 (cumulative, conformance code and loads):")
        for line in overhead_items(out / "n0.prof"):
            print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
