"""Inputs are checked with stat before anything reads them; every problem is one line and the batch goes on."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from foundation.inputs import check_inputs

def _pdf(path: Path) -> Path:
    path.write_bytes(b"%PDF-1.4\n% a tiny stand-in\n%%EOF\n")
    return path


def _reasons(problems) -> dict[str, str]:
    return {Path(p.path).name: p.reason for p in problems}


def test_fifo_devices_sockets_and_links_to_them_are_refused_without_blocking(tmp_path: Path) -> None:
    """Problem 2: a FIFO or a link to /dev/zero named .pdf was hashed and hung the build."""
    good = _pdf(tmp_path / "good.pdf")
    os.mkfifo(tmp_path / "pipe.pdf")
    os.symlink("/dev/zero", tmp_path / "zero.pdf")
    os.symlink(tmp_path / "pipe.pdf", tmp_path / "to-pipe.pdf")
    os.symlink(tmp_path / "gone.pdf", tmp_path / "dangling.pdf")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "sock.pdf"))
    try:
        names = ["pipe.pdf", "zero.pdf", "to-pipe.pdf", "dangling.pdf", "sock.pdf", "missing.pdf"]
        files, problems = check_inputs([tmp_path / n for n in names] + [good, Path("/dev/null")])
    finally:
        server.close()
    assert files == [good]
    reasons = _reasons(problems)
    assert reasons["pipe.pdf"] == "a named pipe (FIFO), not a regular file"
    assert reasons["zero.pdf"] == "symbolic link to /dev/zero, a character device, not a regular file"
    assert "named pipe" in reasons["to-pipe.pdf"] and "symbolic link" in reasons["to-pipe.pdf"]
    assert reasons["dangling.pdf"].startswith("broken symbolic link")
    assert reasons["sock.pdf"] == "a socket, not a regular file"
    assert reasons["missing.pdf"] == "no such file or directory"
    assert reasons["null"] == "a character device, not a regular file"
    assert all("\n" not in p.line() for p in problems)


def test_directories_are_expanded_and_an_empty_one_is_reported(tmp_path: Path) -> None:
    """Problem 4: an empty directory given as input was skipped without a word."""
    books = tmp_path / "books"
    books.mkdir()
    b, a = _pdf(books / "b.pdf"), _pdf(books / "A.PDF")
    (books / "notes.txt").write_text("not a book")
    os.mkfifo(books / "stuck.pdf")
    (tmp_path / "empty").mkdir()
    os.link(b, tmp_path / "b-again.pdf")
    files, problems = check_inputs([books, tmp_path / "empty", b, tmp_path / "b-again.pdf"])
    assert files == [a, b]  # given twice: built once
    reasons = _reasons(problems)
    assert reasons["empty"] == "empty directory: no *.pdf files in it"
    assert reasons["stuck.pdf"].startswith("a named pipe")
    assert reasons["b-again.pdf"] == f"the same file as {b} (built once)"


def _check_in_child(paths: list[Path], queue) -> None:  # noqa: ANN001
    if os.geteuid() == 0:  # root reads everything: check as an unprivileged user
        os.setgid(65534)
        os.setuid(65534)
    files, problems = check_inputs(paths)
    queue.put(([str(f) for f in files], [p.line() for p in problems]))


def _check_as_unprivileged_user(paths: list[Path]) -> tuple[list[str], list[str]]:
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_check_in_child, args=(paths, queue))
    child.start()
    result = queue.get(timeout=60)
    child.join(timeout=60)
    return result


def test_unreadable_file_is_reported_per_file(tmp_path: Path) -> None:
    """Problem 4: one unreadable argument aborted the batch; now it is one problem among good files."""
    work = Path(tempfile.mkdtemp(prefix="inputs-"))
    try:
        work.chmod(0o755)
        good = _pdf(work / "good.pdf")
        secret = _pdf(work / "secret.pdf")
        secret.chmod(0o000)
        good.chmod(0o644)
        files, lines = _check_as_unprivileged_user([secret, good])
        assert files == [str(good)]
        assert lines == [f"{secret}: not readable (permission denied)"]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_extract_command_reports_refused_inputs_and_builds_the_rest(tmp_path: Path, sample_atlas) -> None:
    from flows.cli import app

    os.mkfifo(tmp_path / "pipe.pdf")
    (tmp_path / "empty").mkdir()
    good = sample_atlas.pdfs[0]
    result = CliRunner().invoke(
        app, ["extract", str(tmp_path / "pipe.pdf"), str(tmp_path / "empty"), str(good), "-o", str(tmp_path / "out")]
    )
    assert result.exit_code == 1, result.output
    assert "a named pipe (FIFO), not a regular file" in result.output
    assert "empty directory: no *.pdf files in it" in result.output
    assert f"{good.name:40} success" in result.output
    assert (tmp_path / "out" / good.stem / "document.json").is_file()
