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

Every problem is a :class:`~conformance.errors.CaseFileError` naming the file, the case and
the key.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance import PACKAGE_DIR
from conformance.errors import CaseFileError, type_name
from conformance.models import MODELS, Family
from conformance.precision import PRECISIONS
from conformance.schedulers import SCHEDULERS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

SCHEMA_VERSION = 1
DEFAULT_CASES = PACKAGE_DIR / "cases.toml"

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_RESOLUTION = re.compile(r"^(\d{1,5})x(\d{1,5})$")
_MAX_SEED = 2**63 - 1


@dataclass(frozen=True, order=True)
class Resolution:
    """Image size in pixels; text form ``WIDTHxHEIGHT``."""

    width: int
    height: int

    @classmethod
    def parse(cls, text: str) -> Resolution:
        match = _RESOLUTION.match(text.strip())
        if not match or int(match[1]) == 0 or int(match[2]) == 0:
            raise ValueError(f"{text!r} is not a resolution; write WIDTHxHEIGHT, e.g. 64x64")
        return cls(int(match[1]), int(match[2]))

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

    def generation_params(self) -> dict[str, Any]:
        """The parameters that determine the image (stored with goldens, checked on use)."""
        return {
            "model": self.model,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "seed": self.seed,
            "steps": self.steps,
            "scheduler": self.scheduler,
            "guidance_scale": self.guidance_scale,
        }


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


@dataclass(frozen=True)
class CaseSet:
    path: Path
    cases: tuple[Case, ...]

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


_CASE_KEYS = {
    "model": str,
    "prompt": str,
    "negative_prompt": str,
    "seed": int,
    "steps": int,
    "scheduler": str,
    "guidance_scale": float,
    "resolutions": list,
    "precisions": list,
}
_REQUIRED = ("model", "prompt", "seed", "steps", "scheduler", "guidance_scale")
_TOP_KEYS = ("schema_version", "axes", "cases")
_AXES_KEYS = ("resolutions", "precisions")


def load_cases(path: str | Path | None = None) -> CaseSet:
    """Read and validate a case file (the packaged default when ``path`` is None)."""
    path = Path(path) if path is not None else DEFAULT_CASES
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CaseFileError(path, f"cannot read case file: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise CaseFileError(path, "is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise CaseFileError(path, f"invalid TOML: {exc}") from None
    return parse_cases(data, path)


def parse_cases(data: dict[str, Any], path: Path) -> CaseSet:
    """Validate parsed TOML ``data`` read from ``path``."""
    for key in data:
        if key not in _TOP_KEYS:
            raise CaseFileError(
                path, f"unknown top-level key {key!r}; accepted: {', '.join(_TOP_KEYS)}"
            )
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise CaseFileError(
            path, f"schema_version is {version!r}; this version reads schema_version = 1"
        )
    axes = data.get("axes", {})
    if not isinstance(axes, dict):
        raise CaseFileError(path, f"[axes] must be a table, not {type_name(axes)}")
    for key in axes:
        if key not in _AXES_KEYS:
            raise CaseFileError(
                path, f"[axes]: unknown key {key!r}; accepted: {', '.join(_AXES_KEYS)}"
            )
    default_res = _resolutions(axes.get("resolutions", []), path, "[axes]")
    default_prec = _precisions(axes.get("precisions", ["fp32"]), path, "[axes]")
    cases_table = data.get("cases")
    if not isinstance(cases_table, dict) or not cases_table:
        raise CaseFileError(path, "no cases: add at least one [cases.NAME] table")
    cases = tuple(
        _parse_case(name, body, path, default_res, default_prec)
        for name, body in cases_table.items()
    )
    return CaseSet(path, cases)


def _parse_case(
    name: str,
    body: Any,
    path: Path,
    default_res: tuple[Resolution, ...],
    default_prec: tuple[str, ...],
) -> Case:
    where = f"case {name!r}"
    if not _NAME.match(name):
        raise CaseFileError(
            path,
            f"{where}: the name must be lower-case letters, digits and '-', "
            "starting with a letter or digit, at most 64 characters",
        )
    if not isinstance(body, dict):
        raise CaseFileError(path, f"{where} must be a table, not {type_name(body)}")
    for key, value in body.items():
        expected = _CASE_KEYS.get(key)
        if expected is None:
            raise CaseFileError(
                path, f"{where}: unknown key {key!r}; accepted: {', '.join(_CASE_KEYS)}"
            )
        ok = isinstance(value, expected) and not isinstance(value, bool)
        if expected is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            raise CaseFileError(
                path,
                f"{where}: key {key!r} must be {type_name(expected())}, "
                f"not {type_name(value)} ({value!r})",
            )
    for key in _REQUIRED:
        if key not in body:
            raise CaseFileError(path, f"{where}: missing required key {key!r}")

    model = MODELS.get(body["model"])
    if model is None:
        raise CaseFileError(
            path,
            f"{where}: key 'model': unknown model {body['model']!r}; "
            f"known: {', '.join(sorted(MODELS))}",
        )
    scheduler = SCHEDULERS.get(body["scheduler"])
    if scheduler is None:
        raise CaseFileError(
            path,
            f"{where}: key 'scheduler': unknown scheduler {body['scheduler']!r}; "
            f"accepted: {', '.join(SCHEDULERS)}",
        )
    if model.family not in scheduler.families:
        fits = [s.name for s in SCHEDULERS.values() if model.family in s.families]
        raise CaseFileError(
            path,
            f"{where}: key 'scheduler': {scheduler.name!r} does not fit {model.name} "
            f"({model.family.value} family); accepted: {', '.join(fits)}",
        )
    seed, steps, guidance = body["seed"], body["steps"], float(body["guidance_scale"])
    if not 0 <= seed <= _MAX_SEED:
        raise CaseFileError(path, f"{where}: key 'seed': {seed} is outside 0..2**63-1")
    if not 1 <= steps <= 1000:
        raise CaseFileError(path, f"{where}: key 'steps': {steps} is outside 1..1000")
    if not 0.0 <= guidance <= 100.0:
        raise CaseFileError(
            path, f"{where}: key 'guidance_scale': {guidance} is outside 0..100"
        )
    negative = body.get("negative_prompt", "")
    if negative and model.family is Family.FLUX:
        raise CaseFileError(
            path,
            f"{where}: key 'negative_prompt': {model.name} ({model.family.value} family) "
            "uses distilled guidance and takes no negative prompt; remove the key",
        )
    resolutions = _resolutions(body.get("resolutions", default_res), path, where)
    if not resolutions:
        raise CaseFileError(
            path, f"{where}: no resolutions: set 'resolutions' here or in [axes]"
        )
    for res in resolutions:
        problem = model.check_resolution(res.width, res.height)
        if problem:
            raise CaseFileError(path, f"{where}: key 'resolutions': {res}: {problem}")
    precisions = _precisions(body.get("precisions", default_prec), path, where)
    return Case(
        name=name,
        model=model.name,
        prompt=body["prompt"],
        negative_prompt=negative,
        seed=seed,
        steps=steps,
        scheduler=scheduler.name,
        guidance_scale=guidance,
        resolutions=resolutions,
        precisions=precisions,
    )


def _resolutions(values: Any, path: Path, where: str) -> tuple[Resolution, ...]:
    values = _string_list(values, path, where, "resolutions")
    out = []
    for text in values:
        try:
            out.append(Resolution.parse(text))
        except ValueError as exc:
            raise CaseFileError(path, f"{where}: key 'resolutions': {exc}") from None
    return _unique(out, path, where, "resolutions")


def _precisions(values: Any, path: Path, where: str) -> tuple[str, ...]:
    values = _string_list(values, path, where, "precisions")
    for name in values:
        if name not in PRECISIONS:
            raise CaseFileError(
                path,
                f"{where}: key 'precisions': unknown precision {name!r}; "
                f"accepted: {', '.join(PRECISIONS)}",
            )
    if not values:
        raise CaseFileError(path, f"{where}: key 'precisions' is empty")
    return _unique(values, path, where, "precisions")


def _string_list(values: Any, path: Path, where: str, key: str) -> list[str]:
    if isinstance(values, tuple):  # already-parsed defaults
        return [str(v) for v in values]
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise CaseFileError(path, f"{where}: key {key!r} must be an array of strings")
    return values


def _unique(values: Iterable[Any], path: Path, where: str, key: str) -> tuple[Any, ...]:
    seen: list[Any] = []
    for value in values:
        if value in seen:
            raise CaseFileError(path, f"{where}: key {key!r} lists {value} twice")
        seen.append(value)
    return tuple(seen)
