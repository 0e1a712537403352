"""``matrix`` sub-command: one matrix of items x machine configurations from results files
and golden sets.

Usage::

    matrix INPUT... [--html FILE] [--markdown FILE] [--json FILE] [--reference-class CLASS]
                    [--tolerances FILE] [--html-budget MB]

An input is a results file (``--results`` of a run) or a golden root, a folder of
``<model>/<class>/manifest.json`` sets (``conformance matrix golden/``): its sets become
columns of their own, compared with the reference set. Both kinds mix in one call.

At least one output is required; ``-`` as a file writes to standard output (for
``--markdown -`` piped into ``$GITHUB_STEP_SUMMARY``). Bad input (a missing or unreadable
file, not JSON, another ``schema_version``, malformed outcomes, a bad golden manifest, a
folder without golden sets) raises :class:`~conformance.errors.ConformanceInputError`, which
the ``conformance`` command prints as one line naming the file, with exit status 2.

The HTML page embeds each distinct image once, and at most ``--html-budget`` megabytes of
images (default 64): the images past it are left out, each figure says so and the page says
how many. Text from the inputs is shown escaped in every output (see
:mod:`conformance.report.safe_text`), and so are file names and messages on the terminal.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from conformance.errors import ConformanceInputError, OutputError
from conformance.report.matrix import (
    build_matrix,
    load_golden,
    load_run,
    runs_reference_class,
)
from conformance.report.render import render_json, render_markdown
from conformance.report.render_html import (
    DEFAULT_IMAGE_BUDGET,
    LeftOut,
    budget_note,
    embedded_size,
    page_image_paths,
    png_size,
    render_html,
)
from conformance.report.safe_text import visible
from conformance.safeio import os_reason, read_bytes, regular_file_problem, write_atomic

#: Images larger than this are not embedded in the HTML (shown as a note instead).
MAX_IMAGE_BYTES = 16 * 1024 * 1024


def register(subparsers: Any) -> None:
    """Add the ``matrix`` sub-command to an argparse ``subparsers`` object."""
    parser = subparsers.add_parser(
        "matrix",
        help="build a conformance matrix (items x machines) from results files or golden sets",
        description=(
            "Combine results files (one per machine run, --results of `conformance run`) "
            "and golden roots (folders of <model>/<class>/manifest.json) into a matrix of "
            "items x machine configurations (one column per measured identity), written as "
            "Markdown (fits a GitHub job summary), JSON and/or one self-contained HTML page."
        ),
    )
    parser.add_argument(
        "results",
        nargs="+",
        type=Path,
        metavar="RESULTS",
        help="results JSON files and/or golden roots (folders of <model>/<class>/manifest.json)",
    )
    parser.add_argument("--html", metavar="FILE", help="write the HTML page here")
    parser.add_argument("--markdown", metavar="FILE", help="write Markdown here ('-': stdout)")
    parser.add_argument(
        "--json", metavar="FILE", help="write the matrix as JSON here ('-': stdout)"
    )
    parser.add_argument(
        "--reference-class",
        metavar="CLASS",
        default=None,
        help="the class whose golden is the reference (default: the one the runs compared "
        "with; for golden roots alone, the one class named ...-default..., else the first)",
    )
    parser.add_argument(
        "--tolerances",
        metavar="FILE",
        type=Path,
        default=None,
        help="tolerance file whose perceptual bounds judge golden sets against the reference "
        "set (default: the suite's)",
    )
    parser.add_argument("--title", default="Conformance matrix", help="heading of the outputs")
    parser.add_argument(
        "--html-budget",
        metavar="MB",
        type=budget_mb,
        default=DEFAULT_IMAGE_BUDGET / 1e6,
        help="most megabytes (10^6 bytes) of images the HTML page embeds, each distinct image "
        "once; images past it are left out, each with a note, and the page says how many "
        f"(default: {DEFAULT_IMAGE_BUDGET / 1e6:g})",
    )
    parser.set_defaults(func=run_matrix)


def budget_mb(text: str) -> float:
    """``--html-budget``: a number of megabytes, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or value > 1e6:
        raise argparse.ArgumentTypeError(
            f"expected megabytes, a number from 0 to 1000000, not {visible(text, limit=40)!r}"
        )
    return value


def read_images(
    paths: Iterable[str],
    roots: Iterable[str | Path],
    limit: int = MAX_IMAGE_BYTES,
    budget: int | None = None,
) -> dict[str, bytes | str]:
    """Image bytes by path, or why one is not embedded; files that are not there are left out.

    Only files inside ``roots`` (the results files' folders, where runs write their
    artifacts, and the golden roots given) are read: a results file cannot pull other files
    of this machine into a page that may be published. Only regular files are read, none
    larger than ``limit``, and only PNG files are kept.

    ``budget`` (bytes of the page's embedded images, base64, as
    :class:`~conformance.report.render_html.PageImages` spends it; None: no limit):
    ``paths`` are taken in the page's order (see
    :func:`~conformance.report.render_html.page_image_paths`); a file whose bytes equal an
    earlier one's shares its bytes object (the page embeds it once, at no extra cost), and
    a new image that no longer fits is not kept, nor read when its size already says so
    (files of the size of a kept image are read, to compare them): a
    :class:`~conformance.report.render_html.LeftOut` note takes its place. So memory stays
    within the budget whatever the number of images.
    """
    allowed = [os.path.realpath(r) for r in roots]
    out: dict[str, bytes | str] = {}
    by_real: dict[str, bytes | str | None] = {}
    by_digest: dict[str, bytes] = {}
    kept_sizes: set[int] = set()
    used = 0

    def one(name: str, real: str) -> bytes | str | None:
        nonlocal used
        problem = regular_file_problem(name)
        if problem == "no such file":
            return None
        if not any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in allowed):
            return "not embedded: outside the results files' folders and golden roots"
        if problem is not None:
            return f"not embedded: {problem}"
        size = os.path.getsize(real)
        if size > limit:
            return f"not embedded: larger than {limit // (1024 * 1024)} MiB"
        if budget is not None and used + embedded_size(size) > budget and (
            size not in kept_sizes
        ):
            return LeftOut(budget_note(budget))
        data = read_bytes(real, "image", limit)
        digest = hashlib.sha256(data).hexdigest()
        if digest in by_digest:
            return by_digest[digest]
        if png_size(data) is None:
            return "not embedded: not a PNG file"
        cost = embedded_size(len(data))
        if budget is not None and used + cost > budget:
            return LeftOut(budget_note(budget))
        used += cost
        by_digest[digest] = data
        kept_sizes.add(len(data))
        return data

    for name in paths:
        try:
            real = os.path.realpath(name)
            if real not in by_real:
                by_real[real] = one(name, real)
        except ConformanceInputError as exc:
            by_real[real] = exc.message
        except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
            out[name] = f"cannot read: {getattr(exc, 'strerror', None) or exc}"
            continue
        found = by_real[real]
        if found is not None:
            out[name] = found
    return out


def result_roots(paths: Iterable[str | Path], golden_roots: Iterable[str | Path] = ()) -> list[str]:
    """The folders of the results files, and the golden roots (images must lie inside one)."""
    folders = {os.path.dirname(os.path.abspath(p)) for p in paths}
    return sorted(folders | {os.path.abspath(p) for p in golden_roots})


def split_inputs(paths: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """(results files, golden roots): a folder is a golden root, anything else a file."""
    files: list[Path] = []
    roots: list[Path] = []
    for path in paths:
        if "\x00" in str(path):
            raise ConformanceInputError("matrix", f"{os.fsdecode(path)!r}: the path contains a "
                                        "NUL character")
        try:
            is_dir = path.is_dir()
        except (OSError, ValueError) as exc:  # a name too long, a NUL, ...
            raise ConformanceInputError(path, f"cannot be read: {os_reason(exc)}") from None
        (roots if is_dir else files).append(path)
    return files, roots


def write_output(target: str, text: str, flag: str) -> None:
    """Write ``text`` to ``target`` (``-``: standard output); errors name the flag."""
    if target == "-":
        try:
            sys.stdout.write(text)
        except UnicodeEncodeError:  # an output encoding without some of our own characters
            encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
            sys.stdout.write(text.encode(encoding, "backslashreplace").decode(encoding))
        sys.stdout.flush()
        return
    # the renderers escape what they take from the inputs; backslashreplace is for anything
    # that would still not encode, rather than a traceback
    data = text.encode("utf-8", errors="backslashreplace")
    try:  # a temporary file renamed into place, removed on failure, with the user's umask
        write_atomic(Path(target), data, kind="output")
    except OutputError as exc:  # a full disk, a folder that cannot be written, a NUL
        message = exc.message.replace("cannot write output: ", "cannot write: ", 1)
        raise ConformanceInputError(f"{flag} {target}", message) from None


def run_matrix(args: argparse.Namespace) -> int:
    """Build the matrix of ``args.results`` and write the requested outputs.

    A :class:`~conformance.errors.ConformanceInputError` leaves with its file name and
    message made safe to print (:func:`safe_error`).
    """
    try:
        return _run_matrix(args)
    except ConformanceInputError as exc:
        raise safe_error(exc) from None


#: Longest file name and message an error prints.
ERROR_WHERE_LIMIT, ERROR_MESSAGE_LIMIT = 1000, 2000


def safe_error(exc: ConformanceInputError) -> ConformanceInputError:
    """``exc`` with its place and message on one line each, control characters, escape
    sequences, bidirectional overrides and bytes that are not UTF-8 shown as text, and cut
    to :data:`ERROR_WHERE_LIMIT` / :data:`ERROR_MESSAGE_LIMIT` characters: printed, it is
    one line, under any output encoding that holds ASCII."""
    where = visible(exc.where, limit=ERROR_WHERE_LIMIT)
    message = visible(exc.message, limit=ERROR_MESSAGE_LIMIT)
    if where == exc.where and message == exc.message:
        return exc
    try:
        return type(exc)(where, message)
    except TypeError:  # a subclass with other arguments
        return ConformanceInputError(where, message)


def _run_matrix(args: argparse.Namespace) -> int:
    outputs = [(flag, getattr(args, flag)) for flag in ("markdown", "json", "html")]
    outputs = [(flag, target) for flag, target in outputs if target]
    if not outputs:
        raise ConformanceInputError(
            "matrix", "no output requested; give at least one of --html, --markdown, --json"
        )
    if sum(1 for _, target in outputs if target == "-") > 1:
        raise ConformanceInputError("matrix", "only one output can go to standard output ('-')")
    files, roots = split_inputs(args.results)
    inputs = {os.path.realpath(p) for p in files}
    for flag, target in outputs:
        if "\x00" in target:
            raise ConformanceInputError(f"--{flag}", "the path contains a NUL character")
        if target != "-" and os.path.realpath(target) in inputs:
            raise ConformanceInputError(
                f"--{flag} {target}", "is one of the input files; write the output elsewhere"
            )
    tolerances = None
    if getattr(args, "tolerances", None) is not None:  # read (and refused) whatever the inputs
        from conformance.tolerances import load_tolerances

        tolerances = load_tolerances(args.tolerances)
    runs = [load_run(path) for path in files]
    golden = None
    if roots:
        golden = load_golden(
            roots,
            reference_class=args.reference_class,
            tolerances=tolerances,
            preferred_reference=runs_reference_class(runs),
        )
    matrix = build_matrix(runs, reference_class=args.reference_class, golden=golden)
    for flag, target in outputs:
        if flag == "markdown":
            text = render_markdown(matrix, title=args.title)
        elif flag == "json":
            text = render_json(matrix)
        else:
            budget = round(getattr(args, "html_budget", DEFAULT_IMAGE_BUDGET / 1e6) * 1e6)
            images = read_images(
                page_image_paths(matrix), result_roots(files, roots), budget=budget
            )
            text = render_html(matrix, images, title=args.title, budget=budget)
        write_output(target, text, f"--{flag}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the sub-command on its own (``python -m conformance.report.command``)."""
    parser = argparse.ArgumentParser(prog="conformance")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConformanceInputError as exc:
        print(f"conformance {args.command}: error: {safe_error(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
