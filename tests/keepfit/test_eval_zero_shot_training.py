"""Zero-shot of a tiny model pretrained briefly (with keepfit's trainer) on hue-coded image-text pairs.

Pretraining captions name the class ("A fundus photograph of glaucoma"); the held-out images are
new draws of the same appearance. Zero-shot must beat chance (1/3) clearly, while the untrained
model of the same architecture stays near it.
"""

from __future__ import annotations

import math

from keepfit.evaluation import EvaluationOptions, MethodOptions, evaluate_checkpoint
from keepfit.evaluation.synthetic import write_registry, write_synthetic_dataset
from keepfit.trainer import PretrainConfig, run_pretraining

CLASSES = ["normal", "glaucoma", "drusen"]


def test_zero_shot_after_brief_pretraining_beats_chance(tmp_path):
    write_synthetic_dataset(tmp_path, CLASSES, per_class=40, size=32, seed=1, name="pretrain")
    heldout = write_synthetic_dataset(tmp_path, CLASSES, per_class=15, size=32, seed=2, name="heldout")
    registry = write_registry(tmp_path / "registry.yaml", [heldout])
    config = PretrainConfig(
        model="tiny",
        model_overrides={"image_size": 32},
        flair={
            "dataframes": [str(tmp_path / "pretrain.csv")],
            "image_root": str(tmp_path),
            "domain_knowledge": False,
            "banned_categories": [],
        },
        loss={"expert_clip_weight": 0.0, "knowledge_mse_weight": 0.0},
        optim={"lr": 2e-3, "warmup_steps": 2},
        batch_size=12,
        max_steps=30,
        device="cpu",
        amp="off",
        num_workers=0,
        output_dir=str(tmp_path / "run"),
        tensorboard=False,
        progress_bar=False,
        resume=None,
        allow_random_init=True,
    )
    trained = run_pretraining(config)
    assert trained.checkpoint is not None and trained.checkpoint.exists()

    options = EvaluationOptions(
        data_root=str(tmp_path),
        registry_paths=[str(registry)],
        cache_dir=str(tmp_path / "features"),
        methods=MethodOptions(prompts={"domain_knowledge": False}),
    )
    [result] = evaluate_checkpoint(trained.checkpoint, ["heldout"], ["zero_shot"], options)
    assert result.split.test == "100%" and result.folds[0].n_test == 45
    aca, _ = result.metric("aca")
    auc, _ = result.metric("auc")
    assert aca >= 0.6, f"zero-shot ACA {aca:.3f} after pretraining"
    assert auc >= 0.8

    [untrained] = evaluate_checkpoint("tiny", ["heldout"], ["zero_shot"], options)
    assert untrained.model_sha256 != result.model_sha256
    assert aca >= untrained.metric("aca")[0] + 0.15
    assert not math.isnan(untrained.metric("auc")[0])
