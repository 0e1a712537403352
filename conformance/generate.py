"""Deterministic generation: pinned threads, seeded CPU generators, cached pipelines.

:class:`Runner` loads each pipeline once per (model, precision, component swaps, LoRA
adapters) per process, using the model spec the case file resolved, installs a fresh
scheduler for every call (no state leaks between cases), seeds a CPU
``torch.Generator`` from the case (so the initial noise is the same on every device), and
records a per-step latent trace through ``callback_on_step_end``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from conformance.cases import Case, Item, LoraRef
from conformance.errors import ConformanceInputError
from conformance.heap import long_lived
from conformance.models import (
    ModelSpec,
    ModelUnavailable,
    default_fixtures_dir,
    dtype_keyword,
    get_model,
    load_config,
    verify_fixture_once,
)
from conformance.models.checksums import sha256_file
from conformance.precision import PRECISIONS
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
    #: bytes of the pipeline's weights (parameters and buffers of every component, as
    #: stored: a GGUF tensor counts its quantized bytes)
    weights_bytes: int | None = None
    #: peak device memory allocated during the generation (CUDA / XPU; None on the CPU,
    #: where no per-generation peak is measurable)
    peak_bytes: int | None = None


@dataclass
class RunnerStats:
    loads: int = 0
    load_seconds: float = 0.0
    generations: int = 0
    #: wall time inside pipeline calls, the trace digests included
    generate_seconds: float = 0.0
    #: of which in the step callback's latent digests (harness work, not the model's)
    trace_seconds: float = 0.0
    loaded: list[str] = field(default_factory=list)
    #: stored size of the denoiser's weights per "model/precision"
    denoiser_bytes: dict[str, int] = field(default_factory=dict)


def configure_torch(threads: int, deterministic: bool = True, device: str = "cpu") -> None:
    """Pin intra-op threads and switch deterministic algorithms on (or off), with the
    device kind's own switches (:meth:`conformance.devices.base.DeviceKind.configure`)."""
    import torch

    from conformance.devices import for_device

    kind = for_device(device)
    kind.prepare(deterministic)
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # only settable before parallel work started
        torch.set_num_interop_threads(1)
    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    kind.configure(deterministic)


CACHE_ENV = "CONFORMANCE_CACHE"
#: The cache's folder under ``$XDG_CACHE_HOME`` (or ``~/.cache``).
CACHE_NAME = "diffusion-conformance"


def cache_dir() -> Path:
    """``$CONFORMANCE_CACHE``, else ``$XDG_CACHE_HOME/diffusion-conformance`` (an absolute
    ``XDG_CACHE_HOME``; the XDG base directory rules ignore a relative one), else
    ``~/.cache/diffusion-conformance``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / CACHE_NAME
    return Path.home() / ".cache" / CACHE_NAME


#: The checksum file beside each cached artifact: ``<file>`` + this suffix.
CHECKSUM_SUFFIX = ".sha256.json"
#: the cached files this process found damaged and rebuilt (one line each, also printed to
#: standard error when it happened; a test's captured output may hide that)
CACHE_NOTICES: list[str] = []
#: paths of cached files verified by this process, with the (inode, size, mtime) they had
_VERIFIED: dict[Path, tuple[int, int, int]] = {}


def _cache_problem(path: Path, source: str, recipe: str) -> str | None:
    """Why the cached artifact ``path`` cannot be used, or ``None``: it must be a regular
    file whose size and SHA-256 are those its checksum file recorded when it was built, from
    the weights of SHA-256 ``source`` with ``recipe``. ``"missing"`` when it was never built."""
    from conformance.safeio import load_json_object, regular_file_problem

    problem = regular_file_problem(path)
    if problem == "no such file":
        return "missing"
    if problem:
        return f"cannot be used: {problem}"
    sidecar = path.with_name(path.name + CHECKSUM_SUFFIX)
    try:
        st = os.stat(path)
        meta = load_json_object(sidecar, "cache checksum file", 64 * 1024)
    except ConformanceInputError as exc:
        return f"has no usable checksum file ({exc.message})"
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    expected = {k: meta.get(k) for k in ("sha256", "size", "source_sha256", "recipe")}
    if expected["source_sha256"] != source or expected["recipe"] != recipe:
        return "was built from other weights or with another recipe than its name says"
    if expected["size"] != st.st_size:
        return (f"is {st.st_size} bytes but was {_show_int(expected['size'])} bytes when "
                "built (truncated or damaged)")
    key = (st.st_ino, st.st_size, st.st_mtime_ns)
    if _VERIFIED.get(path) == key:
        return None
    try:
        found = sha256_file(path)
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if found != expected["sha256"]:
        return (f"has SHA-256 {found[:16]}..., not the {str(expected['sha256'])[:16]}... "
                "recorded when it was built (damaged or changed)")
    _VERIFIED[path] = key
    return None


def _show_int(value: Any) -> str:
    """An integer as digits, anything else as a short repr (for messages)."""
    from conformance.safeio import show

    return str(value) if type(value) is int else show(value, 30)


def gguf_file(model_dir: Path, recipe: str) -> Path:
    """A GGUF file of ``model_dir`` (config.json + safetensors) quantized with ``recipe``.

    Built with the project's own quantizer (:func:`conformance.quant.quantize_model`, what
    ``conformance quantize`` runs) and cached under
    :func:`cache_dir`, keyed by the weights' SHA-256: it is rebuilt, never stored. Beside it,
    ``<file>.sha256.json`` records the file's SHA-256 and size and the weights' SHA-256 it was
    built from; a cached file that does not match (a flipped byte, a truncation, a file that
    cannot be read, no checksum file) is never used: it is rebuilt, with one line on
    standard error saying so. Processes building the same file take turns (a file lock).
    """
    import hashlib
    import json

    from conformance.errors import ConformanceInputError, OutputError
    from conformance.quant.command import CommandError, quantize_model
    from conformance.safeio import exclusive_lock, write_atomic

    digest = hashlib.sha256()
    for weights in sorted(model_dir.glob("*.safetensors")):
        digest.update(weights.read_bytes())
    source = digest.hexdigest()
    folder = cache_dir() / "gguf"
    out = folder / f"{model_dir.parent.name}-{model_dir.name}-{source[:16]}-{recipe}.gguf"
    sidecar = out.with_name(out.name + CHECKSUM_SUFFIX)
    with contextlib.ExitStack() as stack:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(folder, f"cannot use the GGUF cache folder: "
                              f"{exc.strerror or exc} (set {CACHE_ENV} to a writable "
                              "folder)") from None
        stack.enter_context(exclusive_lock(
            out.with_name(out.name + ".lock"), "the GGUF cache's lock file",
            f"set {CACHE_ENV} to a writable folder"))
        problem = _cache_problem(out, source, recipe)
        if problem is None:
            return out
        if problem != "missing":
            line = f"{out}: the cached GGUF file {problem}; rebuilding it"
            CACHE_NOTICES.append(line)
            print(f"conformance: {line}", file=sys.stderr, flush=True)
        _VERIFIED.pop(out, None)
        for stale in (sidecar, out):
            try:
                stale.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise OutputError(stale, f"cannot remove the damaged cached file: "
                                  f"{exc.strerror or exc}; remove it by hand") from None
        try:
            quantize_model(model_dir, recipe, out, force=True)
        except CommandError as exc:
            raise ConformanceInputError(model_dir, f"cannot be quantized to {recipe}: "
                                        f"{exc}") from None
        except OSError as exc:
            raise OutputError(out, f"cannot write the cached GGUF file: "
                              f"{exc.strerror or exc}") from None
        meta = {"file": out.name, "sha256": sha256_file(out), "size": out.stat().st_size,
                "source": str(model_dir), "source_sha256": source, "recipe": recipe}
        write_atomic(sidecar, (json.dumps(meta, indent=1) + "\n").encode("utf-8"),
                     kind="cache checksum file")
    return out


#: Changes that should not change the image, checked by the invariance tests.
VARIANTS: dict[str, str] = {
    "threads-2": "2 torch intra-op threads instead of the pinned count",
    "attention-slicing": "attention computed in slices (pipe.enable_attention_slicing('max'))",
    "sdpa-math": "scaled-dot-product attention forced to the math backend",
    "batch-4": "the item as image 0 of a batch of 4, each with the same seed",
    "nondeterministic": "torch.use_deterministic_algorithms(False)",
    "cfg-split": "classifier-free guidance's two halves (unconditional, conditional) as two "
                 "denoiser calls instead of one batch of 2 (a pipeline without a guidance "
                 "batch runs unchanged)",
}


def _split_batch_forward(forward: Any) -> Any:
    """``forward`` of a denoiser, called once per half of an even batch (the guidance
    batch: unconditional, then conditional) with every tensor argument of that batch size
    split alike, the two outputs joined again."""
    import torch

    def halves(value: Any, n: int) -> tuple[Any, Any]:
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == n:
            return value[: n // 2], value[n // 2:]
        if isinstance(value, dict):
            split = {k: halves(v, n) for k, v in value.items()}
            return ({k: v[0] for k, v in split.items()}, {k: v[1] for k, v in split.items()})
        return value, value

    def run(*args: Any, **kwargs: Any) -> Any:
        # the latents: the first positional argument, or UNet's ``sample`` / a
        # transformer's ``hidden_states`` by keyword
        main = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
        n = main.shape[0] if isinstance(main, torch.Tensor) and main.dim() > 0 else 0
        if n < 2 or n % 2:
            return forward(*args, **kwargs)
        split_args = [halves(a, n) for a in args]
        split_kwargs = {k: halves(v, n) for k, v in kwargs.items()}
        outs = [forward(*(a[i] for a in split_args), **{k: v[i] for k, v in split_kwargs.items()})
                for i in (0, 1)]
        joined = torch.cat([o[0] for o in outs], dim=0)
        if isinstance(outs[0], tuple):
            return (joined, *outs[0][1:])
        return type(outs[0])(joined)

    return run


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
    elif variant == "cfg-split":
        from conformance.models.families import denoiser_of

        denoiser = denoiser_of(pipe)
        denoiser.forward = _split_batch_forward(denoiser.forward)
        try:
            yield
        finally:
            del denoiser.forward  # the class's own forward again
    elif variant == "nondeterministic":
        before = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(False)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(before)
    else:
        yield


def pipeline_label(model: str, precision: str, vae: Path | None = None,
                   lora: tuple[LoraRef, ...] = ()) -> str:
    """How a loaded pipeline is named ("tiny-sd/fp32", "tiny-sd/fp32+vae:NAME",
    "tiny-sd/fp32+lora:STEM@SCALE"): in the run's stats, and by the xdist scheduler."""
    label = f"{model}/{precision}"
    if vae is not None:
        label += f"+vae:{vae.name}"
    if lora:
        label += "+lora:" + ",".join(f"{r.path.stem}@{r.scale:g}" for r in lora)
    return label


class Runner:
    """Generates conformance items on one device, caching pipelines per process."""

    def __init__(self, device: str = "cpu", fixtures_dir: Path | None = None) -> None:
        self.device = device
        self.fixtures_dir = fixtures_dir or default_fixtures_dir()
        self.stats = RunnerStats()
        #: keyed by (model spec, precision, VAE swap, LoRA adapters)
        self._pipelines: dict[tuple[Any, ...], Any] = {}
        self._scheduler_configs: dict[tuple[Any, ...], Any] = {}
        #: weight bytes per loaded pipeline (by id: the pipelines are kept for the process)
        self._weights: dict[int, int] = {}

    def model_path(self, spec: ModelSpec) -> Path:
        return spec.verified_path(self.fixtures_dir)  # shipped checksums, once per process

    def pipeline(self, model: str, precision: str, case: Case | None = None) -> Any:
        """The pipeline for (model, precision), loaded on first use.

        With ``case`` the model is the case's own resolved spec (a model the case file
        declares) and the case's VAE swap and LoRA adapters are applied: each such variant
        is a pipeline of its own, so plain cases never run a modified one.
        """
        spec = case.model_spec if case is not None else get_model(model)
        vae = case.vae if case is not None else None
        lora = case.lora if case is not None else ()
        key = (spec, precision, vae, lora)
        if key not in self._pipelines:
            start = time.perf_counter()
            with long_lived():  # kept for the process (see conformance/heap.py)
                self._pipelines[key] = self._load(spec, precision, vae, lora)
            self.stats.loads += 1
            self.stats.load_seconds += time.perf_counter() - start
            self.stats.loaded.append(pipeline_label(spec.name, precision, vae, lora))
        return self._pipelines[key]

    def pipeline_for(self, item: Item) -> Any:
        """The pipeline ``item`` runs on (its model spec, VAE swap and LoRA adapters)."""
        return self.pipeline(item.model, item.precision, item.case)

    def _load(
        self,
        spec: ModelSpec,
        precision_name: str,
        vae: Path | None = None,
        lora: tuple[LoraRef, ...] = (),
    ) -> Any:
        from conformance.models.specs import SourceKind

        kind = spec.source.kind if spec.source is not None else (
            SourceKind.REAL if spec.real is not None else SourceKind.FIXTURE)
        vae_dir = vae or spec.vae
        if kind in (SourceKind.FIXTURE, SourceKind.DIRECTORY):
            pipe = self._load_directory(spec, precision_name, vae_dir)
        else:
            pipe = self._load_real(spec, precision_name, vae_dir)
        if lora:
            from conformance.models.lora import apply_lora

            apply_lora(pipe, lora)
        pipe.set_progress_bar_config(disable=True)
        pipe.to(self.device)
        key = (spec, precision_name, vae, lora)
        if spec.scheduler_config is not None:
            self._scheduler_configs[key] = load_config(
                spec.scheduler_config / "scheduler_config.json", "scheduler config")
        else:
            self._scheduler_configs[key] = pipe.scheduler.config
        return pipe

    def _load_directory(self, spec: ModelSpec, precision_name: str, vae: Path | None) -> Any:
        """A local pipeline directory: a shipped fixture, or a folder a case file names."""
        from diffusers import DiffusionPipeline

        from conformance.models.specs import SourceKind

        path = self.model_path(spec)
        if not (path / "model_index.json").is_file():
            raise ModelUnavailable(
                f"{spec.name}: no pipeline at {path} (model_index.json missing); build it "
                f"with `python -m fixtures.build train {spec.name} --out {path}` from a source "
                "checkout or point CONFORMANCE_FIXTURES at a directory that holds it"
            )
        precision = PRECISIONS[precision_name]
        overrides: dict[str, Any] = {}
        loader: Any = DiffusionPipeline
        if spec.source is not None and spec.source.kind is SourceKind.DIRECTORY:
            from conformance.models import sources

            # component names, config sizes, shards and pickles, before anything is built
            variant = sources._check_pipeline_dir(path, f"model {spec.name} {path}")
            if variant:
                overrides["variant"] = variant
            override = sources._override(path, spec.pipeline)
            if override:
                from conformance.models.specs import pipeline_class

                loader = pipeline_class(override)
            if "safety_checker" in _read_index(path):  # it would blank images
                overrides.update(safety_checker=None, requires_safety_checker=False)
        source = path / spec.family.denoiser
        denoiser = precision.kind.denoiser(precision, source)
        if denoiser is not None:
            overrides[spec.family.denoiser] = denoiser
        self.stats.denoiser_bytes.setdefault(f"{spec.name}/{precision_name}",
                                             precision.kind.stored_bytes(precision, source))
        if vae is not None:
            overrides["vae"] = load_vae(vae, precision.torch_dtype())
        pipe = loader.from_pretrained(
            str(path), **{_DTYPE_KWARG: precision.torch_dtype()}, local_files_only=True,
            use_safetensors=True, **overrides,
        )
        precision.kind.prepare(precision, getattr(pipe, spec.family.denoiser))
        return pipe

    @property
    def kind(self) -> Any:
        """The :class:`~conformance.devices.base.DeviceKind` of :attr:`device`."""
        from conformance.devices import for_device

        return for_device(self.device)

    def peak_memory_mb(self) -> float | None:
        """Peak device memory (CUDA / XPU) or the process's peak RSS (CPU), in MiB."""
        peak = self.kind.peak_memory_bytes(self.device)
        if peak is not None:
            return round(peak / 2**20, 1)
        try:
            import resource
        except ImportError:  # pragma: no cover - Windows
            return None
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1)

    def _load_real(self, spec: ModelSpec, precision_name: str, vae: Path | None = None) -> Any:
        """A real checkpoint from where the user keeps it (see models/sources.py): a
        built-in one, or a single file, GGUF denoiser or hf: repo a case file declares."""
        from conformance.models import sources

        precision = PRECISIONS[precision_name]
        if not precision.kind.plain:
            raise ModelUnavailable(
                f"{spec.name}: precision {precision_name} is built from local pipeline "
                "directories only; for a quantized real denoiser give a GGUF file (the "
                "model's GGUF variable, e.g. CONFORMANCE_FLUX_GGUF, or a .gguf source with "
                "base) and use fp32/bf16/fp16"
            )
        if spec.real is not None:
            resolved = sources.resolve(sources.get_real_model(str(spec.real)))
        else:
            resolved = sources.resolve_declared(spec)
        components = {"vae": load_vae(vae, precision.torch_dtype())} if vae else None
        return sources.load(resolved, dtype=precision.torch_dtype(), gguf=resolved.gguf,
                            compute_dtype=precision.torch_dtype() if resolved.gguf else None,
                            components=components)

    def generate(self, item: Item, variant: str | None = None) -> Generation:
        """Generate ``item`` from scratch (fresh generator and scheduler).

        ``variant`` (one of :data:`VARIANTS`) changes one thing that should not change the
        image: the invariance checks compare such a generation with the plain one.
        """
        import torch

        if variant is not None and variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; accepted: {', '.join(VARIANTS)}")
        batch = 4 if variant == "batch-4" else 1

        case = item.case
        spec = case.model_spec
        pipe = self.pipeline_for(item)
        pipe.scheduler = build_scheduler(
            case.scheduler,
            self._scheduler_configs[(spec, item.precision, case.vae, case.lora)],
        )
        trace: list[StepTrace] = []

        stats = self.stats

        def on_step(_pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict:
            begin = time.perf_counter()
            trace.append(StepTrace.from_latents(step, timestep, kwargs["latents"][:1]))
            stats.trace_seconds += time.perf_counter() - begin
            return kwargs

        call: dict[str, Any] = {
            "prompt": case.prompt,
            "num_inference_steps": case.steps,
            "guidance_scale": case.guidance_scale,
            "height": item.resolution.height,
            "width": item.resolution.width,
            "generator": [self.kind.generator(case.seed) for _ in range(batch)],
            "num_images_per_prompt": batch,
            "output_type": "pil",
            "callback_on_step_end": on_step,
            "callback_on_step_end_tensor_inputs": ["latents"],
        }
        if spec.family.negative_prompt:
            call["negative_prompt"] = case.negative_prompt or None
        self.kind.reset_peak_memory(self.device)
        start = time.perf_counter()
        with torch.inference_mode(), _variant(pipe, variant):
            result = pipe(**call)
        self.kind.synchronize(self.device)
        seconds = time.perf_counter() - start
        peak = self.kind.peak_memory_bytes(self.device)
        self.stats.generations += 1
        self.stats.generate_seconds += seconds
        image = np.asarray(result.images[0].convert("RGB"), dtype=np.uint8).copy()
        if id(pipe) not in self._weights:
            self._weights[id(pipe)] = weights_bytes(pipe)
        return Generation(item.id, image, trace, seconds, self._weights[id(pipe)], peak)


def weights_bytes(pipe: Any) -> int:
    """Bytes of every component's parameters and buffers (shared tensors counted once)."""
    import torch

    seen: set[int] = set()
    total = 0
    for component in getattr(pipe, "components", {}).values():
        if not isinstance(component, torch.nn.Module):
            continue
        for tensor in itertools.chain(component.parameters(), component.buffers()):
            if tensor.data_ptr() in seen or tensor.device.type == "meta":
                continue
            seen.add(tensor.data_ptr())
            total += tensor.numel() * tensor.element_size()
    return total


def _read_index(path: Path) -> dict[str, Any]:
    from conformance.models import read_json_object

    return read_json_object(path / "model_index.json", "pipeline index")


def load_vae(folder: Path, dtype: Any) -> Any:
    """The VAE in ``folder`` (its config's ``_class_name``, a diffusers model class), in
    ``dtype``, offline and from safetensors only; a shipped fixture is checked against its
    checksums first."""
    import diffusers

    config_path = folder / "config.json"
    class_name = load_config(config_path, "VAE config").get("_class_name", "AutoencoderKL")
    cls = getattr(diffusers, class_name, None) if isinstance(class_name, str) and \
        class_name.isidentifier() else None
    if not isinstance(cls, type) or not issubclass(cls, diffusers.ModelMixin):
        raise ConformanceInputError(
            config_path, f"_class_name {class_name!r} is not a diffusers model class"
        )
    verify_fixture_once(folder)
    try:
        return cls.from_pretrained(str(folder), **{_DTYPE_KWARG: dtype}, local_files_only=True,
                                   use_safetensors=True)
    except Exception as exc:  # diffusers raises many types for a bad folder
        first = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise ConformanceInputError(folder, f"{class_name}.from_pretrained failed ({first})"
                                    ) from exc
