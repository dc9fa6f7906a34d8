"""The images of one document: PNG files content-addressed under `<root>/images/`, with the
decoded pixels of the most recent ones kept in memory (bounded by bytes) so that alignment and
modality read what extraction already decoded instead of decoding the PNG again."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np

from foundation.files import write_atomic

DEFAULT_MEMORY_BYTES = 256 * 1024 * 1024


def encode_png(rgb: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError("PNG encoding failed")
    return buffer.tobytes()


class ImageBank:
    """Writes each distinct image once and hands its pixels back (RGB uint8)."""

    def __init__(self, root: Path, memory_bytes: int = DEFAULT_MEMORY_BYTES):
        self.root = Path(root)
        (self.root / "images").mkdir(parents=True, exist_ok=True)
        self.memory_bytes = memory_bytes
        self._pixels: OrderedDict[str, np.ndarray] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    def put(self, rgb: np.ndarray) -> tuple[str, str]:
        """Store an RGB image; returns (sha256 of the PNG bytes, path relative to the root)."""
        rgb = np.ascontiguousarray(rgb)
        png = encode_png(rgb)
        digest = hashlib.sha256(png).hexdigest()
        relative = f"images/{digest}.png"
        target = self.root / relative
        if not target.exists():
            write_atomic(target, png)
        self._remember(relative, rgb)
        return digest, relative

    def pixels(self, relative: str) -> np.ndarray:
        """The image's RGB pixels: from memory when recent, else decoded from its file."""
        with self._lock:
            cached = self._pixels.get(relative)
            if cached is not None:
                self._pixels.move_to_end(relative)
                return cached
        bgr = cv2.imread(str(self.root / relative), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot decode image {relative}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        self._remember(relative, rgb)
        return rgb

    def path(self, relative: str) -> Path:
        return self.root / relative

    def move_to(self, root: Path) -> None:
        """The files were moved (staging directory renamed into place): read them from there."""
        self.root = Path(root)

    def _remember(self, relative: str, rgb: np.ndarray) -> None:
        size = rgb.nbytes
        if size > self.memory_bytes:
            return
        with self._lock:
            if relative in self._pixels:
                self._pixels.move_to_end(relative)
                return
            self._pixels[relative] = rgb
            self._held += size
            while self._held > self.memory_bytes:
                _, evicted = self._pixels.popitem(last=False)
                self._held -= evicted.nbytes
