"""`mmretinal pretrain keepfit-ffa`, `mmretinal ffa-report ...`, `mmretinal export --format ffa-ir`, flows and deployments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from keepfit.ffa.data import read_ffa_ir

ROOT = Path(__file__).resolve().parents[3]


def _invoke(*arguments: str):
    return CliRunner().invoke(app, list(arguments))


def test_pretrain_command_resolves_the_keepfit_ffa_config():
    outcome = _invoke("pretrain", "keepfit-ffa", "--print-config", "--set", "ffa_ir.sample_unit=case")
    assert outcome.exit_code == 0, outcome.output
    printed = yaml.safe_load(outcome.output)
    assert printed["ffa_ir"]["sample_unit"] == "case" and printed["expert"]["modalities"] == ["FFA"]


def test_report_train_evaluate_and_generate_from_the_shell(ffa_ir_annotation, tmp_path):
    run = tmp_path / "run"
    trained = _invoke(
        "ffa-report", "train", "tiny", "--set", f"data.ffa_ir.annotation={ffa_ir_annotation}",
        "--set", f"output_dir={run}", "--set", "epochs=3", "--set", "test_meteor=false",
    )
    assert trained.exit_code == 0, trained.output
    summary = json.loads(trained.output[trained.output.index("{"):])
    assert summary["best_epoch"] in (1, 2, 3) and set(summary["test"]) >= {"BLEU_4", "CIDEr", "ROUGE_L"}
    assert (run / "report.md").exists() and (run / "best.pth.json").exists()

    evaluated = _invoke(
        "ffa-report", "evaluate", str(run / "best.pth"), "--annotation", str(ffa_ir_annotation), "--split", "val",
        "--method", "greedy", "--out", str(tmp_path / "reports"), "--device", "cpu", "--no-meteor",
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert (tmp_path / "reports" / "val.json").exists() and '"BLEU_4"' in evaluated.output

    case_folder = Path(ffa_ir_annotation).parent / "images" / "test_0001"
    generated = _invoke("ffa-report", "generate", str(run / "best.pth"), str(case_folder), "--device", "cpu")
    assert generated.exit_code == 0 and generated.output.strip(), generated.output


def test_bad_input_ends_in_one_line_errors(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("[]")
    outcome = _invoke("ffa-report", "train", "tiny", "--set", f"data.ffa_ir.annotation={broken}")
    assert outcome.exit_code == 2 and outcome.output.strip().count("\n") == 0
    assert outcome.output.startswith("error:") and "broken.json" in outcome.output
    missing = _invoke("ffa-report", "generate", str(tmp_path / "none.pth"), str(tmp_path))
    assert missing.exit_code == 2 and "report checkpoint not found" in missing.output


def test_export_writes_ffa_pairs_in_the_ffa_ir_layout(ffa_manifest, tmp_path):
    registry, version = ffa_manifest
    outcome = _invoke("export", f"mm-retinal/{version}", "--format", "ffa-ir", "--out", str(tmp_path / "ffa"), "--root", str(registry))
    assert outcome.exit_code == 0, outcome.output
    cases = read_ffa_ir(tmp_path / "ffa" / "ffair_annotation.json")
    assert len(cases.split("train")) == 12 and cases.skipped.total == 0
    assert cases.split("train")[0].report_en.startswith("Fluorescein angiography")

    from data_manifests.export_ffa_ir import FFAIRExportOptions, export_ffa_ir

    by_figure = export_ffa_ir(
        f"mm-retinal/{version}", tmp_path / "by-figure", root=registry,
        options=FFAIRExportOptions(case_unit="figure", test_fraction=0.5),
    )
    assert sum(by_figure.cases.values()) == 6 and by_figure.images == 12 and by_figure.cases["test"] > 0
    figures = read_ffa_ir(by_figure.annotation)
    assert all(len(c.image_files) == 2 for split in ("train", "test") for c in figures.split(split))


def test_deployments_and_prefect_yaml_list_the_ffa_flows():
    from flows.deployments import ServeOptions, build_deployments

    deployments = {f"{d.flow_name}/{d.name}": d for d in build_deployments(ServeOptions())}
    assert deployments["pretrain/keepfit-ffa"].parameters == {"config": "keepfit-ffa"}
    assert {"ffa-report-train/keepfit-ffa", "ffa-report-evaluate/keepfit-ffa"} <= set(deployments)
    entries = {(d["name"], d["entrypoint"]) for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    assert {
        ("keepfit-ffa", "flows/pretrain.py:pretrain_flow"),
        ("keepfit-ffa", "flows/ffa.py:ffa_report_train_flow"),
        ("keepfit-ffa", "flows/ffa.py:ffa_report_evaluate_flow"),
    } <= entries


@pytest.mark.prefect
@pytest.mark.slow
def test_train_flow_publishes_score_table_and_markdown_artifacts(ffa_ir_annotation, tmp_path):
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.testing.utilities import prefect_test_harness

    from flows.ffa import ffa_report_train_flow

    overrides = [f"data.ffa_ir.annotation={ffa_ir_annotation}", f"output_dir={tmp_path / 'run'}", "epochs=2", "test_meteor=false"]
    with prefect_test_harness():
        outcome = ffa_report_train_flow(config="tiny", overrides=overrides, artifact_key="ffa-test")

        async def read(key):
            async with get_client() as client:
                return await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))

        [table] = asyncio.run(read("ffa-test-scores"))
        [report] = asyncio.run(read("ffa-test-report"))
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert [row["split"] for row in rows] == [f"validation (epoch {outcome['best_epoch']})", "test"]
    assert rows[1]["METEOR"] == "n/a" and "Selected epoch" in report.data
