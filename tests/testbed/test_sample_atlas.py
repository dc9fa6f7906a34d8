"""The sample atlases are the project's test data: they must be deterministic, self-consistent
and cover every layout the pipeline has to handle."""

from __future__ import annotations

import collections
import re
from pathlib import Path

import numpy as np
import pymupdf
import pytest
import typer
from typer.testing import CliRunner

from flows import commands_sample
from testbed import synthetic_images
from testbed.sample_atlas import (
    PanelTruth,
    SampleAtlas,
    canonical_caption,
    generate_long_book,
    generate_sample_atlas,
    load_sample_content,
    printed_caption_blocks,
    read_truth,
)

BORN_DIGITAL = ("atlas-zh-bilingual", "atlas-zh-only", "atlas-en")


@pytest.fixture(scope="module")
def atlas(tmp_path_factory: pytest.TempPathFactory) -> SampleAtlas:
    return generate_sample_atlas(tmp_path_factory.mktemp("atlas"), seed=0)


@pytest.fixture(scope="module")
def truth(atlas: SampleAtlas) -> list[PanelTruth]:
    return read_truth(atlas.truth_path)


def _page_texts(pdf: Path) -> list[str]:
    with pymupdf.open(pdf) as doc:
        return [page.get_text() for page in doc]


def _by_figure(rows: list[PanelTruth]) -> dict[tuple[str, str], list[PanelTruth]]:
    figures: dict[tuple[str, str], list[PanelTruth]] = collections.defaultdict(list)
    for row in rows:
        figures[(row.book, row.figure_id)].append(row)
    return figures


def test_same_seed_gives_identical_files_and_other_seeds_differ(atlas: SampleAtlas, tmp_path: Path) -> None:
    again = generate_sample_atlas(tmp_path / "again", seed=0)
    assert again.truth_path.read_bytes() == atlas.truth_path.read_bytes()
    for first, second in zip(atlas.pdfs, again.pdfs, strict=True):
        assert _page_texts(first) == _page_texts(second)
        assert first.read_bytes() == second.read_bytes()

    only_en = generate_sample_atlas(tmp_path / "only-en", seed=0, books=["atlas-en"])
    assert only_en.pdfs[0].read_bytes() == (atlas.out_dir / "atlas-en.pdf").read_bytes()

    other_seed = generate_sample_atlas(tmp_path / "seed1", seed=1, books=["atlas-en"])
    seed0_en = [row for row in read_truth(atlas.truth_path) if row.book == "atlas-en"]
    seed1_en = read_truth(other_seed.truth_path)
    assert [row.figure_id for row in seed0_en] == [row.figure_id for row in seed1_en]
    assert [row.bbox for row in seed0_en] != [row.bbox for row in seed1_en]
    assert other_seed.pdfs[0].read_bytes() != only_en.pdfs[0].read_bytes()


def test_unknown_book_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown sample books"):
        generate_sample_atlas(tmp_path, books=["atlas-missing"])


def test_boxes_lie_inside_pages_and_panels_inside_figures(atlas: SampleAtlas, truth: list[PanelTruth]) -> None:
    sizes = {}
    for pdf in atlas.pdfs:
        with pymupdf.open(pdf) as doc:
            sizes[pdf.name] = [(page.rect.width, page.rect.height) for page in doc]
    for row in truth:
        width, height = sizes[row.pdf][row.page - 1]
        x0, y0, x1, y1 = row.bbox
        fx0, fy0, fx1, fy1 = row.figure_bbox
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, row
        assert fx0 - 0.01 <= x0 and fy0 - 0.01 <= y0 and x1 <= fx1 + 0.01 and y1 <= fy1 + 0.01, row
        assert row.caption_page in (row.page, row.page + 1)
        assert len(sizes[row.pdf]) >= row.caption_page
    for (book, figure_id), rows in _by_figure(truth).items():
        assert len(rows) == rows[0].panel_count, (book, figure_id)
        assert [row.panel for row in rows] == (
            [None] if len(rows) == 1 else [chr(ord("A") + index) for index in range(len(rows))]
        )
        tolerance = 3.0 if rows[0].scanned else 0.0  # skewed boxes are widened to stay axis-aligned
        if len(rows) > 1:
            for first, second in zip(rows, rows[1:]):
                overlap_w = min(first.bbox[2], second.bbox[2]) - max(first.bbox[0], second.bbox[0])
                overlap_h = min(first.bbox[3], second.bbox[3]) - max(first.bbox[1], second.bbox[1])
                assert overlap_w <= tolerance or overlap_h <= tolerance, (book, figure_id)


def test_born_digital_pages_carry_the_caption_text(atlas: SampleAtlas, truth: list[PanelTruth]) -> None:
    texts = {pdf.stem: _page_texts(pdf) for pdf in atlas.pdfs}
    for (book, figure_id), rows in _by_figure(truth).items():
        if book not in BORN_DIGITAL:
            continue
        page_text = texts[book][rows[0].caption_page - 1]
        compact = re.sub(r"\s+", "", page_text)
        flowing = " ".join(page_text.split())
        for row in rows:
            if row.caption_zh is not None:
                assert f"图{figure_id}" in compact
                for piece in row.caption_zh.rstrip("。").split("。"):
                    assert piece in compact, (book, figure_id, piece)
            if row.caption_en is not None:
                assert f"Fig. {figure_id}" in flowing or f"FIGURE {figure_id}." in flowing
                for piece in row.caption_en.rstrip(".").split(". "):
                    assert piece in flowing, (book, figure_id, piece)
        if rows[0].caption_position == "next_page":
            assert f"{figure_id}" not in texts[book][rows[0].page - 1].split("\n")[0]


def test_scanned_book_has_no_text_layer_and_whole_page_images(atlas: SampleAtlas, truth: list[PanelTruth]) -> None:
    pdf = atlas.out_dir / "atlas-zh-scanned.pdf"
    with pymupdf.open(pdf) as doc:
        assert doc.page_count >= 4
        for page in doc:
            assert page.get_text().strip() == ""
            images = page.get_image_info()
            assert len(images) == 1
            placed = pymupdf.Rect(images[0]["bbox"])
            assert max(abs(a - b) for a, b in zip(placed, page.rect)) < 0.5
    scanned_rows = [row for row in truth if row.book == "atlas-zh-scanned"]
    assert scanned_rows and all(row.scanned for row in scanned_rows)
    assert not any(row.scanned for row in truth if row.book in BORN_DIGITAL)


def test_required_features_are_all_present(atlas: SampleAtlas, truth: list[PanelTruth]) -> None:
    pairs = [row for row in truth if row.pair]
    assert {True, False} <= {row.stitched for row in pairs}
    counts = {row.panel_count for row in truth}
    assert 1 in counts and max(counts) >= 6
    assert {"below", "beside", "next_page"} <= {row.caption_position for row in truth}
    assert {"CFP", "FFA", "OCT", "other"} <= {row.modality for row in truth}
    assert {"red-free", "ICGA"} <= {row.sublabel for row in truth}
    assert all(row.modality == "other" for row in truth if not row.pair)
    books_per_id = collections.defaultdict(set)
    for row in truth:
        books_per_id[row.figure_id].add(row.book)
    assert any(len(books) > 1 for books in books_per_id.values())
    assert any(re.fullmatch(r"\d+-\d+-\d+", row.figure_id) for row in truth)
    assert all(row.caption_en is None for row in truth if row.book == "atlas-zh-only")
    assert all(row.caption_zh is None for row in truth if row.book == "atlas-en")
    assert all(row.caption_zh.endswith("。") for row in truth if row.caption_zh)
    assert all(row.caption_en.endswith(".") and "  " not in row.caption_en for row in truth if row.caption_en)

    texts = {pdf.stem: "".join(_page_texts(pdf)) for pdf in atlas.pdfs}
    assert "A．" in texts["atlas-zh-bilingual"] and "，" in texts["atlas-zh-bilingual"]
    for label in ("左图：", "(a)", "A、"):
        assert label in texts["atlas-zh-only"]
    assert "A–C." in texts["atlas-en"]
    assert re.search(r"见图\d+-\d+|（图\d+-\d+）", texts["atlas-zh-bilingual"])
    assert re.search(r"\(see Figure \d+-\d+\)|\(Fig\. \d+-\d+\)", texts["atlas-en"])


def test_two_column_pages_logo_and_running_headers(atlas: SampleAtlas, truth: list[PanelTruth]) -> None:
    two_column_pages = 0
    logo_pages = 0
    for pdf in atlas.pdfs:
        if pdf.stem not in BORN_DIGITAL:
            continue
        spec = next(book for book in load_sample_content() if book.book == pdf.stem)
        with pymupdf.open(pdf) as doc:
            for page in doc:
                middle = page.rect.width / 2
                blocks = [block for block in page.get_text("blocks") if block[3] - block[1] > 30]
                left = [block for block in blocks if block[2] < middle]
                right = [block for block in blocks if block[0] > middle]
                two_column_pages += bool(len(left) >= 2 and len(right) >= 2)
                first_lines = page.get_text().split("\n")
                assert spec.header_even in first_lines or spec.header_odd in first_lines
                assert str(spec.first_page_number + page.number) in first_lines
                panels_here = [row for row in truth if row.pdf == pdf.name and row.page == page.number + 1]
                logo_pages += len(page.get_image_info()) > len(panels_here) and not any(r.stitched for r in panels_here)
    assert two_column_pages >= 3
    assert logo_pages >= 2


def test_captions_name_the_modality_of_their_panel(truth: list[PanelTruth]) -> None:
    cues = {
        "CFP": ("彩色眼底像", "无赤光", "Colour fundus", "Red-free", "photographs"),
        "FFA": ("荧光素", "FFA", "吲哚菁绿", "angiogram"),
        "OCT": ("OCT",),
    }
    for row in truth:
        if not row.pair:
            continue
        text = (row.caption_zh or "") + (row.caption_en or "")
        assert any(cue in text for cue in cues[row.modality]), row
        if row.sublabel == "ICGA":
            assert "ICGA" in text or "吲哚菁绿" in text or "Indocyanine" in text
        if row.sublabel == "red-free":
            assert "无赤光" in text or "Red-free" in text or "red-free" in text.lower()


def _panel_pixels(pdf: Path, row: PanelTruth) -> np.ndarray:
    x0, y0, x1, y1 = row.bbox
    inset_x, inset_y = (x1 - x0) * 0.15, (y1 - y0) * 0.15
    clip = pymupdf.Rect(x0 + inset_x, y0 + inset_y, x1 - inset_x, y1 - inset_y)
    with pymupdf.open(pdf) as doc:
        pixmap = doc[row.page - 1].get_pixmap(dpi=72, clip=clip)
    return np.frombuffer(pixmap.samples, dtype=np.uint8).reshape(pixmap.height, pixmap.width, pixmap.n)[:, :, :3]


def test_truth_boxes_hold_images_of_the_stated_modality(atlas: SampleAtlas, truth: list[PanelTruth]) -> None:
    for row in truth:
        if row.book not in BORN_DIGITAL or row.sublabel == "red-free":
            continue
        pixels = _panel_pixels(atlas.out_dir / row.pdf, row).astype(np.float32)
        colourfulness = float(np.abs(pixels[:, :, 0] - pixels[:, :, 2]).mean())
        if row.modality == "CFP":
            assert colourfulness > 40, row
        elif row.modality in ("FFA", "OCT"):
            assert colourfulness < 3, row


def test_synthetic_images_differ_by_modality_as_expected() -> None:
    rng = np.random.default_rng(7)
    cfp = synthetic_images.cfp_image(rng, 200).astype(np.float32)
    ffa = synthetic_images.ffa_image(rng, 200).astype(np.float32)
    icga = synthetic_images.icga_image(rng, 200).astype(np.float32)
    oct_scan = synthetic_images.oct_image(rng, (240, 120)).astype(np.float32)
    diagram = synthetic_images.diagram_image(rng, 200)
    logo = synthetic_images.logo_image(rng, (120, 40))
    assert cfp[:, :, 0].mean() > cfp[:, :, 2].mean() + 40
    for grey in (ffa, icga, oct_scan):
        assert np.array_equal(grey[:, :, 0], grey[:, :, 1]) and np.array_equal(grey[:, :, 1], grey[:, :, 2])
    assert icga.mean() < ffa.mean()
    assert ffa.max() > 200 and np.percentile(ffa, 50) < 90
    row_profile = oct_scan[:, :, 0].mean(axis=1)
    column_profile = oct_scan[:, :, 0].mean(axis=0)
    assert row_profile.std() > 3 * column_profile.std()
    assert (diagram > 240).mean() > 0.8 and (diagram < 60).any()
    assert logo.shape == (40, 120, 3)
    same_seed = [synthetic_images.ffa_image(np.random.default_rng(3), 64) for _ in range(2)]
    assert np.array_equal(same_seed[0], same_seed[1])


def test_stitch_panels_reports_panel_boxes_between_gutters() -> None:
    rng = np.random.default_rng(0)
    panels = [synthetic_images.cfp_image(rng, (60, 50)), synthetic_images.oct_image(rng, (100, 50)),
              synthetic_images.ffa_image(rng, (80, 40)), synthetic_images.oct_image(rng, (80, 40))]
    image, boxes = synthetic_images.stitch_panels(panels, [[0, 1], [2, 3]], gutter=5, gutter_value=0)
    assert image.shape == (95, 165, 3)
    assert boxes == [(0, 0, 60, 50), (65, 0, 165, 50), (0, 55, 80, 95), (85, 55, 165, 95)]
    assert (image[:50, 60:65] == 0).all() and (image[50:55, :] == 0).all() and (image[55:, 80:85] == 0).all()
    with pytest.raises(ValueError, match="one width"):
        synthetic_images.stitch_panels(panels[:3], [[0, 1], [2]], gutter=5, gutter_value=0)


def test_canonical_form_and_printed_styles() -> None:
    english = canonical_caption(["Title", "Shared text.", "Panel  text\nwrapped;"], "en")
    assert english == "Title. Shared text. Panel text wrapped."
    assert canonical_caption(["视网膜中央静脉阻塞", "彩色眼底像示\n视盘水肿；"], "zh") == "视网膜中央静脉阻塞。彩色眼底像示视盘水肿。"
    books = {book.book: book for book in load_sample_content()}
    left_right = books["atlas-zh-only"].figures["5-3-1"]
    [(language, text)] = printed_caption_blocks("5-3-1", left_right, "zh_only")
    assert language == "zh" and text.startswith("图5-3-1 ") and "左图：" in text and "；右图：" in text
    en_range = books["atlas-en"].figures["3-11"]
    [(language, text)] = printed_caption_blocks("3-11", en_range, "en_figure")
    assert text.startswith("FIGURE 3-11. Nonproliferative diabetic retinopathy. A–C. ")
    bilingual = printed_caption_blocks("3-12", books["atlas-zh-bilingual"].figures["3-12"], "bilingual")
    assert [language for language, _ in bilingual] == ["zh", "en"]
    assert bilingual[1][1].startswith("Fig. 3-12 Central retinal vein occlusion. ")


def test_long_book_reuses_images_and_has_truth(tmp_path: Path) -> None:
    book = generate_long_book(tmp_path / "long.pdf", pages=12, seed=0)
    assert book.pages == 12 and book.figures >= 9 and book.panels == len(book.truth)
    with pymupdf.open(book.path) as doc:
        assert doc.page_count == 12
        xrefs = {image[0] for page in doc for image in page.get_images()}
        placed = sum(len(page.get_image_info()) for page in doc)
        assert len(xrefs) < placed
        for row in book.truth:
            page = doc[row.page - 1]
            assert pymupdf.Rect(row.bbox) in page.rect
            assert f"图{row.figure_id}" in re.sub(r"\s+", "", page.get_text())
    again = generate_long_book(tmp_path / "again.pdf", pages=12, seed=0)
    assert again.path.read_bytes() == book.path.read_bytes()


def test_cli_writes_the_atlas_and_prints_a_summary(tmp_path: Path) -> None:
    app = typer.Typer()
    commands_sample.register(app)

    @app.callback()
    def main() -> None:
        """Test entry point."""

    result = CliRunner().invoke(app, ["sample-atlas", str(tmp_path), "--seed", "3", "--book", "atlas-zh-only"])
    assert result.exit_code == 0, result.output
    assert "atlas-zh-only" in result.output and "total" in result.output
    rows = read_truth(tmp_path / "truth.jsonl")
    assert rows and {row.book for row in rows} == {"atlas-zh-only"}
