"""The review page decodes panels and pages through the guarded decoder: bombs are refused,
large panels are sent downscaled, huge pages rendered within a pixel budget."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from flows.review_app import ReviewAppSettings, SourceFiles
from foundation.imaging import ImageTooLarge, image_size
from testbed.hostile_pdfs import bomb_png


@pytest.fixture
def files(tmp_path: Path) -> SourceFiles:
    return SourceFiles(ReviewAppSettings(panel_max_side=512), tmp_path / "cache")


def test_small_panel_is_served_as_is(files: SourceFiles, tmp_path: Path) -> None:
    panel = tmp_path / "panel.png"
    Image.new("RGB", (400, 300), (20, 90, 40)).save(panel)
    assert files.panel_file(panel) == panel


def test_large_panel_is_served_downscaled_and_cached(files: SourceFiles, tmp_path: Path) -> None:
    panel = tmp_path / "panel.png"
    Image.new("RGB", (3000, 1500), (20, 90, 40)).save(panel)
    served = files.panel_file(panel)
    assert served != panel and image_size(served) == (512, 256)
    assert files.panel_file(panel) == served


def test_bomb_panel_is_refused_with_the_reason(files: SourceFiles, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    bomb_png(bomb, 18000)
    with pytest.raises(ImageTooLarge, match="18000×18000"):
        files.panel_file(bomb)


def test_huge_page_is_rendered_within_the_pixel_budget(files: SourceFiles) -> None:
    assert files.page_dpi_for(595, 842) == 100
    dpi = files.page_dpi_for(14400, 14400)
    assert (14400 * dpi / 72) ** 2 <= files.settings.page_max_pixels
