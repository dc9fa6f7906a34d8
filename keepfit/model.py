"""KeepFIT: ResNet image tower, BERT-like text tower, projection heads and expert-knowledge attention.

Attribute names follow the released checkpoints, so `state_dict()` natively has their keys
(`vision_model.model.*`, `text_model.projection_head_text.projection.weight`, `attention.W_q.weight`, ...).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from foundation.files import sha256_file
from keepfit.model_config import DATA_DIR, AttentionConfig, ModelConfig, TextConfig, VisionConfig
from keepfit.preprocess import Preprocess

logger = logging.getLogger(__name__)


class ProjectionHead(nn.Module):
    """L2-normalise, bias-free linear map to the joint space, L2-normalise again."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.projection = nn.Linear(in_features, out_features, bias=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projection(F.normalize(features, dim=-1)), dim=-1)


def _imagenet_weights_file(config: VisionConfig) -> Path | None:
    """Local ImageNet weights for the configured ResNet, or None; never touches the network."""
    if config.weights_path:
        path = Path(config.weights_path).expanduser()
        return path if path.exists() else None
    try:
        weights_enum = torchvision.models.get_model_weights(config.arch)
        weights = weights_enum[config.weights]
    except (ValueError, KeyError):
        return None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    return cached if cached.exists() else None


def weights_record(init: str, file: Path | str | None = None) -> dict[str, Any]:
    """Where a tower's starting weights came from: the init label, the weights file and its SHA-256."""
    if file is None:
        return {"init": init, "file": None, "sha256": None}
    path = Path(file)
    return {"init": init, "file": str(path), "sha256": sha256_file(path) if path.is_file() else None}


def hf_weights_file(model_name: str) -> Path | None:
    """The local weights file a Hugging Face model id or directory resolves to (None when not found)."""
    candidates = ("model.safetensors", "pytorch_model.bin")
    directory = Path(model_name).expanduser()
    if directory.is_dir():
        return next((directory / name for name in candidates if (directory / name).is_file()), None)
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for name in candidates:
        try:
            found = try_to_load_from_cache(model_name, name)
        except ValueError:  # not a valid repository id (huggingface_hub's validation errors are ValueErrors)
            return None
        if isinstance(found, str):
            return Path(found)
    return None


class CustomWidthResNet(torchvision.models.resnet.ResNet):
    """torchvision's ResNet (same forward and key names) with configurable stage widths, for tiny models."""

    def __init__(self, block: type[nn.Module], layers: list[int], widths: list[int]) -> None:
        nn.Module.__init__(self)
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError(f"a custom ResNet needs four stages, got layers {layers} and widths {widths}")
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = widths[0]
        self.dilation = 1
        self.groups = 1
        self.base_width = 64
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, widths[0], layers[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3] * block.expansion, 1000)


def build_resnet(config: VisionConfig) -> tuple[nn.Module, int, dict[str, Any]]:
    """A torchvision ResNet with fc = identity; returns (trunk, feature dim, where its weights came from)."""
    if config.arch == "custom":
        block = torchvision.models.resnet.BasicBlock if config.block == "basic" else torchvision.models.resnet.Bottleneck
        trunk = CustomWidthResNet(block, list(config.layers), list(config.widths))
    else:
        trunk = torchvision.models.get_model(config.arch, weights=None)
    feature_dim = trunk.fc.in_features
    trunk.fc = nn.Identity()
    record = weights_record("random")
    if config.pretrained and config.arch != "custom":
        weights_file = _imagenet_weights_file(config)
        if weights_file is not None:
            state = torch.load(weights_file, map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            trunk.load_state_dict(state, strict=True)
            record = weights_record(f"imagenet:{weights_file.name}", weights_file)
        elif config.allow_download:
            weights = torchvision.models.get_model_weights(config.arch)[config.weights]
            state = weights.get_state_dict(progress=False)
            trunk.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")}, strict=True)
            record = weights_record(f"imagenet:{config.weights}", _imagenet_weights_file(config))
        else:
            logger.warning(
                "ImageNet weights for %s (%s) not found in %s or weights_path; image tower starts from random init",
                config.arch,
                config.weights,
                Path(torch.hub.get_dir()) / "checkpoints",
            )
    return trunk, feature_dim, record


class VisionModel(nn.Module):
    """ResNet trunk (2048-d for ResNet-50) plus its projection head."""

    def __init__(self, config: VisionConfig, projection_dim: int) -> None:
        super().__init__()
        self.config = config
        self.model, self.feature_dim, self.init_record = build_resnet(config)
        self.init = self.init_record["init"]
        self.projection_head_vision = ProjectionHead(self.feature_dim, projection_dim)

    def train(self, mode: bool = True) -> VisionModel:
        super().train(mode)
        if mode and self.config.batchnorm_stats == "running":
            for module in self.model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.projection_head_vision(self.features(images))


def resolve_data_file(name: str) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() or path.exists() else DATA_DIR / name


def wordpiece_tokenizer(vocab_file: Path, lowercase: bool = True) -> Any:
    """A BERT WordPiece tokenizer from a vocab file, built offline with the `tokenizers` library."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import PreTrainedTokenizerFast

    backend = BertWordPieceTokenizer(str(vocab_file), lowercase=lowercase)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend._tokenizer,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
    )


def build_tokenizer(config: TextConfig) -> Any:
    """Tokenizer from an id/local directory, or a WordPiece tokenizer from a 'vocab:<file>' spec."""
    from transformers import AutoTokenizer

    spec = config.tokenizer or config.model_name
    if spec is None:
        raise ValueError("text tower has neither `tokenizer` nor `model_name` to build a tokenizer from")
    if spec.startswith("vocab:"):
        vocab_file = resolve_data_file(spec[len("vocab:") :])
        if not vocab_file.exists():
            raise FileNotFoundError(f"{vocab_file}: WordPiece vocab file not found")
        return wordpiece_tokenizer(vocab_file, lowercase=config.lowercase)
    local_only = not config.allow_download or Path(spec).expanduser().exists()
    try:
        return AutoTokenizer.from_pretrained(spec, local_files_only=local_only)
    except OSError as exc:
        raise OSError(
            f"tokenizer {spec!r} is not available offline ({exc}); put it in the Hugging Face cache, "
            "give a local directory, or set text.allow_download=true"
        ) from exc


def build_text_encoder(config: TextConfig) -> tuple[nn.Module, dict[str, Any]]:
    """HF encoder with pretrained weights when available offline, else from `architecture` (random).

    Returns the encoder and where its weights came from (`weights_record`).
    """
    from transformers import AutoConfig, AutoModel

    if config.pretrained and config.model_name:
        local_only = not config.allow_download or Path(config.model_name).expanduser().exists()
        try:
            encoder = AutoModel.from_pretrained(config.model_name, local_files_only=local_only)
            return encoder, weights_record(f"pretrained:{config.model_name}", hf_weights_file(config.model_name))
        except OSError as exc:
            if config.architecture is None:
                raise OSError(
                    f"text encoder {config.model_name!r} is not available offline and no `architecture` "
                    f"is configured to build it ({exc})"
                ) from exc
            logger.warning(
                "text encoder %s not available offline; text tower starts from random init", config.model_name
            )
    if config.architecture is not None:
        arguments = dict(config.architecture)
        model_type = arguments.pop("model_type", "bert")
        encoder = AutoModel.from_config(AutoConfig.for_model(model_type, **arguments))
        return encoder, weights_record("random")
    if config.model_name is None:
        raise ValueError("text tower needs `model_name` or `architecture`")
    local_only = not config.allow_download or Path(config.model_name).expanduser().exists()
    encoder_config = AutoConfig.from_pretrained(config.model_name, local_files_only=local_only)
    return AutoModel.from_config(encoder_config), weights_record("random")


class TextModel(nn.Module):
    """BERT-like encoder pooled as the mean of selected hidden states, each a mean over tokens."""

    def __init__(self, config: TextConfig, projection_dim: int) -> None:
        super().__init__()
        self.config = config
        self.model, self.init_record = build_text_encoder(config)
        self.init = self.init_record["init"]
        self.feature_dim = int(self.model.config.hidden_size)
        self.projection_head_text = ProjectionHead(self.feature_dim, projection_dim)
        self._tokenizer = None

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = build_tokenizer(self.config)
        return self._tokenizer

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.config.max_length, return_tensors="pt"
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        output = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        hidden = torch.stack([output.hidden_states[i] for i in self.config.hidden_layers])  # [L, B, T, d]
        if self.config.padded_mean:
            token_mean = hidden.mean(dim=2)
        else:
            weights = attention_mask.to(hidden.dtype)[None, :, :, None]
            token_mean = (hidden * weights).sum(dim=2) / weights.sum(dim=2).clamp_min(1.0)
        return token_mean.mean(dim=0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.projection_head_text(self.features(input_ids, attention_mask))


class ExpertKnowledgeAttention(nn.Module):
    """Multi-head cross-attention from FLAIR image embeddings to MM-Retinal image/text pairs.

    Queries are FLAIR image embeddings, keys MM-Retinal image embeddings, values MM-Retinal text
    embeddings. The softmax runs over the keys (the release normalised over heads).
    """

    def __init__(self, dim: int, config: AttentionConfig) -> None:
        super().__init__()
        if dim % config.heads:
            raise ValueError(f"attention dim {dim} is not divisible by {config.heads} heads")
        self.heads = config.heads
        self.head_dim = dim // config.heads
        self.W_q = nn.Linear(dim, dim, bias=False)
        self.W_k = nn.Linear(dim, dim, bias=False)
        self.W_v = nn.Linear(dim, dim, bias=False)
        self.W_o = nn.Linear(dim, dim, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def attention_weights(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Softmax weights [heads, Q, K]; each row sums to 1 over the keys."""
        q = self.W_q(queries).view(queries.shape[0], self.heads, self.head_dim).transpose(0, 1)
        k = self.W_k(keys).view(keys.shape[0], self.heads, self.head_dim).transpose(0, 1)
        scores = q @ k.transpose(1, 2) / math.sqrt(self.head_dim)
        return scores.softmax(dim=-1)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        weights = self.dropout(self.attention_weights(queries, keys))
        v = self.W_v(values).view(values.shape[0], self.heads, self.head_dim).transpose(0, 1)
        mixed = (weights @ v).transpose(0, 1).reshape(queries.shape[0], self.heads * self.head_dim)
        return self.W_o(mixed)


class KeepFITModel(nn.Module):
    """The two towers, their projections, the logit scale and (KeepFIT only) the expert attention."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.image_size = config.image_size
        self.preprocess = Preprocess(config.image_size)
        self.vision_model = VisionModel(config.vision, config.projection_dim)
        self.text_model = TextModel(config.text, config.projection_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(config.logit_scale_init), dtype=torch.float32))
        self.attention = (
            ExpertKnowledgeAttention(config.projection_dim, config.attention) if config.attention is not None else None
        )
        logger.info(
            "built %s: image tower %s (%s), text tower %s (%s)",
            config.name,
            config.vision.arch,
            self.vision_model.init,
            config.text.model_name,
            self.text_model.init,
        )

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def tower_init(self) -> dict[str, dict[str, Any]]:
        """Per tower: the init label ('random', 'imagenet:...', 'pretrained:...'), weights file and SHA-256."""
        return {"vision": dict(self.vision_model.init_record), "text": dict(self.text_model.init_record)}

    def random_towers(self) -> list[str]:
        return [name for name, record in self.tower_init().items() if record["init"] == "random"]

    @property
    def logit_scale_max(self) -> float:
        return math.log(self.config.logit_scale_max)

    def clamp_logit_scale_(self) -> None:
        """Keep the stored log scale in [0, ln max] (applied after each optimiser step)."""
        with torch.no_grad():
            self.logit_scale.clamp_(0.0, self.logit_scale_max)

    def scale(self) -> torch.Tensor:
        """exp of the clamped logit scale, used to turn cosine similarities into logits."""
        return self.logit_scale.clamp(0.0, self.logit_scale_max).exp()

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.text_model.tokenize(texts)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Raw trunk features [B, D] (2048 for ResNet-50) of images in [0, 1]."""
        return self.vision_model.features(images.to(self.device))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Projected, L2-normalised image embeddings [B, projection_dim]."""
        return self.vision_model(images.to(self.device))

    def text_features(self, texts: list[str]) -> torch.Tensor:
        """Raw pooled text features [B, d] (768 for BERT-base)."""
        tokens = {k: v.to(self.device) for k, v in self.tokenize(texts).items()}
        return self.text_model.features(**tokens)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Projected, L2-normalised text embeddings [B, projection_dim]."""
        tokens = {k: v.to(self.device) for k, v in self.tokenize(texts).items()}
        return self.text_model(**tokens)

    def forward(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(image embeddings, text embeddings) of a batch of image-text pairs."""
        return self.vision_model(images), self.text_model(input_ids, attention_mask)
