"""OCR engines behind one interface.

RapidOCR is the default: its wheel ships the PP-OCR (Chinese + English) ONNX models, so it runs
offline. PaddleOCR 3 (the `paddle` extra, pipeline/ocr_paddle.py) runs the same PP-OCR models, or
a user's own, on ONNX Runtime from local model directories; it is imported only when selected.
"""

from __future__ import annotations

import functools
import logging
import threading
from importlib import metadata
from pathlib import Path
from typing import Callable, Literal, Protocol

import numpy as np
from pydantic import BaseModel, Field

log = logging.getLogger(__name__)


class OcrOptions(BaseModel):
    """How scanned pages are recognised."""

    engine: Literal["rapidocr", "paddleocr"] = Field(
        "rapidocr", description="OCR engine: 'rapidocr' (bundled PP-OCR ONNX models) or 'paddleocr' (local models)."
    )
    min_confidence: float = Field(0.5, description="Recognised lines below this confidence are dropped.")
    max_side_len: int = Field(2400, description="Longest image side the engine processes before downscaling.")
    det_limit_side_len: int = Field(960, description="Detector input size (shorter side) for text detection.")
    threads: int = Field(0, description="Inference threads for the ONNX runtime; 0 lets the runtime decide.")
    paddle_det_model_dir: Path | None = Field(
        None,
        description="PaddleOCR: text-detection model directory (inference.onnx + inference.yml); "
        "default: prepared from rapidocr's models under paddle_home.",
    )
    paddle_rec_model_dir: Path | None = Field(
        None,
        description="PaddleOCR: text-recognition model directory (inference.onnx + inference.yml); "
        "default: prepared from rapidocr's models under paddle_home.",
    )
    paddle_device: str = Field("cpu", description="PaddleOCR: device string, e.g. 'cpu' or 'gpu:0'.")
    paddle_home: Path = Field(
        Path(".mmretinal") / "paddlex",
        description="PaddleOCR: PaddleX's home (caches, prepared models), kept in the work directory instead of ~/.paddlex.",
    )


class OcrLine(BaseModel):
    """One recognised line of text with its box in image pixels."""

    text: str
    box: tuple[float, float, float, float] = Field(description="x0, y0, x1, y1 in image pixels.")
    confidence: float


class OcrEngine(Protocol):
    name: str

    def recognise(self, image: np.ndarray) -> list[OcrLine]:
        """Recognise text lines in an RGB uint8 image."""

    def recognise_line(self, image: np.ndarray) -> tuple[str, float] | None:
        """Read an image that holds one short line of text (no detection); None if unsupported."""


def axis_aligned(points) -> tuple[float, float, float, float]:
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())


class RapidOcrEngine:
    """PP-OCR models run by RapidOCR on ONNX Runtime (offline: models ship in the wheel)."""

    def __init__(self, options: OcrOptions):
        from rapidocr import RapidOCR

        self.options = options
        params = {
            "Global.log_level": "warning",
            "Global.max_side_len": options.max_side_len,
            "Global.text_score": options.min_confidence,
            "Det.limit_side_len": options.det_limit_side_len,
        }
        if options.threads:
            params["EngineConfig.onnxruntime.intra_op_num_threads"] = options.threads
        self._engine = RapidOCR(params=params)
        # RapidOCR keeps the last call's use_det/use_cls/use_rec as its state: every call names
        # them, under a lock, so full-page OCR and label reading can share one engine across threads.
        self._lock = threading.Lock()
        self.name = f"rapidocr {metadata.version('rapidocr')} (PP-OCR onnx)"

    def recognise(self, image: np.ndarray) -> list[OcrLine]:
        with self._lock:
            result = self._engine(image, use_det=True, use_cls=True, use_rec=True)
        if result.boxes is None or result.txts is None:
            return []
        return [
            OcrLine(text=text, box=axis_aligned(box), confidence=float(score))
            for box, text, score in zip(result.boxes, result.txts, result.scores)
            if score >= self.options.min_confidence and text.strip()
        ]

    def recognise_line(self, image: np.ndarray) -> tuple[str, float] | None:
        with self._lock:
            result = self._engine(image, use_det=False, use_cls=False, use_rec=True)
        if not result.txts:
            return None
        return result.txts[0], float(result.scores[0])


@functools.lru_cache(maxsize=4)
def _cached_engine(options_json: str) -> OcrEngine:
    options = OcrOptions.model_validate_json(options_json)
    if options.engine == "paddleocr":
        from pipeline.ocr_paddle import PaddleOcrEngine

        engine: OcrEngine = PaddleOcrEngine(options)
    else:
        engine = RapidOcrEngine(options)
    log.debug("OCR engine ready: %s", engine.name)
    return engine


def create_ocr_engine(options: OcrOptions | None = None) -> OcrEngine:
    """Return a (process-wide cached) OCR engine; loading models takes a moment, so reuse it."""
    options = options or OcrOptions()
    # RapidOCR ignores the paddle_* settings: builds in different work directories share one engine.
    ignored = set()
    if options.engine == "rapidocr":
        ignored = {name for name in OcrOptions.model_fields if name.startswith("paddle_")}
    return _cached_engine(options.model_dump_json(exclude=ignored))


def lazy_line_reader(options: OcrOptions | None = None) -> Callable[[np.ndarray], tuple[str, float] | None]:
    """The configured engine's single-line recogniser, created on first call (most books never need it)."""

    def read(image: np.ndarray) -> tuple[str, float] | None:
        return create_ocr_engine(options).recognise_line(image)

    return read
