"""Synthetic FFA-IR-format data and a published MM-Retinal version with FFA pairs, built once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ffa_ir_annotation(tmp_path_factory):
    """A small FFA-IR-format set (32 train / 8 val / 8 test cases, 2-3 frames each, 64 px)."""
    from keepfit.ffa.synthetic import write_ffa_ir_dataset

    return write_ffa_ir_dataset(tmp_path_factory.mktemp("ffa-ir"), seed=0)


@pytest.fixture(scope="session")
def ffa_manifest(tmp_path_factory):
    """(registry root, version) of a published version holding 12 FFA, 1 CFP and 1 rejected pair."""
    from keepfit.ffa.synthetic import publish_ffa_manifest

    return publish_ffa_manifest(tmp_path_factory.mktemp("ffa-manifest"), n_pairs=12, seed=1)


@pytest.fixture(scope="session")
def tiny_report_run(ffa_ir_annotation, tmp_path_factory):
    """One tiny report-generation run (selection on validation, test scored once): (config, result)."""
    import torch

    from keepfit.ffa.training import load_report_config, run_report_training

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("report-run")
    config = load_report_config(
        "tiny",
        {"data.ffa_ir": {"annotation": str(ffa_ir_annotation)}, "output_dir": str(out / "run"), "epochs": 14, "test_meteor": False},
    )
    return config, run_report_training(config)
