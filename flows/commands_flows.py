"""`mmretinal serve-flows`: serve the build, publish, pretrain and evaluate deployments."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("serve-flows")
    def serve_flows_command(
        pretrain_on_publish: bool = typer.Option(
            False,
            "--pretrain-on-publish",
            envvar="MMRETINAL_PRETRAIN_ON_PUBLISH",
            help="Enable the trigger that starts pretraining on each published manifest version.",
        ),
        training: bool = typer.Option(True, "--training/--no-training", help="Also serve the pretrain and evaluate flows."),
        limit: int = typer.Option(None, "--limit", help="Most flow runs at once."),
    ) -> None:
        """Serve the flows as deployments on the Prefect server in $PREFECT_API_URL (runs until stopped)."""
        from flows.deployments import ServeOptions, serve_flows

        try:
            serve_flows(ServeOptions(pretrain_on_publish=pretrain_on_publish, include_training=training, limit=limit))
        except RuntimeError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
