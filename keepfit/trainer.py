"""KeepFIT pretraining loop, kept apart from the model.

AdamW, linear warm-up then cosine over the actual run length, AMP, gradient clipping and
accumulation, DDP through torchrun (the DDP-wrapped objective's forward is always called, so
gradients are all-reduced), checkpoints every N steps and on exit, and resume that continues
exactly: model, optimiser, scheduler, scaler, data position and RNG states are restored.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from keepfit.augment import AugmentConfig, augment_batch
from keepfit.checkpoint import (
    atomic_write_bytes,
    atomic_write_json,
    load_state_dict_strict,
    read_sidecar,
    save_checkpoint,
)
from keepfit.ffa.pretraining import FFAIRPretrainConfig, FFAIRPretrainDataset
from keepfit.flair_data import TEXT_SUPERVISED_SOURCES, FlairDataset, read_flair_dataframes
from keepfit.losses import LossConfig
from keepfit.mmretinal_data import ExpertDataConfig, ExpertDataset, read_expert_manifest
from keepfit.model import KeepFITModel
from keepfit.model_config import apply_overrides, load_model_config
from keepfit.objective import PretrainingObjective
from keepfit.preprocess import ResizedImageCache
from keepfit.profiles import DEFAULT_PROFILE, deep_merge, flatten, load_profile
from keepfit.pretrain_data import ExpertBatchSampler, ShardedEpochBatchSampler, TokenizingCollate, hash_seed
from keepfit.prompts import BANNED_PRETRAINING_CATEGORIES, PRETRAIN_TEMPLATE, load_domain_knowledge
from keepfit.version import code_version

logger = logging.getLogger(__name__)

PRETRAIN_CONFIG_DIR = Path(__file__).parent / "configs" / "pretrain"
LATEST_POINTER = "latest.json"


class FlairDataConfig(BaseModel):
    """FLAIR-format dataframes and how their captions are built."""

    model_config = ConfigDict(extra="forbid")

    dataframes: list[str] = Field(default_factory=list, description="CSV files with image, atributes, categories.")
    image_root: str | None = Field(None, description="Root the `image` paths are relative to; default each CSV's folder.")
    template: str = Field(PRETRAIN_TEMPLATE, description="Caption template with [ATR] and [CLS] slots.")
    domain_knowledge: bool = Field(True, description="Replace class names by expert descriptions at random.")
    domain_knowledge_path: str | None = Field(None, description="Own category -> descriptions YAML; default bundled.")
    attributes: Literal["sample_one", "all"] = Field(
        "sample_one", description="[ATR] slot: one of the image's attributes at random (release) or all of them joined."
    )
    knowledge_excluded_sources: list[str] = Field(
        default_factory=lambda: list(TEXT_SUPERVISED_SOURCES),
        description="Source datasets (first folder of the image path) whose class names are never replaced by "
        "descriptions; the release excludes the four whose labels came from reports.",
    )
    banned_categories: list[str] = Field(
        default_factory=lambda: list(BANNED_PRETRAINING_CATEGORIES),
        description="Categories (and variants containing them) whose images are left out of pretraining.",
    )


class OptimConfig(BaseModel):
    """Optimiser and learning-rate schedule."""

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(1e-4, description="Peak AdamW learning rate.")
    weight_decay: float = Field(1e-5, description="AdamW weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    warmup_epochs: float = Field(1.0, description="Linear warm-up length in epochs (ignored when warmup_steps is set).")
    warmup_steps: int | None = Field(None, description="Linear warm-up length in optimiser steps.")
    min_lr_ratio: float = Field(0.0, description="Cosine floor as a fraction of the peak learning rate.")
    grad_clip: float | None = Field(1.0, description="Gradient-norm clip; null disables clipping.")


class PretrainConfig(BaseModel):
    """Everything a pretraining run needs; read from YAML with `--set dotted.key=value` overrides."""

    model_config = ConfigDict(extra="forbid")

    profile: str = Field(
        "reproduce",
        description="Settings bundle applied under this config: 'reproduce' (the release), 'improved' (ours) or a "
        "profile YAML path; values set in the config or with --set win.",
    )
    model: str = Field("keepfit-cfp", description="Architecture config name or YAML path.")
    model_overrides: dict[str, Any] = Field(default_factory=dict, description="Dotted overrides of the architecture.")
    flair: FlairDataConfig = Field(default_factory=FlairDataConfig, description="FLAIR data.")
    ffa_ir: FFAIRPretrainConfig | None = Field(
        None, description="KeepFIT-FFA: FFA-IR reports replace the FLAIR data as the general side; null for CFP."
    )
    expert: ExpertDataConfig = Field(default_factory=ExpertDataConfig, description="MM-Retinal manifest data.")
    loss: LossConfig = Field(default_factory=LossConfig, description="Loss weights (ablation switches).")
    augment: AugmentConfig = Field(default_factory=AugmentConfig, description="FLAIR batch augmentation.")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="Optimiser and schedule.")
    batch_size: int = Field(24, description="FLAIR (and expert) samples per process per micro-batch.")
    grad_accumulation: int = Field(1, description="Micro-batches per optimiser step.")
    epochs: float = Field(40, description="Run length in FLAIR epochs (used when max_steps is null).")
    max_steps: int | None = Field(None, description="Run length in optimiser steps; sets the schedule length.")
    stop_after_steps: int | None = Field(
        None, description="Stop this process after this global step and checkpoint (schedule unchanged); for splitting runs."
    )
    amp: Literal["auto", "bf16", "fp16", "off"] = Field(
        "auto", description="Mixed precision: auto = bf16 where supported, else fp16 with GradScaler; off on CPU."
    )
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N' (torchrun sets the local GPU).")
    num_workers: int = Field(4, description="Data loader worker processes per source.")
    seed: int = Field(42, description="Seed of model init, data order and augmentation.")
    output_dir: str = Field("runs/keepfit", description="Checkpoints and TensorBoard logs.")
    cache_dir: str | None = Field(None, description="On-disk cache of resized images; null disables it.")
    checkpoint_every: int = Field(1000, description="Checkpoint every N optimiser steps (and always on exit).")
    keep_checkpoints: int = Field(3, description="Periodic checkpoints kept (older ones are deleted).")
    resume: str | None = Field(
        "auto", description="'auto' resumes from output_dir's latest checkpoint, a path resumes from it, null starts fresh."
    )
    allow_random_init: bool = Field(
        False,
        description="Allow a tower to start from random weights (its ImageNet / Hugging Face weights are not found "
        "locally, or the architecture has none). Off: a fresh run refuses to start, naming the missing weights.",
    )
    gather_features: bool = Field(True, description="Contrast over the global batch across ranks (all-gather).")
    sync_batchnorm: bool = Field(True, description="Use SyncBatchNorm in multi-GPU runs.")
    log_every: int = Field(10, description="Console/TensorBoard logging interval in steps.")
    tensorboard: bool = Field(True, description="Write TensorBoard scalars under output_dir/tensorboard.")
    progress_bar: bool = Field(True, description="Show a tqdm progress bar on rank 0.")

    @field_validator("amp", mode="before")
    @classmethod
    def _yaml_off_is_false(cls, value: Any) -> Any:
        """YAML reads a bare `off` as False."""
        return "off" if value is False else value


def parse_override(assignment: str) -> tuple[str, Any]:
    """'optim.lr=3e-4' -> ('optim.lr', 3e-4); values are YAML scalars/lists, typed later by pydantic."""
    if "=" not in assignment:
        raise ValueError(f"override {assignment!r} is not of the form key=value")
    key, raw = assignment.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def resolve_pretrain_config_path(name_or_path: str | Path) -> Path:
    candidate = Path(name_or_path)
    if candidate.exists():
        return candidate
    named = PRETRAIN_CONFIG_DIR / f"{name_or_path}.yaml"
    if named.exists():
        return named
    known = sorted(p.stem for p in PRETRAIN_CONFIG_DIR.glob("*.yaml"))
    raise FileNotFoundError(f"pretraining config {name_or_path!r} not found (bundled: {known})")


def load_pretrain_config(
    name_or_path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None
) -> PretrainConfig:
    """A YAML config (path or bundled name) with dotted overrides (`["optim.lr=3e-4"]` or a dict)."""
    tree: dict[str, Any] = {}
    if name_or_path is not None:
        path = resolve_pretrain_config_path(name_or_path)
        try:
            tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: invalid YAML: {exc}") from exc
    if isinstance(overrides, list):
        overrides = dict(parse_override(o) for o in overrides)
    model_keys = {k: v for k, v in (overrides or {}).items() if k.startswith("model_overrides.")}
    other = {k: v for k, v in (overrides or {}).items() if k not in model_keys}
    tree = apply_overrides(tree, other)
    if model_keys:
        tree.setdefault("model_overrides", {})
        tree["model_overrides"].update({k.removeprefix("model_overrides."): v for k, v in model_keys.items()})
    profile = load_profile(tree.get("profile", DEFAULT_PROFILE))
    tree = deep_merge(profile.pretrain, tree)
    tree["model_overrides"] = {**flatten(profile.model), **tree.get("model_overrides", {})}
    return PretrainConfig.model_validate(tree)


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_option: str) -> DistributedContext:
    """Join the process group torchrun set up (RANK/WORLD_SIZE env vars); a single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_option == "auto":
        device = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    elif device_option == "cuda" and world_size > 1:
        device = torch.device(f"cuda:{local_rank}")
    else:
        device = torch.device(device_option)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def amp_settings(option: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use GradScaler)."""
    if option == "off" or (option == "auto" and device.type != "cuda"):
        return None, False
    if option == "bf16" or (option == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16, False
    return torch.float16, device.type in ("cuda", "cpu")


def warmup_cosine(warmup_steps: int, total_steps: int, min_ratio: float = 0.0):
    """LR multiplier: linear warm-up to 1 over `warmup_steps`, then cosine to `min_ratio` at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) generator states in a form `torch.load(weights_only=True)` accepts."""
    _, keys, position, has_gauss, cached_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    keys, position, has_gauss, cached_gauss = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), position, has_gauss, cached_gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class StopRequest:
    """Turns SIGTERM/SIGINT into a flag checked between steps, so exit happens at a step boundary."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        logger.warning("%s received: stopping after this step and writing a checkpoint", self.signal_name)

    def __enter__(self) -> StopRequest:
        if threading_is_main():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


@dataclass
class TrainResult:
    """What a run did: last step, where its final checkpoint is, why it stopped."""

    step: int
    total_steps: int
    checkpoint: Path | None
    stopped_early: bool
    stop_reason: str
    last_terms: dict[str, float]
    history: list[dict[str, float]]


class Trainer:
    """One pretraining run: builds data, model and optimiser from a PretrainConfig, then `fit()`."""

    def __init__(self, config: PretrainConfig) -> None:
        self.config = config
        self.context = init_distributed(config.device)
        self.output_dir = Path(config.output_dir)
        self.checkpoint_dir = self.output_dir / "checkpoints"
        self.amp_dtype, use_scaler = amp_settings(config.amp, self.context.device)

        torch.manual_seed(config.seed)
        model_config = load_model_config(config.model, **config.model_overrides)
        self.model = KeepFITModel(model_config)
        self.tower_init = self.model.tower_init()
        resume_path = self._resume_path()
        if resume_path is None:
            refuse_random_towers(self.model, config.allow_random_init)
        else:
            self.tower_init = (read_sidecar(resume_path) or {}).get("tower_init", self.tower_init)
        freeze_unused_pooler(self.model)
        if self.model.attention is not None and config.loss.knowledge_mse_weight == 0:
            self.model.attention.requires_grad_(False)
        if self.context.distributed and config.sync_batchnorm and self.context.device.type == "cuda":
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model.to(self.context.device)
        self.objective = PretrainingObjective(self.model, config.loss, gather=config.gather_features)
        if self.context.distributed:
            device_ids = [self.context.device.index] if self.context.device.type == "cuda" else None
            self.wrapped: torch.nn.Module = DistributedDataParallel(self.objective, device_ids=device_ids)
        else:
            self.wrapped = self.objective

        self._build_data(model_config.image_size)
        self.steps_per_epoch = max(1, self.flair_batches_per_epoch // config.grad_accumulation)
        self.total_steps = config.max_steps or max(1, math.ceil(config.epochs * self.steps_per_epoch))
        warmup = (
            config.optim.warmup_steps
            if config.optim.warmup_steps is not None
            else round(config.optim.warmup_epochs * self.steps_per_epoch)
        )
        self.warmup_steps = max(1, min(warmup, self.total_steps))
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            trainable, lr=config.optim.lr, weight_decay=config.optim.weight_decay, betas=config.optim.betas
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(self.warmup_steps, self.total_steps, config.optim.min_lr_ratio)
        )
        self.scaler = torch.amp.GradScaler(self.context.device.type, enabled=use_scaler)
        self.step = 0
        self.last_saved_step: int | None = None
        torch.manual_seed(hash_seed(config.seed, "dropout", self.context.rank))
        self._resume_if_requested()

    def _build_data(self, image_size: int) -> None:
        config = self.config
        if config.ffa_ir is not None:
            return self._build_ffa_ir_data(image_size)
        if not config.flair.dataframes:
            raise ValueError("flair.dataframes is empty: give at least one FLAIR-format CSV")
        frame = read_flair_dataframes(config.flair.dataframes, config.flair.image_root, config.flair.banned_categories)
        knowledge = load_domain_knowledge(config.flair.domain_knowledge_path) if config.flair.domain_knowledge else {}
        cache = ResizedImageCache(config.cache_dir, image_size) if config.cache_dir else None
        self.flair_dataset = FlairDataset(
            frame, image_size, cache, knowledge, config.flair.template, config.seed,
            attributes=config.flair.attributes, knowledge_excluded_sources=config.flair.knowledge_excluded_sources,
        )
        self.flair_batches_per_epoch = len(self.flair_dataset) // (config.batch_size * self.context.world_size)
        if self.flair_batches_per_epoch == 0:
            raise ValueError(
                f"{len(self.flair_dataset)} FLAIR samples is fewer than one global batch "
                f"({config.batch_size} x {self.context.world_size})"
            )
        self.expert_manifest = None
        self.expert_dataset = None
        if config.loss.uses_expert_batches:
            self.expert_manifest = read_expert_manifest(config.expert)
            self.expert_dataset = ExpertDataset(
                self.expert_manifest, image_size, cache, config.expert.language, config.expert.verify_images, config.seed
            )
        logger.info(
            "FLAIR: %d images, %d categories; MM-Retinal: %s",
            len(self.flair_dataset),
            len(self.flair_dataset.category_names),
            self.expert_manifest.identity if self.expert_manifest else "not used",
        )

    def _build_ffa_ir_data(self, image_size: int) -> None:
        """KeepFIT-FFA: FFA-IR frames + reports as the general side, MM-Retinal (FFA) pairs as the expert side."""
        config = self.config
        cache = ResizedImageCache(config.cache_dir, image_size) if config.cache_dir else None
        self.flair_dataset = FFAIRPretrainDataset(config.ffa_ir, image_size, cache, config.seed)
        self.flair_batches_per_epoch = len(self.flair_dataset) // (config.batch_size * self.context.world_size)
        if self.flair_batches_per_epoch == 0:
            raise ValueError(
                f"{len(self.flair_dataset)} FFA-IR samples is fewer than one global batch "
                f"({config.batch_size} x {self.context.world_size})"
            )
        self.expert_manifest = read_expert_manifest(config.expert) if config.loss.uses_expert_batches else None
        self.expert_dataset = None
        if self.expert_manifest is not None:
            self.expert_dataset = ExpertDataset(
                self.expert_manifest, image_size, cache, config.expert.language, config.expert.verify_images, config.seed
            )
        logger.info(
            "FFA-IR: %s; MM-Retinal: %s", self.flair_dataset.identity(),
            self.expert_manifest.identity if self.expert_manifest else "not used",
        )

    def _loader(self, dataset: Any, batch_sampler: Any, tag: str) -> DataLoader:
        workers = self.config.num_workers
        return DataLoader(
            dataset,
            batch_sampler=batch_sampler,
            num_workers=workers,
            collate_fn=TokenizingCollate(self.model.text_model.tokenizer, self.model.config.text.max_length),
            pin_memory=self.context.device.type == "cuda",
            persistent_workers=False,
            prefetch_factor=4 if workers > 0 else None,
            generator=torch.Generator().manual_seed(hash_seed(self.config.seed, tag, self.context.rank)),
        )

    def batches(self, start_step: int) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
        """(FLAIR batch, expert batch) pairs from the position of `start_step`, forever."""
        start_micro = start_step * self.config.grad_accumulation
        flair_sampler = ShardedEpochBatchSampler(
            len(self.flair_dataset), self.config.batch_size, self.context.rank, self.context.world_size,
            self.config.seed, start_batch=start_micro,
        )
        flair_iter = iter(self._loader(self.flair_dataset, flair_sampler, "flair"))
        expert_iter = None
        if self.expert_dataset is not None:
            expert_sampler = ExpertBatchSampler(
                len(self.expert_dataset), self.config.batch_size, rank=self.context.rank,
                world_size=self.context.world_size, seed=self.config.seed, start_batch=start_micro,
            )
            expert_iter = iter(self._loader(self.expert_dataset, expert_sampler, "expert"))
        while True:
            yield next(flair_iter), (next(expert_iter) if expert_iter is not None else None)

    def _device_inputs(self, flair: dict[str, Any], expert: dict[str, Any] | None, micro_index: int) -> dict[str, Any]:
        device = self.context.device
        images = flair["images"].to(device, non_blocking=True).float().div_(255.0)
        generator = torch.Generator(device=device).manual_seed(
            hash_seed(self.config.seed, "augment", self.context.rank, micro_index)
        )
        inputs = {
            "images": augment_batch(images, self.config.augment, generator),
            "input_ids": flair["input_ids"].to(device, non_blocking=True),
            "attention_mask": flair["attention_mask"].to(device, non_blocking=True),
            "category_index": flair["category_index"].to(device, non_blocking=True),
            "category_multi_hot": flair["category_multi_hot"].to(device, non_blocking=True),
        }
        if expert is not None:
            inputs["expert_images"] = expert["images"].to(device, non_blocking=True).float().div_(255.0)
            inputs["expert_input_ids"] = expert["input_ids"].to(device, non_blocking=True)
            inputs["expert_attention_mask"] = expert["attention_mask"].to(device, non_blocking=True)
        return inputs

    def _autocast(self) -> Any:
        return torch.autocast(
            self.context.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        )

    def train_step(self, micro_batches: list[dict[str, Any]]) -> dict[str, float]:
        """One optimiser step over already-prepared device inputs (one dict per micro-batch).

        With several micro-batches the step is the one a single batch holding all of them would
        take (`_accumulate_exactly`): the contrastive loss runs over the whole accumulated batch.
        """
        self.wrapped.train()
        if len(micro_batches) == 1:
            with self._autocast():
                terms = self.wrapped(**micro_batches[0])
            self.scaler.scale(terms["total"]).backward()
            totals = {key: float(value.detach()) for key, value in terms.items()}
        else:
            totals = self._accumulate_exactly(micro_batches)
        self.scaler.unscale_(self.optimizer)
        if self.config.optim.grad_clip is not None:
            totals["grad_norm"] = float(
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
            )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.model.clamp_logit_scale_()
        self.step += 1
        return totals

    def _accumulate_exactly(self, micro_batches: list[dict[str, Any]]) -> dict[str, float]:
        """Gradients of the loss over all micro-batches together, with one micro-batch in memory at a time.

        1. Embed every micro-batch without autograd (RNG state saved, BatchNorm buffers restored
           afterwards); 2. compute the loss over the concatenated embeddings and backpropagate to
           them (and to the logit scale and expert attention); 3. re-embed each micro-batch with the
           same RNG state and backpropagate the embedding gradients through the towers. Contrastive
           losses do not split over micro-batches, so summing per-micro-batch losses would give a
           different (smaller-batch) objective. In DDP the gradients are averaged over ranks here.
        """
        objective = self.objective
        embed_keys = ("images", "input_ids", "attention_mask", "expert_images", "expert_input_ids",
                      "expert_attention_mask")
        buffers = {name: buffer.detach().clone() for name, buffer in self.model.named_buffers()}
        rng_states: list[dict[str, Any]] = []
        cached: list[dict[str, torch.Tensor]] = []
        with torch.no_grad():
            for inputs in micro_batches:
                rng_states.append(_device_rng_state(self.context.device))
                with self._autocast():
                    embedded = objective.embeddings(**{k: inputs[k] for k in embed_keys if k in inputs})
                cached.append({key: value.detach() for key, value in embedded.items()})
            for name, buffer in self.model.named_buffers():
                buffer.copy_(buffers[name])
        full = {key: torch.cat([part[key] for part in cached]).requires_grad_(True) for key in cached[0]}
        category_index = torch.cat([inputs["category_index"] for inputs in micro_batches])
        category_multi_hot = torch.cat([inputs["category_multi_hot"] for inputs in micro_batches])
        sync = self.wrapped.no_sync() if isinstance(self.wrapped, DistributedDataParallel) else contextlib.nullcontext()
        with sync:
            with self._autocast():
                terms = objective.loss_terms(full, category_index, category_multi_hot)
            self.scaler.scale(terms["total"]).backward()
            starts = {key: 0 for key in full}
            for inputs, state, part in zip(micro_batches, rng_states, cached):
                _restore_device_rng_state(self.context.device, state)
                with self._autocast():
                    embedded = objective.embeddings(**{k: inputs[k] for k in embed_keys if k in inputs})
                keys = list(embedded)
                torch.autograd.backward(
                    [embedded[key] for key in keys],
                    [full[key].grad[starts[key] : starts[key] + part[key].shape[0]] for key in keys],
                )
                for key in keys:
                    starts[key] += part[key].shape[0]
        if self.context.distributed:
            for parameter in self.model.parameters():
                if parameter.grad is not None:
                    dist.all_reduce(parameter.grad)
                    parameter.grad.div_(self.context.world_size)
        return {key: float(value.detach()) for key, value in terms.items()}

    def fit(self) -> TrainResult:
        """Train until total_steps (or stop_after_steps / a signal), checkpointing along the way."""
        config = self.config
        end_step = self.total_steps
        if config.stop_after_steps is not None:
            end_step = min(end_step, config.stop_after_steps)
        writer = self._summary_writer()
        progress = self._progress_bar(end_step)
        history: list[dict[str, float]] = []
        terms: dict[str, float] = {}
        stop_reason = "completed" if end_step == self.total_steps else "stop_after_steps"
        if self.context.is_main:
            logger.info(
                "training %s for %d steps (%d per epoch, warm-up %d) from step %d on %s x%d, batch %d x %d accum, amp %s",
                self.model.config.name, self.total_steps, self.steps_per_epoch, self.warmup_steps, self.step,
                self.context.device, self.context.world_size, config.batch_size, config.grad_accumulation,
                self.amp_dtype,
            )
        with StopRequest() as stop:
            try:
                batches = self.batches(self.step)
                window_start, window_samples, data_time = time.perf_counter(), 0, 0.0
                while self.step < end_step:
                    micro = []
                    for accumulation_index in range(config.grad_accumulation):
                        fetch_start = time.perf_counter()
                        flair, expert = next(batches)
                        micro_index = self.step * config.grad_accumulation + accumulation_index
                        micro.append(self._device_inputs(flair, expert, micro_index))
                        data_time += time.perf_counter() - fetch_start
                    terms = self.train_step(micro)
                    window_samples += config.batch_size * config.grad_accumulation * self.context.world_size
                    terms["lr"] = self.scheduler.get_last_lr()[0]
                    terms["logit_scale"] = self.model.logit_scale.detach().exp().item()
                    if self.step % config.log_every == 0 or self.step == end_step:
                        elapsed = time.perf_counter() - window_start
                        terms["samples_per_s"] = window_samples / max(elapsed, 1e-9)
                        terms["data_wait_share"] = data_time / max(elapsed, 1e-9)
                        self._log(terms, writer)
                        window_start, window_samples, data_time = time.perf_counter(), 0, 0.0
                    history.append({"step": float(self.step), **terms})
                    if progress is not None:
                        progress.update(1)
                        progress.set_postfix(loss=f"{terms['total']:.4f}", lr=f"{terms['lr']:.2e}")
                    if self.step % config.checkpoint_every == 0 and self.step < end_step:
                        self.save()
                    if self._stop_agreed(stop.requested):
                        stop_reason = stop.signal_name or "signal"
                        break
            except KeyboardInterrupt:
                stop_reason = "KeyboardInterrupt"
                logger.warning("interrupted at step %d", self.step)
            finally:
                if progress is not None:
                    progress.close()
                if writer is not None:
                    writer.close()
            checkpoint = self.save() if self.last_saved_step != self.step else self._latest_checkpoint_path()
        return TrainResult(
            step=self.step,
            total_steps=self.total_steps,
            checkpoint=checkpoint,
            stopped_early=self.step < self.total_steps,
            stop_reason=stop_reason,
            last_terms=terms,
            history=history,
        )

    def _stop_agreed(self, requested: bool) -> bool:
        if not self.context.distributed:
            return requested
        flag = torch.tensor([1.0 if requested else 0.0], device=self.context.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def _summary_writer(self) -> Any:
        if not (self.config.tensorboard and self.context.is_main):
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(self.output_dir / "tensorboard"))

    def _progress_bar(self, end_step: int) -> Any:
        if not (self.config.progress_bar and self.context.is_main):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=end_step, initial=self.step, desc="pretrain", unit="step", dynamic_ncols=True)

    def _log(self, terms: dict[str, float], writer: Any) -> None:
        if not self.context.is_main:
            return
        logger.info(
            "step %d/%d loss %.4f (flair %.4f, expert %.4f, mse %.5f) lr %.2e scale %.2f %.1f samples/s data %.0f%%",
            self.step, self.total_steps, terms["total"], terms["flair_clip"], terms["expert_clip"],
            terms["knowledge_mse"], terms["lr"], terms["logit_scale"], terms["samples_per_s"],
            100 * terms["data_wait_share"],
        )
        if writer is not None:
            for key, value in terms.items():
                group = "loss" if key in ("total", "flair_clip", "expert_clip", "knowledge_mse") else "train"
                writer.add_scalar(f"{group}/{key}", value, self.step)

    def metadata(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "total_steps": self.total_steps,
            "epoch": self.step / self.steps_per_epoch,
            "world_size": self.context.world_size,
            "code_version": code_version(),
            "pretrain_config": self.config.model_dump(mode="json"),
            "mmretinal_manifest": self.expert_manifest.identity if self.expert_manifest else None,
            "ffa_ir": self.flair_dataset.identity() if self.config.ffa_ir is not None else None,
            "tower_init": self.tower_init,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def _training_state(self, rng_states: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_states,
            "world_size": self.context.world_size,
            "data_position": {"flair_batches": self.step * self.config.grad_accumulation},
            "mmretinal_fingerprint": self.expert_manifest.content_fingerprint if self.expert_manifest else "",
        }

    def save(self) -> Path:
        """Checkpoint at the current step: weights (.pth), sidecar (.pth.json), training state (.state.pt)."""
        rng = capture_rng_state()
        if self.context.distributed:
            gathered: list[Any] = [None] * self.context.world_size
            dist.all_gather_object(gathered, rng)
            rng_states = gathered
        else:
            rng_states = [rng]
        path = self.checkpoint_dir / f"step-{self.step:07d}.pth"
        if self.context.is_main:
            save_checkpoint(self.model, path, self.metadata())
            state = self._training_state(rng_states)
            atomic_write_bytes(state_path(path), lambda out: torch.save(state, out))
            atomic_write_json(self.checkpoint_dir / LATEST_POINTER, {"step": self.step, "checkpoint": path.name})
            self._prune_checkpoints()
            logger.info("saved checkpoint %s", path)
        if self.context.distributed:
            dist.barrier()
        self.last_saved_step = self.step
        return path

    def _prune_checkpoints(self) -> None:
        keep = max(1, self.config.keep_checkpoints)
        checkpoints = sorted(self.checkpoint_dir.glob("step-*.pth"))
        for old in checkpoints[:-keep]:
            for companion in (old, old.with_name(old.name + ".json"), state_path(old)):
                companion.unlink(missing_ok=True)

    def _latest_checkpoint_path(self) -> Path | None:
        pointer = self.checkpoint_dir / LATEST_POINTER
        if not pointer.exists():
            return None
        return self.checkpoint_dir / json.loads(pointer.read_text())["checkpoint"]

    def _resume_path(self) -> Path | None:
        """The checkpoint this run continues from: the configured path, output_dir's latest, or None."""
        option = self.config.resume
        if option is None or option == "none":
            return None
        if option == "auto":
            return self._latest_checkpoint_path()
        return Path(option)

    def _resume_if_requested(self) -> None:
        path = self._resume_path()
        if path is not None:
            self.resume_from(path)

    def resume_from(self, path: Path) -> None:
        """Restore model, optimiser, scheduler, scaler, step and this rank's RNG state from a checkpoint."""
        from keepfit.checkpoint import read_state_dict

        state_file = state_path(path)
        if not path.exists() or not state_file.exists():
            raise FileNotFoundError(f"{path}: checkpoint or its training state {state_file.name} is missing")
        load_state_dict_strict(self.model, read_state_dict(path), source=str(path))
        state = torch.load(state_file, map_location="cpu", weights_only=True)
        if state["world_size"] != self.context.world_size:
            raise ValueError(
                f"{state_file}: saved with {state['world_size']} processes, resuming with {self.context.world_size}; "
                "the data order would differ"
            )
        fingerprint = self.expert_manifest.content_fingerprint if self.expert_manifest else ""
        if state["mmretinal_fingerprint"] != fingerprint:
            raise ValueError(
                f"{state_file}: MM-Retinal manifest fingerprint {state['mmretinal_fingerprint'][:12]} differs from "
                f"the configured one {fingerprint[:12]}"
            )
        sidecar = read_sidecar(path) or {}
        if sidecar.get("total_steps") not in (None, self.total_steps):
            logger.warning("%s: run length changed from %s to %d steps", path, sidecar["total_steps"], self.total_steps)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.last_saved_step = self.step
        restore_rng_state(state["rng"][self.context.rank])
        logger.info("resumed from %s at step %d", path, self.step)


def _device_rng_state(device: torch.device) -> dict[str, Any]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _restore_device_rng_state(device: torch.device, state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def refuse_random_towers(model: KeepFITModel, allowed: bool) -> None:
    """Stop a fresh run whose towers would start from random weights, unless that is explicitly allowed."""
    random_towers = model.random_towers()
    if not random_towers:
        return
    if allowed:
        logger.warning("%s tower(s) start from random weights (allow_random_init)", " and ".join(random_towers))
        return
    vision, text = model.config.vision, model.config.text
    wanted = {
        "vision": f"ImageNet weights {vision.weights} for {vision.arch} not found (vision.weights_path or the "
        "torch hub cache)" if vision.pretrained and vision.arch != "custom" else
        "the image tower has no pretrained weights configured",
        "text": f"text encoder {text.model_name!r} not found (a local directory or the Hugging Face cache)"
        if text.pretrained and text.model_name else "the text tower has no pretrained weights configured",
    }
    missing = "; ".join(wanted[name] for name in random_towers)
    raise ValueError(
        f"refusing to pretrain from random {' and '.join(random_towers)} tower(s): {missing}. "
        "Provide the weights, or pass --allow-random-init (allow_random_init=true) to start from random weights"
    )


def freeze_unused_pooler(model: KeepFITModel) -> None:
    """Freeze the text encoder's pooler: embeddings pool hidden states, and DDP rejects params without grads."""
    pooler = getattr(model.text_model.model, "pooler", None)
    if pooler is not None:
        pooler.requires_grad_(False)


def state_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name.removesuffix(".pth") + ".state.pt")


def run_pretraining(config: PretrainConfig) -> TrainResult:
    """Build a Trainer and fit; tears the process group down afterwards."""
    try:
        return Trainer(config).fit()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    """`python -m keepfit.trainer CONFIG [key=value ...]`, the torchrun entry point."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments:
        logger.error("usage: python -m keepfit.trainer CONFIG [key=value ...]")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = run_pretraining(load_pretrain_config(arguments[0], [a for a in arguments[1:] if a != "--set"]))
    return 0 if result.stop_reason in ("completed", "stop_after_steps") else 3


if __name__ == "__main__":
    sys.exit(main())
