"""Evaluation reports: JSON, markdown tables, confusion-matrix PNGs and cross-checkpoint comparisons."""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from keepfit.evaluation.runner import EvaluationResult
from foundation.files import atomic_path

logger = logging.getLogger(__name__)

TABLE_METRICS = ("aca", "accuracy", "f1_macro", "auc", "kappa")
METRIC_TITLES = {"aca": "ACA", "accuracy": "Acc", "f1_macro": "F1 (macro)", "auc": "AUC", "kappa": "Kappa (QW)"}


def _atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    with atomic_path(path) as temp_path:
        write(temp_path)
    return path


def slug(text: str) -> str:
    """File-name and artifact-key safe form: lower case letters, digits and dashes."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-") or "x"


def checkpoint_label(checkpoint: str) -> str:
    path = Path(checkpoint)
    return path.stem if path.suffix else checkpoint


def format_mean_std(mean: float, std: float) -> str:
    if mean is None or math.isnan(mean):
        return "–"
    return f"{mean:.3f} ± {std:.3f}"


def result_basename(result: EvaluationResult) -> str:
    return slug(f"{checkpoint_label(result.checkpoint)}-{result.model_sha256[:8]}-{result.experiment}-{result.method}")


def summary_rows(results: Sequence[EvaluationResult]) -> tuple[list[str], list[list[str]]]:
    """Header and rows (one per result) with mean ± std of each metric that any result has."""
    metrics = [m for m in TABLE_METRICS if any(m in r.summary for r in results)]
    header = ["checkpoint", "experiment", "method", "folds", "n test", *(METRIC_TITLES[m] for m in metrics)]
    rows = []
    for result in results:
        row = [
            checkpoint_label(result.checkpoint),
            result.experiment,
            result.method,
            str(len(result.folds)),
            str(result.folds[0].n_test if result.folds else 0),
        ]
        row += [format_mean_std(*result.metric(m)) if m in result.summary else "–" for m in metrics]
        rows.append(row)
    return header, rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(row) for row in rows)]) + "\n"


def summary_markdown(results: Sequence[EvaluationResult]) -> str:
    """The table `mmretinal evaluate` prints: one row per (checkpoint, experiment, method)."""
    return markdown_table(*summary_rows(results))


def result_markdown(result: EvaluationResult) -> str:
    """Full report of one result: summary, per-class sensitivity/specificity, per-fold table, confusion matrix."""
    lines = [
        f"# {result.experiment}: {result.method}",
        "",
        f"- checkpoint: `{result.checkpoint}` (weights sha256 `{result.model_sha256[:16]}`)",
        f"- classes: {', '.join(f'{i}={c}' for i, c in enumerate(result.classes))}",
        f"- samples per class: {result.class_counts}; rows skipped: {result.skipped_rows}",
        f"- split: {result.split.scheme}, train {result.split.train}, val {result.split.val}, "
        f"test {result.split.test}, {len(result.folds)} fold(s)",
        "- predictions: argmax of the scores (no tuned threshold); std over folds with ddof=0",
        "",
        "## Summary",
        "",
        summary_markdown([result]),
        "## Per class",
        "",
    ]
    class_header = ["class", "sensitivity", "specificity"]
    class_rows = []
    for index, name in enumerate(result.classes):
        sensitivity = result.summary.get(f"sensitivity[{index}]")
        specificity = result.summary.get(f"specificity[{index}]")
        class_rows.append(
            [
                name,
                format_mean_std(sensitivity.mean, sensitivity.std) if sensitivity else "–",
                format_mean_std(specificity.mean, specificity.std) if specificity else "–",
            ]
        )
    lines += [markdown_table(class_header, class_rows), "## Folds", ""]
    fold_metrics = [m for m in TABLE_METRICS if m in result.summary]
    fold_header = ["fold", "train", "val", "test", *(METRIC_TITLES[m] for m in fold_metrics)]
    fold_rows = []
    for fold in result.folds:
        values = [getattr(fold.metrics, m) for m in fold_metrics]
        fold_rows.append(
            [str(fold.fold), str(fold.n_train), str(fold.n_val), str(fold.n_test)]
            + ["–" if v is None or math.isnan(v) else f"{v:.3f}" for v in values]
        )
    lines += [markdown_table(fold_header, fold_rows), "## Confusion matrix (summed over folds)", ""]
    matrix_header = ["true \\ predicted", *result.classes]
    matrix_rows = [[name, *map(str, row)] for name, row in zip(result.classes, result.confusion_matrix)]
    lines.append(markdown_table(matrix_header, matrix_rows))
    return "\n".join(lines)


def plot_confusion_matrix(result: EvaluationResult, path: Path) -> Path:
    """Row-normalised confusion matrix (summed over folds) with counts, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    matrix = np.asarray(result.confusion_matrix, dtype=float)
    support = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, support, out=np.zeros_like(matrix), where=support > 0)
    size = 2.5 + 0.9 * len(result.classes)
    figure, axes = plt.subplots(figsize=(size + 1.5, size))
    image = axes.imshow(normalised, vmin=0.0, vmax=1.0, cmap="Blues")
    ticks = range(len(result.classes))
    axes.set_xticks(list(ticks), labels=result.classes, rotation=35, ha="right")
    axes.set_yticks(list(ticks), labels=result.classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    aca = result.metric("aca")[0]
    axes.set_title(f"{result.experiment} / {result.method}\nACA {aca:.3f}", fontsize=10)
    for i in ticks:
        for j in ticks:
            colour = "white" if normalised[i, j] > 0.6 else "black"
            axes.text(j, i, f"{normalised[i, j]:.2f}\n({int(matrix[i, j])})", ha="center", va="center",
                      fontsize=8, color=colour)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    figure.tight_layout()
    try:
        _atomic_write(path, lambda temp: figure.savefig(temp, format="png", dpi=110))
    finally:
        plt.close(figure)
    return path


def write_result_report(result: EvaluationResult, out_dir: str | Path) -> dict[str, Path]:
    """`<name>.json`, `<name>.md` and `<name>-confusion.png` for one result; returns their paths."""
    out_dir = Path(out_dir)
    base = result_basename(result)
    json_path = _atomic_write(
        out_dir / f"{base}.json", lambda temp: temp.write_text(result.model_dump_json(indent=2), encoding="utf-8")
    )
    markdown_path = _atomic_write(
        out_dir / f"{base}.md", lambda temp: temp.write_text(result_markdown(result), encoding="utf-8")
    )
    png_path = plot_confusion_matrix(result, out_dir / f"{base}-confusion.png")
    return {"json": json_path, "markdown": markdown_path, "confusion_png": png_path}


def comparison_rows(results: Sequence[EvaluationResult], metric: str = "aca") -> tuple[list[str], list[list[str]]]:
    """Checkpoints as rows, (experiment, method) as columns, one metric as mean ± std."""
    columns: list[tuple[str, str]] = []
    checkpoints: list[str] = []
    cells: dict[tuple[str, str, str], str] = {}
    for result in results:
        column = (result.experiment, result.method)
        if column not in columns:
            columns.append(column)
        if result.checkpoint not in checkpoints:
            checkpoints.append(result.checkpoint)
        cells[(result.checkpoint, *column)] = (
            format_mean_std(*result.metric(metric)) if metric in result.summary else "–"
        )
    header = ["checkpoint", *(f"{experiment} {method}" for experiment, method in columns)]
    rows = [
        [checkpoint_label(checkpoint), *(cells.get((checkpoint, *column), "–") for column in columns)]
        for checkpoint in checkpoints
    ]
    return header, rows


def comparison_markdown(results: Sequence[EvaluationResult], metrics: Sequence[str] = ("aca", "auc")) -> str:
    parts = []
    for metric in metrics:
        if not any(metric in r.summary for r in results):
            continue
        parts += [f"### {METRIC_TITLES[metric]}", "", markdown_table(*comparison_rows(results, metric))]
    return "\n".join(parts)


def write_reports(results: Sequence[EvaluationResult], out_dir: str | Path) -> dict[str, object]:
    """Per-result files plus `summary.md`, `comparison.md` and `results.json` (all results) in `out_dir`."""
    out_dir = Path(out_dir)
    per_result = [write_result_report(result, out_dir) for result in results]
    summary_path = _atomic_write(
        out_dir / "summary.md", lambda temp: temp.write_text(summary_markdown(results), encoding="utf-8")
    )
    comparison_path = _atomic_write(
        out_dir / "comparison.md", lambda temp: temp.write_text(comparison_markdown(results), encoding="utf-8")
    )
    all_path = _atomic_write(
        out_dir / "results.json",
        lambda temp: temp.write_text(
            json.dumps([r.model_dump(mode="json") for r in results], indent=2), encoding="utf-8"
        ),
    )
    logger.info("wrote reports of %d result(s) to %s", len(results), out_dir)
    return {"results": per_result, "summary": summary_path, "comparison": comparison_path, "all_results": all_path}


def load_results(*paths: str | Path) -> list[EvaluationResult]:
    """Results back from `results.json` files or per-result JSON files, e.g. to compare runs."""
    results: list[EvaluationResult] = []
    for path in map(Path, paths):
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read evaluation results: {exc}") from exc
        items = payload if isinstance(payload, list) else [payload]
        results += [EvaluationResult.model_validate(item) for item in items]
    return results
