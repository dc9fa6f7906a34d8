"""Export a published version as a Hugging Face `datasets` dataset on disk, plus parquet and a dataset card.

Layout of the export folder::

    dataset_info.json, state.json, data-*.arrow   # datasets.load_from_disk(out)
    data/train-00000-of-0000N.parquet             # load_dataset("parquet", data_files=...)
    README.md                                     # dataset card (YAML header + counts, sources, licences)
    export.json                                   # version, fingerprint, files

Images are embedded as bytes in an `Image` feature, so the folder is self-contained.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel, Field

from data_manifests.export_common import (
    ExportSummary,
    export_folder,
    finish,
    load_source,
    verified_rows,
    write_export_record,
)
from data_manifests.registry import LoadedManifest
from foundation.files import write_atomic

logger = logging.getLogger(__name__)

PARQUET_DIR = "data"


class HfExportOptions(BaseModel):
    """How a version becomes a `datasets` dataset."""

    split: str = Field("train", description="Split name used in the parquet file names and the dataset card.")
    rows_per_parquet: int = Field(
        2000, ge=1, description="Most rows per parquet file (images are embedded, so this bounds file size)."
    )
    licence: str = Field(
        "other", description="Licence id written to the card's YAML header; 'other' until the books' terms are cleared."
    )


def hf_features():
    """The column types of the export (fixed, so every version loads with the same schema)."""
    from datasets import Features, Image, Sequence, Value

    return Features(
        {
            "image": Image(),
            "pair_id": Value("string"),
            "caption_en": Value("string"),
            "caption_zh": Value("string"),
            "modality": Value("string"),
            "modality_sublabel": Value("string"),
            "book": Value("string"),
            "source_pdf": Value("string"),
            "source_pdf_sha256": Value("string"),
            "page": Value("int32"),
            "bbox": Sequence(Value("float64")),
            "figure_id": Value("string"),
            "panel": Value("string"),
            "image_sha256": Value("string"),
            "caption_en_origin": Value("string"),
            "caption_zh_origin": Value("string"),
            "translation_engine": Value("string"),
            "modality_confidence": Value("float64"),
            "alignment_score": Value("float64"),
            "review_status": Value("string"),
            "reviewer": Value("string"),
            "reasons": Sequence(Value("string")),
            "scanned": Value("bool"),
            "stitched": Value("bool"),
            "manifest_ref": Value("string"),
            "manifest_fingerprint": Value("string"),
        }
    )


def export_hf(
    source: LoadedManifest | str,
    out: Path | str,
    *,
    root: Path | str | None = None,
    overwrite: bool = False,
    protected: dict[str, Path] | None = None,
    options: HfExportOptions | None = None,
) -> ExportSummary:
    """Write `source` to `out` as a `datasets` dataset (arrow + parquet) with a dataset card."""
    from datasets import Dataset, DatasetInfo
    from datasets.arrow_writer import ArrowWriter

    started = time.perf_counter()
    options = options or HfExportOptions()
    loaded = load_source(source, root)
    meta = loaded.meta
    summary = ExportSummary(
        format="hf",
        ref=loaded.ref,
        content_fingerprint=meta.content_fingerprint,
        manifest_parquet_sha256=meta.manifest_parquet_sha256,
        out=Path(out),
        n_rows=0,
    )
    features = hf_features()
    info = DatasetInfo(
        description=f"MM-Retinal fundus image-text pairs, version {loaded.ref} (content fingerprint {meta.content_fingerprint}).",
        version=meta.version.lstrip("v") + ".0.0",
        features=features,
    )
    with (
        export_folder(Path(out), "hf", loaded, overwrite, protected) as staging,
        tempfile.TemporaryDirectory(prefix=".rows-", dir=staging.parent) as rows_dir,
        _quiet_progress(),
    ):
        # rows stream through an arrow file one image at a time, so memory stays that of one image
        # (outside `staging`: save_to_disk refuses a target that holds the dataset's own file)
        rows_file = Path(rows_dir) / "rows.arrow"
        records: list[dict] = []  # the columns without images, for the dataset card
        with ArrowWriter(features=features, path=str(rows_file)) as writer:
            for item in verified_rows(loaded, summary.errors):
                record = item.fields()
                record["manifest_ref"] = loaded.ref
                record["manifest_fingerprint"] = meta.content_fingerprint
                records.append(record)
                image = {"bytes": item.image_bytes, "path": f"{item.row['image_sha256']}{item.image_suffix}"}
                writer.write(features.encode_example({**record, "image": image}))
            writer.finalize()
        summary.n_rows = len(records)
        dataset = Dataset.from_file(str(rows_file), info=info, split=options.split)
        dataset.save_to_disk(str(staging))
        n_files = max(1, -(-len(dataset) // options.rows_per_parquet))
        parquet_files = []
        for index in range(n_files):
            name = f"{PARQUET_DIR}/{options.split}-{index:05d}-of-{n_files:05d}.parquet"
            (staging / PARQUET_DIR).mkdir(exist_ok=True)
            dataset.shard(num_shards=n_files, index=index, contiguous=True).to_parquet(str(staging / name))
            parquet_files.append(name)
        summary.files = ["dataset_info.json", "state.json", *parquet_files, "README.md"]
        write_atomic(staging / "README.md", dataset_card(loaded, records, options, parquet_files))
        write_export_record(staging, summary)
        del dataset
    return finish(summary, started)


@contextmanager
def _quiet_progress():
    """datasets draws tqdm bars on stderr; an export reports through logging instead."""
    from datasets.utils import logging as datasets_logging

    was_enabled = datasets_logging.is_progress_bar_enabled()
    datasets_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            datasets_logging.enable_progress_bar()


def _counts_table(title: str, counts: Counter) -> str:
    lines = [f"| {title} | pairs |", "|---|---:|"]
    lines += [f"| {key} | {value} |" for key, value in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))]
    return "\n".join(lines)


def dataset_card(loaded: LoadedManifest, records: list[dict], options: HfExportOptions, parquet_files: list[str]) -> str:
    """README.md for the Hub or a local folder: YAML header, counts, sources, licences to check, provenance."""
    meta = loaded.meta
    n = len(records)
    size_category = "n<1K" if n < 1000 else "1K<n<10K" if n < 10_000 else "10K<n<100K"
    header = "\n".join(
        [
            "---",
            f"license: {options.licence}",
            "language:",
            "- en",
            "- zh",
            "task_categories:",
            "- image-to-text",
            "- zero-shot-image-classification",
            "tags:",
            "- medical",
            "- ophthalmology",
            "- fundus",
            f"size_categories:\n- {size_category}",
            "configs:",
            "- config_name: default",
            "  data_files:",
            f"  - split: {options.split}",
            f"    path: {PARQUET_DIR}/{options.split}-*.parquet",
            "---",
        ]
    )
    by_modality = Counter(r["modality"] for r in records)
    by_sublabel = Counter(f"{r['modality']} / {r['modality_sublabel'] or '-'}" for r in records)
    by_book = Counter(r["book"] for r in records)
    by_review = Counter(r["review_status"] for r in records)
    by_origin = Counter(f"en {r['caption_en_origin']}, zh {r['caption_zh_origin']}" for r in records)
    sources = "\n".join(f"| {name} | `{sha}` |" for name, sha in sorted(meta.input_pdfs.items())) or "| - | - |"
    excluded = ", ".join(f"{reason} {count}" for reason, count in meta.excluded.by_reason.items()) or "none"
    engines = sorted({r["translation_engine"] for r in records if r["translation_engine"]})
    body = f"""
# MM-Retinal {meta.version}

Fundus image-text pairs (colour fundus photographs, fluorescein angiograms and OCT scans with
their English and Chinese captions) extracted from ophthalmology atlas PDFs.

- Version: `{loaded.ref}` (parent {meta.parent or "none"}), published {meta.created}
- Content fingerprint: `{meta.content_fingerprint}`
- manifest.parquet SHA-256: `{meta.manifest_parquet_sha256}`
- Pairs: {n} in split `{options.split}`; {meta.excluded.n_excluded} left out at publish ({excluded})

## Loading

```python
from datasets import load_from_disk, load_dataset
ds = load_from_disk("<this folder>")
ds = load_dataset("parquet", data_files="<this folder>/{PARQUET_DIR}/{options.split}-*.parquet", split="train")
```

Columns: `image` (PIL image), `caption_en`, `caption_zh`, `modality` (CFP, FFA, OCT),
`modality_sublabel` (e.g. ICGA, red-free), `pair_id`, the source book, PDF, page and bounding box,
caption origins (`printed` in the book or `machine` translated), the alignment score and the
review outcome, and `manifest_ref` / `manifest_fingerprint` naming this version.

## Counts

{_counts_table("modality", by_modality)}

{_counts_table("modality / sub-label", by_sublabel)}

{_counts_table("book", by_book)}

{_counts_table("review status", by_review)}

{_counts_table("caption origin", by_origin)}

## Sources

| PDF | SHA-256 |
|---|---|
{sources}

## Licences to check

The images and captions are copied from the atlases above. This export carries no licence of its
own (`license: {options.licence}`): before sharing it, check each book's copyright and terms of use
with its publisher, and keep this card's source list with the data. Machine translations
({", ".join(engines) or "none in this version"}) are derived from the printed captions and share their terms.

## How it was built

The `mm-retinal` pipeline (version {meta.pipeline_version}, config hash `{meta.config_hash}`)
extracted figures and captions from each PDF (text layer or OCR), aligned panels to captions,
classified modality, queued uncertain pairs for human review, translated missing captions and
published `{loaded.ref}` to the manifest registry. This folder was written by
`mmretinal export {loaded.ref} --format hf`, which re-hashed every image against the manifest.
Parquet files: {", ".join(f"`{name}`" for name in parquet_files)}.
"""
    return header + "\n" + body
