"""Metrics checked against scikit-learn on hand-made binary, 3-class, 5-grade and degenerate cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from keepfit.evaluation.metrics import (
    binary_auc,
    classification_metrics,
    confusion_matrix,
    summarise_folds,
    summed_confusion_matrix,
)


def one_hot_scores(predictions, n_classes, noise_seed=None):
    """Scores whose argmax is `predictions`; optional noise keeps ranks informative for AUC."""
    scores = np.zeros((len(predictions), n_classes))
    scores[np.arange(len(predictions)), predictions] = 1.0
    if noise_seed is not None:
        scores += np.random.default_rng(noise_seed).uniform(0, 0.5, scores.shape)
    return scores


def softmax(scores):
    exp = np.exp(scores - scores.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def assert_matches_sklearn(y_true, scores, n_classes, graded=False):
    result = classification_metrics(y_true, scores, n_classes, graded=graded)
    y_pred = scores.argmax(axis=1)
    labels = list(range(n_classes))
    assert result.confusion_matrix == skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    assert result.aca == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    assert result.accuracy == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert result.f1_macro == pytest.approx(skm.f1_score(y_true, y_pred, average="macro", zero_division=0))
    recall = skm.recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    assert result.sensitivity == pytest.approx(list(recall))
    if n_classes == 2:
        assert result.auc == pytest.approx(skm.roc_auc_score(y_true, scores[:, 1] - scores[:, 0]))
        assert result.auc == pytest.approx(skm.roc_auc_score(y_true, softmax(scores)[:, 1]))
    else:
        expected = skm.roc_auc_score(y_true, softmax(scores), multi_class="ovr", average="macro", labels=labels)
        assert result.auc == pytest.approx(expected)
    if graded:
        expected_kappa = skm.cohen_kappa_score(y_true, y_pred, labels=labels, weights="quadratic")
        assert result.kappa == pytest.approx(expected_kappa)
    else:
        assert result.kappa is None
    return result


def test_binary_case_matches_sklearn_and_hand_values():
    y_true = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    y_pred = np.array([0, 0, 0, 1, 1, 1, 1, 1, 0, 0])
    scores = one_hot_scores(y_pred, 2, noise_seed=1)
    result = assert_matches_sklearn(y_true, scores, 2)
    # By hand: recall(0)=3/4, recall(1)=4/6 -> ACA = (0.75 + 0.6667) / 2.
    assert result.aca == pytest.approx((3 / 4 + 4 / 6) / 2)
    assert result.accuracy == pytest.approx(7 / 10)
    assert result.sensitivity == pytest.approx([3 / 4, 4 / 6])
    # Specificity of class 1 is the recall of class 0 and vice versa.
    assert result.specificity == pytest.approx([4 / 6, 3 / 4])


def test_binary_auc_uses_positive_class_score_not_predictions():
    y_true = np.array([0, 0, 1, 1])
    # All predicted class 0, yet the positive-class scores rank the positives perfectly.
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    result = classification_metrics(y_true, scores)
    assert result.auc == pytest.approx(1.0)
    assert result.aca == pytest.approx(0.5)


def test_three_classes_match_sklearn():
    y_true = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2])
    y_pred = np.array([0, 1, 0, 1, 1, 2, 1, 2, 0, 2, 2, 1])
    result = assert_matches_sklearn(y_true, one_hot_scores(y_pred, 3, noise_seed=2), 3)
    assert result.aca == pytest.approx((2 / 3 + 3 / 4 + 3 / 5) / 3)
    assert len(result.auc_per_class) == 3


def test_four_classes_random_scores_match_sklearn():
    rng = np.random.default_rng(0)
    y_true = np.repeat(np.arange(4), 15)
    scores = rng.normal(size=(60, 4)) + 1.5 * np.eye(4)[y_true]
    assert_matches_sklearn(y_true, scores, 4)


def test_graded_five_classes_kappa_matches_sklearn():
    y_true = np.array([0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4, 0, 1, 2])
    y_pred = np.array([0, 1, 1, 2, 2, 2, 3, 3, 4, 4, 3, 4, 2, 0, 2])
    result = assert_matches_sklearn(y_true, one_hot_scores(y_pred, 5, noise_seed=3), 5, graded=True)
    # A grade off by two costs four times a grade off by one: kappa < 1 but high.
    assert 0.5 < result.kappa < 1.0


def test_perfect_and_constant_predictions():
    y_true = np.array([0, 1, 2, 0, 1, 2])
    perfect = classification_metrics(y_true, np.eye(3)[y_true], graded=True)
    assert perfect.aca == perfect.accuracy == perfect.f1_macro == perfect.kappa == pytest.approx(1.0)
    assert perfect.auc == pytest.approx(1.0)
    constant = classification_metrics(y_true, np.tile([1.0, 0.0, 0.0], (6, 1)), graded=True)
    assert constant.aca == pytest.approx(1 / 3)
    assert constant.kappa == pytest.approx(skm.cohen_kappa_score(y_true, np.zeros(6, int), weights="quadratic"))
    assert constant.auc == pytest.approx(0.5)


def test_class_absent_from_test_labels_is_left_out_of_aca_and_auc():
    y_true = np.array([0, 0, 1, 1, 0, 1])
    y_pred = np.array([0, 2, 1, 1, 0, 0])
    scores = one_hot_scores(y_pred, 3, noise_seed=4)
    result = classification_metrics(y_true, scores, 3)
    with pytest.warns(UserWarning):
        expected_aca = skm.balanced_accuracy_score(y_true, y_pred)
    assert result.aca == pytest.approx(expected_aca)
    assert math.isnan(result.auc_per_class[2]) and math.isnan(result.sensitivity[2])
    assert result.auc == pytest.approx(np.nanmean(result.auc_per_class[:2]))
    assert result.f1_macro == pytest.approx(skm.f1_score(y_true, y_pred, average="macro", zero_division=0))


@pytest.mark.parametrize("seed", range(5))
def test_binary_auc_with_ties_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 40)
    scores = rng.integers(0, 5, 40).astype(float)
    assert binary_auc(labels == 1, scores) == pytest.approx(skm.roc_auc_score(labels, scores))


def test_confusion_matrix_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match="label outside"):
        confusion_matrix([0, 3], [0, 1], 3)


def test_scores_must_match_class_count():
    with pytest.raises(ValueError, match="columns"):
        classification_metrics([0, 1], np.zeros((2, 3)), n_classes=2)


def test_fold_summary_mean_std_and_summed_matrix():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    folds = [
        classification_metrics(y_true, np.eye(3)[y_true], graded=True),
        classification_metrics(y_true, np.eye(3)[[0, 1, 1, 1, 2, 0]], graded=True),
    ]
    summary = summarise_folds(folds)
    assert summary["aca"].values == pytest.approx([1.0, 4 / 6])
    assert summary["aca"].mean == pytest.approx((1.0 + 4 / 6) / 2)
    assert summary["aca"].std == pytest.approx(np.std([1.0, 4 / 6]))
    assert "kappa" in summary and "sensitivity[2]" in summary
    assert summed_confusion_matrix(folds) == (
        np.asarray(folds[0].confusion_matrix) + np.asarray(folds[1].confusion_matrix)
    ).tolist()
    ungraded = summarise_folds([classification_metrics(y_true, np.eye(3)[y_true])])
    assert "kappa" not in ungraded
