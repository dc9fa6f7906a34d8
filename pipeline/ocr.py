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
    lines: Literal["selected", "all"] = Field(
        "selected",
        description="Which detected lines of a scanned page are recognised: 'selected' (lines that can be captions or "
        "figure labels, the rest only where a figure's caption is not found that way) or 'all' (whole-page OCR).",
    )
    min_confidence: float = Field(0.5, description="Recognised lines below this confidence are dropped.")
    max_side_len: int = Field(2400, description="Longest image side the engine processes before downscaling.")
    det_limit_side_len: int = Field(
        1600,
        description="Detector input size: the side named by det_limit_type is scaled to this many pixels. "
        "1600 ('max') keeps the captions and panel counts of full-resolution detection on 200-dpi pages; 1280 "
        "is faster but merges or misses small lines.",
    )
    det_limit_type: Literal["min", "max"] = Field(
        "max",
        description="'max': pages whose longer side exceeds det_limit_side_len are downscaled for detection; "
        "'min': pages whose shorter side is below it are upscaled.",
    )
    rec_batch_size: int = Field(8, ge=1, description="Text-line crops recognised per inference call.")
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


Box = tuple[float, float, float, float]


class OcrEngine(Protocol):
    name: str

    def recognise(self, image: np.ndarray) -> list[OcrLine]:
        """Recognise text lines in an RGB uint8 image (whole-page OCR)."""

    def detect(self, image: np.ndarray) -> list[Box]:
        """Text-line boxes (x0, y0, x1, y1, image pixels) of an RGB uint8 image, nothing recognised."""

    def read_boxes(self, image: np.ndarray, boxes: list[Box]) -> list[tuple[str, float]]:
        """Recognise the given line boxes of `image` in batches: (text, confidence) per box."""

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
            "Det.limit_type": options.det_limit_type,
            "Rec.rec_batch_num": options.rec_batch_size,
        }
        if options.threads:
            params["EngineConfig.onnxruntime.intra_op_num_threads"] = options.threads
        self._engine = RapidOCR(params=params)
        # RapidOCR keeps the last call's use_det/use_cls/use_rec as its state: every call names
        # them, under a lock, so full-page OCR and label reading can share one engine across threads.
        self._lock = threading.Lock()
        self.name = f"rapidocr {metadata.version('rapidocr')} (PP-OCR onnx)"

    def detect(self, image: np.ndarray) -> list[Box]:
        with self._lock:
            result = self._engine(image, use_det=True, use_cls=False, use_rec=False)
        if getattr(result, "boxes", None) is None:
            return []
        return [axis_aligned(box) for box in result.boxes]

    def read_boxes(self, image: np.ndarray, boxes: list[Box]) -> list[tuple[str, float]]:
        """Crops sorted by width and batched, each batch padded to its widest crop only: the
        facade's recogniser pads every crop to at least 320 px (6.7 line heights), which would make
        a line start cost as much as a line of that width."""
        if not boxes:
            return []
        crops = line_crops(image, boxes)
        ratios = [crop.shape[1] / crop.shape[0] for crop in crops]
        order = sorted(range(len(crops)), key=ratios.__getitem__)
        results: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        size = self.options.rec_batch_size
        with self._lock:
            recogniser = self._engine._load_rec_model()  # loaded once, shared with the facade
            for begin in range(0, len(order), size):
                batch = order[begin : begin + size]
                widest = max(ratios[i] for i in batch)
                pixels = np.stack([recogniser.resize_norm_img(crops[i], widest) for i in batch]).astype(np.float32)
                decoded, _ = recogniser.postprocess_op(
                    recogniser.session(pixels), False, wh_ratio_list=[ratios[i] for i in batch], max_wh_ratio=widest
                )
                for index, (text, score) in zip(batch, decoded):
                    results[index] = (text, float(score))
        return results

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


def line_crops(image: np.ndarray, boxes: list[Box]) -> list[np.ndarray]:
    """The crops whole-page OCR makes of line boxes (a crop taller than wide is turned on its side)."""
    from rapidocr.utils.process_img import get_rotate_crop_image

    corners = [np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32) for x0, y0, x1, y1 in boxes]
    return [get_rotate_crop_image(image, points) for points in corners]


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
    # Which lines step 1 reads is not an engine setting; RapidOCR ignores the paddle_* settings:
    # builds in different work directories share one engine.
    ignored = {"lines"}
    if options.engine == "rapidocr":
        ignored |= {name for name in OcrOptions.model_fields if name.startswith("paddle_")}
    return _cached_engine(options.model_dump_json(exclude=ignored))


def lazy_line_reader(options: OcrOptions | None = None) -> Callable[[np.ndarray], tuple[str, float] | None]:
    """The configured engine's single-line recogniser, created on first call (most books never need it)."""

    def read(image: np.ndarray) -> tuple[str, float] | None:
        return create_ocr_engine(options).recognise_line(image)

    return read
