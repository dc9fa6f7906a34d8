"""Session-wide fixtures: one generated sample atlas and one build of it, shared by the
extraction, alignment and build tests (generating and OCR'ing it once keeps the suite fast)."""

from __future__ import annotations

import os
from pathlib import Path

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


def _png(image):
    import cv2

    return cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()


def _misses_pdf(path: Path) -> Path:
    """One page holding a paired figure and one of each thing the build cannot pair by itself:
    a figure whose caption sits elsewhere on the page, that caption, a small image dropped as
    decoration, and a grey fundus image captioned as autofluorescence (classed 'other')."""
    import numpy as np
    import pymupdf

    from testbed.synthetic_images import cfp_image, ffa_image, oct_image, red_free_image

    rng = np.random.default_rng(3)
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    page.insert_image(pymupdf.Rect(80, 80, 280, 280), stream=_png(cfp_image(rng, 400)))
    page.insert_text((80, 300), "FIGURE 1-1. Normal fundus of a healthy eye.", fontsize=9)
    page.insert_text((340, 120), "FIGURE 1-2. Central serous chorioretinopathy.", fontsize=9)
    page.insert_image(pymupdf.Rect(80, 480, 280, 680), stream=_png(ffa_image(rng, 400)))
    page.insert_image(pymupdf.Rect(340, 480, 540, 680), stream=_png(red_free_image(rng, 400)))
    page.insert_text((340, 700), "FIGURE 1-3. Fundus autofluorescence of the macula.", fontsize=9)
    page.insert_image(pymupdf.Rect(420, 760, 480, 790), stream=_png(oct_image(rng, (120, 60))))
    doc.save(path)
    return path


@pytest.fixture(scope="session")
def misses_pdf():
    """Factory: `misses_pdf(path)` writes a one-page PDF with one of each reject kind; returns path."""
    return _misses_pdf
