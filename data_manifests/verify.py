"""Re-check a published version against everything it claims.

The parquet rows against their fingerprint, every image against its hash (and its path against
the store), manifest.json against the fingerprint the registry index recorded at publish time
and against the rows it summarises, and every file against the read-only mode it was given.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from collections import Counter

from data_manifests.registry import (
    ImagePathError,
    RegistryError,
    confined_image_file,
    load_manifest,
    read_index,
    resolve_ref,
)
from data_manifests.schema import MANIFEST_JSON, MANIFEST_PARQUET, config_hash, content_fingerprint, manifest_fingerprint
from data_manifests.store import ImageStore, ImageStoreError, sha256_file
from foundation.imaging import ImageDecodeError, ImageLimits, check_image

logger = logging.getLogger(__name__)

ProblemKind = Literal[
    "missing_image",
    "altered_image",
    "unreadable_manifest",
    "fingerprint_mismatch",
    "row_count_mismatch",
    "parquet_altered",
    "manifest_altered",
    "not_indexed",
    "summary_mismatch",
    "unconfined_image_path",
    "undecodable_image",
    "writable_file",
    "unlisted_file",
]
PUBLISHED_FILES = frozenset({MANIFEST_PARQUET, MANIFEST_JSON})
"""What a version folder holds; anything else in it is reported, whatever its mode or kind."""


class VerifyProblem(BaseModel):
    """One thing that no longer matches what was published."""

    kind: ProblemKind = Field(description="What is wrong.")
    path: str = Field(description="File concerned (image or manifest file).")
    pair_id: str | None = Field(None, description="Pair whose image is concerned, for image problems.")
    detail: str = Field("", description="Expected versus found, in words.")

    def line(self) -> str:
        who = f" pair {self.pair_id}" if self.pair_id else ""
        return f"{self.kind}:{who} {self.path}" + (f" ({self.detail})" if self.detail else "")


class VerifyReport(BaseModel):
    """Outcome of re-hashing every image and the manifest of one version."""

    ref: str = Field(description="Version checked, e.g. 'mm-retinal/v1'.")
    image_store: str = Field("", description="Image store that was checked.")
    n_pairs: int = Field(0, description="Rows in the manifest.")
    n_images_checked: int = Field(0, description="Distinct image files hashed.")
    problems: list[VerifyProblem] = Field(default_factory=list, description="Every problem found.")

    @property
    def ok(self) -> bool:
        return not self.problems

    def problems_of(self, kind: ProblemKind) -> list[VerifyProblem]:
        return [p for p in self.problems if p.kind == kind]


def _hash_or_error(path: Path) -> tuple[str | None, str]:
    try:
        return sha256_file(path), ""
    except FileNotFoundError:
        return None, "file not found"
    except OSError as exc:
        return None, f"unreadable: {exc.strerror or exc}"


def verify(
    root: Path | str,
    ref: str,
    *,
    image_store: Path | str | None = None,
    workers: int | None = None,
) -> VerifyReport:
    """Re-hash every image of a version and re-check its manifest fingerprint.

    Problems are collected, not raised, so one report lists everything that is missing or altered.
    """
    root = Path(root)
    dataset, version = resolve_ref(root, ref)
    report = VerifyReport(ref=f"{dataset}/{version}")
    try:
        loaded = load_manifest(root, dataset, version, image_store=image_store)
    except RegistryError as exc:
        report.problems.append(
            VerifyProblem(kind="unreadable_manifest", path=str(root / dataset / version), detail=str(exc))
        )
        return report
    meta, table = loaded.meta, loaded.table
    report.image_store = str(loaded.image_store)
    report.n_pairs = table.num_rows
    parquet_file = loaded.path / MANIFEST_PARQUET

    if sha256_file(parquet_file) != meta.manifest_parquet_sha256:
        report.problems.append(
            VerifyProblem(kind="parquet_altered", path=str(parquet_file), detail="file bytes differ from those published")
        )
    try:
        fingerprint = content_fingerprint(table)
    except ValueError as exc:
        report.problems.append(VerifyProblem(kind="unreadable_manifest", path=str(parquet_file), detail=str(exc)))
        return report
    if fingerprint != meta.content_fingerprint:
        report.problems.append(
            VerifyProblem(
                kind="fingerprint_mismatch",
                path=str(parquet_file),
                detail=f"recorded {meta.content_fingerprint}, found {fingerprint}",
            )
        )
    if table.num_rows != meta.n_pairs:
        report.problems.append(
            VerifyProblem(
                kind="row_count_mismatch",
                path=str(parquet_file),
                detail=f"manifest.json says {meta.n_pairs} pairs, parquet has {table.num_rows}",
            )
        )

    _check_index(report, root, dataset, version, loaded.path, meta)
    _check_summary(report, loaded.path / MANIFEST_JSON, meta, table, dataset, version)
    _check_modes(report, [f for f in loaded.path.iterdir() if f.is_file() and f.name in PUBLISHED_FILES])
    _check_unlisted(report, loaded.path)

    rows = []
    for row in table.select(["pair_id", "image_path", "image_sha256"]).to_pylist():
        try:
            confined_image_file(loaded.image_store, row["image_path"])
        except ImagePathError as exc:
            report.problems.append(
                VerifyProblem(kind="unconfined_image_path", path=row["image_path"], pair_id=row["pair_id"], detail=str(exc))
            )
            continue
        try:
            expected = ImageStore.relative_path(row["image_sha256"], Path(row["image_path"]).suffix or ".png")
        except ImageStoreError:
            expected = None
        if expected != row["image_path"]:
            report.problems.append(
                VerifyProblem(
                    kind="unconfined_image_path", path=row["image_path"], pair_id=row["pair_id"],
                    detail=f"store images are named by their hash: expected {expected}"
                    if expected else f"image_sha256 {row['image_sha256'][:16]}... is not a SHA-256 hex digest",
                )
            )
            continue
        rows.append(row)
    unique_paths = sorted({row["image_path"] for row in rows})
    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        hashes = dict(zip(unique_paths, pool.map(lambda p: _hash_or_error(loaded.image_file(p)), unique_paths)))
    report.n_images_checked = len(unique_paths)
    for row in rows:
        image_file = loaded.image_file(row["image_path"])
        found, error = hashes[row["image_path"]]
        if found is not None and found == row["image_sha256"]:
            _check_image_file(report, image_file, row["pair_id"])
        if found is None:
            report.problems.append(
                VerifyProblem(kind="missing_image", path=str(image_file), pair_id=row["pair_id"], detail=error)
            )
        elif found != row["image_sha256"]:
            report.problems.append(
                VerifyProblem(
                    kind="altered_image",
                    path=str(image_file),
                    pair_id=row["pair_id"],
                    detail=f"expected SHA-256 {row['image_sha256']}, found {found}",
                )
            )
    if report.problems:
        logger.warning("%s: %d problem(s) found", report.ref, len(report.problems))
    return report


def _check_index(report: VerifyReport, root: Path, dataset: str, version: str, version_dir: Path, meta) -> None:
    """manifest.json and manifest.parquet against what the registry index recorded at publish."""
    meta_file = version_dir / MANIFEST_JSON
    try:
        entry = read_index(root, dataset).get(version)
    except RegistryError as exc:
        report.problems.append(VerifyProblem(kind="not_indexed", path=str(meta_file), detail=str(exc)))
        return
    if entry is None:
        report.problems.append(
            VerifyProblem(
                kind="not_indexed", path=str(meta_file),
                detail=f"the registry index has no entry for {dataset}/{version}, so manifest.json cannot be checked",
            )
        )
        return
    found = manifest_fingerprint(meta)
    if found != entry.manifest_fingerprint:
        report.problems.append(
            VerifyProblem(
                kind="manifest_altered", path=str(meta_file),
                detail=f"fields differ from those published (index {entry.manifest_fingerprint[:12]}, found {found[:12]})",
            )
        )
    parquet_file = version_dir / MANIFEST_PARQUET
    if entry.manifest_parquet_sha256 != meta.manifest_parquet_sha256 or entry.content_fingerprint != meta.content_fingerprint:
        report.problems.append(
            VerifyProblem(
                kind="parquet_altered", path=str(parquet_file),
                detail="manifest.json's hashes of the rows differ from those the registry index recorded",
            )
        )


def _mismatch(report: VerifyReport, meta_file: Path, what: str, claimed, found) -> None:
    if claimed != found:
        report.problems.append(
            VerifyProblem(kind="summary_mismatch", path=str(meta_file), detail=f"{what}: manifest.json says {claimed}, rows give {found}")
        )


def _check_summary(report: VerifyReport, meta_file: Path, meta, table, dataset: str, version: str) -> None:
    """What manifest.json says about the rows, recomputed from the rows."""
    _mismatch(report, meta_file, "dataset/version", f"{meta.dataset}/{meta.version}", f"{dataset}/{version}")
    columns = table.select(["modality", "book", "review_status", "source_pdf_sha256"]).to_pydict()

    def count(name: str) -> dict[str, int]:
        return dict(sorted(Counter(columns[name]).items()))

    _mismatch(report, meta_file, "pairs by modality", meta.counts.by_modality, count("modality"))
    _mismatch(report, meta_file, "pairs by book", meta.counts.by_book, count("book"))
    _mismatch(report, meta_file, "pairs by review status", meta.counts.by_review_status, count("review_status"))
    excluded = meta.excluded
    _mismatch(report, meta_file, "excluded pairs", excluded.n_excluded, len(excluded.pairs))
    _mismatch(
        report, meta_file, "exclusions by reason", excluded.by_reason,
        dict(sorted(Counter(e.reason for e in excluded.pairs).items())),
    )
    _mismatch(report, meta_file, "config hash", meta.config_hash, config_hash(meta.config))
    unknown = sorted(set(columns["source_pdf_sha256"]) - set(meta.input_pdfs.values()))
    if unknown:
        report.problems.append(
            VerifyProblem(
                kind="summary_mismatch", path=str(meta_file),
                detail=f"input PDFs: rows come from {len(unknown)} PDF(s) not listed, e.g. {unknown[0][:12]}",
            )
        )


def _check_unlisted(report: VerifyReport, version_dir: Path) -> None:
    """Every entry of the version folder that publishing did not write (files, links, folders, any mode)."""
    for entry in sorted(version_dir.iterdir()):
        if entry.name in PUBLISHED_FILES and entry.is_file() and not entry.is_symlink():
            continue
        kind = "link" if entry.is_symlink() else "folder" if entry.is_dir() else "file"
        report.problems.append(
            VerifyProblem(kind="unlisted_file", path=str(entry), detail=f"a {kind} the published version does not list")
        )


def _check_modes(report: VerifyReport, files: list[Path]) -> None:
    for path in files:
        try:
            mode = path.stat().st_mode
        except OSError:
            continue
        if mode & 0o222:
            report.problems.append(
                VerifyProblem(kind="writable_file", path=str(path), detail=f"mode {mode & 0o777:o}, published read-only (444)")
            )


def _check_image_file(report: VerifyReport, image_file: Path, pair_id: str) -> None:
    """A stored image must stay read-only and be an image the guarded decoder accepts."""
    _check_modes(report, [image_file])
    try:
        check_image(image_file, ImageLimits())
    except ImageDecodeError as exc:
        report.problems.append(VerifyProblem(kind="undecodable_image", path=str(image_file), pair_id=pair_id, detail=exc.reason))
