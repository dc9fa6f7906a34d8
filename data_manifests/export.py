"""Export a published version as the CSV dataframes the KeepFIT/FLAIR training code reads.

CFP rows are written as `image,caption`; FFA and OCT rows as `image,atributes,categories` (the
misspelling is the released column name) where `categories` is a one-element Python list literal
holding the caption and `atributes` is `[]`. Image paths in the CSVs are relative to an image
root that the export fills from the image store.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections import Counter
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, Field

from data_manifests.export_common import export_folder
from data_manifests.registry import LoadedManifest, load_manifest
from data_manifests.store import sha256_file
from foundation.files import atomic_output, atomic_path
from foundation.spreadsheet import neutralise_cell

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
CAPTION_COLUMNS = {"en": "caption_en", "zh": "caption_zh"}


class FlairExportOptions(BaseModel):
    """How a manifest version is turned into KeepFIT/FLAIR dataframes."""

    language: Literal["en", "zh"] = Field("en", description="Caption language written to the CSVs.")
    image_root: Path | None = Field(
        None, description="Directory the CSV image paths are relative to; default '<out>/images'."
    )
    link_mode: Literal["copy", "symlink"] = Field(
        "copy", description="Copy images from the store (verified by hash) or symlink to them."
    )
    image_subdir: str = Field(
        "39_MM_Retinal_dataset", description="Folder under the image root that holds the exported images."
    )
    csv_names: dict[str, str] = Field(
        default_factory=lambda: {
            "CFP": "39_MM_Retinal_dataset.csv",
            "FFA": "MM-Retinal_FFA.csv",
            "OCT": "OCT17_MM_Retinal_OCT.csv",
        },
        description="CSV file name per modality, as the released training code names them.",
    )
    caption_style: dict[str, Literal["caption", "categories"]] = Field(
        default_factory=lambda: {"CFP": "caption", "FFA": "categories", "OCT": "categories"},
        description="'caption' writes image,caption; 'categories' writes image,atributes,categories.",
    )
    neutralise_formulas: bool = Field(
        True,
        description="Prefix text cells starting with =, +, -, @, tab or CR with an apostrophe, so spreadsheet "
        "tools show them as text instead of running them; off writes captions byte for byte.",
    )


class ExportResult(BaseModel):
    """What an export wrote and what it had to leave out."""

    ref: str = Field(description="Version exported, e.g. 'mm-retinal/v1'.")
    image_root: Path = Field(description="Directory the CSV image paths are relative to.")
    csv_files: dict[str, Path] = Field(default_factory=dict, description="Modality -> CSV written.")
    rows: dict[str, int] = Field(default_factory=dict, description="Modality -> rows written.")
    skipped_no_caption: list[str] = Field(
        default_factory=list, description="Pair ids left out because they lack a caption in the chosen language."
    )
    errors: list[str] = Field(default_factory=list, description="Pairs left out because their image is missing or altered.")


def one_line(text: str) -> str:
    """Collapse whitespace (line breaks from the page layout) to single spaces."""
    return " ".join(text.split())


def exported_image_name(pair_id: str, suffix: str) -> str:
    """File name for a pair's image: the pair id made filesystem-safe ('book__3-12__A.png')."""
    return _UNSAFE_CHARS.sub("_", pair_id.replace("/", "__")) + suffix


def _copy_verified(source: Path, target: Path, expected_sha256: str) -> None:
    if target.is_file() and not target.is_symlink() and sha256_file(target) == expected_sha256:
        return
    digest = hashlib.sha256()
    with atomic_output(target) as out, open(source, "rb") as src:
        for chunk in iter(lambda: src.read(_CHUNK), b""):
            digest.update(chunk)
            out.write(chunk)
        if digest.hexdigest() != expected_sha256:
            raise ValueError(f"store image {source} has SHA-256 {digest.hexdigest()}, expected {expected_sha256}")


def _symlink(source: Path, target: Path) -> None:
    if not source.is_file():
        raise FileNotFoundError(f"store image not found: {source}")
    if target.is_symlink() and Path(os.readlink(target)) == source:
        return
    tmp_name = target.parent / f".tmp-{os.getpid()}-{target.name}"
    tmp_name.unlink(missing_ok=True)
    os.symlink(source, tmp_name)
    os.replace(tmp_name, target)


def _write_csv_atomic(frame: pd.DataFrame, path: Path, neutralise: bool = True) -> None:
    if neutralise:
        frame = frame.map(neutralise_cell)
    with atomic_path(path) as temp_path:
        frame.to_csv(temp_path, index=False)


def export_flair_csv(
    source: LoadedManifest | str,
    out_dir: Path | str,
    *,
    root: Path | str | None = None,
    overwrite: bool = False,
    protected: dict[str, Path] | None = None,
    options: FlairExportOptions | None = None,
) -> ExportResult:
    """Write one CSV per modality into `out_dir` and fill the image root from the image store.

    A pair whose store image is missing or altered is left out and named in `errors`; the rest of
    the export goes on. The export is written beside `out_dir` and renamed into place; an earlier
    flair-csv export there is replaced only with `overwrite` (see `export_folder`). An explicit
    `image_root` outside the export is filled in place (images already there are kept).
    """
    options = options or FlairExportOptions()
    if isinstance(source, str):
        if root is None:
            raise ValueError(f"registry root is required to load {source!r}")
        source = load_manifest(root, source)
    out_dir = Path(out_dir)
    with export_folder(out_dir, "flair-csv", source, overwrite, protected) as staging:
        result = _write_flair_csv(source, staging, options)
    result.csv_files = {modality: out_dir / path.name for modality, path in result.csv_files.items()}
    if not options.image_root:
        result.image_root = (out_dir / "images").resolve()
    if result.skipped_no_caption:
        logger.warning(
            "%s: %d pair(s) without a %s caption left out", source.ref, len(result.skipped_no_caption), options.language
        )
    for error in result.errors:
        logger.error("%s: %s", source.ref, error)
    return result


def _write_flair_csv(source: LoadedManifest, staging: Path, options: FlairExportOptions) -> ExportResult:
    image_root = Path(options.image_root) if options.image_root else staging / "images"
    image_root.mkdir(parents=True, exist_ok=True)
    result = ExportResult(ref=source.ref, image_root=image_root.resolve())
    caption_column = CAPTION_COLUMNS[options.language]

    rows = source.table.select(
        ["pair_id", "image_path", "image_sha256", "modality", caption_column]
    ).to_pylist()
    names = {
        row["pair_id"]: exported_image_name(row["pair_id"], Path(row["image_path"]).suffix or ".png")
        for row in rows
    }
    clashes = {name for name, n in Counter(f"{r['modality']}/{names[r['pair_id']]}" for r in rows).items() if n > 1}
    records: dict[str, list[dict[str, str]]] = {modality: [] for modality in options.csv_names}
    for row in rows:
        modality = row["modality"]
        if modality not in options.csv_names:
            continue
        caption = row[caption_column]
        if not caption or not caption.strip():
            result.skipped_no_caption.append(row["pair_id"])
            continue
        name = names[row["pair_id"]]
        if f"{modality}/{name}" in clashes:
            stem, suffix = os.path.splitext(name)
            name = f"{stem}-{row['image_sha256'][:10]}{suffix}"
        relative = f"{options.image_subdir}/{modality}/{name}"
        target = image_root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            store_file = source.image_file(row["image_path"])
            if options.link_mode == "symlink":
                _symlink(store_file.resolve(), target)
            else:
                _copy_verified(store_file, target, row["image_sha256"])
        except (OSError, ValueError) as exc:
            result.errors.append(f"pair {row['pair_id']}: {exc}")
            continue
        text = one_line(caption)
        if options.caption_style.get(modality, "categories") == "caption":
            records[modality].append({"image": relative, "caption": text})
        else:
            records[modality].append({"image": relative, "atributes": repr([]), "categories": repr([text])})

    for modality, csv_name in options.csv_names.items():
        style = options.caption_style.get(modality, "categories")
        columns = ["image", "caption"] if style == "caption" else ["image", "atributes", "categories"]
        frame = pd.DataFrame(records[modality], columns=columns)
        csv_path = staging / csv_name
        _write_csv_atomic(frame, csv_path, options.neutralise_formulas)
        result.csv_files[modality] = csv_path
        result.rows[modality] = len(frame)
    return result
