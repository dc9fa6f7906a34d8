"""The report model learns the synthetic pattern; selection uses validation only and test is scored once."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest
import torch

from keepfit.ffa.data import FFAIRSource, read_ffa_ir
from keepfit.ffa.metrics import caption_scores
from keepfit.ffa.training import (
    ReportTrainer,
    evaluate_report_checkpoint,
    generate_report,
    load_report_checkpoint,
    load_report_config,
)
from keepfit.ffa.vocab import clean_report


def test_generator_learns_the_pattern_far_above_a_constant_report(tiny_report_run, ffa_ir_annotation):
    config, result = tiny_report_run
    cases = read_ffa_ir(ffa_ir_annotation)
    most_common = Counter(c.report_en for c in cases.split("train")).most_common(1)[0][0]
    references = {c.case_id: clean_report(c.report_en) for c in cases.split("test")}
    constant = caption_scores(references, {k: clean_report(most_common) for k in references}, meteor=False)
    learned = result.test.scores.scores["BLEU_4"]
    assert learned > constant.scores["BLEU_4"] + 0.4, (learned, constant.scores["BLEU_4"])
    assert learned > 0.8
    assert result.history[-1]["train_loss"] < 0.5 * result.history[0]["train_loss"]


def test_selection_picks_the_best_validation_epoch_and_scores_test_once_at_the_end(tiny_report_run):
    config, result = tiny_report_run
    scores = [h["val"]["BLEU_4"] for h in result.history]
    assert result.best_epoch == scores.index(max(scores)) + 1
    epochs = len(result.history)
    assert result.splits_scored == [(e, "val") for e in range(1, epochs + 1)] + [(result.best_epoch, "test")]
    assert all("test" not in h for h in result.history)
    model, vocab, sidecar = load_report_checkpoint(result.best_checkpoint)
    assert sidecar["epoch"] == result.best_epoch and sidecar["validation"]["BLEU_4"] == max(scores)
    report_dir = Path(config.output_dir)
    assert (report_dir / "report.json").exists() and "Selected epoch" in (report_dir / "report.md").read_text()


def test_saved_generator_reproduces_its_validation_score_and_generates_from_a_case_folder(tiny_report_run, ffa_ir_annotation):
    config, result = tiny_report_run
    source = FFAIRSource(annotation=str(ffa_ir_annotation))
    validation = evaluate_report_checkpoint(result.best_checkpoint, source, split="val", num_workers=0, device="cpu", meteor=False)
    assert validation.scores.scores["BLEU_4"] == pytest.approx(result.best_validation["BLEU_4"], abs=1e-9)
    case = read_ffa_ir(ffa_ir_annotation).split("test")[2]
    text = generate_report(result.best_checkpoint, [Path(case.image_files[0]).parent], device="cpu")
    assert text == clean_report(case.report_en)


def test_training_without_test_scoring_never_opens_a_test_frame(ffa_ir_annotation, tmp_path):
    torch.set_num_threads(1)
    config = load_report_config(
        "tiny",
        {
            "data.ffa_ir": {"annotation": str(ffa_ir_annotation)},
            "output_dir": str(tmp_path / "run"),
            "cache_dir": str(tmp_path / "cache"),
            "epochs": 2,
            "score_test": False,
        },
    )
    result = ReportTrainer(config).fit()
    assert result.test is None and {split for _, split in result.splits_scored} == {"val"}
    cached = {p.stem for p in (tmp_path / "cache").rglob("*.png")}

    def key(path: str) -> str:
        stat = Path(path).stat()
        return hashlib.sha256(f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()

    cases = read_ffa_ir(ffa_ir_annotation)
    for split, expected in (("train", True), ("val", True), ("test", False)):
        frames = [f for c in cases.split(split) for f in c.image_files]
        opened = [key(f) in cached for f in frames]
        assert any(opened) is expected and (all(opened) or not expected), split


def test_validation_split_is_required_for_selection(ffa_ir_annotation, tmp_path):
    import json

    tree = json.loads(Path(ffa_ir_annotation).read_text())
    tree["val"] = {}
    path = tmp_path / "no-val.json"
    path.write_text(json.dumps(tree))
    config = load_report_config("tiny", {"data.ffa_ir": {"annotation": str(path), "image_root": str(Path(ffa_ir_annotation).parent)}})
    with pytest.raises(ValueError, match="no usable validation cases"):
        ReportTrainer(config)


def test_mmretinal_pairs_join_training_and_the_vocabulary(ffa_ir_annotation, ffa_manifest, tmp_path):
    registry, version = ffa_manifest
    config = load_report_config(
        "tiny",
        {
            "data.ffa_ir": {"annotation": str(ffa_ir_annotation)},
            "data.mmretinal": {"registry_root": str(registry), "version": version, "modalities": ["FFA"]},
            "data.mmretinal_ratio": 0.25,
            "data.sample_unit": "image",
            "output_dir": str(tmp_path / "run"),
            "epochs": 1,
            "test_meteor": False,
        },
    )
    trainer = ReportTrainer(config)
    assert len(trainer.extra) == 12 and "angiography" in trainer.vocab.index
    epoch = trainer.epoch_cases(1)
    assert sum(c.source == "mm-retinal" for c in epoch) == 8 and len(epoch) == 40
    result = trainer.fit()
    assert result.history[0]["train_loss"] > 0 and result.test is not None
    assert all("#" in case_id for case_id in result.test.generated), "image mode scores every frame"
