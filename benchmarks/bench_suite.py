"""The default conformance run at -n 0 and at -n 2, back to back on this machine.

    python benchmarks/bench_suite.py [--workers 2] [--repeat 1] [--profile] [-- pytest args]

Prints, for each configuration: wall time, generations (and how many were reused from
another process), model loads, the share of the wall time spent inside model calls
(summed over processes, divided by the process count), then the speed-up of -n N over
-n 0 and the harness overhead of -n 0: the wall time outside model calls, as a share of
the wall, split into model loads, latent trace digests and the rest.

Model calls are the pipeline calls less the trace digests made in their step callback,
plus the VAE checks' own encode and decode calls (both from the results file's stats).

Before the timed runs, one untimed warm-up run (the repeatability check of one 64x64 fp32
item per model and the two fp32 VAE decode checks, about 10 s) imports every library and
reads every fixture once: the first timed run would otherwise pay a cold page cache (on a
fresh machine that made the first -n 0 run's model loads 11 s instead of 6 s).
``--no-warmup`` skips it.

``--repeat N`` alternates the two configurations N times (n0, n2, n0, n2, ...) and
judges the fastest run of each (shared machines are noisy; every run is printed).
``--profile`` runs -n 0 once more, under cProfile, and lists where its time went (imports,
model loads, pipeline calls, metrics, VAE checks, probes, golden I/O, artifacts, results).

Targets: overhead <= 10 %, speed-up >= 1.8x on two cores, the same number of generations
in both.
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
    trace = st.get("trace_seconds", 0.0)
    vae = st.get("vae_check_seconds", 0.0)
    model = st["generate_seconds"] - trace + vae
    return {"label": label, "wall": wall, "exit": proc.returncode, "tail": tail,
            "generations": st["generations"], "reused": st.get("reused", 0),
            "loads": st["model_loads"], "load_seconds": st["load_seconds"],
            "generate_seconds": st["generate_seconds"], "trace_seconds": trace,
            "vae_seconds": vae, "model_seconds": model, "processes": processes,
            "in_model": model / processes / wall}


#: the warm-up run's selection: one tiny-sd and one tiny-flux pipeline, one VAE each
WARMUP = "64x64/fp32 and repeatable and (red-circle or purple-circle) or vae/fp32 and decode"

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
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="alternate the two configurations N times; judge the fastest")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--no-warmup", action="store_true",
                   help="time the first run with whatever the page cache holds")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER)
    args = p.parse_args()
    extra = [a for a in args.pytest_args if a != "--"]
    if args.repeat < 1:
        p.error(f"--repeat must be at least 1, not {args.repeat}")
    out = Path(tempfile.mkdtemp(prefix="bench-suite-"))
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if not args.no_warmup:
        start = time.perf_counter()
        run("warm-up", ["-n", "0", "-k", WARMUP], out)
        print(f"warm-up (-k {WARMUP!r}, not counted): {time.perf_counter() - start:.1f} s")
    serials, parallels = [], []
    for i in range(args.repeat):
        tag = f"-{i + 1}" if args.repeat > 1 else ""
        serials.append(run(f"n0{tag}", ["-n", "0", *extra], out))
        parallels.append(run(f"n{args.workers}{tag}", ["-n", str(args.workers),
                                                       "--dist", "loadgroup", *extra], out))
    for r in [r for pair in zip(serials, parallels, strict=True) for r in pair]:
        print(f"{r['label']:>6}: wall {r['wall']:7.1f} s | generations {r['generations']} "
              f"(+{r['reused']} reused) | loads {r['loads']} ({r['load_seconds']:.1f} s) | "
              f"in model calls {100 * r['in_model']:.0f} % of wall x "
              f"{r['processes']} process(es) | exit {r['exit']}: {r['tail']}")
    serial = min(serials, key=lambda r: r["wall"])
    parallel = min(parallels, key=lambda r: r["wall"])
    if args.repeat > 1:
        print(f"fastest of {args.repeat}: {serial['label']} and {parallel['label']}")
    speedup = serial["wall"] / parallel["wall"]
    print(f"speed-up -n {args.workers} over -n 0: {speedup:.2f}x (target >= 1.8x)")
    wall, model = serial["wall"], serial["model_seconds"]
    print(f"harness overhead at -n 0: {100 * (1 - model / wall):.1f} % of the wall "
          "(target <= 10 %)")
    rest = wall - model - serial["load_seconds"] - serial["trace_seconds"]
    for seconds, label in (
        (model, "model calls: pipeline calls without the trace digests, plus the VAE "
                f"checks' encode/decode ({serial['vae_seconds']:.1f} s)"),
        (serial["load_seconds"], "model loads (the first one imports diffusers' "
                                 "pipelines and transformers' models)"),
        (serial["trace_seconds"], "latent trace digests (inside pipeline calls)"),
        (rest, "everything else: start-up and imports, probe battery, metrics, golden "
               "I/O, artifacts, results, exit (--profile splits it)"),
    ):
        print(f"  {seconds:7.1f} s  {100 * seconds / wall:5.1f} %  {label}")
    counts = {r["generations"] for r in serials + parallels}
    print(f"generations equal: {len(counts) == 1} ({', '.join(map(str, sorted(counts)))})")
    if args.profile:  # a third run, under cProfile: not the one timed above
        run("n0-profiled", ["-n", "0", *extra], out, profile=True)
        print("where the time of -n 0 went (a third run, under cProfile):")
        for line in where_the_time_went(out / "n0-profiled.prof"):
            print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
