"""Prefect flows of FFA report generation: `ffa-report-train` and `ffa-report-evaluate`.

Thin wrappers over `keepfit.ffa.training`: the run writes JSON + markdown reports and the flow
publishes them as a table artifact (scores per split) and a markdown artifact, like the
classification evaluation. KeepFIT-FFA pretraining is the `pretrain` flow with config `keepfit-ffa`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from keepfit.ffa.data import FFAIRSource
from keepfit.ffa.decoding import DecodeConfig
from keepfit.ffa.metrics import METRIC_NAMES
from keepfit.ffa.reports import split_markdown, training_markdown, write_split_report
from keepfit.ffa.training import evaluate_report_checkpoint, load_report_config, run_report_training


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "ffa-report"


def score_rows(rows: list[tuple[str, dict[str, float | None]]]) -> list[dict[str, Any]]:
    """Table artifact rows: one per split, a column per metric ('n/a' where unavailable)."""
    return [
        {"split": label, **{name: (round(s[name], 4) if s.get(name) is not None else "n/a") for name in METRIC_NAMES}}
        for label, s in rows
    ]


@flow(name="ffa-report-train", log_prints=False)
def ffa_report_train_flow(config: str = "keepfit-ffa", overrides: list[str] | None = None, artifact_key: str = "ffa-report") -> dict[str, Any]:
    """Train the FFA report generator, select on validation, score test once, publish the reports.

    Parameters:
        config: report YAML path or bundled name (keepfit/configs/report/<name>.yaml).
        overrides: dotted `key=value` settings, e.g. ["epochs=50", "model.pretrained_checkpoint=runs/keepfit-ffa/x.pth"].
        artifact_key: prefix of the published artifacts' keys.
    """
    logger = get_run_logger()
    options = load_report_config(config, list(overrides or []))
    result = run_report_training(options)
    rows = [(f"validation (epoch {result.best_epoch})", result.best_validation)]
    if result.test is not None:
        rows.append(("test", result.test.scores.scores))
    prefix = _slug(artifact_key)
    create_table_artifact(key=f"{prefix}-scores", table=score_rows(rows), description="FFA report generation scores")
    create_markdown_artifact(
        key=f"{prefix}-report", markdown=training_markdown(result, options), description="FFA report generation run"
    )
    logger.info("selected epoch %d; reports in %s", result.best_epoch, options.output_dir)
    return {
        "best_epoch": result.best_epoch,
        "best_checkpoint": str(result.best_checkpoint),
        "validation": result.best_validation,
        "test": result.test.scores.scores if result.test is not None else None,
        "output_dir": str(Path(options.output_dir)),
        "artifact_keys": [f"{prefix}-scores", f"{prefix}-report"],
    }


@flow(name="ffa-report-evaluate", log_prints=False)
def ffa_report_evaluate_flow(
    checkpoint: str,
    annotation: str,
    image_root: str | None = None,
    split: str = "test",
    out_dir: str = "reports/ffa-report",
    decode: DecodeConfig | None = None,
    device: str = "auto",
    meteor: bool = True,
    artifact_key: str = "ffa-report-eval",
) -> dict[str, Any]:
    """Score a trained generator on one split of an FFA-IR-format file and publish the result."""
    logger = get_run_logger()
    result = evaluate_report_checkpoint(checkpoint, FFAIRSource(annotation=annotation, image_root=image_root), split, decode, device=device, meteor=meteor)
    written = write_split_report(result, checkpoint, out_dir)
    prefix = _slug(artifact_key)
    create_table_artifact(key=f"{prefix}-scores", table=score_rows([(split, result.scores.scores)]), description="FFA report scores")
    create_markdown_artifact(key=f"{prefix}-report", markdown=split_markdown(result, checkpoint), description="FFA report evaluation")
    logger.info("%s on %s: %s", checkpoint, split, result.scores.scores)
    return {
        "scores": result.scores.scores,
        "unavailable": result.scores.unavailable,
        "json": str(written["json"]),
        "markdown": str(written["markdown"]),
        "artifact_keys": [f"{prefix}-scores", f"{prefix}-report"],
    }
