"""Layout of a published manifest: the parquet row schema and the `manifest.json` metadata.

The row schema is fixed here (not inferred from data) so every version has identical column
types, which keeps diffs and fingerprints comparable across versions.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, Field

from foundation.records import Pair

MANIFEST_PARQUET = "manifest.parquet"
MANIFEST_JSON = "manifest.json"
SCHEMA_VERSION = 1

ROW_SCHEMA = pa.schema(
    [
        pa.field("pair_id", pa.string(), nullable=False),
        pa.field("image_path", pa.string(), nullable=False),
        pa.field("image_sha256", pa.string(), nullable=False),
        pa.field("source_pdf", pa.string(), nullable=False),
        pa.field("source_pdf_sha256", pa.string(), nullable=False),
        pa.field("book", pa.string(), nullable=False),
        pa.field("page", pa.int32(), nullable=False),
        pa.field("bbox", pa.list_(pa.float64()), nullable=False),
        pa.field("figure_id", pa.string(), nullable=False),
        pa.field("panel", pa.string()),
        pa.field("caption_en", pa.string()),
        pa.field("caption_zh", pa.string()),
        pa.field("caption_source", pa.string(), nullable=False),
        pa.field("caption_en_origin", pa.string(), nullable=False),
        pa.field("caption_zh_origin", pa.string(), nullable=False),
        pa.field("translation_engine", pa.string()),
        pa.field("modality", pa.string(), nullable=False),
        pa.field("modality_sublabel", pa.string()),
        pa.field("modality_confidence", pa.float64(), nullable=False),
        pa.field("alignment_score", pa.float64(), nullable=False),
        pa.field("review_status", pa.string(), nullable=False),
        pa.field("reviewer", pa.string()),
        pa.field("reasons", pa.list_(pa.string()), nullable=False),
        pa.field("scanned", pa.bool_(), nullable=False),
        pa.field("stitched", pa.bool_(), nullable=False),
    ],
    metadata={"mm_retinal_schema_version": str(SCHEMA_VERSION)},
)

ROW_COLUMNS: tuple[str, ...] = tuple(ROW_SCHEMA.names)
CONTENT_COLUMNS: tuple[str, ...] = ROW_COLUMNS
"""Columns hashed into the content fingerprint. Rows carry no timestamps or version numbers,
so every row column is content; metadata such as `created` lives only in manifest.json."""


class ExcludedPair(BaseModel):
    """A pair that was handed to publish but kept out of the published rows."""

    pair_id: str = Field(description="Id of the excluded pair.")
    reason: str = Field(description="Why it was excluded: 'modality_other' or 'review_rejected'.")


class ExclusionSummary(BaseModel):
    """What publish left out and why, so dropped pairs stay visible in the manifest."""

    n_excluded: int = Field(0, description="Number of pairs left out of the published rows.")
    by_reason: dict[str, int] = Field(default_factory=dict, description="Count of excluded pairs per reason.")
    pairs: list[ExcludedPair] = Field(default_factory=list, description="Every excluded pair with its reason, sorted by id.")


class ManifestCounts(BaseModel):
    """Row counts of the published pairs along the axes people filter on."""

    by_modality: dict[str, int] = Field(default_factory=dict, description="Pairs per modality (CFP, FFA, OCT).")
    by_book: dict[str, int] = Field(default_factory=dict, description="Pairs per source book id.")
    by_review_status: dict[str, int] = Field(default_factory=dict, description="Pairs per review status.")


class ManifestMeta(BaseModel):
    """Contents of `manifest.json`: provenance and summary of one published version."""

    schema_version: int = Field(SCHEMA_VERSION, description="Version of this manifest layout.")
    dataset: str = Field(description="Dataset name, e.g. 'mm-retinal'.")
    version: str = Field(description="Version name, e.g. 'v3'.")
    parent: str | None = Field(None, description="Version this one was built after (for diffs), or None.")
    created: str = Field(description="UTC ISO-8601 time the version was published.")
    pipeline_version: str = Field(description="Version of the build code that produced the pairs.")
    config: dict[str, Any] = Field(default_factory=dict, description="Build configuration as given to publish.")
    config_hash: str = Field(description="SHA-256 of the canonical JSON of the build configuration.")
    input_pdfs: dict[str, str] = Field(default_factory=dict, description="Source PDF file name -> SHA-256.")
    n_pairs: int = Field(description="Number of published rows.")
    counts: ManifestCounts = Field(default_factory=ManifestCounts, description="Row counts by modality, book and review status.")
    excluded: ExclusionSummary = Field(default_factory=ExclusionSummary, description="Pairs left out and why.")
    image_store: str = Field(
        description="Image store root: relative to the registry root when inside it, else absolute."
    )
    content_fingerprint: str = Field(description="SHA-256 over the sorted rows' content columns.")
    manifest_parquet_sha256: str = Field(description="SHA-256 of the manifest.parquet bytes as written.")


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no insignificant whitespace, so equal data hashes equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str, allow_nan=False)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def config_hash(config: dict[str, Any]) -> str:
    """Hash of a build configuration, independent of key order."""
    return sha256_text(canonical_json(config))


def caption_source(pair: Pair) -> str:
    """Compact provenance of both captions, e.g. 'en:printed;zh:machine'."""
    return f"en:{pair.caption_en_origin};zh:{pair.caption_zh_origin}"


def pair_to_row(pair: Pair, image_path: str) -> dict[str, Any]:
    """Flatten a pair into one manifest row; `image_path` is relative to the image store root."""
    return {
        "pair_id": pair.pair_id,
        "image_path": image_path,
        "image_sha256": pair.image_sha256,
        "source_pdf": pair.source_pdf,
        "source_pdf_sha256": pair.source_pdf_sha256,
        "book": pair.book,
        "page": pair.page,
        "bbox": [float(v) for v in pair.bbox],
        "figure_id": pair.figure_id,
        "panel": pair.panel,
        "caption_en": pair.caption_en,
        "caption_zh": pair.caption_zh,
        "caption_source": caption_source(pair),
        "caption_en_origin": pair.caption_en_origin,
        "caption_zh_origin": pair.caption_zh_origin,
        "translation_engine": pair.translation_engine,
        "modality": pair.modality,
        "modality_sublabel": pair.modality_sublabel,
        "modality_confidence": float(pair.modality_confidence),
        "alignment_score": float(pair.alignment_score),
        "review_status": pair.review_status,
        "reviewer": pair.reviewer,
        "reasons": list(pair.reasons),
        "scanned": bool(pair.scanned),
        "stitched": bool(pair.stitched),
    }


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Build the manifest table with the fixed schema, rows sorted by pair_id."""
    ordered = sorted(rows, key=lambda row: row["pair_id"])
    return pa.Table.from_pylist(ordered, schema=ROW_SCHEMA)


def _canonical_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return [_canonical_value(v) for v in value]
    return value


def content_fingerprint(table: pa.Table) -> str:
    """SHA-256 over the content columns of the rows sorted by pair_id.

    Hashing rows as canonical JSON (not parquet bytes) keeps the fingerprint independent of
    the parquet writer version and compression, so equal content always gives an equal hash.
    """
    missing = [c for c in CONTENT_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"manifest table lacks content columns: {', '.join(missing)}")
    rows = table.select(list(CONTENT_COLUMNS)).to_pylist()
    rows.sort(key=lambda row: row["pair_id"])
    digest = hashlib.sha256()
    digest.update(canonical_json(list(CONTENT_COLUMNS)).encode("utf-8"))
    for row in rows:
        canonical_row = {key: _canonical_value(val) for key, val in row.items()}
        digest.update(b"\n")
        digest.update(canonical_json(canonical_row).encode("utf-8"))
    return digest.hexdigest()


def manifest_fingerprint(meta: ManifestMeta) -> str:
    """SHA-256 over every field of manifest.json (as canonical JSON), independent of its layout.

    Recorded in the registry index when a version is published, so an edit to manifest.json
    (input hashes, counts, exclusions, config, fingerprints) shows up in `verify` even when the
    editor also updated the hashes the JSON holds about the parquet.
    """
    return sha256_text(canonical_json(meta.model_dump(mode="json")))
