"""Step 1: figure regions, text blocks and candidate captions from atlas PDFs.

Born-digital pages use PyMuPDF's text layer and embedded images (with their placement boxes);
pages without a usable text layer are deskewed, OCR'd, and their figures found on the raster.
Step 1 fills a `DocumentRun` in memory: pages, figure regions, caption candidates (parsed once,
here, for step 2), and rejects (images dropped as decoration that were not tiny, pages or images
that could not be decoded: the book is then `partial`, not failed).
"""

from __future__ import annotations

import logging
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
import pymupdf
from pydantic import BaseModel, Field

from foundation.documents import write_document_run
from foundation.files import sha256_file
from foundation.imaging import DEFAULT_MAX_IMAGE_PIXELS, over_limit, too_large_reason
from foundation.records import (
    BBox,
    DocumentRun,
    FigureRegion,
    PageRecord,
    Reject,
    SourceDocument,
    Status,
    TextBlock,
)
from pipeline.caption_parse import parse_caption
from pipeline.images import ImageBank
from pipeline.layout import (
    caption_block_start,
    cjk_share,
    column_of,
    detect_columns,
    find_captions,
    mark_running_text,
    reading_order,
    union_bbox,
)
from pipeline.ocr import OcrEngine, OcrLine, OcrOptions, create_ocr_engine
from pipeline.ocr_select import read_selected_lines

log = logging.getLogger(__name__)


class ExtractOptions(BaseModel):
    """Options of step 1 (also its CLI options and Prefect parameters)."""

    min_figure_side: float = Field(36.0, description="Images with a side shorter than this (points) are decorations.")
    min_figure_area: float = Field(1296.0, description="Images smaller than this area (points²) are decorations.")
    tile_gap: float = Field(1.0, description="Images closer than this (points) with aligned edges are tiles of one figure (panels of a grid sit further apart).")
    scanned_min_chars: int = Field(
        8, description="A page with fewer native text characters than this is treated as scanned and OCR'd."
    )
    raster_max_dpi: int = Field(220, description="Highest resolution at which a scanned page is processed.")
    max_image_dpi: int = Field(300, description="Highest resolution at which merged figures are rendered.")
    header_band: float = Field(0.06, description="Fraction of page height at top/bottom holding running headers.")
    caption_gap: float = Field(1.2, description="Largest gap (in line heights) between blocks of one caption.")
    max_skew_degrees: float = Field(3.0, description="Largest skew searched when deskewing scanned pages.")
    allow_repaired: bool = Field(
        False, description="Accept damaged PDFs that PyMuPDF had to repair (otherwise they are reported as errors)."
    )
    vector_figures: bool = Field(
        True,
        description="Find figures drawn as vector graphics (and figures made of many small images) from clusters of drawings and images.",
    )
    vector_gap: float = Field(6.0, description="Drawings and images closer than this (points) belong to one figure.")
    vector_join_gap: float = Field(
        18.0, description="Parts of a drawn figure this close (points), in one column with no text between, are one figure."
    )
    vector_min_items: int = Field(6, description="A cluster of drawings needs at least this many paths to be a figure.")
    panel_gap: float = Field(14.0, description="Images this close (points) and of one size form a row or column of panels.")
    reject_min_area: float = Field(
        900.0, description="Images dropped as decoration but at least this large (points²) are kept as rejects for review."
    )
    ocr: OcrOptions = Field(default_factory=OcrOptions, description="OCR engine settings for scanned pages.")
    # -- resource limits: hostile inputs cost a logged skip, not the batch's memory
    max_image_pixels: int = Field(
        DEFAULT_MAX_IMAGE_PIXELS, gt=0,
        description="Largest embedded image (width × height) decoded; a larger one is skipped with the reason logged.",
    )
    max_page_raster_pixels: int = Field(
        16_000_000, gt=0,
        description="Largest page or figure rendering (pixels); a larger one is rendered at the resolution that fits.",
    )
    max_pages: int = Field(2000, gt=0, description="PDFs with more pages than this are refused.")
    max_seconds_per_pdf: float = Field(
        1800.0, gt=0,
        description="Wall-clock limit of one PDF, checked between pages and inside a page's loops; a slower PDF is refused.",
    )
    max_images_per_page: int = Field(
        1000, gt=0,
        description="Images on one page considered as figures or their parts; beyond it the smallest are left out (one reject says so).",
    )
    max_paths_per_page: int = Field(
        10000, gt=0,
        description="Vector paths on one page considered for drawn figures; beyond it the smallest are left out (one reject says so).",
    )
    max_dropped_per_page: int = Field(
        50, gt=0,
        description="Images dropped as decoration on one page that are each a reject for review; more are one reject together.",
    )


class ExtractionError(Exception):
    """A PDF that cannot be processed; the message says why in one line."""


class _OverTime(Exception):
    """The PDF's time limit passed in the middle of a page."""


class _PageWork:
    """What the work on one page shares: the PDF's deadline, checked in the page's loops, and one
    display list for all of the page's renderings (`page.get_pixmap` reads the whole page each
    time: a page of thousands of images rendered region by region would cost their square)."""

    def __init__(self, page: pymupdf.Page, deadline: float = float("inf")) -> None:
        self.page = page
        self.deadline = deadline
        self._display_list: pymupdf.DisplayList | None = None
        self._image_info: list[dict] | None = None

    @property
    def image_info(self) -> list[dict]:
        """`page.get_image_info()`, read once (it costs about a millisecond per image placed)."""
        if self._image_info is None:
            self._image_info = self.page.get_image_info()
        return self._image_info

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise _OverTime

    def render(self, clip: BBox, dpi: int) -> np.ndarray:
        """The part `clip` of the page as RGB pixels, as `page.get_pixmap(clip=clip, dpi=dpi)` renders it."""
        if self._display_list is None:
            self._display_list = self.page.get_displaylist()
        zoom = dpi / 72
        pixmap = self._display_list.get_pixmap(
            matrix=pymupdf.Matrix(zoom, zoom), colorspace=pymupdf.csRGB, alpha=False, clip=pymupdf.Rect(clip)
        )
        return _pixmap_array(pixmap)


# ---------------------------------------------------------------------------- sources


def book_id(path: Path) -> str:
    """Stable book id from the file name: lower-case words joined by '-'."""
    slug = re.sub(r"[^\w]+", "-", path.stem.lower()).strip("-_")
    return slug or "book"


def open_source(path: Path, options: ExtractOptions) -> tuple[pymupdf.Document, SourceDocument]:
    """Open, validate and hash a PDF once; raises ExtractionError with the reason."""
    path = Path(path)
    doc = open_pdf(path, options)
    try:
        digest = sha256_file(path)
    except OSError as exc:
        doc.close()
        raise ExtractionError(f"cannot read ({exc.strerror or exc})") from exc
    return doc, SourceDocument(path=str(path), sha256=digest, book=book_id(path), page_count=doc.page_count)


def open_pdf(path: Path, options: ExtractOptions) -> pymupdf.Document:
    """Open a PDF or raise ExtractionError with the reason in plain words."""
    if not path.exists():
        raise ExtractionError("no such file")
    if not path.is_file():
        raise ExtractionError("not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise ExtractionError("empty file (0 bytes)")
    with open(path, "rb") as handle:
        head = handle.read(1024)
        handle.seek(max(0, size - 2048))
        tail = handle.read()
    if b"%PDF-" not in head:
        raise ExtractionError("not a PDF (no %PDF- header)")
    try:
        doc = pymupdf.open(path, filetype="pdf")
    except Exception as exc:  # PyMuPDF raises several types for broken files
        raise ExtractionError(f"corrupt PDF ({exc})") from exc
    if doc.needs_pass:
        doc.close()
        raise ExtractionError("encrypted PDF (a password is required)")
    if doc.page_count == 0:
        doc.close()
        raise ExtractionError("PDF has no pages")
    if doc.page_count > options.max_pages:
        count = doc.page_count
        doc.close()
        raise ExtractionError(f"PDF has {count} pages, more than the limit of {options.max_pages} (max_pages)")
    if not options.allow_repaired and (doc.is_repaired or b"%%EOF" not in tail):
        doc.close()
        raise ExtractionError(
            "truncated or damaged PDF (missing end-of-file trailer; build or extract with --allow-repaired to accept it)"
        )
    return doc


# ---------------------------------------------------------------------------- images


def _pixmap_to_rgb(pixmap: pymupdf.Pixmap) -> pymupdf.Pixmap:
    if pixmap.alpha:
        pixmap = pymupdf.Pixmap(pixmap, 0)
    if pixmap.colorspace is None or pixmap.colorspace.n != 3:
        pixmap = pymupdf.Pixmap(pymupdf.csRGB, pixmap)
    return pixmap


def _pixmap_array(pixmap: pymupdf.Pixmap) -> np.ndarray:
    pixmap = _pixmap_to_rgb(pixmap)
    return np.frombuffer(pixmap.samples, dtype=np.uint8).reshape(pixmap.height, pixmap.width, 3)


def _is_upright(transform: Iterable[float]) -> bool:
    a, b, c, d, _, _ = transform
    return abs(b) < 1e-6 and abs(c) < 1e-6 and a > 0 and d > 0


# -- pixel guards: nothing is decoded or rendered before its pixel count is checked


def _image_infos(work: _PageWork, page_no: int, options: ExtractOptions, run: DocumentRun | None = None) -> list[dict]:
    """`get_image_info(xrefs=True)` unless the page holds an image over max_image_pixels or more
    images than max_images_per_page: matching xrefs makes PyMuPDF decode (hash) every image, so
    such pages list their images without xrefs (they are then rendered at a bounded resolution)
    and the oversized images become skipped regions."""
    page = work.page
    oversized = any(over_limit(img[2], img[3], options.max_image_pixels) for img in page.get_images())
    if not oversized and len(work.image_info) <= options.max_images_per_page:
        return page.get_image_info(xrefs=True)
    infos = []
    for info in work.image_info:
        if over_limit(info["width"], info["height"], options.max_image_pixels):
            reason = too_large_reason(info["width"], info["height"], options.max_image_pixels)
            log.warning("%s page %d: image region skipped: %s", page.parent.name, page_no, reason)
            if run is not None:
                run.note_error(f"page {page_no}: image skipped: {reason}")
                run.rejects.append(
                    Reject(kind="bad_image", step="extract", page=page_no, bbox=tuple(info["bbox"]), reason=reason)
                )
            continue
        infos.append({**info, "xref": 0})
    return infos


def _largest(boxes: Sequence[BBox], limit: int) -> tuple[list[int], list[int]]:
    """The indices, in page order, of the `limit` largest boxes (the earlier of equal ones), and
    of the rest."""
    if len(boxes) <= limit:
        return list(range(len(boxes))), []
    by_size = sorted(range(len(boxes)), key=lambda i: -(boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1]))
    return sorted(by_size[:limit]), sorted(by_size[limit:])


def _reject_left_out(
    page: pymupdf.Page, page_no: int, left: list[BBox], count: int, what: str, option: str, run: DocumentRun
) -> None:
    """One reject (and log line) for the items of a page beyond one of the per-page limits."""
    limit = count - len(left)
    reason = f"{count} {what} on the page, more than the limit of {limit} ({option}): the {len(left)} smallest were left out"
    log.warning("%s page %d: %s", page.parent.name, page_no, reason)
    run.note_error(f"page {page_no}: {reason}")
    bbox = tuple(round(v, 2) for v in union_bbox(left))
    run.rejects.append(Reject(kind="bad_page", step="extract", page=page_no, bbox=bbox, reason=reason))


def _fit_dpi(page: pymupdf.Page, rect: pymupdf.Rect, dpi: float, page_no: int, options: ExtractOptions) -> int:
    """`dpi`, lowered so that rendering `rect` stays within max_page_raster_pixels."""
    width, height = rect.width * dpi / 72, rect.height * dpi / 72
    if not over_limit(width, height, options.max_page_raster_pixels):
        return int(dpi)
    fitted = max(1, int(dpi * (options.max_page_raster_pixels / (width * height)) ** 0.5))
    log.warning(
        "%s page %d: %s; rendered at %d dpi instead of %d", page.parent.name, page_no,
        too_large_reason(int(width), int(height), options.max_page_raster_pixels, "rendering"), fitted, int(dpi),
    )
    return fitted


# ---------------------------------------------------------------------------- born-digital pages


def _native_blocks(page: pymupdf.Page, page_no: int) -> list[TextBlock]:
    """Text blocks of the text layer, split where a line starts a new caption (each line's
    figure number is matched once, here, and kept on its block)."""
    blocks: list[TextBlock] = []
    for raw in page.get_text("dict", flags=pymupdf.TEXTFLAGS_TEXT)["blocks"]:
        if raw.get("type") != 0:
            continue
        groups: list[tuple[list[tuple[dict, str]], object]] = []
        for line in raw["lines"]:
            text = "".join(span["text"] for span in line["spans"]).strip()
            if not text:
                continue
            start = caption_block_start(text)
            if start is not None or not groups:
                groups.append(([], start))
            groups[-1][0].append((line, text))
        for lines, start in groups:
            sizes = [span["size"] for line, _ in lines for span in line["spans"] if span["text"].strip()]
            blocks.append(
                TextBlock(
                    page=page_no,
                    bbox=union_bbox([tuple(line["bbox"]) for line, _ in lines]),
                    text="\n".join(text for _, text in lines),
                    column=0,
                    order=0,
                    font_size=float(np.median(sizes)) if sizes else None,
                    caption_start=start,
                )
            )
    return blocks


def _abut(a: BBox, b: BBox, gap: float) -> bool:
    """Edges meet within `gap`, the other two edges aligned: strips or tiles of one picture."""
    tol = max(gap, 1.0)
    vertical = abs(a[0] - b[0]) <= tol and abs(a[2] - b[2]) <= tol and (abs(a[3] - b[1]) <= gap or abs(b[3] - a[1]) <= gap)
    horizontal = abs(a[1] - b[1]) <= tol and abs(a[3] - b[3]) <= tol and (abs(a[2] - b[0]) <= gap or abs(b[2] - a[0]) <= gap)
    return vertical or horizontal


def _touch(a: BBox, b: BBox, gap: float) -> bool:
    """Edges meet (within `gap`) along some length, aligned or not."""
    across = min(a[2], b[2]) - max(a[0], b[0]) > 0 and min(abs(a[3] - b[1]), abs(b[3] - a[1])) <= gap
    beside = min(a[3], b[3]) - max(a[1], b[1]) > 0 and min(abs(a[2] - b[0]), abs(b[2] - a[0])) <= gap
    return across or beside


def _merge_tiles(boxes: list[BBox], gap: float) -> list[list[int]]:
    """Group images that abut with aligned edges (strips or tiles of one picture)."""
    near = _near(boxes, max(gap, 1.0))
    pairs = [(i, j) for i, box in enumerate(boxes) for j in near[i] if j > i and _abut(box, boxes[j], gap)]
    # a window laid over the seam of two others, touching both: a collage of screenshots, one picture
    for i, box in enumerate(boxes):
        touching = [j for j in near[i] if _touch(box, boxes[j], gap)]
        if len(touching) >= 2:
            pairs += [(i, j) for j in touching]
    groups = _connected(len(boxes), pairs)
    return sorted(groups, key=lambda g: (boxes[g[0]][1], boxes[g[0]][0]))


def _connected(count: int, pairs: Iterable[tuple[int, int]]) -> list[list[int]]:
    """The groups of `range(count)` that `pairs` link, each in order, ordered by their first member."""
    parent = list(range(count))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(count):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def _near(boxes: Sequence[BBox], reach: float) -> list[list[int]]:
    """For each box, the other boxes whose gaps to it in x and in y are at most `reach` (in
    index order; callers test their own rule on them). The boxes are bucketed on a grid of
    cells the size of a typical box, so a page of thousands of small items costs time in
    proportion to them, not to their pairs; a box that spans many cells is compared with all."""
    count = len(boxes)
    if count < 2:
        return [[] for _ in boxes]
    sides = sorted(max(b[2] - b[0], b[3] - b[1]) for b in boxes)
    cell = max(reach, sides[count // 2], 1.0)
    reach += 1e-6

    def cells(box: Sequence[float], most: int) -> list[tuple[int, int]] | None:
        """The cells `box` covers, or None when they are more than `most` (or it is not finite)."""
        try:
            x0, y0, x1, y1 = (int(v // cell) for v in box)
        except (ValueError, OverflowError):
            return None
        if (x1 - x0 + 1) * (y1 - y0 + 1) > most:
            return None
        return [(cx, cy) for cx in range(x0, x1 + 1) for cy in range(y0, y1 + 1)]

    buckets: dict[tuple[int, int], list[int]] = {}
    wide: list[int] = []
    for i, box in enumerate(boxes):
        covered = cells(box, 16)
        if covered is None:
            wide.append(i)
        for key in covered or ():
            buckets.setdefault(key, []).append(i)
    near = []
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        covered = cells((x0 - reach, y0 - reach, x1 + reach, y1 + reach), count)
        found: Iterable[int] = range(count)
        if covered is not None:
            found = set(wide).union(*(buckets.get(key, ()) for key in covered))
        near.append(sorted(
            j for j in found
            if j != i and boxes[j][0] - reach <= x1 and x0 - reach <= boxes[j][2]
            and boxes[j][1] - reach <= y1 and y0 - reach <= boxes[j][3]
        ))
    return near


def _native_regions(
    doc: pymupdf.Document, work: _PageWork, page_no: int, bank: ImageBank, options: ExtractOptions, run: DocumentRun
) -> list[FigureRegion]:
    page = work.page
    page_rect = page.rect
    placements = []
    for info in _image_infos(work, page_no, options, run):
        rect = pymupdf.Rect(info["bbox"]) & page_rect
        if rect.is_empty:
            continue
        if rect.width * rect.height >= 0.9 * page_rect.width * page_rect.height:
            continue  # page background, not a figure
        placements.append((tuple(rect), info))
    keep, left = _largest([box for box, _ in placements], options.max_images_per_page)
    if left:
        _reject_left_out(page, page_no, [placements[i][0] for i in left], len(placements), "images", "max_images_per_page", run)
        placements = [placements[i] for i in keep]
    boxes = [p[0] for p in placements]
    near = _near(boxes, max(options.panel_gap, options.tile_gap, 1.0))
    kept = []  # indices into placements
    for i, box in enumerate(boxes):
        others = [boxes[j] for j in near[i]]
        if (
            min(box[2] - box[0], box[3] - box[1]) >= options.min_figure_side
            or any(other != box and _abut(box, other, options.tile_gap) for other in others)  # a tile, not a rule
            or _panel_sibling(box, others, options)
        ):
            kept.append(i)
        else:
            _reject_dropped(page_no, box, "thinner than the figure threshold", options, run)
    regions: list[FigureRegion] = []
    for group in _merge_tiles([boxes[i] for i in kept], options.tile_gap):
        work.check_time()
        group = [kept[k] for k in group]
        bbox = union_bbox([boxes[i] for i in group])
        width, height = bbox[2] - bbox[0], bbox[3] - bbox[1]
        small = min(width, height) < options.min_figure_side or width * height < options.min_figure_area
        if small and not (len(group) == 1 and _panel_sibling(bbox, [boxes[j] for j in near[group[0]]], options)):
            _reject_dropped(page_no, bbox, "smaller than the figure threshold", options, run)
            continue
        info = placements[group[0]][1]
        try:
            if len(group) == 1 and info.get("xref") and _is_upright(info["transform"]):
                pixels = _pixmap_array(pymupdf.Pixmap(doc, info["xref"]))
                origin = "embedded"
            else:
                native_dpi = max(placements[i][1]["width"] / max(boxes[i][2] - boxes[i][0], 1) * 72 for i in group)
                dpi = int(min(options.max_image_dpi, max(72, native_dpi)))
                dpi = _fit_dpi(page, pymupdf.Rect(bbox), dpi, page_no, options)
                pixels = work.render(bbox, dpi)
                origin = "merged" if len(group) > 1 else "embedded"
            digest, relative = bank.put(pixels)
        except Exception as exc:  # one undecodable image must not lose the rest of the book
            reason = f"page {page_no}: image at {_box_text(bbox)} cannot be decoded ({type(exc).__name__}: {exc})"
            run.note_error(reason)
            run.rejects.append(Reject(kind="bad_image", step="extract", page=page_no, bbox=bbox, reason=reason))
            continue
        regions.append(
            _region(page_no, len(regions) + 1, bbox, (digest, relative), pixels, origin, len(group))
        )
    return regions


def _clip_at_captions(
    work: _PageWork, page_no: int, regions: list[FigureRegion], blocks: list[TextBlock], bank: ImageBank, options: ExtractOptions
) -> list[FigureRegion]:
    """An image placed with a clip (LaTeX `trim, clip`) has a placement box larger than what
    shows, and that box can run over its own caption. A caption start lying inside an image's
    box marks where the visible figure ends: the region is cut there and rendered as shown."""
    result = []
    starts = [b.bbox for b in blocks if b.caption_start is not None]
    for number, region in enumerate(regions, start=1):
        work.check_time()
        inside = [box for box in starts if _inside(box, region.bbox, 0.6)]
        if not inside:
            result.append(region)
            continue
        x0, y0, x1, y1 = region.bbox
        middle = (y0 + y1) / 2
        below = [box for box in inside if (box[1] + box[3]) / 2 >= middle]
        above = [box for box in inside if (box[1] + box[3]) / 2 < middle]
        top = max((box[3] for box in above), default=y0)
        bottom = min((box[1] for box in below), default=y1)
        bbox = (x0, top, x1, bottom)
        if bottom - top < options.min_figure_side:
            result.append(region)
            continue
        try:
            dpi = region.pixel_size[0] / max(x1 - x0, 1) * 72
            dpi = _fit_dpi(work.page, pymupdf.Rect(bbox), int(min(options.max_image_dpi, max(72, dpi))), page_no, options)
            pixels = work.render(bbox, dpi)
            stored = bank.put(pixels)
        except Exception as exc:  # nothing is lost: the placement box and its image stand
            log.warning("page %d: image at %s cannot be rendered as clipped (%s: %s)", page_no, _box_text(bbox), type(exc).__name__, exc)
            result.append(region)
            continue
        result.append(_region(page_no, number, bbox, stored, pixels, "merged", region.parts))
    return result


def _region(
    page_no: int, number: int, bbox: BBox, stored: tuple[str, str], pixels: np.ndarray, origin: str, parts: int = 1
) -> FigureRegion:
    """A figure region from its page box, its stored image (sha256, path) and pixels."""
    digest, relative = stored
    return FigureRegion(
        region_id=f"p{page_no}-r{number}",
        page=page_no,
        bbox=tuple(round(float(v), 2) for v in bbox),
        image_sha256=digest,
        image_file=relative,
        pixel_size=(int(pixels.shape[1]), int(pixels.shape[0])),
        origin=origin,
        parts=parts,
    )


def _box_text(bbox: BBox) -> str:
    return "(" + ", ".join(f"{v:.0f}" for v in bbox) + ")"


def _reject_dropped(page_no: int, bbox: BBox, why: str, options: ExtractOptions, run: DocumentRun) -> None:
    """An image dropped as decoration that is not tiny may be a figure the build missed."""
    area = (bbox[2] - bbox[0]) * (bbox[3] - bbox[1])
    if area >= options.reject_min_area:
        run.rejects.append(
            Reject(
                kind="dropped_image",
                step="extract",
                page=page_no,
                bbox=tuple(round(v, 2) for v in bbox),
                reason=f"image {bbox[2] - bbox[0]:.0f}x{bbox[3] - bbox[1]:.0f} pt dropped as decoration ({why})",
            )
        )


def _pool_dropped(run: DocumentRun, start: int, page_no: int, options: ExtractOptions) -> None:
    """More images dropped as decoration on one page than max_dropped_per_page are a pattern (a
    texture, a grid of icons), not that many possible misses: they become one reject for review.
    `start`: how many rejects the run had before the page."""
    dropped = [r for r in run.rejects[start:] if r.kind == "dropped_image"]
    if len(dropped) <= options.max_dropped_per_page:
        return
    reason = (
        f"{len(dropped)} images dropped as decoration, more than the limit of {options.max_dropped_per_page}"
        " (max_dropped_per_page): one reject for them all"
    )
    log.info("page %d: %s", page_no, reason)
    bbox = union_bbox([r.bbox for r in dropped])
    run.rejects[start:] = [r for r in run.rejects[start:] if r.kind != "dropped_image"]
    run.rejects.append(Reject(kind="dropped_image", step="extract", page=page_no, bbox=bbox, reason=reason))


def _scan_with_text_layer(work: _PageWork) -> bool:
    """One image covers the page (a scan) and the page also has a text layer."""
    page = work.page
    area = page.rect.width * page.rect.height
    return any((pymupdf.Rect(info["bbox"]) & page.rect).get_area() >= 0.85 * area for info in work.image_info)


def _scan_regions(
    doc: pymupdf.Document, work: _PageWork, page_no: int, bank: ImageBank, options: ExtractOptions
) -> list[FigureRegion]:
    """Figure regions of a scan with a text layer: inked areas of the scan once the layer's text is
    masked, word by word (a block of panel letters spans the panels it is printed on: masking its
    box would cut through them)."""
    page = work.page
    raster = _page_raster(doc, page, page_no, options)
    scale = page.rect.width / raster.shape[1]
    text_boxes = [tuple(v / scale for v in word[:4]) for word in page.get_text("words") if word[4].strip()]
    regions = []
    for x0, y0, x1, y1 in find_raster_figures(raster, text_boxes, options.min_figure_side / scale, options.panel_gap / scale):
        work.check_time()
        digest, relative = bank.put(raster[y0:y1, x0:x1])
        regions.append(
            _region(page_no, len(regions) + 1, tuple(v * scale for v in (x0, y0, x1, y1)), (digest, relative),
                    raster[y0:y1, x0:x1], "raster")
        )
    return regions


def _compound_regions(
    work: _PageWork,
    page_no: int,
    regions: list[FigureRegion],
    blocks: list[TextBlock],
    bank: ImageBank,
    options: ExtractOptions,
    run: DocumentRun,
) -> list[FigureRegion]:
    """Figures drawn as vector graphics, or assembled from many small images and drawings:
    clusters of paths and images on the page, rendered as one region. A cluster that holds
    image regions replaces them (a chart with a raster inset is one figure); text lying inside
    a cluster is part of the figure, not body text. Only the largest max_paths_per_page paths
    and max_images_per_page images are considered."""
    page = work.page
    area = page.rect
    band = options.header_band * area.height
    drawn: list[tuple[BBox, bool]] = []  # (box, made only of rectangles and straight lines)
    try:
        drawings = page.get_drawings()
    except Exception:  # a broken content stream: the raster regions still stand
        drawings = []
    for drawing in drawings:
        rect = pymupdf.Rect(drawing["rect"])  # lines have no area: compare coordinates, not intersections
        rect = pymupdf.Rect(max(rect.x0, 0), max(rect.y0, 0), min(rect.x1, area.width), min(rect.y1, area.height))
        if rect.x1 < rect.x0 or rect.y1 < rect.y0:
            continue  # off the page
        if rect.y1 <= band or rect.y0 >= area.height - band:
            continue  # running header or footer decoration
        if (rect.height <= 1.5 and rect.width >= 0.45 * area.width) or (rect.width <= 1.5 and rect.height >= 0.45 * area.height):
            continue  # a rule across the page
        if rect.width * rect.height >= 0.5 * area.width * area.height:
            continue  # a page background or frame
        box = (rect.x0, rect.y0, max(rect.x1, rect.x0 + 0.5), max(rect.y1, rect.y0 + 0.5))
        drawn.append((box, all(op[0] in ("re", "l") for op in drawing.get("items", ()))))
    if not drawn:
        return regions
    keep, left = _largest([box for box, _ in drawn], options.max_paths_per_page)
    if left:
        _reject_left_out(page, page_no, [drawn[i][0] for i in left], len(drawn), "vector paths", "max_paths_per_page", run)
    items: list[tuple[BBox, bool]] = [(drawn[i][0], False) for i in keep]  # (box, is an image)
    straight = {n for n, i in enumerate(keep) if drawn[i][1]}  # drawings made only of rectangles and straight lines
    placed = []
    for info in work.image_info:
        rect = pymupdf.Rect(info["bbox"]) & area
        if not rect.is_empty and rect.width * rect.height < 0.9 * area.width * area.height:
            placed.append(tuple(rect))
    items += [(placed[i], True) for i in _largest(placed, options.max_images_per_page)[0]]
    paths = set(range(len(keep)))
    images = set(range(len(keep), len(items)))
    labels = [b for b in blocks if _is_label(b)]  # axis labels, panel letters: they tie a figure's parts
    items += [(b.bbox, True) for b in labels]
    groups = _cluster_boxes([box for box, _ in items], options.vector_gap)
    prose = [b for b in blocks if not _is_label(b)]
    groups = _join_parts(groups, [box for box, _ in items], prose, area.width, options, work)
    result = list(regions)
    for group in groups:
        work.check_time()
        drawn = sum(i in paths for i in group)
        if drawn < options.vector_min_items:
            continue
        bbox = union_bbox([items[i][0] for i in group])
        width, height = bbox[2] - bbox[0], bbox[3] - bbox[1]
        if min(width, height) < options.min_figure_side or width * height < 2 * options.min_figure_area:
            continue
        drawn_here = [i for i in group if i in paths]
        if not images.intersection(group) and straight.issuperset(drawn_here) and _frame_only([items[i][0] for i in drawn_here], bbox):
            continue  # a text box, code listing or table: its drawings are only its frame, rules and shading
        inner_text = [b for b in blocks if _inside(b.bbox, bbox, 0.6)]
        if inner_text and sum(len(b.text) for b in inner_text) > 0.02 * width * height:
            continue  # dense text in a frame: a table or a text box, not a figure
        covered = [r for r in result if _inside(r.bbox, bbox, 0.6)]
        if len(covered) == 1 and _inside(bbox, covered[0].bbox, 0.8):
            continue  # drawings over one image (markers on a scan): the image is the figure
        bbox = union_bbox([bbox, *(r.bbox for r in covered)])
        rendered = []
        for part in _split_at_captions(bbox, blocks):
            try:
                dpi = _fit_dpi(page, pymupdf.Rect(part), min(options.max_image_dpi, 200), page_no, options)
                pixels = work.render(part, dpi)
                rendered.append((part, pixels, *bank.put(pixels)))
            except Exception as exc:
                reason = f"page {page_no}: vector figure at {_box_text(part)} cannot be rendered ({type(exc).__name__}: {exc})"
                run.note_error(reason)
                run.rejects.append(Reject(kind="bad_image", step="extract", page=page_no, bbox=part, reason=reason))
        if not rendered:
            continue
        result = [r for r in result if r not in covered]
        for part, pixels, digest, relative in rendered:
            result.append(
                _region(page_no, len(result) + 1, part, (digest, relative), pixels, "merged", len(group))
            )
        for block in inner_text:
            block.role = "figure"
        run.rejects = [
            r for r in run.rejects if not (r.kind == "dropped_image" and r.page == page_no and r.bbox and _inside(r.bbox, bbox, 0.8))
        ]
    result.sort(key=lambda r: (r.bbox[1], r.bbox[0]))
    for index, region in enumerate(result, start=1):
        region.region_id = f"p{page_no}-r{index}"
    return result


def _frame_only(drawn: list[BBox], bbox: BBox) -> bool:
    """Every (straight) drawing is a band across the whole cluster: the frame, rules or row
    shading of a box of text or a table, not the marks of a chart or diagram."""
    width, height = bbox[2] - bbox[0], bbox[3] - bbox[1]
    return all(b[2] - b[0] >= 0.9 * width or b[3] - b[1] >= 0.9 * height for b in drawn)


def _join_parts(
    groups: list[list[int]], boxes: list[BBox], blocks: list[TextBlock], page_width: float, options: ExtractOptions,
    work: _PageWork,
) -> list[list[int]]:
    """Clusters of one figure separated by white space (panels, a legend): joined when they are
    close, in one text column, and no body text or caption lies between them. A lone rule (the
    line under a caption or between columns) joins nothing: it would chain a figure to whatever
    lies beyond it.

    Pairs are joined in the order (first, second) of their positions, and a join is followed by
    the joins it makes possible, as rescanning all pairs after each join would find them. Which
    groups lie close to one is a single vectorised test per step, not a Python loop over pairs."""
    columns = detect_columns(blocks, page_width)
    text = [b.bbox for b in blocks]
    gap = options.vector_join_gap
    groups = [list(g) for g in groups]
    x0, y0, x1, y1 = np.array([union_bbox([boxes[i] for i in g]) for g in groups], dtype=float).reshape(-1, 4).T.copy()
    alive = np.ones(len(groups), dtype=bool)

    def frame(k: int) -> BBox:
        return (x0[k], y0[k], x1[k], y1[k])

    def rule(k: int) -> bool:
        return len(groups[k]) <= 2 and min(x1[k] - x0[k], y1[k] - y0[k]) <= 2.0

    def first_joining(k: int, start: int, stop: int) -> int | None:
        """The first live group in positions start..stop-1 that joins k."""
        if rule(k) or start >= stop:
            return None
        part = slice(start, stop)
        dx = np.maximum(0.0, np.maximum(x0[part], x0[k]) - np.minimum(x1[part], x1[k]))
        dy = np.maximum(0.0, np.maximum(y0[part], y0[k]) - np.minimum(y1[part], y1[k]))
        ka = frame(k)
        for j in start + np.flatnonzero(alive[part] & (dx <= gap) & (dy <= gap)):
            kb = frame(j)
            ca, cb = column_of(ka, columns), column_of(kb, columns)
            if rule(j) or (ca != cb and -1 not in (ca, cb)):
                continue
            between = (min(ka[2], kb[2]) - 1, min(ka[3], kb[3]) - 1, max(ka[0], kb[0]) + 1, max(ka[1], kb[1]) + 1)
            bx0, bx1 = sorted((between[0], between[2]))
            by0, by1 = sorted((between[1], between[3]))
            if not any(_inside(box, (bx0, by0, bx1, by1), 0.5) for box in text):
                return int(j)
        return None

    def join(keep: int, gone: int) -> None:
        groups[keep] += groups[gone]
        x0[keep], y0[keep] = min(x0[keep], x0[gone]), min(y0[keep], y0[gone])
        x1[keep], y1[keep] = max(x1[keep], x1[gone]), max(y1[keep], y1[gone])
        alive[gone] = False

    k = 0
    while k < len(groups):
        work.check_time()
        later = first_joining(k, k + 1, len(groups)) if alive[k] else None
        if later is None:
            k += 1
            continue
        join(k, later)
        # pairs before (k, later) did not join, but k has grown: an earlier group may join it now
        while (earlier := first_joining(k, 0, k)) is not None:
            join(earlier, k)
            k = earlier
    return [g for g, live in zip(groups, alive) if live]


def _split_at_captions(bbox: BBox, blocks: list[TextBlock], reach: float = 40.0) -> list[BBox]:
    """Figures side by side that drew into one cluster: when captions start just below (or above)
    it side by side, the cluster is cut between them, one part per caption."""
    near = sorted(
        (b.bbox for b in blocks if b.caption_start is not None and b.bbox[0] >= bbox[0] - 4 and b.bbox[2] <= bbox[2] + 4
         and (0 <= b.bbox[1] - bbox[3] <= reach or 0 <= bbox[1] - b.bbox[3] <= reach)),
        key=lambda box: box[0],
    )
    cuts = [(left[2] + right[0]) / 2 for left, right in zip(near, near[1:]) if right[0] > left[2]]
    if not cuts:
        return [bbox]
    edges = [bbox[0], *cuts, bbox[2]]
    return [(edges[i], bbox[1], edges[i + 1], bbox[3]) for i in range(len(edges) - 1)]


def _is_label(block: TextBlock) -> bool:
    """Short text such as an axis label or a panel letter (not prose, not a caption); a column of
    tick values (`0.1 / 0.05 / 0 / Time (s)`) is labels too, however many lines it has."""
    text = block.text.strip()
    lines = text.count("\n") + 1
    return (
        block.role == "body" and block.caption_start is None and len(text) <= 40 and (lines <= 3 or len(text) / lines <= 12)
    )


def _inside(inner: BBox, outer: BBox, share: float) -> bool:
    """At least `share` of `inner`'s area lies within `outer`."""
    dx = max(0.0, min(inner[2], outer[2]) - max(inner[0], outer[0]))
    dy = max(0.0, min(inner[3], outer[3]) - max(inner[1], outer[1]))
    area = max(1e-6, (inner[2] - inner[0]) * (inner[3] - inner[1]))
    return dx * dy >= share * area


def _cluster_boxes(boxes: list[BBox], gap: float) -> list[list[int]]:
    """Groups of boxes chained by gaps of at most `gap` points."""
    near = _near(boxes, gap)

    def chained(a: BBox, b: BBox) -> bool:  # `a` starts no further right than `b`
        return a[2] + gap >= b[0] and a[1] - gap <= b[3] and b[1] - gap <= a[3]

    pairs = (
        (i, j) for i, box in enumerate(boxes) for j in near[i]
        if j > i and (chained(box, boxes[j]) if box[0] <= boxes[j][0] else chained(boxes[j], box))
    )
    return _connected(len(boxes), pairs)


def _panel_sibling(box: BBox, others: list[BBox], options: ExtractOptions) -> bool:
    """A small image set in a row or column of images of its size (a grid of small panels) is a
    panel, not a decoration."""
    return _in_panel_row(box, others, options.min_figure_side, options.panel_gap)


def _in_panel_row(box: BBox, others: Sequence[BBox], min_side: float, panel_gap: float) -> bool:
    """`box` (at least half the figure threshold) sits beside or above another box of its size,
    at most `panel_gap` away (in the boxes' own units: points or pixels)."""
    width, height = box[2] - box[0], box[3] - box[1]
    if width * height < min_side**2 / 2 or min(width, height) < min_side / 2:
        return False
    for other in others:
        if tuple(other) == tuple(box):
            continue
        ow, oh = other[2] - other[0], other[3] - other[1]
        beside = abs(oh - height) <= 0.2 * max(oh, height) and 0 <= max(other[0] - box[2], box[0] - other[2]) <= panel_gap
        beside = beside and min(box[3], other[3]) - max(box[1], other[1]) > 0.5 * height
        stacked = abs(ow - width) <= 0.2 * max(ow, width) and 0 <= max(other[1] - box[3], box[1] - other[3]) <= panel_gap
        stacked = stacked and min(box[2], other[2]) - max(box[0], other[0]) > 0.5 * width
        if beside or stacked:
            return True
    return False


# ---------------------------------------------------------------------------- scanned pages


def _page_raster(doc: pymupdf.Document, page: pymupdf.Page, page_no: int, options: ExtractOptions) -> np.ndarray:
    """The page as RGB pixels: the scan itself when the page is one image of at most
    raster_max_dpi, else a rendering. The scan is decoded once: its xref and size come from the
    page's image list (matching placements to xrefs would decode it once more)."""
    images, infos = page.get_images(), page.get_image_info()
    if len(images) == 1 and len(infos) == 1 and _is_upright(infos[0]["transform"]):
        xref, _, width, height = images[0][:4]
        if width / page.rect.width * 72 <= options.raster_max_dpi * 1.05 and not over_limit(
            width, height, options.max_image_pixels
        ):
            return _pixmap_array(pymupdf.Pixmap(doc, xref))
    return _pixmap_array(page.get_pixmap(dpi=_fit_dpi(page, page.rect, options.raster_max_dpi, page_no, options)))


def estimate_skew(gray: np.ndarray, max_degrees: float) -> float:
    """Angle (degrees) that makes text lines horizontal: the sharpest row-projection profile."""
    scale = 800 / max(gray.shape)
    small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
    _, ink = cv2.threshold(small, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    h, w = ink.shape
    centre = (w / 2, h / 2)
    best_angle, best_score = 0.0, -1.0
    for angle in np.arange(-max_degrees, max_degrees + 1e-9, 0.1):
        matrix = cv2.getRotationMatrix2D(centre, float(angle), 1.0)
        rotated = cv2.warpAffine(ink, matrix, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)
        profile = rotated.sum(axis=1, dtype=np.float64)
        score = float(np.square(np.diff(profile)).sum())
        if score > best_score:
            best_angle, best_score = float(angle), score
    return round(best_angle, 2)


def _rotate(image: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate by `angle` degrees about the centre; returns the image and the inverse affine map."""
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    rotated = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=(255, 255, 255))
    return rotated, cv2.invertAffineTransform(matrix)


def _map_box(box: tuple[float, float, float, float], inverse: np.ndarray, scale: float) -> BBox:
    """A box in the deskewed raster -> axis-aligned box in page points."""
    x0, y0, x1, y1 = box
    corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], dtype=float)
    mapped = corners @ inverse.T
    return (
        round(float(mapped[:, 0].min()) * scale, 2),
        round(float(mapped[:, 1].min()) * scale, 2),
        round(float(mapped[:, 0].max()) * scale, 2),
        round(float(mapped[:, 1].max()) * scale, 2),
    )


def find_raster_figures(
    image: np.ndarray, text_boxes: list[tuple[float, float, float, float]], min_side_px: float,
    panel_gap_px: float = 0.0,
) -> list[tuple[int, int, int, int]]:
    """Figure boxes (pixels) on a page raster: large inked areas once recognised text is removed.

    Panels separated by page-white gutters come out as separate boxes; with `panel_gap_px`, a
    smaller one in a row or column of its size (a grid of small panels) is kept as well.
    """
    gray = cv2.medianBlur(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), 3)
    ink = (gray < 215).astype(np.uint8)
    for x0, y0, x1, y1 in text_boxes:
        ink[max(0, int(y0) - 2) : int(y1) + 3, max(0, int(x0) - 2) : int(x1) + 3] = 0
    ink = cv2.morphologyEx(ink, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    ink = cv2.morphologyEx(ink, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    boxes, small = [], []
    for label in range(1, count):
        x, y, w, h, area = stats[label]
        if area >= 0.02 * w * h:
            (boxes if min(w, h) >= min_side_px else small).append([int(x), int(y), int(x + w), int(y + h)])
    if panel_gap_px and small:
        pictures = [b for b in small if ink[b[1] : b[3], b[0] : b[2]].mean() >= 0.6]  # solid, not strokes
        candidates = boxes + pictures
        near = _near(candidates, panel_gap_px)
        boxes += [
            b for k, b in enumerate(pictures, start=len(boxes))
            if _in_panel_row(b, [candidates[j] for j in near[k]], min_side_px, panel_gap_px)
        ]
    merged = _merge_overlapping(boxes)
    return [tuple(b) for b in sorted(merged, key=lambda b: (b[1], b[0]))]


def _merge_overlapping(boxes: list[list[int]]) -> list[list[int]]:
    """Overlapping boxes merged into one, until no two overlap (a merged box can reach others)."""
    while True:
        near = _near(boxes, 0.0)
        pairs = [
            (i, j) for i, a in enumerate(boxes) for j in near[i]
            if j > i and a[0] < boxes[j][2] and boxes[j][0] < a[2] and a[1] < boxes[j][3] and boxes[j][1] < a[3]
        ]
        if not pairs:
            return boxes
        boxes = [list(union_bbox([boxes[i] for i in group])) for group in _connected(len(boxes), pairs)]


def _writes_chinese(text: str) -> bool:
    """A line of Chinese, terms in Latin letters included ("B．ICGA示…"): a quarter of its letters
    are CJK ideographs. English and Chinese captions printed one after the other stay apart."""
    return cjk_share(text) >= 0.25


def _type_size(line: OcrLine) -> float:
    """The size of a recognised line's type, in pixels. A Chinese line's box height is unsteady
    (Latin terms, brackets, the full stop) but its characters are all one em wide: the line's
    width over its characters (Latin ones about half an em) measures the type better."""
    height = line.box[3] - line.box[1]
    if not _writes_chinese(line.text):
        return height
    ems = sum(1.0 if _full_width(ch) else 0.55 for ch in line.text if not ch.isspace())
    return (line.box[2] - line.box[0]) / ems if ems >= 4 else height


def _full_width(ch: str) -> bool:
    return "\u2e80" <= ch <= "\u9fff" or "\u3000" <= ch <= "\u303f" or "\uff00" <= ch <= "\uffef"


def _ocr_blocks(lines: list[OcrLine], page_no: int, scale: float, inverse: np.ndarray) -> list[TextBlock]:
    """Group OCR lines into blocks: consecutive lines of one column, close together; a line that
    starts with a figure number starts a block (matched once per line, kept on the block)."""
    lines = sorted(lines, key=lambda line: (line.box[1], line.box[0]))
    blocks: list[list[OcrLine]] = []
    starts: list[object] = []
    for line in lines:
        height = line.box[3] - line.box[1]
        target = None
        for block in reversed(blocks):  # most recent first; labels and the other column interleave
            last = block[-1]
            gap = line.box[1] - last.box[3]
            if gap > 0.9 * height:
                continue
            overlap = min(line.box[2], last.box[2]) - max(line.box[0], last.box[0])
            # the block's typical type size: one line's box is unsteady
            size, block_size = _type_size(line), float(np.median([_type_size(b) for b in block]))
            block_height = float(np.median([b.box[3] - b.box[1] for b in block]))
            cjk = _writes_chinese(line.text)
            spacing = block[-1].box[1] - block[-2].box[3] if len(block) > 1 else None
            if (
                -0.5 * height <= gap <= 0.9 * height
                # a wider gap than the block's line spacing starts a paragraph; after one line,
                # most of a line's height does
                and gap <= (0.6 * height if spacing is None else spacing + 0.3 * max(height, block_height))
                and overlap > 0
                and abs(line.box[0] - last.box[0]) < 4 * height
                and max(size, block_size) <= (1.15 if cjk else 1.4) * min(size, block_size)  # accents, brackets
                and (not line.text or not last.text or cjk == _writes_chinese(last.text))
            ):
                target = block
                break
        start = caption_block_start(line.text.strip())
        if target is None or start is not None:
            blocks.append([line])
            starts.append(start)
        else:
            target.append(line)
    records = []
    for block, start in zip(blocks, starts, strict=True):
        box = union_bbox([line.box for line in block])
        heights = [line.box[3] - line.box[1] for line in block]
        records.append(
            TextBlock(
                page=page_no,
                bbox=_map_box(box, inverse, scale),
                text="\n".join(line.text.strip() for line in block if line.text.strip()),
                column=0,
                order=0,
                source="ocr",
                caption_start=start,
                confidence=round(float(np.mean([line.confidence for line in block])), 4),
                font_size=round(float(np.median(heights)) * scale * 0.8, 2),
            )
        )
    return records


def _scanned_page(
    doc: pymupdf.Document,
    work: _PageWork,
    page_no: int,
    bank: ImageBank,
    options: ExtractOptions,
    ocr: OcrEngine,
) -> tuple[list[TextBlock], list[FigureRegion], float]:
    page = work.page
    raster = _page_raster(doc, page, page_no, options)
    scale = page.rect.width / raster.shape[1]
    angle = estimate_skew(cv2.cvtColor(raster, cv2.COLOR_RGB2GRAY), options.max_skew_degrees)
    deskewed, inverse = _rotate(raster, angle) if angle else (raster, cv2.invertAffineTransform(np.eye(2, 3)))
    min_side = options.min_figure_side / scale
    work.check_time()
    if options.ocr.lines == "all":
        lines = ocr.recognise(deskewed)
        figure_boxes = find_raster_figures(deskewed, [line.box for line in lines], min_side, options.panel_gap / scale)
    else:
        # detection once; figures are the ink left when every detected line is masked
        boxes = ocr.detect(deskewed)
        figure_boxes = find_raster_figures(deskewed, boxes, min_side, options.panel_gap / scale)
        read = read_selected_lines(ocr, deskewed, boxes, figure_boxes, options.ocr.min_confidence)
        lines = read.lines
        log.debug(
            "%s page %d: %d lines, %d read whole, %d at their start%s", page.parent.name, page_no, read.detected,
            read.read_whole, read.read_start, " (fallback: no caption start near the figures)" if read.fallback else "",
        )

    def inside_figure(line: OcrLine) -> bool:
        cx, cy = (line.box[0] + line.box[2]) / 2, (line.box[1] + line.box[3]) / 2
        return any(b[0] <= cx <= b[2] and b[1] <= cy <= b[3] for b in figure_boxes)

    work.check_time()
    blocks = _ocr_blocks([line for line in lines if not inside_figure(line)], page_no, scale, inverse)
    regions = []
    for x0, y0, x1, y1 in figure_boxes:
        work.check_time()
        digest, relative = bank.put(deskewed[y0:y1, x0:x1])
        regions.append(
            _region(page_no, len(regions) + 1, _map_box((x0, y0, x1, y1), inverse, scale), (digest, relative),
                    deskewed[y0:y1, x0:x1], "raster")
        )
    return blocks, regions, angle


# ---------------------------------------------------------------------------- documents


OcrFactory = Callable[[], OcrEngine]
PageCallback = Callable[[int, int], None]
"""Called after each page of step 1 with (pages done, pages OCR'd so far)."""


def needs_ocr(page: pymupdf.Page, options: ExtractOptions) -> bool:
    """A page with (almost) no native text and a page-sized image (or images that tile the page)
    is a scan: its text comes from OCR. A plate of separate figures with only "Fig. 1." under
    them is not."""
    if len(page.get_text("text").strip()) >= options.scanned_min_chars or not page.get_images():
        return False
    areas = [(pymupdf.Rect(info["bbox"]) & page.rect).get_area() for info in page.get_image_info()]
    return max(areas, default=0.0) >= 0.6 * page.rect.get_area() or sum(areas) >= 0.9 * page.rect.get_area()


def count_pages(path: Path, options: ExtractOptions | None = None) -> tuple[int, int]:
    """(pages, pages needing OCR) of a PDF without extracting it (a text-layer read per page);
    raises what `pymupdf.open` raises for an unreadable file."""
    options = options or ExtractOptions()
    with pymupdf.open(path) as doc:
        return doc.page_count, sum(needs_ocr(page, options) for page in doc)


def extract_page(
    doc: pymupdf.Document,
    index: int,
    bank: ImageBank,
    options: ExtractOptions,
    ocr_factory: OcrFactory,
    run: DocumentRun,
    deadline: float = float("inf"),
) -> PageRecord:
    """Step 1 on one page: blocks, columns, reading order, regions and parsed caption candidates.
    Past `deadline` (a `time.monotonic()` value) the page stops with `_OverTime`."""
    page = doc.load_page(index)
    work = _PageWork(page, deadline)
    page_no = index + 1
    earlier_rejects = len(run.rejects)
    scanned = needs_ocr(page, options)
    skew = 0.0
    if scanned:
        blocks, regions, skew = _scanned_page(doc, work, page_no, bank, options, ocr_factory())
    elif _scan_with_text_layer(work):
        # a scanned page that carries an (invisible) OCR text layer: text from the layer, figures
        # from the scan itself, as for a scanned page
        scanned = True
        blocks = _native_blocks(page, page_no)
        regions = _scan_regions(doc, work, page_no, bank, options)
    else:
        blocks = _native_blocks(page, page_no)
        regions = _native_regions(doc, work, page_no, bank, options, run)
        regions = _clip_at_captions(work, page_no, regions, blocks, bank, options)
        if options.vector_figures:
            mark_running_text(blocks, page.rect.height, options.header_band)  # headers are not figure labels
            regions = _compound_regions(work, page_no, regions, blocks, bank, options, run)
        _pool_dropped(run, earlier_rejects, page_no, options)
    work.check_time()
    mark_running_text(blocks, page.rect.height, options.header_band)
    columns = detect_columns(blocks, page.rect.width)
    for block in blocks:
        if block.role == "body":
            block.column = column_of(block.bbox, columns)
    ordered = reading_order(blocks)
    captions = find_captions(ordered, options.caption_gap)
    for caption in captions:
        first = next(b for b in ordered if b.order == caption.block_orders[0])
        caption.parsed = parse_caption(caption.text, first.caption_start)
    return PageRecord(
        page=page_no,
        width=round(page.rect.width, 2),
        height=round(page.rect.height, 2),
        scanned=scanned,
        skew_degrees=skew,
        column_bounds=[(round(a, 2), round(b, 2)) for a, b in columns],
        blocks=ordered,
        regions=regions,
        captions=captions,
    )


def extract_document(
    doc: pymupdf.Document,
    run: DocumentRun,
    bank: ImageBank,
    options: ExtractOptions | None = None,
    on_page: PageCallback | None = None,
    ocr: OcrEngine | None = None,
) -> DocumentRun:
    """Step 1 for an opened PDF, page by page so memory stays flat however long the book is.

    A page that fails is recorded (error naming the page, a `bad_page` reject) and the book goes
    on as `partial`. `on_page` hears of each page done (a progress display). `ocr`: the engine
    for scanned pages, instead of the one `options.ocr` describes (created on the first scanned page).
    """
    options = options or ExtractOptions()
    engine: list[OcrEngine] = []
    ocr_pages = 0

    def ocr_factory() -> OcrEngine:
        nonlocal ocr_pages
        ocr_pages += 1  # asked once per page that is OCR'd
        if not engine:
            engine.append(ocr or create_ocr_engine(options.ocr))
        return engine[0]

    def over_time(page_no: int) -> ExtractionError:
        return ExtractionError(
            f"stopped at page {page_no}: over the {options.max_seconds_per_pdf:g} s limit (max_seconds_per_pdf)"
        )

    started = time.perf_counter()
    deadline = time.monotonic() + options.max_seconds_per_pdf
    for index in range(doc.page_count):
        if time.monotonic() > deadline:
            raise over_time(index + 1)
        try:
            run.pages.append(extract_page(doc, index, bank, options, ocr_factory, run, deadline))
        except _OverTime:
            raise over_time(index + 1) from None
        except Exception as exc:  # one broken page must not lose the rest of the book
            reason = f"page {index + 1}: {type(exc).__name__}: {exc}"
            log.warning("%s: %s", Path(run.pdf).name, reason)
            run.note_error(reason)
            run.rejects.append(Reject(kind="bad_page", step="extract", page=index + 1, reason=reason))
        finally:
            pymupdf.TOOLS.store_shrink(100)  # drop cached page resources: memory stays flat
        if on_page is not None:
            on_page(index + 1, ocr_pages)
    run.ocr_engine = engine[0].name if engine else None
    _forget_running_decorations(run)
    run.seconds["extract"] = round(time.perf_counter() - started, 4)
    if not run.pages:
        run.status = Status.failed
    return run


def _forget_running_decorations(run: DocumentRun, min_pages: int = 3) -> None:
    """An image dropped at the same place on many pages is a running decoration (a logo, a
    thumb index), not a possible miss."""
    def place(reject: Reject) -> tuple[int, ...]:
        return tuple(round(v / 4) for v in reject.bbox)

    dropped = [r for r in run.rejects if r.kind == "dropped_image" and r.bbox]
    pages_at: dict[tuple[int, ...], set[int]] = {}
    for reject in dropped:
        pages_at.setdefault(place(reject), set()).add(reject.page)
    running = {key for key, pages in pages_at.items() if len(pages) >= min_pages}
    run.rejects = [r for r in run.rejects if not (r.kind == "dropped_image" and r.bbox and place(r) in running)]


def render_region(doc: pymupdf.Document, page_no: int, bbox: BBox, bank: ImageBank, dpi: int = 150) -> tuple[str, str]:
    """A region of a page as a stored image (for rejects that have no image of their own), at
    most max_page_raster_pixels (a reject can stand for a whole crowded page)."""
    page = doc.load_page(page_no - 1)
    clip = pymupdf.Rect(bbox) & page.rect
    dpi = _fit_dpi(page, clip, dpi, page_no, ExtractOptions())
    return bank.put(_pixmap_array(page.get_pixmap(clip=clip, dpi=dpi)))


def new_run(pdf: Path, source: SourceDocument | None = None) -> DocumentRun:
    pdf = Path(pdf)
    return DocumentRun(pdf=str(pdf), book=source.book if source else book_id(pdf), source=source)


def extract_pdf(pdf_path: Path, out_dir: Path, options: ExtractOptions | None = None) -> DocumentRun:
    """Step 1 alone: extract one PDF into `<out_dir>/<book>/` (document.json + images/).

    Raises ExtractionError for unusable inputs; the output appears whole or not at all.
    """
    options = options or ExtractOptions()
    doc, source = open_source(Path(pdf_path), options)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{source.book}.", suffix=".partial", dir=out_dir))
    try:
        run = extract_document(doc, new_run(pdf_path, source), ImageBank(staging), options)
    finally:
        doc.close()
    write_document_run(run, staging, out_dir / source.book)
    return run


def extract_pdfs(paths: Iterable[Path], out_dir: Path, options: ExtractOptions | None = None) -> list[DocumentRun]:
    """Extract a batch; a bad PDF is reported (file and reason) and the others go on."""
    runs = []
    for path in paths:
        path = Path(path)
        try:
            run = extract_pdf(path, out_dir, options)
        except ExtractionError as exc:
            log.error("%s: %s", path, exc)
            runs.append(new_run(path).fail(str(exc)))
            continue
        except Exception as exc:  # an unexpected failure must not stop the batch either
            log.error("%s: extraction failed (%s: %s)", path, type(exc).__name__, exc)
            runs.append(new_run(path).fail(f"{type(exc).__name__}: {exc}"))
            continue
        log.info(
            "%s: %d pages (%d scanned), %d figure regions, %d captions",
            path.name,
            run.page_count,
            run.scanned_pages,
            sum(len(p.regions) for p in run.pages),
            sum(len(p.captions) for p in run.pages),
        )
        runs.append(run)
    return runs
