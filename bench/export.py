"""Export sizes and times on the sample atlas: each ML format against the KeepFIT CSV export, same run.

Builds and publishes the sample atlas (seed 0) once, or uses `--registry DIR` holding a published
`mm-retinal` version, then writes it as flair-csv (the baseline), hf, webdataset and croissant and
prints rows, MB on disk and seconds per format (best of three, libraries imported beforehand)
with the time ratio to the baseline.

Usage: python bench/export.py [--registry DIR] [--ref mm-retinal/latest]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from data_manifests.export import export_flair_csv
from data_manifests.export_common import folder_size
from data_manifests.ml_exports import export_croissant, export_hf, export_webdataset
from data_manifests.registry import load_manifest


REPEATS = 3


def published_sample(tmp: Path) -> Path:
    from curation.build import BuildOptions, run_build
    from testbed.sample_atlas import generate_sample_atlas

    atlas = generate_sample_atlas(tmp / "atlas", seed=0)
    options = BuildOptions(work_dir=tmp / "work", registry_root=tmp / "registry", translation_home=tmp / "argos")
    run_build(atlas.pdfs, options)
    return options.registry_root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, help="registry with a published version (default: build the sample atlas)")
    parser.add_argument("--ref", default="mm-retinal/latest")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        registry = args.registry or published_sample(tmp)
        loaded = load_manifest(registry, args.ref)
        images = sum(loaded.image_file(p).stat().st_size for p in loaded.table.column("image_path").to_pylist())
        print(f"{loaded.ref}: {loaded.meta.n_pairs} pairs, {images / 1e6:.2f} MB of images in the store")
        import datasets  # noqa: F401 - import time is not export time
        import mlcroissant  # noqa: F401
        import webdataset  # noqa: F401

        baseline = float("inf")
        for attempt in range(REPEATS):
            started = time.perf_counter()
            export_flair_csv(loaded, tmp / f"flair-csv-{attempt}")
            baseline = min(baseline, time.perf_counter() - started)
        print(f"flair-csv (baseline): {folder_size(tmp / 'flair-csv-0') / 1e6:.2f} MB in {baseline:.3f}s")
        for name, export in (("hf", export_hf), ("webdataset", export_webdataset), ("croissant", export_croissant)):
            runs = [export(loaded, tmp / name) for _ in range(REPEATS)]
            seconds = min(run.seconds for run in runs)
            summary = runs[-1]
            print(
                f"{name}: {summary.n_rows} rows, {summary.n_bytes / 1e6:.2f} MB in {seconds:.3f}s; "
                f"time ratio to flair-csv {seconds / baseline:.2f}"
            )


if __name__ == "__main__":
    main()
