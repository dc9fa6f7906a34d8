"""MM-Retinal expert pairs read from a published manifest version (`data_manifests/<dataset>/<version>/`).

Column contract used here: pair_id, image_path (relative to the version's image store, or
absolute), image_sha256, caption_en, caption_zh, modality, review_status. Rows a reviewer
rejected are never used. Image bytes are checked against image_sha256 when the resized-image
cache is first filled, so a corrupted store cannot silently train the model.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import Dataset

from keepfit.preprocess import ResizedImageCache

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("pair_id", "image_path", "image_sha256", "caption_en", "caption_zh", "modality", "review_status")


class ExpertDataConfig(BaseModel):
    """Which MM-Retinal manifest version and which of its pairs to pretrain on."""

    model_config = ConfigDict(extra="forbid")

    registry_root: str = Field("data_manifests", description="Manifest registry root holding <dataset>/<version>/.")
    dataset: str = Field("mm-retinal", description="Dataset name in the registry.")
    version: str = Field("latest", description="Published version (v1, v2, ...) or 'latest'.")
    image_store: str | None = Field(None, description="Image store override; default is the one the manifest records.")
    language: Literal["en", "zh", "both"] = Field(
        "en", description="Caption language; 'both' draws one of the two captions per sample."
    )
    modalities: list[str] = Field(default_factory=lambda: ["CFP"], description="Modalities kept (CFP, FFA, OCT).")
    verify_images: bool = Field(True, description="Check image sha256 when first reading each image.")
    include_queued: bool = Field(
        False, description="Also train on pairs still waiting in the review queue (unreviewed, low alignment score)."
    )


@dataclass(frozen=True)
class ExpertManifest:
    """The selected rows of one manifest version plus its identity (recorded in checkpoints)."""

    frame: pd.DataFrame
    dataset: str
    version: str
    content_fingerprint: str
    path: Path

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "version": self.version,
            "content_fingerprint": self.content_fingerprint,
            "n_pairs": len(self.frame),
        }


def select_rows(frame: pd.DataFrame, config: ExpertDataConfig, image_store: Path, source: str) -> pd.DataFrame:
    """Apply the contract: drop rejected (and, unless asked, still-queued) rows, keep chosen
    modalities and rows with the chosen caption."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{source}: manifest lacks columns {missing}")
    excluded = {"rejected"} if config.include_queued else {"rejected", "queued"}
    selected = frame[~frame["review_status"].astype(str).isin(excluded)]
    selected = selected[selected["modality"].isin(config.modalities)]
    has_en = selected["caption_en"].fillna("").str.strip() != ""
    has_zh = selected["caption_zh"].fillna("").str.strip() != ""
    keep = {"en": has_en, "zh": has_zh, "both": has_en | has_zh}[config.language]
    if (~keep).any():
        logger.warning("%s: %d rows lack a %s caption and are skipped", source, int((~keep).sum()), config.language)
    selected = selected[keep].copy()
    selected["image_file"] = [
        str(Path(p) if Path(p).is_absolute() else image_store / p) for p in selected["image_path"]
    ]
    return selected.sort_values("pair_id").reset_index(drop=True)


def read_expert_manifest(config: ExpertDataConfig) -> ExpertManifest:
    """Load one published version through the registry and select the rows to pretrain on."""
    from data_manifests.registry import load_manifest

    loaded = load_manifest(
        Path(config.registry_root), config.dataset, config.version, image_store=config.image_store
    )
    frame = select_rows(loaded.table.to_pandas(), config, loaded.image_store, str(loaded.path))
    if frame.empty:
        raise ValueError(f"{loaded.path}: no {config.modalities} pairs with {config.language} captions to train on")
    logger.info(
        "MM-Retinal %s/%s (fingerprint %s): %d pairs", loaded.meta.dataset, loaded.meta.version,
        loaded.meta.content_fingerprint[:12], len(frame),
    )
    return ExpertManifest(
        frame=frame,
        dataset=loaded.meta.dataset,
        version=loaded.meta.version,
        content_fingerprint=loaded.meta.content_fingerprint,
        path=loaded.path,
    )


class ExpertDataset(Dataset):
    """MM-Retinal image + caption, images from the resized cache (not augmented)."""

    def __init__(
        self,
        manifest: ExpertManifest,
        image_size: int,
        cache: ResizedImageCache | None = None,
        language: Literal["en", "zh", "both"] = "en",
        verify_images: bool = True,
        seed: int = 0,
    ) -> None:
        self.frame = manifest.frame
        self.cache = cache or ResizedImageCache(None, image_size)
        self.language = language
        self.verify_images = verify_images
        self.seed = seed

    def __len__(self) -> int:
        return len(self.frame)

    def caption(self, index: int, draw: int = 0) -> str:
        row = self.frame.iloc[index]
        english = str(row["caption_en"] or "").strip()
        chinese = str(row["caption_zh"] or "").strip()
        if self.language == "en":
            return english
        if self.language == "zh":
            return chinese
        options = [c for c in (english, chinese) if c]
        return options[random.Random(f"expert:{self.seed}:{draw}:{index}").randrange(len(options))]

    def __getitem__(self, item: tuple[int, int] | int) -> dict[str, Any]:
        index, draw = item if isinstance(item, tuple) else (item, 0)
        row = self.frame.iloc[index]
        sha = str(row["image_sha256"])
        array = self.cache.load(row["image_file"], key=sha, expected_sha256=sha if self.verify_images else None)
        image = torch.from_numpy(array).permute(2, 0, 1).contiguous()
        return {"image": image, "text": self.caption(index, draw), "pair_id": row["pair_id"]}
