"""PaddleOCR 3 as an OCR engine, offline.

PaddleX runs a PP-OCR model from a directory holding `inference.onnx` and an `inference.yml`
whose `Global.model_name` names the model and whose PreProcess/PostProcess sections describe its
input and output handling. Such directories are not downloadable here, so `prepare_paddle_models`
writes them from ONNX files we already have: the PP-OCR detection and recognition models inside
the installed rapidocr wheel, or a user's own PP-OCR ONNX models (server models, other
languages). The recogniser's character list comes from the ONNX metadata key `character`.

paddleocr/paddlex are imported only when the engine is created; their home (caches, locks) is
set to a folder under the work directory instead of `~/.paddlex`.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import yaml

from foundation.files import sha256_file, write_atomic
from pipeline.ocr import Box, OcrLine, OcrOptions, axis_aligned, line_crops

log = logging.getLogger(__name__)

MODEL_FILE = "inference.onnx"
CONFIG_FILE = "inference.yml"
PADDLE_HOME_ENV = "PADDLE_PDX_CACHE_HOME"
INSTALL_HINT = "pip install 'mm-retinal[paddle]'"

# What rapidocr does with the same models (its config.yaml): mean/std 0.5, DB thresholds, 48 px lines.
_DET_TRANSFORMS = [
    {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}},
    {"DetResizeForTest": {"limit_side_len": 736, "limit_type": "min"}},
    {"NormalizeImage": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "scale": "1./255.", "order": "hwc"}},
    {"ToCHWImage": None},
]
_DET_POSTPROCESS = {
    "name": "DBPostProcess",
    "thresh": 0.3,
    "box_thresh": 0.5,
    "max_candidates": 1000,
    "unclip_ratio": 1.6,
    "use_dilation": True,
    "score_mode": "fast",
}
_REC_TRANSFORMS = [
    {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}},
    {"RecResizeImg": {"image_shape": [3, 48, 320]}},
]


class PaddleModelError(ValueError):
    """A model directory or model source that cannot be used; the message names it and why."""


@dataclass(frozen=True)
class PaddleModels:
    """The two model directories PaddleOCR's pipeline needs, with the names PaddleX knows them by."""

    det_dir: Path
    det_name: str
    rec_dir: Path
    rec_name: str


# ------------------------------------------------------------------------------ model sources


def rapidocr_model_files() -> tuple[Path, Path]:
    """The detection and recognition ONNX files the installed rapidocr uses by default."""
    try:
        import rapidocr
    except ImportError as exc:
        raise PaddleModelError("rapidocr is not installed, so there are no bundled PP-OCR models to convert") from exc
    package = Path(rapidocr.__file__).parent
    config = yaml.safe_load((package / "config.yaml").read_text(encoding="utf-8"))
    found = []
    for task in ("Det", "Rec"):
        section = config[task]
        stem = f"{section['ocr_version']}_{task.lower()}_{section['model_type']}"
        matches = sorted((package / "models").glob(f"*{stem}.onnx"))
        if not matches:
            raise PaddleModelError(f"{package / 'models'}: no {stem}.onnx in the installed rapidocr")
        found.append(matches[0])
    return found[0], found[1]


def paddlex_model_name(onnx_file: Path, task: str) -> str:
    """PaddleX's name for a PP-OCR model file: rapidocr's `PP-OCRv6_det_small` is `PP-OCRv6_small_det`."""
    match = re.search(r"((?:[a-z]+_)?PP-OCRv\d+)_(det|rec)_([a-z]+)", onnx_file.stem)
    if not match or match.group(2) != task:
        raise PaddleModelError(
            f"{onnx_file}: cannot tell the PaddleX model name from the file name; pass it explicitly"
        )
    prefix = re.sub(r"^(ch|multi)_", "", match.group(1))  # rapidocr's language tags PaddleX does not use
    return f"{prefix}_{match.group(3)}_{task}"


def recogniser_info(onnx_file: Path) -> tuple[list[str] | None, int | None]:
    """The recogniser's character list from the ONNX metadata (`character`, None if absent) and
    its number of output classes (None if not fixed in the graph)."""
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
        raise PaddleModelError(f"{onnx_file}: not a readable ONNX model ({str(exc).splitlines()[0]})") from None
    text = session.get_modelmeta().custom_metadata_map.get("character")
    classes = session.get_outputs()[0].shape[-1]
    return (text.split("\n") if text else None), (classes if isinstance(classes, int) else None)


def _source_file(source: Path, task: str) -> tuple[Path, dict | None]:
    """An ONNX file and the inference.yml beside it (if any) from a file or a model folder."""
    source = Path(source)
    if source.is_dir():
        onnx_file = source / MODEL_FILE
        if not onnx_file.is_file():
            raise PaddleModelError(
                f"{source}: no {MODEL_FILE} in this {task} model folder (PaddleOCR needs the ONNX export)"
            )
        config_file = source / CONFIG_FILE
        return onnx_file, _load_config(config_file) if config_file.is_file() else None
    if not source.is_file():
        raise PaddleModelError(f"{source}: {task} model not found")
    if source.suffix != ".onnx":
        raise PaddleModelError(f"{source}: expected an .onnx file or a model folder")
    return source, None


# ------------------------------------------------------------------------------ writing model dirs


def _write_model_dir(onnx_file: Path, out_dir: Path, config: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / MODEL_FILE
    if onnx_file.resolve() != target.resolve():
        write_atomic(target, onnx_file.read_bytes())
    text = yaml.safe_dump(config, allow_unicode=True, sort_keys=False)
    write_atomic(out_dir / CONFIG_FILE, text.encode("utf-8"))


def prepare_paddle_models(
    out_dir: Path,
    det_source: Path | None = None,
    rec_source: Path | None = None,
    det_model_name: str | None = None,
    rec_model_name: str | None = None,
    character_dict: Path | None = None,
) -> PaddleModels:
    """Write `<out_dir>/<det name>/` and `<out_dir>/<rec name>/` for PaddleOCR's onnxruntime engine.

    Sources default to the installed rapidocr's models; a source may be an .onnx file or a folder
    with `inference.onnx` (and optionally its own `inference.yml`, whose settings are kept).
    """
    out_dir = Path(out_dir)
    default_det, default_rec = rapidocr_model_files() if det_source is None or rec_source is None else (None, None)
    det_file, det_config = _source_file(det_source or default_det, "det")
    rec_file, rec_config = _source_file(rec_source or default_rec, "rec")

    det_name = det_model_name or _config_name(det_config) or paddlex_model_name(det_file, "det")
    rec_name = rec_model_name or _config_name(rec_config) or paddlex_model_name(rec_file, "rec")
    for source, name, task in ((det_file, det_name, "det"), (rec_file, rec_name, "rec")):
        if not name.endswith(f"_{task}"):
            raise PaddleModelError(f"{source}: {name} is not a text-{task} model (PaddleX {task} names end in _{task})")

    if det_config is None:
        det_config = {"PreProcess": {"transform_ops": _DET_TRANSFORMS}, "PostProcess": _DET_POSTPROCESS}
    det_config = {"Global": {}, **det_config}
    det_config["Global"] = {**det_config["Global"], "model_name": det_name}

    characters, classes = recogniser_info(rec_file)
    if character_dict is not None:
        if not Path(character_dict).is_file():
            raise PaddleModelError(f"{character_dict}: character dictionary not found")
        characters = Path(character_dict).read_text(encoding="utf-8").rstrip("\n").split("\n")
    elif rec_config and rec_config.get("PostProcess", {}).get("character_dict"):
        characters = list(rec_config["PostProcess"]["character_dict"])
    if not characters:
        raise PaddleModelError(
            f"{rec_file}: no character list in the model's metadata; pass a character dictionary file"
        )
    # CTC decoding adds a blank before and a space after the characters.
    if classes is not None and len(characters) + 2 != classes:
        raise PaddleModelError(
            f"{rec_file}: {len(characters)} characters do not fit the model's {classes} output classes "
            "(expected classes - 2: blank and space are added)"
        )
    if rec_config is None:
        rec_config = {"PreProcess": {"transform_ops": _REC_TRANSFORMS}, "PostProcess": {"name": "CTCLabelDecode"}}
    rec_config = {"Global": {}, **rec_config}
    rec_config["Global"] = {**rec_config["Global"], "model_name": rec_name}
    rec_config["PostProcess"] = {**rec_config.get("PostProcess", {}), "character_dict": characters}

    models = PaddleModels(out_dir / det_name, det_name, out_dir / rec_name, rec_name)
    _write_model_dir(det_file, models.det_dir, det_config)
    _write_model_dir(rec_file, models.rec_dir, rec_config)
    log.info("PaddleOCR models written: %s (%s), %s (%s)", models.det_dir, det_name, models.rec_dir, rec_name)
    return models


def _load_config(path: Path) -> dict:
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise PaddleModelError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise PaddleModelError(f"{path}: expected a mapping (Global, PreProcess, PostProcess)")
    return config


def _config_name(config: dict | None) -> str | None:
    return (config or {}).get("Global", {}).get("model_name")


def read_model_dir(model_dir: Path, task: str) -> str:
    """The PaddleX model name of a usable model directory; a one-line error otherwise."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise PaddleModelError(
            f"{model_dir}: PaddleOCR {task} model directory not found "
            "(write one with `mmretinal ocr prepare-paddle-models DIR`)"
        )
    for name in (MODEL_FILE, CONFIG_FILE):
        if not (model_dir / name).is_file():
            raise PaddleModelError(
                f"{model_dir}: no {name} (PaddleOCR's onnxruntime engine needs {MODEL_FILE} and {CONFIG_FILE})"
            )
    name = _config_name(_load_config(model_dir / CONFIG_FILE))
    if not name:
        raise PaddleModelError(f"{model_dir / CONFIG_FILE}: no Global.model_name")
    return name


def resolve_models(options: OcrOptions) -> PaddleModels:
    """The model directories the options name, or the ones prepared under the PaddleX home
    (written there from rapidocr's models the first time)."""
    det_dir, rec_dir = options.paddle_det_model_dir, options.paddle_rec_model_dir
    if (det_dir is None) != (rec_dir is None):
        raise PaddleModelError("paddleocr: give both paddle_det_model_dir and paddle_rec_model_dir, or neither")
    if det_dir is None:
        prepared = Path(options.paddle_home) / "models"
        sources = rapidocr_model_files()
        det_name, rec_name = paddlex_model_name(sources[0], "det"), paddlex_model_name(sources[1], "rec")
        targets = (prepared / det_name / MODEL_FILE, prepared / rec_name / MODEL_FILE)
        # (Re)write them when missing or when an upgraded rapidocr ships other models.
        if not all(t.is_file() and sha256_file(t) == sha256_file(s) for s, t in zip(sources, targets)):
            log.info("preparing PaddleOCR models from rapidocr's in %s", prepared)
            prepare_paddle_models(prepared)
        det_dir, rec_dir = prepared / det_name, prepared / rec_name
    return PaddleModels(Path(det_dir), read_model_dir(det_dir, "det"), Path(rec_dir), read_model_dir(rec_dir, "rec"))


# ------------------------------------------------------------------------------ the engine


def use_paddle_home(home: Path) -> None:
    """Point PaddleX at `home` for its caches; it reads the variable once, on first import."""
    home = Path(home).resolve()
    current = os.environ.get(PADDLE_HOME_ENV)
    if "paddlex" in sys.modules and current != str(home):
        log.warning("paddlex was imported with home %s; %s is not used", current or "~/.paddlex", home)
        return
    home.mkdir(parents=True, exist_ok=True)
    os.environ[PADDLE_HOME_ENV] = str(home)
    # No network here: do not probe model hosting sites on import.
    os.environ.setdefault("PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "True")


def _import_paddleocr():
    try:
        import paddleocr
    except ImportError as exc:
        raise PaddleModelError(f"paddleocr is not installed ({exc.name} missing): {INSTALL_HINT}") from None
    return paddleocr


class PaddleOcrEngine:
    """PaddleOCR 3's OCR pipeline (detection + recognition) on ONNX Runtime, from local models."""

    def __init__(self, options: OcrOptions):
        use_paddle_home(options.paddle_home)
        paddleocr = _import_paddleocr()
        models = resolve_models(options)
        self.options = options
        self.models = models
        engine_config = {"intra_op_num_threads": options.threads} if options.threads else None
        common = dict(engine="onnxruntime", engine_config=engine_config, device=options.paddle_device)
        self._pipeline = paddleocr.PaddleOCR(
            text_detection_model_name=models.det_name,
            text_detection_model_dir=str(models.det_dir),
            text_recognition_model_name=models.rec_name,
            text_recognition_model_dir=str(models.rec_dir),
            use_doc_orientation_classify=False,
            use_doc_unwarping=False,
            use_textline_orientation=False,
            text_det_limit_side_len=options.det_limit_side_len,
            text_det_limit_type=options.det_limit_type,
            text_rec_score_thresh=options.min_confidence,
            **common,
        )
        # Detection alone and recognition alone (selected lines, panel letters), on the same models.
        self._detector = paddleocr.TextDetection(
            model_name=models.det_name, model_dir=str(models.det_dir),
            limit_side_len=options.det_limit_side_len, limit_type=options.det_limit_type, **common,
        )
        self._recogniser = paddleocr.TextRecognition(
            model_name=models.rec_name, model_dir=str(models.rec_dir), **common
        )
        self._lock = threading.Lock()
        self.name = f"paddleocr {metadata.version('paddleocr')} ({models.det_name} + {models.rec_name} onnx)"

    def _downscaled(self, image: np.ndarray) -> np.ndarray:
        """Same longest-side cap as the RapidOCR engine, so both see the same pixels."""
        import cv2

        longest = max(image.shape[:2])
        if longest <= self.options.max_side_len:
            return image
        ratio = self.options.max_side_len / longest
        return cv2.resize(image, (round(image.shape[1] * ratio), round(image.shape[0] * ratio)))

    def recognise(self, image: np.ndarray) -> list[OcrLine]:
        small = self._downscaled(image)
        factor = image.shape[1] / small.shape[1]
        with self._lock:
            pages = list(self._pipeline.predict(np.ascontiguousarray(small[:, :, ::-1])))
        lines: list[OcrLine] = []
        for page in pages:
            for poly, text, score in zip(page["rec_polys"], page["rec_texts"], page["rec_scores"]):
                if score >= self.options.min_confidence and text.strip():
                    box = tuple(value * factor for value in axis_aligned(poly))
                    lines.append(OcrLine(text=text, box=box, confidence=float(score)))
        return lines

    def detect(self, image: np.ndarray) -> list[Box]:
        small = self._downscaled(image)
        factor = image.shape[1] / small.shape[1]
        with self._lock:
            pages = list(self._detector.predict(np.ascontiguousarray(small[:, :, ::-1])))
        return [tuple(value * factor for value in axis_aligned(poly)) for page in pages for poly in page["dt_polys"]]

    def read_boxes(self, image: np.ndarray, boxes: list[Box]) -> list[tuple[str, float]]:
        if not boxes:
            return []
        crops = [np.ascontiguousarray(crop[:, :, ::-1]) for crop in line_crops(image, boxes)]
        with self._lock:
            results = list(self._recogniser.predict(crops, batch_size=self.options.rec_batch_size))
        return [(result["rec_text"], float(result["rec_score"])) for result in results]

    def recognise_line(self, image: np.ndarray) -> tuple[str, float] | None:
        with self._lock:
            results = list(self._recogniser.predict(np.ascontiguousarray(image[:, :, ::-1])))
        if not results or not results[0]["rec_text"]:
            return None
        return results[0]["rec_text"], float(results[0]["rec_score"])
