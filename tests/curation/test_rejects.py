"""What a build misses is data: each kind of reject reaches the review queue as a possible miss,
a reviewer's decision on it survives rebuilds, and a bad page makes its book partial, not failed."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pymupdf
import pytest

from curation.build import BuildOptions, load_build, process_document, publish_build, record_build, run_build
from curation.review_store import ReviewStore, content_key
from data_manifests import load_manifest
from testbed.synthetic_images import cfp_image

REJECT_KINDS = {"caption_without_figure", "figure_without_caption", "dropped_image", "retinal_looking_other"}


@pytest.fixture(scope="module")
def misses_build(tmp_path_factory: pytest.TempPathFactory, misses_pdf):
    root = tmp_path_factory.mktemp("misses")
    pdf = misses_pdf(root / "misses.pdf")
    options = BuildOptions(work_dir=root / "work", registry_root=root / "registry", translation_home=root / "argos")
    record, published = run_build([pdf], options)
    return pdf, options, record, published


def test_every_kind_of_reject_is_recorded_with_page_region_and_reason(misses_build) -> None:
    _, _, record, _ = misses_build
    (document,) = record.documents
    assert document.status.value == "success"
    kinds = {reject.kind for reject in document.rejects}
    assert kinds == REJECT_KINDS
    by_kind = {reject.kind: reject for reject in document.rejects}
    assert by_kind["caption_without_figure"].figure_id == "1-2"
    assert by_kind["figure_without_caption"].bbox == pytest.approx((80, 480, 280, 680), abs=1)
    assert by_kind["dropped_image"].bbox == pytest.approx((420, 760, 480, 790), abs=1)
    assert by_kind["retinal_looking_other"].pair_id == "misses/1-3/-"
    for reject in document.rejects:
        assert reject.page == 1 and reject.reason and reject.step in ("extract", "align", "modality")


def test_each_reject_reaches_the_review_queue_as_a_possible_miss(misses_build) -> None:
    _, options, record, published = misses_build
    queue = ReviewStore(options.review_db).queue(record.build_id)
    misses = {item.pair.possible_miss: item for item in queue if item.pair.possible_miss}
    assert set(misses) == {"caption_without_figure", "figure_without_caption", "dropped_image"}
    other = [item for item in queue if item.pair.pair_id == "misses/1-3/-"]
    assert other and other[0].pair.modality == "other"
    assert any("possible miss" in reason for reason in other[0].pair.reasons)
    for item in misses.values():
        assert Path(item.pair.image_file).is_file(), "the reviewer sees the region's image"
        assert item.pair.page == 1 and item.pair.bbox
    orphan = misses["figure_without_caption"].pair
    assert "1-2" in {choice.figure_id for choice in orphan.alternatives}
    assert misses["caption_without_figure"].pair.caption_en == "Central serous chorioretinopathy."
    rows = load_manifest(options.registry_root, published.ref).table.to_pylist()
    assert not any(row["pair_id"].startswith("misses/unpaired") for row in rows), "undecided misses are not published"


def test_a_reviewer_turns_a_miss_into_a_pair_and_the_decision_survives_a_rebuild(misses_build) -> None:
    pdf, options, record, _ = misses_build
    store = ReviewStore(options.review_db)
    queue = {item.pair.possible_miss: item for item in store.queue(record.build_id) if item.pair.possible_miss}
    orphan = queue["figure_without_caption"]
    choice = next(c for c in orphan.pair.alternatives if c.figure_id == "1-2")
    store.decide(orphan.item_key, "choose_caption", "ann", chosen=choice)
    store.decide(queue["dropped_image"].item_key, "reject_not_pair", "ann")

    rebuilt = record_build([process_document(pdf, options)], options)
    assert rebuilt.documents[0].cached
    summary = publish_build(rebuilt, options)
    rows = {row["pair_id"]: row for row in load_manifest(options.registry_root, summary.ref).table.to_pylist()}
    assert rows["misses/1-2/-"]["image_sha256"] == orphan.pair.image_sha256
    assert rows["misses/1-2/-"]["caption_en"] == "Central serous chorioretinopathy."
    assert rows["misses/1-2/-"]["review_status"] == "edited" and rows["misses/1-2/-"]["reviewer"] == "ann"
    dropped = queue["dropped_image"].pair.image_sha256
    assert not any(row["image_sha256"] == dropped for row in rows.values())


def test_saved_build_reads_back_its_documents_and_misses(misses_build) -> None:
    _, options, record, _ = misses_build
    loaded = load_build(options.work_dir, record.build_id)
    assert [p.pair_id for p in loaded.pairs] == [p.pair_id for p in record.pairs]
    assert {p.possible_miss for p in loaded.proposals} == {p.possible_miss for p in record.proposals}
    assert content_key(loaded.proposals[0]) in {content_key(p) for p in record.proposals}


def corrupt_page_pdf(path: Path) -> None:
    """Three pages with one captioned fundus photograph each; page 2's image has an impossible
    bit depth, so decoding it (or the page) fails."""
    rng = np.random.default_rng(5)
    doc = pymupdf.open()
    for number in (1, 2, 3):
        page = doc.new_page(width=595, height=842)
        png = cv2.imencode(".png", cv2.cvtColor(cfp_image(rng, 400), cv2.COLOR_RGB2BGR))[1].tobytes()
        xref = page.insert_image(pymupdf.Rect(80, 80, 380, 380), stream=png)
        page.insert_text((80, 400), f"FIGURE 2-{number}. Colour fundus photograph number {number}.", fontsize=9)
        if number == 2:
            doc.xref_set_key(xref, "BitsPerComponent", "7")
    doc.save(path)


def test_a_corrupt_page_image_makes_the_book_partial_and_the_rest_publishes(tmp_path: Path) -> None:
    pdf = tmp_path / "damaged.pdf"
    corrupt_page_pdf(pdf)
    options = BuildOptions(work_dir=tmp_path / "work", registry_root=tmp_path / "registry", translation_home=tmp_path / "argos")
    record, published = run_build([pdf], options)
    (document,) = record.documents
    assert document.status.value == "partial"
    assert document.errors and all(error.startswith("page 2:") for error in document.errors)
    assert {r.kind for r in document.rejects} & {"bad_image", "bad_page"}
    assert published is not None
    rows = load_manifest(options.registry_root, published.ref).table.to_pylist()
    assert {row["figure_id"] for row in rows} == {"2-1", "2-3"}
