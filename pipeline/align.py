"""Step 2: pair each figure panel with its caption text, from page layout.

Decisions come from geometry (caption below, beside or above its figure, or at the top of the
next page; columns), figure-number continuity and panel counts against panel letters — never
from file or extraction order. Every pair carries a score in [0, 1] and the reasons behind it.
What cannot be paired (a caption with no figure, a figure with no caption) and the images step 1
dropped stay in the run as rejects, each with a proposal a reviewer can turn into a pair.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from foundation.labels import label_key, sort_labels
from foundation.records import (
    BBox,
    CaptionCandidate,
    CaptionChoice,
    DocumentRun,
    FigureRegion,
    PageRecord,
    Pair,
    ParsedCaption,
    Reject,
    TextBlock,
)
from pipeline.caption_parse import parse_caption
from pipeline.clean import canonical_caption
from pipeline.images import ImageBank
from pipeline.layout import column_of, mostly_cjk, union_bbox
from pipeline.panels import MIN_SPLIT_SCORE, panel_layouts, read_panel_label, split_panels

log = logging.getLogger(__name__)

RegionRenderer = Callable[[int, BBox], "tuple[str, str]"]
"""(page, bbox) -> (sha256, image path) of a page region rendered as an image."""


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
    unnumbered_captions: bool = Field(
        True, description="Pair a figure with no numbered caption with the short text right below it or the line introducing it above (queued for review)."
    )
    unnumbered_reach: float = Field(24.0, description="How far (points) from the figure such unnumbered caption text may be.")
    mosaic_min_panels: int = Field(
        6, ge=2, description="A figure of at least this many images whose caption labels none is a mosaic."
    )
    mosaic: Literal["per_image", "whole"] = Field(
        "per_image",
        description="A mosaic becomes one pair per image with the figure caption ('per_image'), or one pair of the whole mosaic ('whole').",
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
    end_of_page: bool = False
    unnumbered: bool = False

    @property
    def letters(self) -> list[str]:
        return sort_labels(letter for parsed in self.parsed.values() for letter in parsed.letters)

    def caption(self, letter: str | None, language: str, *, shared_only: bool = False) -> str | None:
        """Figure title + the panel's own text (letter None: the whole caption; `shared_only`:
        the title and the text shared by all panels, for a panel the caption does not label)."""
        parsed = self.parsed.get(language)
        if parsed is None:
            return None
        texts = [s.text for s in parsed.segments if s.text and s.letters is None] if shared_only else parsed.panel_texts(letter)
        return canonical_caption(parsed.title, texts, language)


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
        parsed = candidate.parsed or parse_caption(candidate.text)
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
    for group in groups:  # the page's last text, low on it: a full-page figure overleaf may be its
        below = [b for b in page.blocks if b.role in ("body", "caption") and b.bbox[1] > group.bbox[3] - 1
                 and _overlap(b.bbox[0], b.bbox[2], group.bbox[0], group.bbox[2]) > 0]
        group.end_of_page = not below and group.bbox[3] >= 0.6 * page.height
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

    # text between two regions keeps them apart, but not a panel letter printed under a panel
    text_boxes = [b.bbox for b in page.blocks if b.role in ("body", "caption") and len(b.text.strip()) > 12]
    label_boxes = [b.bbox for b in page.blocks if b.role == "body" and 0 < len(b.text.strip()) <= 12]
    columns = [column_of(r.bbox, page.column_bounds) if page.column_bounds else 0 for r in regions]
    for i, a in enumerate(regions):
        for j in range(i + 1, len(regions)):
            b = regions[j]
            across = columns[i] != columns[j] and -1 not in (columns[i], columns[j])
            gap = options.cross_column_gap if across else options.cluster_gap
            # a row of panel letters under the panels widens the gap between rows of one figure
            close = _close(a.bbox, b.bbox, gap) or (
                _close(a.bbox, b.bbox, 2 * gap) and _labels_between(a.bbox, b.bbox, label_boxes)
            )
            if close and not _text_between(a.bbox, b.bbox, text_boxes) and not _captioned_apart(
                a.bbox, b.bbox, page.captions
            ):
                parent[find(i)] = find(j)
    groups: dict[int, list[FigureRegion]] = {}
    for i, region in enumerate(regions):
        groups.setdefault(find(i), []).append(region)
    return [Cluster(page=page.page, regions=_reading_order(members)) for members in groups.values()]


def _captioned_apart(a: BBox, b: BBox, captions: list[CaptionCandidate], reach: float = 40.0) -> bool:
    """Each region has a caption of its own just below it: two figures side by side, not panels."""

    def owns(region: BBox, other: BBox, caption: CaptionCandidate) -> bool:
        c = caption.bbox
        below = 0 <= c[1] - region[3] <= reach
        return below and _overlap(c[0], c[2], region[0], region[2]) > 0.5 * (c[2] - c[0]) and _overlap(
            c[0], c[2], other[0], other[2]
        ) < 0.2 * (c[2] - c[0])

    return any(owns(a, b, c) for c in captions) and any(owns(b, a, c) for c in captions)


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


def _labels_between(a: BBox, b: BBox, label_boxes: list[BBox]) -> bool:
    """Panel letters in the gap between two stacked (or side-by-side) regions: a label's box lies
    mostly within the gap across it and overlaps the regions along it."""
    if a[3] <= b[1] or b[3] <= a[1]:  # stacked
        y0, y1 = sorted((min(a[3], b[3]), max(a[1], b[1])))
        x0, x1 = min(a[0], b[0]), max(a[2], b[2])
        return any(_overlap(t[1], t[3], y0, y1) >= 0.5 * (t[3] - t[1]) and _overlap(t[0], t[2], x0, x1) > 0 for t in label_boxes)
    x0, x1 = sorted((min(a[2], b[2]), max(a[0], b[0])))
    y0, y1 = min(a[1], b[1]), max(a[3], b[3])
    return any(_overlap(t[0], t[2], x0, x1) >= 0.5 * (t[2] - t[0]) and _overlap(t[1], t[3], y0, y1) > 0 for t in label_boxes)


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
            # below a caption right above a figure of its own page (0.85): that caption is the
            # next page's figure's unless that figure has a better one
            return 0.8, "caption at the top of the next page"
        return None
    if group.page == cluster.page - 1:
        if group.end_of_page and k[1] <= options.next_page_top * page_height:
            # a figure at the top of a page whose caption closes the page before (a full-page
            # plate faces its caption), unless a caption of its own page fits better
            return 0.75, "caption at the end of the previous page"
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
        # below the review threshold only with a second doubt (unlabelled panels, distance):
        # over 10 seeds of varied books every such pair above its figure was right
        return 0.85 * decay(k[1] - c[3]), "caption above the figure"
    if c[2] <= k[0] + slack and y_overlap > 0.5:
        return 0.9 * decay(k[0] - c[2]), "caption beside the figure, to its left"
    return None


@dataclass
class Figure:
    cluster: Cluster
    group: CaptionGroup
    geometry: float
    placement: str


def _has_text(group: CaptionGroup) -> bool:
    return any(group.caption(None, language) for language in group.parsed)


def _borrow_facing_captions(groups: dict[int, list[CaptionGroup]]) -> None:
    """A plate labelled only "Fig. 1." under it, whose caption text is printed on the page before
    or after: the label takes the text (and the text is no figure of its own)."""
    for page_no, page_groups in groups.items():
        for group in page_groups:
            if _has_text(group):
                continue
            for other in (page_no - 1, page_no + 1):
                twin = next((g for g in groups.get(other, []) if g.figure_id == group.figure_id and _has_text(g)), None)
                if twin is not None:
                    group.parsed, group.candidates = twin.parsed, group.candidates + twin.candidates
                    groups[other].remove(twin)
                    break


def match_figures(
    pages: list[PageRecord], options: AlignOptions
) -> tuple[list[Figure], list[CaptionGroup], list[Cluster]]:
    """One-to-one matching of figure clusters and caption groups, best geometry first."""
    clusters = {p.page: figure_clusters(p, options) for p in pages}
    groups = {p.page: caption_groups(p, options) for p in pages}
    _borrow_facing_captions(groups)
    heights = {p.page: p.height for p in pages}
    links = []
    for page_no, page_clusters in clusters.items():
        for cluster in page_clusters:
            for candidate_page in (page_no, page_no + 1, page_no - 1):
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


LabelReader = Callable[[np.ndarray], "tuple[str, float] | None"]


def align_document(
    run: DocumentRun,
    bank: ImageBank,
    options: AlignOptions | None = None,
    read_line: LabelReader | None = None,
    render: RegionRenderer | None = None,
) -> DocumentRun:
    """Step 2: pairs for every panel of every captioned figure of one PDF, and rejects for what
    cannot be paired.

    `read_line` (the configured OCR engine's single-line recogniser) reads printed panel letters;
    `render` draws a page region as an image, for rejects that have none of their own (a caption
    whose figure was not found). Both are optional.
    """
    options = options or AlignOptions()
    started = time.perf_counter()
    source = run.source
    figures, unmatched, orphans = match_figures(run.pages, options)
    if options.unnumbered_captions:
        found = _unnumbered_figures(orphans, {p.page: p for p in run.pages}, options)
        figures += found
        orphans = [c for c in orphans if all(f.cluster is not c for f in found)]
    figures.sort(key=lambda f: (f.cluster.page, f.cluster.bbox[1], f.cluster.bbox[0]))
    page_by_no = {p.page: p for p in run.pages}
    groups_by_page: dict[int, list[CaptionGroup]] = {}
    for figure in figures:
        groups_by_page.setdefault(figure.group.page, []).append(figure.group)
    all_groups: dict[int, list[CaptionGroup]] = {}
    for group in [f.group for f in figures] + unmatched:
        all_groups.setdefault(group.page, []).append(group)
    seen_ids: dict[str, int] = {}
    previous_id: tuple[int, ...] | None = None
    for figure in figures:
        number = _figure_number(figure.group.figure_id)
        continuity_ok = previous_id is None or number >= previous_id
        previous_id = number
        try:
            figure_pairs = _figure_pairs(
                figure, run, bank, page_by_no[figure.cluster.page], continuity_ok, options, read_line, render
            )
        except Exception as exc:  # one bad figure must not lose the rest of the book
            reason = f"page {figure.cluster.page}: figure {figure.group.figure_id} could not be split ({type(exc).__name__}: {exc})"
            run.note_error(reason)
            run.rejects.append(
                Reject(kind="bad_image", step="align", page=figure.cluster.page, bbox=figure.cluster.bbox,
                       reason=reason, figure_id=figure.group.figure_id)
            )
            continue
        for pair in figure_pairs:
            count = seen_ids.get(pair.pair_id, 0)
            seen_ids[pair.pair_id] = count + 1
            if count:
                pair.pair_id = f"{pair.pair_id}#{count + 1}"
                pair.reasons.append("figure number printed twice in this book")
            pair.alternatives = _alternatives(figure.group, groups_by_page, pair.panel, options)
        run.pairs.extend(figure_pairs)
    if source is not None:
        _reject_unpaired(run, bank, unmatched, orphans, all_groups, page_by_no, options, render)
    run.seconds["align"] = round(time.perf_counter() - started, 4)
    return run


def _reject_unpaired(
    run: DocumentRun,
    bank: ImageBank,
    unmatched: list[CaptionGroup],
    orphans: list[Cluster],
    groups: dict[int, list[CaptionGroup]],
    pages: dict[int, PageRecord],
    options: AlignOptions,
    render: RegionRenderer | None,
) -> None:
    """Captions without a figure, figures without a caption and the images step 1 dropped, each
    as a reject carrying a proposal pair: its image, and the captions a reviewer may choose."""
    for group in unmatched:
        reason = f"caption of figure {group.figure_id} found no figure region near it"
        proposal = None
        if render is not None:
            area = _likely_figure_area(pages[group.page], group)
            sha, image_file = render(group.page, area)
            proposal = _proposal(run, pages[group.page], area, sha, image_file, "caption_without_figure", reason, groups, options, group)
        run.rejects.append(
            Reject(kind="caption_without_figure", step="align", page=group.page, bbox=group.bbox, reason=reason,
                   figure_id=group.figure_id, proposal=proposal)
        )
    for cluster in orphans:
        for region in cluster.regions:
            reason = f"figure region {region.region_id} found no caption near it"
            proposal = _proposal(run, pages[region.page], region.bbox, region.image_sha256, region.image_file,
                                 "figure_without_caption", reason, groups, options)
            run.rejects.append(
                Reject(kind="figure_without_caption", step="align", page=region.page, bbox=region.bbox,
                       reason=reason, proposal=proposal)
            )
    for reject in run.rejects:
        if reject.kind == "dropped_image" and reject.proposal is None and render is not None and reject.page:
            sha, image_file = render(reject.page, reject.bbox)
            reject.proposal = _proposal(run, pages[reject.page], reject.bbox, sha, image_file, "dropped_image",
                                        reject.reason, groups, options)


def _unnumbered_figures(orphans: list[Cluster], pages: dict[int, PageRecord], options: AlignOptions) -> list[Figure]:
    """Figures without a numbered caption whose caption is the short text right below them, or
    the line just above them that introduces them ("Fundus selection example:"). Paired with a
    low score, so a reviewer confirms each.

    Headings (text set larger than the page's body) are never captions, and one text block
    captions one figure. Where a page stacks several such pictures (embedded images, not drawn
    boxes such as code listings), each introduced by the text above it ("Here is an example of
    ...") with the next one's introduction below it, the side that gives more figures their own
    caption wins for the whole page."""
    found = []
    by_page: dict[int, list[Cluster]] = {}
    for cluster in orphans:
        by_page.setdefault(cluster.page, []).append(cluster)
    for page_no, clusters in by_page.items():
        page = pages[page_no]
        blocks = _paragraphs([b for b in page.blocks if b.role == "body" and b.caption_start is None and not _is_heading(b, page)])
        nearest = _assign_unnumbered(clusters, blocks, options, loose_above=False)
        pictures = [c for c in clusters if all(r.origin != "merged" for r in c.regions)]  # not drawn boxes (code, text frames)
        if len(clusters) >= 2 and len(pictures) == len(clusters):
            above = _assign_unnumbered(clusters, blocks, options, loose_above=True, side="above")
            if len(above) > len(nearest):
                nearest = above
        for cluster in clusters:
            if cluster.regions[0].region_id not in nearest:
                continue
            block, placement = nearest[cluster.regions[0].region_id]
            language = "zh" if mostly_cjk(block.text) else "en"
            figure_id = f"u{cluster.page}-{len(found) + 1}"
            text = " ".join(block.text.split()).rstrip(":：")
            group = CaptionGroup(page=cluster.page, figure_id=figure_id, bbox=block.bbox, unnumbered=True)
            group.parsed[language] = ParsedCaption(figure_id=figure_id, language=language, style="unnumbered", title=text)
            found.append(Figure(cluster, group, 1.0, placement))
    return found


def _paragraphs(blocks: list[TextBlock]) -> list[TextBlock]:
    """Consecutive lines that the text layer gave as blocks of their own (a line per block, as
    browsers and Markdown converters write PDFs), joined into paragraphs: same left edge, same
    size, a gap under half a line."""
    result: list[TextBlock] = []
    for block in sorted(blocks, key=lambda b: (b.bbox[1], b.bbox[0])):
        last = result[-1] if result else None
        size = block.font_size or (block.bbox[3] - block.bbox[1])
        if (
            last is not None
            and abs(last.bbox[0] - block.bbox[0]) <= 2
            and (last.font_size or 0) == (block.font_size or 0)
            and -1 <= block.bbox[1] - last.bbox[3] <= 0.5 * size
        ):
            result[-1] = last.model_copy(update={"bbox": union_bbox([last.bbox, block.bbox]), "text": f"{last.text}\n{block.text}"})
        else:
            result.append(block)
    return result


def _is_heading(block: TextBlock, page: PageRecord) -> bool:
    """A short block set clearly larger than the page's body text (a section or chapter title)."""
    sizes = [b.font_size for b in page.blocks if b.font_size and b.role == "body" for _ in range(max(1, len(b.text) // 40))]
    if not block.font_size or not sizes:
        return False
    lines, ratio = block.text.count("\n") + 1, block.font_size / float(np.median(sizes))
    return (lines <= 2 and ratio >= 1.15) or (lines <= 4 and ratio >= 1.5)


def _assign_unnumbered(
    clusters: list[Cluster], blocks: list[TextBlock], options: AlignOptions, *, loose_above: bool, side: str = "either"
) -> dict[str, tuple[TextBlock, str]]:
    """Each figure's nearest caption-like block (by distance, greedily, one block per figure).
    The default takes a short text below or a line ending in a colon above; `loose_above` also
    takes a short paragraph right above (the page-consistent reading of stacked figures)."""
    options_found = []
    for cluster in clusters:
        k = cluster.bbox
        for block in blocks:
            b = block.bbox
            if _overlap(b[0], b[2], k[0], k[2]) < 0.3 * min(b[2] - b[0], k[2] - k[0]):
                continue
            text = " ".join(block.text.split())
            if sum(ch.isalnum() for ch in text) < 4:
                continue  # panel letters printed under the panels, "(a) (b)", are not a caption
            lines = block.text.count("\n") + 1
            below, above = b[1] - k[3], k[1] - b[3]
            if side != "above" and -2 <= below <= options.unnumbered_reach and lines <= 3 and len(text) <= 200:
                options_found.append((below, cluster, block, "unnumbered caption below the figure"))
            elif side != "below" and -2 <= above <= options.unnumbered_reach and (
                (lines <= 2 and text.rstrip().endswith((":", "："))) or (loose_above and lines <= 4 and len(text) <= 320)
            ):
                options_found.append((above, cluster, block, "unnumbered caption above the figure (the line introducing it)"))
    taken: dict[str, tuple[TextBlock, str]] = {}
    used: set[int] = set()
    for _, cluster, block, placement in sorted(options_found, key=lambda o: o[0]):
        key = cluster.regions[0].region_id
        if key in taken or id(block) in used:
            continue
        taken[key] = (block, placement)
        used.add(id(block))
    return taken


def _likely_figure_area(page: PageRecord, group: CaptionGroup) -> BBox:
    """Where the figure of a caption that found none most likely is: the space above it (or
    below it) up to the nearest text, across the caption's width; else the caption itself."""
    x0, y0, x1, y1 = group.bbox
    if page.column_bounds and group.candidates and group.candidates[0].column >= 0:
        x0, x1 = page.column_bounds[min(group.candidates[0].column, len(page.column_bounds) - 1)]
    others = [b.bbox for b in page.blocks if b.role in ("body", "caption") and _overlap(b.bbox[0], b.bbox[2], x0, x1) > 0]
    above = max([b[3] for b in others if b[3] <= y0 + 1], default=0.0)
    if y0 - above >= 36:
        return (x0, above, x1, y0)
    below = min([b[1] for b in others if b[1] >= y1 - 1], default=page.height)
    if below - y1 >= 36:
        return (x0, y1, x1, below)
    return group.bbox


def _proposal(
    run: DocumentRun,
    page: PageRecord,
    bbox: BBox,
    sha: str,
    image_file: str,
    kind: str,
    reason: str,
    groups: dict[int, list[CaptionGroup]],
    options: AlignOptions,
    own: CaptionGroup | None = None,
) -> Pair:
    """A pair a reviewer may accept: the image, its own caption when it has one, and the captions
    printed on this page and the pages around it as choices."""
    source = run.source
    choices: list[CaptionChoice] = []
    for page_no in (page.page, page.page + 1, page.page - 1):
        for group in groups.get(page_no, []):
            if group is own:
                continue
            for letter in group.letters or [None]:
                choices.append(_choice(group, letter))
    caption_en = own.caption(None, "en") if own else None
    caption_zh = own.caption(None, "zh") if own else None
    return Pair(
        pair_id=f"{run.book}/{own.figure_id if own else 'unpaired-p' + str(page.page) + '-' + sha[:8]}/-",
        book=run.book,
        source_pdf=Path(source.path).name,
        source_pdf_sha256=source.sha256,
        page=page.page,
        bbox=tuple(round(v, 2) for v in bbox),
        figure_id=own.figure_id if own else "",
        panel=None,
        image_sha256=sha,
        image_file=image_file,
        scanned=page.scanned,
        caption_en=caption_en,
        caption_zh=caption_zh,
        caption_en_origin="printed" if caption_en else "missing",
        caption_zh_origin="printed" if caption_zh else "missing",
        alignment_score=0.0,
        reasons=[f"possible miss: {reason}"],
        alternatives=choices[: options.max_alternatives],
        review_status="queued",
        possible_miss=kind,
    )


def _figure_number(figure_id: str) -> tuple[int, ...]:
    return tuple(int(p) for p in figure_id.split("-") if p.isdigit())


def _figure_pairs(
    figure: Figure,
    run: DocumentRun,
    bank: ImageBank,
    page: PageRecord,
    continuity_ok: bool,
    options: AlignOptions,
    read_line: LabelReader | None,
    render: RegionRenderer | None = None,
) -> list[Pair]:
    group = figure.group
    letters = group.letters
    reasons = [f"{figure.placement} (geometry {figure.geometry:.2f})"]
    factor = 1.0
    panels = _panels(figure.cluster, letters, bank)
    if read_line is not None and len(panels) == len(letters) > 2 and _is_grid([bbox for bbox, _, _ in panels]):
        by_label = _order_by_labels(panels, letters, read_line, bank)
        if by_label is not None:
            panels = by_label
            reasons.append("grid panels ordered by their printed letters")
    stitched = len(figure.cluster.regions) == 1 and len(panels) > 1
    mosaic = not letters and len(panels) >= options.mosaic_min_panels
    if len(letters) > 1 and len(panels) != len(letters):
        factor *= 0.5
        reasons.append(f"{len(panels)} panels found but the caption names {len(letters)} ({', '.join(letters)})")
    elif mosaic:
        factor *= 0.9
        reasons.append(f"mosaic of {len(panels)} images with no panel labels: the figure caption applies to each")
    elif not letters and len(panels) > 1:
        factor *= 0.9
        reasons.append(
            f"{len(panels)} panels and the caption names none: the caption applies to each, in reading order"
        )
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
    if group.unnumbered:
        factor *= 0.6
        reasons.append("no figure number: the caption is the text next to the figure; a reviewer confirms it")
    score = round(max(0.0, min(1.0, figure.geometry * factor)), 4)
    if mosaic and options.mosaic == "whole" and render is not None:
        sha, image_file = render(figure.cluster.page, figure.cluster.bbox)
        panels = [(figure.cluster.bbox, sha, image_file)]
        reasons.append("mosaic kept as one image")
    whole = group.caption(None, "zh") or group.caption(None, "en")
    pairs = []
    for index, (bbox, sha, image_file) in enumerate(panels):
        label = letters[index] if index < len(letters) else None
        unlabelled = label is None and len(panels) > 1
        if unlabelled and letters:
            caption_en = group.caption(None, "en", shared_only=True)
            caption_zh = group.caption(None, "zh", shared_only=True)
        else:
            caption_en, caption_zh = group.caption(label, "en"), group.caption(label, "zh")
        suffix = label or (f"p{index + 1}" if unlabelled else "-")
        pairs.append(
            Pair(
                pair_id=f"{run.book}/{group.figure_id}/{suffix}",
                book=run.book,
                source_pdf=Path(run.source.path).name,
                source_pdf_sha256=run.source.sha256,
                page=figure.cluster.page,
                bbox=bbox,
                figure_id=group.figure_id,
                panel=label,
                panel_index=index,
                image_sha256=sha,
                image_file=image_file,
                scanned=page.scanned,
                stitched=stitched,
                caption_en=caption_en,
                caption_zh=caption_zh,
                figure_caption=whole,
                caption_en_origin="printed" if caption_en else "missing",
                caption_zh_origin="printed" if caption_zh else "missing",
                alignment_score=score,
                reasons=list(reasons) + (["unlabelled panel: the caption gives it no letter"] if unlabelled else []),
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
    panels: list[tuple[BBox, str, str]], letters: list[str], read_line: LabelReader, bank: ImageBank
) -> list[tuple[BBox, str, str]] | None:
    """Panels sorted by the letter printed on each, when every panel shows a distinct caption letter."""
    labels = []
    for _, _, image_file in panels:
        label = read_panel_label(bank.pixels(image_file), read_line, letters)
        if label is None:
            return None
        labels.append(label)
    if sorted(labels) != sorted(letters):
        return None
    order = sorted(range(len(panels)), key=lambda i: label_key(labels[i]))
    return [panels[i] for i in order]


def _panels(cluster: Cluster, letters: list[str], bank: ImageBank) -> list[tuple[BBox, str, str]]:
    """(page bbox, sha256, image path) per panel: the regions themselves, or stitched images split.

    With fewer images than the caption names panels, some images hold several (a stitched row
    beside single panels, or one image for the whole figure): each image's surest splits are
    compared and the sharing of the panel count between the images whose least sure split is
    surest wins."""
    regions = cluster.regions
    if len(regions) == 1 and not letters:
        image = bank.pixels(regions[0].image_file)
        boxes = split_panels(image)
        if len(boxes) > 1:
            return [_store_crop(image, box, regions[0], bank) for box in boxes]
    if len(letters) <= len(regions):
        return [(r.bbox, r.image_sha256, r.image_file) for r in regions]
    images = [bank.pixels(r.image_file) for r in regions]
    spare = len(letters) - len(regions)
    layouts = [panel_layouts(image, spare + 1) for image in images]
    # panels so far -> (least sureness, counts per image), image by image
    shares: dict[int, tuple[float, tuple[int, ...]]] = {0: (float("inf"), ())}
    for layout in layouts:
        grown: dict[int, tuple[float, tuple[int, ...]]] = {}
        for total, (score, counts) in shares.items():
            for count, (sureness, _) in layout.items():
                option = (min(score, sureness), counts + (count,))
                if total + count <= len(letters) and option[0] > grown.get(total + count, (-1.0,))[0]:
                    grown[total + count] = option
        shares = grown
    best = shares.get(len(letters))
    if best is None or best[0] < MIN_SPLIT_SCORE:
        return [(r.bbox, r.image_sha256, r.image_file) for r in regions]
    panels = []
    for region, image, layout, count in zip(regions, images, layouts, best[1]):
        if count == 1:
            panels.append((region.bbox, region.image_sha256, region.image_file))
        else:
            panels.extend(_store_crop(image, box, region, bank) for box in layout[count][1])
    return panels


def _store_crop(
    image: np.ndarray, box: tuple[int, int, int, int], region: FigureRegion, bank: ImageBank
) -> tuple[BBox, str, str]:
    x0, y0, x1, y1 = box
    sha, image_file = bank.put(image[y0:y1, x0:x1])
    rx0, ry0, rx1, ry1 = region.bbox
    sx = (rx1 - rx0) / image.shape[1]
    sy = (ry1 - ry0) / image.shape[0]
    bbox = (round(rx0 + x0 * sx, 2), round(ry0 + y0 * sy, 2), round(rx0 + x1 * sx, 2), round(ry0 + y1 * sy, 2))
    return bbox, sha, image_file


def _alternatives(
    group: CaptionGroup, groups_by_page: dict[int, list[CaptionGroup]], panel: str | None, options: AlignOptions
) -> list[CaptionChoice]:
    """Other captions a reviewer might pick: the figure's other panels, then other figures nearby."""
    choices: list[CaptionChoice] = []
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
