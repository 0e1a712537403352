"""Golden store: ``<root>/<model>/<hardware-class>/manifest.json`` plus one PNG per item.

The manifest is the source of truth: every entry names its PNG and holds the file's SHA-256,
the decoded pixels' SHA-256, perceptual hashes, the per-step latent trace, the generation
parameters and the environment fingerprint that recorded it. A golden whose files do not
agree with its manifest is rejected with a :class:`~conformance.errors.ManifestError`.

Golden sets are untrusted input (contributors send them). Manifests are read through
:mod:`conformance.safeio` (size cap, no duplicate keys, short integers, bounded nesting) and
checked to the last nested value; images must be canonical PNGs, checked chunk by chunk
before anything is inflated (:func:`check_png`); files must be regular files with one link,
folders plain folders.

Recording writes the PNG and then the manifest, each to a temporary file renamed into place
with the user's umask, under the set's lock (``<set>/.lock``, an ``flock`` every writer takes:
xdist workers, two runs with their own ``TMPDIR``, ``migrate``), re-reading the manifest under
it so no writer's entries are dropped. It refuses to replace an existing golden unless
``force`` is set; an undeclared PNG that holds exactly the bytes about to be written (an
interrupted record: a crash between the PNG and the manifest) is adopted. A full disk or an
unwritable folder is an :class:`~conformance.errors.OutputError` naming the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import os
import re
import stat
import struct
import sys
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import msgspec
import numpy as np

from conformance.cases import Item
from conformance.errors import (
    ConformanceInputError,
    GoldenExistsError,
    ManifestError,
    OutputError,
    type_name,
)
from conformance.hardware import HardwareClass
from conformance.identity import Identity, explain
from conformance.metrics import as_rgb_uint8, perceptual_hashes, pixel_sha256
from conformance.safeio import (
    IMAGE_LIMIT,
    MANIFEST_LIMIT,
    exclusive_lock,
    gunzip_bounded,
    key_label,
    loads_json,
    os_reason,
    show,
    write_atomic,
)
from conformance.schema import (
    CASE,
    MODEL,
    MODEL_RULE,
    PRECISION,
    RESOLUTION,
    CaseName,
    Int64,
    ModelName,
    PrecisionName,
    Problem,
    ResolutionName,
    matching,
    problem_of,
)
from conformance.trace import StepTrace

SCHEMA_VERSION = 2
#: Schema 1 sets (before the measured identity) are read only by ``conformance migrate``.
LEGACY_VERSION = 1
MANIFEST = "manifest.json"
MAX_PIXELS = 4096 * 4096  # refuse larger goldens (decompression bombs)
#: The largest golden PNG read (a 4096x4096 RGB PNG of noise is about 48 MiB).
PNG_LIMIT = IMAGE_LIMIT
MANIFEST_KIND = "golden manifest"
PNG_KIND = "golden PNG"

# Names, matched whole (``fullmatch``: ``$`` would let a trailing newline through); the
# patterns are :mod:`conformance.schema`'s, which results files are read with too.
_MODEL = re.compile(MODEL)
_CASE = re.compile(CASE)
_PRECISION = re.compile(PRECISION)
_RESOLUTION = re.compile(RESOLUTION)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_STEP_DIGEST = re.compile(r"[0-9a-f]{1,64}")
_FILE = re.compile(r"[a-z0-9][a-z0-9._-]{0,150}\.png")
#: C0 and C1 controls (newline, tab, ESC ...), DEL, line/paragraph separators, bidi controls
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
_MAX_VALUE_CHARS = 4096  # a prompt, a fingerprint value, a feature
_MAX_COMMAND_CHARS = 65536
_Hex64 = matching("[0-9a-f]{64}", "64 lower-case hex digits")
_Hex16 = matching("[0-9a-f]{16}", "16 lower-case hex digits")
_Stamp = Annotated[str, msgspec.Meta(
    max_length=_MAX_VALUE_CHARS, description=f"a string of at most {_MAX_VALUE_CHARS} characters")]
_Command = Annotated[str, msgspec.Meta(
    max_length=_MAX_COMMAND_CHARS,
    description=f"a string of at most {_MAX_COMMAND_CHARS} characters")]
_SCALARS = (str, int, float, bool, type(None))

_STEP_FIELDS = ("step", "timestep", "digest", "mean", "std", "min", "max")
PROBES_SUFFIX = ".probes.json.gz"
#: the denoiser's step-0 input (``--probe-inputs``): safetensors, for replay elsewhere
INPUTS_SUFFIX = ".inputs.safetensors"
#: a golden's probe file: at most this many bytes compressed, and 64 MiB of JSON inflated
PROBES_LIMIT = 16 * 2**20
PROBES_JSON_LIMIT = 64 * 2**20
_MAX_PROBED_STEPS = 16


@dataclass(frozen=True)
class GoldenEntry:
    """One golden of a manifest; its fields' types are what a manifest's entry must hold
    (read by :mod:`conformance.schema`; the checks across fields in :func:`_parse_entry`)."""

    id: str
    model: ModelName
    case: CaseName
    resolution: ResolutionName
    precision: PrecisionName
    file: str
    width: Int64
    height: Int64
    pixel_sha256: _Hex64
    file_sha256: _Hex64
    phash: _Hex16
    dhash: _Hex16
    params: dict[str, Any]
    trace: list[dict[str, Any]]
    fingerprint: dict[str, Any]
    recorded_at: _Stamp
    command: _Command
    #: ``{"file": "<stem>.probes.json.gz", "sha256": ..., "steps": [0]}`` when module probes
    #: were recorded with the golden (``--record --probes``); read as any value, its shape
    #: is checked (and refused in words) by :func:`_probes_problem`
    probes: Any = None

    def steps(self) -> list[StepTrace]:
        return [StepTrace.from_dict(s) for s in self.trace]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["probes"] is None:
            del data["probes"]  # sets without probes keep the layout they always had
        return data


@dataclass
class Manifest:
    model: str
    hardware_class: str
    entries: dict[str, GoldenEntry] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    #: The machine configuration every entry was recorded on (``None``: unknown).
    identity: Identity | None = None

    def to_json(self) -> str:
        body = {
            "schema_version": self.schema_version,
            "model": self.model,
            "hardware_class": self.hardware_class,
            "identity": None if self.identity is None else self.identity.to_dict(),
            "entries": {k: self.entries[k].to_dict() for k in sorted(self.entries)},
        }
        return json.dumps(body, indent=1, sort_keys=False) + "\n"


def parse_manifest(text: str | bytes, path: Path, model: str | None = None,
                   hardware_class: str | None = None, legacy: bool = False) -> Manifest:
    """Parse and validate manifest ``text`` (or the raw bytes) read from ``path``.

    ``model`` / ``hardware_class``, when given, must match the manifest (they come from
    the directory the manifest sits in). ``legacy`` also accepts schema 1 (for migration).
    Every problem is a :class:`ManifestError` naming ``path`` and the key.
    """
    data = _load_manifest_json(text, path)
    if not isinstance(data, dict):
        raise ManifestError(path, f"top level must be an object, not {type_name(data)}")
    if _may_hold_controls(text):
        _check_text(data, path)
    version = data.get("schema_version")
    is_int = isinstance(version, int) and not isinstance(version, bool)
    if is_int and version == LEGACY_VERSION and not legacy:
        raise ManifestError(
            path, "schema_version 1 (recorded before the measured identity); convert the "
            "set with: conformance migrate SRC --out DIR"
        )
    if not is_int or version not in (SCHEMA_VERSION, LEGACY_VERSION):
        raise ManifestError(
            path, f"schema_version is {show(version)}; this version reads {SCHEMA_VERSION}"
        )
    for key in ("model", "hardware_class"):
        if not isinstance(data.get(key), str):
            raise ManifestError(path, f"key {key!r} is missing or not a string")
    top = {"schema_version", "model", "hardware_class", "entries"}
    if version == SCHEMA_VERSION:
        top.add("identity")
        if "identity" not in data:
            raise ManifestError(path, "key 'identity' is missing (null or an object)")
    unknown = set(data) - top
    if unknown:
        raise ManifestError(path, f"unknown top-level keys: {_keys(unknown)}")
    if not _MODEL.fullmatch(data["model"]):
        raise ManifestError(path, f"key 'model': {show(data['model'])} is not a model name "
                            f"({_MODEL_RULE})")
    try:
        HardwareClass(data["hardware_class"])
    except ValueError:
        raise ManifestError(path, f"key 'hardware_class': {_class_problem(data['hardware_class'])}"
                            ) from None
    if model is not None and data["model"] != model:
        raise ManifestError(path, f"model is {show(data['model'])} but the directory is "
                            f"{show(model)}")
    if hardware_class is not None and data["hardware_class"] != hardware_class:
        raise ManifestError(
            path,
            f"hardware_class is {show(data['hardware_class'])} but the directory is "
            f"{show(hardware_class)}",
        )
    entries_raw = data.get("entries")
    if not isinstance(entries_raw, dict):
        raise ManifestError(path, "key 'entries' is missing or not an object")
    identity = None
    if data.get("identity") is not None:
        _check_identity_shape(data["identity"], path)
        try:
            identity = Identity.from_dict(data["identity"])
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ManifestError(path, f"key 'identity': {_text(str(exc))}") from None
        if identity.hardware_class != data["hardware_class"]:
            raise ManifestError(
                path, f"identity class {show(identity.hardware_class)} is not the set's "
                f"hardware_class {show(data['hardware_class'])}"
            )
    manifest = Manifest(data["model"], data["hardware_class"], schema_version=version,
                        identity=identity)
    files: dict[str, str] = {}
    for key, raw in entries_raw.items():
        entry = _parse_entry(key, raw, path, data["model"])
        if entry.file in files:
            raise ManifestError(
                path, f"entry {show(key)}: file {show(entry.file)} is also used by "
                f"{show(files[entry.file])}"
            )
        files[entry.file] = key
        manifest.entries[key] = entry
    return manifest


_MODEL_RULE = MODEL_RULE


def _class_problem(name: Any) -> str:
    return (f"{show(name)} is not a hardware class; expected cpu-<vendor>-<level>[+ext...] "
            "(e.g. cpu-amd-avx512+bf16), cuda-sm<NN>, rocm-<arch>, mps or xpu")


def _keys(keys: Any, most: int = 8) -> str:
    names = sorted(key_label(k) for k in keys)
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def _load_manifest_json(text: str | bytes, path: Path) -> Any:
    """JSON with the rules of :mod:`conformance.safeio` (no duplicate keys, at most 30-digit
    integers, at most 64 levels, strict UTF-8)."""
    try:
        return loads_json(text, path, kind=MANIFEST_KIND, error=ManifestError)
    except ManifestError as exc:
        prefix = f"{MANIFEST_KIND}: not valid JSON: "
        if exc.message.startswith(prefix):
            raise ManifestError(
                path, f"not valid JSON (truncated or edited?): {exc.message[len(prefix):]}"
            ) from None
        raise


def _text(message: str, limit: int = 300) -> str:
    """``message`` as it is when it is short printable text, else escaped (``show``)."""
    return message if len(message) <= limit and not _CONTROL.search(message) else show(
        message, limit)


def _where(parent: str, key: Any) -> str:
    part = key_label(key)
    return f"{parent}.{part}" if parent else part


def _may_hold_controls(text: str | bytes) -> bool:
    """Whether a parsed string of JSON ``text`` can hold a control character: JSON writes
    C0 controls only as escapes, so ASCII text without a backslash or DEL holds none."""
    if isinstance(text, bytes):
        return b"\\" in text or b"\x7f" in text or not text.isascii()
    return "\\" in text or "\x7f" in text or not text.isascii()


def _check_text(data: Any, path: Path) -> None:
    """Every key and string of the manifest is one line of printable text (key paths are
    only formatted for containers, so a long array costs no strings)."""
    stack: list[tuple[Any, str]] = [(data, "")]
    while stack:
        node, where = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for k, v in items:
            if isinstance(k, str) and _CONTROL.search(k):
                raise ManifestError(
                    path, f"key {_where(where, k)}: the key {show(k)} holds the control "
                    f"character U+{ord(_CONTROL.search(k).group()):04X}; manifests hold "
                    "printable text only"
                )
            if isinstance(v, (dict, list)):
                stack.append((v, _where(where, k) if isinstance(k, str) else f"{where}[{k}]"))
            elif isinstance(v, str) and _CONTROL.search(v):
                inner = _where(where, k) if isinstance(k, str) else f"{where}[{k}]"
                raise ManifestError(
                    path, f"key {inner}: {show(v)} holds the control character "
                    f"U+{ord(_CONTROL.search(v).group()):04X}; manifests hold printable text "
                    "only"
                )


def _what(value: Any) -> str:
    return f"{type_name(value)} {show(value, 40)}"


def _require_flat(value: Any, path: Path, where: str, *, scalars: tuple[type, ...] = _SCALARS,
                  accepted: str = "a string, number, boolean or null") -> None:
    """``value`` is an object whose values are JSON scalars (no nesting, short strings)."""
    if not isinstance(value, dict):
        raise ManifestError(path, f"key {where} must be an object, not {type_name(value)}")
    for k, v in value.items():
        if not isinstance(v, scalars) or (bool not in scalars and isinstance(v, bool)):
            raise ManifestError(
                path, f"key {_where(where, k)} must be {accepted}, not {_what(v)}"
            )
        if isinstance(v, str) and len(v) > _MAX_VALUE_CHARS:
            raise ManifestError(path, f"key {_where(where, k)} has {len(v)} characters; at "
                                f"most {_MAX_VALUE_CHARS}")


def _check_identity_shape(raw: Any, path: Path) -> None:
    """The parts of an identity the suite reads have the types it reads them as (an identity
    of another shape would otherwise fail later, far from the manifest)."""
    if not isinstance(raw, dict):
        raise ManifestError(path, f"key 'identity' must be null or an object, not "
                            f"{type_name(raw)}")
    features = raw.get("features")
    if isinstance(features, dict):
        rest = {k: v for k, v in features.items()
                if k not in ("flags", "env", "sdpa_backends")}
        _require_flat(rest, path, "identity.features")
        flags = features.get("flags")
        if flags is not None and not (
            isinstance(flags, list) and all(isinstance(f, str) and len(f) <= 64 for f in flags)
        ):
            raise ManifestError(path, "key identity.features.flags must be an array of flag "
                                f"names, not {_what(flags)}")
        for key, scalars, accepted in (("env", (str,), "a string"),
                                       ("sdpa_backends", (bool, type(None)), "a boolean")):
            if features.get(key) is not None:
                _require_flat(features[key], path, f"identity.features.{key}",
                              scalars=scalars, accepted=accepted)
    if isinstance(raw.get("stack"), dict):
        _require_flat(raw["stack"], path, "identity.stack")
    if raw.get("migrated_from") is not None:
        _require_flat(raw["migrated_from"], path, "identity.migrated_from")
    for key, kinds, accepted in (("battery_version", (int,), "an integer"),
                                 ("probe_seconds", (int, float), "a number")):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
            raise ManifestError(path, f"key identity.{key} must be {accepted} or null, not "
                                f"{_what(value)}")
    for key in ("class", "digest"):
        if key in raw and (not isinstance(raw[key], str) or len(raw[key]) > 200):
            raise ManifestError(path, f"key identity.{key} must be a short string, not "
                                f"{_what(raw[key])}")


def _parse_entry(key: str, raw: Any, path: Path, model: str) -> GoldenEntry:
    where = f"entry {show(key)}"
    entry = problem_of(raw, GoldenEntry)
    if isinstance(entry, Problem):
        said = f": {entry.message()}" if entry.keys or entry.lead else f" {entry.text}"
        raise ManifestError(path, where + said)
    expected_id = f"{entry.model}/{entry.case}/{entry.resolution}/{entry.precision}"
    if entry.id != key or entry.id != expected_id:
        raise ManifestError(path, f"{where}: id {show(entry.id)} does not match its fields")
    if entry.model != model:
        raise ManifestError(path, f"{where}: model {show(entry.model)} is not {show(model)}")
    if not _FILE.fullmatch(entry.file) or ".." in entry.file:
        raise ManifestError(
            path, f"{where}: file {show(entry.file)} is not a plain lower-case .png name"
        )
    if f"{entry.width}x{entry.height}" != entry.resolution:
        raise ManifestError(path, f"{where}: width/height do not match {entry.resolution!r}")
    if entry.width < 1 or entry.height < 1 or entry.width * entry.height > MAX_PIXELS:
        raise ManifestError(path, f"{where}: {entry.resolution} is outside 1..{MAX_PIXELS} px")
    _require_flat(entry.params, path, f"entries.{key_label(key)}.params")
    _require_flat(entry.fingerprint, path, f"entries.{key_label(key)}.fingerprint")
    problem = _trace_problem(entry.trace)
    if problem:
        raise ManifestError(path, f"{where}: key 'trace' is malformed: {problem}")
    if entry.probes is not None:
        problem = _probes_problem(entry.probes, entry.file.removesuffix(".png"))
        if problem:
            raise ManifestError(path, f"{where}: key 'probes': {problem}")
    return entry


#: the keys of an entry's ``probes``; recorded_at and command say how they were added
#: (an existing golden takes its probes from a later run that reproduces it)
_PROBES_KEYS = {"file", "sha256", "steps", "inputs", "recorded_at", "command"}


def _probes_problem(probes: Any, stem: str) -> str | None:
    if not isinstance(probes, dict) or not (
            {"file", "sha256", "steps"} <= set(probes) <= _PROBES_KEYS):
        return ("must be an object with the keys file, sha256, steps (and optional inputs, "
                "recorded_at, command)")
    for k, most in (("recorded_at", _MAX_VALUE_CHARS), ("command", _MAX_COMMAND_CHARS)):
        if k in probes and (not isinstance(probes[k], str) or len(probes[k]) > most):
            return f"{k} must be a string of at most {most} characters"
    inputs = probes.get("inputs")
    if inputs is not None and (
            not isinstance(inputs, dict) or set(inputs) != {"file", "sha256"}
            or inputs["file"] != stem + INPUTS_SUFFIX
            or not isinstance(inputs["sha256"], str) or not _HEX64.fullmatch(inputs["sha256"])):
        return (f"inputs must be {{file: {stem + INPUTS_SUFFIX!r}, sha256: 64 lower-case hex "
                "digits}")
    if probes["file"] != stem + PROBES_SUFFIX:
        return f"file must be {stem + PROBES_SUFFIX!r}, not {show(probes['file'])}"
    if not isinstance(probes["sha256"], str) or not _HEX64.fullmatch(probes["sha256"]):
        return "sha256 is not 64 lower-case hex digits"
    steps = probes["steps"]
    if (not isinstance(steps, list) or not 1 <= len(steps) <= _MAX_PROBED_STEPS
            or any(type(v) is not int or not 0 <= v < 100_000 for v in steps)):
        return f"steps must be a list of 1 to {_MAX_PROBED_STEPS} step numbers"
    return None


def _trace_problem(trace: list[Any]) -> str | None:
    """Why ``trace`` is not a list of :class:`StepTrace` records, or ``None``."""
    for i, step in enumerate(trace):
        if not isinstance(step, dict):
            return f"step {i} must be an object, not {type_name(step)}"
        if set(step) != set(_STEP_FIELDS):
            missing = [k for k in _STEP_FIELDS if k not in step]
            extra = [k for k in step if k not in _STEP_FIELDS]
            return f"step {i}: " + "; ".join(
                part for part in (missing and f"missing keys: {', '.join(missing)}",
                                  extra and f"unknown keys: {_keys(extra)}") if part)
        if isinstance(step["step"], bool) or not isinstance(step["step"], int) or not (
                0 <= step["step"] < 2**31):
            return (f"step {i}: key 'step' must be an integer in 0..2147483647, not "
                    f"{_what(step['step'])}")
        if not isinstance(step["digest"], str) or not _STEP_DIGEST.fullmatch(step["digest"]):
            return f"step {i}: key 'digest' must be lower-case hex digits, not " \
                   f"{_what(step['digest'])}"
        for k in ("timestep", "mean", "std", "min", "max"):
            if isinstance(step[k], bool) or not isinstance(step[k], (int, float)):
                return f"step {i}: key {k!r} must be a number, not {_what(step[k])}"
    return None


def encode_png(image: np.ndarray) -> bytes:
    """``image`` as a canonical golden PNG (8-bit RGB, IHDR, IDAT..., IEND and nothing else)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(as_rgb_uint8(image), "RGB").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


# -- canonical PNGs ----------------------------------------------------------------------------
# A golden PNG is read by walking its chunk stream here, before any decoder sees it: 8-bit
# RGB (colour type 2), not interlaced, IHDR first, one run of IDAT chunks, IEND last and
# nothing after it, no APNG or text chunks, only a few small ancillary chunks, every CRC
# right, the declared size within MAX_PIXELS, and the image data inflating to exactly
# height x (1 + 3 x width) bytes (inflated in pieces that stop one byte past that size, so a
# bomb never expands further).

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: PIL writes one IDAT chunk per 64 KiB: a 64 MiB file needs about 1 000
MAX_PNG_CHUNKS = 4096
MAX_PNG_CHUNK_BYTES = 16 * 1024 * 1024
_INFLATE_PIECE = 4 * 1024 * 1024
_CHUNK_TYPE = re.compile(rb"[A-Za-z]{4}")
#: the only ancillary chunks a golden PNG may carry, and their exact lengths
PNG_ANCILLARY_ALLOWED = {b"sRGB": 1, b"gAMA": 4, b"pHYs": 9}
_APNG_CHUNKS = (b"acTL", b"fcTL", b"fdAT")
_PNG_CHUNK_KINDS = {
    b"tEXt": "text", b"zTXt": "text", b"iTXt": "text", b"eXIf": "EXIF metadata",
    b"iCCP": "an ICC profile", b"tIME": "a timestamp", b"bKGD": "a background colour",
    b"cHRM": "chromaticities", b"sBIT": "significant bits", b"hIST": "a histogram",
    b"tRNS": "transparency", b"sPLT": "a suggested palette", b"PLTE": "a palette",
    b"cICP": "colour-space code points", b"mDCV": "mastering display data",
    b"cLLI": "light level data", b"caBX": "C2PA provenance",
}
_COLOUR_TYPES = {0: "L", 2: "RGB", 3: "P", 4: "LA", 6: "RGBA"}
_OTHER_FORMATS = (
    (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"BM", "BMP"),
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"qoif", "QOI"), (b"\x00\x00\x00\x0cjP  ",
                                                                   "JPEG 2000"),
)


def _other_format(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[4:12] in (b"ftypavif", b"ftypheic", b"ftypmif1"):
        return "AVIF/HEIF"
    return next((name for magic, name in _OTHER_FORMATS if data.startswith(magic)), None)


def check_png(data: bytes, path: Path, width: int, height: int, *,
              damaged: str = "cannot be decoded as PNG") -> None:
    """Refuse ``data`` unless it is a canonical golden PNG of ``width`` x ``height``.

    Raises :class:`ManifestError` naming ``path``; a damaged file (truncated, a bad CRC,
    corrupt image data) reads ``"<damaged>: <why>"``, anything else says what the file has
    that golden PNGs must not.
    """
    def refuse(reason: str) -> None:
        raise ManifestError(path, reason)

    def broken(reason: str) -> None:
        raise ManifestError(path, f"{damaged}: {reason}")

    if not data.startswith(_PNG_SIGNATURE):
        other = _other_format(data)
        if other:
            refuse(f"is {other}, not PNG")
        broken("the file is empty" if not data else "it does not start with the PNG signature")
    chunks = _png_chunks(data, refuse, broken)
    ctype, start, length = chunks[0]
    if ctype != b"IHDR":
        broken(f"the first chunk is {ctype.decode()}, not IHDR")
    if length != 13:
        broken(f"its IHDR chunk is {length} bytes; IHDR is 13 bytes")
    w, h, depth, colour, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", data[start:start + 13])
    if not (0 < w < 2**31 and 0 < h < 2**31):
        broken(f"IHDR declares a size of {w}x{h}")
    if w * h > MAX_PIXELS:
        refuse(f"is {w}x{h} pixels, over the limit of {MAX_PIXELS} (decompression bomb?)")
    if (w, h) != (width, height):
        refuse(f"is {w}x{h}, the manifest says {width}x{height}")
    if colour != 2:
        mode = _COLOUR_TYPES.get(colour, f"of unknown colour type {colour}")
        refuse(f"has mode {mode}, expected RGB (golden PNGs are 8-bit RGB, colour type 2; "
               f"this one is colour type {colour})")
    if depth != 8:
        refuse(f"is {depth}-bit; golden PNGs are 8-bit RGB")
    if compression != 0 or filtering != 0:
        broken(f"IHDR names compression method {compression} and filter method {filtering};"
               " PNG has only 0")
    if interlace == 1:
        refuse("is interlaced (Adam7); golden PNGs are not interlaced")
    if interlace != 0:
        broken(f"IHDR names interlace method {interlace}; PNG has 0 and 1")
    _check_png_chunks(data, chunks, refuse, broken)
    _inflate_exactly(data, [(s, n) for t, s, n in chunks if t == b"IDAT"], w, h, refuse, broken)


def _png_chunks(data: bytes, refuse: Any, broken: Any) -> list[tuple[bytes, int, int]]:
    """(type, data offset, length) of each chunk up to IEND; framing and CRCs checked."""
    chunks: list[tuple[bytes, int, int]] = []
    view = memoryview(data)
    pos, size = len(_PNG_SIGNATURE), len(data)
    while True:
        if len(chunks) >= MAX_PNG_CHUNKS:
            refuse(f"has more than {MAX_PNG_CHUNKS} chunks; golden PNGs have a few")
        if pos + 12 > size:
            broken(f"it is truncated at byte {pos} (no IEND chunk)")
        length = int.from_bytes(data[pos:pos + 4], "big")
        ctype = data[pos + 4:pos + 8]
        if not _CHUNK_TYPE.fullmatch(ctype):
            broken(f"the chunk at byte {pos} has the invalid type {show(ctype)}")
        label = ctype.decode("ascii")
        if length >= 2**31:
            broken(f"its {label} chunk at byte {pos} declares {length} bytes; PNG chunks hold "
                   "at most 2^31-1")
        if pos + 12 + length > size:
            broken(f"its {label} chunk at byte {pos} declares {length} bytes but only "
                   f"{size - pos - 12} follow (truncated?)")
        if length > MAX_PNG_CHUNK_BYTES:
            refuse(f"has a {label} chunk of {length} bytes; golden PNG chunks hold at most "
                   f"{MAX_PNG_CHUNK_BYTES}")
        end = pos + 8 + length
        crc = int.from_bytes(data[end:end + 4], "big")
        if zlib.crc32(view[pos + 4:end]) != crc:
            broken(f"the CRC of its {label} chunk at byte {pos} is wrong (corrupt file)")
        chunks.append((ctype, pos + 8, length))
        pos = end + 4
        if ctype == b"IEND":
            break
    if pos < size:
        refuse(f"has {size - pos} bytes after IEND; golden PNGs end with the IEND chunk")
    return chunks


def _check_png_chunks(data: bytes, chunks: list[tuple[bytes, int, int]], refuse: Any,
                      broken: Any) -> None:
    types = [t for t, _, _ in chunks]
    if any(t in _APNG_CHUNKS for t in types):
        if b"acTL" in types:
            _, start, length = chunks[types.index(b"acTL")]
            frames = int.from_bytes(data[start:start + 4], "big") if length == 8 else "?"
            refuse(f"has {frames} frames (APNG); golden PNGs hold one image")
        other = next(t for t in types if t in _APNG_CHUNKS).decode()
        refuse(f"has an {other} chunk (APNG animation); golden PNGs hold one image")
    idats = [i for i, t in enumerate(types) if t == b"IDAT"]
    if not idats:
        broken("it has no IDAT chunk (no image data)")
    gap = next((i for i in range(idats[0], idats[-1]) if types[i] != b"IDAT"), None)
    if gap is not None:
        runs = 1 + sum(1 for a, b in itertools.pairwise(idats) if b != a + 1)
        refuse(f"has {runs} runs of IDAT chunks, split by a {types[gap].decode()} chunk; the "
               "image data of a golden PNG is one contiguous run")
    seen: set[bytes] = set()
    for i, (ctype, _start, length) in enumerate(chunks[1:], start=1):
        label = ctype.decode()
        if ctype == b"IDAT":
            continue
        if ctype == b"IEND":
            if length:
                broken(f"its IEND chunk holds {length} bytes; IEND is empty")
            continue
        if ctype == b"IHDR":
            broken("it has a second IHDR chunk")
        if ctype in PNG_ANCILLARY_ALLOWED:
            if length != PNG_ANCILLARY_ALLOWED[ctype]:
                refuse(f"has a {label} chunk of {length} bytes; {label} is "
                       f"{PNG_ANCILLARY_ALLOWED[ctype]} bytes")
            if i > idats[0]:
                refuse(f"has a {label} chunk after the image data; it belongs before IDAT")
            if ctype in seen:
                refuse(f"has two {label} chunks")
            seen.add(ctype)
            continue
        kind = _PNG_CHUNK_KINDS.get(ctype)
        if kind is not None:
            refuse(f"has {_a(label)} {label} chunk ({kind}); golden PNGs hold pixels only")
        if label[0].isupper():
            refuse(f"has the unknown critical chunk {label}")
        refuse(f"has {_a(label)} {label} chunk (unknown ancillary data); golden PNGs hold "
               "pixels only")


def _a(label: str) -> str:
    return "an" if label[0] in "aeiouAEIOU" else "a"


def _inflate_exactly(data: bytes, idats: list[tuple[int, int]], w: int, h: int,
                     refuse: Any, broken: Any) -> None:
    """Inflate the IDAT stream in bounded pieces: exactly ``h * (1 + 3w)`` bytes, every
    scanline's filter type 0-4, nothing after the zlib stream."""
    stride = 1 + 3 * w
    expected = h * stride
    view = memoryview(data)
    inflater = zlib.decompressobj()
    produced = 0
    left = sum(n for _, n in idats)
    try:
        for start, length in idats:
            left -= length
            pending: Any = view[start:start + length]
            while len(pending):
                out = inflater.decompress(pending, min(_INFLATE_PIECE, expected + 1 - produced))
                if out:
                    first = (-produced) % stride
                    filters = out[first::stride]
                    if filters and max(filters) > 4:
                        bad = next(f for f in filters if f > 4)
                        row = (produced + first) // stride + filters.index(bad)
                        broken(f"scanline {row} has filter type {bad}; PNG has 0-4")
                    produced += len(out)
                    if produced > expected:
                        refuse(f"its image data inflates past the {expected} bytes a {w}x{h} "
                               "RGB image holds (a decompression bomb?); stopped there")
                pending = inflater.unconsumed_tail
                if inflater.eof:
                    extra = len(inflater.unused_data) + len(pending) + left
                    if extra:
                        refuse(f"has {extra} bytes after the end of its compressed image "
                               "data; golden PNGs hold the image only")
                    break
    except zlib.error as exc:
        broken(f"its image data is corrupt (zlib: {exc})")
    if not inflater.eof:
        broken(f"its image data is truncated (inflates to {produced} of the {expected} "
               f"bytes of a {w}x{h} RGB image, and the compressed stream does not end)")
    if produced != expected:
        broken(f"its image data inflates to {produced} bytes; a {w}x{h} RGB image is "
               f"{expected}")


def decode_png(data: bytes, path: Path, width: int, height: int, *,
               damaged: str = "cannot be decoded as PNG") -> np.ndarray:
    """The pixels of a golden PNG, after :func:`check_png` (size, mode and chunk rules are
    checked on the raw bytes before any decoder or inflater runs past the declared size)."""
    check_png(data, path, width, height, damaged=damaged)
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as img:
            img.load()
            pixels = np.asarray(img, dtype=np.uint8)
    except Exception as exc:  # checked above: a decoder's surprise is still a bad golden
        raise ManifestError(path, f"{damaged}: {_text(str(exc))}") from None
    if pixels.shape != (height, width, 3):
        raise ManifestError(path, f"{damaged}: decodes to an array of shape {pixels.shape}")
    return pixels.copy()


# -- reading files of a golden set ------------------------------------------------------------
_FILE_KINDS = (
    (stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str | None:
    """What a file that is not a regular file is (from ``lstat``), or ``None``."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")


def plain_file_problem(path: Path, st: os.stat_result) -> str | None:
    """Why the file of ``lstat`` result ``st`` cannot be a golden file, or ``None``."""
    kind = file_kind(st.st_mode)
    if kind is not None:
        links = " (links are not followed)" if stat.S_ISLNK(st.st_mode) else ""
        return f"is not a regular file: it is {kind}; golden files are regular files{links}"
    if st.st_nlink > 1:
        return (f"has {st.st_nlink} hard links; golden files have one (a hard link shares its "
                "data with a file that may lie outside the set)")
    return None


def read_plain_file(path: Path, kind: str, limit: int) -> bytes | None:
    """The bytes of a golden file: a regular file, not a link (symbolic or hard), at most
    ``limit`` bytes, read without blocking (a FIFO is refused); ``None`` if it is absent."""
    from conformance.safeio import read_bytes

    try:
        before = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ManifestError(path, f"cannot read {kind}: {os_reason(exc)}") from None
    problem = plain_file_problem(path, before)
    if problem:
        raise ManifestError(path, problem)
    data = read_bytes(path, kind, limit, error=ManifestError)
    try:
        after = os.lstat(path)
    except OSError:
        after = None
    if after is None or (after.st_ino, after.st_dev) != (before.st_ino, before.st_dev) or (
        plain_file_problem(path, after)
    ):
        raise ManifestError(path, f"{kind} was replaced while it was read")
    return data


def atomic_write(path: Path, data: bytes, kind: str = "file") -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory, with the
    user's umask (:func:`conformance.safeio.write_atomic`): a full disk or an unwritable
    folder is an :class:`~conformance.errors.OutputError` naming ``path`` and the cause, and
    leaves no temporary file."""
    write_atomic(path, data, kind=kind)


#: The writer lock of a golden set, inside the set's folder. An empty file, never removed
#: (removing it would let two writers lock two different files); ``validate`` allows it.
LOCK_FILE = ".lock"


@contextlib.contextmanager
def set_lock(directory: Path) -> Iterator[None]:
    """The golden set's writer lock (:func:`conformance.safeio.exclusive_lock` on
    ``<directory>/.lock``) for the block. Every writer into a set takes it, whatever its
    ``TMPDIR``; the kernel releases it when the holder exits or is killed."""
    with exclusive_lock(directory / LOCK_FILE, "the golden set's lock file",
                        "every writer into a set takes this lock (make it and its folder "
                        "writable to the user who records)"):
        yield


def _make_set_dir(directory: Path) -> None:
    """Create a golden set's folder (and those above it); a failure names the folder."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(directory, f"cannot create the golden set's folder: "
                          f"{os_reason(exc)}") from None


class IdentityMismatchError(GoldenExistsError):
    """Recording into (or replacing) a golden set that belongs to another identity."""


#: what parsing or decoding can raise besides ManifestError on an input no check foresaw
_UNEXPECTED = (
    ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError, RecursionError,
    UnicodeError, OSError, zlib.error, struct.error, MemoryError,
)


def _is_class(name: str) -> bool:
    try:
        HardwareClass(name)
    except ValueError:
        return False
    return True


def _same_owner(a: Identity | None, b: Identity | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.same_as(b)


def _describe(identity: Identity | None) -> str:
    return "an unknown identity" if identity is None else identity.describe()


def _require_owner(manifest: Manifest, identity: Identity | None, directory: Path,
                   consequence: str) -> None:
    """Only the identity a set belongs to writes into it (``consequence`` ends the error)."""
    if not _same_owner(manifest.identity, identity):
        differs = ""
        if manifest.identity is not None and identity is not None:
            # in words: threads, library versions, the probes and features that differ
            differs = f" (what differs: {explain(identity, manifest.identity)})"
        raise IdentityMismatchError(
            directory / MANIFEST, f"holds the goldens of {_describe(manifest.identity)}; "
            f"this machine is {_describe(identity)}{differs}{consequence}")


class GoldenStore:
    """Golden sets under ``root`` (one directory per model, then per hardware class).

    Every problem with a golden set (a manifest of the wrong shape, an image that is not a
    canonical PNG, a file that is not a regular file, a symbolically linked folder) is a
    :class:`ManifestError` naming the file: the methods a conformance run calls raise no other
    exception for bad goldens. The folders below ``root`` are never followed through links.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._manifests: dict[tuple[str, str], Manifest | None] = {}
        self._refused: dict[tuple[str, str], ManifestError] = {}
        #: what recording did that a user should hear of (a PNG adopted after a crash)
        self.notices: list[str] = []

    def set_dir(self, model: str, hardware_class: str) -> Path:
        return self.root / model / hardware_class

    def _folders_exist(self, model: str, hardware_class: str | None = None) -> bool:
        """Whether ``<root>/<model>[/<class>]`` exists; a link or a non-folder there raises.
        A name that is not a model (or class) name has no set: nothing is looked up."""
        if not isinstance(model, str) or not _MODEL.fullmatch(model):
            return False
        parts = [model]
        if hardware_class is not None:
            if not isinstance(hardware_class, str) or not _is_class(hardware_class):
                return False
            parts.append(hardware_class)
        path = self.root
        for part in parts:
            path = path / part
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise ManifestError(path, f"cannot be read: {os_reason(exc)}") from None
            if stat.S_ISLNK(st.st_mode):
                raise ManifestError(path, "is a symbolic link; golden set folders are plain "
                                    "folders (links are not followed)")
            if not stat.S_ISDIR(st.st_mode):
                raise ManifestError(path, f"is {file_kind(st.st_mode)}, not a folder of "
                                    "golden sets")
        return True

    def classes(self, model: str) -> list[str]:
        """Hardware classes that have a golden set for ``model``.

        A class folder is listed when it holds a ``manifest.json`` of any kind, or is itself
        a symbolic link, so that a broken set is refused when it is looked up rather than
        skipped; raises :class:`ManifestError` when the model's folder cannot be listed.
        """
        if not self._folders_exist(model):
            return []
        base = self.root / model
        try:
            names = sorted(os.listdir(base))
        except OSError as exc:
            raise ManifestError(base, f"cannot be read: {os_reason(exc)}") from None
        out = []
        for name in names:
            if len(name) > 80 or not _is_class(name):
                continue
            folder = base / name
            if folder.is_symlink() or os.path.lexists(folder / MANIFEST):
                out.append(name)
        return out

    def models(self) -> list[str]:
        """The model folders under the root (plain folders with a model's name); raises
        :class:`ManifestError` when the root exists but cannot be listed."""
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ManifestError(self.root, f"cannot be read: {os_reason(exc)}") from None
        return [n for n in names if _MODEL.fullmatch(n)
                and stat.S_ISDIR(os.lstat(self.root / n).st_mode)]

    def readable_sets(self, models: Iterable[str]) -> Iterator[tuple[str, str, Manifest]]:
        """(model, class, manifest) of every golden set of ``models`` that can be read, in
        order; a model folder or a set that cannot be read is passed over (the checks that
        read it report it)."""
        for model in dict.fromkeys(models):
            try:
                classes = self.classes(model)
            except ConformanceInputError:
                continue
            for cls in classes:
                try:
                    manifest = self.manifest(model, cls)
                except ConformanceInputError:
                    continue
                if manifest is not None:
                    yield model, cls, manifest

    def manifest(self, model: str, hardware_class: str) -> Manifest | None:
        """The manifest of a golden set, or ``None`` if there is none (cached, as is a
        refusal)."""
        key = (model, hardware_class)
        if key in self._refused:
            first = self._refused[key]
            raise ManifestError(first.where, first.message)
        if key not in self._manifests:
            try:
                self._manifests[key] = self._read_manifest(model, hardware_class)
            except ManifestError as exc:
                self._refused[key] = exc
                raise
        return self._manifests[key]

    def _read_manifest(self, model: str, hardware_class: str) -> Manifest | None:
        path = self.set_dir(model, hardware_class) / MANIFEST
        try:
            if not self._folders_exist(model, hardware_class):
                return None
            data = read_plain_file(path, MANIFEST_KIND, MANIFEST_LIMIT)
            if data is None:
                return None
            return parse_manifest(data, path, model, hardware_class)
        except ManifestError:
            raise
        except ConformanceInputError as exc:
            raise ManifestError(exc.where, exc.message) from None
        except _UNEXPECTED as exc:  # a shape no check foresaw: still this manifest's fault
            raise ManifestError(path, f"cannot be read as a golden manifest: "
                                f"{type(exc).__name__}: {_text(str(exc))}") from None

    def lookup(self, item: Item, hardware_class: str) -> GoldenEntry | None:
        return self.lookup_id(item.model, item.id, hardware_class)

    def lookup_id(self, model: str, item_id: str, hardware_class: str) -> GoldenEntry | None:
        manifest = self.manifest(model, hardware_class)
        return None if manifest is None else manifest.entries.get(item_id)

    def load_image(self, entry: GoldenEntry, hardware_class: str) -> np.ndarray:
        """The golden's pixels, after checking file and pixel digests against the manifest."""
        path = self.set_dir(entry.model, hardware_class) / entry.file
        try:
            return self._load_image(path, entry, hardware_class)
        except ManifestError:
            raise
        except ConformanceInputError as exc:
            raise ManifestError(exc.where, exc.message) from None
        except _UNEXPECTED as exc:
            raise ManifestError(path, f"cannot be read as a golden PNG: "
                                f"{type(exc).__name__}: {_text(str(exc))}") from None

    def _load_image(self, path: Path, entry: GoldenEntry, hardware_class: str) -> np.ndarray:
        if not isinstance(entry.file, str) or not _FILE.fullmatch(entry.file) or (
            ".." in entry.file
        ):
            raise ManifestError(path.parent / MANIFEST, f"entry {show(entry.id)}: file "
                                f"{show(entry.file)} is not a plain lower-case .png name")
        exists = self._folders_exist(entry.model, hardware_class)
        data = read_plain_file(path, PNG_KIND, PNG_LIMIT) if exists else None
        if data is None:
            raise ManifestError(
                path, f"listed in {MANIFEST} as {show(entry.id)} but cannot be read: no such "
                "file"
            )
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry.file_sha256:
            raise ManifestError(
                path,
                f"file SHA-256 {digest[:12]}... does not match the manifest's "
                f"{str(entry.file_sha256)[:12]}... (changed after recording)",
            )
        image = decode_png(data, path, entry.width, entry.height)
        if pixel_sha256(image) != entry.pixel_sha256:
            raise ManifestError(path, "decoded pixels do not match the manifest's pixel_sha256")
        return image

    def record(
        self,
        item: Item,
        hardware_class: str,
        image: np.ndarray,
        trace: list[StepTrace],
        fingerprint: dict[str, Any],
        recorded_at: str,
        command: str,
        force: bool = False,
        identity: Identity | None = None,
    ) -> tuple[Path, bool]:
        """Write ``image`` as the golden for ``item``; returns (png path, replaced?).

        A set belongs to one identity: recording into a set of another identity refuses,
        with or without ``force`` (it would mix two machines' bits in one set)."""
        HardwareClass(hardware_class)
        directory = self.set_dir(item.model, hardware_class)
        self._folders_exist(item.model, hardware_class)  # never write through a link
        png = encode_png(image)
        phash, dhash = perceptual_hashes(image)
        entry = GoldenEntry(
            id=item.id,
            model=item.model,
            case=item.case.name,
            resolution=str(item.resolution),
            precision=item.precision,
            file=f"{item.stem}.png",
            width=int(image.shape[1]),
            height=int(image.shape[0]),
            pixel_sha256=pixel_sha256(image),
            file_sha256=hashlib.sha256(png).hexdigest(),
            phash=phash.hex,
            dhash=dhash.hex,
            params=item.case.generation_params(),
            trace=[s.to_dict() for s in trace],
            fingerprint=fingerprint,
            recorded_at=recorded_at,
            command=command,
        )
        # What is written must read back as a canonical golden PNG.
        check_png(png, directory / entry.file, entry.width, entry.height)
        _make_set_dir(directory)
        with set_lock(directory):
            # Temporary files are only written under this lock: any left is from a writer
            # that was killed mid-write, and never part of the set.
            for stale in directory.glob(".*.tmp"):
                stale.unlink(missing_ok=True)
            self._manifests.pop((item.model, hardware_class), None)
            self._refused.pop((item.model, hardware_class), None)
            manifest = self.manifest(item.model, hardware_class) or Manifest(
                item.model, hardware_class, identity=identity
            )
            _require_owner(manifest, identity, directory,
                           ". Two configurations with different bits never share a set: "
                           "record into another --golden-dir (or --out)")
            replaced = item.id in manifest.entries
            target = directory / entry.file
            if replaced and not force:
                raise GoldenExistsError(
                    target,
                    f"a golden for {item.id} ({hardware_class}) exists; re-run with --force "
                    "to replace it",
                )
            adopt = not replaced and not force and self._left_by_a_crash(target, png)
            old = manifest.entries.get(item.id)
            manifest.entries[item.id] = entry
            text = manifest.to_json()
            # What is written must read back: never leave a manifest the store rejects.
            parse_manifest(text, directory / MANIFEST, item.model, hardware_class)
            if not adopt:
                atomic_write(target, png, PNG_KIND)
            atomic_write(directory / MANIFEST, text.encode("utf-8"), MANIFEST_KIND)
            if adopt:
                self._notice(f"{target}: adopted: an interrupted record left this PNG "
                             f"undeclared, and it holds the same bytes as this generation of "
                             f"{item.id}; now listed in {MANIFEST}")
            if old is not None and old.probes is not None:  # --force: they probed the old image
                (directory / old.probes["file"]).unlink(missing_ok=True)
                if old.probes.get("inputs"):
                    (directory / old.probes["inputs"]["file"]).unlink(missing_ok=True)
            self._manifests[(item.model, hardware_class)] = manifest
        return target, replaced

    def _left_by_a_crash(self, target: Path, png: bytes) -> bool:
        """Whether ``target``, a PNG no manifest entry names, is one an interrupted record
        wrote (a crash or a full disk between the PNG and the manifest): the same bytes as
        ``png``, the golden about to be written, so it is adopted. ``False`` when there is
        no such file; any other file there is refused (:class:`GoldenExistsError`)."""
        found = read_plain_file(target, PNG_KIND, PNG_LIMIT)
        if found is None:
            return False
        if found != png:
            raise GoldenExistsError(
                target,
                f"exists but is not listed in {MANIFEST} and differs from this generation; "
                "move it away or re-run with --force to replace it",
            )
        return True

    def _notice(self, line: str) -> None:
        """Keep ``line`` in :attr:`notices` and print it to standard error."""
        self.notices.append(line)
        print(f"conformance: {line}", file=sys.stderr, flush=True)

    def record_probes(self, item: Item, hardware_class: str, records: Any,
                      identity: Identity | None = None, inputs: Any = None,
                      recorded_at: str | None = None, command: str | None = None) -> Path:
        """Store module probes (:class:`~conformance.localize.ProbeRecords`) beside the
        recorded golden of ``item``: ``<stem>.probes.json.gz``, named in its entry with
        when and by which command (``recorded_at``, ``command``) when given. Only the
        set's own identity adds them (they describe its machine's bits)."""
        import gzip

        directory = self.set_dir(item.model, hardware_class)
        data = gzip.compress(records.to_json().encode("utf-8"), compresslevel=9, mtime=0)
        if len(data) > PROBES_LIMIT:
            raise ValueError(f"{item.id}: the probe file would be {len(data)} bytes; at most "
                             f"{PROBES_LIMIT}")
        if not self._folders_exist(item.model, hardware_class):
            raise KeyError(f"{item.id}: no golden in {directory} to attach probes to")
        with set_lock(directory):
            self._manifests.pop((item.model, hardware_class), None)
            self._refused.pop((item.model, hardware_class), None)
            manifest = self.manifest(item.model, hardware_class)
            if manifest is None or item.id not in manifest.entries:
                raise KeyError(f"{item.id}: no golden in {directory} to attach probes to")
            _require_owner(manifest, identity, directory,
                           ": its probes would not describe the set's bits")
            entry = manifest.entries[item.id]
            target = directory / (entry.file.removesuffix(".png") + PROBES_SUFFIX)
            probes: dict[str, Any] = {"file": target.name,
                                      "sha256": hashlib.sha256(data).hexdigest(),
                                      "steps": sorted(records.steps)}
            probes.update({k: v for k, v in (("recorded_at", recorded_at),
                                             ("command", command)) if v is not None})
            blob = None if inputs is None else inputs.to_bytes()
            if blob is not None:
                probes["inputs"] = {"file": entry.file.removesuffix(".png") + INPUTS_SUFFIX,
                                    "sha256": hashlib.sha256(blob).hexdigest()}
            manifest.entries[item.id] = replace(entry, probes=probes)
            text = manifest.to_json()
            parse_manifest(text, directory / MANIFEST, item.model, hardware_class)
            if blob is not None:
                atomic_write(directory / probes["inputs"]["file"], blob, "input capture")
            atomic_write(target, data, "probe file")
            atomic_write(directory / MANIFEST, text.encode("utf-8"), MANIFEST_KIND)
            self._manifests[(item.model, hardware_class)] = manifest
        return target

    def _sidecar(self, entry: GoldenEntry, hardware_class: str, ref: dict[str, Any],
                 what: str, kind: str, limit: int) -> tuple[Path, bytes]:
        """A file an entry names beside its PNG (``ref``: ``file`` and ``sha256``): read as
        a plain file of at most ``limit`` bytes and checked against its SHA-256."""
        path = self.set_dir(entry.model, hardware_class) / ref["file"]
        data = read_plain_file(path, kind, limit)
        if data is None:
            raise ManifestError(path, f"declared as the {what} of {show(entry.id)} but missing")
        if hashlib.sha256(data).hexdigest() != ref["sha256"]:
            raise ManifestError(path, "SHA-256 does not match the manifest's")
        return path, data

    def load_probes(self, entry: GoldenEntry, hardware_class: str) -> Any:
        """The golden's module probes (untrusted: size-capped, hash-checked, inflated with a
        bound, validated), or ``None`` when it has none; a bad file raises
        :class:`ManifestError` naming it."""
        if entry.probes is None:
            return None
        from conformance.localize import ProbeFileError, ProbeRecords

        path, data = self._sidecar(entry, hardware_class, entry.probes, "probes", "probe file",
                                   PROBES_LIMIT)
        text = gunzip_bounded(data, PROBES_JSON_LIMIT, str(path), ManifestError)
        try:
            return ProbeRecords.from_json(text, str(path))
        except ProbeFileError as exc:
            raise ManifestError(path, exc.message) from None

    def load_inputs(self, entry: GoldenEntry, hardware_class: str,
                    header_only: bool = False) -> Any:
        """The golden's captured denoiser input (:class:`~conformance.localize.InputCapture`),
        or ``None``; untrusted: size-capped, hash-checked, validated (``header_only``: from
        the safetensors header, without torch; returns its metadata)."""
        inputs = (entry.probes or {}).get("inputs")
        if not inputs:
            return None
        from conformance.localize import MAX_CAPTURE_BYTES, InputCapture, ProbeFileError

        path, data = self._sidecar(entry, hardware_class, inputs, "inputs", "input capture",
                                   MAX_CAPTURE_BYTES + 2**20)
        try:
            if header_only:
                return InputCapture.check_bytes(data, str(path))
            return InputCapture.from_bytes(data, str(path))
        except ProbeFileError as exc:
            raise ManifestError(path, exc.message) from None
