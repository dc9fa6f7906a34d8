"""Per-class stratified train/val/test splits.

The paper's protocol: for each class, shuffle its samples with seed = fold, take the test
samples first, then the train samples, then the validation samples; each size is a count per
class ("5" for 5-shot) or a percentage of the class ("20%"). Its "5 folds" are therefore five
*repeated random splits* (test sets may overlap between folds), named so here. True stratified
k-fold cross-validation (disjoint test folds) is available as a separate scheme.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator

SHOTS_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")


class SplitOptions(BaseModel):
    """How samples are divided into train, validation and test sets for each fold."""

    scheme: Literal["repeated_random", "stratified_kfold"] = Field(
        "repeated_random",
        description="'repeated_random': the paper's per-class shuffle with seed=fold, test then train then val. "
        "'stratified_kfold': disjoint test folds; train/val drawn from the remaining samples.",
    )
    train: str = Field("80%", description="Training samples per class: a count ('5') or a percentage ('80%').")
    val: str = Field("0%", description="Validation samples per class: a count or a percentage.")
    test: str = Field(
        "20%", description="Test samples per class: a count or a percentage (ignored by 'stratified_kfold')."
    )
    folds: int = Field(5, ge=1, description="Number of repeated splits, or k for stratified k-fold.")

    @field_validator("train", "val", "test", mode="before")
    @classmethod
    def _valid_shots(cls, value: object) -> str:
        text = str(value)
        match = SHOTS_PATTERN.match(text)
        if not match:
            raise ValueError(f"expected a count like '5' or a percentage like '20%', got {text!r}")
        if not match.group(2) and "." in match.group(1):
            raise ValueError(f"a count must be an integer, got {text!r}")
        if match.group(2) and float(match.group(1)) > 100:
            raise ValueError(f"percentage above 100: {text!r}")
        return text.strip()


def shots_for_class(shots: str, class_size: int) -> int:
    """Number of samples a shots string gives for a class of `class_size` (percentages round down)."""
    match = SHOTS_PATTERN.match(str(shots))
    if not match:
        raise ValueError(f"invalid shots {shots!r}")
    number, percent = match.groups()
    if percent:
        return int(float(number) / 100.0 * class_size + 1e-9)
    return int(number)


@dataclass(frozen=True)
class Split:
    """Sample indices of one fold."""

    fold: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def check_disjoint(self) -> None:
        sets = [set(self.train.tolist()), set(self.val.tolist()), set(self.test.tolist())]
        if sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2]:
            raise AssertionError(f"fold {self.fold}: train/val/test overlap")


def _take_train_val(
    indices: np.ndarray, class_size: int, options: SplitOptions, class_index: int
) -> tuple[np.ndarray, np.ndarray]:
    n_train = shots_for_class(options.train, class_size)
    n_val = shots_for_class(options.val, class_size)
    if n_train + n_val > indices.size:
        raise ValueError(
            f"class {class_index}: asked for {n_train} train + {n_val} val samples but only {indices.size} "
            "remain after the test set"
        )
    return indices[:n_train], indices[n_train : n_train + n_val]


def repeated_random_split(labels: np.ndarray, fold: int, options: SplitOptions) -> Split:
    """One fold of the paper's protocol: per class, shuffle with seed=fold, then test, train, val."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(fold)
    train, val, test = [], [], []
    for class_index in np.unique(labels):
        members = np.flatnonzero(labels == class_index)
        shuffled = members[rng.permutation(members.size)]
        n_test = shots_for_class(options.test, members.size)
        if n_test > members.size:
            raise ValueError(f"class {class_index}: asked for {n_test} test samples, only {members.size} exist")
        test.append(shuffled[:n_test])
        class_train, class_val = _take_train_val(shuffled[n_test:], members.size, options, int(class_index))
        train.append(class_train)
        val.append(class_val)
    split = Split(fold, *(np.sort(np.concatenate(parts)).astype(np.int64) for parts in (train, val, test)))
    return split


def stratified_kfold_splits(labels: np.ndarray, options: SplitOptions, seed: int = 0) -> list[Split]:
    """k disjoint, per-class balanced test folds; val then train drawn from the rest of each class.

    Every sample is tested exactly once. Here `val` is a count or a percentage of the class and
    `train` a count or a percentage of what remains after the test fold and val ("100%" = all).
    """
    labels = np.asarray(labels)
    k = options.folds
    if k < 2:
        raise ValueError("stratified k-fold needs folds >= 2")
    rng = np.random.default_rng(seed)
    chunks_per_class: dict[int, list[np.ndarray]] = {}
    for class_index in np.unique(labels):
        members = np.flatnonzero(labels == class_index)
        if members.size < k:
            raise ValueError(f"class {class_index} has {members.size} samples, fewer than {k} folds")
        chunks_per_class[int(class_index)] = np.array_split(members[rng.permutation(members.size)], k)
    splits = []
    for fold in range(k):
        fold_rng = np.random.default_rng([seed, fold])
        train, val, test = [], [], []
        for class_index, chunks in chunks_per_class.items():
            test.append(chunks[fold])
            rest = np.concatenate([chunk for index, chunk in enumerate(chunks) if index != fold])
            rest = rest[fold_rng.permutation(rest.size)]
            class_size = sum(chunk.size for chunk in chunks)
            n_val = shots_for_class(options.val, class_size)
            n_train = shots_for_class(options.train, rest.size - n_val)
            if n_val + n_train > rest.size:
                raise ValueError(
                    f"class {class_index}: asked for {n_train} train + {n_val} val samples but only "
                    f"{rest.size} remain outside test fold {fold}"
                )
            val.append(rest[:n_val])
            train.append(rest[n_val : n_val + n_train])
        splits.append(Split(fold, *(np.sort(np.concatenate(p)).astype(np.int64) for p in (train, val, test))))
    return splits


def make_splits(labels: np.ndarray, options: SplitOptions) -> list[Split]:
    """All folds for the chosen scheme; each fold's sets are disjoint."""
    if options.scheme == "stratified_kfold":
        splits = stratified_kfold_splits(labels, options)
    else:
        splits = [repeated_random_split(labels, fold, options) for fold in range(options.folds)]
    for split in splits:
        split.check_disjoint()
    return splits
