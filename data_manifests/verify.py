"""Re-check a published version against the hashes it recorded."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from data_manifests.registry import RegistryError, load_manifest, resolve_ref
from data_manifests.schema import MANIFEST_PARQUET, content_fingerprint
from data_manifests.store import sha256_file

logger = logging.getLogger(__name__)

ProblemKind = Literal[
    "missing_image",
    "altered_image",
    "unreadable_manifest",
    "fingerprint_mismatch",
    "row_count_mismatch",
    "parquet_altered",
]


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

    rows = table.select(["pair_id", "image_path", "image_sha256"]).to_pylist()
    unique_paths = sorted({row["image_path"] for row in rows})
    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        hashes = dict(zip(unique_paths, pool.map(lambda p: _hash_or_error(loaded.image_file(p)), unique_paths)))
    report.n_images_checked = len(unique_paths)
    for row in rows:
        image_file = loaded.image_file(row["image_path"])
        found, error = hashes[row["image_path"]]
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
