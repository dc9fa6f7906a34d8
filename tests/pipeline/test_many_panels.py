"""Figures of any size: more than ten lettered panels, unlabelled panels and mosaics never fail
their book, and the book's other figures are published with them."""

from __future__ import annotations

import string
from pathlib import Path

import cv2
import numpy as np
import pymupdf
import pytest

from curation.build import BuildOptions, run_build
from data_manifests import load_manifest
from foundation.labels import label_for_index, label_key, label_range, sort_labels
from pipeline.caption_parse import parse_caption
from testbed.synthetic_images import cfp_image, ffa_image

PER_ROW, SIDE, GAP = 7, 60.0, 8.0


def _png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()


def many_panels_pdf(path: Path, panels: int, labelled: bool | int) -> Path:
    """Page 1: a grid of `panels` separate images and its caption (labelling the first `labelled`
    panels, all of them for True, none for False); page 2: an ordinary one-panel figure."""
    rng = np.random.default_rng(panels)
    named = panels if labelled is True else int(labelled)
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    for index in range(panels):
        row, col = divmod(index, PER_ROW)
        x, y = 50 + col * (SIDE + GAP), 60 + row * (SIDE + GAP)
        page.insert_image(pymupdf.Rect(x, y, x + SIDE, y + SIDE), stream=_png(cfp_image(rng, 96)))
    bottom = 60 + ((panels - 1) // PER_ROW + 1) * (SIDE + GAP)
    parts = ["FIGURE 9-1. Fundus photographs of a screening series."]
    parts += [f"{label_for_index(i)}. Eye number {i + 1}." for i in range(named)]
    page.insert_textbox(pymupdf.Rect(50, bottom + 10, 545, bottom + 400), " ".join(parts), fontsize=8)
    page = doc.new_page(width=595, height=842)
    page.insert_image(pymupdf.Rect(100, 80, 400, 380), stream=_png(ffa_image(rng, 300)))
    page.insert_text((100, 400), "FIGURE 9-2. Fluorescein angiogram of a branch vein occlusion.", fontsize=9)
    doc.save(path)
    return path


def build(tmp_path: Path, panels: int, labelled: bool | int, **align):
    tmp_path.mkdir(parents=True, exist_ok=True)
    pdf = many_panels_pdf(tmp_path / "series.pdf", panels, labelled)
    options = BuildOptions(work_dir=tmp_path / "work", registry_root=tmp_path / "registry", translation_home=tmp_path / "argos")
    options.align = options.align.model_copy(update={"read_panel_labels": False, **align})
    record, published = run_build([pdf], options)
    (document,) = record.documents
    assert document.status.value == "success", document.errors
    rows = load_manifest(options.registry_root, published.ref).table.to_pylist()
    assert "series/9-2/-" in {row["pair_id"] for row in rows}, "the book's other figure is published"
    return [p for p in document.pairs if p.figure_id == "9-1"], rows


def test_one_label_alphabet_for_any_number_of_panels() -> None:
    assert [label_for_index(i) for i in (0, 9, 10, 25, 26, 27, 51, 52)] == ["A", "J", "K", "Z", "AA", "AB", "AZ", "BA"]
    assert sort_labels(["B", "K", "A2", "A", "A1", "AA", "Z"]) == ["A", "A1", "A2", "B", "K", "Z", "AA"]
    assert label_range("H", "M") == tuple("HIJKLM") and label_range("A1", "A3") == ("A1", "A2", "A3")
    assert label_key("3") < label_key("12")


@pytest.mark.parametrize("count", [11, 16, 26])
def test_captions_label_panels_past_j(count: int) -> None:
    letters = string.ascii_uppercase[:count]
    parsed = parse_caption("FIGURE 9-1. Series. " + " ".join(f"{c}. Eye {i}." for i, c in enumerate(letters)))
    assert parsed.letters == list(letters)
    assert parsed.panel_texts(letters[-1]) == [f"Eye {count - 1}."]


def test_a_stray_capital_is_not_a_panel_past_j() -> None:
    parsed = parse_caption("FIGURE 9-3. Deficiency of vitamin A. A. Fundus. B. Angiogram of a type K. lesion.")
    assert parsed.letters == ["A", "B"]


def test_sub_panel_and_numbered_labels() -> None:
    assert parse_caption("Fig. 9-4 Both eyes. A1. Right early. A2. Right late. B1. Left early.").letters == ["A1", "A2", "B1"]
    assert parse_caption("图9-5 双眼。(1)右眼。(2)左眼。").letters == ["1", "2"]


@pytest.mark.parametrize("count", [11, 16, 26])
def test_labelled_figures_of_more_than_ten_panels(tmp_path: Path, count: int) -> None:
    pairs, rows = build(tmp_path, count, labelled=True)
    assert [p.panel for p in pairs] == [label_for_index(i) for i in range(count)]
    assert pairs[-1].caption_en == f"Fundus photographs of a screening series. Eye number {count}."
    assert {f"series/9-1/{label_for_index(i)}" for i in range(count)} <= {row["pair_id"] for row in rows}


def test_panels_the_caption_does_not_label_keep_their_position_unlabelled(tmp_path: Path) -> None:
    pairs, _ = build(tmp_path, 11, labelled=10)
    assert [p.panel for p in pairs[:10]] == list("ABCDEFGHIJ")
    extra = pairs[10]
    assert (extra.panel, extra.panel_index, extra.pair_id) == (None, 10, "series/9-1/p11")
    assert extra.caption_en == "Fundus photographs of a screening series."
    assert any("unlabelled panel" in reason for reason in extra.reasons)
    assert all(p.review_status == "queued" for p in pairs), "a count mismatch is for a reviewer to see"


@pytest.mark.parametrize("count", [11, 16, 26])
def test_unlabelled_figures_of_many_panels_are_mosaics(tmp_path: Path, count: int) -> None:
    pairs, rows = build(tmp_path, count, labelled=False)
    assert len(pairs) == count
    assert [p.panel_index for p in pairs] == list(range(count)) and {p.panel for p in pairs} == {None}
    assert {p.caption_en for p in pairs} == {"Fundus photographs of a screening series."}
    assert len({row["pair_id"] for row in rows if row["figure_id"] == "9-1"}) == count


def test_a_mosaic_of_24_thumbnails_per_image_or_whole(tmp_path: Path) -> None:
    pairs, _ = build(tmp_path / "per-image", 24, labelled=False)
    assert len(pairs) == 24 and all(p.review_status == "auto_accepted" for p in pairs)
    assert all("mosaic of 24 images" in " ".join(p.reasons) for p in pairs)
    (whole,), rows = build(tmp_path / "whole", 24, labelled=False, mosaic="whole")
    assert whole.pair_id == "series/9-1/-" and whole.panel is None
    x0, y0, x1, y1 = whole.bbox
    assert (x1 - x0, y1 - y0) == pytest.approx((7 * SIDE + 6 * GAP, 4 * SIDE + 3 * GAP), abs=1.5)
    assert "series/9-1/-" in {row["pair_id"] for row in rows}
