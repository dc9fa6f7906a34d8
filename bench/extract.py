"""Step-1 throughput against bare baselines measured in the same process.

1. Born-digital pages/s of `extract_pdf` vs. a bare PyMuPDF pass over the same pages
   (`get_text("dict")` + extracting every embedded image).
2. OCR seconds per scanned page: step 1 on the scanned sample book vs. the bare OCR engine on
   the same page images; with `--ocr-engine paddleocr`, PaddleOCR's s/page against RapidOCR's
   on the same pages in the same run.
3. Peak RSS of a process extracting a generated 300-page book (must stay under 1.5 GiB).

Usage: python bench/extract.py [--pages 300] [--ocr-engine paddleocr]
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path

import numpy as np
import pymupdf

from pipeline.extract import ExtractOptions, extract_pdf
from pipeline.ocr import OcrOptions, create_ocr_engine
from testbed.sample_atlas import generate_long_book, generate_sample_atlas, read_truth
from testbed.scoring import extraction_recall


def bare_pymupdf_pass(pdf: Path) -> int:
    doc = pymupdf.open(pdf)
    for page in doc:
        page.get_text("dict")
        for info in page.get_image_info(xrefs=True):
            if info.get("xref"):
                pymupdf.Pixmap(doc, info["xref"]).tobytes("png")
    count = doc.page_count
    doc.close()
    return count


def page_images(pdf: Path) -> list[np.ndarray]:
    doc = pymupdf.open(pdf)
    images = []
    for page in doc:
        xref = page.get_images()[0][0]
        pix = pymupdf.Pixmap(doc, xref)
        if pix.n != 3:
            pix = pymupdf.Pixmap(pymupdf.csRGB, pix)
        images.append(np.frombuffer(pix.samples, np.uint8).reshape(pix.h, pix.w, 3).copy())
    return images


def bare_seconds(engines: list, images: list[np.ndarray]) -> list[float]:
    """s/page of each engine on the same page images, engines taking turns page by page so that
    a change in machine load hits all of them alike."""
    for engine in engines:
        engine.recognise(images[0])  # load the models before timing
    totals = [0.0] * len(engines)
    for image in images:
        for index, engine in enumerate(engines):
            started = time.perf_counter()
            engine.recognise(image)
            totals[index] += time.perf_counter() - started
    return [total / len(images) for total in totals]


def step1_seconds(pdf: Path, pages: int, out: Path, ocr: OcrOptions):
    """(step 1 s/page, extraction) of the scanned book with one engine."""
    started = time.perf_counter()
    extraction = extract_pdf(pdf, out, ExtractOptions(ocr=ocr))
    return (time.perf_counter() - started) / pages, extraction


def _peak_rss_child(pdf: str, out: str, queue) -> None:
    """Sample this process's RSS while it extracts (ru_maxrss would include the parent's peak,
    since it survives exec)."""
    import threading

    import psutil

    process, peak, done = psutil.Process(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    extract_pdf(Path(pdf), Path(out))
    done.set()
    sampler.join()
    queue.put(peak[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=300, help="Pages of the generated long book.")
    parser.add_argument(
        "--ocr-engine", choices=["rapidocr", "paddleocr"], default="rapidocr",
        help="Engine for the scanned book; paddleocr is timed against rapidocr in the same run.",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        book = generate_long_book(tmp / "long.pdf", pages=args.pages, seed=0)
        atlas = generate_sample_atlas(tmp / "atlas", seed=0, books=["atlas-zh-scanned"])

        bare_pymupdf_pass(book.path)  # warm the file cache
        started = time.perf_counter()
        pages = bare_pymupdf_pass(book.path)
        bare_s = time.perf_counter() - started
        started = time.perf_counter()
        long_extraction = extract_pdf(book.path, tmp / "out-long", ExtractOptions())
        ours_s = time.perf_counter() - started
        print(f"born-digital: step 1 {pages / ours_s:.1f} pages/s, bare PyMuPDF {pages / bare_s:.1f} pages/s "
              f"({pages} pages); step 1 takes {ours_s / bare_s:.2f}x the bare pass")

        scanned = atlas.pdfs[0]
        images = page_images(scanned)
        engines = [OcrOptions()]
        if args.ocr_engine == "paddleocr":
            engines.append(OcrOptions(engine="paddleocr", paddle_home=tmp / "paddlex"))
        bare = bare_seconds([create_ocr_engine(ocr) for ocr in engines], images)
        ours_ocr, scanned_extraction = step1_seconds(scanned, len(images), tmp / "out-scanned", engines[0])
        print(f"scanned: step 1 {ours_ocr:.2f} s/page, bare OCR engine {bare[0]:.2f} s/page "
              f"({len(images)} pages, rapidocr); ratio {ours_ocr / bare[0]:.2f}x")
        if args.ocr_engine == "paddleocr":
            paddle_ocr, paddle_extraction = step1_seconds(scanned, len(images), tmp / "out-paddle", engines[1])
            paddle_scan = extraction_recall(read_truth(atlas.truth_path), [paddle_extraction])
            print(f"scanned, paddleocr: bare engine {bare[1]:.2f} s/page vs rapidocr {bare[0]:.2f} "
                  f"({bare[1] / bare[0]:.2f}x, same pages, taking turns); step 1 {paddle_ocr:.2f} s/page vs "
                  f"rapidocr {ours_ocr:.2f} ({paddle_ocr / ours_ocr:.2f}x); "
                  f"figure-region recall {paddle_scan['recall']['scanned']}")

        born = extraction_recall(book.truth, [long_extraction])
        scan = extraction_recall(read_truth(atlas.truth_path), [scanned_extraction])
        print(f"figure-region recall: born-digital {born['recall']['all']} ({born['panels']['all']} panels), "
              f"scanned {scan['recall']['scanned']} ({scan['panels']['scanned']} panels); "
              f"caption ids missing: {len(born['caption_ids_missing']) + len(scan['caption_ids_missing'])}")

        queue = multiprocessing.get_context("spawn").Queue()
        child = multiprocessing.get_context("spawn").Process(
            target=_peak_rss_child, args=(str(book.path), str(tmp / "out-rss"), queue)
        )
        child.start()
        peak = queue.get()
        child.join()
        verdict = "OK" if peak < 1.5 * 2**30 else "OVER the 1.5 GiB limit"
        print(f"peak RSS extracting {pages} pages: {peak / 2**20:.0f} MiB ({verdict})")


if __name__ == "__main__":
    main()
