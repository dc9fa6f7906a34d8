"""The build and publish flows against a real Prefect server started for this module.

Born-digital sample books only (no OCR) plus one file that is not a PDF; the first build queues
some pairs (high review threshold), a review decision is taken, and the rebuild must come from
the build's cache and publish that decision.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


def needs_server(test):  # noqa: ANN001, ANN201 - decorator
    """Tests that run flows against the module's Prefect server."""
    return pytest.mark.prefect(pytest.mark.slow(pytest.mark.timeout(600)(test)))


BOOKS = ["atlas-en", "atlas-zh-bilingual"]
@dataclass
class FlowRun:
    flow_run_id: str
    result: object


def run_build(pdfs: list[Path], options) -> FlowRun:  # noqa: ANN001 - BuildOptions
    from flows.build_flow import build_dataset

    state = build_dataset(pdfs=pdfs, options=options, publish=True, return_state=True)
    return FlowRun(flow_run_id=str(state.state_details.flow_run_id), result=state.result())


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory):
    """Two born-digital sample books, a non-PDF among them, and build options that queue some pairs."""
    from curation.build import BuildOptions
    from testbed.sample_atlas import generate_sample_atlas

    root = tmp_path_factory.mktemp("flow-build")
    atlas = generate_sample_atlas(root / "atlas", seed=0, books=BOOKS)
    broken = root / "atlas" / "broken-scan.pdf"
    broken.write_text("this is a text file, not a PDF\n", encoding="utf-8")
    options = BuildOptions(dataset="mm-retinal-test", work_dir=root / "work", registry_root=root / "registry")
    options.align.review_threshold = 0.95
    return [*atlas.pdfs, broken], options


@pytest.fixture(scope="module")
def first_build(prefect_server, inputs) -> FlowRun:
    pdfs, options = inputs
    return run_build(pdfs, options)


def _read(coro_fn):  # noqa: ANN001, ANN202 - runs one async client call
    import asyncio

    from prefect.client.orchestration import get_client

    async def call():  # noqa: ANN202
        async with get_client() as client:
            return await coro_fn(client)

    return asyncio.run(call())


def _artifacts(flow_run_id: str) -> dict[str, object]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    artifacts = _read(
        lambda client: client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    )
    return {artifact.key or f"{artifact.type}-{artifact.id}": artifact for artifact in artifacts}


@needs_server
def test_build_completes_and_reports_the_bad_pdf(first_build: FlowRun, inputs) -> None:
    from foundation.records import Status

    flow_run = _read(lambda client: client.read_flow_run(first_build.flow_run_id))
    assert flow_run.state.is_completed(), flow_run.state
    documents = {Path(d.pdf).name: d for d in first_build.result.record.documents}
    assert documents["broken-scan.pdf"].status == Status.failed
    assert "not a PDF" in documents["broken-scan.pdf"].error
    for book in BOOKS:
        document = documents[f"{book}.pdf"]
        assert document.status == Status.success and document.pairs, book
        assert set(document.seconds) >= {"open", "extract", "align", "modality"}, document.seconds
    published = first_build.result.published
    assert published is not None and published.n_pairs > 0
    assert (Path(published.path) / "manifest.parquet").is_file()


@needs_server
def test_run_shows_summary_examples_review_link_and_progress(first_build: FlowRun) -> None:
    artifacts = _artifacts(first_build.flow_run_id)
    record = first_build.result.record
    summary = artifacts["mm-retinal-test-build-summary"]
    assert summary.type == "table"
    rows = summary.data if isinstance(summary.data, list) else json.loads(summary.data)
    by_pdf = {row["pdf"]: row for row in rows}
    assert by_pdf["broken-scan.pdf"]["status"] == "failed"
    assert "not a PDF" in by_pdf["broken-scan.pdf"]["failure"]
    total = next(row for row in rows if row["book"] == "TOTAL")
    assert total["pairs"] == len(record.pairs)
    assert total["queued"] == sum(p.review_status == "queued" for p in record.pairs) > 0
    assert total["CFP"] + total["FFA"] + total["OCT"] + total["other"] == len(record.pairs)

    examples = artifacts["mm-retinal-test-build-examples"]
    assert examples.type == "markdown"
    assert examples.data.count("data:image/png;base64,") >= 3
    assert len(examples.data) < 150_000

    link = artifacts["mm-retinal-test-review-queue"]  # Prefect stores link artifacts as markdown links
    assert f"(http://127.0.0.1:8765/queue?build={record.build_id})" in link.data

    progress = artifacts["mm-retinal-test-build-progress"]
    assert progress.type == "progress"
    assert float(progress.data) == pytest.approx(100.0)


@needs_server
def test_logs_have_one_line_per_pdf_and_step(first_build: FlowRun) -> None:
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )

    children = _read(
        lambda client: client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[first_build.flow_run_id]))
        )
    )
    assert [child.name for child in children] and all(child.state.is_completed() for child in children)
    run_ids = [first_build.flow_run_id, *(str(child.id) for child in children)]
    logs = _read(
        lambda client: client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=run_ids)))
    )
    messages = [log.message for log in logs]
    for book in BOOKS:
        for step in ("step 1 extract", "step 2 align", "step 3 modality"):
            assert sum(m.startswith(f"{book}.pdf: {step}") for m in messages) == 1, (book, step)
    assert any("broken-scan.pdf" in m and "not a PDF" in m for m in messages)


def _published_events(server, version: str, attempts: int = 40) -> list[dict]:
    body = {"filter": {"event": {"name": ["mmretinal.manifest.published"]}}, "limit": 50}
    for _ in range(attempts):
        events = httpx.post(f"{server.api_url}/events/filter", json=body, timeout=10).json()["events"]
        matching = [e for e in events if e["payload"].get("version") == version and e["payload"].get("dataset") == "mm-retinal-test"]
        if matching:
            return matching
        time.sleep(0.5)
    return []


@needs_server
def test_publish_emits_event(prefect_server, first_build: FlowRun) -> None:
    published = first_build.result.published
    dataset, version = published.ref.split("/")
    events = _published_events(prefect_server, version)
    assert len(events) == 1
    event = events[0]
    assert event["resource"]["prefect.resource.id"] == f"mmretinal.dataset.{dataset}"
    payload = event["payload"]
    assert payload["ref"] == published.ref
    assert payload["fingerprint"] == published.fingerprint
    assert payload["n_pairs"] == published.n_pairs
    assert Path(payload["manifest"]).is_file()


@needs_server
def test_rebuild_comes_from_cache_and_keeps_review_decisions(first_build: FlowRun, inputs) -> None:
    from data_manifests import load_manifest
    from curation.review_store import ReviewStore

    pdfs, options = inputs
    record = first_build.result.record
    store = ReviewStore(options.review_db)
    item = store.queue(record.build_id)[0]
    edited = "Edited by the reviewer: colour fundus photograph."
    store.decide(item.item_key, "edit_caption", "flow-test", caption_en=edited, caption_zh=item.pair.caption_zh)

    rebuild = run_build(pdfs, options)
    documents = [d for d in rebuild.result.record.documents if not d.failed]
    assert documents and all(d.cached for d in documents), [d.cached for d in documents]
    assert rebuild.result.record.build_id == record.build_id

    published = rebuild.result.published
    assert published.ref != first_build.result.published.ref
    rows = load_manifest(options.registry_root, published.ref).table.to_pylist()
    row = next(r for r in rows if r["pair_id"] == item.pair.pair_id)
    assert row["caption_en"] == edited
    assert row["reviewer"] == "flow-test"
    assert row["review_status"] == "edited"


# ---------------------------------------------------------------------------- without a server


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (ConnectionResetError("peer reset"), True),
        (TimeoutError("share did not answer"), True),
        (OSError(5, "Input/output error"), True),
        (FileNotFoundError("gone"), False),
        (PermissionError("denied"), False),
        (ValueError("bad value"), False),
    ],
)
def test_only_transient_errors_are_retried(error: BaseException, retried: bool) -> None:
    from prefect.states import Failed

    from flows.build_flow import process_pdf_task, retry_on_transient

    assert retry_on_transient(process_pdf_task, None, Failed(data=error)) is retried
    assert process_pdf_task.retries == 2


def test_cache_key_follows_pdf_content_config_and_code_only(tmp_path: Path, review_build) -> None:  # noqa: ANN001
    from curation.build import BuildOptions, cache_key
    from foundation.files import sha256_file

    options = BuildOptions(work_dir=tmp_path / "work")
    sha = sha256_file(review_build.pdf_path)
    key = cache_key(sha, options)
    assert key == cache_key(sha, options.model_copy(deep=True))
    stricter = options.model_copy(deep=True)
    stricter.align.review_threshold = 0.99
    assert cache_key(sha, stricter) != key
    elsewhere = BuildOptions(work_dir=tmp_path / "other", registry_root=tmp_path / "r", runner={"kind": "processes"})
    assert cache_key(sha, elsewhere) == key, "paths and the runner do not change what the steps produce"
    assert cache_key("0" * 64, options) != key

def test_artifact_builders_summarise_and_embed_small_thumbnails(tmp_path: Path, review_build) -> None:  # noqa: ANN001
    from curation.build import BuildRecord
    from flows.artifacts import examples_markdown, pick_examples, review_page_url, summary_rows
    from foundation.records import DocumentRun, Reject, Status

    pairs = [p.model_copy(update={"image_file": str(review_build.image_dir / p.image_file)}) for p in review_build.pairs]
    pairs[2] = pairs[2].model_copy(update={"review_status": "auto_accepted"})
    miss = Reject(kind="figure_without_caption", step="align", page=1, reason="no caption", proposal=pairs[0])
    good = DocumentRun(pdf=str(review_build.pdf_path), book="atlas-a", pairs=pairs, rejects=[miss], cached=True)
    good.note_error("page 2: image at (1, 2, 3, 4) cannot be decoded")
    bad = DocumentRun(pdf=str(tmp_path / "notes.pdf"), book="notes").fail("not a PDF (no %PDF- header)")
    rows = summary_rows([good, bad])
    assert [row["book"] for row in rows] == ["atlas-a", "notes", "TOTAL"]
    assert (rows[0]["CFP"], rows[0]["FFA"], rows[0]["OCT"]) == (1, 1, 1)
    assert (rows[0]["queued"], rows[0]["auto-accepted"], rows[0]["cache"]) == (2, 1, "reused")
    assert rows[0]["status"] == "partial" and "page 2" in rows[0]["failure"]
    assert rows[0]["possible misses"] == 1
    assert rows[1]["failure"] == "not a PDF (no %PDF- header)"
    assert rows[2]["status"] == "1 failed, 1 partial" and rows[2]["pairs"] == 3

    examples = pick_examples(pairs, 3)
    assert examples[0].review_status == "queued"
    assert {p.modality for p in examples} == {"CFP", "FFA", "OCT"}
    record = BuildRecord(build_id="build-abc", dataset="mm-retinal", created="now", documents=[good, bad], review_db="r.sqlite")
    url = review_page_url("http://127.0.0.1:8765/", record.build_id)
    assert url == "http://127.0.0.1:8765/queue?build=build-abc"
    markdown = examples_markdown(record, url)
    thumbnails = markdown.split("data:image/png;base64,")[1:]
    assert len(thumbnails) == 3
    assert all(len(t.split(")")[0]) < 16_000 for t in thumbnails)
    assert "Central retinal vein occlusion" in markdown and url in markdown


def test_deployments_serve_build_publish_and_training_with_trigger_off_by_default() -> None:
    from flows.build_flow import PUBLISHED_EVENT
    from flows.deployments import ServeOptions, build_deployments

    deployments = {f"{d.flow_name}/{d.name}": d for d in build_deployments(ServeOptions())}
    assert {"build-dataset/mm-retinal", "publish-manifest/mm-retinal"} <= set(deployments)
    pretrain = deployments.get("pretrain/keepfit")
    if pretrain is None:
        pytest.skip("flows/pretrain.py is not importable here")
    assert pretrain.concurrency_limit == 1
    (trigger,) = pretrain.triggers
    assert trigger.enabled is False
    assert trigger.expect == {PUBLISHED_EVENT}
    assert trigger.parameters == {"dataset": "{{ event.payload.dataset }}", "manifest_version": "{{ event.payload.version }}"}
    enabled = {f"{d.flow_name}/{d.name}": d for d in build_deployments(ServeOptions(pretrain_on_publish=True))}
    assert enabled["pretrain/keepfit"].triggers[0].enabled is True
