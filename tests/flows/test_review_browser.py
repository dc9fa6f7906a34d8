"""The review page in a real headless Chromium: keyboard review of a queue, and two reviewers
colliding on one item. Decisions are checked in the SQLite store the server writes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from flows.review_app import create_review_app
from curation.review_store import ReviewStore

pytestmark = pytest.mark.browser

BUILD = "2024-06-01.1"
SCREENSHOT_ENV = "MMRETINAL_UPDATE_REVIEW_SCREENSHOT"
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "review-page.png"


@pytest.fixture
def served(tmp_path: Path, review_build, live_server):
    store = ReviewStore(tmp_path / "review.sqlite")
    store.register_build(BUILD, "mm-retinal", review_build.pairs)
    app = create_review_app(
        store,
        pdf_roots=[review_build.pdf_path.parent],
        image_roots=[review_build.image_dir],
        cache_dir=tmp_path / "page-cache",
        default_reviewer="nobody",
    )
    with live_server(app) as server:
        yield store, server


# an action reloads the page: elements found a moment earlier may be gone or not there yet
PAGE_CHANGING = (StaleElementReferenceException, NoSuchElementException)


def press(driver, keys: str) -> None:
    ActionChains(driver).send_keys(keys).perform()


def wait_for_item(driver, key: str) -> None:
    WebDriverWait(driver, 15, ignored_exceptions=PAGE_CHANGING).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, f'.item-grid[data-item-key="{key}"]')
    )


def set_reviewer(driver, name: str) -> None:
    field = driver.find_element(By.ID, "reviewer-name")
    field.clear()
    field.send_keys(name, Keys.ENTER)
    WebDriverWait(driver, 15, ignored_exceptions=PAGE_CHANGING).until(lambda d: f"reviewer={name}" in d.current_url)


def test_keyboard_review_of_a_queue(served, chromium, review_build, tmp_path) -> None:
    store, server = served
    first, second, third = store.queue(BUILD)
    driver = chromium()
    driver.get(f"{server.url}/queue?build={BUILD}")
    assert "0 / 3 decided" in driver.find_element(By.ID, "progress").text
    driver.find_element(By.ID, "start").click()
    wait_for_item(driver, first.item_key)
    set_reviewer(driver, "ann")
    WebDriverWait(driver, 15, ignored_exceptions=PAGE_CHANGING).until(
        lambda d: d.execute_script("const i = document.getElementById('page-image'); return i.complete && i.naturalWidth > 0")
    )
    highlight = driver.find_element(By.ID, "highlight").rect
    page_image = driver.find_element(By.ID, "page-image").rect
    assert highlight["width"] == pytest.approx(page_image["width"] * 240 / 595, rel=0.03)
    assert highlight["y"] - page_image["y"] == pytest.approx(page_image["height"] * first.pair.bbox[1] / 842, abs=3)

    press(driver, "a")
    wait_for_item(driver, second.item_key)
    assert "1 / 3 decided" in driver.find_element(By.ID, "progress").text
    press(driver, "1")
    wait_for_item(driver, third.item_key)
    press(driver, "u")
    wait_for_item(driver, second.item_key)
    assert store.current_decision(second.item_key) is None
    press(driver, "o")
    WebDriverWait(driver, 15, ignored_exceptions=PAGE_CHANGING).until(lambda d: d.find_element(By.ID, "modality").text == "OCT")
    press(driver, "2")
    wait_for_item(driver, third.item_key)

    press(driver, "e")
    editor = driver.find_element(By.ID, "caption-en")
    assert driver.switch_to.active_element == editor
    editor.clear()
    editor.send_keys("Edited in the browser: cystoid macular oedema.")
    ActionChains(driver).key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()
    WebDriverWait(driver, 15, ignored_exceptions=PAGE_CHANGING).until(expected_conditions.url_contains("done=1"))
    assert "3 / 3 decided" in driver.find_element(By.ID, "progress").text

    accepted = store.current_decision(first.item_key)
    assert (accepted.action, accepted.reviewer) == ("accept", "ann")
    chosen = store.item(second.item_key).resolution
    assert chosen.chosen == second.pair.alternatives[1] and chosen.modality == "OCT"
    assert [d.action for d in store.history(second.item_key)] == ["choose_caption", "undo", "set_modality", "choose_caption"]
    assert store.history(second.item_key)[0].payload["chosen"] == second.pair.alternatives[0].model_dump()
    edited = store.item(third.item_key).resolution
    assert edited.caption_en == "Edited in the browser: cystoid macular oedema."
    assert edited.caption_zh == third.pair.caption_zh and edited.reviewer == "ann"
    published = store.apply_decisions([first.pair, second.pair, third.pair])
    assert [p.review_status for p in published] == ["accepted", "edited", "edited"]

    # the decisions reach the next published manifest
    from data_manifests import load_manifest, publish

    on_disk = [p.model_copy(update={"image_file": str(review_build.image_dir / p.image_file)}) for p in published]
    version = publish(on_disk, "mm-retinal", tmp_path / "registry", config={}, input_pdfs={}, pipeline_version="test")
    _, table = load_manifest(tmp_path / "registry", version.ref)
    rows = {row["pair_id"]: row for row in table.to_pylist()}
    assert rows[first.pair.pair_id]["review_status"] == "accepted"
    assert rows[second.pair.pair_id]["modality"] == "OCT"
    assert rows[second.pair.pair_id]["caption_en"] == second.pair.alternatives[1].caption_en
    assert rows[third.pair.pair_id]["caption_en"] == "Edited in the browser: cystoid macular oedema."
    assert {row["reviewer"] for row in rows.values()} == {"ann"}


def test_second_reviewer_on_the_same_item_gets_a_conflict(served, chromium) -> None:
    store, server = served
    item = store.queue(BUILD)[0]
    url = f"{server.url}/item/{item.item_key}?build={BUILD}"
    ann, bob = chromium(), chromium()
    ann.get(url + "&reviewer=ann")
    bob.get(url + "&reviewer=bob")
    press(ann, "a")
    wait_for_item(ann, store.queue(BUILD)[1].item_key)
    press(bob, "x")
    WebDriverWait(bob, 15, ignored_exceptions=PAGE_CHANGING).until(lambda d: d.find_elements(By.ID, "conflict"))
    assert "Accepted" in bob.find_element(By.ID, "their-decision").text
    assert "ann" in bob.find_element(By.ID, "their-decision").text
    assert [(d.reviewer, d.action, d.outcome) for d in store.history(item.item_key)] == [
        ("ann", "accept", "applied"), ("bob", "reject_not_pair", "conflict")
    ]
    assert store.item(item.item_key).resolution.review_status == "accepted"
    bob.find_element(By.CSS_SELECTOR, "#form-reapply button").click()
    wait_for_item(bob, store.queue(BUILD)[1].item_key)
    assert store.item(item.item_key).resolution.review_status == "rejected"
    assert [(d.reviewer, d.outcome) for d in store.history(item.item_key)] == [
        ("ann", "applied"), ("bob", "conflict"), ("bob", "applied")
    ]


def test_item_page_screenshot(served, chromium, tmp_path: Path) -> None:
    """Screenshot of an item view; with MMRETINAL_UPDATE_REVIEW_SCREENSHOT=1 it replaces docs/review-page.png."""
    store, server = served
    first, second, _ = store.queue(BUILD)
    store.decide(first.item_key, "accept", "ann")
    driver = chromium(1440, 1000)
    driver.get(f"{server.url}/item/{second.item_key}?build={BUILD}&last={first.item_key}&reviewer=ann")
    WebDriverWait(driver, 15, ignored_exceptions=PAGE_CHANGING).until(
        lambda d: d.execute_script(
            "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"
        )
    )
    shot = tmp_path / "review-page.png"
    assert driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get(SCREENSHOT_ENV) == "1":
        shutil.copyfile(shot, DOCS_SCREENSHOT)


def test_a_chinese_reviewer_name_is_stored_shown_and_remembered(served, chromium) -> None:
    store, server = served
    first, second, _ = store.queue(BUILD)
    driver = chromium()
    driver.get(f"{server.url}/queue?build={BUILD}")
    driver.find_element(By.ID, "start").click()
    wait_for_item(driver, first.item_key)
    name = "张医生 Zoë"
    field = driver.find_element(By.ID, "reviewer-name")
    field.clear()
    field.send_keys(name, Keys.ENTER)
    WebDriverWait(driver, 15, ignored_exceptions=PAGE_CHANGING).until(lambda d: "reviewer=" in d.current_url)
    wait_for_item(driver, first.item_key)
    press(driver, "a")
    wait_for_item(driver, second.item_key)
    assert store.current_decision(first.item_key).reviewer == name
    assert "Internal Server Error" not in driver.page_source
    # a later visit without the name in the address still knows the reviewer (the cookie)
    driver.get(f"{server.url}/item/{second.item_key}?build={BUILD}")
    wait_for_item(driver, second.item_key)
    assert driver.find_element(By.ID, "reviewer-name").get_attribute("value") == name
    press(driver, "a")
    WebDriverWait(driver, 15, ignored_exceptions=PAGE_CHANGING).until(lambda d: store.current_decision(second.item_key) is not None)
    assert store.current_decision(second.item_key).reviewer == name
