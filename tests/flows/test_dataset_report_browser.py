"""The dataset report of a published version in a real headless Chromium: it renders, every plot
and example image decodes, and the console stays free of errors."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from data_manifests.registry import load_manifest, publish
from data_manifests.report import write_report

pytestmark = pytest.mark.browser


@pytest.fixture
def published_version(tmp_path, review_build):
    """The review build's three pairs (CFP, FFA, OCT) published with absolute image paths."""
    pairs = [
        pair.model_copy(
            update={
                "image_file": str(review_build.image_dir / pair.image_file),
                "review_status": "accepted" if index else "auto_accepted",
                "caption_zh_origin": "machine" if index == 2 else "printed",
                "modality_sublabel": "ICGA" if pair.modality == "FFA" else None,
            }
        )
        for index, pair in enumerate(review_build.pairs)
    ]
    root = tmp_path / "registry"
    published = publish(
        pairs, "mm-retinal", root, config={"test": True}, input_pdfs={review_build.pdf_path.name: pairs[0].source_pdf_sha256},
        pipeline_version="0.1.0",
    )
    return load_manifest(root, published.ref)


def test_report_renders_with_images_and_no_console_errors(published_version, tmp_path, chromium):
    out = tmp_path / "report" / "mm-retinal-v1-report.html"
    write_report(published_version, out)
    driver = chromium()
    driver.get(out.as_uri())

    assert driver.find_element(By.TAG_NAME, "h1").text == "mm-retinal/v1"
    assert published_version.meta.content_fingerprint in driver.find_element(By.ID, "provenance").text
    plots = {figure.get_attribute("id") for figure in driver.find_elements(By.CSS_SELECTOR, ".plots figure")}
    assert plots == {
        "plot-modality-sublabel", "plot-by-book", "plot-caption-length",
        "plot-caption-origin", "plot-review-outcome", "plot-alignment-score",
    }
    grids = driver.find_elements(By.CSS_SELECTOR, ".grid[data-modality]")
    assert [grid.get_attribute("data-modality") for grid in grids] == ["CFP", "FFA", "OCT"]
    assert driver.find_element(By.CSS_SELECTOR, '.pair[data-pair-id="atlas-a/5-2/-"]').text.count("ICGA") == 1

    images = driver.find_elements(By.TAG_NAME, "img")
    assert len(images) == 6 + 3
    decoded = driver.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0]);"
    )
    assert all(ok for _, ok in decoded), decoded
    widths = driver.execute_script("return Array.from(document.querySelectorAll('img.thumb')).map(i => i.naturalWidth);")
    assert widths == [96, 96, 96]  # 96x72 panels stay below the 160 px thumbnail size

    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
