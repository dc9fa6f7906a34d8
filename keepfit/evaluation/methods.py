"""Transfer methods: zero-shot, linear probe, CLIP-Adapter, Tip-Adapter(-F), fine-tuning, LP-FT.

The frozen-encoder methods work on cached features (`FeatureSet`); the fine-tuning methods train
a copy of the image tower and read images. Every method returns a score matrix [N, K]; the
prediction is always its argmax. Validation data, when a split has it, is the only data used for
any choice made during training (early stopping); the test set is only ever predicted.
"""

from __future__ import annotations

import copy
import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from sklearn.linear_model import LogisticRegression
from torch import nn

from keepfit.evaluation.datasets import LabeledImageSet
from keepfit.evaluation.features import FeatureSet, image_loader
from keepfit.evaluation.metrics import balanced_accuracy, confusion_matrix
from keepfit.evaluation.protocols import ImageTextEncoder
from keepfit.evaluation.splits import Split

logger = logging.getLogger(__name__)

MethodName = Literal[
    "zero_shot", "linear_probe", "clip_adapter", "tip_adapter", "tip_adapter_f", "fine_tune", "lp_fine_tune"
]
METHOD_NAMES: tuple[str, ...] = MethodName.__args__  # type: ignore[attr-defined]

ZERO_SHOT_TEMPLATE = "A fundus photograph of [CLS]"


class PromptOptions(BaseModel):
    """How class prototypes are built from text."""

    template: str = Field(ZERO_SHOT_TEMPLATE, description="Prompt template; [CLS] is replaced by each description.")
    domain_knowledge: bool = Field(
        True, description="Average the class name with its expert descriptions from the domain-knowledge dictionary."
    )
    knowledge_path: str | None = Field(
        None, description="YAML/JSON category -> descriptions file; the bundled dictionary when unset."
    )
    prototype: Literal["mean", "renormalized_mean"] = Field(
        "mean",
        description="'mean' (release): a class prototype is the plain mean of its prompts' normalised embeddings. "
        "'renormalized_mean': that mean L2-normalised again, so every class scores on the same cosine scale "
        "whatever the spread of its prompts.",
    )


class LinearProbeOptions(BaseModel):
    """Logistic-regression probe on frozen features (the FLAIR/KeepFIT settings)."""

    c: float = Field(0.316, description="Inverse L2 regularisation strength C.")
    max_iter: int = Field(1000, description="Maximum solver iterations.")
    class_weight: Literal["balanced"] | None = Field("balanced", description="Class weighting of the loss.")
    features: Literal["raw", "projected"] = Field(
        "raw", description="'raw' trunk features (2048-d for ResNet-50) or 'projected' joint-space embeddings."
    )
    normalize: bool = Field(
        False,
        description="L2-normalise features before the probe. Off in the release, which probes raw trunk features "
        "when project_features is off; with C fixed at 0.316, normalising changes the effective regularisation.",
    )


class AdapterOptions(BaseModel):
    """CLIP-Adapter and Tip-Adapter(-F) hyperparameters."""

    epochs: int = Field(40, description="Training epochs (CLIP-Adapter, Tip-Adapter-F).")
    lr: float = Field(1e-3, description="AdamW learning rate.")
    batch_size: int = Field(1, description="Samples per step (the release trains one sample at a time).")
    reduction: int = Field(4, description="CLIP-Adapter bottleneck: embedding dim // reduction (512 -> 128).")
    ratio: float = Field(0.2, description="CLIP-Adapter residual ratio: ratio * adapter(x) + (1 - ratio) * x.")
    beta: float = Field(5.0, description="Tip-Adapter sharpness of the cache affinities.")
    alpha: float = Field(1.0, description="Tip-Adapter weight of the cache logits against the zero-shot logits.")


class FineTuneOptions(BaseModel):
    """Full fine-tuning of the image tower with a linear head."""

    epochs: int = Field(50, description="Maximum training epochs (release: 50).")
    lr: float = Field(1e-4, description="AdamW learning rate for the image tower and the head.")
    weight_decay: float = Field(1e-5, description="AdamW weight decay.")
    batch_size: int = Field(8, description="Images per step.")
    patience: int = Field(
        10, description="Stop after this many epochs without validation ACA gain (release: 10). Without a "
        "validation set (the default 80/0/20 split) all epochs run and the last one is used, as in the release.",
    )
    horizontal_flip: bool = Field(True, description="Random horizontal flips of training images.")
    normalize: bool = Field(False, description="L2-normalise trunk features before the head (as the linear probe).")
    update_batchnorm: bool = Field(
        True,
        description="Update BatchNorm running statistics while fine-tuning (release). Off keeps them frozen: "
        "small batches give noisy statistics, and LP-FT then starts exactly from the probe it was initialised with.",
    )


class MethodOptions(BaseModel):
    """Hyperparameters of all methods; each method reads its own part."""

    profile: str = Field(
        "reproduce", description="Profile these options started from ('reproduce' = the release); shown in reports."
    )
    prompts: PromptOptions = Field(default_factory=PromptOptions, description="Class prototype construction.")
    linear_probe: LinearProbeOptions = Field(default_factory=LinearProbeOptions, description="Linear probe.")
    adapter: AdapterOptions = Field(default_factory=AdapterOptions, description="CLIP-Adapter / Tip-Adapter.")
    fine_tune: FineTuneOptions = Field(default_factory=FineTuneOptions, description="Fine-tuning and LP-FT.")
    tta: bool = Field(
        False,
        description="Test-time augmentation for the frozen-encoder methods: average the softmax probabilities over "
        "`tta_views` views of each test image (the image, its horizontal flip, then random release-style "
        "augmentations). Fine-tuning methods always predict on the image itself.",
    )
    tta_views: int = Field(4, ge=1, description="Views per test image when `tta` is on (including the image itself).")
    device: str = Field("cpu", description="Torch device for adapters and fine-tuning.")
    batch_size: int = Field(32, description="Images per forward pass when extracting or predicting.")
    num_workers: int = Field(0, description="DataLoader worker processes for image decoding.")


@dataclass
class FoldData:
    """What a method may see for one fold: the split, all cached features and the dataset."""

    split: Split
    labels: np.ndarray
    features: FeatureSet
    dataset: LabeledImageSet

    def labels_of(self, indices: np.ndarray) -> np.ndarray:
        return self.labels[indices]


@dataclass
class MethodContext:
    """Shared, fold-independent inputs: the model, the classes and the class text prototypes."""

    model: ImageTextEncoder
    classes: list[str]
    options: MethodOptions
    _prototypes: torch.Tensor | None = field(default=None, repr=False)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def device(self) -> torch.device:
        return torch.device(self.options.device)

    def logit_scale(self) -> float:
        """exp of the (clamped, when the model clamps) learnt log scale."""
        scale = getattr(self.model, "scale", None)
        if callable(scale):
            return float(scale().detach())
        return float(self.model.logit_scale.detach().exp())

    def class_prompts(self) -> dict[str, list[str]]:
        from keepfit.prompts import class_prompts, fill_template, load_domain_knowledge

        prompt_options = self.options.prompts
        if not prompt_options.domain_knowledge:
            return {name: [fill_template(prompt_options.template, name)] for name in self.classes}
        knowledge = load_domain_knowledge(prompt_options.knowledge_path)
        return {name: class_prompts(name, knowledge, prompt_options.template) for name in self.classes}

    @torch.no_grad()
    def class_prototypes(self) -> torch.Tensor:
        """[K, E]: per class, the mean of the normalised embeddings of its prompts (renormalised if configured)."""
        if self._prototypes is None:
            was_training = self.model.training
            self.model.eval()
            try:
                rows = []
                for name, prompts in self.class_prompts().items():
                    embeddings = F.normalize(self.model.encode_text(prompts).float().cpu(), dim=-1)
                    prototype = embeddings.mean(dim=0)
                    if self.options.prompts.prototype == "renormalized_mean":
                        prototype = F.normalize(prototype, dim=-1)
                    rows.append(prototype)
                    logger.debug("class %r prototype from %d prompts", name, len(prompts))
            finally:
                self.model.train(was_training)
            self._prototypes = torch.stack(rows)
        return self._prototypes


class TransferMethod(ABC):
    """fit on a fold's train (and val) samples, then score any samples."""

    name: ClassVar[str]
    trains: ClassVar[bool] = True
    reads_images: ClassVar[bool] = False

    def __init__(self, context: MethodContext) -> None:
        self.context = context

    @abstractmethod
    def fit(self, fold: FoldData) -> None: ...

    @abstractmethod
    def predict(self, fold: FoldData, indices: np.ndarray) -> np.ndarray:
        """Scores [len(indices), K]; larger means more likely."""


def _normalised(array: np.ndarray) -> torch.Tensor:
    return F.normalize(torch.as_tensor(array, dtype=torch.float32), dim=-1)


def _seed_everything(fold: int) -> torch.Generator:
    torch.manual_seed(1000 + fold)
    return torch.Generator().manual_seed(1000 + fold)


class ZeroShot(TransferMethod):
    """Cosine similarity of image embeddings to class prototypes, times the logit scale."""

    name = "zero_shot"
    trains = False

    def fit(self, fold: FoldData) -> None:
        return None

    def predict(self, fold: FoldData, indices: np.ndarray) -> np.ndarray:
        images = _normalised(fold.features.projected[indices])
        prototypes = self.context.class_prototypes()
        return (self.context.logit_scale() * images @ prototypes.T).numpy()


class LinearProbe(TransferMethod):
    """Balanced logistic regression on frozen features."""

    name = "linear_probe"

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        self.options = context.options.linear_probe
        self.classifier: LogisticRegression | None = None

    def features(self, fold: FoldData, indices: np.ndarray) -> np.ndarray:
        values = fold.features.select(indices, self.options.features).astype(np.float64)
        if self.options.normalize:
            values = values / np.clip(np.linalg.norm(values, axis=1, keepdims=True), 1e-12, None)
        return values

    def fit(self, fold: FoldData) -> None:
        train = fold.split.train
        if train.size == 0:
            raise ValueError("linear probe needs training samples; the split has none")
        self.classifier = LogisticRegression(
            C=self.options.c, max_iter=self.options.max_iter, class_weight=self.options.class_weight, random_state=0
        )
        self.classifier.fit(self.features(fold, train), fold.labels_of(train))

    def predict(self, fold: FoldData, indices: np.ndarray) -> np.ndarray:
        if self.classifier is None:
            raise RuntimeError("fit the linear probe first")
        log_probabilities = self.classifier.predict_log_proba(self.features(fold, indices))
        scores = np.full((indices.size, self.context.n_classes), -1e9)
        scores[:, self.classifier.classes_] = log_probabilities
        return scores

    def as_linear_layer(self, dim: int) -> nn.Linear:
        """The fitted probe as an nn.Linear giving K logits with the same argmax and softmax."""
        if self.classifier is None:
            raise RuntimeError("fit the linear probe first")
        n_classes = self.context.n_classes
        weight = torch.zeros(n_classes, dim)
        bias = torch.full((n_classes,), -1e4)
        coef = torch.as_tensor(self.classifier.coef_, dtype=torch.float32)
        intercept = torch.as_tensor(self.classifier.intercept_, dtype=torch.float32)
        present = torch.as_tensor(self.classifier.classes_, dtype=torch.long)
        if present.numel() == 2 and coef.shape[0] == 1:
            weight[present[1]] = coef[0]
            bias[present[0]] = 0.0
            bias[present[1]] = intercept[0]
        else:
            weight[present] = coef
            bias[present] = intercept
        layer = nn.Linear(dim, n_classes)
        with torch.no_grad():
            layer.weight.copy_(weight)
            layer.bias.copy_(bias)
        return layer


def _minibatches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    return list(order.split(max(1, batch_size)))


class ClipAdapterModule(nn.Module):
    """Residual bottleneck MLP on image embeddings (CLIP-Adapter), output renormalised."""

    def __init__(self, dim: int, reduction: int, ratio: float) -> None:
        super().__init__()
        self.ratio = ratio
        self.mlp = nn.Sequential(
            nn.Linear(dim, dim // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(dim // reduction, dim, bias=False),
            nn.ReLU(inplace=True),
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        mixed = self.ratio * self.mlp(embeddings) + (1.0 - self.ratio) * embeddings
        return F.normalize(mixed, dim=-1)


class ClipAdapter(TransferMethod):
    """A residual adapter on image embeddings trained against the frozen class prototypes."""

    name = "clip_adapter"

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        self.options = context.options.adapter
        self.adapter: ClipAdapterModule | None = None

    def fit(self, fold: FoldData) -> None:
        train = fold.split.train
        if train.size == 0:
            raise ValueError("CLIP-Adapter needs training samples; the split has none")
        generator = _seed_everything(fold.split.fold)
        device = self.context.device
        prototypes = self.context.class_prototypes().to(device)
        scale = self.context.logit_scale()
        images = _normalised(fold.features.projected[train]).to(device)
        targets = torch.as_tensor(fold.labels_of(train), dtype=torch.long, device=device)
        self.adapter = ClipAdapterModule(images.shape[1], self.options.reduction, self.options.ratio).to(device)
        optimizer = torch.optim.AdamW(self.adapter.parameters(), lr=self.options.lr, eps=1e-4)
        steps = self.options.epochs * math.ceil(train.size / max(1, self.options.batch_size))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, steps))
        self.adapter.train()
        for epoch in range(self.options.epochs):
            epoch_loss = 0.0
            for batch in _minibatches(train.size, self.options.batch_size, generator):
                logits = scale * self.adapter(images[batch]) @ prototypes.T
                loss = F.cross_entropy(logits, targets[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                epoch_loss += loss.item() * batch.numel() / train.size
            logger.debug("clip-adapter epoch %d loss %.4f", epoch, epoch_loss)
        self.adapter.eval()

    @torch.no_grad()
    def predict(self, fold: FoldData, indices: np.ndarray) -> np.ndarray:
        if self.adapter is None:
            raise RuntimeError("fit CLIP-Adapter first")
        device = self.context.device
        images = _normalised(fold.features.projected[indices]).to(device)
        prototypes = self.context.class_prototypes().to(device)
        return (self.context.logit_scale() * self.adapter(images) @ prototypes.T).cpu().numpy()


class TipAdapter(TransferMethod):
    """Training-free cache model: zero-shot logits + alpha * exp(-beta (1 - cos)) @ one-hot labels.

    The same logit formula is used for fitting (Tip-Adapter-F) and prediction, with the model's
    logit scale for the zero-shot part (the release mixed 100 and the logit scale between them).
    """

    name = "tip_adapter"
    fine_tune_keys: ClassVar[bool] = False

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        self.options = context.options.adapter
        self.cache_keys: torch.Tensor | None = None
        self.cache_values: torch.Tensor | None = None

    def logits(self, images: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        device = images.device
        prototypes = self.context.class_prototypes().to(device)
        zero_shot = self.context.logit_scale() * images @ prototypes.T
        affinity = images @ keys.T
        cache = torch.exp(-self.options.beta * (1.0 - affinity)) @ self.cache_values
        return zero_shot + self.options.alpha * cache

    def fit(self, fold: FoldData) -> None:
        train = fold.split.train
        if train.size == 0:
            raise ValueError("Tip-Adapter needs training samples for its cache; the split has none")
        device = self.context.device
        self.cache_keys = _normalised(fold.features.projected[train]).to(device)
        labels = torch.as_tensor(fold.labels_of(train), dtype=torch.long, device=device)
        self.cache_values = F.one_hot(labels, self.context.n_classes).float()
        if self.fine_tune_keys:
            self._fine_tune_keys(labels, fold.split.fold)

    def _fine_tune_keys(self, labels: torch.Tensor, fold: int) -> None:
        generator = _seed_everything(fold)
        keys = nn.Parameter(self.cache_keys.clone())
        optimizer = torch.optim.AdamW([keys], lr=self.options.lr, eps=1e-4)
        steps = self.options.epochs * math.ceil(labels.numel() / max(1, self.options.batch_size))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, steps))
        images = self.cache_keys
        for epoch in range(self.options.epochs):
            epoch_loss = 0.0
            for batch in _minibatches(labels.numel(), self.options.batch_size, generator):
                loss = F.cross_entropy(self.logits(images[batch], keys), labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                epoch_loss += loss.item() * batch.numel() / labels.numel()
            logger.debug("tip-adapter-f epoch %d loss %.4f", epoch, epoch_loss)
        self.cache_keys = keys.detach()

    @torch.no_grad()
    def predict(self, fold: FoldData, indices: np.ndarray) -> np.ndarray:
        if self.cache_keys is None:
            raise RuntimeError("fit Tip-Adapter first")
        images = _normalised(fold.features.projected[indices]).to(self.context.device)
        return self.logits(images, self.cache_keys).cpu().numpy()


class TipAdapterF(TipAdapter):
    """Tip-Adapter with the cache keys fine-tuned on the training samples."""

    name = "tip_adapter_f"
    fine_tune_keys = True


class ClassifierNetwork(nn.Module):
    """Image tower (raw trunk features) + optional L2 normalisation + linear head."""

    def __init__(self, encoder: Any, head: nn.Linear, normalize: bool) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.normalize = normalize

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.encoder.image_features(images).float()
        if self.normalize:
            features = F.normalize(features, dim=-1)
        return self.head(features)


def _image_tower_parameters(model: Any, image_size: int, device: torch.device) -> list[nn.Parameter]:
    """Parameters that `image_features` depends on, found by one backward pass (model-agnostic)."""
    for parameter in model.parameters():
        parameter.requires_grad_(True)
        parameter.grad = None
    was_training = model.training
    model.eval()
    probe = torch.rand(1, 3, image_size, image_size, device=device)
    model.image_features(probe).float().sum().backward()
    model.train(was_training)
    tower = [parameter for parameter in model.parameters() if parameter.grad is not None]
    tower_ids = {id(parameter) for parameter in tower}
    for parameter in model.parameters():
        parameter.grad = None
        if id(parameter) not in tower_ids:
            parameter.requires_grad_(False)
    return tower


class FineTune(TransferMethod):
    """Train a copy of the image tower with a linear head; model selection on validation ACA only."""

    name = "fine_tune"
    reads_images = True

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        self.options = context.options.fine_tune
        self.network: ClassifierNetwork | None = None

    def initial_head(self, fold: FoldData, dim: int) -> nn.Linear:
        return nn.Linear(dim, self.context.n_classes)

    def _paths(self, fold: FoldData, indices: np.ndarray) -> list[Path]:
        return [fold.dataset.image_paths[i] for i in indices.tolist()]

    def fit(self, fold: FoldData) -> None:
        train, val = fold.split.train, fold.split.val
        if train.size == 0:
            raise ValueError("fine-tuning needs training samples; the split has none")
        generator = _seed_everything(fold.split.fold)
        device = self.context.device
        encoder = copy.deepcopy(self.context.model).to(device)
        tower = _image_tower_parameters(encoder, self.context.model.image_size, device)
        dim = int(fold.features.raw.shape[1])
        head = self.initial_head(fold, dim).to(device)
        network = ClassifierNetwork(encoder, head, self.options.normalize).to(device)
        optimizer = torch.optim.AdamW(
            [*tower, *head.parameters()], lr=self.options.lr, weight_decay=self.options.weight_decay
        )
        labels = torch.as_tensor(fold.labels, dtype=torch.long)
        train_loader = image_loader(
            self._paths(fold, train),
            encoder,
            self.options.batch_size,
            self.context.options.num_workers,
            shuffle=True,
        )
        train_labels = labels[torch.as_tensor(train)]
        best_aca, best_state, stale = -1.0, None, 0
        for epoch in range(self.options.epochs):
            network.train()
            if not self.options.update_batchnorm:
                for module in network.modules():
                    if isinstance(module, nn.modules.batchnorm._BatchNorm):
                        module.eval()
            epoch_loss = 0.0
            for images, positions, errors in train_loader:
                keep = torch.tensor([not message for message in errors])
                if not keep.any():
                    continue
                images = images[keep].to(device)
                if self.options.horizontal_flip:
                    flip = torch.rand(images.shape[0], generator=generator) < 0.5
                    images[flip.to(device)] = images[flip.to(device)].flip(-1)
                logits = network(images)
                loss = F.cross_entropy(logits, train_labels[positions[keep]].to(device))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                epoch_loss += loss.item() * int(keep.sum())
            logger.info("fine-tune fold %d epoch %d loss %.4f", fold.split.fold, epoch, epoch_loss / train.size)
            if val.size == 0:
                continue
            self.network = network
            matrix = confusion_matrix(
                fold.labels_of(val), self.predict(fold, val).argmax(axis=1), self.context.n_classes
            )
            aca = balanced_accuracy(matrix)
            if aca > best_aca:
                best_aca, stale = aca, 0
                best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
            else:
                stale += 1
                if stale >= self.options.patience:
                    logger.info("fine-tune fold %d: early stop at epoch %d", fold.split.fold, epoch)
                    break
        if best_state is not None:
            network.load_state_dict(best_state)
        network.eval()
        self.network = network

    @torch.no_grad()
    def predict(self, fold: FoldData, indices: np.ndarray) -> np.ndarray:
        if self.network is None:
            raise RuntimeError("fine-tune first")
        was_training = self.network.training
        self.network.eval()
        scores = np.zeros((indices.size, self.context.n_classes), dtype=np.float64)
        loader = image_loader(
            self._paths(fold, indices),
            self.context.model,
            self.context.options.batch_size,
            self.context.options.num_workers,
        )
        for images, positions, errors in loader:
            for message in filter(None, errors):
                raise ValueError(message)
            scores[positions.numpy()] = self.network(images.to(self.context.device)).float().cpu().numpy()
        self.network.train(was_training)
        return scores


class LinearProbeFineTune(FineTune):
    """Fine-tuning whose head starts from the linear probe fitted on the cached trunk features."""

    name = "lp_fine_tune"

    def initial_head(self, fold: FoldData, dim: int) -> nn.Linear:
        probe_context = copy.copy(self.context)
        probe_context.options = self.context.options.model_copy(deep=True)
        probe_context.options.linear_probe.features = "raw"
        probe_context.options.linear_probe.normalize = self.options.normalize
        probe = LinearProbe(probe_context)
        probe.fit(fold)
        return probe.as_linear_layer(dim)


METHODS: dict[str, type[TransferMethod]] = {
    cls.name: cls
    for cls in (ZeroShot, LinearProbe, ClipAdapter, TipAdapter, TipAdapterF, FineTune, LinearProbeFineTune)
}


def create_method(name: str, context: MethodContext) -> TransferMethod:
    try:
        return METHODS[name](context)
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}") from None
