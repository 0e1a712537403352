"""``quantize`` sub-command: convert a diffusers model to a GGUF file.

Usage::

    quantize SRC --type TYPE --out FILE.gguf [--layout {diffusers,original}] [--force]

``SRC`` is a diffusers model directory (``config.json`` plus ``*.safetensors``)
or a single ``.safetensors`` file. The model class named by ``_class_name`` in
``config.json`` is instantiated without memory (meta tensors) to learn which
weights belong to ``nn.Linear`` modules; only those are block-quantized.

``--layout diffusers`` (the default) writes diffusers' state-dict names; ``--layout
original`` writes the original checkpoint's names, as the Flux and Stable Diffusion GGUF
files people download carry them (see :mod:`conformance.quant.layout`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.errors import ConformanceInputError
from conformance.models import load_config, shard_files
from conformance.safeio import regular_file_problem, show
from conformance.schema import text_problem

from .layout import DEFAULT_LAYOUT, LAYOUTS, ORIGINAL_CLASSES, LayoutError, original_plan
from .loading import supports_single_file
from .recipes import RECIPE_NAMES, Recipe, get_recipe

__all__ = ["CommandError", "Source", "register", "resolve_source", "run_quantize"]

PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"})
_ACCEPTED_SRC = "a diffusers model directory (config.json + *.safetensors) or a .safetensors file"
_MAIN_WEIGHTS = "diffusion_pytorch_model.safetensors"
_INDEX = "diffusion_pytorch_model.safetensors.index.json"


class CommandError(Exception):
    """A user error reported as one line on stderr with exit status 2."""


@dataclass
class Source:
    """Resolved input of the quantize command."""

    path: Path
    weight_files: list[Path]
    config_path: Path | None = None
    config: dict[str, Any] | None = None
    linear_names: set[str] | None = None
    model_keys: set[str] | None = field(default=None, repr=False)
    single_file: bool = True

    @property
    def class_name(self) -> str | None:
        """``_class_name`` from config.json, if any."""
        return None if self.config is None else self.config.get("_class_name")


def register(subparsers: Any) -> None:
    """Add the ``quantize`` sub-command to an argparse ``subparsers`` object."""
    parser = subparsers.add_parser(
        "quantize",
        help="quantize a diffusers model to a GGUF file",
        description=(
            "Quantize a diffusers model (directory with config.json and *.safetensors, or a "
            "single .safetensors file) into a GGUF file loadable with "
            "<Model>.from_single_file(..., quantization_config=GGUFQuantizationConfig(...))."
        ),
    )
    parser.add_argument("src", metavar="SRC", help=f"{_ACCEPTED_SRC}")
    parser.add_argument(
        "--type",
        dest="qtype",
        metavar="TYPE",
        required=True,
        help=f"quantization recipe: {', '.join(RECIPE_NAMES)}",
    )
    parser.add_argument("--out", metavar="FILE.gguf", required=True, help="output GGUF file")
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default=DEFAULT_LAYOUT,
        help=(
            "tensor names in the file: 'diffusers' (diffusers' state-dict names, the default) "
            "or 'original' (the original checkpoint's names, as downloaded Flux and SD 1.x "
            f"GGUF files carry them; for {', '.join(ORIGINAL_CLASSES)})"
        ),
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    parser.set_defaults(func=run_quantize)


def _load_config(path: Path) -> dict[str, Any]:
    """config.json, read safely and checked against the model size bounds."""
    try:
        return load_config(path)
    except ConformanceInputError as exc:
        message = exc.message.removeprefix("model config: ").removeprefix("model config ")
        raise CommandError(f"{exc.where}: cannot read config.json: {message}") from None


def _directory_weights(root: Path) -> list[Path]:
    index = root / _INDEX
    if index.is_file():
        try:
            return shard_files(index)
        except ConformanceInputError as exc:
            raise CommandError(str(exc)) from None
    if (root / _MAIN_WEIGHTS).is_file():
        return [root / _MAIN_WEIGHTS]
    found = sorted(root.glob("*.safetensors"))
    if len(found) == 1:
        return found
    if len(found) > 1:
        names = ", ".join(f.name for f in found)
        raise CommandError(
            f"SRC {root}: several .safetensors files ({names}) and no {_INDEX}; "
            "pass one .safetensors file instead"
        )
    pickled = sorted(f.name for f in root.iterdir() if f.suffix.lower() in PICKLE_SUFFIXES)
    if pickled:
        raise CommandError(
            f"SRC {root}: only pickled weights ({', '.join(pickled)}); pickle files are "
            "rejected, convert them to .safetensors"
        )
    raise CommandError(f"SRC {root}: no *.safetensors weights; expected {_ACCEPTED_SRC}")


def _check_safetensors(path: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt"):
            pass
    except Exception as exc:  # safetensors raises its own error types
        raise CommandError(f"SRC {path}: not a readable .safetensors file ({exc})") from None


def resolve_source(src: str) -> Source:
    """Validate ``SRC`` and locate its weights and config.

    Raises :class:`CommandError` for a missing path, a directory without
    ``config.json``, pickled weights or an unsupported file type.
    """
    problem = text_problem(src, "the path", 4096, empty=False)
    if problem:
        raise CommandError(f"SRC {show(src)}: {problem}")
    path = Path(src)
    if not path.exists():
        raise CommandError(f"SRC {src}: no such file or directory; expected {_ACCEPTED_SRC}")
    if path.is_dir():
        config_path = path / "config.json"
        if not config_path.is_file():
            hint = ""
            if (path / "model_index.json").is_file():
                hint = " (this is a pipeline; pass a component folder such as unet/)"
            raise CommandError(f"SRC {src}: no config.json{hint}; expected {_ACCEPTED_SRC}")
        source = Source(path, _directory_weights(path), config_path, _load_config(config_path))
        if not source.class_name:
            raise CommandError(f"{config_path}: no _class_name; is this a diffusers model config?")
    else:
        suffix = path.suffix.lower()
        if suffix in PICKLE_SUFFIXES:
            raise CommandError(
                f"SRC {src}: pickled weights ({suffix}) are rejected; expected {_ACCEPTED_SRC}"
            )
        if suffix != ".safetensors":
            raise CommandError(
                f"SRC {src}: unsupported file type {suffix!r}; expected {_ACCEPTED_SRC}"
            )
        problem = regular_file_problem(path)
        if problem:
            raise CommandError(f"SRC {src}: {problem}; expected {_ACCEPTED_SRC}")
        sibling = path.parent / "config.json"
        config = _load_config(sibling) if sibling.is_file() else None
        source = Source(path, [path], sibling if config else None, config)
    for f in source.weight_files:
        _check_safetensors(f)
    return source


def _instantiate_linear_names(source: Source) -> None:
    """Build the model on the meta device and record its Linear weights and keys."""
    if source.config is None or not source.class_name:
        return
    import diffusers
    import torch
    from accelerate import init_empty_weights

    cls = getattr(diffusers, str(source.class_name), None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.ModelMixin)):
        raise CommandError(
            f"{source.config_path}: _class_name {source.class_name!r} "
            "is not a diffusers model class"
        )
    try:
        with init_empty_weights():
            model = cls.from_config(source.config)
    except Exception as exc:  # config errors surface as many exception types
        raise CommandError(
            f"{source.config_path}: cannot build {source.class_name} from it ({exc})"
        ) from None
    source.linear_names = {
        f"{name}.weight"
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    }
    source.model_keys = set(model.state_dict().keys())
    source.single_file = supports_single_file(cls)


def _iter_source_tensors(source: Source) -> Iterator[tuple[str, Any]]:
    from safetensors import safe_open

    seen: set[str] = set()
    for file in source.weight_files:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                if key in seen:
                    raise CommandError(f"SRC {file}: tensor {key!r} appears in more than one shard")
                seen.add(key)
                yield key, handle.get_tensor(key)


@contextmanager
def _tensor_getter(source: Source) -> Iterator[Callable[[str], Any]]:
    """A function returning one source tensor by name, the files held open meanwhile."""
    from safetensors import safe_open

    with ExitStack() as stack:
        where: dict[str, Any] = {}
        for file in source.weight_files:
            handle = stack.enter_context(safe_open(str(file), framework="pt"))
            for key in handle.keys():
                if key in where:
                    raise CommandError(f"SRC {file}: tensor {key!r} appears in more than one shard")
                where[key] = handle
        yield lambda key: where[key].get_tensor(key)


def _source_keys(source: Source) -> set[str]:
    from safetensors import safe_open

    keys: set[str] = set()
    for file in source.weight_files:
        with safe_open(str(file), framework="pt") as handle:
            keys.update(handle.keys())
    return keys


def _resolve_output(out: str, force: bool) -> Path:
    """Check ``--out`` before any work: a writable ``.gguf`` path in an existing folder."""
    problem = text_problem(out, "the path", 4096, empty=False)
    if problem:
        raise CommandError(f"--out {show(out)}: {problem}")
    path = Path(out)
    if path.suffix.lower() != ".gguf":
        raise CommandError(f"--out {out}: must end with .gguf (diffusers detects GGUF by suffix)")
    if path.is_dir():
        raise CommandError(f"--out {out}: is a directory; expected a FILE.gguf path")
    if path.exists():
        problem = regular_file_problem(path)
        if problem:
            raise CommandError(f"--out {out}: {problem}; expected a FILE.gguf path")
        if not force:
            raise CommandError(f"--out {out}: already exists; pass --force to overwrite")
    if not path.parent.is_dir():
        raise CommandError(f"--out {out}: directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise CommandError(f"--out {out}: directory {path.parent} is not writable")
    return path


def _format_summary(tensors: list[Any], recipe: Recipe, out: Path, extra: str = "") -> str:
    rows: dict[str, list[int]] = {}
    for t in tensors:
        row = rows.setdefault(t.qtype.name, [0, 0, 0])
        row[0] += 1
        row[1] += t.n_weights
        row[2] += t.nbytes
    total = [sum(r[i] for r in rows.values()) for i in range(3)]
    lines = [
        f"wrote {out} (recipe {recipe.name}: {recipe.description}{extra})",
        f"{'type':<6} {'tensors':>8} {'weights':>14} {'bytes':>14} {'bits/weight':>12}",
    ]
    order = sorted(rows.items(), key=lambda kv: -kv[1][2])
    for name, (count, weights, nbytes) in [*order, ("total", total)]:
        bpw = 8.0 * nbytes / weights if weights else 0.0
        lines.append(f"{name:<6} {count:>8} {weights:>14,} {nbytes:>14,} {bpw:>12.3f}")
    return "\n".join(lines)


def _quantize_original(source: Source, recipe: Recipe, src: str) -> list[Any]:
    """Quantize ``source`` into the original checkpoint layout (``--layout original``)."""
    from .layout import quantize_original

    if source.config is None or source.model_keys is None:
        raise CommandError(
            f"SRC {src}: --layout original needs the model's config.json next to the "
            "weights (its class and block structure fix the original names)"
        )
    class_name = str(source.class_name)
    if class_name not in ORIGINAL_CLASSES:
        raise CommandError(
            f"--layout original: no original layout is known for {class_name}; "
            f"it exists for {', '.join(ORIGINAL_CLASSES)}"
        )
    file_keys = _source_keys(source)
    if file_keys != source.model_keys:
        odd = sorted(file_keys ^ source.model_keys)
        raise CommandError(
            f"SRC {src}: --layout original needs exactly {class_name}'s state-dict names; "
            f"{len(odd)} differ (e.g. {odd[0]!r})"
        )
    try:
        plan = original_plan(class_name, source.config, sorted(file_keys))
        with _tensor_getter(source) as get_tensor:
            return quantize_original(plan, get_tensor, recipe, linear_names=source.linear_names)
    except LayoutError as exc:
        raise CommandError(f"SRC {src}: {exc}") from None
    except ValueError as exc:
        raise CommandError(f"SRC {src}: {exc}") from None


@dataclass(frozen=True)
class Quantized:
    """What :func:`quantize_model` wrote: the file, the recipe and the tensors (with their
    GGML types), and notes on how the input was read."""

    path: Path
    recipe: Recipe
    tensors: list[Any]
    notes: tuple[str, ...] = ()
    extra: str = ""

    def summary(self) -> str:
        """The table ``conformance quantize`` prints: tensors, weights and bytes per type."""
        return _format_summary(self.tensors, self.recipe, self.path, self.extra)


def quantize_model(src: str | Path, recipe: str, out: str | Path, *, force: bool = False,
                   layout: str = DEFAULT_LAYOUT) -> Quantized:
    """Quantize the model at ``src`` (a diffusers model folder with ``config.json`` and
    safetensors weights, or one ``.safetensors`` file) with ``recipe`` (one of
    :data:`~conformance.quant.recipes.RECIPE_NAMES`) into the GGUF file ``out`` (written
    atomically; an existing file is replaced only with ``force``). ``layout`` ``diffusers``
    keeps the model's own tensor names; ``original`` writes the original checkpoint layout.

    Bad input raises :class:`CommandError` naming the argument; a file that cannot be
    written raises ``OSError`` (the temporary file is removed)."""
    from .gguf_io import DEFAULT_ARCH, write_gguf
    from .layout import architecture

    src, out = str(src), str(out)
    if layout not in LAYOUTS:
        raise CommandError(
            f"--layout {show(layout)}: unknown layout; accepted: {', '.join(LAYOUTS)}")
    try:
        chosen = get_recipe(recipe)
    except KeyError:
        raise CommandError(
            f"--type {recipe}: unknown type; accepted: {', '.join(RECIPE_NAMES)}") from None
    path = _resolve_output(out, force)
    source = resolve_source(src)
    _instantiate_linear_names(source)
    name = source.path.stem if source.path.is_file() else source.path.name
    notes: list[str] = []
    if layout == "original":
        tensors = _quantize_original(source, chosen, src)
        arch = architecture(str(source.class_name))
        metadata: dict[str, Any] = {"general.name": name, "conformance.recipe": chosen.name}
        extra = f"; original layout, general.architecture {arch}"
    else:
        tensors, metadata = _quantize_diffusers(source, chosen, src, name, notes)
        arch, extra = DEFAULT_ARCH, ""
    if not tensors:
        raise CommandError(f"SRC {src}: holds no tensors")
    try:
        write_gguf(path, tensors, arch=arch, file_type=chosen.file_type, metadata=metadata)
    except ValueError as exc:  # the written file did not read back: nothing was kept
        raise CommandError(f"--out {out}: {exc}") from None
    return Quantized(path, chosen, tensors, tuple(notes), extra)


def run_quantize(args: argparse.Namespace) -> int:
    """Entry point of the sub-command (:func:`quantize_model`); the exit status."""
    try:
        done = quantize_model(args.src, args.qtype, args.out, force=args.force,
                              layout=getattr(args, "layout", DEFAULT_LAYOUT))
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # a full disk or a folder that went read-only: the temporary file is removed
        print(f"error: --out {args.out}: cannot write: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    print(done.summary())
    for note in done.notes:
        print(note, file=sys.stderr)
    return 0


def _quantize_diffusers(
    source: Source, recipe: Recipe, src: str, name: str, notes: list[str]
) -> tuple[list[Any], dict[str, Any]]:
    """Quantize ``source`` under its own (diffusers) names; ``notes`` gets the warnings."""
    from .gguf_io import DEFAULT_ARCH, quantize_state_dict

    if source.linear_names is None:
        notes.append(
            f"note: no config.json next to {source.path}; "
            "every 2-D *.weight tensor was treated as an nn.Linear weight"
        )
    if not source.single_file:
        notes.append(
            f"warning: diffusers cannot load {source.class_name} with from_single_file, "
            "so it cannot load this GGUF file"
        )
    if source.model_keys is not None:
        file_keys = _source_keys(source)
        if file_keys != source.model_keys:
            diff = len(file_keys ^ source.model_keys)
            notes.append(
                f"warning: {diff} tensor names differ from {source.class_name}'s state dict; "
                "diffusers will try to convert keys when loading, and the suite's loader "
                "(conformance.quant.loading) refuses the file as neither layout"
            )
    try:
        tensors = quantize_state_dict(
            _iter_source_tensors(source), recipe, linear_names=source.linear_names
        )
    except ValueError as exc:
        raise CommandError(f"SRC {src}: {exc}") from None
    metadata: dict[str, Any] = {
        "general.name": name,
        f"{DEFAULT_ARCH}.recipe": recipe.name,
    }
    if source.config is not None:
        metadata[f"{DEFAULT_ARCH}.class_name"] = str(source.class_name or "")
        metadata[f"{DEFAULT_ARCH}.config"] = json.dumps(source.config, sort_keys=True)
    return tensors, metadata
