"""Step 1 on the generated sample atlas: figure regions, caption candidates, bad inputs."""

from __future__ import annotations

from pathlib import Path

import pymupdf
import pytest

from foundation.documents import read_document_run
from pipeline.extract import ExtractOptions, extract_pdf, extract_pdfs
from foundation.records import Status
from testbed.scoring import extraction_recall


def test_regions_cover_truth_panels(sample_extraction, sample_truth):
    _, _, extractions = sample_extraction
    report = extraction_recall(sample_truth, extractions.values())
    assert report["recall"]["born_digital"] >= 0.99, report["missed_panels"]
    assert report["recall"]["scanned"] >= 0.95, report["missed_panels"]


def test_every_truth_figure_id_is_a_caption_candidate(sample_extraction, sample_truth):
    _, _, extractions = sample_extraction
    report = extraction_recall(sample_truth, extractions.values())
    assert report["caption_ids_missing"] == []


def test_scanned_pages_are_ocrd_and_deskewed(sample_extraction):
    _, _, extractions = sample_extraction
    scanned = extractions["atlas-zh-scanned"]
    assert scanned.ocr_engine and scanned.ocr_engine.startswith("rapidocr")
    assert all(page.scanned for page in scanned.pages)
    assert all(block.source == "ocr" for page in scanned.pages for block in page.blocks)
    assert any(abs(page.skew_degrees) >= 0.3 for page in scanned.pages)
    assert all(abs(page.skew_degrees) <= 1.6 for page in scanned.pages)
    born_digital = extractions["atlas-en"]
    assert born_digital.ocr_engine is None and not any(page.scanned for page in born_digital.pages)


def test_layout_records_columns_headers_and_reading_order(sample_extraction):
    _, _, extractions = sample_extraction
    pages = [page for extraction in extractions.values() for page in extraction.pages]
    assert any(len(page.column_bounds) == 2 for page in pages), "a two-column page is detected"
    roles = {block.role for page in pages for block in page.blocks}
    assert {"header", "footer", "caption", "body"} <= roles
    for page in pages:
        assert [block.order for block in page.blocks] == list(range(len(page.blocks)))
        for caption in page.captions:
            assert caption.block_orders and caption.column in range(-1, len(page.column_bounds))


def test_body_citations_are_not_captions(sample_extraction):
    _, _, extractions = sample_extraction
    for extraction in extractions.values():
        for page in extraction.pages:
            for caption in page.captions:
                assert not caption.text.lstrip().startswith(("见", "(", "（", "see")), caption.text


def test_bilingual_captions_give_both_styles(sample_extraction):
    _, _, extractions = sample_extraction
    styles = {c.style for page in extractions["atlas-zh-bilingual"].pages for c in page.captions}
    assert styles == {"zh", "en_fig"}
    assert {c.style for page in extractions["atlas-en"].pages for c in page.captions} == {"en_figure"}


def test_image_files_are_content_addressed(sample_extraction):
    _, _, extractions = sample_extraction
    import hashlib

    for extraction in extractions.values():
        for page in extraction.pages:
            for region in page.regions:
                data = (Path(extraction.directory) / region.image_file).read_bytes()
                assert hashlib.sha256(data).hexdigest() == region.image_sha256
                assert data[:8] == b"\x89PNG\r\n\x1a\n"


def test_image_strips_are_merged_into_one_region(tmp_path):
    doc = pymupdf.open()
    page = doc.new_page(width=400, height=500)
    pix = pymupdf.Pixmap(pymupdf.csRGB, pymupdf.IRect(0, 0, 200, 40), False)
    for k in range(5):
        pix.set_rect(pix.irect, (40 * k, 100, 200 - 30 * k))
        page.insert_image(pymupdf.Rect(50, 50 + 40 * k, 250, 90 + 40 * k), pixmap=pix)
    page.insert_image(pymupdf.Rect(300, 50, 310, 60), pixmap=pix)  # a decoration
    page.insert_text((50, 280), "FIGURE 1-1. Strips of one picture.", fontsize=9)
    doc.save(tmp_path / "strips.pdf")
    result = extract_pdf(tmp_path / "strips.pdf", tmp_path / "out")
    (region,) = result.pages[0].regions
    assert region.origin == "merged" and region.parts == 5
    assert region.bbox == pytest.approx((50, 50, 250, 250), abs=0.5)
    assert [c.figure_id for c in result.pages[0].captions] == ["1-1"]


def _bad_inputs(directory: Path, good: Path) -> dict[str, str]:
    data = good.read_bytes()
    (directory / "not-a-pdf.pdf").write_text("these are not the bytes of a PDF")
    (directory / "empty.pdf").write_bytes(b"")
    (directory / "truncated.pdf").write_bytes(data[: len(data) // 3])
    (directory / "corrupt.pdf").write_bytes(data[:16] + bytes(range(256)) * 64 + b"\n%%EOF\n")
    doc = pymupdf.open(good)
    doc.save(directory / "encrypted.pdf", encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="u", owner_pw="o")
    return {
        "not-a-pdf.pdf": "not a PDF",
        "empty.pdf": "empty file",
        "truncated.pdf": "truncated",
        "corrupt.pdf": "corrupt PDF",
        "encrypted.pdf": "encrypted",
    }


def test_bad_inputs_are_reported_and_the_batch_goes_on(sample_atlas, tmp_path, caplog):
    good = next(p for p in sample_atlas.pdfs if p.name == "atlas-en.pdf")
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    expected = _bad_inputs(bad_dir, good)
    out = tmp_path / "out"
    inputs = [bad_dir / name for name in expected] + [good]
    outcomes = extract_pdfs(inputs, out)
    by_name = {Path(o.pdf).name: o for o in outcomes}
    for name, reason in expected.items():
        assert by_name[name].status == Status.failed
        assert reason in by_name[name].error
        assert any(name in r.getMessage() and reason in r.getMessage() for r in caplog.records)
        assert "\n" not in by_name[name].error
    assert by_name["atlas-en.pdf"].status == Status.success
    assert read_document_run(out / "atlas-en").pages
    assert sorted(p.name for p in out.iterdir()) == ["atlas-en"], "no partial output is left behind"


def test_rerun_replaces_output_atomically(sample_atlas, tmp_path):
    good = next(p for p in sample_atlas.pdfs if p.name == "atlas-zh-only.pdf")
    extract_pdf(good, tmp_path)
    second = extract_pdf(good, tmp_path, ExtractOptions(min_figure_side=1000))
    assert not any(page.regions for page in second.pages)
    stored = read_document_run(tmp_path / "atlas-zh-only")
    assert not any(page.regions for page in stored.pages), "the second run replaced the first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas-zh-only"]
