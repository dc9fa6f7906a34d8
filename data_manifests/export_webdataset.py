"""Export a published version as WebDataset tar shards: `key.png`, `key.json`, `key.txt` per pair.

`key.json` holds every manifest column of the pair plus the version and its fingerprint; `key.txt`
is the caption in the chosen language (one line). Shards are named `<prefix>-000000.tar`, ...;
`export.json` lists them with their sample counts, which is what a training job needs to size an epoch.
"""

from __future__ import annotations

import json
import logging
import tarfile
import time
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from data_manifests.export_common import (
    ExportSummary,
    export_folder,
    finish,
    load_source,
    sample_keys,
    verified_rows,
    write_export_record,
)
from data_manifests.registry import LoadedManifest

logger = logging.getLogger(__name__)


class WebDatasetExportOptions(BaseModel):
    """How a version is cut into tar shards."""

    samples_per_shard: int = Field(1000, ge=1, description="Most pairs per shard.")
    max_shard_bytes: int = Field(
        1 << 30, ge=1 << 16, description="Most bytes per shard; a shard is closed early when the next pair would pass it."
    )
    prefix: str = Field("mm-retinal", pattern=r"^[A-Za-z0-9._-]+$", description="Shard file name prefix.")
    language: Literal["en", "zh"] = Field("en", description="Caption language written to `key.txt`.")


def _caption(row: dict, language: str) -> str:
    text = row.get(f"caption_{language}") or ""
    return " ".join(text.split())


def export_webdataset(
    source: LoadedManifest | str,
    out: Path | str,
    *,
    root: Path | str | None = None,
    overwrite: bool = False,
    protected: dict[str, Path] | None = None,
    options: WebDatasetExportOptions | None = None,
) -> ExportSummary:
    """Write `source` to `out` as tar shards readable by `webdataset.WebDataset`."""
    from webdataset import ShardWriter

    started = time.perf_counter()
    options = options or WebDatasetExportOptions()
    loaded = load_source(source, root)
    meta = loaded.meta
    table = loaded.table
    keys = sample_keys(table.column("pair_id").to_pylist(), table.column("image_sha256").to_pylist())
    summary = ExportSummary(
        format="webdataset",
        ref=loaded.ref,
        content_fingerprint=meta.content_fingerprint,
        manifest_parquet_sha256=meta.manifest_parquet_sha256,
        out=Path(out),
        n_rows=0,
    )
    with export_folder(Path(out), "webdataset", loaded, overwrite, protected) as staging:
        pattern = str(staging / f"{options.prefix}-%06d.tar")
        with ShardWriter(
            pattern, maxcount=options.samples_per_shard, maxsize=options.max_shard_bytes, verbose=0, mode=0o644,
            mtime=datetime.fromisoformat(meta.created).timestamp(),  # same version, same tar bytes
        ) as writer:
            for item in verified_rows(loaded, summary.errors):
                record = item.fields()
                record["manifest_ref"] = loaded.ref
                record["manifest_fingerprint"] = meta.content_fingerprint
                extension = item.image_suffix.lstrip(".")
                writer.write(
                    {
                        "__key__": keys[item.row["pair_id"]],
                        extension: item.image_bytes,
                        "json": json.dumps(record, ensure_ascii=False).encode("utf-8"),
                        "txt": _caption(item.row, options.language).encode("utf-8"),
                    }
                )
                summary.n_rows += 1
        shards = sorted(path.name for path in staging.glob(f"{options.prefix}-*.tar"))
        counts = {name: _count_samples(staging / name) for name in shards}
        summary.files = shards
        write_export_record(
            staging,
            summary,
            {"shards": [{"file": name, "samples": counts[name]} for name in shards], "caption_language": options.language},
        )
    return finish(summary, started)


def _count_samples(shard: Path) -> int:
    with tarfile.open(shard) as tar:
        return sum(1 for member in tar.getmembers() if member.name.endswith(".json"))
