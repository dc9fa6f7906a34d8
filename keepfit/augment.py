"""Batch augmentation on the training device: horizontal flip, small affine, colour jitter.

Random draws come from a generator the trainer seeds per step, so augmentation does not depend
on how many steps ran in this process (exact resume).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field


class AugmentConfig(BaseModel):
    """Strengths of the FLAIR-side augmentations (MM-Retinal batches are not augmented)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Augment FLAIR batches.")
    flip_probability: float = Field(0.5, description="Probability of a horizontal flip.")
    rotation_degrees: float = Field(5.0, description="Maximum absolute rotation.")
    scale_range: tuple[float, float] = Field((0.9, 1.1), description="Range of the isotropic scale factor.")
    translate_fraction: float = Field(0.05, description="Maximum shift as a fraction of the image side.")
    brightness: float = Field(0.1, description="Maximum relative brightness change.")
    contrast: float = Field(0.1, description="Maximum relative contrast change.")
    saturation: float = Field(0.1, description="Maximum relative saturation change.")


def _uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device) * (high - low) + low


def augment_batch(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Augment float images [B, 3, H, W] in [0, 1]; the generator must live on the images' device."""
    if not config.enabled:
        return images
    batch = images.shape[0]
    device = images.device
    flip = torch.rand(batch, generator=generator, device=device) < config.flip_probability
    angle = _uniform((batch,), -config.rotation_degrees, config.rotation_degrees, generator, device) * math.pi / 180
    scale = _uniform((batch,), config.scale_range[0], config.scale_range[1], generator, device)
    shift = _uniform((batch, 2), -config.translate_fraction, config.translate_fraction, generator, device) * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    sign = torch.where(flip, -1.0, 1.0).to(images.dtype)
    theta = torch.stack(
        [
            torch.stack([cos * sign, -sin, shift[:, 0]], dim=1),
            torch.stack([sin * sign, cos, shift[:, 1]], dim=1),
        ],
        dim=1,
    ).to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    brightness = _uniform((batch, 1, 1, 1), 1 - config.brightness, 1 + config.brightness, generator, device)
    contrast = _uniform((batch, 1, 1, 1), 1 - config.contrast, 1 + config.contrast, generator, device)
    saturation = _uniform((batch, 1, 1, 1), 1 - config.saturation, 1 + config.saturation, generator, device)
    out = out * brightness.to(out.dtype)
    grey = (0.299 * out[:, 0:1] + 0.587 * out[:, 1:2] + 0.114 * out[:, 2:3])
    out = (out - grey.mean(dim=(2, 3), keepdim=True)) * contrast.to(out.dtype) + grey.mean(dim=(2, 3), keepdim=True)
    grey = (0.299 * out[:, 0:1] + 0.587 * out[:, 1:2] + 0.114 * out[:, 2:3])
    out = (out - grey) * saturation.to(out.dtype) + grey
    return out.clamp_(0.0, 1.0)
