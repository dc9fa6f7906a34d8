"""Step 2 on hand-made pages: layout decides the pairs, printed letters order grid panels."""

from __future__ import annotations

import cv2
import numpy as np
import pymupdf

from pathlib import Path

from pipeline.align import AlignOptions, align_document
from pipeline.extract import extract_pdf
from pipeline.images import ImageBank
from pipeline.ocr import lazy_line_reader
from testbed.synthetic_images import cfp_image, draw_panel_label, ffa_image, oct_image


def _png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()


def _column_major_grid_pdf(path) -> dict[str, tuple[float, float]]:
    """A 2x2 figure lettered down the columns (A above B, C above D), caption below."""
    rng = np.random.default_rng(7)
    makers = {"A": cfp_image, "B": ffa_image, "C": oct_image, "D": cfp_image}
    origins = {"A": (80, 80), "B": (80, 246), "C": (256, 80), "D": (256, 246)}
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    for letter, (x, y) in origins.items():
        image = makers[letter](rng, 320)
        draw_panel_label(image, letter)
        page.insert_image(pymupdf.Rect(x, y, x + 160, y + 160), stream=_png(image))
    page.insert_textbox(
        pymupdf.Rect(80, 415, 520, 480),
        "FIGURE 2-1. Serial images. A. Colour photograph at baseline. B. Angiogram at baseline. "
        "C. OCT at baseline. D. Colour photograph a year later.",
        fontsize=9,
    )
    doc.save(path)
    return origins


def _align(tmp_path, options: AlignOptions | None = None):
    run = extract_pdf(tmp_path / "grid.pdf", tmp_path / "out")
    return align_document(run, ImageBank(Path(run.directory)), options, read_line=lazy_line_reader())


def test_grid_panels_follow_their_printed_letters(tmp_path):
    origins = _column_major_grid_pdf(tmp_path / "grid.pdf")
    run = _align(tmp_path)
    pairs = run.pairs
    assert [r.kind for r in run.rejects] == []
    by_panel = {pair.panel: pair for pair in pairs}
    assert sorted(by_panel) == ["A", "B", "C", "D"]
    for letter, (x, y) in origins.items():
        assert by_panel[letter].bbox[:2] == (x, y), letter
    assert by_panel["B"].caption_en == "Serial images. Angiogram at baseline."
    assert all("printed letters" in " ".join(pair.reasons) for pair in pairs)


def test_without_label_reading_a_grid_falls_back_to_reading_order(tmp_path):
    _column_major_grid_pdf(tmp_path / "grid.pdf")
    run = extract_pdf(tmp_path / "grid.pdf", tmp_path / "out")
    pairs = align_document(run, ImageBank(Path(run.directory)), AlignOptions(read_panel_labels=False)).pairs
    by_panel = {pair.panel: pair.bbox[:2] for pair in pairs}
    assert by_panel["B"] == (256, 80), "row-major reading order puts B top-right"


def test_caption_beside_and_next_page_and_two_books_never_collide(sample_build):
    _, record, _ = sample_build
    reasons = " ".join(r for pair in record.pairs for r in pair.reasons)
    assert "caption beside the figure" in reasons
    assert "caption at the top of the next page" in reasons
    ids = [pair.pair_id for pair in record.pairs]
    assert len(ids) == len(set(ids))


def test_reading_a_label_leaves_the_shared_ocr_engine_able_to_read_pages():
    from pipeline.ocr import create_ocr_engine

    engine = create_ocr_engine()
    letter = np.full((60, 60, 3), 255, np.uint8)
    cv2.putText(letter, "B", (12, 48), cv2.FONT_HERSHEY_DUPLEX, 1.5, (0, 0, 0), 3)
    assert engine.recognise_line(letter)[0].upper() == "B"
    page = np.full((120, 700, 3), 255, np.uint8)
    cv2.putText(page, "FIGURE 3-12. Macular hole", (10, 70), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (0, 0, 0), 2)
    assert any("3-12" in line.text for line in engine.recognise(page))
