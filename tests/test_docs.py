"""The README's and docs/' command blocks run as printed, or say why not; their links resolve.

Every fenced ``bash`` / ``sh`` / ``console`` block of ``README.md``, ``docs/*.md``,
``CONTRIBUTING.md`` and ``fixtures/README.md`` is one of:

* executed here (``bash -e -c`` in the project root, with a timeout; exit status 0): a block
  with no marker whose every command is cheap (:func:`cheap`);
* executed with another expected exit status: marked ``<!-- exits N: reason -->`` on the
  line just before the fence;
* not executed: marked ``<!-- not run: reason -->`` on the line just before the fence.

Of every block, executed or not, each ``conformance SUB ...`` command (and each ``python -m
fixtures.build SUB ...`` command of the fixture tooling) must name a real subcommand and only
flags that ``conformance SUB --help`` lists, and each ``pytest ...``
command only ``--flags`` that ``pytest --help`` lists with the project's plugin loaded. A
block with no marker that is not cheap fails with its file and line. Output-only blocks
(``text``, or no language) are not commands.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from conformance import PROJECT_ROOT

#: the documents whose command blocks are checked
DOCUMENTS = (PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md")),
             PROJECT_ROOT / "CONTRIBUTING.md", PROJECT_ROOT / "fixtures" / "README.md")
COMMAND_LANGUAGES = frozenset({"bash", "sh", "console", "shell"})
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*(?:(?P<skip>not run)|exits (?P<code>\d+))\s*:\s*(?P<why>\S.*?)"
                    r"\s*-->\s*$")
#: seconds one executed block may take
BLOCK_TIMEOUT = 60
#: commands that may follow a pipe in an executed block: they only filter output
FILTERS = frozenset({"head", "tail", "grep", "wc", "sort", "cat", "jq"})
#: ``conformance`` subcommands that only read and finish in seconds
CHEAP_SUBCOMMANDS = frozenset({"fingerprint", "cases", "models", "validate"})

#: the two commands of the README that CI runs: kept verbatim
INSTALL_AND_RUN = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install "
    "-c .ci/constraints.txt -e . && pytest conformance --device cpu -n 2 --dist loadgroup")
INSTALL_AND_TEST = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install "
    "-c .ci/constraints.txt -e \".[test]\" && pytest tests -n 2")


@dataclass(frozen=True)
class Block:
    """One fenced block of a document."""

    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    marker: str | None  # the HTML comment on the line just before the fence, if a marker

    @property
    def where(self) -> str:
        try:
            name = self.path.relative_to(PROJECT_ROOT)
        except ValueError:
            name = self.path
        return f"{name}:{self.line}"

    @property
    def expected_exit(self) -> int | None:
        """The exit status the block must end with, or ``None`` for a block not run."""
        m = MARKER.match(self.marker or "")
        if m is None:
            return 0
        return None if m["skip"] else int(m["code"])

    def command_lines(self) -> list[str]:
        """The block's commands, one logical line each (continuations joined; comments and,
        in a console block, output lines left out)."""
        out: list[str] = []
        pending = ""
        for raw in self.text.splitlines():
            line = raw.rstrip()
            if not pending:
                if self.lang == "console":
                    if not line.startswith("$ "):
                        continue
                    line = line[2:]
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            out.append(pending + line)
            pending = ""
        if pending:
            out.append(pending)
        return out

    def script(self) -> str:
        return "\n".join(self.command_lines()) + "\n"


def read_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, with the marker line before each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, fence, lang = len(m["indent"]), m["fence"], m["lang"].lower()
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            close = re.match(r"^\s*(`{3,}|~{3,})\s*$", lines[j])
            if close and close[1][0] == fence[0] and len(close[1]) >= len(fence):
                break
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        before = lines[i - 1] if i > 0 else ""
        marker = before.strip() if before.strip().startswith("<!--") else None
        blocks.append(Block(path, i + 1, lang, "\n".join(body), marker))
        i = j + 1
    return blocks


def command_blocks() -> list[Block]:
    return [b for path in DOCUMENTS if path.is_file() for b in read_blocks(path)
            if b.lang in COMMAND_LANGUAGES]


def segments(line: str) -> list[list[str]]:
    """The simple commands of a command line (split at ``&&``, ``||``, ``;`` and ``|``),
    each without its leading ``NAME=value`` assignments."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError as exc:  # an unclosed quote
        raise AssertionError(f"cannot split {line!r}: {exc}") from None
    out: list[list[str]] = [[]]
    for tok in tokens:
        if tok and set(tok) <= set(";&|"):
            out.append([])
        else:
            out[-1].append(tok)
    result = []
    for seg in out:
        while seg and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", seg[0]):
            seg = seg[1:]
        if seg:
            result.append(seg)
    return result


def program(seg: list[str]) -> tuple[str, list[str]]:
    """(``conformance`` / ``pytest`` / :data:`BUILD` / the program's name, its arguments)."""
    if seg[:3] in (["python", "-m", "pytest"], ["python3", "-m", "pytest"]):
        return "pytest", seg[3:]
    if seg[:3] in (["python", "-m", "fixtures.build"], ["python3", "-m", "fixtures.build"]):
        return BUILD, seg[3:]
    return Path(seg[0]).name, seg[1:]


def cheap(seg: list[str]) -> bool:
    """A command an executed block may hold: it only reads, and finishes in seconds."""
    name, args = program(seg)
    if name == BUILD:  # its help only (it imports torch: a few seconds)
        return "--help" in args or "-h" in args
    if name != "conformance":
        return False
    if "--help" in args or "-h" in args or not args or args[0] == "--version":
        return True
    if args[0] in CHEAP_SUBCOMMANDS:
        return True
    if args[0] == "matrix":  # only to stdout, from golden roots of the checkout
        outputs = [args[k + 1] for k, a in enumerate(args[:-1])
                   if a in ("--html", "--markdown", "--json")]
        writes = any(a.startswith(("--html=", "--markdown=", "--json=")) for a in args)
        return not writes and all(o == "-" for o in outputs) and "--html" not in args
    return False


def flags(tokens: list[str]) -> list[str]:
    return [t.split("=", 1)[0] for t in tokens if t.startswith("--") and len(t) > 2]


def _help_flags(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"(?<![\w-])--[A-Za-z0-9][\w-]*", text))


def _run_help(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
                          env=_env())


@cache
def pytest_flags() -> frozenset[str]:
    r = _run_help([sys.executable, "-m", "pytest", "--help", "-p", "no:randomly"])
    assert r.returncode == 0, r.stderr
    assert "--device" in r.stdout, "pytest --help does not list the plugin's options"
    return _help_flags(r.stdout)


_CLI = [sys.executable, "-c", "from conformance.cli import main; raise SystemExit(main())"]
#: the fixture tooling's command (run from the checkout's root), as :func:`program` names it
BUILD = "python -m fixtures.build"
#: how each checked command line runs here
_PROGRAMS = {"conformance": _CLI, BUILD: [sys.executable, "-m", "fixtures.build"]}


@cache
def program_help(prog: str, *words: str) -> tuple[int, str]:
    r = _run_help([*_PROGRAMS[prog], *words, "--help"])
    return r.returncode, r.stdout + r.stderr


def conformance_help(*words: str) -> tuple[int, str]:
    return program_help("conformance", *words)


@cache
def subcommands(prog: str = "conformance") -> frozenset[str]:
    code, text = program_help(prog)
    assert code == 0, text
    listing = text.split("positional arguments:", 1)[1].split("options:", 1)[0]
    return frozenset(re.findall(r"^ {4}([a-z][\w-]*)", listing, re.M))


def conformance_problems(args: list[str], prog: str = "conformance") -> list[str]:
    """Why ``conformance ARGS`` (or ``prog ARGS``, :data:`BUILD`) is not a real subcommand
    with flags its help lists."""
    if not args or args[0].startswith("-"):
        _, text = program_help(prog)
        allowed = _help_flags(text)
        return [f"{prog} {f}: not an option of {prog}"
                for f in flags(args) if f not in allowed]
    sub = args[0]
    if sub not in subcommands(prog):
        return [f"{prog} {sub}: no such subcommand ({prog} --help lists "
                f"{', '.join(sorted(subcommands(prog)))})"]
    words = [sub]
    code, text = program_help(prog, sub)
    if "ACTION" in text and len(args) > 1 and not args[1].startswith("-"):
        code, text = program_help(prog, sub, args[1])  # e.g. `... lora fit`
        words.append(args[1])
        if code != 0:
            return [f"{prog} {sub} {args[1]}: no such action"]
    allowed = _help_flags(text)
    if prog == "conformance" and sub in ("run", "record"):  # other arguments go to pytest
        allowed |= pytest_flags()
    return [f"{prog} {' '.join(words)}: {f} is not listed by "
            f"`{prog} {' '.join(words)} --help`" for f in flags(args) if f not in allowed]


def block_problems(block: Block) -> list[str]:
    """What is wrong with a command block before anything is run (empty: nothing)."""
    problems = []
    if block.marker is not None and not MARKER.match(block.marker):
        problems.append(f"{block.where}: the comment before the block is not a marker "
                        "(`<!-- not run: REASON -->` or `<!-- exits N: REASON -->`): "
                        f"{block.marker}")
    lines = block.command_lines()
    if not lines:
        problems.append(f"{block.where}: a {block.lang} block with no command")
    for line in lines:
        for seg in segments(line):
            name, args = program(seg)
            if name in _PROGRAMS:
                problems += [f"{block.where}: {p}" for p in conformance_problems(args, name)]
            elif name == "pytest":
                problems += [f"{block.where}: pytest {f}: not listed by `pytest --help`"
                             for f in flags(args) if f not in pytest_flags()]
    if block.expected_exit is not None:
        first = [seg for line in lines for seg in segments(line)[:1]]
        rest = [seg for line in lines for seg in segments(line)[1:]]
        slow = [" ".join(s) for s in first if not cheap(s)]
        slow += [" ".join(s) for s in rest if not cheap(s) and program(s)[0] not in FILTERS]
        if slow:
            problems.append(
                f"{block.where}: has no `<!-- not run: REASON -->` marker but is not a "
                f"command this test runs ({'; '.join(slow)}): mark it with the reason it is "
                "not run, or make it a cheap command")
    return problems


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("PYTEST_ADDOPTS", None)
    return env


BLOCKS = command_blocks()


def test_the_documents_hold_command_blocks():
    assert PROJECT_ROOT / "README.md" in {b.path for b in BLOCKS}
    assert any(b.expected_exit is not None for b in BLOCKS), "no block is executed"


def test_the_readme_keeps_the_two_commands_ci_runs():
    readme = read_blocks(PROJECT_ROOT / "README.md")
    bash = [b.text.strip() for b in readme if b.lang == "bash"]
    assert INSTALL_AND_RUN in bash
    assert INSTALL_AND_TEST in bash


@pytest.mark.parametrize("block", BLOCKS, ids=[b.where for b in BLOCKS])
def test_every_command_block_runs_or_says_why_not(block):
    problems = block_problems(block)
    assert not problems, "\n".join(problems)
    code = block.expected_exit
    if code is None:
        return
    r = subprocess.run(["bash", "-e", "-c", block.script()], cwd=PROJECT_ROOT, env=_env(),
                       capture_output=True, text=True, timeout=BLOCK_TIMEOUT)
    assert r.returncode == code, (f"{block.where}: exit status {r.returncode}, expected "
                                  f"{code}\n{block.script()}\n{r.stdout[-2000:]}\n"
                                  f"{r.stderr[-2000:]}")


# -- the checker itself --------------------------------------------------------------------

SAMPLE = """\
# A page

```bash
conformance fingerprint --device cpu   # cheap: runs
```

```bash
pytest conformance --device cpu --record
```

<!-- not run: records goldens -->
```bash
pytest conformance --device cpu --record --no-such-flag
conformance validate golden --no-such-option
conformance frobnicate
```

<!-- exits 1: a set with a problem -->
```console
$ conformance validate /nonexistent
no such folder
```

```text
$ pytest anything --at-all
```
"""


def test_the_checker_names_the_file_and_line(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(SAMPLE)
    blocks = [b for b in read_blocks(page) if b.lang in COMMAND_LANGUAGES]
    assert [(b.line, b.expected_exit) for b in blocks] == [(3, 0), (7, 0), (12, None),
                                                           (19, 1)]
    assert block_problems(blocks[0]) == []
    (unmarked,) = block_problems(blocks[1])
    assert unmarked.startswith(f"{page}:7: has no `<!-- not run: REASON -->` marker")
    wrong = block_problems(blocks[2])
    assert any("pytest --no-such-flag: not listed" in p for p in wrong)
    assert any("--no-such-option is not listed by `conformance validate --help`" in p
               for p in wrong)
    assert any("conformance frobnicate: no such subcommand" in p for p in wrong)
    assert blocks[3].command_lines() == ["conformance validate /nonexistent"]
    assert block_problems(blocks[3]) == []


FIXTURE_TOOLING = """\
```bash
python -m fixtures.build --help
```

<!-- not run: trains -->
```bash
python -m fixtures.build train tiny-sd --out x --steps-vae 1 --force
python3 -m fixtures.build lora fit --out y --no-such-flag
python -m fixtures.build frobnicate
```

```bash
python -m fixtures.build montage --out z.png
```
"""


def test_the_checker_reads_the_fixture_tooling_commands(tmp_path):
    """``python -m fixtures.build`` commands: their sub-commands and flags are checked
    against the tooling's own help; only its help is cheap enough to run."""
    page = tmp_path / "page.md"
    page.write_text(FIXTURE_TOOLING)
    blocks = read_blocks(page)
    assert [program(s)[0] for b in blocks for line in b.command_lines()
            for s in segments(line)] == [BUILD] * 5
    assert block_problems(blocks[0]) == []
    assert block_problems(blocks[1]) == [
        f"{page}:6: python -m fixtures.build lora fit: --no-such-flag is not listed by "
        "`python -m fixtures.build lora fit --help`",
        f"{page}:6: python -m fixtures.build frobnicate: no such subcommand (python -m "
        "fixtures.build --help lists lora, montage, train)"]
    (unmarked,) = block_problems(blocks[2])
    assert unmarked.startswith(f"{page}:12: has no `<!-- not run: REASON -->` marker")


def test_segments_split_commands_and_drop_assignments():
    line = "A=1 B=2 pytest x --k 'a b' && cd /tmp | head -3; conformance cases  # note"
    assert segments(line) == [["pytest", "x", "--k", "a b"], ["cd", "/tmp"], ["head", "-3"],
                              ["conformance", "cases"]]


# -- links ---------------------------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _outside_fences(path: Path) -> list[tuple[int, str]]:
    """The numbered lines of a Markdown file outside fenced blocks."""
    out, fence = [], None
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = FENCE.match(line)
        if m and (fence is None or (m["fence"][0] == fence[0] and not m["lang"])):
            fence = None if fence else m["fence"]
            continue
        if fence is None:
            out.append((n, line))
    return out


@cache
def _anchors(path: Path) -> frozenset[str]:
    """GitHub's anchors of a Markdown file's headings."""
    anchors = set()
    for _, line in _outside_fences(path):
        m = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m[1].lower())
            anchors.add(text.replace(" ", "-"))
    return frozenset(anchors)


def link_problems(path: Path) -> list[str]:
    """Relative links of a Markdown file whose file or heading does not exist."""
    problems = []
    for n, line in _outside_fences(path):
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            if not dest.exists():
                problems.append(f"{path.name}:{n}: {target}: {dest} does not exist")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                problems.append(f"{path.name}:{n}: {target}: no heading #{anchor} in "
                                f"{dest.name}")
    return problems


@pytest.mark.parametrize("path", DOCUMENTS,
                         ids=[p.relative_to(PROJECT_ROOT).as_posix() for p in DOCUMENTS])
def test_relative_links_resolve(path):
    problems = link_problems(path)
    assert not problems, "\n".join(problems)


def test_the_link_check_finds_a_missing_file_or_heading(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# Top\n")
    page = tmp_path / "docs" / "a.md"
    page.write_text("# A\n\n## The `x` part\n\n[ok](#the-x-part) [up](../README.md#top) "
                    "[bad](#nope) [gone](missing.md) `[code](nowhere.md)`\n\n"
                    "```\n[in a block](nowhere.md)\n```\n")
    assert link_problems(page) == [
        "a.md:5: #nope: no heading #nope in a.md",
        f"a.md:5: missing.md: {tmp_path / 'docs' / 'missing.md'} does not exist"]
