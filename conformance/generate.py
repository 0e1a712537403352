"""Deterministic generation: pinned threads, seeded CPU generators, cached pipelines.

:class:`Runner` loads each pipeline once per (model, precision) per process, installs a
fresh scheduler for every call (no state leaks between cases), seeds a CPU
``torch.Generator`` from the case (so the initial noise is the same on every device), and
records a per-step latent trace through ``callback_on_step_end``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from conformance.cases import Item
from conformance.models import (
    Family,
    ModelSpec,
    ModelUnavailable,
    default_fixtures_dir,
    dtype_keyword,
    get_model,
)
from conformance.precision import PRECISIONS, Kind
from conformance.schedulers import build_scheduler
from conformance.trace import StepTrace

_DTYPE_KWARG = dtype_keyword()


@dataclass
class Generation:
    """One generated image with how it was made."""

    item_id: str
    image: np.ndarray
    trace: list[StepTrace]
    seconds: float


@dataclass
class RunnerStats:
    loads: int = 0
    load_seconds: float = 0.0
    generations: int = 0
    generate_seconds: float = 0.0
    loaded: list[str] = field(default_factory=list)
    #: stored size of the denoiser's weights per "model/precision"
    denoiser_bytes: dict[str, int] = field(default_factory=dict)


def configure_torch(threads: int, deterministic: bool = True, device: str = "cpu") -> None:
    """Pin intra-op threads and switch deterministic algorithms on (or off)."""
    import torch

    if device.startswith("cuda") and deterministic:
        # cuBLAS reads this when it initialises; it must be set before the first matmul.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # only settable before parallel work started
        torch.set_num_interop_threads(1)
    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


CACHE_ENV = "CONFORMANCE_CACHE"


def cache_dir() -> Path:
    """``$CONFORMANCE_CACHE``, else ``~/.cache/diffusion-conformance``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "diffusion-conformance"


def gguf_file(model_dir: Path, recipe: str) -> Path:
    """A GGUF file of ``model_dir`` (config.json + safetensors) quantized with ``recipe``.

    Built with the project's own ``conformance quantize`` and cached under
    :func:`cache_dir`, keyed by the weights' SHA-256: it is rebuilt, never stored.
    """
    import argparse
    import hashlib

    from conformance.quant.command import run_quantize

    digest = hashlib.sha256()
    for weights in sorted(model_dir.glob("*.safetensors")):
        digest.update(weights.read_bytes())
    out = cache_dir() / "gguf" / f"{model_dir.parent.name}-{model_dir.name}-" \
        f"{digest.hexdigest()[:16]}-{recipe}.gguf"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        args = argparse.Namespace(src=str(model_dir), qtype=recipe, out=str(out), force=True)
        with contextlib.redirect_stdout(sys.stderr):
            code = run_quantize(args)
        if code != 0 or not out.is_file():
            raise RuntimeError(f"conformance quantize {model_dir} --type {recipe} failed ({code})")
    return out


#: Changes that should not change the image, checked by the invariance tests.
VARIANTS: dict[str, str] = {
    "threads-2": "2 torch intra-op threads instead of the pinned count",
    "attention-slicing": "attention computed in slices (pipe.enable_attention_slicing('max'))",
    "sdpa-math": "scaled-dot-product attention forced to the math backend",
    "batch-4": "the item as image 0 of a batch of 4, each with the same seed",
    "nondeterministic": "torch.use_deterministic_algorithms(False)",
}


@contextlib.contextmanager
def _variant(pipe: Any, variant: str | None) -> Iterator[None]:
    import torch

    if variant == "threads-2":
        before = torch.get_num_threads()
        torch.set_num_threads(2)
        try:
            yield
        finally:
            torch.set_num_threads(before)
    elif variant == "attention-slicing":
        pipe.enable_attention_slicing("max")
        try:
            yield
        finally:
            pipe.disable_attention_slicing()
    elif variant == "sdpa-math":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.MATH):
            yield
    elif variant == "nondeterministic":
        before = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(False)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(before)
    else:
        yield


class Runner:
    """Generates conformance items on one device, caching pipelines per process."""

    def __init__(self, device: str = "cpu", fixtures_dir: Path | None = None) -> None:
        self.device = device
        self.fixtures_dir = fixtures_dir or default_fixtures_dir()
        self.stats = RunnerStats()
        self._pipelines: dict[tuple[str, str], Any] = {}
        self._scheduler_configs: dict[tuple[str, str], Any] = {}

    def model_path(self, spec: ModelSpec) -> Path:
        return spec.verified_path(self.fixtures_dir)  # shipped checksums, once per process

    def pipeline(self, model: str, precision: str) -> Any:
        """The pipeline for (model, precision), loaded on first use."""
        key = (model, precision)
        if key not in self._pipelines:
            start = time.perf_counter()
            self._pipelines[key] = self._load(get_model(model), precision)
            self.stats.loads += 1
            self.stats.load_seconds += time.perf_counter() - start
            self.stats.loaded.append(f"{model}/{precision}")
        return self._pipelines[key]

    def _load(self, spec: ModelSpec, precision_name: str) -> Any:
        import torch
        from diffusers import DiffusionPipeline

        if spec.real is not None:
            return self._load_real(spec, precision_name)
        path = self.model_path(spec)
        if not (path / "model_index.json").is_file():
            raise ModelUnavailable(
                f"{spec.name}: no pipeline at {path} (model_index.json missing); build it "
                f"with `conformance train {spec.name} --out {path}` or point "
                "CONFORMANCE_FIXTURES at a directory that holds it"
            )
        precision = PRECISIONS[precision_name]
        overrides: dict[str, Any] = {}
        source = path / spec.family.denoiser
        fp32_bytes = sum(f.stat().st_size for f in source.glob("*.safetensors"))
        size = round(fp32_bytes * precision.bits_per_weight / 32)
        if precision.kind is Kind.GGUF:
            overrides[spec.family.denoiser] = self._gguf_denoiser(spec, path, precision.recipe)
            size = gguf_file(source, str(precision.recipe)).stat().st_size
        self.stats.denoiser_bytes[f"{spec.name}/{precision_name}"] = size
        pipe = DiffusionPipeline.from_pretrained(
            str(path), **{_DTYPE_KWARG: precision.torch_dtype()}, local_files_only=True,
            use_safetensors=True, **overrides,
        )
        if precision.kind is Kind.FP8_STORAGE:
            getattr(pipe, spec.family.denoiser).enable_layerwise_casting(
                storage_dtype=precision.torch_storage_dtype(), compute_dtype=torch.float32
            )
        pipe.set_progress_bar_config(disable=True)
        pipe.to(self.device)
        self._scheduler_configs[(spec.name, precision_name)] = pipe.scheduler.config
        return pipe

    def peak_memory_mb(self) -> float | None:
        """Peak device memory (CUDA / XPU) or the process's peak RSS (CPU), in MiB."""
        import torch

        kind = self.device.split(":")[0]
        if kind == "cuda":
            return round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
        if kind == "xpu":
            return round(torch.xpu.max_memory_allocated(self.device) / 2**20, 1)
        try:
            import resource
        except ImportError:  # pragma: no cover - Windows
            return None
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1)

    def _load_real(self, spec: ModelSpec, precision_name: str) -> Any:
        """A real checkpoint from where the user keeps it (see models/sources.py)."""
        from conformance.models import sources

        precision = PRECISIONS[precision_name]
        if precision.kind is not Kind.DTYPE:
            raise ModelUnavailable(
                f"{spec.name}: precision {precision_name} is built from shipped weights only; "
                "for a quantized real denoiser set the model's GGUF variable "
                "(e.g. CONFORMANCE_FLUX_GGUF) and use fp32/bf16/fp16"
            )
        resolved = sources.resolve(sources.get_real_model(str(spec.real)))
        pipe = sources.load(resolved, dtype=precision.torch_dtype(), gguf=resolved.gguf,
                            compute_dtype=precision.torch_dtype() if resolved.gguf else None)
        pipe.set_progress_bar_config(disable=True)
        pipe.to(self.device)
        self._scheduler_configs[(spec.name, precision_name)] = pipe.scheduler.config
        return pipe

    def _gguf_denoiser(self, spec: ModelSpec, path: Path, recipe: str | None) -> Any:
        """The denoiser quantized with ``recipe``, built once by ``conformance quantize``."""
        import json

        import diffusers
        import torch

        from conformance.quant.loading import load_gguf_model

        source = path / spec.family.denoiser
        gguf = gguf_file(source, str(recipe))
        class_name = json.loads((source / "config.json").read_text())["_class_name"]
        return load_gguf_model(
            getattr(diffusers, class_name), gguf, source, compute_dtype=torch.float32
        )

    def generate(self, item: Item, variant: str | None = None) -> Generation:
        """Generate ``item`` from scratch (fresh generator and scheduler).

        ``variant`` (one of :data:`VARIANTS`) changes one thing that should not change the
        image: the invariance checks compare such a generation with the plain one.
        """
        import torch

        if variant is not None and variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; accepted: {', '.join(VARIANTS)}")
        batch = 4 if variant == "batch-4" else 1

        spec = get_model(item.model)
        pipe = self.pipeline(item.model, item.precision)
        case = item.case
        pipe.scheduler = build_scheduler(
            case.scheduler, self._scheduler_configs[(item.model, item.precision)]
        )
        trace: list[StepTrace] = []

        def on_step(_pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict:
            trace.append(StepTrace.from_latents(step, timestep, kwargs["latents"][:1]))
            return kwargs

        call: dict[str, Any] = {
            "prompt": case.prompt,
            "num_inference_steps": case.steps,
            "guidance_scale": case.guidance_scale,
            "height": item.resolution.height,
            "width": item.resolution.width,
            "generator": [torch.Generator("cpu").manual_seed(case.seed) for _ in range(batch)],
            "num_images_per_prompt": batch,
            "output_type": "pil",
            "callback_on_step_end": on_step,
            "callback_on_step_end_tensor_inputs": ["latents"],
        }
        if spec.family is Family.SD:
            call["negative_prompt"] = case.negative_prompt or None
        start = time.perf_counter()
        with torch.inference_mode(), _variant(pipe, variant):
            result = pipe(**call)
        seconds = time.perf_counter() - start
        self.stats.generations += 1
        self.stats.generate_seconds += seconds
        image = np.asarray(result.images[0].convert("RGB"), dtype=np.uint8).copy()
        return Generation(item.id, image, trace, seconds)
