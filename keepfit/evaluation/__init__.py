"""Downstream evaluation of image-text fundus models on frozen or fine-tuned encoders.

Datasets come from FLAIR-format dataframes named in an experiment registry; splits follow the
paper's per-class protocol; frozen-encoder methods share one cached feature pass; metrics are
defined for binary, multiclass and graded tasks; reports are JSON, markdown and PNG files.
"""

from keepfit.evaluation.datasets import LabeledImageSet, SkippedRow, load_experiment_dataset, read_flair_dataframe
from keepfit.evaluation.features import FeatureCache, FeatureSet, extract_features, model_fingerprint
from keepfit.evaluation.methods import METHOD_NAMES, MethodContext, MethodOptions, create_method
from keepfit.evaluation.metrics import ClassificationMetrics, MetricSummary, classification_metrics, summarise_folds
from keepfit.evaluation.registry import ExperimentRegistry, ExperimentSpec, load_experiments
from keepfit.evaluation.reports import (
    comparison_markdown,
    load_results,
    summary_markdown,
    write_reports,
    write_result_report,
)
from keepfit.evaluation.runner import (
    EvaluationOptions,
    EvaluationRequest,
    EvaluationResult,
    default_split,
    evaluate_checkpoint,
    evaluate_method,
    evaluate_model,
)
from keepfit.evaluation.splits import Split, SplitOptions, make_splits

__all__ = [
    "METHOD_NAMES",
    "ClassificationMetrics",
    "EvaluationOptions",
    "EvaluationRequest",
    "EvaluationResult",
    "ExperimentRegistry",
    "ExperimentSpec",
    "FeatureCache",
    "FeatureSet",
    "LabeledImageSet",
    "MethodContext",
    "MethodOptions",
    "MetricSummary",
    "SkippedRow",
    "Split",
    "SplitOptions",
    "classification_metrics",
    "comparison_markdown",
    "create_method",
    "default_split",
    "evaluate_checkpoint",
    "evaluate_method",
    "evaluate_model",
    "extract_features",
    "load_experiment_dataset",
    "load_experiments",
    "load_results",
    "make_splits",
    "model_fingerprint",
    "read_flair_dataframe",
    "summarise_folds",
    "summary_markdown",
    "write_reports",
    "write_result_report",
]
