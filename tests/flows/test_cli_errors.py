"""User errors end in one line naming the file (and line), never a traceback; --debug shows it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def _one_error_line(result) -> str:  # noqa: ANN001
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.fixture
def truth(sample_atlas) -> Path:
    return sample_atlas.truth_path


def test_score_unknown_version_is_one_line(truth: Path, tmp_path: Path) -> None:
    """Problem 6: an unknown version printed a traceback."""
    result = _invoke("score", "mm-retinal/v9", "--truth", str(truth), "--registry", str(tmp_path / "registry"))
    assert result.exit_code == 2
    assert _one_error_line(result) == f"error: version mm-retinal/v9 not found under {tmp_path / 'registry'}"


def test_score_directory_as_truth_is_one_line(tmp_path: Path) -> None:
    """Problem 6: a directory given as truth printed a traceback."""
    result = _invoke("score", "mm-retinal/v1", "--truth", str(tmp_path), "--registry", str(tmp_path))
    assert result.exit_code == 2
    assert _one_error_line(result) == f"error: {tmp_path}: is a directory, not a truth file (give truth.jsonl)"


def test_score_empty_truth_is_an_error_not_zero_metrics(tmp_path: Path) -> None:
    """Problem 6: an empty truth file gave exit 0 with zero metrics."""
    empty = tmp_path / "truth.jsonl"
    empty.write_text("\n\n")
    result = _invoke("score", "mm-retinal/v1", "--truth", str(empty), "--registry", str(tmp_path))
    assert result.exit_code == 2
    assert "empty truth file" in _one_error_line(result) and str(empty) in result.output


def test_score_non_utf8_truth_names_file_and_line(truth: Path, tmp_path: Path) -> None:
    """Problem 6: a non-UTF-8 truth file's error named neither file nor line."""
    broken = tmp_path / "truth.jsonl"
    lines = truth.read_bytes().splitlines(keepends=True)
    broken.write_bytes(b"".join(lines[:2]) + "\u00e9l\u00e8ve".encode("latin-1") + b"\n" + b"".join(lines[2:]))
    result = _invoke("score", "mm-retinal/v1", "--truth", str(broken), "--registry", str(tmp_path))
    assert result.exit_code == 2
    assert re.fullmatch(rf"error: {re.escape(str(broken))}:3: not UTF-8 text \(byte 0xe9 at column 1\)", _one_error_line(result))


def test_debug_flag_shows_the_traceback(tmp_path: Path) -> None:
    result = _invoke("--debug", "score", "mm-retinal/v1", "--truth", str(tmp_path), "--registry", str(tmp_path))
    assert isinstance(result.exception, ValueError)
    assert "is a directory" in str(result.exception)


def test_registry_option_everywhere_and_root_kept_as_a_hidden_alias(tmp_path: Path) -> None:
    """Problem 9: the registry option was --registry on build and --root on manifest."""
    for command in (["build"], ["publish"], ["score"], ["manifest", "list"], ["manifest", "show"],
                    ["manifest", "diff"], ["manifest", "verify"], ["export"]):
        help_text = _invoke(*command, "--help").output
        assert "--registry" in help_text, command
        assert "--root" not in help_text, command
    registry = tmp_path / "registry"
    registry.mkdir()
    for option in ("--registry", "--root"):
        result = _invoke("manifest", "list", option, str(registry))
        assert result.exit_code == 0, result.output
        assert f"no published datasets under {registry}" in result.output


def test_bad_manifest_json_is_one_line(tmp_path: Path) -> None:
    version_dir = tmp_path / "mm-retinal" / "v1"
    version_dir.mkdir(parents=True)
    (version_dir / "manifest.json").write_text("{ not json")
    (version_dir / "manifest.parquet").write_bytes(b"")
    result = _invoke("manifest", "show", "mm-retinal/v1", "--registry", str(tmp_path))
    assert result.exit_code == 2
    assert "unreadable manifest metadata" in _one_error_line(result)


def test_an_unexpected_error_is_one_line_pointing_at_debug(capsys) -> None:
    import typer

    from flows.cli import guard_user_errors

    def broken() -> None:
        raise KeyError("pair_id")

    with pytest.raises(typer.Exit) as caught:
        guard_user_errors(broken)()
    assert caught.value.exit_code == 1
    assert capsys.readouterr().err.strip() == "error: unexpected KeyError: 'pair_id' (run with --debug for the traceback)"

    def bad_input() -> None:
        raise FileNotFoundError(2, "No such file or directory", "/nowhere/config.yaml")

    with pytest.raises(typer.Exit) as caught:
        guard_user_errors(bad_input)()
    assert caught.value.exit_code == 2
    assert capsys.readouterr().err.strip() == "error: /nowhere/config.yaml: No such file or directory"


def test_failed_runs_are_one_line_on_the_console() -> None:
    """Problem 9: bomb and fuzz failures printed Prefect's full tracebacks under the one-line summary."""
    import io
    import logging

    from flows.prefect_env import console_without_tracebacks

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    prefect_logger = logging.getLogger("prefect")
    task_logger = logging.getLogger("prefect.task_runs")
    # Earlier tests may have run `dictConfig` (which disables loggers it does not name) or
    # turned propagation off: this test is about the formatter, so it sets both loggers up.
    saved = [(lg, lg.disabled, lg.propagate, lg.level) for lg in (prefect_logger, task_logger)]
    for lg in (prefect_logger, task_logger):
        lg.disabled, lg.propagate = False, lg is task_logger
    task_logger.setLevel(logging.INFO)
    prefect_logger.addHandler(handler)
    try:
        console_without_tracebacks()
        try:
            raise ValueError("bomb.pdf: too large")
        except ValueError:
            task_logger.exception("Task run failed with exception: bomb.pdf: too large")
    finally:
        prefect_logger.removeHandler(handler)
        for lg, disabled, propagate, level in saved:
            lg.disabled, lg.propagate = disabled, propagate
            lg.setLevel(level)
    assert stream.getvalue() == "ERROR Task run failed with exception: bomb.pdf: too large\n"
