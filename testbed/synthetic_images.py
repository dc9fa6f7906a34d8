"""Cheap, deterministic images that look like the figures of a fundus atlas.

The sample atlases (our test data and benchmarks) need panels whose modality can be told apart
the way it can in real books: colour fundus photographs (CFP), grey fluorescein angiograms
(FFA) with bright vessels on a dark ground, darker ICGA frames, OCT B-scans with horizontal
layers, and non-retinal images (schematic diagrams, charts, anterior-segment photographs,
publisher logos, fluorescence micrographs, book engravings), infrared fundus frames and
OCT device screenshots. Every function takes a ``numpy.random.Generator`` so a seed fixes the pixels,
and returns an RGB ``uint8`` array of shape (height, width, 3).

CFP panels are crops of the CC0 fundus photograph shipped with scikit-image
(``skimage.data.retina()``); everything else is drawn procedurally.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import cv2
import numpy as np

Size = int | tuple[int, int]
"""Either a side length (square image) or (width, height) in pixels."""

_RETINA_WORKING_SIDE = 768
"""The CC0 photograph is downscaled once to this side; crops are taken from it."""


def _width_height(size: Size) -> tuple[int, int]:
    if isinstance(size, int):
        width = height = size
    else:
        width, height = int(size[0]), int(size[1])
    if width < 8 or height < 8:
        raise ValueError(f"image size must be at least 8x8 pixels, got {width}x{height}")
    return width, height


@functools.lru_cache(maxsize=1)
def _retina_photographs() -> tuple[np.ndarray, ...]:
    """The scikit-image fundus photograph at two working sizes.

    The JPEG shipped inside scikit-image is read directly; going through ``skimage.data``
    costs seconds of imports.
    """
    import importlib.resources

    shipped = importlib.resources.files("skimage.data").joinpath("retina.jpg")
    encoded = np.frombuffer(shipped.read_bytes(), dtype=np.uint8) if shipped.is_file() else None
    if encoded is not None:
        photo = np.ascontiguousarray(cv2.imdecode(encoded, cv2.IMREAD_COLOR)[:, :, ::-1])
    else:
        from skimage import data

        photo = np.ascontiguousarray(data.retina())
    side = _RETINA_WORKING_SIDE
    return tuple(cv2.resize(photo, (side // factor, side // factor), interpolation=cv2.INTER_AREA) for factor in (1, 2))


def _to_rgb(grey: np.ndarray) -> np.ndarray:
    grey_u8 = np.clip(grey, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(grey_u8[:, :, None], 3, axis=2))


def _smooth_noise(rng: np.random.Generator, width: int, height: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid upsampled smoothly."""
    coarse = rng.random((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).clip(0.0, 1.0)


def _circular_mask(width: int, height: int, center: tuple[float, float], radius: float, soft: float) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    distance = np.sqrt((xx - center[0]) ** 2 + (yy - center[1]) ** 2)
    return np.clip((radius - distance) / max(soft, 1e-3), 0.0, 1.0)


def cfp_image(rng: np.random.Generator, size: Size) -> np.ndarray:
    """A colour fundus photograph: a varied crop/flip/rotation/colour shift of the CC0 photo.

    Rotation, zoom, shift, flip, crop and resize are folded into one affine warp so the cost
    depends on the output size only.
    """
    width, height = _width_height(size)
    angle = float(rng.uniform(-15.0, 15.0))
    zoom = float(rng.uniform(1.0, 1.35))
    shift = rng.uniform(-0.06, 0.06, size=2)
    flip = bool(rng.random() < 0.5)
    large, small = _retina_photographs()
    aspect = width / height
    crop_fraction = (1.0, 1.0 / aspect) if aspect >= 1 else (aspect, 1.0)
    photo = small if width / (large.shape[1] * crop_fraction[0]) * zoom < 0.5 else large
    side = float(photo.shape[0])
    rotate = np.vstack([cv2.getRotationMatrix2D((side / 2, side / 2), angle, zoom), [0.0, 0.0, 1.0]])
    rotate[:2, 2] += shift * side
    mirror = np.array([[-1.0, 0.0, side], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) if flip else np.eye(3)
    crop_w, crop_h = side * crop_fraction[0], side * crop_fraction[1]
    crop = np.array([[1.0, 0.0, -(side - crop_w) / 2], [0.0, 1.0, -(side - crop_h) / 2], [0.0, 0.0, 1.0]])
    resize = np.diag([width / crop_w, height / crop_h, 1.0])
    matrix = (resize @ crop @ mirror @ rotate)[:2]
    view = cv2.warpAffine(photo, matrix, (width, height), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    gains = np.array([rng.uniform(0.85, 1.12), rng.uniform(0.8, 1.12), rng.uniform(0.7, 1.15)], dtype=np.float32)
    gamma = float(rng.uniform(0.8, 1.25))
    lookup = np.clip(255.0 * (np.arange(256, dtype=np.float32)[:, None] / 255.0) ** gamma * gains[None, :], 0, 255)
    lookup = lookup.astype(np.uint8)
    shifted = np.stack([lookup[view[:, :, channel], channel] for channel in range(3)], axis=2)
    return np.ascontiguousarray(shifted)


def red_free_image(rng: np.random.Generator, size: Size) -> np.ndarray:
    """A red-free fundus photograph: the green channel of a CFP, shown grey with a green tint."""
    colour = cfp_image(rng, size)
    green = colour[:, :, 1].astype(np.float32)
    green = cv2.equalizeHist(green.astype(np.uint8)).astype(np.float32) * 0.85
    tinted = np.stack([green * 0.88, green, green * 0.86], axis=2)
    return np.ascontiguousarray(np.clip(tinted, 0, 255).astype(np.uint8))


def _vessel_tree(
    rng: np.random.Generator, canvas: np.ndarray, start: tuple[float, float], heading: float, scale: float
) -> None:
    """Draw a branching vessel tree in place (random walk with bifurcations, thinning with depth)."""
    stack = [(start[0], start[1], heading, max(2.0, 5.5 * scale / 400.0), 0)]
    step = scale / 28.0
    while stack:
        x, y, direction, thickness, depth = stack.pop()
        points = [(x, y)]
        segments = int(rng.integers(6, 12))
        for _ in range(segments):
            direction += float(rng.normal(0.0, 0.18))
            x += step * math.cos(direction)
            y += step * math.sin(direction)
            points.append((x, y))
        polyline = np.round(np.array(points)).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(canvas, [polyline], False, 1.0, thickness=max(1, int(round(thickness))), lineType=cv2.LINE_AA)
        if depth < 4 and thickness > 1.0:
            for turn in (-1.0, 1.0):
                stack.append((x, y, direction + turn * float(rng.uniform(0.3, 0.7)), thickness * 0.68, depth + 1))


def _angiogram_base(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, np.ndarray, tuple, float]:
    """Vessel map, fundus mask, disc centre and fundus radius shared by FFA and ICGA frames."""
    scale = float(min(width, height))
    center = (width / 2 + rng.uniform(-0.05, 0.05) * width, height / 2 + rng.uniform(-0.05, 0.05) * height)
    radius = 0.5 * scale * rng.uniform(0.92, 1.08)
    side = 1.0 if rng.random() < 0.5 else -1.0
    disc = (center[0] + side * 0.22 * scale, center[1] + rng.uniform(-0.03, 0.03) * scale)
    vessels = np.zeros((height, width), dtype=np.float32)
    toward_macula = math.pi if side > 0 else 0.0
    for offset in (-0.9, -0.45, 0.45, 0.9):
        heading = toward_macula + offset + float(rng.normal(0.0, 0.08))
        _vessel_tree(rng, vessels, disc, heading, scale)
    for offset in (-0.5, 0.5):
        _vessel_tree(rng, vessels, disc, toward_macula + math.pi + offset, scale * 0.8)
    mask = _circular_mask(width, height, center, radius, soft=scale * 0.02)
    return vessels, mask, (disc, center), scale


def ffa_image(rng: np.random.Generator, size: Size) -> np.ndarray:
    """A fluorescein angiogram frame: bright branching vessels and disc on a dark ground, grey."""
    width, height = _width_height(size)
    vessels, mask, (disc, center), scale = _angiogram_base(rng, width, height)
    vessels = cv2.GaussianBlur(vessels, (0, 0), max(0.6, scale / 500.0))
    background = 35.0 + 45.0 * _smooth_noise(rng, width, height, 5)
    macula = (center[0] - (disc[0] - center[0]) * 0.6, center[1])
    background *= 1.0 - 0.55 * _circular_mask(width, height, macula, scale * 0.09, soft=scale * 0.08)
    image = background + 175.0 * vessels
    image += 200.0 * _circular_mask(width, height, disc, scale * 0.055, soft=scale * 0.03)
    spots = np.zeros((height, width), dtype=np.float32)
    for _ in range(int(rng.integers(3, 12))):
        spot_x = float(rng.uniform(0.2, 0.8)) * width
        spot_y = float(rng.uniform(0.2, 0.8)) * height
        spot_r = max(1, int(scale * rng.uniform(0.006, 0.03)))
        cv2.circle(spots, (int(spot_x), int(spot_y)), spot_r, float(rng.uniform(0.5, 1.0)), -1, cv2.LINE_AA)
    image += 170.0 * cv2.GaussianBlur(spots, (0, 0), max(1.0, scale / 120.0))
    image = image * mask + rng.normal(0.0, 6.0, size=(height, width)).astype(np.float32)
    return _to_rgb(image)


def icga_image(rng: np.random.Generator, size: Size) -> np.ndarray:
    """An indocyanine-green angiogram frame: darker, broad fuzzy choroidal vessels, faint retinal ones."""
    width, height = _width_height(size)
    vessels, mask, (disc, _center), scale = _angiogram_base(rng, width, height)
    choroid = np.zeros((height, width), dtype=np.float32)
    for _ in range(int(rng.integers(10, 18))):
        start = (float(rng.uniform(0, width)), float(rng.uniform(0, height)))
        _vessel_tree(rng, choroid, start, float(rng.uniform(0, 2 * math.pi)), scale * 0.7)
    choroid = cv2.GaussianBlur(choroid, (0, 0), max(2.0, scale / 90.0))
    vessels = cv2.GaussianBlur(vessels, (0, 0), max(0.8, scale / 400.0))
    image = 18.0 + 25.0 * _smooth_noise(rng, width, height, 4) + 90.0 * choroid + 70.0 * vessels
    image += 60.0 * _circular_mask(width, height, disc, scale * 0.05, soft=scale * 0.04)
    image = image * mask + rng.normal(0.0, 4.0, size=(height, width)).astype(np.float32)
    return _to_rgb(image)


_OCT_LAYERS = (
    # depth below the inner retinal surface (fraction of retinal thickness), relative reflectivity
    (-0.60, 0.04),
    (-0.02, 0.05),
    (0.00, 0.85),  # nerve fibre layer
    (0.10, 0.60),
    (0.16, 0.45),  # ganglion cell / inner plexiform
    (0.30, 0.50),
    (0.34, 0.18),  # inner nuclear layer
    (0.44, 0.20),
    (0.48, 0.52),  # outer plexiform layer
    (0.53, 0.14),  # outer nuclear layer
    (0.80, 0.14),
    (0.82, 0.45),  # external limiting membrane
    (0.84, 0.20),
    (0.88, 0.85),  # ellipsoid zone
    (0.91, 0.35),
    (0.95, 1.00),  # retinal pigment epithelium
    (1.02, 0.95),
    (1.06, 0.50),  # choroid
    (1.22, 0.32),
    (1.42, 0.06),
    (3.00, 0.03),
)


def oct_image(rng: np.random.Generator, size: Size) -> np.ndarray:
    """An OCT B-scan: dark ground, curved horizontal bright/dark layers, foveal dip, speckle."""
    return _oct_scan(rng, size)[0]


def annotated_oct_image(rng: np.random.Generator, size: Size) -> np.ndarray:
    """An OCT B-scan with segmentation results drawn on it: coloured lines along layer boundaries."""
    image, inner_surface, outer_surface = _oct_scan(rng, size)
    image = image.copy()
    width = image.shape[1]
    xs = np.arange(width, dtype=np.int32)
    palette = ((230, 40, 40), (40, 200, 60), (60, 90, 240), (240, 220, 40), (240, 60, 220), (40, 220, 230))
    for index in rng.choice(len(palette), size=int(rng.integers(2, 6)), replace=False):
        depth = float(rng.uniform(-0.02, 1.0))
        boundary = inner_surface + depth * (outer_surface - inner_surface)
        points = np.stack([xs, boundary.astype(np.int32)], axis=1).reshape(-1, 1, 2)
        cv2.polylines(image, [points], False, palette[int(index)], max(1, image.shape[0] // 200), cv2.LINE_AA)
    return image


def _oct_scan(rng: np.random.Generator, size: Size) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The B-scan and its inner and outer retinal surfaces (row per column)."""
    width, height = _width_height(size)
    xs = np.arange(width, dtype=np.float32)
    fovea_x = width * float(rng.uniform(0.4, 0.6))
    thickness = height * float(rng.uniform(0.28, 0.36))
    curvature = float(rng.uniform(-0.3, 0.5)) * height / (width**2)
    surface = height * float(rng.uniform(0.3, 0.4)) + curvature * (xs - width / 2) ** 2
    dip = thickness * float(rng.uniform(0.25, 0.45)) * np.exp(-(((xs - fovea_x) / (width * 0.1)) ** 2))
    inner_surface = surface + dip
    outer_surface = surface + thickness
    yy = np.arange(height, dtype=np.float32)[:, None]
    depth = (yy - inner_surface[None, :]) / np.maximum(outer_surface - inner_surface, 1.0)[None, :] * 0.95
    depths = np.array([layer[0] for layer in _OCT_LAYERS], dtype=np.float32)
    levels = np.array([layer[1] for layer in _OCT_LAYERS], dtype=np.float32)
    reflectivity = np.interp(depth.ravel(), depths, levels).reshape(height, width).astype(np.float32)
    speckle = rng.gamma(shape=2.0, scale=0.5, size=(height, width)).astype(np.float32)
    image = 235.0 * reflectivity * speckle
    image = cv2.GaussianBlur(image, (0, 0), sigmaX=1.2, sigmaY=0.6)
    return _to_rgb(image), inner_surface, outer_surface


_DIAGRAM_LABELS = ("Cornea", "Lens", "Iris", "Retina", "Choroid", "Sclera", "Optic nerve", "Fovea", "Vitreous")


def diagram_image(rng: np.random.Generator, size: Size) -> np.ndarray:
    """A black line drawing on white: an eye schematic with labels and arrows (non-retinal)."""
    width, height = _width_height(size)
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    scale = min(width, height)
    ink = (20, 20, 20)
    line = max(1, scale // 160)
    center = (int(width * rng.uniform(0.42, 0.5)), int(height * 0.5))
    radius = int(scale * rng.uniform(0.3, 0.36))
    cv2.circle(canvas, center, radius, ink, line + 1, cv2.LINE_AA)
    cv2.circle(canvas, center, int(radius * 0.92), ink, line, cv2.LINE_AA)
    lens_center = (center[0] - int(radius * 0.78), center[1])
    cv2.ellipse(canvas, lens_center, (int(radius * 0.12), int(radius * 0.3)), 0, 0, 360, ink, line, cv2.LINE_AA)
    cornea_axes = (int(radius * 0.15), int(radius * 0.42))
    cv2.ellipse(canvas, (center[0] - radius, center[1]), cornea_axes, 0, 90, 270, ink, line)
    nerve_y = center[1] + int(radius * rng.uniform(-0.1, 0.1))
    cv2.line(canvas, (center[0] + radius, nerve_y - radius // 8), (width - 2, nerve_y - radius // 6), ink, line)
    cv2.line(canvas, (center[0] + radius, nerve_y + radius // 8), (width - 2, nerve_y + radius // 6), ink, line)
    labels = list(_DIAGRAM_LABELS)
    rng.shuffle(labels)
    font_scale = max(0.3, scale / 900.0)
    for index in range(int(rng.integers(4, 7))):
        label = labels[index % len(labels)]
        angle = 2 * math.pi * (index + rng.uniform(0, 0.5)) / 6
        tip = (int(center[0] + radius * math.cos(angle)), int(center[1] + radius * math.sin(angle)))
        text_at = (
            int(np.clip(center[0] + 1.35 * radius * math.cos(angle), 4, width - 60 * font_scale * 3)),
            int(np.clip(center[1] + 1.3 * radius * math.sin(angle), 14, height - 6)),
        )
        cv2.arrowedLine(canvas, text_at, tip, ink, line, cv2.LINE_AA, tipLength=0.08)
        cv2.putText(canvas, label, text_at, cv2.FONT_HERSHEY_SIMPLEX, font_scale, ink, line, cv2.LINE_AA)
    return canvas


def chart_image(rng: np.random.Generator, size: Size) -> np.ndarray:
    """A bar chart with axes and a trend line on white (non-retinal)."""
    width, height = _width_height(size)
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    left, bottom, top, right = int(width * 0.12), int(height * 0.85), int(height * 0.1), int(width * 0.95)
    cv2.line(canvas, (left, bottom), (right, bottom), (0, 0, 0), 2)
    cv2.line(canvas, (left, bottom), (left, top), (0, 0, 0), 2)
    bars = int(rng.integers(4, 8))
    values = rng.uniform(0.2, 1.0, size=bars)
    slot = (right - left) / bars
    palette = ((70, 110, 180), (200, 120, 60), (90, 160, 90))
    colour = palette[int(rng.integers(0, len(palette)))]
    tops = []
    for index, value in enumerate(values):
        x0 = int(left + slot * index + slot * 0.2)
        x1 = int(left + slot * (index + 1) - slot * 0.2)
        y0 = int(bottom - value * (bottom - top))
        cv2.rectangle(canvas, (x0, y0), (x1, bottom - 1), colour, -1)
        tops.append(((x0 + x1) // 2, y0 - 6))
        tick_y = int(bottom - (bottom - top) * (index + 1) / bars)
        cv2.line(canvas, (left - 5, tick_y), (left, tick_y), (0, 0, 0), 1)
    cv2.polylines(canvas, [np.array(tops, dtype=np.int32).reshape(-1, 1, 2)], False, (30, 30, 30), 1, cv2.LINE_AA)
    return canvas


def slit_lamp_image(rng: np.random.Generator, size: Size) -> np.ndarray:
    """An anterior-segment photograph: skin, white sclera with red vessels, brown iris, black pupil."""
    width, height = _width_height(size)
    scale = min(width, height)
    skin = np.array([rng.uniform(150, 190), rng.uniform(100, 130), rng.uniform(80, 100)], dtype=np.float32)
    image = np.empty((height, width, 3), dtype=np.float32)
    image[:] = skin * (0.75 + 0.35 * _smooth_noise(rng, width, height, 4))[:, :, None]
    center = (width / 2 + rng.uniform(-0.05, 0.05) * width, height / 2)
    opening = np.zeros((height, width), dtype=np.float32)
    cv2.ellipse(opening, (int(center[0]), int(center[1])), (int(width * 0.44), int(height * 0.3)), 0, 0, 360, 1.0, -1)
    opening = cv2.GaussianBlur(opening, (0, 0), scale / 60.0)
    sclera = np.array([235, 225, 215], dtype=np.float32)
    image = image * (1 - opening[:, :, None]) + sclera * opening[:, :, None]
    redness = np.zeros((height, width), dtype=np.float32)
    for _ in range(12):
        start = (float(rng.uniform(0.1, 0.9) * width), float(center[1] + rng.uniform(-0.2, 0.2) * height))
        _vessel_tree(rng, redness, start, float(rng.uniform(0, 2 * math.pi)), scale * 0.25)
    redness = cv2.GaussianBlur(redness, (0, 0), 0.8) * opening
    image -= redness[:, :, None] * np.array([10, 120, 120], dtype=np.float32)
    iris = _circular_mask(width, height, center, scale * 0.22, soft=2.0)
    iris_colour = np.array([rng.uniform(90, 130), rng.uniform(55, 80), rng.uniform(25, 45)], dtype=np.float32)
    texture = 0.7 + 0.5 * _smooth_noise(rng, width, height, 24)
    image = image * (1 - iris[:, :, None]) + (iris_colour * texture[:, :, None]) * iris[:, :, None]
    pupil = _circular_mask(width, height, center, scale * rng.uniform(0.07, 0.11), soft=1.5)
    image *= 1 - 0.92 * pupil[:, :, None]
    highlight = _circular_mask(width, height, (center[0] + scale * 0.05, center[1] - scale * 0.05), scale * 0.02, 1.5)
    image += 220.0 * highlight[:, :, None]
    beam = np.zeros((height, width), dtype=np.float32)
    beam_x = int(center[0] + rng.uniform(-0.15, 0.15) * scale)
    cv2.line(beam, (beam_x - int(scale * 0.05), 0), (beam_x + int(scale * 0.05), height), 1.0, max(2, scale // 60))
    image += 90.0 * cv2.GaussianBlur(beam, (0, 0), 2.0)[:, :, None]
    return np.ascontiguousarray(np.clip(image, 0, 255).astype(np.uint8))


def logo_image(rng: np.random.Generator, size: Size) -> np.ndarray:
    """A small publisher logo: a coloured emblem and two capital letters on white."""
    width, height = _width_height(size)
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    colour = tuple(int(value) for value in rng.integers(0, 160, size=3))
    side = min(width, height)
    emblem = (side // 2, height // 2)
    cv2.circle(canvas, emblem, int(side * 0.42), colour, -1, cv2.LINE_AA)
    cv2.circle(canvas, emblem, int(side * 0.2), (255, 255, 255), -1, cv2.LINE_AA)
    letters = "".join(chr(ord("A") + int(value)) for value in rng.integers(0, 26, size=2))
    font_scale = side / 40.0
    origin = (side + side // 6, int(height * 0.72))
    cv2.putText(canvas, letters, origin, cv2.FONT_HERSHEY_DUPLEX, font_scale, colour, max(1, side // 20), cv2.LINE_AA)
    return canvas


def infrared_fundus_image(rng: np.random.Generator, size: Size) -> np.ndarray:
    """An infrared / SLO fundus frame: the CFP's red-free view without tint, dark vessels, square field."""
    colour = cfp_image(rng, size)
    green = colour[:, :, 1].astype(np.float32)
    lifted = 60.0 + 0.75 * green + rng.normal(0.0, 4.0, size=green.shape).astype(np.float32)
    return _to_rgb(cv2.GaussianBlur(lifted, (0, 0), 0.8))


def oct_viewer_image(rng: np.random.Generator, size: Size) -> np.ndarray:
    """A device-software screenshot: window chrome, an OCT B-scan beside its infrared fundus localiser."""
    width, height = _width_height(size)
    canvas = np.full((height, width, 3), int(rng.integers(225, 246)), dtype=np.uint8)
    title = max(8, height // 14)
    canvas[:title] = (int(rng.integers(60, 140)), int(rng.integers(90, 160)), int(rng.integers(150, 220)))
    font = max(0.3, height / 900.0)
    cv2.putText(canvas, "OCT viewer", (6, title - 3), cv2.FONT_HERSHEY_SIMPLEX, font, (255, 255, 255), 1, cv2.LINE_AA)
    for row in range(2):
        y = title + 4 + row * (title // 2 + 4)
        cv2.putText(canvas, "File  View  Export   Scan 12 / 49", (6, y + title // 2), cv2.FONT_HERSHEY_SIMPLEX, font * 0.8, (20, 20, 20), 1)
    top = title + 2 * (title // 2 + 4) + 6
    margin = max(4, width // 60)
    side = min(height - top - margin * 2, (width - 3 * margin) // 2)
    oct_width = width - 3 * margin - side
    scan = annotated_oct_image if rng.random() < 0.5 else oct_image
    canvas[top : top + side, margin : margin + oct_width] = scan(rng, (oct_width, side))
    fundus = infrared_fundus_image(rng, side)
    if rng.random() < 0.4:  # a thickness map laid over the fundus
        heat = cv2.applyColorMap((255 * _smooth_noise(rng, side, side, 4)).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
        square = np.zeros((side, side), dtype=np.float32)
        quarter = side // 4
        square[quarter : side - quarter, quarter : side - quarter] = 0.5
        fundus = (fundus * (1 - square[:, :, None]) + heat * square[:, :, None]).astype(np.uint8)
    line_y = int(side * rng.uniform(0.3, 0.7))
    cv2.line(fundus, (side // 8, line_y), (side * 7 // 8, line_y), (80, 220, 80), max(1, side // 150))
    canvas[top : top + side, 2 * margin + oct_width : 2 * margin + oct_width + side] = fundus
    return canvas


def micrograph_image(rng: np.random.Generator, size: Size) -> np.ndarray:
    """A fluorescence micrograph in a pseudocolour map: cells as blobs on a dark, noisy ground (non-retinal)."""
    width, height = _width_height(size)
    signal = 0.15 * _smooth_noise(rng, width, height, 12)
    scale = min(width, height)
    for _ in range(int(rng.integers(15, 60))):
        center = (float(rng.uniform(0, width)), float(rng.uniform(0, height)))
        signal += float(rng.uniform(0.3, 1.0)) * _circular_mask(width, height, center, scale * rng.uniform(0.02, 0.07), scale * 0.03)
    signal += rng.normal(0.0, 0.06, size=signal.shape).astype(np.float32)
    grey = np.clip(signal / max(float(signal.max()), 1e-3) * 255.0, 0, 255).astype(np.uint8)
    colour_map = (cv2.COLORMAP_JET, cv2.COLORMAP_VIRIDIS, cv2.COLORMAP_WINTER)[int(rng.integers(0, 3))]
    return np.ascontiguousarray(cv2.applyColorMap(grey, colour_map)[:, :, ::-1])


def engraving_image(rng: np.random.Generator, size: Size) -> np.ndarray:
    """A printed book illustration: dark hatching strokes and figures on off-white paper (non-retinal)."""
    width, height = _width_height(size)
    paper = float(rng.uniform(200, 240))
    canvas = np.full((height, width), paper, dtype=np.float32)
    shade = _smooth_noise(rng, width, height, 5)
    spacing = max(2, min(width, height) // int(rng.integers(60, 120)))
    for y in range(0, height, spacing):
        x = 0
        while x < width:
            run = int(rng.integers(4, 40))
            if shade[y, min(x, width - 1)] > 0.45:
                tilt = int(rng.integers(-2, 3))
                cv2.line(canvas, (x, y), (min(width - 1, x + run), y + tilt), float(rng.uniform(10, 70)), 1, cv2.LINE_AA)
            x += run + int(rng.integers(1, 6))
    for _ in range(int(rng.integers(3, 8))):
        points = np.array([[rng.uniform(0, width), rng.uniform(0, height)] for _ in range(5)], dtype=np.int32)
        cv2.polylines(canvas, [points.reshape(-1, 1, 2)], False, 30.0, max(1, min(width, height) // 150), cv2.LINE_AA)
    return _to_rgb(canvas)


GENERATORS = {
    "cfp": cfp_image,
    "red_free": red_free_image,
    "ffa": ffa_image,
    "icga": icga_image,
    "oct": oct_image,
    "oct_annotated": annotated_oct_image,
    "diagram": diagram_image,
    "chart": chart_image,
    "slit_lamp": slit_lamp_image,
    "logo": logo_image,
    "infrared_fundus": infrared_fundus_image,
    "oct_viewer": oct_viewer_image,
    "micrograph": micrograph_image,
    "engraving": engraving_image,
}
"""Image kinds by name, as used in the sample atlas data files."""


def draw_panel_label(image: np.ndarray, letter: str, corner: str = "top_left") -> None:
    """Draw a panel letter in a corner, white on black or black on white by local brightness."""
    height, width = image.shape[:2]
    font_scale = max(0.45, min(width, height) / 260.0)
    thickness = max(1, int(round(font_scale * 2)))
    (text_w, text_h), baseline = cv2.getTextSize(letter, cv2.FONT_HERSHEY_DUPLEX, font_scale, thickness)
    margin = max(3, min(width, height) // 40)
    x = margin if corner.endswith("left") else width - margin - text_w
    y = margin + text_h if corner.startswith("top") else height - margin - baseline
    patch = image[max(0, y - text_h) : y + baseline, max(0, x) : x + text_w]
    bright = patch.size > 0 and float(patch.mean()) > 128
    colour = (0, 0, 0) if bright else (255, 255, 255)
    cv2.putText(image, letter, (x, y), cv2.FONT_HERSHEY_DUPLEX, font_scale, colour, thickness, cv2.LINE_AA)


def stitch_panels(
    panels: Sequence[np.ndarray], rows: Sequence[Sequence[int]], gutter: int, gutter_value: int,
    row_gutter: int | None = None,
) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Join panels into one image, row by row, with uniform gutters (`row_gutter` between rows
    when it differs: a band left for the letters printed under each panel).

    Each row's panels must share a height and the rows must share a total width (gutters
    included); returns the image and each panel's pixel box (x0, y0, x1, y1) in input order.
    """
    row_gutter = gutter if row_gutter is None else row_gutter
    row_widths = {sum(panels[i].shape[1] for i in row) + gutter * (len(row) - 1) for row in rows}
    if len(row_widths) != 1:
        raise ValueError(f"rows of a stitched figure must have one width, got {sorted(row_widths)}")
    total_width = row_widths.pop()
    total_height = sum(panels[row[0]].shape[0] for row in rows) + row_gutter * (len(rows) - 1)
    canvas = np.full((total_height, total_width, 3), gutter_value, dtype=np.uint8)
    boxes: list[tuple[int, int, int, int]] = [(0, 0, 0, 0)] * len(panels)
    y = 0
    for row in rows:
        x = 0
        row_height = panels[row[0]].shape[0]
        for index in row:
            panel = panels[index]
            if panel.shape[0] != row_height:
                raise ValueError("panels in one row of a stitched figure must share a height")
            canvas[y : y + row_height, x : x + panel.shape[1]] = panel
            boxes[index] = (x, y, x + panel.shape[1], y + row_height)
            x += panel.shape[1] + gutter
        y += row_height + row_gutter
    return canvas, boxes
