"""`mmretinal deploy-gpu-flows` refuses bad options, and a missing server setting, with one line."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from flows import commands_flows


def _app() -> typer.Typer:
    app = typer.Typer()
    commands_flows.register(app)
    return app


def test_bad_pool_type_and_env_are_one_line_errors():
    runner = CliRunner()
    result = runner.invoke(_app(), ["deploy-gpu-flows", "--pool-type", "kubernetes"])
    assert result.exit_code == 2 and "--pool-type must be 'process' or 'docker', not 'kubernetes'" in result.output
    result = runner.invoke(_app(), ["deploy-gpu-flows", "--env", "CUDA_VISIBLE_DEVICES"])
    assert result.exit_code == 2 and "--env expects KEY=VALUE" in result.output


def test_docker_pool_needs_an_image():
    result = CliRunner().invoke(_app(), ["deploy-gpu-flows", "--pool-type", "docker"])
    assert result.exit_code == 2 and "needs --image" in result.output and "Traceback" not in result.output


def test_without_a_server_it_says_which_setting_is_missing():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):  # even where a profile names a server
        result = CliRunner().invoke(_app(), ["deploy-gpu-flows"])
    assert result.exit_code == 2 and "PREFECT_API_URL is not set" in result.output and "Traceback" not in result.output
