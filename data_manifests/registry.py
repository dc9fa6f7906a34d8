"""Publishing and reading immutable dataset versions.

Layout of a registry root::

    <root>/<dataset>/v1/manifest.parquet
    <root>/<dataset>/v1/manifest.json
    <root>/<dataset>/latest          # text file naming the newest version, e.g. "v2"
    <root>/images/ab/abcdef....png   # default image store, shared by every dataset and version

A version directory is built under a temporary name inside the dataset directory and renamed
into place, so a version is either complete or absent. The version number is claimed under an
exclusive lock and by the rename itself (which fails when the target exists), so concurrent
publishers never share a number. Existing version directories are never written again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from data_manifests.schema import (
    MANIFEST_JSON,
    MANIFEST_PARQUET,
    ExcludedPair,
    ExclusionSummary,
    ManifestCounts,
    ManifestMeta,
    canonical_json,
    config_hash,
    content_fingerprint,
    pair_to_row,
    rows_to_table,
)
from data_manifests.store import ImageStore, ImageStoreError, resolve_image_store, sha256_file
from foundation.files import write_atomic
from foundation.records import Pair

logger = logging.getLogger(__name__)

REGISTRY_ENV = "MMRETINAL_REGISTRY"
DEFAULT_REGISTRY_DIRNAME = "data_manifests"
LATEST = "latest"
LATEST_POINTER = "latest"
LOCK_FILE = ".publish.lock"
TMP_PREFIX = ".tmp-publish-"
_VERSION_RE = re.compile(r"^v([1-9][0-9]*)$")
_DATASET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_MAX_CLAIM_ATTEMPTS = 1000


class RegistryError(Exception):
    """A registry operation failed; the message names the dataset, version or file involved."""


class PublishError(RegistryError):
    """Publishing was refused; no version directory was created."""


@dataclass(frozen=True)
class PublishedVersion:
    """Where a newly published version lives and what it holds."""

    dataset: str
    version: str
    path: Path
    meta: ManifestMeta
    unchanged: bool = False  # the latest version already held this content; nothing new was written

    @property
    def ref(self) -> str:
        return f"{self.dataset}/{self.version}"


@dataclass(frozen=True)
class LoadedManifest:
    """A version read back: metadata, rows and the resolved image store.

    Iterates as `(meta, table)` so `meta, table = load_manifest(...)` works.
    """

    meta: ManifestMeta
    table: pa.Table
    path: Path
    image_store: Path

    def __iter__(self) -> Iterator[Any]:
        return iter((self.meta, self.table))

    @property
    def ref(self) -> str:
        return f"{self.meta.dataset}/{self.meta.version}"

    def image_file(self, image_path: str) -> Path:
        """Absolute path of a row's image (its `image_path` is relative to the store)."""
        return self.image_store / image_path

    def to_pandas(self):
        """Rows as a pandas DataFrame with an extra absolute `image_file` column."""
        frame = self.table.to_pandas()
        frame["image_file"] = [str(self.image_file(p)) for p in frame["image_path"]]
        return frame


def default_registry_root() -> Path:
    """$MMRETINAL_REGISTRY, else `data_manifests/` in the current directory."""
    from_env = os.environ.get(REGISTRY_ENV)
    return Path(from_env).expanduser() if from_env else Path.cwd() / DEFAULT_REGISTRY_DIRNAME


def version_number(version: str) -> int:
    match = _VERSION_RE.match(version)
    if not match:
        raise RegistryError(f"not a version name (expected v1, v2, ...): {version!r}")
    return int(match.group(1))


def _check_dataset_name(dataset: str) -> None:
    if not _DATASET_RE.match(dataset):
        raise RegistryError(
            f"invalid dataset name {dataset!r}: use letters, digits, '.', '_' or '-' (no '/')"
        )


def list_datasets(root: Path | str) -> list[str]:
    """Dataset names that have at least one published version."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        entry.name
        for entry in root.iterdir()
        if entry.is_dir() and _DATASET_RE.match(entry.name) and list_versions(root, entry.name)
    )


def list_versions(root: Path | str, dataset: str) -> list[str]:
    """Published versions of a dataset, oldest first (v1, v2, ..., v10)."""
    _check_dataset_name(dataset)
    dataset_dir = Path(root) / dataset
    if not dataset_dir.is_dir():
        return []
    versions = [
        entry.name
        for entry in dataset_dir.iterdir()
        if entry.is_dir() and _VERSION_RE.match(entry.name) and (entry / MANIFEST_JSON).is_file()
    ]
    return sorted(versions, key=version_number)


def latest_version(root: Path | str, dataset: str) -> str | None:
    """Newest published version; the highest number wins over a stale `latest` pointer."""
    versions = list_versions(root, dataset)
    return versions[-1] if versions else None


def parse_ref(ref: str, version: str | None = None) -> tuple[str, str]:
    """Split 'mm-retinal/v2' (or 'mm-retinal/latest', or 'mm-retinal' + version) into parts."""
    ref = ref.strip().strip("/")
    if version is not None:
        dataset, resolved = ref, version
    elif "/" in ref:
        dataset, resolved = ref.rsplit("/", 1)
    else:
        dataset, resolved = ref, LATEST
    _check_dataset_name(dataset)
    if resolved != LATEST:
        version_number(resolved)
    return dataset, resolved


def resolve_ref(root: Path | str, ref: str, version: str | None = None) -> tuple[str, str]:
    """Dataset and concrete version name for a reference, resolving 'latest'."""
    dataset, resolved = parse_ref(ref, version)
    if resolved == LATEST:
        newest = latest_version(root, dataset)
        if newest is None:
            raise RegistryError(f"dataset {dataset!r} has no published versions under {root}")
        resolved = newest
    return dataset, resolved


def read_meta(version_dir: Path) -> ManifestMeta:
    meta_file = version_dir / MANIFEST_JSON
    try:
        return ManifestMeta.model_validate_json(meta_file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RegistryError(f"version not found: {version_dir} has no {MANIFEST_JSON}") from exc
    except ValueError as exc:
        raise RegistryError(f"unreadable manifest metadata {meta_file}: {exc}") from exc


def store_path_from_meta(root: Path, meta: ManifestMeta, image_store: Path | str | None = None) -> Path:
    """Image store for reading a version: explicit option/env var, else the one it recorded."""
    if image_store is not None and str(image_store) != "":
        return resolve_image_store(root, image_store)
    if os.environ.get("MMRETINAL_IMAGE_STORE"):
        return resolve_image_store(root)
    recorded = Path(meta.image_store)
    return (recorded if recorded.is_absolute() else Path(root) / recorded).resolve()


def load_manifest(
    root: Path | str,
    ref: str,
    version: str | None = None,
    *,
    image_store: Path | str | None = None,
) -> LoadedManifest:
    """Read a published version: `load_manifest(root, "mm-retinal/v2")` or `(root, "mm-retinal", "v2")`."""
    root = Path(root)
    dataset, resolved = resolve_ref(root, ref, version)
    version_dir = root / dataset / resolved
    if not version_dir.is_dir():
        raise RegistryError(f"version {dataset}/{resolved} not found under {root}")
    meta = read_meta(version_dir)
    parquet_file = version_dir / MANIFEST_PARQUET
    try:
        table = pq.read_table(parquet_file)
    except (OSError, pa.ArrowException) as exc:
        raise RegistryError(f"unreadable manifest table {parquet_file}: {exc}") from exc
    return LoadedManifest(
        meta=meta,
        table=table,
        path=version_dir,
        image_store=store_path_from_meta(root, meta, image_store),
    )


def _exclusion_reason(pair: Pair) -> str | None:
    if pair.review_status == "rejected":
        return "review_rejected"
    if pair.modality == "other":
        return "modality_other"
    return None


def _recorded_store_path(root: Path, store_root: Path) -> str:
    try:
        return store_root.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(store_root.resolve())


def _atomic_write_text(path: Path, text: str) -> None:
    write_atomic(path, text, durable=True)


@contextlib.contextmanager
def _publish_lock(dataset_dir: Path) -> Iterator[None]:
    """Exclusive lock serialising version claims in one dataset directory."""
    with open(dataset_dir / LOCK_FILE, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _resolve_parent(root: Path, dataset: str, parent: str | None) -> str | None:
    if parent is None:
        return None
    if parent == LATEST:
        return latest_version(root, dataset)
    parent_dataset, parent_version = resolve_ref(root, parent if "/" in parent else f"{dataset}/{parent}")
    if parent_version not in list_versions(root, parent_dataset):
        raise PublishError(f"parent version {parent_dataset}/{parent_version} does not exist under {root}")
    if parent_dataset != dataset:
        return f"{parent_dataset}/{parent_version}"
    return parent_version


def _count(values: list[str]) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))


def publish(
    pairs: list[Pair],
    dataset: str,
    registry_root: Path | str,
    *,
    config: dict[str, Any],
    input_pdfs: dict[str, str],
    pipeline_version: str,
    image_store: Path | str | None = None,
    parent: str | None = LATEST,
    if_changed: bool = False,
) -> PublishedVersion:
    """Publish pairs as the next immutable version `<registry_root>/<dataset>/v<N>/`.

    Pairs with modality 'other' or review status 'rejected' are left out of the rows and listed
    in manifest.json. Every kept pair's image is hashed and copied into the content-addressed
    store before anything is renamed into place; if any image is missing or has the wrong hash
    the publish fails naming each such pair and file, and no version directory is left behind.
    `parent` is 'latest' (the newest version at publish time), a version name, or None.
    With `if_changed`, content and config identical to the latest version publish nothing and
    return that version (marked `unchanged`).
    """
    _check_dataset_name(dataset)
    root = Path(registry_root)
    store_root = resolve_image_store(root, image_store)
    store = ImageStore(store_root)

    duplicates = sorted(pid for pid, n in Counter(p.pair_id for p in pairs).items() if n > 1)
    if duplicates:
        raise PublishError(f"duplicate pair ids in {dataset}: {', '.join(duplicates)}")

    kept: list[Pair] = []
    excluded: list[ExcludedPair] = []
    for pair in pairs:
        reason = _exclusion_reason(pair)
        if reason is None:
            kept.append(pair)
        else:
            excluded.append(ExcludedPair(pair_id=pair.pair_id, reason=reason))

    if not kept:
        raise PublishError(
            f"cannot publish {dataset}: no pairs left to publish ({len(excluded)} excluded as 'other' or rejected)"
        )

    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for pair in sorted(kept, key=lambda p: p.pair_id):
        image_file = Path(pair.image_file)
        try:
            stored = store.put(image_file, pair.image_sha256)
        except (ImageStoreError, OSError) as exc:
            problems.append(f"pair {pair.pair_id}: {exc}")
            continue
        rows.append(pair_to_row(pair, stored))
    if problems:
        raise PublishError(
            f"cannot publish {dataset}: {len(problems)} pair(s) with bad images:\n  " + "\n  ".join(problems)
        )

    table = rows_to_table(rows)
    fingerprint = content_fingerprint(table)
    config_json = json.loads(canonical_json(config))

    dataset_dir = root / dataset
    dataset_dir.mkdir(parents=True, exist_ok=True)
    tmp_dir = dataset_dir / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    tmp_dir.mkdir()
    try:
        parquet_file = tmp_dir / MANIFEST_PARQUET
        pq.write_table(table, parquet_file, compression="zstd")
        parquet_sha = sha256_file(parquet_file)
        counts = ManifestCounts(
            by_modality=_count([r["modality"] for r in rows]),
            by_book=_count([r["book"] for r in rows]),
            by_review_status=_count([r["review_status"] for r in rows]),
        )
        exclusions = ExclusionSummary(
            n_excluded=len(excluded),
            by_reason=_count([e.reason for e in excluded]),
            pairs=sorted(excluded, key=lambda e: e.pair_id),
        )
        with _publish_lock(dataset_dir):
            resolved_parent = _resolve_parent(root, dataset, parent)
            existing = list_versions(root, dataset)
            if if_changed and existing:
                latest_dir = dataset_dir / existing[-1]
                latest_meta = read_meta(latest_dir)
                if latest_meta.content_fingerprint == fingerprint and latest_meta.config_hash == config_hash(config):
                    shutil.rmtree(tmp_dir, ignore_errors=True)
                    logger.info("%s/%s already holds this content; nothing published", dataset, existing[-1])
                    return PublishedVersion(
                        dataset=dataset, version=existing[-1], path=latest_dir, meta=latest_meta, unchanged=True
                    )
            number = version_number(existing[-1]) + 1 if existing else 1
            for _ in range(_MAX_CLAIM_ATTEMPTS):
                version = f"v{number}"
                meta = ManifestMeta(
                    dataset=dataset,
                    version=version,
                    parent=resolved_parent,
                    created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    pipeline_version=pipeline_version,
                    config=config_json,
                    config_hash=config_hash(config),
                    input_pdfs=dict(sorted(input_pdfs.items())),
                    n_pairs=table.num_rows,
                    counts=counts,
                    excluded=exclusions,
                    image_store=_recorded_store_path(root, store_root),
                    content_fingerprint=fingerprint,
                    manifest_parquet_sha256=parquet_sha,
                )
                _atomic_write_text(tmp_dir / MANIFEST_JSON, meta.model_dump_json(indent=2) + "\n")
                target = dataset_dir / version
                if target.exists():
                    number += 1
                    continue
                try:
                    os.rename(tmp_dir, target)
                except OSError:
                    if not target.exists():
                        raise
                    number += 1
                    continue
                break
            else:
                raise PublishError(f"could not claim a version number in {dataset_dir}")
            _atomic_write_text(dataset_dir / LATEST_POINTER, latest_version(root, dataset) + "\n")
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    _make_read_only(target)
    logger.info(
        "published %s/%s: %d pairs, %d excluded, fingerprint %s",
        dataset, version, table.num_rows, len(excluded), fingerprint[:12],
    )
    return PublishedVersion(dataset=dataset, version=version, path=target, meta=meta)


def _make_read_only(version_dir: Path) -> None:
    """Drop write permission on a published version's files, as a guard against edits."""
    for entry in version_dir.iterdir():
        if entry.is_file():
            entry.chmod(0o444)
