"""DDP really all-reduces: a 2-process gloo step gives the single-process gradients of the global batch."""

import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import keepfit
from keepfit.losses import LossConfig
from keepfit.objective import PretrainingObjective
from keepfit.trainer import freeze_unused_pooler

GLOBAL_BATCH = 4
DETERMINISTIC = {
    "attention.dropout": 0.0,
    "text.architecture.hidden_dropout_prob": 0.0,
    "text.architecture.attention_probs_dropout_prob": 0.0,
    "vision.batchnorm_stats": "running",
}
"""Train mode without randomness or batch-coupled BatchNorm, so split and whole batches compare exactly."""


def _model():
    torch.manual_seed(0)
    model = keepfit.create_model("tiny", **DETERMINISTIC)
    freeze_unused_pooler(model)
    return model


def _global_inputs(model) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    texts = ["a fundus photograph of glaucoma", "normal", "drusen at the macula", "a noisy fundus photograph of normal"]
    expert_texts = ["figure 1 glaucoma cupping", "figure 2 drusen", "figure 3 normal disc", "figure 4 hemorrhages"]
    tokens = model.tokenize(texts)
    expert_tokens = model.tokenize(expert_texts)
    return {
        "images": torch.rand(GLOBAL_BATCH, 3, 48, 48, generator=generator),
        "input_ids": tokens["input_ids"],
        "attention_mask": tokens["attention_mask"],
        "category_index": torch.tensor([0, 1, 2, 1]),
        "category_multi_hot": torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0]], dtype=torch.bool),
        "expert_images": torch.rand(GLOBAL_BATCH, 3, 48, 48, generator=generator),
        "expert_input_ids": expert_tokens["input_ids"],
        "expert_attention_mask": expert_tokens["attention_mask"],
    }


def _gradients(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        model = _model()
        inputs = _global_inputs(model)
        shard = GLOBAL_BATCH // world_size
        local = {k: v[rank * shard : (rank + 1) * shard] for k, v in inputs.items()}
        wrapped = DistributedDataParallel(PretrainingObjective(model, LossConfig(), gather=True))
        wrapped.train()
        terms = wrapped(**local)
        terms["total"].backward()
        torch.save({"grads": _gradients(model), "total": terms["total"].detach()}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_ddp_gradients_equal_single_process_gradients(tmp_path, free_port):
    model = _model()
    objective = PretrainingObjective(model, LossConfig(), gather=True).train()
    terms = objective(**_global_inputs(model))
    terms["total"].backward()
    reference = _gradients(model)

    port = free_port
    ranks_run = [
        subprocess.Popen([sys.executable, __file__, str(rank), "2", str(port), str(tmp_path)])
        for rank in range(2)
    ]
    assert [process.wait(timeout=240) for process in ranks_run] == [0, 0]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for result in ranks:
        assert torch.allclose(result["total"], terms["total"].detach(), atol=1e-5)
        assert result["grads"].keys() == reference.keys()
        for name, grad in reference.items():
            assert torch.allclose(result["grads"][name], grad, rtol=1e-4, atol=1e-6), name
    assert any(grad.abs().sum() > 0 for name, grad in reference.items() if name.startswith("attention."))


if __name__ == "__main__":
    _ddp_worker(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
