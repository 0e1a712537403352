"""The default conformance run at -n 0 and at -n 2, back to back on this machine.

    python benchmarks/bench_suite.py [--workers 2] [--profile] [-- extra pytest args]

Prints, for each configuration: wall time, generations (and how many were reused from
another process), model loads, the share of the wall time spent inside pipeline calls
(summed over processes, divided by the process count), then the speed-up of -n N over
-n 0 and the harness overhead of -n 0 (wall time outside pipeline calls, as a share of the
wall). ``--profile`` runs -n 0 a third time, under cProfile, and lists where its time went
(imports, model loads, pipeline calls, metrics, VAE checks, probes, golden I/O, artifacts,
results). Targets: overhead <= 10 %, speed-up >= 1.8x on two cores, and the same
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
from typing import Any


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


#: where the time of a run goes: (label, predicate on (file, function)); cumulative times
#: of these entry points (they do not nest in one another, except as noted)
CATEGORIES: tuple[tuple[str, Any], ...] = (
    ("imports (all modules)", lambda f, fn: fn == "_find_and_load"),
    ("model loads (Runner._load)", lambda f, fn: f.endswith("generate.py") and fn == "_load"),
    ("pipeline calls (includes trace digests)",
     lambda f, fn: fn == "__call__" and "/pipelines/" in f),
    ("metrics (compare: SSIM, hashes, FLIP ...)",
     lambda f, fn: f.endswith("conformance/metrics.py") and fn == "compare"),
    ("VAE checks (their own decodes)",
     lambda f, fn: f.endswith("conformance/test_vae.py") and fn.startswith("test_")),
    ("probe battery (identity.measure)",
     lambda f, fn: f.endswith("conformance/identity.py") and fn == "measure"),
    ("golden images and manifests", lambda f, fn: f.endswith("conformance/golden.py")
     and fn in ("load_image", "manifest")),
    ("difference images (artifacts)",
     lambda f, fn: f.endswith("conformance/session.py") and fn == "_write_artifacts"),
    ("results file", lambda f, fn: f.endswith("conformance/session.py")
     and fn == "write_results"),
)


def where_the_time_went(prof: Path) -> list[str]:
    """Seconds per :data:`CATEGORIES` entry under the profiler (the largest cumulative
    time of a matching function: a function that calls itself is not counted twice), as a
    share of the profiled run; the profiler slows Python code, so shares, not seconds,
    compare with an unprofiled run. An import made inside a model load counts in both."""
    stats = pstats.Stats(str(prof))
    total = max(ct for (_cc, _nc, _tt, ct, _c) in stats.stats.values())  # type: ignore[attr-defined]
    lines = []
    for label, match in CATEGORIES:
        times = [ct for (file, _line, func), (_cc, _nc, _tt, ct, callers)
                 in stats.stats.items()  # type: ignore[attr-defined]
                 if match(file, func) and not any(match(cf, cfn) for cf, _cl, cfn in callers)]
        seconds = sum(times)
        lines.append(f"{seconds:7.1f} s  {100 * seconds / total:5.1f} %  {label}")
    return lines


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
    serial = run("n0", ["-n", "0", *extra], out)
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
    if args.profile:  # a third run, under cProfile: not the one timed above
        run("n0-profiled", ["-n", "0", *extra], out, profile=True)
        print("where the time of -n 0 went (a third run, under cProfile):")
        for line in where_the_time_went(out / "n0-profiled.prof"):
            print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
