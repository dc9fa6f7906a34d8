"""Page layout: columns, reading order, running headers, and caption blocks.

Works on TextBlock records from either the native text layer or OCR, so born-digital and
scanned pages get the same treatment.
"""

from __future__ import annotations

from collections.abc import Sequence

from foundation.records import BBox, CaptionCandidate, CaptionStart, TextBlock
from pipeline.captions import match_caption_start


def caption_block_start(text: str) -> CaptionStart | None:
    """The figure number a line starts with (matched once per line when blocks are made)."""
    match = match_caption_start(text)
    if match is None:
        return None
    figure_id, style, end = match
    return CaptionStart(figure_id=figure_id, style=style, end=end)


def union_bbox(boxes: Sequence[BBox]) -> BBox:
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def detect_columns(blocks: Sequence[TextBlock], page_width: float) -> list[tuple[float, float]]:
    """One or two text columns, from where the narrow body blocks sit."""
    body = [b for b in blocks if b.role == "body"]
    if not body:
        return [(0.0, page_width)]
    left = min(b.bbox[0] for b in body)
    right = max(b.bbox[2] for b in body)
    mid = (left + right) / 2
    slack = 0.02 * (right - left)
    in_left = sum(1 for b in body if b.bbox[2] <= mid + slack)
    in_right = sum(1 for b in body if b.bbox[0] >= mid - slack)
    if in_left and in_right:
        return [(left, mid), (mid, right)]
    return [(left, right)]


def column_of(bbox: BBox, columns: Sequence[tuple[float, float]]) -> int:
    """Index of the column holding bbox, or -1 when it spans several."""
    if len(columns) == 1:
        return 0
    width = columns[-1][1] - columns[0][0]
    slack = 0.02 * width
    for index, (x0, x1) in enumerate(columns):
        if bbox[0] >= x0 - slack and bbox[2] <= x1 + slack:
            return index
    return -1


def reading_order(blocks: list[TextBlock]) -> list[TextBlock]:
    """Order blocks column by column within the bands separated by spanning blocks."""
    spanning = sorted((b for b in blocks if b.column == -1), key=lambda b: b.bbox[1])

    def key(block: TextBlock) -> tuple[int, int, float, float]:
        if block.column == -1:
            return (2 * spanning.index(block) + 1, 0, block.bbox[1], block.bbox[0])
        band = sum(1 for s in spanning if s.bbox[1] < block.bbox[1])
        return (2 * band, block.column, block.bbox[1], block.bbox[0])

    ordered = sorted(blocks, key=key)
    for index, block in enumerate(ordered):
        block.order = index
    return ordered


def mark_running_text(blocks: Sequence[TextBlock], page_height: float, band: float) -> None:
    """Single-line blocks in the top/bottom margin band are running headers and page numbers."""
    for block in blocks:
        if "\n" in block.text.strip() or block.caption_start is not None:
            continue
        if block.bbox[3] <= band * page_height:
            block.role = "header"
        elif block.bbox[1] >= (1 - band) * page_height:
            block.role = "footer"


def find_captions(ordered: Sequence[TextBlock], continuation_gap: float) -> list[CaptionCandidate]:
    """Blocks that start with a figure number, extended by the caption lines that follow them."""
    captions: list[CaptionCandidate] = []
    index = 0
    while index < len(ordered):
        block = ordered[index]
        start = block.caption_start if block.role != "footer" else None
        if start is None:
            index += 1
            continue
        block.role = "caption"
        members = [block]
        nxt = index + 1
        while nxt < len(ordered) and _continues_caption(members[-1], ordered[nxt], continuation_gap):
            ordered[nxt].role = "caption"
            members.append(ordered[nxt])
            nxt += 1
        carried = _next_column_part(members, ordered)
        if carried is not None:
            carried.role = "caption"
            members.append(carried)
        captions.append(
            CaptionCandidate(
                page=block.page,
                bbox=union_bbox([m.bbox for m in members]),
                figure_id=start.figure_id,
                style=start.style,
                text="\n".join(m.text for m in members),
                column=block.column,
                block_orders=[m.order for m in members],
                source=block.source,
            )
        )
        index = nxt
    return captions


def _next_column_part(members: list[TextBlock], ordered: Sequence[TextBlock]) -> TextBlock | None:
    """A caption under a figure that spans the columns may be set across them: left column, then
    on in the right one from the same height. Only an unfinished caption ("messen-", no full
    stop) is carried on, into a block of the caption's type size that starts beside it."""
    first, last = members[0], members[-1]
    text = last.text.rstrip()
    if first.column < 0 or not text or (text[-1] in ".。!?！？)" and not text.endswith("-")):
        return None
    size = first.font_size or 10.0
    for block in ordered:
        if (
            block.role == "body"
            and block.column == first.column + 1
            and block.caption_start is None
            and abs(block.bbox[1] - first.bbox[1]) <= 1.5 * size
            and block.font_size is not None and first.font_size is not None
            and abs(block.font_size - first.font_size) <= 0.6
        ):
            return block
    return None


def _continues_caption(previous: TextBlock, candidate: TextBlock, max_gap: float) -> bool:
    if candidate.role != "body" or candidate.column != previous.column or candidate.caption_start is not None:
        return False
    gap = candidate.bbox[1] - previous.bbox[3]
    line_height = previous.font_size or 10.0
    if previous.source == "ocr":
        max_gap = min(max_gap, 0.35)  # OCR lines were grouped by their spacing already: a wider gap is a new paragraph
    if not (-1.0 <= gap <= max_gap * line_height):
        return False
    if previous.font_size and candidate.font_size and abs(previous.font_size - candidate.font_size) > 0.6:
        return False
    if mostly_cjk(previous.text) != mostly_cjk(candidate.text):
        return False
    if abs(candidate.bbox[0] - previous.bbox[0]) <= 3 * line_height:
        return True
    # a centred caption's last, shorter line: same centre, inside the previous line's width
    centre, previous_centre = (candidate.bbox[0] + candidate.bbox[2]) / 2, (previous.bbox[0] + previous.bbox[2]) / 2
    return (
        abs(centre - previous_centre) <= line_height
        and candidate.bbox[0] >= previous.bbox[0] - 1
        and candidate.bbox[2] <= previous.bbox[2] + 1
    )


def cjk_share(text: str) -> float:
    """The share of the text's letters that are CJK ideographs (0 without letters)."""
    letters = [ch for ch in text if ch.isalpha()]
    return sum("\u4e00" <= ch <= "\u9fff" for ch in letters) / len(letters) if letters else 0.0


def mostly_cjk(text: str) -> bool:
    """Chinese rather than English: more CJK ideographs than other letters."""
    return cjk_share(text) > 0.5
