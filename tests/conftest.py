"""Session-wide fixtures: one generated sample atlas and its step-1 extraction, shared by the
extraction, alignment and build tests (generating and OCR'ing it once keeps the suite fast)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ARGOS_CHUNK_TYPE", "SPACY")


@pytest.fixture(scope="session")
def sample_atlas(tmp_path_factory: pytest.TempPathFactory):
    """The deterministic sample atlas (seed 0): four PDFs and truth.jsonl."""
    from pipeline.sample_atlas import generate_sample_atlas

    return generate_sample_atlas(tmp_path_factory.mktemp("atlas"), seed=0)


@pytest.fixture(scope="session")
def sample_truth(sample_atlas):
    from pipeline.sample_atlas import read_truth

    return read_truth(sample_atlas.truth_path)


@pytest.fixture(scope="session")
def sample_extraction(sample_atlas, tmp_path_factory: pytest.TempPathFactory):
    """Step 1 run once over the whole sample atlas: (output dir, outcomes, extractions by book)."""
    from pipeline.extract import extract_pdfs, load_extraction

    out = tmp_path_factory.mktemp("extraction")
    outcomes = extract_pdfs(sample_atlas.pdfs, out)
    extractions = {Path(o.output_dir).name: load_extraction(Path(o.output_dir)) for o in outcomes if o.output_dir}
    return out, outcomes, extractions
