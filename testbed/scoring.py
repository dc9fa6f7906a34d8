"""Score pipeline output against a truth file (`truth.jsonl` from the sample atlas, or a user's own).

Truth lines carry pdf, page, panel bbox (PDF points), figure id, panel letter, modality and the
canonical captions; see testbed.sample_atlas.PanelTruth.
"""

from __future__ import annotations

import difflib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from pipeline.clean import normalise_for_match
from foundation.records import BBox, DocumentRun, Pair
from testbed.sample_atlas import PanelTruth

MODALITIES = ["CFP", "FFA", "OCT", "other"]


def iou(a: BBox, b: BBox) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _ratio(hit: int, total: int) -> float | None:
    return round(hit / total, 4) if total else None


def _breakdowns(truth: PanelTruth) -> list[str]:
    return [
        "all",
        "scanned" if truth.scanned else "born_digital",
        "stitched" if truth.stitched else "separate",
    ]


def extraction_recall(truth: Sequence[PanelTruth], extractions: Iterable[DocumentRun], threshold: float = 0.5) -> dict:
    """Share of truth panels covered by a step-1 region (IoU ≥ threshold with the panel, or with
    the whole figure for stitched figures), by scanned/born-digital; plus caption-id coverage."""
    regions: dict[tuple[str, int], list[BBox]] = defaultdict(list)
    figure_ids: dict[str, set[str]] = defaultdict(set)
    for extraction in extractions:
        name = Path(extraction.source.path).name
        for page in extraction.pages:
            regions[(name, page.page)].extend(r.bbox for r in page.regions)
            figure_ids[name].update(c.figure_id for c in page.captions)
    found: Counter[str] = Counter()
    total: Counter[str] = Counter()
    missed = []
    for panel in truth:
        boxes = regions.get((panel.pdf, panel.page), [])
        hit = any(iou(box, panel.bbox) >= threshold for box in boxes) or (
            panel.stitched and any(iou(box, panel.figure_bbox) >= threshold for box in boxes)
        )
        for key in _breakdowns(panel):
            total[key] += 1
            found[key] += hit
        if not hit:
            missed.append(f"{panel.pdf} p{panel.page} {panel.figure_id}{panel.panel or ''}")
    wanted_ids = {(p.pdf, p.figure_id) for p in truth}
    missing_ids = sorted(f"{pdf} {fid}" for pdf, fid in wanted_ids if fid not in figure_ids.get(pdf, set()))
    return {
        "recall": {key: _ratio(found[key], total[key]) for key in total},
        "panels": dict(total),
        "missed_panels": missed,
        "caption_ids_missing": missing_ids,
    }


def _similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def match_pairs(truth: Sequence[PanelTruth], pairs: Sequence[Pair], threshold: float = 0.5) -> dict[int, int]:
    """Greedy one-to-one matching of pairs to truth panels by pdf, page and bbox IoU."""
    candidates = []
    for ti, panel in enumerate(truth):
        for pi, pair in enumerate(pairs):
            if pair.source_pdf == panel.pdf and pair.page == panel.page:
                overlap = iou(pair.bbox, panel.bbox)
                if overlap >= threshold:
                    candidates.append((overlap, ti, pi))
    matched: dict[int, int] = {}
    used: set[int] = set()
    for _, ti, pi in sorted(candidates, reverse=True):
        if ti not in matched and pi not in used:
            matched[ti] = pi
            used.add(pi)
    return matched


def truth_pair_id(panel: PanelTruth) -> str:
    return f"{panel.book}/{panel.figure_id}/{panel.panel or '-'}"


def score_pairs(
    truth: Sequence[PanelTruth],
    pairs: Sequence[Pair],
    *,
    is_kept: Callable[[Pair], bool] | None = None,
    excluded_other: Iterable[str] = (),
) -> dict:
    """Pair precision/recall/F1, caption accuracy, modality accuracy, review share and
    auto-accepted precision, overall and by scanned/born-digital and stitched/separate.

    `excluded_other`: ids of pairs classified 'other' that are not in `pairs` (a manifest
    leaves them out); they count as 'other' predictions in the modality confusion matrix.
    """
    is_kept = is_kept or (lambda p: p.modality != "other" and p.review_status != "rejected")
    truth_pairs = [t for t in truth if t.pair]
    kept = [p for p in pairs if is_kept(p)]
    matched = match_pairs(truth_pairs, kept)
    pair_to_truth = {pi: ti for ti, pi in matched.items()}

    def correct(pi: int) -> bool:
        ti = pair_to_truth.get(pi)
        if ti is None:
            return False
        t, p = truth_pairs[ti], kept[pi]
        return t.figure_id == p.figure_id and t.panel == p.panel

    groups: dict[str, dict[str, int]] = defaultdict(Counter)
    for ti, panel in enumerate(truth_pairs):
        for key in _breakdowns(panel):
            groups[key]["truth"] += 1
            groups[key]["tp"] += ti in matched and correct(matched[ti])
    for pi, pair in enumerate(kept):
        ti = pair_to_truth.get(pi)
        if ti is not None:
            keys = _breakdowns(truth_pairs[ti])
        else:
            keys = ["all", "scanned" if pair.scanned else "born_digital", "stitched" if pair.stitched else "separate"]
        for key in keys:
            groups[key]["predicted"] += 1
    pair_scores = {}
    for key, counts in groups.items():
        precision = _ratio(counts["tp"], counts["predicted"])
        recall = _ratio(counts["tp"], counts["truth"])
        f1 = round(2 * precision * recall / (precision + recall), 4) if precision and recall else 0.0
        pair_scores[key] = {"precision": precision, "recall": recall, "f1": f1, **counts}

    captions: dict[str, dict] = {}
    for language in ("en", "zh"):
        per_group: dict[str, list[tuple[bool, float]]] = defaultdict(list)
        for ti, pi in matched.items():
            expected = getattr(truth_pairs[ti], f"caption_{language}")
            if not expected:
                continue
            got = getattr(kept[pi], f"caption_{language}") or ""
            a, b = normalise_for_match(expected, language), normalise_for_match(got, language)
            for key in _breakdowns(truth_pairs[ti]):
                per_group[key].append((a == b, _similarity(a, b)))
        captions[language] = {
            key: {
                "exact_match": round(sum(e for e, _ in vals) / len(vals), 4),
                "mean_similarity": round(sum(s for _, s in vals) / len(vals), 4),
                "n": len(vals),
            }
            for key, vals in per_group.items()
        }

    # modality is judged over every truth panel matched by any pair, 'other' included
    all_matched = match_pairs(list(truth), list(pairs))
    confusion = {t: Counter() for t in MODALITIES}
    for ti, pi in all_matched.items():
        confusion[truth[ti].modality][pairs[pi].modality] += 1
    excluded_other = set(excluded_other)
    for ti, panel in enumerate(truth):
        if ti not in all_matched and truth_pair_id(panel) in excluded_other:
            confusion[panel.modality]["other"] += 1
    judged = sum(sum(row.values()) for row in confusion.values())
    modality_hits = sum(confusion[m][m] for m in MODALITIES)

    queued = [p for p in kept if p.review_status == "queued"]
    auto = [pi for pi, p in enumerate(kept) if p.review_status == "auto_accepted"]
    return {
        "pairs": pair_scores,
        "captions": captions,
        "modality": {
            "accuracy": _ratio(modality_hits, judged),
            "n": judged,
            "confusion": {t: {p: confusion[t][p] for p in MODALITIES} for t in MODALITIES},
        },
        "review": {
            "share_queued": _ratio(len(queued), len(kept)),
            "queued": len(queued),
            "auto_accepted": len(auto),
            "auto_accepted_precision": _ratio(sum(correct(pi) for pi in auto), len(auto)),
        },
    }


def read_truth_file(path: Path) -> list[PanelTruth]:
    """Truth rows of a `truth.jsonl`; a ValueError naming the file (and line) when it is unusable.

    A directory, an empty file, a line that is not UTF-8 or not a truth row are all errors: a
    score against no truth would read as a perfect (or meaningless) result.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, not a truth file (give truth.jsonl)")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such truth file") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read truth file ({exc.strerror or exc})") from None
    rows: list[PanelTruth] = []
    for line_number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"{path}:{line_number}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
            ) from None
        if not line.strip():
            continue
        try:
            rows.append(PanelTruth.model_validate_json(line))
        except ValueError as exc:
            first = exc.errors()[0] if hasattr(exc, "errors") else {"loc": (), "msg": str(exc)}
            where = ".".join(str(part) for part in first["loc"])
            raise ValueError(
                f"{path}:{line_number}: invalid truth row ({where + ': ' if where else ''}{first['msg']})"
            ) from None
    if not rows:
        raise ValueError(f"{path}: empty truth file (no truth rows to score against)")
    return rows


def score_truth_file(truth_path: Path, registry_root: Path, ref: str) -> dict:
    """Score a published version against a truth file (both checked, errors naming the file)."""
    truth = read_truth_file(truth_path)
    return score_manifest(truth, registry_root, ref)


def score_manifest(truth: Sequence[PanelTruth], registry_root: Path, ref: str) -> dict:
    """Score a published version: its rows, plus the pairs it excluded as 'other'."""
    from data_manifests import load_manifest

    loaded = load_manifest(registry_root, ref)
    meta, table = loaded
    # manifest rows carry every Pair field (image_path is the stored copy of image_file)
    pairs = [Pair.model_validate({**row, "image_file": row["image_path"]}) for row in table.to_pylist()]
    excluded = [e.pair_id for e in meta.excluded.pairs if e.reason == "modality_other"]
    report = score_pairs(truth, pairs, excluded_other=excluded)
    report["version"] = f"{meta.dataset}/{meta.version}"
    return report


# ---------------------------------------------------------------------------- by layout feature

_FIGURE_ID_SEPARATORS = str.maketrans({".": "-", "‐": "-", "–": "-", "—": "-", "－": "-", "．": "-"})


def same_figure_id(expected: str, found: str | None) -> bool:
    """Figure numbers agree whatever separator the printed style or the parser uses ('3.12' = '3-12')."""
    if found is None:
        return False
    return expected.strip().translate(_FIGURE_ID_SEPARATORS).lower() == found.strip().translate(_FIGURE_ID_SEPARATORS).lower()


def same_panel(truth: PanelTruth, pair: Pair) -> bool:
    """A panel's identity: its printed letter, or its reading-order position when it has none."""
    if truth.panel is not None:
        return (pair.panel or "").upper() == truth.panel.upper()
    if truth.panel_count == 1:
        return True
    index = getattr(truth, "panel_index", None)
    return pair.panel is None and index is not None and pair.panel_index == index


def caption_similarity(truth: PanelTruth, pair: Pair) -> float:
    """Normalised text similarity of the pair's caption to the canonical caption, in the printed script."""
    if truth.caption_zh:
        expected, got, language = truth.caption_zh, pair.caption_zh or "", "zh"
    else:
        expected, got, language = truth.caption_en or "", pair.caption_en or "", "en"
    return _similarity(normalise_for_match(expected, language), normalise_for_match(got, language))


def _inside_share(inner: BBox, outer: BBox) -> float:
    ix = max(0.0, min(inner[2], outer[2]) - max(inner[0], outer[0]))
    iy = max(0.0, min(inner[3], outer[3]) - max(inner[1], outer[1]))
    area = (inner[2] - inner[0]) * (inner[3] - inner[1])
    return ix * iy / area if area > 0 else 0.0


def _feature_keys(truth: PanelTruth | None, features: Sequence[str]) -> list[tuple[str, str]]:
    keys = [("all", "all")]
    if truth is None:
        return keys + [("attributed", "no")]
    return keys + [(feature, str(getattr(truth, feature, None))) for feature in features]


def score_layouts(
    truth: Sequence[PanelTruth],
    runs: Sequence[DocumentRun] = (),
    *,
    pairs: Sequence[Pair] | None = None,
    features: Sequence[str] | None = None,
    traps: Sequence = (),
    caption_threshold: float = 0.9,
) -> dict:
    """Pair precision/recall/F1, caption similarity, modality, review queue and auto-accepted
    precision, each overall and broken down by every layout feature of the truth.

    The build's result is its `DocumentRun` records (pairs and rejects) or, with `pairs`, the
    pairs of a published manifest. A pair counts as kept (a dataset pair) when its modality is
    not 'other' and it is not rejected. Kept pairs that overlap no truth panel are attributed to
    the truth figure that contains them (a merged region counts against that figure's layout),
    else only to 'all'. Non-retinal truth figures must give no kept pair.
    """
    from testbed.varied_atlas import LAYOUT_FEATURES

    features = list(features if features is not None else LAYOUT_FEATURES)
    all_pairs = list(pairs) if pairs is not None else [p for run in runs for p in run.pairs]
    rejects = [(Path(run.pdf).name, r) for run in runs for r in run.rejects]
    kept = [p for p in all_pairs if p.modality != "other" and p.review_status != "rejected"]
    truth = list(truth)
    matched_all = match_pairs(truth, all_pairs)
    truth_of = {pi: ti for ti, pi in matched_all.items()}
    counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
    pair_index = {id(p): i for i, p in enumerate(all_pairs)}

    def attributed(pair: Pair) -> PanelTruth | None:
        ti = truth_of.get(pair_index[id(pair)])
        if ti is not None:
            return truth[ti]
        holders = [
            t for t in truth
            if t.pdf == pair.source_pdf and t.page == pair.page and _inside_share(pair.bbox, t.figure_bbox) >= 0.5
        ]
        return holders[0] if holders else None

    def correct(t: PanelTruth, p: Pair) -> bool:
        return t.pair and same_figure_id(t.figure_id, p.figure_id) and same_panel(t, p)

    found_truth: dict[int, Pair] = {}
    for pair in kept:
        t = attributed(pair)
        ti = truth_of.get(pair_index[id(pair)])
        right = t is not None and ti is not None and correct(t, pair)
        if right:
            found_truth[ti] = pair
        for key in _feature_keys(t, features):
            c = counts[key]
            c["predicted"] += 1
            c["non_retinal_paired"] += t is not None and not t.pair
            c["queued"] += pair.review_status == "queued"
            if pair.review_status == "auto_accepted":
                c["auto"] += 1
                c["auto_right"] += right and pair.modality == t.modality
    for ti, t in enumerate(truth):
        keys = _feature_keys(t, features)
        pi = matched_all.get(ti)
        pair = all_pairs[pi] if pi is not None else None
        for key in keys:
            c = counts[key]
            c["truth"] += t.pair
            c["tp"] += ti in found_truth
            if pair is not None:
                c["modality_n"] += 1
                c["modality_right"] += pair.modality == t.modality
                if t.pair:
                    similarity = caption_similarity(t, pair)
                    c["caption_n"] += 1
                    c["caption_good"] += similarity >= caption_threshold
                    c["caption_sum_milli"] += int(round(similarity * 1000))
                    c["excluded_unseen"] += pair.modality == "other" and pair.review_status != "queued"
    # non-retinal figures kept out as typed rejects
    figures = {(t.pdf, t.page, t.figure_id): t for t in truth if not t.retinal}
    for (pdf, page, figure_id), t in figures.items():
        hit = any(
            r.kind == "non_retinal_figure" and name == pdf and r.page == page
            and (same_figure_id(figure_id, r.figure_id) or (r.bbox is not None and _inside_share(r.bbox, t.figure_bbox) >= 0.5))
            for name, r in rejects
        )
        for key in _feature_keys(t, features):
            counts[key]["non_retinal_figures"] += 1
            counts[key]["non_retinal_rejected"] += hit
    trap_hits = []
    for trap in traps:
        for pair in all_pairs:
            text = " ".join(filter(None, [pair.caption_en, pair.caption_zh]))
            if pair.source_pdf == trap.pdf and trap.marker in text:
                trap_hits.append(f"{pair.pair_id}: {trap.kind}")

    table: dict[str, dict[str, dict]] = defaultdict(dict)
    for (feature, value), c in sorted(counts.items()):
        precision = _ratio(c["tp"], c["predicted"]) if c["predicted"] else None
        recall = _ratio(c["tp"], c["truth"])
        f1 = round(2 * precision * recall / (precision + recall), 4) if precision and recall else (0.0 if c["truth"] else None)
        table[feature][value] = {
            "truth": c["truth"], "predicted": c["predicted"], "tp": c["tp"],
            "precision": precision, "recall": recall, "f1": f1,
            "caption_ge_threshold": _ratio(c["caption_good"], c["caption_n"]),
            "caption_mean": round(c["caption_sum_milli"] / 1000 / c["caption_n"], 4) if c["caption_n"] else None,
            "modality_accuracy": _ratio(c["modality_right"], c["modality_n"]),
            "retinal_excluded_unseen": c["excluded_unseen"],
            "share_queued": _ratio(c["queued"], c["predicted"]),
            "auto_accepted": c["auto"],
            "auto_accepted_precision": _ratio(c["auto_right"], c["auto"]),
            "non_retinal_paired": c["non_retinal_paired"],
            "non_retinal_figures": c["non_retinal_figures"],
            "non_retinal_rejected": c["non_retinal_rejected"],
        }
    return {"by_feature": dict(table), "overall": table["all"]["all"], "trap_captions": trap_hits}


def feature_table(
    report: dict,
    columns: Sequence[str] = (
        "truth", "predicted", "precision", "recall", "f1", "caption_ge_threshold", "modality_accuracy",
        "share_queued", "auto_accepted_precision", "non_retinal_paired",
    ),
) -> str:
    """The by-feature breakdown of `score_layouts` as aligned text, one row per feature value."""
    def cell(value) -> str:
        return "-" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))

    header = f"{'feature':<20} {'value':<20} " + " ".join(f"{name[:10]:>10}" for name in columns)
    lines = [header, "-" * len(header)]
    for feature, values in report["by_feature"].items():
        for value, row in values.items():
            lines.append(f"{feature:<20} {value:<20} " + " ".join(f"{cell(row.get(name)):>10}" for name in columns))
    return "\n".join(lines)


def pairs_from_manifest(registry_root: Path, ref: str) -> list[Pair]:
    """The pairs of a published version (rows carry every Pair field)."""
    from data_manifests import load_manifest

    meta, table = load_manifest(registry_root, ref)
    return [Pair.model_validate({**row, "image_file": row["image_path"]}) for row in table.to_pylist()]
