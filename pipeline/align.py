"""Step 2: pair each figure panel with its caption text, from page layout.

Decisions come from geometry (caption below, beside or above its figure, or at the top of the
next page; columns), figure-number continuity and panel counts against panel letters — never
from file or extraction order. Every pair carries a score in [0, 1] and the reasons behind it.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel, Field

from pipeline.caption_parse import ParsedCaption, parse_caption
from pipeline.clean import canonical_caption
from foundation.files import write_atomic
from pipeline.layout import column_of, union_bbox
from pipeline.ocr import lazy_line_reader
from pipeline.panels import read_panel_label, split_panels
from foundation.records import BBox, CaptionCandidate, CaptionChoice, DocumentExtraction, FigureRegion, PageRecord, Pair

log = logging.getLogger(__name__)

_LETTERS = "ABCDEFGHIJ"


class AlignOptions(BaseModel):
    """Options of step 2."""

    review_threshold: float = Field(0.75, description="Pairs scoring below this go to the review queue.")
    cluster_gap: float = Field(18.0, description="Regions closer than this (points) belong to one figure.")
    cross_column_gap: float = Field(
        8.0, description="Regions in different text columns belong to one figure only when closer than this (points)."
    )
    near_distance: float = Field(40.0, description="Caption within this distance (points) of its figure scores fully.")
    distance_decay: float = Field(90.0, description="Beyond near_distance the geometry score decays over this many points.")
    next_page_top: float = Field(0.3, description="A caption in this top fraction of a page may belong to the previous page's figure.")
    max_alternatives: int = Field(8, description="Other candidate captions kept per pair for the reviewer.")
    read_panel_labels: bool = Field(
        True, description="Read the letters printed on grid-layout panels (OCR) to order them; else reading order."
    )


@dataclass
class CaptionGroup:
    """The printed caption(s) of one figure: a Chinese and/or an English block."""

    page: int
    figure_id: str
    bbox: BBox
    parsed: dict[str, ParsedCaption] = field(default_factory=dict)
    candidates: list[CaptionCandidate] = field(default_factory=list)
    top_of_page: bool = False

    @property
    def letters(self) -> list[str]:
        seen: set[str] = set()
        for parsed in self.parsed.values():
            seen.update(parsed.letters)
        return sorted(seen, key=_LETTERS.index)

    def caption(self, letter: str | None, language: str) -> str | None:
        parsed = self.parsed.get(language)
        if parsed is None:
            return None
        return canonical_caption(parsed.title, parsed.panel_texts(letter), language)


@dataclass
class Cluster:
    """Regions of one page that lie together: the panels of one figure."""

    page: int
    regions: list[FigureRegion]

    @property
    def bbox(self) -> BBox:
        return union_bbox([r.bbox for r in self.regions])


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def caption_groups(page: PageRecord, options: AlignOptions) -> list[CaptionGroup]:
    """Parse the page's caption candidates; a Chinese and an English caption of one figure form one group."""
    groups: list[CaptionGroup] = []
    body_tops = [b.bbox[1] for b in page.blocks if b.role in ("body", "caption")]
    first_top = min(body_tops) if body_tops else 0.0
    for candidate in sorted(page.captions, key=lambda c: min(c.block_orders or [0])):
        parsed = parse_caption(candidate.text)
        if parsed is None:
            continue
        group = groups[-1] if groups else None
        if group is None or group.figure_id != parsed.figure_id or parsed.language in group.parsed:
            group = CaptionGroup(page=page.page, figure_id=parsed.figure_id, bbox=candidate.bbox)
            group.top_of_page = (
                candidate.bbox[1] <= first_top + 2 and candidate.bbox[1] <= options.next_page_top * page.height
            )
            groups.append(group)
        group.parsed[parsed.language] = parsed
        group.candidates.append(candidate)
        group.bbox = union_bbox([group.bbox, candidate.bbox])
    return groups


def figure_clusters(page: PageRecord, options: AlignOptions) -> list[Cluster]:
    """Group regions whose gaps are small and free of text."""
    regions = page.regions
    parent = list(range(len(regions)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    text_boxes = [b.bbox for b in page.blocks if b.role in ("body", "caption")]
    columns = [column_of(r.bbox, page.column_bounds) if page.column_bounds else 0 for r in regions]
    for i, a in enumerate(regions):
        for j in range(i + 1, len(regions)):
            b = regions[j]
            across = columns[i] != columns[j] and -1 not in (columns[i], columns[j])
            gap = options.cross_column_gap if across else options.cluster_gap
            if _close(a.bbox, b.bbox, gap) and not _text_between(a.bbox, b.bbox, text_boxes):
                parent[find(i)] = find(j)
    groups: dict[int, list[FigureRegion]] = {}
    for i, region in enumerate(regions):
        groups.setdefault(find(i), []).append(region)
    return [Cluster(page=page.page, regions=_reading_order(members)) for members in groups.values()]


def _close(a: BBox, b: BBox, gap: float) -> bool:
    dx = max(0.0, max(a[0], b[0]) - min(a[2], b[2]))
    dy = max(0.0, max(a[1], b[1]) - min(a[3], b[3]))
    return dx <= gap and dy <= gap


def _text_between(a: BBox, b: BBox, text_boxes: list[BBox]) -> bool:
    gap = (min(a[2], b[2]), min(a[3], b[3]), max(a[0], b[0]), max(a[1], b[1]))
    x0, x1 = sorted((gap[0], gap[2]))
    y0, y1 = sorted((gap[1], gap[3]))
    for t in text_boxes:
        # mostly inside the gap: a caption whose box grazes a skewed scan's figure box does not count
        inside = _overlap(t[0], t[2], x0, x1) * _overlap(t[1], t[3], y0, y1)
        if inside > 0.5 * (t[2] - t[0]) * (t[3] - t[1]):
            return True
    return False


def _reading_order(regions: list[FigureRegion]) -> list[FigureRegion]:
    """Rows top to bottom (a row: regions whose vertical centres are close), left to right."""
    rows: list[list[FigureRegion]] = []
    for region in sorted(regions, key=lambda r: (r.bbox[1] + r.bbox[3]) / 2):
        centre = (region.bbox[1] + region.bbox[3]) / 2
        height = region.bbox[3] - region.bbox[1]
        if rows:
            last = rows[-1][0]
            if abs(centre - (last.bbox[1] + last.bbox[3]) / 2) < 0.4 * max(height, last.bbox[3] - last.bbox[1]):
                rows[-1].append(region)
                continue
        rows.append([region])
    return [r for row in rows for r in sorted(row, key=lambda r: r.bbox[0])]


def geometry_score(
    cluster: Cluster, group: CaptionGroup, page_height: float, options: AlignOptions
) -> tuple[float, str] | None:
    """How well the caption's position fits the figure, and how it is placed; None when it cannot be."""
    k, c = cluster.bbox, group.bbox

    def decay(distance: float) -> float:
        excess = max(0.0, distance - options.near_distance)
        return math.exp(-excess / options.distance_decay)

    if group.page == cluster.page + 1:
        if group.top_of_page and k[3] >= 0.5 * page_height:
            return 0.85, "caption at the top of the next page"
        return None
    if group.page != cluster.page:
        return None
    x_overlap = _overlap(k[0], k[2], c[0], c[2]) / max(1.0, min(k[2] - k[0], c[2] - c[0]))
    y_overlap = _overlap(k[1], k[3], c[1], c[3]) / max(1.0, min(k[3] - k[1], c[3] - c[1]))
    # boxes from a skewed scan are axis-aligned around rotated corners: they overlap a little
    slack = 4 + 0.03 * max(k[2] - k[0], k[3] - k[1])
    if c[1] >= k[3] - slack and x_overlap > 0.3:
        return decay(c[1] - k[3]), "caption below the figure"
    if c[0] >= k[2] - slack and y_overlap > 0.5:
        return 0.95 * decay(c[0] - k[2]), "caption beside the figure"
    if c[3] <= k[1] + slack and x_overlap > 0.3:
        return 0.8 * decay(k[1] - c[3]), "caption above the figure"
    return None


@dataclass
class Figure:
    cluster: Cluster
    group: CaptionGroup
    geometry: float
    placement: str


def match_figures(
    pages: list[PageRecord], options: AlignOptions
) -> tuple[list[Figure], list[CaptionGroup], list[Cluster]]:
    """One-to-one matching of figure clusters and caption groups, best geometry first."""
    clusters = {p.page: figure_clusters(p, options) for p in pages}
    groups = {p.page: caption_groups(p, options) for p in pages}
    heights = {p.page: p.height for p in pages}
    links = []
    for page_no, page_clusters in clusters.items():
        for cluster in page_clusters:
            for candidate_page in (page_no, page_no + 1):
                for group in groups.get(candidate_page, []):
                    scored = geometry_score(cluster, group, heights[page_no], options)
                    if scored:
                        links.append((scored[0], scored[1], cluster, group))
    links.sort(key=lambda link: -link[0])
    used_clusters: set[int] = set()
    used_groups: set[int] = set()
    figures: list[Figure] = []
    for score, placement, cluster, group in links:
        if id(cluster) in used_clusters or id(group) in used_groups:
            continue
        used_clusters.add(id(cluster))
        used_groups.add(id(group))
        figures.append(Figure(cluster, group, score, placement))
    orphans = [c for cs in clusters.values() for c in cs if id(c) not in used_clusters]
    unmatched = [g for gs in groups.values() for g in gs if id(g) not in used_groups]
    return figures, unmatched, orphans


class AlignmentReport(BaseModel):
    """What step 2 could not pair, for the build summary."""

    unmatched_captions: list[str] = Field(default_factory=list)
    figures_without_caption: int = 0


LabelReader = Callable[[np.ndarray], "tuple[str, float] | None"]


def align_document(
    extraction: DocumentExtraction,
    extraction_dir: Path,
    options: AlignOptions | None = None,
    read_line: LabelReader | None = None,
) -> tuple[list[Pair], AlignmentReport]:
    """Pairs for every panel of every captioned figure in one extracted PDF.

    `read_line` (an OCR engine's single-line recogniser, e.g. `pipeline.ocr.lazy_line_reader`
    of the configured engine) reads printed panel letters; by default the default OCR engine is
    loaded the first time a grid of panels needs it.
    """
    options = options or AlignOptions()
    if read_line is None and options.read_panel_labels:
        read_line = lazy_line_reader()
    figures, unmatched, orphans = match_figures(extraction.pages, options)
    figures.sort(key=lambda f: (f.cluster.page, f.cluster.bbox[1], f.cluster.bbox[0]))
    report = AlignmentReport(
        unmatched_captions=[f"page {g.page}: figure {g.figure_id}" for g in unmatched],
        figures_without_caption=len(orphans),
    )
    page_by_no = {p.page: p for p in extraction.pages}
    groups_by_page: dict[int, list[CaptionGroup]] = {}
    for figure in figures:
        groups_by_page.setdefault(figure.group.page, []).append(figure.group)
    pairs: list[Pair] = []
    seen_ids: dict[str, int] = {}
    previous_id: tuple[int, ...] | None = None
    for figure in figures:
        number = _figure_number(figure.group.figure_id)
        continuity_ok = previous_id is None or number >= previous_id
        previous_id = number
        figure_pairs = _figure_pairs(
            figure, extraction, extraction_dir, page_by_no[figure.cluster.page], continuity_ok, options, read_line
        )
        for pair in figure_pairs:
            count = seen_ids.get(pair.pair_id, 0)
            seen_ids[pair.pair_id] = count + 1
            if count:
                pair.pair_id = f"{pair.pair_id}#{count + 1}"
                pair.reasons.append("figure number printed twice in this book")
            pair.alternatives = _alternatives(figure, groups_by_page, pair.panel, options)
        pairs.extend(figure_pairs)
    return pairs, report


def _figure_number(figure_id: str) -> tuple[int, ...]:
    return tuple(int(p) for p in figure_id.split("-") if p.isdigit())


def _figure_pairs(
    figure: Figure,
    extraction: DocumentExtraction,
    extraction_dir: Path,
    page: PageRecord,
    continuity_ok: bool,
    options: AlignOptions,
    read_line: LabelReader | None,
) -> list[Pair]:
    group = figure.group
    letters = group.letters
    reasons = [f"{figure.placement} (geometry {figure.geometry:.2f})"]
    factor = 1.0
    panels = _panels(figure.cluster, letters, extraction_dir)
    if read_line is not None and len(panels) == len(letters) > 2 and _is_grid([bbox for bbox, _, _ in panels]):
        by_label = _order_by_labels(panels, letters, read_line)
        if by_label is not None:
            panels = by_label
            reasons.append("grid panels ordered by their printed letters")
    stitched = len(figure.cluster.regions) == 1 and len(panels) > 1
    if len(letters) > 1 and len(panels) != len(letters):
        factor *= 0.5
        reasons.append(f"{len(panels)} panels found but the caption names {len(letters)} ({', '.join(letters)})")
    elif not letters and len(panels) > 1:
        factor *= 0.6
        reasons.append(f"{len(panels)} panels but the caption names none; lettered by reading order")
    else:
        reasons.append(
            f"{len(panels)} panel(s) match the caption's letters" if letters else "single panel, single caption"
        )
    if len(group.parsed) == 2:
        zh_letters, en_letters = (group.parsed[lang].letters for lang in ("zh", "en"))
        if zh_letters != en_letters:
            factor *= 0.8
            reasons.append(f"Chinese caption names panels {zh_letters}, English {en_letters}")
    if not continuity_ok:
        factor *= 0.85
        reasons.append("figure number out of sequence with the previous figure")
    if any(c.source == "ocr" for c in group.candidates):
        reasons.append("caption read by OCR")
    score = round(max(0.0, min(1.0, figure.geometry * factor)), 4)
    pairs = []
    for index, (bbox, sha, image_file) in enumerate(panels):
        if letters:
            letter = letters[index] if index < len(letters) else _LETTERS[index]
        else:
            letter = _LETTERS[index] if len(panels) > 1 else None
        caption_en = group.caption(letter, "en")
        caption_zh = group.caption(letter, "zh")
        pairs.append(
            Pair(
                pair_id=f"{extraction.source.book}/{group.figure_id}/{letter or '-'}",
                book=extraction.source.book,
                source_pdf=Path(extraction.source.path).name,
                source_pdf_sha256=extraction.source.sha256,
                page=figure.cluster.page,
                bbox=bbox,
                figure_id=group.figure_id,
                panel=letter,
                image_sha256=sha,
                image_file=image_file,
                scanned=page.scanned,
                stitched=stitched,
                caption_en=caption_en,
                caption_zh=caption_zh,
                caption_en_origin="printed" if caption_en else "missing",
                caption_zh_origin="printed" if caption_zh else "missing",
                alignment_score=score,
                reasons=list(reasons),
                review_status="auto_accepted" if score >= options.review_threshold else "queued",
            )
        )
    return pairs


def _is_grid(boxes: list[BBox]) -> bool:
    """More than one row and more than one column: reading order alone may not match the letters."""
    def distinct(values: list[float], tolerance: float) -> int:
        values = sorted(values)
        return 1 + sum(1 for a, b in zip(values, values[1:]) if b - a > tolerance)

    heights = min(b[3] - b[1] for b in boxes)
    widths = min(b[2] - b[0] for b in boxes)
    rows = distinct([(b[1] + b[3]) / 2 for b in boxes], 0.4 * heights)
    cols = distinct([(b[0] + b[2]) / 2 for b in boxes], 0.4 * widths)
    return rows > 1 and cols > 1


def _order_by_labels(
    panels: list[tuple[BBox, str, str]], letters: list[str], read_line: LabelReader
) -> list[tuple[BBox, str, str]] | None:
    """Panels sorted by the letter printed on each, when every panel shows a distinct caption letter."""
    labels = []
    for _, _, image_file in panels:
        image = cv2.imread(image_file, cv2.IMREAD_COLOR)
        label = read_panel_label(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), read_line) if image is not None else None
        if label is None:
            return None
        labels.append(label)
    if sorted(labels) != sorted(letters):
        return None
    order = sorted(range(len(panels)), key=lambda i: letters.index(labels[i]))
    return [panels[i] for i in order]


def _panels(cluster: Cluster, letters: list[str], extraction_dir: Path) -> list[tuple[BBox, str, str]]:
    """(page bbox, sha256, image path) per panel: the regions themselves, or a stitched image split."""
    if len(cluster.regions) == 1 and len(letters) > 1:
        region = cluster.regions[0]
        image = cv2.cvtColor(cv2.imread(str(extraction_dir / region.image_file)), cv2.COLOR_BGR2RGB)
        boxes = split_panels(image, expected=len(letters))
        if len(boxes) > 1:
            return [_store_crop(image, box, region, extraction_dir) for box in boxes]
    return [(r.bbox, r.image_sha256, str((extraction_dir / r.image_file).resolve())) for r in cluster.regions]


def _store_crop(
    image: np.ndarray, box: tuple[int, int, int, int], region: FigureRegion, extraction_dir: Path
) -> tuple[BBox, str, str]:
    x0, y0, x1, y1 = box
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(image[y0:y1, x0:x1]), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"cannot encode a panel of {region.image_file}")
    png = buffer.tobytes()
    sha = hashlib.sha256(png).hexdigest()
    path = extraction_dir / "images" / f"{sha}.png"
    if not path.exists():
        write_atomic(path, png)
    rx0, ry0, rx1, ry1 = region.bbox
    sx = (rx1 - rx0) / image.shape[1]
    sy = (ry1 - ry0) / image.shape[0]
    bbox = (round(rx0 + x0 * sx, 2), round(ry0 + y0 * sy, 2), round(rx0 + x1 * sx, 2), round(ry0 + y1 * sy, 2))
    return bbox, sha, str(path.resolve())


def _alternatives(
    figure: Figure, groups_by_page: dict[int, list[CaptionGroup]], panel: str | None, options: AlignOptions
) -> list[CaptionChoice]:
    """Other captions a reviewer might pick: the figure's other panels, then other figures nearby."""
    choices: list[CaptionChoice] = []
    group = figure.group
    for letter in group.letters:
        if letter != panel:
            choices.append(_choice(group, letter))
    for page_no in (group.page - 1, group.page, group.page + 1):
        for other in groups_by_page.get(page_no, []):
            if other is group:
                continue
            for letter in other.letters or [None]:
                choices.append(_choice(other, letter))
    return choices[: options.max_alternatives]


def _choice(group: CaptionGroup, letter: str | None) -> CaptionChoice:
    return CaptionChoice(
        figure_id=group.figure_id,
        panel=letter,
        caption_en=group.caption(letter, "en"),
        caption_zh=group.caption(letter, "zh"),
    )
