"""Cold build vs. unchanged rebuild through the `build-dataset` flow, and Prefect's per-PDF overhead.

Generates the sample atlas in a temp dir and, in one process:
  1. cold build (steps 1-3 for every PDF, no caches) through the flow, without publishing;
  2. unchanged rebuild through the flow: every PDF comes from Prefect's task cache;
  3. the same rebuild with Prefect's cache dropped: every PDF comes from the pipeline's own cache;
  4. per-PDF cost on cached inputs: `process_pdf` called directly vs. `process_pdf_task` run by
     Prefect one at a time (cache refreshed so the task body runs), and a Prefect cache hit.
Prints the cold/rebuild ratio (target >= 10x) and the overhead in ms and as a ratio.

Runs against $PREFECT_API_URL when set, else Prefect's temporary local server (its start-up
is not timed).

    python bench/rebuild.py                 # all four sample books (the scanned one is OCR'd once)
    python bench/rebuild.py --born-digital  # the three born-digital books only (fast)
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from flows import prefect_env

prefect_env.apply_defaults()

from prefect import flow  # noqa: E402 - settings come from the environment on import
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

from flows.build_flow import PREFECT_RESULTS_DIR, build_dataset, process_pdf_task  # noqa: E402
from curation.build import BuildOptions, process_pdf  # noqa: E402
from testbed.sample_atlas import generate_sample_atlas, load_sample_content  # noqa: E402


@flow(name="bench-warm-up")
def warm_up() -> None:
    """Start the API (temporary server in ephemeral mode) before anything is timed."""


@flow(name="bench-task-overhead", task_runner=ThreadPoolTaskRunner(max_workers=1))
def run_tasks_serially(pdfs: list[Path], options: BuildOptions, repeats: int, refresh: bool) -> list[float]:
    """Seconds per `process_pdf_task` run, one PDF at a time, as seen by the caller of the task."""
    results_dir = (Path(options.work_dir) / PREFECT_RESULTS_DIR).resolve()
    task = process_pdf_task.with_options(refresh_cache=refresh, result_storage=results_dir)
    seconds = []
    for _ in range(repeats):
        for pdf in pdfs:
            started = time.perf_counter()
            task.submit(pdf, options).result()
            seconds.append(time.perf_counter() - started)
    return seconds


def timed_build(pdfs: list[Path], options: BuildOptions) -> float:
    started = time.perf_counter()
    result = build_dataset(pdfs=pdfs, options=options, publish=False)
    seconds = time.perf_counter() - started
    failed = [o.result.pdf for o in result.outcomes if o.result.error]
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
        shutil.rmtree(options.work_dir / PREFECT_RESULTS_DIR)
        pipeline_cache_rebuild = timed_build(pdfs, options)

        direct = []
        for _ in range(args.repeats):
            for pdf in pdfs:
                started = time.perf_counter()
                result = process_pdf(pdf, options)
                direct.append(time.perf_counter() - started)
                assert result.cached, f"{pdf} was not served from the pipeline cache"
        task_run = run_tasks_serially(pdfs, options, args.repeats, refresh=True)
        task_cached = run_tasks_serially(pdfs, options, args.repeats, refresh=False)

    direct_ms = 1000 * statistics.median(direct)
    task_ms = 1000 * statistics.median(task_run)
    cached_ms = 1000 * statistics.median(task_cached)
    print(f"sample atlas: {len(pdfs)} PDFs ({', '.join(books)})")
    print(f"cold build (flow, steps 1-3, no publish):         {cold:8.2f} s")
    print(f"unchanged rebuild, Prefect task cache:           {rebuild:8.2f} s   cold/rebuild = {cold / rebuild:.1f}x")
    print(
        f"unchanged rebuild, pipeline cache only:          {pipeline_cache_rebuild:8.2f} s   "
        f"cold/rebuild = {cold / pipeline_cache_rebuild:.1f}x"
    )
    print(f"per PDF on cached inputs, process_pdf direct:    {direct_ms:8.1f} ms (median of {len(direct)})")
    print(
        f"per PDF, process_pdf_task run by Prefect:        {task_ms:8.1f} ms   overhead {task_ms - direct_ms:+.1f} ms, "
        f"ratio {task_ms / direct_ms:.1f}x"
    )
    print(f"per PDF, Prefect cache hit (task not run):       {cached_ms:8.1f} ms   ratio {cached_ms / direct_ms:.1f}x")


if __name__ == "__main__":
    main()
