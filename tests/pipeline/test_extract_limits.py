"""Step 1's resource limits: oversized images are skipped, renderings fit a pixel budget, long PDFs refused."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from pipeline.extract import ExtractionError, ExtractOptions, extract_pdf
from testbed.hostile_pdfs import blank_pages_pdf, image_bomb_pdf, mediabox_pdf


def test_image_bomb_becomes_a_skipped_region_and_the_page_goes_on(tmp_path: Path, caplog) -> None:
    """Problem 1: an 18000² image was decoded (1 GB, 17 s just to hash it for xrefs) and
    extracted; now its header size is read, the region skipped with the reason, the caption kept."""
    pdf = tmp_path / "bomb-18000.pdf"
    image_bomb_pdf(pdf, 18000)
    caplog.set_level(logging.WARNING, logger="pipeline.extract")
    result = extract_pdf(pdf, tmp_path / "out", ExtractOptions())
    page = result.pages[0]
    assert page.regions == []
    assert [c.figure_id for c in page.captions] == ["1-1"]
    lines = [r.getMessage() for r in caplog.records]
    assert any(
        "bomb-18000.pdf page 1: image region skipped: 18000×18000 image (324 Mpx) is over the 64 Mpx limit" in line
        for line in lines
    ), lines


def test_image_under_the_limit_is_still_extracted(tmp_path: Path) -> None:
    pdf = tmp_path / "fine.pdf"
    image_bomb_pdf(pdf, 1200)
    result = extract_pdf(pdf, tmp_path / "out", ExtractOptions(max_image_pixels=2_000_000))
    assert [r.pixel_size for r in result.pages[0].regions] == [(1200, 1200)]
    refused = extract_pdf(pdf, tmp_path / "out2", ExtractOptions(max_image_pixels=1_000_000))
    assert refused.pages[0].regions == []


def test_huge_page_is_rasterised_within_the_pixel_budget(tmp_path: Path, caplog) -> None:
    """A 14400-pt scanned page failed at 1.6 GB; it is now rendered at the resolution that fits."""
    pdf = tmp_path / "huge-mediabox.pdf"
    mediabox_pdf(pdf, 14400, 14400, np.random.default_rng(0))
    caplog.set_level(logging.WARNING, logger="pipeline.extract")
    options = ExtractOptions(max_page_raster_pixels=4_000_000)
    result = extract_pdf(pdf, tmp_path / "out", options)
    assert result.pages[0].scanned
    for region in result.pages[0].regions:
        assert region.pixel_size[0] * region.pixel_size[1] <= options.max_page_raster_pixels
    assert any("rendered at 10 dpi instead of 220" in r.getMessage() for r in caplog.records)


def test_too_many_pages_is_refused_before_any_page_is_read(tmp_path: Path) -> None:
    pdf = tmp_path / "blank.pdf"
    blank_pages_pdf(pdf, 60)
    with pytest.raises(ExtractionError, match=r"PDF has 60 pages, more than the limit of 50 \(max_pages\)"):
        extract_pdf(pdf, tmp_path / "out", ExtractOptions(max_pages=50))
    assert len(extract_pdf(pdf, tmp_path / "out", ExtractOptions(max_pages=60)).pages) == 60


def test_truncation_message_names_a_real_option(tmp_path: Path, sample_atlas) -> None:
    """Problem 9: the message said 'set allow_repaired', an option `build` did not have."""
    from typer.testing import CliRunner

    from flows.cli import app

    cut = tmp_path / "cut.pdf"
    cut.write_bytes(sample_atlas.pdfs[0].read_bytes()[:20000])
    with pytest.raises(ExtractionError, match="--allow-repaired") as caught:
        extract_pdf(cut, tmp_path / "out", ExtractOptions())
    option = str(caught.value).split("with ", 1)[1].split()[0]
    for command in ("build", "extract"):
        help_text = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
        assert option in help_text, command
