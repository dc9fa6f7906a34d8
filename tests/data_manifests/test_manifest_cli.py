"""`mmretinal manifest ...` and `mmretinal export` through the real command line app."""

from __future__ import annotations

import ast
import importlib

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from flows import commands_manifest


@pytest.fixture
def app() -> typer.Typer:
    cli = importlib.import_module("flows.cli")
    if "flows.commands_manifest" in cli.COMMAND_MODULES:
        return cli.app
    standalone = typer.Typer()
    commands_manifest.register(standalone)
    return standalone


@pytest.fixture
def published(make_pair, do_publish):
    do_publish([make_pair("book-a", "1-1", "A", seed=1), make_pair("book-b", "2-1", None, seed=2, modality="FFA")])
    do_publish(
        [
            make_pair("book-a", "1-1", "A", seed=1, caption_en="Edited caption."),
            make_pair("book-c", "3-1", None, seed=3, modality="OCT"),
            make_pair("book-c", "3-2", None, seed=4, modality="other"),
        ]
    )


def test_list_and_show(app, published, registry_root):
    runner = CliRunner()
    listed = runner.invoke(app, ["manifest", "list", "--root", str(registry_root)])
    assert listed.exit_code == 0, listed.output
    lines = [line for line in listed.output.splitlines() if line.startswith("mm-retinal/")]
    assert [line.split("\t")[0] for line in lines] == ["mm-retinal/v1", "mm-retinal/v2"]

    shown = runner.invoke(app, ["manifest", "show", "mm-retinal/v2", "--rows", "5"], env={"MMRETINAL_REGISTRY": str(registry_root)})
    assert shown.exit_code == 0, shown.output
    assert "mm-retinal/v2  (parent v1)" in shown.output
    assert "CFP 1, OCT 1" in shown.output
    assert "modality_other 1" in shown.output
    assert "book-c/3-1/-" in shown.output

    missing = runner.invoke(app, ["manifest", "show", "mm-retinal/v9", "--root", str(registry_root)])
    assert missing.exit_code == 2
    assert "v9" in missing.output


def test_diff(app, published, registry_root):
    result = CliRunner().invoke(app, ["manifest", "diff", "mm-retinal/v1", "mm-retinal/v2", "--root", str(registry_root)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "+ book-c/3-1/-" in lines
    assert "- book-b/2-1/-" in lines
    assert "~ book-a/1-1/A: caption_en" in lines
    assert lines[-1] == "mm-retinal/v1 -> mm-retinal/v2: 1 added, 1 removed, 1 changed"


def test_verify_exit_codes(app, published, registry_root):
    runner = CliRunner()
    ok = runner.invoke(app, ["manifest", "verify", "mm-retinal/v1", "--root", str(registry_root)])
    assert ok.exit_code == 0, ok.output
    assert "0 problem(s)" in ok.output

    from data_manifests.registry import load_manifest

    loaded = load_manifest(registry_root, "mm-retinal/v1")
    row = loaded.table.to_pylist()[1]
    loaded.image_file(row["image_path"]).unlink()
    bad = runner.invoke(app, ["manifest", "verify", "mm-retinal/v1", "--root", str(registry_root)])
    assert bad.exit_code == 1
    problem_lines = [line for line in bad.output.splitlines() if line.startswith("missing_image")]
    assert len(problem_lines) == 1
    assert row["pair_id"] in problem_lines[0] and row["image_path"] in problem_lines[0]


def test_export_flair_csv(app, published, registry_root, tmp_path):
    out = tmp_path / "frames"
    image_root = tmp_path / "FUNDUS"
    result = CliRunner().invoke(
        app,
        [
            "export", "mm-retinal/v1", "--format", "flair-csv", "--out", str(out),
            "--image-root", str(image_root), "--language", "en", "--root", str(registry_root),
        ],
    )
    assert result.exit_code == 0, result.output
    cfp = pd.read_csv(out / "39_MM_Retinal_dataset.csv")
    ffa = pd.read_csv(out / "MM-Retinal_FFA.csv")
    assert len(cfp) == 1 and len(ffa) == 1
    assert (image_root / cfp["image"][0]).is_file()
    assert ast.literal_eval(ffa["categories"][0]) == ["Central retinal vein occlusion. Panel None of figure 2-1."]
