"""FLAIR-format pretraining dataframes: CSVs with `image`, `atributes` (sic) and `categories` columns."""

from __future__ import annotations

import ast
import json
import logging
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import Dataset

from keepfit.preprocess import ResizedImageCache
from keepfit.prompts import PRETRAIN_TEMPLATE, is_banned_category, pretraining_prompt

logger = logging.getLogger(__name__)

LIST_COLUMNS = ("atributes", "categories")


def parse_list_literal(value: Any, source: str = "") -> list[str]:
    """Parse "['a', 'b']" (Python or JSON list literal) into strings; never evaluates code."""
    if isinstance(value, list):
        return [str(v) for v in value]
    if value is None or (isinstance(value, float) and value != value):
        return []
    text = str(value).strip()
    if not text:
        return []
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}: {text!r} is not a list literal") from exc
    if isinstance(parsed, str):
        parsed = [parsed]
    if not isinstance(parsed, (list, tuple)) or not all(isinstance(v, str) for v in parsed):
        raise ValueError(f"{source}: {text!r} is not a list of strings")
    return list(parsed)


def read_flair_dataframe(
    csv_path: str | Path,
    image_root: str | Path | None = None,
    banned: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Rows with parsed list columns and absolute image paths; rows with a banned category dropped.

    Malformed rows are skipped with a warning naming the file and row; the rest load.
    """
    csv_path = Path(csv_path)
    try:
        frame = pd.read_csv(csv_path)
    except (OSError, pd.errors.ParserError) as exc:
        raise ValueError(f"{csv_path}: cannot read dataframe: {exc}") from exc
    missing = {"image", *LIST_COLUMNS} - set(frame.columns)
    if missing:
        raise ValueError(f"{csv_path}: missing columns {sorted(missing)}")
    root = Path(image_root) if image_root is not None else csv_path.parent
    rows = []
    for row_number, row in enumerate(frame.itertuples(index=False), start=2):
        where = f"{csv_path}:{row_number}"
        try:
            attributes = parse_list_literal(row.atributes, where)
            categories = [c.strip().lower() for c in parse_list_literal(row.categories, where)]
        except ValueError as exc:
            logger.warning("skipping row: %s", exc)
            continue
        if not categories:
            logger.warning("skipping row: %s: no categories", where)
            continue
        relative = str(row.image)
        source = Path(relative).parts[0] if len(Path(relative).parts) > 1 else ""
        rows.append(
            {"image": str(root / relative), "atributes": attributes, "categories": categories, "source": source}
        )
    parsed = pd.DataFrame(rows, columns=["image", "atributes", "categories", "source"])
    return remove_banned_categories(parsed, banned, source=str(csv_path))


def remove_banned_categories(frame: pd.DataFrame, banned: Iterable[str] | None = None, source: str = "") -> pd.DataFrame:
    """Drop every image labelled with a banned category, so those classes stay unseen in pretraining."""
    banned_terms = tuple(banned) if banned is not None else None
    keep = [
        not any(is_banned_category(c) if banned_terms is None else is_banned_category(c, banned_terms) for c in cats)
        for cats in frame["categories"]
    ]
    dropped = len(frame) - sum(keep)
    if dropped:
        logger.info("%s: dropped %d rows with banned categories", source or "dataframe", dropped)
    return frame[keep].reset_index(drop=True)


def read_flair_dataframes(
    csv_paths: Sequence[str | Path], image_root: str | Path | None = None, banned: Iterable[str] | None = None
) -> pd.DataFrame:
    frames = [read_flair_dataframe(p, image_root, banned) for p in csv_paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["image", *LIST_COLUMNS, "source"])


TEXT_SUPERVISED_SOURCES = ("06_EYENET", "11_STARE", "08_ODIR-5K", "31_JICHI")
"""Source datasets whose categories came from reports: the release never swaps their class names
for dictionary descriptions."""


class FlairDataset(Dataset):
    """Image + prompt built from one of its categories (drawn per epoch, reproducibly).

    Items are addressed by (index, epoch): the category and description draws depend only on
    (seed, epoch, index), so a resumed run sees exactly the texts an uninterrupted run would.
    As in the release, the [ATR] slot takes one of the image's attributes at random
    (`attributes="all"` joins them all), and images of `knowledge_excluded_sources` (first folder
    of the CSV's image path) keep their class name.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        image_size: int,
        cache: ResizedImageCache | None = None,
        knowledge: dict[str, list[str]] | None = None,
        template: str = PRETRAIN_TEMPLATE,
        seed: int = 0,
        attributes: str = "sample_one",
        knowledge_excluded_sources: Sequence[str] = TEXT_SUPERVISED_SOURCES,
    ) -> None:
        if attributes not in ("sample_one", "all"):
            raise ValueError(f"attributes must be 'sample_one' or 'all', not {attributes!r}")
        self.attributes = attributes
        self.knowledge_excluded_sources = set(knowledge_excluded_sources)
        self.frame = frame.reset_index(drop=True)
        self.cache = cache or ResizedImageCache(None, image_size)
        self.knowledge = knowledge or {}
        self.template = template
        self.seed = seed
        self.category_names = sorted({c for cats in self.frame["categories"] for c in cats})
        self.category_ids = {name: i for i, name in enumerate(self.category_names)}

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, item: tuple[int, int] | int) -> dict[str, Any]:
        index, epoch = item if isinstance(item, tuple) else (item, 0)
        row = self.frame.iloc[index]
        rng = random.Random(f"flair:{self.seed}:{epoch}:{index}")
        categories = list(row["categories"])
        selected = categories[rng.randrange(len(categories))]
        attributes = list(row["atributes"])
        if self.attributes == "sample_one" and attributes:
            attributes = [attributes[rng.randrange(len(attributes))]]
        source = row["source"] if "source" in row else ""
        knowledge = {} if source in self.knowledge_excluded_sources else self.knowledge
        text = pretraining_prompt(selected, attributes, knowledge, rng, self.template)
        image = torch.from_numpy(self.cache.load(row["image"])).permute(2, 0, 1).contiguous()
        multi_hot = torch.zeros(len(self.category_names), dtype=torch.bool)
        multi_hot[[self.category_ids[c] for c in categories]] = True
        return {
            "image": image,
            "text": text,
            "category_index": self.category_ids[selected],
            "category_multi_hot": multi_hot,
        }
