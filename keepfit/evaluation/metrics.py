"""Classification metrics for binary, multiclass and graded tasks.

Everything is computed from the confusion matrix (or from ranks, for AUC) with numpy so that
the definitions are explicit and identical for 2 and K classes. Predictions are the argmax of
the scores: no decision threshold is tuned anywhere, least of all on test data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class ClassificationMetrics(BaseModel):
    """Metrics of one set of predictions (one fold)."""

    model_config = ConfigDict(ser_json_inf_nan="constants")

    aca: float = Field(description="Balanced accuracy: mean of the diagonal of the row-normalised confusion matrix.")
    accuracy: float = Field(description="Fraction of samples whose argmax prediction equals the label.")
    f1_macro: float = Field(description="Unweighted mean F1 over the classes present in labels or predictions.")
    auc: float = Field(
        description="Binary: ROC AUC of the positive-class score. Multiclass: macro mean of one-vs-rest AUCs "
        "over classes with both positives and negatives. NaN when undefined."
    )
    kappa: float | None = Field(
        None, description="Quadratic-weighted Cohen's kappa; only for graded (ordinal) tasks."
    )
    sensitivity: list[float] = Field(description="Per-class recall (NaN for a class with no samples).")
    specificity: list[float] = Field(description="Per-class true-negative rate (NaN when undefined).")
    auc_per_class: list[float] = Field(description="Per-class one-vs-rest AUC (NaN when undefined).")
    confusion_matrix: list[list[int]] = Field(description="Counts; rows are true classes, columns predictions.")
    n_samples: int = Field(description="Number of evaluated samples.")


SCALAR_METRICS = ("aca", "accuracy", "f1_macro", "auc", "kappa")


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """K x K count matrix, rows = true class, columns = predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"labels and predictions differ in length: {y_true.shape} vs {y_pred.shape}")
    for name, values in (("label", y_true), ("prediction", y_pred)):
        if values.size and (values.min() < 0 or values.max() >= n_classes):
            raise ValueError(f"{name} outside 0..{n_classes - 1}: {np.unique(values).tolist()}")
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def balanced_accuracy(matrix: np.ndarray) -> float:
    """Mean recall over the classes that occur in the labels (ACA in the KeepFIT paper)."""
    support = matrix.sum(axis=1)
    present = support > 0
    if not present.any():
        return math.nan
    recall = np.diag(matrix)[present] / support[present]
    return float(recall.mean())


def accuracy(matrix: np.ndarray) -> float:
    total = matrix.sum()
    return float(np.trace(matrix) / total) if total else math.nan


def f1_macro(matrix: np.ndarray) -> float:
    """Macro F1 over classes that occur in labels or predictions (sklearn's default label set)."""
    tp = np.diag(matrix).astype(float)
    fp = matrix.sum(axis=0) - tp
    fn = matrix.sum(axis=1) - tp
    present = (matrix.sum(axis=0) + matrix.sum(axis=1)) > 0
    if not present.any():
        return math.nan
    denominator = 2 * tp + fp + fn
    f1 = np.where(denominator > 0, 2 * tp / np.where(denominator > 0, denominator, 1), 0.0)
    return float(f1[present].mean())


def quadratic_weighted_kappa(matrix: np.ndarray) -> float:
    """Cohen's kappa with quadratic disagreement weights (i - j)^2 over the K ordered grades."""
    n_classes = matrix.shape[0]
    total = matrix.sum()
    if total == 0:
        return math.nan
    grades = np.arange(n_classes)
    weights = (grades[:, None] - grades[None, :]) ** 2
    expected = np.outer(matrix.sum(axis=1), matrix.sum(axis=0)) / total
    denominator = float((weights * expected).sum())
    if denominator == 0:
        return math.nan
    return float(1.0 - (weights * matrix).sum() / denominator)


def sensitivity_specificity(matrix: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-class one-vs-rest recall and true-negative rate."""
    tp = np.diag(matrix).astype(float)
    positives = matrix.sum(axis=1).astype(float)
    predicted = matrix.sum(axis=0).astype(float)
    total = float(matrix.sum())
    negatives = total - positives
    tn = total - positives - predicted + tp
    sensitivity = [float(tp[k] / positives[k]) if positives[k] else math.nan for k in range(len(tp))]
    specificity = [float(tn[k] / negatives[k]) if negatives[k] else math.nan for k in range(len(tp))]
    return sensitivity, specificity


def binary_auc(is_positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic with mid-ranks for ties; NaN if one class is absent."""
    is_positive = np.asarray(is_positive, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    n_pos = int(is_positive.sum())
    n_neg = int(is_positive.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(scores.size, dtype=float)
    start = 0
    while start < scores.size:
        end = start
        while end + 1 < scores.size and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    rank_sum = ranks[is_positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def classification_metrics(
    y_true: Sequence[int], scores: np.ndarray, n_classes: int | None = None, graded: bool = False
) -> ClassificationMetrics:
    """All metrics of one fold from integer labels and a [N, K] score matrix (logits or probabilities).

    AUCs are rank based, so logits and their softmax give the same per-class AUC in the binary
    case; for K > 2 the one-vs-rest score of a class is its softmax probability.
    """
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2:
        raise ValueError(f"scores must be [N, K], got shape {scores.shape}")
    n_classes = n_classes or scores.shape[1]
    if scores.shape[1] != n_classes:
        raise ValueError(f"scores have {scores.shape[1]} columns for {n_classes} classes")
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = scores.argmax(axis=1)
    matrix = confusion_matrix(y_true, y_pred, n_classes)
    sensitivity, specificity = sensitivity_specificity(matrix)
    probabilities = softmax(scores)
    if n_classes == 2:
        margin = scores[:, 1] - scores[:, 0]
        positive_auc = binary_auc(y_true == 1, margin)
        auc_per_class = [binary_auc(y_true == 0, -margin), positive_auc]
        auc = positive_auc
    else:
        auc_per_class = [binary_auc(y_true == k, probabilities[:, k]) for k in range(n_classes)]
        defined = [value for value in auc_per_class if not math.isnan(value)]
        auc = float(np.mean(defined)) if defined else math.nan
    return ClassificationMetrics(
        aca=balanced_accuracy(matrix),
        accuracy=accuracy(matrix),
        f1_macro=f1_macro(matrix),
        auc=auc,
        kappa=quadratic_weighted_kappa(matrix) if graded else None,
        sensitivity=sensitivity,
        specificity=specificity,
        auc_per_class=auc_per_class,
        confusion_matrix=matrix.tolist(),
        n_samples=int(y_true.size),
    )


class MetricSummary(BaseModel):
    """Mean and spread of one metric over folds."""

    model_config = ConfigDict(ser_json_inf_nan="constants")

    mean: float = Field(description="Mean over folds (NaN folds ignored).")
    std: float = Field(description="Population standard deviation over folds (ddof=0, as the published tables).")
    values: list[float] = Field(description="Per-fold values in fold order.")


def summarise_folds(folds: Sequence[ClassificationMetrics]) -> dict[str, MetricSummary]:
    """Mean ± std of every scalar metric and of per-class sensitivity/specificity over folds."""
    if not folds:
        raise ValueError("no folds to summarise")
    summary: dict[str, MetricSummary] = {}

    def add(name: str, values: list[float]) -> None:
        finite = [v for v in values if v is not None and not math.isnan(v)]
        summary[name] = MetricSummary(
            mean=float(np.mean(finite)) if finite else math.nan,
            std=float(np.std(finite)) if finite else math.nan,
            values=[math.nan if v is None else float(v) for v in values],
        )

    for name in SCALAR_METRICS:
        values = [getattr(fold, name) for fold in folds]
        if all(v is None for v in values):
            continue
        add(name, values)
    n_classes = len(folds[0].sensitivity)
    for k in range(n_classes):
        add(f"sensitivity[{k}]", [fold.sensitivity[k] for fold in folds])
        add(f"specificity[{k}]", [fold.specificity[k] for fold in folds])
    return summary


def summed_confusion_matrix(folds: Sequence[ClassificationMetrics]) -> list[list[int]]:
    """Confusion matrices of all folds added up (each test sample counted once per fold)."""
    matrices = [np.asarray(fold.confusion_matrix) for fold in folds]
    return np.sum(matrices, axis=0).astype(int).tolist()
