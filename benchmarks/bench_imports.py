"""Start-up: what each kind of process imports, and what that costs, in fresh interpreters.

    python benchmarks/bench_imports.py [--repeat 3] [--only NAME ...] [--chain MODULE ...]
                                       [--compare DIR ...]

Runs each of these ``--repeat`` times in a fresh interpreter, once plainly (wall time, and
the child's CPU time, which a shared machine disturbs less) and once under
``python -X importtime`` (the seconds spent importing, and which libraries were imported):

* ``help``: ``conformance --help``;
* ``plugin``: ``import conformance.plugin, conformance.session, conformance.generate``,
  what every pytest process in this environment imports with the plugin;
* ``collect``: ``pytest conformance --collect-only -q -s -p no:cacheprovider``, the
  default run's collection (it measures the machine: the known deviations name hardware
  classes);
* ``worker``: what an xdist worker does up to its first result: ``pytest conformance
  --device cpu -n 0 -s -k ...`` of one tiny-sd fp32 item's own-class check (collection,
  the probe battery, one model load, one generation, the metrics).

``-s`` keeps pytest from capturing standard error, where ``-X importtime`` writes: the
imports made while a test module is collected or a test runs would be lost otherwise.

It prints the fastest of the repeats per column: wall, CPU and import seconds (the sum of
``-X importtime``'s own times: every import the process made, the libraries' included), and
for the libraries that dominate the cumulative import seconds of each (``-`` when not
imported; the columns overlap: peft imports part of transformers, and whoever imports it
first pays for it). For ``worker`` it also prints the model load and pipeline call seconds
the run reported. ``--chain MODULE`` prints, from the last ``-X importtime`` run of each
process, the import chain that first brought MODULE in (who imports peft, scipy.stats ...).
``--compare DIR`` measures other checkouts too (before and after a change), each run in
turn with this one's, so that a busy machine weighs on both alike.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: the libraries whose cumulative import time is shown, with a short column name
LIBRARIES = {
    "torch": "torch",
    "torch._dynamo": "dynamo",
    "diffusers": "diffusers",
    "transformers": "transformers",
    "peft": "peft",
    "diffusers.loaders.single_file_utils": "single_file",
    "scipy.stats": "scipy.stats",
    "numpy": "numpy",
}

#: one item's own-class check: one load of tiny-sd fp32 and one generation
WORKER_FILTER = "test_own_class_golden and tiny-sd and red-circle and 64x64 and fp32"

_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")
_STATS_LINE = re.compile(r"model loads: (\d+) \(([\d.]+) s\), generations: (\d+) "
                         r"\(([\d.]+) s in pipeline calls\)")


@dataclass(frozen=True)
class ImportRow:
    self_us: int
    cumulative_us: int
    depth: int
    name: str


@dataclass
class Runs:
    """The measurements of one process kind over the repeats."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    imports: list[float] = field(default_factory=list)
    libraries: dict[str, list[float]] = field(default_factory=dict)
    load: list[float] = field(default_factory=list)
    generate: list[float] = field(default_factory=list)
    last_rows: list[ImportRow] = field(default_factory=list)


def commands(results: Path) -> dict[str, list[str]]:
    py = sys.executable
    return {
        "help": [py, "-c", "from conformance.cli import main; raise SystemExit(main(['--help']))"],
        "plugin": [py, "-c", "import conformance.plugin, conformance.session, "
                   "conformance.generate"],
        "collect": [py, "-m", "pytest", "conformance", "--collect-only", "-q", "-s",
                    "-p", "no:cacheprovider"],
        "worker": [py, "-m", "pytest", "conformance", "--device", "cpu", "-n", "0", "-q", "-s",
                   "-p", "no:cacheprovider", "--results", str(results), "-k", WORKER_FILTER],
    }


def parse_importtime(stderr: str) -> list[ImportRow]:
    rows = []
    for line in stderr.splitlines():
        m = _IMPORT_LINE.match(line)
        if m:
            rows.append(ImportRow(int(m[1]), int(m[2]), len(m[3]) // 2, m[4]))
    return rows


def chain(rows: list[ImportRow], module: str) -> list[ImportRow]:
    """The rows from the top-level import down to ``module``'s first import (``-X
    importtime`` prints a module after the modules it imported, one level deeper)."""
    for i, row in enumerate(rows):
        if row.name != module:
            continue
        found = [row]
        for later in rows[i + 1:]:
            if later.depth < found[-1].depth:
                found.append(later)
                if later.depth == 0:
                    break
        return found[::-1]
    return []


def run(argv: list[str], root: Path, importtime: bool
        ) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall and CPU seconds of one fresh process in checkout ``root`` (CPU: user + system
    of the child)."""
    if importtime:
        argv = [argv[0], "-X", "importtime", *argv[1:]]
    path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)
    env = os.environ | {"PYTHONPATH": path, "TRANSFORMERS_VERBOSITY": "error"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=root, timeout=900, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} (in {root}) exited {proc.returncode}:\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall, cpu, proc


def measure_once(runs: Runs, argv: list[str], root: Path) -> None:
    """One plain run and one under ``-X importtime``, added to ``runs``."""
    wall, cpu, proc = run(argv, root, importtime=False)
    runs.wall.append(wall)
    runs.cpu.append(cpu)
    m = _STATS_LINE.search(proc.stdout)
    if m:
        runs.load.append(float(m[2]))
        runs.generate.append(float(m[4]))
    _, _, timed = run(argv, root, importtime=True)
    rows = parse_importtime(timed.stderr)
    runs.last_rows = rows
    runs.imports.append(sum(r.self_us for r in rows) / 1e6)
    for lib in LIBRARIES:
        first = next((r for r in rows if r.name == lib), None)
        if first is not None:
            runs.libraries.setdefault(lib, []).append(first.cumulative_us / 1e6)


def table(results: dict[str, Runs]) -> list[str]:
    head = ["process", "wall s", "cpu s", "imports s", *LIBRARIES.values()]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|--:" * (len(head) - 1) + "|"]
    for name, runs in results.items():
        cells = [name, f"{min(runs.wall):.2f}", f"{min(runs.cpu):.2f}",
                 f"{min(runs.imports):.2f}"]
        for lib in LIBRARIES:
            values = runs.libraries.get(lib)
            cells.append(f"{min(values):.2f}" if values else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, metavar="N")
    parser.add_argument("--only", nargs="+", choices=("help", "plugin", "collect", "worker"),
                        metavar="NAME", help="measure only these (help, plugin, collect, worker)")
    parser.add_argument("--chain", nargs="+", default=[], metavar="MODULE",
                        help="print the import chain that first brought MODULE in")
    parser.add_argument("--compare", nargs="+", default=[], type=Path, metavar="DIR",
                        help="other checkouts (e.g. a `git worktree` of an older commit) "
                        "measured the same way, in turn with this one")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat: at least 1")
    roots = [ROOT, *(p.resolve() for p in args.compare)]
    for root in roots[1:]:
        if not (root / "conformance" / "plugin.py").is_file():
            parser.error(f"--compare {root}: not a checkout of the suite (no conformance/)")
    results: dict[Path, dict[str, Runs]] = {root: {} for root in roots}
    with tempfile.TemporaryDirectory(prefix="bench-imports-") as tmp:
        chosen = {k: v for k, v in commands(Path(tmp) / "results.json").items()
                  if not args.only or k in args.only}
        for i in range(args.repeat):
            for name, cmd in chosen.items():
                for root in roots:
                    runs = results[root].setdefault(name, Runs())
                    measure_once(runs, cmd, root)
                    print(f"  {i + 1}/{args.repeat} {name} {root.name}: wall {runs.wall[-1]:.2f}"
                          f" s, cpu {runs.cpu[-1]:.2f} s, imports {runs.imports[-1]:.2f} s",
                          file=sys.stderr)
    for root in roots:
        print(f"\n{root} (fastest of {args.repeat}; library columns: cumulative import "
              "seconds)")
        print("\n".join(table(results[root])))
        worker = results[root].get("worker")
        if worker is not None and worker.load:
            print(f"worker: model load {min(worker.load):.2f} s, pipeline calls "
                  f"{min(worker.generate):.2f} s")
    for module in args.chain:
        for name, runs in results[ROOT].items():
            found = chain(runs.last_rows, module)
            if not found:
                print(f"{module}: not imported by {name}")
                continue
            print(f"{module}: first imported by {name} through")
            for row in found:
                print(f"  {'  ' * row.depth}{row.name} ({row.cumulative_us / 1e6:.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
