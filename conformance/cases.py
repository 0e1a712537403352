"""Cases as data: a TOML file of pinned-seed generation cases and the axes they run on.

A case file looks like::

    schema_version = 1

    [axes]                       # default axes for every case
    resolutions = ["64x64", "96x96"]
    precisions = ["fp32", "bf16"]

    [cases.red-circle]           # the table name is the case name used in test ids
    model = "tiny-sd"
    prompt = "a red circle on a white background"
    negative_prompt = ""         # optional
    seed = 1234
    steps = 20
    scheduler = "euler"
    guidance_scale = 4.0
    resolutions = ["64x64"]      # optional: overrides [axes] for this case
    precisions = ["fp32"]        # optional

    [cases.red-circle-lora]      # a variant is a case of its own (its own item ids)
    model = "tiny-sd"
    ...
    lora = [{ path = "../fixtures/tiny-sd-lora", scale = 0.8 }]   # LoRA adapters
    vae = "../fixtures/tiny-sd-vae-mse"                           # a VAE swap

    [models.my-sd]               # a model of this file (see conformance.models.specs)
    source = "/models/my-sd"     # pipeline directory, .safetensors + config, .gguf + base,
                                 # or hf:owner/name[@revision]

Relative paths are relative to the case file's folder. Every problem is a
:class:`~conformance.errors.CaseFileError` naming the file, the case (or model) and the key.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance import PACKAGE_DIR
from conformance.errors import CaseFileError, type_name
from conformance.models import MODELS, ModelSpec, get_model
from conformance.models.specs import (
    PICKLE_SUFFIXES,
    check_safetensors,
    component_dir,
    parse_model,
    resolve_path,
    supports_lora,
)
from conformance.precision import PRECISIONS, dtype_precisions
from conformance.safeio import (
    CASES_LIMIT,
    load_toml,
    require_float,
    require_int,
    require_str,
    show,
)
from conformance.schedulers import SCHEDULERS

SCHEMA_VERSION = 1
DEFAULT_CASES = PACKAGE_DIR / "cases.toml"

_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")  # used with fullmatch: no trailing newline
_RESOLUTION = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")  # ASCII digits only
_SIDE = re.compile(r"[0-9]+")
_MAX_SEED = 2**63 - 1
#: caps on the shape of a case file (generous: the shipped ones have a dozen cases)
MAX_CASES = 4096
MAX_RESOLUTIONS = 64
MAX_PROMPT = 2048
MAX_STEPS = 1000
MAX_MODELS = 256
MAX_LORAS = 8
#: the file a LoRA folder holds (diffusers' ``save_lora_weights`` name)
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
_LORA_KEYS = ("path", "scale")


@dataclass(frozen=True)
class LoraRef:
    """A LoRA adapter applied to a case: a ``.safetensors`` file and its scale."""

    path: Path
    scale: float

    def label(self) -> str:
        """``<sha256 of the file, 16 hex>@<scale>``: what goldens record."""
        return f"{_file_digest(self.path)}@{self.scale:g}"


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _file_digest(path: Path) -> str:
    """The first 16 hex digits of a file's SHA-256 (cached by path, size and mtime)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        _DIGESTS[key] = digest.hexdigest()[:16]
    return _DIGESTS[key]


def _folder_digest(folder: Path) -> str:
    """A digest of a component folder's config and weights (16 hex digits)."""
    parts = [f"{f.name}:{_file_digest(f)}" for f in sorted(folder.iterdir())
             if f.is_file() and (f.suffix == ".safetensors" or f.name == "config.json")]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True, order=True)
class Resolution:
    """Image size in pixels; text form ``WIDTHxHEIGHT``."""

    width: int
    height: int

    @classmethod
    def parse(cls, text: str) -> Resolution:
        """``WIDTHxHEIGHT`` with sides of 1 to 99999 pixels in ASCII digits. A side that is
        not is named in the ``ValueError`` (``the height has 5000 digits``)."""
        match = _RESOLUTION.fullmatch(text.strip(" ")) if isinstance(text, str) else None
        if match and int(match[1]) and int(match[2]):
            return cls(int(match[1]), int(match[2]))
        why = " is not a resolution"
        parts = text.strip(" ").split("x") if isinstance(text, str) else []
        if len(parts) == 2:
            for side, part in zip(("width", "height"), parts, strict=True):
                if not part:
                    why += f": the {side} is missing"
                elif not _SIDE.fullmatch(part):
                    why += f": the {side} {show(part, 20)} is not written in digits 0-9"
                elif len(part) > 5:
                    why += f": the {side} has {len(part)} digits"
                elif not int(part):
                    why += f": the {side} is 0"
                else:
                    continue
                break
        raise ValueError(
            f"{show(text)}{why}; write WIDTHxHEIGHT with sides of 1 to 99999 pixels in "
            "digits 0-9, e.g. 64x64"
        )

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


@dataclass(frozen=True)
class Case:
    """One pinned-seed generation, before the axes are applied."""

    name: str
    model: str
    prompt: str
    negative_prompt: str
    seed: int
    steps: int
    scheduler: str
    guidance_scale: float
    resolutions: tuple[Resolution, ...]
    precisions: tuple[str, ...]
    #: the model, resolved when the case file was read (``None``: the built-in ``model``)
    spec: ModelSpec | None = None
    #: LoRA adapters applied to the pipeline, in order
    lora: tuple[LoraRef, ...] = ()
    #: a VAE folder that replaces the model's
    vae: Path | None = None

    @property
    def model_spec(self) -> ModelSpec:
        """The model this case runs: its own resolved spec, else the built-in by name."""
        return self.spec if self.spec is not None else get_model(self.model)

    def generation_params(self) -> dict[str, Any]:
        """The parameters that determine the image (stored with goldens, checked on use).

        A case with LoRA adapters adds ``lora`` (each file's digest and scale) and one with
        a VAE swap adds ``vae`` (the folder's digest); plain cases keep the keys they had.
        """
        params: dict[str, Any] = {
            "model": self.model,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "seed": self.seed,
            "steps": self.steps,
            "scheduler": self.scheduler,
            "guidance_scale": self.guidance_scale,
        }
        if self.lora:
            params["lora"] = "+".join(ref.label() for ref in self.lora)
        if self.vae is not None:
            params["vae"] = _folder_digest(self.vae)
        return params


@dataclass(frozen=True)
class Item:
    """One conformance item: a case at one resolution and one precision."""

    case: Case
    resolution: Resolution
    precision: str

    @property
    def id(self) -> str:
        return f"{self.case.model}/{self.case.name}/{self.resolution}/{self.precision}"

    @property
    def model(self) -> str:
        return self.case.model

    @property
    def stem(self) -> str:
        """File-name stem for this item's images inside a golden set."""
        return f"{self.case.name}-{self.resolution}-{self.precision}"


#: what a compare relation expects of each other case's image against the base's
EXPECTATIONS = ("differ", "identical", "close", "perceptual")
MAX_AGAINST = 64


@dataclass(frozen=True)
class Relation:
    """``[compare.NAME]``: cases generated from the same prompt and seed (another model, a
    LoRA, a swapped VAE, other steps) against a base case, item by item.

    ``expect`` is what each image must be against the base's: ``differ`` (not bit-identical:
    the variant took effect), ``identical`` (bit for bit, e.g. the same weights in another
    layout), or within the ``close`` / ``perceptual`` tier of the tolerance file.
    """

    name: str
    base: str
    against: tuple[str, ...]
    expect: str = "differ"
    description: str = ""


@dataclass(frozen=True)
class CaseSet:
    path: Path
    cases: tuple[Case, ...]
    #: the file's ``[compare.NAME]`` relations
    relations: tuple[Relation, ...] = ()

    def items(
        self,
        models: Sequence[str] | None = None,
        precisions: Sequence[str] | None = None,
        resolutions: Sequence[Resolution] | None = None,
    ) -> list[Item]:
        """Every (case, resolution, precision), filtered; ``None`` keeps all."""
        out = []
        for case in self.cases:
            if models is not None and case.model not in models:
                continue
            for res in case.resolutions:
                if resolutions is not None and res not in resolutions:
                    continue
                for prec in case.precisions:
                    if precisions is not None and prec not in precisions:
                        continue
                    out.append(Item(case, res, prec))
        return out

    def case(self, name: str) -> Case:
        return next(c for c in self.cases if c.name == name)

    def compare_pairs(
        self,
        models: Sequence[str] | None = None,
        precisions: Sequence[str] | None = None,
        resolutions: Sequence[Resolution] | None = None,
    ) -> list[tuple[Relation, Item, Item]]:
        """(relation, base item, other item) for every other case's item the filters select
        whose resolution and precision the base case has too (the base item is made for the
        comparison even where the filters drop it)."""
        out = []
        for rel in self.relations:
            base = self.case(rel.base)
            for name in rel.against:
                other = self.case(name)
                for item in CaseSet(self.path, (other,)).items(models, precisions,
                                                                resolutions):
                    if item.resolution in base.resolutions and (
                            item.precision in base.precisions):
                        out.append((rel, Item(base, item.resolution, item.precision), item))
        return out

    def filter_problem(
        self,
        models: Sequence[str] | None = None,
        precisions: Sequence[str] | None = None,
        resolutions: Sequence[Resolution] | None = None,
    ) -> str | None:
        """Why the filters select no item (naming the flag, the value and what the case
        file offers), or ``None`` when they select at least one."""
        if self.items(models, precisions, resolutions):
            return None
        cases = [c for c in self.cases if models is None or c.model in models]
        if not cases:
            used = sorted({c.model for c in self.cases})
            return (
                f"--model {','.join(models or ())}: no case in {self.path} uses "
                f"{'it' if len(models or ()) == 1 else 'them'}; the cases use "
                f"{', '.join(used)}"
            )
        selected = sorted({c.model for c in cases})
        specs = {c.model: c.model_spec for c in cases}
        if resolutions is not None:
            listed = {r for c in cases for r in c.resolutions}
            for res in resolutions:
                if res in listed:
                    continue
                problems = [
                    specs[m].check_resolution(res.width, res.height) for m in selected
                ]
                if all(problems):
                    why = "; ".join(p for p in problems if p)
                    return f"--resolution {res}: no selected model can take it ({why})"
            if not listed & set(resolutions):
                offered = ", ".join(str(r) for r in sorted(listed))
                return (
                    f"--resolution {','.join(str(r) for r in resolutions)}: no case of "
                    f"{', '.join(selected)} in {self.path} lists it; they list {offered}"
                )
        if precisions is not None:
            listed_prec = {p for c in cases for p in c.precisions}
            if not listed_prec & set(precisions):
                return (
                    f"--precision {','.join(precisions)}: no case of {', '.join(selected)} "
                    f"in {self.path} lists it; they list "
                    f"{', '.join(p for p in PRECISIONS if p in listed_prec)}"
                )
        return (
            f"no conformance items in {self.path} match the filters together (--model "
            f"{','.join(models) if models else 'any'}, --precision "
            f"{','.join(precisions) if precisions else 'any'}, --resolution "
            f"{','.join(str(r) for r in resolutions) if resolutions else 'any'}): no case "
            "lists that precision at that resolution"
        )


_CASE_KEYS = (
    "model",
    "prompt",
    "negative_prompt",
    "seed",
    "steps",
    "scheduler",
    "guidance_scale",
    "resolutions",
    "precisions",
    "lora",
    "vae",
)
_KEY_TYPES: dict[str, tuple[type | tuple[type, ...], str]] = {
    "model": (str, "a string"),
    "prompt": (str, "a string"),
    "negative_prompt": (str, "a string"),
    "scheduler": (str, "a string"),
    "seed": (int, "an integer"),
    "steps": (int, "an integer"),
    "guidance_scale": ((int, float), "a number"),
    "resolutions": (list, "an array of strings"),
    "precisions": (list, "an array of strings"),
    "lora": (list, "an array of tables ({ path = \"...\", scale = 1.0 })"),
    "vae": (str, "a string (a VAE folder)"),
}
#: required keys; ``scheduler`` may be left out when the model names a default one
_REQUIRED = ("model", "prompt", "seed", "steps", "scheduler", "guidance_scale")
_TOP_KEYS = ("schema_version", "axes", "models", "cases", "compare")
_AXES_KEYS = ("resolutions", "precisions")


def load_cases(path: str | Path | None = None) -> CaseSet:
    """Read and validate a case file (the packaged default when ``path`` is None)."""
    path = Path(path) if path is not None else DEFAULT_CASES
    data = load_toml(path, "case file", CASES_LIMIT, error=CaseFileError)
    return parse_cases(data, path)


def parse_cases(data: dict[str, Any], path: Path) -> CaseSet:
    """Validate parsed TOML ``data`` read from ``path``."""
    for key in data:
        if key not in _TOP_KEYS:
            raise CaseFileError(
                path, f"unknown top-level key {show(key)}; accepted: {', '.join(_TOP_KEYS)}"
            )
    version = data.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise CaseFileError(
            path, f"schema_version is {show(version)}; this version reads schema_version = 1"
        )
    axes = data.get("axes", {})
    if not isinstance(axes, dict):
        raise CaseFileError(path, f"[axes] must be a table, not {type_name(axes)}")
    for key in axes:
        if key not in _AXES_KEYS:
            raise CaseFileError(
                path, f"[axes]: unknown key {show(key)}; accepted: {', '.join(_AXES_KEYS)}"
            )
    default_res = _resolutions(axes.get("resolutions", []), path, "[axes]")
    default_prec = _precisions(axes.get("precisions", ["fp32"]), path, "[axes]")
    cases_table = data.get("cases")
    if not isinstance(cases_table, dict) or not cases_table:
        raise CaseFileError(path, "no cases: add at least one [cases.NAME] table")
    if len(cases_table) > MAX_CASES:
        raise CaseFileError(
            path, f"{len(cases_table)} cases; a case file holds at most {MAX_CASES}"
        )
    models = {**MODELS, **_parse_models(data.get("models", {}), path)}
    cases = tuple(
        _parse_case(name, body, path, default_res, default_prec, models)
        for name, body in cases_table.items()
    )
    relations = _parse_relations(data.get("compare", {}), path, cases)
    return CaseSet(path, cases, relations)


_RELATION_KEYS = ("base", "against", "expect", "description")


def _case_named(value: Any, key: str, where: str, by_name: dict[str, Case], path: Path) -> Case:
    if not isinstance(value, str) or value not in by_name:
        raise CaseFileError(
            path, f"{where}: key {key!r}: {show(value)} is not a case of this file; "
            f"the cases are {', '.join(sorted(by_name)[:20])}")
    return by_name[value]


def _parse_relations(table: Any, path: Path, cases: Sequence[Case]) -> tuple[Relation, ...]:
    """``[compare.NAME]`` tables: a base case and the cases compared with it, which share
    its prompt and seed and at least one (resolution, precision)."""
    if not isinstance(table, dict):
        raise CaseFileError(path, "[compare] must be a table of [compare.NAME] tables, not "
                            f"{type_name(table)}")
    by_name = {c.name: c for c in cases}
    out = []
    for name, body in table.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise CaseFileError(path, f"[compare.NAME]: {show(name)} is not a name; use "
                                "lower-case letters, digits and '-' (at most 64)")
        where = f"[compare.{name}]"
        if not isinstance(body, dict):
            raise CaseFileError(path, f"{where} must be a table, not {type_name(body)}")
        for key in body:
            if key not in _RELATION_KEYS:
                raise CaseFileError(path, f"{where}: unknown key {show(key)}; accepted: "
                                    f"{', '.join(_RELATION_KEYS)}")

        if "base" not in body:
            raise CaseFileError(path, f"{where}: key 'base' is missing (the case the others "
                                "are compared with)")
        base = _case_named(body["base"], "base", where, by_name, path)
        against = body.get("against")
        if not isinstance(against, list) or not against:
            raise CaseFileError(path, f"{where}: key 'against' must be a non-empty list of "
                                f"case names, not {show(against)}")
        if len(against) > MAX_AGAINST:
            raise CaseFileError(path, f"{where}: key 'against' lists {len(against)} cases; "
                                f"at most {MAX_AGAINST}")
        others = [_case_named(v, "against", where, by_name, path) for v in against]
        if len({c.name for c in others}) != len(others) or base in others:
            raise CaseFileError(path, f"{where}: key 'against' names a case twice or names "
                                "the base")
        for other in others:
            same = {"prompt": (base.prompt, other.prompt), "seed": (base.seed, other.seed),
                    "negative_prompt": (base.negative_prompt, other.negative_prompt)}
            differ = [k for k, (a, b) in same.items() if a != b]
            if differ:
                raise CaseFileError(path, f"{where}: case {other.name!r} differs from the base "
                                    f"{base.name!r} in {', '.join(differ)}; a comparison "
                                    "holds the prompt and the seed fixed")
            if not any(r in base.resolutions and p in base.precisions
                       for r in other.resolutions for p in other.precisions):
                raise CaseFileError(path, f"{where}: case {other.name!r} shares no "
                                    f"(resolution, precision) with the base {base.name!r}")
        expect = body.get("expect", "differ")
        if expect not in EXPECTATIONS:
            raise CaseFileError(path, f"{where}: key 'expect': {show(expect)}; accepted: "
                                f"{', '.join(EXPECTATIONS)}")
        description = body.get("description", "")
        if not isinstance(description, str) or len(description) > MAX_PROMPT:
            raise CaseFileError(path, f"{where}: key 'description' must be a string of at "
                                f"most {MAX_PROMPT} characters")
        out.append(Relation(name, base.name, tuple(c.name for c in others), expect,
                            description))
    return tuple(out)


def _parse_models(table: Any, path: Path) -> dict[str, ModelSpec]:
    """The file's own ``[models.NAME]`` tables; a built-in name may not be redefined."""
    if not isinstance(table, dict):
        raise CaseFileError(path, f"[models] must be a table of [models.NAME] tables, not "
                            f"{type_name(table)}")
    if len(table) > MAX_MODELS:
        raise CaseFileError(path, f"{len(table)} models; a case file declares at most "
                            f"{MAX_MODELS}")
    out = {}
    for name, body in table.items():
        if name in MODELS:
            raise CaseFileError(
                path, f"model {show(name)}: is a built-in model; a case file cannot redefine "
                "it: give yours another name (and use it as the cases' model)"
            )
        out[name] = parse_model(name, body, path, path.parent)
    return out


def _parse_case(
    name: str,
    body: Any,
    path: Path,
    default_res: tuple[Resolution, ...],
    default_prec: tuple[str, ...],
    models: dict[str, ModelSpec] | None = None,
) -> Case:
    models = MODELS if models is None else models
    where = f"case {show(name)}"
    if not _NAME.fullmatch(name):
        raise CaseFileError(
            path,
            f"{where}: the name must be lower-case letters, digits and '-', "
            "starting with a letter or digit, at most 64 characters",
        )
    if not isinstance(body, dict):
        raise CaseFileError(path, f"{where} must be a table, not {type_name(body)}")
    for key, value in body.items():
        if key not in _CASE_KEYS:
            raise CaseFileError(
                path, f"{where}: unknown key {show(key)}; accepted: {', '.join(_CASE_KEYS)}"
            )
        expected, what = _KEY_TYPES[key]
        if isinstance(value, bool) or not isinstance(value, expected):
            raise CaseFileError(
                path, f"{where}: key {key!r} must be {what}, not {type_name(value)} "
                f"({show(value)})"
            )
    for key in _REQUIRED:
        if key not in body:
            if key == "scheduler" and isinstance(body.get("model"), str) and getattr(
                models.get(body["model"]), "default_scheduler", None
            ):
                continue
            raise CaseFileError(path, f"{where}: missing required key {key!r}")

    def key(name: str) -> str:
        return f"{where}: key {name!r}"

    def text(name: str, default: str | None = None, allow_empty: bool = True) -> str:
        value = body.get(name, default)
        return require_str(value, path, what=key(name), max_len=MAX_PROMPT,
                           allow_empty=allow_empty, error=CaseFileError)

    model_name = text("model")
    model = models.get(model_name)
    if model is None:
        raise CaseFileError(
            path,
            f"{key('model')}: unknown model {show(model_name)}; "
            f"known: {', '.join(sorted(models))} (or declare it in a [models.NAME] table)",
        )
    scheduler_name = text("scheduler", model.default_scheduler)
    scheduler = SCHEDULERS.get(scheduler_name)
    if scheduler is None:
        raise CaseFileError(
            path,
            f"{key('scheduler')}: unknown scheduler {show(scheduler_name)}; "
            f"accepted: {', '.join(SCHEDULERS)}",
        )
    if model.family not in scheduler.families:
        fits = [s.name for s in SCHEDULERS.values() if model.family in s.families]
        raise CaseFileError(
            path,
            f"{key('scheduler')}: {scheduler.name!r} does not fit {model.name} "
            f"({model.family.value} family); accepted: {', '.join(fits)}",
        )
    prompt = text("prompt", allow_empty=False)
    seed = require_int(body["seed"], path, what=key("seed"), lo=0, hi=_MAX_SEED,
                       error=CaseFileError)
    steps = require_int(body["steps"], path, what=key("steps"), lo=1, hi=MAX_STEPS,
                        error=CaseFileError)
    guidance = require_float(body["guidance_scale"], path, what=key("guidance_scale"),
                             lo=0.0, hi=100.0, error=CaseFileError)
    negative = text("negative_prompt", "")
    if negative and not model.family.negative_prompt:
        raise CaseFileError(
            path,
            f"{key('negative_prompt')}: {model.name} ({model.family.value} family) "
            f"{model.family.no_negative_prompt}; remove the key",
        )
    resolutions = _resolutions(body.get("resolutions", default_res), path, where)
    if not resolutions:
        raise CaseFileError(
            path, f"{where}: no resolutions: set 'resolutions' here or in [axes]"
        )
    for res in resolutions:
        problem = model.check_resolution(res.width, res.height)
        if problem:
            raise CaseFileError(path, f"{key('resolutions')}: {res}: {problem}")
    precisions = _precisions(body.get("precisions", default_prec), path, where)
    lora = _loras(body["lora"], path, where, model, precisions) if "lora" in body else ()
    vae = None
    if "vae" in body:
        try:
            vae = component_dir(body["vae"], path.parent, "VAE")
        except ValueError as exc:
            raise CaseFileError(path, f"{key('vae')}: {exc}") from None
    return Case(
        name=name,
        model=model.name,
        prompt=prompt,
        negative_prompt=negative,
        seed=seed,
        steps=steps,
        scheduler=scheduler.name,
        guidance_scale=guidance,
        resolutions=resolutions,
        precisions=precisions,
        spec=model,
        lora=lora,
        vae=vae,
    )


def _loras(
    values: list[Any], path: Path, where: str, model: ModelSpec, precisions: tuple[str, ...]
) -> tuple[LoraRef, ...]:
    """``lora = [{ path = "...", scale = 0.8 }, ...]``: safetensors files, scales in -8..8."""
    what = f"{where}: key 'lora'"
    if not values:
        raise CaseFileError(path, f"{what} is empty; remove it or list an adapter")
    if len(values) > MAX_LORAS:
        raise CaseFileError(path, f"{what} lists {len(values)} adapters; at most {MAX_LORAS}")
    quantized = [p for p in precisions if not PRECISIONS[p].kind.plain]
    if quantized:
        *first, last = dtype_precisions()
        raise CaseFileError(path, f"{what}: LoRA adapters run at {', '.join(first)} and {last} "
                            f"only (the case lists {', '.join(quantized)}); set precisions for "
                            "this case")
    if model.pipeline and not supports_lora(model.pipeline):
        raise CaseFileError(path, f"{what}: {model.pipeline} ({model.name}) does not load "
                            "LoRA adapters")
    out: list[LoraRef] = []
    for i, entry in enumerate(values):
        at = f"{what}[{i}]"
        if not isinstance(entry, dict):
            raise CaseFileError(path, f"{at} must be a table {{ path = \"...\", scale = 1.0 }},"
                                f" not {type_name(entry)}")
        for k in entry:
            if k not in _LORA_KEYS:
                raise CaseFileError(path, f"{at}: unknown key {show(k)}; accepted: "
                                    f"{', '.join(_LORA_KEYS)}")
        if "path" not in entry:
            raise CaseFileError(path, f"{at}: missing required key 'path'")
        text = require_str(entry["path"], path, what=f"{at}: key 'path'", max_len=4096,
                           allow_empty=False, error=CaseFileError)
        scale = require_float(entry.get("scale", 1.0), path, what=f"{at}: key 'scale'",
                              lo=-8.0, hi=8.0, error=CaseFileError)
        file = resolve_path(text, path.parent)
        if file.is_dir():
            file = file / LORA_WEIGHTS
            if not file.is_file():
                raise CaseFileError(path, f"{at}: key 'path': {file.parent}: no {LORA_WEIGHTS}"
                                    "; name the .safetensors file")
        if not file.exists():
            raise CaseFileError(path, f"{at}: key 'path': {file}: no such file or directory")
        if file.suffix.lower() in PICKLE_SUFFIXES:
            raise CaseFileError(path, f"{at}: key 'path': {file}: pickled weights are not "
                                "loaded (they run code); convert to .safetensors")
        if file.suffix.lower() != ".safetensors":
            raise CaseFileError(path, f"{at}: key 'path': {file}: expected a .safetensors "
                                "LoRA file (or a folder holding " + LORA_WEIGHTS + ")")
        problem = check_safetensors(file)
        if problem:
            raise CaseFileError(path, f"{at}: key 'path': {problem}")
        if any(ref.path == file for ref in out):
            raise CaseFileError(path, f"{at}: key 'path': {file} is listed twice")
        out.append(LoraRef(file, scale))
    return tuple(out)


def _resolutions(values: Any, path: Path, where: str) -> tuple[Resolution, ...]:
    values = _string_list(values, path, where, "resolutions", MAX_RESOLUTIONS)
    out = []
    for text in values:
        try:
            out.append(Resolution.parse(text))
        except ValueError as exc:
            raise CaseFileError(path, f"{where}: key 'resolutions': {exc}") from None
    return _unique(out, path, where, "resolutions")


def _precisions(values: Any, path: Path, where: str) -> tuple[str, ...]:
    values = _string_list(values, path, where, "precisions", len(PRECISIONS))
    for name in values:
        if name not in PRECISIONS:
            raise CaseFileError(
                path,
                f"{where}: key 'precisions': unknown precision {show(name)}; "
                f"accepted: {', '.join(PRECISIONS)}",
            )
    if not values:
        raise CaseFileError(path, f"{where}: key 'precisions' is empty")
    return _unique(values, path, where, "precisions")


def _string_list(values: Any, path: Path, where: str, key: str, most: int) -> list[str]:
    if isinstance(values, tuple):  # already-parsed defaults
        return [str(v) for v in values]
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise CaseFileError(path, f"{where}: key {key!r} must be an array of strings")
    if len(values) > most:
        raise CaseFileError(
            path, f"{where}: key {key!r} lists {len(values)} values; at most {most}"
        )
    return values


def _unique(values: Iterable[Any], path: Path, where: str, key: str) -> tuple[Any, ...]:
    seen: dict[Any, None] = {}
    for value in values:
        if value in seen:
            raise CaseFileError(path, f"{where}: key {key!r} lists {value} twice")
        seen[value] = None
    return tuple(seen)
