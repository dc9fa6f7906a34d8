"""Per-class splits: counts/percentages, order test -> train -> val, seeds, and true k-fold."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from keepfit.evaluation.splits import SplitOptions, make_splits, repeated_random_split, shots_for_class

LABELS = np.array([0] * 20 + [1] * 10 + [2] * 30)


def counts(indices, labels=LABELS):
    return np.bincount(labels[indices], minlength=3).tolist()


def test_shots_counts_and_percentages():
    assert shots_for_class("5", 30) == 5
    assert shots_for_class("20%", 30) == 6
    assert shots_for_class("20%", 12) == 2  # rounds down as the paper's code
    assert shots_for_class("100%", 7) == 7


@pytest.mark.parametrize("bad", ["abc", "5.5", "120%", "-3"])
def test_invalid_shots_are_rejected(bad):
    with pytest.raises(ValidationError):
        SplitOptions(train=bad)


def test_percentages_are_per_class_and_sets_disjoint():
    split = repeated_random_split(LABELS, 0, SplitOptions(train="50%", val="10%", test="20%"))
    assert counts(split.test) == [4, 2, 6]
    assert counts(split.train) == [10, 5, 15]
    assert counts(split.val) == [2, 1, 3]
    split.check_disjoint()


def test_few_shot_counts():
    split = repeated_random_split(LABELS, 3, SplitOptions(train="5", val="0", test="20%"))
    assert counts(split.train) == [5, 5, 5]
    assert counts(split.test) == [4, 2, 6]


def test_test_set_is_taken_first_so_it_does_not_depend_on_train_size():
    few = repeated_random_split(LABELS, 2, SplitOptions(train="1", test="20%"))
    many = repeated_random_split(LABELS, 2, SplitOptions(train="80%", test="20%"))
    assert few.test.tolist() == many.test.tolist()
    assert set(few.train) <= set(many.train)


def test_seed_is_the_fold():
    options = SplitOptions(train="50%", test="20%", folds=3)
    splits = make_splits(LABELS, options)
    again = make_splits(LABELS, options)
    assert [s.test.tolist() for s in splits] == [s.test.tolist() for s in again]
    assert splits[0].test.tolist() != splits[1].test.tolist()
    assert [s.fold for s in splits] == [0, 1, 2]


def test_too_many_samples_requested_is_an_error():
    with pytest.raises(ValueError, match="remain"):
        repeated_random_split(LABELS, 0, SplitOptions(train="9", test="50%"))


def test_zero_shot_split_tests_everything():
    split = repeated_random_split(LABELS, 0, SplitOptions(train="0%", test="100%"))
    assert split.test.tolist() == list(range(len(LABELS)))
    assert split.train.size == 0


def test_stratified_kfold_tests_each_sample_once():
    options = SplitOptions(scheme="stratified_kfold", train="100%", val="2", folds=5)
    splits = make_splits(LABELS, options)
    tested = np.concatenate([s.test for s in splits])
    assert sorted(tested.tolist()) == list(range(len(LABELS)))
    for split in splits:
        assert counts(split.test) == [4, 2, 6]
        assert counts(split.val) == [2, 2, 2]
        assert split.train.size + split.val.size + split.test.size == len(LABELS)


def test_stratified_kfold_needs_enough_samples_per_class():
    with pytest.raises(ValueError, match="fewer than"):
        make_splits(np.array([0] * 10 + [1] * 3), SplitOptions(scheme="stratified_kfold", train="100%", folds=5))
