"""`mmretinal ffa-report train|evaluate|generate`: FFA report generation from the shell.

KeepFIT-FFA pretraining is `mmretinal pretrain keepfit-ffa` (the pretrain command with its bundled config).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn

import typer


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _decode_options(method: str | None, beam_size: int | None, no_trigram_blocking: bool, max_length: int | None):
    from keepfit.ffa.decoding import DecodeConfig

    if method is None and beam_size is None and not no_trigram_blocking and max_length is None:
        return None
    values = {"method": method or "beam", "block_trigrams": not no_trigram_blocking}
    if beam_size is not None:
        values["beam_size"] = beam_size
    if max_length is not None:
        values["max_length"] = max_length
    return DecodeConfig(**values)


def register(app: typer.Typer) -> None:
    ffa = typer.Typer(help="FFA report generation: train, evaluate and generate angiography reports.", no_args_is_help=True)
    app.add_typer(ffa, name="ffa-report")

    @ffa.command("train")
    def train(
        config: str = typer.Argument("keepfit-ffa", help="Report YAML path or bundled name (keepfit-ffa, tiny)."),
        set_: list[str] = typer.Option([], "--set", "-s", help="Override a setting, e.g. --set epochs=50; repeatable."),
        print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
        prefect: bool = typer.Option(False, "--prefect", help="Run as the Prefect `ffa-report-train` flow."),
    ) -> None:
        """Train the generator, select the epoch on validation, score test once; writes report.json/report.md."""
        import yaml
        from pydantic import ValidationError

        from keepfit.ffa.data import BadFFAInput
        from keepfit.ffa.training import load_report_config, run_report_training

        try:
            options = load_report_config(config, list(set_))
        except (FileNotFoundError, ValueError, ValidationError) as exc:
            _fail(str(exc))
        if print_config:
            typer.echo(yaml.safe_dump(options.model_dump(mode="json"), sort_keys=False))
            return
        try:
            if prefect:
                from flows.ffa import ffa_report_train_flow

                summary = ffa_report_train_flow(config=config, overrides=list(set_))
            else:
                result = run_report_training(options)
                summary = {
                    "best_epoch": result.best_epoch,
                    "best_checkpoint": str(result.best_checkpoint),
                    "validation": result.best_validation,
                    "test": result.test.scores.scores if result.test is not None else None,
                    "reports": str(Path(options.output_dir) / "report.md"),
                }
        except (FileNotFoundError, BadFFAInput, ValueError) as exc:
            _fail(str(exc))
        typer.echo(json.dumps(summary, indent=2, default=str))

    @ffa.command("evaluate")
    def evaluate(
        checkpoint: Path = typer.Argument(..., help="Report generator checkpoint (best.pth of a training run)."),
        annotation: Path = typer.Option(..., "--annotation", "-a", help="FFA-IR-format annotation JSON."),
        image_root: Path = typer.Option(None, "--image-root", help="Root of the Image_path entries (default: the JSON's folder)."),
        split: str = typer.Option("test", "--split", help="Split to score (train, val or test)."),
        out: Path = typer.Option(Path("reports/ffa-report"), "--out", "-o", help="Directory for <split>.json and <split>.md."),
        method: str = typer.Option(None, "--method", help="beam or greedy (default: as trained)."),
        beam_size: int = typer.Option(None, "--beam-size", help="Beam size (default: as trained)."),
        no_trigram_blocking: bool = typer.Option(False, "--no-trigram-blocking", help="Allow repeated trigrams."),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
        no_meteor: bool = typer.Option(False, "--no-meteor", help="Skip METEOR (saves starting its Java jar)."),
        prefect: bool = typer.Option(False, "--prefect", help="Run as the Prefect flow and publish artifacts."),
    ) -> None:
        """Generate and score one split; prints the metrics (METEOR 'n/a' without Java)."""
        from keepfit.ffa.data import BadFFAInput, FFAIRSource
        from keepfit.ffa.metrics import format_scores
        from keepfit.ffa.reports import write_split_report
        from keepfit.ffa.training import evaluate_report_checkpoint

        decode = _decode_options(method, beam_size, no_trigram_blocking, None)
        try:
            if prefect:
                from flows.ffa import ffa_report_evaluate_flow

                outcome = ffa_report_evaluate_flow(
                    str(checkpoint), str(annotation), str(image_root) if image_root else None, split, str(out), decode, device,
                    meteor=not no_meteor,
                )
                typer.echo(json.dumps(outcome, indent=2, default=str))
                return
            source = FFAIRSource(annotation=str(annotation), image_root=str(image_root) if image_root else None)
            result = evaluate_report_checkpoint(checkpoint, source, split, decode, device=device, meteor=not no_meteor)
        except (FileNotFoundError, BadFFAInput, ValueError) as exc:
            _fail(str(exc))
        written = write_split_report(result, str(checkpoint), out)
        typer.echo(json.dumps({"split": split, "n": result.scores.n, **format_scores(result.scores)}, indent=2))
        for name, reason in result.scores.unavailable.items():
            typer.echo(f"{name} unavailable: {reason}", err=True)
        typer.echo(f"reports: {written['markdown']}, {written['json']}")

    @ffa.command("generate")
    def generate(
        checkpoint: Path = typer.Argument(..., help="Report generator checkpoint."),
        images: list[Path] = typer.Argument(..., help="Frames of one case: image files or a case folder."),
        method: str = typer.Option(None, "--method", help="beam or greedy (default: as trained)."),
        beam_size: int = typer.Option(None, "--beam-size", help="Beam size (default: as trained)."),
        no_trigram_blocking: bool = typer.Option(False, "--no-trigram-blocking", help="Allow repeated trigrams."),
        max_frames: int = typer.Option(8, "--max-frames", help="Most frames of the case used (evenly spaced)."),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    ) -> None:
        """Print the report the generator writes for one case."""
        from keepfit.ffa.training import generate_report

        decode = _decode_options(method, beam_size, no_trigram_blocking, None)
        try:
            text = generate_report(checkpoint, list(images), decode, max_frames=max_frames, device=device)
        except (FileNotFoundError, ValueError) as exc:
            _fail(str(exc))
        typer.echo(text)
