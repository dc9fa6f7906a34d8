"""docs/keepfit.md: the synthetic quick start runs as written; every documented experiment name exists."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keepfit.evaluation import load_experiments

DOC = Path(__file__).resolve().parents[2] / "docs" / "keepfit.md"


def bash_commands(markdown: str) -> list[list[str]]:
    """Each command of the ```bash blocks, continuation lines joined, split like a shell would."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, flags=re.S):
        for command in block.replace("\\\n", " ").splitlines():
            if command.strip():
                commands.append(shlex.split(command))
    return commands


def section(markdown: str, title: str) -> str:
    start = markdown.index(f"## {title}")
    following = markdown.find("\n## ", start + 1)
    return markdown[start : following if following != -1 else len(markdown)]


def _options(command: list[str], *names: str) -> list[str]:
    return [command[i + 1] for i, word in enumerate(command[:-1]) if word in names]


def test_every_documented_experiment_and_profile_exists():
    registry = load_experiments()
    evaluate_commands = [c for c in bash_commands(DOC.read_text()) if c[:2] == ["mmretinal", "evaluate"]]
    assert len(evaluate_commands) >= 4
    for command in evaluate_commands:
        for name in _options(command, "-e", "--experiment", "--experiment-test"):
            registry.get(name)  # raises KeyError naming the known experiments
        for profile in _options(command, "--profile"):
            assert profile in ("reproduce", "improved")


@pytest.mark.slow
def test_synthetic_quick_start_runs_as_written(tmp_path, monkeypatch):
    from flows.cli import app
    from keepfit.synthetic import main as write_demo

    monkeypatch.chdir(tmp_path)
    commands = bash_commands(section(DOC.read_text(), "Try it on a synthetic set"))
    assert [c[:2] for c in commands] == [
        ["python", "-m"], ["mmretinal", "pretrain"], ["mmretinal", "evaluate"], ["mmretinal", "evaluate"]
    ]
    for command in commands:
        if command[:3] == ["python", "-m", "keepfit.synthetic"]:
            assert write_demo(command[3:]) == 0
            continue
        outcome = CliRunner().invoke(app, command[1:])
        assert outcome.exit_code == 0, (command, outcome.output)
    results = json.loads((tmp_path / "demo" / "reports" / "results.json").read_text())
    assert {(r["experiment"], r["method"]) for r in results} == {
        (e, m) for e in ("08_ODIR200x3", "25_REFUGE") for m in ("zero_shot", "linear_probe", "clip_adapter")
    }
    assert all(r["method_options"]["profile"] == "reproduce" for r in results)
    cross = json.loads((tmp_path / "demo" / "reports-cross" / "results.json").read_text())
    assert [r["experiment"] for r in cross] == ["08_ODIR200x3", "08_ODIR200x3 -> CAT_MYA_2"]
    assert cross[0]["method_options"]["tta"] and cross[0]["method_options"]["profile"] == "improved"
