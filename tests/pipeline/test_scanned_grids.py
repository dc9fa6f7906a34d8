"""Grids as scans print them: gutters blurred to grey lines, black gutters between dark-ground
photographs, small panels abutting, rows of small panels, and a figure shared between a single
image and a stitched one; caption lines that OCR reads between labels and another column."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pymupdf
import pytest

from pipeline.align import align_document
from pipeline.extract import _ocr_blocks, extract_pdf, find_raster_figures
from pipeline.images import ImageBank
from pipeline.ocr import OcrLine
from pipeline.panels import split_panels
from testbed.synthetic_images import cfp_image, ffa_image, icga_image, oct_image, red_free_image, stitch_panels


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _jpeg(image: np.ndarray, quality: int = 80) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1])


def _scanned(image: np.ndarray, boxes, factor: float = 0.45, seed: int = 0):
    """Printed and scanned at a lower resolution: thin gutters blur into grey lines, noise, JPEG."""
    small = cv2.resize(cv2.GaussianBlur(image, (3, 3), 0.8), None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    noise = np.random.default_rng(seed).normal(0, 5, small.shape[:2])[:, :, None]
    scan = _jpeg(np.clip(small * 0.95 + 6 + noise, 0, 255).astype(np.uint8))
    return scan, [tuple(v * factor for v in box) for box in boxes]


def _stitched(makers, rows, widths, height, gutter, value=255, seed=0):
    rng = np.random.default_rng(seed)
    panels = [None] * len(makers)
    for row in rows:
        for index in row:
            panels[index] = makers[index](rng, (widths[index], height))
    return stitch_panels(panels, rows, gutter, value)


@pytest.mark.parametrize("seed", range(3))
def test_a_one_pixel_gutter_a_scan_has_blurred_grey_still_parts_the_panels(seed):
    """2x3 with a 1 px white gutter at print resolution: in the scan it is a grey line, darker
    than page-white; with the caption's panel count it parts the panels."""
    makers = [oct_image, cfp_image, ffa_image, oct_image, cfp_image, ffa_image]
    image, boxes = _stitched(makers, [[0, 1, 2], [3, 4, 5]], [820, 520, 441, 850, 460, 471], 420, 1, seed=seed)
    scan, truth = _scanned(image, boxes, seed=seed)
    found = split_panels(scan, expected=6)
    assert len(found) == 6, found
    assert all(_iou(t, b) >= 0.8 for t, b in zip(truth, found)), found


def test_a_grey_gutter_lighter_than_both_sides_all_along_splits_without_a_panel_count():
    """Angiograms on dark ground: the scanned 1 px gutter is lighter than both sides on every
    line, which no single photograph has, so it parts them even when the caption has no letters."""
    makers = [ffa_image, icga_image, ffa_image, icga_image]
    image, boxes = _stitched(makers, [[0, 1], [2, 3]], [520, 481, 500, 501], 460, 1, seed=7)
    scan, truth = _scanned(image, boxes, seed=7)
    found = split_panels(scan)
    assert len(found) == 4, found
    assert all(_iou(t, b) >= 0.8 for t, b in zip(truth, found)), found


def test_black_gutters_part_dark_ground_photographs_without_a_panel_count():
    """Angiograms on black ground, parted by black gutters a few pixels wide: no letters in the
    caption, still four panels (a single photograph's black surround is not such a gutter)."""
    makers = [ffa_image, icga_image, ffa_image, icga_image]
    image, truth = _stitched(makers, [[0, 1], [2, 3]], [260, 240, 250, 250], 230, 5, value=0, seed=4)
    found = split_panels(_jpeg(image))
    assert len(found) == 4, found
    assert all(_iou(t, b) >= 0.85 for t, b in zip(truth, found))
    for photo in (ffa_image(np.random.default_rng(5), (300, 260)), icga_image(np.random.default_rng(6), (280, 260))):
        assert len(split_panels(_jpeg(photo))) == 1


@pytest.mark.parametrize("seed", range(3))
def test_small_abutting_fundus_photographs_split_where_each_line_jumps(seed):
    """A 2x3 of small colour and red-free photographs with no gutter: beside a bright disc the
    seam's mean step does not stand out, but nearly every line crossing it jumps there."""
    makers = [ffa_image, cfp_image, cfp_image, cfp_image, ffa_image, red_free_image]
    image, boxes = _stitched(makers, [[0, 1, 2], [3, 4, 5]], [92, 90, 93, 98, 88, 89], 80, 0, seed=seed)
    found = split_panels(_jpeg(image, 90), expected=6)
    assert len(found) == 6, found
    assert all(_iou(t, b) >= 0.75 for t, b in zip(boxes, found)), found


def test_small_panels_in_a_row_on_a_scanned_page_are_figures_and_a_lone_speck_is_not():
    page = np.full((600, 500, 3), 250, np.uint8)
    rng = np.random.default_rng(2)
    for x in (40, 106, 172):  # three 60 px panels 6 px apart: each under the figure threshold
        page[50:110, x : x + 60] = cfp_image(rng, (60, 60))
    page[120:250, 40:232] = cfp_image(rng, (192, 130))  # the row below, above the threshold
    page[400:450, 300:350] = 40  # a lone small dark square: a stamp, not a panel
    found = find_raster_figures(page, [], min_side_px=80, panel_gap_px=30)
    assert [tuple(b) for b in found] == [(40, 50, 100, 110), (106, 50, 166, 110), (172, 50, 232, 110), (40, 120, 232, 250)]
    assert len(find_raster_figures(page, [], min_side_px=80)) == 1  # without a panel gap: only the large one


def _png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()


@pytest.mark.parametrize("gutter", [0, 2])
def test_a_figure_shared_by_a_single_image_and_a_stitched_pair_gets_every_panel(tmp_path: Path, gutter: int):
    """Panel A is its own image; B and C are one stitched image below it: three letters, two
    images, and the stitched one is the one split."""
    rng = np.random.default_rng(11)
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    page.insert_image(pymupdf.Rect(120, 80, 300, 230), stream=_png(cfp_image(rng, (360, 300))))
    pair, _ = stitch_panels([ffa_image(rng, (330, 300)), oct_image(rng, (580, 300))], [[0, 1]], gutter, 255)
    page.insert_image(pymupdf.Rect(120, 240, 120 + pair.shape[1] / 2, 240 + pair.shape[0] / 2), stream=_png(pair))
    page.insert_textbox(pymupdf.Rect(120, 400, 480, 460), "Figure 3.1. Central serous chorioretinopathy. A. Colour "
                        "fundus photograph. B. Fluorescein angiogram. C. OCT shows subretinal fluid.", fontsize=9)
    pdf = tmp_path / "page.pdf"
    doc.save(pdf)
    run = extract_pdf(pdf, tmp_path / "out")
    aligned = align_document(run, ImageBank(Path(run.directory)))
    pairs = sorted(aligned.pairs, key=lambda p: p.panel or "")
    assert [p.panel for p in pairs] == ["A", "B", "C"]
    assert pairs[1].bbox[2] <= 120 + 330 / 2 + 3 and pairs[2].bbox[0] >= 120 + 330 / 2 - 3
    assert all(p.bbox[1] >= 239 for p in pairs[1:])


def _line(text: str, box) -> OcrLine:
    return OcrLine(text=text, box=box, confidence=0.95)


def test_caption_lines_join_across_panel_labels_and_the_other_column_read_between_them():
    """Lines sort by height on the page: a side caption's lines interleave with the letters under
    the panels beside it and with the other column's paragraphs; the caption is still one block."""
    caption = ["FIGURE 4-1. Choroidal", "neovascularisation. A.", "ICGA shows a polypoidal", "lesion. B. Fundus",
               "photograph shows hard", "exudates. C. Colour", "fundus photograph. D.", "OCT shows fluid. E.",
               "Colour fundus photograph."]
    lines = [_line(text, (416, 125 + 23 * i, 610, 147 + 23 * i)) for i, text in enumerate(caption)]
    lines += [_line(f"({letter})", (150 + 90 * i, 205 + 110 * (i // 3), 178 + 90 * i, 228 + 110 * (i // 3))) for i, letter in enumerate("abcde")]
    for paragraph in range(6):  # the other column: short paragraphs, a blank line between them
        top = 120 + 60 * paragraph
        lines += [_line("The retina was examined after pupil dilation.", (650, top, 1140, top + 22)),
                  _line("Visual acuity improved over the months.", (650, top + 24, 1100, top + 46))]
    blocks = _ocr_blocks(lines, 1, 0.5, cv2.invertAffineTransform(np.eye(2, 3)))
    figure = [b for b in blocks if b.text.startswith("FIGURE")]
    assert len(figure) == 1 and figure[0].text.split("\n") == caption


def test_a_chinese_caption_with_latin_terms_and_unsteady_line_boxes_is_one_block():
    """Box heights from 21 to 31 px in one caption: the type's size is the characters' pitch.
    An English line right under it stays apart."""
    caption = [("图8.2糖尿病黄斑水肿。A.荧光素血管造影示晚", 26), ("期渗漏。B.无赤光眼底照相示神经纤维层缺损。", 31),
               ("C.ICGA示息肉样病灶。D.彩色眼底照相示散在", 21), ("膜下积液。B.ICGA示", 27), ("出血。E.OCT示视网膜下积液。", 26)]
    lines, top = [], 144
    for text, height in caption:  # one em is 20 px wide; Latin letters about half that
        width = sum(20 if ord(ch) > 0x2e80 else 11 for ch in text)
        lines.append(_line(text, (845, top, 845 + width, top + height)))
        top += height + 2
    english = _line("Figure 8.2 Diabetic macular oedema.", (845, top + 4, 1288, top + 30))
    blocks = _ocr_blocks(lines + [english], 1, 0.5, cv2.invertAffineTransform(np.eye(2, 3)))
    assert [b.text.split("\n") for b in blocks] == [[t for t, _ in caption], [english.text]]


def test_a_text_layer_block_of_panel_letters_does_not_cut_the_panels_of_a_scan(tmp_path: Path):
    """A scan with a text layer: the letters printed on three small panels in a row are one line
    of the layer ("A  B  C"), whose box runs across the top of the panels; masking text word by
    word leaves the panels whole."""
    rng = np.random.default_rng(3)
    boxes = [(60, 60, 140, 100), (146, 60, 226, 100), (232, 60, 312, 100)]
    caption = "Figure 2. Macular oedema. A. Colour fundus photograph. B. Red-free photograph. C. Angiogram."

    def spaced(letters: str) -> str:
        """The letters, each at its panel's left edge, as one run of text."""
        text = letters[0]
        for box, letter in zip(boxes[1:], letters[1:]):
            while boxes[0][0] + 3 + pymupdf.get_text_length(text + " ", "hebo", 11) <= box[0] + 3:
                text += " "
            text += letter
        return text

    def typeset(page: pymupdf.Page, render_mode: int) -> None:
        page.insert_text((boxes[0][0] + 3, boxes[0][1] + 11), spaced("ABC"), fontsize=11, fontname="hebo",
                         color=(1, 1, 1), render_mode=render_mode)
        page.insert_textbox(pymupdf.Rect(60, 110, 320, 160), caption, fontsize=9, render_mode=render_mode)

    printed = pymupdf.open()
    page = printed.new_page(width=595, height=842)
    for box in boxes:
        page.insert_image(pymupdf.Rect(box), stream=_png(cfp_image(rng, (160, 80))))
    typeset(page, 0)
    scan = page.get_pixmap(dpi=150)
    doc = pymupdf.open()
    layer = doc.new_page(width=595, height=842)
    layer.insert_image(layer.rect, stream=scan.tobytes("png"))
    typeset(layer, 3)  # the invisible text layer over the scan
    pdf = tmp_path / "scan.pdf"
    doc.save(pdf)
    run = extract_pdf(pdf, tmp_path / "out")
    regions = sorted(run.pages[0].regions, key=lambda r: r.bbox[0])
    assert len(regions) == 3, [r.bbox for r in regions]
    assert all(_iou(region.bbox, box) >= 0.85 for region, box in zip(regions, boxes)), [r.bbox for r in regions]
    aligned = align_document(run, ImageBank(Path(run.directory)))
    assert sorted(p.panel for p in aligned.pairs) == ["A", "B", "C"]


def test_ocr_caption_lines_taller_for_accents_and_brackets_stay_in_the_caption():
    caption = [("FIG. 1 - Occlusion de la", 22), ("veine centrale de la", 22), ("rétine. (a) Angiographie à", 29),
               ("la fluorescéine avec", 26), ("diffusion tardive. (b)", 29), ("Cliché en lumière", 27), ("anérythre.", 28)]
    lines, top = [], 127
    for text, height in caption:
        lines.append(_line(text, (421, top, 620, top + height)))
        top += 24
    blocks = _ocr_blocks(lines, 1, 0.5, cv2.invertAffineTransform(np.eye(2, 3)))
    assert [b.text.split("\n") for b in blocks] == [[t for t, _ in caption]]


def test_two_cropped_angiogram_fields_abutting_on_dark_ground_split_at_their_waist():
    """Two round angiogram fields, each cropped on the side they meet: their grey backgrounds
    barely differ at the seam, but the field narrows to a waist there."""
    rng = np.random.default_rng(12)
    left, right = ffa_image(rng, (300, 260)), ffa_image(rng, (300, 260))
    # one session's frames: the same background grey on both sides of the seam
    ground = lambda image: float(np.median(image[image > 25]))  # noqa: E731
    right = np.clip(right.astype(float) * ground(left) / ground(right), 0, 255).astype(np.uint8)
    image = np.ascontiguousarray(cv2.GaussianBlur(np.concatenate([left[:, :250], right[:, 45:]], axis=1), (5, 5), 1.2))
    found = split_panels(_jpeg(image), expected=2)
    assert len(found) == 2, found
    assert abs(found[0][2] - 250) <= 4 and abs(found[1][0] - 250) <= 4, found
    assert split_panels(_jpeg(left), expected=2) == [(0, 0, 300, 260)]  # one whole field has no waist


def test_body_text_a_line_under_a_one_line_caption_is_not_the_caption():
    """A one-line caption, then the paragraph that cites the figure, most of a line further down."""
    def line(text: str, x0: float, y0: float, y1: float) -> OcrLine:
        return _line(text, (x0, y0, x0 + sum(19 if ord(ch) > 0x2e80 else 10 for ch in text), y1))

    caption = line("图7.1糖尿病黄斑水肿。A.彩色眼底照相示散在出血。B.OCT示黄斑囊样水肿。", 188, 405, 431)
    body = [line("图7.1所示为病程一年的变化。散瞳后检查眼底，每次随访均记录检查结果。", 113, 456, 484),
            line("治疗在症状出现后两周内开始，对侧眼在随访期间始终正常。", 114, 488, 513)]
    blocks = _ocr_blocks([caption, *body], 1, 0.5, cv2.invertAffineTransform(np.eye(2, 3)))
    assert [b.text.split("\n") for b in blocks] == [[caption.text], [line.text for line in body]]
