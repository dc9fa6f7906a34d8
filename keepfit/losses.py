"""KeepFIT objective: soft-target CLIP on FLAIR + CLIP on MM-Retinal + MSE to the expert attention."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LossConfig(BaseModel):
    """Weights of the three terms; a zero weight switches the term off (ablations)."""

    model_config = ConfigDict(extra="forbid")

    flair_clip_weight: float = Field(1.0, description="Weight of the soft-target CLIP loss on FLAIR batches.")
    expert_clip_weight: float = Field(1.0, description="lambda1: weight of the CLIP loss on MM-Retinal batches.")
    knowledge_mse_weight: float = Field(
        100.0, description="lambda2: weight of MSE(FLAIR text embeddings, expert attention output)."
    )
    soft_targets: Literal["sampled_category", "multi_hot"] = Field(
        "sampled_category",
        description="FLAIR soft targets. 'sampled_category' (release): text i matches image j when both drew the "
        "same category this step. 'multi_hot': text i also matches every image whose category list holds its "
        "category (more positives for multi-label images).",
    )

    @property
    def uses_expert_batches(self) -> bool:
        return self.expert_clip_weight > 0 or self.knowledge_mse_weight > 0


def sampled_category_targets(selected: torch.Tensor) -> torch.Tensor:
    """Release targets: text i matches image j when both samples drew the same category (`selected` [B])."""
    return (selected[:, None] == selected[None, :]).float()


def multi_hot_targets(selected: torch.Tensor, multi_hot: torch.Tensor) -> torch.Tensor:
    """Text i (about category `selected[i]`) matches every image j whose category list holds it.

    `multi_hot` [B, C] marks each image's categories; the diagonal is 1 because every text was
    drawn from its own image's categories.
    """
    matches = multi_hot[:, selected].t().float()
    return matches.fill_diagonal_(1.0)


def category_targets(
    selected: torch.Tensor, multi_hot: torch.Tensor | None = None, mode: str = "sampled_category"
) -> torch.Tensor:
    """Text-by-image target matrix in the configured mode (see `LossConfig.soft_targets`)."""
    if mode == "sampled_category":
        return sampled_category_targets(selected)
    if mode == "multi_hot":
        if multi_hot is None:
            raise ValueError("multi_hot soft targets need each image's category list")
        return multi_hot_targets(selected, multi_hot)
    raise ValueError(f"unknown soft-target mode {mode!r}")


def category_targets_from_names(
    selected: Sequence[str], categories: Sequence[Sequence[str]], mode: str = "sampled_category"
) -> torch.Tensor:
    """Same as `category_targets` for category names (convenient outside the data loader)."""
    vocabulary = {name: i for i, name in enumerate(sorted({c for cats in categories for c in cats} | set(selected)))}
    multi_hot = torch.zeros(len(categories), len(vocabulary), dtype=torch.bool)
    for row, cats in enumerate(categories):
        multi_hot[row, [vocabulary[c] for c in cats]] = True
    return category_targets(torch.tensor([vocabulary[s] for s in selected]), multi_hot, mode)


def clip_loss(
    image_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    logit_scale: torch.Tensor,
    targets: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean of CE(text->image) and CE(image->text); `targets` [text, image] are row-normalised per side."""
    logits_per_text = logit_scale * text_embeddings.float() @ image_embeddings.float().t()
    if targets is None:
        labels = torch.arange(logits_per_text.shape[0], device=logits_per_text.device)
        return 0.5 * (F.cross_entropy(logits_per_text, labels) + F.cross_entropy(logits_per_text.t(), labels))
    targets = targets.to(logits_per_text.device, torch.float32)
    text_to_image = targets / targets.sum(dim=1, keepdim=True)
    image_to_text = targets.t() / targets.t().sum(dim=1, keepdim=True)
    return 0.5 * (
        F.cross_entropy(logits_per_text, text_to_image) + F.cross_entropy(logits_per_text.t(), image_to_text)
    )


def knowledge_mse(text_embeddings: torch.Tensor, attention_output: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(attention_output.float(), text_embeddings.float())
