"""Batch augmentation on the training device: horizontal flip, small affine, colour jitter.

The defaults are the release's: flip p = 0.5; affine p = 0.25 (rotation within 5 degrees,
scale 0.9-1, no shift); colour jitter p = 0.25 (brightness and contrast 0.2). The stronger
variant (affine every time, with shift and scale up to 1.1, saturation jitter) is
`AugmentConfig.strong()`, also in `keepfit/configs/profiles/improved.yaml`.

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
    affine_probability: float = Field(
        0.25, description="Probability that an image gets the random rotation/scale/shift (release: 0.25)."
    )
    rotation_degrees: float = Field(5.0, description="Maximum absolute rotation.")
    scale_range: tuple[float, float] = Field((0.9, 1.0), description="Range of the isotropic scale factor.")
    translate_fraction: float = Field(0.0, description="Maximum shift as a fraction of the image side (release: 0).")
    color_probability: float = Field(
        0.25, description="Probability that an image gets the colour jitter (release: 0.25)."
    )
    brightness: float = Field(0.2, description="Maximum relative brightness change.")
    contrast: float = Field(0.2, description="Maximum relative contrast change.")
    saturation: float = Field(0.0, description="Maximum relative saturation change (release: none).")

    @classmethod
    def strong(cls) -> AugmentConfig:
        """The stronger, always-on variant: affine and jitter on every image, shift 5%, scale 0.9-1.1."""
        return cls(
            affine_probability=1.0,
            scale_range=(0.9, 1.1),
            translate_fraction=0.05,
            color_probability=1.0,
            brightness=0.1,
            contrast=0.1,
            saturation=0.1,
        )

def _uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device) * (high - low) + low


def augment_batch(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Augment float images [B, 3, H, W] in [0, 1]; the generator must live on the images' device."""
    if not config.enabled:
        return images
    batch = images.shape[0]
    device = images.device
    flip = torch.rand(batch, generator=generator, device=device) < config.flip_probability
    affine = torch.rand(batch, generator=generator, device=device) < config.affine_probability
    color = torch.rand(batch, generator=generator, device=device) < config.color_probability
    angle = _uniform((batch,), -config.rotation_degrees, config.rotation_degrees, generator, device) * math.pi / 180
    scale = _uniform((batch,), config.scale_range[0], config.scale_range[1], generator, device)
    shift = _uniform((batch, 2), -config.translate_fraction, config.translate_fraction, generator, device) * 2
    angle = torch.where(affine, angle, torch.zeros_like(angle))
    scale = torch.where(affine, scale, torch.ones_like(scale))
    shift = torch.where(affine[:, None], shift, torch.zeros_like(shift))
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

    def factors(strength: float) -> torch.Tensor:
        drawn = _uniform((batch, 1, 1, 1), 1 - strength, 1 + strength, generator, device)
        return torch.where(color[:, None, None, None], drawn, torch.ones_like(drawn)).to(out.dtype)

    brightness, contrast, saturation = factors(config.brightness), factors(config.contrast), factors(config.saturation)
    out = out * brightness
    grey = (0.299 * out[:, 0:1] + 0.587 * out[:, 1:2] + 0.114 * out[:, 2:3])
    out = (out - grey.mean(dim=(2, 3), keepdim=True)) * contrast + grey.mean(dim=(2, 3), keepdim=True)
    grey = (0.299 * out[:, 0:1] + 0.587 * out[:, 1:2] + 0.114 * out[:, 2:3])
    out = (out - grey) * saturation + grey
    return out.clamp_(0.0, 1.0)
