"""`mmretinal pretrain CONFIG [--set key=value ...]`: KeepFIT pretraining from the shell."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def pretrain(
        config: str = typer.Argument(..., help="Pretraining YAML path or bundled name (keepfit-cfp, keepfit-ffa, tiny)."),
        set_: list[str] = typer.Option(
            [], "--set", "-s", help="Override a setting with a dotted key, e.g. --set optim.lr=3e-4; repeatable."
        ),
        knowledge: str = typer.Option(
            None, "--knowledge", help="Domain-knowledge YAML (category -> descriptions) for the FLAIR captions."
        ),
        allow_random_init: bool = typer.Option(
            False, "--allow-random-init", help="Start towers whose pretrained weights are not found from random weights."
        ),
        print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
        prefect: bool = typer.Option(False, "--prefect", help="Run as the Prefect `pretrain` flow."),
    ) -> None:
        """Pretrain KeepFIT on FLAIR dataframes (or, with keepfit-ffa, FFA-IR reports) plus a published MM-Retinal version.

        For several GPUs run `torchrun --nproc_per_node N -m keepfit.trainer CONFIG key=value ...`.
        """
        import json

        import yaml
        from pydantic import ValidationError

        from keepfit.trainer import load_pretrain_config, run_pretraining

        settings = list(set_)
        if knowledge is not None:
            settings.append(f"flair.domain_knowledge_path={knowledge}")
        if allow_random_init:
            settings.append("allow_random_init=true")
        try:
            options = load_pretrain_config(config, settings)
        except (FileNotFoundError, ValueError, ValidationError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        if print_config:
            typer.echo(yaml.safe_dump(options.model_dump(mode="json"), sort_keys=False))
            return
        if prefect:
            from flows.pretrain import pretrain_flow

            summary = pretrain_flow(config=config, overrides=settings)
        else:
            try:
                result = run_pretraining(options)
            except (FileNotFoundError, ValueError) as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(2) from exc
            summary = {
                "checkpoint": str(result.checkpoint) if result.checkpoint else None,
                "step": result.step,
                "total_steps": result.total_steps,
                "stop_reason": result.stop_reason,
            }
        typer.echo(json.dumps(summary, indent=2, default=str))
        if summary["stop_reason"] not in ("completed", "stop_after_steps"):
            raise typer.Exit(3)
