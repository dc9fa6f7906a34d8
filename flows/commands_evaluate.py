"""`mmretinal evaluate`: downstream evaluation of checkpoints; prints the summary table."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def evaluate(
        checkpoint: list[str] = typer.Option(
            ..., "--checkpoint", "-c", help="Checkpoint .pth or model config name; repeat to compare checkpoints."
        ),
        experiment: list[str] = typer.Option(..., "--experiment", "-e", help="Experiment name; repeatable."),
        method: list[str] = typer.Option(
            ["zero_shot"],
            "--method",
            "-m",
            help="zero_shot, linear_probe, clip_adapter, tip_adapter, tip_adapter_f, fine_tune or lp_fine_tune; "
            "repeatable.",
        ),
        data_root: Path = typer.Option(Path("data"), "--data-root", help="Directory image paths are relative to."),
        dataframe_dir: Path = typer.Option(None, "--dataframe-dir", help="Directory of the CSVs (default: data root)."),
        folds: int = typer.Option(None, "--folds", help="Folds (default: 1 for zero-shot, 5 otherwise)."),
        train: str = typer.Option(None, "--train", help="Train samples per class, e.g. '80%' or '5' (few-shot)."),
        val: str = typer.Option(None, "--val", help="Validation samples per class, e.g. '10%'."),
        test: str = typer.Option(None, "--test", help="Test samples per class, e.g. '20%'."),
        kfold: bool = typer.Option(False, "--kfold", help="True stratified k-fold instead of repeated random splits."),
        registry: list[Path] = typer.Option([], "--registry", help="Extra experiment registry YAML; repeatable."),
        out: Path = typer.Option(Path("reports/evaluation"), "--out", "-o", help="Report directory."),
        cache_dir: Path = typer.Option(None, "--cache-dir", help="Feature cache (default: <out>/feature-cache)."),
        device: str = typer.Option("cpu", "--device", help="Torch device, e.g. cpu or cuda."),
        no_domain_knowledge: bool = typer.Option(
            False, "--no-domain-knowledge", help="Class prototypes from class names only."
        ),
        probe_features: str = typer.Option(
            None, "--probe-features", help="Linear probe on 'raw' (default) or 'projected' features."
        ),
        profile: str = typer.Option(
            "reproduce", "--profile", help="Method settings: 'reproduce' (the release, default), 'improved' or a YAML."
        ),
        knowledge: Path = typer.Option(
            None, "--knowledge", help="Domain-knowledge YAML for class prompts (default: the bundled dictionary)."
        ),
        experiment_test: list[str] = typer.Option(
            [], "--experiment-test", help="Also test each fitted model on all images of this experiment; repeatable."
        ),
        tta: bool = typer.Option(False, "--tta", help="Test-time augmentation for the frozen-encoder methods."),
        prefect: bool = typer.Option(False, "--prefect", help="Run as the Prefect flow and publish artifacts."),
    ) -> None:
        """Evaluate checkpoints on downstream experiments and print mean ± std over folds."""
        from keepfit.evaluation import METHOD_NAMES, EvaluationRequest, MethodOptions, SplitOptions

        unknown = [name for name in method if name not in METHOD_NAMES]
        if unknown:
            typer.echo(f"error: unknown method(s) {unknown}; choose from {', '.join(METHOD_NAMES)}", err=True)
            raise typer.Exit(2)
        split = None
        if any(value is not None for value in (train, val, test)) or kfold:
            split = SplitOptions(
                scheme="stratified_kfold" if kfold else "repeated_random",
                train=train or ("100%" if kfold else "80%"),
                val=val or "0%",
                test=test or "20%",
                folds=folds or 5,
            )
        from pydantic import ValidationError

        from keepfit.profiles import method_options_tree

        explicit: dict = {"device": device, "prompts": {}, "linear_probe": {}}
        if no_domain_knowledge:
            explicit["prompts"]["domain_knowledge"] = False
        if knowledge is not None:
            if not knowledge.is_file():
                typer.echo(f"error: {knowledge}: domain-knowledge file not found", err=True)
                raise typer.Exit(2)
            explicit["prompts"]["knowledge_path"] = str(knowledge)
        if probe_features is not None:
            explicit["linear_probe"]["features"] = probe_features
        if tta:
            explicit["tta"] = True
        try:
            method_options = MethodOptions.model_validate(method_options_tree(profile, explicit))
        except (FileNotFoundError, ValueError, ValidationError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        request = EvaluationRequest(
            checkpoints=checkpoint,
            experiments=experiment,
            methods=method,
            data_root=str(data_root),
            dataframe_dir=str(dataframe_dir) if dataframe_dir else None,
            out_dir=str(out),
            cache_dir=str(cache_dir) if cache_dir else None,
            registry_paths=[str(path) for path in registry],
            split=split,
            folds=folds,
            method_options=method_options,
            test_experiments=list(experiment_test),
        )
        if prefect:
            from flows.evaluate import evaluate as evaluate_flow

            outcome = evaluate_flow(request)
            typer.echo(outcome["summary_markdown"])
            typer.echo(f"reports: {outcome['out_dir']}; artifacts: {', '.join(outcome['artifact_keys'])}")
            return
        from keepfit.evaluation import FeatureCache, evaluate_checkpoint, summary_markdown, write_reports

        options = request.evaluation_options()
        cache = FeatureCache(options.cache_dir)
        results = []
        for item in checkpoint:
            try:
                results.extend(evaluate_checkpoint(item, experiment, method, options, cache))
            except (FileNotFoundError, KeyError, ValueError) as exc:
                typer.echo(f"error: {item}: {exc}", err=True)
                raise typer.Exit(1) from exc
        written = write_reports(results, out)
        typer.echo(summary_markdown(results))
        typer.echo(f"reports: {out} (summary {written['summary']}); feature cache {cache.hits} hit(s), "
                   f"{cache.misses} miss(es)")
