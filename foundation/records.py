"""Typed records that flow through the four build steps.

Every step adds to these records instead of re-parsing strings written by an earlier step.
Coordinates are PDF points in PyMuPDF's page space (origin top-left, y grows downwards);
pages are 1-based everywhere.
"""

from __future__ import annotations

import enum
from typing import Literal

from pydantic import BaseModel, Field

BBox = tuple[float, float, float, float]
"""x0, y0, x1, y1 in PDF points, origin at the top-left corner of the page."""

Modality = Literal["CFP", "FFA", "OCT", "other"]
TextSource = Literal["native", "ocr"]


class Status(str, enum.Enum):
    """Outcome of one document through one step (a batch never crashes on one document)."""

    success = "success"
    partial = "partial"
    failed = "failed"


class SourceDocument(BaseModel):
    """One input atlas PDF, identified by content."""

    path: str = Field(description="Path of the PDF as given by the user.")
    sha256: str = Field(description="SHA-256 of the PDF bytes.")
    book: str = Field(description="Stable book id (slug of the file name); part of every pair id.")
    page_count: int = Field(0, description="Number of pages in the PDF.")


class CaptionStart(BaseModel):
    """Where a text starts with a figure number (found once, when the block is made)."""

    figure_id: str = Field(description="Normalised figure number, e.g. '3-12' or '5-3-1'.")
    style: Literal["zh", "en_fig", "en_figure"] = Field(
        description="'zh' for 图3-12, 'en_fig' for Fig. 3-12 (bilingual books), 'en_figure' for FIGURE 3-12."
    )
    end: int = Field(description="Offset just past the figure number in the width-normalised text.")


class TextBlock(BaseModel):
    """A block of text on a page, native or recognised by OCR."""

    page: int = Field(description="1-based page number.")
    bbox: BBox = Field(description="Block bounding box in PDF points.")
    text: str = Field(description="Text of the block, lines joined with newlines.")
    column: int = Field(description="0-based column index; -1 for blocks that span all columns.")
    order: int = Field(description="Reading-order index of the block on its page.")
    role: Literal["body", "header", "footer", "caption", "figure"] = Field(
        "body",
        description="Running headers/page numbers are 'header'/'footer'; figure captions 'caption'; text inside a drawn figure 'figure'.",
    )
    source: TextSource = Field("native", description="'native' text layer or 'ocr'.")
    confidence: float | None = Field(None, description="Mean OCR confidence (None for native text).")
    font_size: float | None = Field(None, description="Dominant font size in points, when known.")
    caption_start: CaptionStart | None = Field(
        None, description="Figure number the block starts with, when it does (a possible caption start)."
    )


class CaptionSegment(BaseModel):
    """A piece of caption text and the panels it describes (None: all panels)."""

    letters: tuple[str, ...] | None = Field(None, description="Panel letters this text describes; None when shared.")
    text: str = Field(description="The text, cleaned of its panel marker.")


class ParsedCaption(BaseModel):
    """A caption split into figure id, title and per-panel texts (parsed once, in step 1)."""

    figure_id: str
    language: Literal["en", "zh"]
    style: str
    title: str
    segments: list[CaptionSegment] = Field(default_factory=list)

    @property
    def letters(self) -> list[str]:
        from foundation.labels import sort_labels

        return sort_labels({letter for seg in self.segments if seg.letters for letter in seg.letters})

    def panel_texts(self, letter: str | None) -> list[str]:
        """This panel's text pieces: shared segments and the segments naming it, in printed order."""
        return [
            seg.text
            for seg in self.segments
            if seg.text and (seg.letters is None or letter is None or letter in seg.letters)
        ]


class CaptionCandidate(BaseModel):
    """Text that starts with a figure number: a caption to pair with a figure in step 2."""

    page: int = Field(description="1-based page number.")
    bbox: BBox = Field(description="Bounding box of the whole caption (all its blocks).")
    figure_id: str = Field(description="Normalised figure number, e.g. '3-12' or '5-3-1'.")
    style: Literal["zh", "en_fig", "en_figure"] = Field(
        description="'zh' for 图3-12, 'en_fig' for Fig. 3-12 (bilingual books), 'en_figure' for FIGURE 3-12."
    )
    text: str = Field(description="Caption text from the figure number to the end of the caption.")
    column: int = Field(description="Column of the caption (-1 spanning).")
    block_orders: list[int] = Field(default_factory=list, description="Reading-order indices of its blocks.")
    source: TextSource = Field("native", description="'native' or 'ocr'.")
    parsed: ParsedCaption | None = Field(None, description="The caption parsed into title and panel texts.")


class FigureRegion(BaseModel):
    """A region of a page that holds a figure (one image, merged tiles, or a raster crop)."""

    region_id: str = Field(description="Id unique within the document: p<page>-r<n>.")
    page: int = Field(description="1-based page number.")
    bbox: BBox = Field(description="Placement box on the page in PDF points.")
    image_sha256: str = Field(description="SHA-256 of the stored PNG bytes.")
    image_file: str = Field(description="Path of the PNG relative to the extraction directory.")
    pixel_size: tuple[int, int] = Field(description="Width, height of the stored image in pixels.")
    origin: Literal["embedded", "merged", "raster"] = Field(
        description="'embedded' image, 'merged' tiles/strips of one figure, or 'raster' crop of a scanned page."
    )
    parts: int = Field(1, description="Number of embedded images merged into this region.")


class PageRecord(BaseModel):
    """Everything step 1 found on one page."""

    page: int
    width: float
    height: float
    scanned: bool = Field(description="True when the page had no usable text layer and was OCR'd.")
    skew_degrees: float = Field(0.0, description="Deskew angle applied before OCR (scanned pages).")
    column_bounds: list[tuple[float, float]] = Field(
        default_factory=list, description="x-ranges of the text columns, left to right."
    )
    blocks: list[TextBlock] = Field(default_factory=list)
    regions: list[FigureRegion] = Field(default_factory=list)
    captions: list[CaptionCandidate] = Field(default_factory=list)


CaptionOrigin = Literal["printed", "machine", "missing"]
ReviewStatus = Literal["auto_accepted", "queued", "accepted", "rejected", "edited"]


class CaptionChoice(BaseModel):
    """One caption text that a panel could be paired with (the chosen one or an alternative)."""

    figure_id: str
    panel: str | None = None
    caption_en: str | None = None
    caption_zh: str | None = None


class Pair(BaseModel):
    """One panel image with its caption: the unit of the dataset, the review queue and the manifest."""

    pair_id: str = Field(description="Stable id '<book>/<figure_id>/<panel or ->'; includes the book so books never collide.")
    book: str = Field(description="Book id of the source PDF.")
    source_pdf: str = Field(description="File name of the source PDF.")
    source_pdf_sha256: str = Field(description="SHA-256 of the source PDF.")
    page: int = Field(description="1-based page of the panel.")
    bbox: BBox = Field(description="Panel box on the page in PDF points.")
    figure_id: str = Field(description="Normalised figure number, e.g. '3-12'.")
    panel: str | None = Field(
        None, description="Panel label as the caption prints it (A, B, …, K, A1); None for a single panel or an unlabelled one."
    )
    panel_index: int | None = Field(
        None, description="0-based reading-order position of the panel in its figure (an unlabelled panel's identity)."
    )
    image_sha256: str = Field(description="SHA-256 of the panel PNG bytes.")
    image_file: str = Field(description="Path of the panel PNG (extraction dir or image store).")
    scanned: bool = Field(False, description="Panel comes from a scanned (OCR'd) page.")
    stitched: bool = Field(False, description="Panel was split out of one stitched multi-panel image.")
    caption_en: str | None = Field(None, description="English text: figure title + this panel's text.")
    caption_zh: str | None = Field(None, description="Chinese text: figure title + this panel's text.")
    figure_caption: str | None = Field(
        None, description="The figure's whole printed caption (title and every panel's text), as the reviewer reads it."
    )
    caption_en_origin: CaptionOrigin = Field("missing", description="'printed' in the atlas, 'machine' translated, or 'missing'.")
    caption_zh_origin: CaptionOrigin = Field("missing", description="'printed' in the atlas, 'machine' translated, or 'missing'.")
    translation_engine: str | None = Field(None, description="Engine and package version that produced machine text.")
    modality: Modality = Field("other", description="CFP, FFA, OCT or other (other is excluded from the dataset).")
    modality_sublabel: str | None = Field(None, description="Finer label where the caption says so (ICGA, red-free).")
    modality_confidence: float = Field(0.0, ge=0.0, le=1.0)
    alignment_score: float = Field(0.0, ge=0.0, le=1.0, description="Confidence that caption and panel belong together.")
    reasons: list[str] = Field(default_factory=list, description="Why each decision was taken or doubted.")
    alternatives: list[CaptionChoice] = Field(default_factory=list, description="Other candidate captions on the page.")
    review_status: ReviewStatus = Field("queued")
    reviewer: str | None = Field(None, description="Who decided, when a person did.")
    possible_miss: str | None = Field(
        None,
        description="Reject kind when this is a possible miss proposed to the reviewer (published only once accepted).",
    )


# ---------------------------------------------------------------------------- one record per PDF

StepName = Literal["open", "extract", "align", "modality"]
RejectKind = Literal[
    "caption_without_figure",
    "figure_without_caption",
    "dropped_image",
    "retinal_looking_other",
    "non_retinal_figure",
    "bad_image",
    "bad_page",
]
REVIEWABLE_REJECTS: tuple[str, ...] = (
    "caption_without_figure",
    "figure_without_caption",
    "dropped_image",
    "retinal_looking_other",
)
"""Reject kinds that reach the review queue as possible misses."""


class Reject(BaseModel):
    """Something a step dropped or could not pair: kept as data so a reviewer can see it."""

    kind: RejectKind = Field(description="What was rejected.")
    step: StepName = Field(description="The step that rejected it.")
    page: int | None = Field(None, description="1-based page, when the reject has one.")
    bbox: BBox | None = Field(None, description="Region on the page in PDF points.")
    reason: str = Field(description="Why, in one line.")
    figure_id: str | None = Field(None, description="Figure number involved (a caption's, or a paired panel's).")
    caption: str | None = Field(None, description="The printed caption involved, when there is one.")
    pair_id: str | None = Field(None, description="The pair it concerns (retinal-looking panels classed 'other').")
    proposal: "Pair | None" = Field(
        None, description="A pair the reviewer may accept (image + suggested captions); None when there is none."
    )


class DocumentRun(BaseModel):
    """One PDF through the steps: what went in, what each step produced, rejected and took.

    The steps fill it in memory; one writer persists it (curation.build), and the same record is
    the PDF's outcome in the CLI summary, the flows and the Prefect artifacts.
    """

    pdf: str = Field(description="Path of the PDF as given.")
    book: str = Field(description="Book id from the file name; part of every pair id.")
    source: SourceDocument | None = Field(None, description="The validated, hashed source (None when it could not be opened).")
    status: Status = Field(Status.success, description="success, partial (some pages or panels failed) or failed.")
    errors: list[str] = Field(default_factory=list, description="Problems met, one line each, naming the page.")
    pages: list[PageRecord] = Field(default_factory=list, description="Step 1: everything found on each page.")
    ocr_engine: str | None = Field(None, description="OCR engine used, if any page needed it.")
    pairs: list[Pair] = Field(default_factory=list, description="Steps 2-3: one pair per captioned panel.")
    rejects: list[Reject] = Field(default_factory=list, description="What the steps dropped or could not pair.")
    seconds: dict[str, float] = Field(default_factory=dict, description="Wall time per step.")
    cache_key: str | None = Field(None, description="Key of the cached steps: PDF hash + step config + steps' code version.")
    cached: bool = Field(False, description="Served from the cache without running the steps.")
    directory: str | None = Field(None, description="Where the record and its images are stored.")

    @property
    def failed(self) -> bool:
        return self.status == Status.failed

    @property
    def error(self) -> str | None:
        """The first error, for one-line summaries."""
        return self.errors[0] if self.errors else None

    @property
    def page_count(self) -> int:
        return len(self.pages)

    @property
    def scanned_pages(self) -> int:
        return sum(page.scanned for page in self.pages)

    @property
    def figures(self) -> int:
        return len({pair.figure_id for pair in self.pairs})

    def fail(self, reason: str) -> "DocumentRun":
        self.status = Status.failed
        self.errors.append(reason)
        return self

    def note_error(self, reason: str) -> None:
        """A page or panel failed: the rest of the book goes on, the book becomes partial."""
        self.errors.append(reason)
        if self.status == Status.success:
            self.status = Status.partial


Reject.model_rebuild()
