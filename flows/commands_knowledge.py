"""`mmretinal knowledge import PATH --out FILE.yaml`: the released domain-knowledge dictionary as our YAML."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    knowledge_app = typer.Typer(
        name="knowledge",
        help="Domain knowledge (category -> expert descriptions) for pretraining captions and class prompts.",
        no_args_is_help=True,
    )

    @knowledge_app.command("import")
    def import_(
        path: Path = typer.Argument(
            ..., help="A FLAIR or KeepFIT checkout, or its modeling/dictionary.py; parsed, never imported."
        ),
        out: Path = typer.Option(..., "--out", "-o", help="YAML file to write (then pass it as --knowledge)."),
    ) -> None:
        """Read the released `definitions` dictionary with `ast` (no code runs) and write it as YAML."""
        from keepfit.knowledge import import_released_dictionary

        try:
            written, count = import_released_dictionary(path, out)
        except (FileNotFoundError, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        typer.echo(f"{written}: {count} categories")

    app.add_typer(knowledge_app)
