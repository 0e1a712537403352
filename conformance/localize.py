"""Which module makes two runs part: per-module probes of a diffusers pipeline.

Two runs of the same item that give different image bits (two machines, two thread
counts, two attention backends) usually part in one kernel of one module, and every module
after it only carries the difference on. :class:`ModuleProbe` registers forward hooks on
every submodule of the denoiser (UNet or Flux transformer), of the VAE and of the text
encoders, and for the chosen denoising steps keeps, per module call in execution order, a
small record of its output and of its first tensor input:

* ``digest``: 16 hex digits of the SHA-256 of the tensor's exact bytes (dtype and shape
  included), so equal digests mean equal bits;
* ``mean``, ``std``, ``absmax``: computed in float64 on the CPU;
* ``proj``: a fixed random projection (by default 8 values): dot products, in float64 on
  the CPU, with Gaussian vectors that every machine generates from the same seed. Two
  machines' projections of one module's output estimate how far apart the two outputs are
  (``|proj_a - proj_b| / |proj_a|`` estimates ``|a - b| / |a|``) without storing tensors.

The records are declared types whose fields are a probe file's keys (msgspec Structs, read
by :mod:`conformance.schema`, so a bad file is refused naming the key; written by msgspec
as plain JSON), so runs that never meet can be compared: :func:`localize` names the first
module whose own computation gives different bits, and ranks modules by error growth
(relative output error over relative input error), which tells a cause (the error appears
or grows there) from a module that only amplifies what it was given.

:class:`InputCapture` and :func:`replay` check the verdict on another machine: the input
of one module (at most :data:`MAX_CAPTURE_BYTES`, stored as safetensors, never pickled) is
run through the same module there, and the output digest is compared with the one recorded
where the input was captured.

Hooks exist only inside a ``with ModuleProbe(...)`` block: without one nothing is
registered and generation costs nothing extra.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, NoReturn, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from conformance.errors import ConformanceInputError
from conformance.safeio import RESULTS_LIMIT, gunzip_bounded, loads_json, read_bytes, show
from conformance.schema import DictKey, Finite, Problem, convert, matching, refuse, to_builtins

T = TypeVar("T")

#: Bump when the record layout or the projection changes.
SCHEMA_VERSION = 1
FILE_KIND = "conformance-module-probes"
#: values per random projection
PROJECTION_DIM = 8
PROJECTION_SEED = 20261203
#: the projection basis: a Gaussian block of this many rows, reused per chunk of the
#: flattened tensor with a random sign per chunk and column (exactly uncorrelated entries)
PROJECTION_CHUNK = 65536
PROJECTION_SIGNS = 4096
#: the largest input a capture holds, all tensors together
MAX_CAPTURE_BYTES = 4 * 2**20
#: a probe file (SDXL: about 1.5 MiB per probed step)
PROBE_FILE_LIMIT = RESULTS_LIMIT
MAX_NAME = 1024
MAX_DIMS = 16

#: which pipeline components a probe hooks: text encoders, the denoiser, the VAE
COMPONENTS = ("text", "denoiser", "vae")
DENOISERS = ("unet", "transformer")
#: where a component's calls are recorded
_SECTION_OF_ROLE = {"text": "text", "vae": "decode"}


class ProbeFileError(ConformanceInputError):
    """A probe file or capture that cannot be used."""


class ProbeComplete(Exception):
    """Raised by a probe with ``stop_after_steps`` once its last step is recorded."""


# -- tensors ----------------------------------------------------------------------------------


def tensor_digest(tensor: Any) -> str:
    """16 hex digits of SHA-256 over dtype, shape and the exact bytes (any device)."""
    import torch

    t = tensor.detach().to("cpu").contiguous()
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()[:16]


def _combined(digests: Sequence[str]) -> str | None:
    if not digests:
        return None
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256("|".join(digests).encode()).hexdigest()[:16]


def _nbytes(tensors: Iterable[Any]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def tensors_in(obj: Any, _depth: int = 0) -> Iterator[Any]:
    """The tensors of a module's input or output, in order: a tensor, tuples / lists,
    mappings (``ModelOutput``) and dataclasses, a few levels deep."""
    import torch

    if isinstance(obj, torch.Tensor):
        yield obj
    elif _depth > 4 or obj is None or isinstance(obj, (str, bytes, int, float, bool)):
        return
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from tensors_in(item, _depth + 1)
    elif isinstance(obj, Mapping):
        for item in obj.values():
            yield from tensors_in(item, _depth + 1)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from tensors_in(getattr(obj, f.name, None), _depth + 1)


class Projection:
    """The fixed random projection every machine computes the same way.

    Row ``i`` of the (virtual) ``numel x dim`` Gaussian matrix is
    ``G[i % CHUNK] * S[i // CHUNK]``: ``G`` a seeded Gaussian block, ``S`` seeded random
    signs. Entries are uncorrelated with unit variance, so ``E[(x . g)^2] = |x|^2`` for any
    ``x``; the work is one float64 matmul per tensor.
    """

    _cache: ClassVar[dict[tuple[int, int], Projection]] = {}

    def __init__(self, dim: int = PROJECTION_DIM, seed: int = PROJECTION_SEED) -> None:
        import torch

        if not 1 <= dim <= 64:
            raise ValueError(f"projection dim {dim}; accepted: 1..64")
        gen = torch.Generator("cpu").manual_seed(seed)
        self.dim = dim
        self.seed = seed
        gauss = torch.randn(PROJECTION_CHUNK, dim, generator=gen, dtype=torch.float64,
                            device="cpu")
        self.signs = torch.randn(PROJECTION_SIGNS, dim, generator=gen, dtype=torch.float64,
                                 device="cpu").sign()
        h = hashlib.sha256(gauss.numpy().tobytes())
        h.update(self.signs.numpy().tobytes())
        self.basis = h.hexdigest()[:16]
        self.gauss_t = gauss.t().contiguous()  # dim x CHUNK: matrix-vector products

    @classmethod
    def get(cls, dim: int = PROJECTION_DIM, seed: int = PROJECTION_SEED) -> Projection:
        key = (dim, seed)
        if key not in cls._cache:
            cls._cache[key] = cls(dim, seed)
        return cls._cache[key]

    def spec(self) -> ProjectionSpec:
        return ProjectionSpec(self.dim, self.seed, PROJECTION_CHUNK, self.basis)

    def project(self, flat: Any) -> tuple[float, ...]:
        """``flat``: a 1-D float64 CPU tensor."""
        import torch

        n = int(flat.numel())
        out = torch.zeros(self.dim, dtype=torch.float64, device="cpu")
        full, rem = divmod(n, PROJECTION_CHUNK)
        if full:
            blocks = flat[: full * PROJECTION_CHUNK].reshape(full, PROJECTION_CHUNK)
            idx = torch.arange(full, device="cpu") % PROJECTION_SIGNS
            out += ((blocks @ self.gauss_t.t()) * self.signs[idx]).sum(0)
        if rem:
            out += torch.mv(self.gauss_t[:, :rem], flat[full * PROJECTION_CHUNK:]) \
                * self.signs[full % PROJECTION_SIGNS]
        return tuple(out.tolist())


def json_number(value: float) -> float | str:
    """A float for JSON: non-finite values as "nan" / "inf" / "-inf"."""
    if math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def json_fields(record: Any) -> dict[str, Any]:
    """A flat dataclass as JSON values: its fields in order, floats by :func:`json_number`."""
    return {k: json_number(v) if isinstance(v, float) else v
            for k, v in dataclasses.asdict(record).items()}


# -- the probe file's declared types ----------------------------------------------------------

#: a tensor's digest
Digest = matching("[0-9a-f]{16}", "a digest (16 lower-case hex digits)")
ModulePath = Annotated[
    matching(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*(?:#[1-9][0-9]{0,8})?",
             "a module path (dotted names of letters, digits and '_', optionally #N)"),
    msgspec.Meta(max_length=MAX_NAME),
]
ClassName = matching("[A-Za-z_][A-Za-z0-9_]{0,199}", "a class name")
DTypeName = matching(r"torch\.[a-z0-9_]{1,40}|[a-z0-9_]{1,40}", "a dtype name")
SectionName = matching("text|decode|step(?:0|[1-9][0-9]{0,5})", "text, decode or stepN")
#: a statistic: a finite number, or the string that stands for a non-finite one
Stat = Annotated[Finite | matching("nan|inf|-inf", "nan, inf or -inf"),
                 msgspec.Meta(description='a number or one of "nan", "inf", "-inf"')]
Shape = Annotated[
    tuple[Annotated[int, msgspec.Meta(ge=0, lt=2**48, description="a non-negative integer "
                                      "below 2**48")], ...],
    msgspec.Meta(max_length=MAX_DIMS,
                 description=f"a list of at most {MAX_DIMS} non-negative integers"),
]


def _int_in(lo: int, hi: int) -> Any:
    return Annotated[int, msgspec.Meta(ge=lo, le=hi, description=f"an integer {lo}..{hi}")]


ProjectionDim = _int_in(1, 64)
_Seed = _int_in(0, 2**63 - 1)
_Chunk = _int_in(1, 2**40)
#: an event's position in its section
_Position = _int_in(0, 2**40)


class NonFinite(float):
    """A statistic that is NaN or infinite: written ``"nan"``, ``"inf"`` or ``"-inf"``
    (strict JSON has no such numbers)."""

    __slots__ = ()


_NONFINITE = {"nan": NonFinite("nan"), "inf": NonFinite("inf"), "-inf": NonFinite("-inf")}


def _stat(value: float | str) -> float:
    if isinstance(value, str):
        return _NONFINITE[value]
    return value if math.isfinite(value) else NonFinite(value)


def _encode(value: Any) -> Any:
    """msgspec's ``enc_hook``: a non-finite statistic as its string; in ``meta``, a subclass
    of str, int or float (torch's version string) as Python's json writes it."""
    if isinstance(value, NonFinite):
        return json_number(value)
    for plain in (str, int, float):
        if isinstance(value, plain):
            return plain(value)
    raise TypeError(f"{type(value).__name__} is not a value a probe file holds")


def _builtins(record: Any) -> Any:
    """A record as the JSON values a probe file holds."""
    return to_builtins(record, _encode)


def _json(record: Any, indent: int | None = None) -> str:
    return json.dumps(_builtins(record), indent=indent, allow_nan=False)


class ProjectionSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Which :class:`Projection` a run used: equal specs give comparable projections."""

    dim: ProjectionDim
    seed: _Seed
    chunk: _Chunk
    #: digest of the Gaussian block and the signs
    basis: Digest


class TensorStats(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """What is kept of one tensor: exact-bits digest, moments and a random projection
    (a non-finite statistic is a :class:`NonFinite`)."""

    digest: Digest
    dtype: DTypeName
    shape: Shape
    mean: Stat
    std: Stat
    absmax: Stat
    proj: Annotated[tuple[Stat, ...], msgspec.Meta(max_length=64, description="a list of "
                                                   "at most 64 numbers")]

    def __post_init__(self) -> None:
        values = (self.mean, self.std, self.absmax, *self.proj)
        try:
            if math.isfinite(sum(values)):  # all numbers, all finite: the usual case
                return
        except TypeError:  # one of the strings that stand for a non-finite statistic
            pass
        for name in ("mean", "std", "absmax"):
            msgspec.structs.force_setattr(self, name, _stat(getattr(self, name)))
        msgspec.structs.force_setattr(self, "proj", tuple(_stat(v) for v in self.proj))

    @classmethod
    def of(cls, tensor: Any, projection: Projection | None = None) -> TensorStats:
        import torch

        projection = projection or Projection.get()
        t = tensor.detach()
        digest = tensor_digest(t)
        if t.is_complex():
            t = torch.view_as_real(t)
        flat = t.to(device="cpu", dtype=torch.float64).reshape(-1)
        n = flat.numel()
        if n == 0:
            mean = std = absmax = 0.0
            proj = (0.0,) * projection.dim
        else:
            mean = float(flat.mean())
            std = float(flat.std()) if n > 1 else 0.0
            absmax = float(flat.abs().max())
            proj = projection.project(flat)
        return cls(digest, str(tensor.dtype).removeprefix("torch."), tuple(tensor.shape),
                   mean, std, absmax, proj)

    @property
    def finite(self) -> bool:
        return all(math.isfinite(v) for v in (self.mean, self.std, self.absmax, *self.proj))


class ModuleRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """One call of one module.

    ``name`` is the module's path in the pipeline (``unet.down_blocks.0.resnets.0.conv1``;
    ``#2``, ``#3`` for later calls of the same module in the same section). ``t0`` / ``t1``
    are the positions of the call's start and return among the section's events (so calls
    nest: a submodule's ``t0..t1`` lies inside its caller's). ``out`` / ``inp`` describe the
    first tensor of the output / of the arguments; ``out_all`` / ``in_all`` digest every
    tensor of them (equal to ``out.digest`` / ``inp.digest`` when there is one). Fields are
    in the order the file writes them (``cls`` as ``class``, ``inp`` as ``in``).
    """

    name: ModulePath
    cls: ClassName = msgspec.field(name="class")
    t0: _Position
    t1: _Position
    out: TensorStats | None
    out_all: Digest | None
    inp: TensorStats | None = msgspec.field(name="in")
    in_all: Digest | None

    @property
    def base_name(self) -> str:
        return self.name.split("#", 1)[0]


def section_step(section: str) -> int | None:
    """``"step3"`` -> 3; ``"text"`` / ``"decode"`` -> None."""
    return int(section[4:]) if section.startswith("step") else None


def section_label(section: str) -> str:
    step = section_step(section)
    if step is not None:
        return f"step {step}"
    return "the text encoders" if section == "text" else "the VAE decode"


class Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The records of one phase: ``text`` (text encoders), ``stepN`` (the denoiser at
    denoising step N) or ``decode`` (the VAE), calls in order of their return."""

    name: SectionName
    records: tuple[ModuleRecord, ...]

    @property
    def step(self) -> int | None:
        return section_step(self.name)


class ProbeRecords(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything one probed run kept: its sections, the projection used and free-form
    ``meta`` (item, model, precision, device, versions ...); the fields are the probe
    file's keys, in its order."""

    schema_version: Literal[1]  # SCHEMA_VERSION
    kind: Literal["conformance-module-probes"]  # FILE_KIND
    projection: ProjectionSpec
    meta: dict[str, Any]
    sections: tuple[Section, ...]

    def section(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)

    def records(self) -> Iterator[tuple[str, ModuleRecord]]:
        for s in self.sections:
            for r in s.records:
                yield s.name, r

    @property
    def steps(self) -> tuple[int, ...]:
        return tuple(s.step for s in self.sections if s.step is not None)

    def to_dict(self) -> dict[str, Any]:
        """The parsed JSON of :meth:`to_json` (lists, not tuples)."""
        return json.loads(self.to_json())

    def to_json(self, indent: int | None = None) -> str:
        return _json(self, indent)

    @classmethod
    def from_dict(cls, data: Any, where: str = "probe records") -> ProbeRecords:
        """Parsed JSON of a probe file, checked (:class:`ProbeFileError` names the key)."""
        return _records(data, where, None)

    @classmethod
    def from_json(cls, text: str | bytes, where: str = "probe records") -> ProbeRecords:
        return _records(_load_json(text, where, "probe file"), where, "probe file")

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> ProbeRecords:
        """A probe file: JSON, or gzip of it (a golden's ``<stem>.probes.json.gz``)."""
        raw = read_bytes(path, "probe file", PROBE_FILE_LIMIT, error=ProbeFileError)
        if raw[:2] == b"\x1f\x8b":
            raw = gunzip_bounded(raw, PROBE_FILE_LIMIT, str(path), ProbeFileError)
        return cls.from_json(raw, str(path))


# -- reading: the schema, then the relations it cannot state ------------------------------


def _load_json(text: str | bytes, where: str, kind: str) -> Any:
    """JSON of a probe file or capture: no ``NaN`` / ``Infinity`` tokens (a non-finite
    statistic is one of the strings :data:`Stat` accepts)."""
    return loads_json(text, where, kind=kind, error=ProbeFileError)


def _decode(tree: Any, type_: type[T], where: str, kind: str | None) -> T:
    """``tree`` as ``type_``, a file of :data:`SCHEMA_VERSION` (one line naming the key)."""
    version = tree.get("schema_version", SCHEMA_VERSION) if type(tree) is dict else None
    if version is not None and (type(version) is not int or version != SCHEMA_VERSION):
        _refuse(where, kind, Problem(("schema_version",), f"is {show(version)}; this "
                                     f"version reads {SCHEMA_VERSION}"))
    return convert(tree, type_, where, kind=kind, error=ProbeFileError)


def _refuse(where: str, kind: str | None, problem: Problem) -> NoReturn:
    raise ProbeFileError(where, f"{kind}: {problem}" if kind else str(problem))


def _records(tree: Any, where: str, kind: str | None) -> ProbeRecords:
    records = _decode(tree, ProbeRecords, where, kind)
    problem = _relation_problem(records)
    if problem is not None:
        _refuse(where, kind, problem)
    return records


def _relation_problem(records: ProbeRecords) -> Problem | None:
    """What the types do not say: one section per name, and in each section every record's
    own relations (:func:`_record_problem`) and the calls' nesting."""
    first: dict[str, int] = {}
    for i, section in enumerate(records.sections):
        if section.name in first:
            return Problem(("sections", i, "name"), f"{show(section.name)} appears twice "
                           f"(also sections[{first[section.name]}])")
        first[section.name] = i
        for j, record in enumerate(section.records):
            found = _record_problem(record, records.projection.dim)
            if found is not None:
                return Problem(("sections", i, "records", j, *found.keys), found.text)
        found = _nesting_problem(section.records)
        if found is not None:
            return Problem(("sections", i, "records", *found.keys), found.text)
    return None


def _record_problem(record: ModuleRecord, dim: int) -> Problem | None:
    """A call returns after it starts; a digest of all tensors where, and only where, the
    first is described; projections of the file's dimension."""
    if record.t1 <= record.t0:
        return Problem(("t1",), f"({record.t1}) must be after t0 ({record.t0})")
    for key, digest_key, stats, digest in (("out", "out_all", record.out, record.out_all),
                                           ("in", "in_all", record.inp, record.in_all)):
        if (stats is None) != (digest is None):
            return Problem((digest_key,), f"is null but {key} is not" if digest is None
                           else f"is set but {key} is null")
        if stats is not None and len(stats.proj) != dim:
            return Problem((key, "proj"), f"must be a list of {dim} numbers (the file's "
                           f"projection.dim), not a list of {len(stats.proj)}")
    return None


def _nesting_problem(records: Sequence[ModuleRecord]) -> Problem | None:
    """Unique names and event positions, calls properly nested, listed in return order
    (the key: the index of the record at fault)."""
    names: set[str] = set()
    times: set[int] = set()
    last_t1 = -1
    for j, r in enumerate(records):
        if r.name in names:
            return Problem((j, "name"), f"{show(r.name)}: the module call is listed twice")
        names.add(r.name)
        if r.t0 in times or r.t1 in times:
            return Problem((j,), f"({r.name}): event positions {r.t0}/{r.t1} are reused")
        times.update((r.t0, r.t1))
        if r.t1 < last_t1:
            return Problem((j,), f"({r.name}): records are not in the order calls returned")
        last_t1 = r.t1
    stack: list[ModuleRecord] = []
    for j in sorted(range(len(records)), key=lambda j: records[j].t0):
        r = records[j]
        while stack and stack[-1].t1 < r.t0:
            stack.pop()
        if stack and r.t1 > stack[-1].t1:
            return Problem((j,), f"({r.name}, {r.t0}..{r.t1}) overlaps {stack[-1].name} "
                           f"({stack[-1].t0}..{stack[-1].t1}) without nesting in it")
        stack.append(r)
    return None


# -- the probe --------------------------------------------------------------------------------


def pipeline_components(pipe: Any) -> dict[str, tuple[Any, str]]:
    """``{component name: (module, role)}`` of a pipeline (or a mapping of modules), role
    ``"text"`` / ``"denoiser"`` / ``"vae"``."""
    import torch

    parts = pipe if isinstance(pipe, Mapping) else getattr(pipe, "components", None)
    if parts is None:
        raise TypeError(f"{type(pipe).__name__} is neither a pipeline nor a mapping of modules")
    out: dict[str, tuple[Any, str]] = {}
    for name, module in parts.items():
        if not isinstance(module, torch.nn.Module):
            continue
        if name in DENOISERS:
            out[name] = (module, "denoiser")
        elif name.startswith("text_encoder"):
            out[name] = (module, "text")
        elif name == "vae":
            out[name] = (module, "vae")
    return out


@dataclass
class _Frame:
    section: str
    name: str
    cls: str
    t0: int
    inp: TensorStats | None
    in_all: str | None
    capture: dict[str, Any] | None = None


class ModuleProbe:
    """Records every module call of a pipeline for the chosen steps (see the module doc).

    ``steps``: the denoising steps to record (a collection of step indices, default the
    first; ``None`` for all). The step of a denoiser call is the number of denoiser calls
    before it divided by ``calls_per_step`` (1 for SD with batched guidance and for Flux),
    or, once :meth:`callback` has been passed as ``callback_on_step_end`` and called, the
    step the pipeline reported. ``components``: a subset of :data:`COMPONENTS`.

    ``capture``: module calls whose inputs are kept for :func:`replay`, as
    ``"SECTION/NAME"`` (``"step0/unet.mid_block.attentions.0"``) or a bare name (its first
    call in any section); an input over ``capture_limit`` bytes is refused (the reason is
    in :attr:`capture_problems`). With ``stop_after_steps`` the probe raises
    :class:`ProbeComplete` once the last requested step has been recorded, which ends the
    generation early.

    Use as a context manager: hooks are registered on entry and all removed on exit. The
    denoiser's submodules are hooked only while a probed step runs, so unprobed steps cost
    two hook calls on the denoiser itself.
    """

    def __init__(
        self,
        pipe: Any,
        *,
        steps: Collection[int] | None = (0,),
        components: Collection[str] = COMPONENTS,
        projection_dim: int = PROJECTION_DIM,
        calls_per_step: int = 1,
        capture: Iterable[str] = (),
        capture_limit: int = MAX_CAPTURE_BYTES,
        stop_after_steps: bool = False,
    ) -> None:
        unknown = [c for c in components if c not in COMPONENTS]
        if unknown:
            raise ValueError(f"unknown components {unknown}; accepted: {', '.join(COMPONENTS)}")
        if steps is not None:
            steps = frozenset(int(s) for s in steps)
            if any(s < 0 for s in steps):
                raise ValueError("steps must be non-negative")
        if calls_per_step < 1:
            raise ValueError("calls_per_step must be at least 1")
        self.components = pipeline_components(pipe)
        self.steps = steps
        self.wanted = frozenset(components)
        self.projection = Projection.get(projection_dim)
        self.calls_per_step = calls_per_step
        self.capture_keys = frozenset(capture)
        self.capture_limit = capture_limit
        self.stop_after_steps = stop_after_steps and steps is not None and bool(steps)
        self._handles: list[Any] = []
        self._step_handles: list[Any] = []
        self._denoiser_modules: list[tuple[str, Any]] = []
        self._reset()

    def _reset(self) -> None:
        self._sections: dict[str, list[ModuleRecord]] = {}
        self._events: dict[str, int] = {}
        self._calls: dict[str, dict[str, int]] = {}
        self._stack: list[tuple[int, _Frame | None]] = []
        self._root_calls = 0
        self._callback_step: int | None = None
        self._denoiser_section: str | None = None
        self._in_denoiser = False
        self._captured_names: set[str] = set()
        self.captures: dict[str, InputCapture] = {}
        self.capture_problems: dict[str, str] = {}
        self.seconds = 0.0  # time spent inside the hooks

    # hooks ---------------------------------------------------------------------------------

    def __enter__(self) -> ModuleProbe:
        if self._handles:
            raise RuntimeError("this probe is already active")
        self._reset()
        seen: set[int] = set()
        self._denoiser_modules = []
        for comp, (root, role) in self.components.items():
            if role != "denoiser" and role not in self.wanted:
                continue
            for sub_name, module in root.named_modules():
                if id(module) in seen:
                    continue
                seen.add(id(module))
                name = f"{comp}.{sub_name}" if sub_name else comp
                if role == "denoiser" and sub_name:
                    # hooked only while a probed step runs (see _attach)
                    self._denoiser_modules.append((name, module))
                    continue
                self._hook(self._handles, module, name, role, is_root=role == "denoiser")
        return self

    def _hook(self, handles: list[Any], module: Any, name: str, role: str,
              is_root: bool = False) -> None:
        handles.append(module.register_forward_pre_hook(
            self._pre_hook(name, type(module).__name__, role, is_root), with_kwargs=True))
        handles.append(module.register_forward_hook(
            self._post_hook(role, is_root), with_kwargs=True))

    def _attach(self) -> None:
        """Hook the denoiser's submodules for the step that starts now."""
        for name, module in self._denoiser_modules:
            self._hook(self._step_handles, module, name, "denoiser")

    def _detach(self) -> None:
        for handle in self._step_handles:
            handle.remove()
        self._step_handles = []

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Remove every hook (also done on leaving the ``with`` block)."""
        self._detach()
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def callback(self, _pipe: Any, step: int, _timestep: Any, kwargs: dict[str, Any]) -> dict:
        """A ``callback_on_step_end``: from its first call on, denoiser calls are assigned
        to the step the pipeline reports instead of being counted."""
        self._callback_step = int(step) + 1
        return kwargs

    def _wants(self, step: int) -> bool:
        return "denoiser" in self.wanted and (self.steps is None or step in self.steps)

    def _section_for(self, role: str) -> str | None:
        if role == "denoiser":
            return self._denoiser_section
        return _SECTION_OF_ROLE[role]

    def _event(self, section: str) -> int:
        n = self._events.get(section, 0)
        self._events[section] = n + 1
        return n

    def _pre_hook(self, name: str, cls: str, role: str, is_root: bool) -> Any:
        def hook(module: Any, args: tuple, kwargs: dict) -> None:
            start = time.perf_counter()
            try:
                if is_root and not self._in_denoiser:
                    if self._callback_step is not None:
                        step = self._callback_step
                    else:
                        step = self._root_calls // self.calls_per_step
                    self._root_calls += 1
                    self._in_denoiser = True
                    self._denoiser_section = f"step{step}" if self._wants(step) else None
                    if self._denoiser_section is not None:
                        self._attach()
                section = self._section_for(role)
                if section is None:
                    self._stack.append((id(module), None))
                    return
                self._stack.append((id(module), self._open(section, name, cls, args, kwargs)))
            finally:
                self.seconds += time.perf_counter() - start

        return hook

    def _open(self, section: str, name: str, cls: str, args: tuple, kwargs: dict) -> _Frame:
        counts = self._calls.setdefault(section, {})
        n = counts.get(name, 0) + 1
        counts[name] = n
        full = name if n == 1 else f"{name}#{n}"
        tensors, inp, in_all = self._described((args, kwargs))
        frame = _Frame(section, full, cls, self._event(section), inp, in_all)
        key = f"{section}/{full}"
        if key in self.capture_keys or (full in self.capture_keys
                                        and full not in self._captured_names):
            self._captured_names.add(full)
            size = _nbytes(tensors)
            if size > self.capture_limit:
                self.capture_problems[key] = (
                    f"its input is {size} bytes, above the {self.capture_limit}-byte bound"
                )
            else:
                try:
                    frame.capture = _structure(args, kwargs)
                except _Unstorable as exc:
                    self.capture_problems[key] = f"cannot store its input: {exc}"
        return frame

    def _post_hook(self, role: str, is_root: bool) -> Any:
        def hook(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
            start = time.perf_counter()
            try:
                frame = None
                while self._stack:
                    mid, frame = self._stack.pop()
                    if mid == id(module):
                        break
                    frame = None
                if frame is not None:
                    self._close(frame, module, output)
            finally:
                self.seconds += time.perf_counter() - start
            if is_root and self._in_denoiser:
                section = self._denoiser_section
                self._detach()
                self._in_denoiser = False
                self._denoiser_section = None
                if self.stop_after_steps and section is not None and self._done(section):
                    raise ProbeComplete(section)

        return hook

    def _done(self, section: str) -> bool:
        step = section_step(section)
        assert self.steps is not None and step is not None
        if self._callback_step is None and self._root_calls % self.calls_per_step:
            return False
        return step >= max(self.steps)

    def _described(self, obj: Any) -> tuple[list[Any], TensorStats | None, str | None]:
        """The tensors of a call's input or output, the first one's record and the digest
        of them all."""
        tensors = list(tensors_in(obj))
        if not tensors:
            return tensors, None, None
        first = TensorStats.of(tensors[0], self.projection)
        return tensors, first, _combined([first.digest, *map(tensor_digest, tensors[1:])])

    def _close(self, frame: _Frame, module: Any, output: Any) -> None:
        _tensors, out, out_all = self._described(output)
        t1 = self._event(frame.section)
        self._sections.setdefault(frame.section, []).append(ModuleRecord(
            name=frame.name, cls=frame.cls, t0=frame.t0, t1=t1, out=out, out_all=out_all,
            inp=frame.inp, in_all=frame.in_all))
        if frame.capture is not None and out_all is not None:
            key = f"{frame.section}/{frame.name}"
            self.captures[key] = InputCapture(
                section=frame.section, name=frame.name, cls=frame.cls,
                structure=frame.capture["structure"], tensors=frame.capture["tensors"],
                output_digest=out_all, meta={"device": str(_device_of(module) or "cpu")},
            )

    # results -------------------------------------------------------------------------------

    def result(self, meta: Mapping[str, Any] | None = None) -> ProbeRecords:
        """The records so far (every section in order of its first call)."""
        sections = tuple(Section(name, tuple(recs)) for name, recs in self._sections.items())
        return ProbeRecords(schema_version=SCHEMA_VERSION, kind=FILE_KIND,
                            projection=self.projection.spec(), meta=dict(meta or {}),
                            sections=sections)


def _device_of(module: Any) -> Any:
    """The device of a module's first parameter or buffer; ``None`` for a stateless one."""
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        return tensor.device
    return None


# -- capture and replay -----------------------------------------------------------------------

_CAPTURE_META = "conformance.capture"
#: how deep a captured argument nests (tuples, lists and dicts of arguments)
MAX_ARG_DEPTH = 4

#: a captured argument's plain value
Scalar = Annotated[bool | int | float | str | None,
                   msgspec.Meta(description="true or false, a number or a string")]


class ArgSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One argument of a captured call, exactly one of: ``tensor`` (the name of a stored
    tensor), ``value`` (a plain value), ``tuple`` / ``list`` (of arguments) or ``dict``
    (names to arguments)."""

    tensor: str | UnsetType = UNSET
    value: Scalar | UnsetType = UNSET
    tuple_: list[ArgSpec] | UnsetType = msgspec.field(default=UNSET, name="tuple")
    list_: list[ArgSpec] | UnsetType = msgspec.field(default=UNSET, name="list")
    dict_: dict[str, ArgSpec] | UnsetType = msgspec.field(default=UNSET, name="dict")

    def __post_init__(self) -> None:
        held = [f.encode_name for f in msgspec.structs.fields(self)
                if getattr(self, f.name) is not UNSET]
        if len(held) != 1:
            refuse(None, text="must hold one of tensor, value, tuple, list, dict, not "
                   f"{len(held)} ({', '.join(held) or 'none'})")

    def parts(self) -> Iterator[tuple[tuple[str | int, ...], ArgSpec]]:
        """The arguments it holds, each with its keys below it."""
        for key, items in (("tuple", self.tuple_), ("list", self.list_)):
            if items is not UNSET:
                yield from (((key, i), spec) for i, spec in enumerate(items))
        if self.dict_ is not UNSET:
            yield from ((("dict", DictKey(k)), spec) for k, spec in self.dict_.items())


class CallStructure(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A captured call's arguments, tensors by name."""

    args: list[ArgSpec]
    kwargs: dict[str, ArgSpec]

    def tensor_names(self) -> set[str] | Problem:
        """The names of the tensors the arguments use, or the argument that nests too
        deep."""
        names: set[str] = set()
        todo: list[tuple[tuple[str | int, ...], ArgSpec, int]] = [
            *((("structure", "args", i), s, 0) for i, s in enumerate(self.args)),
            *((("structure", "kwargs", DictKey(k)), s, 0) for k, s in self.kwargs.items()),
        ]
        while todo:
            keys, spec, depth = todo.pop()
            if depth > MAX_ARG_DEPTH:
                return Problem(keys, f"nests deeper than {MAX_ARG_DEPTH} levels")
            if spec.tensor is not UNSET:
                names.add(spec.tensor)
            todo += [((*keys, *below), part, depth + 1) for below, part in spec.parts()]
        return names


class CaptureHeader(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A capture file's metadata (the safetensors header's ``conformance.capture``), keys
    in the order it writes them."""

    section: SectionName
    name: ModulePath
    cls: ClassName = msgspec.field(name="class")
    structure: CallStructure
    output_digest: Digest
    meta: dict[str, Any]
    schema_version: Literal[1]  # SCHEMA_VERSION


class _TensorEntry(msgspec.Struct, frozen=True):
    """A tensor of a safetensors header: where its bytes lie (dtype and shape are checked
    by safetensors on loading)."""

    data_offsets: Annotated[
        tuple[Annotated[int, msgspec.Meta(ge=0, description="a byte offset")],
              Annotated[int, msgspec.Meta(ge=0, description="a byte offset")]],
        msgspec.Meta(description="two byte offsets [begin, end]"),
    ]


def _structure(args: tuple, kwargs: dict) -> dict[str, Any]:
    """The call's arguments as a :class:`CallStructure` + CPU tensors; refuses what a
    structure cannot hold."""
    tensors: dict[str, Any] = {}

    def encode(value: Any, where: str, depth: int = 0) -> ArgSpec:
        import torch

        if isinstance(value, torch.Tensor):
            key = f"t{len(tensors)}"
            tensors[key] = value.detach().to("cpu").contiguous().clone()
            return ArgSpec(tensor=key)
        if value is None or isinstance(value, (bool, int, str)):
            return ArgSpec(value=value)
        if isinstance(value, float):
            if not math.isfinite(value):
                raise _Unstorable(f"{where} is {value}")
            return ArgSpec(value=value)
        if depth < 3 and isinstance(value, (tuple, list)):
            items = [encode(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
            return ArgSpec(tuple_=items) if isinstance(value, tuple) else ArgSpec(list_=items)
        if depth < 3 and isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return ArgSpec(dict_={k: encode(v, f"{where}[{k!r}]", depth + 1)
                                  for k, v in value.items()})
        raise _Unstorable(f"{where} is a {type(value).__name__}")

    structure = CallStructure(
        args=[encode(v, f"argument {i}") for i, v in enumerate(args)],
        kwargs={k: encode(v, f"argument {k!r}") for k, v in kwargs.items()},
    )
    return {"structure": structure, "tensors": tensors}


class _Unstorable(Exception):
    pass


@dataclass(frozen=True)
class InputCapture:
    """The arguments of one module call (tensors on the CPU) and the digest of the output
    that call gave where it was captured."""

    section: str
    name: str
    cls: str
    structure: CallStructure
    tensors: dict[str, Any]
    output_digest: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return _nbytes(self.tensors.values())

    def to_bytes(self) -> bytes:
        """safetensors bytes; the structure and digest are in its metadata."""
        from safetensors.torch import save

        header = CaptureHeader(self.section, self.name, self.cls, self.structure,
                               self.output_digest, self.meta, SCHEMA_VERSION)
        return save(self.tensors, metadata={_CAPTURE_META: json.dumps(to_builtins(header))})

    @staticmethod
    def check_bytes(data: bytes, where: str = "input capture",
                    limit: int = MAX_CAPTURE_BYTES) -> CaptureHeader:
        """Validate a capture file from its safetensors header alone (no torch: what
        ``conformance validate`` uses); returns the capture metadata."""
        if len(data) > limit + 2**20:
            raise ProbeFileError(
                where, f"input capture is {len(data)} bytes; at most {limit} bytes of tensors "
                "are replayed"
            )
        if len(data) < 8:
            raise ProbeFileError(where, "not a safetensors file (shorter than its header)")
        header_len = int.from_bytes(data[:8], "little")
        if header_len > min(len(data) - 8, 2**20):
            raise ProbeFileError(where, "not a safetensors file (bad header length)")
        head = _load_json(data[8: 8 + header_len], where, "safetensors header")
        meta = head.get("__metadata__") if isinstance(head, dict) else None
        if not isinstance(meta, dict) or not isinstance(meta.get(_CAPTURE_META), str):
            raise ProbeFileError(where, f"safetensors file without {_CAPTURE_META!r} metadata")
        entries = convert({k: v for k, v in head.items() if k != "__metadata__"},
                          dict[str, _TensorEntry], where, kind="safetensors header",
                          error=ProbeFileError)
        header = _decode(_load_json(meta[_CAPTURE_META], where, "capture metadata"),
                         CaptureHeader, where, "capture metadata")
        for name, entry in entries.items():
            begin, end = entry.data_offsets
            if end < begin:
                _refuse(where, "safetensors header", Problem(
                    (DictKey(name), "data_offsets"), f"[{begin}, {end}] ends before it begins"))
        total = sum(end - begin for begin, end in (e.data_offsets for e in entries.values()))
        if total > limit:
            raise ProbeFileError(where, f"its tensors hold {total} bytes; at most {limit}")
        used = header.structure.tensor_names()
        if isinstance(used, Problem):
            _refuse(where, "capture metadata", used)
        if used != set(entries):
            raise ProbeFileError(
                where, f"the structure names tensors {sorted(used)}, the file holds "
                f"{sorted(entries)}"
            )
        return header

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "input capture",
                   limit: int = MAX_CAPTURE_BYTES) -> InputCapture:
        from safetensors.torch import load

        header = cls.check_bytes(data, where, limit)
        try:
            tensors = load(data)
        except Exception as exc:  # safetensors raises its own error types
            raise ProbeFileError(where, f"unreadable safetensors data ({show(str(exc), 80)})"
                                 ) from None
        # check_bytes has matched the header's tensors (names, byte sizes) with the
        # structure; safetensors loads exactly the tensors its header lists
        return cls(header.section, header.name, header.cls, header.structure, tensors,
                   header.output_digest, header.meta)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_bytes(self.to_bytes())
        return path

    @classmethod
    def load(cls, path: str | Path, limit: int = MAX_CAPTURE_BYTES) -> InputCapture:
        raw = read_bytes(path, "input capture", limit + 2**20, error=ProbeFileError)
        return cls.from_bytes(raw, str(path), limit)

    def arguments(self, device: Any = "cpu") -> tuple[tuple, dict]:
        """The call's ``(args, kwargs)``, tensors moved to ``device``."""

        def decode(spec: ArgSpec) -> Any:
            if spec.tensor is not UNSET:
                return self.tensors[spec.tensor].to(device)
            if spec.value is not UNSET:
                return spec.value
            if spec.tuple_ is not UNSET:
                return tuple(decode(v) for v in spec.tuple_)
            if spec.list_ is not UNSET:
                return [decode(v) for v in spec.list_]
            return {k: decode(v) for k, v in spec.dict_.items()}

        args = tuple(decode(s) for s in self.structure.args)
        kwargs = {k: decode(s) for k, s in self.structure.kwargs.items()}
        return args, kwargs



def _find(pipe: Any, name: str) -> tuple[Any, Any]:
    """The module a record names and the component it belongs to."""
    comps = pipeline_components(pipe)
    base = name.split("#", 1)[0]
    comp, _, rest = base.partition(".")
    if comp not in comps:
        raise KeyError(f"{name}: the pipeline has no component {comp!r}; it has "
                       f"{', '.join(comps)}")
    root = comps[comp][0]
    try:
        return (root.get_submodule(rest) if rest else root), root
    except AttributeError:
        raise KeyError(f"{name}: {comp} has no submodule {rest!r}") from None


@dataclass(frozen=True)
class ReplayResult:
    name: str
    cls: str
    reproduced: bool
    expected: str
    actual: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def replay(pipe: Any, capture: InputCapture) -> ReplayResult:
    """Run the captured module call here, on its captured input.

    Equal output digest: the module computes the same here, so where two runs part at it,
    only its input differed. Different digest: the module itself computes differently here.
    Run it in the context (threads, attention backend, ...) to be checked.
    """
    import torch

    if capture.nbytes > MAX_CAPTURE_BYTES:
        raise ProbeFileError(capture.name, f"the captured input is {capture.nbytes} bytes; at "
                             f"most {MAX_CAPTURE_BYTES} are replayed")
    module, root = _find(pipe, capture.name)
    args, kwargs = capture.arguments(_device_of(module) or _device_of(root) or "cpu")
    with torch.inference_mode():
        output = module(*args, **kwargs)
    actual = _combined([tensor_digest(t) for t in tensors_in(output)]) or ""
    cls = type(module).__name__
    if actual == capture.output_digest:
        message = (f"{capture.name} ({cls}) reproduces the captured output here: it computes "
                   "the same, so only its input differed")
    else:
        message = (f"{capture.name} ({cls}) gives a different output on the captured input: "
                   "the module itself computes differently here")
    return ReplayResult(capture.name, cls, actual == capture.output_digest,
                        capture.output_digest, actual, message)


# -- probing a conformance item ---------------------------------------------------------------


@dataclass
class ProbedRun:
    records: ProbeRecords
    #: the :class:`conformance.generate.Generation`; ``None`` when the probe stopped early
    generation: Any
    captures: dict[str, InputCapture]
    capture_problems: dict[str, str]
    seconds: float
    hook_seconds: float


def probe_item(
    runner: Any,
    item: Any,
    *,
    variant: str | None = None,
    steps: Collection[int] | None = (0,),
    components: Collection[str] = COMPONENTS,
    capture: Iterable[str] = (),
    stop_early: bool = False,
    projection_dim: int = PROJECTION_DIM,
) -> ProbedRun:
    """``runner.generate(item, variant)`` (a :class:`conformance.generate.Runner`) with a
    :class:`ModuleProbe` on the runner's pipeline; ``stop_early`` ends the generation after
    the last probed step (no image, no VAE records)."""
    import diffusers
    import torch

    pipe = runner.pipeline_for(item)
    probe = ModuleProbe(pipe, steps=steps, components=components,
                        projection_dim=projection_dim, capture=capture,
                        stop_after_steps=stop_early)
    start = time.perf_counter()
    generation = None
    with probe:
        try:
            generation = runner.generate(item, variant)
        except ProbeComplete:
            pass
    seconds = time.perf_counter() - start
    meta = {
        "item": item.id, "case": item.case.name, "model": item.model,
        "precision": item.precision, "resolution": str(item.resolution),
        "params": item.case.generation_params(), "variant": variant,
        "device": str(runner.device), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "diffusers": diffusers.__version__,
        "denoiser": next((n for n, (_m, r) in probe.components.items() if r == "denoiser"),
                         None),
    }
    return ProbedRun(probe.result(meta), generation, dict(probe.captures),
                     dict(probe.capture_problems), seconds, probe.seconds)


# -- localisation -----------------------------------------------------------------------------


def relative_error(a: TensorStats | None, b: TensorStats | None) -> float | None:
    """``|b - a| / |a|`` estimated from the projections (0 for equal bits); ``None`` where
    the tensors cannot be compared (missing, other shapes)."""
    if a is None or b is None or a.shape != b.shape:
        return None
    if a.digest == b.digest:
        return 0.0
    if not (a.finite and b.finite):
        return math.inf
    na = _norm(a.proj)
    nd = _norm([x - y for x, y in zip(a.proj, b.proj, strict=True)])
    if nd > 0 and na > 0:
        return nd / na
    # below the projection's resolution (or an all-zero tensor): the moments, as a floor
    scale = max(math.sqrt(a.mean**2 + a.std**2), a.absmax)
    moved = max(abs(a.mean - b.mean), abs(a.std - b.std), abs(a.absmax - b.absmax))
    if scale > 0:
        return moved / scale
    return math.inf if moved > 0 or nd > 0 else 0.0


def _norm(values: Sequence[float]) -> float:
    return math.sqrt(sum(x * x for x in values))


def cosine_similarity(a: TensorStats | None, b: TensorStats | None) -> float | None:
    """Cosine of the two tensors, estimated from their projections (1 for equal bits)."""
    if a is None or b is None or a.shape != b.shape:
        return None
    if a.digest == b.digest:
        return 1.0
    if not (a.finite and b.finite):
        return None
    na, nb = _norm(a.proj), _norm(b.proj)
    if na == 0 or nb == 0:
        return None
    return sum(x * y for x, y in zip(a.proj, b.proj, strict=True)) / (na * nb)


#: growth above this: the module amplifies the difference it was given; below its inverse:
#: it attenuates it
GROWTH_AMPLIFIES = 2.0


@dataclass(frozen=True)
class ModuleComparison:
    """One module call compared between run A and run B."""

    section: str
    name: str
    cls: str
    role: str
    output_equal: bool
    input_equal: bool | None
    out_rel: float | None
    in_rel: float | None
    #: out_rel / in_rel; None where the input was bit-identical (growth without bound) or
    #: the errors cannot be estimated
    growth: float | None
    cosine: float | None

    @property
    def step(self) -> int | None:
        return section_step(self.section)

    def to_dict(self) -> dict[str, Any]:
        return {**json_fields(self), "step": self.step}

    def describe(self) -> str:
        def g(v: float | None) -> str:
            return "-" if v is None else f"{v:.3g}"

        if self.input_equal:
            rel = f"out err {g(self.out_rel)}, input identical"
        else:
            rel = f"growth {g(self.growth)} (out err {g(self.out_rel)} / in err {g(self.in_rel)})"
        return f"{self.role:<10} {self.name} ({self.cls}) at {section_label(self.section)}: {rel}"


@dataclass(frozen=True)
class Localization:
    """Where run B first parts from run A, and which modules grow the difference."""

    divergent: bool
    #: the innermost module whose own computation first gives different bits
    first_divergent_module: str | None
    first_divergent_class: str | None
    section: str | None
    input_identical: bool | None
    #: "leaf": inside a module without submodule calls before the difference;
    #: "own-code": in the module's own code between its submodule calls (e.g. the
    #: attention product of an Attention module); "outside-probes": the module's input
    #: already differed (pipeline code or an unprobed step); "structure": the runs call
    #: different modules
    origin: str | None
    #: the submodule call just before / after the difference, for "own-code"
    after: str | None
    before: str | None
    #: the first record, in order of return, whose output bits differ
    first_output_divergence: str | None
    ranking: tuple[ModuleComparison, ...]
    compared: int
    divergent_count: int
    unmatched_a: tuple[str, ...]
    unmatched_b: tuple[str, ...]
    message: str

    @property
    def step(self) -> int | None:
        return section_step(self.section) if self.section else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "divergent": self.divergent,
            "first_divergent_module": self.first_divergent_module,
            "first_divergent_class": self.first_divergent_class,
            "section": self.section,
            "step": self.step,
            "input_identical": self.input_identical,
            "origin": self.origin,
            "after": self.after,
            "before": self.before,
            "first_output_divergence": self.first_output_divergence,
            "ranking": [c.to_dict() for c in self.ranking],
            "compared": self.compared,
            "divergent_count": self.divergent_count,
            "unmatched_a": list(self.unmatched_a),
            "unmatched_b": list(self.unmatched_b),
            "message": self.message,
        }

    def report(self) -> list[str]:
        lines = [self.message]
        if self.ranking:
            lines.append("modules by error growth (causes first):")
            lines += [f"  {i + 1:>2}. {c.describe()}" for i, c in enumerate(self.ranking)]
        if self.unmatched_a or self.unmatched_b:
            lines.append(f"unmatched: {len(self.unmatched_a)} calls only in A, "
                         f"{len(self.unmatched_b)} only in B")
        return lines


def _as_sections(records: ProbeRecords | Iterable[Section]) -> tuple[Section, ...]:
    if isinstance(records, ProbeRecords):
        return records.sections
    return tuple(records)


def call_tree(records: Sequence[ModuleRecord]) -> tuple[dict[str, str | None], dict[str, list]]:
    """Parent and direct children (in call order) of every call, from the event spans."""
    parent: dict[str, str | None] = {}
    children: dict[str, list[ModuleRecord]] = {r.name: [] for r in records}
    stack: list[ModuleRecord] = []
    for r in sorted(records, key=lambda r: r.t0):
        while stack and stack[-1].t1 < r.t0:
            stack.pop()
        parent[r.name] = stack[-1].name if stack else None
        if stack:
            children[stack[-1].name].append(r)
        stack.append(r)
    return parent, children


def _relative(child: str, parent: str) -> str:
    return child[len(parent) + 1:] if child.startswith(parent + ".") else child


def localize(
    a: ProbeRecords | Iterable[Section],
    b: ProbeRecords | Iterable[Section],
    top: int = 10,
) -> Localization:
    """Compare the records of run A and run B (see :class:`Localization`)."""
    if isinstance(a, ProbeRecords) and isinstance(b, ProbeRecords) and \
            a.projection != b.projection:
        raise ProbeFileError(
            "B", f"projection {to_builtins(b.projection)} differs from A's "
            f"{to_builtins(a.projection)}: the "
            "projections cannot be compared (equal bits still can: probe again with one "
            "projection)"
        )
    sections_a = _as_sections(a)
    sections_b = {s.name: s for s in _as_sections(b)}
    comparisons: list[ModuleComparison] = []
    unmatched_a: list[str] = []
    unmatched_b: list[str] = []
    first: tuple[str, str, ModuleRecord, ModuleRecord | None] | None = None
    first_tree: tuple[dict[str, str | None], dict[str, list]] = ({}, {})
    first_output: str | None = None
    names_a = {s.name for s in sections_a}
    for sb in sections_b.values():
        if sb.name not in names_a:
            unmatched_b += [f"{sb.name}/{r.name}" for r in sb.records]

    for sa in sections_a:
        sb = sections_b.get(sa.name)
        if sb is None:  # a phase B did not probe: nothing to compare
            unmatched_a += [f"{sa.name}/{r.name}" for r in sa.records]
            continue
        by_b = {r.name: r for r in sb.records}
        names = {r.name for r in sa.records}
        unmatched_b += [f"{sa.name}/{r.name}" for r in sb.records if r.name not in names]
        parent, children = call_tree(sa.records)

        def out_eq(r: ModuleRecord, by_b: dict = by_b) -> bool:
            other = by_b.get(r.name)
            return other is not None and other.out_all == r.out_all

        def in_eq(r: ModuleRecord, by_b: dict = by_b) -> bool:
            other = by_b.get(r.name)
            return other is not None and other.in_all == r.in_all

        # the first event (call or return) whose tensors differ
        if first is None:
            events = sorted([(r.t0, 0, r) for r in sa.records] +
                            [(r.t1, 1, r) for r in sa.records], key=lambda e: e[0])
            for _t, kind, r in events:
                if kind == 0 and not in_eq(r):
                    first = (sa.name, "start", r, by_b.get(r.name))
                    break
                if kind == 1 and not out_eq(r):
                    first = (sa.name, "end", r, by_b.get(r.name))
                    break
            if first is not None:
                first_tree = (parent, children)

        for r in sa.records:
            rb = by_b.get(r.name)
            if rb is None:
                unmatched_a.append(f"{sa.name}/{r.name}")
                comparisons.append(ModuleComparison(sa.name, r.name, r.cls, "not-comparable",
                                                    False, None, None, None, None, None))
                continue
            oeq, ieq = rb.out_all == r.out_all, rb.in_all == r.in_all
            if not oeq and first_output is None:
                first_output = f"{sa.name}/{r.name}"
            out_rel = 0.0 if oeq else relative_error(r.out, rb.out)
            in_rel = 0.0 if ieq else relative_error(r.inp, rb.inp)
            cos = 1.0 if oeq else cosine_similarity(r.out, rb.out)
            growth = None
            if ieq:
                own = _own_cause(r, children[r.name], in_eq, out_eq)
                role = "cause" if own else ("identical" if oeq else "contains-cause")
            elif oeq:
                role = "absorbs"
            elif out_rel is None:
                role = "not-comparable"
            else:
                if in_rel and in_rel > 0 and math.isfinite(in_rel):
                    growth = out_rel / in_rel
                if growth is None:
                    role = "carries"
                elif growth > GROWTH_AMPLIFIES:
                    role = "amplifies"
                elif growth < 1 / GROWTH_AMPLIFIES:
                    role = "attenuates"
                else:
                    role = "carries"
            comparisons.append(ModuleComparison(sa.name, r.name, r.cls, role, oeq, ieq,
                                                out_rel, in_rel, growth, cos))

    compared = sum(1 for c in comparisons if c.role != "not-comparable")
    divergent_count = sum(1 for c in comparisons if not c.output_equal)
    causes = [c for c in comparisons if c.role == "cause"]
    growing = sorted(
        (c for c in comparisons if c.role in ("amplifies", "carries", "attenuates")),
        key=lambda c: -(c.growth if c.growth is not None and math.isfinite(c.growth)
                        else 0.0),
    )
    ranking = tuple((causes + growing)[: max(top, 0)])

    if first is None:
        message = (f"no divergent module: the {compared} probed module calls are bit-identical"
                   " in A and B")
        if unmatched_a or unmatched_b:
            message += (f" ({len(unmatched_a)} calls only in A, {len(unmatched_b)} only in B "
                        "were not compared)")
        return Localization(False, None, None, None, None, None, None, None, None, ranking,
                            compared, divergent_count, tuple(unmatched_a), tuple(unmatched_b),
                            message)

    section, kind, rec, rec_b = first
    parent, children = first_tree
    where = section_label(section)
    after = before = None
    if rec_b is None:
        origin = "structure"
        host = parent.get(rec.name)
        culprit = host or rec.name
        cls = _class_of(sections_a, section, culprit)
        message = (f"the runs call different modules: {rec.name} runs at {where} in A but "
                   f"not in B; first divergent module: {culprit} ({cls})")
        input_identical = host is not None
    elif kind == "start" and parent.get(rec.name) is None:
        origin = "outside-probes"
        culprit, cls, input_identical = rec.name, rec.cls, False
        message = (f"first divergent module: {culprit} ({cls}) at {where}: its input already "
                   "differs, so the difference arose before it, outside the probed modules "
                   "(pipeline code, the scheduler or an earlier step that was not probed)")
    else:
        if kind == "start":
            culprit = parent[rec.name] or rec.name
            before = _relative(rec.name, culprit)
            done = [c for c in children[culprit] if c.t1 < rec.t0]
        else:
            culprit = rec.name
            done = children[culprit]
        if done:
            after = _relative(done[-1].name, culprit)
        origin = "own-code" if (done or before) else "leaf"
        cls = _class_of(sections_a, section, culprit)
        input_identical = True
        message = (f"first divergent module: {culprit} ({cls}) at {where}, input identical: "
                   "this module computes differently")
        if origin == "own-code":
            if after and before:
                message += f" (in its own code, between its submodules {after} and {before})"
            elif before:
                message += f" (in its own code, before its submodule {before})"
            else:
                message += f" (in its own code, after its submodule {after})"
    return Localization(True, culprit, cls, section, input_identical, origin, after, before,
                        first_output, ranking, compared, divergent_count, tuple(unmatched_a),
                        tuple(unmatched_b), message)


def _class_of(sections: Sequence[Section], section: str, name: str) -> str:
    for s in sections:
        if s.name == section:
            for r in s.records:
                if r.name == name:
                    return r.cls
    return "?"


def _own_cause(r: ModuleRecord, kids: Sequence[ModuleRecord], in_eq: Any, out_eq: Any) -> bool:
    """Whether ``r`` (input identical) itself makes a difference: a submodule gets a
    different input while every earlier submodule returned equal bits, or ``r`` returns
    different bits although all its submodules returned equal ones."""
    for kid in kids:
        if not in_eq(kid):
            return True
        if not out_eq(kid):
            return False
    return not out_eq(r)
