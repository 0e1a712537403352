"""``conformance validate``: check golden sets before trusting them.

Golden sets come from contributors, so they are untrusted input. For every set
(``<root>/<model>/<hardware-class>/``) this checks the manifest's schema to the last nested
value (read with :mod:`conformance.safeio`'s caps: size, duplicate keys, integer digits,
nesting), every file and pixel SHA-256, that every PNG is a canonical golden PNG (8-bit RGB,
not interlaced, one image, no text or other metadata chunks, nothing after IEND, right CRCs,
within the pixel limit before anything is inflated: the rules :func:`conformance.golden.
check_png` applies in the store too), that there are no symbolic links (files or folders),
hard links, FIFOs, sub-folders, undeclared files, pickles or executables, that names are
printable, that the set names the identity it was recorded on and that the folder's class is
the one that identity implies, that every entry's fingerprint agrees with it, and that each
image is within the perceptual tier of the reference class's golden for the same item.

With ``--base DIR`` (the golden root a pull request merges into), a set that exists there
under the same path must belong to the same identity and keep every golden: a contribution
that would replace another machine's goldens, or drop or change recorded ones, is a problem
naming both identities. Every problem is reported, with the file and the reason (control
characters escaped); the input is only read, and nothing blocks on a FIFO.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance import PROJECT_ROOT
from conformance.errors import ConformanceInputError, ManifestError
from conformance.golden import (
    LOCK_FILE,
    MANIFEST,
    MANIFEST_KIND,
    PNG_KIND,
    PNG_LIMIT,
    GoldenEntry,
    GoldenStore,
    decode_png,
    file_kind,
    parse_manifest,
    plain_file_problem,
    read_plain_file,
)
from conformance.hardware import HardwareClass, usable_cores
from conformance.safeio import MANIFEST_LIMIT, os_reason, show
from conformance.schema import MODEL, integer_text

MAX_MANIFEST_BYTES = MANIFEST_LIMIT
MAX_PNG_BYTES = PNG_LIMIT
_FINGERPRINT_KEYS = ("hardware_class", "device", "threads", "torch", "diffusers")
_SUSPICIOUS_SUFFIXES = {
    ".pkl": "a pickle", ".pickle": "a pickle", ".pt": "a torch pickle", ".pth": "a torch pickle",
    ".bin": "a binary (often a pickled checkpoint)", ".ckpt": "a pickled checkpoint",
    ".npy": "a numpy array (may hold pickles)", ".npz": "a numpy archive (may hold pickles)",
    ".exe": "an executable", ".sh": "a shell script", ".py": "Python code",
    ".so": "a shared library", ".dll": "a shared library",
}
_MODEL = re.compile(MODEL)
#: characters that would let a file name or message rewrite a terminal line
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def _escape(text: str) -> str:
    """``text`` with control characters written as escapes (one printable line), and the
    bytes of a file name that are not UTF-8 (lone surrogates, ``os.fsdecode``'s
    surrogateescape) as ``\\udcXX``: printable with any strict UTF-8 output."""
    text = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


@dataclass(frozen=True, order=True)
class Problem:
    path: str
    reason: str

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        object.__setattr__(self, "path", os.fspath(path))
        object.__setattr__(self, "reason", reason)

    def __str__(self) -> str:
        return f"{_escape(self.path)}: {_escape(self.reason)}"


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


def _head(path: Path, size: int = 8) -> bytes:
    """The first bytes of the regular file ``path``, read without following a link and
    without blocking (it may have been replaced by a FIFO since it was listed)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags | getattr(os, "O_NOCTTY", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        return os.read(fd, size)
    finally:
        os.close(fd)


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


def _listing(path: Path, problems: list[Problem]) -> list[Path]:
    try:
        return sorted(path.iterdir())
    except OSError as exc:
        problems.append(Problem(path, f"cannot be listed: {exc.strerror or exc}"))
        return []


def _has_manifest(folder: Path) -> bool:
    """Whether ``folder`` holds an entry named manifest.json (of any kind: a link or a FIFO
    is a set to report, not a folder to skip)."""
    return os.path.lexists(folder / MANIFEST)


def _may_be_folder(link: Path) -> bool:
    """Whether the symbolic link ``link`` leads to a folder or nowhere (a link to a file
    beside the sets is not a set; only its target's kind is looked at, nothing is opened)."""
    return link.is_dir() or not link.exists()


def _linked_folder(path: Path) -> Problem:
    return Problem(path, "is a symbolic link; golden set folders are plain folders (the "
                         "store refuses linked ones)")


def find_sets(paths: list[Path]) -> tuple[list[Path], list[Problem]]:
    """Golden set folders under each path (a set, a model folder or a golden root)."""
    sets: list[Path] = []
    problems: list[Problem] = []
    for path in paths:
        try:
            path.lstat()
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:  # a name too long, a NUL, ...
            problems.append(Problem(path, f"cannot be read: {os_reason(exc)}"))
            continue
        if path.is_symlink():
            problems.append(Problem(path, "is a symbolic link; golden sets are plain folders"))
            continue
        if not path.exists():
            problems.append(Problem(path, "does not exist"))
            continue
        if not path.is_dir():
            problems.append(Problem(path, "is not a folder; give a golden set, a model "
                                          "folder or a golden root"))
            continue
        below: list[Problem] = []
        found = _sets_below(path, below)
        problems += below
        if not found and not below:
            problems.append(Problem(path, f"holds no golden set (no {MANIFEST} at depth 0-2)"))
        sets.extend(found)
    return sorted(dict.fromkeys(sets)), problems


def _sets_below(path: Path, problems: list[Problem]) -> list[Path]:
    """The sets at depth 0-2 below ``path``; a linked folder on the way is a problem (the
    store would refuse it), never skipped in silence."""
    if _has_manifest(path):
        return [path]
    out = []
    for child in _listing(path, problems):
        if child.is_symlink():
            if _may_be_folder(child):
                problems.append(_linked_folder(child))
            continue
        if not child.is_dir():
            continue
        if _has_manifest(child):
            out.append(child)
            continue
        for grandchild in _listing(child, problems):
            if grandchild.is_symlink():
                if _may_be_folder(grandchild):
                    problems.append(_linked_folder(grandchild))
            elif grandchild.is_dir() and _has_manifest(grandchild):
                out.append(grandchild)
    return out


def _reproduces(old: Any, new: Any) -> str:
    """'' when the new manifest holds every golden of the old one with the same pixels and
    latent trace; otherwise what is missing or different."""
    missing = sorted(set(old.entries) - set(new.entries))
    if missing:
        return f"{len(missing)} golden(s) are missing: {', '.join(missing[:5])}"
    differ = sorted(k for k, e in old.entries.items()
                    if (e.pixel_sha256, e.trace) != (new.entries[k].pixel_sha256,
                                                     new.entries[k].trace))
    if differ:
        return f"{len(differ)} golden(s) differ in pixels or latents: {', '.join(differ[:5])}"
    return ""


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
        self.notices: list[str] = []

    def validate_set(self, set_dir: Path) -> list[Problem]:
        try:
            return self._validate_set(set_dir)
        except Exception as exc:  # never a traceback for bad input
            return [Problem(set_dir, f"cannot be validated: {type(exc).__name__}: "
                                     f"{show(str(exc), 300)}")]

    def _validate_set(self, set_dir: Path) -> list[Problem]:
        problems: list[Problem] = []
        model, cls = set_dir.parent.name, set_dir.name
        if not _MODEL.fullmatch(model):
            problems.append(Problem(set_dir.parent, f"folder name: {show(model)} is not a "
                                    "model name (lower-case letters, digits, '.', '_', '-')"))
        try:
            HardwareClass(cls)
        except ValueError:
            problems.append(Problem(set_dir, f"folder name: {show(cls)} is not a hardware "
                                    "class; expected cpu-<vendor>-<level>[+ext...], "
                                    "cuda-sm<NN>, rocm-<arch>, mps or xpu"))
        manifest_path = set_dir / MANIFEST
        manifest = None
        try:
            data = read_plain_file(manifest_path, MANIFEST_KIND, MANIFEST_LIMIT)
            if data is None:
                problems.append(Problem(manifest_path, "does not exist"))
            else:
                manifest = parse_manifest(data, manifest_path, model, cls)
        except ManifestError as exc:
            problems.append(Problem(exc.where, exc.message))

        if manifest is not None:
            problems += self._check_identity(manifest_path, cls, manifest)
            problems += self._check_base(manifest_path, model, cls, manifest)
        declared = None if manifest is None else {
            **{e.file: e for e in manifest.entries.values()},
            **{e.probes["file"]: e for e in manifest.entries.values() if e.probes},
            **{e.probes["inputs"]["file"]: e for e in manifest.entries.values()
               if e.probes and e.probes.get("inputs")},
        }
        problems += self._check_tree(set_dir, declared)
        if manifest is not None:
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
        if (new_id is not None and old_id is not None and not old_id.measured
                and new_id.measured and new_id.same_class_and_stack(old_id)):
            # A set recorded before the probe battery, recorded again on a machine of its
            # class: it may take the measured identity only by reproducing every golden.
            differ = _reproduces(old, manifest)
            if not differ:
                self.notices.append(f"{where}: measures the identity of a set recorded "
                                    f"without probe digests ({len(old.entries)} goldens "
                                    "reproduced: pixels and every step's latents)")
                return []
            return [Problem(str(where), "would give the set recorded without probe digests "
                            f"({old_id.describe()}) the identity {new_id.describe()}, but "
                            f"{differ}; a set takes a measured identity only by reproducing "
                            "every golden bit for bit")]
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

    def _check_tree(self, set_dir: Path,
                    declared: dict[str, GoldenEntry] | None) -> list[Problem]:
        """Every entry of the set folder. The manifest and the declared PNGs are read (and
        their kind reported) elsewhere; ``declared`` is ``None`` when the manifest is
        unreadable, and then no file is called undeclared."""
        problems: list[Problem] = []
        for child in _listing(set_dir, problems):
            where = child
            st = _lstat(child)
            if st is None:
                continue  # removed while listed
            name = child.name
            if _CONTROL.search(name):
                problems.append(Problem(where, f"the file name {show(name)} holds a control "
                                               "character"))
            read_elsewhere = name == MANIFEST or (declared is not None and name in declared)
            if stat.S_ISLNK(st.st_mode):
                if not read_elsewhere:
                    problems.append(Problem(where, "is a symbolic link; golden files must be "
                                                   "regular files"))
                continue
            if stat.S_ISDIR(st.st_mode):
                if not read_elsewhere:
                    problems.append(Problem(where, "is a folder; a golden set holds only "
                                                   f"{MANIFEST} and its PNGs"))
                continue
            if not stat.S_ISREG(st.st_mode):
                if not read_elsewhere:
                    problems.append(Problem(where, f"is not a regular file: it is "
                                                   f"{file_kind(st.st_mode)}"))
                continue
            if st.st_nlink > 1 and not read_elsewhere:
                problems.append(Problem(where, plain_file_problem(child, st) or "hard link"))
            if st.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
                problems.append(Problem(where, "has an executable permission bit"))
            try:
                kind = _content_kind(_head(child))
            except OSError as exc:
                problems.append(Problem(where, f"cannot be read: {exc.strerror or exc}"))
                continue
            suffix_kind = _SUSPICIOUS_SUFFIXES.get(child.suffix.lower())
            if kind or suffix_kind:
                problems.append(Problem(where, f"is {kind or suffix_kind}; golden sets hold "
                                               "only PNG images and a JSON manifest"))
                continue
            if name == LOCK_FILE and not read_elsewhere:
                # the set's writer lock (conformance.golden.set_lock): allowed, and empty
                if st.st_size:
                    problems.append(Problem(where, f"is the set's lock file but holds "
                                                   f"{st.st_size} bytes; it is empty"))
                continue
            if declared is not None and not read_elsewhere:
                problems.append(Problem(where, f"is not declared in {MANIFEST}"))
        return problems

    def _check_entry(self, set_dir: Path, cls: str, entry: GoldenEntry) -> list[Problem]:
        path = set_dir / entry.file
        problems = []
        fp = entry.fingerprint
        manifest = set_dir / MANIFEST
        missing = [k for k in _FINGERPRINT_KEYS if k not in fp]
        if missing:
            problems.append(Problem(manifest, f"entry {show(entry.id)}: fingerprint "
                                    f"lacks {', '.join(missing)}"))
        if fp.get("hardware_class", cls) != cls:
            problems.append(Problem(manifest, f"entry {show(entry.id)}: fingerprint class "
                                    f"{show(fp.get('hardware_class'))} is not the set's "
                                    f"{show(cls)}"))
        if entry.params.get("model") != entry.model:
            problems.append(Problem(manifest, f"entry {show(entry.id)}: params model "
                                    f"{show(entry.params.get('model'))} is not "
                                    f"{show(entry.model)}"))
        try:
            data = read_plain_file(path, PNG_KIND, PNG_LIMIT)
        except ManifestError as exc:
            return [*problems, Problem(exc.where, exc.message)]
        if data is None:
            return [*problems, Problem(path, f"declared as {show(entry.id)} but missing")]
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry.file_sha256:
            problems.append(Problem(path, f"file SHA-256 {digest[:16]}... does not match the "
                                          f"manifest's {entry.file_sha256[:16]}..."))
        try:
            pixels = decode_png(data, path, entry.width, entry.height,
                                damaged="does not decode as PNG")
        except ManifestError as exc:
            return [*problems, Problem(exc.where, exc.message)]
        from conformance.metrics import pixel_sha256

        if pixel_sha256(pixels) != entry.pixel_sha256:
            problems.append(Problem(path, "decoded pixels do not match the manifest's "
                                          "pixel_sha256"))
            return problems
        self.images_checked += 1
        problems += self._against_reference(str(path), cls, entry, pixels)
        if entry.probes is not None:
            try:
                store = GoldenStore(set_dir.parent.parent)
                store.load_probes(entry, cls)
                store.load_inputs(entry, cls, header_only=True)  # no torch import
            except ManifestError as exc:
                problems.append(Problem(exc.where, exc.message))
        return problems

    def _against_reference(
        self, where: str, cls: str, entry: GoldenEntry, pixels: Any
    ) -> list[Problem]:
        from conformance.core import Tier
        from conformance.metrics import compare

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
        bad = self.tolerances.problems(Tier.PERCEPTUAL, entry.precision, metrics)
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
    p.add_argument("--jobs", type=_jobs_option, default=None, metavar="N",
                   help="check the sets in N processes (default: one per usable core, at "
                        "most 8; 1: in this process)")
    p.set_defaults(func=run)


#: the most worker processes --jobs starts
MAX_JOBS = 256


def _jobs_option(text: str) -> int:
    jobs = integer_text(text, 1, MAX_JOBS)
    if jobs is None:
        raise argparse.ArgumentTypeError(f"{show(text)} is not a number of processes; use an "
                                         f"integer 1..{MAX_JOBS} in digits 0-9")
    return jobs


def _jobs(requested: int | None, sets: int) -> int:
    """Processes for ``sets`` golden sets: ``--jobs``, else one per usable core (at most 8)."""
    if requested is None:
        requested = min(usable_cores(), 8)
    return max(1, min(requested, sets))


def _set_bytes(set_dir: Path) -> int:
    """The size of a set's plain files (``lstat``: nothing is opened or followed)."""
    total = 0
    try:
        with os.scandir(set_dir) as entries:
            for entry in entries:
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(info.st_mode):
                    total += info.st_size
    except OSError:
        pass  # validate_set reports what cannot be read
    return total


#: the validator of a worker process (see :func:`_validate_in_worker`)
_WORKER: Validator | None = None


def _start_worker(reference_dir: Path, reference_class: str, tolerances: Path | None,
                  base: Path | None, threads: int) -> None:
    """A worker's validator. FLIP's OpenMP runtime (loaded on the first comparison, after
    this) takes ``threads`` threads: by default it takes every core, and workers side by
    side then wait on each other (a comparison took 22 ms instead of 11)."""
    global _WORKER
    from conformance.tolerances import load_tolerances

    os.environ["OMP_NUM_THREADS"] = str(threads)
    _WORKER = Validator(reference_dir, reference_class, load_tolerances(tolerances), base)


def _validate_in_worker(set_dir: Path) -> tuple[list[Problem], int, list[str]]:
    validator = _WORKER
    if validator is None:  # pragma: no cover - the pool's initializer sets it
        raise RuntimeError("validate worker started without _start_worker")
    images, notices = validator.images_checked, len(validator.notices)
    problems = validator.validate_set(set_dir)
    return problems, validator.images_checked - images, validator.notices[notices:]


def _start_method() -> str | None:
    """How the workers start: a fork on Linux (it inherits this process's imports), unless
    torch is loaded here (its OpenMP runtime may not survive a fork; FLIP would run on
    it); elsewhere the platform's default."""
    return "fork" if sys.platform == "linux" and "torch" not in sys.modules else None


def _validate_sets(validator: Validator, sets: list[Path], jobs: int,
                   args: argparse.Namespace) -> list[Problem]:
    """Every set's problems, in the order of ``sets``. With ``jobs`` > 1 the sets are
    checked in that many processes, the largest first (a set's probe files make most of
    its work), and reported in order as they finish."""
    problems: list[Problem] = []
    if jobs == 1:
        for set_dir in sets:
            print(f"checking {_escape(str(set_dir))} ...", file=sys.stderr, flush=True)
            problems += validator.validate_set(set_dir)
        return problems
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    context = multiprocessing.get_context(_start_method())
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker,
                             initargs=(args.reference_dir, args.reference_class,
                                       args.tolerances, args.base,
                                       max(1, usable_cores() // jobs))) as pool:
        futures = {s: pool.submit(_validate_in_worker, s)
                   for s in sorted(sets, key=_set_bytes, reverse=True)}
        for set_dir in sets:
            print(f"checking {_escape(str(set_dir))} ...", file=sys.stderr, flush=True)
            try:
                found, images, notices = futures[set_dir].result()
            except BrokenProcessPool:  # a worker died (out of memory?): check it here
                found = validator.validate_set(set_dir)
            else:
                validator.images_checked += images
                validator.notices += notices
            problems += found
    return problems


def broken_predictions(sets: list[Path], base: GoldenStore | None = None) -> list[Problem]:
    """Sets of one model whose identities give a precision the same digest (the suite
    predicts the same bits, and the own-class check lets either decide at the exact tier)
    but whose goldens of an item of that precision differ; ``base`` (``--base``) sets of
    the model are compared with the checked ones too. Sets that cannot be read are
    reported by their own checks and left out here."""
    from conformance.lookup import equal_digest

    found: dict[str, list[tuple[str, str, Any]]] = {}  # model -> (label, class, manifest)
    for set_dir in sets:
        model, cls = set_dir.parent.name, set_dir.name
        try:
            manifest = GoldenStore(set_dir.parent.parent).manifest(model, cls)
        except ConformanceInputError:
            continue
        if manifest is not None and manifest.identity is not None:
            found.setdefault(model, []).append((str(set_dir), cls, manifest))
    problems: list[Problem] = []
    for model, mine in found.items():
        checked = {cls for _, cls, _ in mine}  # a same-named base set: _check_base's
        others = [(str(base.set_dir(model, cls)), cls, manifest)
                  for _, cls, manifest in (base.readable_sets([model]) if base else ())
                  if cls not in checked and manifest.identity is not None]
        pairs = [(a, b) for n, a in enumerate(mine) for b in mine[n + 1:]]
        pairs += [(a, b) for a in mine for b in others]
        for (where_a, _, a), (where_b, _, b) in pairs:
            for key, entry in sorted(a.entries.items()):
                other = b.entries.get(key)
                if other is None or other.pixel_sha256 == entry.pixel_sha256:
                    continue
                if not equal_digest(a.identity, b.identity, entry.precision):
                    continue
                digest = a.identity.digest_for(entry.precision)
                problems.append(Problem(where_a, (
                    f"broken prediction: shares the {entry.precision} digest {digest} with "
                    f"{_escape(where_b)}, but their goldens of {key} differ (pixel SHA-256 "
                    f"{entry.pixel_sha256[:12]} vs {other.pixel_sha256[:12]}): the probe "
                    "battery does not see what parts the two machines, so neither set can "
                    "stand for the other at the exact tier")))
    return problems


def run(args: argparse.Namespace) -> int:
    from conformance.tolerances import load_tolerances

    tolerances = load_tolerances(args.tolerances)
    sets, problems = find_sets(list(args.paths))
    if args.base is not None:
        try:
            is_dir = args.base.is_dir()
        except (OSError, ValueError) as exc:  # a name too long, a NUL, ...
            raise ConformanceInputError("--base", f"{args.base}: {os_reason(exc)}") from None
        if not is_dir:
            raise ConformanceInputError("--base", f"{args.base} is not a folder of golden sets")
    validator = Validator(args.reference_dir, args.reference_class, tolerances, args.base)
    problems += _validate_sets(validator, sets, _jobs(args.jobs, len(sets)), args)
    problems += broken_predictions(sets, validator.base)
    for notice in validator.notices:
        print(notice, file=sys.stderr)
    for problem in sorted(set(problems)):
        print(problem)
    summary = (f"{len(sets)} golden sets, {validator.images_checked} images verified, "
               f"{len(set(problems))} problems")
    print(summary, file=sys.stderr)
    return 1 if problems else 0

