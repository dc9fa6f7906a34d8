"""Each layout feature of the varied generator, built on its own through `run_build`: the build
must pair every retinal panel with its own caption and keep non-retinal figures and trap lines
out. One small book per feature; the other features stay at the sample atlas's house style."""

from __future__ import annotations

from pathlib import Path

import pytest

from curation.build import BuildOptions, run_build
from testbed.scoring import score_layouts
from testbed.varied_atlas import VariedAtlasOptions, generate_varied_atlas

HOUSE_STYLE = {
    "numbering_style": "figure_dashed",
    "caption_position": "below",
    "caption_width": "text_block",
    "placement": "top",
    "grid": "1x2",
    "embedding": "separate",
    "label_style": "in_image",
    "scan_kind": "born_digital",
    "columns": 1,
    "figures_on_page": 1,
    "retinal": True,
}
QUIET = {"list_of_figures_share": 0.0, "body_label_share": 0.0, "two_figure_share": 0.0, "non_retinal_share": 0.0}

CASES = (
    [("caption_position", value) for value in ("below", "above", "beside_same_column", "other_column")]
    + [("caption_width", value) for value in ("figure", "text_block")]
    + [("placement", value) for value in ("top", "bottom")]
    + [("grid", value) for value in ("1", "1x2", "1+2", "2x2", "3+2", "2x3")]
    + [("stitched_gutter_px", value) for value in (0, 1, 2, 3, 4, 5, 6)]
    + [("label_style", value) for value in ("in_image", "white_over", "under_panel", "absent")]
    + [("numbering_style", value) for value in
       ("figure_plain", "fig_dotted", "zh_dotted", "figura_colon", "abbildung", "fig_caps_dash", "figure_dashed")]
    + [("columns", 2), ("figures_on_page", 2)]
)
SCANNED = [("scan_kind", "image_only"), ("scan_kind", "ocr_layer")]


def build_feature(tmp_path: Path, fixed: dict, pages: int = 2, **options):
    settings = {**QUIET, "books": 1, "pages_per_book": pages, **options}
    atlas = generate_varied_atlas(tmp_path / "atlas", seed=11, options=VariedAtlasOptions(fixed={**HOUSE_STYLE, **fixed}, **settings))
    build = BuildOptions(work_dir=tmp_path / "work", registry_root=tmp_path / "registry", translation_home=tmp_path / "argos")
    record, _ = run_build(atlas.pdfs, build)
    assert not record.failures, [d.errors for d in record.failures]
    return atlas, record, score_layouts(atlas.truth, record.documents, traps=atlas.traps)


def _fixed(feature: str, value) -> dict:
    fixed = {feature: value}
    if feature == "stitched_gutter_px":
        fixed["embedding"] = "stitched"
    if feature == "caption_position" and value == "other_column":
        fixed["columns"] = 2
    if feature == "caption_width":
        fixed["grid"] = "1x2"
    return fixed


def assert_all_paired(report: dict) -> None:
    overall = report["overall"]
    assert overall["truth"] > 0
    assert overall["recall"] == 1.0 and overall["precision"] == 1.0, overall
    assert overall["caption_ge_threshold"] == 1.0, overall


@pytest.mark.layout_variety
@pytest.mark.parametrize("feature,value", CASES, ids=[f"{f}={v}" for f, v in CASES])
def test_build_pairs_layout_feature(tmp_path: Path, feature: str, value) -> None:
    _, _, report = build_feature(tmp_path, _fixed(feature, value))
    assert_all_paired(report)


@pytest.mark.layout_variety
@pytest.mark.slow
@pytest.mark.parametrize("feature,value", SCANNED, ids=[f"{f}={v}" for f, v in SCANNED])
def test_build_pairs_scanned_books(tmp_path: Path, feature: str, value) -> None:
    """Scans: separate panels 2-6 pt apart, and a scan that carries an invisible OCR text layer."""
    _, _, report = build_feature(tmp_path, {feature: value, "grid": "2x2"}, pages=1)
    assert_all_paired(report)


@pytest.mark.layout_variety
@pytest.mark.parametrize("embedding", ["separate", "vector"])
def test_non_retinal_figures_become_typed_rejects_not_pairs(tmp_path: Path, embedding: str) -> None:
    """Charts, diagrams, photos and vector drawings: no pair, one `non_retinal_figure` reject each."""
    fixed = {"retinal": False, "embedding": embedding, "grid": "1"}
    _, record, report = build_feature(tmp_path, fixed)
    overall = report["overall"]
    assert overall["non_retinal_paired"] == 0 and not record.pairs
    assert overall["non_retinal_rejected"] == overall["non_retinal_figures"] > 0


@pytest.mark.layout_variety
def test_list_of_figures_and_body_label_lines_are_not_captions(tmp_path: Path) -> None:
    _, _, report = build_feature(tmp_path, {}, pages=2, list_of_figures_share=1.0, body_label_share=1.0)
    assert report["trap_captions"] == []
    assert_all_paired(report)
