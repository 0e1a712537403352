"""Does the probe battery predict the bits? Record the default cases under many CPU
configurations of this machine and compare probe digests with image hashes.

For every configuration (ATen level x oneDNN ISA limit x threads) this runs
``conformance record`` in a subprocess into ``OUT/<config>/golden``; then, for every pair of
configurations and every precision, it puts the pair in one of four cells:

* same digest, identical images  -- the prediction held;
* same digest, images differ     -- a VIOLATION (the battery missed a kernel);
* digests differ, images differ  -- explained by the probes that differ (listed);
* digests differ, images equal   -- conservative (the probes saw a kernel the images did
                                    not depend on at these cases).

Golden roots given with ``--extra ROOT`` (e.g. a contributed set) join the comparison of
images; sets without probe digests are compared by images only.

    python benchmarks/identity_predictivity.py --out /tmp/predict --jobs 2
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

DEFAULT_CONFIGS = (
    "default,-,1", "avx2,-,1", "avx512,-,1", "avx512,AVX512_CORE,1", "avx512,AVX2,1",
    "avx2,AVX2,1", "default,AVX2,1", "avx512,-,2", "avx2,-,2", "default,-,2",
)


def _config(text: str) -> tuple[str, str | None, int]:
    aten, onednn, threads = text.split(",")
    return aten, None if onednn in ("-", "") else onednn, int(threads)


def _name(cfg: tuple[str, str | None, int]) -> str:
    aten, onednn, threads = cfg
    return f"aten_{aten}-onednn_{(onednn or 'unset').lower()}-t{threads}"


def record(out: Path, cfg: tuple[str, str | None, int], extra: list[str]) -> float:
    aten, onednn, threads = cfg
    env = dict(os.environ, ATEN_CPU_CAPABILITY=aten)
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if onednn:
        env["ONEDNN_MAX_CPU_ISA"] = onednn
    name = _name(cfg)
    cmd = ["conformance", "record", "--device", "cpu", "--threads", str(threads),
           "--out", f"{name}/golden", "--results", f"{name}/results.json", "-k", "own_class",
           "-q", "-p", "no:cacheprovider", *extra]
    start = time.perf_counter()
    with open(out / f"{name}.log", "w") as log:
        subprocess.run(cmd, env=env, cwd=out, stdout=log, stderr=subprocess.STDOUT,
                       check=False)
    seconds = time.perf_counter() - start
    print(f"  recorded {_name(cfg)} in {seconds:.0f} s", flush=True)
    return seconds


def probe(out: Path, cfg: tuple[str, str | None, int]) -> None:
    """This configuration's identity with the current battery (``conformance fingerprint``),
    kept beside its golden set: the images do not depend on the battery, the digests do."""
    aten, onednn, threads = cfg
    env = dict(os.environ, ATEN_CPU_CAPABILITY=aten)
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if onednn:
        env["ONEDNN_MAX_CPU_ISA"] = onednn
    proc = subprocess.run(["conformance", "fingerprint", "--threads", str(threads)], env=env,
                          capture_output=True, text=True, check=True)
    (out / _name(cfg) / "identity.json").write_text(
        json.dumps(json.loads(proc.stdout)["identity"], indent=1) + "\n")


def _sets(root: Path) -> dict[str, dict]:
    """{column name: {"identity": ..., "images": {item id: pixel sha}}} for every set."""
    out: dict[str, dict] = {}
    manifests = sorted(root.glob("*/*/manifest.json"))
    label = root.parent.name if root.name == "golden" else root.name
    several = len({m.parent.name for m in manifests}) > 1  # a root of many classes
    for manifest in manifests:
        data = json.loads(manifest.read_text())
        ident = data.get("identity") or {}
        name = f"{label}:{manifest.parent.name}" if several else label
        col = out.setdefault(name, {"identity": {}, "probes": {}, "images": {}})
        col["identity"][data["model"]] = ident
        fresh = root.parent / "identity.json"
        if fresh.is_file():  # measured again with the current battery
            ident = json.loads(fresh.read_text())
        col["probes"] = ident.get("probes") or col["probes"]
        col["digests"] = ident.get("precision_digests")
        for key, entry in data["entries"].items():
            col["images"][key] = entry["pixel_sha256"]
    return out


def analyse(roots: list[Path]) -> dict:
    from conformance.probes import differing_probes, summarize_probes

    columns: dict[str, dict] = {}
    for root in roots:
        columns.update(_sets(root))
    cells: dict[str, list] = {"held": [], "violation": [], "explained": [], "conservative": [],
                              "images only": []}
    precisions = sorted({k.rsplit("/", 1)[1] for c in columns.values() for k in c["images"]})
    for (a, ca), (b, cb) in itertools.combinations(sorted(columns.items()), 2):
        for prec in precisions:
            ids = sorted(k for k in ca["images"] if k.endswith("/" + prec) and k in cb["images"])
            if not ids:
                continue
            same_images = all(ca["images"][i] == cb["images"][i] for i in ids)
            n_diff = sum(ca["images"][i] != cb["images"][i] for i in ids)
            da, db = (ca.get("digests") or {}).get(prec), (cb.get("digests") or {}).get(prec)
            row = {"a": a, "b": b, "precision": prec, "items": len(ids), "differ": n_diff}
            if da is None or db is None:
                cells["images only"].append(row)
                continue
            if da == db:
                cells["held" if same_images else "violation"].append(row)
            else:
                row["probes"] = summarize_probes(differing_probes(ca["probes"], cb["probes"],
                                                                  prec))
                cells["conservative" if same_images else "explained"].append(row)
    return {"columns": sorted(columns), "cells": cells}


def report(result: dict) -> str:
    cells = result["cells"]
    lines = [f"columns: {len(result['columns'])}: {', '.join(result['columns'])}", "",
             "| outcome | (pair, precision) cells |", "|---|--:|"]
    lines += [f"| {k} | {len(v)} |" for k, v in cells.items()]
    for kind in ("violation", "explained", "conservative", "images only"):
        if cells[kind]:
            lines += ["", f"{kind}:"]
            for r in cells[kind]:
                extra = f"; probes: {r['probes']}" if r.get("probes") else ""
                lines.append(f"  {r['a']} vs {r['b']} {r['precision']}: {r['differ']} of "
                             f"{r['items']} images differ{extra}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--configs", default=";".join(DEFAULT_CONFIGS),
                   help="';'-separated ATEN,ONEDNN,THREADS triples ('-' = unset)")
    p.add_argument("--jobs", type=int, default=1, help="configurations recorded at once "
                   "(single-thread ones; others run alone)")
    p.add_argument("--extra", type=Path, action="append", default=[],
                   help="another golden root to compare (images; probes where it has them)")
    p.add_argument("--analyse-only", action="store_true")
    p.add_argument("--probe-only", action="store_true",
                   help="measure every configuration's identity again (current battery), "
                   "keep the recorded images, then analyse")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    configs = [_config(c) for c in args.configs.split(";") if c.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    extra = [a for a in args.pytest_args if a != "--"]
    if args.probe_only:
        for cfg in configs:
            probe(args.out, cfg)
    elif not args.analyse_only:
        start = time.perf_counter()
        single = [c for c in configs if c[2] == 1]
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            list(pool.map(lambda c: record(args.out, c, extra), single))
        for cfg in (c for c in configs if c[2] != 1):
            record(args.out, cfg, extra)
        for cfg in configs:
            probe(args.out, cfg)
        print(f"recorded {len(configs)} configurations in {time.perf_counter() - start:.0f} s")
    roots = [args.out / _name(c) / "golden" for c in configs] + list(args.extra)
    result = analyse([r for r in roots if r.is_dir()])
    (args.out / "predictivity.json").write_text(json.dumps(result, indent=1) + "\n")
    text = report(result)
    (args.out / "predictivity.md").write_text(text + "\n")
    print(text)
    return 1 if result["cells"]["violation"] else 0


if __name__ == "__main__":
    sys.exit(main())
