"""Start-up: what each kind of process imports, and what that costs, in fresh interpreters.

    python benchmarks/bench_imports.py [--repeat 3] [--only NAME ...] [--chain MODULE ...]
                                       [--compare DIR ...]

Runs each of these ``--repeat`` times in a fresh interpreter, once plainly and once under
``python -X importtime``:

* ``help``: ``conformance --help``;
* ``plugin``: ``import conformance.plugin, conformance.session, conformance.generate``,
  what every pytest process in this environment imports with the plugin;
* ``collect``: ``pytest conformance --collect-only -q -s -p no:cacheprovider``, the
  default run's collection (it measures the machine: the known deviations name hardware
  classes);
* ``worker``: what an xdist worker does up to its first result: ``pytest conformance
  --device cpu -n 0 -s -k ...`` of one tiny-sd fp32 item's own-class check (collection,
  the probe battery, one model load, one generation, the metrics);
* ``steps``: the same work in one process, step by step (the suite's modules, torch,
  ``configure_torch``, the probe battery, loading tiny-sd, one generation), each step
  with the libraries it brought in.

``-s`` keeps pytest from capturing standard error, where ``-X importtime`` writes: the
imports made while a test module is collected or a test runs would be lost otherwise.

It prints the fastest of the repeats per column. From the plain run: wall time, the
child's CPU time, and its import CPU time (the CPU seconds inside the outermost ``import``
statements and ``importlib.import_module`` calls, counted by a few lines put before the
command). CPU seconds are what to compare on a shared machine: other processes stretch the
wall times, and ``-X importtime``'s, by as much as 2-3x. From the ``-X importtime`` run:
the import seconds (the sum of its own times) and, for the libraries that dominate, the
cumulative import seconds of each (``-`` when not imported; the columns overlap: peft
imports part of transformers, and whoever imports a module first pays for it). For
``worker`` it also prints the model load and pipeline call seconds the run reported.

``--chain MODULE`` prints, from the last ``-X importtime`` run of each process, the chain
of imports that first brought MODULE in (who imports peft, scipy.stats ...); its top row
is the outermost import, which for an import inside a function names no caller.
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
    import_cpu: list[float] = field(default_factory=list)
    imports: list[float] = field(default_factory=list)
    libraries: dict[str, list[float]] = field(default_factory=dict)
    load: list[float] = field(default_factory=list)
    generate: list[float] = field(default_factory=list)
    last_rows: list[ImportRow] = field(default_factory=list)


def commands(results: Path) -> dict[str, str]:
    """What each process runs, as the code of ``python -c``."""
    pytest = "import runpy, sys\nsys.argv = ['pytest', {}]\nrunpy.run_module('pytest', " \
        "run_name='__main__', alter_sys=True)"
    collect = ["conformance", "--collect-only", "-q", "-s", "-p", "no:cacheprovider"]
    worker = ["conformance", "--device", "cpu", "-n", "0", "-q", "-s", "-p",
              "no:cacheprovider", "--results", str(results), "-k", WORKER_FILTER]
    return {
        "help": "from conformance.cli import main\nraise SystemExit(main(['--help']))",
        "plugin": "import conformance.plugin, conformance.session, conformance.generate",
        "collect": pytest.format(", ".join(map(repr, collect))),
        "worker": pytest.format(", ".join(map(repr, worker))),
    }


#: Put before a plain run's code: adds up the CPU seconds spent in imports (the outermost
#: ``import`` statement or ``importlib.import_module`` call, the nested ones included) and
#: writes them to standard error at exit. CPU time, unlike ``-X importtime``'s wall time,
#: is barely moved by other processes on a shared machine.
IMPORT_CPU_PRELUDE = """\
import atexit as _a, builtins as _b, importlib as _il, os as _o, time as _t
_state = [0, 0.0]
def _timed(inner):
    def timed(*args, **kwargs):
        if _state[0]:
            return inner(*args, **kwargs)
        _state[0] = 1
        start = _t.process_time()
        try:
            return inner(*args, **kwargs)
        finally:
            _state[1] += _t.process_time() - start
            _state[0] = 0
    return timed
_b.__import__ = _timed(_b.__import__)
_il.import_module = _timed(_il.import_module)
_a.register(lambda: _o.write(2, f"IMPORT-CPU {_state[1]:.4f}\\n".encode()))
del _timed
"""
_IMPORT_CPU_LINE = re.compile(r"^IMPORT-CPU ([\d.]+)$", re.M)


#: What a worker does before its first result, one step at a time, in one process (run
#: after :data:`IMPORT_CPU_PRELUDE`): each step prints its wall, CPU and import CPU seconds
#: and the libraries of :data:`LIBRARIES` it brought in.
STEPS = """\
import sys, time
def _step(name, run):
    before = set(sys.modules)
    wall, cpu, imp = time.perf_counter(), time.process_time(), _state[1]
    value = run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    new = [m for m in LIBRARIES if m in sys.modules and m not in before]
    print("STEP", name, f"{wall:.4f} {cpu:.4f} {_state[1] - imp:.4f}", *new)
    return value
_step("modules", lambda: __import__("conformance.session") and __import__("conformance.plugin"))
from conformance.cases import load_cases
from conformance.generate import Runner, configure_torch
from conformance.hardware import fingerprint
from conformance.identity import measure
_step("import-torch", lambda: __import__("torch"))
_step("configure-torch", lambda: configure_torch(1))
_step("probe-battery", lambda: measure("cpu", fingerprint("cpu", 1)))
item = load_cases().items(["tiny-sd"], ["fp32"])[0]
runner = Runner("cpu")
_step("load-tiny-sd", lambda: runner.pipeline_for(item))
_step("generate", lambda: runner.generate(item))
"""
_STEP_LINE = re.compile(r"^STEP (\S+) ([\d.]+) ([\d.]+) ([\d.]+)(.*)$", re.M)


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


def run(code: str, root: Path, importtime: bool
        ) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall and CPU seconds of one fresh ``python -c code`` in checkout ``root`` (CPU: user
    + system of the child); under ``-X importtime``, or with :data:`IMPORT_CPU_PRELUDE`."""
    argv = ([sys.executable, "-X", "importtime", "-c", code] if importtime
            else [sys.executable, "-c", IMPORT_CPU_PRELUDE + code])
    path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)
    env = os.environ | {"PYTHONPATH": path, "TRANSFORMERS_VERBOSITY": "error"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=root, timeout=900, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"python -c {code!r} (in {root}) exited {proc.returncode}:\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall, cpu, proc


def measure_once(runs: Runs, code: str, root: Path) -> None:
    """One plain run and one under ``-X importtime``, added to ``runs``."""
    wall, cpu, proc = run(code, root, importtime=False)
    runs.wall.append(wall)
    runs.cpu.append(cpu)
    m = _IMPORT_CPU_LINE.search(proc.stderr)
    if m is None:
        raise SystemExit(f"no IMPORT-CPU line from python -c {code!r}:\n{proc.stderr[-3000:]}")
    runs.import_cpu.append(float(m[1]))
    m = _STATS_LINE.search(proc.stdout)
    if m:
        runs.load.append(float(m[2]))
        runs.generate.append(float(m[4]))
    _, _, timed = run(code, root, importtime=True)
    rows = parse_importtime(timed.stderr)
    runs.last_rows = rows
    runs.imports.append(sum(r.self_us for r in rows) / 1e6)
    for lib in LIBRARIES:
        first = next((r for r in rows if r.name == lib), None)
        if first is not None:
            runs.libraries.setdefault(lib, []).append(first.cumulative_us / 1e6)


@dataclass
class Steps:
    """The worker's steps over the repeats: (wall, CPU, import CPU) lists and the libraries
    each step brought in."""

    times: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)
    libraries: dict[str, list[str]] = field(default_factory=dict)


def measure_steps(steps: Steps, root: Path) -> None:
    code = f"LIBRARIES = {tuple(LIBRARIES)!r}\n" + STEPS
    _, _, proc = run(code, root, importtime=False)
    for m in _STEP_LINE.finditer(proc.stdout):
        steps.times.setdefault(m[1], []).append((float(m[2]), float(m[3]), float(m[4])))
        steps.libraries[m[1]] = m[5].split()


def steps_table(steps: Steps) -> list[str]:
    lines = ["| step | wall s | cpu s | import cpu s | libraries it imported |",
             "|---|--:|--:|--:|---|"]
    for name, times in steps.times.items():
        best = [min(t[i] for t in times) for i in range(3)]
        libs = ", ".join(steps.libraries.get(name, [])) or "-"
        lines.append(f"| {name} | {best[0]:.2f} | {best[1]:.2f} | {best[2]:.2f} | {libs} |")
    return lines


def table(results: dict[str, Runs]) -> list[str]:
    head = ["process", "wall s", "cpu s", "import cpu s", "imports s", *LIBRARIES.values()]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|--:" * (len(head) - 1) + "|"]
    for name, runs in results.items():
        cells = [name, f"{min(runs.wall):.2f}", f"{min(runs.cpu):.2f}",
                 f"{min(runs.import_cpu):.2f}", f"{min(runs.imports):.2f}"]
        for lib in LIBRARIES:
            values = runs.libraries.get(lib)
            cells.append(f"{min(values):.2f}" if values else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, metavar="N")
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        choices=("help", "plugin", "collect", "worker", "steps"),
                        help="measure only these (help, plugin, collect, worker, steps)")
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
    steps = {root: Steps() for root in roots}
    with tempfile.TemporaryDirectory(prefix="bench-imports-") as tmp:
        chosen = {k: v for k, v in commands(Path(tmp) / "results.json").items()
                  if not args.only or k in args.only}
        for i in range(args.repeat):
            if not args.only or "steps" in args.only:
                for root in roots:
                    measure_steps(steps[root], root)
                    print(f"  {i + 1}/{args.repeat} steps {root.name}", file=sys.stderr)
            for name, cmd in chosen.items():
                for root in roots:
                    runs = results[root].setdefault(name, Runs())
                    measure_once(runs, cmd, root)
                    print(f"  {i + 1}/{args.repeat} {name} {root.name}: wall {runs.wall[-1]:.2f}"
                          f" s, cpu {runs.cpu[-1]:.2f} s, import cpu {runs.import_cpu[-1]:.2f}"
                          f" s, imports {runs.imports[-1]:.2f} s", file=sys.stderr)
    for root in roots:
        print(f"\n{root} (fastest of {args.repeat}; library columns: cumulative import "
              "seconds)")
        if results[root]:
            print("\n".join(table(results[root])))
        worker = results[root].get("worker")
        if worker is not None and worker.load:
            print(f"worker: model load {min(worker.load):.2f} s, pipeline calls "
                  f"{min(worker.generate):.2f} s")
        if steps[root].times:
            print("\nworker steps, in one process:")
            print("\n".join(steps_table(steps[root])))
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
