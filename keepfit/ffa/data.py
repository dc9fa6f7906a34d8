"""FFA data as cases: the FFA-IR annotation JSON and MM-Retinal FFA pairs from a published manifest.

FFA-IR's layout is `{"train"|"val"|"test": {case_id: {"Image_path": [...], "En_Report": str, ...}}}`;
a case has several angiogram frames and one report. Bad cases (no images, missing image files, an
empty report) are skipped and counted, or raise with the file and case named when asked to, so
nothing fails half-way through an epoch. MM-Retinal FFA pairs become one-image cases whose report
is the caption; their image bytes are checked against the manifest's sha256 when read.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import Dataset

from keepfit.preprocess import ResizedImageCache

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
IMAGE_KEY = "Image_path"
EN_REPORT_KEY = "En_Report"
ZH_REPORT_KEYS = ("Cn_Report", "Zh_Report", "Ch_Report")
LESION_KEYS = ("Lesion", "Lesions", "Lesion_info", "lesion_labels")
EXAMPLES_PER_REASON = 5


class BadFFAInput(ValueError):
    """An annotation file or case that cannot be used; the message names the file and the case."""


@dataclass(frozen=True)
class FFACase:
    """One report with the angiogram frames it describes."""

    case_id: str
    split: str
    image_files: tuple[str, ...]
    report_en: str
    report_zh: str = ""
    lesions: tuple[str, ...] = ()
    source: str = "ffa-ir"
    image_sha256: tuple[str, ...] = ()

    def report(self, language: Literal["en", "zh"] = "en") -> str:
        return self.report_en if language == "en" else self.report_zh


@dataclass
class SkipCounts:
    """Cases and images left out while reading, by reason, with a few examples of each."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, example: str) -> None:
        self.counts[reason] += 1
        bucket = self.examples.setdefault(reason, [])
        if len(bucket) < EXAMPLES_PER_REASON:
            bucket.append(example)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "examples": self.examples}


@dataclass
class FFACaseSet:
    """Cases per split plus what was skipped and where they came from."""

    cases: dict[str, list[FFACase]]
    skipped: SkipCounts
    source: str

    def split(self, name: str) -> list[FFACase]:
        return self.cases.get(name, [])

    def identity(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "cases": {name: len(cases) for name, cases in self.cases.items()},
            "images": {name: sum(len(c.image_files) for c in cases) for name, cases in self.cases.items()},
            "skipped": dict(self.skipped.counts),
        }


class FFAIRSource(BaseModel):
    """Where an FFA-IR-format annotation file and its images are, and how bad cases are handled."""

    model_config = ConfigDict(extra="forbid")

    annotation: str = Field(description="FFA-IR annotation JSON (train/val/test -> case -> Image_path, En_Report).")
    image_root: str | None = Field(None, description="Root the Image_path entries are relative to; default the JSON's folder.")
    on_bad_case: Literal["skip", "error"] = Field(
        "skip", description="'skip' leaves out (and counts) cases without images or report; 'error' stops with the case named."
    )


def _text(value: Any) -> str:
    return " ".join(str(value).split()) if isinstance(value, str) else ""


def _lesions(record: dict[str, Any]) -> tuple[str, ...]:
    for key in LESION_KEYS:
        value = record.get(key)
        if isinstance(value, dict):
            return tuple(sorted(str(k) for k in value))
        if isinstance(value, list):
            return tuple(str(v) for v in value if isinstance(v, (str, int)))
        if isinstance(value, str) and value.strip():
            return tuple(v.strip() for v in value.split(",") if v.strip())
    return ()


def read_ffa_ir(
    annotation: str | Path,
    image_root: str | Path | None = None,
    splits: tuple[str, ...] | list[str] = SPLITS,
    on_bad_case: Literal["skip", "error"] = "skip",
) -> FFACaseSet:
    """Cases of the requested splits; images that do not exist are dropped, then empty cases skipped."""
    path = Path(annotation)
    try:
        tree = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: FFA-IR annotation file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadFFAInput(f"{path}: not a readable JSON annotation file: {exc}") from None
    if not isinstance(tree, dict):
        raise BadFFAInput(f"{path}: expected an object with {'/'.join(SPLITS)} splits, got {type(tree).__name__}")
    missing = [s for s in splits if s not in tree]
    if missing:
        raise BadFFAInput(f"{path}: split(s) {missing} not in the annotation (has {sorted(tree)})")
    root = Path(image_root) if image_root is not None else path.parent
    skipped = SkipCounts()
    cases: dict[str, list[FFACase]] = {}

    def bad(reason: str, where: str) -> None:
        if on_bad_case == "error":
            raise BadFFAInput(f"{path}: {where}: {reason}")
        skipped.add(reason, where)

    for split in splits:
        records = tree[split]
        if not isinstance(records, dict):
            raise BadFFAInput(f"{path}: split {split!r} is not an object of cases")
        kept: list[FFACase] = []
        for case_id in sorted(records):
            record = records[case_id]
            where = f"{split}/{case_id}"
            if not isinstance(record, dict):
                bad("case is not an object", where)
                continue
            images = record.get(IMAGE_KEY)
            if not isinstance(images, list) or not images:
                bad("case without images", where)
                continue
            present = []
            for image in images:
                image_file = Path(str(image)) if Path(str(image)).is_absolute() else root / str(image)
                if image_file.is_file():
                    present.append(str(image_file))
                else:
                    skipped.add("missing image", str(image_file))
            if not present:
                bad("none of the case's images exist", where)
                continue
            report_en = _text(record.get(EN_REPORT_KEY))
            if not report_en:
                bad("empty report", where)
                continue
            report_zh = next((_text(record[k]) for k in ZH_REPORT_KEYS if _text(record.get(k))), "")
            kept.append(
                FFACase(
                    case_id=str(case_id),
                    split=split,
                    image_files=tuple(present),
                    report_en=report_en,
                    report_zh=report_zh,
                    lesions=_lesions(record),
                )
            )
        cases[split] = kept
    if skipped.total:
        logger.warning("%s: skipped %s", path, dict(skipped.counts))
    logger.info("%s: %s", path, {s: len(c) for s, c in cases.items()})
    return FFACaseSet(cases=cases, skipped=skipped, source=str(path))


def mmretinal_ffa_cases(config: Any, on_bad_case: Literal["skip", "error"] = "skip") -> FFACaseSet:
    """MM-Retinal FFA pairs of a published version (an `ExpertDataConfig`) as one-image training cases.

    Each image is hashed and compared with the manifest's sha256; altered or missing images are
    skipped and counted (or raise, naming the file), so a corrupted store never trains the model.
    """
    from data_manifests.store import sha256_file
    from keepfit.mmretinal_data import read_expert_manifest

    if "FFA" not in config.modalities:
        config = config.model_copy(update={"modalities": ["FFA"]})
    manifest = read_expert_manifest(config)
    skipped = SkipCounts()
    kept: list[FFACase] = []
    for row in manifest.frame.itertuples(index=False):
        image_file = Path(row.image_file)
        where = f"{manifest.dataset}/{manifest.version}:{row.pair_id}"
        reason = None
        if not image_file.is_file():
            reason = f"image {image_file} missing"
        elif sha256_file(image_file) != row.image_sha256:
            reason = f"image {image_file} does not match its manifest sha256"
        if reason is not None:
            if on_bad_case == "error":
                raise BadFFAInput(f"{manifest.path}: {where}: {reason}")
            skipped.add("image missing or altered", where)
            continue
        kept.append(
            FFACase(
                case_id=f"mm-retinal:{row.pair_id}",
                split="train",
                image_files=(str(image_file),),
                report_en=_text(row.caption_en),
                report_zh=_text(row.caption_zh),
                source="mm-retinal",
                image_sha256=(str(row.image_sha256),),
            )
        )
    if skipped.total:
        logger.warning("%s: skipped %s", manifest.path, dict(skipped.counts))
    return FFACaseSet(cases={"train": kept}, skipped=skipped, source=f"{manifest.dataset}/{manifest.version}")


def mixed_epoch(
    primary: list[FFACase], extra: list[FFACase], ratio: float, seed: int, epoch: int
) -> list[FFACase]:
    """One epoch's shuffled training cases: all of `primary` plus round(ratio x len(primary)) of `extra`.

    The extra cases are drawn without replacement while the pool lasts (then with), seeded by
    (seed, epoch), so every epoch mixes a different subset and a rerun mixes the same ones.
    """
    rng = random.Random(f"ffa-mix:{seed}:{epoch}")
    wanted = round(ratio * len(primary)) if extra else 0
    drawn: list[FFACase] = []
    while len(drawn) < wanted:
        pool = list(extra)
        rng.shuffle(pool)
        drawn.extend(pool[: wanted - len(drawn)])
    order = list(primary) + drawn
    rng.shuffle(order)
    return order


def case_samples(cases: list[FFACase], unit: Literal["image", "case"]) -> list[FFACase]:
    """Per-case samples as they are, or one single-image sample per frame (the case report for each)."""
    if unit == "case":
        return list(cases)
    samples = []
    for case in cases:
        for index, image_file in enumerate(case.image_files):
            samples.append(
                FFACase(
                    case_id=f"{case.case_id}#{index}",
                    split=case.split,
                    image_files=(image_file,),
                    report_en=case.report_en,
                    report_zh=case.report_zh,
                    lesions=case.lesions,
                    source=case.source,
                    image_sha256=case.image_sha256[index : index + 1],
                )
            )
    return samples


def pick_frames(count: int, limit: int, rng: random.Random | None = None) -> list[int]:
    """Indices of at most `limit` frames: evenly spaced (deterministic) or a sorted random subset."""
    if count <= limit:
        return list(range(count))
    if rng is None:
        return sorted({round(i * (count - 1) / (limit - 1)) for i in range(limit)}) if limit > 1 else [0]
    return sorted(rng.sample(range(count), limit))


class FFAReportDataset(Dataset):
    """Samples of (frames, report): uint8 images [n, 3, S, S] from the resized-image cache.

    An unreadable frame is dropped with a warning; a sample with no readable frame comes back
    as None, which `ReportCollate` leaves out, so one bad file never stops an epoch.
    """

    def __init__(
        self,
        cases: list[FFACase],
        image_size: int,
        max_frames: int = 8,
        language: Literal["en", "zh"] = "en",
        cache: ResizedImageCache | None = None,
        random_frames: bool = False,
        seed: int = 0,
        epoch: int = 0,
    ) -> None:
        self.cases = cases
        self.cache = cache or ResizedImageCache(None, image_size)
        self.max_frames = max_frames
        self.language = language
        self.random_frames = random_frames
        self.seed = seed
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        case = self.cases[index]
        rng = random.Random(f"ffa-frames:{self.seed}:{self.epoch}:{index}") if self.random_frames else None
        frames = []
        for frame_index in pick_frames(len(case.image_files), self.max_frames, rng):
            image_file = case.image_files[frame_index]
            sha = case.image_sha256[frame_index] if frame_index < len(case.image_sha256) else None
            try:
                array = self.cache.load(image_file, key=sha)
            except (OSError, ValueError) as exc:
                logger.warning("%s: frame left out: %s", case.case_id, exc)
                continue
            frames.append(torch.from_numpy(array).permute(2, 0, 1))
        if not frames:
            logger.warning("%s: no readable frame; sample left out of the batch", case.case_id)
            return None
        return {"images": torch.stack(frames), "report": case.report(self.language), "case_id": case.case_id}
