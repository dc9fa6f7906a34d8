"""The real-document corpus: its sources, its truth, its two halves and the reserved digests.

`sources.jsonl` names each document (repository, commit, path, sha256); `truth.jsonl` holds one
line per figure. Both are described in `bench/corpus/README.md`. A document's half is decided once,
by its digest: `int(sha256[:8], 16) % 100 < TUNE_SHARE` is the tune half, the rest the check half;
a source line may pin `"half": "tune"` (the former development set joined the tune half).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "sources.jsonl"
TRUTH = HERE / "truth.jsonl"
RESERVED = HERE.parents[2] / "shared" / "reserved.sha256"
TUNE_SHARE = 60
HALVES = ("tune", "check")


class CorpusError(ValueError):
    """A corpus file that cannot be read: the message names the file and line."""


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CorpusError(f"{path}: {exc.strerror or exc}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise CorpusError(f"{path}:{number}: not a JSON line ({exc})") from None
        if not isinstance(row, dict):
            raise CorpusError(f"{path}:{number}: not a JSON object")
        rows.append(row)
    return rows


def half_of(source: dict) -> str:
    """'tune' or 'check': pinned by the source line, else from the digest."""
    pinned = source.get("half")
    if pinned in HALVES:
        return pinned
    return "tune" if int(source["sha256"][:8], 16) % 100 < TUNE_SHARE else "check"


def read_sources(path: Path = SOURCES) -> list[dict]:
    sources = read_jsonl(path)
    names = set()
    for number, source in enumerate(sources, start=1):
        for key in ("name", "repository", "commit", "path", "sha256"):
            if not source.get(key):
                raise CorpusError(f"{path}: document {number}: no {key!r}")
        if source["name"] in names:
            raise CorpusError(f"{path}: document {source['name']!r} listed twice")
        names.add(source["name"])
        source["half"] = half_of(source)
    return sources


def read_truth(path: Path = TRUTH) -> dict[str, list[dict]]:
    """Truth figures per document name."""
    by_doc: dict[str, list[dict]] = defaultdict(list)
    for number, figure in enumerate(read_jsonl(path), start=1):
        if "doc" not in figure or "page" not in figure:
            raise CorpusError(f"{path}: figure {number}: needs 'doc' and 'page'")
        by_doc[figure["doc"]].append(figure)
    return by_doc


def reserved_digests(path: Path = RESERVED) -> set[str]:
    """Digests kept for independent checks (one per line, first word); empty when there is no list."""
    if not path.is_file():
        return set()
    return {line.split()[0].lower() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def annotated_pages(source: dict) -> range | None:
    """Pages (1-based) whose figures are all in the truth; None when the whole document is."""
    pages = source.get("annotated_pages")
    return range(pages[0], pages[1] + 1) if pages else None


def from_sample_truth(rows) -> dict[str, list[dict]]:
    """Corpus-form truth (per document name) from a generated atlas's panel truth (`PanelTruth` rows).

    Lets the corpus scorer be checked where the answer is known: one figure per (book, page,
    figure id), its panels with their boxes, modality and canonical caption as panel text.
    """
    figures: dict[tuple, dict] = {}
    for row in rows:
        key = (row.pdf, row.page, row.figure_id)
        language = "zh" if row.caption_zh else "en"
        text = row.caption_zh or row.caption_en
        figure = figures.setdefault(key, {
            "doc": Path(row.pdf).stem, "page": row.page, "label": None, "number": row.figure_id, "language": language,
            "caption": None, "caption_page": row.caption_page, "caption_bbox": list(row.caption_bbox),
            "bbox": list(row.figure_bbox), "kind": "clean", "retinal": False, "raster": "one_raster" if row.stitched else "separate",
            "panels": [],
        })
        modality = row.sublabel if row.sublabel in ("ICGA", "red-free") else row.modality
        figure["panels"].append({"bbox": list(row.bbox), "label": row.panel, "modality": modality if row.pair else "diagram",
                                 "retinal": bool(row.pair), "text": text})
        figure["retinal"] = figure["retinal"] or bool(row.pair)
    for figure in figures.values():
        texts = list(dict.fromkeys(p["text"] for p in figure["panels"] if p["text"]))
        figure["caption"] = " ".join(texts) or None
        if len(figure["panels"]) == 1:
            figure["panels"][0]["text"] = None
    by_doc: dict[str, list[dict]] = defaultdict(list)
    for figure in figures.values():
        by_doc[figure["doc"]].append(figure)
    return by_doc
