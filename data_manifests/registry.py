"""Publishing and reading immutable dataset versions.

Layout of a registry root::

    <root>/<dataset>/v1/manifest.parquet
    <root>/<dataset>/v1/manifest.json
    <root>/<dataset>/latest          # text file naming the newest version, e.g. "v2"
    <root>/<dataset>/index.jsonl     # one line per published version: the fingerprints of its files
    <root>/images/ab/abcdef....png   # default image store, shared by every dataset and version

A version directory is built under a temporary name inside the dataset directory and renamed
into place, so a version is either complete or absent. The version number is claimed under an
exclusive lock and by the rename itself (which fails when the target exists), so concurrent
publishers never share a number. Existing version directories are never written again.

The index records, for each version, a fingerprint of its manifest.json and the SHA-256 of its
manifest.parquet outside the version directory, so `verify` notices edits to either even when
whoever made them also updated the hashes the JSON holds. A publish that was killed leaves a
temporary directory (its owner's lock released) and perhaps a temporary `latest`; the next
publish removes them, makes every version read-only and points `latest` at the newest version.
"""

from __future__ import annotations

import contextlib
import errno
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
    manifest_fingerprint,
    pair_to_row,
    rows_to_table,
)
from data_manifests.store import ImageStore, ImageStoreError, resolve_image_store, sha256_file
from foundation.files import owner_gone, write_atomic
from foundation.imaging import ImageDecodeError, check_image
from foundation.records import Pair

logger = logging.getLogger(__name__)

REGISTRY_ENV = "MMRETINAL_REGISTRY"
DEFAULT_REGISTRY_DIRNAME = "data_manifests"
LATEST = "latest"
LATEST_POINTER = "latest"
LOCK_FILE = ".publish.lock"
INDEX_FILE = "index.jsonl"
TMP_PREFIX = ".tmp-publish-"
IN_USE_FILE = ".in-use"
STALE_UNLOCKED_SECONDS = 60.0
_VERSION_RE = re.compile(r"^v([1-9][0-9]*)$")
_DATASET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_MAX_CLAIM_ATTEMPTS = 1000


class RegistryError(Exception):
    """A registry operation failed; the message names the dataset, version or file involved."""


class PublishError(RegistryError):
    """Publishing was refused; no version directory was created."""


class ImagePathError(RegistryError, ValueError):
    """A manifest row's image_path points outside the image store."""


@dataclass(frozen=True)
class IndexEntry:
    """What the registry index recorded about a version when it was published."""

    version: str
    manifest_fingerprint: str
    manifest_parquet_sha256: str
    content_fingerprint: str


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
        """Absolute path of a row's image; `ImagePathError` when `image_path` leaves the store."""
        return confined_image_file(self.image_store, image_path)

    def to_pandas(self):
        """Rows as a pandas DataFrame with an extra absolute `image_file` column."""
        frame = self.table.to_pandas()
        frame["image_file"] = [str(self.image_file(p)) for p in frame["image_path"]]
        return frame


def confined_image_file(store_root: Path, image_path: str) -> Path:
    """`store_root / image_path`, refused unless it is a plain relative path that stays in the store
    (no absolute path, no '..', no symbolic link leading out)."""
    relative = Path(image_path)
    if not image_path or relative.is_absolute() or ".." in relative.parts or "\\" in image_path:
        raise ImagePathError(f"image path {image_path!r} is not a path inside the image store")
    candidate = store_root / relative
    try:
        candidate.resolve().relative_to(store_root.resolve())
    except ValueError:
        raise ImagePathError(f"image path {image_path!r} leads outside the image store {store_root}") from None
    return candidate


def read_index(root: Path | str, dataset: str) -> dict[str, IndexEntry]:
    """The registry index of a dataset: version -> what was recorded at publish (a later line wins)."""
    index_file = Path(root) / dataset / INDEX_FILE
    try:
        text = index_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError(f"unreadable registry index {index_file}: {exc}") from exc
    entries: dict[str, IndexEntry] = {}
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            entry = IndexEntry(**{key: str(record[key]) for key in IndexEntry.__dataclass_fields__})
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryError(f"{index_file}:{line_number}: invalid index line ({exc})") from exc
        entries[entry.version] = entry
    return entries


def _record_in_index(dataset_dir: Path, entry: IndexEntry) -> None:
    """Add a version's entry to the index (under the publish lock), replacing the file in one step."""
    index_file = dataset_dir / INDEX_FILE
    try:
        existing = index_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        existing = ""
    if existing and not existing.endswith("\n"):
        existing += "\n"
    line = json.dumps(entry.__dict__, sort_keys=True) + "\n"
    write_atomic(index_file, existing + line, durable=True)


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
    written: list[str] = []  # images this publish added to the store
    for pair in sorted(kept, key=lambda p: p.pair_id):
        image_file = Path(pair.image_file)
        try:
            check_image(image_file)  # an image bomb or a non-image never enters the store
        except (ImageDecodeError, OSError) as exc:
            problems.append(f"pair {pair.pair_id}: {exc}")
            continue
        try:
            present = store.has(pair.image_sha256, image_file.suffix)
            stored = store.put(image_file, pair.image_sha256)
        except ImageStoreError as exc:
            problems.append(f"pair {pair.pair_id}: {exc}")
            continue
        except OSError as exc:  # the store itself (full, read-only): one line for the whole publish
            raise _storage_error(dataset, store_root, exc, len(kept), written) from None
        if not present:
            written.append(stored)
        rows.append(pair_to_row(pair, stored))
    if problems:
        raise PublishError(
            f"cannot publish {dataset}: {len(problems)} pair(s) with bad images:\n  " + "\n  ".join(problems)
        )
    try:
        return _publish_rows(rows, excluded, root, dataset, store_root, config, input_pdfs, pipeline_version, parent, if_changed)
    except OSError as exc:
        raise _storage_error(dataset, root, exc, len(kept), written) from None


def _storage_error(dataset: str, where: Path, exc: OSError, n_pairs: int, written: list[str]) -> PublishError:
    """One line: what failed, why, how many pairs it affects and what it left in the store."""
    reason = exc.strerror or str(exc)
    name = errno.errorcode.get(exc.errno, "") if exc.errno else ""
    left = (f"; {len(written)} image(s) it wrote to the store belong to no version (`mmretinal manifest gc` removes them)"
            if written else "")
    return PublishError(
        f"cannot publish {dataset}: {exc.filename or where}: {reason}{f' ({name})' if name else ''}; "
        f"{n_pairs} pair(s) not published{left}"
    )


def _publish_rows(
    rows: list[dict[str, Any]],
    excluded: list[ExcludedPair],
    root: Path,
    dataset: str,
    store_root: Path,
    config: dict[str, Any],
    input_pdfs: dict[str, str],
    pipeline_version: str,
    parent: str | None,
    if_changed: bool,
) -> PublishedVersion:
    """Write the rows (their images already stored) as the next version of `dataset`."""

    table = rows_to_table(rows)
    fingerprint = content_fingerprint(table)
    config_json = json.loads(canonical_json(config))

    dataset_dir = root / dataset
    dataset_dir.mkdir(parents=True, exist_ok=True)
    with _publish_lock(dataset_dir):
        recover_interrupted_publish(root, dataset)
        # made and locked under the publish lock: another publisher's recovery (which runs under
        # it too) never sees this directory between its creation and its owner's lock
        tmp_dir = dataset_dir / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        tmp_dir.mkdir()
        in_use = open(tmp_dir / IN_USE_FILE, "a+b")  # locked while this publish owns the directory
        fcntl.flock(in_use.fileno(), fcntl.LOCK_EX)
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
                _record_in_index(
                    dataset_dir,
                    IndexEntry(
                        version=version,
                        manifest_fingerprint=manifest_fingerprint(meta),
                        manifest_parquet_sha256=parquet_sha,
                        content_fingerprint=fingerprint,
                    ),
                )
                (tmp_dir / IN_USE_FILE).unlink(missing_ok=True)
                _make_read_only(tmp_dir)
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
    finally:
        in_use.close()
    logger.info(
        "published %s/%s: %d pairs, %d excluded, fingerprint %s",
        dataset, version, table.num_rows, len(excluded), fingerprint[:12],
    )
    return PublishedVersion(dataset=dataset, version=version, path=target, meta=meta)


def _make_read_only(version_dir: Path) -> None:
    """Drop write permission on a published version's files, as a guard against edits."""
    for entry in version_dir.iterdir():
        if entry.is_file() and not entry.is_symlink() and entry.stat().st_mode & 0o222:
            entry.chmod(0o444)


def _owner_gone(tmp_dir: Path) -> bool:
    """Whether a temporary publish directory was abandoned: its owner's lock is free (or it never
    took one and the directory is older than a minute)."""
    return owner_gone(tmp_dir, IN_USE_FILE, STALE_UNLOCKED_SECONDS)


def recover_interrupted_publish(root: Path | str, dataset: str) -> list[str]:
    """Undo what a killed publish left behind; call under the dataset's publish lock.

    Removes abandoned temporary version directories and temporary `latest`/index files, makes
    every published version's files read-only and points `latest` at the newest version.
    Returns what was repaired, in words (also logged).
    """
    dataset_dir = Path(root) / dataset
    repaired: list[str] = []
    if not dataset_dir.is_dir():
        return repaired
    for entry in sorted(dataset_dir.iterdir()):
        name = entry.name
        if name.startswith(TMP_PREFIX) and entry.is_dir() and _owner_gone(entry):
            shutil.rmtree(entry, ignore_errors=True)
            repaired.append(f"removed abandoned {name}")
        elif name.startswith((f".{LATEST_POINTER}.", f".{INDEX_FILE}.")) and name.endswith(".tmp"):
            entry.unlink(missing_ok=True)  # writers of these hold the publish lock: nobody owns it now
            repaired.append(f"removed leftover {name}")
    versions = list_versions(root, dataset)
    for version in versions:
        version_dir = dataset_dir / version
        if any(f.is_file() and f.stat().st_mode & 0o222 for f in version_dir.iterdir()):
            _make_read_only(version_dir)
            repaired.append(f"made {version} read-only")
    if versions:
        pointer = dataset_dir / LATEST_POINTER
        try:
            current = pointer.read_text(encoding="utf-8").strip()
        except (FileNotFoundError, UnicodeDecodeError):
            current = None
        if current != versions[-1]:
            _atomic_write_text(pointer, versions[-1] + "\n")
            repaired.append(f"latest pointed at {current or 'nothing'}, now {versions[-1]}")
    for line in repaired:
        logger.warning("%s: %s", dataset_dir, line)
    return repaired
