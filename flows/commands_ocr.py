"""`mmretinal ocr prepare-paddle-models`: model directories for the PaddleOCR engine, offline."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    ocr_app = typer.Typer(help="OCR engines and their models.", no_args_is_help=True)
    app.add_typer(ocr_app, name="ocr")

    @ocr_app.command("prepare-paddle-models")
    def prepare_paddle_models(
        out_dir: Path = typer.Argument(..., help="Directory to write the detection and recognition model folders into."),
        det: Path = typer.Option(
            None, help="Detection model: an .onnx file or a folder with inference.onnx (default: rapidocr's)."
        ),
        rec: Path = typer.Option(
            None, help="Recognition model: an .onnx file or a folder with inference.onnx (default: rapidocr's)."
        ),
        det_model_name: str = typer.Option(None, help="PaddleX name of the detection model, e.g. PP-OCRv5_server_det."),
        rec_model_name: str = typer.Option(None, help="PaddleX name of the recognition model, e.g. PP-OCRv5_server_rec."),
        character_dict: Path = typer.Option(
            None, help="Recognition characters, one a line, when the ONNX file does not carry them."
        ),
    ) -> None:
        """Write PaddleX model folders (inference.onnx + inference.yml) so `--ocr-engine paddleocr` runs offline."""
        from pipeline.ocr_paddle import prepare_paddle_models as prepare

        models = prepare(out_dir, det, rec, det_model_name, rec_model_name, character_dict)
        typer.echo(f"detection:   {models.det_dir} ({models.det_name})")
        typer.echo(f"recognition: {models.rec_dir} ({models.rec_name})")
        typer.echo(
            f"use: mmretinal extract --ocr-engine paddleocr "
            f"--paddle-det-model-dir {models.det_dir} --paddle-rec-model-dir {models.rec_dir} PDF..."
        )
