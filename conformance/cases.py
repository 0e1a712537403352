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

Relative paths are relative to the case file's folder. The file is decoded once into the
declared :class:`CaseFile` (:mod:`conformance.schema`: each key's type, range and length),
then what relates keys to each other is checked (a case's model and its scheduler,
resolutions and adapters; the cases a comparison names). Every problem is one
:class:`~conformance.errors.CaseFileError` naming the file and the key path
(``cases['red-circle'].seed``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import msgspec
from msgspec import UNSET, UnsetType

from conformance import PACKAGE_DIR
from conformance.errors import CaseFileError
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
from conformance.safeio import CASES_LIMIT, load_toml, show
from conformance.schedulers import SCHEDULERS
from conformance.schema import (
    CaseName,
    DictKey,
    Problem,
    convert,
    key_problem,
    line,
    number_in,
    one_of,
)

SCHEMA_VERSION = 1
DEFAULT_CASES = PACKAGE_DIR / "cases.toml"

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


# -- the file's declared shape ---------------------------------------------------------------
KIND = "case file"


def _table(name: str) -> msgspec.Meta:
    """What a table of the file is called where it is refused (``must be a NAME table``)."""
    return msgspec.Meta(description=f"a {name} table")


_Text = line(MAX_PROMPT)
_Path = line(4096, empty=False)
_Precision = one_of(PRECISIONS)
_Precisions = Annotated[list[_Precision], msgspec.Meta(
    min_length=1, max_length=len(PRECISIONS),
    description=f"a list of 1 to {len(PRECISIONS)} precision names")]
_Resolutions = Annotated[
    list[Annotated[str, msgspec.Meta(description="a string WIDTHxHEIGHT")]],
    msgspec.Meta(max_length=MAX_RESOLUTIONS,
                 description=f"a list of at most {MAX_RESOLUTIONS} strings WIDTHxHEIGHT")]


class LoraTable(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``{ path = "...", scale = 1.0 }``: a LoRA adapter of a case, as written."""

    path: _Path
    scale: number_in(-8.0, 8.0) = 1.0  # type: ignore[valid-type]


_Lora = Annotated[LoraTable, _table('{ path = "...", scale = 1.0 }')]


class CaseTable(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A ``[cases.NAME]`` table, as written (``scheduler`` may be left out where the model
    names a default one; a key left out is ``UNSET``)."""

    model: _Text
    prompt: line(MAX_PROMPT, empty=False)  # type: ignore[valid-type]
    negative_prompt: _Text = ""
    seed: number_in(0, _MAX_SEED, integer=True)  # type: ignore[valid-type]
    steps: number_in(1, MAX_STEPS, integer=True)  # type: ignore[valid-type]
    scheduler: one_of(SCHEDULERS) | UnsetType = UNSET  # type: ignore[valid-type]
    guidance_scale: number_in(0.0, 100.0)  # type: ignore[valid-type]
    resolutions: _Resolutions | UnsetType = UNSET
    precisions: _Precisions | UnsetType = UNSET
    lora: Annotated[list[_Lora], msgspec.Meta(
        min_length=1, max_length=MAX_LORAS,
        description=f"a list of 1 to {MAX_LORAS} tables {{ path = \"...\", scale = 1.0 }}",
    )] = msgspec.field(default_factory=list)
    vae: _Path | UnsetType = UNSET


class RelationTable(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A ``[compare.NAME]`` table, as written."""

    base: str
    against: Annotated[list[str], msgspec.Meta(
        min_length=1, max_length=MAX_AGAINST,
        description=f"a non-empty list of at most {MAX_AGAINST} case names")]
    expect: one_of(EXPECTATIONS) = "differ"  # type: ignore[valid-type]
    description: Annotated[str, msgspec.Meta(
        max_length=MAX_PROMPT, description=f"a string of at most {MAX_PROMPT} characters")] = ""


class AxesTable(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[axes]``: the resolutions and precisions of a case that lists none."""

    resolutions: _Resolutions = msgspec.field(default_factory=list)
    precisions: _Precisions = msgspec.field(default_factory=lambda: ["fp32"])


class CaseFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A case file, as written: checked by type here, by relation in :func:`parse_cases`."""

    schema_version: int
    axes: Annotated[AxesTable, _table("[axes]")] = msgspec.field(default_factory=AxesTable)
    models: Annotated[dict[str, Any], msgspec.Meta(
        max_length=MAX_MODELS, description=f"a table of at most {MAX_MODELS} [models.NAME] "
        "tables")] = msgspec.field(default_factory=dict)
    cases: Annotated[dict[str, Annotated[CaseTable, _table("[cases.NAME]")]], msgspec.Meta(
        min_length=1, max_length=MAX_CASES,
        description=f"a table of 1 to {MAX_CASES} [cases.NAME] tables")]
    compare: Annotated[
        dict[str, Annotated[RelationTable, _table("[compare.NAME]")]],
        msgspec.Meta(description="a table of [compare.NAME] tables"),
    ] = msgspec.field(default_factory=dict)


def _refuse(path: Path, keys: tuple[str | int, ...], text: str) -> NoReturn:
    """A refusal found after decoding: ``FILE: case file: KEY.PATH: TEXT``."""
    raise CaseFileError(path, f"{KIND}: {Problem(keys, '').path()}: {text}")


def _case_keys(name: str, *keys: str | int) -> tuple[str | int, ...]:
    return ("cases", DictKey(name), *keys)


def load_cases(path: str | Path | None = None) -> CaseSet:
    """Read and validate a case file (the packaged default when ``path`` is None)."""
    path = Path(path) if path is not None else DEFAULT_CASES
    data = load_toml(path, KIND, CASES_LIMIT, error=CaseFileError)
    return parse_cases(data, path)


def parse_cases(data: dict[str, Any], path: Path) -> CaseSet:
    """Validate parsed TOML ``data`` read from ``path``: decoded into :class:`CaseFile`,
    then what relates keys to each other (a case's model, scheduler, resolutions and
    adapters; a comparison's cases)."""
    version = data.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise CaseFileError(
            path, f"schema_version is {show(version)}; this version reads schema_version = 1"
        )
    file = convert(data, CaseFile, path, kind=KIND, error=CaseFileError)
    for table in ("cases", "compare"):  # named like cases
        problem = key_problem(getattr(file, table), CaseName, (table,))
        if problem is not None:
            raise CaseFileError(path, f"{KIND}: {problem}")
    default_res = _resolutions(file.axes.resolutions, path, ("axes", "resolutions"))
    default_prec = _unique(file.axes.precisions, path, ("axes", "precisions"))
    models = {**MODELS, **_parse_models(file.models, path)}
    cases = tuple(
        _parse_case(name, body, path, default_res, default_prec, models)
        for name, body in file.cases.items()
    )
    relations = _parse_relations(file.compare, path, cases)
    return CaseSet(path, cases, relations)


def _case_named(value: str, keys: tuple[str | int, ...], by_name: dict[str, Case],
                path: Path) -> Case:
    if value not in by_name:
        _refuse(path, keys, f"{show(value)} is not a case of this file; the cases are "
                f"{', '.join(sorted(by_name)[:20])}")
    return by_name[value]


def _parse_relations(table: dict[str, RelationTable], path: Path,
                     cases: Sequence[Case]) -> tuple[Relation, ...]:
    """``[compare.NAME]`` tables: a base case and the cases compared with it, which share
    its prompt and seed and at least one (resolution, precision)."""
    by_name = {c.name: c for c in cases}
    out = []
    for name, body in table.items():
        at = ("compare", DictKey(name))
        base = _case_named(body.base, (*at, "base"), by_name, path)
        others = [_case_named(v, (*at, "against", i), by_name, path)
                  for i, v in enumerate(body.against)]
        if len({c.name for c in others}) != len(others) or base in others:
            _refuse(path, (*at, "against"), "names a case twice or names the base")
        for other in others:
            same = {"prompt": (base.prompt, other.prompt), "seed": (base.seed, other.seed),
                    "negative_prompt": (base.negative_prompt, other.negative_prompt)}
            differ = [k for k, (a, b) in same.items() if a != b]
            if differ:
                _refuse(path, at, f"case {other.name!r} differs from the base {base.name!r} "
                        f"in {', '.join(differ)}; a comparison holds the prompt and the seed "
                        "fixed")
            if not any(r in base.resolutions and p in base.precisions
                       for r in other.resolutions for p in other.precisions):
                _refuse(path, at, f"case {other.name!r} shares no (resolution, precision) "
                        f"with the base {base.name!r}")
        out.append(Relation(name, base.name, tuple(c.name for c in others), body.expect,
                            body.description))
    return tuple(out)


def _parse_models(table: dict[str, Any], path: Path) -> dict[str, ModelSpec]:
    """The file's own ``[models.NAME]`` tables; a built-in name may not be redefined."""
    out = {}
    for name, body in table.items():
        if name in MODELS:
            _refuse(path, ("models", DictKey(name)), f"model {show(name)} is a built-in model; "
                    "a case file cannot redefine it: give yours another name (and use it as "
                    "the cases' model)")
        out[name] = parse_model(name, body, path, path.parent)
    return out


def _parse_case(
    name: str,
    body: CaseTable,
    path: Path,
    default_res: tuple[Resolution, ...],
    default_prec: tuple[str, ...],
    models: Mapping[str, ModelSpec],
) -> Case:
    def keys(*more: str | int) -> tuple[str | int, ...]:
        return _case_keys(name, *more)

    model = models.get(body.model)
    if model is None:
        _refuse(path, keys("model"), f"unknown model {show(body.model)}; known: "
                f"{', '.join(sorted(models))} (or declare it in a [models.NAME] table)")
    scheduler_name = body.scheduler or model.default_scheduler  # UNSET is false
    if scheduler_name is None:
        raise CaseFileError(path, f"{KIND}: {Problem(keys('scheduler'), 'is missing', 'key ')}")
    scheduler = SCHEDULERS[scheduler_name]
    if model.family not in scheduler.families:
        fits = [s.name for s in SCHEDULERS.values() if model.family in s.families]
        _refuse(path, keys("scheduler"), f"{scheduler.name!r} does not fit {model.name} "
                f"({model.family.value} family); accepted: {', '.join(fits)}")
    if body.negative_prompt and not model.family.negative_prompt:
        _refuse(path, keys("negative_prompt"), f"{model.name} ({model.family.value} family) "
                f"{model.family.no_negative_prompt}; remove the key")
    resolutions = (default_res if body.resolutions is UNSET
                   else _resolutions(body.resolutions, path, keys("resolutions")))
    if not resolutions:
        _refuse(path, keys(), "no resolutions: set 'resolutions' here or in [axes]")
    for res in resolutions:
        problem = model.check_resolution(res.width, res.height)
        if problem:
            _refuse(path, keys("resolutions"), f"{res}: {problem}")
    precisions = (default_prec if body.precisions is UNSET
                  else _unique(body.precisions, path, keys("precisions")))
    lora = _loras(body.lora, path, keys("lora"), model, precisions) if body.lora else ()
    vae = None
    if body.vae is not UNSET:
        try:
            vae = component_dir(body.vae, path.parent, "VAE")
        except ValueError as exc:
            _refuse(path, keys("vae"), str(exc))
    return Case(
        name=name,
        model=model.name,
        prompt=body.prompt,
        negative_prompt=body.negative_prompt,
        seed=body.seed,
        steps=body.steps,
        scheduler=scheduler.name,
        guidance_scale=float(body.guidance_scale),
        resolutions=resolutions,
        precisions=precisions,
        spec=model,
        lora=lora,
        vae=vae,
    )


def _loras(
    tables: list[LoraTable], path: Path, at: tuple[str | int, ...], model: ModelSpec,
    precisions: tuple[str, ...],
) -> tuple[LoraRef, ...]:
    """The adapters of ``lora = [{ path = "...", scale = 0.8 }, ...]``: safetensors files
    (or folders holding :data:`LORA_WEIGHTS`), each once."""
    quantized = [p for p in precisions if not PRECISIONS[p].kind.plain]
    if quantized:
        *first, last = dtype_precisions()
        _refuse(path, at, f"LoRA adapters run at {', '.join(first)} and {last} only (the case "
                f"lists {', '.join(quantized)}); set precisions for this case")
    if model.pipeline and not supports_lora(model.pipeline):
        _refuse(path, at, f"{model.pipeline} ({model.name}) does not load LoRA adapters")
    out: list[LoraRef] = []
    for i, table in enumerate(tables):
        where = (*at, i, "path")
        file = resolve_path(table.path, path.parent)
        if file.is_dir():
            file = file / LORA_WEIGHTS
            if not file.is_file():
                _refuse(path, where, f"{file.parent}: no {LORA_WEIGHTS}; name the "
                        ".safetensors file")
        if not file.exists():
            _refuse(path, where, f"{file}: no such file or directory")
        if file.suffix.lower() in PICKLE_SUFFIXES:
            _refuse(path, where, f"{file}: pickled weights are not loaded (they run code); "
                    "convert to .safetensors")
        if file.suffix.lower() != ".safetensors":
            _refuse(path, where, f"{file}: expected a .safetensors LoRA file (or a folder "
                    f"holding {LORA_WEIGHTS})")
        problem = check_safetensors(file)
        if problem:
            _refuse(path, where, problem)
        if any(ref.path == file for ref in out):
            _refuse(path, where, f"{file} is listed twice")
        out.append(LoraRef(file, float(table.scale)))
    return tuple(out)


def _resolutions(values: list[str], path: Path,
                 keys: tuple[str | int, ...]) -> tuple[Resolution, ...]:
    out = []
    for i, text in enumerate(values):
        try:
            out.append(Resolution.parse(text))
        except ValueError as exc:
            _refuse(path, (*keys, i), str(exc))
    return _unique(out, path, keys)


def _unique(values: Iterable[Any], path: Path, keys: tuple[str | int, ...]) -> tuple[Any, ...]:
    seen: dict[Any, None] = {}
    for value in values:
        if value in seen:
            _refuse(path, keys, f"lists {value} twice")
        seen[value] = None
    return tuple(seen)
