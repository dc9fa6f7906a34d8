"""Split a stitched multi-panel figure image into its panels.

Atlases often print a multi-panel figure as one image: panels separated by thin white or black
gutters (and sometimes a border), or abutting with no gutter at all, with letters drawn in a
corner. Gutters are rows or columns that are uniformly near-white or near-black across the
whole band being split; abutting panels meet at a seam, a straight line across the band where
the content jumps. Rows are split first, then each row into columns, so 2x2, 2x3 and 3 + 2 grids
come out in reading order. The caption's panel count is the prior that lets black gutters and
seams split (a single photograph has dark bands and edges of its own); a scan a little askew is
levelled first.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence

import cv2
import numpy as np

from foundation.labels import PANEL_LETTERS

logger = logging.getLogger(__name__)

PixelBox = tuple[int, int, int, int]


def _uniform_lines(band: np.ndarray, axis: int, tolerance: float, white_only: bool = False) -> np.ndarray:
    """Boolean per line (row for axis=1, column for axis=0): uniformly white (or black)."""
    white = (band >= 225).mean(axis=axis) >= tolerance
    if white_only:
        return white
    black = (band <= 30).mean(axis=axis) >= tolerance
    return white | black


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of True runs."""
    runs, start = [], None
    for index, value in enumerate(mask):
        if value and start is None:
            start = index
        elif not value and start is not None:
            runs.append((start, index))
            start = None
    if start is not None:
        runs.append((start, len(mask)))
    return runs


def _cut_positions(gray: np.ndarray, axis: int, min_fraction: float, white_only: bool = False) -> list[tuple[int, int]]:
    """Interior gutter runs along one axis (axis=1: horizontal gutters between rows)."""
    length = gray.shape[0] if axis == 1 else gray.shape[1]
    runs = _runs(_uniform_lines(gray, axis, 0.97, white_only))
    minimum = min_fraction * length
    return [(a, b) for a, b in runs if a >= minimum and b <= length - minimum and b - a >= 1]


Cut = tuple[int, int, float]
"""A separator between panels: first and end line of the band it takes, and how sure it is (0-1)."""

MAX_CANDIDATES = 8
"""Separators kept per band (the strongest): screenshots with many white lines stay fast."""


def _edge_cuts(image: np.ndarray, axis: int, min_fraction: float) -> list[Cut]:
    """Where panels abut with no gutter: a straight line across the whole band where the content
    jumps. The step between lines two apart (a JPEG blurs the seam over two lines) must stand far
    above the steps around it, and persist a few lines further out (a seam, not a thin line)."""
    values = image.astype(np.float32)
    if values.ndim == 2:
        values = values[:, :, None]
    if axis == 1:  # horizontal seams: work on columns of the transposed band
        values = values.transpose(1, 0, 2)
    length = values.shape[1]
    if length < 24 or values.shape[0] < 8:
        return []
    # a seam is straight: smoothing along it keeps the step and averages speckle and texture out
    values = cv2.blur(np.ascontiguousarray(values), (1, 9))
    if values.ndim == 2:
        values = values[:, :, None]
    # seam at p: lines p-2 and p+1 differ, and so do lines p-7 and p+6 (a thin vessel along the
    # line makes only the near step)
    near = _channel_max(np.abs(values[:, 10:-3] - values[:, 7:-6]))
    far = _channel_max(np.abs(values[:, 13:] - values[:, :-13]))
    # lines where both sides are dark ground (the black surround of two fundus photographs) say
    # nothing either way: the step is averaged over the rest, in each half of the line apart (a
    # seam runs the whole line; an edge inside one photograph rarely does)
    brightness = _channel_max(values)
    informative = np.maximum(brightness[:, 7:-6], brightness[:, 10:-3]) >= 40
    step = np.minimum(near, far) * informative
    half = values.shape[0] // 2
    mean_step, ratio = _step_ratio(step, informative, values.shape[0])
    for part in (slice(0, half), slice(half, None)):
        if informative[part].mean() >= 0.2:  # a half of dark ground only says nothing
            ratio = np.minimum(ratio, _step_ratio(step[part], informative[part], half)[1])
    positions = np.arange(9, 9 + mean_step.size)
    minimum = min_fraction * length
    inside = (positions >= minimum) & (positions <= length - minimum)
    strength = np.minimum(1.0, ratio / 10.0) * 0.9 * ((ratio >= 2.0) & (mean_step >= 12))
    # in a busy neighbourhood (small panels, a disc beside the seam) the mean step may not stand
    # out; a seam still makes the sharpest step of nearly every line that crosses it
    consistent = _seam_share(near, informative, half)
    strength = np.maximum(strength, np.where((consistent >= 0.4) & (mean_step >= 12), 0.9 * consistent, 0.0))
    cuts: list[Cut] = []
    for index in np.flatnonzero((strength > 0) & inside):
        if strength[index] < strength[max(0, index - 4) : index + 5].max():
            continue  # not the peak of its neighbourhood
        p = int(positions[index])
        cuts.append((p - 1, p + 1, float(strength[index])))
    return cuts


def _seam_share(step: np.ndarray, informative: np.ndarray, half: int) -> np.ndarray:
    """Per position of _edge_cuts' near steps: the share of informative lines whose step there
    is the sharpest within six pixels either side, the lesser of the band's two halves."""
    padded = np.pad(step, ((0, 0), (6, 6)), mode="edge")
    n = step.shape[1]
    side = np.max([padded[:, 6 + s : 6 + s + n] for s in (-6, -5, -4, -3, 3, 4, 5, 6)], axis=0)
    sharpest = (step >= side + 8) & informative
    shares = []
    for part in (slice(0, half), slice(half, None)):
        counted = informative[part].sum(axis=0)
        shares.append(np.where(counted >= 0.2 * (half or 1), sharpest[part].sum(axis=0) / np.maximum(counted, 1), 0.0))
    return np.minimum(*shares)


def _line_cuts(gray: np.ndarray, axis: int, min_fraction: float, bright: bool) -> list[Cut]:
    """Thin gutters a scan has blurred: a white (or black) gutter of a pixel or two prints as a
    grey line, no longer uniform white, but still lighter (darker) than both sides all along
    the band. A pixel of the line counts when it stands out from the lines three pixels either
    side, or is page-white itself where the panel beside it is white too."""
    values = gray.astype(np.float32)
    if axis == 0:  # vertical gutters: work on the transposed band
        values = values.T
    length = values.shape[0]
    if length < 24 or values.shape[1] < 8:
        return []
    values = cv2.blur(np.ascontiguousarray(values), (5, 1))  # along the line: speckle out
    if not bright:
        values = 255.0 - values
    centre = np.maximum(values[3:-4], values[4:-3])  # a line up to two pixels wide
    sides = np.maximum(values[:-7], values[7:])
    stands_out = (centre - sides >= 18) | ((centre >= 215) & (centre >= sides - 4))
    share = stands_out.mean(axis=1)
    positions = np.arange(3, 3 + share.size)
    minimum = min_fraction * length
    cuts: list[Cut] = []
    for index in np.flatnonzero((share >= 0.9) & (positions >= minimum) & (positions <= length - minimum)):
        if share[index] < share[max(0, index - 3) : index + 4].max():
            continue  # not the peak of its neighbourhood
        if cuts and positions[index] - cuts[-1][1] < 3:
            continue  # the same line, a pixel on
        p = int(positions[index])
        cuts.append((p, p + 2, (0.95 if bright else 0.8) * float(share[index])))
    return cuts


def _waist_cuts(gray: np.ndarray, axis: int, min_fraction: float) -> list[Cut]:
    """Where two round fundus fields, each cropped, abut on dark ground: the seam itself may
    barely show (two grey angiogram backgrounds), but the share of each line that is field, not
    ground, narrows to a waist there between two broad maxima."""
    length = gray.shape[0] if axis == 1 else gray.shape[1]
    if length < 24:
        return []
    field = cv2.medianBlur(np.ascontiguousarray(gray), 5) > 25
    share = np.convolve(field.mean(axis=axis), np.ones(5) / 5, mode="same")
    lowest = np.lib.stride_tricks.sliding_window_view(np.pad(share, 5, mode="edge"), 11).min(axis=1)
    sides = np.minimum(np.maximum.accumulate(share), np.maximum.accumulate(share[::-1])[::-1])
    depth = np.where(sides >= 0.6, 1.0 - share / np.maximum(sides, 1e-6), 0.0)
    edge = max(min_fraction * length, 5)
    cuts: list[Cut] = []
    for p in np.flatnonzero((share <= lowest) & (depth >= 0.4)):
        if edge <= p < length - edge and not (cuts and p - cuts[-1][1] < 5):  # the lowest point, not a plateau's next
            cuts.append((int(p) - 1, int(p) + 1, float(0.9 * depth[p])))
    return cuts


def _channel_max(values: np.ndarray) -> np.ndarray:
    """Largest value over the colour channels (ndarray.max over a last axis of three is slow)."""
    result = values[:, :, 0]
    for channel in range(1, values.shape[2]):
        result = np.maximum(result, values[:, :, channel])
    return result


def _step_ratio(step: np.ndarray, informative: np.ndarray, lines: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean step per position over informative lines, and how far it stands above its neighbours."""
    mean_step = step.sum(axis=0) / np.maximum(informative.sum(axis=0), 0.2 * lines)
    window = np.lib.stride_tricks.sliding_window_view(np.pad(mean_step, 8, mode="edge"), 17)
    around = np.median(np.concatenate([window[:, :6], window[:, 11:]], axis=1), axis=1)
    return mean_step, mean_step / (around + 3.0)


def _candidates(gray: np.ndarray, rgb: np.ndarray, axis: int, min_fraction: float, prior: bool) -> list[Cut]:
    """Separators along one axis: white gutters, and with a caption's panel count also black
    gutters and seams of abutting panels (a single photograph's dark bands must not split it)."""
    cuts: list[Cut] = [(a, b, 1.0) for a, b in _cut_positions(gray, axis, min_fraction, white_only=True)]

    def add(more) -> None:
        for a, b, strength in more:
            if all(b + 3 <= c0 or a - 3 >= c1 for c0, c1, _ in cuts):
                cuts.append((a, b, strength))

    add(_line_cuts(gray, axis, min_fraction, bright=True))
    # black gutters: without a panel count only ones of a few lines, between pieces that are
    # pictures (_plausible), since a single photograph has dark bands of its own
    add((a, b, 0.8) for a, b in _cut_positions(gray, axis, min_fraction) if prior or b - a >= 3)
    if prior:
        add(_line_cuts(gray, axis, min_fraction, bright=False))
        add(_edge_cuts(rgb, axis, min_fraction))
        add(_waist_cuts(gray, axis, min_fraction))
    if len(cuts) > MAX_CANDIDATES:
        cuts = sorted(cuts, key=lambda c: (-c[2], c[0] - c[1]))[:MAX_CANDIDATES]
    return sorted(cuts)


def _segments(length: int, cuts: Sequence[tuple]) -> list[tuple[int, int]]:
    bounds, start = [], 0
    for cut in cuts:
        bounds.append((start, cut[0]))
        start = cut[1]
    bounds.append((start, length))
    return [(a, b) for a, b in bounds if b > a]


def _balanced(segments: list[tuple[int, int]]) -> float:
    sizes = np.array([b - a for a, b in segments], dtype=float)
    return float(sizes.min() / sizes.max()) if len(sizes) else 0.0


def _best_cuts(length: int, candidates: list[Cut], count: int) -> tuple[float, list[Cut]] | None:
    """The `count` - 1 separators that give the surest, then the evenest, `count` panels."""
    if count == 1:
        return 1.0, []
    best: tuple[float, list[Cut]] | None = None
    for combo in itertools.combinations(candidates, count - 1):
        segments = _segments(length, combo)
        if len(segments) != count or min(b - a for a, b in segments) < 0.08 * length:
            continue
        score = min(c[2] for c in combo) + 0.2 * _balanced(segments)
        if best is None or score > best[0]:
            best = (score, list(combo))
    return best


def split_panels(image: np.ndarray, expected: int | None = None, min_fraction: float = 0.12) -> list[PixelBox]:
    """Panel boxes (x0, y0, x1, y1) in reading order; the whole image when no gutters are found.

    Rows are split first, then each row into columns, so 2x2, 2x3 and 3 + 2 grids come out in
    reading order. `expected` (from the caption's panel letters) is a prior on the layout: it
    also lets black gutters and seams of abutting panels split, and the layout whose separators
    are surest wins. Without it only white gutters split, into panels that are pictures.
    """
    h, w = image.shape[:2]
    if expected == 1:
        return [(0, 0, w, h)]
    if expected:
        score, boxes = panel_layouts(image, expected, min_fraction).get(expected, (0.0, []))
        return boxes if score >= MIN_SPLIT_SCORE else [(0, 0, w, h)]
    layouts = _levelled(image, lambda level: _split_level(level, None, min_fraction))
    best = max(layouts.items(), key=lambda item: item[0]) if layouts else None
    return best[1][1] if best and best[1][0] >= 0.5 else [(0, 0, w, h)]


MIN_SPLIT_SCORE = 0.35
"""How sure the separators of a split guided by a panel count must be (below it: one panel)."""


def panel_layouts(image: np.ndarray, most: int, min_fraction: float = 0.12) -> dict[int, tuple[float, list[PixelBox]]]:
    """For each panel count from 1 to `most`: how sure (0-1.2) the surest split into that many
    panels is, and its boxes in reading order. One panel is the whole image, sure. The caller
    knows how many panels a figure has (its caption's letters) but not always how they are shared
    between the figure's images; comparing the counts tells."""
    h, w = image.shape[:2]
    layouts = _levelled(image, lambda level: _split_level(level, most, min_fraction)) if most > 1 else {}
    layouts[1] = (1.0, [(0, 0, w, h)])
    return layouts


def _levelled(image: np.ndarray, split) -> dict[int, tuple[float, list[PixelBox]]]:
    """`split` run on the image levelled first when it is a scan a little askew (gutters are
    straight only then), with its boxes mapped back to the image as given."""
    angle = _tilt(image)
    if not angle:
        return split(image)
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    level = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=(255,) * 3)
    inverse = cv2.invertAffineTransform(matrix)
    return {n: (score, [_unrotate(box, inverse, w, h) for box in boxes]) for n, (score, boxes) in split(level).items()}


def _tilt(image: np.ndarray, max_degrees: float = 1.5) -> float:
    """Small rotation (degrees) that levels the figure: 0 for a born-digital image. A scanned page
    that was not deskewed leaves its figure askew inside its crop, with page-white corners; the
    figure's outer edges (where the white margin ends, on each of the four sides) give the angle."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    ink = cv2.medianBlur(gray, 3) < 215
    if min(ink.shape) < 60:
        return 0.0
    slopes = []
    for mask, sign in ((ink, 1.0), (ink.T, -1.0)):  # rows: left/right edges; columns: top/bottom
        lines = np.flatnonzero(mask.any(axis=1))
        lines = lines[int(0.1 * len(lines)) : int(0.9 * len(lines))]
        if len(lines) < 20:
            continue
        first = mask[lines].argmax(axis=1).astype(float)
        last = (mask.shape[1] - 1 - mask[lines, ::-1].argmax(axis=1)).astype(float)
        half = len(lines) // 2
        run = float(np.median(lines[half:]) - np.median(lines[:half]))
        for edge in (first, last):
            slopes.append(sign * (np.median(edge[half:]) - np.median(edge[:half])) / run)
    if len(slopes) < 4:
        return 0.0
    angle = -float(np.degrees(np.arctan(np.median(slopes))))
    return round(angle, 2) if 0.15 <= abs(angle) <= max_degrees else 0.0


def _unrotate(box: PixelBox, inverse: np.ndarray, width: int, height: int) -> PixelBox:
    """A box found in the levelled image, as an axis-aligned box in the image as given."""
    x0, y0, x1, y1 = box
    corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], dtype=float) @ inverse.T
    return (
        max(0, int(round(corners[:, 0].min()))), max(0, int(round(corners[:, 1].min()))),
        min(width, int(round(corners[:, 0].max()))), min(height, int(round(corners[:, 1].max()))),
    )


def _split_level(image: np.ndarray, expected: int | None, min_fraction: float) -> dict[int, tuple[float, list[PixelBox]]]:
    """Splits of an image whose gutters run straight along its rows and columns, by panel count
    (2 and more): with a panel count, the surest split into each count up to it; without, each
    row split at all its white gutters."""
    rgb = image if image.ndim == 3 else image[:, :, None]
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    h, w = gray.shape
    prior = bool(expected and expected > 1)
    row_cuts = _candidates(gray, rgb, 1, min_fraction, prior)
    best: dict[int, tuple[float, list[PixelBox]]] = {}
    band_options: dict[tuple[int, int], dict[int, tuple[float, list[Cut]]]] = {}
    for rows in _row_counts(expected, len(row_cuts)):
        chosen_rows = _best_cuts(h, row_cuts, rows)
        if chosen_rows is None:
            continue
        row_score, cuts = chosen_rows
        bands = _segments(h, cuts)
        for y0, y1 in bands:
            if (y0, y1) not in band_options:
                band_options[(y0, y1)] = _band_options(gray[y0:y1], rgb[y0:y1], expected, min_fraction, prior)
        options = [band_options[band] for band in bands]
        # with a panel count, any split of up to it over the rows; without, each row at all its gutters
        choices = [sorted(o) if prior else [max(o)] for o in options]
        for counts in itertools.product(*choices):
            total = sum(counts)
            if total < 2 or (expected and total > expected):
                continue
            score = min([row_score if cuts else 1.0] + [options[i][c][0] for i, c in enumerate(counts)])
            if total in best and best[total][0] >= score:
                continue
            boxes = []
            for (y0, y1), option, count in zip(bands, options, counts):
                for x0, x1 in _segments(w, option[count][1]):
                    boxes.append(_trim(gray, (x0, y0, x1, y1)))
            if all(_plausible(gray, box, prior) for box in boxes):
                best[total] = (score, boxes)
    if best:
        logger.debug("splits by panel count: %s", {n: round(s, 2) for n, (s, _) in sorted(best.items())})
    return best


def _row_counts(expected: int | None, candidates: int) -> range:
    """Rows worth trying: up to the panel count and the separators found (at most four rows with
    a panel count, whose splits over the rows are all tried)."""
    most = min(expected or 6, candidates + 1, 4 if expected else 6)
    return range(1, most + 1)


def _band_options(
    gray: np.ndarray, rgb: np.ndarray, expected: int | None, min_fraction: float, prior: bool
) -> dict[int, tuple[float, list[Cut]]]:
    """For each panel count this row of the figure could hold: the surest column separators."""
    candidates = _candidates(gray, rgb, 0, min_fraction / 2, prior)
    options: dict[int, tuple[float, list[Cut]]] = {1: (1.0, [])}
    for count in range(2, min(expected or 6, len(candidates) + 1, 7) + 1):
        chosen = _best_cuts(gray.shape[1], candidates, count)
        if chosen is not None:
            options[count] = chosen
    return options


def _plausible(gray: np.ndarray, box: PixelBox, prior: bool) -> bool:
    """A panel of a stitched figure has a picture's shape, and (without a caption's panel count)
    is mostly picture, not page-white or black: a chart's white plot area is not a gutter between
    panels, nor the black band over a scan."""
    x0, y0, x1, y1 = box
    width, height = x1 - x0, y1 - y0
    if width < 8 or height < 8 or not 0.25 <= width / height <= 4.0:
        return False
    crop = gray[y0:y1, x0:x1]
    return prior or (float((crop >= 225).mean()) < 0.4 and float((crop <= 30).mean()) < 0.9)


def _trim(gray: np.ndarray, box: PixelBox) -> PixelBox:
    """Shrink a panel box past leftover gutter lines on its edges (a few pixels at most)."""
    x0, y0, x1, y1 = box
    crop = gray[y0:y1, x0:x1]

    def leading(flags: np.ndarray) -> int:
        limit = max(3, int(0.03 * len(flags)))
        count = next((i for i, v in enumerate(flags) if not v), len(flags))
        return count if count <= limit else 0

    rows = _uniform_lines(crop, 1, 0.995)
    cols = _uniform_lines(crop, 0, 0.995)
    return (x0 + leading(cols), y0 + leading(rows), x1 - leading(cols[::-1]), y1 - leading(rows[::-1]))


def label_candidates(image: np.ndarray) -> list[np.ndarray]:
    """Tight crops of the mark in a panel's top-left corner that may be its printed letter:
    near-white (or near-black) blobs of letter size, as dark text on white for recognition."""
    height, width = image.shape[:2]
    corner = image[: max(24, height // 4), : max(24, width // 4)]
    gray = cv2.cvtColor(corner, cv2.COLOR_RGB2GRAY) if corner.ndim == 3 else corner
    crops = []
    for mask, invert in ((gray >= 235, True), (gray <= 20, False)):
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        blobs = [
            stats[i]
            for i in range(1, count)
            if 6 <= stats[i][3] <= 0.8 * gray.shape[0] and stats[i][2] <= 0.8 * gray.shape[1] and stats[i][4] >= 15
        ]
        if not blobs:
            continue
        x, y, w, h, _ = max(blobs, key=lambda s: s[4])
        margin = max(2, h // 4)
        crop = gray[max(0, y - margin) : y + h + margin, max(0, x - margin) : x + w + margin]
        crop = 255 - crop if invert else crop
        crop = cv2.copyMakeBorder(crop, 8, 8, 8, 8, cv2.BORDER_CONSTANT, value=255)
        crops.append(cv2.cvtColor(crop, cv2.COLOR_GRAY2RGB))
    return crops


def read_panel_label(
    image: np.ndarray, read_line, letters: Sequence[str] = tuple(PANEL_LETTERS), min_score: float = 0.5
) -> str | None:
    """The panel letter printed in the image's top-left corner, or None.

    `read_line(crop) -> (text, score) | None` is an OCR engine's single-line recogniser. The
    bar is low (a lone "C" reads as "c" at ~0.55) because the caller only trusts labels that
    spell exactly the caption's letters.
    """
    for crop in label_candidates(image):
        result = read_line(crop)
        if result is None:
            continue
        text, score = result
        text = text.strip().strip(".()").upper()
        if text in letters and score >= min_score:
            return text
    return None
