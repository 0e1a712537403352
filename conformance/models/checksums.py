"""SHA-256 checksums of the shipped tiny-model fixtures (``fixtures/checksums.json``).

The JSON maps each fixture directory name to ``{relative posix path: sha256}``::

    {"tiny-sd": {"unet/diffusion_pytorch_model.safetensors": "ab12...", ...}, ...}
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from conformance.safeio import write_atomic

CHECKSUMS_FILE = "checksums.json"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_listed(rel: Path) -> bool:
    """Hidden files and directories (``.DS_Store``, ``.cache``) are not part of a fixture."""
    return not any(part.startswith(".") for part in rel.parts)


def directory_checksums(path: str | Path) -> dict[str, str]:
    """``{relative posix path: sha256}`` for every regular file under ``path``."""
    root = Path(path)
    out: dict[str, str] = {}
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root)
        if _is_listed(rel) and f.is_file():
            out[rel.as_posix()] = sha256_file(f)
    return out


def write_checksums(fixtures_dir: str | Path, names: list[str]) -> Path:
    """Write ``checksums.json`` for the fixture directories ``names`` under ``fixtures_dir``."""
    root = Path(fixtures_dir)
    data = {name: directory_checksums(root / name) for name in sorted(names)}
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    return write_atomic(root / CHECKSUMS_FILE, text.encode("utf-8"), kind="checksum file")


def verify_fixture(path: str | Path, checksums_file: str | Path | None = None) -> list[str]:
    """Problems found comparing fixture directory ``path`` with its ``checksums.json``.

    ``checksums_file`` defaults to ``checksums.json`` next to ``path``. Returns human-readable
    lines (missing / extra / changed files); an empty list means the fixture matches.
    """
    root = Path(path)
    cfile = Path(checksums_file) if checksums_file is not None else root.parent / CHECKSUMS_FILE
    if not cfile.is_file():
        return [f"checksum file not found: {cfile}"]
    expected_all = json.loads(cfile.read_text())
    if root.name not in expected_all:
        return [f"{cfile} has no entry for {root.name!r}"]
    if not root.is_dir():
        return [f"fixture directory not found: {root}"]
    expected: dict[str, str] = expected_all[root.name]
    actual = directory_checksums(root)
    problems: list[str] = []
    for rel in sorted(set(expected) - set(actual)):
        problems.append(f"missing file: {root.name}/{rel}")
    for rel in sorted(set(actual) - set(expected)):
        problems.append(f"extra file: {root.name}/{rel}")
    for rel in sorted(set(expected) & set(actual)):
        if expected[rel] != actual[rel]:
            problems.append(
                f"changed file: {root.name}/{rel} (sha256 {actual[rel][:12]}..., "
                f"expected {expected[rel][:12]}...)"
            )
    return problems
