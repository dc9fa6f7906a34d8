import pytest
import torch
import torch.nn.functional as F

from keepfit.losses import LossConfig, category_targets, category_targets_from_names, clip_loss, knowledge_mse
from keepfit.objective import PretrainingObjective


def _embeddings(n: int, dim: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(n, dim, generator=generator), dim=-1)
    texts = F.normalize(torch.randn(n, dim, generator=generator), dim=-1)
    return images, texts


def test_clip_loss_is_the_mean_of_both_cross_entropies():
    images, texts = _embeddings(6)
    scale = torch.tensor(10.0)
    logits = scale * texts @ images.t()
    labels = torch.arange(6)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
    assert torch.allclose(clip_loss(images, texts, scale), expected)


def test_soft_targets_reduce_to_identity_when_every_category_differs():
    images, texts = _embeddings(4)
    targets = category_targets_from_names(["a", "b", "c", "d"], [["a"], ["b"], ["c"], ["d"]])
    assert torch.equal(targets, torch.eye(4))
    scale = torch.tensor(5.0)
    assert torch.allclose(clip_loss(images, texts, scale, targets), clip_loss(images, texts, scale))


def test_reproduce_targets_match_on_the_sampled_category_only():
    """Release formula: target[i, j] = 1 iff sample i and sample j drew the same category this step."""
    selected = ["glaucoma", "glaucoma", "drusen"]
    categories = [["glaucoma"], ["glaucoma", "drusen"], ["drusen", "glaucoma"]]
    targets = category_targets_from_names(selected, categories)
    assert targets.tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert LossConfig().soft_targets == "sampled_category"
    assert category_targets(torch.tensor([2, 0, 2, 1])).tolist() == [
        [1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]
    ]


def test_multi_hot_targets_mark_images_that_hold_the_text_category():
    targets = category_targets_from_names(
        ["glaucoma", "glaucoma", "drusen"],
        [["glaucoma"], ["glaucoma", "drusen"], ["drusen", "glaucoma"]],
        mode="multi_hot",
    )
    assert targets.tolist() == [[1, 1, 1], [1, 1, 1], [0, 1, 1]]
    multi_hot = torch.tensor([[True, False], [True, True]])
    assert category_targets(torch.tensor([1, 0]), multi_hot, "multi_hot").tolist() == [[1, 1], [1, 1]]


def test_objective_uses_the_configured_target_mode(tiny_model):
    """A multi-label batch: the two modes give different FLAIR losses, each equal to its formula."""
    tiny_model.eval()
    inputs = _objective_inputs(tiny_model)
    inputs["category_index"] = torch.tensor([0, 1, 2, 3])
    inputs["category_multi_hot"] = torch.tensor(
        [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool
    )
    flair_only = {"expert_clip_weight": 0.0, "knowledge_mse_weight": 0.0}
    with torch.no_grad():
        images, texts = tiny_model(inputs["images"], inputs["input_ids"], inputs["attention_mask"])
        scale = tiny_model.scale()
        sampled = PretrainingObjective(tiny_model, LossConfig(**flair_only))(**inputs)["flair_clip"]
        multi = PretrainingObjective(tiny_model, LossConfig(soft_targets="multi_hot", **flair_only))(**inputs)
    assert torch.allclose(sampled, clip_loss(images, texts, scale, torch.eye(4)))
    expected_multi = torch.eye(4)
    expected_multi[1, 0] = 1.0  # text 1 ("category 1") matches image 0, which also holds category 1
    assert torch.allclose(multi["flair_clip"], clip_loss(images, texts, scale, expected_multi))
    assert not torch.allclose(sampled, multi["flair_clip"])


def test_soft_target_loss_uses_row_normalised_targets_on_both_sides():
    images, texts = _embeddings(3, seed=3)
    targets = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    scale = torch.tensor(7.0)
    logits = scale * texts @ images.t()
    text_side = -(targets / targets.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
    image_side = -(targets.t() / targets.t().sum(1, keepdim=True) * logits.t().log_softmax(1)).sum(1).mean()
    assert torch.allclose(clip_loss(images, texts, scale, targets), (text_side + image_side) / 2)


def test_knowledge_mse_is_mean_squared_error():
    a, b = _embeddings(5)
    assert torch.allclose(knowledge_mse(a, b), ((a - b) ** 2).mean())


def _objective_inputs(model, n=4):
    tokens = model.tokenize(["a fundus photograph of glaucoma", "normal fundus", "drusen", "cataract"][:n])
    generator = torch.Generator().manual_seed(0)
    return {
        "images": torch.rand(n, 3, 48, 48, generator=generator),
        "input_ids": tokens["input_ids"],
        "attention_mask": tokens["attention_mask"],
        "category_index": torch.arange(n),
        "category_multi_hot": torch.eye(n, dtype=torch.bool),
        "expert_images": torch.rand(n, 3, 48, 48, generator=generator),
        "expert_input_ids": tokens["input_ids"],
        "expert_attention_mask": tokens["attention_mask"],
    }


def test_total_is_the_weighted_sum_of_terms_and_zero_weights_switch_terms_off(tiny_model):
    tiny_model.eval()
    inputs = _objective_inputs(tiny_model)
    full = PretrainingObjective(tiny_model, LossConfig(expert_clip_weight=0.5, knowledge_mse_weight=100.0))(**inputs)
    assert all(full[k] > 0 for k in ("flair_clip", "expert_clip", "knowledge_mse"))
    expected = full["flair_clip"] + 0.5 * full["expert_clip"] + 100.0 * full["knowledge_mse"]
    assert torch.allclose(full["total"], expected)

    flair_only = LossConfig(expert_clip_weight=0.0, knowledge_mse_weight=0.0)
    assert not flair_only.uses_expert_batches
    no_expert = {k: v for k, v in inputs.items() if not k.startswith("expert_")}
    terms = PretrainingObjective(tiny_model, flair_only)(**no_expert)
    assert terms["expert_clip"] == 0 and terms["knowledge_mse"] == 0
    assert torch.allclose(terms["total"], full["flair_clip"])

    with pytest.raises(ValueError, match="MM-Retinal batch"):
        PretrainingObjective(tiny_model, LossConfig())(**no_expert)
