"""Publishing versions: immutability, fingerprints, the shared image store, failure and concurrency."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from data_manifests.registry import (
    PublishError,
    latest_version,
    list_versions,
    load_manifest,
    publish,
)
from data_manifests.schema import ROW_COLUMNS, config_hash, content_fingerprint
from data_manifests.store import ImageStore, ImageStoreError, resolve_image_store, sha256_file


def _leftovers(dataset_dir: Path) -> list[str]:
    return [p.name for p in dataset_dir.iterdir() if p.name.startswith(".tmp")]


def test_publish_twice_same_content_gives_same_fingerprint_and_stores_images_once(make_pair, do_publish, registry_root):
    pairs = [make_pair("book-a", "3-12", "A", seed=1), make_pair("book-a", "3-12", "B", seed=2), make_pair("book-b", "1-1", None, seed=3)]
    first = do_publish(pairs)
    second = do_publish(list(reversed(pairs)))

    assert (first.version, second.version) == ("v1", "v2")
    assert list_versions(registry_root, "mm-retinal") == ["v1", "v2"]
    assert first.meta.content_fingerprint == second.meta.content_fingerprint
    assert second.meta.parent == "v1" and first.meta.parent is None
    assert (registry_root / "mm-retinal" / "latest").read_text().strip() == "v2"

    store = ImageStore(registry_root / "images")
    assert store.count_images() == 3
    for pair in pairs:
        stored = registry_root / "images" / pair.image_sha256[:2] / f"{pair.image_sha256}.png"
        assert sha256_file(stored) == pair.image_sha256


def test_manifest_rows_and_metadata(make_pair, do_publish, registry_root, publish_config):
    pairs = [
        make_pair("book-b", "2-1", "B", seed=5, modality="FFA", review_status="accepted", reviewer="lw"),
        make_pair("book-a", "3-12", "A", seed=1),
        make_pair("book-a", "3-13", None, seed=2, modality="OCT", scanned=True, stitched=True),
    ]
    published = do_publish(pairs)
    table = pq.read_table(published.path / "manifest.parquet")
    assert tuple(table.column_names) == ROW_COLUMNS
    rows = table.to_pylist()
    assert [r["pair_id"] for r in rows] == ["book-a/3-12/A", "book-a/3-13/-", "book-b/2-1/B"]
    first = rows[0]
    assert first["bbox"] == [10.0, 20.5, 200.0, 180.25]
    assert first["page"] == 7
    assert first["caption_source"] == "en:printed;zh:machine"
    assert first["reasons"] == ["caption below figure"]
    assert first["image_path"] == f"{pairs[1].image_sha256[:2]}/{pairs[1].image_sha256}.png"
    assert rows[1]["scanned"] is True and rows[1]["stitched"] is True
    assert rows[2]["reviewer"] == "lw"

    meta = json.loads((published.path / "manifest.json").read_text())
    assert meta["dataset"] == "mm-retinal" and meta["version"] == "v1" and meta["n_pairs"] == 3
    assert meta["created"].endswith("+00:00")
    assert meta["config_hash"] == config_hash(publish_config)
    assert meta["input_pdfs"] == {"book-a.pdf": pairs[1].source_pdf_sha256, "book-b.pdf": pairs[0].source_pdf_sha256}
    assert meta["counts"]["by_modality"] == {"CFP": 1, "FFA": 1, "OCT": 1}
    assert meta["counts"]["by_book"] == {"book-a": 2, "book-b": 1}
    assert meta["counts"]["by_review_status"] == {"accepted": 1, "auto_accepted": 2}
    assert meta["image_store"] == "images"
    assert meta["content_fingerprint"] == content_fingerprint(table)
    assert meta["pipeline_version"] == "0.1.0"


def test_config_hash_ignores_key_order():
    assert config_hash({"a": 1, "b": {"c": 2, "d": 3}}) == config_hash({"b": {"d": 3, "c": 2}, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_fingerprint_changes_with_content(make_pair, do_publish):
    base = do_publish([make_pair(seed=1)])
    edited = do_publish([make_pair(seed=1, caption_en="Branch retinal vein occlusion.")])
    assert base.meta.content_fingerprint != edited.meta.content_fingerprint


def test_other_modality_and_rejected_pairs_are_excluded_and_counted(make_pair, do_publish):
    kept = make_pair("book-a", "1-1", "A", seed=1)
    other = make_pair("book-a", "1-2", None, seed=2, modality="other")
    rejected = make_pair("book-a", "1-3", None, seed=3, review_status="rejected")
    published = do_publish([kept, other, rejected])

    loaded = load_manifest(published.path.parent.parent, "mm-retinal/v1")
    assert loaded.table.column("pair_id").to_pylist() == ["book-a/1-1/A"]
    excluded = published.meta.excluded
    assert excluded.n_excluded == 2
    assert excluded.by_reason == {"modality_other": 1, "review_rejected": 1}
    assert {(e.pair_id, e.reason) for e in excluded.pairs} == {
        ("book-a/1-2/-", "modality_other"),
        ("book-a/1-3/-", "review_rejected"),
    }


def test_excluded_pair_needs_no_image(make_pair, do_publish):
    other = make_pair("book-a", "1-2", None, seed=2, modality="other")
    Path(other.image_file).unlink()
    published = do_publish([make_pair(seed=1), other])
    assert published.meta.n_pairs == 1


def test_missing_image_fails_naming_pair_and_file_and_leaves_nothing(make_pair, do_publish, registry_root):
    good = make_pair("book-a", "1-1", "A", seed=1)
    missing = make_pair("book-a", "1-1", "B", seed=2)
    Path(missing.image_file).unlink()

    with pytest.raises(PublishError) as info:
        do_publish([good, missing])
    message = str(info.value)
    assert "book-a/1-1/B" in message and missing.image_file in message
    assert "book-a/1-1/A" not in message

    dataset_dir = registry_root / "mm-retinal"
    assert list_versions(registry_root, "mm-retinal") == []
    assert not dataset_dir.exists() or not [p for p in dataset_dir.iterdir() if p.name.startswith("v")]
    assert not dataset_dir.exists() or _leftovers(dataset_dir) == []


def test_image_with_wrong_hash_is_refused(make_pair, do_publish, registry_root, png_writer):
    pair = make_pair(seed=1)
    png_writer(Path(pair.image_file), seed=99)
    with pytest.raises(PublishError, match="book-a/3-12/A"):
        do_publish([pair])
    assert list_versions(registry_root, "mm-retinal") == []
    store_root = registry_root / "images"
    assert ImageStore(store_root).count_images() == 0
    assert not list(store_root.rglob(".tmp-*"))


def test_duplicate_pair_ids_are_refused(make_pair, do_publish):
    with pytest.raises(PublishError, match="duplicate pair ids"):
        do_publish([make_pair(seed=1), make_pair(seed=2)])


def test_same_figure_id_in_two_books_both_survive(make_pair, do_publish, registry_root):
    a = make_pair("book-a", "16-1", "1", seed=1, caption_en="Caption of book A.")
    b = make_pair("book-b", "16-1", "1", seed=2, caption_en="Caption of book B.")
    do_publish([a, b])
    rows = {r["pair_id"]: r for r in load_manifest(registry_root, "mm-retinal/latest").table.to_pylist()}
    assert set(rows) == {"book-a/16-1/1", "book-b/16-1/1"}
    assert rows["book-a/16-1/1"]["caption_en"] == "Caption of book A."
    assert rows["book-b/16-1/1"]["caption_en"] == "Caption of book B."
    assert rows["book-a/16-1/1"]["image_sha256"] == a.image_sha256


def test_versions_are_read_only(make_pair, do_publish):
    published = do_publish([make_pair(seed=1)])
    for name in ("manifest.parquet", "manifest.json"):
        assert not os.access(published.path / name, os.W_OK) or os.geteuid() == 0
        assert (published.path / name).stat().st_mode & 0o222 == 0


def test_explicit_parent_and_no_parent(make_pair, do_publish):
    do_publish([make_pair(seed=1)])
    do_publish([make_pair(seed=2)])
    assert do_publish([make_pair(seed=3)], parent="v1").meta.parent == "v1"
    assert do_publish([make_pair(seed=4)], parent=None).meta.parent is None
    with pytest.raises(PublishError, match="v9"):
        do_publish([make_pair(seed=5)], parent="v9")


def test_load_manifest_references(make_pair, do_publish, registry_root):
    do_publish([make_pair(seed=1)])
    do_publish([make_pair(seed=1), make_pair(figure_id="4-1", seed=2)])
    assert load_manifest(registry_root, "mm-retinal/v1").meta.n_pairs == 1
    meta, table = load_manifest(registry_root, "mm-retinal", "v2")
    assert meta.version == "v2" and table.num_rows == 2
    assert load_manifest(registry_root, "mm-retinal/latest").meta.version == "v2"
    assert load_manifest(registry_root, "mm-retinal").meta.version == "v2"
    loaded = load_manifest(registry_root, "mm-retinal/v2")
    frame = loaded.to_pandas()
    assert all(sha256_file(Path(f)) == s for f, s in zip(frame["image_file"], frame["image_sha256"]))


def test_image_store_option_and_env_var(make_pair, do_publish, registry_root, tmp_path, monkeypatch):
    custom = tmp_path / "custom-store"
    published = do_publish([make_pair(seed=1)], image_store=custom)
    assert ImageStore(custom).count_images() == 1
    assert published.meta.image_store == str(custom.resolve())
    assert not (registry_root / "images").exists()

    env_store = tmp_path / "env-store"
    monkeypatch.setenv("MMRETINAL_IMAGE_STORE", str(env_store))
    assert resolve_image_store(registry_root) == env_store.resolve()
    do_publish([make_pair(seed=2)])
    assert ImageStore(env_store).count_images() == 1

    monkeypatch.delenv("MMRETINAL_IMAGE_STORE")
    loaded = load_manifest(registry_root, "mm-retinal/v1")
    assert loaded.image_store == custom.resolve()


def test_store_put_is_idempotent_and_checks_hash(tmp_path, png_writer):
    image = tmp_path / "panel.png"
    sha = png_writer(image, seed=4)
    store = ImageStore(tmp_path / "store")
    first = store.put(image, sha)
    second = store.put(image, sha)
    assert first == second == f"{sha[:2]}/{sha}.png"
    assert store.count_images() == 1
    with pytest.raises(ImageStoreError, match="expected"):
        store.put(image, "0" * 64)
    with pytest.raises(ImageStoreError, match="not found"):
        store.put(tmp_path / "absent.png", sha)
    assert not list((tmp_path / "store").rglob(".tmp-*"))


def test_concurrent_thread_publishers_get_distinct_versions(make_pair, registry_root, publish_config):
    pairs = [make_pair(seed=1), make_pair(figure_id="5-1", seed=2)]
    results: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def worker() -> None:
        try:
            barrier.wait()
            published = publish(
                pairs, "mm-retinal", registry_root, config=publish_config, input_pdfs={}, pipeline_version="0.1.0"
            )
            results.append(published.version)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(results, key=lambda v: int(v[1:])) == [f"v{i}" for i in range(1, 7)]
    assert list_versions(registry_root, "mm-retinal") == [f"v{i}" for i in range(1, 7)]
    assert latest_version(registry_root, "mm-retinal") == "v6"
    assert _leftovers(registry_root / "mm-retinal") == []
    assert ImageStore(registry_root / "images").count_images() == 2


def _publish_in_process(pair_json: list[str], root: str, config: dict, start, queue) -> None:
    from foundation.records import Pair

    pairs = [Pair.model_validate_json(p) for p in pair_json]
    start.wait()
    published = publish(pairs, "mm-retinal", Path(root), config=config, input_pdfs={}, pipeline_version="0.1.0")
    queue.put(published.version)


def test_concurrent_process_publishers_get_distinct_versions(make_pair, registry_root, publish_config):
    pair_json = [make_pair(seed=1).model_dump_json()]
    context = multiprocessing.get_context("fork")
    start = context.Event()
    queue = context.Queue()
    processes = [
        context.Process(target=_publish_in_process, args=(pair_json, str(registry_root), publish_config, start, queue)) for _ in range(3)
    ]
    for process in processes:
        process.start()
    start.set()
    for process in processes:
        process.join(timeout=60)
    assert [p.exitcode for p in processes] == [0, 0, 0]
    versions = sorted(queue.get(timeout=5) for _ in processes)
    assert versions == ["v1", "v2", "v3"]
    assert _leftovers(registry_root / "mm-retinal") == []


def test_publishing_nothing_is_refused(make_pair, do_publish, registry_root):
    with pytest.raises(PublishError, match="no pairs left"):
        do_publish([make_pair(seed=1, modality="other")])
    assert list_versions(registry_root, "mm-retinal") == []
