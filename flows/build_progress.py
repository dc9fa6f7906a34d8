"""Live progress of `mmretinal build` in the terminal: pages done over all PDFs, OCR pages apart.

Per-PDF tasks may run in other processes or on other hosts (process pool, Dask, Ray), so they do
not report through memory: each task writes its page counts to a small JSON file under a
progress directory in the work directory (atomically, at most a few times a second), and the
build host polls that directory. Totals come from a quick count before the build (`count_pages`:
page count and which pages have no text layer). A PDF that is done (computed, cached or failed)
counts all its planned pages. The bar is drawn only on a terminal; the Prefect progress artifact
of the run is made by the flow whatever the terminal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from foundation.files import write_atomic
from pipeline.extract import ExtractOptions, count_pages

log = logging.getLogger(__name__)

WRITE_INTERVAL_SECONDS = 0.5
POLL_INTERVAL_SECONDS = 0.25


def progress_file(directory: Path, pdf: Path) -> Path:
    """Where one PDF's counts go: named by its absolute path, the same on the build host and the workers."""
    key = hashlib.sha256(str(Path(pdf).absolute()).encode()).hexdigest()[:20]
    return Path(directory) / f"{key}.json"


class PageProgress:
    """Writes one PDF's pages done (and OCR'd) for the build host to read: entered around the
    PDF's task (started, then done however it ends), called as step 1's `on_page`."""

    def __init__(self, directory: Path, pdf: Path, interval: float = WRITE_INTERVAL_SECONDS) -> None:
        self.path = progress_file(directory, pdf)
        self.name = Path(pdf).name
        self.interval = interval
        self.last_write = 0.0
        self.pages = self.ocr_pages = 0

    def __call__(self, pages: int, ocr_pages: int) -> None:
        self.pages, self.ocr_pages = pages, ocr_pages
        if time.monotonic() - self.last_write >= self.interval:
            self._write(done=False)

    def __enter__(self) -> "PageProgress":
        self._write(done=False)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._write(done=True)

    def _write(self, done: bool) -> None:
        self.last_write = time.monotonic()
        state = {
            "pdf": self.name, "pages": self.pages, "ocr_pages": self.ocr_pages, "done": done, "time": time.time(),
            "worker": f"{socket.gethostname()}:{os.getpid()}",  # where the task runs
        }
        try:
            write_atomic(self.path, json.dumps(state))
        except OSError as exc:  # progress is a display: never a reason to fail a PDF
            log.debug("progress of %s not written: %s", self.name, exc)


@dataclass
class PlannedPdf:
    pdf: Path
    pages: int
    ocr_pages: int


def plan_pages(pdfs: list[Path], options: ExtractOptions) -> list[PlannedPdf]:
    """Pages and OCR pages of each input; a PDF that cannot be opened plans none (its task
    reports why)."""
    planned = []
    for pdf in pdfs:
        try:
            pages, ocr_pages = count_pages(pdf, options)
        except Exception:  # noqa: BLE001 - the build itself reports a bad PDF
            pages = ocr_pages = 0
        planned.append(PlannedPdf(Path(pdf), pages, ocr_pages))
    return planned


@dataclass
class Totals:
    pages: int
    ocr_pages: int
    current: list[str]


def read_totals(directory: Path, planned: list[PlannedPdf]) -> Totals:
    """Pages done over all PDFs from the files the tasks wrote; the PDFs being worked on, most
    recently heard of first."""
    pages = ocr_pages = 0
    working: list[tuple[float, str]] = []
    for item in planned:
        try:
            state = json.loads(progress_file(directory, item.pdf).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if state.get("done"):
            pages, ocr_pages = pages + item.pages, ocr_pages + item.ocr_pages
            continue
        pages += min(int(state.get("pages", 0)), item.pages)
        ocr_pages += min(int(state.get("ocr_pages", 0)), item.ocr_pages)
        working.append((float(state.get("time", 0.0)), item.pdf.name))
    return Totals(pages, ocr_pages, [name for _, name in sorted(working, reverse=True)])


def _current_text(names: list[str]) -> str:
    if not names:
        return ""
    return names[0] + (f" (+{len(names) - 1} more)" if len(names) > 1 else "")


@contextmanager
def _prefect_console_on(console) -> Iterator[None]:  # noqa: ANN001 - a rich Console
    """Prefect's console log lines go through the live display's console, above the bars,
    instead of tearing them."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger))]
    handlers = {handler for logger in loggers for handler in logger.handlers if isinstance(handler, PrefectConsoleHandler)}
    saved = {handler: handler.console for handler in handlers}
    for handler in handlers:
        handler.console = console
    try:
        yield
    finally:
        for handler, original in saved.items():
            handler.console = original


@contextmanager
def build_progress(pdfs: list[Path], options: ExtractOptions, directory: Path, enabled: bool = True) -> Iterator[Path | None]:
    """Show the bars while the body runs the build; yields the progress directory to hand to
    the flow, or None when no bar is shown (not a terminal, or disabled)."""
    from rich.console import Console

    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    planned = plan_pages(pdfs, options)
    directory.mkdir(parents=True, exist_ok=True)
    progress = Progress(
        TextColumn("{task.description:>9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[current]}"),
        console=console,
        refresh_per_second=4,
    )
    pages_bar = progress.add_task("pages", total=sum(p.pages for p in planned), current="")
    ocr_bar = progress.add_task("OCR pages", total=sum(p.ocr_pages for p in planned), current="")
    stop = threading.Event()

    def poll() -> None:
        while True:
            totals = read_totals(directory, planned)
            progress.update(pages_bar, completed=totals.pages, current=_current_text(totals.current))
            progress.update(ocr_bar, completed=totals.ocr_pages)
            if stop.wait(POLL_INTERVAL_SECONDS):
                return

    poller = threading.Thread(target=poll, name="build-progress", daemon=True)
    with progress, _prefect_console_on(progress.console):
        poller.start()
        try:
            yield directory
        finally:
            stop.set()
            poller.join()
            totals = read_totals(directory, planned)
            progress.update(pages_bar, completed=totals.pages, current="")
            progress.update(ocr_bar, completed=totals.ocr_pages)
            shutil.rmtree(directory, ignore_errors=True)
