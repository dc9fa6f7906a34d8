"""`mmretinal extract`: step 1 on its own."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer


class OcrEngineName(str, Enum):
    """The OCR engines `--ocr-engine` accepts."""

    rapidocr = "rapidocr"
    paddleocr = "paddleocr"


def check_ocr_engine(options) -> None:
    """Load a chosen optional engine before any PDF, so a missing extra or model folder is one
    error line instead of one failure per PDF."""
    from pipeline.ocr import create_ocr_engine

    create_ocr_engine(options)


def expand_pdf_inputs(inputs: list[Path]) -> list[Path]:
    """Files as given; directories contribute their *.pdf files, sorted."""
    paths: list[Path] = []
    for item in inputs:
        paths.extend(sorted(item.glob("*.pdf")) if item.is_dir() else [item])
    return paths


def register(app: typer.Typer) -> None:
    @app.command()
    def extract(
        pdfs: list[Path] = typer.Argument(..., help="Atlas PDFs, or directories holding them."),
        out: Path = typer.Option(Path("extraction"), "--out", "-o", help="Output directory (one folder per PDF)."),
        ocr_engine: OcrEngineName = typer.Option(
            "rapidocr", help="OCR engine for scanned pages (paddleocr needs the paddle extra)."
        ),
        paddle_det_model_dir: Path = typer.Option(
            None, help="PaddleOCR: text-detection model directory (default: prepared from rapidocr's models)."
        ),
        paddle_rec_model_dir: Path = typer.Option(
            None, help="PaddleOCR: text-recognition model directory (default: prepared from rapidocr's models)."
        ),
        paddle_home: Path = typer.Option(
            Path(".mmretinal") / "paddlex", help="PaddleOCR: PaddleX's home (caches, models prepared from rapidocr's)."
        ),
        allow_repaired: bool = typer.Option(False, help="Accept damaged PDFs that had to be repaired."),
    ) -> None:
        """Step 1: find figure regions, text blocks and candidate captions in atlas PDFs."""
        from pipeline.extract import ExtractOptions, extract_pdfs
        from pipeline.ocr import OcrOptions
        from foundation.records import Status

        options = ExtractOptions(
            allow_repaired=allow_repaired,
            ocr=OcrOptions(
                engine=ocr_engine.value,
                paddle_det_model_dir=paddle_det_model_dir,
                paddle_rec_model_dir=paddle_rec_model_dir,
                paddle_home=paddle_home,
            ),
        )
        if ocr_engine is OcrEngineName.paddleocr:
            check_ocr_engine(options.ocr)
        outcomes = extract_pdfs(expand_pdf_inputs(pdfs), out, options)
        typer.echo(f"{'PDF':40} {'status':8} {'pages':>5} {'scanned':>7} {'regions':>7} {'captions':>8}")
        for outcome in outcomes:
            name = Path(outcome.path).name
            if outcome.status == Status.failed:
                typer.echo(f"{name:40} {'failed':8} {outcome.error}")
            else:
                typer.echo(
                    f"{name:40} {outcome.status.value:8} {outcome.pages:>5} {outcome.scanned_pages:>7}"
                    f" {outcome.regions:>7} {outcome.captions:>8}"
                )
        typer.echo(f"output: {out.resolve()}")
        if any(o.status == Status.failed for o in outcomes):
            raise typer.Exit(1)
