"""The varied atlas is the measuring stick for layouts the sample atlas never has: it must be
seeded, truthful about every layout feature it draws, and actually print what the truth says."""

from __future__ import annotations

import collections
from pathlib import Path

import cv2
import numpy as np
import pymupdf
import pytest
import typer
from typer.testing import CliRunner

from flows import commands_sample
from testbed.sample_atlas import generate_sample_atlas
from testbed.scoring import same_figure_id, score_layouts
from testbed.synthetic_images import cfp_image
from testbed.varied_atlas import (
    LAYOUT_FEATURES,
    VariedAtlasOptions,
    generate_varied_atlas,
    read_varied_truth,
)

QUIET = {"list_of_figures_share": 0.0, "body_label_share": 0.0, "two_figure_share": 0.0, "non_retinal_share": 0.0}
BORN_DIGITAL = {"scan_kind": "born_digital"}


def _one(tmp_path: Path, fixed: dict, seed: int = 0, **options) -> tuple:
    settings = {**QUIET, "books": 1, "pages_per_book": 1, **options}
    atlas = generate_varied_atlas(tmp_path, seed=seed, options=VariedAtlasOptions(fixed={**BORN_DIGITAL, **fixed}, **settings))
    doc = pymupdf.open(atlas.pdfs[0])
    return atlas, doc


def _figures(rows) -> dict:
    figures = collections.defaultdict(list)
    for row in rows:
        figures[(row.pdf, row.figure_id)].append(row)
    return figures


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    options = VariedAtlasOptions(books=2, pages_per_book=2, scanned_share=0.5)
    first = generate_varied_atlas(tmp_path / "a", seed=4, options=options)
    again = generate_varied_atlas(tmp_path / "b", seed=4, options=options)
    other = generate_varied_atlas(tmp_path / "c", seed=5, options=options)
    assert first.truth_path.read_bytes() == again.truth_path.read_bytes()
    assert first.traps_path.read_bytes() == again.traps_path.read_bytes()
    for one, two in zip(first.pdfs, again.pdfs, strict=True):
        assert one.read_bytes() == two.read_bytes()
    assert first.truth_path.read_bytes() != other.truth_path.read_bytes()
    assert read_varied_truth(first.truth_path) == first.truth


def test_bundled_sample_atlas_is_unchanged_by_the_varied_generator(tmp_path: Path) -> None:
    generate_varied_atlas(tmp_path / "varied", seed=0, options=VariedAtlasOptions(books=1, pages_per_book=1))
    one = generate_sample_atlas(tmp_path / "one", seed=0, books=["atlas-en"])
    two = generate_sample_atlas(tmp_path / "two", seed=0, books=["atlas-en"])
    assert one.pdfs[0].read_bytes() == two.pdfs[0].read_bytes()


def test_every_feature_value_is_drawn_over_seeds_and_lands_in_the_truth(tmp_path: Path) -> None:
    rows = []
    for seed in range(6):
        options = VariedAtlasOptions(books=3, pages_per_book=3, non_retinal_share=0.3)
        rows += generate_varied_atlas(tmp_path / f"s{seed}", seed=seed, options=options).truth
    seen = {feature: {str(getattr(row, feature)) for row in rows} for feature in LAYOUT_FEATURES}
    assert seen["caption_position"] == {"below", "above", "beside_same_column", "other_column"}
    assert seen["grid"] == {"1", "1x2", "1+2", "2x2", "3+2", "2x3"}
    assert seen["embedding"] == {"separate", "stitched", "vector"}
    assert seen["label_style"] == {"in_image", "white_over", "under_panel", "absent"}
    assert seen["scan_kind"] == {"born_digital", "image_only", "ocr_layer"}
    assert seen["caption_width"] == {"figure", "text_block", "side"}
    assert seen["placement"] == {"top", "bottom"}
    assert seen["retinal"] == {"True", "False"}
    assert seen["figures_on_page"] == {"1", "2"} and seen["columns"] == {"1", "2"}
    assert {"0", "1", "6"} <= seen["stitched_gutter_px"]
    assert len(seen["numbering_style"]) >= 5
    for row in rows:
        assert all(getattr(row, feature) is not None or feature == "stitched_gutter_px" for feature in LAYOUT_FEATURES)
        assert row.pair == (row.retinal and row.modality != "other")


def test_boxes_inside_the_page_and_panels_inside_their_figure(tmp_path: Path) -> None:
    atlas = generate_varied_atlas(tmp_path, seed=2, options=VariedAtlasOptions(books=3, pages_per_book=3))
    for (pdf, _), panels in _figures(atlas.truth).items():
        for panel in panels:
            x0, y0, x1, y1 = panel.bbox
            assert 0 <= x0 < x1 <= 595 and 0 <= y0 < y1 <= 842, panel
            fx0, fy0, fx1, fy1 = panel.figure_bbox
            assert fx0 - 1 <= x0 and fy0 - 1 <= y0 and x1 <= fx1 + 1 and y1 <= fy1 + 1
        assert sorted(p.panel_index for p in panels) == list(range(panels[0].panel_count))


@pytest.mark.parametrize(
    "style,label",
    [("figure_plain", "Figure 3"), ("fig_dotted", "Fig. 4.3"), ("zh_dotted", "图 4.3"), ("figura_colon", "Figura 4.3:"),
     ("abbildung", "Abbildung 3"), ("fig_caps_dash", "FIG. 3 –"), ("figure_dashed", "FIGURE 4-3.")],
)
def test_numbering_styles_are_printed(tmp_path: Path, style: str, label: str) -> None:
    atlas, doc = _one(tmp_path, {"numbering_style": style}, pages_per_book=3)
    text = "".join(page.get_text() for page in doc).replace("\n", " ")
    number = atlas.truth[0].figure_id
    assert label.split()[0] == atlas.truth[0].figure_label.split()[0]
    assert atlas.truth[0].figure_label.endswith(number)
    assert all(row.figure_label in text for row in atlas.truth)
    assert all(row.caption_full.startswith(row.figure_label) for row in atlas.truth)
    separator = label[len(label.rstrip(".:– ")):].strip()
    if separator:
        assert atlas.truth[0].caption_full[len(atlas.truth[0].figure_label):].strip().startswith(separator)
    assert {row.language for row in atlas.truth} == {
        "figure_plain": {"en"}, "fig_dotted": {"en"}, "zh_dotted": {"zh"}, "figura_colon": {"es"},
        "abbildung": {"de"}, "fig_caps_dash": {"fr"}, "figure_dashed": {"en"},
    }[style]


def _caption_and_figure(row) -> tuple:
    return pymupdf.Rect(row.caption_bbox), pymupdf.Rect(row.figure_bbox)


@pytest.mark.parametrize("position", ["below", "above", "beside_same_column", "other_column"])
def test_caption_positions_are_where_the_truth_says(tmp_path: Path, position: str) -> None:
    fixed = {"caption_position": position, "columns": 2 if position == "other_column" else 1}
    atlas, doc = _one(tmp_path, fixed, pages_per_book=2)
    for row in atlas.truth:
        caption, figure = _caption_and_figure(row)
        if position == "below":
            assert caption.y0 >= figure.y1
        elif position == "above":
            assert caption.y1 <= figure.y0
        elif position == "beside_same_column":
            assert caption.x0 >= figure.x1 and caption.y0 < figure.y1
        else:
            assert figure.x1 < 300 < caption.x0 and row.caption_column == "other"
        words = doc[row.page - 1].get_text("text", clip=caption + (-1, -1, 1, 1))
        assert row.figure_label.split()[0] in words


@pytest.mark.parametrize("gutter", [0, 1, 3, 6])
def test_stitched_grids_are_one_image_with_the_given_gutter(tmp_path: Path, gutter: int) -> None:
    atlas, doc = _one(tmp_path, {"embedding": "stitched", "stitched_gutter_px": gutter, "grid": "2x2"})
    page = doc[0]
    assert len(page.get_images()) == 1
    rows = atlas.truth
    assert {row.stitched_gutter_px for row in rows} == {gutter} and all(row.stitched for row in rows)
    (xref, *_), = page.get_images()
    pixels = pymupdf.Pixmap(doc, xref)
    image = np.frombuffer(pixels.samples, dtype=np.uint8).reshape(pixels.height, pixels.width, pixels.n)
    a, b = rows[0].bbox, rows[1].bbox
    scale = pixels.width / (rows[0].figure_bbox[2] - rows[0].figure_bbox[0])
    seam = int(round((a[2] - rows[0].figure_bbox[0]) * scale))
    row_bottom = int((a[3] - rows[0].figure_bbox[1]) * scale)
    column = image[2 : row_bottom - 2, seam + 1 : seam + gutter - 1, :3]
    if gutter >= 3:
        assert column.mean() > 200, "a white gutter between the panels"
    assert b[0] - a[2] == pytest.approx(gutter / scale, abs=1.0)


@pytest.mark.parametrize("style", ["in_image", "white_over", "under_panel", "absent"])
def test_panel_label_styles(tmp_path: Path, style: str) -> None:
    atlas, doc = _one(tmp_path, {"label_style": style, "grid": "1x2", "embedding": "separate"})
    page = doc[0]
    spans = [s for b in page.get_text("dict")["blocks"] for line in b.get("lines", []) for s in line["spans"]]
    for row in atlas.truth:
        panel = pymupdf.Rect(row.bbox)
        inside = [s for s in spans if pymupdf.Rect(s["bbox"]).intersects(panel) and s["text"].strip()]
        under = [s for s in spans if s["text"].strip() == f"({row.panel_index and 'b' or 'a'})"]
        if style == "white_over":
            assert [s["text"] for s in inside] == [row.panel] and inside[0]["color"] == 0xFFFFFF
        elif style == "under_panel":
            assert under and pymupdf.Rect(under[0]["bbox"]).y0 >= panel.y1 - 1
        else:
            assert not inside and not under
        assert (row.panel is None) == (style == "absent")


def test_vector_figures_are_drawings_without_images_and_not_pairs(tmp_path: Path) -> None:
    atlas, doc = _one(tmp_path, {"embedding": "vector", "retinal": False})
    page = doc[0]
    figure = pymupdf.Rect(atlas.truth[0].figure_bbox)
    assert not [img for img in page.get_image_info() if pymupdf.Rect(img["bbox"]).intersects(figure)]
    assert sum(pymupdf.Rect(d["rect"]).intersects(figure) for d in page.get_drawings()) >= 3
    assert all(row.vector and not row.retinal and not row.pair for row in atlas.truth)


def test_scanned_page_with_an_invisible_ocr_text_layer(tmp_path: Path) -> None:
    atlas, doc = _one(tmp_path, {"scan_kind": "ocr_layer"})
    page = doc[0]
    (image,) = page.get_image_info()
    assert pymupdf.Rect(image["bbox"]).contains(page.rect + (1, 1, -1, -1))
    trace = page.get_texttrace()
    assert trace and {span["type"] for span in trace} == {3}, "all text is invisible (render mode 3)"
    assert atlas.truth[0].figure_label.split()[0] in page.get_text()
    assert all(row.scanned and row.scan_kind == "ocr_layer" for row in atlas.truth)


def test_image_only_scan_has_no_text_and_close_separate_panels(tmp_path: Path) -> None:
    atlas, doc = _one(tmp_path, {"scan_kind": "image_only", "embedding": "separate", "grid": "1x2"})
    assert doc[0].get_text().strip() == "" and len(doc[0].get_images()) == 1
    assert all(2.0 <= row.panel_gap_pt <= 6.0 for row in atlas.truth)


def test_list_of_figures_and_body_label_traps(tmp_path: Path) -> None:
    atlas, doc = _one(tmp_path, {}, pages_per_book=2, list_of_figures_share=1.0, body_label_share=1.0)
    kinds = collections.Counter(trap.kind for trap in atlas.traps)
    assert kinds["list_of_figures"] == len({row.figure_id for row in atlas.truth}) and kinds["body_label"] == 2
    first = doc[0].get_text()
    assert "List of Figures" in first or "插图目录" in first or "Índice" in first or "Abbildungsverzeichnis" in first or "Table" in first
    assert all(row.page >= 2 for row in atlas.truth), "figures come after the list of figures"
    for trap in atlas.traps:
        if trap.kind == "body_label":
            lines = [line.strip() for line in doc[trap.page - 1].get_text().splitlines()]
            assert trap.text.strip() in lines


def test_two_figures_on_one_page_and_non_retinal_figures(tmp_path: Path) -> None:
    atlas, _ = _one(tmp_path, {"figures_on_page": 2}, non_retinal_share=0.5, pages_per_book=3)
    by_page = collections.defaultdict(set)
    for row in atlas.truth:
        by_page[row.page].add(row.figure_id)
    assert all(len(ids) == 2 for ids in by_page.values())
    boxes = {(row.page, row.figure_id): pymupdf.Rect(row.figure_bbox) for row in atlas.truth}
    for page in by_page:
        first, second = (boxes[(page, fid)] for fid in sorted(by_page[page]))
        assert not first.intersects(second)


def test_real_images_from_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "real"
    rng = np.random.default_rng(0)
    for name in ("cfp", "ffa", "oct", "other"):
        (folder / name).mkdir(parents=True)
        cv2.imwrite(str(folder / name / "one.jpg"), cfp_image(rng, 64)[:, :, ::-1])
    atlas, doc = _one(tmp_path / "out", {"grid": "1"}, image_dir=folder)
    assert doc[0].get_images()
    with pytest.raises(ValueError, match="no images"):
        generate_varied_atlas(tmp_path / "bad", options=VariedAtlasOptions(image_dir=tmp_path / "empty"))


def test_unknown_fixed_feature_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown fixed layout features"):
        generate_varied_atlas(tmp_path, options=VariedAtlasOptions(fixed={"colour": "red"}))


def test_cli_writes_varied_books(tmp_path: Path) -> None:
    app = typer.Typer()
    commands_sample.register(app)
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(app, ["sample-atlas", str(tmp_path), "--varied", "--books", "2", "--pages", "1", "--seed", "7"])
    assert result.exit_code == 0, result.output
    assert "2 books" in result.output and "caption_position" in result.output
    assert len(list(tmp_path.glob("*.pdf"))) == 2 and read_varied_truth(tmp_path / "truth.jsonl")


def test_scoring_by_feature_on_the_truth_itself(tmp_path: Path) -> None:
    """Pairs that are exactly the truth score 1.0 everywhere; non-retinal ones count against precision."""
    from foundation.records import Pair

    atlas = generate_varied_atlas(tmp_path, seed=1, options=VariedAtlasOptions(books=2, pages_per_book=2, non_retinal_share=0.6))
    pairs = [
        Pair(pair_id=f"{t.book}/{t.figure_id}/{t.panel or '-'}", book=t.book, source_pdf=t.pdf, source_pdf_sha256="0" * 64,
             page=t.page, bbox=t.bbox, figure_id=t.figure_id.replace(".", "-"), panel=t.panel, panel_index=t.panel_index,
             image_sha256="0" * 64, image_file="x.png", caption_en=t.caption_en, caption_zh=t.caption_zh,
             modality=t.modality if t.pair else "CFP", review_status="auto_accepted")
        for t in atlas.truth
    ]
    retinal_only = score_layouts(atlas.truth, pairs=[p for p, t in zip(pairs, atlas.truth) if t.pair])
    overall = retinal_only["overall"]
    assert overall["f1"] == 1.0 and overall["caption_ge_threshold"] == 1.0 and overall["auto_accepted_precision"] == 1.0
    for values in retinal_only["by_feature"].values():
        assert all(row["recall"] in (1.0, None) for row in values.values())
    with_others = score_layouts(atlas.truth, pairs=pairs)["overall"]
    non_retinal = sum(not t.pair for t in atlas.truth)
    assert non_retinal and with_others["non_retinal_paired"] == non_retinal and with_others["precision"] < 1.0
    assert same_figure_id("3.12", "3-12") and not same_figure_id("3.12", "3-1")


def test_letters_under_stitched_panels_print_in_a_band_the_image_leaves(tmp_path: Path) -> None:
    """Under each row of a stitched grid, the image leaves white room for the letters, which
    therefore print on white and over no panel."""
    atlas, doc = _one(tmp_path, {"embedding": "stitched", "label_style": "under_panel", "grid": "2x2"})
    page = doc[0]
    spans = [s for b in page.get_text("dict")["blocks"] for line in b.get("lines", []) for s in line["spans"]]
    letters = [s for s in spans if s["text"].strip() in ("(a)", "(b)", "(c)", "(d)")]
    assert len(letters) == 4
    panels = [pymupdf.Rect(row.bbox) for row in atlas.truth]
    for span in letters:
        box = pymupdf.Rect(span["bbox"])
        assert not any((box & panel).get_area() > 0.1 * box.get_area() for panel in panels), span["text"]
    assert panels[2].y0 - panels[0].y1 >= 10.0
