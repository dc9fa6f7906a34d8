import json
import math

import pytest
import torch

import keepfit
from keepfit.checkpoint import read_sidecar
from keepfit.trainer import Trainer, load_pretrain_config, parse_override, warmup_cosine


def _config(overrides: dict, **extra):
    return load_pretrain_config("tiny", {**overrides, **extra})


def test_short_run_on_synthetic_pairs_lowers_the_loss(tiny_pretrain_overrides):
    config = _config(tiny_pretrain_overrides, max_steps=24, **{"optim.lr": 2e-3, "optim.warmup_steps": 2})
    result = Trainer(config).fit()
    losses = [h["total"] for h in result.history]
    assert result.step == 24 and result.stop_reason == "completed"
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.7 * first, losses
    assert all(math.isfinite(x) for x in losses)
    for key in ("flair_clip", "expert_clip", "knowledge_mse", "lr", "logit_scale", "samples_per_s"):
        assert key in result.history[-1]


def test_stopping_and_resuming_ends_with_the_same_parameters(tiny_pretrain_overrides, tmp_path):
    base = {**tiny_pretrain_overrides, "max_steps": 6, "optim.warmup_steps": 2, "checkpoint_every": 100}
    uninterrupted = Trainer(_config(base, output_dir=str(tmp_path / "straight"))).fit()

    split = {**base, "output_dir": str(tmp_path / "split")}
    first = Trainer(_config(split, stop_after_steps=3)).fit()
    assert first.step == 3 and first.stopped_early and first.checkpoint.name == "step-0000003.pth"
    resumed = Trainer(_config(split))
    assert resumed.step == 3
    second = resumed.fit()
    assert second.step == 6

    straight = torch.load(uninterrupted.checkpoint, weights_only=True)
    continued = torch.load(second.checkpoint, weights_only=True)
    assert straight.keys() == continued.keys()
    for key in straight:
        assert torch.equal(straight[key], continued[key]), key
    tail = [h["total"] for h in uninterrupted.history[3:]]
    assert tail == [h["total"] for h in second.history]


def test_schedule_warms_up_linearly_then_follows_cosine_over_the_actual_run(tiny_pretrain_overrides):
    trainer = Trainer(_config(tiny_pretrain_overrides, epochs=2, max_steps=None, **{"optim.warmup_epochs": 1.0, "optim.warmup_steps": None}))
    assert trainer.steps_per_epoch == len(trainer.flair_dataset) // 8
    assert trainer.total_steps == 2 * trainer.steps_per_epoch
    assert trainer.warmup_steps == trainer.steps_per_epoch
    peak = trainer.config.optim.lr
    assert trainer.scheduler.get_last_lr()[0] == pytest.approx(peak / trainer.warmup_steps)
    factor = warmup_cosine(4, 10)
    assert [round(factor(s), 4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(4) == 1.0 and factor(10) == pytest.approx(0.0) and factor(7) == pytest.approx(0.5)


def test_checkpoints_record_config_code_version_and_manifest(tiny_pretrain_overrides, synthetic_pretraining_data):
    result = Trainer(_config(tiny_pretrain_overrides, max_steps=2, checkpoint_every=1, keep_checkpoints=1)).fit()
    sidecar = read_sidecar(result.checkpoint)
    assert sidecar["step"] == 2 and sidecar["code_version"]
    assert sidecar["pretrain_config"]["model"] == "tiny"
    assert sidecar["mmretinal_manifest"]["version"] == synthetic_pretraining_data["version"]
    assert len(sidecar["mmretinal_manifest"]["content_fingerprint"]) == 64
    checkpoint_dir = result.checkpoint.parent
    assert sorted(p.name for p in checkpoint_dir.glob("*.pth")) == ["step-0000002.pth"]
    assert json.loads((checkpoint_dir / "latest.json").read_text())["step"] == 2
    model = keepfit.load(result.checkpoint)
    assert model.encode_image(torch.rand(1, 3, 48, 48)).shape == (1, 32)


def test_overrides_are_typed_by_the_config_model(tmp_path):
    assert parse_override("flair.dataframes=[a.csv]") == ("flair.dataframes", ["a.csv"])
    config = load_pretrain_config(
        "tiny",
        ["optim.lr=3e-4", "batch_size=16", "flair.dataframes=[a.csv, b.csv]", "amp=off",
         "model_overrides.text.padded_mean=true", "expert.language=zh"],
    )
    assert config.optim.lr == 3e-4 and config.batch_size == 16 and config.amp == "off"
    assert config.flair.dataframes == ["a.csv", "b.csv"]
    assert config.model_overrides == {"text.padded_mean": True} and config.expert.language == "zh"
    with pytest.raises(ValueError):
        load_pretrain_config("tiny", ["optim.learning_rate=1"])
    with pytest.raises(ValueError):
        load_pretrain_config("tiny", ["batch_size=many"])
    with pytest.raises(ValueError, match="key=value"):
        parse_override("batch_size")


def test_fresh_run_refuses_random_towers_unless_allowed(tiny_pretrain_overrides, tmp_path):
    refused = _config(tiny_pretrain_overrides, allow_random_init=False, output_dir=str(tmp_path / "refused"))
    with pytest.raises(ValueError, match="refusing to pretrain from random vision and text tower"):
        Trainer(refused)
    assert not (tmp_path / "refused" / "checkpoints").exists()
    result = Trainer(_config(tiny_pretrain_overrides, max_steps=1, output_dir=str(tmp_path / "allowed"))).fit()
    record = read_sidecar(result.checkpoint)["tower_init"]
    assert record["vision"] == {"init": "random", "file": None, "sha256": None}
    assert record["text"]["init"] == "random"


def test_sidecar_records_the_weights_file_and_sha256_each_tower_started_from(tiny_pretrain_overrides, tmp_path):
    import hashlib

    import torchvision
    from transformers import BertConfig, BertModel

    weights_file = tmp_path / "resnet18-imagenet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights_file)
    text_dir = tmp_path / "tiny-bert"
    BertModel(BertConfig(vocab_size=288, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(text_dir)
    overrides = {
        **tiny_pretrain_overrides, "allow_random_init": False, "max_steps": 1,
        "model_overrides.vision.arch": "resnet18", "model_overrides.vision.pretrained": True,
        "model_overrides.vision.weights_path": str(weights_file),
        "model_overrides.text.model_name": str(text_dir), "model_overrides.text.pretrained": True,
        "model_overrides.text.architecture": None,
    }
    result = Trainer(load_pretrain_config("tiny", overrides)).fit()
    record = read_sidecar(result.checkpoint)["tower_init"]
    assert record["vision"]["file"] == str(weights_file)
    assert record["vision"]["sha256"] == hashlib.sha256(weights_file.read_bytes()).hexdigest()
    text_file = next(p for p in text_dir.iterdir() if p.suffix in (".safetensors", ".bin"))
    assert record["text"]["init"] == f"pretrained:{text_dir}" and record["text"]["file"] == str(text_file)
    assert record["text"]["sha256"] == hashlib.sha256(text_file.read_bytes()).hexdigest()


def _deterministic(overrides: dict) -> dict:
    """No dropout, no augmentation, fixed BatchNorm statistics: one large batch and its micro-batches see
    exactly the same computation, so their updates can be compared to float precision."""
    return {
        **overrides,
        "augment.enabled": False,
        "model_overrides.vision.batchnorm_stats": "running",
        "model_overrides.attention.dropout": 0.0,
        "model_overrides.text.architecture.hidden_dropout_prob": 0.0,
        "model_overrides.text.architecture.attention_probs_dropout_prob": 0.0,
        "max_steps": 1,
        "optim.warmup_steps": 1,
    }


@pytest.mark.parametrize("soft_targets", ["sampled_category", "multi_hot"])
def test_gradient_accumulation_gives_the_update_of_one_large_batch(tiny_pretrain_overrides, tmp_path, soft_targets):
    base = _deterministic({**tiny_pretrain_overrides, "loss.soft_targets": soft_targets})
    large = Trainer(_config(base, batch_size=16, grad_accumulation=1, output_dir=str(tmp_path / "large")))
    accumulated = Trainer(_config(base, batch_size=8, grad_accumulation=2, output_dir=str(tmp_path / "accum")))
    start = {k: v.clone() for k, v in large.model.state_dict().items()}
    for key, value in accumulated.model.state_dict().items():
        assert torch.equal(value, start[key]), key  # same seed, same initial weights
    large_result = large.fit()
    accumulated_result = accumulated.fit()
    assert large_result.last_terms["total"] == pytest.approx(accumulated_result.last_terms["total"], rel=1e-5)
    assert large_result.last_terms["grad_norm"] == pytest.approx(accumulated_result.last_terms["grad_norm"], rel=1e-4)
    moved = 0
    for key, value in large.model.state_dict().items():
        other = accumulated.model.state_dict()[key]
        torch.testing.assert_close(other, value, atol=2e-6, rtol=1e-4, msg=key)
        moved += int(not torch.equal(value, start[key]))
    assert moved > 10  # the step changed the weights, identically


def test_fp16_with_grad_scaler_trains_and_resumes(tiny_pretrain_overrides, tmp_path):
    config = _config(tiny_pretrain_overrides, amp="fp16", max_steps=3, checkpoint_every=100,
                     output_dir=str(tmp_path / "fp16"), **{"optim.warmup_steps": 1})
    trainer = Trainer(config)
    assert trainer.amp_dtype == torch.float16 and trainer.scaler.is_enabled()
    result = trainer.fit()
    assert result.step == 3 and all(math.isfinite(h["total"]) for h in result.history)
    state = torch.load(result.checkpoint.with_name("step-0000003.state.pt"), weights_only=True)
    assert state["scaler"]["scale"] > 0
    resumed = Trainer(_config(tiny_pretrain_overrides, amp="fp16", max_steps=4, output_dir=str(tmp_path / "fp16")))
    assert resumed.step == 3 and resumed.scaler.get_scale() == state["scaler"]["scale"]
    assert resumed.fit().step == 4


def test_resume_with_loader_workers_is_exact(tiny_pretrain_overrides, tmp_path):
    base = {**tiny_pretrain_overrides, "max_steps": 4, "optim.warmup_steps": 2, "checkpoint_every": 100,
            "num_workers": 2}
    uninterrupted = Trainer(_config(base, output_dir=str(tmp_path / "straight"))).fit()
    split = {**base, "output_dir": str(tmp_path / "split")}
    Trainer(_config(split, stop_after_steps=2)).fit()
    second = Trainer(_config(split)).fit()
    straight = torch.load(uninterrupted.checkpoint, weights_only=True)
    continued = torch.load(second.checkpoint, weights_only=True)
    for key in straight:
        assert torch.equal(straight[key], continued[key]), key
    assert [h["total"] for h in uninterrupted.history[2:]] == [h["total"] for h in second.history]
