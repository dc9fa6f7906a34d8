"""What every ML-format export shares: verified rows of a version, sample keys, and a whole-folder swap.

Each export reads a published version (never a build in progress), re-hashes every image it
packs, and writes `export.json` naming the version and its content fingerprint, so a dataset on
someone's disk can always be traced back to the manifest it came from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from data_manifests.registry import LoadedManifest, load_manifest
from foundation.files import write_atomic

logger = logging.getLogger(__name__)

EXPORT_RECORD = "export.json"
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")

# Manifest columns carried into every export row next to the image (image_path is store-internal).
ROW_FIELDS: tuple[str, ...] = (
    "pair_id",
    "caption_en",
    "caption_zh",
    "modality",
    "modality_sublabel",
    "book",
    "source_pdf",
    "source_pdf_sha256",
    "page",
    "bbox",
    "figure_id",
    "panel",
    "image_sha256",
    "caption_en_origin",
    "caption_zh_origin",
    "translation_engine",
    "modality_confidence",
    "alignment_score",
    "review_status",
    "reviewer",
    "reasons",
    "scanned",
    "stitched",
)


class ExportError(Exception):
    """An export could not be written; the message names the version or folder involved."""


class ExportSummary(BaseModel):
    """What an ML-format export wrote, for the CLI line, the bench and `export.json`."""

    format: str = Field(description="Export format: 'hf', 'webdataset' or 'croissant'.")
    ref: str = Field(description="Version exported, e.g. 'mm-retinal/v1'.")
    content_fingerprint: str = Field(description="Content fingerprint of the exported version (manifest.json).")
    manifest_parquet_sha256: str = Field(description="SHA-256 of the version's manifest.parquet.")
    out: Path = Field(description="Folder the export was written to.")
    n_rows: int = Field(description="Pairs written.")
    n_bytes: int = Field(0, description="Bytes on disk under `out` after the export.")
    seconds: float = Field(0.0, description="Wall time of the export.")
    files: list[str] = Field(default_factory=list, description="Main files written, relative to `out`.")
    errors: list[str] = Field(default_factory=list, description="Pairs left out because their image is missing or altered.")


@dataclass(frozen=True)
class VerifiedRow:
    """A manifest row with its image bytes, already checked against `image_sha256`."""

    row: dict[str, Any]
    image_bytes: bytes
    image_suffix: str

    def fields(self) -> dict[str, Any]:
        return {name: self.row[name] for name in ROW_FIELDS}


def load_source(source: LoadedManifest | str, root: Path | str | None) -> LoadedManifest:
    if isinstance(source, LoadedManifest):
        return source
    if root is None:
        raise ExportError(f"registry root is required to load {source!r}")
    return load_manifest(root, source)


def verified_rows(source: LoadedManifest, errors: list[str]) -> Iterator[VerifiedRow]:
    """Rows in pair-id order with their image bytes; a missing or altered image is named in `errors` and skipped."""
    for row in source.table.to_pylist():
        path = source.image_file(row["image_path"])
        try:
            data = path.read_bytes()
        except OSError as exc:
            errors.append(f"pair {row['pair_id']}: store image unreadable: {path}: {exc.strerror or exc}")
            continue
        actual = hashlib.sha256(data).hexdigest()
        if actual != row["image_sha256"]:
            errors.append(f"pair {row['pair_id']}: store image {path} has SHA-256 {actual}, expected {row['image_sha256']}")
            continue
        yield VerifiedRow(row=row, image_bytes=data, image_suffix=(Path(row["image_path"]).suffix or ".png").lower())


def sample_keys(pair_ids: list[str], image_sha256: list[str]) -> dict[str, str]:
    """Pair id -> a key without dots or slashes ('book__3-12__A'); clashing keys get a hash suffix."""
    base = {pid: _KEY_UNSAFE.sub("_", pid.replace("/", "__")) for pid in pair_ids}
    clashes = {key for key, n in Counter(base.values()).items() if n > 1}
    return {
        pid: f"{key}__{sha[:10]}" if key in clashes else key
        for (pid, key), sha in zip(base.items(), image_sha256, strict=True)
    }


def folder_size(path: Path) -> int:
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file() and not entry.is_symlink())


EXPORT_MARKER = ".mmretinal-export"
"""Written into every export: its kind. Only a folder holding it (of the same kind) is ever replaced."""


def export_kind(folder: Path) -> str | None:
    """The kind of export a folder holds (its marker), None when it is not an export."""
    try:
        return json.loads((Path(folder) / EXPORT_MARKER).read_text(encoding="utf-8"))["kind"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def check_export_target(out: Path, kind: str, protected: dict[str, Path], overwrite: bool = False) -> None:
    """Refuse a target that would replace what an export did not write (ExportError, one line).

    Refused: a folder inside (or holding) a protected one (the registry, the image store, the work
    dir); a file; a non-empty folder that is not an export of the same kind; a previous export of
    the same kind unless `overwrite`.
    """
    target = Path(out).resolve()
    for what, place in protected.items():
        if _overlaps(target, Path(place).resolve()):
            raise ExportError(f"export target {out} overlaps {what} ({place}); exports are written elsewhere")
    if not target.exists():
        return
    if not target.is_dir():
        raise ExportError(f"export target {out} exists and is not a folder")
    if not any(target.iterdir()):
        return
    found = export_kind(target)
    if found is None:
        raise ExportError(f"export target {out} is not empty and not an earlier export; give a new or empty folder")
    if found != kind:
        raise ExportError(f"export target {out} holds a {found} export, not {kind}; give another folder")
    if not overwrite:
        raise ExportError(f"export target {out} holds an earlier {kind} export; add --overwrite to replace it")


def protected_places(source: LoadedManifest, extra: dict[str, Path] | None = None) -> dict[str, Path]:
    """What an export of `source` must never overlap: its registry and image store, and `extra`."""
    return {"the registry": source.path.parents[1], "the image store": source.image_store, **(extra or {})}


@contextmanager
def export_folder(
    out: Path, kind: str, source: LoadedManifest, overwrite: bool = False, protected: dict[str, Path] | None = None
) -> Iterator[Path]:
    """A fresh temporary sibling of `out`, marked as a `kind` export, that replaces `out` when the block succeeds.

    The target is checked first (`check_export_target`); readers never see a half-written export:
    the old folder stays until the new one is complete.
    """
    out = Path(out)
    check_export_target(out, kind, protected_places(source, protected), overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".tmp-export-{uuid.uuid4().hex[:12]}-{out.name}"
    staging.mkdir()
    try:
        write_atomic(staging / EXPORT_MARKER, json.dumps({"kind": kind, "ref": source.ref}) + "\n")
        yield staging
        old = out.parent / f".old-export-{uuid.uuid4().hex[:12]}-{out.name}"
        if out.exists():
            os.rename(out, old)
        os.rename(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_export_record(folder: Path, summary: ExportSummary, extra: dict[str, Any] | None = None) -> None:
    """`export.json`: the version, its fingerprint and what was written (paths relative to the export)."""
    record = summary.model_dump(mode="json", exclude={"out", "n_bytes", "seconds"})
    record.update(extra or {})
    write_atomic(folder / EXPORT_RECORD, json.dumps(record, indent=2, ensure_ascii=False) + "\n")


def finish(summary: ExportSummary, started: float) -> ExportSummary:
    import time

    summary.seconds = time.perf_counter() - started
    summary.n_bytes = folder_size(summary.out)
    for error in summary.errors:
        logger.error("%s: %s", summary.ref, error)
    logger.info(
        "exported %s as %s: %d rows, %d bytes in %.2fs -> %s",
        summary.ref, summary.format, summary.n_rows, summary.n_bytes, summary.seconds, summary.out,
    )
    return summary
