"""Image preprocessing as in the release: longest side to S, zero-pad to a square, /255 (no mean/std)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from data_manifests.store import sha256_file
from foundation.files import atomic_output
from foundation.imaging import ImageDecodeError, decode_image

logger = logging.getLogger(__name__)


def resize_and_pad(image: Image.Image | np.ndarray, size: int) -> np.ndarray:
    """HxWx3 uint8 with the longest side scaled to `size` and zero padding at the right/bottom."""
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 array, got shape {image.shape} dtype {image.dtype}")
        image = Image.fromarray(np.ascontiguousarray(image[:, :, :3]))
    image = image.convert("RGB")
    width, height = image.size
    scale = size / max(width, height)
    new_width = max(1, round(width * scale))
    new_height = max(1, round(height * scale))
    if (new_width, new_height) != (width, height):
        image = image.resize((new_width, new_height), Image.Resampling.BILINEAR)
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    canvas[:new_height, :new_width] = np.asarray(image)
    return canvas


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 3xHxW float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float().div_(255.0)


class Preprocess:
    """Callable turning a PIL image or HxWx3 uint8 array into the model's input tensor [3, S, S]."""

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size

    def __call__(self, image: Image.Image | np.ndarray) -> torch.Tensor:
        return to_tensor(resize_and_pad(image, self.image_size))

    def __repr__(self) -> str:
        return f"Preprocess(image_size={self.image_size})"


class ResizedImageCache:
    """On-disk cache of images already resized and padded to one size, stored as lossless PNG.

    Keys come from the caller (content hash for manifest images, path + size + mtime for FLAIR
    files), so a changed source file never reuses a stale entry.
    """

    def __init__(self, root: str | Path | None, image_size: int) -> None:
        self.root = Path(root) / f"s{image_size}" if root is not None else None
        self.image_size = image_size

    def _entry(self, key: str) -> Path | None:
        if self.root is None:
            return None
        return self.root / key[:2] / f"{key}.png"

    def get(self, key: str) -> np.ndarray | None:
        entry = self._entry(key)
        if entry is None or not entry.exists():
            return None
        return np.array(decode_image(entry))

    def put(self, key: str, array: np.ndarray) -> None:
        entry = self._entry(key)
        if entry is None:
            return
        with atomic_output(entry) as out:
            Image.fromarray(array).save(out, format="PNG", compress_level=1)

    def load(self, path: str | Path, key: str | None = None, expected_sha256: str | None = None) -> np.ndarray:
        """Resized uint8 image for `path`, filling the cache on a miss (checking the sha256 if given)."""
        source = Path(path)
        if key is None:
            stat = source.stat()
            key = hashlib.sha256(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
        cached = self.get(key)
        if cached is not None:
            return cached
        if expected_sha256 is not None:
            actual = sha256_file(source)
            if actual != expected_sha256:
                raise ValueError(f"{source}: sha256 {actual} does not match the manifest's {expected_sha256}")
        try:
            array = resize_and_pad(decode_image(source), self.image_size)  # bombs refused from the header
        except ImageDecodeError:
            raise
        except (OSError, ValueError) as exc:
            raise ValueError(f"{source}: cannot read image: {exc}") from exc
        self.put(key, array)
        return array
