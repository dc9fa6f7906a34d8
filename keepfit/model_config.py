"""Architecture configs: typed options read from YAML files in `keepfit/configs/models/`."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

MODEL_CONFIG_DIR = Path(__file__).parent / "configs" / "models"
DATA_DIR = Path(__file__).parent / "data"


class VisionConfig(BaseModel):
    """Image tower: a torchvision ResNet whose `fc` is replaced by identity."""

    model_config = ConfigDict(extra="forbid")

    arch: str = Field("resnet50", description="torchvision ResNet builder name (resnet18, resnet50, ...) or 'custom'.")
    block: Literal["basic", "bottleneck"] = Field(
        "basic", description="Residual block of a 'custom' ResNet (ignored for named architectures)."
    )
    layers: list[int] = Field(
        default_factory=lambda: [1, 1, 1, 1], description="Blocks per stage of a 'custom' ResNet (four stages)."
    )
    widths: list[int] = Field(
        default_factory=lambda: [64, 128, 256, 512], description="Channels per stage of a 'custom' ResNet."
    )
    pretrained: bool = Field(True, description="Start from ImageNet weights when they are available offline.")
    weights: str = Field(
        "IMAGENET1K_V2", description="torchvision weights enum member looked up in the torch hub cache."
    )
    weights_path: str | None = Field(
        None, description="Local .pth file with ImageNet weights; takes precedence over the torch hub cache."
    )
    allow_download: bool = Field(
        False, description="Download missing ImageNet weights; off so that runs never block on the network."
    )
    batchnorm_stats: Literal["batch", "running"] = Field(
        "batch",
        description="'batch' updates BatchNorm statistics in training; 'running' keeps them fixed "
        "(per-sample independent forward, used where batches are split across processes without SyncBatchNorm).",
    )


class TextConfig(BaseModel):
    """Text tower: a BERT-like Hugging Face encoder pooled over hidden states."""

    model_config = ConfigDict(extra="forbid")

    model_name: str | None = Field(
        "emilyalsentzer/Bio_ClinicalBERT", description="Hugging Face model id or local directory with weights."
    )
    architecture: dict[str, Any] | None = Field(
        None,
        description="transformers config kwargs (with 'model_type') used to build the encoder without weights, "
        "e.g. a tiny BertConfig for tests or the BERT-base shape to load a released checkpoint offline.",
    )
    pretrained: bool = Field(True, description="Load encoder weights from `model_name` when available offline.")
    allow_download: bool = Field(
        False, description="Fetch missing weights/tokenizer from the Hugging Face Hub; off so runs never block."
    )
    tokenizer: str | None = Field(
        None,
        description="Tokenizer id or local directory; 'vocab:<file>' builds a WordPiece tokenizer from a vocab file "
        "(relative names resolve in keepfit/data). Defaults to `model_name`.",
    )
    lowercase: bool = Field(True, description="Lower-case text in a 'vocab:' WordPiece tokenizer.")
    max_length: int = Field(256, description="Maximum tokens per text (longer texts are truncated).")
    hidden_layers: list[int] = Field(
        default_factory=lambda: [1, 2, -1],
        description="Indices into the encoder's hidden states (0 = embeddings) averaged into the text embedding.",
    )
    padded_mean: bool = Field(
        True,
        description="Average over padding tokens too, as the released models were trained (reproduce). False "
        "averages over real tokens only, so an embedding does not depend on the other texts of its batch.",
    )


class AttentionConfig(BaseModel):
    """Expert-knowledge cross-attention (training only)."""

    model_config = ConfigDict(extra="forbid")

    heads: int = Field(2, description="Number of attention heads.")
    dropout: float = Field(0.5, description="Dropout on the attention weights.")


class ModelConfig(BaseModel):
    """A whole KeepFIT architecture."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("custom", description="Architecture name (the config file stem).")
    image_size: int = Field(512, description="Square input side: longest image side resized to it, zero-padded.")
    projection_dim: int = Field(512, description="Joint embedding dimension of both projection heads.")
    logit_scale_init: float = Field(1 / 0.07, description="Initial logit scale (stored as its logarithm).")
    logit_scale_max: float = Field(100.0, description="Upper clamp of the exp'd logit scale.")
    vision: VisionConfig = Field(default_factory=VisionConfig, description="Image tower.")
    text: TextConfig = Field(default_factory=TextConfig, description="Text tower.")
    attention: AttentionConfig | None = Field(
        default_factory=AttentionConfig, description="Expert-knowledge module; null for FLAIR-style models."
    )


def set_dotted(tree: dict[str, Any], dotted_key: str, value: Any) -> None:
    """Set `tree['a']['b'] = value` for key 'a.b', creating levels as needed."""
    node = tree
    parts = dotted_key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def apply_overrides(tree: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of `tree` with dotted-key overrides applied (values typed later by pydantic)."""
    result = copy.deepcopy(tree)
    for key, value in overrides.items():
        set_dotted(result, key.replace("__", "."), value)
    return result


def available_model_configs() -> list[str]:
    return sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.yaml"))


def resolve_model_config_path(name_or_path: str | Path) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.exists():
        return candidate
    named = MODEL_CONFIG_DIR / f"{name_or_path}.yaml"
    if named.exists():
        return named
    raise FileNotFoundError(
        f"model config {name_or_path!r} not found: not a YAML file and not one of {available_model_configs()}"
    )


def load_model_config(name_or_path: str | Path | dict[str, Any], **overrides: Any) -> ModelConfig:
    """Read an architecture by name ('tiny', 'keepfit-cfp'), YAML path or dict; dotted or nested overrides."""
    if isinstance(name_or_path, dict):
        tree = copy.deepcopy(name_or_path)
    else:
        path = resolve_model_config_path(name_or_path)
        with path.open(encoding="utf-8") as handle:
            tree = yaml.safe_load(handle) or {}
        tree.setdefault("name", path.stem)
    nested = {k: v for k, v in overrides.items() if isinstance(v, dict) and "." not in k}
    flat = {k: v for k, v in overrides.items() if k not in nested}
    for key, value in nested.items():
        for sub_key, sub_value in _flatten(value, key).items():
            flat[sub_key] = sub_value
    return ModelConfig.model_validate(apply_overrides(tree, flat))


def _flatten(tree: dict[str, Any], prefix: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}.{key}"
        if isinstance(value, dict) and key != "architecture":
            flat.update(_flatten(value, dotted))
        else:
            flat[dotted] = value
    return flat
