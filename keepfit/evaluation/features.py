"""Frozen-encoder image features, computed once per (model, dataset, preprocessing) and kept on disk.

One forward pass yields both the raw trunk features (for the linear probe) and the projected
embeddings (for zero-shot and the adapters), so every frozen-encoder method on a dataset shares
it. The cache key is the SHA-256 of the model weights, the dataset's content key (CSV bytes +
image root + rows kept) and the preprocessing description; a changed input never reuses a stale
file. `FeatureCache.hits` / `.misses` count lookups so callers and tests can see reuse.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from keepfit.evaluation.datasets import LabeledImageSet, load_rgb_image
from keepfit.evaluation.protocols import ImageTextEncoder
from foundation.files import atomic_output

logger = logging.getLogger(__name__)

FEATURE_PIPELINE_VERSION = "1"
"""Bump when the extraction code changes in a way that alters stored features."""


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 over parameter and buffer names, shapes, dtypes and bytes: the checkpoint's identity."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        if not isinstance(tensor, torch.Tensor):
            continue
        value = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{tuple(tensor.shape)}|{value.dtype}".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def preprocessing_fingerprint(model: ImageTextEncoder, view: int = 0) -> str:
    """What turns a file into the input tensor: the preprocess callable's description, size and TTA view."""
    preprocess = model.preprocess
    description = repr(preprocess)
    if " at 0x" in description:
        description = f"{type(preprocess).__module__}.{type(preprocess).__qualname__}"
    suffix = f"|view={view}" if view else ""
    return f"{description}|size={model.image_size}|v{FEATURE_PIPELINE_VERSION}{suffix}"


def tta_view(image: torch.Tensor, view: int, index: int) -> torch.Tensor:
    """View `view` of one preprocessed image [3, S, S] for test-time augmentation.

    0 is the image itself, 1 its horizontal flip, and every later view a random draw of the
    release's training augmentation (flip, affine, colour jitter) seeded by (view, image index),
    so a view is the same whatever the batch size or worker count.
    """
    if view == 0:
        return image
    if view == 1:
        return image.flip(-1)
    from keepfit.augment import AugmentConfig, augment_batch

    generator = torch.Generator().manual_seed(1_000_003 * view + index)
    return augment_batch(image[None], AugmentConfig(), generator)[0]


@dataclass
class FeatureSet:
    """Features of every sample of a dataset, row-aligned with its image list."""

    raw: np.ndarray
    projected: np.ndarray
    valid: np.ndarray
    errors: dict[int, str]
    key: str

    def select(self, indices: np.ndarray, kind: str) -> np.ndarray:
        source = self.raw if kind == "raw" else self.projected
        return source[indices]


class _ImageFiles(Dataset):
    """Decoded, preprocessed images; a file that cannot be read yields an error string, not a crash."""

    def __init__(self, paths: list[Path], preprocess: Any, image_size: int, view: int = 0) -> None:
        self.paths = paths
        self.preprocess = preprocess
        self.image_size = image_size
        self.view = view

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        try:
            tensor = self.preprocess(load_rgb_image(self.paths[index]))
            return tta_view(tensor, self.view, index), index, ""
        except ValueError as exc:
            return torch.zeros(3, self.image_size, self.image_size), index, str(exc)


def image_loader(
    paths: list[Path],
    model: ImageTextEncoder,
    batch_size: int,
    num_workers: int,
    shuffle: bool = False,
    view: int = 0,
) -> DataLoader:
    return DataLoader(
        _ImageFiles(paths, model.preprocess, model.image_size, view),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        persistent_workers=False,
    )


def _project(model: Any, raw: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Projected embeddings from raw features when the model exposes its head, else a second pass."""
    head = getattr(getattr(model, "vision_model", None), "projection_head_vision", None)
    if head is not None:
        return head(raw)
    return model.encode_image(images)


@torch.no_grad()
def extract_features(
    model: ImageTextEncoder,
    paths: list[Path],
    batch_size: int = 32,
    num_workers: int = 0,
    key: str = "",
    view: int = 0,
) -> FeatureSet:
    """Raw and projected features of `paths` in file order (one forward pass of the image tower)."""
    was_training = model.training
    model.eval()
    raw_parts: list[np.ndarray] = []
    projected_parts: list[np.ndarray] = []
    errors: dict[int, str] = {}
    started = time.perf_counter()
    try:
        for images, indices, messages in image_loader(paths, model, batch_size, num_workers, view=view):
            raw = model.image_features(images)
            projected = _project(model, raw, images)
            raw_parts.append(raw.float().cpu().numpy())
            projected_parts.append(projected.float().cpu().numpy())
            for index, message in zip(indices.tolist(), messages):
                if message:
                    errors[index] = message
                    logger.error("feature extraction: %s", message)
    finally:
        model.train(was_training)
    valid = np.ones(len(paths), dtype=bool)
    valid[list(errors)] = False
    logger.info("extracted features of %d images in %.1f s", len(paths), time.perf_counter() - started)
    return FeatureSet(
        raw=np.concatenate(raw_parts), projected=np.concatenate(projected_parts), valid=valid, errors=errors, key=key
    )


class FeatureCache:
    """Directory of `<key>.npz` feature files; counts hits and misses."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root) if root is not None else None
        self.hits = 0
        self.misses = 0
        self._memory: dict[str, FeatureSet] = {}

    @staticmethod
    def key_for(model_hash: str, dataset: LabeledImageSet, preprocessing: str) -> str:
        digest = hashlib.sha256()
        for part in (model_hash, dataset.content_key, preprocessing):
            digest.update(part.encode() + b"\0")
        return digest.hexdigest()[:40]

    def path_for(self, key: str) -> Path | None:
        return self.root / f"{key}.npz" if self.root is not None else None

    def _read(self, key: str) -> FeatureSet | None:
        if key in self._memory:
            return self._memory[key]
        path = self.path_for(key)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as stored:
                error_index = stored["error_index"]
                error_text = stored["error_text"]
                features = FeatureSet(
                    raw=stored["raw"],
                    projected=stored["projected"],
                    valid=stored["valid"],
                    errors={int(i): str(t) for i, t in zip(error_index, error_text)},
                    key=key,
                )
        except (OSError, KeyError, ValueError) as exc:
            logger.warning("feature cache file %s unreadable (%s); recomputing", path, exc)
            return None
        self._memory[key] = features
        return features

    def _write(self, features: FeatureSet) -> None:
        self._memory[features.key] = features
        path = self.path_for(features.key)
        if path is None:
            return
        with atomic_output(path) as out:
            np.savez(
                out,
                raw=features.raw,
                projected=features.projected,
                valid=features.valid,
                error_index=np.asarray(list(features.errors), dtype=np.int64),
                error_text=np.asarray(list(features.errors.values()), dtype=str),
            )

    def get_or_compute(
        self,
        model: ImageTextEncoder,
        dataset: LabeledImageSet,
        model_hash: str | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        view: int = 0,
    ) -> FeatureSet:
        """Features of every image of `dataset` (in test-time view `view`), from the cache when the key matches."""
        model_hash = model_hash or model_fingerprint(model)
        key = self.key_for(model_hash, dataset, preprocessing_fingerprint(model, view))
        cached = self._read(key)
        if cached is not None and len(cached.valid) == len(dataset):
            self.hits += 1
            logger.info("feature cache hit %s (%s, %d images)", key, dataset.name, len(dataset))
            return cached
        self.misses += 1
        logger.info("feature cache miss %s (%s, %d images): extracting", key, dataset.name, len(dataset))
        features = extract_features(model, dataset.image_paths, batch_size, num_workers, key=key, view=view)
        self._write(features)
        return features
