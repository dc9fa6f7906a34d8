"""`mmretinal serve-flows` (serve the flows from this process) and `mmretinal deploy-gpu-flows` (training on a GPU work pool)."""

from __future__ import annotations

from pathlib import Path

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

    @app.command("deploy-gpu-flows")
    def deploy_gpu_flows_command(
        pool: str = typer.Option("mmretinal-gpu", "--pool", help="Work pool the training deployments target (created when missing)."),
        pool_type: str = typer.Option("process", "--pool-type", help="'process' (default) or 'docker' (needs prefect-docker and --image)."),
        source: Path = typer.Option(None, "--source", help="Project checkout the runs start in on the GPU host (default: this checkout)."),
        image: str = typer.Option(None, "--image", help="Docker image with the project installed (docker pools)."),
        env: list[str] = typer.Option([], "--env", help="KEY=VALUE set in each run's environment, e.g. CUDA_VISIBLE_DEVICES=0; repeatable."),
        pretrain_on_publish: bool = typer.Option(
            False, "--pretrain-on-publish", help="Enable the trigger that pretrains on each published manifest version."
        ),
    ) -> None:
        """Register pretrain/keepfit, pretrain/keepfit-ffa and evaluate/keepfit on a work pool for GPU workers."""
        from flows.deployments import GpuPoolOptions, deploy_gpu_flows

        if pool_type not in ("process", "docker"):
            typer.echo(f"error: --pool-type must be 'process' or 'docker', not {pool_type!r}", err=True)
            raise typer.Exit(2)
        bad = [item for item in env if "=" not in item]
        if bad:
            typer.echo(f"error: --env expects KEY=VALUE, got {bad[0]!r}", err=True)
            raise typer.Exit(2)
        options = GpuPoolOptions(
            work_pool=pool, pool_type=pool_type, image=image, pretrain_on_publish=pretrain_on_publish,
            job_variables={"env": dict(item.split("=", 1) for item in env)} if env else {},
            **({"source": source} if source else {}),
        )
        try:
            ids = deploy_gpu_flows(options)
        except RuntimeError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        for name, deployment_id in ids.items():
            typer.echo(f"{name}\t{deployment_id}\twork pool {pool}")
        typer.echo(f"start a worker on the GPU host: prefect worker start --pool {pool}")
