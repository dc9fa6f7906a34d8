"""FFA-IR reports as the general side of the KeepFIT objective (KeepFIT-FFA pretraining).

The trainer's "FLAIR" batch becomes FFA-IR frames with their case report; the expert side stays
MM-Retinal (FFA pairs of a published version). Each case is its own category, so two frames of
one case in a batch are both positives for its report (the soft-target CLIP loss), and
frames of different cases are negatives.
"""

from __future__ import annotations

import hashlib
import logging
import random
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import Dataset

from keepfit.ffa.data import FFACase, read_ffa_ir
from keepfit.preprocess import ResizedImageCache

logger = logging.getLogger(__name__)


class FFAIRPretrainConfig(BaseModel):
    """Which FFA-IR-format annotation file feeds the general side of KeepFIT-FFA pretraining."""

    model_config = ConfigDict(extra="forbid")

    annotation: str = Field(description="FFA-IR annotation JSON (train/val/test -> case -> Image_path, En_Report).")
    image_root: str | None = Field(None, description="Root the Image_path entries are relative to; default the JSON's folder.")
    splits: list[str] = Field(default_factory=lambda: ["train"], description="Splits used for pretraining (never test).")
    sample_unit: Literal["image", "case"] = Field(
        "image", description="'image': every frame is a sample; 'case': one frame per case per epoch, drawn at random."
    )
    language: Literal["en", "zh"] = Field("en", description="Report language used as the text.")
    on_bad_case: Literal["skip", "error"] = Field("skip", description="Skip and count, or stop at, unusable cases.")


class FFAIRPretrainDataset(Dataset):
    """Frame + report items addressed by (index, epoch), in the shape the KeepFIT trainer's FLAIR side expects."""

    def __init__(self, config: FFAIRPretrainConfig, image_size: int, cache: ResizedImageCache | None = None, seed: int = 0) -> None:
        if "test" in config.splits:
            raise ValueError(f"{config.annotation}: pretraining on the test split would leak it into evaluation")
        case_set = read_ffa_ir(config.annotation, config.image_root, tuple(config.splits), config.on_bad_case)
        self.cases: list[FFACase] = [case for split in config.splits for case in case_set.split(split)]
        if not self.cases:
            raise ValueError(f"{config.annotation}: no usable cases in {config.splits}")
        self.config = config
        self.case_set = case_set
        self.cache = cache or ResizedImageCache(None, image_size)
        self.seed = seed
        self.samples = (
            [(c, f) for c in range(len(self.cases)) for f in range(len(self.cases[c].image_files))]
            if config.sample_unit == "image"
            else [(c, -1) for c in range(len(self.cases))]
        )
        self.category_names = [case.case_id for case in self.cases]

    def __len__(self) -> int:
        return len(self.samples)

    def identity(self) -> dict[str, Any]:
        digest = hashlib.sha256(Path(self.config.annotation).read_bytes()).hexdigest()
        return {"annotation_sha256": digest, "samples": len(self.samples), **self.case_set.identity()}

    def _readable_frame(self, case: FFACase, first: int) -> Any:
        """The frame asked for, or the case's next readable one when that file cannot be decoded."""
        count = len(case.image_files)
        for step in range(count):
            image_file = case.image_files[(first + step) % count]
            try:
                return self.cache.load(image_file)
            except (OSError, ValueError) as exc:
                logger.warning("%s: unreadable frame replaced by another of the case: %s", case.case_id, exc)
        raise ValueError(f"{self.config.annotation}: case {case.case_id}: none of its {count} frames can be read")

    def __getitem__(self, item: tuple[int, int] | int) -> dict[str, Any]:
        index, epoch = item if isinstance(item, tuple) else (item, 0)
        case_index, frame = self.samples[index]
        case = self.cases[case_index]
        if frame < 0:
            frame = random.Random(f"ffa-ir:{self.seed}:{epoch}:{index}").randrange(len(case.image_files))
        image = torch.from_numpy(self._readable_frame(case, frame)).permute(2, 0, 1).contiguous()
        multi_hot = torch.zeros(len(self.cases), dtype=torch.bool)
        multi_hot[case_index] = True
        return {
            "image": image,
            "text": case.report(self.config.language),
            "category_index": case_index,
            "category_multi_hot": multi_hot,
        }
