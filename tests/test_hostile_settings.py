"""Hostile input on the settings and loading surfaces: a corpus of files and values.

Every entry must give one clear line naming the file (or flag) and the key, of the surface's
error type, within a time limit, without changing the input file. The bombs run in a child
process under a 1.5 GB address-space cap. The table at the end (:data:`CORPUS`) is the
corpus; ``test_corpus_is_large_enough`` counts it per surface and kind.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance import models as models_module
from conformance import options
from conformance.cases import Resolution, load_cases, parse_cases
from conformance.deviations import DeviationFileError, load_deviations, parse_deviations
from conformance.errors import CaseFileError, ConformanceInputError, ToleranceFileError
from conformance.models import (
    MODELS,
    FixtureIntegrityError,
    checksums,
    load_config,
    shard_files,
)
from conformance.models import base as models_base
from conformance.tolerances import load_tolerances, parse_tolerances
from tests.limits import time_limit

PROJECT = Path(__file__).resolve().parents[1]
FIXTURES = PROJECT / "fixtures"
MEMORY_CAP = 1536 * 2**20  # 1.5 GiB of address space for the bomb child process

CASES = """schema_version = 1
[axes]
resolutions = ["64x64", "96x96"]
precisions = ["fp32", "bf16"]

[cases.one]
model = "tiny-sd"
prompt = "a red circle on a white background"
seed = 1
steps = 4
scheduler = "euler"
guidance_scale = 4
"""
TOLERANCES = """schema_version = 1
[ladder]
order = ["fp16", "gguf-q8_0"]
[fidelity.default]
mae_max = 30.0
[close.default]
mae_max = 1.0
[perceptual.default]
ssim_min = 0.9
phash_max = 8
"""
DEVIATIONS = """schema_version = 1
[[deviation]]
classes = ["cuda-sm7*"]
ids = ["tiny-sd/*/96x96/*"]
checks = ["reference"]
action = "xfail"
reason = "attention split on small cards"
"""
BASES = {"cases": CASES, "tolerances": TOLERANCES, "deviations": DEVIATIONS}
LOADERS: dict[str, tuple[Callable[[Path], Any], type[ConformanceInputError]]] = {
    "cases": (load_cases, CaseFileError),
    "tolerances": (load_tolerances, ToleranceFileError),
    "deviations": (load_deviations, DeviationFileError),
}





def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def check_message(exc: BaseException, *fragments: str) -> str:
    text = str(exc)
    assert "\n" not in text and "\r" not in text, text
    assert "\x1b" not in text and "\u202e" not in text, text  # nothing that drives a terminal
    assert len(text) < 800, text
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    return text


# -- the corpus --------------------------------------------------------------------------


@dataclass(frozen=True)
class Hostile:
    surface: str  # cases, tolerances, deviations, options, models, quantize, files
    kind: str  # type, range, size, control, name, structure, encoding, file, path
    name: str
    #: the file text: a replacement (old, new) in the surface's base file, or the whole text
    edit: Any = ""
    #: what the message must name (a key, a flag or a value)
    fragment: str = ""

    @property
    def id(self) -> str:
        return f"{self.surface}-{self.kind}-{self.name}"

    def content(self) -> bytes:
        edit = self.edit() if callable(self.edit) else self.edit
        if isinstance(edit, tuple):
            base = BASES[self.surface]
            assert edit[0] in base, edit
            edit = base.replace(edit[0], edit[1], 1)
        return edit if isinstance(edit, bytes) else edit.encode("utf-8")


def _many_resolutions() -> str:
    return CASES.replace('["64x64", "96x96"]', "[" + ", ".join(['"64x64"'] * 20_000) + "]")


def _many_deviations() -> str:
    entry = '[[deviation]]\nclasses=["*"]\nids=["*"]\naction="skip"\nreason="r"\n'
    return "schema_version = 1\n" + entry * 1001


def _dotted_bomb(size: int) -> Callable[[], str]:
    return lambda: "a" + ".a" * (size // 2) + " = 1\n"


FILE_CORPUS = [
    # cases: wrong types at every level
    Hostile("cases", "type", "seed-string", ("seed = 1", 'seed = "1"'), "cases['one'].seed"),
    Hostile("cases", "type", "seed-bool", ("seed = 1", "seed = true"), "cases['one'].seed"),
    Hostile("cases", "type", "seed-float", ("seed = 1", "seed = 1.5"), "cases['one'].seed"),
    Hostile("cases", "type", "steps-array", ("steps = 4", "steps = [4]"), "cases['one'].steps"),
    Hostile("cases", "type", "prompt-int", ('"a red circle on a white background"', "3"),
            "cases['one'].prompt"),
    Hostile("cases", "type", "model-array", ('"tiny-sd"', '["tiny-sd"]'), "cases['one'].model"),
    Hostile("cases", "type", "guidance-string", ("guidance_scale = 4", 'guidance_scale = "4"'),
            "cases['one'].guidance_scale"),
    Hostile("cases", "type", "resolutions-ints", ('["64x64", "96x96"]', "[64, 96]"),
            "axes.resolutions[0]"),
    Hostile("cases", "type", "case-not-table", 'schema_version = 1\ncases = { one = 5 }\n',
            "cases['one'] must be a [cases.NAME] table"),
    Hostile("cases", "type", "axes-int", ("[axes]\n", "axes = 3\n[x]\n"),
            "axes must be a [axes] table"),
    Hostile("cases", "type", "schema-bool", ("schema_version = 1", "schema_version = true"),
            "schema_version is True"),
    Hostile("cases", "type", "schema-float", ("schema_version = 1", "schema_version = 1.0"),
            "schema_version is 1.0"),
    # cases: absurd numbers
    Hostile("cases", "range", "steps-1e9", ("steps = 4", "steps = 1000000000"),
            "cases['one'].steps must be an integer in 1..1000, not a number (1000000000)"),
    Hostile("cases", "range", "seed-2-63", ("seed = 1", "seed = 9223372036854775808"),
            "seed"),
    Hostile("cases", "range", "seed-negative", ("seed = 1", "seed = -1"), "cases['one'].seed"),
    Hostile("cases", "range", "seed-5000-digits", ("seed = 1", "seed = " + "7" * 5000),
            "key 'seed'"),
    Hostile("cases", "range", "resolution-0", ('"64x64", ', '"0x0", '), "axes.resolutions[0]"),
    Hostile("cases", "range", "resolution-100000", ('"64x64", ', '"100000x64", '),
            "axes.resolutions[0]"),
    Hostile("cases", "range", "resolution-4096", ('"64x64", ', '"4096x64", '),
            "width 4096 is outside 32..256"),
    Hostile("cases", "range", "resolution-arabic-digits", ('"64x64", ', '"٦٤x٦٤", '),
            "digits 0-9"),
    Hostile("cases", "range", "guidance-inf", ("guidance_scale = 4", "guidance_scale = inf"),
            "cases['one'].guidance_scale must be a number in 0.0..100.0, not a number (inf)"),
    Hostile("cases", "range", "guidance-nan", ("guidance_scale = 4", "guidance_scale = nan"),
            "cases['one'].guidance_scale must be a number in 0.0..100.0, not a number (nan)"),
    Hostile("cases", "range", "guidance-1e308", ("guidance_scale = 4", "guidance_scale = 1e308"),
            "cases['one'].guidance_scale"),
    # cases: huge shapes
    Hostile("cases", "size", "20000-resolutions", _many_resolutions,
            "axes.resolutions must be a list of at most 64"),
    Hostile("cases", "size", "300k-file", lambda: CASES + "# " + "x" * 300_000 + "\n",
            "read up to 256 KiB"),
    Hostile("cases", "size", "dotted-key-bomb", _dotted_bomb(200_000), "dotted key"),
    Hostile("cases", "size", "deep-arrays", "a = " + "[" * 20_000 + "]" * 20_000,
            "nested too deeply"),
    Hostile("cases", "size", "60000-array-items", "x = [" + "1," * 60_000 + "]\n",
            "more than 50000"),
    Hostile("cases", "size", "prompt-5000", ('"a red circle on a white background"',
                                             '"' + "x" * 5000 + '"'), "at most 2048"),
    # cases: strings that drive terminals or break lines
    Hostile("cases", "control", "prompt-escape", ("a red circle", "a \\u001b[31mred circle"),
            "cases['one'].prompt"),
    Hostile("cases", "control", "prompt-newline", ("a red circle", "a red\\ncircle"),
            "cases['one'].prompt"),
    Hostile("cases", "control", "prompt-bidi", ("a red circle", "a \\u202ered circle"),
            "cases['one'].prompt"),
    Hostile("cases", "control", "prompt-empty", ('"a red circle on a white background"', '" "'),
            "cases['one'].prompt must be one line of printable text, not blank"),
    Hostile("cases", "control", "model-trailing-newline", ('"tiny-sd"', '"tiny-sd\\n"'),
            "cases['one'].model"),
    Hostile("cases", "control", "negative-nul",
            ("seed = 1", 'seed = 1\nnegative_prompt = "\\u0000"'), "cases['one'].negative_prompt"),
    Hostile("cases", "control", "key-with-escape", ("seed = 1", 'seed = 1\n"x\\u001b[2J" = 1'),
            "unknown key cases['one'].'x\\x1b[2J'"),
    # cases: names
    Hostile("cases", "name", "trailing-newline", ("[cases.one]", '[cases."one\\n"]'),
            "key cases['one\\n'] is not accepted"),
    Hostile("cases", "name", "upper-case", ("[cases.one]", "[cases.ONE]"), "cases['ONE']"),
    Hostile("cases", "name", "too-long", ("[cases.one]", "[cases." + "a" * 100 + "]"),
            "at most 64"),
    Hostile("cases", "name", "space", ("[cases.one]", '[cases."o ne"]'), "cases['o ne']"),
    # cases: encodings
    Hostile("cases", "encoding", "latin1", b"schema_version = 1\n# caf\xe9\n", "not UTF-8"),
    Hostile("cases", "encoding", "bom", b"\xef\xbb\xbf" + CASES.encode(), "byte-order mark"),
    Hostile("cases", "encoding", "nul-byte", b"schema_version = 1\x00\n", "invalid TOML"),
    Hostile("cases", "structure", "empty", "", "schema_version is None"),
    # tolerances
    Hostile("tolerances", "range", "mae-inf", ("mae_max = 1.0", "mae_max = inf"),
            "close['default'].mae_max must be a number in 0.0..255.0, not a number (inf)"),
    Hostile("tolerances", "range", "phash-huge", ("phash_max = 8", "phash_max = 99999999999"),
            "perceptual['default'].phash_max"),
    Hostile("tolerances", "type", "psnr-bool", ("mae_max = 1.0", "psnr_min = true"),
            "close['default'].psnr_min must be a number in 0.0..200.0, not a boolean"),
    Hostile("tolerances", "type", "bounds-string",
            lambda: TOLERANCES.replace("[close.default]\nmae_max = 1.0\n", "").replace(
                "schema_version = 1\n", 'schema_version = 1\nclose = {default = "x"}\n'),
            "close['default'] must be a [close.PRECISION] table"),
    Hostile("tolerances", "control", "precision-newline",
            ("[close.default]", '[close."fp32\\n"]\nmae_max = 1\n[close.default]'),
            "key close['fp32\\n'] is not one of default"),
    Hostile("tolerances", "type", "schema-float", ("schema_version = 1", "schema_version = 1.0"),
            "schema_version is 1.0"),
    Hostile("tolerances", "size", "dotted-key-bomb", _dotted_bomb(60_000), "dotted key"),
    Hostile("tolerances", "size", "100k-file", lambda: TOLERANCES + "#" + "x" * 100_000,
            "read up to 64 KiB"),
    # deviations
    Hostile("deviations", "control", "reason-escape", ("attention split", "\\u001b]0;owned\\u0007"),
            "deviation[0].reason"),
    Hostile("deviations", "control", "class-newline", ('"cuda-sm7*"', '"*\\n"'),
            "deviation[0].classes[0]"),
    Hostile("deviations", "size", "300-ids", ('ids = ["tiny-sd/*/96x96/*"]',
                                              "ids = [" + '"x",' * 300 + "]"),
            "deviation[0].ids must be a non-empty list of at most 256"),
    Hostile("deviations", "size", "long-pattern", ('"tiny-sd/*/96x96/*"', '"' + "*" * 1000 + '"'),
            "deviation[0].ids[0] must be one line of printable text of 1 to 256 characters"),
    Hostile("deviations", "size", "1001-entries", _many_deviations, "at most 1000"),
    Hostile("deviations", "name", "flag-upper", ('action = "xfail"',
                                                 'action = "xfail"\ncpu_flags = ["AMX_BF16"]'),
            "deviation[0].cpu_flags[0] 'AMX_BF16'"),
    Hostile("deviations", "control", "isa-newline", ('action = "xfail"',
                                                     'action = "xfail"\ncpu_isa = ["avx512\\n"]'),
            "deviation[0].cpu_isa[0]"),
    Hostile("deviations", "type", "action-int", ('action = "xfail"', "action = 1"),
            "deviation[0].action must be one of xfail, skip, not a number (1)"),
    Hostile("deviations", "type", "entry-int", "schema_version = 1\ndeviation = [[1]]\n",
            "deviation[0] must be a [[deviation]] table"),
]


@pytest.mark.parametrize("case", FILE_CORPUS, ids=lambda c: c.id)
def test_settings_file_corpus(tmp_path: Path, case: Hostile) -> None:
    loader, error = LOADERS[case.surface]
    path = tmp_path / f"{case.surface}.toml"
    path.write_bytes(case.content())
    before = digest(path)
    with time_limit(20), pytest.raises(error) as info:
        loader(path)
    assert str(info.value).startswith(f"{path}: ")
    check_message(info.value, case.fragment)
    assert digest(path) == before


@pytest.mark.parametrize("surface", sorted(LOADERS))
@pytest.mark.parametrize("kind", ["fifo", "directory", "device", "symlink-to-device"])
def test_settings_path_is_not_a_regular_file(tmp_path: Path, surface: str, kind: str) -> None:
    path = tmp_path / f"{surface}.toml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "device":
        path = Path(os.devnull)
    else:
        path.symlink_to("/dev/zero")
    loader, error = LOADERS[surface]
    with time_limit(5), pytest.raises(error) as info:
        loader(path)
    check_message(info.value, str(path), "expected a regular file")


@pytest.mark.parametrize(
    "case", [c for c in FILE_CORPUS if c.surface == "cases"][:20], ids=lambda c: c.id
)
def test_cases_cli_exits_2_with_one_line(
    tmp_path: Path, case: Hostile, capsys: pytest.CaptureFixture[str]
) -> None:
    from conformance import cli

    path = tmp_path / "cases.toml"
    path.write_bytes(case.content())
    with time_limit(20):
        rc = cli.main(["cases", "--cases", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f"conformance cases: error: {path}: ")
    assert case.fragment in err[0] and "\x1b" not in err[0]


# -- parsed data of any shape ----------------------------------------------------------------

_SCALARS = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats() | st.text(max_size=12)
)
_KEYS = st.sampled_from([
    "schema_version", "axes", "cases", "one", "model", "prompt", "seed", "steps", "scheduler",
    "guidance_scale", "resolutions", "precisions", "negative_prompt", "deviation", "classes",
    "ids", "checks", "action", "reason", "cpu_flags", "cpu_isa", "close", "perceptual",
    "fidelity", "default", "ladder", "order", "mae_max", "ssim_min", "fp32", "x",
]) | st.text(max_size=6)
_TREES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=6),
    max_leaves=30,
)


@given(st.dictionaries(_KEYS, _TREES, max_size=6))
def test_parsers_raise_only_input_errors_on_any_shape(data: dict[str, Any]) -> None:
    for parse in (parse_cases, parse_tolerances, parse_deviations):
        try:
            parse(data, Path("f.toml"))
        except ConformanceInputError as exc:
            check_message(exc)


# -- the dotted-key bomb, in a child process with a memory cap -----------------------------

_BOMB_SCRIPT = r"""
import json, resource, sys, time
cap = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
from conformance.errors import ConformanceInputError
from conformance.cases import load_cases
from conformance.tolerances import load_tolerances
from conformance.deviations import load_deviations
from conformance.models import load_config, shard_files
loaders = {"cases": load_cases, "tolerances": load_tolerances,
           "deviations": load_deviations, "config": load_config, "shards": shard_files}
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # after the imports
out = []
for name, path in json.loads(sys.argv[2]):
    start = time.perf_counter()
    try:
        loaders[name](__import__("pathlib").Path(path))
        result = "accepted"
    except ConformanceInputError as exc:
        result = str(exc)
    except MemoryError:
        result = "MemoryError"
    out.append({"file": path, "result": result, "seconds": time.perf_counter() - start,
                "peak_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024})
print(json.dumps(out))
"""


def test_bombs_are_refused_under_a_memory_cap(tmp_path: Path) -> None:
    bombs = {
        # 200 KB of one dotted key: tomllib alone needs more than 5 GB for it
        "cases": ("cases.toml", _dotted_bomb(200_000)()),
        "tolerances": ("tol.toml", _dotted_bomb(60_000)()),
        "deviations": ("dev.toml", "[" + "a." * 30_000 + "a]\n"),
        "config": ("config.json", '{"a": ' * 100_000 + "1" + "}" * 100_000),
        "shards": ("x.safetensors.index.json",
                   '{"weight_map": {"a": ' + "9" * 500_000 + "}}"),
    }
    jobs = []
    for name, (file, text) in bombs.items():
        path = tmp_path / file
        path.write_text(text)
        jobs.append((name, str(path)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _BOMB_SCRIPT, str(MEMORY_CAP), json.dumps(jobs)],
        capture_output=True, text=True, timeout=120, env=env, cwd=PROJECT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout)
    for row, (_, path) in zip(results, jobs, strict=True):
        assert row["result"].startswith(f"{path}: "), row
        assert row["seconds"] < 10, row
    # what the bombs added to the process's peak (the imports before them do not count)
    assert max(r["peak_mib"] for r in results) < 256, results


# -- options ---------------------------------------------------------------------------------

OPTION_CORPUS = [
    Hostile("options", "type", "threads-arabic", ("threads", "٣"), "digits 0-9"),
    Hostile("options", "type", "threads-underscore", ("threads", "1_0"), "'1_0'"),
    Hostile("options", "range", "threads-0", ("threads", "0"), "1..1024"),
    Hostile("options", "range", "threads-huge", ("threads", "9" * 40), "1..1024"),
    Hostile("options", "type", "threads-word", ("threads", "true"), "'true'"),
    Hostile("options", "control", "device-escape", ("device", "cpu\x1b[2J"), "U+001B"),
    Hostile("options", "type", "device-arabic", ("device", "cuda:٣"), "ASCII"),
    Hostile("options", "range", "resolution-arabic", ("resolution", "٣٢x٣٢"), "digits 0-9"),
    Hostile("options", "range", "resolution-0", ("resolution", "0x64"), "'0x64'"),
    Hostile("options", "range", "resolution-twice", ("resolution", "32x32,32x32"), "twice"),
    Hostile("options", "size", "model-list-long", ("model", ",".join(["tiny-sd"] * 100)),
            "at most 64"),
    Hostile("options", "size", "model-5000-chars", ("model", "x" * 5000), "at most 4096"),
    Hostile("options", "control", "model-newline", ("model", "tiny-sd\n"), "U+000A"),
    Hostile("options", "type", "reference-class-bad", ("reference-class", "cpu\x00"), "U+0000"),
    Hostile("options", "path", "cases-dev-zero", ("cases", "/dev/zero"), "character device"),
    Hostile("options", "path", "cases-directory", ("cases", "/"), "a directory"),
    Hostile("options", "path", "golden-dir-file", ("golden-dir", "/etc/hostname"),
            "not a directory"),
    Hostile("options", "path", "results-directory", ("results", "/tmp"), "is a directory"),
    Hostile("options", "path", "results-empty", ("results", " "), "empty results path"),
]


@pytest.mark.parametrize("case", OPTION_CORPUS, ids=lambda c: c.id)
def test_option_corpus(case: Hostile) -> None:
    assert isinstance(case.edit, tuple)
    name, value = case.edit
    opt = options.OPTION_BY_NAME[name]
    with pytest.raises(argparse.ArgumentTypeError) as info:
        opt.type(value)
    check_message(info.value, case.fragment)
    # the same value from an ini file or the environment names where it came from
    with pytest.raises(ValueError, match=f"ini option conformance_{name.replace('-', '_')}"):
        options.resolve(name, None, value)


def test_option_from_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONFORMANCE_THREADS", "٣")
    with pytest.raises(ValueError, match="environment variable CONFORMANCE_THREADS: '٣'"):
        options.resolve("threads", None, None)


def test_fifo_as_cases_option_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "cases.toml"
    os.mkfifo(fifo)
    with time_limit(5), pytest.raises(argparse.ArgumentTypeError, match="FIFO"):
        options.OPTION_BY_NAME["cases"].type(str(fifo))


def test_check_results_target(tmp_path: Path) -> None:
    assert options.check_results_target(tmp_path / "new" / "deeper" / "results.json") is None
    assert options.check_results_target(tmp_path / "results.json") is None
    problem = options.check_results_target(tmp_path)
    assert problem and f"--results {tmp_path}: is a directory" in problem
    blocker = tmp_path / "file"
    blocker.write_text("x")
    problem = options.check_results_target(blocker / "sub" / "results.json")
    assert problem and f"cannot create {blocker / 'sub'}: {blocker} is a file" in problem
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    problem = options.check_results_target(fifo)
    assert problem and "FIFO" in problem
    out = tmp_path / "out"
    out.mkdir()
    (out / "artifacts").write_text("x")
    problem = options.check_results_target(out / "results.json")
    assert problem and "artifacts" in problem and "not a directory" in problem
    assert not list(tmp_path.glob("new"))  # nothing was created


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_check_targets_not_writable(tmp_path: Path) -> None:  # pragma: no cover - as root
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert "permission denied" in (options.check_results_target(locked / "r.json") or "")
    assert "permission denied" in (options.check_record_target(locked / "golden") or "")


def test_check_record_target(tmp_path: Path) -> None:
    assert options.check_record_target(tmp_path / "golden") is None
    file = tmp_path / "golden"
    file.write_text("x")
    problem = options.check_record_target(file)
    assert problem == f"--golden-dir {file}: exists and is not a directory"
    assert "is a file" in (options.check_record_target(file / "sub") or "")


def test_resolution_filter_says_why(tmp_path: Path) -> None:
    path = tmp_path / "cases.toml"
    path.write_text(CASES)
    cases = load_cases(path)
    assert cases.filter_problem(resolutions=[Resolution(64, 64)]) is None
    why = cases.filter_problem(resolutions=[Resolution(99984, 64)])
    assert why is not None and why.startswith("--resolution 99984x64: no selected model can")
    assert "width 99984 is outside 32..256, the range tiny-sd accepts" in why
    why = cases.filter_problem(resolutions=[Resolution(48, 48)])
    assert why is not None and "no case of tiny-sd" in why and "64x64, 96x96" in why
    why = cases.filter_problem(models=["tiny-flux"])
    assert why is not None and why.startswith("--model tiny-flux: no case") and "tiny-sd" in why
    why = cases.filter_problem(precisions=["fp16"])
    assert why is not None and "--precision fp16" in why and "fp32, bf16" in why


def _pytest_subprocess(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--co",
         str(tmp_path / "test_nothing.py"), *args],
        capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path,
    )


def test_pytest_usage_errors_not_internal_errors(tmp_path: Path) -> None:
    bad = tmp_path / "cases.toml"
    bad.write_text(CASES.replace("a red circle", "a \\u001b[31mred circle"))
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    bomb = tmp_path / "bomb.toml"
    bomb.write_text(_dotted_bomb(60_000)())
    for args, fragment in (
        (("--cases", str(bad)), "cases['one'].prompt"),
        (("--tolerances", str(bomb)), "dotted key"),
        (("--threads", "٣"), "digits 0-9"),
        (("--deviations", str(fifo)), "FIFO"),
    ):
        proc = _pytest_subprocess(tmp_path, *args)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 4, out[-2000:]  # pytest's usage-error exit status
        assert "INTERNALERROR" not in out and "Traceback" not in out, out[-2000:]
        assert fragment in out, out[-2000:]


# -- model loading -------------------------------------------------------------------------

UNET = json.loads((FIXTURES / "tiny-sd" / "unet" / "config.json").read_text())
CONFIG_CORPUS = [
    Hostile("models", "range", "vocab-1e9", {"vocab_size": 10**9}, "key 'vocab_size'"),
    Hostile("models", "type", "layers-bool", {"layers_per_block": True}, "key 'layers_per_block'"),
    Hostile("models", "range", "layers-100", {"layers_per_block": 100}, "key 'layers_per_block'"),
    Hostile("models", "size", "channels-empty", {"block_out_channels": []},
            "key 'block_out_channels'"),
    Hostile("models", "size", "channels-9", {"block_out_channels": [32] * 9},
            "key 'block_out_channels'"),
    Hostile("models", "range", "channels-100000", {"block_out_channels": [32, 100_000]},
            "key 'block_out_channels': holds 100000"),
    Hostile("models", "range", "timesteps-1e7", {"num_train_timesteps": 10**7},
            "key 'num_train_timesteps'"),
    Hostile("models", "type", "head-dim-string", {"attention_head_dim": "64"},
            "key 'attention_head_dim'"),
    Hostile("models", "range", "nested-hidden", {"text_config": {"hidden_size": 10**6}},
            "key 'text_config.hidden_size'"),
    Hostile("models", "range", "sample-size-0", {"sample_size": 0}, "key 'sample_size'"),
    Hostile("models", "range", "num-layers-1e6", {"num_layers": 10**6}, "key 'num_layers'"),
    Hostile("models", "size", "block-types-100", {"down_block_types": ["DownBlock2D"] * 100},
            "key 'down_block_types'"),
    Hostile("models", "structure", "duplicate-key", '{"vocab_size": 1, "vocab_size": 2}',
            "key vocab_size: appears twice"),
    Hostile("models", "range", "nan", '{"norm_eps": NaN}', "NaN is not JSON"),
    Hostile("models", "range", "40-digit-int", '{"vocab_size": ' + "1" * 40 + "}",
            "an integer of 40 digits"),
    Hostile("models", "size", "2-mib", '{"a": "' + "x" * (2 * 2**20) + '"}', "read up to 1 MiB"),
]


@pytest.mark.parametrize("case", CONFIG_CORPUS, ids=lambda c: c.id)
def test_model_config_corpus(tmp_path: Path, case: Hostile) -> None:
    path = tmp_path / "config.json"
    edit = case.edit
    text = json.dumps({**UNET, **edit}) if isinstance(edit, dict) else str(edit)
    path.write_text(text)
    before = digest(path)
    with time_limit(10), pytest.raises(ConformanceInputError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")
    check_message(info.value, case.fragment)
    assert digest(path) == before


def test_shipped_configs_are_within_bounds() -> None:
    for path in FIXTURES.rglob("*config.json"):
        load_config(path)


def _index(folder: Path, names: list[str]) -> Path:
    path = folder / "diffusion_pytorch_model.safetensors.index.json"
    path.write_text(json.dumps({"weight_map": {f"t{i}": n for i, n in enumerate(names)}}))
    return path


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("/etc/passwd.safetensors", "no path separators"),
        ("../outside.safetensors", "no path separators"),
        ("..", "no path separators"),
        ("sub/x.safetensors", "no path separators"),
        ("C:\\x.safetensors", "no path separators"),
        ("x\x00.safetensors", "no path separators"),
        ("weights.bin", "only .safetensors shards"),
        ("link.safetensors", "symbolic link"),
        ("absent.safetensors", "is missing"),
    ],
)
def test_shard_index_corpus(tmp_path: Path, name: str, fragment: str) -> None:
    folder = tmp_path / "unet"
    folder.mkdir()
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(b"x")
    (folder / "link.safetensors").symlink_to(outside)
    index = _index(folder, [name])
    with pytest.raises(ConformanceInputError) as info:
        shard_files(index)
    assert str(info.value).startswith(f"{index}: ")
    check_message(info.value, fragment)


def test_shard_index_structure_and_cache_blobs(tmp_path: Path) -> None:
    folder = tmp_path / "snapshots" / "abc" / "unet"
    folder.mkdir(parents=True)
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    (blobs / "0123").write_bytes(b"x")
    (folder / "a.safetensors").symlink_to(blobs / "0123")
    (folder / "b.safetensors").write_bytes(b"x")
    index = _index(folder, ["a.safetensors", "b.safetensors", "b.safetensors"])
    assert shard_files(index, blobs=blobs) == [folder / "a.safetensors", folder / "b.safetensors"]
    with pytest.raises(ConformanceInputError, match="symbolic link"):
        shard_files(index)
    index.write_text('{"weight_map": {"t": 3}}')
    with pytest.raises(ConformanceInputError, match=r"weight_map\['t'\] must be a file name"):
        shard_files(index)
    index.write_text('{"weight_map": []}')
    with pytest.raises(ConformanceInputError, match="no weight_map"):
        shard_files(index)


@pytest.fixture
def fixture_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """fixtures/tiny-sd copied with its checksums; the verification cache emptied."""
    root = tmp_path / "fixtures"
    shutil.copytree(FIXTURES / "tiny-sd", root / "tiny-sd")
    checksums.write_checksums(root, ["tiny-sd"])
    monkeypatch.setattr(models_base, "_VERIFIED", {})
    return root


def test_fixture_checksums_verified_once(fixture_copy: Path, monkeypatch) -> None:
    calls = []
    real = checksums.directory_checksums
    monkeypatch.setattr(checksums, "directory_checksums", lambda p: calls.append(p) or real(p))
    spec = MODELS["tiny-sd"]
    assert spec.verified_path(fixture_copy) == fixture_copy / "tiny-sd"
    assert spec.verified_path(fixture_copy) == fixture_copy / "tiny-sd"
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda d: (d / "unet" / "config.json").write_text("{}"),
         "unet/config.json: sha256"),
        (lambda d: (d / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle"),
         "unet/diffusion_pytorch_model.bin: extra file"),
        (lambda d: (d / "vae" / "diffusion_pytorch_model.safetensors").unlink(),
         "vae/diffusion_pytorch_model.safetensors: missing"),
    ],
)
def test_fixture_tampering_is_refused_by_name(fixture_copy: Path, change, fragment) -> None:
    change(fixture_copy / "tiny-sd")
    for _ in range(2):  # the verdict is cached, failure included
        with pytest.raises(FixtureIntegrityError) as info:
            MODELS["tiny-sd"].verified_path(fixture_copy)
        check_message(info.value, str(fixture_copy / "tiny-sd"), fragment)


def test_shipped_fixtures_verify() -> None:
    for name in ("tiny-sd", "tiny-flux"):
        assert MODELS[name].verified_path(FIXTURES) == FIXTURES / name


def test_fixture_dir_without_checksums_elsewhere_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "tiny-sd").mkdir()
    (tmp_path / "tiny-sd" / "model_index.json").write_text("{}")
    assert MODELS["tiny-sd"].verified_path(tmp_path) == tmp_path / "tiny-sd"


def _pipeline_copy(tmp_path: Path) -> Path:
    root = tmp_path / "pipe"
    shutil.copytree(FIXTURES / "tiny-sd", root)
    return root


def test_real_model_directory_with_hostile_config(tmp_path: Path) -> None:
    from conformance.models.sources import RealModel, resolve

    model = RealModel("t", models_module.Family.SD, "T_SD", "x/y", "StableDiffusionPipeline",
                      "none")
    root = _pipeline_copy(tmp_path)
    config = root / "unet" / "config.json"
    config.write_text(json.dumps({**UNET, "layers_per_block": 10**6}))
    with pytest.raises(ConformanceInputError) as info:
        resolve(model, {"T_SD": str(root), "HF_HUB_CACHE": str(tmp_path / "hub")})
    check_message(info.value, str(config), "key 'layers_per_block'")
    index = json.loads((root / "model_index.json").read_text())
    index["../../etc"] = ["diffusers", "UNet2DConditionModel"]
    (root / "model_index.json").write_text(json.dumps(index))
    config.write_text(json.dumps(UNET))
    with pytest.raises(ConformanceInputError) as info:
        resolve(model, {"T_SD": str(root), "HF_HUB_CACHE": str(tmp_path / "hub")})
    check_message(info.value, "model_index.json", "component '../../etc'")


def test_real_model_shard_index_leading_out(tmp_path: Path) -> None:
    from conformance.models.sources import RealModel, resolve

    model = RealModel("t", models_module.Family.SD, "T_SD", "x/y", "StableDiffusionPipeline",
                      "none")
    root = _pipeline_copy(tmp_path)
    index = _index(root / "unet", ["../../secret.safetensors"])
    with pytest.raises(ConformanceInputError) as info:
        resolve(model, {"T_SD": str(root), "HF_HUB_CACHE": str(tmp_path / "hub")})
    check_message(info.value, str(index), "'../../secret.safetensors'")


# -- quantize --------------------------------------------------------------------------------


def _quantize(src: Path | str, out: Path | str) -> int:
    from conformance.quant import command

    parser = argparse.ArgumentParser(prog="conformance")
    command.register(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["quantize", str(src), "--type", "q8_0", "--out", str(out)])
    return int(args.func(args))


def _weights(path: Path, tensors: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize(
    ("shape", "fragment"),
    [((0, 256), "tensor 'a.weight' has shape (0, 256) and no elements"),
     ((256, 0), "tensor 'a.weight' has shape (256, 0)"),
     ((), "tensor 'a.weight' is a 0-d scalar")],
)
def test_quantize_refuses_tensors_that_cannot_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shape, fragment
) -> None:
    import torch

    src = _weights(tmp_path / "m.safetensors", {"a.weight": torch.zeros(shape),
                                                "b.weight": torch.ones(4, 256)})
    before = digest(src)
    rc = _quantize(src, tmp_path / "o.gguf")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and fragment in err[0], err
    assert not (tmp_path / "o.gguf").exists() and digest(src) == before
    assert not list(tmp_path.glob(".o.gguf*"))


@pytest.mark.parametrize(
    ("make_out", "fragment"),
    [
        (lambda t: _mkfifo(t / "o.gguf"), "FIFO"),
        (lambda t: t / "missing" / "o.gguf", "does not exist"),
        (lambda t: str(t / "o\x1b[2J.gguf"), "U+001B"),
        (lambda t: t / "o.txt", "must end with .gguf"),
    ],
)
def test_quantize_checks_the_output_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_out, fragment
) -> None:
    out = make_out(tmp_path)
    with time_limit(10):
        rc = _quantize(tmp_path / "absent-src", out)  # the output is checked first
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: --out"), err
    assert fragment in err[0] and "\x1b" not in err[0]


def _mkfifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def test_quantize_src_fifo_and_hostile_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = _mkfifo(tmp_path / "w.safetensors")
    with time_limit(10):
        rc = _quantize(fifo, tmp_path / "o.gguf")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "FIFO" in err[0], err
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel",
                                                   "block_out_channels": [10**7]}))
    _weights(model / "diffusion_pytorch_model.safetensors", {})
    rc = _quantize(model, tmp_path / "o.gguf")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "key 'block_out_channels'" in err[0], err
    (model / "config.json").write_text('{"_class_name": "UNet2DModel"}')
    _index(model, ["../../../etc/shadow.safetensors"])
    rc = _quantize(model, tmp_path / "o.gguf")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no path separators" in err[0], err


# -- the corpus, counted ---------------------------------------------------------------------

CORPUS = FILE_CORPUS + OPTION_CORPUS + CONFIG_CORPUS


def corpus_table() -> dict[tuple[str, str], int]:
    return dict(sorted(Counter((c.surface, c.kind) for c in CORPUS).items()))


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 40
    assert len({c.id for c in CORPUS}) == len(CORPUS)
    surfaces = {s for s, _ in corpus_table()}
    assert {"cases", "tolerances", "deviations", "options", "models"} <= surfaces


if __name__ == "__main__":  # pragma: no cover - prints the corpus table
    for (surface, kind), n in corpus_table().items():
        print(f"{surface:<11} {kind:<10} {n}")
    print(textwrap.dedent(f"total {len(CORPUS)}"))
