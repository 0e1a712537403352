"""Calibrate the tolerance tiers from measurements on this machine or from golden sets.

Recording mode (the default) records the default cases (or ``--cases``) in subprocesses under
several CPU configurations, with the project's own ``conformance record`` command, then
compares the golden sets:

* **threads**: the same ISA level at 1 vs N threads -> samples for the ``close`` tier;
* **isa**: two ATen ISA levels (``ATEN_CPU_CAPABILITY``) at 1 thread -> samples for the
  ``perceptual`` tier (another hardware class);
* **other seed**: the same case with seed + 1 -> images a tier must reject.

``--from-golden DIR`` measures committed golden sets instead (no recording):

* **classes A vs B**: every pair of the ``--classes`` present (another hardware class, same
  precision: the ``perceptual`` tier), on the items both sets hold;
* **fidelity (A)**: each reduced precision against fp32 of the same case in class A's set;
* **other case (A)**: two different cases at the same model, resolution and precision
  (a different image, which every tier must reject);
* **other seed (A)**, with ``--other-seed``: each item of this machine's class generated
  again with seed + 1 (:class:`conformance.generate.Runner`) against its golden.

Every registered metric (:data:`conformance.metrics.METRICS`) is measured. Prints a Markdown
table per group and precision (the worst value of each metric) and writes the raw numbers as
JSON.

    python benchmarks/calibrate.py --out docs/calibration.json
    python benchmarks/calibrate.py --from-golden golden --other-seed \\
        --out docs/calibration-golden.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
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
from conformance.metrics import METRICS, Better, Metrics, compare

#: Classes compared by ``--from-golden`` unless ``--classes`` says otherwise.
GOLDEN_CLASSES = (
    "cpu-amd-default+bf16",
    "cpu-amd-avx2+bf16",
    "cpu-amd-avx512+bf16",
    "cpu-intel-avx512+amx+bf16+fp16",
)


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


def golden_images(root: Path, classes: list[str] | None = None) -> dict[str, Any]:
    """``{item id: image}`` of every set under ``root`` (only ``classes`` when given)."""
    return {
        item_id: image
        for by_id in golden_sets(root, classes).values()
        for item_id, image in by_id.items()
    }


def golden_sets(root: Path, classes: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """``{class: {item id: image}}`` of the sets under ``root`` (all models)."""
    store = GoldenStore(root)
    out: dict[str, dict[str, Any]] = {}
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for cls in store.classes(model_dir.name):
            if classes is not None and cls not in classes:
                continue
            manifest = store.manifest(model_dir.name, cls)
            if manifest is None:
                continue
            for entry in manifest.entries.values():
                out.setdefault(cls, {})[entry.id] = store.load_image(entry, cls)
    return out


def row(group: str, item_id: str, precision: str, m: Metrics, **extra: Any) -> dict[str, Any]:
    return {"group": group, "id": item_id, "precision": precision, **extra, **m.to_dict()}


def rejects(group: str) -> bool:
    """Whether ``group`` pairs different images (which every tier must reject)."""
    return group.startswith("other")


def _nearest(metric: Any, values: list[float]) -> float:
    """The best of ``values`` (NaN left out): the pair nearest to a match."""
    finite = [v for v in values if v == v] or values
    return min(finite) if metric.better is Better.LOWER else max(finite)


def markdown_table(rows: list[dict[str, Any]], groups: list[str]) -> str:
    """Per (group, precision): items, identical items and each metric's worst value over the
    items (``worst``), or, for groups of different images, its value nearest to a match
    (``nearest``: what a bound must still reject)."""
    metrics = list(METRICS.values())
    head = ["group", "precision", "items", "identical", "shown"] + [m.header for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = {g: n for n, g in enumerate(groups)}
    keys = sorted({(r["group"], r["precision"]) for r in rows},
                  key=lambda k: (order.get(k[0], len(order)), k[0], k[1]))
    for group, prec in keys:
        sel = [Metrics.from_dict(r) for r in rows if r["group"] == group and r["precision"] == prec]
        nearest = rejects(group)
        cells = [group, prec, str(len(sel)), str(sum(m.identical for m in sel)),
                 "nearest" if nearest else "worst"]
        for m in metrics:
            known = [v for v in (x.get(m.name) for x in sel) if v is not None]
            if not known:
                cells.append("-")
                continue
            cells.append(m.format(_nearest(m, known) if nearest else m.worst(known)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def recording_mode(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
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
            rows.append(row(group, item_id, item_id.rsplit("/", 1)[1], m))
    return {"timings_s": timings, "rows": rows}, list(groups)


def _split(item_id: str) -> tuple[str, str, str, str]:
    model, case, resolution, precision = item_id.split("/")
    return model, case, resolution, precision


def other_seed_rows(cls: str, images: dict[str, Any], cases_path: Path | None,
                    group: str) -> list[dict[str, Any]]:
    """Each item of ``images`` generated again with seed + 1 on this machine, against it."""
    from conformance.cases import Item, Resolution
    from conformance.generate import Runner, configure_torch
    from conformance.hardware import detect_class

    here = detect_class("cpu").name
    if here != cls:
        raise SystemExit(f"--other-seed: this machine is {here}, not {cls}; its golden set "
                         "is what seed + 1 is compared with")
    configure_torch(1, deterministic=True, device="cpu")
    cases = {c.name: c for c in load_cases(cases_path).cases}
    runner = Runner("cpu")
    rows = []
    for item_id, golden in sorted(images.items()):
        model, name, resolution, precision = _split(item_id)
        case = cases.get(name)
        if case is None or case.model != model:
            continue
        item = Item(dataclasses.replace(case, seed=case.seed + 1),
                    Resolution.parse(resolution), precision)
        generated = runner.generate(item).image
        rows.append(row(group, item_id, precision, compare(generated, golden)))
        print(f"{group}: {item_id}", file=sys.stderr, flush=True)
    return rows


def golden_mode(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    wanted = args.classes.split(",") if args.classes else list(GOLDEN_CLASSES)
    sets = golden_sets(args.from_golden, wanted)
    present = [c for c in wanted if c in sets]
    if not present:
        raise SystemExit(f"none of {', '.join(wanted)} under {args.from_golden}")
    rows: list[dict[str, Any]] = []
    groups: list[str] = []
    for a, b in itertools.combinations(present, 2):
        group = f"classes {a} vs {b}"
        groups.append(group)
        for item_id in sorted(set(sets[a]) & set(sets[b])):
            rows.append(row(group, item_id, _split(item_id)[3],
                            compare(sets[b][item_id], sets[a][item_id]), classes=[a, b]))
    for cls in present:
        group = f"fidelity ({cls})"
        groups.append(group)
        for item_id, image in sorted(sets[cls].items()):
            model, case, resolution, precision = _split(item_id)
            reference = sets[cls].get(f"{model}/{case}/{resolution}/fp32")
            if precision != "fp32" and reference is not None:
                rows.append(row(group, item_id, precision, compare(image, reference)))
    base = present[0]
    group = f"other case ({base})"
    groups.append(group)
    by_slot: dict[tuple[str, str, str], list[str]] = {}
    for item_id in sorted(sets[base]):
        model, _, resolution, precision = _split(item_id)
        by_slot.setdefault((model, resolution, precision), []).append(item_id)
    for ids in by_slot.values():
        for x, y in itertools.combinations(ids, 2):
            rows.append(row(group, f"{x} vs {y}", _split(x)[3],
                            compare(sets[base][y], sets[base][x])))
    if args.other_seed:
        from conformance.hardware import detect_class

        here = detect_class("cpu").name
        group = f"other seed ({here})"
        groups.append(group)
        if here not in sets:
            sets |= golden_sets(args.from_golden, [here])
        rows += other_seed_rows(here, sets.get(here, {}), args.cases, group)
    return {"classes": present, "rows": rows}, groups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=Path, default=None)
    parser.add_argument("--isas", default="default,avx2,avx512")
    parser.add_argument("--threads", type=int, default=2, help="the N of 1 vs N threads")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/calibration.json"))
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="keep the recorded golden sets of the 1-thread runs under DIR "
                        "(DIR/<model>/cpu-<isa>/, as `conformance record` wrote them)")
    parser.add_argument("--from-golden", type=Path, default=None, metavar="DIR",
                        help="measure the golden sets under DIR instead of recording")
    parser.add_argument("--classes", default=None,
                        help="comma list of classes for --from-golden (default: "
                        + ", ".join(GOLDEN_CLASSES) + "; those present)")
    parser.add_argument("--other-seed", action="store_true",
                        help="with --from-golden: generate seed + 1 of this machine's class")
    args = parser.parse_args(argv)

    if args.from_golden is not None:
        data, groups = golden_mode(args)
    else:
        data, groups = recording_mode(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(markdown_table(data["rows"], groups), end="")
    print(f"\nraw numbers: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
