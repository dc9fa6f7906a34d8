"""Layouts met in real PDFs (journal articles, software guides, LaTeX theses), drawn by hand:
each test builds one page with PyMuPDF and checks steps 1-2 pair it as printed."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pymupdf
import pytest

from pipeline.align import align_document
from pipeline.extract import extract_pdf
from pipeline.images import ImageBank
from testbed.synthetic_images import cfp_image, oct_image


def _png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()


def _build(doc: pymupdf.Document, tmp_path: Path):
    pdf = tmp_path / "page.pdf"
    doc.save(pdf)
    run = extract_pdf(pdf, tmp_path / "out")
    return align_document(run, ImageBank(Path(run.directory)))


def _chart(page: pymupdf.Page, rect: pymupdf.Rect, seed: int) -> None:
    """A line chart drawn as vectors: frame, ticks, a trace, and a column of tick values."""
    rng = np.random.default_rng(seed)
    shape = page.new_shape()
    shape.draw_rect(rect)
    shape.finish(color=(0, 0, 0), width=0.6)
    for i in range(1, 6):
        x = rect.x0 + i * rect.width / 6
        shape.draw_line((x, rect.y1), (x, rect.y1 - 3))
        shape.finish(color=(0, 0, 0), width=0.6)
    points = [(rect.x0 + t * rect.width / 40, rect.y0 + rect.height * (0.5 + 0.35 * np.sin(t / 4 + seed) * rng.uniform(0.8, 1)))
              for t in range(41)]
    shape.draw_polyline(points)
    shape.finish(color=(0, 0, 1), width=0.8)
    shape.commit()
    page.insert_textbox(pymupdf.Rect(rect.x0 - 16, rect.y0, rect.x0 - 1, rect.y1), "0.8\n0.4\n0\n-0.4\n-0.8", fontsize=5)


def test_clipped_image_whose_box_runs_over_its_caption_is_cut_there(tmp_path):
    """LaTeX `trim, clip` places an image in a box larger than what shows, over its caption."""
    image = np.full((400, 600, 3), 255, np.uint8)
    image[:260] = cfp_image(np.random.default_rng(1), 600)[:260]
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    page.insert_image(pymupdf.Rect(150, 200, 450, 400), stream=_png(image))
    page.insert_text((190, 350), "Figure 2.2 Optic disc of the left eye.", fontsize=10)
    run = _build(doc, tmp_path)
    assert [p.figure_id for p in run.pairs] == ["2-2"]
    pair = run.pairs[0]
    assert pair.caption_en == "Optic disc of the left eye."
    assert pair.bbox[3] <= 341  # the region ends above the caption line


def test_rule_under_a_side_caption_does_not_chain_the_figure_to_a_margin_logo(tmp_path):
    """A Nature-style page: caption in a narrow left column closed by a rule, a chart to its
    right, a publisher's logo in the margin below the rule's end."""
    doc = pymupdf.open()
    page = doc.new_page(width=594, height=783)
    for i, top in enumerate((70, 170, 270)):
        _chart(page, pymupdf.Rect(240, top, 540, top + 85), seed=i)
    page.insert_textbox(
        pymupdf.Rect(43, 62, 206, 330),
        "Figure 2 Field entrainment. (a) Extracellular potential for one neuron. (b) Amplitude and phase "
        "for stimulation frequencies of 1-100 Hz. (c) Cross correlation of the data shown in b.",
        fontsize=8,
    )
    shape = page.new_shape()
    shape.draw_line((43, 340), (206, 340))
    shape.finish(color=(0, 0, 0), width=0.5)
    shape.commit()
    logo = np.zeros((50, 50, 3), np.uint8)
    logo[10:40, 10:40] = (200, 30, 30)
    page.insert_image(pymupdf.Rect(9, 345, 32, 368), stream=_png(logo))
    page.insert_textbox(pymupdf.Rect(43, 400, 294, 700), "Body text of the article. " * 40, fontsize=9)
    run = _build(doc, tmp_path)
    figures = [r for page_record in run.pages for r in page_record.regions if r.bbox[2] - r.bbox[0] > 100]
    assert len(figures) == 1, [r.bbox for r in figures]
    assert figures[0].bbox[0] >= 215  # the chart and its tick values, not the margin
    assert {p.figure_id for p in run.pairs} | {r.figure_id for r in run.rejects if r.kind == "non_retinal_figure"} >= {"2"}
    assert not any(r.kind == "caption_without_figure" for r in run.rejects)


def test_stacked_images_each_introduced_by_the_paragraph_above(tmp_path):
    """A Markdown guide printed from a browser: a line per text block, each screenshot
    introduced by the paragraph above it, a section heading after the last one."""
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    rng = np.random.default_rng(3)
    intros = [
        ("Here is an example of a misaligned scan (subject 25, frame 50/97). We clearly see that the",
         "white dot is not vertically aligned with the peak of the outer segment layer."),
        ("Here is an example of a nicely aligned scan now, to compare (subject 15,", "frame 49/97)."),
    ]
    top = 100
    for first, second in intros:
        page.insert_text((103, top), first, fontsize=10)
        page.insert_text((103, top + 16), second, fontsize=10)
        page.insert_image(pymupdf.Rect(103, top + 22, 553, top + 162), stream=_png(oct_image(rng, 450)[:140]))
        top += 200
    page.insert_text((43, top), "Structure of the repository", fontsize=15.75)
    page.insert_text((43, top + 30), "Most of the following has already been covered above.", fontsize=10)
    run = _build(doc, tmp_path)
    captions = sorted((p.bbox[1], p.caption_en) for p in run.pairs)
    assert [c for _, c in captions] == [
        " ".join(intros[0]).rstrip("."),
        " ".join(intros[1]).rstrip("."),
    ] or [c for _, c in captions] == [" ".join(intros[0]), " ".join(intros[1])]
    assert all("Structure" not in (p.caption_en or "") for p in run.pairs)


def test_centred_caption_keeps_its_shorter_last_line(tmp_path):
    doc = pymupdf.open()
    page = doc.new_page(width=612, height=792)
    page.insert_image(pymupdf.Rect(122, 71, 492, 241), stream=_png(oct_image(np.random.default_rng(5), 370)[:170]))
    first = "Figure 2 Example B-Scan: edge detection result for the retinal pigment epithelium (blue). RANSAC fitted"
    second = "polynomial with L1 norm as error measurement (red)."
    width = pymupdf.get_text_length(first, fontsize=9)
    page.insert_text((306 - width / 2, 258), first, fontsize=9)
    page.insert_text((306 - pymupdf.get_text_length(second, fontsize=9) / 2, 271), second, fontsize=9)
    page.insert_text((71, 300), "Segmentation of the outer nuclear layer follows in the next section.", fontsize=11)
    run = _build(doc, tmp_path)
    assert [p.figure_id for p in run.pairs] == ["2"]
    assert run.pairs[0].caption_en.endswith("RANSAC fitted polynomial with L1 norm as error measurement (red).")


def test_shaded_code_listing_is_not_a_figure(tmp_path):
    """LaTeX `listings` shades each line of code with its own filled band: a box of text."""
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    page.insert_text((78, 150), "After training we can make predictions for unseen scans.", fontsize=10)
    shape = page.new_shape()
    for row in range(10):
        shape.draw_rect(pymupdf.Rect(78, 167 + 11 * row, 517, 178 + 11 * row))
        shape.finish(fill=(0.95, 0.95, 0.8), color=None)
    shape.draw_line((78, 167), (517, 167))
    shape.finish(color=(0, 0, 0), width=0.4)
    shape.commit()
    for row in range(10):
        page.insert_text((80, 176 + 11 * row), f"testFunc.options.value{row} = predict(files(end-{row}:end));", fontsize=7, fontname="cour")
    page.insert_text((78, 300), "We now configure the inference part and perform the segmentation.", fontsize=10)
    run = _build(doc, tmp_path)
    assert [r.bbox for page_record in run.pages for r in page_record.regions] == []
    assert run.pairs == []


def test_letters_under_the_panels_keep_the_rows_of_a_grid_together(tmp_path):
    """A 2x2 grid with `(a) (b)` printed under the top row: the rows are further apart than
    figures' parts usually are, and still one figure."""
    rng = np.random.default_rng(8)
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    boxes = [(136, 514, 256, 612), (264, 514, 459, 612), (136, 640, 333, 739), (341, 640, 459, 739)]
    for box in boxes:
        width = int((box[2] - box[0]) * 2)
        page.insert_image(pymupdf.Rect(box), stream=_png(cv2.resize(cfp_image(rng, 256), (width, int((box[3] - box[1]) * 2)))))
    page.insert_text((191, 624), "(a)", fontsize=9)
    page.insert_text((356, 624), "(b)", fontsize=9)
    page.insert_text((230, 751), "(c)", fontsize=9)
    page.insert_text((396, 751), "(d)", fontsize=9)
    page.insert_textbox(pymupdf.Rect(136, 760, 460, 800), "Figura 7.1: Edema macular. (a) Retinografía. (b) Angiografía. "
                        "(c) Retinografía tardía. (d) Angiografía tardía.", fontsize=8)
    run = _build(doc, tmp_path)
    assert sorted(p.panel for p in run.pairs) == ["A", "B", "C", "D"]
    assert {p.figure_id for p in run.pairs} == {"7-1"}


def test_caption_above_a_figure_at_the_top_of_a_page_is_that_figures(tmp_path):
    """Page 1 ends with a figure under its caption; page 2 opens with the next caption above the
    next figure: each figure keeps the caption right above it."""
    rng = np.random.default_rng(9)
    doc = pymupdf.open()
    first = doc.new_page(width=595, height=842)
    first.insert_textbox(pymupdf.Rect(56, 60, 540, 600), "The retina was examined after pupil dilation. " * 60, fontsize=10)
    first.insert_text((320, 690), "FIGURE 2-2. Choroidal neovascularisation.", fontsize=9)
    first.insert_image(pymupdf.Rect(320, 709, 520, 800), stream=_png(cv2.resize(cfp_image(rng, 256), (400, 182))))
    second = doc.new_page(width=595, height=842)
    second.insert_text((90, 80), "FIGURE 2-3. Diabetic macular oedema.", fontsize=9)
    second.insert_image(pymupdf.Rect(90, 97, 505, 414), stream=_png(cv2.resize(cfp_image(rng, 256), (830, 634))))
    second.insert_textbox(pymupdf.Rect(56, 434, 540, 800), "Treatment was started within two weeks. " * 40, fontsize=10)
    run = _build(doc, tmp_path)
    assert sorted((p.page, p.figure_id) for p in run.pairs) == [(1, "2-2"), (2, "2-3")]


BODY = ("The fellow eye remained normal throughout the follow-up period and no new lesions were seen. "
        "Visual acuity improved over the following months while the macular thickness decreased. ") * 3


def _columns_of_body(page: pymupdf.Page, top: float, bottom: float) -> None:
    for x0, x1 in ((60, 290), (305, 535)):
        page.insert_textbox(pymupdf.Rect(x0, top, x1, bottom), BODY, fontsize=9.5, fontname="tiro")


def test_a_caption_set_across_both_columns_under_a_wide_figure_is_read_on_into_the_right_one(tmp_path):
    rng = np.random.default_rng(4)
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    page.insert_image(pymupdf.Rect(60, 80, 535, 300), stream=_png(cfp_image(rng, (950, 440))))
    page.insert_textbox(pymupdf.Rect(60, 308, 290, 360), "Fig. 3. Colour fundus photograph of the left eye with "
                        "scattered haemorrhages in all four quadrants and a swollen optic disc, before the extra-",
                        fontsize=7.5, fontname="tiro")
    page.insert_textbox(pymupdf.Rect(305, 308, 535, 360), "cellular fluid was drained. Dot-blot haemorrhages predominate.",
                        fontsize=7.5, fontname="tiro")
    _columns_of_body(page, 380, 800)
    run = _build(doc, tmp_path)
    (pair,) = run.pairs
    assert pair.figure_id == "3"
    assert pair.caption_en.endswith("Dot-blot haemorrhages predominate.") and "extra" in pair.caption_en


def test_a_full_page_plate_labelled_only_fig_1_takes_its_caption_from_the_page_before(tmp_path):
    """Journals print a plate on a page of its own with just "Fig. 1." under it; the caption
    text closes the page before."""
    rng = np.random.default_rng(6)
    doc = pymupdf.open()
    first = doc.new_page(width=595, height=842)
    _columns_of_body(first, 70, 560)
    first.insert_textbox(pymupdf.Rect(305, 600, 535, 790), "Fig. 1. A: Colour fundus photograph with hard exudates. "
                         "B: OCT shows cystoid macular oedema.", fontsize=7.5, fontname="tiro")
    plate = doc.new_page(width=595, height=842)
    plate.insert_image(pymupdf.Rect(60, 80, 535, 400), stream=_png(cfp_image(rng, (950, 640))))
    plate.insert_image(pymupdf.Rect(60, 410, 535, 740), stream=_png(oct_image(rng, (950, 660))))
    plate.insert_text((280, 760), "Fig. 1.", fontsize=7.5, fontname="tiro")
    run = _build(doc, tmp_path)
    pairs = sorted(run.pairs, key=lambda p: p.panel or "")
    assert [(p.page, p.figure_id, p.panel) for p in pairs] == [(2, "1", "A"), (2, "1", "B")]
    assert "hard exudates" in pairs[0].caption_en and "cystoid" in pairs[1].caption_en


def test_screenshots_a_point_and_a_half_apart_are_panels_and_a_window_over_their_seam_makes_a_collage(tmp_path):
    """Three viewer screenshots in a row, 2 pt and 1.4 pt apart, are three panels (tiles of one
    picture abut); below, two windows with a dialogue laid over their seam are one picture."""
    rng = np.random.default_rng(9)
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    row = [(75, 71, 226, 194), (228, 71, 384.1, 194), (385.5, 71, 538, 194)]
    collage = [(128, 224, 305, 386), (306.6, 226, 485, 386), (246, 386, 367, 438)]
    for box in row + collage:
        width, height = int((box[2] - box[0]) * 2), int((box[3] - box[1]) * 2)
        page.insert_image(pymupdf.Rect(box), stream=_png(cv2.resize(oct_image(rng, 256), (width, height))))
    page.insert_text((140, 210), "Figure 9 From left to right: retina thickness, NFL thickness map and enface.", fontsize=8)
    page.insert_text((200, 455), "Figure 10 Exporting the segmentation results of the OCT volume.", fontsize=8)
    run = extract_pdf(_save(doc, tmp_path), tmp_path / "out")
    regions = sorted((r.bbox for r in run.pages[0].regions), key=lambda b: (b[1], b[0]))
    assert len(regions) == 4, regions
    assert [round(b[0]) for b in regions[:3]] == [75, 228, 386]
    assert regions[3] == pytest.approx((128, 224, 485, 438), abs=1)


def _save(doc: pymupdf.Document, tmp_path: Path) -> Path:
    pdf = tmp_path / "page.pdf"
    doc.save(pdf)
    return pdf


def test_a_figure_at_the_top_of_a_page_takes_the_caption_that_closes_the_page_before(tmp_path):
    """No label on the figure's own page: the caption that ends the page before is its, queued
    for a reviewer (a caption of the figure's own page would fit better)."""
    rng = np.random.default_rng(7)
    doc = pymupdf.open()
    first = doc.new_page(width=595, height=842)
    _columns_of_body(first, 70, 560)
    first.insert_textbox(pymupdf.Rect(305, 600, 535, 790), "Fig. 4. Colour fundus photograph of the right eye with "
                         "cotton-wool spots.", fontsize=7.5, fontname="tiro")
    second = doc.new_page(width=595, height=842)
    second.insert_image(pymupdf.Rect(60, 80, 535, 400), stream=_png(cfp_image(rng, (950, 640))))
    _columns_of_body(second, 430, 800)
    run = _build(doc, tmp_path)
    (pair,) = run.pairs
    assert (pair.page, pair.figure_id) == (2, "4") and "cotton-wool" in pair.caption_en
    assert any("end of the previous page" in reason for reason in pair.reasons)
