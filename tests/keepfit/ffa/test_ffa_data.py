"""FFA-IR annotation reading, bad input handling, MM-Retinal FFA pairs and the training mix."""

from __future__ import annotations

import json
import shutil

import pytest

from keepfit.ffa.data import (
    BadFFAInput,
    FFAReportDataset,
    case_samples,
    mixed_epoch,
    mmretinal_ffa_cases,
    pick_frames,
    read_ffa_ir,
)
from keepfit.ffa.training import ReportCollate
from keepfit.ffa.vocab import Vocabulary
from keepfit.mmretinal_data import ExpertDataConfig


def test_reads_splits_reports_chinese_text_and_lesions(ffa_ir_annotation):
    cases = read_ffa_ir(ffa_ir_annotation)
    assert {name: len(c) for name, c in cases.cases.items()} == {"train": 32, "val": 8, "test": 8}
    case = cases.split("train")[1]
    assert case.case_id == "train_0001" and 2 <= len(case.image_files) <= 3
    assert case.report_en.startswith("Hyperfluorescent leakage") and case.report_zh.startswith("黄斑区")
    assert case.lesions == ("leakage",)
    assert cases.skipped.total == 0


def _write(tmp_path, tree):
    path = tmp_path / "annotation.json"
    path.write_text(json.dumps(tree))
    return path


def test_bad_cases_are_skipped_and_counted_or_named_in_an_error(ffa_ir_annotation, tmp_path):
    frame = ffa_ir_annotation.parent / "images" / "train_0000" / "00.png"
    shutil.copy(frame, tmp_path / "ok.png")
    tree = {
        "train": {
            "good": {"Image_path": ["ok.png", "gone.png"], "En_Report": "Leakage at the macula."},
            "no_images": {"Image_path": [], "En_Report": "Text."},
            "all_missing": {"Image_path": ["gone.png"], "En_Report": "Text."},
            "empty_report": {"Image_path": ["ok.png"], "En_Report": "  "},
        },
        "val": {},
        "test": {},
    }
    path = _write(tmp_path, tree)
    cases = read_ffa_ir(path)
    assert [c.case_id for c in cases.split("train")] == ["good"]
    assert cases.split("train")[0].image_files == (str(tmp_path / "ok.png"),)
    assert dict(cases.skipped.counts) == {
        "missing image": 2,
        "case without images": 1,
        "none of the case's images exist": 1,
        "empty report": 1,
    }
    with pytest.raises(BadFFAInput, match=r"annotation.json: train/all_missing: none of the case's images exist"):
        read_ffa_ir(path, on_bad_case="error")


def test_unreadable_files_and_layouts_get_one_line_errors(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(BadFFAInput, match="broken.json: not a readable JSON"):
        read_ffa_ir(broken)
    with pytest.raises(BadFFAInput, match=r"split\(s\) \['val', 'test'\] not in the annotation"):
        read_ffa_ir(_write(tmp_path, {"train": {}}))
    with pytest.raises(FileNotFoundError, match="annotation file not found"):
        read_ffa_ir(tmp_path / "absent.json")


def test_unreadable_frame_is_dropped_and_empty_sample_left_out_of_the_batch(ffa_ir_annotation, tmp_path):
    cases = read_ffa_ir(ffa_ir_annotation).split("val")[:2]
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not an image")
    broken_case = cases[0].__class__(**{**cases[0].__dict__, "image_files": (str(corrupt),)})
    partly = cases[1].__class__(**{**cases[1].__dict__, "image_files": (str(corrupt), *cases[1].image_files)})
    dataset = FFAReportDataset([broken_case, partly], image_size=32, max_frames=8)
    assert dataset[0] is None
    assert dataset[1]["images"].shape == (len(cases[1].image_files), 3, 32, 32)
    vocab = Vocabulary.build([c.report_en for c in cases], min_frequency=1)
    batch = ReportCollate(vocab, 40)([dataset[0], dataset[1]])
    assert batch["case_ids"] == [partly.case_id] and batch["frame_counts"].tolist() == [len(cases[1].image_files)]
    assert batch["inputs"][0, 0] == vocab.bos_id and batch["targets"][0, (batch["targets"][0] > 0).sum() - 1] == vocab.eos_id


def test_mmretinal_ffa_pairs_are_verified_and_mixed_by_ratio(ffa_manifest, ffa_ir_annotation):
    registry, version = ffa_manifest
    config = ExpertDataConfig(registry_root=str(registry), version=version, modalities=["FFA"])
    extra = mmretinal_ffa_cases(config)
    assert len(extra.split("train")) == 12 and all(c.source == "mm-retinal" for c in extra.split("train"))
    victim = extra.split("train")[0].image_files[0]
    original = open(victim, "rb").read()
    try:
        with open(victim, "ab") as handle:
            handle.write(b"tampered")
        tampered = mmretinal_ffa_cases(config)
        assert len(tampered.split("train")) == 11
        assert dict(tampered.skipped.counts) == {"image missing or altered": 1}
        with pytest.raises(BadFFAInput, match="does not match its manifest sha256"):
            mmretinal_ffa_cases(config, on_bad_case="error")
    finally:
        with open(victim, "wb") as handle:
            handle.write(original)

    primary = read_ffa_ir(ffa_ir_annotation).split("train")
    epoch1 = mixed_epoch(primary, extra.split("train"), 0.25, seed=0, epoch=1)
    assert len(epoch1) == 40 and sum(c.source == "mm-retinal" for c in epoch1) == 8
    assert epoch1 == mixed_epoch(primary, extra.split("train"), 0.25, seed=0, epoch=1)
    assert [c.case_id for c in epoch1] != [c.case_id for c in mixed_epoch(primary, extra.split("train"), 0.25, 0, 2)]
    assert [c.case_id for c in epoch1[:8]] != [c.case_id for c in primary[:8]], "training order is shuffled"
    oversampled = mixed_epoch(primary[:4], extra.split("train"), 5.0, seed=0, epoch=1)
    assert sum(c.source == "mm-retinal" for c in oversampled) == 20


def test_image_samples_and_frame_selection(ffa_ir_annotation):
    cases = read_ffa_ir(ffa_ir_annotation).split("test")
    per_image = case_samples(cases, "image")
    assert len(per_image) == sum(len(c.image_files) for c in cases)
    assert per_image[0].case_id == f"{cases[0].case_id}#0" and per_image[0].report_en == cases[0].report_en
    assert pick_frames(10, 4) == [0, 3, 6, 9]
    assert pick_frames(3, 8) == [0, 1, 2]
