"""Splitting stitched multi-panel images at gutters."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.panels import split_panels
from testbed.synthetic_images import cfp_image, ffa_image, oct_image, stitch_panels

MAKERS = [cfp_image, ffa_image, oct_image]


def _layout(widths_per_row: list[list[int]], height: int, seed: int):
    """Panels sized so every row has the same total width (gutters of 5 px included)."""
    rng = np.random.default_rng(seed)
    panels, rows = [], []
    for row_widths in widths_per_row:
        rows.append(list(range(len(panels), len(panels) + len(row_widths))))
        for width in row_widths:
            panels.append(MAKERS[len(panels) % 3](rng, (width, height)))
    return panels, rows


def _iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize(
    ("widths", "gutter_value"),
    [
        ([[160, 160, 240]], 255),
        ([[160, 160]], 0),
        ([[160, 160], [160, 160]], 0),
        ([[160, 160, 160], [245, 240]], 0),
        ([[160, 160], [160, 160]], 255),
    ],
)
def test_split_recovers_the_stitched_panels(widths, gutter_value):
    panels, rows = _layout(widths, 150, seed=len(widths[0]))
    image, boxes = stitch_panels(panels, rows=rows, gutter=5, gutter_value=gutter_value)
    found = split_panels(image, expected=len(panels))
    assert len(found) == len(panels)
    # a black gutter cannot be told from a photograph's own black surround, so a panel may
    # lose some of its dark margin; it must still match its truth box clearly
    for truth_box, box in zip(boxes, found):
        assert _iou(truth_box, box) >= 0.65, (truth_box, box)


def test_a_single_photograph_is_not_split():
    image = cfp_image(np.random.default_rng(3), 200)
    assert split_panels(image) == [(0, 0, 200, 200)]
    assert len(split_panels(image, expected=1)) == 1
