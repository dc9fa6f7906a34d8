"""Deterministic sample atlases: small PDFs plus the truth every build step is measured against.

The books imitate the four kinds of atlas MM-Retinal was built from: a Chinese book with
bilingual captions, a Chinese-only book with three-level figure numbers, an English book with
``FIGURE 3-12.`` captions, and a scanned (image-only) bilingual book. Their content lives in
``testbed/data/sample_atlas.yaml``; pixels come from :mod:`testbed.synthetic_images`.
A seed fixes every pixel, every size and every position, so two runs write the same bytes.

``truth.jsonl`` holds one :class:`PanelTruth` per figure panel (non-retinal panels included,
with ``pair`` false; logos are not figures and are left out).

Canonical caption text (what the caption parser and cleaner must produce for each panel)
---------------------------------------------------------------------------------------
A printed caption is: figure number, title, then segments. A segment is either labelled with
one panel (``A.``, ``A．``, ``A、``, ``(a)``, ``左图：``/``右图：``), labelled with a range of panels
(``A–C.``), or unlabelled (a sentence shared by all panels, wherever it is printed).

* Title: the text after the figure number up to the first sentence end (``. `` in English,
  ``。`` in Chinese) or the first panel label, whichever comes first.
* Panel letters are upper-case Latin letters in reading order: ``(a)`` is ``A``; ``左图``/``上图``
  is ``A`` and ``右图``/``下图`` is ``B``. A single-panel figure has panel ``None``.
* The pieces of a panel's text are the title followed by every segment that applies to the
  panel (its own, any range that covers it, every unlabelled one), in printed order, each
  without its label and without its trailing punctuation (``.;,:`` and ``。；，：``).
  A single-panel figure takes the title and all segments.
* English: whitespace runs (line breaks included) become one space; pieces are joined with
  ``". "`` and the text ends with ``"."``; punctuation is half-width ASCII.
  Example: ``"Central retinal vein occlusion. A 62-year-old man with ... 2 weeks. OCT shows ..."``.
* Chinese: line breaks are removed (no space inserted); pieces are joined with ``"。"`` and the
  text ends with ``"。"``; Chinese punctuation is full-width (``。，：；（）``); Latin words and
  numbers inside Chinese (``FFA``, ``OCT``, ``0.3``) stay half-width.
  Example: ``"视网膜中央静脉阻塞。患者男，62岁，右眼视力突然下降2周。OCT示黄斑囊样水肿，..."``.
* A language not printed in the book is ``None`` (caption_en of the Chinese-only book,
  caption_zh of the English book).
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import pymupdf
import yaml
from pydantic import BaseModel, Field, field_validator

from foundation.labels import label_for_index, label_range
from testbed import synthetic_images
from foundation.files import write_atomic
from foundation.records import BBox, Modality

logger = logging.getLogger(__name__)

CONTENT_FILE = Path(__file__).parent / "data" / "sample_atlas.yaml"
PAGE_WIDTH = 595.0
PAGE_HEIGHT = 842.0
MARGIN_X = 60.0
CONTENT_TOP = 64.0
CONTENT_BOTTOM = 790.0
COLUMN_GAP = 18.0
PIXELS_PER_POINT = 1.4
"""Resolution of embedded panel images (about 100 dpi keeps files small and generation fast)."""

_FIXED_METADATA = {
    "title": "",
    "author": "mm-retinal sample atlas",
    "subject": "",
    "keywords": "",
    "creator": "mm-retinal",
    "producer": "mm-retinal",
    "creationDate": "D:20240101000000Z",
    "modDate": "D:20240101000000Z",
}

_KIND_MODALITY: dict[str, tuple[Modality, str | None]] = {
    "cfp": ("CFP", None),
    "red_free": ("CFP", "red-free"),
    "ffa": ("FFA", None),
    "icga": ("FFA", "ICGA"),
    "oct": ("OCT", None),
    "diagram": ("other", None),
    "chart": ("other", None),
    "slit_lamp": ("other", None),
}
_KIND_ASPECT = {
    "cfp": (1.05, 1.3),
    "red_free": (1.05, 1.3),
    "ffa": (1.0, 1.25),
    "icga": (1.0, 1.25),
    "oct": (1.8, 2.4),
    "diagram": (1.25, 1.5),
    "chart": (1.3, 1.5),
    "slit_lamp": (1.3, 1.5),
}
_JPEG_KINDS = {"cfp", "red_free", "ffa", "icga", "oct", "slit_lamp"}


# ---------------------------------------------------------------- content (data file) models


class SegmentSpec(BaseModel):
    """One caption segment: text for one panel, a range of panels, or all panels."""

    panels: str | None = Field(None, description="'A', a range 'A-C', or None when shared by all panels.")
    zh: str | None = Field(None, description="Chinese text, canonical form without the final full stop.")
    en: str | None = Field(None, description="English text, canonical form without the final full stop.")

    def letters(self) -> list[str] | None:
        """Panel letters this segment applies to; None means every panel."""
        if self.panels is None:
            return None
        first, _, last = self.panels.partition("-")
        return list(label_range(first, last or first))


class FigureSpec(BaseModel):
    """One figure of a book: panels, caption content and layout hints."""

    title_zh: str | None = Field(None, description="Chinese title (None in English-only books).")
    title_en: str | None = Field(None, description="English title (None in Chinese-only books).")
    panels: list[str] = Field(description="Image kind of each panel, keys of synthetic_images.GENERATORS.")
    segments: list[SegmentSpec] = Field(default_factory=list, description="Caption segments in printed order.")
    caption: Literal["below", "beside", "next_page"] = Field("below", description="Where the caption is printed.")
    width: float = Field(0.9, gt=0.1, le=1.0, description="Figure width as a fraction of the column width.")
    stitched: Literal["white", "black"] | None = Field(
        None, description="Embed all panels as one image with gutters of this colour; None embeds each panel."
    )
    rows: list[list[int]] | None = Field(None, description="Panel indices per row; default depends on the count.")
    labels_on_image: bool = Field(False, description="Draw panel letters on separately embedded panels.")
    label_style: Literal["A．", "A、", "(a)", "左右"] = Field("A．", description="Panel label style in Chinese captions.")
    anchor: Literal["flow", "bottom"] = Field("flow", description="'bottom' puts the figure at the foot of the column.")

    @field_validator("panels")
    @classmethod
    def _known_kinds(cls, kinds: list[str]) -> list[str]:
        unknown = [kind for kind in kinds if kind not in _KIND_MODALITY]
        if unknown or not kinds:
            raise ValueError(f"unknown or missing panel kinds {unknown}; known: {sorted(_KIND_MODALITY)}")
        return kinds

    def panel_rows(self) -> list[list[int]]:
        """Rows of panel indices, from the data file or a default grid."""
        if self.rows is not None:
            return self.rows
        count = len(self.panels)
        defaults = {1: [[0]], 2: [[0, 1]], 3: [[0, 1, 2]], 4: [[0, 1], [2, 3]], 5: [[0, 1], [2, 3, 4]]}
        return defaults.get(count, [list(range(start, min(start + 3, count))) for start in range(0, count, 3)])


class BookSpec(BaseModel):
    """One sample book: print style, running headers, figures and page plans."""

    book: str = Field(description="Book id; the PDF is '<book>.pdf'.")
    caption_style: Literal["bilingual", "zh_only", "en_figure"] = Field(description="How captions are printed.")
    body_language: Literal["zh", "en"] = Field(description="Language of headings and body text.")
    scanned: bool = Field(False, description="Rasterise the pages into an image-only PDF.")
    header_even: str = Field(description="Running header on even printed pages (book title).")
    header_odd: str = Field(description="Running header on odd printed pages (chapter).")
    first_page_number: int = Field(1, description="Printed number of the first page.")
    figures: dict[str, FigureSpec] = Field(description="Figures by figure id.")
    pages: list[dict] = Field(description="Page plans: {'items': [...]} or {'columns': [[...], [...]]}.")
    filler: list[str] = Field(description="Body paragraphs used to fill columns.")


@functools.lru_cache(maxsize=4)
def load_sample_content(path: Path = CONTENT_FILE) -> tuple[BookSpec, ...]:
    """Read and validate the sample atlas content file."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return tuple(BookSpec.model_validate(book) for book in raw["books"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: invalid sample atlas content: {exc}") from exc


# ---------------------------------------------------------------- truth and results


class PanelTruth(BaseModel):
    """What a perfect pipeline finds for one figure panel of a sample book."""

    pdf: str = Field(description="PDF file name.")
    book: str = Field(description="Book id.")
    page: int = Field(description="1-based page of the panel.")
    bbox: BBox = Field(description="Panel box in PDF points.")
    figure_bbox: BBox = Field(description="Box of the whole figure in PDF points.")
    figure_id: str = Field(description="Printed figure number, e.g. '3-12' or '5-3-1'.")
    panel: str | None = Field(description="Panel letter, None for single-panel figures.")
    panel_count: int = Field(description="Number of panels in the figure.")
    modality: Modality = Field(description="Modality of the panel image.")
    sublabel: str | None = Field(description="'ICGA' or 'red-free' where the caption says so.")
    caption_en: str | None = Field(description="Canonical English caption (see module docstring), None if not printed.")
    caption_zh: str | None = Field(description="Canonical Chinese caption, None if not printed.")
    caption_page: int = Field(description="1-based page where the caption is printed.")
    caption_position: Literal["below", "beside", "next_page"] = Field(description="Caption placement.")
    caption_bbox: BBox = Field(description="Approximate box of the whole printed caption (all languages).")
    scanned: bool = Field(description="Page is an image-only scan.")
    stitched: bool = Field(description="Panel is part of one embedded image holding all panels.")
    pair: bool = Field(description="Belongs in the dataset (modality is CFP, FFA or OCT).")


class BookSummary(BaseModel):
    """Counts for one written book."""

    book: str
    pdf: Path
    pages: int
    figures: int
    panels: int
    scanned: bool


class SampleAtlas(BaseModel):
    """What generate_sample_atlas wrote."""

    out_dir: Path = Field(description="Directory holding the PDFs and truth.jsonl.")
    pdfs: list[Path] = Field(description="Paths of the written PDFs.")
    truth_path: Path = Field(description="Path of truth.jsonl.")
    books: list[BookSummary] = Field(description="Per-book counts.")


class LongBook(BaseModel):
    """What generate_long_book wrote."""

    path: Path
    pages: int
    figures: int
    panels: int
    truth: list[PanelTruth] = Field(description="Truth of every panel, same form as truth.jsonl.")


def read_truth(path: Path) -> list[PanelTruth]:
    """Load truth.jsonl."""
    rows = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(PanelTruth.model_validate_json(line))
            except ValueError as exc:
                raise ValueError(f"{path}:{line_number}: invalid truth row: {exc}") from exc
    return rows


# ---------------------------------------------------------------- canonical and printed captions

_TRAILING_PUNCTUATION = ".;,:。；，："


def _strip_end(text: str) -> str:
    return text.strip().rstrip(_TRAILING_PUNCTUATION).strip()


def canonical_caption(pieces: list[str], language: Literal["en", "zh"]) -> str:
    """Join a title and segment texts into the canonical caption form (module docstring)."""
    if language == "en":
        cleaned = [" ".join(_strip_end(piece).split()) for piece in pieces]
        return ". ".join(piece for piece in cleaned if piece) + "."
    cleaned = [re.sub(r"\s*\n\s*", "", _strip_end(piece)) for piece in pieces]
    return "。".join(piece for piece in cleaned if piece) + "。"


def _panel_caption(figure: FigureSpec, letter: str | None, language: Literal["en", "zh"]) -> str | None:
    title = figure.title_en if language == "en" else figure.title_zh
    if title is None:
        return None
    pieces = [title]
    for segment in figure.segments:
        text = segment.en if language == "en" else segment.zh
        letters = segment.letters()
        if text and (letter is None or letters is None or letter in letters):
            pieces.append(text)
    return canonical_caption(pieces, language)


def _zh_label(segment: SegmentSpec, style: str) -> str:
    letters = segment.letters()
    if letters is None:
        return ""
    if style == "左右":
        names = {"A": "左图", "B": "右图"}
        if len(letters) != 1 or letters[0] not in names:
            raise ValueError(f"label style 左右 supports panels A and B only, got {segment.panels}")
        return names[letters[0]] + "："
    if style == "(a)":
        return "(" + "～".join(dict.fromkeys([letters[0].lower(), letters[-1].lower()])) + ")"
    text = letters[0] if len(letters) == 1 else f"{letters[0]}～{letters[-1]}"
    return text + ("、" if style == "A、" else "．")


def _en_label(segment: SegmentSpec) -> str:
    letters = segment.letters()
    if letters is None:
        return ""
    return (letters[0] if len(letters) == 1 else f"{letters[0]}–{letters[-1]}") + ". "


def printed_caption_blocks(figure_id: str, figure: FigureSpec, style: str) -> list[tuple[str, str]]:
    """The caption as printed: (language, text) blocks in reading order."""
    blocks: list[tuple[str, str]] = []
    if style in ("bilingual", "zh_only"):
        if figure.title_zh is None:
            raise ValueError(f"figure {figure_id}: a Chinese title is required for caption style {style}")
        separator_style = "；" if style == "zh_only" else "。"
        text = f"图{figure_id} {figure.title_zh}"
        for index, segment in enumerate(figure.segments):
            label = _zh_label(segment, figure.label_style if style == "zh_only" else "A．")
            if index == 0:
                text += " " if label else "。"
            following = figure.segments[index + 1] if index + 1 < len(figure.segments) else None
            labelled_next = following is not None and following.letters() is not None
            end = separator_style if (label and labelled_next) else "。"
            text += label + (segment.zh or "") + end
        blocks.append(("zh", text))
    if style in ("bilingual", "en_figure"):
        if figure.title_en is None:
            raise ValueError(f"figure {figure_id}: an English title is required for caption style {style}")
        if style == "bilingual":
            text = f"Fig. {figure_id} {figure.title_en}"
            for index, segment in enumerate(figure.segments):
                label = _en_label(segment)
                text += (" " if label else ". ") if index == 0 else " "
                text += label + (segment.en or "") + "."
            if not figure.segments:
                text += "."
        else:
            text = f"FIGURE {figure_id}. {figure.title_en}."
            for segment in figure.segments:
                text += " " + _en_label(segment) + (segment.en or "") + "."
        blocks.append(("en", text))
    return blocks


# ---------------------------------------------------------------- text layout


@functools.lru_cache(maxsize=8)
def _font(fontname: str) -> pymupdf.Font:
    """Fonts shipped with PyMuPDF; 'zh' is its CJK face (Droid Sans Fallback). Subset on save."""
    return pymupdf.Font("china-s" if fontname == "zh" else fontname)


@functools.lru_cache(maxsize=20000)
def _char_width(character: str, fontname: str) -> float:
    return _font(fontname).text_length(character, fontsize=1.0)


def _text_width(text: str, fontname: str, fontsize: float) -> float:
    """Advance width of a line: sums cached glyph advances (these fonts have no kerning here)."""
    return fontsize * sum(_char_width(character, fontname) for character in text)


def _insert_lines(writer: pymupdf.TextWriter, x: float, top: float, lines: list[str], style: _TextStyle) -> None:
    """Queue lines on the page's text writer (written once per page, which is much faster)."""
    font = _font(style.fontname)
    baseline = top + style.fontsize * 0.95
    for line in lines:
        writer.append((x, baseline), line, font=font, fontsize=style.fontsize)
        baseline += style.fontsize * style.leading


_ZH_TOKEN = re.compile(r"图\d+(?:-\d+)*|[A-Za-z0-9][A-Za-z0-9.\-/%]*|\s+|.")
_NO_LINE_START = set("，。；：、）》”％%")


@functools.lru_cache(maxsize=4096)
def _wrap(text: str, width: float, fontname: str, fontsize: float) -> tuple[str, ...]:
    """Greedy line breaking; figure citations ('图3-12', 'Fig. 3-12') are never split."""
    if fontname == "zh":
        tokens = _ZH_TOKEN.findall(text)
        joiner = ""
    else:
        tokens = []
        for word in text.split():
            if tokens and tokens[-1] in ("Fig.", "Figure", "FIGURE", "图"):
                tokens[-1] += " " + word
            else:
                tokens.append(word)
        joiner = " "
    lines: list[str] = []
    current, current_width = "", 0.0
    joiner_width = _text_width(joiner, fontname, fontsize)
    for token in tokens:
        token_width = _text_width(token, fontname, fontsize)
        added = token_width + (joiner_width if current else 0.0)
        if current_width + added <= width or not current or (fontname == "zh" and token[0] in _NO_LINE_START):
            current += (joiner if current else "") + token
            current_width += added
        else:
            lines.append(current.rstrip())
            current = token.lstrip()
            current_width = _text_width(current, fontname, fontsize)
    if current.strip():
        lines.append(current.rstrip())
    return tuple(lines)


class _TextStyle(BaseModel):
    fontname: str
    fontsize: float
    leading: float = Field(description="Baseline-to-baseline distance as a multiple of the font size.")


_STYLES = {
    ("body", "zh"): _TextStyle(fontname="zh", fontsize=9.5, leading=1.5),
    ("body", "en"): _TextStyle(fontname="tiro", fontsize=9.5, leading=1.3),
    ("caption", "zh"): _TextStyle(fontname="zh", fontsize=8.5, leading=1.45),
    ("caption", "en"): _TextStyle(fontname="helv", fontsize=8.0, leading=1.3),
    ("heading", "zh"): _TextStyle(fontname="zh", fontsize=15.0, leading=1.8),
    ("heading", "en"): _TextStyle(fontname="tibo", fontsize=15.0, leading=1.8),
    ("header", "zh"): _TextStyle(fontname="zh", fontsize=8.0, leading=1.2),
    ("header", "en"): _TextStyle(fontname="helv", fontsize=8.0, leading=1.2),
    ("folio", "en"): _TextStyle(fontname="helv", fontsize=9.0, leading=1.2),
}


# ---------------------------------------------------------------- images


def _encode(image: np.ndarray, kind: str) -> bytes:
    if kind in _JPEG_KINDS:
        ok, data = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 88])
    else:
        ok, data = cv2.imencode(".png", image[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise RuntimeError(f"could not encode a {kind} image")
    return data.tobytes()


ImageSource = Callable[[str, int, int, str | None], bytes]
"""(kind, width_px, height_px, panel letter drawn on the image or None) -> encoded image bytes."""


def _fresh_images(rng: np.random.Generator) -> ImageSource:
    def make(kind: str, width: int, height: int, letter: str | None) -> bytes:
        image = synthetic_images.GENERATORS[kind](rng, (width, height))
        if letter:
            synthetic_images.draw_panel_label(image, letter)
        return _encode(image, kind)

    return make


def _row_layout(
    aspects: list[float], rows: list[list[int]], width: float, gap: float
) -> tuple[list[list[float]], float]:
    """Boxes (x0, y0, x1, y1) for panels laid out in rows of equal height filling `width`."""
    boxes: list[list[float]] = [[0.0, 0.0, 0.0, 0.0] for _ in aspects]
    y = 0.0
    for row in rows:
        row_height = (width - gap * (len(row) - 1)) / sum(aspects[index] for index in row)
        x = 0.0
        for index in row:
            boxes[index] = [x, y, x + aspects[index] * row_height, y + row_height]
            x += aspects[index] * row_height + gap
        boxes[row[-1]][2] = width
        y += row_height + gap
    return boxes, y - gap


# ---------------------------------------------------------------- page composition


class _Column:
    def __init__(self, x0: float, x1: float, top: float, bottom: float) -> None:
        self.x0, self.x1, self.y, self.bottom = x0, x1, top, bottom

    @property
    def width(self) -> float:
        return self.x1 - self.x0


class _PendingFigure:
    def __init__(self, figure_id: str, figure: FigureSpec, rows: list[PanelTruth]) -> None:
        self.figure_id, self.figure, self.rows = figure_id, figure, rows


class _BookWriter:
    """Lays out one book page by page and collects the truth of its panels."""

    def __init__(self, spec: BookSpec, rng: np.random.Generator, images: ImageSource) -> None:
        self.spec = spec
        self.rng = rng
        self.images = images
        self.doc = pymupdf.open()
        self.truth: list[PanelTruth] = []
        self.pending: dict[str, _PendingFigure] = {}
        self.filler_cursor = 0
        self.figure_count = 0
        self.text = pymupdf.TextWriter(pymupdf.Rect(0, 0, PAGE_WIDTH, PAGE_HEIGHT))

    # -- pages

    def add_page(self, plan: dict) -> None:
        page = self.doc.new_page(width=PAGE_WIDTH, height=PAGE_HEIGHT)
        self.text = pymupdf.TextWriter(page.rect)
        number = self.doc.page_count
        self._running_header(page, number)
        if "columns" in plan:
            column_width = (PAGE_WIDTH - 2 * MARGIN_X - COLUMN_GAP) / 2
            columns = [
                _Column(MARGIN_X, MARGIN_X + column_width, CONTENT_TOP, CONTENT_BOTTOM),
                _Column(PAGE_WIDTH - MARGIN_X - column_width, PAGE_WIDTH - MARGIN_X, CONTENT_TOP, CONTENT_BOTTOM),
            ]
            item_lists = plan["columns"]
        else:
            columns = [_Column(MARGIN_X, PAGE_WIDTH - MARGIN_X, CONTENT_TOP, CONTENT_BOTTOM)]
            item_lists = [plan["items"]]
        for column, items in zip(columns, item_lists, strict=True):
            for item in items:
                self._add_item(page, number, column, item)
        self.text.write_text(page)

    def _running_header(self, page: pymupdf.Page, number: int) -> None:
        printed = self.spec.first_page_number + number - 1
        style = _STYLES[("header", self.spec.body_language)]
        header = self.spec.header_even if printed % 2 == 0 else self.spec.header_odd
        header_width = _text_width(header, style.fontname, style.fontsize)
        x = MARGIN_X if printed % 2 == 0 else PAGE_WIDTH - MARGIN_X - header_width
        _insert_lines(self.text, x, 42 - style.fontsize * 0.95, [header], style)
        page.draw_line((MARGIN_X, 48), (PAGE_WIDTH - MARGIN_X, 48), color=(0.3, 0.3, 0.3), width=0.5)
        label = str(printed)
        label_width = _text_width(label, "helv", 9)
        _insert_lines(self.text, (PAGE_WIDTH - label_width) / 2, 816 - 9 * 0.95, [label], _STYLES[("folio", "en")])

    def _add_item(self, page: pymupdf.Page, number: int, column: _Column, item: dict) -> None:
        if "heading" in item:
            self._text_block(page, column, item["heading"], _STYLES[("heading", self.spec.body_language)], gap=6)
        elif "p" in item:
            self._paragraph(page, column, item["p"])
        elif "figure" in item:
            self._figure(page, number, column, str(item["figure"]))
        elif "pending_caption" in item:
            self._pending_caption(page, number, column, str(item["pending_caption"]))
        elif "fill" in item:
            self._fill(page, column)
        elif "logo" in item:
            self._logo(page, column)
        else:
            raise ValueError(f"book {self.spec.book}: unknown page item {item}")

    # -- text

    def _text_block(
        self, page: pymupdf.Page, column: _Column, text: str, style: _TextStyle, gap: float,
        x0: float | None = None, width: float | None = None, clip: bool = False,
    ) -> tuple[float, float, float, float] | None:
        """Write wrapped text at the column cursor; returns its box (None if nothing fitted)."""
        x0 = column.x0 if x0 is None else x0
        width = column.width if width is None else width
        lines = _wrap(text, width, style.fontname, style.fontsize)
        line_height = style.fontsize * style.leading
        if clip:
            room = int((column.bottom - column.y) // line_height)
            lines = lines[: max(0, room)]
            if len(lines) < 2:
                column.y = column.bottom
                return None
        if not lines:
            return None
        _insert_lines(self.text, x0, column.y, lines, style)
        height = (len(lines) - 1) * line_height + style.fontsize * 1.25
        line_width = max(_text_width(line, style.fontname, style.fontsize) for line in lines)
        box = (x0, column.y, x0 + line_width, column.y + height)
        column.y += height + gap
        return box

    def _paragraph(self, page: pymupdf.Page, column: _Column, text: str, clip: bool = False) -> None:
        language = self.spec.body_language
        body = ("　　" + text) if language == "zh" else text
        self._text_block(page, column, body, _STYLES[("body", language)], gap=5, clip=clip)

    def _fill(self, page: pymupdf.Page, column: _Column) -> None:
        line_height = _STYLES[("body", self.spec.body_language)].fontsize * 2
        while column.bottom - column.y > line_height * 1.5:
            text = self.spec.filler[self.filler_cursor % len(self.spec.filler)]
            self.filler_cursor += 1
            self._paragraph(page, column, text, clip=True)

    def _logo(self, page: pymupdf.Page, column: _Column) -> None:
        width_pt, height_pt = 96.0, 30.0
        rect = pymupdf.Rect(column.x1 - width_pt, column.bottom - height_pt, column.x1, column.bottom)
        page.insert_image(rect, stream=self.images("logo", 160, 50, None), keep_proportion=False)
        column.bottom -= height_pt + 10

    # -- figures

    def _caption(
        self, page: pymupdf.Page, column: _Column, figure_id: str, figure: FigureSpec,
        x0: float | None = None, width: float | None = None,
    ) -> BBox:
        boxes = []
        for language, text in printed_caption_blocks(figure_id, figure, self.spec.caption_style):
            box = self._text_block(page, column, text, _STYLES[("caption", language)], gap=3, x0=x0, width=width)
            if box is not None:
                boxes.append(box)
        column.y += 8
        return (
            round(min(b[0] for b in boxes), 2), round(min(b[1] for b in boxes), 2),
            round(max(b[2] for b in boxes), 2), round(max(b[3] for b in boxes), 2),
        )

    def _caption_height(self, figure_id: str, figure: FigureSpec, width: float) -> float:
        height = 8.0
        for language, text in printed_caption_blocks(figure_id, figure, self.spec.caption_style):
            style = _STYLES[("caption", language)]
            lines = _wrap(text, width, style.fontname, style.fontsize)
            height += (len(lines) - 1) * style.fontsize * style.leading + style.fontsize * 1.25 + 3
        return height

    def _figure(self, page: pymupdf.Page, number: int, column: _Column, figure_id: str) -> None:
        figure = self.spec.figures.get(figure_id)
        if figure is None:
            raise ValueError(f"book {self.spec.book}: page {number} places unknown figure {figure_id}")
        if figure.anchor == "bottom" and figure.caption != "next_page":
            raise ValueError(f"book {self.spec.book}: figure {figure_id}: anchor bottom needs caption next_page")
        self.figure_count += 1
        aspects = [float(self.rng.uniform(*_KIND_ASPECT[kind])) for kind in figure.panels]
        width_fraction = min(1.0, figure.width * float(self.rng.uniform(0.94, 1.0)))
        rows = figure.panel_rows()
        gap = 5.0
        _, unit_height = _row_layout(aspects, rows, 1.0, gap / 200.0)
        beside = figure.caption == "beside"
        figure_width = column.width * width_fraction
        caption_width = column.width - figure_width - 14 if beside else column.width
        caption_height = (
            0.0 if figure.caption == "next_page" else self._caption_height(figure_id, figure, caption_width)
        )
        room = column.bottom - column.y - 10
        needed = figure_width * unit_height + (0.0 if beside else caption_height)
        if needed > room:
            figure_width = max(10.0, (room - (0.0 if beside else caption_height)) / unit_height)
            if figure_width < column.width * 0.3:
                raise ValueError(f"book {self.spec.book}: figure {figure_id} does not fit on page {number}")
        figure_x0 = column.x0 if beside else column.x0 + (column.width - figure_width) / 2
        figure_y0 = column.y + 4
        if figure.anchor == "bottom":
            total = figure_width * unit_height
            figure_y0 = column.bottom - total
        panel_boxes, figure_box = self._place_panels(page, figure, aspects, rows, figure_x0, figure_y0, figure_width)
        panel_count = len(figure.panels)
        rows_truth = []
        for index, kind in enumerate(figure.panels):
            letter = label_for_index(index) if panel_count > 1 else None
            modality, sublabel = _KIND_MODALITY[kind]
            rows_truth.append(
                PanelTruth(
                    pdf=f"{self.spec.book}.pdf", book=self.spec.book, page=number, bbox=panel_boxes[index],
                    figure_bbox=figure_box, figure_id=figure_id, panel=letter, panel_count=panel_count,
                    modality=modality, sublabel=sublabel,
                    caption_en=_panel_caption(figure, letter, "en"), caption_zh=_panel_caption(figure, letter, "zh"),
                    caption_page=number, caption_position=figure.caption, caption_bbox=(0.0, 0.0, 0.0, 0.0),
                    scanned=self.spec.scanned, stitched=figure.stitched is not None, pair=modality != "other",
                )
            )
        if figure.caption == "next_page":
            self.pending[figure_id] = _PendingFigure(figure_id, figure, rows_truth)
            if figure.anchor == "bottom":
                column.bottom = figure_box[1] - 10
            else:
                column.y = figure_box[3] + 10
            return
        if beside:
            caption_column = _Column(figure_box[2] + 14, column.x1, figure_box[1], column.bottom)
            caption_box = self._caption(page, caption_column, figure_id, figure)
            column.y = max(figure_box[3], caption_box[3]) + 12
        else:
            column.y = figure_box[3] + 6
            caption_box = self._caption(page, column, figure_id, figure)
            column.y += 4
        self.truth.extend(row.model_copy(update={"caption_bbox": caption_box}) for row in rows_truth)

    def _pending_caption(self, page: pymupdf.Page, number: int, column: _Column, figure_id: str) -> None:
        pending = self.pending.pop(figure_id, None)
        if pending is None:
            raise ValueError(f"book {self.spec.book}: page {number} continues caption {figure_id}, not held over")
        caption_box = self._caption(page, column, figure_id, pending.figure)
        column.y += 6
        self.truth.extend(
            row.model_copy(update={"caption_bbox": caption_box, "caption_page": number}) for row in pending.rows
        )

    def _place_panels(
        self, page: pymupdf.Page, figure: FigureSpec, aspects: list[float], rows: list[list[int]],
        x0: float, y0: float, width: float,
    ) -> tuple[list[BBox], BBox]:
        count = len(figure.panels)
        if figure.stitched is not None:
            gutter = int(self.rng.integers(3, 9))
            total_px = int(round(width * PIXELS_PER_POINT))
            pixel_boxes, _ = _row_layout(aspects, rows, float(total_px), float(gutter))
            panels = []
            for row in rows:
                row_top, row_bottom = round(pixel_boxes[row[0]][1]), round(pixel_boxes[row[0]][3])
                for index in row:
                    box = pixel_boxes[index]
                    pixel_w = max(8, round(box[2]) - round(box[0]))
                    generator = synthetic_images.GENERATORS[figure.panels[index]]
                    image = generator(self.rng, (pixel_w, max(8, row_bottom - row_top)))
                    if count > 1:
                        synthetic_images.draw_panel_label(image, label_for_index(index))
                    panels.append((index, image))
            ordered = [image for _, image in sorted(panels, key=lambda pair: pair[0])]
            gutter_value = 255 if figure.stitched == "white" else 0
            stitched, boxes_px = synthetic_images.stitch_panels(ordered, rows, gutter, gutter_value)
            scale = width / stitched.shape[1]
            height = stitched.shape[0] * scale
            rect = pymupdf.Rect(x0, y0, x0 + width, y0 + height)
            page.insert_image(rect, stream=_encode(stitched, "cfp"), keep_proportion=False)
            panel_boxes = [
                _rounded((x0 + b[0] * scale, y0 + b[1] * scale, x0 + b[2] * scale, y0 + b[3] * scale)) for b in boxes_px
            ]
            return panel_boxes, _rounded((rect.x0, rect.y0, rect.x1, rect.y1))
        boxes, _ = _row_layout(aspects, rows, width, 5.0)
        panel_boxes = []
        for index, box in enumerate(boxes):
            rect = pymupdf.Rect(x0 + box[0], y0 + box[1], x0 + box[2], y0 + box[3])
            letter = label_for_index(index) if (count > 1 and figure.labels_on_image) else None
            pixel_w = max(8, int(round(rect.width * PIXELS_PER_POINT)))
            pixel_h = max(8, int(round(rect.height * PIXELS_PER_POINT)))
            stream = self.images(figure.panels[index], pixel_w, pixel_h, letter)
            page.insert_image(rect, stream=stream, keep_proportion=False)
            panel_boxes.append(_rounded((rect.x0, rect.y0, rect.x1, rect.y1)))
        figure_box = _rounded(
            (min(b[0] for b in panel_boxes), min(b[1] for b in panel_boxes),
             max(b[2] for b in panel_boxes), max(b[3] for b in panel_boxes))
        )
        return panel_boxes, figure_box

    def finish(self) -> None:
        if self.pending:
            raise ValueError(f"book {self.spec.book}: captions never printed for figures {sorted(self.pending)}")


def _rounded(box: tuple[float, float, float, float]) -> BBox:
    return (round(box[0], 2), round(box[1], 2), round(box[2], 2), round(box[3], 2))


# ---------------------------------------------------------------- scanning


def _scan(
    doc: pymupdf.Document, truth: list[PanelTruth], rng: np.random.Generator
) -> tuple[pymupdf.Document, list[PanelTruth]]:
    """Rasterise every page with noise, skew and JPEG artefacts into an image-only PDF."""
    scanned = pymupdf.open()
    transforms = {}
    for page in doc:
        dpi = int(rng.integers(150, 181))
        angle = float(rng.uniform(0.3, 1.3)) * (1 if rng.random() < 0.5 else -1)
        pixmap = page.get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY)
        ink = np.frombuffer(pixmap.samples, dtype=np.uint8).reshape(pixmap.height, pixmap.width)
        paper = cv2.resize(
            (230.0 + 14.0 * rng.random((6, 6))).astype(np.float32), (pixmap.width, pixmap.height),
            interpolation=cv2.INTER_LINEAR,
        )
        noise = rng.standard_normal(ink.shape, dtype=np.float32) * 7.0
        grey = np.clip(ink * (paper / 255.0) + noise, 0, 255).astype(np.uint8)
        matrix = cv2.getRotationMatrix2D((pixmap.width / 2, pixmap.height / 2), angle, 1.0)
        rotated = cv2.warpAffine(grey, matrix, (pixmap.width, pixmap.height), flags=cv2.INTER_LINEAR, borderValue=236)
        rotated = cv2.GaussianBlur(rotated, (3, 3), 0.6)
        ok, jpeg = cv2.imencode(".jpg", rotated, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(55, 76))])
        if not ok:
            raise RuntimeError("could not encode a scanned page")
        new_page = scanned.new_page(width=page.rect.width, height=page.rect.height)
        new_page.insert_image(new_page.rect, stream=jpeg.tobytes(), keep_proportion=False)
        scale_x, scale_y = pixmap.width / page.rect.width, pixmap.height / page.rect.height
        transforms[page.number + 1] = (matrix, scale_x, scale_y, page.rect)

    def move(box: BBox, page_number: int) -> BBox:
        matrix, scale_x, scale_y, rect = transforms[page_number]
        corners = np.array([[box[0], box[1]], [box[2], box[1]], [box[0], box[3]], [box[2], box[3]]], dtype=np.float64)
        pixels = np.column_stack([corners[:, 0] * scale_x, corners[:, 1] * scale_y, np.ones(4)])
        moved = pixels @ matrix.T
        xs, ys = moved[:, 0] / scale_x, moved[:, 1] / scale_y
        return _rounded(
            (max(0.0, xs.min()), max(0.0, ys.min()), min(rect.width, xs.max()), min(rect.height, ys.max()))
        )

    moved_truth = [
        row.model_copy(
            update={
                "bbox": move(row.bbox, row.page),
                "figure_bbox": move(row.figure_bbox, row.page),
                "caption_bbox": move(row.caption_bbox, row.caption_page),
            }
        )
        for row in truth
    ]
    return scanned, moved_truth


# ---------------------------------------------------------------- writing


def _save_pdf(doc: pymupdf.Document, path: Path) -> None:
    """Save with fixed metadata and no random file id, atomically."""
    doc.set_metadata(_FIXED_METADATA)
    doc.subset_fonts()
    data = doc.tobytes(garbage=3, deflate=True, no_new_id=True)
    write_atomic(path, data)


def _write_book(
    spec: BookSpec, rng: np.random.Generator, images: ImageSource
) -> tuple[pymupdf.Document, list[PanelTruth], int]:
    writer = _BookWriter(spec, rng, images)
    for plan in spec.pages:
        writer.add_page(plan)
    writer.finish()
    doc, truth = writer.doc, writer.truth
    if spec.scanned:
        doc, truth = _scan(doc, truth, rng)
    return doc, truth, writer.figure_count


def generate_sample_atlas(out_dir: Path, seed: int = 0, books: Sequence[str] | None = None) -> SampleAtlas:
    """Write the sample atlas PDFs and truth.jsonl into out_dir; the same seed gives the same bytes.

    `books` restricts the output to some book ids (each book's content does not depend on
    which other books are written).
    """
    out_dir = Path(out_dir)
    specs = load_sample_content()
    known = [spec.book for spec in specs]
    unknown = sorted(set(books or ()) - set(known))
    if unknown:
        raise ValueError(f"unknown sample books {unknown}; known: {known}")
    summaries: list[BookSummary] = []
    all_truth: list[PanelTruth] = []
    for book_index, spec in enumerate(specs):
        if books is not None and spec.book not in books:
            continue
        rng = np.random.default_rng([seed, book_index])
        doc, truth, figure_count = _write_book(spec, rng, _fresh_images(rng))
        pdf_path = out_dir / f"{spec.book}.pdf"
        _save_pdf(doc, pdf_path)
        summaries.append(
            BookSummary(
                book=spec.book, pdf=pdf_path, pages=doc.page_count, figures=figure_count,
                panels=len(truth), scanned=spec.scanned,
            )
        )
        all_truth.extend(truth)
        logger.info("wrote %s: %d pages, %d figures, %d panels", pdf_path, doc.page_count, figure_count, len(truth))
    truth_path = out_dir / "truth.jsonl"
    lines = "".join(row.model_dump_json() + "\n" for row in all_truth)
    write_atomic(truth_path, lines.encode("utf-8"))
    return SampleAtlas(out_dir=out_dir, pdfs=[s.pdf for s in summaries], truth_path=truth_path, books=summaries)


def _reused_images(rng: np.random.Generator, variants: int = 2) -> ImageSource:
    """A few encoded images per kind, handed out again and again (PyMuPDF stores each once)."""
    cache: dict[str, list[bytes]] = {}
    counter = itertools.count()

    def make(kind: str, width: int, height: int, letter: str | None) -> bytes:
        if kind not in cache:
            side = 320
            size = (side, side // 2) if kind == "oct" else ((160, 50) if kind == "logo" else side)
            cache[kind] = [_encode(synthetic_images.GENERATORS[kind](rng, size), kind) for _ in range(variants)]
        return cache[kind][next(counter) % variants]

    return make


def generate_long_book(path: Path, pages: int = 300, seed: int = 0) -> LongBook:
    """Write a born-digital bilingual book of `pages` pages, a figure on almost every page.

    Meant for extraction benchmarks: image streams are reused, so the book is quick to build
    and small on disk; figures have separately embedded panels and bilingual captions.
    """
    if pages < 1:
        raise ValueError(f"{path}: a long book needs at least one page, got {pages}")
    template = next(book for book in load_sample_content() if book.book == "atlas-zh-bilingual")
    reusable = [
        figure for figure in template.figures.values()
        if figure.caption == "below" and figure.stitched is None and figure.anchor == "flow" and len(figure.panels) <= 3
    ]
    rng = np.random.default_rng([seed, 1000])
    figures: dict[str, FigureSpec] = {}
    plans: list[dict] = []
    chapter, number = 1, 0
    for index in range(pages):
        if index % 25 == 0 and index:
            chapter, number = chapter + 1, 0
        if index % 10 == 9:
            plans.append({"items": [{"fill": True}]})
            continue
        number += 1
        figure_id = f"{chapter}-{number}"
        figures[figure_id] = reusable[index % len(reusable)].model_copy(update={"width": 0.7})
        citation = f"如图{figure_id}所示，" + template.filler[index % len(template.filler)]
        plans.append({"items": [{"p": citation}, {"figure": figure_id}, {"fill": True}]})
    spec = template.model_copy(
        update={"book": Path(path).stem, "figures": figures, "pages": plans, "scanned": False, "first_page_number": 1}
    )
    doc, truth, figure_count = _write_book(spec, rng, _reused_images(rng))
    _save_pdf(doc, Path(path))
    return LongBook(path=Path(path), pages=doc.page_count, figures=figure_count, panels=len(truth), truth=truth)


def summarise(atlas: SampleAtlas) -> str:
    """A few lines describing what was written (used by the CLI)."""
    lines = [f"{'book':<22} {'pages':>5} {'figures':>7} {'panels':>6}  scanned"]
    for book in atlas.books:
        scanned = "yes" if book.scanned else "no"
        lines.append(f"{book.book:<22} {book.pages:>5} {book.figures:>7} {book.panels:>6}  {scanned}")
    total_pages = sum(book.pages for book in atlas.books)
    total_figures = sum(book.figures for book in atlas.books)
    total_panels = sum(book.panels for book in atlas.books)
    lines.append(f"{'total':<22} {total_pages:>5} {total_figures:>7} {total_panels:>6}")
    lines.append(f"truth: {atlas.truth_path}")
    return "\n".join(lines)


__all__ = [
    "BookSpec",
    "BookSummary",
    "FigureSpec",
    "LongBook",
    "PanelTruth",
    "SampleAtlas",
    "SegmentSpec",
    "canonical_caption",
    "generate_long_book",
    "generate_sample_atlas",
    "load_sample_content",
    "printed_caption_blocks",
    "read_truth",
    "summarise",
]
