"""Step 1's resource limits: oversized images are skipped, renderings fit a pixel budget, long PDFs refused,
crowded pages cost a bounded amount of work, and the time limit holds inside a page."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import pipeline.extract
from pipeline.extract import ExtractionError, ExtractOptions, _merge_overlapping, _near, extract_pdf
from testbed.hostile_pdfs import CROWDED_PAGES, blank_pages_pdf, crowded_page_pdf, image_bomb_pdf, mediabox_pdf


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


def _crowded(tmp_path: Path, name: str, **changes) -> Path:
    _, images, paths, side, gap = CROWDED_PAGES[name]
    values = {"images": images, "paths": paths, "side": side, "gap": gap, **changes}
    pdf = tmp_path / f"{name}.pdf"
    crowded_page_pdf(pdf, rng=np.random.default_rng(0), **values)
    return pdf


def _limit_rejects(run, option: str) -> list:
    return [r for r in run.rejects if option in r.reason]


def _figure_kept(page) -> bool:
    """The ordinary 240 x 180 pt figure under the crowd is one of the page's regions."""
    return any(
        abs(r.bbox[0] - 50) < 1 and abs(r.bbox[2] - r.bbox[0] - 240) < 1 and abs(r.bbox[3] - r.bbox[1] - 180) < 1
        for r in page.regions
    ) and [c.figure_id for c in page.captions] == ["1-1"]


@pytest.mark.parametrize("name", ["tiny-images", "dropped-images", "small-panels", "abutting-tiles"])
def test_a_page_of_thousands_of_images_costs_one_reject_and_keeps_its_figure(tmp_path: Path, name: str) -> None:
    """A page of 4000 small images took minutes (all-pairs searches over them, one full-page
    rendering per region); now the largest max_images_per_page are considered, in linear time."""
    result = extract_pdf(_crowded(tmp_path, name), tmp_path / "out", ExtractOptions())
    (reject,) = _limit_rejects(result, "(max_images_per_page)")
    assert reject.kind == "bad_page" and reject.page == 1
    assert reject.reason == (
        "4001 images on the page, more than the limit of 1000 (max_images_per_page): the 3001 smallest were left out"
    )
    assert result.errors == ["page 1: " + reject.reason]
    page = result.pages[0]
    assert _figure_kept(page)
    if name == "dropped-images":  # 999 decorations: one reject for review, not 999
        (pooled,) = [r for r in result.rejects if r.kind == "dropped_image"]
        assert "999 images dropped as decoration" in pooled.reason and "(max_dropped_per_page)" in pooled.reason
    if name == "small-panels":
        assert len(page.regions) == 1000  # the figure and 999 panels
    if name == "abutting-tiles":
        assert sorted(r.parts for r in page.regions) == [1, 999]  # the tiles kept make one picture


def test_thousands_of_vector_paths_are_one_drawn_figure_and_a_limit_leaves_the_rest_out(tmp_path: Path) -> None:
    pdf = _crowded(tmp_path, "vector-paths")
    whole = extract_pdf(pdf, tmp_path / "whole", ExtractOptions())
    assert not whole.rejects and _figure_kept(whole.pages[0])
    assert max(r.parts for r in whole.pages[0].regions) > 4000  # the paths drew one figure
    limited = extract_pdf(pdf, tmp_path / "limited", ExtractOptions(max_paths_per_page=1000))
    (reject,) = limited.rejects
    assert reject.kind == "bad_page" and reject.reason == (
        "5000 vector paths on the page, more than the limit of 1000 (max_paths_per_page): the 4000 smallest were left out"
    )
    assert _figure_kept(limited.pages[0])


def test_images_and_paths_over_both_limits_give_one_reject_each(tmp_path: Path) -> None:
    result = extract_pdf(_crowded(tmp_path, "images-and-paths"), tmp_path / "out", ExtractOptions(max_paths_per_page=2000))
    assert [r.kind for r in result.rejects] == ["bad_page", "bad_page"]
    assert len(_limit_rejects(result, "(max_images_per_page)")) == 1
    assert len(_limit_rejects(result, "(max_paths_per_page)")) == 1
    assert _figure_kept(result.pages[0])


@pytest.mark.timeout(120)
def test_the_time_limit_stops_a_pdf_inside_a_page(tmp_path: Path, monkeypatch) -> None:
    """max_seconds_per_pdf was checked only between pages: one slow page held the batch. A
    one-page PDF that runs over now stops inside the page, with the between-page reason."""
    stored = []
    put = pipeline.extract.ImageBank.put
    monkeypatch.setattr(pipeline.extract.ImageBank, "put", lambda bank, pixels: stored.append(1) or put(bank, pixels))
    pdf = _crowded(tmp_path, "small-panels")
    with pytest.raises(ExtractionError) as caught:
        extract_pdf(pdf, tmp_path / "out", ExtractOptions(max_seconds_per_pdf=0.01))
    assert str(caught.value) == "stopped at page 1: over the 0.01 s limit (max_seconds_per_pdf)"
    assert len(stored) < 1000  # the page's 1000 regions were not all rendered
    assert not (tmp_path / "out" / "small-panels").exists()


def test_neighbour_search_finds_what_comparing_every_pair_finds() -> None:
    rng = np.random.default_rng(3)
    corners = rng.uniform(0, 500, size=(400, 2))
    sizes = np.where(rng.random((400, 1)) < 0.1, rng.uniform(50, 400, (400, 2)), rng.uniform(0, 12, (400, 2)))
    boxes = [tuple(float(v) for v in (x, y, x + w, y + h)) for (x, y), (w, h) in zip(corners, sizes)]
    for reach in (0.0, 1.0, 6.0, 30.0):
        expected = [
            [j for j, b in enumerate(boxes) if j != i and max(a[0], b[0]) - min(a[2], b[2]) <= reach
             and max(a[1], b[1]) - min(a[3], b[3]) <= reach]
            for i, a in enumerate(boxes)
        ]
        assert _near(boxes, reach) == expected, reach
    squares = [[0, 0, 10, 10], [5, 5, 20, 20], [18, 0, 30, 4], [40, 40, 50, 50]]
    assert sorted(_merge_overlapping(squares)) == [[0, 0, 30, 20], [40, 40, 50, 50]]
