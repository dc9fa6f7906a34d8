"""Fuzz: one `mmretinal build` over a seeded corpus of hostile inputs and two good PDFs.

The build runs as a child process (the real CLI, a temporary Prefect server) whose every
process is held under 2 GiB of resident memory, watched here and killed past it, with an
address-space limit set by `resource.setrlimit` as a backstop. The batch must finish within
the time limit, name every bad input with its one-line reason, and publish the good PDFs.
All findings are collected and reported together, so one run shows every part that fails.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from testbed.hostile_pdfs import write_hostile_corpus

REPO = Path(__file__).resolve().parents[2]
GOOD_BOOKS = ["atlas-en", "atlas-zh-bilingual"]
RSS_LIMIT = 2 * 1024**3
ADDRESS_SPACE_LIMIT = 16 * 1024**3  # backstop only: onnxruntime and threads reserve far more than they use
BATCH_SECONDS = 600
WORKERS = 2  # each worker thread loads its own OCR engine (~0.8 GB): the memory bound is per worker


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))


def _run_watched(command: list[str], env: dict[str, str], log_path: Path) -> tuple[int | None, float, int, str]:
    """(exit code or None when killed, seconds, peak RSS of any one process, what killed it)."""
    started = time.monotonic()
    with open(log_path, "wb") as log:
        child = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_limit_memory, cwd=log_path.parent
        )
        watched = psutil.Process(child.pid)
        peak, killed = 0, ""
        while child.poll() is None:
            try:
                processes = [watched, *watched.children(recursive=True)]
                rss = max(p.memory_info().rss for p in processes)
            except psutil.Error:
                rss = 0
            peak = max(peak, rss)
            if rss > RSS_LIMIT:
                killed = f"a process went past {RSS_LIMIT >> 20} MiB resident"
            elif time.monotonic() - started > BATCH_SECONDS:
                killed = f"the batch ran past {BATCH_SECONDS} s"
            if killed:
                for process in [*watched.children(recursive=True), watched]:
                    try:
                        process.kill()
                    except psutil.Error:
                        pass
                child.wait()
                break
            time.sleep(0.1)
    return (None if killed else child.returncode), time.monotonic() - started, peak, killed


@pytest.mark.slow
@pytest.mark.timeout(BATCH_SECONDS + 300)
def test_hostile_batch_finishes_bounded_names_every_bad_input_and_publishes_the_good(tmp_path: Path) -> None:
    from data_manifests.registry import load_manifest
    from testbed.sample_atlas import generate_sample_atlas

    atlas = generate_sample_atlas(tmp_path / "good", seed=0, books=GOOD_BOOKS)
    corpus = write_hostile_corpus(tmp_path / "hostile", atlas.pdfs, seed=12)
    registry = tmp_path / "registry"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": "",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "ARGOS_CHUNK_TYPE": "SPACY",
        "COLUMNS": "200",
    }
    command = [
        sys.executable, "-m", "flows.cli", "build", str(tmp_path / "hostile"), *map(str, atlas.pdfs),
        "--work-dir", str(tmp_path / "work"), "--registry", str(registry),
        "--workers", str(WORKERS),
    ]
    log_path = tmp_path / "build.log"
    code, seconds, peak, killed = _run_watched(command, env, log_path)
    output = log_path.read_text(encoding="utf-8", errors="replace")
    lines = output.splitlines()
    print(f"batch: exit {code}, {seconds:.0f} s, peak RSS {peak / 2**20:.0f} MiB")

    failures: list[str] = []
    if killed:
        failures.append(f"killed: {killed}")
    errors = [line for line in lines if line.startswith("error:")]
    if code not in (0, 1):
        failures.append(f"build exited {code}: {errors[-1] if errors else lines[-1] if lines else ''}"[:300])
    for entry in corpus:
        stem = Path(entry.name).stem
        about = [line for line in lines if entry.name in line or f"{stem} " in line]
        if not about:
            failures.append(f"{entry.name} ({entry.kind}): not mentioned in the output")
        if entry.expect_reason and not any(entry.expect_reason in line for line in about):
            failures.append(f"{entry.name} ({entry.kind}): no line giving the reason {entry.expect_reason!r}")
        if entry.expect_log and not any(entry.expect_log in line for line in about):
            failures.append(f"{entry.name} ({entry.kind}): no log line with {entry.expect_log!r}")
    if "Traceback" in output:
        after = lines[next(i for i, line in enumerate(lines) if line.startswith("Traceback")):]
        raised = next((line for line in after[1:] if line and not line.startswith(" ")), "")
        failures.append(f"a traceback was printed, ending in: {raised}"[:300])
    try:
        by_book = load_manifest(registry, "mm-retinal/latest").meta.counts.by_book
    except Exception as exc:  # noqa: BLE001 - reported with the rest
        failures.append(f"nothing published: {exc}")
    else:
        missing = [book for book in GOOD_BOOKS if not by_book.get(book)]
        if missing:
            failures.append(f"good PDFs without published pairs: {missing}")
        duplicate = next(entry for entry in corpus if entry.name.startswith("copy-of-"))
        copy_book = Path(duplicate.name).stem
        if not by_book.get(copy_book) and not any("duplicate of" in line for line in lines):
            failures.append(f"{duplicate.name}: neither its own book nor reported as a duplicate")
    assert not failures, f"{len(failures)} finding(s), see {log_path}:\n  " + "\n  ".join(failures)
