"""Exports read back by the libraries training code uses: datasets, webdataset and mlcroissant."""

from __future__ import annotations

import hashlib
import importlib
import io
import json

import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from data_manifests.ml_exports import (
    WebDatasetExportOptions,
    export_croissant,
    export_hf,
    export_webdataset,
)
from data_manifests.registry import load_manifest
from flows import commands_manifest


@pytest.fixture
def version(make_pair, do_publish, registry_root):
    """mm-retinal/v1 with three modalities, a sub-label, a machine caption and a pair left out at publish."""
    pairs = [
        make_pair("book-a", "1-1", "A", seed=1, caption_en="Normal fundus.\nRight eye."),
        make_pair("book-a", "1-1", "B", seed=2, modality_sublabel="red-free"),
        make_pair("book-b", "5-3", None, seed=3, modality="FFA", modality_sublabel="ICGA", caption_zh_origin="printed"),
        make_pair("book-b", "6-1", "C", seed=4, modality="OCT", caption_en_origin="machine"),
        make_pair("book-b", "6-2", None, seed=5, modality="other"),
    ]
    published = do_publish(pairs)
    return load_manifest(registry_root, published.ref), {p.pair_id: p for p in pairs}


def test_hf_export_loads_from_disk_and_as_parquet(version, tmp_path):
    from datasets import load_dataset, load_from_disk

    loaded, pairs = version
    out = tmp_path / "hf"
    summary = export_hf(loaded, out)
    assert summary.errors == [] and summary.n_rows == 4
    assert summary.content_fingerprint == loaded.meta.content_fingerprint

    dataset = load_from_disk(str(out))
    assert dataset.num_rows == 4
    assert type(dataset.features["image"]).__name__ == "Image"
    row = dataset[0]
    assert row["pair_id"] == "book-a/1-1/A"
    assert row["caption_en"] == "Normal fundus.\nRight eye."
    assert row["caption_zh"].startswith("视网膜")
    assert row["manifest_fingerprint"] == loaded.meta.content_fingerprint
    assert row["image"].size == (12, 9)
    by_id = {r["pair_id"]: r for r in dataset}
    assert by_id["book-b/5-3/-"]["modality_sublabel"] == "ICGA"
    assert by_id["book-b/6-1/C"]["caption_en_origin"] == "machine"
    assert "book-b/6-2/-" not in by_id

    parquet = load_dataset(
        "parquet", data_files=str(out / "data" / "train-*.parquet"), split="train", cache_dir=str(tmp_path / "hf-cache")
    )
    assert sorted(parquet["pair_id"]) == sorted(by_id)
    image = parquet[0]["image"]
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    assert Image.open(buffer).size == (12, 9)

    card = (out / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nlicense: other")
    assert loaded.meta.content_fingerprint in card
    assert "| CFP | 2 |" in card and "| FFA / ICGA | 1 |" in card
    assert "book-a.pdf" in card and "Licences to check" in card and "How it was built" in card
    record = json.loads((out / "export.json").read_text())
    assert record["content_fingerprint"] == loaded.meta.content_fingerprint and record["ref"] == "mm-retinal/v1"


def test_webdataset_shards_read_back_by_webdataset(version, tmp_path):
    import webdataset as wds

    loaded, pairs = version
    out = tmp_path / "wds"
    summary = export_webdataset(loaded, out, options=WebDatasetExportOptions(samples_per_shard=3, language="zh"))
    assert summary.n_rows == 4 and summary.files == ["mm-retinal-000000.tar", "mm-retinal-000001.tar"]
    record = json.loads((out / "export.json").read_text())
    assert [shard["samples"] for shard in record["shards"]] == [3, 1]

    shards = [str(out / name) for name in summary.files]
    samples = list(wds.WebDataset(shards, shardshuffle=False).decode("pil"))
    assert len(samples) == 4
    by_id = {sample["json"]["pair_id"]: sample for sample in samples}
    assert set(by_id) == {"book-a/1-1/A", "book-a/1-1/B", "book-b/5-3/-", "book-b/6-1/C"}
    sample = by_id["book-b/5-3/-"]
    assert sample["__key__"] == "book-b__5-3__-"
    assert sample["txt"] == "视网膜中央静脉阻塞。图5-3"
    assert sample["json"]["modality"] == "FFA" and sample["json"]["modality_sublabel"] == "ICGA"
    assert sample["json"]["manifest_fingerprint"] == loaded.meta.content_fingerprint
    assert isinstance(sample["png"], Image.Image) and sample["png"].size == (12, 9)

    raw = next(iter(wds.WebDataset(shards[:1], shardshuffle=False)))
    assert hashlib.sha256(raw["png"]).hexdigest() == json.loads(raw["json"])["image_sha256"]

    again = export_webdataset(loaded, out, overwrite=True, options=WebDatasetExportOptions(samples_per_shard=3, language="zh"))
    assert (out / again.files[0]).read_bytes() == open(shards[0], "rb").read()


def test_croissant_validates_and_yields_records_with_images(version, tmp_path):
    import mlcroissant as mlc

    loaded, _ = version
    out = tmp_path / "croissant"
    summary = export_croissant(loaded, out)
    assert summary.errors == [] and summary.n_rows == 4

    dataset = mlc.Dataset(jsonld=str(out / "croissant.json"))  # raises ValidationError on any error
    assert dataset.metadata.issues.errors == set()
    assert loaded.meta.content_fingerprint in dataset.metadata.description
    manifest_file = next(d for d in dataset.metadata.distribution if d.name == "manifest")
    assert manifest_file.sha256 == loaded.meta.manifest_parquet_sha256

    records = list(dataset.records("pairs"))
    assert len(records) == 4
    by_id = {r["pairs/pair_id"].decode(): r for r in records}
    assert by_id["book-b/6-1/C"]["pairs/modality"] == b"OCT"
    assert by_id["book-a/1-1/B"]["pairs/modality_sublabel"] == b"red-free"
    assert all(r["pairs/image"].size == (12, 9) for r in records)


@pytest.mark.parametrize("export", [export_hf, export_webdataset, export_croissant])
def test_export_leaves_out_a_missing_image_and_says_so(version, tmp_path, export):
    loaded, _ = version
    oct_row = next(r for r in loaded.table.to_pylist() if r["modality"] == "OCT")
    loaded.image_file(oct_row["image_path"]).unlink()
    summary = export(loaded, tmp_path / "out")
    assert summary.n_rows == 3
    assert len(summary.errors) == 1 and oct_row["pair_id"] in summary.errors[0]
    assert json.loads((tmp_path / "out" / "export.json").read_text())["errors"] == summary.errors


@pytest.fixture
def app() -> typer.Typer:
    cli = importlib.import_module("flows.cli")
    if "flows.commands_manifest" in cli.COMMAND_MODULES:
        return cli.app
    standalone = typer.Typer()
    commands_manifest.register(standalone)
    return standalone


@pytest.mark.parametrize("export_format", ["hf", "webdataset", "croissant"])
def test_export_command_writes_each_format(app, version, registry_root, tmp_path, export_format):
    out = tmp_path / export_format
    result = CliRunner().invoke(
        app, ["export", "mm-retinal/v1", "--format", export_format, "--out", str(out), "--root", str(registry_root)]
    )
    assert result.exit_code == 0, result.output
    fingerprint = version[0].meta.content_fingerprint
    assert f"{export_format}: mm-retinal/v1 ({fingerprint[:12]}), 4 pairs" in result.output
    assert json.loads((out / "export.json").read_text())["content_fingerprint"] == fingerprint


def test_export_command_names_a_target_that_is_a_file(app, version, registry_root, tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    result = CliRunner().invoke(
        app, ["export", "mm-retinal/v1", "--format", "hf", "--out", str(target), "--root", str(registry_root)]
    )
    assert result.exit_code == 2
    assert f"export target {target} exists and is not a folder" in result.output and "Traceback" not in result.output
