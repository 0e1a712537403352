"""The commands that must stay cheap: wall time in fresh processes, and whether they import
torch or diffusers.

    python benchmarks/bench_cheap.py [--repeat 3] [--golden DIR]

Runs ``conformance --help``, ``conformance validate GOLDEN`` and ``conformance matrix GOLDEN
--markdown -`` in a fresh interpreter each time (imports included, as a user sees them),
``--repeat`` times, and prints the fastest and slowest wall time of each and whether torch or
diffusers was imported. Target: validate of the committed sets <= 3 s, and none of the three
imports torch or diffusers (the matrix of 10 000 outcomes is timed by bench_matrix.py).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: runs the command-line entry point, then says which heavy libraries it imported
PROBE = (
    "import sys\nfrom conformance.cli import main\n"
    "try:\n    code = main(sys.argv[1:])\nexcept SystemExit as exc:\n    code = exc.code\n"
    "print('imported:', 'torch' in sys.modules, 'diffusers' in sys.modules, 'exit:', code,"
    " file=sys.stderr)\n"
)

VALIDATE_TARGET_S = 3.0


def run_once(argv: list[str]) -> tuple[float, bool, bool, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)
    wall = time.perf_counter() - start
    last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    parts = last.split()
    if len(parts) != 5 or parts[0] != "imported:":
        raise SystemExit(f"conformance {' '.join(argv)} did not finish: {proc.stderr[-2000:]}")
    return wall, parts[1] == "True", parts[2] == "True", parts[4]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, metavar="N")
    parser.add_argument("--golden", default=str(ROOT / "golden"), metavar="DIR")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat: at least 1")
    commands = {
        "--help": ["--help"],
        "validate": ["validate", args.golden],
        "matrix": ["matrix", args.golden, "--markdown", "-"],
    }
    ok = True
    for name, command in commands.items():
        runs = [run_once(command) for _ in range(args.repeat)]
        walls = sorted(r[0] for r in runs)
        heavy = any(r[1] or r[2] for r in runs)
        ok &= not heavy
        note = ""
        if name == "validate":
            ok &= walls[0] <= VALIDATE_TARGET_S
            note = f"  (target <= {VALIDATE_TARGET_S:.0f} s)"
        print(f"  {name:10s} fastest {walls[0]:5.2f} s  slowest {walls[-1]:5.2f} s  "
              f"exit {runs[0][3]}  imports torch/diffusers: {'yes' if heavy else 'no'}{note}")
    print("targets met" if ok else "targets NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
