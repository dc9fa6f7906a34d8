"""`mmretinal build`, `publish`, `score` and `demo`.

`build` and `publish` run the Prefect flows of flows/build_flow.py; `demo` calls the pipeline
directly so that it needs no Prefect server.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from flows.commands_extract import OcrEngineName, check_ocr_engine, expand_pdf_inputs


def build_options(
    dataset: str,
    work_dir: Path,
    registry: Path,
    image_store: Path | None,
    translation_packages: list[Path] | None,
    review_threshold: float | None = None,
    ocr_engine: str | None = None,
):
    from curation.build import BuildOptions

    options = BuildOptions(
        dataset=dataset,
        work_dir=work_dir,
        registry_root=registry,
        image_store=image_store,
        translation_packages=translation_packages or [],
    )
    if ocr_engine is not None:
        options.extract.ocr.engine = ocr_engine
    if review_threshold is not None:
        options.align.review_threshold = review_threshold
    return options


def print_build_summary(record, published) -> None:
    """A readable summary of a build: per book, then totals and where the output is."""
    from collections import Counter

    typer.echo(f"\nbuild {record.build_id}")
    typer.echo(f"{'book':24} {'status':8} {'pages':>5} {'scanned':>7} {'figures':>7} {'pairs':>5}  CFP/FFA/OCT/other  queued")
    for book in record.books:
        if book.error:
            typer.echo(f"{book.book or Path(book.pdf).name:24} {'failed':8} {book.error}")
            continue
        modality = Counter(p.modality for p in book.pairs)
        queued = sum(p.review_status == "queued" for p in book.pairs)
        mods = "/".join(str(modality.get(m, 0)) for m in ("CFP", "FFA", "OCT", "other"))
        cached = " (cached)" if book.cached else ""
        typer.echo(
            f"{book.book:24} {book.status.value:8} {book.pages:>5} {book.scanned_pages:>7} {book.figures:>7}"
            f" {len(book.pairs):>5}  {mods:17} {queued:>6}{cached}"
        )
    pairs = record.pairs
    queued = sum(p.review_status == "queued" for p in pairs)
    typer.echo(f"pairs: {len(pairs)}, auto-accepted: {len(pairs) - queued}, queued for review: {queued}")
    if published:
        verb = "unchanged, already" if published.unchanged else "published"
        typer.echo(f"{verb} {published.ref}: {published.n_pairs} pairs -> {published.path}")
        typer.echo(f"fingerprint {published.fingerprint}")


def register(app: typer.Typer) -> None:
    @app.command()
    def build(
        pdfs: list[Path] = typer.Argument(..., help="Atlas PDFs, or directories holding them."),
        dataset: str = typer.Option("mm-retinal", help="Dataset name to publish."),
        work_dir: Path = typer.Option(Path(".mmretinal"), help="Work directory (extraction, caches, review database)."),
        registry: Path = typer.Option(Path("data_manifests"), envvar="MMRETINAL_REGISTRY", help="Manifest registry root."),
        image_store: Path = typer.Option(None, envvar="MMRETINAL_IMAGE_STORE", help="Content-addressed image store."),
        translation_package: list[Path] = typer.Option(None, help=".argosmodel file(s) to install for translation."),
        review_threshold: float = typer.Option(None, help="Alignment score under which pairs are queued for review."),
        task_runner: str = typer.Option(
            "threads", envvar="MMRETINAL_TASK_RUNNER", help="Run the per-PDF tasks in 'threads' or 'processes'."
        ),
        workers: int = typer.Option(None, envvar="MMRETINAL_TASK_WORKERS", help="Parallel PDFs (default: per runner)."),
        no_publish: bool = typer.Option(False, "--no-publish", help="Record the build (review queue) without publishing."),
        ocr_engine: OcrEngineName = typer.Option(
            "rapidocr", help="OCR engine for scanned pages and panel letters (paddleocr needs the paddle extra)."
        ),
    ) -> None:
        """Run steps 1-4 on atlas PDFs as the Prefect flow `build-dataset` and publish a new version.

        Runs report to the Prefect server in $PREFECT_API_URL when set, else to a temporary local one.
        """
        from flows.build_flow import build_dataset, make_task_runner
        from flows.prefect_env import quiet_client_loggers

        quiet_client_loggers()
        options = build_options(
            dataset, work_dir, registry, image_store, translation_package, review_threshold, ocr_engine.value
        )
        if ocr_engine is OcrEngineName.paddleocr:
            check_ocr_engine(options.extract.ocr)
        flow = build_dataset.with_options(task_runner=make_task_runner(task_runner, workers))
        result = flow(pdfs=expand_pdf_inputs(pdfs), options=options, publish=not no_publish)
        record = result.record
        print_build_summary(record, result.published)
        if record.failures or (result.published is None and not no_publish):
            raise typer.Exit(1)

    @app.command()
    def publish(
        build_id: str = typer.Argument(None, help="Build to publish (default: the latest build)."),
        dataset: str = typer.Option("mm-retinal", help="Dataset name to publish."),
        work_dir: Path = typer.Option(Path(".mmretinal"), help="Work directory of the build."),
        registry: Path = typer.Option(Path("data_manifests"), envvar="MMRETINAL_REGISTRY", help="Manifest registry root."),
        image_store: Path = typer.Option(None, envvar="MMRETINAL_IMAGE_STORE", help="Content-addressed image store."),
        translation_package: list[Path] = typer.Option(None, help=".argosmodel file(s) to install for translation."),
    ) -> None:
        """Apply review decisions to a build and publish it as the next version (Prefect flow `publish-manifest`)."""
        from flows.build_flow import publish_manifest
        from flows.prefect_env import quiet_client_loggers

        quiet_client_loggers()
        options = build_options(dataset, work_dir, registry, image_store, translation_package)
        published = publish_manifest(build_id=build_id, options=options)["published"]
        verb = "unchanged, already" if published["unchanged"] else "published"
        typer.echo(f"{verb} {published['ref']}: {published['n_pairs']} pairs -> {published['path']}")

    @app.command()
    def score(
        version: str = typer.Argument(..., help="Published version, e.g. mm-retinal/v1."),
        truth: Path = typer.Option(..., help="truth.jsonl (from `mmretinal sample-atlas`)."),
        registry: Path = typer.Option(Path("data_manifests"), envvar="MMRETINAL_REGISTRY", help="Manifest registry root."),
    ) -> None:
        """Score a published version against a truth file; prints JSON."""
        from testbed.sample_atlas import read_truth
        from testbed.scoring import score_manifest

        typer.echo(json.dumps(score_manifest(read_truth(truth), registry, version), indent=2, ensure_ascii=False))

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
        options = build_options("mm-retinal", out / "work", out / "data_manifests", None, None)
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
