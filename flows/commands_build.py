"""`mmretinal build`, `publish`, `score` and `demo`.

`build` and `publish` run the Prefect flows of flows/build_flow.py; `demo` calls the pipeline
directly so that it needs no Prefect server.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from flows.commands_extract import check_ocr_engine, checked_pdf_inputs
from foundation.inputs import InputProblem


def debug_enabled() -> bool:
    """Whether the global --debug flag (or $MMRETINAL_DEBUG) asked for tracebacks."""
    from flows.cli import debug_enabled as cli_debug_enabled

    return cli_debug_enabled()


BUILD_OVERRIDES = {
    "dataset": "dataset",
    "work_dir": "work_dir",
    "registry": "registry_root",
    "image_store": "image_store",
    "translation_package": "translation_packages",
    "review_threshold": "align.review_threshold",
    "ocr_engine": "extract.ocr.engine",
    "task_runner": "runner.kind",
    "workers": "runner.workers",
    "dask_address": "runner.dask_address",
    "allow_repaired": "extract.allow_repaired",
}
"""CLI flag (parameter name) -> BuildOptions key; each flag's help is that field's description."""


def _help(flag: str) -> str:
    from curation.build import BuildOptions
    from flows.options import field_help

    return field_help(BuildOptions, BUILD_OVERRIDES[flag])


def build_options(config: Path | None = None, assignments: list[str] | None = None, **flags):
    """BuildOptions from a config file, the dedicated flags (None = not given) and `--set`s."""
    from curation.build import BuildOptions
    from flows.options import resolve_options

    unknown = set(flags) - set(BUILD_OVERRIDES)
    if unknown:
        raise ValueError(f"unknown build flags: {', '.join(sorted(unknown))}")
    overrides = {BUILD_OVERRIDES[name]: value for name, value in flags.items()}
    if overrides.get("translation_packages") == []:
        overrides["translation_packages"] = None
    return resolve_options(BuildOptions, config, overrides, assignments)


def print_build_summary(record, published, refused: list[InputProblem] = ()) -> None:
    """A readable summary of a build: per book, inputs refused before reading, totals, possible
    misses and where the output is."""
    from collections import Counter

    from curation.build import step_seconds

    typer.echo(f"\nbuild {record.build_id}")
    typer.echo(
        f"{'book':24} {'status':8} {'pages':>5} {'scanned':>7} {'figures':>7} {'pairs':>5}  CFP/FFA/OCT/other  queued  misses"
    )
    for doc in record.documents:
        if doc.failed:
            typer.echo(f"{doc.book:24} {'failed':8} {doc.error}")
            continue
        modality = Counter(p.modality for p in doc.pairs)
        queued = sum(p.review_status == "queued" for p in doc.pairs)
        mods = "/".join(str(modality.get(m, 0)) for m in ("CFP", "FFA", "OCT", "other"))
        misses = sum(r.proposal is not None for r in doc.rejects)
        cached = " (cached)" if doc.cached else ""
        typer.echo(
            f"{doc.book:24} {doc.status.value:8} {doc.page_count:>5} {doc.scanned_pages:>7} {doc.figures:>7}"
            f" {len(doc.pairs):>5}  {mods:17} {queued:>6}  {misses:>6}{cached}"
        )
        for error in doc.errors:
            typer.echo(f"{'':24} {'':8} {error}")
    for problem in refused:
        typer.echo(f"{Path(problem.path).name:24} {'refused':8} {problem.reason}")
    pairs = record.pairs
    queued = sum(p.review_status == "queued" for p in pairs)
    typer.echo(
        f"pairs: {len(pairs)}, auto-accepted: {len(pairs) - queued}, queued for review: {queued}, "
        f"possible misses to review: {len(record.proposals)}"
    )
    seconds = step_seconds(record.documents)
    if seconds:
        typer.echo("seconds per step: " + ", ".join(f"{step} {value:.2f}" for step, value in seconds.items()))
    if published:
        verb = "unchanged, already" if published.unchanged else "published"
        typer.echo(f"{verb} {published.ref}: {published.n_pairs} pairs -> {published.path}")
        typer.echo(f"fingerprint {published.fingerprint}")


def register(app: typer.Typer) -> None:
    @app.command()
    def build(
        pdfs: list[Path] = typer.Argument(..., help="Atlas PDFs, or directories holding them."),
        config: Path = typer.Option(None, "--config", "-c", help="YAML/JSON file of build options (see `mmretinal options build`)."),
        assignments: list[str] = typer.Option(None, "--set", help="Set any build option: KEY=VALUE (e.g. align.cluster_gap=12)."),
        dataset: str = typer.Option(None, help=_help("dataset")),
        work_dir: Path = typer.Option(None, help=_help("work_dir")),
        registry: Path = typer.Option(None, envvar="MMRETINAL_REGISTRY", help=_help("registry")),
        image_store: Path = typer.Option(None, envvar="MMRETINAL_IMAGE_STORE", help=_help("image_store")),
        translation_package: list[Path] = typer.Option(None, help=_help("translation_package")),
        review_threshold: float = typer.Option(None, help=_help("review_threshold")),
        ocr_engine: str = typer.Option(None, help=_help("ocr_engine")),
        task_runner: str = typer.Option(None, help=_help("task_runner")),
        workers: int = typer.Option(None, help=_help("workers")),
        dask_address: str = typer.Option(None, help=_help("dask_address")),
        no_publish: bool = typer.Option(False, "--no-publish", help="Record the build (review queue) without publishing."),
        print_config: bool = typer.Option(False, "--print-config", help="Print the resolved options as YAML and stop."),
        allow_repaired: bool = typer.Option(False, "--allow-repaired", help=_help("allow_repaired")),
        no_progress: bool = typer.Option(
            False, "--no-progress", help="No live progress bar (it is shown only on a terminal anyway)."
        ),
    ) -> None:
        """Run steps 1-4 on atlas PDFs as the Prefect flow `build-dataset` and publish a new version.

        Runs report to the Prefect server in $PREFECT_API_URL when set, else to a temporary local one.
        On a terminal, a live bar shows pages done over all PDFs, OCR pages apart, the ETA and the
        PDF being worked on.
        """
        from flows.options import options_yaml

        options = build_options(
            config, assignments, dataset=dataset, work_dir=work_dir, registry=registry, image_store=image_store,
            translation_package=translation_package, review_threshold=review_threshold, ocr_engine=ocr_engine,
            task_runner=task_runner, workers=workers, dask_address=dask_address, allow_repaired=allow_repaired or None,
        )
        if print_config:
            typer.echo(options_yaml(options), nl=False)
            return
        import shutil

        from flows.build_flow import build_dataset
        from flows.build_progress import build_progress
        from flows.prefect_env import console_without_tracebacks, quiet_client_loggers, server_for_this_process
        from foundation.files import OwnedDir

        quiet_client_loggers()
        if not debug_enabled():
            console_without_tracebacks()
        if options.extract.ocr.engine == "paddleocr":
            check_ocr_engine(options.extract.ocr)
        files, refused = checked_pdf_inputs(pdfs)
        if not files:
            raise ValueError(f"nothing to build: none of the {len(pdfs)} input(s) is a readable PDF")
        progress = OwnedDir(options.work_dir.absolute() / "progress", prefix="", suffix="")
        try:
            with (
                server_for_this_process(),
                build_progress(files, options.extract, progress.path, enabled=not no_progress) as shown_dir,
            ):
                result = build_dataset(pdfs=files, options=options, publish=not no_publish, progress_dir=shown_dir)
        finally:
            progress.release()
            shutil.rmtree(progress.path, ignore_errors=True)
        record = result.record
        print_build_summary(record, result.published, refused)
        if result.publish_error:
            typer.echo(f"error: {result.publish_error}", err=True)
        if refused or record.failures or (result.published is None and not no_publish):
            raise typer.Exit(1)

    @app.command()
    def publish(
        build_id: str = typer.Argument(None, help="Build to publish (default: the latest build)."),
        config: Path = typer.Option(None, "--config", "-c", help="YAML/JSON file of build options."),
        assignments: list[str] = typer.Option(None, "--set", help="Set any build option: KEY=VALUE."),
        dataset: str = typer.Option(None, help=_help("dataset")),
        work_dir: Path = typer.Option(None, help=_help("work_dir")),
        registry: Path = typer.Option(None, envvar="MMRETINAL_REGISTRY", help=_help("registry")),
        image_store: Path = typer.Option(None, envvar="MMRETINAL_IMAGE_STORE", help=_help("image_store")),
        translation_package: list[Path] = typer.Option(None, help=_help("translation_package")),
    ) -> None:
        """Apply review decisions to a build and publish it as the next version (Prefect flow `publish-manifest`)."""
        from flows.build_flow import publish_manifest
        from flows.prefect_env import console_without_tracebacks, quiet_client_loggers, server_for_this_process

        quiet_client_loggers()
        if not debug_enabled():
            console_without_tracebacks()
        options = build_options(
            config, assignments, dataset=dataset, work_dir=work_dir, registry=registry, image_store=image_store,
            translation_package=translation_package,
        )
        with server_for_this_process():
            published = publish_manifest(build_id=build_id, options=options)
        verb = "unchanged, already" if published.unchanged else "published"
        typer.echo(f"{verb} {published.ref}: {published.n_pairs} pairs -> {published.path}")

    @app.command("options")
    def options_command(
        what: str = typer.Argument("build", help="Which options: 'build'."),
    ) -> None:
        """Every option of a config file, with its default and description."""
        from curation.build import BuildOptions
        from flows.options import option_rows

        if what != "build":
            raise ValueError(f"unknown options group {what!r}; expected 'build'")
        for key, default, description in option_rows(BuildOptions):
            typer.echo(f"{key:38} {default:24} {description}")

    @app.command()
    def score(
        version: str = typer.Argument(..., help="Published version, e.g. mm-retinal/v1."),
        truth: Path = typer.Option(..., help="truth.jsonl (from `mmretinal sample-atlas`)."),
        registry: Path = typer.Option(Path("data_manifests"), envvar="MMRETINAL_REGISTRY", help="Manifest registry root."),
    ) -> None:
        """Score a published version against a truth file; prints JSON."""
        from testbed.scoring import score_truth_file

        typer.echo(json.dumps(score_truth_file(truth, registry, version), indent=2, ensure_ascii=False))

    @app.command()
    def demo(
        out: Path = typer.Option(Path("demo-output"), help="Where the sample atlas, work files and registry go."),
        seed: int = typer.Option(0, help="Seed of the sample atlas."),
    ) -> None:
        """Generate the sample atlas, build and publish it, and score it against its truth."""
        from curation.build import run_build
        from testbed.sample_atlas import generate_sample_atlas, read_truth
        from testbed.scoring import score_manifest

        atlas = generate_sample_atlas(out / "atlas", seed=seed)
        typer.echo(f"sample atlas: {len(atlas.pdfs)} PDFs in {atlas.out_dir}")
        options = build_options(work_dir=out / "work", registry=out / "data_manifests")
        record, published = run_build(atlas.pdfs, options)
        print_build_summary(record, published)
        if published is None:
            raise typer.Exit(1)
        scores = score_manifest(read_truth(atlas.truth_path), options.registry_root, published.ref)
        pairs, captions = scores["pairs"]["all"], scores["captions"]
        typer.echo(
            f"score vs truth: pair F1 {pairs['f1']}, caption exact match en {captions['en']['all']['exact_match']}"
            f" / zh {captions['zh']['all']['exact_match']}, modality accuracy {scores['modality']['accuracy']},"
            f" queued {scores['review']['share_queued']}"
        )
        typer.echo(f"\noutput: {out.resolve()}")
        typer.echo(f"  manifest: {published.path}/manifest.parquet")
        typer.echo(f"  review:   mmretinal review serve --db {options.review_db}")
