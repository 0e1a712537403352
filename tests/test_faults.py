"""Faults: a killed run, a full disk, an unwritable folder, two runs at once, a damaged
cache, a cut results file, a closed pipe. Nothing is lost, nothing poisoned, no traceback:
each fault is one line naming the path and the cause."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conformance import golden as golden_module
from conformance.cases import Case, Item, Resolution
from conformance.cli import EXIT_BROKEN_PIPE, main
from conformance.errors import GoldenExistsError, ManifestError, OutputError
from conformance.golden import LOCK_FILE, MANIFEST, GoldenStore
from conformance.safeio import new_file_mode, writable_problem, write_atomic
from tests.identities import identity_for
from tests.report.test_matrix import outcome
from tests.test_validate import FP, OTHER

ROOT = Path(__file__).resolve().parents[1]
ENV = os.environ | {"PYTHONPATH": str(ROOT), "TRANSFORMERS_VERBOSITY": "error"}
IDENTITY = identity_for(OTHER, FP)


def item(name: str = "dot", seed: int = 1) -> Item:
    case = Case(name, "tiny-sd", "a red circle", "", seed, 2, "euler", 4.0,
                (Resolution(16, 8),), ("fp32",))
    return Item(case, Resolution(16, 8), "fp32")


def image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (8, 16, 3), dtype=np.uint8)


def record(store: GoldenStore, it: Item | None = None, img: np.ndarray | None = None,
           force: bool = False) -> tuple[Path, bool]:
    return store.record(it or item(), OTHER, image() if img is None else img, [], FP,
                        "2026-01-01T00:00:00Z", "conformance record", force=force,
                        identity=IDENTITY)


def set_folder(root: Path) -> Path:
    return root / "tiny-sd" / OTHER


def validate(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["validate", str(root), "--reference-dir", str(root), "--jobs", "1"])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def no_temp_files(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.endswith(".tmp")]


# -- 1. one lock per golden set, inside the set ------------------------------------------------

RECORDER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    import numpy as np
    from conformance.cases import Case, Item, Resolution
    from conformance.golden import GoldenStore
    from tests.identities import identity_for
    from tests.test_validate import FP, OTHER
    root, tag, start = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    while not start.exists():
        time.sleep(0.005)
    store = GoldenStore(root)
    for n in range(int(sys.argv[4])):
        case = Case(f"{tag}{n}", "tiny-sd", "p", "", n, 2, "euler", 4.0,
                    (Resolution(16, 8),), ("fp32",))
        image = np.random.default_rng(n).integers(0, 256, (8, 16, 3), dtype=np.uint8)
        store.record(Item(case, Resolution(16, 8), "fp32"), OTHER, image, [], FP,
                     "2026-01-01T00:00:00Z", "c", identity=identity_for(OTHER, FP))
""")


def test_two_recorders_with_their_own_tmpdir_lose_no_golden(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    """Two CI jobs on one runner (each with its own TMPDIR) record into one set at once:
    every golden each one recorded is in the manifest, and the set validates."""
    root, start, per = tmp_path / "golden", tmp_path / "go", 25
    procs = []
    for tag in ("a", "b"):
        tmpdir = tmp_path / f"tmp-{tag}"
        tmpdir.mkdir()
        procs.append(subprocess.Popen(
            [sys.executable, "-c", RECORDER, str(root), tag, str(start), str(per)],
            env=ENV | {"TMPDIR": str(tmpdir)}, stderr=subprocess.PIPE, text=True))
    time.sleep(0.5)  # both import before they start
    start.touch()
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    entries = json.loads((set_folder(root) / MANIFEST).read_text())["entries"]
    assert len(entries) == 2 * per
    pngs = {p.name for p in set_folder(root).glob("*.png")}
    assert pngs == {e["file"] for e in entries.values()}
    assert (set_folder(root) / LOCK_FILE).is_file()
    assert not list((tmp_path / "tmp-a").iterdir()) and not list((tmp_path / "tmp-b").iterdir())
    assert validate(root, capsys)[0] == 0


def test_the_lock_file_is_the_sets_and_takes_the_umask(tmp_path: Path) -> None:
    with umask(0o002):
        record(GoldenStore(tmp_path))
    lock = set_folder(tmp_path) / LOCK_FILE
    assert stat.S_IMODE(lock.stat().st_mode) == 0o664  # a team's umask: group-writable
    assert lock.stat().st_size == 0


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from conformance.golden import set_lock
    with set_lock(Path(sys.argv[1])):
        Path(sys.argv[2]).touch()
        time.sleep(600)
""")


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    """A recorder killed with SIGKILL while it holds the set's lock: the next writer waits
    while it lives and goes on at once after it died (the kernel drops an flock)."""
    record(GoldenStore(tmp_path))
    folder, held = set_folder(tmp_path), tmp_path / "held"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), str(held)], env=ENV)
    try:
        deadline = time.monotonic() + 60
        while not held.exists():
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        import fcntl

        fd = os.open(folder / LOCK_FILE, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):  # held by the other process
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    started = time.monotonic()
    record(GoldenStore(tmp_path), item("ring", 2), image(2))
    assert time.monotonic() - started < 10
    assert len(GoldenStore(tmp_path).manifest("tiny-sd", OTHER).entries) == 2


def test_a_lock_file_that_cannot_be_opened_is_one_line(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Another user's lock file this user may not open (as root the kernel lets every open
    through, so the refusal is injected): one error naming the file and the cause."""
    record(GoldenStore(tmp_path))
    lock = set_folder(tmp_path) / LOCK_FILE
    real_open = os.open

    def refuse(path: Any, flags: int, *args: Any, **kw: Any) -> int:
        if os.fspath(path) == str(lock):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", refuse)
    before = (set_folder(tmp_path) / MANIFEST).read_bytes()
    with pytest.raises(OutputError) as info:
        record(GoldenStore(tmp_path), item("ring", 2), image(2))
    assert info.value.where == str(lock)
    assert info.value.message.startswith(
        "cannot open the golden set's lock file: Permission denied (owned by uid ")
    assert "\n" not in str(info.value)
    assert (set_folder(tmp_path) / MANIFEST).read_bytes() == before
    assert not (set_folder(tmp_path) / "ring-16x8-fp32.png").exists()


def test_a_lock_file_of_another_user_that_is_only_readable_still_locks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lock file made by another user with mode 0644: this one may only read it, and
    flock needs no more; recording goes on."""
    record(GoldenStore(tmp_path))
    lock = set_folder(tmp_path) / LOCK_FILE
    real_open = os.open
    modes: list[int] = []

    def read_only(path: Any, flags: int, *args: Any, **kw: Any) -> int:
        if os.fspath(path) == str(lock):
            modes.append(flags & os.O_ACCMODE)
            if flags & os.O_ACCMODE != os.O_RDONLY:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", read_only)
    record(GoldenStore(tmp_path), item("ring", 2), image(2))
    assert modes == [os.O_RDWR, os.O_RDONLY]
    assert len(GoldenStore(tmp_path).manifest("tiny-sd", OTHER).entries) == 2


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p.mkdir(), "cannot open the golden set's lock file: Is a directory"),
    (lambda p: p.symlink_to(p.parent / MANIFEST),
     "cannot open the golden set's lock file: Too many levels of symbolic links"),
    (lambda p: os.mkfifo(p), "the golden set's lock file is a FIFO (named pipe), not a "
     "regular file; remove it"),
])
def test_a_lock_file_that_is_not_a_file_is_refused(tmp_path: Path, make: Any,
                                                   message: str) -> None:
    record(GoldenStore(tmp_path))
    lock = set_folder(tmp_path) / LOCK_FILE
    lock.unlink()
    make(lock)
    with pytest.raises(OutputError) as info:
        record(GoldenStore(tmp_path), item("ring", 2), image(2))
    assert info.value.where == str(lock) and info.value.message.startswith(message)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_set_folder_is_one_line(tmp_path: Path) -> None:
    record(GoldenStore(tmp_path))
    folder = set_folder(tmp_path)
    (folder / LOCK_FILE).unlink()
    folder.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="lock file: Permission denied"):
            record(GoldenStore(tmp_path), item("ring", 2), image(2))
    finally:
        folder.chmod(0o755)


def test_a_set_folder_that_cannot_be_made_is_one_line(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_bytes(b"")  # a file where the model's folder goes
    with pytest.raises(ManifestError, match=r"file/tiny-sd: cannot be read: Not a directory$"):
        record(GoldenStore(tmp_path / "file"))

    def read_only(self: Path, *args: Any, **kw: Any) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(OutputError) as info:
        record(GoldenStore(tmp_path / "golden"))
    assert str(info.value) == (f"{set_folder(tmp_path / 'golden')}: cannot create the golden "
                               "set's folder: Read-only file system")


def test_validate_allows_the_lock_file_and_only_an_empty_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record(GoldenStore(tmp_path))
    lock = set_folder(tmp_path) / LOCK_FILE
    assert lock.exists()
    assert validate(tmp_path, capsys) == (0, "")
    lock.write_bytes(b"x")
    code, out = validate(tmp_path, capsys)
    assert code == 1
    assert out == f"{lock}: is the set's lock file but holds 1 bytes; it is empty\n"
    lock.unlink()
    (set_folder(tmp_path) / ".lock2").write_bytes(b"")
    code, out = validate(tmp_path, capsys)
    assert code == 1 and "/.lock2: is not declared in manifest.json" in out


def test_migrate_takes_the_lock_of_the_set_it_writes(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from conformance import migrate
    from conformance.golden import Manifest

    taken: list[Path] = []
    real = golden_module.set_lock

    def spy(directory: Path) -> Any:
        taken.append(directory)
        return real(directory)

    monkeypatch.setattr(migrate, "set_lock", spy)
    manifest = Manifest("tiny-sd", OTHER, identity=IDENTITY)
    assert migrate._write_set(tmp_path, manifest, tmp_path / "out") == "0 goldens"
    assert taken == [tmp_path / "out"]
    assert (tmp_path / "out" / LOCK_FILE).is_file()


# -- 2. an interrupted record resumes ----------------------------------------------------------


class Crash(BaseException):
    """A kill between two writes (not an Exception: nothing may catch it)."""


def crash_at_manifest(monkeypatch: pytest.MonkeyPatch) -> None:
    real = golden_module.atomic_write

    def write(path: Path, data: bytes, kind: str = "file") -> None:
        if path.name == MANIFEST:
            raise Crash
        real(path, data, kind)

    monkeypatch.setattr(golden_module, "atomic_write", write)


def test_a_crash_between_png_and_manifest_resumes(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    record(GoldenStore(tmp_path))
    with monkeypatch.context() as m:
        crash_at_manifest(m)
        with pytest.raises(Crash):
            record(GoldenStore(tmp_path), item("ring", 2), image(2))
    png = set_folder(tmp_path) / "ring-16x8-fp32.png"
    assert png.exists()
    assert validate(tmp_path, capsys)[1] == f"{png}: is not declared in manifest.json\n"
    store = GoldenStore(tmp_path)
    path, replaced = record(store, item("ring", 2), image(2))  # no --force
    assert (path, replaced) == (png, False)
    assert store.notices == [
        f"{png}: adopted: an interrupted record left this PNG undeclared, and it holds the "
        "same bytes as this generation of tiny-sd/ring/16x8/fp32; now listed in manifest.json"]
    assert capsys.readouterr().err == f"conformance: {store.notices[0]}\n"
    assert validate(tmp_path, capsys) == (0, "")
    entry = GoldenStore(tmp_path).lookup(item("ring", 2), OTHER)
    assert np.array_equal(GoldenStore(tmp_path).load_image(entry, OTHER), image(2))


def test_an_undeclared_png_with_other_bytes_is_still_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        crash_at_manifest(m)
        with pytest.raises(Crash):
            record(GoldenStore(tmp_path))
    png = set_folder(tmp_path) / "dot-16x8-fp32.png"
    before = png.read_bytes()
    store = GoldenStore(tmp_path)
    with pytest.raises(GoldenExistsError, match=r"not listed in manifest\.json and differs from "
                       r"this generation; move it away or re-run with --force"):
        record(store, img=image(5))
    assert png.read_bytes() == before and not store.notices
    assert record(store, img=image(5), force=True) == (png, False)
    assert png.read_bytes() != before


def test_an_undeclared_link_is_never_adopted(tmp_path: Path) -> None:
    record(GoldenStore(tmp_path), item("ring", 2), image(2))
    folder = set_folder(tmp_path)
    (folder / "dot-16x8-fp32.png").symlink_to(folder / "ring-16x8-fp32.png")
    with pytest.raises(ManifestError, match="is not a regular file: it is a symbolic link"):
        record(GoldenStore(tmp_path))


# -- 3. full disk, unwritable folders, file modes ----------------------------------------------


def full_disk(monkeypatch: pytest.MonkeyPatch, after: int = 3) -> None:
    """``os.write`` writes ``after`` bytes, then the disk is full (ENOSPC)."""
    def write(fd: int, data: Any) -> int:
        if fd <= 2:  # the test's own output
            return real(fd, data)
        if after and len(data) > after:
            return real(fd, bytes(data[:after]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    real = os.write
    monkeypatch.setattr(os, "write", write)


def test_a_full_disk_while_recording_is_one_line_and_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record(GoldenStore(tmp_path))
    folder = set_folder(tmp_path)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with monkeypatch.context() as m:
        full_disk(m)
        with pytest.raises(OutputError) as info:
            record(GoldenStore(tmp_path), item("ring", 2), image(2))
    assert str(info.value) == (f"{folder / 'ring-16x8-fp32.png'}: cannot write golden PNG: "
                               "No space left on device")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_a_full_disk_at_the_manifest_then_a_rerun_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    record(GoldenStore(tmp_path))
    real = golden_module.atomic_write

    def write(path: Path, data: bytes, kind: str = "file") -> None:
        if path.name == MANIFEST:
            full_disk(monkeypatch)
        real(path, data, kind)

    with monkeypatch.context() as m:
        m.setattr(golden_module, "atomic_write", write)
        with pytest.raises(OutputError, match=r"manifest\.json: cannot write golden manifest: "
                           "No space left on device$"):
            record(GoldenStore(tmp_path), item("ring", 2), image(2))
    monkeypatch.undo()
    assert not no_temp_files(tmp_path)
    record(GoldenStore(tmp_path), item("ring", 2), image(2))
    assert validate(tmp_path, capsys) == (0, "")


def test_results_on_a_full_disk_is_one_line_and_leaves_no_temp_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conformance.session import write_results

    machine = {"hardware_class": OTHER, "fingerprint": FP, "identity": None}
    target = tmp_path / "out" / "results.json"
    write_results(target, [], machine, "2026-01-01T00:00:00Z", {}, 1.0)
    before = target.read_bytes()
    with monkeypatch.context() as m:
        full_disk(m, after=0)
        with pytest.raises(OutputError) as info:
            write_results(target, [], machine, "2026-01-01T00:00:00Z", {}, 2.0)
    assert str(info.value) == f"{target}: cannot write results file: No space left on device"
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["results.json"]


def test_results_in_a_folder_that_cannot_be_made(tmp_path: Path) -> None:
    from conformance.session import write_results

    (tmp_path / "file").write_bytes(b"")
    machine = {"hardware_class": OTHER, "fingerprint": FP, "identity": None}
    with pytest.raises(OutputError) as info:
        write_results(tmp_path / "file" / "r.json", [], machine, "t", {}, 1.0)
    assert str(info.value) == (f"{tmp_path / 'file'}: cannot create the folder for the "
                               "results file: File exists")


@pytest.mark.parametrize("fail", ["fchmod", "fsync", "replace"])
def test_every_failing_step_of_a_write_removes_the_temp_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: str) -> None:
    def broken(*args: Any, **kw: Any) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, fail, broken)
    with pytest.raises(OutputError, match=r"x\.bin: cannot write thing: Input/output error$"):
        write_atomic(tmp_path / "x.bin", b"data", kind="thing")
    assert list(tmp_path.iterdir()) == []


def test_a_temp_file_that_cannot_be_made_is_one_line(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    def refuse(*args: Any, **kw: Any) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(OutputError) as info:
        write_atomic(tmp_path / "x.bin", b"data", kind="thing")
    assert str(info.value) == f"{tmp_path / 'x.bin'}: cannot write thing: Permission denied"


def test_an_interrupted_write_removes_the_temp_file(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "x.bin", b"data")
    assert list(tmp_path.iterdir()) == []


def test_written_files_take_the_umask(tmp_path: Path) -> None:
    """Goldens, results, reports and GGUF files: 0666 less the umask, as the user's own
    files (mkstemp's 0600 does not survive)."""
    from conformance.quant.gguf_io import save_state_dict_gguf
    from conformance.report.command import write_output
    from conformance.session import write_results

    machine = {"hardware_class": OTHER, "fingerprint": FP, "identity": None}
    for mask, mode in ((0o022, 0o644), (0o027, 0o640), (0o002, 0o664)):
        out = tmp_path / f"u{mask:o}"
        with umask(mask):
            assert new_file_mode() == mode
            record(GoldenStore(out))
            write_results(out / "r.json", [], machine, "t", {}, 1.0)
            write_output(str(out / "m.html"), "<p>", "--html")
            save_state_dict_gguf(out / "w.gguf", {"w": np.ones((4, 32), np.float32)}, "q8_0")
        files = [*set_folder(out).iterdir(), out / "r.json", out / "m.html", out / "w.gguf"]
        assert len(files) == 6  # the PNG, the manifest, the lock and three outputs
        assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {
            p.name: mode for p in files}


def test_a_report_that_cannot_be_written_names_the_flag(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from conformance.errors import ConformanceInputError
    from conformance.report.command import write_output

    with monkeypatch.context() as m:
        full_disk(m, after=0)
        with pytest.raises(ConformanceInputError) as info:
            write_output(str(tmp_path / "m.md"), "x" * 100, "--markdown")
    assert str(info.value) == (f"--markdown {tmp_path / 'm.md'}: cannot write: No space left "
                               "on device")
    assert list(tmp_path.iterdir()) == []


def test_writable_problem_is_known_before_any_work(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_bytes(b"")
    assert writable_problem(tmp_path / "new" / "deeper" / "r.json") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing made, nothing left
    assert writable_problem(tmp_path) == "is a folder; expected a file path"
    assert writable_problem(tmp_path / "file" / "r.json") == f"{tmp_path / 'file'} is not a folder"
    assert writable_problem(tmp_path / "a\0b") == "the path contains a NUL character"
    if Path("/proc/self").is_dir():
        assert writable_problem("/proc/x.json") is not None

    import tempfile

    def read_only(*args: Any, **kw: Any) -> Any:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert writable_problem(tmp_path / "r.json") == "cannot be written: Read-only file system"


def test_quantize_on_a_full_disk_is_one_line_and_leaves_no_temp_file(
        unet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from conformance.quant import gguf_io

    def full(*args: Any, **kw: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(gguf_io.gguf.GGUFWriter, "write_tensors_to_file", full)
    out = tmp_path / "out"
    out.mkdir()
    assert main(["quantize", str(unet), "--type", "q8_0", "--out", str(out / "u.gguf")]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (f"error: --out {out / 'u.gguf'}: cannot write: No space "
                                    "left on device")
    assert list(out.iterdir()) == []


# -- 4. a closed pipe ----------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["cases"], ["models"], ["fingerprint"]])
def test_a_closed_pipe_ends_the_command_quietly(tmp_path: Path, command: list[str]) -> None:
    """``conformance cases | head -1``: the reader is gone before the command writes."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run([sys.executable, "-m", "conformance.cli", *command],
                              stdout=write, stderr=subprocess.PIPE, text=True, env=ENV,
                              cwd=tmp_path, timeout=300)
    finally:
        os.close(write)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.returncode == EXIT_BROKEN_PIPE


def test_a_closed_pipe_after_the_first_line(tmp_path: Path) -> None:
    """As ``| head -1`` does it: one line read, then the pipe closed."""
    cmd = [sys.executable, "-c", "import sys\nfrom conformance.cli import main\n"
           "print('first', flush=True)\nimport time; time.sleep(1)\n"
           "sys.exit(main(['cases']))"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
                            cwd=tmp_path)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == b"first\n"
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == EXIT_BROKEN_PIPE
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_a_broken_pipe_in_process_returns_the_status(monkeypatch: pytest.MonkeyPatch) -> None:
    class Gone:
        def write(self, text: str) -> int:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

        def flush(self) -> None:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

        def fileno(self) -> int:
            raise OSError("no descriptor")

    monkeypatch.setattr(sys, "stdout", Gone())
    assert main(["cases"]) == EXIT_BROKEN_PIPE


# -- 5. the GGUF cache is verified -----------------------------------------------------------------


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from conformance.generate import cache_dir

    monkeypatch.setenv("CONFORMANCE_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("CONFORMANCE_CACHE")
    assert cache_dir() == tmp_path / "x" / "diffusion-conformance"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")  # ignored, as the XDG rules say
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "diffusion-conformance"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == tmp_path / "home" / ".cache" / "diffusion-conformance"


@pytest.fixture(scope="module")
def unet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = ROOT / "fixtures" / "tiny-sd" / "unet"
    if not (src / "config.json").is_file():  # pragma: no cover - a checkout without fixtures
        pytest.skip("fixtures/tiny-sd is not here")
    dst = tmp_path_factory.mktemp("model") / "tiny-sd" / "unet"
    shutil.copytree(src, dst)
    return dst


def fresh_process() -> None:
    """What a new process knows of verified cache files: nothing."""
    from conformance import generate

    generate._VERIFIED.clear()


def damage_flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def damage_cut(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)


def damage_sidecar(path: Path) -> None:
    path.with_name(path.name + ".sha256.json").unlink()


def damage_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


@pytest.mark.parametrize(("damage", "line"), [
    (damage_flip, "the cached GGUF file has SHA-256 "),
    (damage_cut, "the cached GGUF file is 1295104 bytes but was 2590208 bytes when built "
     "(truncated or damaged); rebuilding it"),
    (damage_sidecar, "the cached GGUF file has no usable checksum file ("),
])
def test_a_damaged_cache_file_is_rebuilt_never_used(
        unet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], damage: Any, line: str) -> None:
    from conformance import generate
    from conformance.generate import gguf_file

    monkeypatch.setenv("CONFORMANCE_CACHE", str(tmp_path / "cache"))
    fresh_process()
    path = gguf_file(unet, "q8_0")
    assert path.parent == tmp_path / "cache" / "gguf"
    original = path.read_bytes()
    capsys.readouterr()
    meta = json.loads(path.with_name(path.name + ".sha256.json").read_text())
    assert meta["size"] == len(original) and meta["recipe"] == "q8_0"
    damage(path)
    fresh_process()
    assert gguf_file(unet, "q8_0") == path
    err = capsys.readouterr().err.splitlines()
    lines = [e for e in err if e.startswith("conformance: ")]
    assert lines and lines[0].startswith(f"conformance: {path}: {line}"), err
    assert lines[0].endswith("; rebuilding it") and len(lines) == 1
    assert generate.CACHE_NOTICES[-1] == lines[0].removeprefix("conformance: ")
    assert path.read_bytes() == original
    fresh_process()
    assert gguf_file(unet, "q8_0") == path  # now it verifies: no rebuild
    assert "rebuilding" not in capsys.readouterr().err


def test_a_cache_entry_that_cannot_be_removed_is_one_line(
        unet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conformance.generate import gguf_file

    monkeypatch.setenv("CONFORMANCE_CACHE", str(tmp_path / "cache"))
    fresh_process()
    path = gguf_file(unet, "q8_0")
    damage_folder(path)
    (path / "x").write_bytes(b"")
    fresh_process()
    with pytest.raises(OutputError) as info:
        gguf_file(unet, "q8_0")
    assert str(info.value).startswith(f"{path}: cannot remove the damaged cached file: ")


def test_a_cache_folder_that_cannot_be_made_is_one_line(
        unet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conformance.generate import gguf_file

    (tmp_path / "cache").write_bytes(b"")
    monkeypatch.setenv("CONFORMANCE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(OutputError) as info:
        gguf_file(unet, "q8_0")
    assert str(info.value) == (f"{tmp_path / 'cache' / 'gguf'}: cannot use the GGUF cache "
                               "folder: Not a directory (set CONFORMANCE_CACHE to a writable "
                               "folder)")


# -- 6. a results file that disagrees with itself ------------------------------------------------


def results_file(path: Path, outcomes: list[dict[str, Any]], summary: Any) -> Path:
    path.write_text(json.dumps({
        "schema_version": 2, "hardware_class": "cpu-avx2", "label": "cpu-avx2",
        "identity": None, "fingerprint": {"torch": "2.13.0"}, "started_at": "t",
        "finished_at": "t", "stats": {}, "summary": summary, "outcomes": outcomes}))
    return path


def test_the_matrix_refuses_a_results_file_cut_short(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    outcomes = [outcome(f"tiny-sd/c{n}/64x64/fp32", status=s)
                for n, s in enumerate(["passed", "passed", "failed", "skipped"])]
    whole = results_file(tmp_path / "whole.json", outcomes,
                         {"passed": 2, "failed": 1, "skipped": 1})
    assert main(["matrix", str(whole), "--markdown", str(tmp_path / "m.md")]) == 0
    cut = results_file(tmp_path / "cut.json", outcomes[:2],
                       {"passed": 2, "failed": 1, "skipped": 1})
    capsys.readouterr()
    assert main(["matrix", str(cut), "--markdown", str(tmp_path / "c.md")]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (f"conformance matrix: error: {cut}: the outcomes disagree with the file's "
                   "own summary: the summary counts failed 1, passed 2, skipped 1 (4 outcomes),"
                   " the outcomes list holds passed 2 (2 outcomes); the file was cut short or "
                   "edited (write it again with --results)\n")


@pytest.mark.parametrize(("summary", "message"), [
    ({"passed": 1, "failed": 0}, None),  # a zero count is no disagreement
    ({"passed": "1"}, "key 'summary' must be an object of status names and counts"),
    ({"passed": -1}, "key 'summary' must be an object of status names and counts"),
    ([1], "key 'summary' must be an object of status names and counts (integers >= 0), "
     "not a list"),
    ({"failed": 1}, "the summary counts failed 1 (1 outcome), the outcomes list holds passed 1"),
])
def test_summary_shapes(tmp_path: Path, summary: Any, message: str | None) -> None:
    from conformance.errors import ConformanceInputError
    from conformance.report.results import read_results

    path = results_file(tmp_path / "r.json", [outcome()], summary)
    if message is None:
        assert len(read_results(path).outcomes) == 1
        return
    with pytest.raises(ConformanceInputError) as info:
        read_results(path)
    assert message in info.value.message


# -- 7. names that are not UTF-8 -----------------------------------------------------------------


def test_validate_prints_a_name_that_is_not_utf8_on_a_strict_utf8_stdout(
        tmp_path: Path) -> None:
    record(GoldenStore(tmp_path))
    folder = os.fsencode(set_folder(tmp_path))
    with open(os.path.join(folder, b"bad\xff\x1b[2J.png"), "wb") as fh:
        fh.write(b"not declared")
    proc = subprocess.run(
        [sys.executable, "-m", "conformance.cli", "validate", str(tmp_path), "--reference-dir",
         str(tmp_path), "--jobs", "1"], capture_output=True, env=ENV | {
             "PYTHONIOENCODING": "utf-8:strict"}, timeout=300)
    out, err = proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 1, err
    assert "Traceback" not in err and "\x1b" not in out
    name = f"{set_folder(tmp_path)}/bad\\udcff\\x1b[2J.png"
    assert f"{name}: is not declared in manifest.json" in out.splitlines()



# -- 3b. the model writers: export-single-file, tiny / trained pipelines, LoRA, checksums ------

TINY_SD = ROOT / "fixtures" / "tiny-sd"


def test_export_single_file_on_a_full_disk_is_one_line_and_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    target = out / "sd.safetensors"
    with monkeypatch.context() as m:
        full_disk(m)
        code = main(["export-single-file", str(TINY_SD), "--out", str(target)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert err.splitlines() == [f"conformance export-single-file: error: {target}: cannot write "
                                "single-file checkpoint: No space left on device"]
    assert list(out.iterdir()) == []


def test_export_single_file_over_an_old_file_keeps_it_on_a_full_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conformance.models import ldm

    target = tmp_path / "sd.safetensors"
    target.write_bytes(b"old")
    with monkeypatch.context() as m:
        full_disk(m, after=0)
        with pytest.raises(OutputError, match=r"No space left on device$"):
            ldm.export_single_file(TINY_SD, target, force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["sd.safetensors"]
    assert target.read_bytes() == b"old"


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_export_single_file_takes_the_umask(tmp_path: Path, mask: int, mode: int) -> None:
    from safetensors import safe_open

    from conformance.models import ldm

    target = tmp_path / "sd.safetensors"
    with umask(mask):
        assert ldm.export_single_file(TINY_SD, target) == target
    assert stat.S_IMODE(target.stat().st_mode) == mode
    with safe_open(str(target), framework="pt") as fh:
        assert fh.metadata() == {"format": "pt", "conformance.source": "tiny-sd"}
        assert set(fh.keys()) == set(ldm.to_ldm_state_dict(TINY_SD))
    assert [p.name for p in tmp_path.iterdir()] == ["sd.safetensors"]


def test_export_single_file_checks_its_output_before_converting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import tempfile

    from conformance.models import ldm

    def read_only(*args: Any, **kw: Any) -> Any:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    def never(*args: Any) -> Any:  # pragma: no cover - only on a regression
        raise AssertionError("converted before the output was checked")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    monkeypatch.setattr(ldm, "to_ldm_state_dict", never)
    target = tmp_path / "sd.safetensors"
    assert main(["export-single-file", str(TINY_SD), "--out", str(target)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"conformance export-single-file: error: --out: {target}: cannot be written: "
        "Read-only file system"]


def _safetensors_full(*args: Any, **kw: Any) -> None:
    from safetensors import SafetensorError

    raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                          'message: "No space left on device" })')


def _tokenizer_full(*args: Any, **kw: Any) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize(("module", "name", "fail"), [
    ("safetensors.torch", "save_file", _safetensors_full),
    ("fixtures.build.tokenizers", "save_clip_tokenizer", _tokenizer_full),
], ids=["weights", "tokenizer"])
def test_a_tiny_pipeline_on_a_full_disk_is_one_line_and_keeps_the_old_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, name: str,
        fail: Any) -> None:
    import importlib

    from fixtures.build import tiny

    out = tmp_path / "tiny-sd"
    out.mkdir()
    (out / "old.txt").write_text("kept")
    monkeypatch.setattr(importlib.import_module(module), name, fail)
    with pytest.raises(OutputError) as info:
        tiny.build_tiny_sd(out)
    assert str(info.value) == (f"{out}: cannot write tiny-sd pipeline folder: No space left "
                               "on device")
    assert [p.name for p in tmp_path.iterdir()] == ["tiny-sd"]
    assert [p.name for p in out.iterdir()] == ["old.txt"]


@pytest.mark.parametrize(("mask", "files", "folders"), [(0o022, 0o644, 0o755),
                                                        (0o027, 0o640, 0o750)])
def test_a_tiny_pipeline_takes_the_umask(tmp_path: Path, mask: int, files: int,
                                         folders: int) -> None:
    from conformance.models import checksums
    from fixtures.build import tiny

    with umask(mask):
        tiny.build_tiny_sd(tmp_path / "tiny-sd")
        checksums.write_checksums(tmp_path, ["tiny-sd"])
    made = [tmp_path / "tiny-sd", *(tmp_path / "tiny-sd").rglob("*"), tmp_path / "checksums.json"]
    assert len(made) > 10
    assert {str(p): stat.S_IMODE(p.stat().st_mode) for p in made} == {
        str(p): folders if p.is_dir() else files for p in made}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checksums.json", "tiny-sd"]


def test_checksums_on_a_full_disk_keep_the_old_file(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from conformance.models import checksums

    (tmp_path / "m").mkdir()
    (tmp_path / "checksums.json").write_text("{}\n")
    with monkeypatch.context() as m:
        full_disk(m, after=0)
        with pytest.raises(OutputError) as info:
            checksums.write_checksums(tmp_path, ["m"])
    assert str(info.value) == (f"{tmp_path / 'checksums.json'}: cannot write checksum file: "
                               "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checksums.json", "m"]
    assert (tmp_path / "checksums.json").read_text() == "{}\n"


@pytest.mark.parametrize(("error", "raised", "line"), [
    (KeyboardInterrupt(), KeyboardInterrupt, ""),
    (OutputError("x/lora.json", "cannot write LoRA summary: No space left on device"),
     OutputError, "x/lora.json: cannot write LoRA summary: No space left on device"),
    (PermissionError(errno.EACCES, "Permission denied"), OutputError,
     "{out}: cannot write LoRA folder: Permission denied"),
], ids=["interrupt", "output-error", "os-error"])
def test_write_dir_removes_its_temporary_folder_whatever_stops_it(
        tmp_path: Path, error: BaseException, raised: type[BaseException], line: str) -> None:
    from fixtures.build.tiny import write_dir

    def fill(tmp: Path) -> None:
        (tmp / "weights.safetensors").write_bytes(b"x")
        raise error

    with pytest.raises(raised) as info:
        write_dir(tmp_path / "lora", fill, "LoRA folder")
    assert str(info.value) == line.format(out=tmp_path / "lora")
    assert list(tmp_path.iterdir()) == []


def test_write_dir_replaces_a_stale_temporary_folder(tmp_path: Path) -> None:
    from fixtures.build.tiny import write_dir

    (tmp_path / "m.tmp").mkdir()
    (tmp_path / "m.tmp" / "stale").write_bytes(b"")
    assert write_dir(tmp_path / "m", lambda tmp: (tmp / "a").write_bytes(b"1")) == 1
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


@pytest.mark.parametrize(("text", "reason"), [
    ('IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })',
     "No space left on device"),
    ("header too large\nsecond line", "header too large"),
    ("", "SafetensorError"),
])
def test_the_cause_of_a_safetensors_failure_is_one_line(text: str, reason: str) -> None:
    from safetensors import SafetensorError

    from conformance.safeio import os_reason

    assert os_reason(SafetensorError(text)) == reason


# -- a path the file system cannot look up: a name too long, a NUL --------------------------------
LONG = "a" * 300  # one component over the 255 bytes of common file systems


def test_a_name_too_long_is_one_line_in_validate_and_matrix(tmp_path: Path, capsys) -> None:
    from conformance import cli

    assert cli.main(["validate", str(tmp_path / LONG)]) == 1
    out = capsys.readouterr()
    assert out.out == f"{tmp_path / LONG}: cannot be read: File name too long\n"
    assert cli.main(["validate", str(tmp_path), "--base", str(tmp_path / LONG)]) == 2
    assert capsys.readouterr().err.endswith(f"--base: {tmp_path / LONG}: File name too long\n")
    assert cli.main(["matrix", str(tmp_path / f"{LONG}.json"), "--json", "-"]) == 2
    err = capsys.readouterr().err
    assert err.endswith(f"{tmp_path / LONG}.json: cannot be read: File name too long\n")
    assert "Traceback" not in err


def test_a_nul_in_a_matrix_path_is_one_line(tmp_path: Path, capsys) -> None:
    from conformance import cli

    assert cli.main(["matrix", "a\x00b.json", "--json", "-"]) == 2
    assert capsys.readouterr().err.endswith("'a\\x00b.json': the path contains a NUL character\n")
    results = tmp_path / "results.json"
    results.write_text("{}")
    assert cli.main(["matrix", str(results), "--json", "x\x00y"]) == 2
    assert capsys.readouterr().err.endswith("--json: the path contains a NUL character\n")


@pytest.mark.parametrize("flag", ["golden_dir", "results"])
def test_a_name_too_long_in_a_path_option_is_a_usage_error(tmp_path: Path, flag: str) -> None:
    import argparse

    from conformance.options import OPTION_BY_NAME

    option = OPTION_BY_NAME[flag.replace("_", "-")]
    with pytest.raises(argparse.ArgumentTypeError, match="File name too long"):
        option.type(str(tmp_path / LONG))
