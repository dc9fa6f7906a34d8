"""Export a published version as a Croissant (ML Commons) JSON-LD description with its data beside it.

Layout of the export folder::

    croissant.json        # the description: manifest FileObject, image FileSet, record sets
    manifest.parquet      # the version's manifest, byte for byte (its SHA-256 is in croissant.json)
    images/ab/<sha>.png   # the version's images laid out as in the image store (copies or symlinks)
    export.json

Record sets: `pairs` (one record per manifest row, its `image` joined from the image files by store
path) and `images` (the image files with the path the manifest uses). The version's content
fingerprint is written in the description and in `export.json`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from data_manifests.export_common import (
    ExportSummary,
    export_folder,
    finish,
    load_source,
    write_export_record,
)
from data_manifests.registry import LoadedManifest
from data_manifests.schema import MANIFEST_PARQUET
from foundation.files import sha256_file, write_atomic

logger = logging.getLogger(__name__)

CROISSANT_FILE = "croissant.json"
IMAGE_DIR = "images"

# manifest column -> Croissant data type name (mlcroissant.DataType attribute) and description
PAIR_COLUMNS: dict[str, tuple[str, str]] = {
    "pair_id": ("TEXT", "Stable id: book/figure/panel."),
    "caption_en": ("TEXT", "English caption."),
    "caption_zh": ("TEXT", "Chinese caption."),
    "modality": ("TEXT", "Imaging modality: CFP, FFA or OCT."),
    "modality_sublabel": ("TEXT", "Finer label where the caption says so (ICGA, red-free)."),
    "book": ("TEXT", "Source book id."),
    "source_pdf": ("TEXT", "Source PDF file name."),
    "source_pdf_sha256": ("TEXT", "SHA-256 of the source PDF."),
    "page": ("INTEGER", "1-based page of the figure in the PDF."),
    "figure_id": ("TEXT", "Figure number as printed."),
    "panel": ("TEXT", "Panel letter, when the figure has panels."),
    "image_path": ("TEXT", "Image path inside the image store (and under images/ here)."),
    "image_sha256": ("TEXT", "SHA-256 of the image bytes."),
    "caption_en_origin": ("TEXT", "Where the English caption came from: printed, machine or missing."),
    "caption_zh_origin": ("TEXT", "Where the Chinese caption came from: printed, machine or missing."),
    "translation_engine": ("TEXT", "Machine translation engine, when a caption was translated."),
    "modality_confidence": ("FLOAT", "Confidence of the modality classifier."),
    "alignment_score": ("FLOAT", "Score of the panel-caption alignment."),
    "review_status": ("TEXT", "auto_accepted, accepted or edited."),
    "reviewer": ("TEXT", "Who reviewed the pair, when it was reviewed."),
    "scanned": ("BOOL", "The page was a scan (OCR text)."),
    "stitched": ("BOOL", "The panel was stitched from several image pieces."),
}


class CroissantExportOptions(BaseModel):
    """How the data beside croissant.json is laid out."""

    link_mode: Literal["copy", "symlink"] = Field(
        "copy", description="Copy the version's images from the store (verified by hash) or symlink to them."
    )
    url: str = Field(
        "https://github.com/mm-retinal/mm-retinal", description="Home page written as the dataset's `url`."
    )
    licence: str = Field(
        "https://spdx.org/licenses/NOASSERTION.html",
        description="Licence URL of the dataset; no assertion until each book's terms are cleared.",
    )


def _place_image(source: Path, target: Path, expected_sha256: str, link_mode: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if link_mode == "symlink":
        if not source.is_file():
            raise FileNotFoundError(f"store image not found: {source}")
        os.symlink(source.resolve(), target)
        return
    shutil.copyfile(source, target)
    actual = sha256_file(target)
    if actual != expected_sha256:
        target.unlink()
        raise ValueError(f"store image {source} has SHA-256 {actual}, expected {expected_sha256}")


def croissant_metadata(loaded: LoadedManifest, parquet_sha256: str, options: CroissantExportOptions):
    """The mlcroissant Metadata object describing the export folder."""
    import mlcroissant as mlc

    meta = loaded.meta
    distribution = [
        mlc.FileObject(
            id="manifest",
            name="manifest",
            description=f"Manifest table of {loaded.ref}, one row per image-text pair.",
            content_url=MANIFEST_PARQUET,
            encoding_formats=["application/x-parquet"],
            sha256=parquet_sha256,
        ),
        mlc.FileSet(
            id="image-files",
            name="image-files",
            description="Panel images, named by the SHA-256 of their bytes as in the image store.",
            encoding_formats=["image/png"],
            includes=[f"{IMAGE_DIR}/*/*.png"],
        ),
    ]
    image_set = mlc.RecordSet(
        id="images",
        name="images",
        description="The image files with the store path the manifest refers to.",
        key=["images/image_path"],
        fields=[
            mlc.Field(
                id="images/image_path",
                name="image_path",
                description="Path inside the image store ('ab/<sha256>.png').",
                data_types=[mlc.DataType.TEXT],
                source=mlc.Source(
                    file_set="image-files",
                    extract=mlc.Extract(file_property=mlc.FileProperty.fullpath),
                    transforms=[mlc.Transform(regex=f"^{IMAGE_DIR}/(.*)$")],
                ),
            ),
            mlc.Field(
                id="images/content",
                name="content",
                description="The image.",
                data_types=[mlc.DataType.IMAGE_OBJECT],
                source=mlc.Source(file_set="image-files", extract=mlc.Extract(file_property=mlc.FileProperty.content)),
            ),
        ],
    )
    pair_fields = [
        mlc.Field(
            id=f"pairs/{column}",
            name=column,
            description=description,
            data_types=[getattr(mlc.DataType, type_name)],
            source=mlc.Source(file_object="manifest", extract=mlc.Extract(column=column)),
            references=mlc.Source(field="images/image_path") if column == "image_path" else None,
        )
        for column, (type_name, description) in PAIR_COLUMNS.items()
    ]
    pair_fields.append(
        mlc.Field(
            id="pairs/image",
            name="image",
            description="The pair's image, joined from the image files by store path.",
            data_types=[mlc.DataType.IMAGE_OBJECT],
            source=mlc.Source(field="images/content"),
        )
    )
    pairs = mlc.RecordSet(
        id="pairs",
        name="pairs",
        description="Image-text pairs of the version: captions in English and Chinese, modality, provenance.",
        key=["pairs/pair_id"],
        fields=pair_fields,
    )
    counts = ", ".join(f"{name} {count}" for name, count in meta.counts.by_modality.items())
    return mlc.Metadata(
        name=f"{meta.dataset}-{meta.version}",
        description=(
            f"MM-Retinal fundus image-text pairs, version {loaded.ref}: {meta.n_pairs} pairs ({counts}) "
            f"from {len(meta.input_pdfs)} atlas PDF(s). Content fingerprint {meta.content_fingerprint}; "
            f"pipeline {meta.pipeline_version}, config hash {meta.config_hash}. Check each source book's "
            "terms before redistributing."
        ),
        url=options.url,
        license=[options.licence],
        version=f"{meta.version.lstrip('v')}.0.0",
        date_published=meta.created,
        cite_as=f"MM-Retinal {loaded.ref} (fingerprint {meta.content_fingerprint[:12]})",
        distribution=distribution,
        record_sets=[image_set, pairs],
    )


def export_croissant(
    source: LoadedManifest | str,
    out: Path | str,
    *,
    root: Path | str | None = None,
    overwrite: bool = False,
    protected: dict[str, Path] | None = None,
    options: CroissantExportOptions | None = None,
) -> ExportSummary:
    """Write croissant.json with the manifest and the version's images beside it."""
    import json

    started = time.perf_counter()
    options = options or CroissantExportOptions()
    loaded = load_source(source, root)
    meta = loaded.meta
    summary = ExportSummary(
        format="croissant",
        ref=loaded.ref,
        content_fingerprint=meta.content_fingerprint,
        manifest_parquet_sha256=meta.manifest_parquet_sha256,
        out=Path(out),
        n_rows=0,
    )
    with export_folder(Path(out), "croissant", loaded, overwrite, protected) as staging:
        parquet_file = staging / MANIFEST_PARQUET
        shutil.copyfile(loaded.path / MANIFEST_PARQUET, parquet_file)
        parquet_sha256 = sha256_file(parquet_file)
        if parquet_sha256 != meta.manifest_parquet_sha256:
            summary.errors.append(
                f"{loaded.path / MANIFEST_PARQUET} has SHA-256 {parquet_sha256}, manifest.json records "
                f"{meta.manifest_parquet_sha256}"
            )
        for row in loaded.table.select(["pair_id", "image_path", "image_sha256"]).to_pylist():
            try:
                _place_image(
                    loaded.image_file(row["image_path"]),
                    staging / IMAGE_DIR / row["image_path"],
                    row["image_sha256"],
                    options.link_mode,
                )
            except (OSError, ValueError) as exc:
                summary.errors.append(f"pair {row['pair_id']}: {exc}")
                continue
            summary.n_rows += 1
        document = croissant_metadata(loaded, parquet_sha256, options).to_json()
        write_atomic(staging / CROISSANT_FILE, json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n")
        summary.files = [CROISSANT_FILE, MANIFEST_PARQUET, f"{IMAGE_DIR}/"]
        write_export_record(staging, summary, {"croissant_sha256": hashlib.sha256((staging / CROISSANT_FILE).read_bytes()).hexdigest()})
    return finish(summary, started)
