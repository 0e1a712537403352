"""The numerical fingerprint: a fixed battery of small seeded kernel probes.

Two machines produce the same image bits only if the kernels the pipeline runs produce the
same bits. A hardware class name (``cpu-amd-avx512+bf16``) is a guess at that; the probes
measure it. Each probe runs one operator the embedded models use (GEMM at the models' own
shapes, conv2d, scaled-dot-product attention at their head sizes, group / layer norm,
softmax, SiLU / GELU, nearest and bilinear interpolation, full reductions (whose partial
sums follow the thread count), the fp8 storage round trip and the
GGUF dequantize-then-matmul path) on seeded inputs, on the selected device, in each dtype,
and keeps a 16-hex digest of the output's exact bytes.

``precision_digests`` folds the probes a precision depends on, with the software stack and
thread count, into one digest per precision: equal digests are the suite's prediction that
the images of that precision are bit-identical, and the own-class check uses the exact tier
only then. :func:`explain_difference` names the probes that differ.

The battery is computed once per process (it takes well under a second on CPU).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from conformance.precision import probe_filter

#: Bump when the battery changes: digests of different battery versions never compare equal.
BATTERY_VERSION = 1

DTYPES = ("float32", "bfloat16", "float16")
_SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


@dataclass(frozen=True)
class Probe:
    """One operator at fixed shapes; ``run(make, dtype, device)`` returns its output."""

    name: str
    dtypes: tuple[str, ...]
    run: Callable[[Callable[..., Any], Any, str], Any]
    group: str  # what it stands for in messages: "GEMM", "SDPA", "conv", ...


def _linear(shape_x: tuple[int, int], out_features: int) -> Callable[..., Any]:
    def run(make: Callable[..., Any], dtype: Any, device: str) -> Any:
        import torch.nn.functional as F

        x = make(*shape_x, dtype=dtype, device=device)
        w = make(out_features, shape_x[1], dtype=dtype, device=device, scale=shape_x[1] ** -0.5)
        b = make(out_features, dtype=dtype, device=device)
        return F.linear(x, w, b)

    return run


def _bmm(b: int, m: int, k: int, n: int) -> Callable[..., Any]:
    def run(make: Callable[..., Any], dtype: Any, device: str) -> Any:
        import torch

        x = make(b, m, k, dtype=dtype, device=device)
        y = make(b, k, n, dtype=dtype, device=device, scale=k**-0.5)
        return torch.bmm(x, y)

    return run


def _conv(cin: int, cout: int, size: int, kernel: int, stride: int = 1) -> Callable[..., Any]:
    def run(make: Callable[..., Any], dtype: Any, device: str) -> Any:
        import torch.nn.functional as F

        x = make(1, cin, size, size, dtype=dtype, device=device)
        w = make(cout, cin, kernel, kernel, dtype=dtype, device=device,
                 scale=(cin * kernel * kernel) ** -0.5)
        b = make(cout, dtype=dtype, device=device)
        return F.conv2d(x, w, b, stride=stride, padding=kernel // 2)

    return run


def _sdpa(heads: int, q_len: int, kv_len: int, head_dim: int) -> Callable[..., Any]:
    def run(make: Callable[..., Any], dtype: Any, device: str) -> Any:
        import torch.nn.functional as F

        q = make(1, heads, q_len, head_dim, dtype=dtype, device=device)
        k = make(1, heads, kv_len, head_dim, dtype=dtype, device=device)
        v = make(1, heads, kv_len, head_dim, dtype=dtype, device=device)
        return F.scaled_dot_product_attention(q, k, v)

    return run


def _elementwise(op: str) -> Callable[..., Any]:
    def run(make: Callable[..., Any], dtype: Any, device: str) -> Any:
        import torch
        import torch.nn.functional as F

        x = make(2, 64, 16, 16, dtype=dtype, device=device, scale=3.0)
        if op == "group_norm":
            return F.group_norm(x, 8, make(64, dtype=dtype, device=device),
                                make(64, dtype=dtype, device=device), eps=1e-6)
        if op == "layer_norm":
            t = x.reshape(2, 256, 64)
            return F.layer_norm(t, (64,), make(64, dtype=dtype, device=device),
                                make(64, dtype=dtype, device=device), eps=1e-6)
        if op == "softmax":
            return torch.softmax(x.reshape(2, 64, 256), dim=-1)
        if op == "silu":
            return F.silu(x)
        if op == "gelu":
            return F.gelu(x)
        if op == "gelu_tanh":
            return F.gelu(x, approximate="tanh")
        if op == "interp_nearest":
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        if op == "interp_bilinear":
            return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        if op == "reduce":  # full reductions split their partial sums by thread
            big = make(1, 64, 128, 128, dtype=dtype, device=device)
            return torch.stack([big.sum(), big.mean(), big.reshape(64, -1).sum(-1).sum()])
        if op == "exp_sin":  # timestep / rotary embeddings
            return torch.cat([torch.exp(-x), torch.sin(x), torch.cos(x)])
        raise AssertionError(op)

    return run


def _fp8(storage: str) -> Callable[..., Any]:
    """Layerwise casting: weights stored in fp8, upcast to fp32 for the matmul."""

    def run(make: Callable[..., Any], dtype: Any, device: str) -> Any:
        import torch
        import torch.nn.functional as F

        w = make(256, 256, dtype=torch.float32, device=device, scale=0.0625)
        stored = w.to(getattr(torch, storage))
        x = make(64, 256, dtype=torch.float32, device=device)
        return torch.cat([stored.to(torch.float32).reshape(-1),
                          F.linear(x, stored.to(torch.float32)).reshape(-1)])

    return run


def _gguf(quant: str) -> Callable[..., Any]:
    """GGUF: blocks written by the project's quantizer, dequantized by diffusers' own code
    on the device, then the fp32 matmul."""

    def run(make: Callable[..., Any], dtype: Any, device: str) -> Any:
        import gguf
        import numpy as np
        import torch
        import torch.nn.functional as F
        from diffusers.quantizers.gguf.utils import GGUFParameter, dequantize_gguf_tensor

        from conformance.quant.ggml import quantize

        w = make(256, 256, dtype=torch.float32, device="cpu", scale=0.0625)
        qtype = getattr(gguf.GGMLQuantizationType, quant)
        blob = quantize(w.numpy().astype(np.float32), qtype)
        param = GGUFParameter(torch.from_numpy(np.ascontiguousarray(blob)).to(device),
                              quant_type=qtype)
        deq = dequantize_gguf_tensor(param).to(torch.float32).reshape(256, 256)
        x = make(64, 256, dtype=torch.float32, device=device)
        return torch.cat([deq.reshape(-1), F.linear(x, deq).reshape(-1)])

    return run


_ALL = DTYPES
#: The battery. Shapes follow the embedded models: tiny-sd's UNet (channels 32/64, 8 groups,
#: head dim 4 x 16 heads at 64 channels, cross-attention over 77 tokens of width 64) and VAE,
#: tiny-flux's transformer (inner width 256, 4 heads of 64, joint attention over text + image
#: tokens).
BATTERY: tuple[Probe, ...] = (
    Probe("linear-64x256x256", _ALL, _linear((64, 256), 256), "GEMM"),
    Probe("linear-77x64x64", _ALL, _linear((77, 64), 64), "GEMM"),
    Probe("linear-256x64x256", _ALL, _linear((256, 64), 256), "GEMM"),
    Probe("linear-1024x32x32", _ALL, _linear((1024, 32), 32), "GEMM"),
    # tiny-flux's single-block output projection (attention + MLP concatenated: K = 1280):
    # oneDNN takes its AVX512-BF16 kernels only from such a K on
    Probe("linear-48x1280x256", _ALL, _linear((48, 1280), 256), "GEMM"),
    Probe("linear-48x512x256", _ALL, _linear((48, 512), 256), "GEMM"),
    Probe("bmm-16x64x4x77", _ALL, _bmm(16, 64, 4, 77), "GEMM"),
    Probe("conv3x3-32x64-16", _ALL, _conv(32, 64, 16, 3), "conv"),
    Probe("conv3x3-4x32-8", _ALL, _conv(4, 32, 8, 3), "conv"),
    Probe("conv3x3-64x64-32-s2", _ALL, _conv(64, 64, 32, 3, 2), "conv"),
    Probe("conv1x1-64x32-16", _ALL, _conv(64, 32, 16, 1), "conv"),
    Probe("sdpa-16h-64q-64kv-d4", _ALL, _sdpa(16, 64, 64, 4), "SDPA"),
    Probe("sdpa-16h-64q-77kv-d4", _ALL, _sdpa(16, 64, 77, 4), "SDPA"),
    Probe("sdpa-4h-80q-80kv-d64", _ALL, _sdpa(4, 80, 80, 64), "SDPA"),
    Probe("sdpa-1h-256q-256kv-d64", _ALL, _sdpa(1, 256, 256, 64), "SDPA"),
    *(Probe(op, _ALL, _elementwise(op), group) for op, group in (
        ("group_norm", "norm"), ("layer_norm", "norm"), ("softmax", "softmax"),
        ("silu", "activation"), ("gelu", "activation"), ("gelu_tanh", "activation"),
        ("interp_nearest", "interpolation"), ("interp_bilinear", "interpolation"),
        ("exp_sin", "elementwise math"), ("reduce", "reduction"),
    )),
    Probe("fp8-e4m3-linear", ("float32",), _fp8("float8_e4m3fn"), "fp8 cast"),
    Probe("fp8-e5m2-linear", ("float32",), _fp8("float8_e5m2"), "fp8 cast"),
    Probe("gguf-q8_0-linear", ("float32",), _gguf("Q8_0"), "GGUF dequantize"),
    Probe("gguf-q4_k-linear", ("float32",), _gguf("Q4_K"), "GGUF dequantize"),
    Probe("gguf-q6_k-linear", ("float32",), _gguf("Q6_K"), "GGUF dequantize"),
)


def probe_key(probe: Probe, dtype: str) -> str:
    return f"{probe.name}/{_SHORT[dtype]}"


def _maker(seed: int) -> Callable[..., Any]:
    """Seeded inputs made on the CPU in float32 (identical everywhere), then cast and moved."""
    import torch

    gen = torch.Generator("cpu").manual_seed(seed)

    def make(*shape: int, dtype: Any, device: str, scale: float = 1.0) -> Any:
        t = torch.randn(*shape, generator=gen, dtype=torch.float32) * scale
        return t.to(dtype).to(device)

    return make


def _digest(tensor: Any) -> str:
    import torch

    t = tensor.detach().to("cpu").contiguous()
    data = t.reshape(-1).view(torch.uint8).numpy().tobytes()
    head = f"{t.dtype}{tuple(t.shape)}".encode()
    return hashlib.sha256(head + data).hexdigest()[:16]


@dataclass(frozen=True)
class ProbeResult:
    digests: dict[str, str]   # "linear-64x256x256/fp32" -> 16 hex, or "error: ..."
    seconds: float


def run_battery(device: str = "cpu", seed: int = 20261202) -> ProbeResult:
    """Run every probe in every dtype it takes on ``device``; an operator the device cannot
    run in a dtype is recorded as ``error: <Type>`` (that, too, separates machines)."""
    import diffusers.quantizers.gguf.utils  # noqa: F401
    import torch

    # What the GGUF probes import (diffusers, gguf-py, the quantizer) is loaded before the
    # clock starts: a conformance run has imported it anyway.
    import conformance.quant.ggml  # noqa: F401

    start = time.perf_counter()
    digests: dict[str, str] = {}
    with torch.no_grad():
        for i, probe in enumerate(BATTERY):
            for dtype in probe.dtypes:
                make = _maker(seed + 1000 * i + DTYPES.index(dtype))
                key = probe_key(probe, dtype)
                try:
                    digests[key] = _digest(probe.run(make, getattr(torch, dtype), device))
                except Exception as exc:
                    digests[key] = f"error: {type(exc).__name__}"
    return ProbeResult(digests, round(time.perf_counter() - start, 4))


def _probes_for(precision: str) -> Callable[[str], bool]:
    """Which probe keys the images of ``precision`` depend on (its kind decides:
    :func:`conformance.precision.depends_on_probe`)."""
    return probe_filter(precision)


#: Fingerprint keys folded into every precision digest: what the probes cannot see.
STACK_KEYS = ("torch", "diffusers", "transformers", "threads", "deterministic")


def precision_digest(digests: Mapping[str, str], stack: Mapping[str, Any],
                     precision: str) -> str:
    """12-hex digest predicting the image bits of ``precision`` on this machine."""
    wanted = _probes_for(precision)
    parts = [f"battery={BATTERY_VERSION}"]
    parts += [f"{k}={stack.get(k)!r}" for k in STACK_KEYS]
    parts += [f"{k}={v}" for k, v in sorted(digests.items()) if wanted(k)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def precision_digests(digests: Mapping[str, str], stack: Mapping[str, Any],
                      precisions: tuple[str, ...]) -> dict[str, str]:
    return {p: precision_digest(digests, stack, p) for p in precisions}


def differing_probes(mine: Mapping[str, str], theirs: Mapping[str, str],
                     precision: str | None = None) -> list[str]:
    """Probe keys whose digests differ (restricted to what ``precision`` depends on)."""
    wanted = _probes_for(precision) if precision else (lambda _k: True)
    keys = sorted(k for k in set(mine) | set(theirs) if wanted(k))
    return [k for k in keys if mine.get(k) != theirs.get(k)]


def agreeing_probes(mine: Mapping[str, str], theirs: Mapping[str, str],
                    precision: str) -> int:
    """How many probes that ``precision`` depends on have equal digests on both machines
    (a probe that failed on either side does not count)."""
    wanted = _probes_for(precision)
    return sum(1 for k, v in mine.items()
               if wanted(k) and not v.startswith("error") and theirs.get(k) == v)


def summarize_probes(keys: list[str]) -> str:
    """``["linear-64x256x256/bf16", "sdpa-.../bf16"]`` -> ``"bf16 GEMM, bf16 SDPA"``."""
    groups = {p.name: p.group for p in BATTERY}
    seen: dict[str, None] = {}
    for key in keys:
        name, _, dtype = key.rpartition("/")
        seen[f"{dtype} {groups.get(name, name)}"] = None
    return ", ".join(seen)
