"""Benchmark the GGML quantizers: throughput, error and size per type.

Quantizes a Gaussian ``N x N`` float32 tensor (default 4096 x 4096, unit variance)
to every supported block type and prints a Markdown table with

* bits per weight (storage cost),
* RMSE of ``gguf.quants.dequantize`` of our bytes against the input,
* quantization throughput in MB/s of float32 input (best of ``--repeat`` runs).

    python benchmarks/bench_quant.py [--size 4096] [--repeat 1] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _set_threads(threads: int) -> None:
    # numpy's element-wise kernels used here are single-threaded; only torch is capped
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # torch is optional for this benchmark
        pass


def run(size: int, repeat: int, seed: int) -> list[dict[str, float | str]]:
    """Quantize a ``size x size`` Gaussian tensor to every type; return one row per type."""
    import gguf

    from conformance.quant import ggml

    x = np.random.default_rng(seed).standard_normal((size, size)).astype(np.float32)
    mb = x.nbytes / 1e6
    rows: list[dict[str, float | str]] = []
    for qtype in ggml.QUANTIZED_TYPES:
        best = float("inf")
        data = None
        for _ in range(max(1, repeat)):
            start = time.perf_counter()
            data = ggml.quantize(x, qtype)
            best = min(best, time.perf_counter() - start)
        assert data is not None
        y = gguf.quants.dequantize(data, qtype)
        rmse = float(np.sqrt(np.mean((y.astype(np.float64) - x) ** 2)))
        rows.append(
            {
                "type": qtype.name,
                "bits_per_weight": ggml.bits_per_weight(qtype),
                "rmse": rmse,
                "seconds": best,
                "mb_per_s": mb / best,
                "bytes": int(data.nbytes),
            }
        )
    return rows


def to_markdown(rows: list[dict[str, float | str]], size: int) -> str:
    """Format benchmark rows as a Markdown table."""
    lines = [
        f"Gaussian {size}x{size} float32 (unit variance), {size * size * 4 / 1e6:.1f} MB input",
        "",
        "| type | bits/weight | RMSE | quantize MB/s | seconds |",
        "|------|------------:|-----:|--------------:|--------:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['type']} | {r['bits_per_weight']:.4g} | {r['rmse']:.5f} "
            f"| {r['mb_per_s']:.1f} | {r['seconds']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="tensor is SIZE x SIZE")
    parser.add_argument("--repeat", type=int, default=1, help="runs per type (best is kept)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the raw rows as JSON")
    args = parser.parse_args(argv)
    if args.size % 256:
        parser.error("--size must be a multiple of 256 (the K-quant block size)")
    _set_threads(args.threads)
    rows = run(args.size, args.repeat, args.seed)
    print(to_markdown(rows, args.size))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
