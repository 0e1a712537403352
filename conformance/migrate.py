"""``conformance migrate``: convert schema-1 golden sets to the identity layout.

Schema-1 sets were named by ATen's dispatch level alone (``cpu-avx512``), which two CPUs with
different bits share. Migration gives each set its machine's identity and the class name
that identity implies (``cpu-amd-avx512+bf16``), copying every PNG unchanged::

    conformance migrate OLD_ROOT --out NEW_ROOT --flags avx512_bf16,amx_bf16,...

Schema-1 fingerprints did not record the CPU flags: ``--flags`` declares them (from the
recording machine's facts, e.g. a contributor's README); the identity says they were
declared. The vendor and the ATen level come from the recorded fingerprint. Nothing under
the source is modified; a target set that exists is never replaced (an identical earlier
migration is reported and skipped); every copied file is re-hashed against the manifest
and the written manifest is parsed back before the run counts as done.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from conformance.errors import ConformanceInputError, ManifestError
from conformance.golden import (
    MANIFEST,
    SCHEMA_VERSION,
    Manifest,
    _make_set_dir,
    atomic_write,
    parse_manifest,
    set_lock,
)
from conformance.hardware import STEERING_FLAGS, cpu_class_name
from conformance.identity import Identity, stack_of

_VENDOR_WORDS = (("amd", "amd"), ("intel", "intel"), ("apple", "apple"), ("ampere", "ampere"),
                 ("graviton", "arm"), ("neoverse", "arm"), ("hygon", "hygon"))
#: Fingerprint keys that must agree across a set's entries (one machine configuration).
_SAME_KEYS = ("hardware_class", "device", "device_name", "cpu_isa", "threads", "torch",
              "diffusers", "transformers", "deterministic", "aten_cpu_capability_env")


def _flag_list(text: str) -> tuple[str, ...]:
    values = tuple(v.strip().lower() for v in text.split(",") if v.strip())
    bad = [v for v in values if not re.fullmatch(r"[a-z0-9_]{1,32}", v)]
    if bad:
        raise argparse.ArgumentTypeError(f"{', '.join(bad)}: not a /proc/cpuinfo flag name")
    return values


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "migrate", help="convert schema-1 golden sets to the identity layout",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", type=Path, metavar="SRC",
                   help="a golden root (<model>/<class>/manifest.json) of schema-1 sets")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="golden root to write the migrated sets into (may hold other sets)")
    p.add_argument("--flags", type=_flag_list, default=None, metavar="LIST",
                   help="the recording CPU's flags (comma list, /proc/cpuinfo names); "
                   "required for CPU sets")
    p.add_argument("--vendor", default=None, metavar="NAME",
                   help="the recording CPU's vendor when the fingerprint's device name does "
                   "not say (amd, intel, arm, ...)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    p.set_defaults(func=run)


def _vendor(device_name: str | None, given: str | None, where: Path) -> str:
    if given:
        if not re.fullmatch(r"[a-z0-9]{1,16}", given):
            raise ConformanceInputError("--vendor", f"{given!r}: expected a short lower-case "
                                        "name such as amd or intel")
        return given
    name = (device_name or "").lower()
    for word, vendor in _VENDOR_WORDS:
        if word in name:
            return vendor
    raise ConformanceInputError(
        where, f"the fingerprint's device name {device_name!r} does not name the vendor; "
        "pass --vendor"
    )


def _source_sets(root: Path) -> list[Path]:
    if not root.is_dir() or root.is_symlink():
        raise ConformanceInputError(root, "is not a directory of golden sets")
    sets = sorted(p.parent for p in root.glob(f"*/*/{MANIFEST}"))
    if not sets:
        raise ConformanceInputError(root, f"holds no <model>/<class>/{MANIFEST}")
    return sets


def migrate_set(src: Path, out_root: Path, flags: tuple[str, ...] | None,
                vendor: str | None) -> tuple[Manifest, Path]:
    """The migrated manifest of the set in ``src`` and where it goes (nothing written)."""
    manifest_path = src / MANIFEST
    if manifest_path.is_symlink():
        raise ManifestError(manifest_path, "is a symbolic link")
    try:
        text = manifest_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(manifest_path, f"cannot be read: {exc}") from None
    old = parse_manifest(text, manifest_path, src.parent.name, src.name, legacy=True)
    if old.schema_version == SCHEMA_VERSION:
        raise ManifestError(manifest_path, "is already schema 2; nothing to migrate")
    if not old.entries:
        raise ManifestError(manifest_path, "has no entries; nothing to migrate")
    first = next(iter(old.entries.values())).fingerprint
    for entry in old.entries.values():
        differ = [k for k in _SAME_KEYS if entry.fingerprint.get(k) != first.get(k)]
        if differ:
            raise ManifestError(
                manifest_path, f"entry {entry.id!r} was recorded under another configuration "
                f"({', '.join(differ)} differ from the first entry): a set must hold one "
                "machine's bits; split it before migrating"
            )
    if not isinstance(first.get("cpu_isa"), str) or not first["cpu_isa"]:
        raise ManifestError(manifest_path, "the fingerprint lacks cpu_isa (the ATen level "
                            "the set was recorded at); it cannot be named")
    if first.get("device", "cpu") != "cpu":
        raise ManifestError(manifest_path, "only CPU sets need migration (their class names "
                            "changed); GPU classes are unchanged")
    if flags is None:
        raise ConformanceInputError(
            "--flags", "schema-1 fingerprints hold no CPU flags: give the recording CPU's "
            f"flags (those that matter: {', '.join(STEERING_FLAGS)})"
        )
    env = {}
    if first.get("aten_cpu_capability_env"):
        env["ATEN_CPU_CAPABILITY"] = str(first["aten_cpu_capability_env"])
    features = {
        "vendor": _vendor(first.get("device_name"), vendor, manifest_path),
        "model_name": first.get("device_name"),
        "family": None,
        "model": None,
        "machine": None,
        "flags": sorted(f for f in STEERING_FLAGS if f in set(flags)),
        "aten_level": str(first.get("cpu_isa")),
        "env": env,
    }
    new_class = cpu_class_name(features)
    identity = Identity(
        hardware_class=new_class, features=features, stack=stack_of(first),
        migrated_from={"schema_version": old.schema_version, "hardware_class": old.hardware_class,
                       "flags": "declared at migration (--flags)"},
    )
    entries = {
        key: replace(e, fingerprint=e.fingerprint | {"hardware_class": new_class})
        for key, e in old.entries.items()
    }
    new = Manifest(old.model, new_class, entries, SCHEMA_VERSION, identity)
    return new, out_root / old.model / new_class


def _write_set(src: Path, manifest: Manifest, target: Path) -> str:
    text = manifest.to_json()
    parse_manifest(text, target / MANIFEST, manifest.model, manifest.hardware_class)
    if (target / MANIFEST).exists():
        existing = (target / MANIFEST).read_text(encoding="utf-8", errors="replace")
        if existing == text:
            return "already migrated"
        raise ConformanceInputError(
            target, "a golden set exists here; migration never replaces one (move it away)"
        )
    _make_set_dir(target)
    with set_lock(target):  # the lock of the set written, as every writer takes it
        for entry in manifest.entries.values():
            data = (src / entry.file).read_bytes()
            if hashlib.sha256(data).hexdigest() != entry.file_sha256:
                raise ManifestError(src / entry.file, "file SHA-256 does not match the manifest")
            if (target / entry.file).exists():
                raise ConformanceInputError(target / entry.file, "exists; not replaced")
            atomic_write(target / entry.file, data, "golden PNG")
            if hashlib.sha256((target / entry.file).read_bytes()).hexdigest() != (
                entry.file_sha256
            ):  # pragma: no cover - a failing disk
                raise ManifestError(target / entry.file, "copy does not match its source")
        atomic_write(target / MANIFEST, text.encode("utf-8"), "golden manifest")
    parse_manifest((target / MANIFEST).read_text(encoding="utf-8"), target / MANIFEST,
                   manifest.model, manifest.hardware_class)
    return f"{len(manifest.entries)} goldens"


def run(args: argparse.Namespace) -> int:
    sets = _source_sets(args.source)
    plans = [(src, *migrate_set(src, args.out, args.flags, args.vendor)) for src in sets]
    targets = [t for _, _, t in plans]
    clash = {t for t in targets if targets.count(t) > 1}
    if clash:
        raise ConformanceInputError(
            sorted(clash)[0], "two source sets map to this one set (same machine recorded "
            "twice?); migrate them separately"
        )
    for src, manifest, target in plans:
        line = (f"{src} ({manifest.identity.migrated_from['hardware_class']}) -> {target}"
                if manifest.identity and manifest.identity.migrated_from else f"{src} -> {target}")
        if args.dry_run:
            print(f"would migrate {line}: {len(manifest.entries)} goldens")
            continue
        print(f"migrated {line}: {_write_set(src, manifest, target)}")
    sys.stdout.flush()
    return 0
