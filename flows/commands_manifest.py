"""`mmretinal manifest list|show|diff|verify` and `mmretinal export`: the registry from the shell."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import NoReturn

import typer

ROOT_HELP = "Registry root (default: ./data_manifests, or $MMRETINAL_REGISTRY)."
STORE_HELP = "Image store (default: the one the version recorded, or $MMRETINAL_IMAGE_STORE)."


class ExportFormat(str, Enum):
    flair_csv = "flair-csv"
    ffa_ir = "ffa-ir"
    hf = "hf"
    webdataset = "webdataset"
    croissant = "croissant"


class CaptionLanguage(str, Enum):
    en = "en"
    zh = "zh"


class LinkMode(str, Enum):
    copy = "copy"
    symlink = "symlink"


def _root(registry: Path | None, root_alias: Path | None = None) -> Path:
    """The registry root: --root (old spelling, when given) or --registry / $MMRETINAL_REGISTRY or the default."""
    from data_manifests.registry import default_registry_root

    if root_alias is not None:
        return root_alias
    return registry if registry is not None else default_registry_root()


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _format_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {value}" for key, value in counts.items()) or "-"


def register(app: typer.Typer) -> None:
    manifest_app = typer.Typer(help="Inspect, compare and verify published dataset versions.", no_args_is_help=True)
    app.add_typer(manifest_app, name="manifest")

    @manifest_app.command("list")
    def list_command(
        dataset: str | None = typer.Argument(None, help="Dataset name, e.g. mm-retinal; all datasets when omitted."),
        registry: Path | None = typer.Option(None, "--registry", envvar="MMRETINAL_REGISTRY", help=ROOT_HELP),
        root: Path | None = typer.Option(None, "--root", hidden=True, help="Old spelling of --registry."),
    ) -> None:
        """List published versions with their size, parent and fingerprint."""
        from data_manifests.registry import RegistryError, list_datasets, list_versions, read_meta

        registry_root = _root(registry, root)
        try:
            datasets = [dataset] if dataset else list_datasets(registry_root)
            if not datasets:
                typer.echo(f"no published datasets under {registry_root}")
                return
            for name in datasets:
                versions = list_versions(registry_root, name)
                if not versions:
                    typer.echo(f"{name}: no published versions")
                    continue
                for version in versions:
                    meta = read_meta(registry_root / name / version)
                    typer.echo(
                        f"{name}/{version}\t{meta.created}\t{meta.n_pairs} pairs\t"
                        f"parent {meta.parent or '-'}\t{meta.content_fingerprint[:12]}"
                    )
        except RegistryError as exc:
            _fail(str(exc))

    @manifest_app.command("show")
    def show_command(
        ref: str = typer.Argument(..., help="Version, e.g. mm-retinal/v1 or mm-retinal/latest."),
        rows: int = typer.Option(0, "--rows", "-n", min=0, help="Also print the first N rows."),
        as_json: bool = typer.Option(False, "--json", help="Print manifest.json as is."),
        registry: Path | None = typer.Option(None, "--registry", envvar="MMRETINAL_REGISTRY", help=ROOT_HELP),
        root: Path | None = typer.Option(None, "--root", hidden=True, help="Old spelling of --registry."),
    ) -> None:
        """Show a version's provenance and counts."""
        from data_manifests.registry import RegistryError, load_manifest, read_index
        from data_manifests.schema import manifest_fingerprint

        registry_root = _root(registry, root)
        try:
            loaded = load_manifest(registry_root, ref)
            recorded = read_index(registry_root, loaded.meta.dataset).get(loaded.meta.version)
        except RegistryError as exc:
            _fail(str(exc))
        meta = loaded.meta
        if recorded is None or recorded.manifest_fingerprint != manifest_fingerprint(meta):
            typer.secho(
                f"warning: {loaded.path / 'manifest.json'} does not match what the registry index recorded "
                f"at publish; run `mmretinal manifest verify {loaded.ref}`",
                err=True, fg=typer.colors.YELLOW,
            )
        if as_json:
            typer.echo(json.dumps(meta.model_dump(mode="json"), indent=2, ensure_ascii=False))
        else:
            typer.echo(f"{meta.dataset}/{meta.version}  (parent {meta.parent or '-'})")
            typer.echo(f"created:             {meta.created}")
            typer.echo(f"pipeline version:    {meta.pipeline_version}")
            typer.echo(f"config hash:         {meta.config_hash}")
            typer.echo(f"content fingerprint: {meta.content_fingerprint}")
            typer.echo(f"image store:         {loaded.image_store}")
            typer.echo(f"pairs:               {meta.n_pairs}")
            typer.echo(f"by modality:         {_format_counts(meta.counts.by_modality)}")
            typer.echo(f"by book:             {_format_counts(meta.counts.by_book)}")
            typer.echo(f"by review status:    {_format_counts(meta.counts.by_review_status)}")
            typer.echo(f"excluded:            {meta.excluded.n_excluded} ({_format_counts(meta.excluded.by_reason)})")
            for name, sha in meta.input_pdfs.items():
                typer.echo(f"input pdf:           {name}  {sha}")
        if rows:
            columns = ["pair_id", "modality", "review_status", "alignment_score", "caption_en"]
            frame = loaded.table.slice(0, rows).select(columns).to_pandas()
            frame["caption_en"] = [" ".join((text or "").split()) for text in frame["caption_en"]]
            typer.echo(frame.to_string(index=False, max_colwidth=60))

    @manifest_app.command("diff")
    def diff_command(
        a: str = typer.Argument(..., help="Older version, e.g. mm-retinal/v1."),
        b: str = typer.Argument(..., help="Newer version, e.g. mm-retinal/v2."),
        registry: Path | None = typer.Option(None, "--registry", envvar="MMRETINAL_REGISTRY", help=ROOT_HELP),
        root: Path | None = typer.Option(None, "--root", hidden=True, help="Old spelling of --registry."),
    ) -> None:
        """List pairs added, removed and changed (with the changed columns) between two versions."""
        from data_manifests.compare import diff
        from data_manifests.registry import RegistryError

        try:
            result = diff(a, b, root=_root(registry, root))
        except RegistryError as exc:
            _fail(str(exc))
        for pair_id in result.added:
            typer.echo(f"+ {pair_id}")
        for pair_id in result.removed:
            typer.echo(f"- {pair_id}")
        for change in result.changed:
            typer.echo(f"~ {change.pair_id}: {', '.join(change.columns)}")
        typer.echo(
            f"{result.a} -> {result.b}: {len(result.added)} added, {len(result.removed)} removed, "
            f"{len(result.changed)} changed"
        )

    @manifest_app.command("verify")
    def verify_command(
        ref: str = typer.Argument(..., help="Version to check, e.g. mm-retinal/v1."),
        registry: Path | None = typer.Option(None, "--registry", envvar="MMRETINAL_REGISTRY", help=ROOT_HELP),
        root: Path | None = typer.Option(None, "--root", hidden=True, help="Old spelling of --registry."),
        image_store: Path | None = typer.Option(None, "--image-store", help=STORE_HELP),
    ) -> None:
        """Re-hash every image and the manifest; exit 1 when anything is missing or altered."""
        from data_manifests.registry import RegistryError
        from data_manifests.verify import verify

        try:
            report = verify(_root(registry, root), ref, image_store=image_store)
        except RegistryError as exc:
            _fail(str(exc))
        for problem in report.problems:
            typer.echo(problem.line())
        typer.echo(
            f"{report.ref}: {report.n_pairs} pairs, {report.n_images_checked} images checked, "
            f"{len(report.problems)} problem(s)"
        )
        if not report.ok:
            raise typer.Exit(1)

    @manifest_app.command("gc")
    def gc_command(
        registry: Path | None = typer.Option(None, "--registry", envvar="MMRETINAL_REGISTRY", help=ROOT_HELP),
        image_store: Path | None = typer.Option(None, "--image-store", envvar="MMRETINAL_IMAGE_STORE", help=STORE_HELP),
        dry_run: bool = typer.Option(False, "--dry-run", help="List what would be removed; remove nothing."),
        min_age: float = typer.Option(
            3600.0, "--min-age", min=0, help="Keep unreferenced images younger than this many seconds (a publish under way)."
        ),
    ) -> None:
        """Remove store images that no published version references (left by a publish that failed)."""
        from data_manifests.gc import collect_garbage
        from data_manifests.registry import RegistryError

        try:
            report = collect_garbage(_root(registry), image_store, dry_run=dry_run, min_age_seconds=min_age)
        except (RegistryError, OSError) as exc:
            _fail(str(exc))
        for relative in report.unreferenced:
            typer.echo(f"{'would remove' if dry_run else 'removed'} {report.store / relative}")
        verb = "would be removed" if dry_run else "removed"
        typer.echo(
            f"{report.store}: {report.referenced} image(s) referenced by versions; {len(report.unreferenced)} unreferenced "
            f"({report.bytes / 1e6:.2f} MB) {verb}; {report.young} younger than {min_age:g} s kept"
        )

    @manifest_app.command("report")
    def report_command(
        ref: str = typer.Argument(..., help="Version to report on, e.g. mm-retinal/v1."),
        out: Path | None = typer.Option(None, "--out", help="HTML file to write (default: ./<dataset>-<version>-report.html)."),
        examples: int = typer.Option(6, "--examples", min=0, max=50, help="Example pairs per modality."),
        registry: Path | None = typer.Option(None, "--registry", envvar="MMRETINAL_REGISTRY", help=ROOT_HELP),
        root: Path | None = typer.Option(None, "--root", hidden=True, help="Old spelling of --registry."),
        image_store: Path | None = typer.Option(None, "--image-store", help=STORE_HELP),
    ) -> None:
        """Write an HTML page with plots and example pairs of a version."""
        from data_manifests.registry import RegistryError, load_manifest
        from data_manifests.report import ReportOptions, write_report

        try:
            loaded = load_manifest(_root(registry, root), ref, image_store=image_store)
        except RegistryError as exc:
            _fail(str(exc))
        target = out or Path(f"{loaded.meta.dataset}-{loaded.meta.version}-report.html")
        try:
            report = write_report(loaded, target, ReportOptions(examples_per_modality=examples))
        except OSError as exc:
            _fail(f"cannot write the report of {loaded.ref} to {target}: {exc}")
        shown = sum(len(items) for items in report.examples.values())
        typer.echo(f"{loaded.ref}: {report.n_pairs} pairs, {len(report.plots)} plots, {shown} examples -> {target}")

    @app.command("export")
    def export_command(
        ref: str = typer.Argument(..., help="Version to export, e.g. mm-retinal/v1."),
        out: Path = typer.Option(
            ..., "--out",
            help="New or empty directory to write the export into; never inside the registry, the image store or the work dir.",
        ),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace an earlier export of the same format in --out (nothing else is ever replaced)."
        ),
        work_dir: Path = typer.Option(
            Path(".mmretinal"), "--work-dir", help="The build work directory, which an export never overlaps."
        ),
        export_format: ExportFormat = typer.Option(
            ExportFormat.flair_csv, "--format",
            help="flair-csv (KeepFIT dataframes), ffa-ir (FFA pairs as FFA-IR JSON + images), hf (datasets on disk + parquet + card), webdataset (tar shards), croissant (JSON-LD).",
        ),
        image_root: Path | None = typer.Option(
            None, "--image-root", help="flair-csv: directory the CSV image paths are relative to (default: OUT/images)."
        ),
        language: CaptionLanguage = typer.Option(
            CaptionLanguage.en, "--language", help="Caption language (flair-csv CSVs, webdataset key.txt)."
        ),
        link_mode: LinkMode = typer.Option(
            LinkMode.copy, "--link-mode", help="flair-csv, croissant: copy images or symlink to the store."
        ),
        shard_size: int = typer.Option(1000, "--shard-size", min=1, help="webdataset: most pairs per tar shard."),
        keep_formula_prefixes: bool = typer.Option(
            False, "--keep-formula-prefixes",
            help="flair-csv: write captions byte for byte (default: text starting with =, +, -, @ gets a leading ' for spreadsheets).",
        ),
        registry: Path | None = typer.Option(None, "--registry", envvar="MMRETINAL_REGISTRY", help=ROOT_HELP),
        root: Path | None = typer.Option(None, "--root", hidden=True, help="Old spelling of --registry."),
        image_store: Path | None = typer.Option(None, "--image-store", help=STORE_HELP),
    ) -> None:
        """Write a version for training code: KeepFIT/FLAIR CSVs, FFA-IR JSON, a Hugging Face dataset, WebDataset shards or Croissant."""
        from data_manifests.registry import RegistryError, load_manifest

        try:
            loaded = load_manifest(_root(registry, root), ref, image_store=image_store)
        except RegistryError as exc:
            _fail(str(exc))
        from data_manifests.export_common import ExportError

        guard = {"overwrite": overwrite, "protected": {"the work dir": work_dir}}
        if export_format is ExportFormat.ffa_ir:
            from data_manifests.export_ffa_ir import FFAIRExportOptions, export_ffa_ir

            try:
                ffa = export_ffa_ir(loaded, out, options=FFAIRExportOptions(link_mode=link_mode.value), **guard)
            except (ExportError, OSError) as exc:
                _fail(f"ffa-ir export of {loaded.ref} to {out}: {exc}")
            typer.echo(f"FFA: {ffa.images} images in {ffa.cases} cases -> {ffa.annotation}")
            for error in ffa.errors:
                typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1 if ffa.errors else 0)
        if export_format is not ExportFormat.flair_csv:
            _export_ml_format(loaded, out, export_format, language.value, link_mode.value, shard_size, guard)
            return
        from data_manifests.export import FlairExportOptions, export_flair_csv

        options = FlairExportOptions(
            language=language.value, image_root=image_root, link_mode=link_mode.value,
            neutralise_formulas=not keep_formula_prefixes,
        )
        try:
            result = export_flair_csv(loaded, out, options=options, **guard)
        except (ExportError, OSError) as exc:
            _fail(f"flair-csv export of {loaded.ref} to {out}: {exc}")
        for modality, csv_file in result.csv_files.items():
            typer.echo(f"{modality}: {result.rows[modality]} rows -> {csv_file}")
        typer.echo(f"images under {result.image_root}")
        if result.skipped_no_caption:
            typer.echo(f"{len(result.skipped_no_caption)} pair(s) without a {language.value} caption left out")
        for error in result.errors:
            typer.echo(f"error: {error}", err=True)
        if result.errors:
            raise typer.Exit(1)


def _export_ml_format(
    loaded, out: Path, export_format: ExportFormat, language: str, link_mode: str, shard_size: int, guard: dict
) -> None:
    """Run one of the data_manifests.ml_exports writers and print what it wrote."""
    from data_manifests.ml_exports import (
        CroissantExportOptions,
        ExportError,
        WebDatasetExportOptions,
        export_croissant,
        export_hf,
        export_webdataset,
    )

    try:
        if export_format is ExportFormat.hf:
            summary = export_hf(loaded, out, **guard)
        elif export_format is ExportFormat.webdataset:
            options = WebDatasetExportOptions(samples_per_shard=shard_size, language=language)
            summary = export_webdataset(loaded, out, options=options, **guard)
        else:
            summary = export_croissant(loaded, out, options=CroissantExportOptions(link_mode=link_mode), **guard)
    except (ExportError, OSError) as exc:
        _fail(f"{export_format.value} export of {loaded.ref} to {out}: {exc}")
    for name in summary.files:
        typer.echo(f"wrote {out / name}")
    typer.echo(
        f"{summary.format}: {summary.ref} ({summary.content_fingerprint[:12]}), {summary.n_rows} pairs, "
        f"{summary.n_bytes / 1e6:.2f} MB in {summary.seconds:.2f}s -> {summary.out}"
    )
    for error in summary.errors:
        typer.echo(f"error: {error}", err=True)
    if summary.errors:
        raise typer.Exit(1)
