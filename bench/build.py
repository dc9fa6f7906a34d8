"""Whole-build throughput against step 1 alone, same process, and where the build's time goes;
the speed-up of two Dask workers over one.

On a generated born-digital book (default 120 pages, a figure on almost every page) and on the
sample atlas's scanned book: pages/s of step 1 alone (`extract_pdf`, as in bench/extract.py) and
of the whole build from a cold work directory (steps 1-4, review queue, publish), their ratio,
and the whole build's seconds per stage from the documents' own timings.

And the flow `build-dataset` on a Dask `LocalCluster` of 1 worker process and then of 2
(one thread each, `--task-runner dask --dask-address ...`), each from a cold work directory, on a
set of generated born-digital books; prints the wall time of the per-PDF tasks plus the build
record (publishing, serial on the build host, is left out) and the 1-worker / 2-worker ratio.
Workers import the project before the clock starts. Runs against $PREFECT_API_URL when set,
else a temporary local Prefect server.

Usage: python bench/build.py [--pages 120] [--skip-scanned] [--skip-dask | --only-dask] [--dask-pdfs 8] [--dask-pages 24]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

from curation.build import BuildOptions, run_build, step_seconds
from pipeline.extract import extract_pdf
from pipeline.ocr import create_ocr_engine
from testbed.sample_atlas import generate_long_book, generate_sample_atlas


def measure(name: str, pdfs: list[Path], pages: int, tmp: Path) -> None:
    started = time.perf_counter()
    for pdf in pdfs:
        extract_pdf(pdf, tmp / f"step1-{name}")
    step1_seconds = time.perf_counter() - started
    options = BuildOptions(work_dir=tmp / f"work-{name}", registry_root=tmp / f"registry-{name}", translation_home=tmp / "argos")
    started = time.perf_counter()
    record, published = run_build(pdfs, options)
    whole_seconds = time.perf_counter() - started
    step1, whole = pages / step1_seconds, pages / whole_seconds
    print(
        f"{name}: whole build {whole:.2f} pages/s, step 1 alone {step1:.2f} pages/s ({pages} pages, "
        f"{len(record.pairs)} pairs, published {published.ref if published else 'nothing'}); ratio {whole / step1:.2f}"
    )
    stages = {**step_seconds(record.documents), **record.seconds, **(published.seconds if published else {})}
    accounted = sum(stages.values())
    stages["other (flow glue, summaries)"] = max(0.0, whole_seconds - accounted)
    print(f"  where the whole build's {whole_seconds:.2f} s go:")
    for stage, seconds in stages.items():
        print(f"    {stage:30} {seconds:7.2f} s  {100 * seconds / whole_seconds:5.1f} %")


def dask_build_seconds(pdfs: list[Path], n_workers: int, tmp: Path) -> float:
    """Wall seconds of steps 1-3 and the build record on a fresh local cluster of n worker processes."""
    from distributed import Client, LocalCluster

    from flows.commands_build import build_options
    from rebuild import timed_build  # bench/rebuild.py: one timed, unpublished build

    logging.getLogger("distributed").setLevel(logging.WARNING)
    one_thread = {"OMP_NUM_THREADS": "1"}  # as on worker hosts (docs/scale.md): one PDF, one core
    with LocalCluster(
        n_workers=n_workers, processes=True, threads_per_worker=1, dashboard_address=None, env=one_thread
    ) as cluster:
        with Client(cluster) as client:
            client.run(lambda: __import__("flows.build_flow"))  # imports are not the build's time
        options = build_options(
            work_dir=tmp / f"work-dask-{n_workers}", registry=tmp / f"registry-dask-{n_workers}",
            task_runner="dask", dask_address=cluster.scheduler_address,
        )
        return timed_build(pdfs, options)


def measure_dask(n_pdfs: int, pages: int, tmp: Path) -> None:
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")  # before Prefect is imported: no per-run lines
    books = [generate_long_book(tmp / "dask-books" / f"book-{i:02d}.pdf", pages=pages, seed=i) for i in range(n_pdfs)]
    pdfs = [book.path for book in books]
    one = dask_build_seconds(pdfs, 1, tmp)
    two = dask_build_seconds(pdfs, 2, tmp)
    print(
        f"dask: {n_pdfs} PDFs x {pages} pages, 1 worker {one:.2f} s, 2 workers {two:.2f} s; "
        f"speed-up of 2 workers over 1: {one / two:.2f}x (on {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=120, help="Pages of the generated born-digital book.")
    parser.add_argument("--skip-scanned", action="store_true", help="Only the born-digital book.")
    parser.add_argument("--skip-dask", action="store_true", help="Leave out the 1-vs-2 Dask worker build times.")
    parser.add_argument("--only-dask", action="store_true", help="Only the 1-vs-2 Dask worker build times.")
    parser.add_argument("--dask-pdfs", type=int, default=8, help="Generated books of the Dask measurement.")
    parser.add_argument("--dask-pages", type=int, default=24, help="Pages of each of those books.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.only_dask:
            measure_dask(args.dask_pdfs, args.dask_pages, tmp)
            return
        book = generate_long_book(tmp / "long" / "long-book.pdf", pages=args.pages, seed=0)
        create_ocr_engine()  # model loading is not part of either measurement
        measure("born-digital", [book.path], book.pages, tmp)
        if not args.skip_scanned:
            atlas = generate_sample_atlas(tmp / "atlas", seed=0, books=["atlas-zh-scanned"])
            measure("scanned", atlas.pdfs, sum(b.pages for b in atlas.books), tmp)
        if not args.skip_dask:
            measure_dask(args.dask_pdfs, args.dask_pages, tmp)


if __name__ == "__main__":
    main()
