"""Batches for pretraining: a resumable, rank-sharded FLAIR sampler and independent expert batches.

Every position is a pure function of (seed, step), so a resumed run draws exactly the batches an
uninterrupted run would, and each rank of a distributed run gets its own slice / expert seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Sampler


class ShardedEpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of (index, epoch) from per-epoch permutations; each global batch is split over ranks.

    The global batch `batch_size * world_size` is the same whatever the number of processes, so
    one process with the whole global batch sees the samples that all ranks see together.
    """

    def __init__(
        self,
        dataset_size: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        start_batch: int = 0,
    ) -> None:
        self.dataset_size = dataset_size
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.start_batch = start_batch
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"dataset of {dataset_size} samples is smaller than one global batch ({batch_size * world_size})"
            )

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    @property
    def batches_per_epoch(self) -> int:
        return self.dataset_size // self.global_batch_size

    def permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.dataset_size, generator=generator)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        position = self.start_batch
        while True:
            epoch, offset = divmod(position, self.batches_per_epoch)
            order = self.permutation(epoch)
            for batch_in_epoch in range(offset, self.batches_per_epoch):
                start = batch_in_epoch * self.global_batch_size + self.rank * self.batch_size
                yield [(int(i), epoch) for i in order[start : start + self.batch_size]]
            position = (epoch + 1) * self.batches_per_epoch

    def __len__(self) -> int:
        return 2**62


class ExpertBatchSampler(ShardedEpochBatchSampler):
    """MM-Retinal batches independent of FLAIR, drawn without replacement from per-epoch permutations.

    The release drew them with replacement, so most gathered batches held a duplicate pair that
    the CLIP loss then treated as a negative. Here a global batch (all ranks together) never
    repeats an item; the order is its own seeded stream, a pure function of (seed, position), so a
    resumed run continues exactly.
    """

    def __init__(
        self,
        dataset_size: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        start_batch: int = 0,
    ) -> None:
        if dataset_size == 0:
            raise ValueError("expert dataset is empty")
        if dataset_size < batch_size * world_size:
            raise ValueError(
                f"expert dataset of {dataset_size} pairs is smaller than one global expert batch "
                f"({batch_size} x {world_size}); batches without duplicates are impossible"
            )
        super().__init__(dataset_size, batch_size, rank, world_size, hash_seed(seed, "expert") % (2**31), start_batch)

    def batch(self, position: int) -> list[tuple[int, int]]:
        """The batch at global position `position` (same as the `position`-th one iterated from 0)."""
        epoch, offset = divmod(position, self.batches_per_epoch)
        start = offset * self.global_batch_size + self.rank * self.batch_size
        return [(int(i), epoch) for i in self.permutation(epoch)[start : start + self.batch_size]]


def hash_seed(*parts: Any) -> int:
    """A 63-bit seed from a tuple of values, stable across processes and Python runs."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class TokenizingCollate:
    """Stack uint8 images and tokenize texts in the loader workers."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {"images": torch.stack([item["image"] for item in items])}
        encoded = self.tokenizer(
            [item["text"] for item in items],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        batch["input_ids"] = encoded["input_ids"]
        batch["attention_mask"] = encoded["attention_mask"]
        if "category_index" in items[0]:
            batch["category_index"] = torch.tensor([item["category_index"] for item in items])
            batch["category_multi_hot"] = torch.stack([item["category_multi_hot"] for item in items])
        return batch
