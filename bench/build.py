"""Whole-build throughput on the sample atlas against the step-1 baseline, same process.

For the born-digital books and for the scanned book: pages/s of step 1 alone (`extract_pdf`,
as in bench/extract.py) and of the whole build (steps 1-4, review queue, publish) from a cold
work directory, printed with their ratio.

Usage: python bench/build.py
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import pymupdf

from curation.build import BuildOptions, run_build
from pipeline.extract import extract_pdf
from pipeline.ocr import create_ocr_engine
from testbed.sample_atlas import generate_sample_atlas


def pages_of(pdfs: list[Path]) -> int:
    total = 0
    for pdf in pdfs:
        with pymupdf.open(pdf) as doc:
            total += doc.page_count
    return total


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        atlas = generate_sample_atlas(tmp / "atlas", seed=0)
        create_ocr_engine()  # model loading is not part of either measurement
        groups = {
            "born-digital": [p for p in atlas.pdfs if "scanned" not in p.name],
            "scanned": [p for p in atlas.pdfs if "scanned" in p.name],
        }
        for name, pdfs in groups.items():
            pages = pages_of(pdfs)
            started = time.perf_counter()
            for pdf in pdfs:
                extract_pdf(pdf, tmp / f"step1-{name}")
            step1 = pages / (time.perf_counter() - started)
            options = BuildOptions(
                work_dir=tmp / f"work-{name}", registry_root=tmp / f"registry-{name}", translation_home=tmp / "argos"
            )
            started = time.perf_counter()
            record, published = run_build(pdfs, options)
            whole = pages / (time.perf_counter() - started)
            print(
                f"{name}: whole build {whole:.2f} pages/s, step 1 alone {step1:.2f} pages/s ({pages} pages, "
                f"{len(record.pairs)} pairs, published {published.ref if published else 'nothing'}); "
                f"ratio {whole / step1:.2f}"
            )


if __name__ == "__main__":
    main()
