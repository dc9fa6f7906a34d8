"""Run (checkpoint x experiment x method) evaluations over folds and collect typed results."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from keepfit.evaluation.datasets import LabeledImageSet, load_experiment_dataset
from keepfit.evaluation.features import FeatureCache, FeatureSet, model_fingerprint
from keepfit.evaluation.methods import FoldData, MethodContext, MethodOptions, TransferMethod, create_method
from keepfit.evaluation.metrics import (
    ClassificationMetrics,
    MetricSummary,
    classification_metrics,
    summarise_folds,
    summed_confusion_matrix,
)
from keepfit.evaluation.protocols import ImageTextEncoder
from keepfit.evaluation.registry import ExperimentSpec, load_experiments
from keepfit.evaluation.splits import Split, SplitOptions, make_splits

logger = logging.getLogger(__name__)


def default_split(method: str, folds: int | None = None) -> SplitOptions:
    """The paper's defaults: zero-shot tests on every image once; trained methods 80% / 20%, 5 folds."""
    if method == "zero_shot":
        return SplitOptions(train="0%", val="0%", test="100%", folds=folds or 1)
    return SplitOptions(train="80%", val="0%", test="20%", folds=folds or 5)


class FoldResult(BaseModel):
    """Metrics of one fold and the sizes of its sets."""

    fold: int = Field(description="Fold index (also the shuffling seed for repeated random splits).")
    n_train: int = Field(description="Training samples.")
    n_val: int = Field(description="Validation samples.")
    n_test: int = Field(description="Test samples.")
    metrics: ClassificationMetrics = Field(description="Test-set metrics.")
    seconds: float = Field(description="Wall time of fit + predict.")


class EvaluationResult(BaseModel):
    """One method on one experiment for one checkpoint, over all folds."""

    experiment: str = Field(
        description="Experiment name from the registry; '<trained on> -> <tested on>' for a cross-dataset test."
    )
    tested_on: str | None = Field(
        None, description="External experiment the test images came from (cross-dataset testing); None: the same."
    )
    method: str = Field(description="Transfer method.")
    checkpoint: str = Field(description="Checkpoint path or model config name, as given.")
    model_sha256: str = Field(description="SHA-256 of the model weights (the feature-cache identity).")
    classes: list[str] = Field(description="Class names in label order.")
    graded: bool = Field(description="Whether quadratic-weighted kappa applies.")
    class_counts: list[int] = Field(description="Samples per class in the dataset after skipped rows.")
    skipped_rows: int = Field(description="Dataframe rows left out (unparseable, other classes, missing images).")
    split: SplitOptions = Field(description="How folds were drawn.")
    method_options: MethodOptions = Field(description="Hyperparameters used.")
    folds: list[FoldResult] = Field(description="Per-fold results.")
    summary: dict[str, MetricSummary] = Field(description="Mean and std over folds per metric.")
    confusion_matrix: list[list[int]] = Field(description="Test confusion matrices summed over folds.")
    feature_cache_key: str = Field(description="Key of the cached features used.")
    feature_cache_hit: bool = Field(description="Whether the features came from the cache.")
    created_at: str = Field(description="UTC time the evaluation finished (ISO 8601).")

    def metric(self, name: str) -> tuple[float, float]:
        item = self.summary.get(name)
        return (item.mean, item.std) if item else (math.nan, math.nan)


class EvaluationOptions(BaseModel):
    """Everything that defines an evaluation run apart from the model."""

    data_root: str = Field(description="Directory the dataframes' image paths are relative to.")
    dataframe_dir: str | None = Field(None, description="Directory holding the experiment CSVs (default: data root).")
    cache_dir: str | None = Field(None, description="Feature cache directory; in memory only when unset.")
    registry_paths: list[str] = Field(default_factory=list, description="Extra experiment registry YAML files.")
    split: SplitOptions | None = Field(None, description="Split options; the method's paper default when unset.")
    folds: int | None = Field(None, description="Override the number of folds of the (default) split.")
    methods: MethodOptions = Field(default_factory=MethodOptions, description="Method hyperparameters.")
    test_experiments: list[str] = Field(
        default_factory=list,
        description="Cross-dataset testing: after each fold, also test on all images of these experiments "
        "(read with the training experiment's classes).",
    )


def _drop_unreadable(split: Split, features: FeatureSet) -> Split:
    if features.valid.all():
        return split
    keep = features.valid

    def filtered(indices: np.ndarray) -> np.ndarray:
        return indices[keep[indices]]

    return Split(split.fold, filtered(split.train), filtered(split.val), filtered(split.test))


@dataclass
class ExternalTest:
    """Another experiment's images tested with a model fitted on this one (the release's --experiment_test)."""

    spec: ExperimentSpec
    dataset: LabeledImageSet


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def predict_scores(
    transfer: TransferMethod,
    fold: FoldData,
    indices: np.ndarray,
    model: ImageTextEncoder,
    model_hash: str,
    options: EvaluationOptions,
    cache: FeatureCache,
) -> np.ndarray:
    """Scores of `indices`; with TTA on a frozen-encoder method, mean softmax probabilities over the views."""
    scores = transfer.predict(fold, indices)
    methods = options.methods
    if not methods.tta or transfer.reads_images or methods.tta_views <= 1:
        return scores
    probabilities = [_softmax(scores)]
    for view in range(1, methods.tta_views):
        features = cache.get_or_compute(
            model, fold.dataset, model_hash, batch_size=methods.batch_size, num_workers=methods.num_workers, view=view
        )
        view_fold = FoldData(split=fold.split, labels=fold.labels, features=features, dataset=fold.dataset)
        probabilities.append(_softmax(transfer.predict(view_fold, indices)))
    return np.mean(probabilities, axis=0)


def _result(
    name: str,
    method: str,
    spec: ExperimentSpec,
    dataset: LabeledImageSet,
    split_options: SplitOptions,
    options: EvaluationOptions,
    fold_results: list[FoldResult],
    checkpoint_label: str,
    model_hash: str,
    features: FeatureSet,
    cache_hit: bool,
    tested_on: str | None = None,
) -> EvaluationResult:
    fold_metrics = [result.metrics for result in fold_results]
    return EvaluationResult(
        experiment=name,
        tested_on=tested_on,
        method=method,
        checkpoint=checkpoint_label,
        model_sha256=model_hash,
        classes=spec.classes,
        graded=spec.graded,
        class_counts=dataset.class_counts(),
        skipped_rows=len(dataset.skipped),
        split=split_options,
        method_options=options.methods,
        folds=fold_results,
        summary=summarise_folds(fold_metrics),
        confusion_matrix=summed_confusion_matrix(fold_metrics),
        feature_cache_key=features.key,
        feature_cache_hit=cache_hit,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def evaluate_method_with_external(
    model: ImageTextEncoder,
    spec: ExperimentSpec,
    dataset: LabeledImageSet,
    method: str,
    options: EvaluationOptions,
    cache: FeatureCache,
    checkpoint_label: str,
    model_hash: str | None = None,
    context: MethodContext | None = None,
    external: Sequence[ExternalTest] = (),
) -> list[EvaluationResult]:
    """All folds of one method on one experiment, plus each fold's model tested on every external set.

    Returns the experiment's result first, then one result per external test (named
    '<experiment> -> <external>'), each over the same folds.
    """
    model_hash = model_hash or model_fingerprint(model)
    split_options = options.split or default_split(method, options.folds)
    if options.split is not None and options.folds is not None:
        split_options = split_options.model_copy(update={"folds": options.folds})
    methods = options.methods
    hits_before = cache.hits
    features = cache.get_or_compute(
        model, dataset, model_hash, batch_size=methods.batch_size, num_workers=methods.num_workers
    )
    cache_hit = cache.hits > hits_before
    external_features = [
        cache.get_or_compute(model, item.dataset, model_hash, batch_size=methods.batch_size,
                             num_workers=methods.num_workers)
        for item in external
    ]
    if context is None or context.classes != spec.classes:
        context = MethodContext(model=model, classes=spec.classes, options=methods)
    fold_results: list[FoldResult] = []
    external_results: list[list[FoldResult]] = [[] for _ in external]
    for split in make_splits(dataset.labels, split_options):
        split = _drop_unreadable(split, features)
        if split.test.size == 0:
            raise ValueError(f"{spec.name} fold {split.fold}: empty test set with split {split_options}")
        started = time.perf_counter()
        fold = FoldData(split=split, labels=dataset.labels, features=features, dataset=dataset)
        transfer = create_method(method, context)
        transfer.fit(fold)
        scores = predict_scores(transfer, fold, split.test, model, model_hash, options, cache)
        metrics = classification_metrics(dataset.labels[split.test], scores, len(spec.classes), graded=spec.graded)
        elapsed = time.perf_counter() - started
        logger.info(
            "%s %s fold %d: ACA %.3f AUC %.3f (%d train / %d test, %.1f s)",
            spec.name, method, split.fold, metrics.aca, metrics.auc, split.train.size, split.test.size, elapsed,
        )
        fold_results.append(
            FoldResult(
                fold=split.fold,
                n_train=int(split.train.size),
                n_val=int(split.val.size),
                n_test=int(split.test.size),
                metrics=metrics,
                seconds=elapsed,
            )
        )
        for item, item_features, collected in zip(external, external_features, external_results):
            started = time.perf_counter()
            test = np.flatnonzero(item_features.valid)
            external_split = Split(split.fold, np.array([], dtype=np.int64), np.array([], dtype=np.int64), test)
            external_fold = FoldData(
                split=external_split, labels=item.dataset.labels, features=item_features, dataset=item.dataset
            )
            external_scores = predict_scores(transfer, external_fold, test, model, model_hash, options, cache)
            external_metrics = classification_metrics(
                item.dataset.labels[test], external_scores, len(spec.classes), graded=spec.graded
            )
            logger.info("%s %s fold %d tested on %s: ACA %.3f", spec.name, method, split.fold, item.spec.name,
                        external_metrics.aca)
            collected.append(
                FoldResult(fold=split.fold, n_train=int(split.train.size), n_val=int(split.val.size),
                           n_test=int(test.size), metrics=external_metrics, seconds=time.perf_counter() - started)
            )
    results = [
        _result(spec.name, method, spec, dataset, split_options, options, fold_results, checkpoint_label,
                model_hash, features, cache_hit)
    ]
    for item, item_features, collected in zip(external, external_features, external_results):
        results.append(
            _result(f"{spec.name} -> {item.spec.name}", method, spec, item.dataset, split_options, options,
                    collected, checkpoint_label, model_hash, item_features, True, tested_on=item.spec.name)
        )
    return results


def evaluate_method(
    model: ImageTextEncoder,
    spec: ExperimentSpec,
    dataset: LabeledImageSet,
    method: str,
    options: EvaluationOptions,
    cache: FeatureCache,
    checkpoint_label: str,
    model_hash: str | None = None,
    context: MethodContext | None = None,
) -> EvaluationResult:
    """All folds of one method on one experiment; features come from (or go to) `cache`."""
    return evaluate_method_with_external(
        model, spec, dataset, method, options, cache, checkpoint_label, model_hash, context
    )[0]


def load_external_tests(spec: ExperimentSpec, names: Sequence[str], registry: Any, options: EvaluationOptions) -> list[ExternalTest]:
    """The datasets of `names`, read with the training experiment's classes (labels must match by name)."""
    tests = []
    for name in names:
        other = registry.get(name)
        if name == spec.name:
            raise ValueError(f"{name}: an experiment cannot be its own external test set")
        dataset = load_experiment_dataset(
            other.model_copy(update={"classes": spec.classes}), options.data_root, options.dataframe_dir
        )
        tests.append(ExternalTest(spec=other, dataset=dataset))
    return tests


def evaluate_model(
    model: ImageTextEncoder,
    checkpoint_label: str,
    experiments: Sequence[str],
    methods: Sequence[str],
    options: EvaluationOptions,
    cache: FeatureCache | None = None,
) -> list[EvaluationResult]:
    """Every method on every experiment; the model is hashed once and features extracted once per experiment."""
    registry = load_experiments(*options.registry_paths)
    cache = cache or FeatureCache(options.cache_dir)
    model_hash = model_fingerprint(model)
    results = []
    for name in experiments:
        spec = registry.get(name)
        dataset = load_experiment_dataset(spec, options.data_root, options.dataframe_dir)
        context = MethodContext(model=model, classes=spec.classes, options=options.methods)
        external = load_external_tests(spec, options.test_experiments, registry, options)
        for method in methods:
            results.extend(
                evaluate_method_with_external(
                    model, spec, dataset, method, options, cache, checkpoint_label, model_hash, context, external
                )
            )
    return results


def evaluate_checkpoint(
    checkpoint: str | Path,
    experiments: Sequence[str],
    methods: Sequence[str],
    options: EvaluationOptions,
    cache: FeatureCache | None = None,
) -> list[EvaluationResult]:
    """Load a checkpoint (or a model config name) with `keepfit.load` and evaluate it."""
    import keepfit

    model = keepfit.load(str(checkpoint), device=options.methods.device)
    model.eval()
    return evaluate_model(model, str(checkpoint), experiments, methods, options, cache)


class EvaluationRequest(BaseModel):
    """A whole run: checkpoints x experiments x methods, where to read data and write reports.

    The `evaluate` flow's parameters and what `mmretinal evaluate` builds from its options.
    """

    checkpoints: list[str] = Field(description="Checkpoint files or model config names to evaluate.")
    experiments: list[str] = Field(description="Experiment names from the registry.")
    methods: list[str] = Field(default_factory=lambda: ["zero_shot"], description="Transfer methods to run.")
    data_root: str = Field(description="Directory the dataframes' image paths are relative to.")
    dataframe_dir: str | None = Field(None, description="Directory of the experiment CSVs (default: data root).")
    out_dir: str = Field("reports/evaluation", description="Where reports are written.")
    cache_dir: str | None = Field(None, description="Feature cache directory (default: <out_dir>/feature-cache).")
    registry_paths: list[str] = Field(default_factory=list, description="Extra experiment registry YAML files.")
    split: SplitOptions | None = Field(None, description="Split options; each method's paper default when unset.")
    folds: int | None = Field(None, description="Override the number of folds.")
    method_options: MethodOptions = Field(default_factory=MethodOptions, description="Method hyperparameters.")
    test_experiments: list[str] = Field(
        default_factory=list, description="Experiments to test each fitted model on as well (cross-dataset)."
    )
    artifact_key: str = Field("evaluation", description="Prefix of published artifact keys (flow only).")

    def evaluation_options(self) -> EvaluationOptions:
        return EvaluationOptions(
            data_root=self.data_root,
            dataframe_dir=self.dataframe_dir,
            cache_dir=self.cache_dir or str(Path(self.out_dir) / "feature-cache"),
            registry_paths=self.registry_paths,
            split=self.split,
            folds=self.folds,
            methods=self.method_options,
            test_experiments=self.test_experiments,
        )
