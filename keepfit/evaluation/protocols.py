"""The parts of a KeepFIT model that evaluation relies on, as a structural type.

Any image-text model with these members can be evaluated (KeepFIT, FLAIR, a test model).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class ImageTextEncoder(Protocol):
    """Frozen-encoder interface: image/text embeddings in a shared space plus raw trunk features."""

    image_size: int
    logit_scale: torch.Tensor

    def preprocess(self, image: Any) -> torch.Tensor:
        """PIL image or uint8 HxWx3 array -> float tensor [3, S, S] in [0, 1]."""

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> L2-normalised projected embeddings [B, E]."""

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Texts -> L2-normalised projected embeddings [B, E]."""

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> raw trunk features [B, D] (before projection)."""

    def parameters(self, recurse: bool = True) -> Any: ...

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]: ...

    def eval(self) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...
