"""Images of the HTML matrix: a file with more than one hard link is never embedded.

A results folder is checked by path (no symbolic links leading out, nothing outside the
results files' folders and golden roots); a hard link passes every check on paths, so a
results artifact that is a hard link to a PNG elsewhere would be embedded in a page that
may be published. Such a file is not read, and its figure says why.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from conformance.report.matrix import load_run
from conformance.report.render_html import PageImages, page_image_paths
from conformance.safeio import hard_link_problem
from tests.report.test_command import document, run, write
from tests.report.test_matrix import outcome, png

NOTE = ("not embedded: the file has 2 hard links (another name may be outside the results "
        "files' folders); copy it in instead of linking it")


def linked_run(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A results folder whose ``actual`` artifact is a hard link to a PNG outside it and
    whose ``golden`` is a file of its own; returns (results file, link, own file)."""
    secret = tmp_path / "elsewhere" / "private.png"
    secret.parent.mkdir()
    secret.write_bytes(png((7, 7, 7), 32))
    arts = tmp_path / "run" / "artifacts"
    arts.mkdir(parents=True)
    os.link(secret, arts / "actual.png")
    (arts / "golden.png").write_bytes(png((200, 0, 0), 32))
    out = outcome(status="failed", artifacts={"actual": "artifacts/actual.png",
                                              "golden": "artifacts/golden.png"})
    return (write(tmp_path / "run" / "results.json", document([out])), arts / "actual.png",
            arts / "golden.png")


def test_a_hard_linked_artifact_is_not_embedded(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    results, link, own = linked_run(tmp_path)
    page_file = tmp_path / "m.html"
    code, _, err = run([str(results), "--html", str(page_file)], capsys)
    assert code == 0, err
    page = page_file.read_text()
    assert base64.b64encode(link.read_bytes()).decode() not in page
    assert base64.b64encode(own.read_bytes()).decode() in page
    assert f"{NOTE.replace(chr(39), '&#x27;')}:<br>{link}" in page


def test_a_hard_linked_file_is_not_read(tmp_path: Path) -> None:
    results, link, own = linked_run(tmp_path)
    from conformance.report.matrix import build_matrix

    matrix = build_matrix([load_run(results)])
    assert page_image_paths(matrix) == [str(own)]
    link.parent.joinpath("copy.png").write_bytes(link.read_bytes())
    os.unlink(link.parent.parent.parent / "elsewhere" / "private.png")  # one name left
    assert page_image_paths(matrix) == [str(own), str(link)]


def test_bytes_read_by_another_reader_are_still_not_embedded(tmp_path: Path) -> None:
    _, link, _ = linked_run(tmp_path)
    images = PageImages({str(link): link.read_bytes()})
    figure = images.figure("actual", str(link))
    assert "background-image" not in images.style() and "not embedded: the file has 2" in figure


@pytest.mark.parametrize("links", [1, 3])
def test_hard_link_problem(tmp_path: Path, links: int) -> None:
    file = tmp_path / "a.png"
    file.write_bytes(b"x")
    for i in range(links - 1):
        os.link(file, tmp_path / f"l{i}")
    problem = hard_link_problem(file)
    assert problem == (None if links == 1 else NOTE.removeprefix("not embedded: ").replace(
        "2 hard", "3 hard"))


def test_hard_link_problem_of_what_is_not_a_linked_file(tmp_path: Path) -> None:
    assert hard_link_problem(tmp_path / "absent") is None
    assert hard_link_problem(tmp_path) is None  # a folder has links of its own
    assert hard_link_problem(str(tmp_path / "a\0b")) is None  # its reader says why
    (tmp_path / "f").write_bytes(b"")
    (tmp_path / "s").symlink_to(tmp_path / "f")
    assert hard_link_problem(tmp_path / "s") is None  # a symbolic link is not a hard link
