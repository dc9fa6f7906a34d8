"""Export a published version's FFA pairs in FFA-IR's annotation layout.

Writes `<out>/ffair_annotation.json` as `{"train"|"val"|"test": {case_id: {"Image_path": [...],
"En_Report": ..., "Cn_Report": ...}}}` and copies (hash-verified) or links the images under
`<out>/images/`, so FFA-IR tooling and `keepfit.ffa` read MM-Retinal FFA pairs like FFA-IR cases.
A case is one pair, or one figure (its panels as frames, their distinct captions joined).
Splits are assigned per case from a hash of the case id, so a case keeps its split across versions.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from data_manifests.export import _copy_verified, _symlink, exported_image_name, one_line
from data_manifests.export_common import export_folder
from data_manifests.registry import LoadedManifest, load_manifest
from foundation.files import write_atomic

logger = logging.getLogger(__name__)

ANNOTATION_NAME = "ffair_annotation.json"
EXCLUDED_STATUSES = {"rejected", "queued"}


class FFAIRExportOptions(BaseModel):
    """How FFA pairs become FFA-IR cases."""

    case_unit: Literal["pair", "figure"] = Field(
        "pair", description="'pair': one case per panel; 'figure': one case per figure with its panels as frames."
    )
    val_fraction: float = Field(0.0, ge=0.0, le=1.0, description="Share of cases put in 'val' (by case-id hash).")
    test_fraction: float = Field(0.0, ge=0.0, le=1.0, description="Share of cases put in 'test' (by case-id hash).")
    include_queued: bool = Field(False, description="Also export pairs still waiting in the review queue.")
    link_mode: Literal["copy", "symlink"] = Field("copy", description="Copy images (verified by hash) or symlink to the store.")


class FFAIRExportResult(BaseModel):
    """What the export wrote and left out."""

    ref: str = Field(description="Version exported, e.g. 'mm-retinal/v1'.")
    annotation: Path = Field(description="The annotation JSON written.")
    cases: dict[str, int] = Field(default_factory=dict, description="Split -> cases written.")
    images: int = Field(0, description="Images written.")
    skipped_no_caption: list[str] = Field(default_factory=list, description="Pairs without an English caption.")
    errors: list[str] = Field(default_factory=list, description="Pairs left out because their image is missing or altered.")


def split_of(case_id: str, val_fraction: float, test_fraction: float) -> str:
    """'test', 'val' or 'train' from a stable hash of the case id."""
    position = int.from_bytes(hashlib.sha256(case_id.encode()).digest()[:8], "big") / 2**64
    if position < test_fraction:
        return "test"
    if position < test_fraction + val_fraction:
        return "val"
    return "train"


def export_ffa_ir(
    source: LoadedManifest | str,
    out_dir: Path | str,
    *,
    root: Path | str | None = None,
    overwrite: bool = False,
    protected: dict[str, Path] | None = None,
    options: FFAIRExportOptions | None = None,
) -> FFAIRExportResult:
    """Write the FFA pairs of a version as an FFA-IR-format annotation file plus images.

    Written beside `out_dir` and renamed into place; an earlier ffa-ir export there is replaced only
    with `overwrite` (see `export_folder`).
    """
    options = options or FFAIRExportOptions()
    if options.val_fraction + options.test_fraction > 1:
        raise ValueError("val_fraction + test_fraction exceeds 1")
    if isinstance(source, str):
        if root is None:
            raise ValueError(f"registry root is required to load {source!r}")
        source = load_manifest(root, source)
    out_dir = Path(out_dir)
    with export_folder(out_dir, "ffa-ir", source, overwrite, protected) as staging:
        result = _write_ffa_ir(source, staging, options)
    result.annotation = out_dir / ANNOTATION_NAME
    for error in result.errors:
        logger.error("%s: %s", source.ref, error)
    return result


def _write_ffa_ir(source: LoadedManifest, out_dir: Path, options: FFAIRExportOptions) -> FFAIRExportResult:
    excluded = {"rejected"} if options.include_queued else EXCLUDED_STATUSES
    rows = [
        r
        for r in source.table.to_pylist()
        if r["modality"] == "FFA" and r["review_status"] not in excluded
    ]
    result = FFAIRExportResult(ref=source.ref, annotation=out_dir / ANNOTATION_NAME)
    grouped: dict[str, list[dict]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: (r["book"], r["figure_id"], r["panel"] or "", r["pair_id"])):
        if not (row["caption_en"] or "").strip():
            result.skipped_no_caption.append(row["pair_id"])
            continue
        case_id = row["pair_id"] if options.case_unit == "pair" else f"{row['book']}/{row['figure_id']}"
        grouped[case_id.replace("/", "__")].append(row)
    tree: dict[str, dict[str, dict]] = {"train": {}, "val": {}, "test": {}}
    for case_id, members in grouped.items():
        frames, english, chinese = [], [], []
        for row in members:
            relative = f"images/{case_id}/{exported_image_name(row['pair_id'], Path(row['image_path']).suffix or '.png')}"
            target = out_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            store_file = source.image_file(row["image_path"])
            try:
                if options.link_mode == "symlink":
                    _symlink(store_file.resolve(), target)
                else:
                    _copy_verified(store_file, target, row["image_sha256"])
            except (OSError, ValueError) as exc:
                result.errors.append(f"pair {row['pair_id']}: {exc}")
                continue
            frames.append(relative)
            for texts, text in ((english, row["caption_en"]), (chinese, row["caption_zh"])):
                text = one_line(text or "")
                if text and text not in texts:
                    texts.append(text)
        if not frames:
            continue
        split = split_of(case_id, options.val_fraction, options.test_fraction)
        tree[split][case_id] = {"Image_path": frames, "En_Report": " ".join(english), "Cn_Report": "".join(chinese)}
        result.images += len(frames)
    write_atomic(result.annotation, json.dumps(tree, indent=1, ensure_ascii=False, sort_keys=True))
    result.cases = {split: len(cases) for split, cases in tree.items()}
    return result
