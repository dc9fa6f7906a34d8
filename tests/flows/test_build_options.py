"""Build options are one typed model used as config file, CLI flags and Prefect parameters."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from curation.build import BuildOptions
from flows.cli import app
from flows.commands_build import BUILD_OVERRIDES, build_options
from flows.options import field_help, option_rows, resolve_options


def test_every_cli_override_is_a_field_of_the_model_and_says_what_the_model_says() -> None:
    import typer.main

    command = typer.main.get_command(app).commands["build"]
    params = {param.name: param for param in command.params}
    for flag, key in BUILD_OVERRIDES.items():
        assert params[flag].help == field_help(BuildOptions, key), flag
    assert "config key: align.review_threshold" in params["review_threshold"].help


def test_build_flow_takes_the_same_model_as_its_parameter() -> None:
    from flows.build_flow import build_dataset

    assert inspect.signature(build_dataset.fn).parameters["options"].annotation in (BuildOptions, "BuildOptions | None")


def test_config_file_flags_and_set_combine_in_that_order(tmp_path: Path) -> None:
    config = tmp_path / "build.yaml"
    config.write_text(
        yaml.safe_dump(
            {"dataset": "lab-atlases", "align": {"review_threshold": 0.9, "cluster_gap": 12}, "runner": {"kind": "processes"}}
        )
    )
    options = build_options(config, ["align.cluster_gap=20", "extract.ocr.engine=paddleocr"], review_threshold=0.8, workers=2)
    assert options.dataset == "lab-atlases"
    assert options.align.review_threshold == 0.8, "a flag overrides the file"
    assert options.align.cluster_gap == 20, "--set overrides the file"
    assert options.extract.ocr.engine == "paddleocr"
    assert (options.runner.kind, options.runner.workers) == ("processes", 2)


def test_print_config_round_trips_through_a_config_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["build", "x.pdf", "--set", "align.near_distance=55", "--task-runner", "threads", "--print-config"]
    )
    assert result.exit_code == 0, result.output
    written = tmp_path / "resolved.yaml"
    written.write_text(result.output)
    again = resolve_options(BuildOptions, written)
    assert again.align.near_distance == 55 and again.runner.kind == "threads"
    assert again == resolve_options(BuildOptions, None, None, ["align.near_distance=55"])


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("align.no_such_option=1", "unknown option 'align.no_such_option'"),
        ("align.review_threshold", "expected KEY=VALUE"),
        ("runner.kind=gpu-cluster", "runner.kind"),
    ],
)
def test_bad_options_are_one_line_errors(assignment: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        build_options(None, [assignment])
    assert "\n" not in str(error.value)


def test_a_bad_config_file_is_named(tmp_path: Path) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text("align: [unclosed\n")
    with pytest.raises(ValueError, match="broken.yaml"):
        build_options(config)


def test_options_command_lists_every_option_with_its_description() -> None:
    result = CliRunner().invoke(app, ["options", "build"], terminal_width=200)
    assert result.exit_code == 0
    keys = [key for key, _, _ in option_rows(BuildOptions)]
    assert "extract.ocr.engine" in keys and "runner.dask_address" in keys
    for key in keys:
        assert key in result.output
