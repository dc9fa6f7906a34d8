"""Step 3: decide whether a panel image is a colour fundus photo (CFP), an angiogram (FFA),
an OCT B-scan or something else, from hand-made image features plus caption cue words.

The image part is a small multinomial logistic model over named colour / structure features
(weights in ``data/modality_model.json``, fitted by ``bench/modality_calibration.py --fit``).
The caption part adds log-odds for cue words listed in ``data/modality_cues.yaml``. The image
weighs more than the caption; when they disagree the confidence is lowered and the pair is
flagged for review. Every decision carries human-readable reasons.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import yaml
from pydantic import BaseModel, Field

from pipeline.records import Modality

logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).parent / "data"
DEFAULT_MODEL_PATH = DATA_DIR / "modality_model.json"
DEFAULT_CUES_PATH = DATA_DIR / "modality_cues.yaml"
CLASSES: tuple[Modality, ...] = ("CFP", "FFA", "OCT", "other")

FEATURE_NAMES: tuple[str, ...] = (
    "white_fraction",
    "black_fraction",
    "saturation_mean",
    "colour_fraction",
    "red_hue_fraction",
    "green_blue_hue_fraction",
    "luminance_mean",
    "luminance_std",
    "palette_concentration",
    "sharp_edge_fraction",
    "vessel_polarity",
    "ridge_strength",
    "horizontal_layering",
    "row_profile_similarity",
    "log_aspect",
    "corner_darkness",
    "coarse_contrast",
)

FEATURE_PHRASES: dict[str, tuple[str, str]] = {
    "white_fraction": ("much white background", "little white background"),
    "black_fraction": ("large black surround", "little black surround"),
    "saturation_mean": ("saturated colour", "grey / unsaturated"),
    "colour_fraction": ("many coloured pixels", "few coloured pixels"),
    "red_hue_fraction": ("orange-red hues", "few orange-red hues"),
    "green_blue_hue_fraction": ("green/blue hues", "few green/blue hues"),
    "luminance_mean": ("bright overall", "dark overall"),
    "luminance_std": ("high contrast", "low contrast"),
    "palette_concentration": ("few distinct colours", "many distinct colours"),
    "sharp_edge_fraction": ("sharp step edges (drawing/text)", "soft photographic edges"),
    "vessel_polarity": ("bright vessels on darker background", "dark vessels on brighter background"),
    "ridge_strength": ("strong thin line structure", "weak thin line structure"),
    "horizontal_layering": ("layered horizontal bands", "no horizontal layering"),
    "row_profile_similarity": ("columns share one layer profile", "columns differ"),
    "log_aspect": ("wide format", "tall or square format"),
    "corner_darkness": ("dark corners (circular field)", "filled corners"),
    "coarse_contrast": ("clear large-scale structure", "little large-scale structure"),
}


class ModalityOptions(BaseModel):
    """Settings of the modality classifier (serve as CLI options and config file)."""

    review_threshold: float = Field(0.6, ge=0.0, le=1.0, description="Results with confidence below this are flagged for review.")
    caption_weight: float = Field(1.0, ge=0.0, description="Multiplier on the caption cue log-odds; 0 ignores captions.")
    disagreement_penalty: float = Field(0.7, gt=0.0, le=1.0, description="Confidence factor applied when image and caption point to different modalities.")
    max_side: int = Field(256, ge=64, le=2048, description="Images are downscaled so their longest side is at most this many pixels before feature extraction.")
    model_path: Path = Field(DEFAULT_MODEL_PATH, description="JSON file with the fitted image-model parameters.")
    cues_path: Path = Field(DEFAULT_CUES_PATH, description="YAML file with caption cue patterns.")


class ModalityResult(BaseModel):
    """Modality decision for one panel, with the reasons behind it."""

    modality: Modality = Field(description="CFP, FFA, OCT or other.")
    sublabel: str | None = Field(None, description="Finer label where the caption says so (ICGA, red-free, FAF, OCTA).")
    confidence: float = Field(ge=0.0, le=1.0, description="Probability-like confidence in the modality.")
    reasons: list[str] = Field(default_factory=list, description="Human-readable evidence, image first, then caption.")
    needs_review: bool = Field(description="True when confidence is below the review threshold.")
    image_probabilities: dict[str, float] = Field(default_factory=dict, description="Image-only class probabilities.")


# ---------------------------------------------------------------------------------------------
# Image features


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """Accept HxWx3 RGB (also HxW grey and HxWx4 RGBA, flattened on white) as uint8."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 4:
        alpha = array[:, :, 3:4].astype(np.float32) / 255.0
        array = (array[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)).round()
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {array.shape}")
    if array.shape[0] < 8 or array.shape[1] < 8:
        raise ValueError(f"image too small for modality features: {array.shape[1]}x{array.shape[0]} px")
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    return array


def _downscale(rgb: np.ndarray, max_side: int) -> np.ndarray:
    height, width = rgb.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return rgb
    size = (max(8, round(width * scale)), max(8, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _masked_mean(values: np.ndarray, mask: np.ndarray, default: float = 0.0) -> float:
    count = int(mask.sum())
    return float(values[mask].mean()) if count else default


def extract_features(image: np.ndarray, max_side: int = 256) -> dict[str, float]:
    """Named colour and structure features of an RGB image (scale-normalised to ``max_side``)."""
    rgb = _as_rgb(image)
    original_height, original_width = rgb.shape[:2]
    small = _downscale(rgb, max_side).astype(np.float32) / 255.0
    height, width = small.shape[:2]
    channel_max = small.max(axis=2)
    channel_min = small.min(axis=2)
    luminance = 0.299 * small[:, :, 0] + 0.587 * small[:, :, 1] + 0.114 * small[:, :, 2]

    white = channel_min > 0.92
    black = channel_max < 0.06
    content = ~(white | black)
    if content.sum() < 0.02 * content.size:
        content = np.ones_like(content)

    saturation = np.where(channel_max > 1e-3, (channel_max - channel_min) / np.maximum(channel_max, 1e-3), 0.0)
    coloured = content & (saturation > 0.25) & (channel_max > 0.15)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    hue = hsv[:, :, 0]  # degrees 0..360 for float input
    red_hue = coloured & ((hue < 45.0) | (hue > 340.0))
    green_blue_hue = coloured & (hue > 70.0) & (hue < 280.0)
    coloured_count = max(int(coloured.sum()), 1)

    quantised = (np.clip(small * 15.999, 0, 15).astype(np.int32) * np.array([256, 16, 1])).sum(axis=2)
    counts = np.bincount(quantised.ravel(), minlength=4096)
    palette_concentration = float(np.sort(counts)[-6:].sum() / quantised.size)

    grad_x = cv2.Sobel(luminance, cv2.CV_32F, 1, 0, ksize=3) / 4.0
    grad_y = cv2.Sobel(luminance, cv2.CV_32F, 0, 1, ksize=3) / 4.0
    magnitude = np.sqrt(grad_x**2 + grad_y**2)
    edge_energy = float(magnitude.sum()) + 1e-6
    sharp_edge_fraction = float(magnitude[magnitude > 0.35].sum() / edge_energy)

    # Thin bright vs thin dark structures (vessels) inside the field of view, away from its rim.
    kernel_size = max(5, int(round(max(height, width) / 256 * 9)) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel_size, kernel_size))
    field = (channel_max > 0.06).astype(np.uint8)
    field = cv2.erode(field, kernel, iterations=2).astype(bool) & ~white
    if field.sum() < 0.02 * field.size:
        field = np.ones_like(field)
    top_hat = cv2.morphologyEx(luminance, cv2.MORPH_TOPHAT, kernel)
    black_hat = cv2.morphologyEx(luminance, cv2.MORPH_BLACKHAT, kernel)
    bright_lines = _masked_mean(top_hat, field)
    dark_lines = _masked_mean(black_hat, field)
    vessel_polarity = (bright_lines - dark_lines) / (bright_lines + dark_lines + 1e-4)
    field_luminance = _masked_mean(luminance, field, 0.5)
    ridge_strength = (bright_lines + dark_lines) / (field_luminance + 0.05)

    # OCT: layers run horizontally, so smoothed gradients point up/down.
    blurred = cv2.GaussianBlur(luminance, (0, 0), 1.5)
    smooth_x = cv2.Sobel(blurred, cv2.CV_32F, 1, 0, ksize=3)
    smooth_y = cv2.Sobel(blurred, cv2.CV_32F, 0, 1, ksize=3)
    energy_x = float((smooth_x[content] ** 2).sum())
    energy_y = float((smooth_y[content] ** 2).sum())
    horizontal_layering = energy_y / (energy_x + energy_y + 1e-9)

    # Column profiles of an OCT look alike; compare profiles a few columns apart.
    offset = max(2, width // 16)
    left = blurred[:, :-offset] - blurred[:, :-offset].mean(axis=0, keepdims=True)
    right = blurred[:, offset:] - blurred[:, offset:].mean(axis=0, keepdims=True)
    numerator = (left * right).sum(axis=0)
    denominator = np.sqrt((left**2).sum(axis=0) * (right**2).sum(axis=0)) + 1e-9
    row_profile_similarity = float(np.median(numerator / denominator))

    corner = max(2, min(height, width) // 10)
    corners = np.concatenate(
        [
            channel_max[:corner, :corner].ravel(),
            channel_max[:corner, -corner:].ravel(),
            channel_max[-corner:, :corner].ravel(),
            channel_max[-corner:, -corner:].ravel(),
        ]
    )
    corner_darkness = float((corners < 0.1).mean())

    coarse = cv2.resize(luminance, (16, 16), interpolation=cv2.INTER_AREA)
    coarse_contrast = float(coarse.std())

    return {
        "white_fraction": float(white.mean()),
        "black_fraction": float(black.mean()),
        "saturation_mean": _masked_mean(saturation, content),
        "colour_fraction": float(coloured.sum() / max(int(content.sum()), 1)),
        "red_hue_fraction": float(red_hue.sum() / coloured_count) if coloured.any() else 0.0,
        "green_blue_hue_fraction": float(green_blue_hue.sum() / coloured_count) if coloured.any() else 0.0,
        "luminance_mean": _masked_mean(luminance, content),
        "luminance_std": float(luminance[content].std()) if content.any() else 0.0,
        "palette_concentration": palette_concentration,
        "sharp_edge_fraction": sharp_edge_fraction,
        "vessel_polarity": float(vessel_polarity),
        "ridge_strength": float(ridge_strength),
        "horizontal_layering": horizontal_layering,
        "row_profile_similarity": row_profile_similarity,
        "log_aspect": math.log(original_width / original_height),
        "corner_darkness": corner_darkness,
        "coarse_contrast": coarse_contrast,
    }
