"""`mmretinal evaluate` prints the table and writes reports; the Prefect flow publishes artifacts."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from flows.commands_evaluate import register
from keepfit.evaluation import EvaluationRequest, MethodOptions, SplitOptions
from keepfit.evaluation.synthetic import write_registry, write_synthetic_dataset

CLASSES = ["normal", "glaucoma", "cataract"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-data")
    spec = write_synthetic_dataset(root, CLASSES, per_class=8, size=32, name="cli3")
    return root, write_registry(root / "registry.yaml", [spec])


def cli_app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.callback()
    def main() -> None:
        """Test entry point with only the evaluate command."""

    return app


def test_cli_prints_table_for_two_methods_and_writes_reports(synthetic, tmp_path):
    root, registry = synthetic
    out = tmp_path / "reports"
    arguments = [
        "evaluate", "--checkpoint", "tiny", "--experiment", "cli3", "--method", "zero_shot",
        "--method", "linear_probe", "--data-root", str(root), "--registry", str(registry),
        "--folds", "2", "--train", "50%", "--test", "25%", "--out", str(out),
    ]
    outcome = CliRunner().invoke(cli_app(), arguments)
    assert outcome.exit_code == 0, outcome.output
    assert "| checkpoint | experiment | method |" in outcome.output
    assert "| tiny | cli3 | zero_shot | 2 | 6 |" in outcome.output
    assert "| tiny | cli3 | linear_probe | 2 | 6 |" in outcome.output
    assert "1 hit(s), 1 miss(es)" in outcome.output
    results = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in results] == ["zero_shot", "linear_probe"]
    assert len(list(out.glob("*-confusion.png"))) == 2
    assert len(list((out / "feature-cache").glob("*.npz"))) == 1


def test_cli_rejects_unknown_method_and_experiment(synthetic, tmp_path):
    root, registry = synthetic
    base = ["evaluate", "--checkpoint", "tiny", "--data-root", str(root), "--registry", str(registry),
            "--out", str(tmp_path)]
    bad_method = CliRunner().invoke(cli_app(), [*base, "--experiment", "cli3", "--method", "magic"])
    assert bad_method.exit_code == 2 and "unknown method" in bad_method.output
    bad_experiment = CliRunner().invoke(cli_app(), [*base, "--experiment", "nope"])
    assert bad_experiment.exit_code == 1 and "unknown experiment 'nope'" in bad_experiment.output


@pytest.mark.prefect
@pytest.mark.slow
def test_flow_publishes_table_and_markdown_artifacts(synthetic, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.testing.utilities import prefect_test_harness

    from flows.evaluate import evaluate

    root, registry = synthetic
    request = EvaluationRequest(
        checkpoints=["tiny"],
        experiments=["cli3"],
        methods=["zero_shot", "tip_adapter"],
        data_root=str(root),
        registry_paths=[str(registry)],
        out_dir=str(tmp_path / "reports"),
        split=SplitOptions(train="50%", test="25%", folds=1),
        method_options=MethodOptions(),
        artifact_key="eval-test",
    )
    with prefect_test_harness():
        outcome = evaluate(request)
        assert outcome["artifact_keys"] == ["eval-test-summary", "eval-test-report"]

        async def read(key):
            async with get_client() as client:
                return await client.read_artifacts(
                    artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
                )

        import asyncio

        [table] = asyncio.run(read("eval-test-summary"))
        [report] = asyncio.run(read("eval-test-report"))
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert [row["method"] for row in rows] == ["zero_shot", "tip_adapter"]
    assert "## Comparison" in report.data and "confusion.png" in report.data
    assert "| tiny | cli3 | tip_adapter |" in outcome["summary_markdown"]
