"""Prefect `evaluate` flow: checkpoints x experiments x methods -> reports + Prefect artifacts.

A thin wrapper over `keepfit.evaluation`: each checkpoint is one task (its features are
extracted once and shared by all methods); the reports land in `out_dir` and are published
as a summary table artifact and a markdown artifact with the comparison and file paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE as NO_CACHE

from keepfit.evaluation import (
    EvaluationRequest,
    EvaluationResult,
    FeatureCache,
    comparison_markdown,
    evaluate_checkpoint,
    summary_markdown,
    write_reports,
)
from keepfit.evaluation.reports import checkpoint_label, slug, summary_rows


@task(name="evaluate-checkpoint", cache_policy=NO_CACHE)
def evaluate_checkpoint_task(checkpoint: str, request: EvaluationRequest) -> list[EvaluationResult]:
    logger = get_run_logger()
    options = request.evaluation_options()
    cache = FeatureCache(options.cache_dir)
    results = evaluate_checkpoint(checkpoint, request.experiments, request.methods, options, cache)
    logger.info("%s: %d result(s), feature cache %d hit(s) / %d miss(es)", checkpoint, len(results), cache.hits,
                cache.misses)
    return results


def artifact_table(results: list[EvaluationResult]) -> list[dict[str, Any]]:
    """Rows of the summary table artifact (one per checkpoint x experiment x method)."""
    header, rows = summary_rows(results)
    return [dict(zip(header, row)) for row in rows]


def artifact_markdown(results: list[EvaluationResult], written: dict[str, Any]) -> str:
    """Comparison across checkpoints plus the path of every report file."""
    lines = ["# KeepFIT evaluation", "", "## Summary", "", summary_markdown(results), "## Comparison", "",
             comparison_markdown(results), "## Files", ""]
    lines.append(f"- summary: `{written['summary']}`")
    lines.append(f"- comparison: `{written['comparison']}`")
    lines.append(f"- all results (JSON): `{written['all_results']}`")
    for result, files in zip(results, written["results"]):
        name = f"{checkpoint_label(result.checkpoint)} / {result.experiment} / {result.method}"
        lines.append(
            f"- {name}: [report]({Path(files['markdown']).resolve().as_uri()}) · "
            f"`{files['json']}` · `{files['confusion_png']}`"
        )
    return "\n".join(lines) + "\n"


def publish_artifacts(results: list[EvaluationResult], written: dict[str, Any], key_prefix: str) -> list[str]:
    """Create the table and markdown artifacts; returns their keys."""
    prefix = slug(key_prefix)
    table_key = f"{prefix}-summary"
    markdown_key = f"{prefix}-report"
    create_table_artifact(
        key=table_key, table=artifact_table(results), description="KeepFIT evaluation: mean ± std over folds"
    )
    create_markdown_artifact(
        key=markdown_key,
        markdown=artifact_markdown(results, written),
        description="KeepFIT evaluation: comparison across checkpoints and report files",
    )
    return [table_key, markdown_key]


@flow(name="evaluate", log_prints=False)
def evaluate(request: EvaluationRequest) -> dict[str, Any]:
    """Evaluate each checkpoint, write reports, publish artifacts; returns paths and the summary table."""
    logger = get_run_logger()
    results: list[EvaluationResult] = []
    for checkpoint in request.checkpoints:
        results.extend(evaluate_checkpoint_task(checkpoint, request))
    written = write_reports(results, request.out_dir)
    keys = publish_artifacts(results, written, request.artifact_key)
    logger.info("published artifacts %s; reports in %s", keys, request.out_dir)
    return {
        "summary_markdown": summary_markdown(results),
        "out_dir": str(request.out_dir),
        "artifact_keys": keys,
        "results_json": str(written["all_results"]),
    }
