"""`verify` checks everything a version claims; `publish` cleans up after a killed publish."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import signal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from data_manifests.registry import ImagePathError, load_manifest
from data_manifests.schema import content_fingerprint
from data_manifests.store import sha256_file
from data_manifests.verify import verify


def _edit_json(version_dir: Path, change) -> None:  # noqa: ANN001
    meta_file = version_dir / "manifest.json"
    meta = json.loads(meta_file.read_text())
    change(meta)
    meta_file.chmod(0o644)
    meta_file.write_text(json.dumps(meta, indent=2))
    meta_file.chmod(0o444)


EDITS = {
    "input pdf hash": lambda m: m["input_pdfs"].update({next(iter(m["input_pdfs"])): "0" * 64}),
    "pipeline version": lambda m: m.update(pipeline_version="9.9.9"),
    "counts": lambda m: m["counts"]["by_modality"].update(CFP=99),
    "exclusions": lambda m: m["excluded"].update(pairs=[], n_excluded=0, by_reason={}),
    "config": lambda m: m["config"].update(ocr={"engine": "paddleocr"}),
    "created": lambda m: m.update(created="2001-01-01T00:00:00+00:00"),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_edited_manifest_json_is_detected(edit, make_pair, do_publish, registry_root):
    """Problem 5: edits to manifest.json went undetected (verify exit 0)."""
    published = do_publish([make_pair(seed=1), make_pair(figure_id="2-1", seed=2, modality="other")])
    assert verify(registry_root, "mm-retinal/v1").ok
    _edit_json(published.path, EDITS[edit])
    report = verify(registry_root, "mm-retinal/v1")
    assert "manifest_altered" in {p.kind for p in report.problems}, report.problems
    assert all("\n" not in p.line() for p in report.problems)


def test_summary_is_recomputed_from_the_rows(make_pair, do_publish, registry_root):
    published = do_publish([make_pair(seed=1), make_pair(figure_id="2-1", seed=2, modality="other")])
    _edit_json(published.path, EDITS["counts"])
    _edit_json(published.path, EDITS["config"])
    details = [p.detail for p in verify(registry_root, "mm-retinal/v1").problems_of("summary_mismatch")]
    assert any(d.startswith("pairs by modality: manifest.json says {'CFP': 99}") for d in details), details
    assert any(d.startswith("config hash") for d in details), details


def test_image_path_outside_the_store_is_refused_even_with_updated_hashes(make_pair, do_publish, registry_root):
    """Problem 5: an image_path of ../../../../etc/passwd was accepted once the JSON's hashes matched."""
    published = do_publish([make_pair(seed=1)])
    parquet_file = published.path / "manifest.parquet"
    table = pq.read_table(parquet_file)
    forged = table.set_column(
        table.column_names.index("image_path"), table.schema.field("image_path"), pa.array(["../../../../etc/passwd"])
    )
    parquet_file.chmod(0o644)
    pq.write_table(forged, parquet_file)
    parquet_file.chmod(0o444)
    _edit_json(
        published.path,
        lambda m: m.update(manifest_parquet_sha256=sha256_file(parquet_file), content_fingerprint=content_fingerprint(forged)),
    )
    report = verify(registry_root, "mm-retinal/v1")
    kinds = {p.kind for p in report.problems}
    assert {"unconfined_image_path", "manifest_altered", "parquet_altered"} <= kinds, report.problems
    assert "missing_image" not in kinds and "altered_image" not in kinds  # /etc/passwd was never opened
    loaded = load_manifest(registry_root, "mm-retinal/v1")
    with pytest.raises(ImagePathError, match="not a path inside the image store"):
        loaded.image_file("../../../../etc/passwd")
    with pytest.raises(ImagePathError):
        loaded.image_file("/etc/passwd")


def test_writable_version_files_are_reported(make_pair, do_publish, registry_root):
    published = do_publish([make_pair(seed=1)])
    (published.path / "manifest.json").chmod(0o644)
    assert [p.kind for p in verify(registry_root, "mm-retinal/v1").problems] == ["writable_file"]


def test_manifest_show_warns_when_json_does_not_match_the_index(make_pair, do_publish, registry_root):
    from flows.cli import app

    published = do_publish([make_pair(seed=1)])
    _edit_json(published.path, EDITS["pipeline version"])
    result = CliRunner().invoke(app, ["manifest", "show", "mm-retinal/v1", "--registry", str(registry_root)])
    assert result.exit_code == 0, result.output
    assert "9.9.9" in result.output
    assert "does not match what the registry index recorded" in result.output


def _die_while_publishing(dataset_dir: Path, ready) -> None:  # noqa: ANN001
    """What a publish killed with -9 leaves: a temporary version directory (its lock died with
    it) and a half-written `latest`."""
    tmp_dir = dataset_dir / ".tmp-publish-killed"
    tmp_dir.mkdir()
    handle = open(tmp_dir / ".in-use", "a+b")
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    (tmp_dir / "manifest.parquet").write_bytes(b"half a parquet")
    (dataset_dir / ".latest.k1ll3d.tmp").write_text("v")
    ready.set()
    signal.pause()


def test_publish_cleans_up_after_a_killed_publish_and_fixes_latest(make_pair, do_publish, registry_root):
    """Problem 7: leftovers of kill -9 were never cleaned; a version stayed writable, latest stale."""
    do_publish([make_pair(seed=1)])
    v2 = do_publish([make_pair(seed=2)])
    dataset_dir = registry_root / "mm-retinal"
    (dataset_dir / "latest").write_text("v1\n")
    (v2.path / "manifest.json").chmod(0o644)

    context = multiprocessing.get_context("fork")
    ready = context.Event()
    child = context.Process(target=_die_while_publishing, args=(dataset_dir, ready))
    child.start()
    assert ready.wait(30)
    # a publish in progress (its lock held) must survive the cleanup
    busy = dataset_dir / ".tmp-publish-busy"
    busy.mkdir()
    busy_lock = open(busy / ".in-use", "a+b")
    fcntl.flock(busy_lock.fileno(), fcntl.LOCK_EX)
    os.kill(child.pid, signal.SIGKILL)
    child.join(30)
    try:
        v3 = do_publish([make_pair(seed=3)])
    finally:
        busy_lock.close()
    names = sorted(p.name for p in dataset_dir.iterdir())
    assert ".tmp-publish-killed" not in names and ".latest.k1ll3d.tmp" not in names
    assert ".tmp-publish-busy" in names
    assert (dataset_dir / "latest").read_text().strip() == v3.version == "v3"
    assert oct((v2.path / "manifest.json").stat().st_mode & 0o777) == "0o444"
    for version in ("v1", "v2", "v3"):
        assert verify(registry_root, f"mm-retinal/{version}").ok, version


def test_latest_is_made_consistent_even_when_nothing_new_is_published(make_pair, do_publish, registry_root):
    pair = make_pair(seed=1)
    do_publish([pair])
    do_publish([make_pair(seed=2)])
    (registry_root / "mm-retinal" / "latest").write_text("v1\n")
    unchanged = do_publish([make_pair(seed=2)], if_changed=True)
    assert unchanged.unchanged
    assert (registry_root / "mm-retinal" / "latest").read_text().strip() == "v2"


def test_publish_refuses_an_image_bomb_naming_the_pair(make_pair, do_publish, registry_root, tmp_path):
    from data_manifests.registry import PublishError
    from testbed.hostile_pdfs import bomb_png

    bomb = tmp_path / "bomb.png"
    bomb_png(bomb, 18000)
    pair = make_pair(seed=1, image_file=str(bomb), image_sha256=sha256_file(bomb))
    with pytest.raises(PublishError, match=r"pair book-a/3-12/A: .*18000×18000 image"):
        do_publish([pair, make_pair(figure_id="2-1", seed=2)])
    assert not (registry_root / "mm-retinal" / "v1").exists()
    assert not list(registry_root.rglob(f"{sha256_file(bomb)}*"))  # the bomb never entered the store


def test_image_path_not_named_by_its_hash_is_reported(make_pair, do_publish, registry_root):
    published = do_publish([make_pair(seed=1)])
    parquet_file = published.path / "manifest.parquet"
    table = pq.read_table(parquet_file)
    sha_column = table.column_names.index("image_sha256")
    forged = table.set_column(sha_column, table.schema.field("image_sha256"), pa.array(["z" * 64]))
    parquet_file.chmod(0o644)
    pq.write_table(forged, parquet_file)
    parquet_file.chmod(0o444)
    problems = verify(registry_root, "mm-retinal/v1").problems_of("unconfined_image_path")
    assert [p.detail for p in problems] == ["image_sha256 zzzzzzzzzzzzzzzz... is not a SHA-256 hex digest"]


@pytest.mark.parametrize("mode", [0o444, 0o644, 0o000])
def test_every_file_a_version_does_not_list_is_reported_whatever_its_mode(make_pair, do_publish, registry_root, mode):
    do_publish([make_pair("book-a", "1-1", "A", seed=1)])
    version_dir = registry_root / "mm-retinal" / "v1"
    extra = version_dir / "notes.txt"
    extra.write_text("added later")
    extra.chmod(mode)
    (version_dir / "more").mkdir()
    (version_dir / "link.parquet").symlink_to(version_dir / "manifest.parquet")
    try:
        problems = verify(registry_root, "mm-retinal/v1").problems
    finally:
        extra.chmod(0o644)
    unlisted = sorted(Path(p.path).name for p in problems if p.kind == "unlisted_file")
    assert unlisted == ["link.parquet", "more", "notes.txt"]
    assert all(p.kind == "unlisted_file" for p in problems)
