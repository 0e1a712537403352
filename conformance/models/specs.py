"""Models as data: the ``[models.NAME]`` tables of a case file, and the built-in models.

A model table says where a pipeline's weights are and what it takes::

    [models.my-sd]
    source = "../models/my-sd"          # a diffusers pipeline directory (model_index.json)
    # source = "ckpt/my-sd.safetensors" # one checkpoint file, with its diffusers configs:
    # config = "configs/sd15"           #   a config directory or an hf: spec
    # source = "flux-q4.gguf"           # a GGUF denoiser over a base pipeline:
    # base = "hf:black-forest-labs/FLUX.1-schnell"
    # source = "hf:owner/repo@revision" # the Hugging Face cache, read offline
    pipeline = "StableDiffusionPipeline"   # optional: read from model_index.json
    family = "sd"                          # only when the pipeline class does not tell
    vae = "../models/my-vae"               # optional: an AutoencoderKL directory
    scheduler = "dpmpp-2m"                 # optional: a default scheduler name, or a folder
                                           #   with scheduler_config.json (the base config)
    resolution_multiple = 8                # optional limits (defaults by family)
    min_side = 256
    max_side = 2048
    description = "our fine-tune"          # optional, for `conformance models`

Relative paths are relative to the case file's folder. Pickled weights (``.ckpt``, ``.pt``,
``.pth``, ``.bin`` ...) are refused; a ``pipeline`` must be a class diffusers exports that
derives from ``DiffusionPipeline`` (nothing else is ever imported). A case file may not
reuse a built-in model's name.

The built-in models (:data:`BUILTIN_TABLES`) are tables of the same shape, with two
things only they may use: ``source = "fixture:<dir>"`` (a shipped fixture under
``$CONFORMANCE_FIXTURES``) and ``real = "<name>"`` (a real checkpoint of
:data:`conformance.models.sources.REAL_MODELS`: its environment variable, then the cache).
"""

from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, UnsetType

from conformance.errors import CaseFileError, ConformanceInputError
from conformance.models.base import Family, ModelSpec, load_config, read_json_object
from conformance.models.families import FAMILIES, families
from conformance.safeio import show
from conformance.schema import (
    CaseName,
    DictKey,
    Problem,
    key_problem,
    line,
    number_in,
    problem_of,
    when_missing,
)

#: weight files that run code when loaded; never read (the same list as sources.py's)
PICKLE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"})

_CLASS = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
# Hugging Face repo ids: owner/name of letters, digits, '-', '_', '.'; no '--' or '..'
_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_HF = re.compile(rf"hf:({_REPO_PART}/{_REPO_PART})(?:@([A-Za-z0-9][A-Za-z0-9._/-]{{0,127}}))?")
MAX_PATH = 4096

MAX_SIDE = 16384

#: pipeline classes whose family is known without importing diffusers
KNOWN_PIPELINES: dict[str, Family] = {p: f for f in families() for p in f.pipelines}


class SourceKind(enum.Enum):
    """How a model's weights are stored."""

    FIXTURE = "fixture"        # shipped fixture directory (built-ins)
    REAL = "real"              # built-in real checkpoint ($CONFORMANCE_<X>, then the cache)
    DIRECTORY = "directory"    # diffusers pipeline directory
    SINGLE_FILE = "single-file"  # one .safetensors checkpoint + a diffusers config
    GGUF = "gguf"              # a GGUF denoiser + a base pipeline
    HF = "hf"                  # the Hugging Face cache, by repo id (and revision)


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights are, as declared (nothing is loaded)."""

    kind: SourceKind
    #: the ``source`` text as written
    text: str
    #: DIRECTORY / SINGLE_FILE / GGUF: the folder or file; FIXTURE: the fixture dir name
    path: Path | None = None
    #: HF: repo id and revision (``None``: the cache's ``main``)
    repo_id: str | None = None
    revision: str | None = None
    #: SINGLE_FILE: the diffusers configs (DIRECTORY or HF)
    config: ModelSource | None = None
    #: GGUF: the base pipeline (DIRECTORY or HF)
    base: ModelSource | None = None

    def describe(self) -> str:
        if self.kind is SourceKind.HF:
            return f"hf:{self.repo_id}" + (f"@{self.revision}" if self.revision else "")
        text = str(self.path) if self.path is not None else self.text
        if self.config is not None:
            text += f" (config {self.config.describe()})"
        if self.base is not None:
            text += f" over {self.base.describe()}"
        return text

    @property
    def pipeline_dir(self) -> ModelSource:
        """The source holding ``model_index.json``: itself, its config or its base."""
        return self.config or self.base or self


# ----------------------------------------------------------------------------- the table

_Text = line(MAX_PATH, empty=False)
_Source = when_missing(_Text, "a pipeline directory, a .safetensors file with config, a .gguf "
                       "file with base, or hf:<owner>/<name>[@revision]")
_Side = number_in(1, MAX_SIDE, integer=True)
_Multiple = number_in(1, 1024, integer=True)


class ModelTable(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A ``[models.NAME]`` table, as written (a key left out is ``UNSET``): checked by type
    here, against the files it names and its family in :func:`parse_model`."""

    source: _Source  # type: ignore[valid-type]
    config: _Text | UnsetType = UNSET
    base: _Text | UnsetType = UNSET
    pipeline: line(128, empty=False) | UnsetType = UNSET  # type: ignore[valid-type]
    family: line(64, empty=False) | UnsetType = UNSET  # type: ignore[valid-type]
    vae: _Text | UnsetType = UNSET
    scheduler: _Text | UnsetType = UNSET
    resolution_multiple: _Multiple | UnsetType = UNSET  # type: ignore[valid-type]
    min_side: _Side | UnsetType = UNSET  # type: ignore[valid-type]
    max_side: _Side | UnsetType = UNSET  # type: ignore[valid-type]
    description: line(200) | UnsetType = UNSET  # type: ignore[valid-type]


class BuiltinTable(ModelTable, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A built-in model's table: ``real`` names its checkpoint in
    :data:`conformance.models.sources.REAL_MODELS`."""

    real: line(64, empty=False) | UnsetType = UNSET  # type: ignore[valid-type]


_TABLE = msgspec.Meta(description="a [models.NAME] table")
MODEL_KEYS = tuple(f.encode_name for f in msgspec.structs.fields(ModelTable))


class _Refusal(Exception):
    """``(KEY, TEXT)``: a key of a decoded table refused (worded by :func:`parse_model`)."""


def parse_hf(text: str) -> tuple[str, str | None] | None:
    """``(repo_id, revision)`` of ``hf:<owner>/<name>[@revision]``, or ``None``."""
    match = _HF.fullmatch(text)
    if not match:
        return None
    repo, revision = match[1], match[2]
    if "--" in repo or ".." in repo or (revision and ".." in revision) or repo.endswith(".git"):
        return None
    return repo, revision


def hf_snapshot(repo_id: str, revision: str | None, cache: Path | None = None) -> Path | None:
    """The cached snapshot of ``repo_id`` at ``revision`` holding a model_index.json, read
    offline; ``None`` when the cache has none."""
    from conformance.models.sources import _cached_snapshot, hub_cache_dir

    return _cached_snapshot(repo_id, cache or hub_cache_dir(), revision)


def _weights(folder: Path) -> tuple[list[Path], list[Path]]:
    safe = sorted(f for f in folder.glob("*.safetensors") if f.is_file())
    pickled = sorted(f for f in folder.iterdir() if f.suffix.lower() in PICKLE_SUFFIXES)
    return safe, pickled


def _refuse_pickle(file: Path) -> str:
    return f"{file}: pickled weights are not loaded (they run code); convert to .safetensors"


def check_safetensors(path: Path) -> str | None:
    """Why ``path`` is not a readable .safetensors file, or ``None``."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except Exception as exc:  # safetensors raises its own error types
        return f"{path}: not a readable .safetensors file ({str(exc).splitlines()[0]})"
    return None


def resolve_path(text: str, base_dir: Path) -> Path:
    """``text`` (``~`` expanded) relative to ``base_dir`` unless absolute."""
    path = Path(os.path.expanduser(text))
    return path if path.is_absolute() else base_dir / path


def component_dir(text: str, base_dir: Path, what: str) -> Path:
    """A component folder (``vae = "..."``, one line of text as declared): exists, has a
    bounded config.json and safetensors weights. Raises ``ValueError`` with the reason."""
    path = resolve_path(text, base_dir)
    if not path.exists():
        raise ValueError(f"{path}: no such directory; expected a diffusers {what} folder "
                         "(config.json and .safetensors weights)")
    if not path.is_dir():
        raise ValueError(f"{path}: not a directory; expected a diffusers {what} folder "
                         "(config.json and .safetensors weights)")
    safe, pickled = _weights(path)
    if pickled and not safe:
        raise ValueError(_refuse_pickle(pickled[0]))
    if not (path / "config.json").is_file():
        raise ValueError(f"{path}: no config.json; expected a diffusers {what} folder")
    try:
        load_config(path / "config.json")
    except ConformanceInputError as exc:
        raise ValueError(str(exc)) from None
    if not safe:
        raise ValueError(f"{path}: no .safetensors weights")
    return path


def pipeline_class(name: str) -> type:
    """The diffusers pipeline class ``name``; ``ValueError`` unless diffusers exports it and
    it derives from ``DiffusionPipeline`` (and is not that generic class itself)."""
    if not _CLASS.fullmatch(name):
        raise ValueError(f"{show(name)} is not a class name")
    import diffusers

    try:
        cls = getattr(diffusers, name, None)
    except Exception:  # a lazily imported module that fails to import
        cls = None
    if not isinstance(cls, type) or not issubclass(cls, diffusers.DiffusionPipeline) \
            or cls is diffusers.DiffusionPipeline:
        raise ValueError(
            f"{show(name)} is not a diffusers pipeline class (a class diffusers exports that "
            "derives from DiffusionPipeline, e.g. StableDiffusionPipeline, "
            "StableDiffusionXLPipeline, FluxPipeline)"
        )
    return cls


def family_of(name: str) -> Family | None:
    """The family of pipeline class ``name``, or ``None`` when the class does not tell."""
    if name in KNOWN_PIPELINES:
        return KNOWN_PIPELINES[name]
    import diffusers

    cls = pipeline_class(name)
    for family in families():
        # a family's class the installed diffusers lacks (or cannot import) is no base
        bases = [_exported(diffusers, base) for base in family.pipelines]
        if any(isinstance(base, type) and issubclass(cls, base) for base in bases):
            return family
    return next((f for f in families() if f.named_like(name)), None)


def _exported(module: Any, name: str) -> Any:
    try:
        return getattr(module, name, None)
    except Exception:  # a lazily imported module that fails to import
        return None


def supports_lora(name: str) -> bool:
    """Whether pipeline class ``name`` loads LoRA adapters (``load_lora_weights``)."""
    if name in KNOWN_PIPELINES:
        return True
    return hasattr(pipeline_class(name), "load_lora_weights")


# ----------------------------------------------------------------------------- parsing


def _source(table: ModelTable, base_dir: Path, builtin: bool) -> ModelSource:
    text = table.source
    if text.startswith("hf:"):
        parsed = parse_hf(text)
        if parsed is None:
            raise _Refusal("source", f"{show(text)} is not a Hugging Face spec; write "
                           "hf:<owner>/<name> or hf:<owner>/<name>@<revision> (letters, "
                           "digits, '-', '_' and '.')")
        return ModelSource(SourceKind.HF, text, repo_id=parsed[0], revision=parsed[1])
    if text.startswith("fixture:"):
        if not builtin:
            raise _Refusal("source", "fixture: sources name the suite's own shipped models; "
                           "give the folder's path instead")
        return ModelSource(SourceKind.FIXTURE, text, path=Path(text.removeprefix("fixture:")))
    file = resolve_path(text, base_dir)
    if not file.exists():
        raise _Refusal("source", f"{file}: no such file or directory; expected a diffusers "
                       "pipeline directory, a .safetensors checkpoint, a .gguf denoiser or "
                       "hf:<owner>/<name>")
    if file.is_dir():
        if not (file / "model_index.json").is_file():
            _, pickled = _weights(file)
            if pickled:
                raise _Refusal("source", _refuse_pickle(pickled[0]))
            raise _Refusal("source", f"{file}: no model_index.json; expected a diffusers "
                           "pipeline directory")
        return ModelSource(SourceKind.DIRECTORY, text, path=file)
    suffix = file.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise _Refusal("source", _refuse_pickle(file))
    if suffix == ".safetensors":
        problem = check_safetensors(file)
        if problem:
            raise _Refusal("source", problem)
        if table.config is UNSET:
            raise _Refusal("config", f"missing: a single-file checkpoint ({file.name}) needs "
                           "config = <a diffusers config directory of its pipeline, or hf:...>")
        return ModelSource(SourceKind.SINGLE_FILE, text, path=file,
                           config=_pipeline_ref(table.config, "config", base_dir))
    if suffix == ".gguf":
        if table.base is UNSET:
            raise _Refusal("base", f"missing: a GGUF file ({file.name}) holds only the "
                           "denoiser; base = <the pipeline directory or hf:... it replaces it "
                           "in>")
        return ModelSource(SourceKind.GGUF, text, path=file,
                           base=_pipeline_ref(table.base, "base", base_dir))
    raise _Refusal("source", f"{file}: unsupported file type {suffix or '(none)'!r}; expected "
                   "a diffusers pipeline directory, a .safetensors checkpoint or a .gguf "
                   "denoiser")


def _pipeline_ref(text: str, key: str, base_dir: Path) -> ModelSource:
    """``config`` / ``base``: a pipeline (or config) directory, or an hf: spec."""
    if text.startswith("hf:"):
        parsed = parse_hf(text)
        if parsed is None:
            raise _Refusal(key, f"{show(text)} is not a Hugging Face spec; write "
                           "hf:<owner>/<name>[@<revision>]")
        return ModelSource(SourceKind.HF, text, repo_id=parsed[0], revision=parsed[1])
    folder = resolve_path(text, base_dir)
    if not (folder / "model_index.json").is_file():
        why = "no such directory" if not folder.exists() else "no model_index.json"
        raise _Refusal(key, f"{folder}: {why}; expected a diffusers pipeline directory "
                       "(configs, tokenizers and scheduler suffice for config)")
    return ModelSource(SourceKind.DIRECTORY, text, path=folder)


def _index_key(source: ModelSource) -> str:
    """The key that names the folder holding ``model_index.json``."""
    return "config" if source.config else "base" if source.base else "source"


def _index_class(source: ModelSource) -> str | None:
    """The ``_class_name`` of the source's model_index.json (``None``: an hf: repo that is
    not in the cache)."""
    ref = source.pipeline_dir
    if ref.kind is SourceKind.HF:
        folder = hf_snapshot(str(ref.repo_id), ref.revision)
        if folder is None:
            return None
    elif ref.path is not None:
        folder = ref.path
    else:
        return None
    index_file = folder / "model_index.json"
    try:
        index = read_json_object(index_file, "pipeline index")
    except ConformanceInputError as exc:
        raise _Refusal(_index_key(source), str(exc)) from None
    cls = index.get("_class_name")
    if not isinstance(cls, str):
        raise _Refusal(_index_key(source), f"{index_file}: no '_class_name'; name the class "
                       "with pipeline = \"...\"")
    return cls


def parse_model(
    name: str,
    table: Any,
    path: Path | str,
    base_dir: Path,
    *,
    builtin: bool = False,
    error: type[ConformanceInputError] = CaseFileError,
) -> ModelSpec:
    """Validate one ``[models.NAME]`` table (read from ``path``) into a :class:`ModelSpec`.

    Every problem raises ``error``: ``FILE: case file: models['NAME'].KEY ...``.
    """
    kind = "built-in models" if builtin else "case file"
    keys = ("models", DictKey(name))
    problem = key_problem({name: table}, CaseName, keys[:1])
    if problem is None and not builtin and isinstance(table, dict) and "real" in table:
        problem = Problem((*keys, "real"), "is used by the built-in models only; a case "
                          "file names its weights with source")
    if problem is None:
        decoded = problem_of(table, Annotated[BuiltinTable if builtin else ModelTable, _TABLE])
        if isinstance(decoded, Problem):
            problem = Problem(keys + decoded.keys, decoded.text, decoded.lead)
    if problem is not None:
        raise error(path, f"{kind}: {problem}")
    try:
        return _parse(name, decoded, base_dir, builtin, None if builtin else Path(path))
    except _Refusal as exc:
        key, text = exc.args
        raise error(path, f"{kind}: {Problem((*keys, key), '').path()}: {text}") from None


def _parse(name: str, table: ModelTable, base_dir: Path, builtin: bool,
           declared_in: Path | None) -> ModelSpec:
    """:func:`parse_model` of a decoded table; :class:`_Refusal` names the key refused."""
    source = _source(table, base_dir, builtin)
    for key, kind in (("config", SourceKind.SINGLE_FILE), ("base", SourceKind.GGUF)):
        if getattr(table, key) is not UNSET and source.kind is not kind:
            raise _Refusal(key, f"applies to a {kind.value} source only "
                           f"({'.safetensors' if key == 'config' else '.gguf'}); remove it")
    real = getattr(table, "real", UNSET)
    if real is not UNSET:
        if source.kind is not SourceKind.HF:
            raise _Refusal("real", "must name a real model and go with an hf: source")
        source = ModelSource(SourceKind.REAL, source.text, repo_id=source.repo_id,
                             revision=source.revision)
    pipeline = _pipeline(table, source)
    family = _family(table, pipeline)
    vae = None
    if table.vae is not UNSET:
        try:
            vae = component_dir(table.vae, base_dir, "VAE")
        except ValueError as exc:
            raise _Refusal("vae", str(exc)) from None
    scheduler_config = default_scheduler = None
    if table.scheduler is not UNSET:
        scheduler_config, default_scheduler = _scheduler(table.scheduler, base_dir, family)
    d_multiple, d_min, d_max = family.limits
    multiple = d_multiple if table.resolution_multiple is UNSET else table.resolution_multiple
    min_side = d_min if table.min_side is UNSET else table.min_side
    max_side = d_max if table.max_side is UNSET else table.max_side
    if min_side > max_side:
        raise _Refusal("min_side", f"{min_side} is above max_side {max_side}")
    if max_side < multiple:
        raise _Refusal("max_side", f"{max_side} is below resolution_multiple {multiple}: no "
                       "side fits")
    description = table.description
    if description is UNSET:
        description = f"{pipeline or family.value} from {source.describe()}"
    return ModelSpec(
        name=name,
        family=family,
        fixture=str(source.path) if source.kind is SourceKind.FIXTURE else None,
        resolution_multiple=multiple,
        min_side=min_side,
        max_side=max_side,
        description=description,
        real=None if real is UNSET else real,
        source=source,
        pipeline=pipeline,
        vae=vae,
        scheduler_config=scheduler_config,
        default_scheduler=default_scheduler,
        declared_in=declared_in,
    )


def _pipeline(table: ModelTable, source: ModelSource) -> str | None:
    """The pipeline class: ``pipeline``, else the source's model_index.json (``None``: a
    fixture, whose family the table names)."""
    if table.pipeline is not UNSET:
        if table.pipeline not in KNOWN_PIPELINES:
            try:
                pipeline_class(table.pipeline)
            except ValueError as exc:
                raise _Refusal("pipeline", str(exc)) from None
        return table.pipeline
    if source.kind is SourceKind.FIXTURE:
        return None
    pipeline = _index_class(source)
    if pipeline is None:
        raise _Refusal("pipeline", f"missing: hf:{source.pipeline_dir.repo_id} is not in the "
                       "Hugging Face cache, so its pipeline class cannot be read from "
                       "model_index.json; name it (pipeline = \"StableDiffusionPipeline\") "
                       "and the model's items skip until the weights are there")
    if pipeline not in KNOWN_PIPELINES:
        try:
            pipeline_class(pipeline)
        except ValueError as exc:
            raise _Refusal(_index_key(source), f"model_index.json names {exc}") from None
    return pipeline


def _family(table: ModelTable, pipeline: str | None) -> Family:
    """``family``, which must agree with the pipeline class's where that tells one."""
    derived = family_of(pipeline) if pipeline else None
    if table.family is not UNSET and table.family not in FAMILIES:  # a registry: not a type
        raise _Refusal("family", f"{show(table.family)} is not one of {', '.join(FAMILIES)}")
    family = FAMILIES[table.family] if table.family is not UNSET else None
    if family is not None and derived is not None and family is not derived:
        raise _Refusal("family", f"{pipeline} is a {derived.value} pipeline; remove the key "
                       "(it is read from the pipeline class)")
    family = family or derived
    if family is None:
        choices = " or ".join(f'"{f.name}" ({f.summary})' for f in families())
        raise _Refusal("family", f"missing: the family cannot be derived from {pipeline}; "
                       f"set family = {choices}")
    return family


def _scheduler(text: str, base_dir: Path, family: Family) -> tuple[Path | None, str | None]:
    """``scheduler``: a suite scheduler name (the default of the model's cases) or a folder
    with ``scheduler_config.json`` (the base config every case's scheduler is built from)."""
    from conformance.schedulers import SCHEDULERS

    spec = SCHEDULERS.get(text)
    if spec is not None:
        if family not in spec.families:
            fits = [s.name for s in SCHEDULERS.values() if family in s.families]
            raise _Refusal("scheduler", f"{text!r} does not fit the {family.value} family; "
                           f"accepted: {', '.join(fits)}")
        return None, text
    folder = resolve_path(text, base_dir)
    config = folder / "scheduler_config.json"
    if not config.is_file():
        raise _Refusal("scheduler", f"{show(text)} is neither a scheduler name (accepted: "
                       f"{', '.join(SCHEDULERS)}) nor a folder with scheduler_config.json")
    try:
        load_config(config, "scheduler config")
    except ConformanceInputError as exc:
        raise _Refusal("scheduler", str(exc)) from None
    return folder, None


# ----------------------------------------------------------------------------- built-ins

#: The built-in models, declared as ``[models.NAME]`` tables are (see the module docstring).
BUILTIN_TABLES: dict[str, dict[str, Any]] = {
    "tiny-sd": {
        "source": "fixture:tiny-sd",
        "pipeline": "StableDiffusionPipeline",
        # VAE downsamples 4x, the UNet twice more: latents must halve twice.
        "resolution_multiple": 16,
        "min_side": 32,
        "max_side": 256,
        "description": "StableDiffusionPipeline, 2.3 M parameters, trained on captioned shapes",
    },
    "tiny-flux": {
        "source": "fixture:tiny-flux",
        "pipeline": "FluxPipeline",
        # VAE downsamples 8x; the pipeline needs sides divisible by 16.
        "resolution_multiple": 16,
        "min_side": 32,
        "max_side": 256,
        "description": "FluxPipeline with a tiny FluxTransformer2DModel, CLIP and T5 encoders",
    },
    "sd15": {
        "source": "hf:stable-diffusion-v1-5/stable-diffusion-v1-5",
        "real": "sd15",
        "pipeline": "StableDiffusionPipeline",
        "resolution_multiple": 8,
        "min_side": 256,
        "max_side": 2048,
        "description": "SD 1.5-style checkpoint: $CONFORMANCE_SD15 (directory or single "
        "file) or the Hugging Face cache",
    },
    "sdxl": {
        "source": "hf:stabilityai/stable-diffusion-xl-base-1.0",
        "real": "sdxl",
        "pipeline": "StableDiffusionXLPipeline",
        "resolution_multiple": 8,
        "min_side": 512,
        "max_side": 2048,
        "description": "SDXL base: $CONFORMANCE_SDXL or the Hugging Face cache",
    },
    "flux-schnell": {
        "source": "hf:black-forest-labs/FLUX.1-schnell",
        "real": "flux-schnell",
        "pipeline": "FluxPipeline",
        "resolution_multiple": 16,
        "min_side": 256,
        "max_side": 2048,
        "description": "FLUX.1-schnell: $CONFORMANCE_FLUX or the Hugging Face cache, with "
        "an optional GGUF transformer in $CONFORMANCE_FLUX_GGUF",
    },
}


def builtin_models() -> dict[str, ModelSpec]:
    """:data:`BUILTIN_TABLES` parsed (no file is read: built-ins are fixtures or real
    checkpoints, found when loaded)."""
    here = Path(__file__)
    return {
        name: parse_model(name, table, f"{here}:BUILTIN_TABLES", here.parent, builtin=True,
                          error=ConformanceInputError)
        for name, table in BUILTIN_TABLES.items()
    }
