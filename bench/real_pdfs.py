"""Build quality on real PDFs against a hand-made truth (one JSON line per figure).

Reads the PDFs and `truth.jsonl` from a folder given on the command line (default
`../shared/realpdfs` next to the repository); nothing from that folder is copied anywhere. Each
PDF goes through steps 1-3 (`curation.build.process_document`) in a fresh work directory, and
the bench prints per document and overall:

* figure recall over captioned figures: a truth figure is found when a pair (retinal figures) or
  a `non_retinal_figure` reject (the rest) on its page or its caption's page carries its caption,
  normalised text similarity >= 0.8. A figure's pairs count together: the texts of its panels,
  joined in panel order, are one candidate, and each single pair's or reject's text is another;
  a leading copy of the figure's own label is ignored;
* the same over retinal captioned figures;
* panel-count exact rate over found figures (pairs and rejects that carry the figure's number,
  counted together: a flow chart beside an OCT scan is a panel kept as a reject);
* caption similarity over found figures (mean, and share >= 0.9);
* modality agreement on the retinal panels of found retinal figures (as multisets);
* non-retinal figures that became pairs (a pair inside the figure's box or carrying its caption);
* pairs that match no truth figure;
* pages per second of steps 1-3;
* list-of-figures and body-text lines published as captions: a pair or reject whose text matches
  no truth caption but starts like a page line that opens with a figure label word or carries a
  dot leader.

    .venv/bin/python bench/real_pdfs.py                       # ../shared/realpdfs
    .venv/bin/python bench/real_pdfs.py /path/to/pdfs --json out.json
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import re
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pymupdf  # noqa: E402

from curation.build import BuildOptions, process_document  # noqa: E402
from foundation.labels import label_key  # noqa: E402
from foundation.records import DocumentRun  # noqa: E402
from pipeline.clean import normalise_for_match  # noqa: E402

FOUND_AT = 0.8
GOOD_CAPTION = 0.9
LABEL_LINE = re.compile(r"^\s*(figure|fig\.?|figura|abbildung|abb\.|rys\.?|rysunek|图|圖|図)\s*\d", re.IGNORECASE)


def _norm(text: str | None, language: str) -> str:
    return normalise_for_match(text or "", "zh" if language == "zh" else "en").replace("-", "")


def _ratio(a: str, b: str) -> float:
    if not a or not b:
        return 0.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def _without_label(text: str, label: str | None, language: str) -> str:
    normal = _norm(text, language)
    label_key_text = _norm(label, language)
    if label_key_text and normal.startswith(label_key_text):
        normal = normal[len(label_key_text):].strip()
    return normal


def _inside_share(inner, outer) -> float:
    ix = max(0.0, min(inner[2], outer[2]) - max(inner[0], outer[0]))
    iy = max(0.0, min(inner[3], outer[3]) - max(inner[1], outer[1]))
    area = (inner[2] - inner[0]) * (inner[3] - inner[1])
    return ix * iy / area if area > 0 else 0.0


def _share(hit: int, total: int) -> float | None:
    return round(hit / total, 3) if total else None


class _Candidate:
    """Something the build published or kept for a figure: one pair group or one reject."""

    def __init__(self, kind: str, page: int, figure_id: str | None, texts: list[str], modalities: list[str], items: int, bboxes: list) -> None:
        self.kind, self.page, self.figure_id, self.texts = kind, page, figure_id, texts
        self.modalities, self.items, self.bboxes = modalities, items, bboxes
        self.panels = items


def _candidates(run: DocumentRun) -> list[_Candidate]:
    groups = defaultdict(list)
    for pair in run.pairs:
        groups[(pair.page, pair.figure_id)].append(pair)
    found = []
    for (page, figure_id), pairs in groups.items():
        pairs.sort(key=lambda p: (label_key(p.panel) if p.panel else (), p.panel_index or 0))
        distinct: list[str] = []
        for language in ("caption_zh", "caption_en"):  # each printed language on its own, panels joined
            texts = list(dict.fromkeys(getattr(p, language) for p in pairs if getattr(p, language)))
            distinct += texts + ([" ".join(texts)] if len(texts) > 1 else [])
        distinct += list(dict.fromkeys(p.figure_caption for p in pairs if p.figure_caption))
        found.append(_Candidate("pair", page, figure_id, distinct,
                                [p.modality for p in pairs], len(pairs), [p.bbox for p in pairs]))
    rejects = defaultdict(list)
    for reject in run.rejects:
        if reject.kind == "non_retinal_figure" and reject.page is not None:
            rejects[(reject.page, reject.figure_id or f"bbox{reject.bbox}")].append(reject)
    for (page, figure_id), items in rejects.items():
        texts = list(dict.fromkeys(r.caption for r in items if r.caption))
        found.append(_Candidate("reject", page, items[0].figure_id, texts, [], len(items), [r.bbox for r in items if r.bbox]))
    # a figure's panels are its pairs and its non-retinal panel rejects together (a flow chart
    # beside an OCT scan is one panel of the figure, kept as a reject)
    panels = Counter()
    for candidate in found:
        if candidate.figure_id is not None:
            panels[(candidate.page, candidate.figure_id)] += candidate.items
    for candidate in found:
        candidate.panels = panels[(candidate.page, candidate.figure_id)] if candidate.figure_id is not None else candidate.items
    return found


def _similarity(figure: dict, candidate: _Candidate) -> float:
    best = 0.0
    for language, caption, label in (
        (figure["language"], figure.get("caption"), figure.get("figure_label")),
        ("en", figure.get("caption_en"), figure.get("figure_label_en")),
    ):
        if not caption:
            continue
        expected = _norm(caption, language)
        for text in candidate.texts:
            best = max(best, _ratio(expected, _without_label(text, label, language)))
    return best


def _label_lines(pdf: Path) -> dict[int, list[str]]:
    """Per page, normalised lines that open with a figure label word or carry a dot leader."""
    lines: dict[int, list[str]] = defaultdict(list)
    with pymupdf.open(pdf) as doc:
        for page in doc:
            for line in page.get_text().splitlines():
                if LABEL_LINE.match(line) or "....." in line or "…" * 3 in line:
                    lines[page.number + 1].append(_norm(line, "zh" if re.search(r"[\u4e00-\u9fff]", line) else "en"))
    return lines


def score_document(pdf: Path, run: DocumentRun, figures: list[dict]) -> dict:
    candidates = _candidates(run)
    scored = []
    for fi, figure in enumerate(figures):
        if not figure.get("caption"):
            continue
        pages = {figure["page"], figure.get("caption_page") or figure["page"]}
        wanted = "pair" if figure["retinal"] else "reject"
        for ci, candidate in enumerate(candidates):
            if candidate.kind == wanted and candidate.page in pages:
                scored.append((_similarity(figure, candidate), fi, ci))
    taken_figures, taken_candidates, found = set(), set(), {}
    for similarity, fi, ci in sorted(scored, reverse=True):
        if similarity < FOUND_AT or fi in taken_figures or ci in taken_candidates:
            continue
        taken_figures.add(fi)
        taken_candidates.add(ci)
        found[fi] = (ci, similarity)

    captioned = [fi for fi, f in enumerate(figures) if f.get("caption")]
    retinal = [fi for fi in captioned if figures[fi]["retinal"]]
    panel_exact = sum(candidates[ci].panels == figures[fi]["n_panels"] for fi, (ci, _) in found.items())
    similarities = [s for _, s in found.values()]
    modality_hit = modality_total = 0
    for fi, (ci, _) in found.items():
        expected = Counter(m for m in figures[fi].get("modalities") or [] if m)
        if not figures[fi]["retinal"] or not expected:
            continue
        got = Counter(candidates[ci].modalities)
        modality_total += sum(expected.values())
        modality_hit += sum(min(count, got[m]) for m, count in expected.items())

    non_retinal_paired = 0
    for fi, figure in enumerate(figures):
        if figure["retinal"]:
            continue
        pages = {figure["page"], figure.get("caption_page") or figure["page"]}
        for candidate in candidates:
            if candidate.kind != "pair" or candidate.page not in pages:
                continue
            inside = any(_inside_share(box, figure["bbox"]) >= 0.5 for box in candidate.bboxes) and candidate.page == figure["page"]
            if inside or (figure.get("caption") and _similarity(figure, candidate) >= FOUND_AT):
                non_retinal_paired += 1
                break

    unmatched_pairs = 0
    for pair in run.pairs:
        on_page = [f for f in figures if f["page"] == pair.page]
        inside = any(_inside_share(pair.bbox, f["bbox"]) >= 0.5 for f in on_page)
        probe = _Candidate("pair", pair.page, pair.figure_id, [" ".join(filter(None, [pair.caption_en, pair.caption_zh]))], [], 1, [])
        captioned_as = any(f.get("caption") and _similarity(f, probe) >= FOUND_AT for f in figures)
        unmatched_pairs += not (inside or captioned_as)

    label_lines = _label_lines(pdf)
    trap_captions = 0
    texts = [(p.page, " ".join(filter(None, [p.caption_en, p.caption_zh]))) for p in run.pairs]
    texts += [(r.page, r.caption) for r in run.rejects if r.kind == "non_retinal_figure" and r.caption]
    for page, text in texts:
        probe = _Candidate("pair", page, None, [text], [], 1, [])
        if any(f.get("caption") and _similarity(f, probe) >= 0.5 for f in figures):
            continue
        start = _norm(text, "zh" if re.search(r"[\u4e00-\u9fff]", text) else "en")[:30]
        if start and any(
            start[:20] in _norm(f.get(key) or "", lang)
            for f in figures for key, lang in (("caption", f["language"]), ("caption_en", "en"))
        ):
            continue  # a panel's caption (title + its own text) taken from the figure's true caption
        if start and any(start[:20] in line for lines in label_lines.values() for line in lines):
            trap_captions += 1

    seconds = sum(v for k, v in run.seconds.items() if k != "write")
    return {
        "pdf": pdf.name,
        "status": run.status.value,
        "pages": run.page_count,
        "figures": len(figures),
        "captioned": len(captioned),
        "found": len([fi for fi in found if fi in captioned]),
        "retinal_captioned": len(retinal),
        "retinal_found": len([fi for fi in found if fi in retinal]),
        "figure_recall": _share(len(found), len(captioned)),
        "retinal_recall": _share(len([fi for fi in found if fi in retinal]), len(retinal)),
        "panel_count_exact": _share(panel_exact, len(found)),
        "panel_exact_n": panel_exact,
        "caption_mean": round(sum(similarities) / len(similarities), 3) if similarities else None,
        "caption_ge_0_9": _share(sum(s >= GOOD_CAPTION for s in similarities), len(similarities)),
        "caption_good_n": sum(s >= GOOD_CAPTION for s in similarities),
        "modality_agreement": _share(modality_hit, modality_total),
        "modality_hit": modality_hit,
        "modality_total": modality_total,
        "non_retinal_paired": non_retinal_paired,
        "pairs": len(run.pairs),
        "non_retinal_rejects": sum(r.kind == "non_retinal_figure" for r in run.rejects),
        "unmatched_pairs": unmatched_pairs,
        "trap_captions": trap_captions,
        "seconds": round(seconds, 2),
        "pages_per_s": round(run.page_count / seconds, 3) if seconds else None,
    }


def _read_truth(path: Path) -> dict[str, list[dict]]:
    by_pdf: dict[str, list[dict]] = defaultdict(list)
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                row = json.loads(line)
                by_pdf[row["pdf"]].append(row)
            except (ValueError, KeyError) as exc:
                raise SystemExit(f"{path}:{number}: invalid truth line ({exc})") from exc
    return by_pdf


def _cell(value) -> str:
    return "-" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[1] / ".." / "shared" / "realpdfs"
    parser.add_argument("folder", type=Path, nargs="?", default=None, help=f"Folder with the PDFs and truth.jsonl (default {default}).")
    parser.add_argument("--json", type=Path, default=None, help="Also write the per-document rows here.")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    folder = (arguments.folder or default).resolve()
    truth_path = folder / "truth.jsonl"
    if arguments.folder is None and not truth_path.is_file():
        print(f"skipped: no real documents at {folder} (give a folder holding PDFs and truth.jsonl)")
        return
    if not truth_path.is_file():
        raise SystemExit(f"{truth_path}: no truth file (give the folder holding the PDFs and truth.jsonl)")
    truth = _read_truth(truth_path)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        options = BuildOptions(work_dir=Path(workdir) / "work", registry_root=Path(workdir) / "registry")
        for pdf in sorted(folder.glob("*.pdf")):
            started = time.perf_counter()
            run = process_document(pdf, options)
            row = score_document(pdf, run, truth.get(pdf.name, []))
            row["wall_s"] = round(time.perf_counter() - started, 2)
            rows.append(row)
    columns = [("pdf", 38), ("pages", 5), ("captioned", 5), ("figure_recall", 7), ("retinal_recall", 7), ("panel_count_exact", 7),
               ("caption_mean", 7), ("caption_ge_0_9", 7), ("modality_agreement", 7), ("non_retinal_paired", 5),
               ("pairs", 5), ("unmatched_pairs", 5), ("trap_captions", 5), ("pages_per_s", 7)]
    names = {"pdf": "document", "captioned": "capt", "figure_recall": "recall", "retinal_recall": "ret.rec",
             "panel_count_exact": "panels=", "caption_mean": "capsim", "caption_ge_0_9": "cap>=.9", "modality_agreement": "modal.",
             "non_retinal_paired": "nrP", "unmatched_pairs": "unm", "trap_captions": "trap", "pages_per_s": "pg/s"}
    print(" ".join(f"{names.get(c, c)[:w]:<{w}}" if c == "pdf" else f"{names.get(c, c)[:w]:>{w}}" for c, w in columns))
    for row in rows:
        print(" ".join(f"{_cell(row[c])[:w]:<{w}}" if c == "pdf" else f"{_cell(row[c]):>{w}}" for c, w in columns))
    total = Counter()
    for row in rows:
        for key in ("pages", "captioned", "found", "retinal_captioned", "retinal_found", "panel_exact_n", "caption_good_n",
                    "modality_hit", "modality_total", "non_retinal_paired", "pairs", "unmatched_pairs", "trap_captions"):
            total[key] += row[key]
    seconds = sum(row["seconds"] for row in rows)
    found_sims = [row["caption_mean"] * row["found"] for row in rows if row["caption_mean"] is not None]
    print()
    print(f"overall: figure recall {_cell(_share(total['found'], total['captioned']))} ({total['found']}/{total['captioned']} captioned figures); "
          f"retinal {_cell(_share(total['retinal_found'], total['retinal_captioned']))} ({total['retinal_found']}/{total['retinal_captioned']})")
    print(f"         panel count exact {_cell(_share(total['panel_exact_n'], total['found']))}; caption similarity mean "
          f"{_cell(round(sum(found_sims) / total['found'], 3) if total['found'] else None)}, >= 0.9 on "
          f"{_cell(_share(total['caption_good_n'], total['found']))} of found figures")
    print(f"         modality agreement {_cell(_share(total['modality_hit'], total['modality_total']))} "
          f"({total['modality_hit']}/{total['modality_total']} retinal panels of found figures)")
    print(f"         non-retinal figures paired {total['non_retinal_paired']}; pairs {total['pairs']}, matching no truth figure "
          f"{total['unmatched_pairs']}; list-of-figures/body lines published as captions {total['trap_captions']}")
    print(f"         {total['pages']} pages in {seconds:.1f} s of steps 1-3: {_cell(round(total['pages'] / seconds, 3) if seconds else None)} pages/s")
    failed = [f"{row['pdf']}: {row['status']}" for row in rows if row["status"] == "failed"]
    if failed:
        print("failed: " + "; ".join(failed))
    if arguments.json:
        arguments.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
