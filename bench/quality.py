"""Build quality on books drawn from the varied layout space, over several seeds.

Each seed writes a few small books (born-digital and scanned, see testbed.varied_atlas), builds
them with `curation.build.run_build` and scores the documents' pairs and rejects against the
truth with `testbed.scoring.score_layouts`. Prints pair F1 born-digital/scanned, recall for
side captions and stitched grids, caption similarity, modality, the review queue, auto-accepted
precision, and a table by layout feature.

    .venv/bin/python bench/quality.py                    # 10 seeds, 2 books of 2 pages each
    .venv/bin/python bench/quality.py --seeds 3 --books 1 --json out.json
    .venv/bin/python bench/quality.py --first-seed 100 --seeds 20 --pages 3   # held-out books
    .venv/bin/python bench/quality.py --image-dir ../shared/realdata   # real panel pixels
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.build import BuildOptions, run_build  # noqa: E402
from testbed.scoring import feature_table, score_layouts  # noqa: E402
from testbed.varied_atlas import VariedAtlasOptions, generate_varied_atlas  # noqa: E402


def _combine(row: dict, keys: list[tuple[str, str]], report: dict) -> dict:
    """Recall/F1 over several feature values (e.g. both side-caption positions)."""
    rows = [report["by_feature"].get(feature, {}).get(value) for feature, value in keys]
    rows = [r for r in rows if r]
    truth = sum(r["truth"] for r in rows)
    tp = sum(r["tp"] for r in rows)
    predicted = sum(r["predicted"] for r in rows)
    return {"truth": truth, "tp": tp, "recall": round(tp / truth, 4) if truth else None,
            "precision": round(tp / predicted, 4) if predicted else None}


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="Number of seeds (first..first+N-1).")
    parser.add_argument("--first-seed", type=int, default=0, help="First seed (another range checks books nobody tuned to).")
    parser.add_argument("--books", type=int, default=2, help="Books per seed.")
    parser.add_argument("--pages", type=int, default=2, help="Figure pages per book.")
    parser.add_argument("--scanned-share", type=float, default=0.4, help="Share of scanned books.")
    parser.add_argument("--image-dir", type=Path, default=None, help="Real images (cfp/ ffa/ oct/ other/) instead of synthetic ones.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the full report here.")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    options = VariedAtlasOptions(books=arguments.books, pages_per_book=arguments.pages,
                                 scanned_share=arguments.scanned_share, image_dir=arguments.image_dir)
    truth, runs, traps = [], [], []
    started = time.perf_counter()
    build_seconds = 0.0
    pages = 0
    with tempfile.TemporaryDirectory() as workdir:
        root = Path(workdir)
        for seed in range(arguments.first_seed, arguments.first_seed + arguments.seeds):
            atlas = generate_varied_atlas(root / f"seed{seed}", seed=seed, options=options)
            build = BuildOptions(work_dir=root / "work", registry_root=root / "registry", translation_home=root / "argos")
            began = time.perf_counter()
            record, _ = run_build(atlas.pdfs, build)
            build_seconds += time.perf_counter() - began
            pages += sum(d.page_count for d in record.documents)
            truth.extend(atlas.truth)
            runs.extend(record.documents)
            traps.extend(atlas.traps)
            failed = [f"{Path(d.pdf).name}: {d.error}" for d in record.documents if d.failed]
            for line in failed:
                print(f"seed {seed}: FAILED {line}")
    report = score_layouts(truth, runs, traps=traps)
    table = report["by_feature"]
    overall = report["overall"]

    print(f"{arguments.seeds} seeds x {arguments.books} books x {arguments.pages} pages: {pages} pages, "
          f"{sum(t.pair for t in truth)} retinal panels, {len({(t.pdf, t.figure_id) for t in truth})} figures; "
          f"build {build_seconds:.1f} s ({pages / build_seconds:.2f} pages/s), total {time.perf_counter() - started:.1f} s")
    born = table["scan_kind"].get("born_digital", {})
    scanned = _combine({}, [("scan_kind", "image_only"), ("scan_kind", "ocr_layer")], report)
    scanned_f1 = (round(2 * scanned["precision"] * scanned["recall"] / (scanned["precision"] + scanned["recall"]), 4)
                  if scanned["precision"] and scanned["recall"] else 0.0)
    side = _combine({}, [("caption_position", "beside_same_column"), ("caption_position", "other_column")], report)
    stitched = table["embedding"].get("stitched", {})
    print(f"pair F1               all {_fmt(overall['f1'])}  born-digital {_fmt(born.get('f1'))}  scanned {_fmt(scanned_f1)}"
          f"  (image-only {_fmt(table['scan_kind'].get('image_only', {}).get('f1'))}, "
          f"OCR layer {_fmt(table['scan_kind'].get('ocr_layer', {}).get('f1'))})")
    print(f"recall side captions  {_fmt(side['recall'])} ({side['tp']}/{side['truth']})   "
          f"stitched grids {_fmt(stitched.get('recall'))} ({stitched.get('tp', 0)}/{stitched.get('truth', 0)})   "
          f"captions below {_fmt(table['caption_position'].get('below', {}).get('recall'))}")
    print(f"caption sim >= 0.9    {_fmt(overall['caption_ge_threshold'])} of matched retinal panels (mean {_fmt(overall['caption_mean'])})")
    print(f"modality accuracy     {_fmt(overall['modality_accuracy'])}   retinal panels excluded unseen {overall['retinal_excluded_unseen']}")
    print(f"review                queued {_fmt(overall['share_queued'])}   auto-accepted precision {_fmt(overall['auto_accepted_precision'])} "
          f"({overall['auto_accepted']} auto-accepted)")
    print(f"non-retinal           {overall['non_retinal_paired']} pairs from non-retinal figures; "
          f"{overall['non_retinal_rejected']}/{overall['non_retinal_figures']} non-retinal figures kept as typed rejects")
    print(f"trap lines published as captions (list of figures, body text): {len(report['trap_captions'])}")
    print()
    print(feature_table(report))
    if arguments.json:
        arguments.json.write_text(json.dumps(report, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
