"""Which text lines of a scanned page to recognise.

The build needs a scanned page's captions (next to its figures), its figure labels and enough of
the rest to find columns and reading order; recognising every line of body text is most of the
OCR time and buys nothing. So the page's lines are detected once, and then:

1. lines just above or below a figure region (where an unnumbered caption is), and lines no
   longer than a label, are read whole;
2. every other line outside the figures is read only at its start (a crop a few line heights
   wide, batched: a fraction of a full line's cost); a start that reads as a figure label
   (`Fig.`, `图`, …) has its line read whole;
3. a line read whole that starts a caption has the lines that continue its block read whole;
4. fallback: a page with figure regions on which no caption start was found has all its lines
   read whole, so a caption the rules above miss is still found.

Lines read only at their start keep that start as their text: enough for layout (script, text
between figures), never a caption.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

import numpy as np

from pipeline.captions import CJK_LABEL, normalise_width, read_label_words
from pipeline.clean import FIGURE_DIGIT
from pipeline.layout import caption_block_start
from pipeline.ocr import Box, OcrEngine, OcrLine

LABEL_HEIGHTS = 6.5  # a label with its number (`Fig. 3-12`, `图7-1`) fits: a line this short is read whole
PREFIX_HEIGHTS = 4.5  # a label word (`Abbildung`, `Fig. 3`, `图7-12`) fits: a line start this wide is read
NEAR_HEIGHTS = 2.5  # a caption starts within this many line heights of its figure
CONTINUATION_LINES = 2  # lines below a near line that are read whole when it is not a caption start


@dataclass
class PageLines:
    """The lines of one page (boxes in image pixels) and how much of them was recognised."""

    lines: list[OcrLine]
    detected: int = 0
    read_whole: int = 0
    read_start: int = 0
    fallback: bool = False
    widths: dict[str, float] = field(default_factory=lambda: {"all": 0.0, "read": 0.0})


@functools.lru_cache(maxsize=1)
def _label_word() -> re.Pattern[str]:
    """A line start that may be a figure label: a label word of figure_labels.tsv."""
    words = {word for labels in read_label_words().values() for word in labels}

    def pattern(word: str) -> str:
        body = r"\s*".join(re.escape(part) for part in word.split())
        # a CJK label word also starts prose (图像…): only with a number after it
        return body + rf"\s*{FIGURE_DIGIT}" if CJK_LABEL.search(word) else body + r"(?![A-Za-z])"

    alternation = "|".join(pattern(word) for word in sorted(words, key=len, reverse=True))
    return re.compile(rf"^\s*(?:{alternation})", re.IGNORECASE)


def looks_like_label(text: str) -> bool:
    return bool(_label_word().match(normalise_width(text)))


def _height(box: Box) -> float:
    return max(1.0, box[3] - box[1])


def _near(line: Box, figure: Box, height: float) -> bool:
    """Just below or above a figure, overlapping it across: where its caption, numbered or not,
    starts. Lines beside a figure (a side caption, or the other column's text) are read at their
    start first: a side caption starts with its label."""
    across = min(line[2], figure[2]) - max(line[0], figure[0]) > 0
    vertical_gap = max(line[1] - figure[3], figure[1] - line[3])
    return across and vertical_gap <= NEAR_HEIGHTS * height


def _inside(line: Box, figure: Box) -> bool:
    cx, cy = (line[0] + line[2]) / 2, (line[1] + line[3]) / 2
    return figure[0] <= cx <= figure[2] and figure[1] <= cy <= figure[3]


def _continuation(boxes: list[Box], order: list[int], start: int) -> list[int]:
    """Indices of the lines below `start` in its block: close under it, overlapping it, of its
    height (the spacing test of pipeline.extract's OCR blocks, without the text)."""
    following = []
    last = boxes[start]
    spacing = None
    for index in order[order.index(start) + 1 :]:
        box = boxes[index]
        height, last_height = _height(box), _height(last)
        gap = box[1] - last[3]
        if gap > 0.9 * max(height, last_height):
            if box[1] > last[3] + 3 * last_height:
                break  # lines are sorted top-down: nothing further can continue the block
            continue
        if (
            gap >= -0.5 * height
            and min(box[2], last[2]) - max(box[0], last[0]) > 0
            and abs(box[0] - last[0]) < 4 * height
            and max(height, last_height) <= 1.3 * min(height, last_height)
            and (spacing is None or gap <= spacing + 0.3 * height)
        ):
            following.append(index)
            spacing = gap
            last = box
    return following


def read_selected_lines(
    engine: OcrEngine,
    image: np.ndarray,
    boxes: list[Box],
    figures: list[Box],
    min_confidence: float,
    prefix_heights: float = PREFIX_HEIGHTS,
) -> PageLines:
    """Recognise the lines of a page that can be captions or labels (see the module docstring);
    line starts are `prefix_heights` line heights wide."""
    outside = [i for i, box in enumerate(boxes) if not any(_inside(box, f) for f in figures)]
    order = sorted(outside, key=lambda i: (boxes[i][1], boxes[i][0]))
    texts: dict[int, tuple[str, float]] = {}
    whole: set[int] = set()
    starts: set[int] = set()

    def read_whole(indices) -> None:
        todo = [i for i in dict.fromkeys(indices) if i not in whole]
        for index, result in zip(todo, engine.read_boxes(image, [boxes[i] for i in todo])):
            texts[index] = result
            whole.add(index)

    def is_caption_start(index: int) -> bool:
        text, score = texts[index]
        return score >= min_confidence and caption_block_start(text.strip()) is not None

    def prefix(box: Box) -> Box:
        return (box[0], box[1], min(box[2], box[0] + prefix_heights * _height(box)), box[3])

    near = [i for i in order if any(_near(boxes[i], f, _height(boxes[i])) for f in figures)]
    short = [i for i in order if boxes[i][2] - boxes[i][0] <= max(LABEL_HEIGHTS, prefix_heights) * _height(boxes[i])]
    read_whole(near + short)
    rest = [i for i in order if i not in whole]
    for index, result in zip(rest, engine.read_boxes(image, [prefix(boxes[i]) for i in rest])):
        texts[index] = result
        starts.add(index)
    read_whole(i for i in rest if looks_like_label(texts[i][0]))
    continued = []
    for index in sorted(whole):
        if is_caption_start(index):
            continued += _continuation(boxes, order, index)
        elif index in near:
            continued += _continuation(boxes, order, index)[:CONTINUATION_LINES]
    read_whole(continued)
    fallback = bool(figures) and not any(is_caption_start(i) for i in whole)
    if fallback:
        read_whole(order)
    starts -= whole

    lines = []
    for index in order:
        text, score = texts[index]
        if score < min_confidence or not text.strip():
            text = ""
        lines.append(OcrLine(text=text, box=boxes[index], confidence=float(score)))
    width = {i: boxes[i][2] - boxes[i][0] for i in order}
    read = sum(width[i] for i in whole) + sum(prefix(boxes[i])[2] - boxes[i][0] for i in starts)
    return PageLines(
        lines=lines, detected=len(order), read_whole=len(whole), read_start=len(starts), fallback=fallback,
        widths={"all": float(sum(width.values())), "read": float(read)},
    )
