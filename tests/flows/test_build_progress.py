"""`mmretinal build` on a terminal draws live bars of pages and OCR pages with the PDF being
worked on; through a pipe it draws nothing. The counts come from files the per-PDF tasks write,
so they are checked here against real files too."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from flows.build_progress import PageProgress, plan_pages, read_totals
from pipeline.extract import ExtractOptions

BOOKS = ["atlas-en", "atlas-zh-scanned"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def atlas(tmp_path_factory: pytest.TempPathFactory):
    from testbed.sample_atlas import generate_sample_atlas

    return generate_sample_atlas(tmp_path_factory.mktemp("progress-atlas"), seed=0, books=BOOKS)


def test_totals_count_pages_done_and_whole_pdfs_once_done(atlas, tmp_path: Path) -> None:
    planned = {p.pdf.name: p for p in plan_pages(atlas.pdfs + [tmp_path / "missing.pdf"], ExtractOptions())}
    book_pages = {f"{b.book}.pdf": b.pages for b in atlas.books}
    assert {name: p.pages for name, p in planned.items() if name in book_pages} == book_pages
    assert planned["atlas-zh-scanned.pdf"].ocr_pages == book_pages["atlas-zh-scanned.pdf"]
    assert planned["atlas-en.pdf"].ocr_pages == 0
    assert planned["missing.pdf"].pages == 0

    english, scanned = (next(p for p in planned.values() if p.pdf.name == f"{book}.pdf") for book in BOOKS)
    assert read_totals(tmp_path, list(planned.values())).pages == 0
    writer = PageProgress(tmp_path, scanned.pdf, interval=0.0)
    writer(2, 2)
    totals = read_totals(tmp_path, list(planned.values()))
    assert (totals.pages, totals.ocr_pages, totals.current) == (2, 2, ["atlas-zh-scanned.pdf"])
    with PageProgress(tmp_path, english.pdf, interval=0.0):  # e.g. reused from the cache: no page calls
        assert read_totals(tmp_path, list(planned.values())).current[0] == "atlas-en.pdf"
    totals = read_totals(tmp_path, list(planned.values()))
    assert (totals.pages, totals.ocr_pages) == (english.pages + 2, 2)
    assert totals.current == ["atlas-zh-scanned.pdf"]


def _cli(args: list[str], server, terminal: bool) -> tuple[int, str]:
    """Run `mmretinal ...` in a pseudo-terminal (or with pipes); its exit code and output."""
    env = {**os.environ, "PREFECT_API_URL": server.api_url, "COLUMNS": "150", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    command = [sys.executable, "-m", "flows.cli", *args]
    if not terminal:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        return done.returncode, done.stdout + done.stderr
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 150, 0, 0))
    process = subprocess.Popen(command, env=env, stdin=follower, stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    output = bytearray()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closes when the process ends
                break
            if not chunk:
                break
            output += chunk
        elif process.poll() is not None:
            break
    process.kill() if process.poll() is None else None
    os.close(leader)
    return process.wait(), ANSI.sub("", output.decode("utf-8", errors="replace"))


@pytest.mark.prefect
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_terminal_shows_pages_ocr_pages_and_current_pdf_a_pipe_shows_none(prefect_server, atlas, tmp_path: Path) -> None:
    pages = sum(b.pages for b in atlas.books)
    ocr_pages = next(b.pages for b in atlas.books if b.book == "atlas-zh-scanned")
    args = ["build", *map(str, atlas.pdfs), "--work-dir", str(tmp_path / "work"), "--registry", str(tmp_path / "registry")]

    code, shown = _cli(args, prefect_server, terminal=True)
    assert code == 0, shown[-3000:]
    assert re.search(rf"\bpages\b[━╸╺ ]+ *{pages}/{pages}\b", shown), shown[-3000:]
    assert re.search(rf"OCR pages[━╸╺ ]+ *{ocr_pages}/{ocr_pages}\b", shown), shown[-3000:]
    assert re.search(rf"pages[━╸╺ ]+ *\d+/{pages} .*ETA .*atlas-(en|zh-scanned)\.pdf", shown), shown[-3000:]
    assert "fingerprint " in shown
    assert not list((tmp_path / "work" / "progress").glob("*/*.json"))

    code, piped = _cli([*args, "--no-publish"], prefect_server, terminal=False)
    assert code == 0, piped[-3000:]
    assert "atlas-en" in piped and "(cached)" in piped  # the summary is there, the bars are not
    assert "━" not in piped and "OCR pages" not in piped and "ETA" not in piped
