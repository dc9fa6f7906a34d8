"""KeepFIT-FFA pretraining on the existing trainer: FFA-IR reports + MM-Retinal FFA pairs."""

from __future__ import annotations

import json
import math

import pytest

from keepfit.ffa.pretraining import FFAIRPretrainConfig, FFAIRPretrainDataset
from keepfit.trainer import Trainer, load_pretrain_config


def _overrides(ffa_ir_annotation, ffa_manifest, tmp_path, **extra):
    registry, version = ffa_manifest
    return {
        "model": "tiny",
        "ffa_ir": {"annotation": str(ffa_ir_annotation)},
        "expert.registry_root": str(registry),
        "expert.version": version,
        "expert.modalities": ["FFA"],
        "output_dir": str(tmp_path / "run"),
        "batch_size": 8,
        "num_workers": 0,
        "device": "cpu",
        "amp": "off",
        "tensorboard": False,
        "progress_bar": False,
        "log_every": 1,
        **extra,
    }


def test_bundled_keepfit_ffa_config_uses_ffa_ir_and_ffa_pairs():
    config = load_pretrain_config("keepfit-ffa")
    assert config.ffa_ir is not None and config.ffa_ir.splits == ["train"]
    assert config.expert.modalities == ["FFA"] and config.loss.knowledge_mse_weight == 100.0
    assert load_pretrain_config("keepfit-cfp").ffa_ir is None


def test_ffa_pretraining_lowers_its_loss_and_records_its_data(ffa_ir_annotation, ffa_manifest, tmp_path):
    config = load_pretrain_config(
        "tiny",
        _overrides(ffa_ir_annotation, ffa_manifest, tmp_path, max_steps=24, **{"optim.lr": 2e-3, "optim.warmup_steps": 2}),
    )
    trainer = Trainer(config)
    assert len(trainer.flair_dataset) == sum(len(c.image_files) for c in trainer.flair_dataset.cases)
    assert len(trainer.expert_dataset) == 12
    result = trainer.fit()
    losses = [h["total"] for h in result.history]
    assert result.step == 24 and all(math.isfinite(x) for x in losses)
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.7 * first, losses
    sidecar = json.loads(result.checkpoint.with_name(result.checkpoint.name + ".json").read_text())
    assert sidecar["ffa_ir"]["cases"] == {"train": 32} and len(sidecar["ffa_ir"]["annotation_sha256"]) == 64
    assert sidecar["mmretinal_manifest"]["n_pairs"] == 12


def test_frames_of_one_case_share_its_report_as_category(ffa_ir_annotation):
    dataset = FFAIRPretrainDataset(FFAIRPretrainConfig(annotation=str(ffa_ir_annotation)), image_size=48)
    first, second = dataset[(0, 0)], dataset[(1, 0)]
    assert first["category_index"] == second["category_index"] == 0 and first["text"] == second["text"]
    assert first["category_multi_hot"].sum() == 1 and first["image"].shape == (3, 48, 48)
    by_case = FFAIRPretrainDataset(FFAIRPretrainConfig(annotation=str(ffa_ir_annotation), sample_unit="case"), 48)
    assert len(by_case) == 32
    with pytest.raises(ValueError, match="test split would leak"):
        FFAIRPretrainDataset(FFAIRPretrainConfig(annotation=str(ffa_ir_annotation), splits=["train", "test"]), 48)


def test_ffa_pretraining_resumes_exactly(ffa_ir_annotation, ffa_manifest, tmp_path):
    import torch

    base = _overrides(ffa_ir_annotation, ffa_manifest, tmp_path, max_steps=4, checkpoint_every=100,
                      **{"optim.warmup_steps": 1, "ffa_ir.sample_unit": "case"})
    straight = Trainer(load_pretrain_config("tiny", {**base, "output_dir": str(tmp_path / "straight")})).fit()
    split = {**base, "output_dir": str(tmp_path / "split")}
    first = Trainer(load_pretrain_config("tiny", {**split, "stop_after_steps": 2})).fit()
    assert first.step == 2 and first.stopped_early
    second = Trainer(load_pretrain_config("tiny", split)).fit()
    expected = torch.load(straight.checkpoint, weights_only=True)
    resumed = torch.load(second.checkpoint, weights_only=True)
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key
