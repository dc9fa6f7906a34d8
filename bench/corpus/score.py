"""One scorer for real documents: a build's pairs and rejects against the corpus truth.

Build items are the pairs and the `non_retinal_figure` rejects of a document (a flow chart beside
an OCT scan is a panel kept as a reject). On each page, truth panels that have boxes are matched
one to one with build items by box IoU >= 0.5 (greedy, best IoU first). A figure whose panels have
no boxes (the former development set) is matched through its figure box (an item lying at least
half inside it) or, failing that, through its caption text (normalised similarity >= 0.8).

Per document (`score_document`) and summed over documents (`summarise`):

* figure recall over captioned figures, and over captioned retinal figures (found by a pair);
* panel recall (retinal truth panels with boxes that a pair matches) and panel precision (pairs
  that match a retinal truth panel, over pairs on pages whose figures have panel boxes);
* panel count exact over found figures (build items matched to, or lying in, the figure);
* caption similarity over found figures: the whole printed caption, and each matched panel's text
  (the figure title followed by the panel's own part of the caption);
* modality agreement over matched retinal panels;
* among auto-accepted pairs, the share that is wrong, by kind: wrong box, part of a panel (a piece
  of one truth panel, e.g. one cell of a grid the truth counts as one panel), wrong caption, wrong
  modality, not retinal, not a figure, duplicate;
* non-retinal figures that became pairs; list-of-figures or body lines published as captions.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from dataclasses import dataclass, field

FOUND_AT = 0.8
GOOD_CAPTION = 0.9
WRONG_CAPTION_BELOW = 0.6
IOU_MATCH = 0.5
LABEL_LINE = re.compile(r"^\s*(figure|fig\.?|figura|abbildung|abb\.|rys\.?|rysunek|图|圖|図)\s*\d", re.IGNORECASE)
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff]")

# truth modality -> build modalities that agree with it
AGREES = {
    "CFP": {"CFP"}, "red-free": {"CFP"}, "UWF": {"CFP"}, "SLO": {"CFP", "other"},
    "FFA": {"FFA"}, "ICGA": {"FFA"}, "FAF": {"CFP", "FFA"},
    "OCT": {"OCT"}, "OCTA": {"OCT"}, "other": {"other"},
}
RETINAL_MODALITIES = frozenset({"CFP", "red-free", "FFA", "ICGA", "FAF", "OCT", "OCTA", "UWF", "SLO"})
WRONG_KINDS = ("wrong_box", "part_of_panel", "wrong_caption", "wrong_modality", "not_retinal", "not_a_figure", "duplicate")

try:  # the build's own normalisation when the package is importable
    from pipeline.clean import normalise_for_match as _normalise
except ImportError:  # pragma: no cover - the bench always runs inside the project
    def _normalise(text: str, language: str) -> str:
        text = re.sub(r"[^\w\s]", " ", text.lower())
        return re.sub(r"\s+", "" if language == "zh" else " ", text).strip()


def norm(text: str | None, language: str | None = None) -> str:
    text = text or ""
    language = language or ("zh" if CJK.search(text) else "en")
    return _normalise(text, "zh" if language in ("zh", "ja") else "en").replace("-", "")


def ratio(a: str, b: str) -> float:
    if not a or not b:
        return 0.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def without_label(text: str | None, label: str | None, language: str | None) -> str:
    normal = norm(text, language)
    key = norm(label, language)
    if key and normal.startswith(key):
        normal = normal[len(key):].strip()
    return normal


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def inside_share(inner, outer) -> float:
    ix = max(0.0, min(inner[2], outer[2]) - max(inner[0], outer[0]))
    iy = max(0.0, min(inner[3], outer[3]) - max(inner[1], outer[1]))
    area = (inner[2] - inner[0]) * (inner[3] - inner[1])
    return ix * iy / area if area > 0 else 0.0


def share(hit: int, total: int) -> float | None:
    return round(hit / total, 3) if total else None


@dataclass
class Item:
    """One thing the build produced for a figure: a pair or a non-retinal reject."""

    kind: str  # "pair" or "reject"
    page: int
    bbox: tuple | None
    texts: list[str]  # the captions it carries (per-panel first, then the whole figure caption)
    panel_text: str | None = None
    panel_texts: list[str] = field(default_factory=list)  # every language's text of this panel
    figure_caption: str | None = None
    modality: str | None = None
    auto: bool = False
    image: str | None = None
    figure_id: str | None = None


def items_of(run, pages: range | None = None) -> list[Item]:
    items = []
    for pair in run.pairs:
        if pages is not None and pair.page not in pages:
            continue
        printed = getattr(pair, "caption_printed", None)
        panel_text = printed or (pair.caption_zh if pair.caption_zh_origin == "printed" else None) or pair.caption_en or pair.caption_zh
        panel_texts = [t for t in dict.fromkeys([panel_text, pair.caption_en, pair.caption_zh]) if t]
        texts = [t for t in dict.fromkeys([*panel_texts, pair.figure_caption]) if t]
        items.append(Item("pair", pair.page, tuple(pair.bbox), texts, panel_text, panel_texts, pair.figure_caption,
                          pair.modality, pair.review_status == "auto_accepted", pair.image_sha256, pair.figure_id))
    for reject in run.rejects:
        if reject.kind != "non_retinal_figure" or reject.page is None:
            continue
        if pages is not None and reject.page not in pages:
            continue
        items.append(Item("reject", reject.page, tuple(reject.bbox) if reject.bbox else None,
                          [reject.caption] if reject.caption else [], reject.caption,
                          [reject.caption] if reject.caption else [], reject.caption, None, False, None, reject.figure_id))
    return items


def panel_title(figure: dict) -> str:
    """The caption's part before the first panel text (its title), when panel texts come from it."""
    caption = figure.get("caption") or ""
    starts = [caption.find(p["text"]) for p in figure.get("panels") or [] if p.get("text")]
    starts = [s for s in starts if s >= 0]
    title = caption[: min(starts)] if starts else ""
    return re.sub(r"[\s(\[]*[A-Za-z][)\].,:]?\s*$", "", title).strip() if title else ""


def expected_panel_texts(figure: dict, panel: dict) -> list[str]:
    """What a pair of this panel may rightly carry: the caption's title and the panel's own part of
    it; the whole caption when the caption has no part for the panel; when the panel's words are
    printed outside the caption (under the picture), the whole caption, alone or with them."""
    caption = figure.get("caption")
    if not caption:
        return []
    text = panel.get("text")
    if not text:
        return [caption]
    if text in caption:
        title = panel_title(figure)
        return [f"{title} {text}".strip() if title else text]
    return [caption, f"{caption} {text}"]


def text_similarity(figure: dict, texts: list[str], expected: str | None = None) -> float:
    """Best similarity between any of the texts and the figure's caption (or `expected`)."""
    best = 0.0
    targets = [(expected or figure.get("caption"), figure.get("language"), figure.get("label"))]
    if figure.get("caption_en") and expected is None:
        targets.append((figure["caption_en"], "en", figure.get("label_en")))
    for caption, language, label in targets:
        if not caption:
            continue
        want = norm(caption, language)
        for text in texts:
            best = max(best, ratio(want, without_label(text, label, language)))
    return best


def modality_agrees(panel: dict, modality: str | None) -> bool:
    return modality in AGREES.get(panel.get("modality") or "other", {panel.get("modality")})


@dataclass
class DocScore:
    name: str
    half: str
    status: str = "success"
    pages: int = 0
    seconds: float = 0.0
    counts: Counter = field(default_factory=Counter)
    wrong: Counter = field(default_factory=Counter)
    caption_sims: list = field(default_factory=list)
    panel_sims: list = field(default_factory=list)

    def metrics(self) -> dict:
        c = self.counts
        auto = c["auto_accepted"]
        return {
            "figure_recall": share(c["found"], c["captioned"]),
            "retinal_recall": share(c["retinal_found"], c["retinal_captioned"]),
            "panel_recall": share(c["panels_hit"], c["panels_boxed"]),
            "panel_precision": share(c["pairs_hit"], c["pairs_boxed"]),
            "panel_count_exact": share(c["count_exact"], c["found_any"]),
            "caption_mean": round(sum(self.caption_sims) / len(self.caption_sims), 3) if self.caption_sims else None,
            "caption_ge_0_9": share(sum(s >= GOOD_CAPTION for s in self.caption_sims), len(self.caption_sims)),
            "panel_text_ge_0_9": share(sum(s >= GOOD_CAPTION for s in self.panel_sims), len(self.panel_sims)),
            "modality_agreement": share(c["modality_hit"], c["modality_total"]),
            "auto_accepted": auto,
            "auto_wrong": share(c["auto_wrong"], auto),
            "queued": share(c["queued"], c["pairs"]),
            "non_retinal_paired": c["non_retinal_paired"],
            "trap_captions": c["trap_captions"],
            "pages_per_s": round(self.pages / self.seconds, 3) if self.seconds else None,
        }


def summarise(name: str, half: str, scores: list[DocScore]) -> DocScore:
    total = DocScore(name, half)
    for score in scores:
        total.pages += score.pages
        total.seconds += score.seconds
        total.counts.update(score.counts)
        total.wrong.update(score.wrong)
        total.caption_sims += score.caption_sims
        total.panel_sims += score.panel_sims
    return total


def _match_panels(figures: list[dict], items: list[Item]) -> dict[int, tuple[int, int]]:
    """item index -> (figure index, panel index), one to one by IoU >= 0.5 on the same page."""
    candidates = []
    for fi, figure in enumerate(figures):
        for pi, panel in enumerate(figure.get("panels") or []):
            if not panel.get("bbox"):
                continue
            for ii, item in enumerate(items):
                if item.bbox and item.page == figure["page"]:
                    overlap = iou(item.bbox, panel["bbox"])
                    if overlap >= IOU_MATCH:
                        candidates.append((overlap, ii, fi, pi))
    taken_items, taken_panels, matched = set(), set(), {}
    for _, ii, fi, pi in sorted(candidates, reverse=True):
        if ii in taken_items or (fi, pi) in taken_panels:
            continue
        taken_items.add(ii)
        taken_panels.add((fi, pi))
        matched[ii] = (fi, pi)
    return matched


def _boxed(figure: dict) -> bool:
    panels = figure.get("panels") or []
    return bool(panels) and all(p.get("bbox") for p in panels)


def score_document(name: str, half: str, run, figures: list[dict], pages: range | None = None,
                   page_lines: dict[int, list[str]] | None = None, seen_images: set | None = None) -> DocScore:
    """Score one document's build against its truth figures (see the module docstring)."""
    score = DocScore(name, half, status=run.status.value, pages=run.page_count,
                     seconds=sum(v for k, v in run.seconds.items() if k != "write"))
    c = score.counts
    items = items_of(run, pages)
    matched = _match_panels(figures, items)
    by_figure: dict[int, set[int]] = {fi: set() for fi in range(len(figures))}
    for ii, (fi, _) in matched.items():
        by_figure[fi].add(ii)
    for fi, figure in enumerate(figures):  # items lying in the figure box count as its panels
        if not figure.get("bbox"):
            continue
        for ii, item in enumerate(items):
            if ii not in matched and item.bbox and item.page == figure["page"] and inside_share(item.bbox, figure["bbox"]) >= 0.5:
                by_figure[fi].add(ii)

    for fi, figure in enumerate(figures):
        members = [items[ii] for ii in by_figure[fi]]
        pairs = [m for m in members if m.kind == "pair"]
        if not members and figure.get("caption") and not _boxed(figure):  # text fallback for box-less truth
            figure_pages = {figure["page"], figure.get("caption_page") or figure["page"]}
            wanted = "pair" if figure.get("retinal") else "reject"
            best = max(((text_similarity(figure, it.texts), ii) for ii, it in enumerate(items)
                        if it.kind == wanted and it.page in figure_pages), default=(0.0, None))
            if best[0] >= FOUND_AT:
                anchor = items[best[1]]
                by_figure[fi] = {ii for ii, it in enumerate(items) if it.page == anchor.page and it.figure_id == anchor.figure_id
                                 and it.figure_id is not None} | {best[1]}
                members = [items[ii] for ii in by_figure[fi]]
                pairs = [m for m in members if m.kind == "pair"]
        found = bool(pairs) if figure.get("retinal") else bool(members)
        if figure.get("caption"):
            c["captioned"] += 1
            c["found"] += found
            if figure.get("retinal"):
                c["retinal_captioned"] += 1
                c["retinal_found"] += found
        if not found:
            continue
        c["found_any"] += 1
        c["count_exact"] += len(members) == len(figure.get("panels") or [])
        if figure.get("caption"):
            score.caption_sims.append(max(text_similarity(figure, [m.figure_caption or (m.texts[0] if m.texts else "")])
                                          for m in members))
        if not _boxed(figure) and figure.get("retinal"):  # modality as multisets
            expected = [p for p in figure.get("panels") or [] if p.get("retinal")]
            got = Counter(m.modality for m in pairs)
            for panel in expected:
                c["modality_total"] += 1
                hit = next((m for m in AGREES.get(panel.get("modality"), set()) if got[m] > 0), None)
                if hit:
                    got[hit] -= 1
                    c["modality_hit"] += 1

    for fi, figure in enumerate(figures):
        if not figure.get("retinal") and any(items[ii].kind == "pair" for ii in by_figure[fi]):
            c["non_retinal_paired"] += 1

    boxed_pages = {f["page"] for f in figures if _boxed(f)}
    for fi, figure in enumerate(figures):
        for panel in figure.get("panels") or []:
            if panel.get("bbox") and panel.get("retinal"):
                c["panels_boxed"] += 1
    seen = seen_images if seen_images is not None else set()
    for ii, item in enumerate(items):
        if item.kind != "pair":
            continue
        c["pairs"] += 1
        c["queued"] += not item.auto
        hit = matched.get(ii)
        if item.page in boxed_pages:
            c["pairs_boxed"] += 1
        wrong = None
        if hit is not None:
            figure = figures[hit[0]]
            panel = figure["panels"][hit[1]]
            if panel.get("retinal"):
                c["panels_hit"] += 1
                c["pairs_hit"] += 1
                c["modality_total"] += 1
                agrees = modality_agrees(panel, item.modality)
                c["modality_hit"] += agrees
                wrong = None if agrees else "wrong_modality"
            else:
                wrong = "not_retinal"
            expected = expected_panel_texts(figure, panel)
            if expected:
                similarity = max(text_similarity(figure, item.panel_texts, want) for want in expected)
                score.panel_sims.append(similarity)
                if wrong is None and similarity < WRONG_CAPTION_BELOW:
                    wrong = "wrong_caption"
        else:
            owner = next((f for fi, f in enumerate(figures) if ii in by_figure[fi]), None)
            if owner is None:
                wrong = "not_a_figure"
            elif _boxed(owner):
                overlaps = [iou(item.bbox, p["bbox"]) for p in owner["panels"]] if item.bbox else []
                inside = [inside_share(item.bbox, p["bbox"]) for p in owner["panels"]] if item.bbox else []
                if overlaps and max(overlaps) >= IOU_MATCH:
                    wrong = "duplicate"
                elif inside and max(inside) >= 0.8:
                    wrong = "part_of_panel"  # a piece of one truth panel (a cell of a grid the truth counts whole)
                else:
                    wrong = "wrong_box"
            elif not owner.get("retinal"):
                wrong = "not_retinal"
            elif owner.get("caption") and text_similarity(owner, item.texts) < WRONG_CAPTION_BELOW:
                wrong = "wrong_caption"
        if item.image and item.image in seen and wrong is None:
            wrong = "duplicate"
        if item.image:
            seen.add(item.image)
        if item.auto:
            c["auto_accepted"] += 1
            if wrong:
                c["auto_wrong"] += 1
                score.wrong[wrong] += 1

    if page_lines:
        c["trap_captions"] = _trap_captions(items, figures, page_lines)
    return score


def label_lines(pdf) -> dict[int, list[str]]:
    """Per page, normalised lines that open with a figure label word or carry a dot leader."""
    import pymupdf

    lines: dict[int, list[str]] = {}
    with pymupdf.open(pdf) as doc:
        for page in doc:
            for line in page.get_text().splitlines():
                if LABEL_LINE.match(line) or "....." in line or "…" * 3 in line:
                    lines.setdefault(page.number + 1, []).append(norm(line))
    return lines


def _trap_captions(items: list[Item], figures: list[dict], page_lines: dict[int, list[str]]) -> int:
    """Items whose text matches no truth caption but starts like a list-of-figures or body line."""
    traps = 0
    all_lines = [line for lines in page_lines.values() for line in lines]
    for item in items:
        text = item.panel_text
        if not text or any(text_similarity(f, [text]) >= 0.5 for f in figures if f.get("caption")):
            continue
        start = norm(text)[:30]
        if start and any(start[:20] in norm(f.get(k) or "", f.get("language")) for f in figures for k in ("caption", "caption_en")):
            continue
        traps += bool(start) and any(start[:20] in line for line in all_lines)
    return traps
