"""Draw the corpus truth on page renders, so that every annotation is checked by eye.

For each annotated page: the figure box in blue, the caption box in green (on the caption's page),
each panel in red with its printed label and modality. One PNG per page:
`OUT/<doc>-p<page>.png`.

    python bench/corpus/overlay.py CORPUS_DIR --out overlays/                   # every document
    python bench/corpus/overlay.py CORPUS_DIR --out overlays/ --doc NAME --dpi 120
    python bench/corpus/overlay.py CORPUS_DIR --truth my_truth.jsonl --out o/   # another truth file
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pymupdf

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.corpus.corpus import TRUTH, CorpusError, read_truth  # noqa: E402

BLUE, GREEN, RED = (0.1, 0.3, 0.95), (0.0, 0.65, 0.2), (0.9, 0.1, 0.1)


def _shapes(figures: list[dict]) -> dict[int, list[tuple]]:
    """Per page (1-based): (rect, colour, text, width) to draw."""
    shapes: dict[int, list[tuple]] = {}
    for figure in figures:
        name = figure.get("label") or "(no label)"
        if figure.get("bbox"):
            shapes.setdefault(figure["page"], []).append((figure["bbox"], BLUE, f"{name} [{figure.get('kind')}]", 1.5))
        if figure.get("caption_bbox"):
            shapes.setdefault(figure.get("caption_page") or figure["page"], []).append((figure["caption_bbox"], GREEN, f"caption {name}", 1.0))
        for index, panel in enumerate(figure.get("panels") or []):
            if panel.get("bbox"):
                text = f"{panel.get('label') or index + 1}:{panel.get('modality')}"
                shapes.setdefault(figure["page"], []).append((panel["bbox"], RED, text, 1.0))
    return shapes


def draw_document(pdf: Path, figures: list[dict], out: Path, dpi: int) -> list[Path]:
    written = []
    with pymupdf.open(pdf) as doc:
        for page_number, items in sorted(_shapes(figures).items()):
            if not 1 <= page_number <= doc.page_count:
                print(f"error: {pdf}: page {page_number} out of range", file=sys.stderr)
                continue
            page = doc[page_number - 1]
            shape = page.new_shape()
            for rect, colour, text, width in items:
                box = pymupdf.Rect(rect)
                shape.draw_rect(box)
                shape.finish(color=colour, width=width)
                shape.insert_text(box.tl + (2, 9), text, fontsize=7, color=colour)
            shape.commit(overlay=True)
            target = out / f"{pdf.stem}-p{page_number}.png"
            page.get_pixmap(dpi=dpi).save(target)
            written.append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path, help="Folder holding the corpus PDFs (<name>.pdf).")
    parser.add_argument("--truth", type=Path, default=TRUTH)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--doc", action="append", default=None, help="Only this document (repeatable).")
    parser.add_argument("--dpi", type=int, default=100)
    arguments = parser.parse_args()
    try:
        by_doc = read_truth(arguments.truth)
    except CorpusError as exc:
        raise SystemExit(f"error: {exc}") from None
    arguments.out.mkdir(parents=True, exist_ok=True)
    count = 0
    for name, figures in sorted(by_doc.items()):
        if arguments.doc and name not in arguments.doc:
            continue
        pdf = arguments.corpus / f"{name}.pdf"
        if not pdf.is_file():
            print(f"error: {pdf}: not in the corpus folder (run bench/corpus/get.py)", file=sys.stderr)
            continue
        count += len(draw_document(pdf, figures, arguments.out, arguments.dpi))
    print(f"{count} page(s) drawn in {arguments.out}")


if __name__ == "__main__":
    main()
