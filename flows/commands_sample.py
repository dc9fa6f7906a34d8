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
        varied: bool = typer.Option(
            False, "--varied", help="Write books whose figure layouts are drawn from a wide layout space instead."
        ),
        books: int = typer.Option(3, "--books", min=1, help="With --varied: number of books."),
        pages: int = typer.Option(3, "--pages", min=1, help="With --varied: figure pages per book."),
        image_dir: Path = typer.Option(
            None, "--image-dir", help="With --varied: folder with cfp/ ffa/ oct/ other/ real images to use as panel pixels."
        ),
    ) -> None:
        """Write small atlas PDFs (bilingual, Chinese-only, English, scanned) plus per-panel truth."""
        if varied:
            from testbed.varied_atlas import VariedAtlasOptions, generate_varied_atlas, summarise_varied

            if book:
                raise typer.BadParameter("--book names books of the bundled sample atlas; it does not go with --varied")
            try:
                options = VariedAtlasOptions(books=books, pages_per_book=pages, image_dir=image_dir)
                atlas = generate_varied_atlas(out_dir, seed=seed, options=options)
            except ValueError as exc:
                raise typer.BadParameter(str(exc)) from exc
            typer.echo(summarise_varied(atlas))
            return
        from testbed.sample_atlas import generate_sample_atlas, summarise

        try:
            atlas = generate_sample_atlas(out_dir, seed=seed, books=book or None)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
        typer.echo(summarise(atlas))
