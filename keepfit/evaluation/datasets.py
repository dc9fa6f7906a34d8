"""Labelled image sets read from FLAIR-format dataframes.

A FLAIR dataframe is a CSV with columns `image` (path relative to an image root), `atributes`
(sic) and `categories`, the last two holding Python list literals such as
`['diabetic retinopathy']`. They are parsed with `ast.literal_eval` (never `eval`); rows that
cannot be used are kept as `SkippedRow` records with the reason, and the rest of the file is used.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from keepfit.evaluation.registry import ExperimentSpec
from foundation.files import sha256_file
from foundation.imaging import ImageDecodeError, decode_image

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("image", "categories")


@dataclass(frozen=True)
class SkippedRow:
    """A dataframe row left out of an experiment, and why."""

    row: int
    image: str
    reason: str


@dataclass
class LabeledImageSet:
    """Images with integer labels of one experiment, plus the provenance needed for cache keys."""

    name: str
    classes: list[str]
    image_root: Path
    image_paths: list[Path]
    relative_paths: list[str]
    labels: np.ndarray
    csv_path: Path
    csv_sha256: str
    skipped: list[SkippedRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.image_paths)

    @property
    def content_key(self) -> str:
        """Identity of the image list: CSV bytes + resolved image root + the rows kept."""
        digest = hashlib.sha256()
        digest.update(self.csv_sha256.encode())
        digest.update(str(self.image_root.resolve()).encode())
        for relative in self.relative_paths:
            digest.update(b"\0" + relative.encode())
        return digest.hexdigest()

    def class_counts(self) -> list[int]:
        return np.bincount(self.labels, minlength=len(self.classes)).tolist()


def parse_list_literal(text: object, column: str) -> list[str]:
    """A list-of-strings cell such as "['glaucoma']"; raises ValueError naming the column."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"empty {column!r} cell")
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError) as exc:
        raise ValueError(f"{column!r} is not a list literal: {text[:80]!r}") from exc
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{column!r} must be a list of strings: {text[:80]!r}")
    return [item.strip() for item in value]


def read_flair_dataframe(
    csv_path: str | Path,
    image_root: str | Path,
    classes: list[str],
    name: str | None = None,
    check_images: bool = True,
) -> LabeledImageSet:
    """Rows whose categories name exactly one of `classes` become samples; others are skipped with a reason.

    Class names match case-insensitively. A missing image file skips its row (when
    `check_images`), so one bad row never sinks the experiment.
    """
    csv_path = Path(csv_path)
    image_root = Path(image_root)
    if not csv_path.is_file():
        raise FileNotFoundError(f"dataframe {csv_path} does not exist")
    class_index = {label.strip().lower(): index for index, label in enumerate(classes)}
    image_paths: list[Path] = []
    relative_paths: list[str] = []
    labels: list[int] = []
    skipped: list[SkippedRow] = []
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in REQUIRED_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_path}: missing column(s) {missing}; found {reader.fieldnames}")
        for row_number, row in enumerate(reader, start=2):
            relative = (row.get("image") or "").strip()
            if not relative:
                skipped.append(SkippedRow(row_number, relative, "empty image path"))
                continue
            try:
                categories = parse_list_literal(row.get("categories"), "categories")
            except ValueError as exc:
                skipped.append(SkippedRow(row_number, relative, str(exc)))
                continue
            matches = sorted({class_index[c.lower()] for c in categories if c.lower() in class_index})
            if not matches:
                skipped.append(SkippedRow(row_number, relative, f"no experiment class in {categories}"))
                continue
            if len(matches) > 1:
                names = [classes[index] for index in matches]
                skipped.append(SkippedRow(row_number, relative, f"several experiment classes {names}"))
                continue
            path = image_root / relative
            if check_images and not path.is_file():
                skipped.append(SkippedRow(row_number, relative, f"image file {path} not found"))
                continue
            image_paths.append(path)
            relative_paths.append(relative)
            labels.append(matches[0])
    for item in skipped[:5]:
        logger.warning("%s row %d (%s) skipped: %s", csv_path, item.row, item.image, item.reason)
    if len(skipped) > 5:
        logger.warning("%s: %d rows skipped in total", csv_path, len(skipped))
    if not image_paths:
        raise ValueError(f"{csv_path}: no usable rows for classes {classes}")
    return LabeledImageSet(
        name=name or csv_path.stem,
        classes=list(classes),
        image_root=image_root,
        image_paths=image_paths,
        relative_paths=relative_paths,
        labels=np.asarray(labels, dtype=np.int64),
        csv_path=csv_path,
        csv_sha256=sha256_file(csv_path),
        skipped=skipped,
    )


def load_experiment_dataset(
    spec: ExperimentSpec, data_root: str | Path, dataframe_dir: str | Path | None = None
) -> LabeledImageSet:
    """The dataset of a registered experiment.

    The CSV is looked up in `dataframe_dir` when given, else under the data root; images are
    relative to the data root (or `spec.image_root` below it).
    """
    data_root = Path(data_root)
    csv_dir = Path(dataframe_dir) if dataframe_dir else data_root
    csv_path = csv_dir / spec.dataframe
    image_root = data_root / spec.image_root if spec.image_root else data_root
    return read_flair_dataframe(csv_path, image_root, spec.classes, name=spec.name)


def load_rgb_image(path: Path) -> Image.Image:
    """Decoded RGB image; a clear error naming the file when it cannot be read."""
    try:
        return decode_image(path)  # the guarded decoder: oversized images refused from their header
    except ImageDecodeError as exc:
        raise ValueError(f"cannot read image {path}: {exc.reason}") from exc
