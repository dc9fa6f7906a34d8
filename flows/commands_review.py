"""`mmretinal review serve|export|import|list`: the review queue from the shell."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import NoReturn

import typer
from pydantic import BaseModel, Field

DEFAULT_DB = Path(".mmretinal") / "review.sqlite"
DB_HELP = "Review database (default: ./.mmretinal/review.sqlite, the build work directory; or $MMRETINAL_REVIEW_DB)."


class ReviewServeOptions(BaseModel):
    """Options of `mmretinal review serve`."""

    db: Path = Field(DEFAULT_DB, description="SQLite review database.")
    host: str = Field("127.0.0.1", description="Interface to bind; anything but loopback requires a token.")
    port: int = Field(8765, ge=1, le=65535, description="TCP port.")
    token: str | None = Field(None, description="Access token every request must carry (cookie or ?token=).")
    reviewer: str | None = Field(None, description="Default reviewer name (default: OS user).")
    pdf_roots: list[Path] = Field(default_factory=list, description="Folders holding the source PDFs.")
    image_roots: list[Path] = Field(default_factory=list, description="Folders relative panel image paths are under.")
    cache_dir: Path | None = Field(None, description="Cache of rendered pages (default: next to the database).")


def is_loopback(host: str) -> bool:
    """True for hosts only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_serve_options(options: ReviewServeOptions) -> None:
    """Refuse to expose the review page beyond this machine without a token."""
    if not is_loopback(options.host) and not options.token:
        raise ValueError(
            f"binding to {options.host} exposes the review page to the network; "
            "pass --token (or set $MMRETINAL_REVIEW_TOKEN)"
        )


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _store(db: Path, must_exist: bool = True):  # noqa: ANN202 - ReviewStore, imported lazily
    from curation.review_store import ReviewStore

    if must_exist and not db.is_file():
        _fail(f"{db}: no review database there (a build registers its queue first)")
    return ReviewStore(db)


def register(app: typer.Typer) -> None:
    review_app = typer.Typer(help="Review uncertain image-caption pairs.", no_args_is_help=True)
    app.add_typer(review_app, name="review")

    @review_app.command("serve")
    def serve_command(
        db: Path = typer.Option(DEFAULT_DB, "--db", envvar="MMRETINAL_REVIEW_DB", help=DB_HELP),
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind; non-loopback needs --token."),
        port: int = typer.Option(8765, "--port", help="TCP port."),
        token: str | None = typer.Option(
            None, "--token", envvar="MMRETINAL_REVIEW_TOKEN", help="Access token required on every request."
        ),
        reviewer: str | None = typer.Option(None, "--reviewer", help="Default reviewer name (default: OS user)."),
        pdf_root: list[Path] = typer.Option([], "--pdf-root", help="Folder holding source PDFs (repeatable)."),
        image_root: list[Path] = typer.Option([], "--image-root", help="Folder of panel images (repeatable)."),
        cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Rendered page cache."),
    ) -> None:
        """Serve the review page (127.0.0.1 by default)."""
        import uvicorn

        from flows.review_app import create_review_app

        try:
            options = ReviewServeOptions(
                db=db, host=host, port=port, token=token, reviewer=reviewer,
                pdf_roots=pdf_root, image_roots=image_root, cache_dir=cache_dir,
            )
            check_serve_options(options)
        except ValueError as exc:
            _fail(str(exc))
        store = _store(options.db, must_exist=False)
        app = create_review_app(
            store,
            token=options.token,
            pdf_roots=options.pdf_roots,
            image_roots=options.image_roots,
            cache_dir=options.cache_dir,
            default_reviewer=options.reviewer,
        )
        shown_host = f"[{options.host}]" if ":" in options.host else options.host
        url = f"http://{shown_host}:{options.port}/"
        if options.token:
            url += f"?token={options.token}"
        typer.echo(f"review page: {url}")
        uvicorn.run(app, host=options.host, port=options.port, log_level="warning")

    @review_app.command("list")
    def list_command(
        build: str | None = typer.Argument(None, help="Build id: list its queue; all builds when omitted."),
        db: Path = typer.Option(DEFAULT_DB, "--db", envvar="MMRETINAL_REVIEW_DB", help=DB_HELP),
        undecided: bool = typer.Option(False, "--undecided", help="Only items without a verdict."),
    ) -> None:
        """List builds with their progress, or one build's queue."""
        store = _store(db)
        if build is None:
            builds = store.list_builds()
            if not builds:
                typer.echo("no builds registered")
            for info in builds:
                typer.echo(f"{info.build_id}\t{info.dataset}\t{info.created[:19]}\t{info.decided} / {info.total} decided")
            return
        if store.get_build(build) is None:
            _fail(f"unknown build {build!r}")
        for item in store.queue(build, include_decided=not undecided):
            pair, res = item.pair, item.resolution
            verdict = f"{res.review_status} by {res.reviewer}" if res.decided else "undecided"
            typer.echo(
                f"{item.position + 1}\t{item.item_key[:12]}\t{pair.pair_id}\tp.{pair.page}\t"
                f"{res.modality or pair.modality}\t{verdict}"
            )

    @review_app.command("export")
    def export_command(
        out: Path = typer.Argument(..., help="CSV file to write."),
        db: Path = typer.Option(DEFAULT_DB, "--db", envvar="MMRETINAL_REVIEW_DB", help=DB_HELP),
        build: str | None = typer.Option(None, "--build", help="Only this build (default: all builds)."),
    ) -> None:
        """Write the queue with current decisions to a CSV sheet for offline review."""
        store = _store(db)
        if build is not None and store.get_build(build) is None:
            _fail(f"unknown build {build!r}")
        count = store.export_csv(out, build)
        typer.echo(f"{out}: {count} items")

    @review_app.command("import")
    def import_command(
        sheet: Path = typer.Argument(..., help="CSV sheet filled in offline."),
        db: Path = typer.Option(DEFAULT_DB, "--db", envvar="MMRETINAL_REVIEW_DB", help=DB_HELP),
        reviewer: str | None = typer.Option(
            None, "--reviewer", help="Reviewer name for rows without one (default: the row's reviewer column)."
        ),
        force: bool = typer.Option(False, "--force", help="Apply rows even where the item changed since export."),
    ) -> None:
        """Append a sheet's decisions to the history; conflicts and unknown keys are reported."""
        store = _store(db)
        try:
            report = store.import_csv(sheet, reviewer or os.environ.get("MMRETINAL_REVIEWER"), force=force)
        except ValueError as exc:
            _fail(str(exc))
        typer.echo(
            f"{sheet}: {report.applied} applied, {report.unchanged} unchanged, {report.skipped_empty} empty, "
            f"{len(report.conflicts)} conflicts, {len(report.unknown_keys)} unknown keys, {len(report.errors)} errors"
        )
        for key in report.conflicts:
            typer.echo(f"conflict: {key} changed since export (kept in history; re-run with --force to apply)")
        for key in report.unknown_keys:
            typer.echo(f"unknown item key: {key}")
        for error in report.errors:
            typer.echo(f"error: {error}")
        if report.errors or report.conflicts or report.unknown_keys:
            raise typer.Exit(1)

