"""Session-wide fixtures: one generated sample atlas and one build of it, shared by the
extraction, alignment and build tests (generating and OCR'ing it once keeps the suite fast)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ARGOS_CHUNK_TYPE", "SPACY")


@pytest.fixture(scope="session")
def sample_atlas(tmp_path_factory: pytest.TempPathFactory):
    """The deterministic sample atlas (seed 0): four PDFs and truth.jsonl."""
    from testbed.sample_atlas import generate_sample_atlas

    return generate_sample_atlas(tmp_path_factory.mktemp("atlas"), seed=0)


@pytest.fixture(scope="session")
def sample_truth(sample_atlas):
    from testbed.sample_atlas import read_truth

    return read_truth(sample_atlas.truth_path)


@pytest.fixture(scope="session")
def sample_build(sample_atlas, tmp_path_factory: pytest.TempPathFactory):
    """`run_build` over the whole sample atlas with no translation package installed:
    (options, build record, published version summary)."""
    from curation.build import BuildOptions, run_build

    root = tmp_path_factory.mktemp("build")
    options = BuildOptions(
        work_dir=root / "work", registry_root=root / "registry", translation_home=root / "argos-home"
    )
    record, published = run_build(sample_atlas.pdfs, options)
    return options, record, published


@pytest.fixture(scope="session")
def sample_extraction(sample_build):
    """Step-1 output of the sample build: (documents dir, runs, runs by book)."""
    options, record, _ = sample_build
    extractions = {d.book: d for d in record.documents if not d.failed}
    return options.documents_dir, record.documents, extractions
