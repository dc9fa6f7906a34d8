"""`mmretinal extract`: step 1 on its own."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from foundation.inputs import InputProblem, check_inputs

class OcrEngineName(str, Enum):
    """The OCR engines `--ocr-engine` accepts."""

    rapidocr = "rapidocr"
    paddleocr = "paddleocr"


def check_ocr_engine(options) -> None:
    """Load a chosen optional engine before any PDF, so a missing extra or model folder is one
    error line instead of one failure per PDF."""
    from pipeline.ocr import create_ocr_engine

    create_ocr_engine(options)



def checked_pdf_inputs(inputs: list[Path]) -> tuple[list[Path], list[InputProblem]]:
    """Regular, readable PDF files to process (directories expanded) and the inputs refused.

    Each refused input is printed as one line; the caller goes on with the rest.
    """
    files, problems = check_inputs(inputs)
    for problem in problems:
        typer.secho(f"skipped {problem.line()}", err=True, fg=typer.colors.YELLOW)
    return files, problems


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
        files, problems = checked_pdf_inputs(pdfs)
        runs = extract_pdfs(files, out, options) if files else []
        typer.echo(f"{'PDF':40} {'status':8} {'pages':>5} {'scanned':>7} {'regions':>7} {'captions':>8} {'rejects':>7}")
        for run in runs:
            name = Path(run.pdf).name
            if run.status == Status.failed:
                typer.echo(f"{name:40} {'failed':8} {run.error}")
                continue
            typer.echo(
                f"{name:40} {run.status.value:8} {run.page_count:>5} {run.scanned_pages:>7}"
                f" {sum(len(p.regions) for p in run.pages):>7} {sum(len(p.captions) for p in run.pages):>8}"
                f" {len(run.rejects):>7}"
            )
            for error in run.errors:
                typer.echo(f"{'':40} {error}")
        for problem in problems:
            typer.echo(f"{problem.path:40} {'refused':8} {problem.reason}")
        typer.echo(f"output: {out.resolve()}")
        if problems or any(run.status == Status.failed for run in runs):
            raise typer.Exit(1)
