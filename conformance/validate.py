"""``conformance validate``: check golden sets before trusting them.

Golden sets come from contributors, so they are untrusted input. For every set
(``<root>/<model>/<hardware-class>/``) this checks the manifest's schema, every file and
pixel SHA-256, that every PNG decodes to its declared size and mode within the pixel limit,
that there are no symbolic links, sub-folders, undeclared files, pickles or executables,
that the set names the identity it was recorded on and that the folder's class is the one
that identity implies, that every entry's fingerprint agrees with it, and that each image is
within the perceptual tier of the reference class's golden for the same item.

With ``--base DIR`` (the golden root a pull request merges into), a set that exists there
under the same path must belong to the same identity and keep every golden: a contribution
that would replace another machine's goldens, or drop or change recorded ones, is a problem
naming both identities. Every problem is reported, with the file and the reason; the input
is only read.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance import PROJECT_ROOT
from conformance.errors import ConformanceInputError, ManifestError
from conformance.golden import MANIFEST, MAX_PIXELS, GoldenEntry, GoldenStore, parse_manifest
from conformance.hardware import HardwareClass

MAX_MANIFEST_BYTES = 16 * 2**20
MAX_PNG_BYTES = 32 * 2**20
_FINGERPRINT_KEYS = ("hardware_class", "device", "threads", "torch", "diffusers")
_SUSPICIOUS_SUFFIXES = {
    ".pkl": "a pickle", ".pickle": "a pickle", ".pt": "a torch pickle", ".pth": "a torch pickle",
    ".bin": "a binary (often a pickled checkpoint)", ".ckpt": "a pickled checkpoint",
    ".npy": "a numpy array (may hold pickles)", ".npz": "a numpy archive (may hold pickles)",
    ".exe": "an executable", ".sh": "a shell script", ".py": "Python code",
    ".so": "a shared library", ".dll": "a shared library",
}


@dataclass(frozen=True, order=True)
class Problem:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def _content_kind(head: bytes) -> str | None:
    """What a file's first bytes say it is, when that is something a golden set must not hold."""
    if head[:1] == b"\x80" and head[1:2] in {bytes([n]) for n in range(2, 6)}:
        return "a pickle"
    if head.startswith(b"\x7fELF"):
        return "an ELF executable"
    if head.startswith(b"MZ"):
        return "a Windows executable"
    if head.startswith(b"#!"):
        return "a script"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (torch checkpoints are zipped pickles)"
    return None


def find_sets(paths: list[Path]) -> tuple[list[Path], list[Problem]]:
    """Golden set folders under each path (a set, a model folder or a golden root)."""
    sets: list[Path] = []
    problems: list[Problem] = []
    for path in paths:
        if path.is_symlink():
            problems.append(Problem(str(path), "is a symbolic link; golden sets are plain folders"))
            continue
        if not path.exists():
            problems.append(Problem(str(path), "does not exist"))
            continue
        if not path.is_dir():
            problems.append(Problem(str(path), "is not a folder; give a golden set, a model "
                                               "folder or a golden root"))
            continue
        found = _sets_below(path)
        if not found:
            problems.append(Problem(str(path), f"holds no golden set (no {MANIFEST} at depth 0-2)"))
        sets.extend(found)
    return sorted(dict.fromkeys(sets)), problems


def _sets_below(path: Path) -> list[Path]:
    if (path / MANIFEST).exists() or (path / MANIFEST).is_symlink():
        return [path]
    out = []
    for child in sorted(path.iterdir()):
        if child.is_dir() and not child.is_symlink():
            if (child / MANIFEST).exists():
                out.append(child)
            else:
                out.extend(g for g in sorted(child.iterdir())
                           if g.is_dir() and not g.is_symlink() and (g / MANIFEST).exists())
    return out


class Validator:
    """Validates golden sets against a reference golden root."""

    def __init__(self, reference_root: Path, reference_class: str, tolerances: Any,
                 base_root: Path | None = None) -> None:
        self.reference = GoldenStore(reference_root)
        self.base = GoldenStore(base_root) if base_root is not None else None
        self.reference_root = reference_root
        self.reference_class = reference_class
        self.tolerances = tolerances
        self.images_checked = 0

    def validate_set(self, set_dir: Path) -> list[Problem]:
        try:
            return self._validate_set(set_dir)
        except Exception as exc:  # never a traceback for bad input
            return [Problem(str(set_dir), f"cannot be validated: {type(exc).__name__}: {exc}")]

    def _validate_set(self, set_dir: Path) -> list[Problem]:
        problems: list[Problem] = []
        model, cls = set_dir.parent.name, set_dir.name
        try:
            HardwareClass(cls)
        except ValueError as exc:
            problems.append(Problem(str(set_dir), f"folder name: {exc}"))
        manifest_path = set_dir / MANIFEST
        if manifest_path.is_symlink() or not manifest_path.is_file():
            return [*problems, Problem(str(manifest_path), "is not a regular file")]
        if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
            return [*problems, Problem(str(manifest_path),
                                       f"is larger than {MAX_MANIFEST_BYTES} bytes")]
        try:
            text = manifest_path.read_bytes().decode("utf-8")
            manifest = parse_manifest(text, manifest_path, model, cls)
        except UnicodeDecodeError:
            return [*problems, Problem(str(manifest_path), "is not UTF-8 text")]
        except ManifestError as exc:
            return [*problems, Problem(exc.where, exc.message)]

        problems += self._check_identity(manifest_path, cls, manifest)
        problems += self._check_base(manifest_path, model, cls, manifest)
        declared = {e.file: e for e in manifest.entries.values()}
        problems += self._check_tree(set_dir, declared)
        for entry in manifest.entries.values():
            problems += self._check_entry(set_dir, cls, entry)
        return problems

    def _check_identity(self, where: Path, cls: str, manifest: Any) -> list[Problem]:
        """The set names one identity, its class is the one the identity implies, and every
        entry was recorded under it."""
        from conformance.hardware import cpu_class_name

        ident = manifest.identity
        if ident is None:
            return [Problem(str(where), "names no identity (key 'identity' is null): record "
                            "the set with `conformance record`, or migrate it")]
        problems = []
        if cls.startswith("cpu-"):
            try:
                implied = cpu_class_name(ident.features)
            except (KeyError, TypeError, AttributeError) as exc:
                implied = f"? ({exc})"
            if implied != cls:
                problems.append(Problem(str(where), f"the identity's CPU features imply class "
                                        f"{implied!r}, not the folder's {cls!r}"))
        for entry in manifest.entries.values():
            fp = entry.fingerprint
            differ = [k for k in ("threads", "torch", "diffusers", "transformers",
                                  "deterministic")
                      if k in fp and fp.get(k) != ident.stack.get(k)]
            if cls.startswith("cpu-") and fp.get("device_name") not in (
                None, ident.features.get("model_name")
            ):
                differ.append("device_name")
            if differ:
                problems.append(Problem(str(where), f"entry {entry.id!r} was recorded under "
                                        f"another configuration than the set's identity "
                                        f"({', '.join(differ)} differ)"))
        return problems

    def _check_base(self, where: Path, model: str, cls: str, manifest: Any) -> list[Problem]:
        """A contribution may add goldens; it never replaces another machine's or drops any."""
        if self.base is None:
            return []
        try:
            old = self.base.manifest(model, cls)
        except ConformanceInputError as exc:
            return [Problem(exc.where, f"base set unreadable: {exc.message}")]
        if old is None:
            return []
        new_id, old_id = manifest.identity, old.identity
        if new_id is None or old_id is None or not new_id.same_as(old_id):
            from conformance.identity import explain

            why = f" ({explain(new_id, old_id)})" if new_id and old_id else ""
            return [Problem(str(where), "would replace the goldens of "
                            f"{old_id.describe() if old_id else 'an unidentified machine'} with "
                            f"those of {new_id.describe() if new_id else 'an unidentified one'}"
                            f"{why}; a new machine's set goes under its own class folder")]
        problems = []
        dropped = sorted(set(old.entries) - set(manifest.entries))
        if dropped:
            problems.append(Problem(str(where), f"drops {len(dropped)} recorded golden(s) of "
                                    f"the base set: {', '.join(dropped[:5])}"))
        changed = sorted(k for k in set(old.entries) & set(manifest.entries)
                         if old.entries[k].pixel_sha256 != manifest.entries[k].pixel_sha256)
        if changed:
            problems.append(Problem(str(where), f"changes the pixels of {len(changed)} recorded "
                                    f"golden(s) of the same identity: {', '.join(changed[:5])}"))
        return problems

    def _check_tree(self, set_dir: Path, declared: dict[str, GoldenEntry]) -> list[Problem]:
        problems = []
        for child in sorted(set_dir.iterdir()):
            st = child.lstat()
            where = str(child)
            if stat.S_ISLNK(st.st_mode):
                problems.append(Problem(where, "is a symbolic link; golden files must be "
                                               "regular files"))
                continue
            if stat.S_ISDIR(st.st_mode):
                problems.append(Problem(where, "is a folder; a golden set holds only "
                                               f"{MANIFEST} and its PNGs"))
                continue
            if not stat.S_ISREG(st.st_mode):
                problems.append(Problem(where, "is not a regular file"))
                continue
            if st.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
                problems.append(Problem(where, "has an executable permission bit"))
            with open(child, "rb") as fh:
                kind = _content_kind(fh.read(8))
            suffix_kind = _SUSPICIOUS_SUFFIXES.get(child.suffix.lower())
            if kind or suffix_kind:
                problems.append(Problem(where, f"is {kind or suffix_kind}; golden sets hold "
                                               "only PNG images and a JSON manifest"))
                continue
            if child.name != MANIFEST and child.name not in declared:
                problems.append(Problem(where, f"is not declared in {MANIFEST}"))
        return problems

    def _check_entry(self, set_dir: Path, cls: str, entry: GoldenEntry) -> list[Problem]:
        from PIL import Image

        path = set_dir / entry.file
        where = str(path)
        problems = []
        fp = entry.fingerprint
        missing = [k for k in _FINGERPRINT_KEYS if k not in fp]
        if missing:
            problems.append(Problem(str(set_dir / MANIFEST), f"entry {entry.id!r}: fingerprint "
                                    f"lacks {', '.join(missing)}"))
        if fp.get("hardware_class", cls) != cls:
            problems.append(Problem(str(set_dir / MANIFEST), f"entry {entry.id!r}: fingerprint "
                                    f"class {fp.get('hardware_class')!r} is not the set's {cls!r}"))
        if entry.params.get("model") != entry.model:
            problems.append(Problem(str(set_dir / MANIFEST), f"entry {entry.id!r}: params "
                                    f"model {entry.params.get('model')!r} is not {entry.model!r}"))
        if path.is_symlink() or not path.is_file():
            return [*problems, Problem(where, f"declared as {entry.id!r} but missing or not a "
                                              "regular file")]
        size = path.stat().st_size
        if size > MAX_PNG_BYTES:
            return [*problems, Problem(where, f"is {size} bytes, over {MAX_PNG_BYTES}")]
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry.file_sha256:
            problems.append(Problem(where, f"file SHA-256 {digest[:16]}... does not match the "
                                           f"manifest's {entry.file_sha256[:16]}..."))
        try:
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size
                if w * h > MAX_PIXELS:
                    return [*problems, Problem(where, f"is {w}x{h} pixels, over the limit of "
                                                      f"{MAX_PIXELS} (decompression bomb?)")]
                if img.format != "PNG":
                    return [*problems, Problem(where, f"is {img.format}, not PNG")]
                if (w, h) != (entry.width, entry.height):
                    return [*problems, Problem(where, f"is {w}x{h}, the manifest says "
                                                      f"{entry.width}x{entry.height}")]
                if img.mode != "RGB":
                    return [*problems, Problem(where, f"has mode {img.mode}, expected RGB")]
                img.load()
                import numpy as np

                pixels = np.asarray(img, dtype=np.uint8).copy()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            return [*problems, Problem(where, f"does not decode as PNG: {exc}")]
        from conformance.metrics import pixel_sha256

        if pixel_sha256(pixels) != entry.pixel_sha256:
            problems.append(Problem(where, "decoded pixels do not match the manifest's "
                                           "pixel_sha256"))
            return problems
        self.images_checked += 1
        problems += self._against_reference(where, cls, entry, pixels)
        return problems

    def _against_reference(
        self, where: str, cls: str, entry: GoldenEntry, pixels: Any
    ) -> list[Problem]:
        from conformance.metrics import compare
        from conformance.tolerances import Tier

        if cls == self.reference_class:
            return []
        try:
            ref = self.reference.lookup_id(entry.model, entry.id, self.reference_class)
            if ref is None:
                return []
            if ref.params != entry.params:
                return [Problem(where, f"generation parameters differ from the "
                                       f"{self.reference_class} golden of {entry.id}")]
            expected = self.reference.load_image(ref, self.reference_class)
        except ConformanceInputError as exc:
            return [Problem(exc.where, f"reference golden unusable: {exc.message}")]
        if expected.shape != pixels.shape:
            return [Problem(where, f"size differs from the {self.reference_class} golden")]
        metrics = compare(pixels, expected)
        bad = self.tolerances.bounds(Tier.PERCEPTUAL, entry.precision).violations(metrics)
        if bad:
            return [Problem(where, f"differs from the {self.reference_class} golden beyond the "
                                   f"perceptual tier: {'; '.join(bad)} (a broken environment?)")]
        return []


def register(subparsers: Any) -> None:
    from conformance.options import OPTION_BY_NAME

    p = subparsers.add_parser(
        "validate", help="validate golden sets (untrusted input); exit 1 on any problem",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                   help="golden sets, model folders or golden roots")
    p.add_argument("--reference-dir", type=Path, default=PROJECT_ROOT / "golden", metavar="DIR",
                   help="golden root holding the reference class (default: the project's "
                        "golden/)")
    ref = OPTION_BY_NAME["reference-class"]
    p.add_argument("--reference-class", type=ref.type, default=ref.default, metavar="CLASS",
                   help=ref.help)
    tol = OPTION_BY_NAME["tolerances"]
    p.add_argument("--tolerances", type=tol.type, default=None, metavar="FILE", help=tol.help)
    p.add_argument("--base", type=Path, default=None, metavar="DIR",
                   help="golden root the sets are merged into (e.g. the target branch's "
                   "golden/): a set there under the same path must keep its identity and "
                   "every golden")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from conformance.tolerances import load_tolerances

    tolerances = load_tolerances(args.tolerances)
    sets, problems = find_sets(list(args.paths))
    if args.base is not None and not args.base.is_dir():
        raise ConformanceInputError("--base", f"{args.base} is not a folder of golden sets")
    validator = Validator(args.reference_dir, args.reference_class, tolerances, args.base)
    for set_dir in sets:
        print(f"checking {set_dir} ...", file=sys.stderr, flush=True)
        problems += validator.validate_set(set_dir)
    for problem in sorted(set(problems)):
        print(problem)
    summary = (f"{len(sets)} golden sets, {validator.images_checked} images verified, "
               f"{len(set(problems))} problems")
    print(summary, file=sys.stderr)
    return 1 if problems else 0

