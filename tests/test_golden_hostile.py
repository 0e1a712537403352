"""Hostile golden sets: PNG chunk streams, decompression bombs, links, FIFOs and manifests of
odd shapes. Each case is refused by ``conformance validate`` (exit 1, a line naming the file,
no traceback) and by the store (a ManifestError naming the file, never another exception),
nothing blocks, control characters are escaped, and the input is left exactly as it was."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from conformance.cases import Case, Item, Resolution
from conformance.cli import main
from conformance.errors import ManifestError
from conformance.golden import (
    MANIFEST,
    MAX_PNG_CHUNKS,
    GoldenStore,
    check_png,
    decode_png,
    encode_png,
    parse_manifest,
)
from tests.identities import identity_for
from tests.limits import time_limit
from tests.test_validate import FP, OTHER, REF, _image, _item, manifest_edit, set_dir

DOT = "tiny-sd/dot/16x8/fp32"
DOT_PNG = "dot-16x8-fp32.png"
SIG = b"\x89PNG\r\n\x1a\n"
#: raw control characters that must never reach a terminal (newline ends a line: allowed)
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")


# -- building blocks ---------------------------------------------------------------------------
def deadline(seconds: int = 30):
    """Fail instead of hanging (a read that blocks on a FIFO is interrupted)."""
    return time_limit(seconds)


@pytest.fixture
def root(tmp_path):
    """A golden root with a valid reference set and a valid contributed set."""
    golden = tmp_path / "golden"
    store = GoldenStore(golden)
    for cls, fp in ((REF, FP | {"hardware_class": REF}), (OTHER, FP)):
        for name, seed in (("dot", 1), ("ring", 2)):
            store.record(_item(name, seed), cls, _image(seed), [], fp, "2026-01-01T00:00:00Z",
                         "conformance record", identity=identity_for(cls, fp))
    return golden


def snapshot(top: Path) -> dict[str, tuple]:
    """Every entry below ``top`` (and ``top``'s siblings' links): kind, mode, mtime, content
    digest of regular files. Never opens anything but regular files (FIFOs stay closed)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top.parent):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st_ = os.lstat(p)
            digest = None
            if stat.S_ISREG(st_.st_mode):
                with open(p, "rb") as fh:
                    digest = hashlib.sha256(fh.read()).hexdigest()
            out[p] = (st_.st_mode, st_.st_mtime_ns, st_.st_nlink, digest,
                      os.readlink(p) if stat.S_ISLNK(st_.st_mode) else None)
    return out


def chunk(ctype: bytes, body: bytes) -> bytes:
    return (len(body).to_bytes(4, "big") + ctype + body
            + zlib.crc32(ctype + body).to_bytes(4, "big"))


def chunks_of(data: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 8
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        out.append((data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]))
        pos += 12 + n
    return out


def build(chunks, tail: bytes = b"") -> bytes:
    return SIG + b"".join(chunk(t, b) for t, b in chunks) + tail


def ihdr(w=16, h=8, depth=8, colour=2, interlace=0) -> tuple[bytes, bytes]:
    return b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, interlace)


def scanlines(w=16, h=8, depth=8, filter_type=0) -> bytes:
    return b"".join(bytes([filter_type]) + b"\x40" * (3 * w * depth // 8) for _ in range(h))


def raw_png(w=16, h=8, depth=8, colour=2, interlace=0, data=None, extra=()) -> bytes:
    idat = zlib.compress(scanlines(w, h, depth) if data is None else data)
    return build([ihdr(w, h, depth, colour, interlace), *extra, (b"IDAT", idat),
                  (b"IEND", b"")])


def dot(root: Path) -> Path:
    return set_dir(root) / DOT_PNG


def put_png(root: Path, data: bytes) -> None:
    """Replace the dot golden's PNG and fix its file SHA-256, so the PNG checks run."""
    dot(root).write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    manifest_edit(root, lambda d, e: e.update(file_sha256=digest))


def edit_chunks(fn):
    """A mutation rewriting the dot PNG's chunk list [(type, body), ...] with ``fn``."""
    def mutate(root):
        chunks = chunks_of(dot(root).read_bytes())
        result = fn(chunks)
        put_png(root, result if isinstance(result, bytes) else build(result))
    return mutate


def insert(ctype: bytes, body: bytes, at: int = 1):
    return edit_chunks(lambda c: [*c[:at], (ctype, body), *c[at:]])


def pil_png(mode: str, **save) -> bytes:
    img = Image.fromarray(_image(1)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG", **save)
    return buf.getvalue()


def apng() -> bytes:
    frames = [Image.fromarray(_image(1)), Image.fromarray(_image(2))]
    buf = io.BytesIO()
    frames[0].save(buf, format="PNG", save_all=True, append_images=frames[1:])
    return buf.getvalue()


def split_idat(chunks):
    (_, body), = [c for c in chunks if c[0] == b"IDAT"]
    half = len(body) // 2
    return [chunks[0], (b"IDAT", body[:half]), (b"sRGB", b"\x00"), (b"IDAT", body[half:]),
            (b"IEND", b"")]


def bad_crc(root):
    data = bytearray(dot(root).read_bytes())
    data[-13] ^= 0xFF  # the last CRC byte of the (only) IDAT chunk
    put_png(root, bytes(data))


def chunk_length(value: int):
    def mutate(root):
        data = bytearray(dot(root).read_bytes())
        data[33:37] = value.to_bytes(4, "big")  # the IDAT chunk after the 8 + 25 bytes
        put_png(root, bytes(data))
    return mutate


def edit_text(fn):
    def mutate(root):
        path = set_dir(root) / MANIFEST
        path.write_text(fn(path.read_text()))
    return mutate


def hard_link(root):
    os.link(dot(root), root.parent / "outside.png")


def fifo(name):
    def mutate(root):
        path = set_dir(root) / name
        path.unlink()
        os.mkfifo(path)
    return mutate


def rename_id(new_id):
    def fn(d, e):
        d["entries"][new_id] = dict(d["entries"].pop(DOT), id=new_id)
    return lambda root: manifest_edit(root, fn)


def link_class_folder(root):
    target = root.parent / "elsewhere" / OTHER
    target.parent.mkdir()
    set_dir(root).rename(target)
    set_dir(root).symlink_to(target, target_is_directory=True)


def link_model_folder(root):
    target = root.parent / "elsewhere"
    (root / "tiny-sd").rename(target)
    (root / "tiny-sd").symlink_to(target, target_is_directory=True)


def hostile_class_folder(root):
    shutil.copytree(set_dir(root), root / "tiny-sd" / "cpu-x\x1b[2J")


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# (kind, mutation, message, the file the message names, what the store is asked)
# store: "manifest" looks the dot up, "image" loads its image, "classes" lists classes and reads
# each set, None: the store does not read what is wrong (validate alone reports it).
CORPUS = [
    # -- PNG chunk streams
    ("tEXt chunk", insert(b"tEXt", b"Comment\x00hello"),
     "has a tEXt chunk (text); golden PNGs hold pixels only", DOT_PNG, "image"),
    ("zTXt chunk", insert(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"hello")),
     "has a zTXt chunk (text); golden PNGs hold pixels only", DOT_PNG, "image"),
    ("iTXt chunk after the image data", insert(b"iTXt", b"Comment\x00\x00\x00\x00\x00hi", 2),
     "has an iTXt chunk (text); golden PNGs hold pixels only", DOT_PNG, "image"),
    ("eXIf chunk", insert(b"eXIf", b"MM\x00*\x00\x00\x00\x08"),
     "has an eXIf chunk (EXIF metadata)", DOT_PNG, "image"),
    ("16-bit RGB", lambda r: put_png(r, raw_png(depth=16)),
     "is 16-bit; golden PNGs are 8-bit RGB", DOT_PNG, "image"),
    ("palette", lambda r: put_png(r, pil_png("P")),
     "has mode P, expected RGB", DOT_PNG, "image"),
    ("grey", lambda r: put_png(r, pil_png("L")), "has mode L, expected RGB", DOT_PNG, "image"),
    ("interlaced", lambda r: put_png(r, raw_png(interlace=1)),
     "is interlaced (Adam7); golden PNGs are not interlaced", DOT_PNG, "image"),
    ("APNG (acTL, fcTL, fdAT)", lambda r: put_png(r, apng()),
     "has 2 frames (APNG); golden PNGs hold one image", DOT_PNG, "image"),
    ("bytes after IEND", edit_chunks(lambda c: build(c, b"\x00" * 12)),
     "has 12 bytes after IEND", DOT_PNG, "image"),
    ("two IDAT runs split by another chunk", edit_chunks(split_idat),
     "has 2 runs of IDAT chunks, split by a sRGB chunk", DOT_PNG, "image"),
    ("bad CRC", bad_crc, "the CRC of its IDAT chunk at byte 33 is wrong", DOT_PNG, "image"),
    ("chunk length past the end", chunk_length(0x7FFFFFF0),
     "its IDAT chunk at byte 33 declares 2147483632 bytes but only", DOT_PNG, "image"),
    ("chunk length over 2^31-1", chunk_length(0xFFFFFFFF),
     "PNG chunks hold at most 2^31-1", DOT_PNG, "image"),
    ("too many chunks", edit_chunks(lambda c: [c[0], *[(b"IDAT", b"")] * MAX_PNG_CHUNKS, *c[1:]]),
     f"has more than {MAX_PNG_CHUNKS} chunks", DOT_PNG, "image"),
    ("unknown critical chunk", insert(b"QQQQ", b"x"),
     "has the unknown critical chunk QQQQ", DOT_PNG, "image"),
    ("IHDR not first", edit_chunks(lambda c: [(b"sRGB", b"\x00"), *c]),
     "the first chunk is sRGB, not IHDR", DOT_PNG, "image"),
    ("bytes after the zlib stream",
     lambda r: put_png(r, build([ihdr(), (b"IDAT", zlib.compress(scanlines()) + b"junk"),
                                 (b"IEND", b"")])),
     "has 4 bytes after the end of its compressed image data", DOT_PNG, "image"),
    ("image data too short", lambda r: put_png(r, raw_png(data=scanlines()[:-10])),
     "its image data inflates to 382 bytes; a 16x8 RGB image is 392", DOT_PNG, "image"),
    ("bad scanline filter", lambda r: put_png(r, raw_png(data=scanlines(filter_type=9))),
     "scanline 0 has filter type 9; PNG has 0-4", DOT_PNG, "image"),
    ("zlib bomb", lambda r: put_png(r, raw_png(data=b"\x00" * 10_000_000)),
     "inflates past the 392 bytes a 16x8 RGB image holds (a decompression bomb?)",
     DOT_PNG, "image"),
    ("IHDR of 100000x100000", lambda r: put_png(r, raw_png(100_000, 100_000, data=b"")),
     "is 100000x100000 pixels, over the limit", DOT_PNG, "image"),
    # -- files and folders
    ("hard link", hard_link, "has 2 hard links; golden files have one", DOT_PNG, "image"),
    pytest.param("FIFO as PNG", fifo(DOT_PNG), "is not a regular file: it is a FIFO",
                 DOT_PNG, "image", marks=needs_fifo, id="FIFO as PNG"),
    pytest.param("FIFO as manifest", fifo(MANIFEST), "is not a regular file: it is a FIFO",
                 MANIFEST, "manifest", marks=needs_fifo, id="FIFO as manifest"),
    ("manifest is a folder", lambda r: ((set_dir(r) / MANIFEST).unlink(),
                                        (set_dir(r) / MANIFEST).mkdir()),
     "is not a regular file: it is a folder", MANIFEST, "manifest"),
    ("symlinked class folder", link_class_folder,
     "is a symbolic link; golden set folders are plain folders", OTHER, "classes"),
    ("symlinked model folder", link_model_folder,
     "is a symbolic link; golden set folders are plain folders", "tiny-sd", "classes"),
    ("class folder name with an escape sequence", hostile_class_folder,
     "folder name: 'cpu-x\\x1b[2J' is not a hardware class", "cpu-x\\x1b[2J", None),
    ("file name with a trailing newline",
     lambda r: (set_dir(r) / f"{DOT_PNG}\n").write_bytes(dot(r).read_bytes()),
     "the file name 'dot-16x8-fp32.png\\n' holds a control character", "png\\n", None),
    ("manifest larger than the cap",
     edit_text(lambda t: t + " " * (16 * 2**20 + 1)),
     "files of this kind are read up to 16 MiB", MANIFEST, "manifest"),
    ("manifest with a byte-order mark", edit_text(lambda t: "\ufeff" + t),
     "starts with a byte-order mark", MANIFEST, "manifest"),
    # -- manifests of odd shapes
    ("duplicate keys", edit_text(lambda t: t.replace('"width": 16,', '"width": 16, "width": 16,')),
     ".width: appears twice in one object", MANIFEST, "manifest"),
    ("true as width", lambda r: manifest_edit(r, lambda d, e: e.update(width=True)),
     "width must be an integer, not a boolean (True)", MANIFEST, "manifest"),
    ("true as the identity's battery_version",
     lambda r: manifest_edit(r, lambda d, e: d["identity"].update(battery_version=True)),
     "identity.battery_version must be an integer or null, not boolean", MANIFEST, "manifest"),
    ("true as a trace step",
     lambda r: manifest_edit(r, lambda d, e: e.update(trace=[{
         "step": True, "timestep": 1.0, "digest": "ab", "mean": 0, "std": 0, "min": 0,
         "max": 0}])),
     "key 'trace' is malformed: step 0: key 'step' must be an integer", MANIFEST, "manifest"),
    ("10 000-deep value in params",
     edit_text(lambda t: t.replace('"params": {', '"params": {"deep": ' + nested(10_000) + ",")),
     "nested too deeply", MANIFEST, "manifest"),
    ("400-digit integer", edit_text(lambda t: t.replace('"width": 16', '"width": 1' + "0" * 399)),
     "an integer of 400 digits", MANIFEST, "manifest"),
    ("NaN", edit_text(lambda t: t.replace('"width": 16', '"width": NaN')),
     "NaN is not JSON", MANIFEST, "manifest"),
    ("schema_version 2.0", lambda r: manifest_edit(r, lambda d, e: d.update(schema_version=2.0)),
     "schema_version is 2.0", MANIFEST, "manifest"),
    ("trailing newline in the file name",
     lambda r: manifest_edit(r, lambda d, e: e.update(file=f"{DOT_PNG}\n")),
     "'dot-16x8-fp32.png\\n' holds the control character U+000A", MANIFEST, "manifest"),
    ("id with an ANSI escape", rename_id("tiny-sd/dot\x1b[31m/16x8/fp32"),
     "holds the control character U+001B", MANIFEST, "manifest"),
    ("bidi override in a prompt",
     lambda r: manifest_edit(r, lambda d, e: e["params"].update(prompt="a red \u202ecircle")),
     "holds the control character U+202E", MANIFEST, "manifest"),
    ("nested value in params",
     lambda r: manifest_edit(r, lambda d, e: e["params"].update(seed={"a": 1})),
     "params.seed must be a string, number, boolean or null, not table", MANIFEST, "manifest"),
    ("nested value in the fingerprint",
     lambda r: manifest_edit(r, lambda d, e: e["fingerprint"].update(torch=["2.13"])),
     "fingerprint.torch must be a string, number, boolean or null, not array", MANIFEST,
     "manifest"),
    ("trace step of the wrong type",
     lambda r: manifest_edit(r, lambda d, e: e.update(trace=[{
         "step": 0, "timestep": 1.0, "digest": "ab", "mean": "x", "std": 0, "min": 0,
         "max": 0}])),
     "key 'trace' is malformed: step 0: key 'mean' must be a number", MANIFEST, "manifest"),
    ("identity flags not a list",
     lambda r: manifest_edit(r, lambda d, e: d["identity"]["features"].update(flags=5)),
     "identity.features.flags must be an array of flag names", MANIFEST, "manifest"),
    ("identity env of the wrong shape",
     lambda r: manifest_edit(r, lambda d, e: d["identity"]["features"].update(env="x")),
     "identity.features.env must be an object, not string", MANIFEST, "manifest"),
]


def _kind(case) -> str:
    return case.values[0] if hasattr(case, "values") else case[0]


@pytest.mark.parametrize(("kind", "mutate", "message", "names", "store"), CORPUS,
                         ids=[_kind(c) for c in CORPUS])
def test_hostile_golden_corpus(root, capsys, kind, mutate, message, names, store):
    mutate(root)
    before = snapshot(root)
    with deadline():
        code = main(["validate", str(root), "--reference-dir", str(root)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert code == 1, f"{kind}: {out}"
    lines = [line for line in out.splitlines() if message in line]
    assert lines, f"{kind}: expected {message!r} in:\n{out}"
    assert any(names in line.split(": ", 1)[0] for line in lines), lines
    assert not RAW_CONTROL.search(out + err), "a control character reached the terminal"
    assert snapshot(root) == before, "validate modified its input"
    if store is not None:
        with deadline(), pytest.raises(ManifestError) as info:
            _ask_store(GoldenStore(root), store)
        assert names in info.value.where, (info.value.where, names)
        text = str(info.value)
        assert message in text, text
        assert not RAW_CONTROL.search(text)
    assert snapshot(root) == before, "the store modified its input"


def _ask_store(store: GoldenStore, how: str) -> None:
    if how == "manifest":
        store.lookup_id("tiny-sd", DOT, OTHER)
    elif how == "image":
        entry = store.lookup_id("tiny-sd", DOT, OTHER)
        assert entry is not None
        store.load_image(entry, OTHER)
    else:
        for cls in store.classes("tiny-sd"):
            store.manifest("tiny-sd", cls)


def test_corpus_size():
    assert len(CORPUS) >= 25


# -- a bomb: a 64x64 IHDR whose image data inflates to 100 MB ----------------------------------
@pytest.fixture(scope="module")
def bomb() -> bytes:
    return raw_png(64, 64, data=b"\x00" * 100_000_000)


def test_zlib_bomb_stops_at_the_declared_size(tmp_path, capsys, bomb):
    case = Case("big", "tiny-sd", "a red circle", "", 1, 2, "euler", 4.0,
                (Resolution(64, 64),), ("fp32",))
    item = Item(case, Resolution(64, 64), "fp32")
    root = tmp_path / "golden"
    cls = OTHER
    GoldenStore(root).record(item, cls, np.zeros((64, 64, 3), np.uint8), [], FP, "t", "c",
                             identity=identity_for(cls, FP))
    path = root / "tiny-sd" / cls / f"{item.stem}.png"
    path.write_bytes(bomb)
    digest = hashlib.sha256(bomb).hexdigest()
    manifest = path.parent / MANIFEST
    data = json.loads(manifest.read_text())
    data["entries"][item.id]["file_sha256"] = digest
    manifest.write_text(json.dumps(data))
    before = snapshot(root)
    store = GoldenStore(root)
    entry = store.lookup(item, cls)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ManifestError, match="inflates past the 12352 bytes a 64x64 RGB "
                                                "image holds") as info:
            store.load_image(entry, cls)
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.where == str(path)
    assert seconds < 2, seconds
    assert peak < 8 * len(bomb) + 2**20, peak  # the file itself, never the 100 MB
    with deadline():
        code = main(["validate", str(root), "--reference-dir", str(root)])
    out, _ = capsys.readouterr()
    assert code == 1 and "a decompression bomb?" in out and path.name in out
    assert snapshot(root) == before


def test_worst_case_bomb_is_bounded_by_the_pixel_limit():
    """The largest image the limit allows, claimed by a tiny stream of zeros inflating past
    it: inflated once, in pieces, and dropped."""
    w = h = 4096
    big = raw_png(w, h, data=b"\x00" * (h * (1 + 3 * w) + 10_000))
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ManifestError, match="a decompression bomb"):
            check_png(big, Path("big.png"), w, h)
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seconds < 5, seconds
    assert peak < 32 * 2**20, peak  # pieces of at most 4 MiB, never the 48 MiB image


# -- what the suite writes is canonical --------------------------------------------------------
@pytest.mark.parametrize(("h", "w"), [(1, 1), (8, 16), (64, 64), (300, 400)])
def test_encoded_pngs_are_canonical(h, w):
    image = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    data = encode_png(image)
    types = {t for t, _ in chunks_of(data)}
    assert types <= {b"IHDR", b"IDAT", b"IEND"}, types
    assert np.array_equal(decode_png(data, Path("x.png"), w, h), image)


def test_allowed_ancillary_chunks_pass_and_their_sizes_are_checked():
    extra = [(b"sRGB", b"\x00"), (b"gAMA", (45455).to_bytes(4, "big")),
             (b"pHYs", b"\x00\x00\x0b\x13\x00\x00\x0b\x13\x01")]
    pixels = decode_png(raw_png(extra=extra), Path("x.png"), 16, 8)
    assert pixels.shape == (8, 16, 3) and int(pixels[0, 0, 0]) == 0x40
    with pytest.raises(ManifestError, match="has a gAMA chunk of 5 bytes; gAMA is 4 bytes"):
        check_png(raw_png(extra=[(b"gAMA", b"\x00" * 5)]), Path("x.png"), 16, 8)
    with pytest.raises(ManifestError, match="has two sRGB chunks"):
        check_png(raw_png(extra=[(b"sRGB", b"\x00")] * 2), Path("x.png"), 16, 8)


def test_committed_goldens_are_canonical():
    from conformance import PROJECT_ROOT

    manifests = sorted((PROJECT_ROOT / "golden").glob("*/*/manifest.json"))
    if not manifests:
        pytest.skip("no committed golden sets")
    for path in manifests:
        manifest = parse_manifest(path.read_bytes(), path, legacy=True)
        for entry in manifest.entries.values():
            png = path.parent / entry.file
            decode_png(png.read_bytes(), png, entry.width, entry.height)


# -- fault isolation ---------------------------------------------------------------------------
def test_a_broken_set_only_fails_its_own_lookups(root):
    put_png(root, raw_png(depth=16))  # the OTHER set's dot golden
    (root / "tiny-sd" / "cpu-amd-avx512").mkdir()
    if hasattr(os, "mkfifo"):
        os.mkfifo(root / "tiny-sd" / "cpu-amd-avx512" / MANIFEST)
    (root / "tiny-sd" / "notes").mkdir()  # not a class: not a set, never listed
    (root / "tiny-sd" / "notes" / MANIFEST).write_text("{}")
    store = GoldenStore(root)
    with deadline():
        classes = store.classes("tiny-sd")
    assert OTHER in classes and REF in classes and "notes" not in classes
    ring = store.lookup_id("tiny-sd", "tiny-sd/ring/16x8/fp32", OTHER)
    assert store.load_image(ring, OTHER).shape == (8, 16, 3)
    with pytest.raises(ManifestError, match="is 16-bit"):
        store.load_image(store.lookup_id("tiny-sd", DOT, OTHER), OTHER)
    assert store.load_image(store.lookup_id("tiny-sd", DOT, REF), REF).shape == (8, 16, 3)
    if hasattr(os, "mkfifo"):
        with deadline(), pytest.raises(ManifestError, match="FIFO"):
            store.manifest("tiny-sd", "cpu-amd-avx512")
        with pytest.raises(ManifestError, match="FIFO"):  # the refusal is kept, not re-read
            store.manifest("tiny-sd", "cpu-amd-avx512")


def test_the_store_never_follows_linked_folders_or_writes_through_them(root, tmp_path):
    link_class_folder(root)
    before = snapshot(root)
    store = GoldenStore(root)
    assert OTHER in store.classes("tiny-sd")
    for call in (lambda: store.manifest("tiny-sd", OTHER),
                 lambda: store.lookup(_item("dot", 1), OTHER),
                 lambda: store.record(_item("star", 3), OTHER, _image(3), [], FP, "t", "c",
                                      identity=identity_for(OTHER, FP))):
        with pytest.raises(ManifestError, match="is a symbolic link"):
            call()
    assert snapshot(root) == before
    link = tmp_path / "linked-root"
    link.symlink_to(root, target_is_directory=True)  # the root itself may be a link
    assert GoldenStore(link).lookup(_item("dot", 1), REF) is not None


def _run_item(name: str, seed: int) -> Item:
    case = Case(name, "tiny-sd", "a red circle", "", seed, 2, "euler", 4.0,
                (Resolution(32, 32),), ("fp32",))
    return Item(case, Resolution(32, 32), "fp32")


def _run_image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)


class _Runner:
    """Generates exactly the golden image (the own-class check passes)."""

    def generate(self, item, variant=None):
        from conformance.generate import Generation

        return Generation(item.id, _run_image(1 if "dot" in item.id else 2), [], 0.01)

    def peak_memory_mb(self):
        return None


def test_a_run_errors_only_the_items_of_the_broken_set(tmp_path):
    from conformance.hardware import HardwareClass
    from conformance.report.results import Check
    from conformance.session import ConformanceSession, Settings

    root = tmp_path / "golden"
    for cls, fp in ((REF, FP | {"hardware_class": REF}), (OTHER, FP)):
        for name, seed in (("dot", 1), ("ring", 2)):
            GoldenStore(root).record(_run_item(name, seed), cls, _run_image(seed), [],
                                     fp, "t", "c", identity=identity_for(cls, fp))
    cases = tmp_path / "cases.toml"
    cases.write_text('schema_version = 1\n[axes]\nresolutions = ["32x32"]\nprecisions = '
                     '["fp32"]\n' + "".join(
                         f'[cases.{n}]\nmodel = "tiny-sd"\nprompt = "a red circle"\nseed = {s}'
                         f'\nsteps = 2\nscheduler = "euler"\nguidance_scale = 4.0\n'
                         for n, s in (("dot", 1), ("ring", 2))))
    # break the reference class's dot golden: a tEXt chunk
    ref_png = set_dir(root, REF) / "dot-32x32-fp32.png"
    chunks = chunks_of(ref_png.read_bytes())
    data = build([chunks[0], (b"tEXt", b"k\x00v"), *chunks[1:]])
    ref_png.write_bytes(data)
    manifest = set_dir(root, REF) / MANIFEST
    body = json.loads(manifest.read_text())
    body["entries"]["tiny-sd/dot/32x32/fp32"]["file_sha256"] = hashlib.sha256(data).hexdigest()
    manifest.write_text(json.dumps(body))
    run = ConformanceSession(
        Settings(golden_dir=root, cases_path=cases, reference_class=REF,
                 results_path=tmp_path / "out" / "results.json"),
        HardwareClass(OTHER), FP, runner=_Runner())
    items = {i.case.name: i for i in run.items()}
    own = run.evaluate(items["dot"], Check.OWN_CLASS)
    assert own.status == "passed", own.message
    assert "has a tEXt chunk" in own.by_class[REF].error and OTHER in own.by_class
    ref = run.evaluate(items["dot"], Check.REFERENCE)
    assert ref.status == "error" and "has a tEXt chunk (text)" in ref.message
    assert str(ref_png) in ref.message
    assert run.evaluate(items["ring"], Check.REFERENCE).status == "passed"
    assert run.evaluate(items["ring"], Check.OWN_CLASS).status == "passed"


def test_every_problem_of_many_hostile_sets_is_reported_at_once(root, capsys):
    insert(b"tEXt", b"a\x00b")(root)  # dot of OTHER
    ring = set_dir(root) / "ring-16x8-fp32.png"
    os.link(ring, root.parent / "ring-outside.png")
    (set_dir(root) / "x\x1b]0;pwned\x07.png").write_bytes(b"\x89PNG")
    manifest_edit(root, lambda d, e: e["params"].update(prompt="x"), cls=REF)  # stale params
    before = snapshot(root)
    with deadline():
        code = main(["validate", str(root), "--reference-dir", str(root)])
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in out + err
    assert not RAW_CONTROL.search(out + err)
    for text in ("has a tEXt chunk (text)", "has 2 hard links",
                 "holds a control character", "is not declared in manifest.json"):
        assert text in out, out
    assert snapshot(root) == before


# -- properties: no other exception, whatever the bytes ----------------------------------------
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False,
                                                                       allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=8,
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


_VALID = {
    "schema_version": 2, "model": "tiny-sd", "hardware_class": OTHER,
    "identity": identity_for(OTHER, FP).to_dict(),
    "entries": {DOT: {
        "id": DOT, "model": "tiny-sd", "case": "dot", "resolution": "16x8", "precision": "fp32",
        "file": DOT_PNG, "width": 16, "height": 8, "pixel_sha256": "a" * 64,
        "file_sha256": "b" * 64, "phash": "c" * 16, "dhash": "d" * 16,
        "params": {"model": "tiny-sd", "seed": 1},
        "trace": [{"step": 0, "timestep": 1.0, "digest": "ab", "mean": 0.0, "std": 1.0,
                   "min": -1.0, "max": 1.0}],
        "fingerprint": {"threads": 1}, "recorded_at": "t", "command": "c"}},
}
_VALID_PATHS = [p for p in _paths(_VALID) if p]


@given(where=st.sampled_from(_VALID_PATHS), value=_JSON)
def test_any_value_anywhere_is_a_manifest_error_or_accepted(where, value):
    data = json.loads(json.dumps(_VALID))
    node = data
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    try:
        parse_manifest(json.dumps(data), Path(MANIFEST), "tiny-sd", OTHER)
    except ManifestError as exc:
        assert exc.where == MANIFEST


_GOOD_PNG = encode_png(_image(1))


@given(st.lists(st.tuples(st.integers(0, len(_GOOD_PNG) - 1), st.integers(0, 255)),
                min_size=1, max_size=4),
       st.integers(0, 64))
def test_any_damaged_png_is_a_manifest_error_or_its_pixels(edits, cut):
    data = bytearray(_GOOD_PNG)
    for at, byte in edits:
        data[at] = byte
    data = bytes(data[: len(data) - cut])
    try:
        pixels = decode_png(data, Path(DOT_PNG), 16, 8)
    except ManifestError as exc:
        assert exc.where == DOT_PNG
    else:
        assert pixels.shape == (8, 16, 3)
