"""Scanned pages recognise only the lines that can be captions or labels, and still find every caption."""

from __future__ import annotations

import difflib
from pathlib import Path

import cv2
import numpy as np
import pymupdf
import pytest

from pipeline.extract import ExtractOptions, extract_pdf, find_raster_figures
from pipeline.layout import caption_block_start
from pipeline.ocr import OcrOptions, create_ocr_engine
from pipeline.ocr_select import looks_like_label, read_selected_lines
from testbed.synthetic_images import cfp_image

BODY = "The retina was examined after dilation and the findings were noted at every visit of the patient."


def _png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()


def _scan(doc: pymupdf.Document, path: Path, dpi: int = 150) -> Path:
    """An image-only copy of `doc` (each page one grey raster), as a scanner makes it."""
    scanned = pymupdf.open()
    for page in doc:
        pixmap = page.get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY)
        new_page = scanned.new_page(width=page.rect.width, height=page.rect.height)
        new_page.insert_image(new_page.rect, stream=pixmap.tobytes("png"))
    scanned.save(path)
    return path


def _figure_page(path: Path, caption: str, caption_far: bool) -> Path:
    """A figure, body text, and a caption just below the figure or at the foot of the page."""
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    page.insert_image(pymupdf.Rect(150, 60, 445, 355), stream=_png(cfp_image(np.random.default_rng(3), 300)))
    y = 372
    if not caption_far:
        page.insert_text((72, y), caption, fontsize=10)
        y += 30
    for _ in range(14):
        page.insert_text((72, y), BODY, fontsize=10)
        y += 14
        if _ % 4 == 3:
            y += 10
    if caption_far:
        page.insert_text((72, y + 40), caption, fontsize=10)
    return _scan(doc, path)


def _page_pixels(pdf: Path) -> np.ndarray:
    doc = pymupdf.open(pdf)
    pixmap = pymupdf.Pixmap(doc, doc.load_page(0).get_images()[0][0])
    pixmap = pymupdf.Pixmap(pymupdf.csRGB, pixmap)
    return np.frombuffer(pixmap.samples, np.uint8).reshape(pixmap.height, pixmap.width, 3).copy()


def _caption_ids(run) -> set[str]:
    return {caption.figure_id for page in run.pages for caption in page.captions}


def test_label_starts_are_recognised_in_every_language_of_the_label_file():
    for start in ("Fig. 3", "FIGURE 12", "图7", "Abb. 2", "Supplementary Figure S1", "Rys. 4"):
        assert looks_like_label(start), start
    for start in ("The retina", "图像显示", "Fight"):
        assert not looks_like_label(start), start


@pytest.fixture(scope="module")
def scanned_page(tmp_path_factory):
    """Page 1 of the scanned sample book: a figure, its bilingual caption and body text."""
    from testbed.sample_atlas import generate_sample_atlas

    root = tmp_path_factory.mktemp("scanned")
    atlas = generate_sample_atlas(root, seed=0, books=["atlas-zh-scanned"])
    one = pymupdf.open()
    one.insert_pdf(pymupdf.open(atlas.pdfs[0]), from_page=0, to_page=0)
    path = root / "page1.pdf"
    one.save(path)
    return path


def test_selected_lines_are_fewer_than_whole_page_ocr_and_give_the_same_caption(scanned_page, tmp_path):
    engine = create_ocr_engine(OcrOptions())
    image = _page_pixels(scanned_page)
    boxes = engine.detect(image)
    figures = find_raster_figures(image, boxes, 60)
    read = read_selected_lines(engine, image, boxes, figures, 0.5)
    whole_page = [line for line in engine.recognise(image) if not any(
        f[0] <= (line.box[0] + line.box[2]) / 2 <= f[2] and f[1] <= (line.box[1] + line.box[3]) / 2 <= f[3] for f in figures
    )]
    assert figures and not read.fallback
    assert read.read_whole <= 0.5 * len(whole_page), (read.read_whole, len(whole_page))

    selected = extract_pdf(scanned_page, tmp_path / "selected", ExtractOptions())
    every = extract_pdf(scanned_page, tmp_path / "all", ExtractOptions(ocr=OcrOptions(lines="all")))
    assert _caption_ids(selected) == _caption_ids(every) == {"7-1"}
    for ours, full in zip(selected.pages[0].captions, every.pages[0].captions, strict=True):
        assert ours.style == full.style
        assert difflib.SequenceMatcher(None, ours.text, full.text).ratio() >= 0.95, (ours.text, full.text)
    assert len(selected.pages[0].column_bounds) == len(every.pages[0].column_bounds)


def test_a_caption_far_from_its_figure_is_found_by_its_line_start(tmp_path):
    pdf = _figure_page(tmp_path / "far.pdf", "Figure 4. Branch retinal vein occlusion with flame haemorrhages.", True)
    run = extract_pdf(pdf, tmp_path / "out", ExtractOptions())
    assert _caption_ids(run) == {"4"}
    caption = run.pages[0].captions[0]
    assert "retinal vein occlusion" in caption.text


def test_a_caption_the_selection_misses_is_found_by_the_fallback(tmp_path):
    """Line starts too narrow for any label: the page has a figure and no caption start was
    found, so every line is read and the caption far below the figure is found."""
    pdf = _figure_page(tmp_path / "fallback.pdf", "Extended Data Figure 4. Branch retinal vein occlusion.", True)
    engine = create_ocr_engine(OcrOptions())
    image = _page_pixels(pdf)
    boxes = engine.detect(image)
    read = read_selected_lines(engine, image, boxes, find_raster_figures(image, boxes, 60), 0.5, prefix_heights=1.5)
    assert read.fallback and read.read_whole == read.detected
    starts = [caption_block_start(line.text) for line in read.lines]
    assert [start.figure_id for start in starts if start] == ["4"]


def test_a_caption_below_its_figure_is_read_whole_without_the_fallback(tmp_path):
    pdf = _figure_page(tmp_path / "near.pdf", "Extended Data Figure 2. Central serous chorioretinopathy.", False)
    engine = create_ocr_engine(OcrOptions())
    image = _page_pixels(pdf)
    boxes = engine.detect(image)
    read = read_selected_lines(engine, image, boxes, find_raster_figures(image, boxes, 60), 0.5)
    assert not read.fallback and read.read_whole < read.detected
    assert any(line.text.startswith("Extended Data Figure 2") for line in read.lines)


def test_a_side_caption_is_found_by_its_start_and_text_beside_a_figure_is_read_at_its_start(tmp_path):
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    page.insert_image(pymupdf.Rect(72, 60, 300, 288), stream=_png(cfp_image(np.random.default_rng(5), 300)))
    caption = ["Figure 5. Macular hole with a", "cuff of subretinal fluid around", "its edge."]
    for row, text in enumerate(caption):
        page.insert_text((315, 80 + 14 * row), text, fontsize=10)
    beside = [f"the findings were noted at visit {n}" for n in range(1, 8)]
    for row, text in enumerate(beside):
        page.insert_text((315, 160 + 14 * row), text, fontsize=10)
    for row in range(8):
        page.insert_text((72, 330 + 14 * row), BODY, fontsize=10)
    pdf = _scan(doc, tmp_path / "side.pdf", dpi=200)

    run = extract_pdf(pdf, tmp_path / "out", ExtractOptions())
    assert _caption_ids(run) == {"5"}
    assert "subretinal fluid" in run.pages[0].captions[0].text

    engine = create_ocr_engine(OcrOptions())
    image = _page_pixels(pdf)
    boxes = engine.detect(image)
    read = read_selected_lines(engine, image, boxes, find_raster_figures(image, boxes, 60), 0.5)
    assert not read.fallback
    texts = [line.text for line in read.lines if line.text.startswith("the fin")]
    assert len(texts) == len(beside), [line.text for line in read.lines]
    assert not any("visit" in text for text in texts), texts  # only their starts were read
