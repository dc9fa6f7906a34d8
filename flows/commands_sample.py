"""`mmretinal sample-atlas`: write the deterministic sample atlases used as test data."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("sample-atlas")
    def sample_atlas(
        out_dir: Path = typer.Argument(..., help="Directory to write the sample PDFs and truth.jsonl into."),
        seed: int = typer.Option(0, "--seed", help="Seed fixing every image, size and position."),
        book: list[str] = typer.Option(None, "--book", help="Only write this book id (repeatable)."),
    ) -> None:
        """Write small atlas PDFs (bilingual, Chinese-only, English, scanned) plus per-panel truth."""
        from testbed.sample_atlas import generate_sample_atlas, summarise

        try:
            atlas = generate_sample_atlas(out_dir, seed=seed, books=book or None)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
        typer.echo(summarise(atlas))
