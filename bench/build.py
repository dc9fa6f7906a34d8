"""Whole-build throughput against step 1 alone, same process, and where the build's time goes.

On a generated born-digital book (default 120 pages, a figure on almost every page) and on the
sample atlas's scanned book: pages/s of step 1 alone (`extract_pdf`, as in bench/extract.py) and
of the whole build from a cold work directory (steps 1-4, review queue, publish), their ratio,
and the whole build's seconds per stage from the documents' own timings.

Usage: python bench/build.py [--pages 120] [--skip-scanned]
"""

from __future__ import annotations

import argparse
import logging
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=120, help="Pages of the generated born-digital book.")
    parser.add_argument("--skip-scanned", action="store_true", help="Only the born-digital book.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        book = generate_long_book(tmp / "long" / "long-book.pdf", pages=args.pages, seed=0)
        create_ocr_engine()  # model loading is not part of either measurement
        measure("born-digital", [book.path], book.pages, tmp)
        if not args.skip_scanned:
            atlas = generate_sample_atlas(tmp / "atlas", seed=0, books=["atlas-zh-scanned"])
            measure("scanned", atlas.pdfs, sum(b.pages for b in atlas.books), tmp)


if __name__ == "__main__":
    main()
