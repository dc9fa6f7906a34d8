"""The `mmretinal` command line.

Each feature module exposes `register(app)` and adds its own commands; heavy imports
(torch, Prefect, OCR engines) happen inside the command bodies so `mmretinal --help` is fast.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import click
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
    "flows.commands_knowledge",
    "flows.commands_ffa",
]


DEBUG_ENV = "MMRETINAL_DEBUG"
_debug = {"on": False}


def debug_enabled() -> bool:
    """Whether --debug (or $MMRETINAL_DEBUG) asked for tracebacks."""
    return _debug["on"] or os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes")


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
    debug: bool = typer.Option(
        False, "--debug", envvar=DEBUG_ENV, help="Show the full traceback of an error instead of one line."
    ),
) -> None:
    _debug["on"] = debug
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input (file, option, config, version), not a bug."""
    types: list[type[BaseException]] = [ValueError, OSError]
    for module, name in (
        ("data_manifests.registry", "RegistryError"),
        ("pipeline.extract", "ExtractionError"),
        ("yaml", "YAMLError"),
    ):
        loaded = sys.modules.get(module)  # an error of a module never imported cannot have been raised
        if loaded is not None and hasattr(loaded, name):
            types.append(getattr(loaded, name))
    return tuple(types)


def describe_error(exc: BaseException) -> str:
    """An error as one readable line: the file (and line) it concerns, then the reason."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        details = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'value'}: {error['msg']}" for error in exc.errors()[:3]
        )
        return f"invalid {exc.title}: {details}"
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    text = str(exc).strip() or type(exc).__name__
    return text if "\n" in text and isinstance(exc, _user_error_types()) else " ".join(text.split())


def guard_user_errors(callback: Callable[..., Any]) -> Callable[..., Any]:
    """A command body whose errors end in `error: <one line>` (exit 2 for bad input, 1 for a bug),
    with the traceback only under --debug."""

    @functools.wraps(callback)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as exc:  # noqa: BLE001 - the one place that turns errors into messages
            if debug_enabled():
                raise
            if isinstance(exc, _user_error_types()):
                typer.secho(f"error: {describe_error(exc)}", err=True, fg=typer.colors.RED)
                raise typer.Exit(2) from None
            typer.secho(
                f"error: unexpected {type(exc).__name__}: {describe_error(exc)} (run with --debug for the traceback)",
                err=True, fg=typer.colors.RED,
            )
            raise typer.Exit(1) from None

    guarded.guards_user_errors = True  # type: ignore[attr-defined]
    return guarded


def _guard_commands(typer_app: typer.Typer) -> None:
    for command in typer_app.registered_commands:
        if command.callback is not None and not getattr(command.callback, "guards_user_errors", False):
            command.callback = guard_user_errors(command.callback)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _guard_commands(group.typer_instance)


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as exc:
        if exc.name != _name:
            raise
        continue
    _module.register(app)
_guard_commands(app)


def run() -> None:
    """Console entry point: user errors (bad config, missing file) end in one readable line."""
    try:
        app()
    except (ValueError, FileNotFoundError, PermissionError) as exc:
        if debug_enabled():
            raise
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise SystemExit(2) from None


if __name__ == "__main__":
    run()
