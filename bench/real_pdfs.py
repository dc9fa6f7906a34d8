"""Build quality on the real-document corpus, the tune and check halves side by side.

Reads the corpus PDFs (`<name>.pdf`, extracted by `bench/corpus/get.py`) from a folder given on
the command line or in `MMR_CORPUS`, and the truth and sources from `bench/corpus/`. Each document
goes through steps 1-3 (`curation.build.process_document`); `bench/corpus/score.py` scores it (panel
boxes matched by IoU >= 0.5 where the truth has boxes, else by caption text). Prints the tune half
per document, then both halves overall side by side: figure recall, panel recall and precision,
panel count exact, caption similarity (whole caption and per-panel text), modality agreement,
share queued, and among auto-accepted pairs the share that is wrong, by kind; pages per second.

The check half is for numbers only: its documents are not listed one by one (`--per-doc-check`
does, for a final report only).

    .venv/bin/python bench/real_pdfs.py ~/mmr-corpus
    .venv/bin/python bench/real_pdfs.py ~/mmr-corpus --half tune --doc octseg_software_manual
    .venv/bin/python bench/real_pdfs.py ~/mmr-corpus --work-dir .bench-cache --json rows.json
    .venv/bin/python bench/real_pdfs.py ~/mmr-corpus --as-scans --half tune --doc NAME   # simulated scans

`--as-scans` builds image-only copies of the chosen documents (`bench/corpus/scans.py`: rendered,
turned slightly, noisy, JPEG) instead of the documents themselves: the scan path on real layouts.
Its numbers are a simulation and are labelled so.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.corpus.corpus import HALVES, SOURCES, TRUTH, CorpusError, annotated_pages, read_sources, read_truth  # noqa: E402
from bench.corpus.scans import rasterise  # noqa: E402
from bench.corpus.score import WRONG_KINDS, DocScore, label_lines, score_document, summarise  # noqa: E402
from curation.build import BuildOptions, process_document  # noqa: E402

COLUMNS = [("figure_recall", "fig.rec"), ("retinal_recall", "ret.rec"), ("panel_recall", "pan.rec"), ("panel_precision", "pan.prec"),
           ("panel_count_exact", "panels="), ("caption_mean", "capsim"), ("caption_ge_0_9", "cap>=.9"),
           ("panel_text_ge_0_9", "ptxt>=.9"), ("modality_agreement", "modal."), ("queued", "queued"),
           ("auto_accepted", "auto"), ("auto_wrong", "autoWrong"), ("non_retinal_paired", "nrP"), ("trap_captions", "trap"),
           ("pages_per_s", "pg/s")]


def cell(value) -> str:
    return "-" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))


def print_documents(scores: list[DocScore]) -> None:
    print(f"{'document':<40} {'pages':>5} {'capt':>4} " + " ".join(f"{title:>8}" for _, title in COLUMNS))
    for score in scores:
        metrics = score.metrics()
        print(f"{score.name[:40]:<40} {score.pages:>5} {score.counts['captioned']:>4} "
              + " ".join(f"{cell(metrics[key]):>8}" for key, _ in COLUMNS) + ("" if score.status == "success" else f"  [{score.status}]"))


def print_halves(totals: dict[str, DocScore]) -> None:
    print(f"{'':<26}" + "".join(f"{half:>14}" for half in totals))
    rows = [("documents", lambda s: s.counts["documents"]), ("pages", lambda s: s.pages),
            ("captioned figures", lambda s: s.counts["captioned"]), ("retinal captioned", lambda s: s.counts["retinal_captioned"]),
            ("retinal panels (boxed)", lambda s: s.counts["panels_boxed"]), ("pairs", lambda s: s.counts["pairs"])]
    rows += [(title if key != "auto_wrong" else "auto-accepted wrong", (lambda k: lambda s: s.metrics()[k])(key))
             for key, title in COLUMNS]
    rows += [(f"  wrong: {kind}", (lambda k: lambda s: s.wrong[k])(kind)) for kind in WRONG_KINDS]
    for title, get in rows:
        print(f"{title:<26}" + "".join(f"{cell(get(total)):>14}" for total in totals.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, nargs="?", default=os.environ.get("MMR_CORPUS"),
                        help="Corpus folder holding <name>.pdf (default $MMR_CORPUS).")
    parser.add_argument("--sources", type=Path, default=SOURCES)
    parser.add_argument("--truth", type=Path, default=TRUTH)
    parser.add_argument("--half", choices=("both", *HALVES), default="both")
    parser.add_argument("--doc", action="append", default=None, help="Only this document (repeatable).")
    parser.add_argument("--work-dir", type=Path, default=None, help="Keep build records here (re-runs reuse them).")
    parser.add_argument("--per-doc-check", action="store_true", help="Also list the check half per document.")
    parser.add_argument("--json", type=Path, default=None, help="Also write per-document rows here.")
    parser.add_argument("--as-scans", action="store_true", help="Build simulated scans (image-only copies) of the documents.")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if arguments.folder is None:
        print("skipped: no corpus folder (give one, or set MMR_CORPUS; bench/corpus/get.py makes it)")
        return
    folder = Path(arguments.folder).resolve()
    try:
        sources = read_sources(arguments.sources)
        truth = read_truth(arguments.truth)
    except CorpusError as exc:
        raise SystemExit(f"error: {exc}") from None
    halves = HALVES if arguments.half == "both" else (arguments.half,)
    chosen = [s for s in sources if s["half"] in halves and (not arguments.doc or s["name"] in arguments.doc)]
    missing = [s["name"] for s in chosen if not (folder / f"{s['name']}.pdf").is_file()]
    chosen = [s for s in chosen if s["name"] not in missing]
    scores: dict[str, list[DocScore]] = {half: [] for half in halves}
    seen_images: set = set()
    with tempfile.TemporaryDirectory() as temporary:
        work = arguments.work_dir or Path(temporary)
        options = BuildOptions(work_dir=work / "work", registry_root=work / "registry")
        for source in chosen:
            pdf = folder / f"{source['name']}.pdf"
            started = time.perf_counter()
            built = rasterise(pdf, work / "scans" / pdf.name) if arguments.as_scans else pdf
            run = process_document(built, options)
            score = score_document(source["name"], source["half"], run, truth.get(source["name"], []), annotated_pages(source),
                                   label_lines(pdf), seen_images)
            score.counts["documents"] = 1
            scores[source["half"]].append(score)
            print(f"  {source['half']:<5} {source['name']}: {score.pages} pages, {time.perf_counter() - started:.1f} s", file=sys.stderr)
    if "tune" in scores:
        print("tune half, per document")
        print_documents(scores["tune"])
        print()
    if "check" in scores and arguments.per_doc_check:
        print("check half, per document")
        print_documents(scores["check"])
        print()
    totals = {half: summarise(half, half, docs) for half, docs in scores.items()}
    print("overall" + (" (simulated scans of the documents, not the documents themselves)" if arguments.as_scans else ""))
    print_halves(totals)
    if missing:
        print(f"missing: {len(missing)} document(s) not in {folder} (bench/corpus/get.py extracts them): {', '.join(missing[:8])}"
              + (" …" if len(missing) > 8 else ""))
    failed = [s.name for docs in scores.values() for s in docs if s.status == "failed"]
    if failed:
        print("failed: " + ", ".join(failed))
    if arguments.json:
        rows = [{"name": s.name, "half": s.half, "status": s.status, "pages": s.pages, **s.metrics(), "wrong": dict(s.wrong)}
                for docs in scores.values() for s in docs]
        arguments.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
