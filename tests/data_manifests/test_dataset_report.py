"""The dataset report's content and `mmretinal manifest report` (the page itself is checked in a
real browser in tests/flows/test_dataset_report_browser.py)."""

from __future__ import annotations

import importlib

import pytest
import typer
from typer.testing import CliRunner

from data_manifests.registry import load_manifest
from data_manifests.report import ReportOptions, build_report
from flows import commands_manifest


@pytest.fixture
def version(make_pair, do_publish, registry_root):
    pairs = [make_pair("book-a", f"1-{i}", "A", seed=i, alignment_score=0.5 + i / 40) for i in range(1, 11)]
    pairs += [
        make_pair("book-b", "5-3", None, seed=20, modality="FFA", modality_sublabel="ICGA", review_status="accepted"),
        make_pair("book-b", "6-1", "C", seed=21, modality="OCT", caption_en="<b>Macular</b> hole", caption_en_origin="machine"),
        make_pair("book-b", "6-2", None, seed=22, review_status="rejected"),
    ]
    do_publish(pairs)
    return load_manifest(registry_root, "mm-retinal/v1")


def test_report_counts_plots_and_examples(version):
    report = build_report(version, ReportOptions(examples_per_modality=4))
    assert report.n_pairs == 12
    assert report.tables["modality"] == {"CFP": 10, "FFA": 1, "OCT": 1}
    assert report.tables["book"] == {"book-a": 10, "book-b": 2}
    assert report.tables["review outcome"] == {"auto_accepted": 11, "accepted": 1, "rejected (left out)": 1}
    assert [plot.id for plot in report.plots] == [
        "modality-sublabel", "by-book", "caption-length", "caption-origin", "review-outcome", "alignment-score",
    ]
    assert all(plot.data_uri.startswith("data:image/png;base64,") for plot in report.plots)
    cfp = [example.pair_id for example in report.examples["CFP"]]
    assert len(cfp) == 4 and cfp[0] == "book-a/1-1/A" and cfp[-1] == "book-a/1-9/A"  # spread over all ten, sorted ids
    assert report.examples["FFA"][0].sublabel == "ICGA"
    page = report.html()
    assert "&lt;b&gt;Macular&lt;/b&gt; hole" in page and "<b>Macular</b>" not in page
    assert version.meta.content_fingerprint in page and version.meta.content_fingerprint in report.markdown()


@pytest.fixture
def app() -> typer.Typer:
    cli = importlib.import_module("flows.cli")
    if "flows.commands_manifest" in cli.COMMAND_MODULES:
        return cli.app
    standalone = typer.Typer()
    commands_manifest.register(standalone)
    return standalone


def test_report_command_writes_the_page_and_names_a_bad_version(app, version, registry_root, tmp_path):
    out = tmp_path / "pages" / "v1.html"
    result = CliRunner().invoke(app, ["manifest", "report", "mm-retinal/v1", "--out", str(out), "--root", str(registry_root)])
    assert result.exit_code == 0, result.output
    assert f"mm-retinal/v1: 12 pairs, 6 plots, 8 examples -> {out}" in result.output
    assert out.read_text(encoding="utf-8").count('class="thumb"') == 8  # six CFP (the default), one FFA, one OCT

    missing = CliRunner().invoke(app, ["manifest", "report", "mm-retinal/v7", "--root", str(registry_root)])
    assert missing.exit_code == 2 and "v7" in missing.output and "Traceback" not in missing.output
