"""Training, evaluation and generation of FFA reports.

Model selection reads the validation split only: after every epoch the validation reports are
generated and scored, and the epoch with the best selection metric is kept (`best.pth`). The
test split is read once, after training, with the selected weights; the history records which
split was scored when, so a run can be checked never to have looked at test while selecting.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch.utils.data import DataLoader

from keepfit.checkpoint import atomic_write_bytes, atomic_write_json, read_sidecar, read_state_dict
from keepfit.ffa.data import (
    FFACase,
    FFACaseSet,
    FFAIRSource,
    FFAReportDataset,
    case_samples,
    mixed_epoch,
    mmretinal_ffa_cases,
    read_ffa_ir,
)
from keepfit.ffa.decoding import DecodeConfig, decode
from keepfit.ffa.metrics import METRIC_NAMES, CaptionScores, caption_scores
from keepfit.ffa.model import ReportGenerator, ReportModelConfig, describe
from keepfit.ffa.vocab import Vocabulary, clean_report
from keepfit.mmretinal_data import ExpertDataConfig
from keepfit.model_config import apply_overrides
from keepfit.preprocess import ResizedImageCache
from keepfit.version import code_version

logger = logging.getLogger(__name__)

REPORT_CONFIG_DIR = Path(__file__).parent.parent / "configs" / "report"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


class ReportDataConfig(BaseModel):
    """FFA-IR cases, optional MM-Retinal FFA pairs mixed into training, and how samples are formed."""

    model_config = ConfigDict(extra="forbid")

    ffa_ir: FFAIRSource | None = Field(None, description="FFA-IR-format annotation file (train/val/test splits).")
    mmretinal: ExpertDataConfig | None = Field(
        None, description="Published MM-Retinal version whose FFA pairs are mixed into training; null: none."
    )
    mmretinal_ratio: float = Field(
        0.0, ge=0.0, description="MM-Retinal samples per FFA-IR training sample in each epoch (0: none)."
    )
    sample_unit: Literal["case", "image"] = Field(
        "case", description="'case': one sample per report, its frames' grids averaged; 'image': one sample per frame."
    )
    max_frames: int = Field(8, ge=1, description="Frames per case sample (random subset in training, evenly spaced otherwise).")
    language: Literal["en", "zh"] = Field("en", description="Report language (zh is tokenised per character).")


class ReportOptimConfig(BaseModel):
    """Adam (amsgrad) with separate learning rates for the trunk and the rest; step decay per epoch."""

    model_config = ConfigDict(extra="forbid")

    visual_lr: float = Field(5e-5, description="Learning rate of the ResNet trunk.")
    lr: float = Field(1e-4, description="Learning rate of the projection, encoder-decoder and embeddings.")
    weight_decay: float = Field(5e-5, description="Adam weight decay.")
    amsgrad: bool = Field(True, description="Use the AMSGrad variant of Adam.")
    step_size: int = Field(50, ge=1, description="Epochs between learning-rate decays.")
    gamma: float = Field(0.1, description="Learning-rate decay factor.")
    grad_clip_value: float | None = Field(0.1, description="Clip each gradient element to +-value; null disables.")


class ReportTrainConfig(BaseModel):
    """A report-generation run; read from YAML with dotted `key=value` overrides."""

    model_config = ConfigDict(extra="forbid")

    data: ReportDataConfig = Field(default_factory=ReportDataConfig, description="Training, validation and test data.")
    model: ReportModelConfig = Field(default_factory=ReportModelConfig, description="Report generator architecture.")
    vocab_min_frequency: int = Field(3, ge=1, description="Words seen fewer times in training reports map to <unk>.")
    optim: ReportOptimConfig = Field(default_factory=ReportOptimConfig, description="Optimiser and schedule.")
    decode: DecodeConfig = Field(default_factory=DecodeConfig, description="Decoding for validation, test and generation.")
    epochs: int = Field(100, ge=1, description="Training epochs.")
    early_stop_patience: int | None = Field(50, description="Stop after this many epochs without a better validation score.")
    batch_size: int = Field(16, ge=1, description="Samples per training batch.")
    eval_batch_size: int = Field(16, ge=1, description="Samples per batch when generating.")
    selection_metric: str = Field("BLEU_4", description="Validation metric that selects the epoch (higher is better).")
    validation_meteor: bool = Field(
        True, description="Also compute METEOR on validation every epoch (starts the Java jar each time; selection never needs it)."
    )
    test_meteor: bool = Field(True, description="Compute METEOR (needs Java) when scoring the test split.")
    score_test: bool = Field(True, description="Score the test split once with the selected weights after training.")
    amp: Literal["auto", "bf16", "off"] = Field("auto", description="bf16 autocast: auto = on CUDA with bf16 support.")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'.")
    num_workers: int = Field(4, ge=0, description="Data loader worker processes.")
    seed: int = Field(9233, description="Seed of initialisation, data order and frame draws.")
    output_dir: str = Field("runs/ffa-report", description="Checkpoints, vocabulary, history and reports.")
    cache_dir: str | None = Field(None, description="On-disk cache of resized frames; null disables it.")

    @field_validator("selection_metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in METRIC_NAMES:
            raise ValueError(f"selection_metric {value!r} is not one of {METRIC_NAMES}")
        return value

    @field_validator("amp", mode="before")
    @classmethod
    def _yaml_off_is_false(cls, value: Any) -> Any:
        return "off" if value is False else value


def resolve_report_config_path(name_or_path: str | Path) -> Path:
    candidate = Path(name_or_path)
    if candidate.exists():
        return candidate
    named = REPORT_CONFIG_DIR / f"{name_or_path}.yaml"
    if named.exists():
        return named
    known = sorted(p.stem for p in REPORT_CONFIG_DIR.glob("*.yaml"))
    raise FileNotFoundError(f"report config {name_or_path!r} not found (bundled: {known})")


def load_report_config(name_or_path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> ReportTrainConfig:
    """A YAML config (path or bundled name in keepfit/configs/report) with dotted overrides."""
    from keepfit.trainer import parse_override

    tree: dict[str, Any] = {}
    if name_or_path is not None:
        path = resolve_report_config_path(name_or_path)
        try:
            tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: invalid YAML: {exc}") from exc
    if isinstance(overrides, list):
        overrides = dict(parse_override(o) for o in overrides)
    return ReportTrainConfig.model_validate(apply_overrides(tree, overrides or {}))


def resolve_device(option: str) -> torch.device:
    if option == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(option)


def autocast_dtype(option: str, device: torch.device) -> torch.dtype | None:
    if option == "off" or device.type != "cuda":
        return None
    if option == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


class ReportCollate:
    """Concatenate frames, count them per sample, and pad teacher-forcing inputs and targets with 0."""

    def __init__(self, vocab: Vocabulary, max_length: int) -> None:
        self.vocab = vocab
        self.max_length = max_length

    def __call__(self, items: list[dict[str, Any] | None]) -> dict[str, Any] | None:
        items = [item for item in items if item is not None]
        if not items:
            return None
        encoded = [self.vocab.encode(item["report"], self.max_length) for item in items]
        length = max(len(ids) for ids in encoded)
        inputs = torch.zeros(len(items), length, dtype=torch.long)
        targets = torch.zeros(len(items), length, dtype=torch.long)
        for row, ids in enumerate(encoded):
            inputs[row, : len(ids)] = torch.tensor([self.vocab.bos_id] + ids[:-1])
            targets[row, : len(ids)] = torch.tensor(ids)
        return {
            "images": torch.cat([item["images"] for item in items]),
            "frame_counts": torch.tensor([len(item["images"]) for item in items]),
            "inputs": inputs,
            "targets": targets,
            "case_ids": [item["case_id"] for item in items],
            "reports": [item["report"] for item in items],
        }


def report_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=0)


def save_report_checkpoint(model: ReportGenerator, vocab: Vocabulary, path: Path, metadata: dict[str, Any]) -> Path:
    """Weights (.pth) and a sidecar with the architecture, the vocabulary and run metadata."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, lambda out: torch.save(state, out))
    sidecar = {
        "kind": "ffa-report-generator",
        "report_model": model.config.model_dump(mode="json"),
        "vocabulary": vocab.to_json(),
        **metadata,
    }
    atomic_write_json(path.with_name(path.name + ".json"), sidecar)
    return path


def load_report_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[ReportGenerator, Vocabulary, dict[str, Any]]:
    """The generator (eval mode), its vocabulary and the sidecar of a checkpoint written by `save_report_checkpoint`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: report checkpoint not found")
    sidecar = read_sidecar(path)
    if not sidecar or sidecar.get("kind") != "ffa-report-generator":
        raise ValueError(f"{path}: no report-generator sidecar ({path.name}.json)")
    config = ReportModelConfig.model_validate({**sidecar["report_model"], "pretrained_checkpoint": None})
    vocab = Vocabulary.from_json(sidecar["vocabulary"])
    model = ReportGenerator(config, len(vocab))
    missing, unexpected = model.load_state_dict(read_state_dict(path), strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: does not match its architecture: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.to(device).eval(), vocab, sidecar


@torch.no_grad()
def generate_reports(
    model: ReportGenerator,
    vocab: Vocabulary,
    loader: DataLoader,
    decode_config: DecodeConfig,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> tuple[dict[str, str], dict[str, str]]:
    """(generated, reference) cleaned texts by case id for every sample the loader yields."""
    model.eval()
    generated: dict[str, str] = {}
    references: dict[str, str] = {}
    for batch in loader:
        if batch is None:
            continue
        images = batch["images"].to(device, non_blocking=True).float().div_(255.0)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            memory = model.encode(images, batch["frame_counts"].to(device))
            sequences = decode(model, memory, vocab, decode_config)
        for case_id, report, ids in zip(batch["case_ids"], batch["reports"], sequences):
            generated[case_id] = vocab.decode(ids)
            references[case_id] = clean_report(report, vocab.language)
    return generated, references


@dataclass
class SplitResult:
    """Scores and generated texts of one split."""

    split: str
    scores: CaptionScores
    generated: dict[str, str]
    references: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "scores": self.scores.scores,
            "unavailable": self.scores.unavailable,
            "n": self.scores.n,
            "generated": self.generated,
            "references": self.references,
        }


@dataclass
class ReportTrainResult:
    """What a run did: the selected epoch and its checkpoint, per-epoch history, the test result."""

    best_epoch: int
    best_checkpoint: Path
    best_validation: dict[str, float | None]
    history: list[dict[str, Any]]
    test: SplitResult | None
    splits_scored: list[tuple[int, str]] = field(default_factory=list)
    skipped: dict[str, Any] = field(default_factory=dict)
    output_dir: Path | None = None


class ReportTrainer:
    """Builds vocabulary, model and optimiser from a ReportTrainConfig; `fit()` trains and selects."""

    def __init__(self, config: ReportTrainConfig, cases: FFACaseSet | None = None, extra: FFACaseSet | None = None) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.amp_dtype = autocast_dtype(config.amp, self.device)
        self.output_dir = Path(config.output_dir)
        data = config.data
        if cases is None:
            if data.ffa_ir is None:
                raise ValueError("data.ffa_ir.annotation is not set: give an FFA-IR-format annotation JSON")
            cases = read_ffa_ir(data.ffa_ir.annotation, data.ffa_ir.image_root, on_bad_case=data.ffa_ir.on_bad_case)
        if extra is None and data.mmretinal is not None and data.mmretinal_ratio > 0:
            extra = mmretinal_ffa_cases(data.mmretinal, data.ffa_ir.on_bad_case if data.ffa_ir else "skip")
        self.cases = cases
        self.extra = extra.split("train") if extra is not None else []
        self.train_cases = cases.split("train")
        if not self.train_cases:
            raise ValueError(f"{cases.source}: no usable training cases")
        if not cases.split("val"):
            raise ValueError(f"{cases.source}: no usable validation cases; model selection needs a validation split")
        training_reports = [c.report(data.language) for c in self.train_cases + self.extra]
        self.vocab = Vocabulary.build(training_reports, config.vocab_min_frequency, data.language)
        torch.manual_seed(config.seed)
        self.model = ReportGenerator(config.model, len(self.vocab)).to(self.device)
        self.optimizer = torch.optim.Adam(
            [
                {"params": self.model.visual_parameters(), "lr": config.optim.visual_lr},
                {"params": self.model.language_parameters(), "lr": config.optim.lr},
            ],
            weight_decay=config.optim.weight_decay,
            amsgrad=config.optim.amsgrad,
        )
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, config.optim.step_size, config.optim.gamma)
        self.cache = ResizedImageCache(config.cache_dir, config.model.image_size) if config.cache_dir else None
        self.collate = ReportCollate(self.vocab, config.model.max_length)
        self.splits_scored: list[tuple[int, str]] = []
        logger.info(
            "report generator: vocabulary %d words (min frequency %d), %s, %d FFA-IR + %d MM-Retinal training cases",
            len(self.vocab), config.vocab_min_frequency, describe(self.model), len(self.train_cases), len(self.extra),
        )

    def _loader(self, cases: list[FFACase], training: bool, epoch: int = 0) -> DataLoader:
        config = self.config
        dataset = FFAReportDataset(
            case_samples(cases, config.data.sample_unit),
            config.model.image_size,
            config.data.max_frames,
            config.data.language,
            self.cache,
            random_frames=training,
            seed=config.seed,
            epoch=epoch,
        )
        return DataLoader(
            dataset,
            batch_size=config.batch_size if training else config.eval_batch_size,
            shuffle=False,
            num_workers=config.num_workers,
            collate_fn=self.collate,
            pin_memory=self.device.type == "cuda",
            drop_last=False,
        )

    def epoch_cases(self, epoch: int) -> list[FFACase]:
        """This epoch's training cases, shuffled (the release never shuffled), MM-Retinal pairs mixed in."""
        return mixed_epoch(self.train_cases, self.extra, self.config.data.mmretinal_ratio, self.config.seed, epoch)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        total, batches, samples = 0.0, 0, 0
        start = time.perf_counter()
        for batch in self._loader(self.epoch_cases(epoch), training=True, epoch=epoch):
            if batch is None:
                continue
            images = batch["images"].to(self.device, non_blocking=True).float().div_(255.0)
            with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
                logits = self.model(images, batch["frame_counts"].to(self.device), batch["inputs"].to(self.device))
            loss = report_loss(logits, batch["targets"].to(self.device))
            if not math.isfinite(float(loss.detach())):
                raise FloatingPointError(f"epoch {epoch}: loss is {float(loss)}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.config.optim.grad_clip_value is not None:
                torch.nn.utils.clip_grad_value_(self.model.parameters(), self.config.optim.grad_clip_value)
            self.optimizer.step()
            total += float(loss.detach())
            batches += 1
            samples += len(batch["case_ids"])
        self.scheduler.step()
        elapsed = time.perf_counter() - start
        return {"train_loss": total / max(1, batches), "train_samples_per_s": samples / max(elapsed, 1e-9)}

    def score_split(self, split: str, epoch: int, meteor: bool = True) -> SplitResult:
        """Generate and score one split; every call is recorded in `splits_scored`."""
        cases = self.cases.split(split)
        if not cases:
            raise ValueError(f"{self.cases.source}: split {split!r} has no usable cases")
        self.splits_scored.append((epoch, split))
        generated, references = generate_reports(
            self.model, self.vocab, self._loader(cases, training=False), self.config.decode, self.device, self.amp_dtype
        )
        return SplitResult(split, caption_scores(references, generated, meteor=meteor), generated, references)

    def fit(self) -> ReportTrainResult:
        config = self.config
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.vocab.save(self.output_dir / "vocabulary.json")
        best_path = self.output_dir / "best.pth"
        best_score, best_epoch, best_validation = -math.inf, 0, {}
        history: list[dict[str, Any]] = []
        stale = 0
        for epoch in range(1, config.epochs + 1):
            terms = self.train_epoch(epoch)
            validation = self.score_split("val", epoch, meteor=config.validation_meteor)
            score = validation.scores.get(config.selection_metric)
            entry = {"epoch": epoch, **terms, "val": validation.scores.scores}
            history.append(entry)
            logger.info("epoch %d: loss %.4f, val %s %.4f", epoch, terms["train_loss"], config.selection_metric, score or 0.0)
            if score is not None and score > best_score:
                best_score, best_epoch, best_validation, stale = score, epoch, dict(validation.scores.scores), 0
                save_report_checkpoint(self.model, self.vocab, best_path, self._metadata(epoch, validation))
            else:
                stale += 1
            atomic_write_json(self.output_dir / "history.json", {"history": history, "best_epoch": best_epoch})
            if config.early_stop_patience is not None and stale >= config.early_stop_patience:
                logger.info("no better validation %s for %d epochs: stopping", config.selection_metric, stale)
                break
        test = None
        if config.score_test and self.cases.split("test"):
            self.model.load_state_dict(read_state_dict(best_path))
            test = self.score_split("test", best_epoch, meteor=config.test_meteor)
        return ReportTrainResult(
            best_epoch=best_epoch,
            best_checkpoint=best_path,
            best_validation=best_validation,
            history=history,
            test=test,
            splits_scored=list(self.splits_scored),
            skipped=self.cases.skipped.as_dict(),
            output_dir=self.output_dir,
        )

    def _metadata(self, epoch: int, validation: SplitResult) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "selection_metric": self.config.selection_metric,
            "validation": validation.scores.scores,
            "train_config": self.config.model_dump(mode="json"),
            "data": self.cases.identity(),
            "code_version": code_version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }


def run_report_training(config: ReportTrainConfig) -> ReportTrainResult:
    """Train, select on validation, score test once, and write the JSON + markdown reports."""
    from keepfit.ffa.reports import write_training_reports

    result = ReportTrainer(config).fit()
    write_training_reports(result, config)
    return result


def evaluate_report_checkpoint(
    checkpoint: str | Path,
    source: FFAIRSource,
    split: str = "test",
    decode_config: DecodeConfig | None = None,
    sample_unit: Literal["case", "image"] | None = None,
    max_frames: int | None = None,
    batch_size: int = 16,
    device: str = "auto",
    num_workers: int = 0,
    meteor: bool = True,
) -> SplitResult:
    """Generate and score one split of an FFA-IR-format file with a trained generator.

    Decoding, sample unit and frames per case default to those the generator was trained with.
    """
    torch_device = resolve_device(device)
    model, vocab, sidecar = load_report_checkpoint(checkpoint, torch_device)
    trained = sidecar.get("train_config") or {}
    if decode_config is None:
        decode_config = DecodeConfig.model_validate(trained.get("decode") or {})
    data = ReportDataConfig.model_validate({k: v for k, v in (trained.get("data") or {}).items() if k in ("sample_unit", "max_frames")})
    sample_unit = sample_unit or data.sample_unit
    max_frames = max_frames or data.max_frames
    cases = read_ffa_ir(source.annotation, source.image_root, splits=(split,), on_bad_case=source.on_bad_case).split(split)
    if not cases:
        raise ValueError(f"{source.annotation}: split {split!r} has no usable cases")
    dataset = FFAReportDataset(case_samples(cases, sample_unit), model.config.image_size, max_frames, vocab.language)
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=ReportCollate(vocab, model.config.max_length)
    )
    generated, references = generate_reports(model, vocab, loader, decode_config, torch_device)
    return SplitResult(split, caption_scores(references, generated, meteor=meteor), generated, references)


def frames_from_paths(paths: list[str | Path]) -> list[Path]:
    """Image files named directly, or every image in a named folder (a case folder), sorted."""
    frames: list[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"{item}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            frames.extend(found)
        elif item.is_file():
            frames.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such image or folder")
    if not frames:
        raise FileNotFoundError("no images given")
    return frames


@torch.no_grad()
def generate_report(
    checkpoint: str | Path,
    paths: list[str | Path],
    decode_config: DecodeConfig | None = None,
    max_frames: int = 8,
    device: str = "auto",
) -> str:
    """One report for the frames of one case (image files or a case folder)."""
    torch_device = resolve_device(device)
    model, vocab, sidecar = load_report_checkpoint(checkpoint, torch_device)
    if decode_config is None:
        decode_config = DecodeConfig.model_validate((sidecar.get("train_config") or {}).get("decode") or {})
    frames = [str(p) for p in frames_from_paths(paths)]
    case = FFACase(case_id="input", split="generate", image_files=tuple(frames), report_en="", report_zh="")
    item = FFAReportDataset([case], model.config.image_size, max_frames, vocab.language)[0]
    if item is None:
        raise ValueError(f"none of the images could be read: {frames[:3]}")
    images = item["images"].to(torch_device).float().div_(255.0)
    memory = model.encode(images, torch.tensor([len(images)], device=torch_device))
    return vocab.decode(decode(model, memory, vocab, decode_config)[0])
