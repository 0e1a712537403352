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
from typing import Any

from conformance.errors import CaseFileError, ConformanceInputError, type_name
from conformance.models.base import Family, ModelSpec, load_config, read_json_object
from conformance.models.families import FAMILIES, families
from conformance.safeio import require_str, show

#: weight files that run code when loaded; never read (the same list as sources.py's)
PICKLE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"})

NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_CLASS = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
# Hugging Face repo ids: owner/name of letters, digits, '-', '_', '.'; no '--' or '..'
_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_HF = re.compile(rf"hf:({_REPO_PART}/{_REPO_PART})(?:@([A-Za-z0-9][A-Za-z0-9._/-]{{0,127}}))?")
MAX_PATH = 4096

MODEL_KEYS = (
    "source", "config", "base", "pipeline", "family", "vae", "scheduler",
    "resolution_multiple", "min_side", "max_side", "description",
)
#: keys only the built-in declarations use
BUILTIN_KEYS = ("real",)

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


# ----------------------------------------------------------------------------- helpers


def _err(path: Path | str, name: str, key: str | None, message: str,
         error: type[ConformanceInputError]) -> ConformanceInputError:
    where = f"model {show(name)}" + (f": key {key!r}" if key else "")
    return error(path, f"{where}: {message}")


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


def component_dir(value: Any, base_dir: Path, what: str) -> Path:
    """A component folder (``vae = "..."``): exists, has a bounded config.json and
    safetensors weights. Raises ``ValueError`` with the reason."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a folder path (a string), not {type_name(value)} "
                         f"({show(value)})")
    if len(value) > MAX_PATH:
        raise ValueError(f"has {len(value)} characters; at most {MAX_PATH}")
    path = resolve_path(value, base_dir)
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


def _source(value: Any, table: dict[str, Any], name: str, path: Path | str, base_dir: Path,
            builtin: bool, error: type[ConformanceInputError]) -> ModelSource:
    def bad(key: str, message: str) -> ConformanceInputError:
        return _err(path, name, key, message, error)

    text = require_str(value, path, what=f"model {show(name)}: key 'source'", max_len=MAX_PATH,
                       allow_empty=False, error=error)
    if text.startswith("hf:"):
        parsed = parse_hf(text)
        if parsed is None:
            raise bad("source", f"{show(text)} is not a Hugging Face spec; write "
                      "hf:<owner>/<name> or hf:<owner>/<name>@<revision> (letters, digits, "
                      "'-', '_' and '.')")
        return ModelSource(SourceKind.HF, text, repo_id=parsed[0], revision=parsed[1])
    if text.startswith("fixture:"):
        if not builtin:
            raise bad("source", "fixture: sources name the suite's own shipped models; "
                      "give the folder's path instead")
        return ModelSource(SourceKind.FIXTURE, text, path=Path(text.removeprefix("fixture:")))
    file = resolve_path(text, base_dir)
    if not file.exists():
        raise bad("source", f"{file}: no such file or directory; expected a diffusers "
                  "pipeline directory, a .safetensors checkpoint, a .gguf denoiser or "
                  "hf:<owner>/<name>")
    if file.is_dir():
        if not (file / "model_index.json").is_file():
            _, pickled = _weights(file)
            if pickled:
                raise bad("source", _refuse_pickle(pickled[0]))
            raise bad("source", f"{file}: no model_index.json; expected a diffusers "
                      "pipeline directory")
        return ModelSource(SourceKind.DIRECTORY, text, path=file)
    suffix = file.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise bad("source", _refuse_pickle(file))
    if suffix == ".safetensors":
        problem = check_safetensors(file)
        if problem:
            raise bad("source", problem)
        if "config" not in table:
            raise bad("config", f"missing: a single-file checkpoint ({file.name}) needs "
                      "config = <a diffusers config directory of its pipeline, or hf:...>")
        return ModelSource(SourceKind.SINGLE_FILE, text, path=file,
                           config=_pipeline_ref(table["config"], "config", name, path,
                                                base_dir, error))
    if suffix == ".gguf":
        if "base" not in table:
            raise bad("base", f"missing: a GGUF file ({file.name}) holds only the denoiser; "
                      "base = <the pipeline directory or hf:... it replaces it in>")
        return ModelSource(SourceKind.GGUF, text, path=file,
                           base=_pipeline_ref(table["base"], "base", name, path, base_dir,
                                              error))
    raise bad("source", f"{file}: unsupported file type {suffix or '(none)'!r}; expected a "
              "diffusers pipeline directory, a .safetensors checkpoint or a .gguf denoiser")


def _pipeline_ref(value: Any, key: str, name: str, path: Path | str, base_dir: Path,
                  error: type[ConformanceInputError]) -> ModelSource:
    """``config`` / ``base``: a pipeline (or config) directory, or an hf: spec."""
    text = require_str(value, path, what=f"model {show(name)}: key {key!r}", max_len=MAX_PATH,
                       allow_empty=False, error=error)
    if text.startswith("hf:"):
        parsed = parse_hf(text)
        if parsed is None:
            raise _err(path, name, key, f"{show(text)} is not a Hugging Face spec; write "
                       "hf:<owner>/<name>[@<revision>]", error)
        return ModelSource(SourceKind.HF, text, repo_id=parsed[0], revision=parsed[1])
    folder = resolve_path(text, base_dir)
    if not (folder / "model_index.json").is_file():
        why = "no such directory" if not folder.exists() else "no model_index.json"
        raise _err(path, name, key, f"{folder}: {why}; expected a diffusers pipeline "
                   "directory (configs, tokenizers and scheduler suffice for config)", error)
    return ModelSource(SourceKind.DIRECTORY, text, path=folder)


def _index_class(source: ModelSource, name: str, path: Path | str,
                 error: type[ConformanceInputError]) -> str | None:
    """The ``_class_name`` of the source's model_index.json (``None``: an hf: repo that is
    not in the cache)."""
    ref = source.pipeline_dir
    if ref.kind is SourceKind.HF:
        snapshot = hf_snapshot(str(ref.repo_id), ref.revision)
        if snapshot is None:
            return None
        folder = snapshot
    elif ref.path is not None:
        folder = ref.path
    else:
        return None
    index_file = folder / "model_index.json"
    key = "config" if source.config else "base" if source.base else "source"
    try:
        index = read_json_object(index_file, "pipeline index")
    except ConformanceInputError as exc:
        raise _err(path, name, key, str(exc), error) from None
    cls = index.get("_class_name")
    if not isinstance(cls, str):
        raise _err(path, name, key, f"{index_file}: no '_class_name'; name the class with "
                   "pipeline = \"...\"", error)
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

    Every problem raises ``error`` naming ``path``, the model and the key.
    """
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise error(path, f"model {show(name)}: the name must be lower-case letters, digits "
                    "and '-', starting with a letter or digit, at most 64 characters")
    if not isinstance(table, dict):
        raise error(path, f"model {show(name)} must be a table, not {type_name(table)}")
    accepted = MODEL_KEYS + (BUILTIN_KEYS if builtin else ())
    for key in table:
        if key not in accepted:
            hint = " (used by the built-in models only)" if key in BUILTIN_KEYS else ""
            raise error(path, f"model {show(name)}: unknown key {show(key)}{hint}; accepted: "
                        f"{', '.join(MODEL_KEYS)}")
    if "source" not in table:
        raise _err(path, name, None, "missing required key 'source' (a pipeline directory, "
                   "a .safetensors file with config, a .gguf file with base, or hf:...)", error)
    source = _source(table["source"], table, name, path, base_dir, builtin, error)
    for key, kind in (("config", SourceKind.SINGLE_FILE), ("base", SourceKind.GGUF)):
        if key in table and source.kind is not kind:
            raise _err(path, name, key, f"applies to a {kind.value} source only "
                       f"({'.safetensors' if key == 'config' else '.gguf'}); remove it", error)
    real = table.get("real")
    if real is not None:
        if not isinstance(real, str) or source.kind is not SourceKind.HF:
            raise _err(path, name, "real", "must name a real model and go with an hf: "
                       "source", error)
        source = ModelSource(SourceKind.REAL, source.text, repo_id=source.repo_id,
                             revision=source.revision)

    # the pipeline class and the family
    pipeline = table.get("pipeline")
    if pipeline is not None:
        pipeline = require_str(pipeline, path, what=f"model {show(name)}: key 'pipeline'",
                               max_len=128, allow_empty=False, error=error)
        if pipeline not in KNOWN_PIPELINES:
            try:
                pipeline_class(pipeline)
            except ValueError as exc:
                raise _err(path, name, "pipeline", str(exc), error) from None
    elif source.kind is not SourceKind.FIXTURE:
        pipeline = _index_class(source, name, path, error)
        if pipeline is None:
            ref = source.pipeline_dir
            raise _err(path, name, "pipeline", f"missing: hf:{ref.repo_id} is not in the "
                       "Hugging Face cache, so its pipeline class cannot be read from "
                       "model_index.json; name it (pipeline = \"StableDiffusionPipeline\") and "
                       "the model's items skip until the weights are there", error)
        if pipeline not in KNOWN_PIPELINES:
            try:
                pipeline_class(pipeline)
            except ValueError as exc:
                key = "config" if source.config else "base" if source.base else "source"
                raise _err(path, name, key, f"model_index.json names {exc}", error) from None
    derived = family_of(pipeline) if pipeline else None
    family_text = table.get("family")
    family: Family | None = None
    if family_text is not None:
        if family_text not in FAMILIES:
            raise _err(path, name, "family", f"{show(family_text)} is not a family; accepted: "
                       f"{', '.join(FAMILIES)}", error)
        family = FAMILIES[family_text]
        if derived is not None and family is not derived:
            raise _err(path, name, "family", f"{pipeline} is a {derived.value} pipeline; "
                       "remove the key (it is read from the pipeline class)", error)
    family = family or derived
    if family is None:
        choices = " or ".join(f'"{f.name}" ({f.summary})' for f in families())
        raise _err(path, name, "family", f"missing: the family cannot be derived from "
                   f"{pipeline}; set family = {choices}", error)

    # components
    vae = None
    if "vae" in table:
        try:
            vae = component_dir(table["vae"], base_dir, "VAE")
        except ValueError as exc:
            raise _err(path, name, "vae", str(exc), error) from None
    scheduler_config = default_scheduler = None
    if "scheduler" in table:
        scheduler_config, default_scheduler = _scheduler(table["scheduler"], name, path,
                                                         base_dir, family, error)

    # resolution limits
    d_multiple, d_min, d_max = family.limits
    multiple = _int(table, "resolution_multiple", d_multiple, 1, 1024, name, path, error)
    min_side = _int(table, "min_side", d_min, 1, MAX_SIDE, name, path, error)
    max_side = _int(table, "max_side", d_max, 1, MAX_SIDE, name, path, error)
    if min_side > max_side:
        raise _err(path, name, "min_side", f"{min_side} is above max_side {max_side}", error)
    if max_side < multiple:
        raise _err(path, name, "max_side", f"{max_side} is below resolution_multiple "
                   f"{multiple}: no side fits", error)
    description = table.get("description")
    if description is None:
        description = f"{pipeline or family.value} from {source.describe()}"
    description = require_str(description, path, what=f"model {show(name)}: key "
                              "'description'", max_len=200, error=error)
    return ModelSpec(
        name=name,
        family=family,
        fixture=str(source.path) if source.kind is SourceKind.FIXTURE else None,
        resolution_multiple=multiple,
        min_side=min_side,
        max_side=max_side,
        description=description,
        real=real,
        source=source,
        pipeline=pipeline,
        vae=vae,
        scheduler_config=scheduler_config,
        default_scheduler=default_scheduler,
        declared_in=None if builtin else Path(path),
    )


def _int(table: dict[str, Any], key: str, default: int, lo: int, hi: int, name: str,
         path: Path | str, error: type[ConformanceInputError]) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _err(path, name, key, f"must be an integer, not {type_name(value)} "
                   f"({show(value)})", error)
    if not lo <= value <= hi:
        raise _err(path, name, key, f"{value} is outside {lo}..{hi}", error)
    return value


def _scheduler(value: Any, name: str, path: Path | str, base_dir: Path, family: Family,
               error: type[ConformanceInputError]) -> tuple[Path | None, str | None]:
    """``scheduler``: a suite scheduler name (the default of the model's cases) or a folder
    with ``scheduler_config.json`` (the base config every case's scheduler is built from)."""
    from conformance.schedulers import SCHEDULERS

    text = require_str(value, path, what=f"model {show(name)}: key 'scheduler'",
                       max_len=MAX_PATH, allow_empty=False, error=error)
    spec = SCHEDULERS.get(text)
    if spec is not None:
        if family not in spec.families:
            fits = [s.name for s in SCHEDULERS.values() if family in s.families]
            raise _err(path, name, "scheduler", f"{text!r} does not fit the {family.value} "
                       f"family; accepted: {', '.join(fits)}", error)
        return None, text
    folder = resolve_path(text, base_dir)
    config = folder / "scheduler_config.json"
    if not config.is_file():
        raise _err(path, name, "scheduler", f"{show(text)} is neither a scheduler name "
                   f"(accepted: {', '.join(SCHEDULERS)}) nor a folder with "
                   "scheduler_config.json", error)
    try:
        load_config(config, "scheduler config")
    except ConformanceInputError as exc:
        raise _err(path, name, "scheduler", str(exc), error) from None
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
