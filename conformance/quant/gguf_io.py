"""Writing diffusers state dicts as GGUF files and reading them back.

Tensors are written under the names they are given: the diffusers state-dict names (then
``<Model>.from_single_file(path, quantization_config=GGUFQuantizationConfig(...),
config=...)`` skips its key conversion) or the original checkpoint's names chosen by
:mod:`conformance.quant.layout`. Quantized tensors are stored as raw
GGML blocks (``raw_dtype`` set to their GGML type); F16/F32 tensors as plain
arrays.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT

from conformance.safeio import new_file_mode

from . import ggml
from .recipes import Decision, Recipe, choose_type, get_recipe

__all__ = [
    "DEFAULT_ARCH",
    "GGUFTensor",
    "QuantizedTensor",
    "decide_tensor",
    "load_dequantized",
    "quantize_state_dict",
    "quantize_tensor",
    "read_gguf",
    "read_metadata",
    "save_state_dict_gguf",
    "to_numpy",
    "write_gguf",
]

DEFAULT_ARCH = "diffusers"
_INT_TYPES: dict[np.dtype[Any], QT] = {
    np.dtype(np.int8): QT.I8,
    np.dtype(np.int16): QT.I16,
    np.dtype(np.int32): QT.I32,
    np.dtype(np.int64): QT.I64,
}


@dataclass
class QuantizedTensor:
    """One tensor ready to be written: logical shape, GGML type and raw data."""

    name: str
    qtype: QT
    shape: tuple[int, ...]
    data: np.ndarray
    reason: str = ""

    @property
    def nbytes(self) -> int:
        """Bytes this tensor occupies in the file (without alignment padding)."""
        return int(self.data.nbytes)

    @property
    def n_weights(self) -> int:
        """Number of logical elements."""
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


@dataclass
class GGUFTensor:
    """A tensor as read back from a GGUF file."""

    name: str
    qtype: QT
    shape: tuple[int, ...]
    data: np.ndarray = field(repr=False)

    def dequantize(self) -> np.ndarray:
        """Decode to float32 (integers are returned unchanged)."""
        if self.qtype in _INT_TYPES.values():
            return np.asarray(self.data)
        return ggml.dequantize(self.data, self.qtype).reshape(self.shape)


def to_numpy(tensor: Any) -> np.ndarray:
    """Convert a numpy array or torch tensor to numpy (bfloat16 becomes float32)."""
    if isinstance(tensor, np.ndarray):
        return tensor
    if hasattr(tensor, "detach"):
        t = tensor.detach().cpu()
        if t.is_floating_point() and t.dtype not in _numpy_float_dtypes():
            t = t.float()
        if t.dtype.is_complex:
            raise ValueError("complex tensors cannot be stored in GGUF")
        return t.contiguous().numpy()
    return np.asarray(tensor)


def _numpy_float_dtypes() -> tuple[Any, ...]:
    import torch

    return (torch.float16, torch.float32, torch.float64)


def quantize_tensor(name: str, array: Any, decision: Decision | QT) -> QuantizedTensor:
    """Encode one tensor as the GGML type of ``decision`` (or a bare ``QT``)."""
    arr = to_numpy(array)
    qtype = decision.qtype if isinstance(decision, Decision) else QT(decision)
    reason = decision.reason if isinstance(decision, Decision) else ""
    shape = tuple(int(s) for s in arr.shape)
    if not np.issubdtype(arr.dtype, np.floating):
        if arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.unsignedinteger):
            arr = arr.astype(np.int64 if arr.dtype.itemsize >= 4 else np.int32)
        data = np.ascontiguousarray(arr)
        return QuantizedTensor(name, _INT_TYPES[data.dtype], shape, data, reason)
    if qtype in _INT_TYPES.values():
        raise ValueError(f"{name}: cannot store floating point data as {qtype.name}")
    data = ggml.quantize(arr.astype(np.float32, copy=False), qtype)
    return QuantizedTensor(name, qtype, shape, data, reason)


def quantize_state_dict(
    tensors: Mapping[str, Any] | Iterable[tuple[str, Any]],
    recipe: Recipe | str,
    *,
    linear_names: Iterable[str] | None = None,
    on_tensor: Callable[[QuantizedTensor], None] | None = None,
) -> list[QuantizedTensor]:
    """Quantize every tensor of a state dict following ``recipe``.

    ``tensors`` is a mapping or an iterable of ``(name, tensor)`` pairs (a
    generator keeps only one source tensor in memory at a time). Raises
    ``ValueError`` naming the tensor if it holds NaN or inf values, or if it cannot
    round-trip through a GGUF file (no elements, or a 0-d scalar, which GGUF stores as
    shape ``(1,)``).
    """
    rec = get_recipe(recipe) if isinstance(recipe, str) else recipe
    linear = None if linear_names is None else frozenset(linear_names)
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    out: list[QuantizedTensor] = []
    for name, tensor in items:
        arr = to_numpy(tensor)
        decision = decide_tensor(name, arr, rec, linear)
        qt = quantize_tensor(name, arr, decision)
        if on_tensor is not None:
            on_tensor(qt)
        out.append(qt)
    return out


def decide_tensor(
    name: str, arr: np.ndarray, recipe: Recipe, linear_names: frozenset[str] | None
) -> Decision:
    """The recipe's type for one tensor, after checking it can be stored (``ValueError``)."""
    _check_storable(name, arr)
    is_float = bool(np.issubdtype(arr.dtype, np.floating))
    max_abs = None
    if is_float and arr.size:
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"tensor {name!r} contains NaN or infinite values")
        max_abs = float(np.abs(arr).max())
    return choose_type(
        name, arr.shape, recipe, linear_names=linear_names, is_float=is_float, max_abs=max_abs
    )


def _check_storable(name: str, arr: np.ndarray) -> None:
    """Refuse a tensor a GGUF file cannot give back as it was, naming it."""
    if arr.ndim == 0:
        raise ValueError(
            f"tensor {name!r} is a 0-d scalar; GGUF stores it as shape (1,), so it would not "
            "load back with its shape"
        )
    if arr.size == 0:
        raise ValueError(
            f"tensor {name!r} has shape {tuple(arr.shape)} and no elements; a GGUF file with "
            "it cannot be read back"
        )


def _add_metadata(writer: gguf.GGUFWriter, key: str, value: Any) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int) and value >= 0:
        writer.add_uint64(key, value)
    elif isinstance(value, int):
        writer.add_int64(key, value)
    elif isinstance(value, float):
        writer.add_float64(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    else:
        writer.add_string(key, json.dumps(value, sort_keys=True))


def write_gguf(
    path: str | os.PathLike[str],
    tensors: Iterable[QuantizedTensor],
    *,
    arch: str = DEFAULT_ARCH,
    file_type: int | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``tensors`` to ``path`` atomically (temporary file + ``os.replace``).

    ``metadata`` values may be str/int/float/bool (anything else is stored as
    JSON text). Returns the final path.
    """
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        try:  # the mode of a file the user creates (mkstemp's 0600 would survive the rename)
            os.fchmod(fd, new_file_mode())
        finally:
            os.close(fd)
        writer = gguf.GGUFWriter(tmp, arch=arch)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        if file_type is not None:
            writer.add_file_type(int(file_type))
        for key, value in (metadata or {}).items():
            _add_metadata(writer, key, value)
        written: list[tuple[str, QT, tuple[int, ...]]] = []
        for t in tensors:
            if not t.shape or 0 in t.shape:
                _check_storable(t.name, np.empty(t.shape, np.float32))
            if t.qtype in (QT.F32, QT.F16) or t.qtype in _INT_TYPES.values():
                writer.add_tensor(t.name, t.data)
            else:
                writer.add_tensor(t.name, t.data, raw_dtype=t.qtype)
            written.append((t.name, t.qtype, tuple(t.shape)))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        _verify_written(tmp, written, target)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def _verify_written(
    tmp: Path, written: list[tuple[str, QT, tuple[int, ...]]], target: Path
) -> None:
    """Read the header of the file just written and compare it with what was meant."""
    try:
        reader = gguf.GGUFReader(str(tmp))
        found = [
            (t.name, QT(t.tensor_type), tuple(int(s) for s in reversed(t.shape.tolist())))
            for t in reader.tensors
        ]
    except Exception as exc:  # gguf-py raises many types for a file it cannot parse
        raise ValueError(f"the GGUF file written for {target} does not read back ({exc})") \
            from None
    if found != written:
        bad = next(
            (w for w, f in zip(written, found, strict=False) if w != f),
            written[len(found)] if len(written) > len(found) else found[len(written)],
        )
        raise ValueError(
            f"tensor {bad[0]!r} does not read back from the GGUF file as written "
            f"({bad[1].name} {bad[2]}); nothing was written to {target}"
        )


def save_state_dict_gguf(
    path: str | os.PathLike[str],
    state_dict: Mapping[str, Any] | Iterable[tuple[str, Any]],
    recipe: Recipe | str,
    *,
    linear_names: Iterable[str] | None = None,
    arch: str = DEFAULT_ARCH,
    metadata: Mapping[str, Any] | None = None,
) -> list[QuantizedTensor]:
    """Quantize ``state_dict`` with ``recipe`` and write it to ``path``."""
    rec = get_recipe(recipe) if isinstance(recipe, str) else recipe
    tensors = quantize_state_dict(state_dict, rec, linear_names=linear_names)
    meta = {f"{DEFAULT_ARCH}.recipe": rec.name, **(metadata or {})}
    write_gguf(path, tensors, arch=arch, file_type=rec.file_type, metadata=meta)
    return tensors


def _iter_tensors(reader: gguf.GGUFReader, copy: bool) -> Iterator[GGUFTensor]:
    for t in reader.tensors:
        shape = tuple(int(s) for s in reversed(t.shape.tolist()))
        data = np.array(t.data, copy=True) if copy else t.data
        yield GGUFTensor(t.name, QT(t.tensor_type), shape, data)


def read_gguf(path: str | os.PathLike[str], *, copy: bool = True) -> dict[str, GGUFTensor]:
    """Return the tensors of a GGUF file by name, in file order.

    ``shape`` is the logical (numpy-order) shape; ``data`` holds the raw
    bytes for quantized types. With ``copy=False`` the data are views of a
    memory map that lives as long as they do.
    """
    reader = gguf.GGUFReader(str(path))
    return {t.name: t for t in _iter_tensors(reader, copy)}


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the key/value metadata of a GGUF file (``GGUF.*`` header fields excluded)."""
    reader = gguf.GGUFReader(str(path))
    out: dict[str, Any] = {}
    for key, fld in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        out[key] = fld.contents()
    return out


def load_dequantized(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a GGUF file and decode every tensor to float32 (integers unchanged)."""
    return {name: t.dequantize() for name, t in read_gguf(path, copy=False).items()}
