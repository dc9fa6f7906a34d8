"""Step 3: decide whether a panel image is a colour fundus photo (CFP), an angiogram (FFA),
an OCT B-scan or something else, from hand-made image features plus caption cue words.

The image part is a small multinomial logistic model over named colour / structure features
(weights in ``data/modality_model.json``, fitted by ``bench/modality_calibration.py --fit``).
The caption part adds log-odds for cue words listed in ``data/modality_cues.yaml``. The image
weighs more than the caption; when they disagree the confidence is lowered and the pair is
flagged for review. A panel that looks retinal but not like one modality (a device screenshot)
is also read half by half, so a B-scan beside its fundus localiser reads as OCT. A panel classed
'other' that looks retinal at all is queued for a reviewer, never dropped; only a confident,
non-retinal-looking 'other' becomes a non-retinal reject. Every decision carries human-readable
reasons.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
import yaml
from pydantic import BaseModel, Field

from foundation.records import DocumentRun, Modality, Pair, Reject

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
    "red_green_log_ratio",
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
    "hue_entropy",
    "tone_separability",
    "blue_red_log_ratio",
    "straight_edge_fraction",
)

FEATURE_PHRASES: dict[str, tuple[str, str]] = {
    "white_fraction": ("much white background", "little white background"),
    "black_fraction": ("large black surround", "little black surround"),
    "saturation_mean": ("saturated colour", "grey / unsaturated"),
    "colour_fraction": ("many coloured pixels", "few coloured pixels"),
    "red_hue_fraction": ("orange-red hues", "few orange-red hues"),
    "green_blue_hue_fraction": ("green/blue hues", "few green/blue hues"),
    "red_green_log_ratio": ("red channel dominates green", "green channel as strong as red"),
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
    "hue_entropy": ("many different hues (pseudocolour, chart)", "one hue family"),
    "tone_separability": ("two-tone ink and paper", "continuous tones"),
    "blue_red_log_ratio": ("blue as strong as red", "little blue (fundus light)"),
    "straight_edge_fraction": ("edges on long straight lines (drawn, man-made)", "curved or no edges"),
}


class ModalityOptions(BaseModel):
    """Settings of the modality classifier (serve as CLI options and config file)."""

    review_threshold: float = Field(0.6, ge=0.0, le=1.0, description="Results with confidence below this are flagged for review.")
    caption_weight: float = Field(1.0, ge=0.0, description="Multiplier on the caption cue log-odds; 0 ignores captions.")
    disagreement_penalty: float = Field(0.7, gt=0.0, le=1.0, description="Confidence factor applied when image and caption point to different modalities.")
    max_side: int = Field(256, ge=64, le=2048, description="Images are downscaled so their longest side is at most this many pixels before feature extraction.")
    retinal_looking_threshold: float = Field(
        0.4, ge=0.0, le=1.0,
        description="A panel classed 'other' whose image gives the retinal classes at least this probability goes to review as a possible miss.",
    )
    non_retinal_confidence: float = Field(
        0.75, ge=0.0, le=1.0,
        description="A panel classed 'other' at least this confidently (and not retinal-looking) is a non-retinal figure: a reject, not a pair; below it, it goes to review.",
    )
    image_only_accept: float = Field(
        0.0, ge=0.0, le=1.0,
        description="Without a caption cue for its modality a panel is auto-accepted only at this confidence or more; 0 turns "
        "it off. Real photographs, drawings and screenshots can look retinal to the image features: on books that are not "
        "atlases 0.95 keeps image-only auto-accepts right (bench/modality_calibration.py), at the cost of queueing the many "
        "atlas panels whose caption names the disease only.",
    )
    oct_half_retinal: float = Field(
        0.5, ge=0.0, le=1.0,
        description="A panel whose image gives the retinal classes at least this probability, and is not read as OCT, is "
        "also read half by half; an OCT half makes it OCT (device screenshots: B-scan beside its fundus).",
    )
    oct_half_probability: float = Field(
        0.6, ge=0.0, le=1.0, description="OCT probability a half must reach to make the panel OCT (see oct_half_retinal)."
    )
    eye_context: bool = Field(
        True,
        description="In a document whose text never names the eye or a retinal imaging modality (a novel, a physics "
        "thesis), a panel whose own caption names no retinal modality is a non-retinal figure, whatever its image "
        "looks like (drawings and micrographs can look retinal to the image features).",
    )
    model_path: Path = Field(DEFAULT_MODEL_PATH, description="JSON file with the fitted image-model parameters.")
    cues_path: Path = Field(DEFAULT_CUES_PATH, description="YAML file with caption cue patterns.")


class ModalityResult(BaseModel):
    """Modality decision for one panel, with the reasons behind it."""

    modality: Modality = Field(description="CFP, FFA, OCT or other.")
    sublabel: str | None = Field(None, description="Finer label where the caption says so (ICGA, red-free, FAF, OCTA).")
    confidence: float = Field(ge=0.0, le=1.0, description="Probability-like confidence in the modality.")
    reasons: list[str] = Field(default_factory=list, description="Human-readable evidence, image first, then caption.")
    needs_review: bool = Field(description="True when confidence is below the review threshold or image and caption disagree.")
    image_probabilities: dict[str, float] = Field(default_factory=dict, description="Image-only class probabilities.")
    caption_modality: Modality | None = Field(None, description="Modality the caption's strongest cue names, if any.")


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
    red, green, blue = small[:, :, 0], small[:, :, 1], small[:, :, 2]
    channel_max = np.maximum(np.maximum(red, green), blue)
    channel_min = np.minimum(np.minimum(red, green), blue)
    luminance = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)

    white = channel_min > 0.85
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

    levels = (small * 15.999).astype(np.int32)
    quantised = levels[:, :, 0] * 256 + levels[:, :, 1] * 16 + levels[:, :, 2]
    counts = np.bincount(quantised.ravel(), minlength=4096)
    palette_concentration = float(np.sort(counts)[-6:].sum() / quantised.size)

    grad_x = cv2.Sobel(luminance, cv2.CV_32F, 1, 0, ksize=3) / 4.0
    grad_y = cv2.Sobel(luminance, cv2.CV_32F, 0, 1, ksize=3) / 4.0
    magnitude = np.sqrt(grad_x**2 + grad_y**2)
    edge_energy = float(magnitude.sum()) + 1e-6
    sharp_edge_fraction = float(magnitude[magnitude > 0.35].sum() / edge_energy)

    # Thin bright vs thin dark lines (vessels): sign of the strongest Hessian eigenvalue at the
    # most line-like pixels inside the field of view, away from its rim.
    rim_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    field = cv2.erode((channel_max > 0.06).astype(np.uint8), rim_kernel, iterations=2).astype(bool) & ~white
    if field.sum() < 0.02 * field.size:
        field = np.ones_like(field)
    ridge = np.zeros_like(luminance)
    for sigma in (1.0, 2.0):
        smooth = cv2.GaussianBlur(luminance, (0, 0), sigma)
        dxx = cv2.Sobel(smooth, cv2.CV_32F, 2, 0, ksize=3)
        dyy = cv2.Sobel(smooth, cv2.CV_32F, 0, 2, ksize=3)
        dxy = cv2.Sobel(smooth, cv2.CV_32F, 1, 1, ksize=3)
        half_trace = 0.5 * (dxx + dyy)
        spread = np.sqrt(0.25 * (dxx - dyy) ** 2 + dxy**2)
        large = np.where(half_trace >= 0, half_trace + spread, half_trace - spread)
        small_eig = np.where(half_trace >= 0, half_trace - spread, half_trace + spread)
        line_like = np.clip(1.0 - np.abs(small_eig) / (np.abs(large) + 1e-6), 0.0, 1.0)
        response = sigma**2 * large * line_like
        ridge = np.where(np.abs(response) > np.abs(ridge), response, ridge)
    field_ridge = ridge[field]
    strongest = np.abs(field_ridge) >= np.quantile(np.abs(field_ridge), 0.9)
    bright_lines = float(np.clip(-field_ridge[strongest], 0, None).sum())
    dark_lines = float(np.clip(field_ridge[strongest], 0, None).sum())
    vessel_polarity = (bright_lines - dark_lines) / (bright_lines + dark_lines + 1e-6)
    field_luminance = _masked_mean(luminance, field, 0.5)
    ridge_strength = float(np.abs(field_ridge[strongest]).mean()) / (field_luminance + 0.05)

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

    # Pseudocolour maps (microscopy, heat maps) and charts spread over many hues; a fundus
    # photograph stays within orange-red, an angiogram or B-scan has no hue at all.
    hue_counts = np.bincount((hue[coloured] / 30.0).astype(np.int32).clip(0, 11), minlength=12).astype(np.float64)
    hue_share = hue_counts / max(hue_counts.sum(), 1.0)
    hue_entropy = float(-(hue_share[hue_share > 0] * np.log(hue_share[hue_share > 0])).sum() / math.log(12.0))
    hue_entropy *= min(1.0, coloured.sum() / max(0.05 * content.size, 1.0))

    # Line art and engravings are two-tone (ink and paper): Otsu's between-class share of the
    # luminance variance is near 1; photographs and scans of tissue have continuous tones.
    field_tones = (luminance[field] * 255.0).astype(np.uint8)
    tone_variance = float(field_tones.astype(np.float64).var())
    if tone_variance > 1e-6:
        threshold, _ = cv2.threshold(field_tones.reshape(1, -1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        low, high = field_tones[field_tones <= threshold], field_tones[field_tones > threshold]
        share_low = low.size / field_tones.size
        between = share_low * (1 - share_low) * (float(high.mean()) - float(low.mean())) ** 2 if low.size and high.size else 0.0
        tone_separability = between / tone_variance
    else:
        tone_separability = 1.0

    # The fundus reflects little blue; photographs of people and things, plots and screens do.
    blue_red_log_ratio = math.log((_masked_mean(blue, content) + 0.02) / (_masked_mean(red, content) + 0.02))

    # Drawn and man-made things (charts, diagrams, windows, devices) have edges on long straight
    # lines; vessels and the disc are curved. (An OCT's layers are long too: the model weighs it.)
    edges = cv2.Canny((luminance * 255.0).astype(np.uint8), 50, 150)
    straight_edge_fraction = 0.0
    if edges.any():
        segments = cv2.HoughLinesP(edges, 1, np.pi / 180, 30, minLineLength=max(12, min(height, width) // 8), maxLineGap=2)
        if segments is not None:
            drawn = np.zeros_like(edges)
            for x0, y0, x1, y1 in segments[:, 0]:
                cv2.line(drawn, (int(x0), int(y0)), (int(x1), int(y1)), 255, 2)
            straight_edge_fraction = float(((drawn > 0) & (edges > 0)).sum() / (edges > 0).sum())

    return {
        "white_fraction": float(white.mean()),
        "black_fraction": float(black.mean()),
        "saturation_mean": math.log(_masked_mean(saturation, content) + 0.02),
        "colour_fraction": math.log(float(coloured.sum() / max(int(content.sum()), 1)) + 0.02),
        "red_hue_fraction": float(red_hue.sum() / coloured_count) if coloured.any() else 0.0,
        "green_blue_hue_fraction": float(green_blue_hue.sum() / coloured_count) if coloured.any() else 0.0,
        "red_green_log_ratio": math.log((_masked_mean(red, content) + 0.02) / (_masked_mean(green, content) + 0.02)),
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
        "hue_entropy": hue_entropy,
        "tone_separability": float(tone_separability),
        "blue_red_log_ratio": blue_red_log_ratio,
        "straight_edge_fraction": straight_edge_fraction,
    }


# ---------------------------------------------------------------------------------------------
# Image model


class ImageModel(BaseModel):
    """Multinomial logistic model over standardised image features, loaded from JSON."""

    version: str = Field(description="Identifier of the fitted parameters (changes when they are refitted).")
    features: list[str] = Field(description="Feature names, in the order of the weight columns.")
    classes: list[str] = Field(description="Image classes; may include internal ones such as grey_fundus.")
    reported_as: dict[str, Modality] = Field(description="Modality each image class is reported as without caption evidence.")
    mean: list[float] = Field(description="Feature means used for standardisation.")
    scale: list[float] = Field(description="Feature standard deviations used for standardisation.")
    weights: list[list[float]] = Field(description="One row of feature weights per class.")
    bias: list[float] = Field(description="One bias per class.")
    low_structure_contrast: float = Field(description="Coarse contrast below which an image is treated as structureless.")
    low_structure_factor: float = Field(description="Confidence factor for structureless images (uniform, noise).")
    fit_summary: dict[str, object] = Field(default_factory=dict, description="How and on what the parameters were fitted.")

    def logits(self, features: dict[str, float]) -> np.ndarray:
        vector = np.array([features[name] for name in self.features], dtype=np.float64)
        standardised = (vector - np.array(self.mean)) / np.array(self.scale)
        return np.array(self.weights) @ standardised + np.array(self.bias)

    def contributions(self, features: dict[str, float], class_index: int) -> list[tuple[str, float]]:
        """Per-feature push towards ``class_index`` relative to the mean of the other classes."""
        vector = np.array([features[name] for name in self.features], dtype=np.float64)
        standardised = (vector - np.array(self.mean)) / np.array(self.scale)
        weights = np.array(self.weights)
        others = np.delete(weights, class_index, axis=0).mean(axis=0)
        push = (weights[class_index] - others) * standardised
        return sorted(zip(self.features, push.tolist()), key=lambda item: -item[1])


@functools.lru_cache(maxsize=8)
def load_image_model(path: Path = DEFAULT_MODEL_PATH) -> ImageModel:
    """Read and validate the fitted parameters (cached per path)."""
    try:
        model = ImageModel.model_validate_json(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot load modality model {path}: {error}") from error
    missing = set(model.features) - set(FEATURE_NAMES)
    if missing:
        raise ValueError(f"modality model {path} uses unknown features: {sorted(missing)}")
    return model


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


# ---------------------------------------------------------------------------------------------
# Caption cues


class CaptionCue(BaseModel):
    """One family of caption words that points to a modality (and maybe a sublabel)."""

    name: str = Field(description="Short name used in reasons.")
    modality: Modality = Field(description="Modality the words point to.")
    sublabel: str | None = Field(None, description="Finer label set when this cue decides the modality.")
    weight: float = Field(description="Log-odds added to the modality when the cue matches.")
    image_classes: list[str] = Field(
        default_factory=list,
        description="Image classes whose probability counts for this modality when the cue matches "
        "(e.g. a grey fundus image is a red-free photo when the caption says so).",
    )
    patterns: list[str] = Field(description="Regular expressions, matched case-insensitively.")


class CueMatch(BaseModel):
    """A cue found in a caption."""

    cue: CaptionCue
    text: str = Field(description="The matched words.")


class CaptionCues(BaseModel):
    cues: list[CaptionCue]
    eye_words: list[str] = Field(
        default_factory=list,
        description="Words that name the eye or its parts (any language): a document using none of them, nor a "
        "retinal cue, is not about the eye.",
    )

    def names_the_eye(self, text: str) -> str | None:
        """The first words of `text` that name the eye or a retinal imaging modality, or None."""
        for match in self.find(text):
            if match.cue.modality != "other" or match.cue.sublabel:  # not diagrams, anterior segment
                return match.text
        found = next((m for m in (p.search(text) for p in _compiled(tuple(self.eye_words))) if m), None)
        return found.group(0) if found else None

    def find(self, caption: str) -> list[CueMatch]:
        matches = []
        for cue, compiled in zip(self.cues, _compiled_patterns(self)):
            for pattern in compiled:
                found = pattern.search(caption)
                if found:
                    matches.append(CueMatch(cue=cue, text=found.group(0)))
                    break
        return matches


@functools.lru_cache(maxsize=256)
def _compiled(patterns: tuple[str, ...]) -> list[re.Pattern[str]]:
    return [re.compile(p, re.IGNORECASE) for p in patterns]


def _compiled_patterns(cues: CaptionCues) -> list[list[re.Pattern[str]]]:
    return [_compiled(tuple(cue.patterns)) for cue in cues.cues]


@functools.lru_cache(maxsize=8)
def load_caption_cues(path: Path = DEFAULT_CUES_PATH) -> CaptionCues:
    """Read and validate the cue table (cached per path)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        cues = CaptionCues.model_validate(data)
        for pattern in [p for cue in cues.cues for p in cue.patterns] + cues.eye_words:
            re.compile(pattern)
    except (OSError, ValueError, yaml.YAMLError, re.error) as error:
        raise ValueError(f"cannot load caption cues {path}: {error}") from error
    return cues


# ---------------------------------------------------------------------------------------------
# Decision


def _describe_image(model: ImageModel, features: dict[str, float], class_index: int) -> str:
    """Name the two or three features that pushed hardest towards the image class."""
    phrases = []
    for name, push in model.contributions(features, class_index)[:3]:
        if push <= 0.25:
            break
        feature_index = model.features.index(name)
        high = features[name] >= model.mean[feature_index]
        phrases.append(FEATURE_PHRASES[name][0 if high else 1])
    return ", ".join(phrases) if phrases else "no single feature dominates"


def _is_greyscale(image: np.ndarray) -> bool:
    """True when the channels are (nearly) equal everywhere: a grey print or scan."""
    if image.ndim == 2 or image.shape[2] == 1:
        return True
    pixels = image[::4, ::4, :3].astype(np.int16)
    spread = np.abs(pixels[..., 0] - pixels[..., 1]) + np.abs(pixels[..., 1] - pixels[..., 2])
    return float(spread.mean()) < 3.0


def _oct_half(
    model: ImageModel, image: np.ndarray, probabilities: np.ndarray, options: ModalityOptions
) -> tuple[str, np.ndarray] | None:
    """OCT device software shows a B-scan beside (or above) its infrared fundus localiser, with
    window chrome around: the whole reads as a grey fundus or a figure, one half as the B-scan.

    Only a panel that already looks retinal as a whole is split, so a chart never becomes an OCT.
    """
    retinal = 1.0 - float(probabilities[model.classes.index("other")])
    oct_index = model.classes.index("OCT")
    if retinal < options.oct_half_retinal or model.classes[int(np.argmax(probabilities))] not in ("grey_fundus", "other"):
        return None
    rgb = _as_rgb(image)
    height, width = rgb.shape[:2]
    halves = {"left": rgb[:, : width // 2], "right": rgb[:, width // 2 :], "top": rgb[: height // 2], "bottom": rgb[height // 2 :]}
    best: tuple[str, np.ndarray] | None = None
    for name, part in halves.items():
        if min(part.shape[:2]) < 32:
            continue
        part_probabilities = _softmax(model.logits(extract_features(part, options.max_side)))
        if part_probabilities[oct_index] < options.oct_half_probability:
            continue
        if best is None or part_probabilities[oct_index] > best[1][oct_index]:
            best = (name, part_probabilities)
    return best


def classify_modality(
    image: np.ndarray, caption: str | None = None, options: ModalityOptions | None = None
) -> ModalityResult:
    """Decide CFP / FFA / OCT / other for one panel image, optionally helped by its caption.

    ``caption`` should be the panel's own text plus the figure title, not the whole multi-panel
    caption, so that cues of sibling panels do not leak in.
    """
    options = options or ModalityOptions()
    model = load_image_model(Path(options.model_path))
    features = extract_features(image, options.max_side)
    image_probabilities = _softmax(model.logits(features))
    reasons = []
    half = _oct_half(model, image, image_probabilities, options)
    if half is not None:
        name, image_probabilities = half
        reasons.append(f"image: the {name} half is an OCT B-scan (a viewer showing the scan beside its fundus localiser)")
    image_best = int(np.argmax(image_probabilities))
    image_class = model.classes[image_best]
    image_modality = model.reported_as[image_class]
    reasons.insert(
        0, f"image: {_describe_image(model, features, image_best)} ({image_class} score {image_probabilities[image_best]:.2f})"
    )

    matches: list[CueMatch] = []
    if caption and options.caption_weight > 0:
        matches = load_caption_cues(Path(options.cues_path)).find(caption)

    # Caption cues may claim image classes for their modality (grey fundus -> red-free CFP).
    class_modality = dict(model.reported_as)
    strongest_by_modality: dict[str, CueMatch] = {}
    for match in matches:
        current = strongest_by_modality.get(match.cue.modality)
        if current is None or match.cue.weight > current.cue.weight:
            strongest_by_modality[match.cue.modality] = match
    for match in sorted(strongest_by_modality.values(), key=lambda item: item.cue.weight):
        for image_class_name in match.cue.image_classes:
            if image_class_name in class_modality:
                class_modality[image_class_name] = match.cue.modality

    # A greyscale print or scan carries no colour: a colour photograph then looks like a grey
    # fundus, so a caption naming a colour photograph decides, without a disagreement penalty.
    greyscale = _is_greyscale(image)
    strongest_cue = max(strongest_by_modality.values(), key=lambda item: item.cue.weight) if strongest_by_modality else None
    if greyscale and strongest_cue is not None and strongest_cue.cue.modality == "CFP":
        class_modality["grey_fundus"] = "CFP"
        reasons.append("image: greyscale print, colour cannot be judged; the caption decides")

    modality_probability = {modality: 0.0 for modality in CLASSES}
    for index, class_name in enumerate(model.classes):
        modality_probability[class_modality[class_name]] += float(image_probabilities[index])
    image_view = max(modality_probability, key=modality_probability.get)

    scores = np.array(
        [
            math.log(max(modality_probability[modality], 1e-6))
            + options.caption_weight * (strongest_by_modality[modality].cue.weight if modality in strongest_by_modality else 0.0)
            for modality in CLASSES
        ]
    )
    combined = _softmax(scores)
    best = int(np.argmax(combined))
    modality: Modality = CLASSES[best]
    confidence = float(combined[best])

    for match in matches:
        reasons.append(f"caption: mentions {match.text!r} ({match.cue.name} -> {match.cue.modality})")
    caption_modality = (
        max(strongest_by_modality.values(), key=lambda item: item.cue.weight).cue.modality if strongest_by_modality else None
    )
    disagreement = caption_modality is not None and caption_modality != image_view
    if disagreement and greyscale and caption_modality == "CFP" and image_probabilities[image_best] < 0.75:
        disagreement = False
    if disagreement:
        confidence *= options.disagreement_penalty
        reasons.append(
            f"disagreement: image looks like {image_view}, caption points to {caption_modality}; "
            f"chose {modality} with lowered confidence"
        )
    if len(strongest_by_modality) > 1:
        confidence *= options.disagreement_penalty
        reasons.append(f"caption names several modalities: {', '.join(sorted(strongest_by_modality))}")

    if features["coarse_contrast"] < model.low_structure_contrast:
        confidence *= model.low_structure_factor
        reasons.append(
            f"image: almost no large-scale structure (contrast {features['coarse_contrast']:.3f}); confidence lowered"
        )

    sublabel = None
    if modality in strongest_by_modality:
        sublabel = strongest_by_modality[modality].cue.sublabel
        if sublabel is None:
            sublabels = {match.cue.sublabel for match in matches if match.cue.modality == modality and match.cue.sublabel}
            sublabel = sublabels.pop() if len(sublabels) == 1 else None
    if caption_modality is None and image_class != image_modality and image_class != modality:
        reasons.append(f"image class {image_class} is reported as {modality} without a caption cue")

    confidence = min(max(confidence, 0.0), 1.0)
    needs_review = confidence < options.review_threshold or disagreement
    if confidence < options.review_threshold:
        reasons.append(f"confidence {confidence:.2f} below review threshold {options.review_threshold:.2f}")
    elif modality != "other" and modality not in strongest_by_modality and confidence < options.image_only_accept:
        needs_review = True
        reasons.append(f"no caption cue for {modality} and image confidence {confidence:.2f} below {options.image_only_accept:.2f}")
    return ModalityResult(
        modality=modality,
        sublabel=sublabel,
        confidence=round(confidence, 4),
        reasons=reasons,
        needs_review=needs_review,
        image_probabilities={name: round(float(p), 4) for name, p in zip(model.classes, image_probabilities)},
        caption_modality=caption_modality,
    )


def classify_batch(
    images: Iterable[np.ndarray | None],
    captions: Sequence[str | None] | None = None,
    options: ModalityOptions | None = None,
) -> list[ModalityResult | None]:
    """Classify many panels; a bad image yields None (logged) and the rest go on."""
    options = options or ModalityOptions()
    results: list[ModalityResult | None] = []
    for index, image in enumerate(images):
        caption = captions[index] if captions is not None else None
        try:
            if image is None:
                raise ValueError("no image")
            results.append(classify_modality(image, caption, options))
        except ValueError as error:
            logger.warning("modality: panel %d skipped: %s", index, error)
            results.append(None)
    return results


def _names_the_eye(run: DocumentRun, options: ModalityOptions) -> str | None:
    """Words of the document (any page's text, any caption) that name the eye, or None."""
    cues = load_caption_cues(Path(options.cues_path))
    texts = [block.text for page in run.pages for block in page.blocks]
    texts += [text for pair in run.pairs for text in (pair.figure_caption, pair.caption_en, pair.caption_zh) if text]
    return cues.names_the_eye("\n".join(texts))


def _non_retinal(pair: Pair, reason: str) -> Reject:
    """A chart, diagram or photograph: kept as a typed reject with its caption, not a pair."""
    return Reject(kind="non_retinal_figure", step="modality", page=pair.page, bbox=pair.bbox, reason=reason,
                  figure_id=pair.figure_id, pair_id=pair.pair_id, caption=pair.figure_caption or pair.caption_en or pair.caption_zh)


def classify_document(run: DocumentRun, pixels, options: ModalityOptions | None = None) -> DocumentRun:
    """Step 3: modality of every pair of a run, from its image (`pixels(image_file)` -> RGB) and
    its own caption text.

    A panel whose image cannot be read is dropped with an error naming its page (the book is
    then partial); a retinal-looking panel classed 'other' is queued and kept as a reject.
    """
    options = options or ModalityOptions()
    started = time.perf_counter()
    model = load_image_model(Path(options.model_path))
    retinal_classes = [i for i, name in enumerate(model.classes) if name != "other"]  # grey fundus too
    eye = _names_the_eye(run, options) if options.eye_context else "not checked"
    kept = []
    for pair in run.pairs:
        try:
            result = classify_modality(pixels(pair.image_file), pair.caption_en or pair.caption_zh, options)
        except Exception as exc:  # one unreadable panel must not lose the rest of the book
            reason = f"page {pair.page}: panel {pair.pair_id} cannot be classified ({type(exc).__name__}: {exc})"
            run.note_error(reason)
            run.rejects.append(
                Reject(kind="bad_image", step="modality", page=pair.page, bbox=pair.bbox, reason=reason,
                       figure_id=pair.figure_id, pair_id=pair.pair_id)
            )
            continue
        pair.modality = result.modality
        pair.modality_sublabel = result.sublabel
        pair.modality_confidence = round(result.confidence, 4)
        pair.reasons.extend(f"modality {reason}" for reason in result.reasons)
        if result.needs_review and pair.review_status == "auto_accepted":
            pair.review_status = "queued"
            pair.reasons.append(f"modality confidence {result.confidence:.2f} is low")
        retinal = sum(result.image_probabilities.get(model.classes[i], 0.0) for i in retinal_classes)
        if eye is None and result.caption_modality is None:
            run.rejects.append(_non_retinal(pair, f"not retinal: the document never names the eye or a retinal imaging "
                                                  f"modality, and the image alone ({result.modality} "
                                                  f"{result.confidence:.2f}) does not make it so"))
            continue
        if result.modality == "other" and retinal >= options.retinal_looking_threshold:
            reason = f"classed 'other' but the image looks retinal (retinal classes {retinal:.2f})"
            pair.review_status = "queued"
            pair.reasons.append(f"possible miss: {reason}")
            run.rejects.append(
                Reject(kind="retinal_looking_other", step="modality", page=pair.page, bbox=pair.bbox, reason=reason,
                       figure_id=pair.figure_id, pair_id=pair.pair_id)
            )
        elif result.modality == "other" and result.confidence >= options.non_retinal_confidence:
            run.rejects.append(
                _non_retinal(pair, f"not retinal (other, confidence {result.confidence:.2f}; retinal classes {retinal:.2f})")
            )
            continue
        elif result.modality == "other":
            pair.review_status = "queued"
            pair.reasons.append(f"classed 'other' with confidence {result.confidence:.2f}: a reviewer decides")
        kept.append(pair)
    run.pairs = kept
    for reject in run.rejects:  # a possible miss shows the reviewer a modality guess too
        proposal = reject.proposal
        if proposal is None:
            continue
        try:
            result = classify_modality(pixels(proposal.image_file), proposal.caption_en or proposal.caption_zh, options)
        except Exception as exc:
            proposal.reasons.append(f"modality unknown ({type(exc).__name__}: {exc})")
            continue
        proposal.modality, proposal.modality_sublabel = result.modality, result.sublabel
        proposal.modality_confidence = round(result.confidence, 4)
        proposal.reasons.extend(f"modality {reason}" for reason in result.reasons)
    run.seconds["modality"] = round(time.perf_counter() - started, 4)
    return run
