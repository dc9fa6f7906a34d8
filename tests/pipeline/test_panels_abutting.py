"""Stitched grids whose panels abut (0 px gutters) or are parted by one JPEG-blurred white line,
scanned figures a little askew, and single photographs that must stay whole."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.panels import split_panels
from testbed.synthetic_images import (
    cfp_image,
    ffa_image,
    icga_image,
    oct_image,
    red_free_image,
    stitch_panels,
)

GRIDS = {"1x2": [[0, 1]], "2x2": [[0, 1], [2, 3]], "2x3": [[0, 1, 2], [3, 4, 5]], "3+2": [[0, 1, 2], [3, 4]]}
MAKERS = {"cfp": cfp_image, "ffa": ffa_image, "icga": icga_image, "oct": oct_image, "red_free": red_free_image}
ASPECT = {"cfp": 1.2, "ffa": 1.1, "icga": 1.1, "oct": 2.0, "red_free": 1.2}


def _jpeg(image: np.ndarray, quality: int = 88) -> np.ndarray:
    """Panels reach the splitter as decoded JPEG, seams blurred over a line or two."""
    ok, data = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1])


def _grid(kinds: list[str], grid: str, gutter: int, width: int = 480, seed: int = 0):
    """Stitch panels of `kinds` into `grid` rows of one width, as an atlas's figure would be."""
    rng = np.random.default_rng(seed)
    rows = GRIDS[grid]
    panels: list[np.ndarray] = [np.zeros((1, 1, 3), np.uint8)] * len(kinds)
    for row in rows:
        height = int(round((width - gutter * (len(row) - 1)) / sum(ASPECT[kinds[i]] for i in row)))
        x = 0
        for position, index in enumerate(row):
            w = width - x if position == len(row) - 1 else int(round(ASPECT[kinds[index]] * height))
            panels[index] = MAKERS[kinds[index]](rng, (w, height))
            x += w + gutter
    image, boxes = stitch_panels(panels, rows=rows, gutter=gutter, gutter_value=255)
    return _jpeg(image), boxes


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


GRID_CASES = [
    ("1x2", ["cfp", "ffa"]),
    ("1x2", ["oct", "oct"]),
    ("2x2", ["red_free", "oct", "icga", "ffa"]),
    ("2x2", ["cfp", "red_free", "oct", "red_free"]),
    ("2x3", ["cfp", "red_free", "cfp", "icga", "cfp", "ffa"]),
    ("2x3", ["oct", "red_free", "cfp", "red_free", "icga", "ffa"]),
    ("3+2", ["oct", "icga", "ffa", "ffa", "oct"]),
    ("3+2", ["icga", "cfp", "red_free", "icga", "red_free"]),
]
HARDER_GRIDS = [  # seams of dark ground against dark ground or similar photographs: a 1 px gutter still parts them
    ("2x2", ["ffa", "red_free", "oct", "cfp"]),
    ("2x3", ["red_free", "icga", "ffa", "ffa", "icga", "icga"]),
    ("3+2", ["oct", "cfp", "cfp", "ffa", "red_free"]),
]


@pytest.mark.parametrize(
    ("grid", "kinds", "gutter"),
    [(grid, kinds, 0) for grid, kinds in GRID_CASES] + [(grid, kinds, 1) for grid, kinds in GRID_CASES + HARDER_GRIDS],
)
def test_abutting_grid_splits_with_the_caption_panel_count(grid, kinds, gutter):
    image, truth = _grid(kinds, grid, gutter)
    found = split_panels(image, expected=len(kinds))
    assert len(found) == len(truth), found
    for truth_box, box in zip(truth, found):  # reading order: rows first, then columns
        assert _iou(truth_box, box) >= 0.8, (truth_box, box)


@pytest.mark.parametrize("gutter", [1, 3])
def test_white_gutters_split_uneven_panels_without_a_panel_count(gutter):
    """An OCT B-scan beside a fundus photograph is uneven, yet a clean white gutter parts them."""
    image, truth = _grid(["oct", "ffa"], "1x2", gutter if gutter > 1 else 2)
    found = split_panels(image)
    assert len(found) == 2
    assert all(_iou(t, b) >= 0.8 for t, b in zip(truth, found))


def test_a_scanned_grid_a_little_askew_splits_at_its_gutters():
    image, truth = _grid(["cfp", "ffa", "red_free", "cfp"], "2x2", gutter=6, seed=3)
    pad = 12
    page = np.full((image.shape[0] + 2 * pad, image.shape[1] + 2 * pad, 3), 255, np.uint8)
    page[pad:-pad, pad:-pad] = image
    matrix = cv2.getRotationMatrix2D((page.shape[1] / 2, page.shape[0] / 2), 0.7, 1.0)
    scan = cv2.warpAffine(page, matrix, (page.shape[1], page.shape[0]), borderValue=(255, 255, 255))
    scan = _jpeg(np.clip(scan * 0.94 + np.random.default_rng(1).normal(0, 6, scan.shape[:2])[:, :, None], 0, 255).astype(np.uint8), 70)
    moved = []
    for x0, y0, x1, y1 in truth:
        corners = np.array([[x0 + pad, y0 + pad, 1], [x1 + pad, y0 + pad, 1], [x0 + pad, y1 + pad, 1], [x1 + pad, y1 + pad, 1]], float) @ matrix.T
        moved.append((corners[:, 0].min(), corners[:, 1].min(), corners[:, 0].max(), corners[:, 1].max()))
    for expected in (4, None):
        found = split_panels(scan, expected=expected)
        assert len(found) == 4, (expected, found)
        assert all(_iou(t, b) >= 0.75 for t, b in zip(moved, found)), (expected, found)


@pytest.mark.parametrize("expected", [None, 2, 4])
@pytest.mark.parametrize("seed", range(4))
def test_a_single_fundus_photograph_is_not_split(seed, expected):
    rng = np.random.default_rng(seed)
    for image in (cfp_image(rng, (264, 220)), ffa_image(rng, (240, 220)), red_free_image(rng, (300, 250))):
        image = _jpeg(image)
        assert split_panels(image, expected=expected) == [(0, 0, image.shape[1], image.shape[0])]


@pytest.mark.parametrize("expected", [None, 2, 3])
@pytest.mark.parametrize("seed", range(4))
def test_an_oct_b_scan_is_not_split_at_its_layers(seed, expected):
    """Retinal layers are long horizontal edges and the ground above them is a dark band: neither
    is a gutter or a seam between panels."""
    image = _jpeg(oct_image(np.random.default_rng(seed), (480, 240)))
    assert split_panels(image, expected=expected) == [(0, 0, 480, 240)]
