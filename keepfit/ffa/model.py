"""The report generator: ResNet grid features of the KeepFIT image tower + a transformer encoder-decoder.

This is R2Gen's base transformer as KeepFIT-FFA publishes it: the trunk's last feature map
pooled to a 7x7 grid (2048-d cells for ResNet-50), a visual projection Linear(2048, 512) + ReLU +
dropout 0.5, 3 pre-norm encoder and 3 pre-norm decoder layers (d_model 512, 8 heads, d_ff 512,
dropout 0.1), sinusoidal positions on the words only. In case mode the grids of a case's frames
are averaged cell by cell before the encoder.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from keepfit.model import build_resnet
from keepfit.model_config import VisionConfig

logger = logging.getLogger(__name__)

VISION_PREFIX = "vision_model.model."


class ReportModelConfig(BaseModel):
    """Architecture of the report generator (published values by default)."""

    model_config = ConfigDict(extra="forbid")

    image_size: int = Field(512, description="Square input side (longest side resized, zero-padded).")
    grid_size: int = Field(7, description="The trunk's last feature map is average-pooled to grid_size x grid_size cells.")
    vision: VisionConfig = Field(
        default_factory=lambda: VisionConfig(arch="resnet50", pretrained=False),
        description="Image trunk; replaced by the pretrained checkpoint's own architecture when one is given.",
    )
    pretrained_checkpoint: str | None = Field(
        None, description="KeepFIT/FLAIR .pth (ours or released) whose vision_model.model.* weights start the trunk."
    )
    d_model: int = Field(512, description="Transformer width.")
    num_heads: int = Field(8, description="Attention heads.")
    d_ff: int = Field(512, description="Feed-forward inner width.")
    num_encoder_layers: int = Field(3, description="Encoder layers.")
    num_decoder_layers: int = Field(3, description="Decoder layers.")
    dropout: float = Field(0.1, description="Dropout inside the transformer and on word embeddings.")
    visual_dropout: float = Field(0.5, description="Dropout after the visual projection's ReLU.")
    max_length: int = Field(90, description="Most words per report (training targets are truncated to it).")


def trunk_from_checkpoint(path: str | Path) -> tuple[nn.Module, int, VisionConfig]:
    """A ResNet trunk with the `vision_model.model.*` weights of a KeepFIT/FLAIR checkpoint.

    The architecture comes from the checkpoint's sidecar; a released file without one is a ResNet-50.
    """
    from keepfit.checkpoint import read_sidecar, read_state_dict

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: pretrained checkpoint not found")
    state = read_state_dict(path)
    trunk_state = {k[len(VISION_PREFIX) :]: v for k, v in state.items() if k.startswith(VISION_PREFIX)}
    if not trunk_state:
        raise ValueError(f"{path}: no {VISION_PREFIX}* weights (not a KeepFIT/FLAIR checkpoint)")
    sidecar = read_sidecar(path) or {}
    vision_tree = dict((sidecar.get("model_config") or {}).get("vision") or {"arch": "resnet50"})
    vision = VisionConfig.model_validate({**vision_tree, "pretrained": False})
    trunk, feature_dim, _ = build_resnet(vision)
    trunk_state = {k: v for k, v in trunk_state.items() if not k.startswith("fc.")}
    missing, unexpected = trunk.load_state_dict(trunk_state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: trunk weights do not match {vision.arch}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    logger.info("report trunk %s from %s", vision.arch, path)
    return trunk, feature_dim, vision


class GridFeatures(nn.Module):
    """ResNet trunk up to layer4, pooled to a fixed grid: [B, 3, S, S] -> [B, grid*grid, C]."""

    def __init__(self, trunk: nn.Module, grid_size: int) -> None:
        super().__init__()
        self.model = trunk
        self.grid_size = grid_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(images))))
        x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
        x = F.adaptive_avg_pool2d(x, self.grid_size)
        return x.flatten(2).transpose(1, 2)


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table


def pool_cases(grids: torch.Tensor, frame_counts: torch.Tensor | None) -> torch.Tensor:
    """Average the grids of each case's consecutive frames: [N_frames, G, C] -> [B, G, C]."""
    if frame_counts is None:
        return grids
    case_index = torch.repeat_interleave(torch.arange(len(frame_counts), device=grids.device), frame_counts.to(grids.device))
    pooled = grids.new_zeros(len(frame_counts), *grids.shape[1:]).index_add_(0, case_index, grids)
    return pooled / frame_counts.to(grids.device, grids.dtype)[:, None, None]


class ReportGenerator(nn.Module):
    """Frames in, word logits out (teacher forcing); `encode` + `next_token_logits` serve decoding."""

    def __init__(self, config: ReportModelConfig, vocab_size: int, trunk: nn.Module | None = None, feature_dim: int | None = None) -> None:
        super().__init__()
        self.config = config
        if trunk is None:
            if config.pretrained_checkpoint:
                trunk, feature_dim, vision = trunk_from_checkpoint(config.pretrained_checkpoint)
                self.config = config = config.model_copy(update={"vision": vision})
            else:
                trunk, feature_dim, _ = build_resnet(config.vision)
        self.vocab_size = vocab_size
        self.visual = GridFeatures(trunk, config.grid_size)
        self.visual_projection = nn.Sequential(
            nn.Linear(int(feature_dim), config.d_model), nn.ReLU(), nn.Dropout(config.visual_dropout)
        )
        encoder_layer = nn.TransformerEncoderLayer(
            config.d_model, config.num_heads, config.d_ff, config.dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(
            encoder_layer, config.num_encoder_layers, norm=nn.LayerNorm(config.d_model), enable_nested_tensor=False
        )
        decoder_layer = nn.TransformerDecoderLayer(
            config.d_model, config.num_heads, config.d_ff, config.dropout, batch_first=True, norm_first=True
        )
        self.decoder = nn.TransformerDecoder(decoder_layer, config.num_decoder_layers, norm=nn.LayerNorm(config.d_model))
        self.embedding = nn.Embedding(vocab_size, config.d_model, padding_idx=0)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.register_buffer("positions", sinusoidal_positions(config.max_length + 2, config.d_model), persistent=False)
        self.output = nn.Linear(config.d_model, vocab_size)

    def visual_parameters(self) -> list[nn.Parameter]:
        return list(self.visual.parameters())

    def language_parameters(self) -> list[nn.Parameter]:
        visual = {id(p) for p in self.visual.parameters()}
        return [p for p in self.parameters() if id(p) not in visual]

    def encode(self, images: torch.Tensor, frame_counts: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder memory [B, grid*grid, d_model] of images in [0, 1] (frames of a case pooled)."""
        grids = pool_cases(self.visual(images), frame_counts)
        return self.encoder(self.visual_projection(grids))

    def decode(self, memory: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Logits [B, T, V] for each position of `tokens` (which start with <bos>), causally masked."""
        length = tokens.shape[1]
        words = self.embedding(tokens) * math.sqrt(self.config.d_model) + self.positions[:length]
        mask = nn.Transformer.generate_square_subsequent_mask(length, device=tokens.device, dtype=words.dtype)
        hidden = self.decoder(
            self.embedding_dropout(words), memory, tgt_mask=mask, tgt_is_causal=True, tgt_key_padding_mask=None
        )
        return self.output(hidden)

    def next_token_logits(self, memory: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.decode(memory, tokens)[:, -1]

    def forward(self, images: torch.Tensor, frame_counts: torch.Tensor | None, tokens: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images, frame_counts), tokens)


def describe(model: ReportGenerator) -> dict[str, Any]:
    return {
        "trunk": model.config.vision.arch,
        "visual_parameters": sum(p.numel() for p in model.visual_parameters()),
        "language_parameters": sum(p.numel() for p in model.language_parameters()),
    }
