"""``matrix`` sub-command: one matrix of items x hardware classes from many results files.

Usage::

    matrix RESULTS... [--html FILE] [--markdown FILE] [--json FILE] [--reference-class CLASS]

At least one output is required; ``-`` as a file writes to standard output (for
``--markdown -`` piped into ``$GITHUB_STEP_SUMMARY``). Bad input (a missing or unreadable
file, not JSON, another ``schema_version``, malformed outcomes) raises
:class:`~conformance.errors.ConformanceInputError`, which the ``conformance`` command prints
as one line naming the file, with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from conformance.errors import ConformanceInputError
from conformance.report.matrix import build_matrix, image_paths, load_run
from conformance.report.render import render_json, render_markdown
from conformance.report.render_html import render_html

#: Images larger than this are not embedded in the HTML (shown as a note instead).
MAX_IMAGE_BYTES = 16 * 1024 * 1024


def register(subparsers: Any) -> None:
    """Add the ``matrix`` sub-command to an argparse ``subparsers`` object."""
    parser = subparsers.add_parser(
        "matrix",
        help="build a conformance matrix (items x hardware classes) from results files",
        description=(
            "Combine results files (one per machine run, --results of `conformance run`) "
            "into a matrix of items x hardware classes, written as Markdown (fits a GitHub "
            "job summary), JSON and/or one self-contained HTML page."
        ),
    )
    parser.add_argument(
        "results", nargs="+", type=Path, metavar="RESULTS", help="results JSON files"
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
        help="the class whose golden is the reference (default: the one the runs compared with)",
    )
    parser.add_argument("--title", default="Conformance matrix", help="heading of the outputs")
    parser.set_defaults(func=run_matrix)


def read_images(
    paths: Iterable[str], roots: Iterable[str | Path], limit: int = MAX_IMAGE_BYTES
) -> dict[str, bytes | str]:
    """Image bytes by path, or why one is not embedded; files that are not there are left out.

    Only files inside ``roots`` (the results files' folders, where runs write their
    artifacts) are read: a results file cannot pull other files of this machine into a page
    that may be published.
    """
    allowed = [os.path.realpath(r) for r in roots]
    out: dict[str, bytes | str] = {}
    for name in paths:
        try:
            if not os.path.isfile(name):
                continue
            real = os.path.realpath(name)
            if not any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in allowed):
                out[name] = "not embedded: outside the results files' folders"
            elif os.path.getsize(real) > limit:
                out[name] = f"not embedded: larger than {limit // (1024 * 1024)} MiB"
            else:
                with open(real, "rb") as fh:
                    out[name] = fh.read()
        except OSError as exc:
            out[name] = f"cannot read: {exc.strerror or exc}"
    return out


def result_roots(paths: Iterable[str | Path]) -> list[str]:
    """The folders of the results files (artifact images must lie inside one)."""
    return sorted({os.path.dirname(os.path.abspath(p)) for p in paths})


def write_output(target: str, text: str, flag: str) -> None:
    """Write ``text`` to ``target`` (``-``: standard output); errors name the flag."""
    if target == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    path = Path(target)
    try:
        if path.parent and not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise ConformanceInputError(f"{flag} {target}", f"cannot write: {exc}") from None


def run_matrix(args: argparse.Namespace) -> int:
    """Build the matrix of ``args.results`` and write the requested outputs."""
    outputs = [(flag, getattr(args, flag)) for flag in ("markdown", "json", "html")]
    outputs = [(flag, target) for flag, target in outputs if target]
    if not outputs:
        raise ConformanceInputError(
            "matrix", "no output requested; give at least one of --html, --markdown, --json"
        )
    if sum(1 for _, target in outputs if target == "-") > 1:
        raise ConformanceInputError("matrix", "only one output can go to standard output ('-')")
    runs = [load_run(path) for path in args.results]
    matrix = build_matrix(runs, reference_class=args.reference_class)
    for flag, target in outputs:
        if flag == "markdown":
            text = render_markdown(matrix, title=args.title)
        elif flag == "json":
            text = render_json(matrix)
        else:
            images = read_images(image_paths(matrix), result_roots(args.results))
            text = render_html(matrix, images, title=args.title)
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
        print(f"conformance {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
