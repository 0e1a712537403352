"""``conformance cpu-matrix``: a cross-class matrix from one CPU machine.

Runs the suite in subprocesses under several CPU configurations (ATen ISA level through
``ATEN_CPU_CAPABILITY`` x oneDNN's ISA limit through ``ONEDNN_MAX_CPU_ISA`` x thread
count), one results file each, then merges them with ``conformance matrix``. Each
configuration is its own column: the ISA level and a oneDNN limit are part of the hardware
class (``cpu-amd-avx2+bf16``, ``cpu-amd-avx512+bf16-onednn_avx2``), the thread count is part
of the measured identity and kept in the column label.

By default every run records its goldens into ``OUT/golden`` (the ``default`` ISA level
without a oneDNN limit, this machine's reference class, runs first), so the matrix needs no
committed goldens and works for any case file; ``--golden-dir golden`` compares with the
committed ones.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conformance.errors import ConformanceInputError

ISAS = ("default", "avx2", "avx512")


def _isa_list(text: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    bad = [v for v in values if v not in ISAS]
    if not values or bad:
        raise argparse.ArgumentTypeError(
            f"{text!r}: accepted ISA levels are {', '.join(ISAS)} (comma list)"
        )
    return values


def _onednn_list(text: str) -> tuple[str | None, ...]:
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    bad = [v for v in values if v != "-" and not re.fullmatch(r"[A-Z][A-Z0-9_]{1,31}", v)]
    if not values or bad:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give ONEDNN_MAX_CPU_ISA values (e.g. AVX2, AVX512_CORE, "
            "AVX512_CORE_AMX) or - for no limit, as a comma list"
        )
    return tuple(None if v == "-" else v for v in values)


def _thread_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give thread counts >= 1, e.g. 1,2")
    return values


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "cpu-matrix",
        help="run the suite under several CPU classes (ISA x threads) and merge a matrix",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--isas", type=_isa_list, default=ISAS, metavar="LIST",
                   help="ATen ISA levels (default: default,avx2,avx512)")
    p.add_argument("--threads", type=_thread_list, default=(1, 2), metavar="LIST",
                   help="thread counts (default: 1,2)")
    p.add_argument("--onednn", type=_onednn_list, default=(None,), metavar="LIST",
                   help="ONEDNN_MAX_CPU_ISA limits, - for none (default: -)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="folder for one results file per configuration and the matrix")
    p.add_argument("--force", action="store_true", help="reuse a non-empty --out folder")
    p.add_argument("--golden-dir", type=Path, default=None, metavar="DIR",
                   help="compare with the goldens under DIR instead of recording a fresh set "
                   "into OUT/golden")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER,
                   help="after --: more pytest / suite arguments (e.g. --cases FILE)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    if out.exists() and any(out.iterdir()) and not args.force:
        raise ConformanceInputError(
            out, "exists and is not empty; choose another --out or pass --force"
        )
    extra = [a for a in args.pytest_args if a != "--"]
    if args.golden_dir is None:
        from conformance.hardware import cpu_class_name, cpu_features

        base_env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
        reference = cpu_class_name(cpu_features(env=base_env, aten_level="default"))
        extra += ["--golden-dir", str(out / "golden"), "--record"]
        if not any(a.startswith("--reference-class") for a in extra):
            extra += ["--reference-class", reference]
    else:
        extra += ["--golden-dir", str(args.golden_dir)]
    results = []
    isas = sorted(args.isas, key=lambda isa: isa != "default")  # the reference class first
    configs = [(isa, o, t) for isa in isas for o in sorted(args.onednn, key=lambda o: o or "")
               for t in args.threads]
    for n, (isa, onednn, threads) in enumerate(configs, start=1):
        label = f"{isa}-t{threads}" + (f"-onednn_{onednn.lower()}" if onednn else "")
        path = out / label / "results.json"
        cmd = [sys.executable, "-m", "pytest", "--pyargs", "conformance", "-q",
               "-p", "no:cacheprovider", "--device", "cpu", "--threads", str(threads),
               "--save-images", "--results", str(path), *extra]
        env = dict(os.environ, ATEN_CPU_CAPABILITY=isa)
        env.pop("ONEDNN_MAX_CPU_ISA", None)
        if onednn:
            env["ONEDNN_MAX_CPU_ISA"] = onednn
        print(f"[{n}/{len(configs)}] ATEN_CPU_CAPABILITY={isa}"
              + (f" ONEDNN_MAX_CPU_ISA={onednn}" if onednn else "")
              + f" threads={threads} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        log = out / label / "pytest.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as fh:
            proc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                  check=False)
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        print(f"    exit {proc.returncode} in {time.perf_counter() - start:.0f} s: {tail[0]}",
              file=sys.stderr, flush=True)
        if not path.is_file():
            raise ConformanceInputError(log, "the run wrote no results file; see this log")
        results.append(str(path))
    from conformance.cli import main as cli_main

    return cli_main(["matrix", *results, "--html", str(out / "matrix.html"),
                     "--markdown", str(out / "matrix.md"), "--json", str(out / "matrix.json")])
