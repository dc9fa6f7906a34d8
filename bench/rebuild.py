"""Cold build vs. unchanged rebuild through the `build-dataset` flow, and Prefect's per-PDF overhead.

Generates the sample atlas in a temp dir and, in one process:
  1. cold build (steps 1-3 for every PDF, empty cache) through the flow, without publishing;
  2. unchanged rebuild through the flow: every PDF's record comes from the build's cache;
  3. per-PDF cost on cached inputs: `process_document` called directly vs. `process_pdf_task`
     run by Prefect one at a time.
Prints the cold/rebuild ratio (target >= 10x) and the overhead in ms and as a ratio.

Runs against $PREFECT_API_URL when set, else Prefect's temporary local server (its start-up
is not timed).

    python bench/rebuild.py                 # all four sample books (the scanned one is OCR'd once)
    python bench/rebuild.py --born-digital  # the three born-digital books only (fast)
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

from flows import prefect_env

prefect_env.apply_defaults()

from prefect import flow  # noqa: E402 - settings come from the environment on import
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

from curation.build import BuildOptions, process_document  # noqa: E402
from flows.build_flow import build_dataset, process_pdf_task  # noqa: E402
from testbed.sample_atlas import generate_sample_atlas, load_sample_content  # noqa: E402


@flow(name="bench-warm-up")
def warm_up() -> None:
    """Start the API (temporary server in ephemeral mode) before anything is timed."""


@flow(name="bench-task-overhead", task_runner=ThreadPoolTaskRunner(max_workers=1))
def run_tasks_serially(pdfs: list[Path], options: BuildOptions, repeats: int) -> list[float]:
    """Seconds per `process_pdf_task` run, one PDF at a time, as seen by the caller of the task."""
    seconds = []
    for _ in range(repeats):
        for pdf in pdfs:
            started = time.perf_counter()
            process_pdf_task.submit(pdf, options).result()
            seconds.append(time.perf_counter() - started)
    return seconds


def timed_build(pdfs: list[Path], options: BuildOptions) -> float:
    started = time.perf_counter()
    result = build_dataset(pdfs=pdfs, options=options, publish=False)
    seconds = time.perf_counter() - started
    failed = [d.pdf for d in result.record.documents if d.failed]
    if failed:
        raise SystemExit(f"build failed for {failed}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--born-digital", action="store_true", help="leave out the scanned book (no OCR)")
    parser.add_argument("--repeats", type=int, default=5, help="passes over the PDFs for the per-PDF overhead")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    prefect_env.quiet_client_loggers()

    books = [spec.book for spec in load_sample_content() if not (args.born_digital and spec.scanned)]
    with tempfile.TemporaryDirectory(prefix="mmretinal-bench-rebuild-") as tmp:
        root = Path(tmp)
        pdfs = generate_sample_atlas(root / "atlas", seed=0, books=books).pdfs
        options = BuildOptions(work_dir=root / "work", registry_root=root / "registry")
        warm_up()

        cold = timed_build(pdfs, options)
        rebuild = timed_build(pdfs, options)

        direct = []
        for _ in range(args.repeats):
            for pdf in pdfs:
                started = time.perf_counter()
                result = process_document(pdf, options)
                direct.append(time.perf_counter() - started)
                assert result.cached, f"{pdf} was not served from the cache"
        task_run = run_tasks_serially(pdfs, options, args.repeats)

    direct_ms = 1000 * statistics.median(direct)
    task_ms = 1000 * statistics.median(task_run)
    print(f"sample atlas: {len(pdfs)} PDFs ({', '.join(books)})")
    print(f"cold build (flow, steps 1-3, no publish):         {cold:8.2f} s")
    print(f"unchanged rebuild (the build's one cache):       {rebuild:8.2f} s   cold/rebuild = {cold / rebuild:.1f}x")
    print(f"per PDF on cached inputs, process_document:      {direct_ms:8.1f} ms (median of {len(direct)})")
    print(
        f"per PDF, process_pdf_task run by Prefect:        {task_ms:8.1f} ms   overhead {task_ms - direct_ms:+.1f} ms, "
        f"ratio {task_ms / direct_ms:.1f}x"
    )


if __name__ == "__main__":
    main()
