"""Possible misses in a real headless Chromium: a reviewer turns a figure the build could not
caption into a pair by choosing its caption, dismisses a dropped image, and the next published
version holds the new pair and not the dismissed one."""

from __future__ import annotations

from pathlib import Path

import pytest
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from curation.build import BuildOptions, load_build, publish_build, run_build
from curation.review_store import ReviewStore
from data_manifests import load_manifest
from flows.review_app import create_review_app

pytestmark = pytest.mark.browser
PAGE_CHANGING = (StaleElementReferenceException, NoSuchElementException)


@pytest.fixture
def misses_served(tmp_path: Path, misses_pdf, live_server):
    (tmp_path / "atlas").mkdir()
    pdf = misses_pdf(tmp_path / "atlas" / "misses.pdf")
    options = BuildOptions(work_dir=tmp_path / "work", registry_root=tmp_path / "registry", translation_home=tmp_path / "argos")
    record, _ = run_build([pdf], options)
    store = ReviewStore(options.review_db)
    app = create_review_app(store, pdf_roots=[pdf.parent], cache_dir=tmp_path / "page-cache", default_reviewer="nobody")
    with live_server(app) as server:
        yield options, record, store, server


def test_reviewer_turns_a_possible_miss_into_a_published_pair(misses_served, chromium) -> None:
    options, record, store, server = misses_served
    items = {item.pair.possible_miss: item for item in store.queue(record.build_id) if item.pair.possible_miss}
    orphan, dropped = items["figure_without_caption"], items["dropped_image"]
    driver = chromium()

    driver.get(f"{server.url}/queue?build={record.build_id}")
    assert "possible miss: figure without caption" in driver.page_source
    driver.get(f"{server.url}/item/{orphan.item_key}?build={record.build_id}&reviewer=ann")
    assert "Possible miss" in driver.find_element(By.ID, "possible-miss").text
    WebDriverWait(driver, 15, ignored_exceptions=PAGE_CHANGING).until(
        lambda d: d.execute_script("return [...document.images].every(i => i.complete && i.naturalWidth > 0)")
    )
    highlight, page_image = driver.find_element(By.ID, "highlight").rect, driver.find_element(By.ID, "page-image").rect
    assert highlight["width"] == pytest.approx(page_image["width"] * 200 / 595, rel=0.05)
    choice = next(
        button for button in driver.find_elements(By.CSS_SELECTOR, "#alternatives button") if "Fig. 1-2" in button.text
    )
    choice.click()
    WebDriverWait(driver, 15).until(lambda d: store.current_decision(orphan.item_key) is not None)

    driver.get(f"{server.url}/item/{dropped.item_key}?build={record.build_id}&reviewer=ann")
    assert "Dismiss" in driver.find_element(By.CSS_SELECTOR, "#form-reject-pair button").text
    driver.find_element(By.CSS_SELECTOR, "#form-reject-pair button").click()
    WebDriverWait(driver, 15).until(lambda d: store.current_decision(dropped.item_key) is not None)

    assert (store.current_decision(orphan.item_key).action, store.current_decision(orphan.item_key).reviewer) == (
        "choose_caption", "ann"
    )
    summary = publish_build(load_build(options.work_dir, record.build_id), options)
    rows = {row["pair_id"]: row for row in load_manifest(options.registry_root, summary.ref).table.to_pylist()}
    pair = rows["misses/1-2/-"]
    assert pair["image_sha256"] == orphan.pair.image_sha256
    assert pair["caption_en"] == "Central serous chorioretinopathy." and pair["reviewer"] == "ann"
    assert pair["modality"] == "FFA"
    assert dropped.pair.image_sha256 not in {row["image_sha256"] for row in rows.values()}
