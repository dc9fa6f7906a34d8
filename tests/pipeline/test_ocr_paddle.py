"""The PaddleOCR engine: model folders written from rapidocr's ONNX files, its errors, and (in the
venv with the paddle extra, `make test-paddle`) extraction of the scanned sample book."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from pipeline.ocr import OcrOptions, create_ocr_engine, lazy_line_reader
from pipeline.ocr_paddle import (
    PaddleModelError,
    prepare_paddle_models,
    rapidocr_model_files,
    read_model_dir,
    recogniser_info,
)

HAS_PADDLEOCR = importlib.util.find_spec("paddleocr") is not None
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare_paddle_models(tmp_path_factory.mktemp("paddle-models"))


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """The real `mmretinal` entry point, in process: (exit code, stdout, stderr)."""
    from flows.cli import run

    monkeypatch.setattr(sys, "argv", ["mmretinal", *args])
    try:
        run()
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def test_models_prepared_from_rapidocr_are_paddlex_model_folders(prepared):
    det_onnx, rec_onnx = rapidocr_model_files()
    assert (prepared.det_name, prepared.rec_name) == ("PP-OCRv6_small_det", "PP-OCRv6_small_rec")
    assert (prepared.det_dir / "inference.onnx").read_bytes() == det_onnx.read_bytes()
    assert (prepared.rec_dir / "inference.onnx").read_bytes() == rec_onnx.read_bytes()
    assert read_model_dir(prepared.det_dir, "det") == "PP-OCRv6_small_det"
    det = yaml.safe_load((prepared.det_dir / "inference.yml").read_text(encoding="utf-8"))
    ops = [next(iter(op)) for op in det["PreProcess"]["transform_ops"]]
    assert ops == ["DecodeImage", "DetResizeForTest", "NormalizeImage", "ToCHWImage"]
    assert det["PostProcess"]["name"] == "DBPostProcess"
    rec = yaml.safe_load((prepared.rec_dir / "inference.yml").read_text(encoding="utf-8"))
    characters, classes = recogniser_info(rec_onnx)
    assert rec["PostProcess"]["character_dict"] == characters
    assert len(characters) + 2 == classes == 18710  # blank + characters + space


def test_a_user_model_folder_keeps_its_name_and_settings(prepared, tmp_path):
    user = tmp_path / "server_rec"
    user.mkdir()
    (user / "inference.onnx").write_bytes((prepared.rec_dir / "inference.onnx").read_bytes())
    config = yaml.safe_load((prepared.rec_dir / "inference.yml").read_text(encoding="utf-8"))
    config["Global"]["model_name"] = "PP-OCRv5_server_rec"
    config["PreProcess"]["transform_ops"][1]["RecResizeImg"]["image_shape"] = [3, 48, 480]
    (user / "inference.yml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    models = prepare_paddle_models(tmp_path / "out", det_source=prepared.det_dir, rec_source=user)
    assert models.rec_name == "PP-OCRv5_server_rec"
    written = yaml.safe_load((models.rec_dir / "inference.yml").read_text(encoding="utf-8"))
    assert written["PreProcess"]["transform_ops"][1]["RecResizeImg"]["image_shape"] == [3, 48, 480]
    assert len(written["PostProcess"]["character_dict"]) == 18708


def test_cli_writes_models_and_bad_sources_end_in_one_line(prepared, tmp_path, monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "ocr", "prepare-paddle-models", str(tmp_path / "models"))
    assert code == 0 and "PP-OCRv6_small_rec" in out
    assert read_model_dir(tmp_path / "models" / "PP-OCRv6_small_rec", "rec") == "PP-OCRv6_small_rec"

    swapped = ["--det", str(prepared.rec_dir), "--rec", str(prepared.det_dir)]
    dictionary = tmp_path / "letters.txt"
    dictionary.write_text("a\nb\n", encoding="utf-8")
    for extra, reason in (
        (["--det", str(tmp_path / "missing.onnx")], "det model not found"),
        (swapped, "is not a text-det model"),
        (["--character-dict", str(dictionary)], "2 characters do not fit the model's 18710 output classes"),
    ):
        code, _, err = run_cli(monkeypatch, capsys, "ocr", "prepare-paddle-models", str(tmp_path / "x"), *extra)
        assert code == 2 and reason in err and len(err.strip().splitlines()) == 1, err


def test_missing_model_directories_are_named(tmp_path):
    options = OcrOptions(
        engine="paddleocr",
        paddle_det_model_dir=tmp_path / "det",
        paddle_rec_model_dir=tmp_path / "rec",
        paddle_home=tmp_path / "home",
    )
    with pytest.raises(PaddleModelError, match="det model directory not found|paddleocr is not installed"):
        create_ocr_engine(options)
    (tmp_path / "det").mkdir()
    from pipeline.ocr_paddle import resolve_models

    with pytest.raises(PaddleModelError, match=r"det: no inference\.onnx"):
        resolve_models(options)
    (tmp_path / "det" / "inference.onnx").write_bytes(b"")
    (tmp_path / "det" / "inference.yml").write_text("Global: [model_name", encoding="utf-8")
    with pytest.raises(PaddleModelError, match=r"inference\.yml: not valid YAML"):
        resolve_models(options)
    (tmp_path / "det" / "inference.yml").write_text("Global: {}\n", encoding="utf-8")
    with pytest.raises(PaddleModelError, match=r"no Global\.model_name"):
        resolve_models(options)


@pytest.mark.skipif(HAS_PADDLEOCR, reason="paddleocr is installed here")
def test_without_the_extra_the_engine_says_how_to_install_it(tmp_path):
    with pytest.raises(PaddleModelError, match=r"paddleocr is not installed .*mm-retinal\[paddle\]"):
        create_ocr_engine(OcrOptions(engine="paddleocr", paddle_home=tmp_path / "home"))


def test_cv2_check_fails_when_two_distributions_provide_cv2(tmp_path):
    spec = importlib.util.spec_from_file_location("check_cv2", REPO / ".ci" / "check_cv2.py")
    check_cv2 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check_cv2)
    name, version = check_cv2.pinned_opencv()
    for dist, dist_version in ((name, version), ("opencv-python-headless", "5.0.0.93")):
        info = tmp_path / f"{dist.replace('-', '_')}-{dist_version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {dist_version}\n")
        (info / "top_level.txt").write_text("cv2\n")
    assert "2 distributions provide cv2" in check_cv2.problem([str(tmp_path)])
    (tmp_path / f"opencv_python_headless-5.0.0.93.dist-info" / "top_level.txt").write_text("other\n")
    assert check_cv2.problem([str(tmp_path)]) is None


# ------------------------------------------------------------------ with the paddle extra installed

paddle = pytest.mark.skipif(not HAS_PADDLEOCR, reason="needs the paddle extra (make test-paddle)")


def _scanned_book_scores(atlas, truth, out: Path, ocr: OcrOptions) -> dict:
    from pipeline.align import align_document
    from pipeline.extract import ExtractOptions, extract_pdf
    from pipeline.images import ImageBank
    from testbed.scoring import extraction_recall, score_pairs

    extraction = extract_pdf(atlas.pdfs[0], out, ExtractOptions(ocr=ocr))
    pairs = align_document(extraction, ImageBank(Path(extraction.directory)), read_line=lazy_line_reader(ocr)).pairs
    book_truth = [panel for panel in truth if panel.book == extraction.source.book]
    # step 3 (modality) has not run, so every pair counts
    captions = score_pairs(book_truth, pairs, is_kept=lambda pair: True)["captions"]
    return {
        "engine": extraction.ocr_engine,
        "recall": extraction_recall(book_truth, [extraction])["recall"]["scanned"],
        "similarity_zh": captions["zh"]["scanned"]["mean_similarity"],
        "similarity_en": captions["en"]["scanned"]["mean_similarity"],
    }


@pytest.mark.paddle
@pytest.mark.slow
@paddle
def test_paddleocr_extracts_the_scanned_book_as_well_as_rapidocr(tmp_path, monkeypatch):
    from testbed.sample_atlas import generate_sample_atlas, read_truth

    home = tmp_path / "user-home"
    monkeypatch.setenv("HOME", str(home))
    atlas = generate_sample_atlas(tmp_path / "atlas", seed=0, books=["atlas-zh-scanned"])
    truth = read_truth(atlas.truth_path)
    rapid = _scanned_book_scores(atlas, truth, tmp_path / "rapid", OcrOptions())
    paddle_home = tmp_path / "work" / "paddlex"
    ours = _scanned_book_scores(atlas, truth, tmp_path / "paddle", OcrOptions(engine="paddleocr", paddle_home=paddle_home))
    print(f"rapidocr {rapid}\npaddleocr {ours}")
    assert ours["engine"].startswith("paddleocr") and rapid["engine"].startswith("rapidocr")
    assert ours["recall"] >= rapid["recall"] >= 0.95
    assert ours["similarity_zh"] >= rapid["similarity_zh"] - 0.01
    assert ours["similarity_en"] >= rapid["similarity_en"] - 0.01
    assert (paddle_home / "models" / "PP-OCRv6_small_det" / "inference.onnx").is_file()
    assert not (home / ".paddlex").exists()


@pytest.mark.paddle
@paddle
def test_paddleocr_reads_a_panel_letter_without_detection(tmp_path):
    engine = create_ocr_engine(OcrOptions(engine="paddleocr", paddle_home=tmp_path / "paddlex"))
    letter = np.full((60, 60, 3), 255, np.uint8)
    cv2.putText(letter, "B", (12, 48), cv2.FONT_HERSHEY_DUPLEX, 1.5, (0, 0, 0), 3)
    text, score = engine.recognise_line(letter)
    assert text.strip().upper() == "B" and score > 0.5
