"""The same PDF bytes under two names: the cache serves content, but pairs take their book from
the input being built, so the copy is its own book (or a reported duplicate) and a rerun works."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from curation.build import BuildOptions, run_build


def _books(record) -> dict[str, str]:  # noqa: ANN001
    return {Path(book.pdf).name: book.book for book in record.documents}


@pytest.mark.slow
def test_same_bytes_under_two_names_publish_and_rerun(tmp_path: Path, sample_atlas) -> None:
    """Without an orchestrator (the Prefect flow's task cache is tested in tests/flows)."""
    original = next(pdf for pdf in sample_atlas.pdfs if pdf.stem == "atlas-en")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    first = inputs / original.name
    shutil.copyfile(original, first)
    copy = inputs / "atlas-en-second-copy.pdf"
    shutil.copyfile(original, copy)
    options = BuildOptions(work_dir=tmp_path / "work", registry_root=tmp_path / "registry", translation_home=tmp_path / "argos")

    record, published = run_build([first, copy], options)
    assert published is not None
    copy_result = next(book for book in record.documents if Path(book.pdf).name == copy.name)
    duplicate_reported = copy_result.error is not None and "duplicate of" in copy_result.error
    if not duplicate_reported:
        assert copy_result.book == "atlas-en-second-copy"
        assert all(pair.book == "atlas-en-second-copy" for pair in copy_result.pairs)
        assert all(pair.pair_id.startswith("atlas-en-second-copy/") for pair in copy_result.pairs)
    again, republished = run_build([first, copy], options)  # a command that worked works again
    assert republished is not None

    renamed = inputs / "atlas-en-renamed.pdf"
    first.rename(renamed)
    record, _ = run_build([renamed], options)
    assert {pair.book for book in record.documents for pair in book.pairs} == {"atlas-en-renamed"}
