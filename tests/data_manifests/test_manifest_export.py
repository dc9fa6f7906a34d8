"""Export of a version into the CSV dataframes the KeepFIT training code reads."""

from __future__ import annotations

import ast
import os

import pandas as pd

from data_manifests.export import FlairExportOptions, export_flair_csv
from data_manifests.registry import load_manifest
from data_manifests.store import sha256_file


def _publish_mixed(make_pair, do_publish):
    pairs = [
        make_pair("book-a", "1-1", "A", seed=1, caption_en="Normal fundus.\nRight eye."),
        make_pair("book-a", "1-1", "B", seed=2, caption_en="Normal fundus. Left eye's \"disc\"."),
        make_pair("book-b", "5-3-1", None, seed=3, modality="FFA", caption_en="Central retinal vein occlusion. Late phase."),
        make_pair("book-b", "6-1", "C", seed=4, modality="OCT", caption_en="Macular edema, 'cystoid'."),
        make_pair("book-c", "2-1", None, seed=5, caption_en=None, caption_en_origin="missing"),
    ]
    do_publish(pairs)
    return pairs


def test_export_writes_both_csv_forms(make_pair, do_publish, registry_root, tmp_path):
    pairs = _publish_mixed(make_pair, do_publish)
    out = tmp_path / "export"
    result = export_flair_csv("mm-retinal/v1", out, root=registry_root)

    assert result.errors == []
    assert result.skipped_no_caption == ["book-c/2-1/-"]
    assert result.rows == {"CFP": 2, "FFA": 1, "OCT": 1}

    cfp = pd.read_csv(out / "39_MM_Retinal_dataset.csv")
    assert list(cfp.columns) == ["image", "caption"]
    assert list(cfp["caption"]) == ["Normal fundus. Right eye.", "Normal fundus. Left eye's \"disc\"."]

    ffa = pd.read_csv(out / "MM-Retinal_FFA.csv")
    assert list(ffa.columns) == ["image", "atributes", "categories"]
    assert ast.literal_eval(ffa["categories"][0]) == ["Central retinal vein occlusion. Late phase."]
    assert ast.literal_eval(ffa["atributes"][0]) == []
    oct_frame = pd.read_csv(out / "OCT17_MM_Retinal_OCT.csv")
    assert ast.literal_eval(oct_frame["categories"][0]) == ["Macular edema, 'cystoid'."]

    by_id = {p.pair_id: p for p in pairs}
    image_root = out / "images"
    for frame in (cfp, ffa, oct_frame):
        for image in frame["image"]:
            assert not os.path.isabs(image)
            assert (image_root / image).is_file()
    assert cfp["image"][0] == "39_MM_Retinal_dataset/CFP/book-a__1-1__A.png"
    assert sha256_file(image_root / cfp["image"][0]) == by_id["book-a/1-1/A"].image_sha256
    assert sha256_file(image_root / ffa["image"][0]) == by_id["book-b/5-3-1/-"].image_sha256


def test_export_chinese_captions_with_symlinks_into_given_image_root(make_pair, do_publish, registry_root, tmp_path):
    _publish_mixed(make_pair, do_publish)
    image_root = tmp_path / "datasets"
    options = FlairExportOptions(language="zh", image_root=image_root, link_mode="symlink")
    loaded = load_manifest(registry_root, "mm-retinal/v1")
    result = export_flair_csv(loaded, tmp_path / "zh", options=options)

    assert result.skipped_no_caption == []
    cfp = pd.read_csv(tmp_path / "zh" / "39_MM_Retinal_dataset.csv")
    assert len(cfp) == 3
    assert cfp["caption"][0] == "视网膜中央静脉阻塞。图1-1A"
    ffa = pd.read_csv(tmp_path / "zh" / "MM-Retinal_FFA.csv")
    assert ast.literal_eval(ffa["categories"][0]) == ["视网膜中央静脉阻塞。图5-3-1"]
    first = image_root / cfp["image"][0]
    assert first.is_symlink() and first.resolve().is_relative_to((registry_root / "images").resolve())


def test_export_rerun_is_idempotent_and_reports_missing_store_image(make_pair, do_publish, registry_root, tmp_path):
    _publish_mixed(make_pair, do_publish)
    out = tmp_path / "export"
    first = export_flair_csv("mm-retinal/v1", out, root=registry_root)
    csv_bytes = (out / "39_MM_Retinal_dataset.csv").read_bytes()
    second = export_flair_csv("mm-retinal/v1", out, root=registry_root, overwrite=True)
    assert first.rows == second.rows
    assert (out / "39_MM_Retinal_dataset.csv").read_bytes() == csv_bytes

    loaded = load_manifest(registry_root, "mm-retinal/v1")
    ffa_row = [r for r in loaded.table.to_pylist() if r["modality"] == "FFA"][0]
    loaded.image_file(ffa_row["image_path"]).unlink()
    third = export_flair_csv(loaded, tmp_path / "again", options=FlairExportOptions())
    assert len(third.errors) == 1 and ffa_row["pair_id"] in third.errors[0]
    assert third.rows == {"CFP": 2, "FFA": 0, "OCT": 1}
    assert list(pd.read_csv(tmp_path / "again" / "MM-Retinal_FFA.csv").columns) == ["image", "atributes", "categories"]
