"""The `mmretinal` command line.

Each feature module exposes `register(app)` and adds its own commands; heavy imports
(torch, Prefect, OCR engines) happen inside the command bodies so `mmretinal --help` is fast.
"""

from __future__ import annotations

import importlib
import logging

import typer

app = typer.Typer(
    name="mmretinal",
    help="Rebuild the MM-Retinal fundus image-text dataset from atlas PDFs and pretrain KeepFIT on it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

COMMAND_MODULES = [
    "flows.commands_sample",
    "flows.commands_extract",
    "flows.commands_ocr",
    "flows.commands_build",
    "flows.commands_flows",
    "flows.commands_manifest",
    "flows.commands_review",
    "flows.commands_pretrain",
    "flows.commands_evaluate",
]


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as exc:
        if exc.name != _name:
            raise
        continue
    _module.register(app)


def run() -> None:
    """Console entry point: user errors (bad config, missing file) end in one readable line."""
    try:
        app()
    except (ValueError, FileNotFoundError, PermissionError) as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise SystemExit(2) from None
