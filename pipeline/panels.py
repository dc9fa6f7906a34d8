"""Split a stitched multi-panel figure image into its panels.

Atlases often print a multi-panel figure as one image: panels separated by thin white or black
gutters (and sometimes a border), with letters drawn in a corner. Gutters are rows or columns
that are uniformly near-white or near-black across the whole band being split; rows are split
first, then each row into columns, so 2x2 and 2x3 grids come out in reading order.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import cv2
import numpy as np

from foundation.labels import PANEL_LETTERS

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


def _edge_cuts(gray: np.ndarray, axis: int, min_fraction: float) -> list[tuple[int, int]]:
    """Where panels abut with no gutter: a line across the whole band where the content jumps
    (the mean step between neighbouring lines stands far above the rest)."""
    values = gray.astype(np.float32)
    steps = np.abs(np.diff(values, axis=0 if axis == 1 else 1)).mean(axis=1 if axis == 1 else 0)
    if steps.size < 8:
        return []
    length = steps.size + 1
    minimum = min_fraction * length
    cuts = []
    for index in range(3, steps.size - 3):
        value = steps[index]
        around = max(steps[index - 3 : index].max(), steps[index + 1 : index + 4].max())
        if value >= 8 and value >= 3 * around and minimum <= index <= length - minimum:
            cuts.append((index + 1, index + 2))
    return cuts


def _segments(length: int, cuts: list[tuple[int, int]]) -> list[tuple[int, int]]:
    bounds, start = [], 0
    for a, b in cuts:
        bounds.append((start, a))
        start = b
    bounds.append((start, length))
    return [(a, b) for a, b in bounds if b > a]


def _balanced(segments: list[tuple[int, int]]) -> float:
    sizes = np.array([b - a for a, b in segments], dtype=float)
    return float(sizes.min() / sizes.max()) if len(sizes) else 0.0


def _best_cuts(
    gray: np.ndarray, axis: int, wanted: int | None, min_fraction: float, edges: bool = False
) -> list[tuple[int, int]]:
    """Choose the gutter runs that give the most even panels (and `wanted` of them, if given).

    Panels of one figure differ in shape (an OCT B-scan is wider than a fundus photograph), so
    when the caption says how many panels there are, evenness only breaks ties.
    """
    candidates = _cut_positions(gray, axis, min_fraction, white_only=not wanted)
    length = gray.shape[0] if axis == 1 else gray.shape[1]
    if edges and wanted and len(candidates) < wanted - 1:
        candidates = sorted(set(candidates) | set(_edge_cuts(gray, axis, min_fraction)))
    if not candidates:
        return []
    if len(candidates) > 8:  # a screenshot or chart has many white lines: keep the widest gutters
        candidates = sorted(sorted(candidates, key=lambda run: run[0] - run[1])[:8])
    best: tuple[float, list[tuple[int, int]]] = (0.0, [])
    counts = [wanted - 1] if wanted else range(1, min(len(candidates), 5) + 1)
    for count in counts:
        if count <= 0 or count > len(candidates) or count > 8:
            continue
        for combo in itertools.combinations(candidates, count):
            segments = _segments(length, list(combo))
            if min(b - a for a, b in segments) < 0.08 * length:
                continue
            score = _balanced(segments) + sum(b - a for a, b in combo) / length
            if score > best[0]:
                best = (score, list(combo))
    return best[1] if best[0] >= (0.3 if wanted else 0.6) else []


def split_panels(image: np.ndarray, expected: int | None = None, min_fraction: float = 0.12) -> list[PixelBox]:
    """Panel boxes (x0, y0, x1, y1) in reading order; the whole image when no gutters are found.

    `expected` (from the caption's panel letters) steers the choice between candidate gutters;
    without it only white gutters split (dark bands inside one photograph or B-scan do not).
    """
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    h, w = gray.shape
    best: list[PixelBox] = [(0, 0, w, h)]
    layouts = _layouts(expected) if expected and expected > 1 else [None]
    for edges in (False, True) if expected else (False,):  # white or black gutters first, then abutting panels
        for rows_wanted in layouts:
            boxes = _split_grid(gray, rows_wanted, expected, min_fraction, edges)
            if expected and len(boxes) == expected:
                return boxes
            if not expected and len(boxes) > len(best) and all(_photographic(gray, box) for box in boxes):
                best = boxes
    return best


def _photographic(gray: np.ndarray, box: PixelBox) -> bool:
    """A panel of a stitched figure is mostly picture, not page-white (a chart's white plot area
    must not be read as a gutter between two panels)."""
    x0, y0, x1, y1 = box
    crop = gray[y0:y1, x0:x1]
    return crop.size > 0 and float((crop >= 225).mean()) < 0.4


def _layouts(expected: int) -> list[int]:
    """Row counts worth trying for `expected` panels: one row, one column, then grids."""
    rows = [1, expected]
    rows += [r for r in range(2, expected) if expected % r == 0 or r == 2]
    return rows


def _split_grid(
    gray: np.ndarray, rows_wanted: int | None, expected: int | None, min_fraction: float, edges: bool = False
) -> list[PixelBox]:
    """Rows first, then columns within each row; with `expected`, the per-row panel counts
    must add up to it (a 3 + 2 layout of five panels, say)."""
    h, w = gray.shape
    row_cuts = _best_cuts(gray, 1, rows_wanted, min_fraction, edges) if rows_wanted != 1 else []
    rows = _segments(h, row_cuts)
    per_row_options: list[dict[int, list[tuple[int, int]]]] = []
    for y0, y1 in rows:
        band = gray[y0:y1]
        if expected:
            options = {1: []}
            for count in range(2, expected + 1):
                cuts = _best_cuts(band, 0, count, min_fraction / 2, edges)
                if cuts:
                    options[count] = cuts
        else:
            cuts = _best_cuts(band, 0, None, min_fraction / 2)
            options = {len(cuts) + 1: cuts}
        per_row_options.append(options)
    chosen = _choose_counts(per_row_options, expected)
    boxes: list[PixelBox] = []
    for (y0, y1), cuts in zip(rows, chosen):
        for x0, x1 in _segments(w, cuts):
            boxes.append(_trim(gray, (x0, y0, x1, y1)))
    return boxes


def _choose_counts(
    per_row_options: list[dict[int, list[tuple[int, int]]]], expected: int | None
) -> list[list[tuple[int, int]]]:
    """Pick one column split per row so the panel total is `expected` (evenest rows first)."""
    if not expected:
        return [next(iter(options.values())) for options in per_row_options]
    for counts in itertools.product(*[sorted(options, reverse=True) for options in per_row_options]):
        if sum(counts) == expected:
            return [options[count] for options, count in zip(per_row_options, counts)]
    return [[] for _ in per_row_options]


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
