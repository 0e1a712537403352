"""What a model is, before any model is registered: :class:`ModelSpec` and its
:class:`~conformance.models.families.Family` (re-exported here),
bounded config reading (:func:`load_config`, :func:`check_config`), shard indexes and the
shipped fixtures' checksums. :mod:`conformance.models.specs` declares the built-in models on
these and :mod:`conformance.models` registers them (``MODELS``); nothing here imports either,
so the three import in one direction.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance import PROJECT_ROOT
from conformance.errors import ConformanceInputError, type_name
from conformance.models.families import Family
from conformance.safeio import (
    CHECKSUMS_LIMIT,
    CONFIG_LIMIT,
    SHARD_INDEX_LIMIT,
    is_within,
    load_json_object,
    show,
)

FIXTURES_ENV = "CONFORMANCE_FIXTURES"
CHECKSUMS_FILE = "checksums.json"


class FixtureIntegrityError(ConformanceInputError):
    """A shipped fixture differs from ``fixtures/checksums.json``."""


class ModelUnavailable(Exception):
    """The weights of a model are not on this machine (its items are skipped, not failed).

    The message says where the suite looked and how to get the weights.
    """


@dataclass(frozen=True)
class ModelSpec:
    """A model the suite can run: a name, a family and where its weights are.

    Built-in models and the ``[models.NAME]`` tables of case files are both parsed into
    this type by :func:`conformance.models.specs.parse_model`.
    """

    name: str
    family: Family
    fixture: str | None
    resolution_multiple: int
    min_side: int
    max_side: int
    description: str
    #: for real checkpoints: the name in ``conformance.models.sources.REAL_MODELS``
    real: str | None = None
    #: where the weights are, as declared (a ``conformance.models.specs.ModelSource``)
    source: Any = None
    #: the diffusers pipeline class name
    pipeline: str | None = None
    #: a VAE folder that replaces the pipeline's own
    vae: Path | None = None
    #: a folder with ``scheduler_config.json``: the base config of every case's scheduler
    scheduler_config: Path | None = None
    #: the scheduler of cases of this model that name none
    default_scheduler: str | None = None
    #: the case file that declared the model (``None``: a built-in)
    declared_in: Path | None = None

    @property
    def builtin(self) -> bool:
        return self.declared_in is None

    def path(self, fixtures_dir: Path | None = None) -> Path:
        """The pipeline directory (``from_pretrained`` layout) of a tiny model, or of a
        declared model whose source is a directory."""
        if self.fixture is not None:
            return (fixtures_dir or default_fixtures_dir()) / self.fixture
        if self.source is not None and self.source.kind.value == "directory":
            return Path(self.source.path)
        raise ValueError(f"{self.name} is not a local pipeline directory (its weights are "
                         "a real checkpoint, a single file, a GGUF file or in the cache)")

    def verified_path(self, fixtures_dir: Path | None = None) -> Path:
        """:meth:`path`, checked before anything is loaded from it.

        Every model folder gets the same bounds, whichever way it was named (the shipped
        fixtures, ``$CONFORMANCE_FIXTURES``, a ``fixtures_dir`` argument, a case file's
        folder): its ``checksums.json`` where there is one (once per process, see
        :func:`verify_fixture_once`), then the size bounds of every ``config.json`` and
        ``scheduler_config.json`` (:func:`check_config`), shard indexes and no pickle-only
        weights (:func:`conformance.models.sources.check_model_folder`). A directory
        without ``model_index.json`` has its component folders checked and is returned
        (the caller reports the model as unavailable).
        """
        from conformance.models.sources import check_model_folder

        path = self.path(fixtures_dir)
        if (path / "model_index.json").is_file():
            verify_fixture_once(path)
        check_model_folder(path, f"model {self.name} {path}")
        return path

    def check_resolution(self, width: int, height: int) -> str | None:
        """Why this model cannot take ``width`` x ``height``, or ``None`` if it can."""
        for side_name, side in (("width", width), ("height", height)):
            if side % self.resolution_multiple:
                return (
                    f"{side_name} {side} is not a multiple of {self.resolution_multiple}, "
                    f"which {self.name} requires"
                )
            if not self.min_side <= side <= self.max_side:
                return (
                    f"{side_name} {side} is outside {self.min_side}..{self.max_side}, "
                    f"the range {self.name} accepts"
                )
        return None


def dtype_keyword() -> str:
    """The ``from_pretrained`` keyword for the dtype: ``dtype`` in diffusers 0.42+, where
    ``torch_dtype`` is deprecated; ``torch_dtype`` before."""
    from importlib.metadata import version

    major, minor = (int(p) for p in version("diffusers").split(".")[:2])
    return "dtype" if (major, minor) >= (0, 42) else "torch_dtype"


def read_json_object(
    path: Path, kind: str = "JSON file", limit: int = CONFIG_LIMIT
) -> dict[str, Any]:
    """A JSON file that must hold an object; bad input is an error naming the file."""
    return load_json_object(path, kind, limit)


# -- model configs ---------------------------------------------------------------------------
#
# Bounds on the sizes a model config.json may ask for, checked before anything is built from
# it (a config is code-free but can still ask for a model no machine holds). They are
# generous for real models: SDXL's UNet (block_out_channels 320/640/1280, 10 transformer
# layers per block, cross_attention_dim 2048), FLUX.1 (19 + 38 layers, 24 heads of 128,
# joint_attention_dim 4096), T5-XXL (d_model 4096, d_ff 10240, 24 layers, vocab 32128),
# CLIP-G (hidden 1280, 32 layers, vocab 49408) and tokenizers up to 256k entries all fit with
# room; a value beyond them is a corrupt or hostile file.
_CONFIG_BOUNDS: dict[str, tuple[int, int]] = {
    "layers_per_block": (1, 16),
    "transformer_layers_per_block": (1, 64),
    "num_layers": (0, 256),
    "num_single_layers": (0, 256),
    "num_hidden_layers": (1, 256),
    "num_decoder_layers": (0, 256),
    "num_train_timesteps": (1, 100_000),
    "vocab_size": (1, 300_000),
    "max_position_embeddings": (1, 131_072),
    "block_out_channels": (1, 8192),
    "in_channels": (1, 8192),
    "out_channels": (1, 8192),
    "latent_channels": (1, 1024),
    "cross_attention_dim": (1, 16_384),
    "joint_attention_dim": (1, 16_384),
    "pooled_projection_dim": (1, 16_384),
    "projection_dim": (1, 16_384),
    "hidden_size": (1, 16_384),
    "d_model": (1, 16_384),
    "intermediate_size": (1, 65_536),
    "d_ff": (1, 65_536),
    "d_kv": (1, 1024),
    "attention_head_dim": (1, 1024),
    "num_attention_heads": (1, 1024),
    "num_heads": (1, 1024),
    "num_key_value_heads": (1, 1024),
    "norm_num_groups": (1, 1024),
    "addition_time_embed_dim": (1, 8192),
    "projection_class_embeddings_input_dim": (1, 65_536),
    "sample_size": (1, 8192),
    "image_size": (1, 8192),
    "patch_size": (1, 64),
    "axes_dims_rope": (1, 8192),
}
#: keys that may hold a list (per block, per axis); the most entries each may have
_CONFIG_LISTS = {
    "block_out_channels": 8,
    "layers_per_block": 8,
    "transformer_layers_per_block": 8,
    "attention_head_dim": 8,
    "num_attention_heads": 8,
    "sample_size": 2,
    "axes_dims_rope": 8,
}
#: list-valued keys that hold a list of strings (block types), and their most entries
_CONFIG_NAME_LISTS = {"down_block_types": 8, "up_block_types": 8}


def check_config(config: dict[str, Any], path: Path | str) -> dict[str, Any]:
    """Refuse a model config whose sizes are out of :data:`_CONFIG_BOUNDS`; returns it.

    Nested objects (``text_config`` ...) are checked with the same bounds. The error names
    the file and the key.
    """
    stack: list[tuple[dict[str, Any], str]] = [(config, "")]
    while stack:
        table, prefix = stack.pop()
        for key, value in table.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                stack.append((value, name + "."))
            elif key in _CONFIG_BOUNDS:
                _check_size(value, key, name, path)
            elif key in _CONFIG_NAME_LISTS:
                if not isinstance(value, list) or len(value) > _CONFIG_NAME_LISTS[key] or not all(
                    isinstance(v, str) and len(v) <= 128 for v in value
                ):
                    raise ConformanceInputError(
                        path, f"key {name!r} must be an array of at most "
                        f"{_CONFIG_NAME_LISTS[key]} block type names, not {show(value)}"
                    )
    return config


def _check_size(value: Any, key: str, name: str, path: Path | str) -> None:
    lo, hi = _CONFIG_BOUNDS[key]
    most = _CONFIG_LISTS.get(key)

    def bad(why: str) -> ConformanceInputError:
        shape = f"an integer {lo}..{hi}"
        if most:
            shape += f" or an array of at most {most} of them"
        return ConformanceInputError(path, f"key {name!r}: {why}; accepted: {shape}")

    if value is None and key != "block_out_channels":
        return
    if isinstance(value, list) and most:
        if not value or len(value) > most:
            raise bad(f"an array of {len(value)} entries")
        for item in value:
            # SDXL-style configs nest one level: transformer_layers_per_block per resnet
            items = item if isinstance(item, list) and key == "transformer_layers_per_block" \
                else [item]
            if len(items) > 16:
                raise bad(f"a nested array of {len(items)} entries")
            for v in items:
                if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                    raise bad(f"holds {show(v)}")
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(f"{type_name(value)} {show(value)}")
    if not lo <= value <= hi:
        raise bad(f"{show(value, 30)} is out of range")


def load_config(path: Path, kind: str = "model config") -> dict[str, Any]:
    """A model's ``config.json`` (or ``scheduler_config.json``), read safely and checked
    against the size bounds before anything is built from it."""
    return check_config(read_json_object(path, kind, CONFIG_LIMIT), path)


_SHARD_NAME = re.compile(r"[^/\\\x00:]{1,255}")


def shard_files(index_path: Path, *, blobs: Path | None = None) -> list[Path]:
    """The weight files a ``*.safetensors.index.json`` names, checked.

    Each name must be a ``.safetensors`` file directly in the index's folder: absolute
    paths, ``..``, path separators and symbolic links that lead out of the folder are
    refused (a link into ``blobs``, the Hugging Face cache's blob store, is how the cache
    lays out snapshots and is accepted). Missing files are an error.
    """
    index = read_json_object(index_path, "shard index", SHARD_INDEX_LIMIT)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ConformanceInputError(
            index_path, "shard index: no weight_map (an object of tensor name -> file name)"
        )
    folder = index_path.parent
    names: set[str] = set()
    for tensor, name in weight_map.items():
        if not isinstance(name, str):
            raise ConformanceInputError(
                index_path, f"shard index: weight_map[{show(tensor)}] must be a file name, "
                f"not {type_name(name)}"
            )
        names.add(name)
    files = []
    for name in sorted(names):
        if not _SHARD_NAME.fullmatch(name) or name in (".", "..") or name.startswith(" "):
            raise ConformanceInputError(
                index_path, f"shard index: names {show(name)}; a shard must be a file name "
                f"in {folder} (no path separators, '..' or absolute paths)"
            )
        if not name.endswith(".safetensors"):
            raise ConformanceInputError(
                index_path, f"shard index: names {show(name)}; only .safetensors shards are "
                "loaded (pickled weights run code when loaded)"
            )
        file = folder / name
        if not is_within(file, folder) and not (blobs is not None and is_within(file, blobs)):
            raise ConformanceInputError(
                index_path, f"shard index: {show(name)} is a symbolic link to "
                f"{file.resolve()}, outside {folder}; shards must lie in the model folder"
            )
        if not file.is_file():
            raise ConformanceInputError(
                index_path, f"shard index: shard file {show(name)} is missing"
            )
        files.append(file)
    return files


# -- shipped fixtures ------------------------------------------------------------------------

_VERIFIED: dict[Path, str | None] = {}
_SHA256 = re.compile(r"[0-9a-f]{64}")


def shipped_fixtures_dir() -> Path:
    """The project's own ``fixtures/`` (what ``checksums.json`` there vouches for)."""
    return PROJECT_ROOT / "fixtures"


def _expected_checksums(cfile: Path, name: str) -> dict[str, str] | None:
    data = load_json_object(cfile, "checksum file", CHECKSUMS_LIMIT)
    entry = data.get(name)
    if entry is None:
        return None
    if not isinstance(entry, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and _SHA256.fullmatch(v)
        for k, v in entry.items()
    ):
        raise ConformanceInputError(
            cfile, f"key {name!r} must map relative paths to sha256 hex digests"
        )
    return entry


def verify_fixture_once(path: Path) -> None:
    """Check fixture directory ``path`` against ``checksums.json`` beside it, once per
    process (the result is cached, failures included).

    The shipped ``fixtures/`` must have an entry; a directory elsewhere (a model built with
    ``python -m fixtures.build train``) is checked when its folder has a ``checksums.json``
    listing it.
    Raises :class:`FixtureIntegrityError` naming the first file that is missing, extra
    (a stray pickle, say) or changed.
    """
    from conformance.models.checksums import directory_checksums

    root = Path(path)
    try:
        key = root.resolve()
    except (OSError, RuntimeError):
        key = root
    if key in _VERIFIED:
        problem = _VERIFIED[key]
        if problem is not None:
            raise FixtureIntegrityError(root, problem)
        return
    cfile = root.parent / CHECKSUMS_FILE
    shipped = is_within(root.parent, shipped_fixtures_dir()) and is_within(
        shipped_fixtures_dir(), root.parent
    )
    problem: str | None = None
    if not cfile.is_file():
        if shipped:
            problem = f"no {cfile} to check the shipped fixture against"
    else:
        expected = _expected_checksums(cfile, root.name)
        if expected is None:
            if shipped:
                problem = f"{cfile} has no entry for {root.name!r}"
        else:
            actual = directory_checksums(root)
            bad = [
                *(f"{rel}: missing" for rel in sorted(set(expected) - set(actual))),
                *(f"{rel}: extra file, not in {CHECKSUMS_FILE}"
                  for rel in sorted(set(actual) - set(expected))),
                *(f"{rel}: sha256 {actual[rel][:12]}..., expected {expected[rel][:12]}..."
                  for rel in sorted(set(expected) & set(actual)) if expected[rel] != actual[rel]),
            ]
            if bad:
                more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
                problem = (
                    f"fixture differs from {cfile}: {bad[0]}{more}; restore it (git checkout "
                    f"{root.name}) or rebuild it with python -m fixtures.build train"
                )
    _VERIFIED[key] = problem
    if problem is not None:
        raise FixtureIntegrityError(root, problem)


def default_fixtures_dir() -> Path:
    """``$CONFORMANCE_FIXTURES`` if set, else the project's ``fixtures/``."""
    env = os.environ.get(FIXTURES_ENV)
    return Path(env) if env else PROJECT_ROOT / "fixtures"
