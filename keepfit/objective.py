"""The pretraining forward pass as one module, so DDP wraps (and synchronises) all of it.

Embeddings are gathered across ranks with autograd-aware all-gather: every rank computes the
loss over the global batch, and DDP's gradient averaging then yields exactly the gradient of
that global loss (the same as one process holding the whole batch).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from keepfit.losses import LossConfig, category_targets, clip_loss, knowledge_mse
from keepfit.model import KeepFITModel


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor from all ranks along dim 0, passing gradients back to each rank's slice."""
    if not _distributed():
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor), dim=0)


def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    if not _distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


class PretrainingObjective(nn.Module):
    """Loss terms of one step: FLAIR soft-target CLIP, MM-Retinal CLIP and the knowledge MSE."""

    def __init__(self, model: KeepFITModel, loss: LossConfig, gather: bool = True) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.gather = gather
        if loss.knowledge_mse_weight > 0 and model.attention is None:
            raise ValueError(f"model {model.config.name} has no expert attention but knowledge_mse_weight > 0")

    def _maybe_gather(self, tensor: torch.Tensor, grad: bool = True) -> torch.Tensor:
        if not self.gather:
            return tensor
        return gather_with_grad(tensor) if grad else gather_no_grad(tensor)

    def embeddings(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        expert_images: torch.Tensor | None = None,
        expert_input_ids: torch.Tensor | None = None,
        expert_attention_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """This process's embeddings of one (micro-)batch: FLAIR images/texts and, when used, the expert pairs."""
        image, text = self.model(images, input_ids, attention_mask)
        out = {"image": image, "text": text}
        if self.loss.uses_expert_batches:
            if expert_images is None or expert_input_ids is None or expert_attention_mask is None:
                raise ValueError("expert loss terms are enabled but no MM-Retinal batch was given")
            out["expert_image"], out["expert_text"] = self.model(expert_images, expert_input_ids, expert_attention_mask)
        return out

    def loss_terms(
        self, embeddings: dict[str, torch.Tensor], category_index: torch.Tensor, category_multi_hot: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The three terms and their weighted total from embeddings (gathered over ranks here)."""
        image_embeddings = self._maybe_gather(embeddings["image"])
        text_embeddings = self._maybe_gather(embeddings["text"])
        targets = category_targets(
            self._maybe_gather(category_index, grad=False),
            self._maybe_gather(category_multi_hot, grad=False) if self.loss.soft_targets == "multi_hot" else None,
            self.loss.soft_targets,
        )
        scale = self.model.scale()
        zero = scale.new_zeros(())
        terms = {"flair_clip": zero, "expert_clip": zero, "knowledge_mse": zero}
        if self.loss.flair_clip_weight > 0:
            terms["flair_clip"] = clip_loss(image_embeddings, text_embeddings, scale, targets)
        if self.loss.uses_expert_batches:
            expert_image_embeddings = self._maybe_gather(embeddings["expert_image"])
            expert_text_embeddings = self._maybe_gather(embeddings["expert_text"])
            if self.loss.expert_clip_weight > 0:
                terms["expert_clip"] = clip_loss(expert_image_embeddings, expert_text_embeddings, scale)
            if self.loss.knowledge_mse_weight > 0:
                attended = self.model.attention(image_embeddings, expert_image_embeddings, expert_text_embeddings)
                terms["knowledge_mse"] = knowledge_mse(text_embeddings, attended)
        terms["total"] = (
            self.loss.flair_clip_weight * terms["flair_clip"]
            + self.loss.expert_clip_weight * terms["expert_clip"]
            + self.loss.knowledge_mse_weight * terms["knowledge_mse"]
        )
        return terms

    def forward(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        category_index: torch.Tensor,
        category_multi_hot: torch.Tensor,
        expert_images: torch.Tensor | None = None,
        expert_input_ids: torch.Tensor | None = None,
        expert_attention_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        embeddings = self.embeddings(
            images, input_ids, attention_mask, expert_images, expert_input_ids, expert_attention_mask
        )
        return self.loss_terms(embeddings, category_index, category_multi_hot)
