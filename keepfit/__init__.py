"""KeepFIT: knowledge-enhanced CLIP-style pretraining for fundus images.

Public API (stable names, used by evaluation):

- `create_model(config_name_or_path, **overrides)` -> KeepFITModel (fresh weights)
- `load(checkpoint_or_config, device="cpu")` -> KeepFITModel from a `.pth` file or a config name
- `KeepFITModel.encode_image / encode_text / image_features / text_features / preprocess / image_size`
- `load_domain_knowledge(path=None)`, `class_prompts`, `pretraining_prompt`, `fill_template`
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keepfit.model import ExpertKnowledgeAttention, KeepFITModel
from keepfit.model_config import ModelConfig, available_model_configs, load_model_config
from keepfit.prompts import (
    BANNED_PRETRAINING_CATEGORIES,
    PRETRAIN_TEMPLATE,
    ZERO_SHOT_TEMPLATE,
    class_prompts,
    fill_template,
    is_banned_category,
    load_domain_knowledge,
    pretraining_prompt,
)

__all__ = [
    "BANNED_PRETRAINING_CATEGORIES",
    "PRETRAIN_TEMPLATE",
    "ZERO_SHOT_TEMPLATE",
    "ExpertKnowledgeAttention",
    "KeepFITModel",
    "ModelConfig",
    "available_model_configs",
    "class_prompts",
    "create_model",
    "fill_template",
    "is_banned_category",
    "load",
    "load_domain_knowledge",
    "load_model_config",
    "pretraining_prompt",
    "save_checkpoint",
]


def create_model(config_name_or_path: str | Path | dict[str, Any], **overrides: Any) -> KeepFITModel:
    """A fresh model from an architecture config ('tiny', 'keepfit-cfp', 'flair' or a YAML path).

    Overrides use dotted keys (`**{"text.padded_mean": True}`), double underscores
    (`text__padded_mean=True`) or nested dicts (`text={"padded_mean": True}`).
    """
    return KeepFITModel(load_model_config(config_name_or_path, **overrides))


def load(checkpoint_or_config: str | Path, device: str = "cpu", **overrides: Any) -> KeepFITModel:
    """A model in eval mode: weights from a `.pth` checkpoint, or random weights for a config name."""
    from keepfit.checkpoint import load_checkpoint

    path = Path(checkpoint_or_config)
    if path.suffix in (".pth", ".pt", ".bin") or (path.is_file() and path.suffix not in (".yaml", ".yml")):
        if not path.exists():
            raise FileNotFoundError(f"{path}: checkpoint not found")
        return load_checkpoint(path, device=device, **overrides)
    return create_model(checkpoint_or_config, **overrides).to(device).eval()


def save_checkpoint(model: KeepFITModel, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Save in the released layout plus a `<path>.json` sidecar naming the architecture."""
    from keepfit.checkpoint import save_checkpoint as _save

    return _save(model, path, metadata)
