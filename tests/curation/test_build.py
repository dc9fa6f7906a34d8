"""The whole build on the sample atlas: steps 1-4, the review queue, publishing, and the
targets the dataset has to meet (pair F1, caption accuracy, modality, review share)."""

from __future__ import annotations

import logging

import pyarrow.parquet as pq
import pytest

from curation.build import process_document, publish_build, record_build
from curation.review_store import ReviewStore, content_key
from testbed.scoring import score_manifest, score_pairs


@pytest.fixture(scope="session")
def scores(sample_build, sample_truth):
    options, _, published = sample_build
    return score_manifest(sample_truth, options.registry_root, published.ref)


def test_pairs_meet_the_targets(scores):
    pairs = scores["pairs"]
    assert pairs["born_digital"]["f1"] >= 0.98, pairs
    assert pairs["scanned"]["f1"] >= 0.95, pairs
    assert pairs["stitched"]["f1"] >= 0.95 and pairs["separate"]["f1"] >= 0.95, pairs


def test_captions_meet_the_targets(scores):
    for language in ("en", "zh"):
        assert scores["captions"][language]["all"]["exact_match"] >= 0.95, scores["captions"][language]


def test_modality_meets_the_target(scores):
    assert scores["modality"]["accuracy"] >= 0.98, scores["modality"]["confusion"]


def test_review_share_and_auto_accepted_precision(scores):
    assert scores["review"]["share_queued"] <= 0.10, scores["review"]
    assert scores["review"]["auto_accepted_precision"] >= 0.99, scores["review"]


def test_every_pair_has_a_score_reasons_and_a_stable_book_scoped_id(sample_build):
    _, record, _ = sample_build
    ids = [pair.pair_id for pair in record.pairs]
    assert len(ids) == len(set(ids))
    for pair in record.pairs:
        assert 0.0 <= pair.alignment_score <= 1.0 and pair.reasons
        assert pair.pair_id.startswith(pair.book + "/")
    shared = {p.figure_id for p in record.pairs if p.book == "atlas-en"} & {
        p.figure_id for p in record.pairs if p.book == "atlas-zh-bilingual"
    }
    assert shared, "the sample atlas reuses a figure number across books"


def test_title_is_kept_with_the_panel_text(sample_build, sample_truth):
    _, record, _ = sample_build
    titled = {t.caption_en.split(".")[0] for t in sample_truth if t.caption_en and t.pair}
    assert all(any(p.caption_en.startswith(title) for p in record.pairs if p.caption_en) for title in titled)


def test_manifest_rows_and_metadata(sample_build):
    options, record, published = sample_build
    table = pq.read_table(f"{published.path}/manifest.parquet")
    expected = {
        "pair_id", "image_path", "image_sha256", "source_pdf", "source_pdf_sha256", "page", "bbox", "figure_id",
        "panel", "caption_en", "caption_zh", "caption_source", "modality", "modality_confidence",
        "alignment_score", "review_status",
    }
    assert expected <= set(table.column_names)
    rows = table.to_pylist()
    assert {row["modality"] for row in rows} == {"CFP", "FFA", "OCT"}
    assert all(row["page"] >= 1 and len(row["bbox"]) == 4 for row in rows)
    assert published.counts["by_book"].keys() == {d.book for d in record.documents}


def test_missing_translation_is_marked_and_said_once(sample_build):
    _, record, _ = sample_build
    zh_only = [p for p in record.pairs if p.book == "atlas-zh-only"]
    assert zh_only and all(p.caption_en is None and p.caption_zh for p in zh_only)


def test_unchanged_rebuild_reuses_work_and_publishes_the_same_content(sample_build, sample_atlas, caplog):
    options, record, published = sample_build
    caplog.set_level(logging.INFO)
    books = [process_document(pdf, options) for pdf in sample_atlas.pdfs]
    assert all(book.cached for book in books)
    again = record_build(books, options)
    assert again.build_id == record.build_id
    republished = publish_build(again, options)
    assert republished.fingerprint == published.fingerprint
    assert republished.unchanged and republished.ref == published.ref, "identical content publishes nothing new"


def test_review_decisions_apply_on_publish_and_survive_a_rebuild(sample_build, sample_atlas, sample_truth):
    options, record, _ = sample_build
    store = ReviewStore(options.review_db)
    target = next(p for p in record.pairs if p.book == "atlas-zh-bilingual" and p.panel == "B")
    doubtful = target.model_copy(update={"review_status": "queued"})
    store.register_build("build-with-a-doubt", options.dataset, [doubtful])
    store.decide(content_key(target), "edit_caption", "tester", caption_zh="人工校对的说明。", caption_en=target.caption_en)
    rebuilt = record_build([process_document(pdf, options) for pdf in sample_atlas.pdfs], options)
    summary = publish_build(rebuilt, options)
    rows = {row["pair_id"]: row for row in pq.read_table(f"{summary.path}/manifest.parquet").to_pylist()}
    row = rows[target.pair_id]
    assert row["caption_zh"] == "人工校对的说明。" and row["review_status"] == "edited"


def test_a_bad_pdf_fails_alone(sample_build, sample_atlas, tmp_path):
    options, _, _ = sample_build
    bad = tmp_path / "broken.pdf"
    bad.write_bytes(b"%PDF-1.7\n garbage without objects")
    result = process_document(bad, options)
    assert result.status.value == "failed" and result.error
    good = process_document(sample_atlas.pdfs[0], options)
    assert good.status.value == "success" and good.pairs


def test_score_pairs_counts_a_wrong_panel_as_an_error(sample_build, sample_truth):
    _, record, _ = sample_build
    pairs = [p.model_copy(deep=True) for p in record.pairs]
    for pair in pairs[:5]:
        pair.panel = "Z"
    report = score_pairs(sample_truth, pairs)
    assert report["pairs"]["all"]["precision"] < 1.0


def test_cold_builds_in_separate_places_publish_the_same_fingerprint(sample_atlas, tmp_path):
    from curation.build import BuildOptions, run_build

    pdfs = [p for p in sample_atlas.pdfs if p.stem in ("atlas-en", "atlas-zh-only")]
    fingerprints = []
    for name in ("first", "second"):
        options = BuildOptions(
            work_dir=tmp_path / name / "work", registry_root=tmp_path / name / "registry",
            translation_home=tmp_path / "argos",
        )
        _, published = run_build(pdfs, options)
        fingerprints.append(published.fingerprint)
    assert fingerprints[0] == fingerprints[1]
