"""Report-generation results as JSON + markdown: metric tables, the selected epoch, example reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from foundation.files import write_atomic
from keepfit.checkpoint import atomic_write_json
from keepfit.ffa.metrics import METRIC_NAMES

EXAMPLES = 5


def _cell(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "n/a"


def metrics_table(rows: list[tuple[str, dict[str, float | None]]]) -> str:
    """Markdown table: one row per (label, scores)."""
    lines = ["| | " + " | ".join(METRIC_NAMES) + " |", "|---" * (len(METRIC_NAMES) + 1) + "|"]
    for label, scores in rows:
        lines.append(f"| {label} | " + " | ".join(_cell(scores.get(name)) for name in METRIC_NAMES) + " |")
    return "\n".join(lines)


def examples_markdown(generated: dict[str, str], references: dict[str, str], limit: int = EXAMPLES) -> str:
    lines = []
    for case_id in sorted(generated)[:limit]:
        lines += [f"- **{case_id}**", f"  - generated: {generated[case_id] or '(empty)'}", f"  - reference: {references[case_id]}"]
    return "\n".join(lines)


def unavailable_note(unavailable: dict[str, str]) -> str:
    return "".join(f"\n_{name} unavailable: {reason}._\n" for name, reason in unavailable.items())


def training_markdown(result: Any, config: Any) -> str:
    """Selected epoch and its validation scores, test scores (once), per-epoch validation history."""
    lines = [
        "# FFA report generation",
        "",
        f"Selected epoch **{result.best_epoch}** by validation {config.selection_metric}; "
        f"checkpoint `{result.best_checkpoint}`. Decoding: {config.decode.method}"
        + (f" (beam {config.decode.beam_size})" if config.decode.method == "beam" else "")
        + (", trigram blocking" if config.decode.block_trigrams else "")
        + ".",
        "",
        "## Scores",
        "",
    ]
    rows = [(f"validation (epoch {result.best_epoch})", result.best_validation)]
    if result.test is not None:
        rows.append(("test (selected weights, scored once)", result.test.scores.scores))
    lines.append(metrics_table(rows))
    if result.test is not None:
        lines.append(unavailable_note(result.test.scores.unavailable))
        lines += ["", "## Test examples", "", examples_markdown(result.test.generated, result.test.references)]
    lines += ["", "## Validation by epoch", "", metrics_table([(f"epoch {h['epoch']}", h["val"]) for h in result.history])]
    if result.skipped.get("counts"):
        lines += ["", "## Skipped input", ""]
        lines += [f"- {reason}: {count}" for reason, count in result.skipped["counts"].items()]
    return "\n".join(lines) + "\n"


def write_training_reports(result: Any, config: Any) -> dict[str, Path]:
    out = Path(config.output_dir)
    payload = {
        "best_epoch": result.best_epoch,
        "best_checkpoint": str(result.best_checkpoint),
        "selection_metric": config.selection_metric,
        "validation": result.best_validation,
        "test": result.test.as_dict() if result.test is not None else None,
        "history": result.history,
        "splits_scored": [list(item) for item in result.splits_scored],
        "skipped": result.skipped,
    }
    json_path, markdown_path = out / "report.json", out / "report.md"
    atomic_write_json(json_path, payload)
    write_atomic(markdown_path, training_markdown(result, config))
    return {"json": json_path, "markdown": markdown_path}


def split_markdown(result: Any, checkpoint: str) -> str:
    return "\n".join(
        [
            f"# FFA report generation: {result.split}",
            "",
            f"Checkpoint `{checkpoint}`, {result.scores.n} reports.",
            "",
            metrics_table([(result.split, result.scores.scores)]),
            unavailable_note(result.scores.unavailable),
            "## Examples",
            "",
            examples_markdown(result.generated, result.references),
        ]
    ) + "\n"


def write_split_report(result: Any, checkpoint: str, out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    json_path, markdown_path = out / f"{result.split}.json", out / f"{result.split}.md"
    atomic_write_json(json_path, {"checkpoint": str(checkpoint), **result.as_dict()})
    write_atomic(markdown_path, split_markdown(result, checkpoint))
    return {"json": json_path, "markdown": markdown_path}
