"""The review page over HTTP (FastAPI TestClient): rendering, actions, token, conflicts, CLI."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
import typer
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from flows import commands_review
from flows.review_app import create_review_app
from curation.review_store import ReviewStore

BUILD = "2024-06-01.1"


@pytest.fixture
def store(tmp_path: Path, review_build) -> ReviewStore:
    store = ReviewStore(tmp_path / "review.sqlite")
    store.register_build(BUILD, "mm-retinal", review_build.pairs)
    return store


@pytest.fixture
def client(store: ReviewStore, review_build, tmp_path: Path) -> TestClient:
    app = create_review_app(
        store,
        pdf_roots=[review_build.pdf_path.parent],
        image_roots=[review_build.image_dir],
        cache_dir=tmp_path / "page-cache",
        default_reviewer="ann",
    )
    return TestClient(app)


def post_decision(client: TestClient, key: str, action: str, version: int, **fields) -> object:
    data = {"build": BUILD, "action": action, "expected_version": str(version), **fields}
    return client.post(f"/item/{key}/decide", data=data, follow_redirects=False)


def test_builds_and_queue_pages_list_the_queue(client: TestClient, store: ReviewStore) -> None:
    home = client.get("/")
    assert home.status_code == 200
    assert BUILD in home.text and "0 / 3 decided" in home.text
    queue = client.get("/queue", params={"build": BUILD})
    assert queue.status_code == 200
    for item in store.queue(BUILD):
        assert f"/item/{item.item_key}?build={BUILD}" in queue.text
        assert item.pair.caption_en in queue.text
    assert client.get("/queue", params={"build": "nope"}).status_code == 404


def test_item_page_shows_page_render_highlight_panel_captions_and_reasons(
    client: TestClient, store: ReviewStore, review_build
) -> None:
    item = store.queue(BUILD)[1]
    page = client.get(f"/item/{item.item_key}", params={"build": BUILD})
    assert page.status_code == 200
    html = page.text
    assert f'src="/item/{item.item_key}/page.png?build={BUILD}"' in html
    assert f'src="/item/{item.item_key}/panel.png?build={BUILD}"' in html
    assert item.pair.caption_en in html and item.pair.caption_zh in html
    for alternative in item.pair.alternatives:
        assert alternative.caption_en in html and alternative.caption_zh in html
    for reason in item.pair.reasons:
        assert reason in html
    assert "FFA" in html and "confidence 0.51" in html
    assert "0 / 3 decided" in html
    for shortcut in ("accept", "not a pair", "not retinal", "choose caption", "undo", "cycle modality"):
        assert shortcut in html.split('id="shortcuts"')[1]
    style = re.search(r'id="highlight" style="left: ([\d.]+)%; top: ([\d.]+)%; width: ([\d.]+)%; height: ([\d.]+)%"', html)
    assert style is not None
    left, top, width, height = (float(value) / 100 for value in style.groups())
    x0, y0, x1, y1 = item.pair.bbox
    assert (left, top, width, height) == pytest.approx((x0 / 595, y0 / 842, (x1 - x0) / 595, (y1 - y0) / 842), abs=1e-4)

    rendered = client.get(f"/item/{item.item_key}/page.png", params={"build": BUILD})
    assert rendered.status_code == 200 and rendered.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(rendered.content)).convert("L")
    assert image.size[0] == pytest.approx(595 * 100 / 72, abs=1.5)
    assert image.size[1] == pytest.approx(842 * 100 / 72, abs=1.5)
    box = image.crop((int(left * image.width) + 4, int(top * image.height) + 4,
                      int((left + width) * image.width) - 4, int((top + height) * image.height) - 4))
    assert sum(box.getdata()) / (box.width * box.height) < 160, "the highlighted box covers the figure"
    margin = image.crop((int((left + width) * image.width) + 10, int(top * image.height),
                         image.width - 10, int((top + height) * image.height)))
    assert min(margin.getdata()) > 250, "nothing is drawn right of the figure"
    assert list((client.app.state.settings.cache_dir).glob("*-p1-100dpi.png")), "the render is cached"

    panel = client.get(f"/item/{item.item_key}/panel.png", params={"build": BUILD})
    assert panel.content == (review_build.image_dir / item.pair.image_file).read_bytes()


def test_accept_moves_to_next_undecided_and_undo_goes_back(client: TestClient, store: ReviewStore) -> None:
    first, second, third = store.queue(BUILD)
    response = post_decision(client, first.item_key, "accept", 0)
    assert response.status_code == 303
    assert response.headers["location"] == f"/item/{second.item_key}?build={BUILD}&last={first.item_key}"
    assert store.current_decision(first.item_key).reviewer == "ann"
    next_page = client.get(response.headers["location"])
    assert "1 / 3 decided" in next_page.text
    assert f'action="/item/{first.item_key}/decide" id="form-undo"' in next_page.text
    undo = post_decision(client, first.item_key, "undo", 1)
    assert undo.status_code == 303 and undo.headers["location"] == f"/item/{first.item_key}?build={BUILD}"
    assert store.current_decision(first.item_key) is None
    assert [d.action for d in store.history(first.item_key)] == ["accept", "undo"]
    post_decision(client, third.item_key, "reject_not_retinal", 0)
    wrapped = post_decision(client, second.item_key, "reject_not_pair", 0)
    assert wrapped.headers["location"].startswith(f"/item/{first.item_key}?"), "wraps to the first undecided"
    done = post_decision(client, first.item_key, "accept", 2)
    assert done.headers["location"] == f"/queue?build={BUILD}&done=1"
    assert "Every item of this build is decided" in client.get(done.headers["location"]).text
    assert store.progress(BUILD) == (3, 3)


def test_choose_edit_and_modality_forms(client: TestClient, store: ReviewStore) -> None:
    first, second, third = store.queue(BUILD)
    chosen = post_decision(client, first.item_key, "choose_caption", 0, choice="2", reviewer="bob")
    assert chosen.status_code == 303
    resolution = store.item(first.item_key).resolution
    assert resolution.caption_en == first.pair.alternatives[1].caption_en
    assert resolution.reviewer == "bob"
    assert post_decision(client, first.item_key, "choose_caption", 1, choice="7").status_code == 400

    modality = post_decision(client, second.item_key, "set_modality", 0, modality="OCT")
    assert modality.headers["location"].startswith(f"/item/{second.item_key}?"), "modality keeps the item open"
    assert not store.item(second.item_key).decided
    edited = post_decision(client, second.item_key, "edit_caption", 1, caption_en=" New text. ", caption_zh="新文字")
    assert edited.status_code == 303
    item = store.item(second.item_key)
    assert (item.resolution.caption_en, item.resolution.caption_zh, item.resolution.modality) == (
        "New text.", "新文字", "OCT"
    )
    page = client.get(f"/item/{second.item_key}", params={"build": BUILD}).text
    assert "New text." in page and "Caption edited" in page and "(set by reviewer; guess was FFA" in page
    assert post_decision(client, third.item_key, "set_modality", 0, modality="MRI").status_code == 400


def test_stale_version_gets_409_showing_the_other_decision_and_reapply(client: TestClient, store: ReviewStore) -> None:
    item = store.queue(BUILD)[0]
    store.decide(item.item_key, "reject_not_pair", "bob", expected_version=0)
    stale = post_decision(client, item.item_key, "edit_caption", 0, caption_en="Mine.", caption_zh="")
    assert stale.status_code == 409
    assert "Rejected: not a pair" in stale.text and "bob" in stale.text
    assert 'name="expected_version" value="1"' in stale.text and 'id="form-reapply"' in stale.text
    history = store.history(item.item_key)
    assert [(d.reviewer, d.outcome) for d in history] == [("bob", "applied"), ("ann", "conflict")]
    assert history[1].payload["caption_en"] == "Mine."
    reapply = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', stale.text.split('id="form-reapply"')[1]))
    response = client.post(f"/item/{item.item_key}/decide", data=reapply, follow_redirects=False)
    assert response.status_code == 303
    assert store.item(item.item_key).resolution.caption_en == "Mine."
    assert [d.outcome for d in store.history(item.item_key)] == ["applied", "conflict", "applied"]


def test_token_is_required_on_every_request_when_set(store: ReviewStore, review_build) -> None:
    app = create_review_app(store, token="s3cret-token", image_roots=[review_build.image_dir])
    client = TestClient(app)
    key = store.queue(BUILD)[0].item_key
    assert client.get("/").status_code == 401
    assert client.get("/", params={"token": "wrong"}).status_code == 401
    assert client.get("/static/review.css").status_code == 401
    assert client.post(f"/item/{key}/decide", data={"build": BUILD, "action": "accept", "expected_version": "0"}).status_code == 401
    assert store.history(key) == []
    first = client.get("/", params={"token": "s3cret-token"})
    assert first.status_code == 200
    assert client.cookies.get("mmretinal_review_token") == "s3cret-token"
    assert client.get(f"/item/{key}", params={"build": BUILD}).status_code == 200
    assert post_decision(client, key, "accept", 0).status_code == 303
    assert TestClient(app).get("/", cookies={"mmretinal_review_token": "s3cret-tokeN"}).status_code == 401


def test_cross_site_posts_are_refused(client: TestClient, store: ReviewStore) -> None:
    key = store.queue(BUILD)[0].item_key
    data = {"build": BUILD, "action": "accept", "expected_version": "0"}
    refused = client.post(f"/item/{key}/decide", data=data, headers={"Origin": "http://evil.example"})
    assert refused.status_code == 403
    same = client.post(f"/item/{key}/decide", data=data, headers={"Origin": "http://testserver"}, follow_redirects=False)
    assert same.status_code == 303


def test_reviewer_name_comes_from_query_then_cookie(client: TestClient, store: ReviewStore) -> None:
    key = store.queue(BUILD)[0].item_key
    client.get("/", params={"reviewer": "dee"})
    assert client.cookies.get("mmretinal_reviewer") == "dee"
    client.post(f"/item/{key}/decide", data={"build": BUILD, "action": "accept", "expected_version": "0"})
    assert store.current_decision(key).reviewer == "dee"


def test_missing_source_files_are_shown_not_crashed(tmp_path: Path, store: ReviewStore) -> None:
    client = TestClient(create_review_app(store))
    key = store.queue(BUILD)[0].item_key
    page = client.get(f"/item/{key}", params={"build": BUILD})
    assert page.status_code == 200
    assert "was not found under the PDF roots" in page.text and "not found." in page.text
    assert client.get(f"/item/{key}/page.png", params={"build": BUILD}).status_code == 404
    assert client.get(f"/item/{'0' * 64}", params={"build": BUILD}).status_code == 404


def test_pdf_with_other_bytes_is_not_used(tmp_path: Path, store: ReviewStore, review_build, make_build) -> None:
    impostor_root = tmp_path / "impostor"
    other = make_build(impostor_root, book="atlas-b")
    (impostor_root / "pdfs" / review_build.pdf_path.name).write_bytes(other.pdf_path.read_bytes() + b"%x\n")
    client = TestClient(create_review_app(store, pdf_roots=[impostor_root / "pdfs", review_build.pdf_path.parent]))
    key = store.queue(BUILD)[0].item_key
    assert client.get(f"/item/{key}/page.png", params={"build": BUILD}).status_code == 200
    only_impostor = TestClient(create_review_app(store, pdf_roots=[impostor_root / "pdfs"]))
    assert only_impostor.get(f"/item/{key}/page.png", params={"build": BUILD}).status_code == 404


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)
    commands_review.register(app)
    return app


def test_serve_refuses_a_public_host_without_token(cli: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["review", "serve", "--db", str(tmp_path / "r.sqlite"), "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "--token" in result.output
    assert not (tmp_path / "r.sqlite").exists()
    assert commands_review.is_loopback("127.0.0.1") and commands_review.is_loopback("::1")
    assert not commands_review.is_loopback("192.168.1.5")


def test_cli_list_export_import(cli: typer.Typer, store: ReviewStore, tmp_path: Path) -> None:
    runner = CliRunner()
    db = str(store.db_path)
    listed = runner.invoke(cli, ["review", "list", "--db", db])
    assert listed.exit_code == 0 and f"{BUILD}\tmm-retinal" in listed.output and "0 / 3 decided" in listed.output
    sheet = tmp_path / "sheet.csv"
    exported = runner.invoke(cli, ["review", "export", str(sheet), "--db", db, "--build", BUILD])
    assert exported.exit_code == 0 and "3 items" in exported.output
    lines = sheet.read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    first_row = next(iter(csv.DictReader(lines)))
    first_row["action"] = "accept"
    with sheet.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerow(first_row)
    imported = runner.invoke(cli, ["review", "import", str(sheet), "--db", db, "--reviewer", "eve"])
    assert imported.exit_code == 0, imported.output
    assert "1 applied" in imported.output
    assert store.current_decision(first_row["item_key"]).reviewer == "eve"
    queue = runner.invoke(cli, ["review", "list", BUILD, "--db", db, "--undecided"])
    assert queue.exit_code == 0 and len(queue.output.strip().splitlines()) == 2
    missing = runner.invoke(cli, ["review", "list", "--db", str(tmp_path / "none.sqlite")])
    assert missing.exit_code == 2 and "no review database" in missing.output
