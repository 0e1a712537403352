from __future__ import annotations

import json
import multiprocessing as mp

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.cases import Case, Item, Resolution
from conformance.errors import GoldenExistsError, ManifestError
from conformance.golden import MANIFEST, GoldenStore, parse_manifest
from conformance.metrics import pixel_sha256
from conformance.trace import StepTrace, first_divergent_step

CASE = Case("one", "tiny-sd", "a red circle", "", 1, 2, "euler", 4.0,
            (Resolution(16, 8),), ("fp32",))
ITEM = Item(CASE, Resolution(16, 8), "fp32")
CLS = "cpu-avx2"


def image(seed=0, h=8, w=16):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def trace(n=2, salt=""):
    import torch

    return [StepTrace.from_latents(i, 999 - i, torch.full((1, 4, 2, 2), float(i))) for i in
            range(n)] if not salt else [
        StepTrace(i, 1.0, f"{i:015x}{salt}", 0.0, 0.0, 0.0, 0.0) for i in range(n)]


def record(store, img=None, force=False, item=ITEM):
    return store.record(item, CLS, image() if img is None else img, trace(), {"threads": 1},
                        "2026-01-01T00:00:00Z", "pytest --record", force=force)


def test_record_then_lookup_and_load(tmp_path):
    store = GoldenStore(tmp_path)
    path, replaced = record(store)
    assert not replaced and path == tmp_path / "tiny-sd" / CLS / "one-16x8-fp32.png"
    fresh = GoldenStore(tmp_path)
    entry = fresh.lookup(ITEM, CLS)
    assert entry is not None and entry.pixel_sha256 == pixel_sha256(image())
    assert np.array_equal(fresh.load_image(entry, CLS), image())
    assert entry.steps() == trace()
    assert fresh.classes("tiny-sd") == [CLS]
    assert fresh.lookup(ITEM, "cpu-avx512") is None
    assert not list((tmp_path / "tiny-sd" / CLS).glob("*.tmp"))


@given(
    name=st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True),
    precision=st.sampled_from(sorted(__import__("conformance.precision").precision.PRECISIONS)),
    seed=st.integers(0, 2**63 - 1),
)
def test_manifest_round_trip_for_every_precision_and_name(name, precision, seed):
    import tempfile

    case = Case(name, "tiny-sd", "p", "", seed, 2, "euler", 4.0, (Resolution(16, 8),),
                (precision,))
    item = Item(case, Resolution(16, 8), precision)
    with tempfile.TemporaryDirectory() as tmp:
        GoldenStore(tmp).record(item, CLS, image(), trace(), {"threads": 1}, "t", "c")
        entry = GoldenStore(tmp).lookup(item, CLS)
        assert entry is not None and entry.params["seed"] == seed
        assert np.array_equal(GoldenStore(tmp).load_image(entry, CLS), image())


def test_never_overwrites_without_force(tmp_path):
    store = GoldenStore(tmp_path)
    record(store)
    before = (tmp_path / "tiny-sd" / CLS / MANIFEST).read_bytes()
    with pytest.raises(GoldenExistsError, match="exists; re-run with --force"):
        record(store, image(1))
    assert (tmp_path / "tiny-sd" / CLS / MANIFEST).read_bytes() == before
    _, replaced = record(store, image(1), force=True)
    assert replaced
    entry = GoldenStore(tmp_path).lookup(ITEM, CLS)
    assert entry.pixel_sha256 == pixel_sha256(image(1))


def test_orphan_png_is_not_overwritten(tmp_path):
    d = tmp_path / "tiny-sd" / CLS
    d.mkdir(parents=True)
    (d / "one-16x8-fp32.png").write_bytes(b"user data")
    with pytest.raises(GoldenExistsError, match=r"not listed in manifest\.json"):
        record(GoldenStore(tmp_path))
    assert (d / "one-16x8-fp32.png").read_bytes() == b"user data"


def _record_in_child(root, n):
    case = Case(f"c{n}", "tiny-sd", "p", "", n, 2, "euler", 4.0, (Resolution(16, 8),), ("fp32",))
    item = Item(case, Resolution(16, 8), "fp32")
    GoldenStore(root).record(item, CLS, image(n), [], {}, "t", "c")


def test_concurrent_records_all_land(tmp_path):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_record_in_child, args=(tmp_path, n)) for n in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    manifest = json.loads((tmp_path / "tiny-sd" / CLS / MANIFEST).read_text())
    assert len(manifest["entries"]) == 6


def _identity(**changes):
    from conformance.identity import Identity

    body = Identity(CLS, {"vendor": "amd", "flags": []}, {"torch": "2.13.0"}).to_dict()
    body.pop("digest")
    return body | changes


def _tamper(tmp_path, fn):
    store = GoldenStore(tmp_path)
    record(store)
    path = tmp_path / "tiny-sd" / CLS / MANIFEST
    data = json.loads(path.read_text())
    fn(data, data["entries"][ITEM.id])
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda d, e: d.update(schema_version=9), "schema_version is 9"),
        (lambda d, e: d.update(model="other"), "model is 'other' but the directory"),
        (lambda d, e: d.update(hardware_class="cpu-avx512"), "but the directory is 'cpu-avx2'"),
        (lambda d, e: d.update(hardware_class="gpu!"), "is not a hardware class"),
        (lambda d, e: d.update(extra=1), "unknown top-level keys: extra"),
        (lambda d, e: d.update(entries=[]), "'entries' is missing or not an object"),
        (lambda d, e: e.pop("pixel_sha256"), "key pixel_sha256 is missing"),
        (lambda d, e: e.update(note="x"), "unknown key note"),
        (lambda d, e: e.update(width="16"), r"width must be an integer, not a string \('16'\)"),
        (lambda d, e: e.update(width=True), r"width must be an integer, not a boolean \(True\)"),
        (lambda d, e: e.update(precision="bf16"), "does not match its fields"),
        (lambda d, e: e.update(file="../../etc/passwd.png"), "not a plain lower-case .png"),
        (lambda d, e: e.update(file="sub/x.png"), "not a plain lower-case .png"),
        (lambda d, e: e.update(file_sha256="ABC"), "file_sha256 must be 64 lower-case hex digits"),
        (lambda d, e: e.update(phash="xyz"), "phash must be 16 lower-case hex digits"),
        (lambda d, e: e.update(width=17), "width/height do not match"),
        (lambda d, e: e.update(trace=[{"step": 0}]), "'trace' is malformed"),
        # a boolean is not an integer, wherever one is required
        (lambda d, e: e.update(height=True), r"height must be an integer, not a boolean \(True\)"),
        (lambda d, e: d.update(schema_version=True), "schema_version is True"),
        (lambda d, e: e["trace"][0].update(step=True),
         r"step 0: key 'step' must be an integer in 0\.\.2147483647, not boolean"),
        (lambda d, e: e["trace"][0].update(step=-1),
         r"step 0: key 'step' must be an integer in 0\.\.2147483647, not integer -1"),
        (lambda d, e: d.update(identity=_identity(battery_version=True)),
         "identity.battery_version must be an integer or null, not boolean"),
        (lambda d, e: d.update(identity=_identity(probe_seconds=False)),
         "identity.probe_seconds must be a number or null, not boolean"),
        # names are matched whole: a trailing newline does not slip through
        (lambda d, e: e.update(file="one-16x8-fp32.png\n"), r"control character U\+000A"),
        (lambda d, e: e.update(pixel_sha256="0" * 64 + "\n"), r"control character U\+000A"),
        (lambda d, e: e.update(phash="0" * 16 + "0"), "phash must be 16 lower-case hex digits"),
        (lambda d, e: e.update(file="ONE.png"), "not a plain lower-case .png"),
        (lambda d, e: e.update(case="one two"), "case 'one two' is not accepted"),
        (lambda d, e: e.update(resolution="016x8"), "resolution '016x8' is not accepted"),
        (lambda d, e: e["params"].update(prompt={"nested": 1}),
         "params.prompt must be a string, number, boolean or null"),
        (lambda d, e: e.update(command="x" * 70_000),
         "command must be a string of at most 65536 characters"),
    ],
)
def test_tampered_manifest_is_rejected(tmp_path, tamper, message):
    path = _tamper(tmp_path, tamper)
    with pytest.raises(ManifestError, match=message) as info:
        GoldenStore(tmp_path).lookup(ITEM, CLS)
    assert str(info.value).startswith(str(path))


def test_tampered_hash_is_caught_on_load(tmp_path):
    _tamper(tmp_path, lambda d, e: e.update(pixel_sha256="0" * 64))
    store = GoldenStore(tmp_path)
    with pytest.raises(ManifestError, match="decoded pixels do not match"):
        store.load_image(store.lookup(ITEM, CLS), CLS)


def test_duplicate_file_entries_rejected(tmp_path):
    store = GoldenStore(tmp_path)
    record(store)
    path = tmp_path / "tiny-sd" / CLS / MANIFEST
    data = json.loads(path.read_text())
    entry = dict(data["entries"][ITEM.id], id="tiny-sd/one/16x8/bf16", precision="bf16")
    data["entries"]["tiny-sd/one/16x8/bf16"] = entry
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="is also used by"):
        GoldenStore(tmp_path).lookup(ITEM, CLS)


@given(st.integers(min_value=1, max_value=400))
def test_truncated_manifest_is_rejected(cut):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        store = GoldenStore(tmp)
        record(store)
        path = Path(tmp) / "tiny-sd" / CLS / MANIFEST
        text = path.read_text().rstrip()  # any strict prefix of an object is invalid
        path.write_text(text[: max(0, len(text) - cut)])
        with pytest.raises(ManifestError, match="not valid JSON"):
            GoldenStore(tmp).lookup(ITEM, CLS)


@given(st.binary(max_size=64))
def test_garbage_manifest_never_crashes(blob):
    from pathlib import Path

    try:
        parse_manifest(blob.decode("latin-1"), Path("m.json"))
    except ManifestError:
        pass


def test_changed_png_is_rejected(tmp_path):
    store = GoldenStore(tmp_path)
    png, _ = record(store)
    data = bytearray(png.read_bytes())
    data[-20] ^= 0xFF
    png.write_bytes(bytes(data))
    fresh = GoldenStore(tmp_path)
    with pytest.raises(ManifestError, match="does not match the manifest's"):
        fresh.load_image(fresh.lookup(ITEM, CLS), CLS)


def test_missing_png_and_symlinks(tmp_path):
    store = GoldenStore(tmp_path)
    png, _ = record(store)
    entry = GoldenStore(tmp_path).lookup(ITEM, CLS)
    png.rename(png.with_suffix(".bak"))
    with pytest.raises(ManifestError, match=r"listed in manifest\.json .* cannot be read"):
        GoldenStore(tmp_path).load_image(entry, CLS)
    png.symlink_to(png.with_suffix(".bak"))
    with pytest.raises(ManifestError, match="symbolic link"):
        GoldenStore(tmp_path).load_image(entry, CLS)
    manifest = png.parent / MANIFEST
    manifest.rename(png.parent / "real.json")
    manifest.symlink_to(png.parent / "real.json")
    with pytest.raises(ManifestError, match="symbolic link"):
        GoldenStore(tmp_path).lookup(ITEM, CLS)


def test_wrong_size_or_mode_png(tmp_path):
    from PIL import Image

    store = GoldenStore(tmp_path)
    png, _ = record(store)
    entry = GoldenStore(tmp_path).lookup(ITEM, CLS)
    for img, message in ((Image.new("RGB", (8, 8)), "is 8x8, the manifest says 16x8"),
                         (Image.new("RGBA", (16, 8)), "has mode RGBA"),
                         (None, "cannot be decoded as PNG")):
        if img is None:
            png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
        else:
            img.save(png)
        import dataclasses
        import hashlib

        fixed = dataclasses.replace(entry, file_sha256=hashlib.sha256(png.read_bytes()).hexdigest())
        with pytest.raises(ManifestError, match=message):
            GoldenStore(tmp_path).load_image(fixed, CLS)


def test_recording_writes_only_canonical_pngs(tmp_path, monkeypatch):
    import conformance.golden as golden

    def with_text(image):
        data = encode(image)
        return data[:33] + b"\x00\x00\x00\x03tEXtk\x00v" + (
            __import__("zlib").crc32(b"tEXtk\x00v").to_bytes(4, "big")) + data[33:]

    encode = golden.encode_png
    monkeypatch.setattr(golden, "encode_png", with_text)
    with pytest.raises(ManifestError, match=r"has a tEXt chunk \(text\)"):
        record(GoldenStore(tmp_path))
    assert not (tmp_path / "tiny-sd" / CLS / MANIFEST).exists()
    assert not list(tmp_path.rglob("*.png"))


def test_refusals_are_kept_until_a_record_reads_again(tmp_path):
    store = GoldenStore(tmp_path)
    record(store)
    path = tmp_path / "tiny-sd" / CLS / MANIFEST
    good = path.read_bytes()
    path.write_text("{")
    fresh = GoldenStore(tmp_path)
    for _ in range(2):
        with pytest.raises(ManifestError, match="not valid JSON"):
            fresh.lookup(ITEM, CLS)
    path.write_bytes(good)
    with pytest.raises(ManifestError, match="not valid JSON"):  # one answer per store
        fresh.manifest("tiny-sd", CLS)
    record(fresh, image(1), force=True)  # re-reads the set under the lock
    assert fresh.lookup(ITEM, CLS).pixel_sha256 == pixel_sha256(image(1))


def test_classes_lists_every_set_a_lookup_must_refuse(tmp_path):
    import os

    record(GoldenStore(tmp_path))
    base = tmp_path / "tiny-sd"
    (base / "cpu-avx512").mkdir()
    (base / "cpu-avx512" / MANIFEST).symlink_to(tmp_path / "nowhere.json")  # dangling
    (base / "cpu-default").symlink_to(base / CLS, target_is_directory=True)
    (base / "not a class").mkdir()
    (base / "not a class" / MANIFEST).write_text("{}")
    (base / "cpu-amd-avx2").mkdir()  # no manifest: no set
    store = GoldenStore(tmp_path)
    assert store.classes("tiny-sd") == [CLS, "cpu-avx512", "cpu-default"]
    for cls, message in (("cpu-avx512", "symbolic link"), ("cpu-default", "symbolic link")):
        with pytest.raises(ManifestError, match=message):
            store.manifest("tiny-sd", cls)
    assert store.manifest("tiny-sd", "cpu-amd-avx2") is None
    assert store.classes("../etc") == [] and store.manifest("..", CLS) is None
    os.chmod(base, 0)
    try:
        if os.access(base, os.R_OK):  # pragma: no cover - running as root
            return
        with pytest.raises(ManifestError, match="cannot be read"):
            store.classes("tiny-sd")
    finally:
        os.chmod(base, 0o755)


def test_first_divergent_step():
    a = trace(3, salt="a")
    b = [*a[:2], StepTrace(2, 1.0, "f" * 16, 0, 0, 0, 0)]
    assert first_divergent_step(a, a) is None
    assert first_divergent_step(a, b) == 2
    assert first_divergent_step(a, a[:1]) == 1
