"""Calibrate the tolerance tiers from measurements on this machine.

Records the default cases (or ``--cases``) in subprocesses under several CPU configurations,
with the project's own ``conformance record`` command, then compares the golden sets:

* **threads**: the same ISA level at 1 vs N threads -> samples for the ``close`` tier;
* **isa**: two ATen ISA levels (``ATEN_CPU_CAPABILITY``) at 1 thread -> samples for the
  ``perceptual`` tier (another hardware class);
* **other seed**: the same case with seed + 1 -> images a tier must reject.

Prints a Markdown table per precision and writes the raw numbers as JSON.

    python benchmarks/calibrate.py --out docs/calibration.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from conformance.cases import load_cases
from conformance.golden import GoldenStore
from conformance.metrics import compare


def record(cases: Path, golden: Path, isa: str, threads: int, log: Path) -> float:
    env = dict(os.environ, ATEN_CPU_CAPABILITY=isa)
    cmd = [sys.executable, "-m", "conformance.cli", "record", "--cases", str(cases),
           "--golden-dir", str(golden), "--threads", str(threads),
           "--results", str(golden / "results.json"), "-q", "-p", "no:cacheprovider",
           "-k", "test_own_class_golden"]
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"recording failed ({' '.join(cmd)}); see {log}")
    return time.perf_counter() - start


def golden_images(root: Path) -> dict[str, Any]:
    store = GoldenStore(root)
    out = {}
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for cls in store.classes(model_dir.name):
            manifest = store.manifest(model_dir.name, cls)
            for entry in manifest.entries.values():
                out[entry.id] = store.load_image(entry, cls)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=Path, default=None)
    parser.add_argument("--isas", default="default,avx2,avx512")
    parser.add_argument("--threads", type=int, default=2, help="the N of 1 vs N threads")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/calibration.json"))
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="keep the recorded golden sets of the 1-thread runs under DIR "
                        "(DIR/<model>/cpu-<isa>/, as `conformance record` wrote them)")
    args = parser.parse_args()

    case_set = load_cases(args.cases)
    isas = args.isas.split(",")
    with tempfile.TemporaryDirectory(prefix="calibrate-") as tmp_name:
        tmp = Path(tmp_name)
        other = tmp / "other-seed.toml"
        text = case_set.path.read_text()
        for case in case_set.cases:
            text = text.replace(f"seed = {case.seed}\n", f"seed = {case.seed + 1}\n", 1)
        other.write_text(text)
        runs = [(f"{isa}-t1", case_set.path, isa, 1) for isa in isas]
        runs.append((f"{isas[-1]}-t{args.threads}", case_set.path, isas[-1], args.threads))
        runs.append(("other-seed", other, isas[-1], 1))
        timings = {}

        def job(run: tuple[str, Path, str, int]) -> None:
            name, cases, isa, threads = run
            print(f"recording {name} ...", file=sys.stderr, flush=True)
            timings[name] = record(cases, tmp / name, isa, threads, tmp / f"{name}.log")
            print(f"recorded {name} in {timings[name]:.0f} s", file=sys.stderr, flush=True)

        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(job, runs))
        sets = {name: golden_images(tmp / name) for name, *_ in runs}
        if args.keep is not None:
            for isa in isas:
                for model_dir in (tmp / f"{isa}-t1").iterdir():
                    if model_dir.is_dir():
                        for set_dir in model_dir.iterdir():
                            dest = args.keep / model_dir.name / set_dir.name
                            if dest.exists():
                                raise SystemExit(f"{dest} exists; not replacing it")
                            shutil.copytree(set_dir, dest)

    base = f"{isas[-1]}-t1"
    groups = {f"threads 1 vs {args.threads} ({isas[-1]})": (base, f"{isas[-1]}-t{args.threads}")}
    for i, a in enumerate(isas):
        for b in isas[i + 1:]:
            groups[f"isa {a} vs {b}"] = (f"{a}-t1", f"{b}-t1")
    groups["other seed"] = (base, "other-seed")
    rows = []
    for group, (a, b) in groups.items():
        for item_id, img in sets[a].items():
            m = compare(sets[b][item_id], img)
            rows.append({"group": group, "id": item_id, "precision": item_id.rsplit("/", 1)[1],
                         **m.to_dict()})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"timings_s": timings, "rows": rows}, indent=1) + "\n")

    print("| group | precision | items | identical | max MAE | max max_abs | min SSIM "
          "| max pHash d | max dHash d |")
    print("|---|---|---|---|---|---|---|---|---|")
    keys = sorted({(r["group"], r["precision"]) for r in rows},
                  key=lambda k: (list(groups).index(k[0]), k[1]))
    for group, prec in keys:
        sel = [r for r in rows if r["group"] == group and r["precision"] == prec]
        print(f"| {group} | {prec} | {len(sel)} | {sum(r['identical'] for r in sel)} "
              f"| {max(r['mae'] for r in sel):.3f} | {max(r['max_abs'] for r in sel)} "
              f"| {min(r['ssim'] for r in sel):.4f} | {max(r['phash_distance'] for r in sel)} "
              f"| {max(r['dhash_distance'] for r in sel)} |")
    print(f"\nraw numbers: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
