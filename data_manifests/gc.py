"""`mmretinal manifest gc`: remove images from the store that no version references.

A publish that fails (a full disk, a read-only registry) may leave images it had already stored;
they belong to no version. `collect_garbage` finds every image the registry's versions (and the
publishes under way, in their temporary folders) reference, under every dataset's publish lock,
and removes the other images older than `min_age_seconds` (younger ones may belong to a publish
that has not written its rows yet). Nothing a version references is ever removed.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from data_manifests.registry import TMP_PREFIX, RegistryError, _publish_lock, list_datasets, list_versions
from data_manifests.schema import MANIFEST_PARQUET
from data_manifests.store import resolve_image_store


@dataclass
class GcReport:
    store: Path
    referenced: int = 0
    unreferenced: list[str] = field(default_factory=list)  # store-relative paths removed (or to remove)
    bytes: int = 0
    young: int = 0  # unreferenced but newer than the minimum age: kept
    dry_run: bool = False


def _image_paths(parquet: Path) -> set[str]:
    try:
        return set(pq.read_table(parquet, columns=["image_path"]).column("image_path").to_pylist())
    except (OSError, ValueError, KeyError) as exc:
        raise RegistryError(f"{parquet}: cannot read its image paths ({exc}); nothing removed") from None


def collect_garbage(
    registry_root: Path | str, image_store: Path | str | None = None, dry_run: bool = False, min_age_seconds: float = 3600.0
) -> GcReport:
    """Remove (or with `dry_run`, list) the store images no version of the registry references."""
    root = Path(registry_root)
    report = GcReport(store=resolve_image_store(root, image_store), dry_run=dry_run)
    datasets = list_datasets(root)
    with ExitStack() as locks:
        for dataset in datasets:
            locks.enter_context(_publish_lock(root / dataset))
        referenced: set[str] = set()
        for dataset in datasets:
            for version in list_versions(root, dataset):
                referenced |= _image_paths(root / dataset / version / MANIFEST_PARQUET)
            for under_way in (root / dataset).glob(f"{TMP_PREFIX}*/{MANIFEST_PARQUET}"):
                referenced |= _image_paths(under_way)
        report.referenced = len(referenced)
        now = time.time()
        for image in sorted(report.store.glob("??/*")) if report.store.is_dir() else []:
            relative = image.relative_to(report.store).as_posix()
            if image.name.startswith(".") or not image.is_file() or relative in referenced:
                continue
            stat = image.stat()
            if now - stat.st_mtime < min_age_seconds:
                report.young += 1
                continue
            report.unreferenced.append(relative)
            report.bytes += stat.st_size
            if not dry_run:
                image.unlink(missing_ok=True)
    return report
