"""Problem 3 through the Prefect flow: its task cache keyed the work by content, config and work
dir, so a copy of a PDF under another name was served the original's pairs (same book, same
pair ids) and publishing aborted with duplicate pair ids; a renamed PDF kept the old book's ids."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.prefect
def test_flow_builds_the_same_bytes_under_two_names_as_two_books_and_reruns(tmp_path: Path, sample_atlas) -> None:
    from prefect.testing.utilities import prefect_test_harness

    from curation.build import BuildOptions
    from flows.build_flow import build_dataset

    original = next(pdf for pdf in sample_atlas.pdfs if pdf.stem == "atlas-en")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    first, copy = inputs / original.name, inputs / "atlas-en-second-copy.pdf"
    shutil.copyfile(original, first)
    shutil.copyfile(original, copy)
    options = BuildOptions(work_dir=tmp_path / "work", registry_root=tmp_path / "registry", translation_home=tmp_path / "argos")

    with prefect_test_harness(server_startup_timeout=180):
        result = build_dataset(pdfs=[first, copy], options=options, publish=True)
        assert result.published is not None
        books = {Path(b.pdf).name: b for b in result.record.documents}
        copy_result = books[copy.name]
        if not (copy_result.error and "duplicate of" in copy_result.error):
            assert {p.book for p in copy_result.pairs} == {"atlas-en-second-copy"}
        again = build_dataset(pdfs=[first, copy], options=options, publish=True)
        assert again.published is not None  # a command that worked works again
        renamed = inputs / "atlas-en-renamed.pdf"
        first.rename(renamed)
        moved = build_dataset(pdfs=[renamed], options=options, publish=True)
        assert {p.book for b in moved.record.documents for p in b.pairs} == {"atlas-en-renamed"}
