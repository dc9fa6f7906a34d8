"""Diffs between versions and verification of published versions against their hashes."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from data_manifests.compare import diff
from data_manifests.registry import load_manifest
from data_manifests.verify import verify


def test_diff_reports_added_removed_and_changed_columns(make_pair, do_publish, registry_root):
    v1 = [
        make_pair("book-a", "1-1", "A", seed=1),
        make_pair("book-a", "1-1", "B", seed=2),
        make_pair("book-a", "1-2", None, seed=3),
        make_pair("book-b", "7-3", "A", seed=4),
    ]
    v2 = [
        make_pair("book-a", "1-1", "A", seed=1),
        make_pair("book-a", "1-1", "B", seed=2, caption_en="Retinal detachment. B."),
        make_pair("book-a", "1-2", None, seed=3, modality="FFA", modality_confidence=0.7),
        make_pair("book-c", "2-2", None, seed=5),
    ]
    do_publish(v1)
    do_publish(v2)

    result = diff("mm-retinal/v1", "mm-retinal/v2", root=registry_root)
    assert result.a == "mm-retinal/v1" and result.b == "mm-retinal/v2"
    assert result.added == ["book-c/2-2/-"]
    assert result.removed == ["book-b/7-3/A"]
    assert [(c.pair_id, c.columns) for c in result.changed] == [
        ("book-a/1-1/B", ["caption_en"]),
        ("book-a/1-2/-", ["modality", "modality_confidence"]),
    ]
    assert result.column_change_counts() == {"caption_en": 1, "modality": 1, "modality_confidence": 1}
    assert diff("mm-retinal/v2", "mm-retinal/v2", root=registry_root).is_empty


def test_diff_reports_changed_image(make_pair, do_publish, registry_root):
    do_publish([make_pair(seed=1)])
    do_publish([make_pair(seed=2)])
    loaded = [load_manifest(registry_root, f"mm-retinal/v{i}") for i in (1, 2)]
    result = diff(*loaded)
    assert [(c.pair_id, c.columns) for c in result.changed] == [("book-a/3-12/A", ["image_path", "image_sha256"])]


def test_verify_clean_version(make_pair, do_publish, registry_root):
    do_publish([make_pair(seed=1), make_pair(figure_id="2-2", seed=2)])
    report = verify(registry_root, "mm-retinal/v1")
    assert report.ok
    assert report.n_pairs == 2 and report.n_images_checked == 2


def test_verify_reports_deleted_and_modified_images_by_name(make_pair, do_publish, registry_root, png_writer):
    pairs = [make_pair("book-a", "1-1", "A", seed=1), make_pair("book-a", "1-1", "B", seed=2), make_pair("book-a", "1-3", None, seed=3)]
    do_publish(pairs)
    loaded = load_manifest(registry_root, "mm-retinal/v1")
    rows = {r["pair_id"]: r for r in loaded.table.to_pylist()}
    deleted = loaded.image_file(rows["book-a/1-1/A"]["image_path"])
    modified = loaded.image_file(rows["book-a/1-1/B"]["image_path"])
    deleted.unlink()
    os.chmod(modified, 0o644)
    png_writer(modified, seed=42)

    report = verify(registry_root, "mm-retinal/v1")
    assert not report.ok
    missing = report.problems_of("missing_image")
    altered = report.problems_of("altered_image")
    assert [(p.pair_id, p.path) for p in missing] == [("book-a/1-1/A", str(deleted))]
    assert [(p.pair_id, p.path) for p in altered] == [("book-a/1-1/B", str(modified))]
    assert len(report.problems) == 2
    assert "book-a/1-1/A" in missing[0].line() and str(deleted) in missing[0].line()


def test_verify_reports_manifest_no_longer_matching_fingerprint(make_pair, do_publish, registry_root):
    published = do_publish([make_pair(seed=1), make_pair(figure_id="2-2", seed=2)])
    parquet_file = published.path / "manifest.parquet"
    table = pq.read_table(parquet_file)
    edited = table.set_column(
        table.column_names.index("caption_en"),
        "caption_en",
        pc.utf8_upper(table.column("caption_en")),
    )
    os.chmod(parquet_file, 0o644)
    pq.write_table(edited, parquet_file)

    report = verify(registry_root, "mm-retinal/v1")
    kinds = {p.kind for p in report.problems}
    assert kinds == {"fingerprint_mismatch", "parquet_altered", "writable_file"}  # chmod'ed to edit it
    assert all(p.path == str(parquet_file) for p in report.problems)


def test_verify_uses_store_given_on_the_command(make_pair, do_publish, registry_root, tmp_path):
    do_publish([make_pair(seed=1)])
    moved = tmp_path / "moved-store"
    (registry_root / "images").rename(moved)
    assert verify(registry_root, "mm-retinal/v1").problems_of("missing_image")
    assert verify(registry_root, "mm-retinal/v1", image_store=moved).ok


def test_verify_unknown_version_is_reported(registry_root, make_pair, do_publish):
    do_publish([make_pair(seed=1)])
    report = verify(registry_root, "mm-retinal/v7")
    assert [p.kind for p in report.problems] == ["unreadable_manifest"]
    assert Path(report.problems[0].path).name == "v7"


def test_publishing_again_repairs_an_altered_store_image(make_pair, do_publish, registry_root, png_writer):
    pair = make_pair(seed=1)
    do_publish([pair])
    stored = load_manifest(registry_root, "mm-retinal/v1")
    image_file = stored.image_file(stored.table.column("image_path")[0].as_py())
    os.chmod(image_file, 0o644)
    png_writer(image_file, seed=8)
    assert verify(registry_root, "mm-retinal/v1").problems_of("altered_image")

    do_publish([pair])
    assert verify(registry_root, "mm-retinal/v1").ok
    assert verify(registry_root, "mm-retinal/v2").ok
