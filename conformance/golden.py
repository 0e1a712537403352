"""Golden store: ``<root>/<model>/<hardware-class>/manifest.json`` plus one PNG per item.

The manifest is the source of truth: every entry names its PNG and holds the file's SHA-256,
the decoded pixels' SHA-256, perceptual hashes, the per-step latent trace, the generation
parameters and the environment fingerprint that recorded it. A golden whose files do not
agree with its manifest is rejected with a :class:`~conformance.errors.ManifestError`.

Recording writes the PNG and then the manifest, each to a temporary file renamed into place,
under a lock (xdist workers record into the same manifest), and refuses to replace an
existing golden unless ``force`` is set.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from conformance.cases import Item
from conformance.errors import GoldenExistsError, ManifestError, type_name
from conformance.hardware import HardwareClass
from conformance.identity import Identity
from conformance.metrics import as_rgb_uint8, perceptual_hashes, pixel_sha256
from conformance.trace import StepTrace

SCHEMA_VERSION = 2
#: Schema 1 sets (before the measured identity) are read only by ``conformance migrate``.
LEGACY_VERSION = 1
MANIFEST = "manifest.json"
MAX_PIXELS = 4096 * 4096  # refuse larger goldens (decompression bombs)

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
_FILE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,150}\.png$")

_ENTRY_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "model": str,
    "case": str,
    "resolution": str,
    "precision": str,
    "file": str,
    "width": int,
    "height": int,
    "pixel_sha256": str,
    "file_sha256": str,
    "phash": str,
    "dhash": str,
    "params": dict,
    "trace": list,
    "fingerprint": dict,
    "recorded_at": str,
    "command": str,
}


@dataclass(frozen=True)
class GoldenEntry:
    id: str
    model: str
    case: str
    resolution: str
    precision: str
    file: str
    width: int
    height: int
    pixel_sha256: str
    file_sha256: str
    phash: str
    dhash: str
    params: dict[str, Any]
    trace: list[dict[str, Any]]
    fingerprint: dict[str, Any]
    recorded_at: str
    command: str

    def steps(self) -> list[StepTrace]:
        return [StepTrace.from_dict(s) for s in self.trace]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def parse_manifest(text: str, path: Path, model: str | None = None,
                   hardware_class: str | None = None, legacy: bool = False) -> Manifest:
    """Parse and validate manifest ``text`` read from ``path``.

    ``model`` / ``hardware_class``, when given, must match the manifest (they come from
    the directory the manifest sits in). ``legacy`` also accepts schema 1 (for migration).
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(
            path, f"not valid JSON (truncated or edited?): {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}"
        ) from None
    if not isinstance(data, dict):
        raise ManifestError(path, f"top level must be an object, not {type_name(data)}")
    version = data.get("schema_version")
    if version == LEGACY_VERSION and not legacy:
        raise ManifestError(
            path, "schema_version 1 (recorded before the measured identity); convert the "
            "set with: conformance migrate SRC --out DIR"
        )
    if version not in (SCHEMA_VERSION, LEGACY_VERSION) or isinstance(version, bool):
        raise ManifestError(
            path, f"schema_version is {version!r}; this version reads {SCHEMA_VERSION}"
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
        raise ManifestError(path, f"unknown top-level keys: {', '.join(sorted(unknown))}")
    try:
        HardwareClass(data["hardware_class"])
    except ValueError as exc:
        raise ManifestError(path, f"key 'hardware_class': {exc}") from None
    if model is not None and data["model"] != model:
        raise ManifestError(path, f"model is {data['model']!r} but the directory is {model!r}")
    if hardware_class is not None and data["hardware_class"] != hardware_class:
        raise ManifestError(
            path,
            f"hardware_class is {data['hardware_class']!r} but the directory is "
            f"{hardware_class!r}",
        )
    entries_raw = data.get("entries")
    if not isinstance(entries_raw, dict):
        raise ManifestError(path, "key 'entries' is missing or not an object")
    identity = None
    if data.get("identity") is not None:
        try:
            identity = Identity.from_dict(data["identity"])
        except ValueError as exc:
            raise ManifestError(path, f"key 'identity': {exc}") from None
        if identity.hardware_class != data["hardware_class"]:
            raise ManifestError(
                path, f"identity class {identity.hardware_class!r} is not the set's "
                f"hardware_class {data['hardware_class']!r}"
            )
    manifest = Manifest(data["model"], data["hardware_class"], schema_version=version,
                        identity=identity)
    files: dict[str, str] = {}
    for key, raw in entries_raw.items():
        entry = _parse_entry(key, raw, path, data["model"])
        if entry.file in files:
            raise ManifestError(
                path, f"entry {key!r}: file {entry.file!r} is also used by {files[entry.file]!r}"
            )
        files[entry.file] = key
        manifest.entries[key] = entry
    return manifest


def _parse_entry(key: str, raw: Any, path: Path, model: str) -> GoldenEntry:
    where = f"entry {key!r}"
    if not isinstance(raw, dict):
        raise ManifestError(path, f"{where} must be an object, not {type_name(raw)}")
    missing = [k for k in _ENTRY_FIELDS if k not in raw]
    if missing:
        raise ManifestError(path, f"{where}: missing keys: {', '.join(missing)}")
    unknown = [k for k in raw if k not in _ENTRY_FIELDS]
    if unknown:
        raise ManifestError(path, f"{where}: unknown keys: {', '.join(unknown)}")
    for k, expected in _ENTRY_FIELDS.items():
        value = raw[k]
        if not isinstance(value, expected) or isinstance(value, bool):
            raise ManifestError(
                path, f"{where}: key {k!r} must be {expected.__name__}, not {type_name(value)}"
            )
    entry = GoldenEntry(**raw)
    expected_id = f"{entry.model}/{entry.case}/{entry.resolution}/{entry.precision}"
    if entry.id != key or entry.id != expected_id:
        raise ManifestError(path, f"{where}: id {entry.id!r} does not match its fields")
    if entry.model != model:
        raise ManifestError(path, f"{where}: model {entry.model!r} is not {model!r}")
    if not _FILE.match(entry.file) or ".." in entry.file:
        raise ManifestError(
            path, f"{where}: file {entry.file!r} is not a plain lower-case .png name"
        )
    for k in ("pixel_sha256", "file_sha256"):
        if not _HEX64.match(getattr(entry, k)):
            raise ManifestError(path, f"{where}: key {k!r} is not 64 lower-case hex digits")
    for k in ("phash", "dhash"):
        if not _HEX16.match(getattr(entry, k)):
            raise ManifestError(path, f"{where}: key {k!r} is not 16 lower-case hex digits")
    if f"{entry.width}x{entry.height}" != entry.resolution:
        raise ManifestError(path, f"{where}: width/height do not match {entry.resolution!r}")
    if entry.width * entry.height > MAX_PIXELS or entry.width < 1 or entry.height < 1:
        raise ManifestError(path, f"{where}: {entry.resolution} is outside 1..{MAX_PIXELS} px")
    try:
        entry.steps()
    except (TypeError, ValueError) as exc:
        raise ManifestError(path, f"{where}: key 'trace' is malformed: {exc}") from None
    return entry


def encode_png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(as_rgb_uint8(image), "RGB").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def decode_png(data: bytes, path: Path, width: int, height: int) -> np.ndarray:
    """Decode a golden PNG, checking declared size and mode before decompressing."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "PNG":
                raise ManifestError(path, f"is a {img.format} file, not PNG")
            if img.size != (width, height):
                raise ManifestError(
                    path, f"is {img.size[0]}x{img.size[1]}, the manifest says {width}x{height}"
                )
            if img.mode != "RGB":
                raise ManifestError(path, f"has mode {img.mode}, expected RGB")
            img.load()
            return np.asarray(img, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ManifestError(path, f"cannot be decoded as PNG: {exc}") from None


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive lock per golden set, kept outside the golden tree (nothing to commit)."""
    key = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:24]
    lock_path = Path(tempfile.gettempdir()) / f"conformance-golden-{key}.lock"
    with open(lock_path, "a+b") as fh:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: single-writer assumption
            yield
            return
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class IdentityMismatchError(GoldenExistsError):
    """Recording into (or replacing) a golden set that belongs to another identity."""


def _same_owner(a: Identity | None, b: Identity | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.same_as(b)


def _describe(identity: Identity | None) -> str:
    return "an unknown identity" if identity is None else identity.describe()


class GoldenStore:
    """Golden sets under ``root`` (one directory per model, then per hardware class)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._manifests: dict[tuple[str, str], Manifest | None] = {}

    def set_dir(self, model: str, hardware_class: str) -> Path:
        return self.root / model / hardware_class

    def classes(self, model: str) -> list[str]:
        """Hardware classes that have a golden set for ``model``."""
        base = self.root / model
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if (p / MANIFEST).is_file())

    def manifest(self, model: str, hardware_class: str) -> Manifest | None:
        """The manifest of a golden set, or ``None`` if there is none (cached)."""
        key = (model, hardware_class)
        if key not in self._manifests:
            self._manifests[key] = self._read_manifest(model, hardware_class)
        return self._manifests[key]

    def _read_manifest(self, model: str, hardware_class: str) -> Manifest | None:
        path = self.set_dir(model, hardware_class) / MANIFEST
        if path.is_symlink():
            raise ManifestError(path, "is a symbolic link; golden files must be regular files")
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(path, f"cannot be read: {exc}") from None
        return parse_manifest(text, path, model, hardware_class)

    def lookup(self, item: Item, hardware_class: str) -> GoldenEntry | None:
        return self.lookup_id(item.model, item.id, hardware_class)

    def lookup_id(self, model: str, item_id: str, hardware_class: str) -> GoldenEntry | None:
        manifest = self.manifest(model, hardware_class)
        return None if manifest is None else manifest.entries.get(item_id)

    def load_image(self, entry: GoldenEntry, hardware_class: str) -> np.ndarray:
        """The golden's pixels, after checking file and pixel digests against the manifest."""
        path = self.set_dir(entry.model, hardware_class) / entry.file
        if path.is_symlink():
            raise ManifestError(path, "is a symbolic link; golden files must be regular files")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ManifestError(
                path, f"listed in {MANIFEST} as {entry.id!r} but cannot be read: "
                f"{exc.strerror or exc}"
            ) from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry.file_sha256:
            raise ManifestError(
                path,
                f"file SHA-256 {digest[:12]}... does not match the manifest's "
                f"{entry.file_sha256[:12]}... (changed after recording)",
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
        directory.mkdir(parents=True, exist_ok=True)
        with _locked(directory):
            # Temporary files are only written under this lock: any left is from a writer
            # that was killed mid-write, and never part of the set.
            for stale in directory.glob(".*.tmp"):
                stale.unlink(missing_ok=True)
            self._manifests.pop((item.model, hardware_class), None)
            manifest = self.manifest(item.model, hardware_class) or Manifest(
                item.model, hardware_class, identity=identity
            )
            if not _same_owner(manifest.identity, identity):
                raise IdentityMismatchError(
                    directory / MANIFEST,
                    f"holds the goldens of {_describe(manifest.identity)}; this machine is "
                    f"{_describe(identity)}. Two configurations with different bits never "
                    "share a set: record into another --golden-dir (or --out)",
                )
            replaced = item.id in manifest.entries
            target = directory / entry.file
            if replaced and not force:
                raise GoldenExistsError(
                    target,
                    f"a golden for {item.id} ({hardware_class}) exists; re-run with --force "
                    "to replace it",
                )
            if not replaced and target.exists() and not force:
                raise GoldenExistsError(
                    target,
                    f"exists but is not listed in {MANIFEST}; move it away or re-run with "
                    "--force to replace it",
                )
            manifest.entries[item.id] = entry
            text = manifest.to_json()
            # What is written must read back: never leave a manifest the store rejects.
            parse_manifest(text, directory / MANIFEST, item.model, hardware_class)
            atomic_write(target, png)
            atomic_write(directory / MANIFEST, text.encode("utf-8"))
            self._manifests[(item.model, hardware_class)] = manifest
        return target, replaced
