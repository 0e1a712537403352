"""Real checkpoints: where users keep them and how each layout is loaded offline.

A :class:`RealModel` names a pipeline the suite can run on real weights (SD 1.5, SDXL,
FLUX.1-schnell). :func:`resolve` decides, without loading anything, which layout the
weights are in:

* ``$CONFORMANCE_<MODEL>`` pointing at a diffusers pipeline directory
  (``model_index.json``): :attr:`Layout.DIRECTORY`;
* the same variable pointing at a ``.safetensors`` checkpoint in the original
  (latent-diffusion) key layout, as people download them: :attr:`Layout.SINGLE_FILE`; its
  diffusers configs come from ``$CONFORMANCE_<MODEL>_CONFIG`` or the Hugging Face cache;
* the variable unset: the Hugging Face cache, looked up offline by repo id
  (:attr:`Layout.HF_CACHE`); nothing there raises :class:`ModelUnavailable`, so the
  model's items are skipped with a reason that says how to get the weights.

Pickled checkpoints (``.ckpt``, ``.pt``, ``.pth``, ``.bin``) run code when loaded and are
refused. A GGUF denoiser (``$CONFORMANCE_FLUX_GGUF``) is loaded with the project's GGUF
loader and replaces the base pipeline's transformer / UNet.

:func:`load` builds the pipeline with ``local_files_only=True`` on every call, and always
hands diffusers a local directory (never a repo id): given a repo id that is not cached,
diffusers' ``from_single_file`` retries with downloads switched on.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conformance.errors import ConformanceInputError
from conformance.models.base import (
    Family,
    ModelUnavailable,
    dtype_keyword,
    load_config,
    read_json_object,
    shard_files,
)

# PICKLE_SUFFIXES: weight files that run code when loaded; never read.
from conformance.models.specs import PICKLE_SUFFIXES, ModelSource, SourceKind
from conformance.safeio import show

if TYPE_CHECKING:
    import torch

__all__ = [
    "PICKLE_SUFFIXES",
    "REAL_MODELS",
    "Layout",
    "RealModel",
    "Resolved",
    "check_model_folder",
    "get_real_model",
    "hub_cache_dir",
    "load",
    "resolve",
    "resolve_declared",
]

#: Files the single-file loader reads from a diffusers config directory.
CONFIG_PATTERNS = '"*.json" "*.txt" "*.model"'


class Layout(enum.Enum):
    """How the weights of a real model are stored."""

    DIRECTORY = "directory"
    SINGLE_FILE = "single-file"
    HF_CACHE = "hf-cache"


@dataclass(frozen=True)
class RealModel:
    """A pipeline run on real weights, and where the suite looks for them."""

    name: str
    family: Family
    #: environment variable holding a pipeline directory or a .safetensors checkpoint
    env: str
    #: Hugging Face repo id, looked up in the local cache when ``env`` is unset
    repo_id: str
    #: diffusers pipeline class, used for single-file checkpoints
    pipeline_class: str
    #: one line: how to get the weights on a machine with network access
    hint: str
    #: environment variable holding a GGUF file of the denoiser, if the model takes one
    gguf_env: str | None = None

    @property
    def config_env(self) -> str:
        """Variable naming a local diffusers config directory for single-file checkpoints."""
        return f"{self.env}_CONFIG"


@dataclass(frozen=True)
class Resolved:
    """Where the weights of ``model`` were found, before anything is loaded."""

    model: RealModel
    layout: Layout
    #: pipeline directory, cache snapshot directory or single checkpoint file
    path: Path
    #: single file only: the diffusers config directory passed as ``config=``
    config: Path | None = None
    #: weight variant to ask for ("fp16" where only those files are present)
    variant: str | None = None
    #: GGUF denoiser named by ``model.gguf_env``, if set
    gguf: Path | None = None
    #: directory layouts: the pipeline class to load with, where it is not the one
    #: model_index.json names (a case file's ``pipeline`` key)
    pipeline_class: str | None = None

    @property
    def denoiser_config(self) -> Path:
        """The folder holding the denoiser's ``config.json``."""
        base = self.config if self.layout is Layout.SINGLE_FILE else self.path
        assert base is not None
        return base / self.model.family.denoiser

    def describe(self) -> str:
        """One line for reports: model, layout and path (and GGUF file)."""
        text = f"{self.model.name}: {self.layout.value} {self.path}"
        if self.config is not None:
            text += f" (config {self.config})"
        if self.gguf is not None:
            text += f" + GGUF {self.model.family.denoiser} {self.gguf}"
        return text


_COMPONENT_WEIGHTS = '"model_index.json" "*/*.json" "*/*.txt" "*/model.safetensors" ' \
    '"*/diffusion_pytorch_model.safetensors"'

REAL_MODELS: dict[str, RealModel] = {
    m.name: m
    for m in (
        RealModel(
            name="sd15",
            family=Family.SD,
            env="CONFORMANCE_SD15",
            repo_id="stable-diffusion-v1-5/stable-diffusion-v1-5",
            pipeline_class="StableDiffusionPipeline",
            hint="hf download stable-diffusion-v1-5/stable-diffusion-v1-5 --include "
            + _COMPONENT_WEIGHTS + ' --exclude "safety_checker/*"',
        ),
        RealModel(
            name="sdxl",
            family=Family.SD,
            env="CONFORMANCE_SDXL",
            repo_id="stabilityai/stable-diffusion-xl-base-1.0",
            pipeline_class="StableDiffusionXLPipeline",
            hint="hf download stabilityai/stable-diffusion-xl-base-1.0 --include "
            + _COMPONENT_WEIGHTS,
        ),
        RealModel(
            name="flux-schnell",
            family=Family.FLUX,
            env="CONFORMANCE_FLUX",
            repo_id="black-forest-labs/FLUX.1-schnell",
            pipeline_class="FluxPipeline",
            hint="hf download black-forest-labs/FLUX.1-schnell --exclude "
            '"flux1-schnell.safetensors" "ae.safetensors" (with a GGUF transformer in '
            'CONFORMANCE_FLUX_GGUF, also --exclude "transformer/*.safetensors")',
            gguf_env="CONFORMANCE_FLUX_GGUF",
        ),
    )
}


def get_real_model(name: str) -> RealModel:
    """The real model ``name``; ``KeyError`` naming the known ones otherwise."""
    try:
        return REAL_MODELS[name]
    except KeyError:
        raise KeyError(
            f"unknown real model {name!r}; known: {', '.join(sorted(REAL_MODELS))}"
        ) from None


# ----------------------------------------------------------------------------- resolving


def hub_cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """The Hugging Face hub cache, by huggingface_hub's own precedence.

    ``HF_HUB_CACHE``, then the legacy ``HUGGINGFACE_HUB_CACHE``, then ``$HF_HOME/hub``,
    then ``$XDG_CACHE_HOME/huggingface/hub``, then ``~/.cache/huggingface/hub``. Read from
    ``environ`` on every call: huggingface_hub reads them once, at import.
    """

    def expand(value: str) -> Path:
        return Path(os.path.expandvars(os.path.expanduser(value)))

    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if environ.get(name):
            return expand(environ[name])
    if environ.get("HF_HOME"):
        return expand(environ["HF_HOME"]) / "hub"
    xdg = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return expand(xdg) / "huggingface" / "hub"


def _cached_snapshot(repo_id: str, cache: Path, revision: str | None = None) -> Path | None:
    """The cached snapshot of ``repo_id`` (its ``refs/main``, or ``revision``: a branch, a
    tag or a commit) holding a model_index.json."""
    from huggingface_hub import snapshot_download, try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "model_index.json", cache_dir=str(cache),
                                       revision=revision)
    except Exception:  # an id or revision huggingface_hub refuses
        return None
    if not isinstance(found, str):  # None, or the "known not to exist" marker
        return None
    try:
        snapshot = Path(snapshot_download(repo_id, cache_dir=str(cache), local_files_only=True,
                                          revision=revision))
    except Exception:  # LocalEntryNotFoundError and kin: not usable offline
        return None
    return snapshot if (snapshot / "model_index.json").is_file() else None


def _refuse_pickle(path: Path, origin: str) -> ConformanceInputError:
    return ConformanceInputError(
        path, f"pickled checkpoints are not loaded: convert to safetensors (found via {origin})"
    )


def _weight_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(safetensors files, pickle files) directly inside ``folder``."""
    safe = sorted(f for f in folder.glob("*.safetensors") if f.is_file())
    pickled = sorted(f for f in folder.iterdir() if f.suffix.lower() in PICKLE_SUFFIXES)
    return safe, pickled


_COMPONENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
#: the config files of a component folder, checked against the size bounds before loading
_CONFIG_FILES = ("config.json", "scheduler_config.json")


def _blobs_dir(root: Path) -> Path | None:
    """The blob store of a Hugging Face cache snapshot ``<repo>/snapshots/<rev>``."""
    if root.parent.name == "snapshots":
        return root.parent.parent / "blobs"
    return None


def _check_pipeline_dir(root: Path, origin: str) -> str | None:
    """Check a pipeline folder before anything is loaded from it; return the variant.

    Refuses component names that are not identifiers (``model_index.json`` keys become
    folder names), components whose weights are only pickles, configs whose sizes are out
    of bounds (:func:`conformance.models.check_config`) and shard indexes naming files
    outside the component folder. The variant is ``"fp16"`` when some component has only
    ``*.fp16.safetensors`` weights (a common partial download), else ``None``.
    """
    index_path = root / "model_index.json"
    index = read_json_object(index_path, "pipeline index")
    blobs = _blobs_dir(root)
    variant = None
    for name in sorted(index):
        if name.startswith("_"):
            continue
        if not _COMPONENT.fullmatch(name):
            raise ConformanceInputError(
                index_path, f"component {show(name)} is not a component name (letters, digits "
                "and '_'); model_index.json keys name folders of the pipeline"
            )
        folder = root / name
        if folder.is_dir() and _check_component(folder, origin, blobs):
            variant = "fp16"
    return variant


def _check_component(folder: Path, origin: str, blobs: Path | None = None) -> bool:
    """Check one component folder (its configs against the size bounds, its shard indexes,
    no pickle-only weights); whether its only weights are ``*.fp16.safetensors``."""
    for config in _CONFIG_FILES:
        if (folder / config).is_file():
            load_config(folder / config)
    for shard_index in sorted(folder.glob("*.safetensors.index.json")):
        shard_files(shard_index, blobs=blobs)
    safe, pickled = _weight_files(folder)
    if pickled and not safe:
        raise _refuse_pickle(pickled[0], origin)
    return bool(safe) and all(".fp16." in f.name for f in safe)


#: the most component folders of a folder without model_index.json that are checked
MAX_COMPONENTS = 64


def check_model_folder(root: Path, origin: str) -> str | None:
    """The bounds every model folder the suite loads gets, however it was named (a built-in
    fixture, ``$CONFORMANCE_FIXTURES``, a case file's folder, the Hugging Face cache).

    A pipeline folder (with ``model_index.json``) is checked by :func:`_check_pipeline_dir`
    and its variant returned. A folder without one (a fixtures folder holding only a
    ``vae/``, say) has each component folder in it checked the same way, so that nothing
    is built from a config out of bounds or a pickle whichever file a loader reads; a
    folder that does not exist is left to the caller to report. Raises
    :class:`ConformanceInputError` naming the file, the key and what is accepted.
    """
    if (root / "model_index.json").is_file():
        return _check_pipeline_dir(root, origin)
    if not root.is_dir():
        return None
    folders = sorted(p for p in root.iterdir() if _COMPONENT.fullmatch(p.name) and p.is_dir())
    if len(folders) > MAX_COMPONENTS:
        raise ConformanceInputError(
            root, f"{len(folders)} component folders and no model_index.json; a model folder "
            f"has at most {MAX_COMPONENTS}"
        )
    for folder in folders:
        _check_component(folder, origin, _blobs_dir(root))
    return None


def _resolve_gguf(model: RealModel, environ: Mapping[str, str]) -> Path | None:
    if model.gguf_env is None or not environ.get(model.gguf_env):
        return None
    path = Path(os.path.expanduser(environ[model.gguf_env]))
    where = f"${model.gguf_env}"
    if not path.exists():
        raise ConformanceInputError(where, f"{path}: no such file")
    if not path.is_file() or path.suffix.lower() != ".gguf":
        raise ConformanceInputError(
            where, f"{path}: expected a .gguf file of the {model.family.denoiser}"
        )
    return path


def _single_file_config(model: RealModel, environ: Mapping[str, str], cache: Path) -> Path:
    """The diffusers config directory for a single-file checkpoint of ``model``."""
    if environ.get(model.config_env):
        config = Path(os.path.expanduser(environ[model.config_env]))
        if not (config / "model_index.json").is_file():
            raise ConformanceInputError(
                f"${model.config_env}",
                f"{config}: no model_index.json; expected a local diffusers directory of "
                f"{model.repo_id} (configs, tokenizer and scheduler files suffice)",
            )
        _check_pipeline_dir(config, f"${model.config_env}")
        return config
    snapshot = _cached_snapshot(model.repo_id, cache)
    if snapshot is None:
        raise ConformanceInputError(
            f"${model.env}",
            f"{environ[model.env]}: a single-file checkpoint needs the diffusers configs of "
            f"{model.repo_id}; set {model.config_env} to a local diffusers directory, or fill "
            f"the cache {cache} on a machine with network access: hf download "
            f"{model.repo_id} --include {CONFIG_PATTERNS}",
        )
    _check_pipeline_dir(snapshot, f"the Hugging Face cache of {model.repo_id}")
    return snapshot


def _check_safetensors(path: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except Exception as exc:  # safetensors raises its own error types
        raise ConformanceInputError(path, f"not a readable .safetensors file ({exc})") from None


def resolve(model: RealModel, environ: Mapping[str, str] = os.environ) -> Resolved:
    """Find the weights of ``model``: directory, single file, or the Hugging Face cache.

    Raises :class:`ConformanceInputError` (naming the variable or the file) for a path that
    does not exist, a pickled checkpoint, a folder without ``model_index.json`` or a
    single file without configs; :class:`ModelUnavailable` when the variable is unset and
    the cache holds no usable snapshot of ``model.repo_id``.
    """
    gguf = _resolve_gguf(model, environ)
    cache = hub_cache_dir(environ)
    value = environ.get(model.env)
    if not value:
        snapshot = _cached_snapshot(model.repo_id, cache)
        if snapshot is None:
            raise ModelUnavailable(
                f"{model.name}: no weights: {model.env} is not set and the Hugging Face cache "
                f"{cache} holds no {model.repo_id} with a model_index.json. Set {model.env} "
                "to a diffusers pipeline directory or a .safetensors checkpoint, or on a "
                f"machine with network access run: {model.hint}"
            )
        variant = _check_pipeline_dir(snapshot, f"the Hugging Face cache of {model.repo_id}")
        return Resolved(model, Layout.HF_CACHE, snapshot, variant=variant, gguf=gguf)

    where = f"${model.env}"
    path = Path(os.path.expanduser(value))
    if not path.exists():
        raise ConformanceInputError(
            where, f"{path}: no such file or directory; expected a diffusers pipeline "
            "directory (model_index.json) or a .safetensors checkpoint"
        )
    if path.is_dir():
        if (path / "model_index.json").is_file():
            variant = _check_pipeline_dir(path, where)
            return Resolved(model, Layout.DIRECTORY, path, variant=variant, gguf=gguf)
        safe, pickled = _weight_files(path)
        if pickled and not safe:
            raise _refuse_pickle(pickled[0], where)
        raise ConformanceInputError(
            where, f"{path}: no model_index.json; expected a diffusers pipeline directory "
            "or a .safetensors checkpoint file"
        )
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise _refuse_pickle(path, where)
    if suffix == ".gguf":
        hint = (
            f"set {model.gguf_env} to it and {model.env} to the base pipeline"
            if model.gguf_env else f"{model.name} takes no GGUF denoiser"
        )
        raise ConformanceInputError(
            where, f"{path}: a GGUF file holds only the {model.family.denoiser}; {hint}"
        )
    if suffix != ".safetensors":
        raise ConformanceInputError(
            where, f"{path}: unsupported file type {suffix or '(none)'!r}; expected a "
            "diffusers pipeline directory or a .safetensors checkpoint"
        )
    _check_safetensors(path)
    config = _single_file_config(model, environ, cache)
    return Resolved(model, Layout.SINGLE_FILE, path, config=config, gguf=gguf)


def _declared_pipeline_dir(ref: ModelSource, name: str, cache: Path, key: str) -> Path:
    """The local folder of a declared directory or hf: source (``ModelUnavailable`` for an
    hf: repo the cache does not hold)."""
    if ref.kind is SourceKind.HF:
        repo = str(ref.repo_id)
        snapshot = _cached_snapshot(repo, cache, ref.revision)
        if snapshot is None:
            at = f"@{ref.revision}" if ref.revision else ""
            rev = f" --revision {ref.revision}" if ref.revision else ""
            raise ModelUnavailable(
                f"{name}: no weights: {key} hf:{repo}{at} is not in the Hugging Face cache "
                f"{cache} (with a model_index.json). On a machine with network access run: "
                f"hf download {repo}{rev} --include {_COMPONENT_WEIGHTS} (or set "
                "HF_HUB_CACHE to a cache that holds it, or point the case file at a local "
                "directory)"
            )
        _check_pipeline_dir(snapshot, f"the Hugging Face cache of {repo}")
        return snapshot
    assert ref.path is not None
    _check_pipeline_dir(ref.path, f"{key} {ref.path}")
    return Path(ref.path)


def resolve_declared(spec: Any, environ: Mapping[str, str] = os.environ) -> Resolved:
    """Find the weights of a model a case file declares (``[models.NAME]``), offline.

    ``spec`` is a :class:`conformance.models.ModelSpec` whose source is a directory, a
    single ``.safetensors`` file with its config, a GGUF denoiser with its base, or an hf:
    repo. An hf: repo (as source, config or base) that the cache does not hold raises
    :class:`ModelUnavailable` with the download command; bad files raise
    :class:`ConformanceInputError` naming them.
    """
    source: ModelSource = spec.source
    cache = hub_cache_dir(environ)
    repo = source.pipeline_dir.repo_id or ""
    model = RealModel(name=spec.name, family=spec.family, env="", repo_id=repo,
                      pipeline_class=str(spec.pipeline), hint=f"hf download {repo}")
    if source.kind is SourceKind.SINGLE_FILE:
        assert source.path is not None and source.config is not None
        config = _declared_pipeline_dir(source.config, spec.name, cache, "config")
        _check_safetensors(source.path)
        return Resolved(model, Layout.SINGLE_FILE, source.path, config=config)
    if source.kind is SourceKind.GGUF:
        assert source.path is not None and source.base is not None
        base = _declared_pipeline_dir(source.base, spec.name, cache, "base")
        layout = Layout.HF_CACHE if source.base.kind is SourceKind.HF else Layout.DIRECTORY
        return Resolved(model, layout, base, gguf=source.path,
                        pipeline_class=_override(base, spec.pipeline))
    if source.kind in (SourceKind.DIRECTORY, SourceKind.HF):
        folder = _declared_pipeline_dir(source, spec.name, cache, "source")
        layout = Layout.HF_CACHE if source.kind is SourceKind.HF else Layout.DIRECTORY
        variant = _check_pipeline_dir(folder, str(folder))
        return Resolved(model, layout, folder, variant=variant,
                        pipeline_class=_override(folder, spec.pipeline))
    raise ValueError(f"{spec.name}: a {source.kind.value} source is not a declared one")


def _override(folder: Path, pipeline: str | None) -> str | None:
    """``pipeline`` when it is not the class model_index.json names, else ``None``."""
    named = read_json_object(folder / "model_index.json", "pipeline index").get("_class_name")
    return pipeline if pipeline and pipeline != named else None


# ----------------------------------------------------------------------------- loading


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _load_gguf_denoiser(resolved: Resolved, gguf: Path, compute_dtype: torch.dtype) -> Any:
    import diffusers

    from conformance.quant.loading import load_gguf_model

    config_dir = resolved.denoiser_config
    config_path = config_dir / "config.json"
    class_name = load_config(config_path).get("_class_name")
    if not isinstance(class_name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}",
                                                            class_name):
        raise ConformanceInputError(
            config_path, f"key '_class_name' is {show(class_name)}; expected the "
            f"{resolved.model.family.denoiser}'s diffusers class name"
        )
    cls = getattr(diffusers, class_name, None)
    if not isinstance(cls, type):
        raise ConformanceInputError(config_path, f"_class_name {class_name!r} is not in diffusers")
    try:
        return load_gguf_model(cls, gguf, config_dir, compute_dtype=compute_dtype)
    except Exception as exc:  # diffusers raises many types for a bad file
        raise ConformanceInputError(
            gguf, f"cannot load as a GGUF {class_name} with the config in {config_dir} "
            f"({_first_line(exc)})"
        ) from exc


def load(
    resolved: Resolved,
    dtype: torch.dtype | None = None,
    gguf: Path | None = None,
    compute_dtype: torch.dtype | None = None,
    components: Mapping[str, Any] | None = None,
) -> Any:
    """Build the diffusers pipeline of ``resolved``, fully offline.

    * directory / cache: ``DiffusionPipeline.from_pretrained(path, dtype=dtype,
      local_files_only=True, use_safetensors=True[, variant="fp16"])``;
    * single file: ``<pipeline_class>.from_single_file(file, config=<local config dir>,
      dtype=dtype, local_files_only=True)``.

    ``gguf`` (usually ``resolved.gguf``) replaces the denoiser with
    ``load_gguf_model(cls, gguf, <config dir>/<unet|transformer>, compute_dtype)``
    (``compute_dtype`` defaults to float32). Stable Diffusion's safety checker is not
    loaded (``safety_checker=None``): it would blank images, which is not what a
    conformance run measures. ``components`` (already loaded modules, e.g. ``vae``) replace
    the pipeline's own. Any failure raises :class:`ConformanceInputError` naming the file.
    """
    import diffusers
    import torch

    kwargs: dict[str, Any] = {"local_files_only": True}
    if dtype is not None:
        kwargs[dtype_keyword()] = dtype
    pipeline_dir = resolved.config if resolved.layout is Layout.SINGLE_FILE else resolved.path
    assert pipeline_dir is not None
    _check_pipeline_dir(pipeline_dir, str(pipeline_dir))  # configs and shards, before building
    if "safety_checker" in read_json_object(pipeline_dir / "model_index.json"):
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    kwargs.update(components or {})
    if gguf is not None:
        kwargs[resolved.model.family.denoiser] = _load_gguf_denoiser(
            resolved, Path(gguf), compute_dtype or torch.float32
        )
    if resolved.layout is Layout.SINGLE_FILE:
        cls = getattr(diffusers, resolved.model.pipeline_class, None)
        if not hasattr(cls, "from_single_file"):
            raise ConformanceInputError(
                resolved.path,
                f"{resolved.model.pipeline_class} cannot load single-file checkpoints",
            )
        call = f"{resolved.model.pipeline_class}.from_single_file"
        args: tuple[str, ...] = (str(resolved.path),)
        kwargs["config"] = str(resolved.config)
    elif resolved.pipeline_class:
        from conformance.models.specs import pipeline_class

        try:
            cls = pipeline_class(resolved.pipeline_class)
        except ValueError as exc:
            raise ConformanceInputError(resolved.path, str(exc)) from None
        call = f"{resolved.pipeline_class}.from_pretrained"
        args = (str(resolved.path),)
        kwargs["use_safetensors"] = True
        if resolved.variant:
            kwargs["variant"] = resolved.variant
    else:
        cls = diffusers.DiffusionPipeline
        call = "DiffusionPipeline.from_pretrained"
        args = (str(resolved.path),)
        kwargs["use_safetensors"] = True
        if resolved.variant:
            kwargs["variant"] = resolved.variant
    try:
        loader = cls.from_single_file if resolved.layout is Layout.SINGLE_FILE \
            else cls.from_pretrained
        pipe = loader(*args, **kwargs)
    except ConformanceInputError:
        raise
    except Exception as exc:  # diffusers and transformers raise many types
        raise ConformanceInputError(
            resolved.path, f"{call} failed ({_first_line(exc)})"
        ) from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe
