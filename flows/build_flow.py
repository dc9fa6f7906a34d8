"""Prefect flows `build-dataset` and `publish-manifest`: thin wrappers over curation/build.py.

`build_dataset` runs steps 1–3 as one task per PDF on the task runner the build options name
(threads, processes, Dask or Ray), reports a bad PDF without stopping the others, records the
build (review queue) and publishes it. A task hands back its PDF's outcome only; the record
itself is read from the work directory, which every worker shares. Caching is the
build's own (one record per PDF keyed by content, step options and the steps' code version):
Prefect persists no task results. `publish_manifest` publishes a recorded build later (after
review); both emit `mmretinal.manifest.published`.
"""

from __future__ import annotations

from flows import prefect_env

prefect_env.apply_defaults()

import os  # noqa: E402 - Prefect reads its settings from the environment on import
import time  # noqa: E402
from contextlib import nullcontext  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_progress_artifact, update_progress_artifact  # noqa: E402
from prefect.cache_policies import NONE as NO_CACHE  # noqa: E402
from prefect.events import emit_event  # noqa: E402
from prefect.futures import PrefectFuture, as_completed  # noqa: E402
from prefect.states import State  # noqa: E402
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

from curation.build import (  # noqa: E402
    BuildOptions,
    BuildRecord,
    PublishSummary,
    RunnerOptions,
    clean_work_dir,
    load_build,
    outcome_only,
    process_document,
    publish_build,
    record_build,
    stage_input,
    with_stored_contents,
)
from flows.build_progress import PageProgress  # noqa: E402
from flows.artifacts import (  # noqa: E402
    artifact_key,
    publish_build_artifacts,
    publish_manifest_artifact,
    publish_report_artifact,
)
from foundation.records import DocumentRun  # noqa: E402
from pipeline.extract import new_run  # noqa: E402

PUBLISHED_EVENT = "mmretinal.manifest.published"
DEFAULT_REVIEW_URL = os.environ.get("MMRETINAL_REVIEW_URL", "http://127.0.0.1:8765")


# ---------------------------------------------------------------------------- task runners


def make_task_runner(options: RunnerOptions | None = None) -> TaskRunner:
    """Threads share one process (PyMuPDF and the OCR engine release the GIL for most of their
    work); processes sidestep the GIL for pure-Python steps at the cost of a start-up per worker;
    Dask and Ray spread the PDFs over a cluster (their Prefect integrations must be installed)."""
    options = options or RunnerOptions()
    if options.kind == "threads":
        return ThreadPoolTaskRunner(max_workers=options.workers or min(8, os.cpu_count() or 1))
    if options.kind == "processes":
        return ProcessPoolTaskRunner(max_workers=options.workers or os.cpu_count() or 1)
    if options.kind == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:
            raise ValueError("task runner 'dask' needs prefect-dask: pip install prefect-dask") from exc
        if options.dask_address:
            return DaskTaskRunner(address=options.dask_address)
        return DaskTaskRunner(
            cluster_kwargs={"n_workers": options.workers or os.cpu_count() or 1, "threads_per_worker": 1, "processes": True}
        )
    try:
        from prefect_ray import RayTaskRunner
    except ImportError as exc:
        raise ValueError("task runner 'ray' needs prefect-ray: pip install 'mm-retinal[ray]'") from exc
    return RayTaskRunner()


# ---------------------------------------------------------------------------- steps 1–3 per PDF


TRANSIENT_ERRORS = (OSError, TimeoutError)
PERMANENT_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def is_transient(error: BaseException) -> bool:
    """I/O hiccups (network share, busy disk) are retried; a missing or unreadable file is not."""
    return isinstance(error, TRANSIENT_ERRORS) and not isinstance(error, PERMANENT_OS_ERRORS)


def retry_on_transient(task_: Any, task_run: Any, state: State) -> bool:
    """Prefect's retry_condition_fn: retry a task only when it raised a transient error."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, BaseException) and is_transient(error)


@task(
    name="process-pdf",
    task_run_name="steps 1-3 {pdf.name}",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=2,
    retry_delay_seconds=[1, 5],
    retry_condition_fn=retry_on_transient,
)
def process_pdf_task(
    pdf: Path, options: BuildOptions, progress_dir: Path | None = None, progress_name: Path | None = None
) -> DocumentRun:
    """Steps 1–3 for one PDF. A bad PDF comes back with status 'failed' (not retried); a bad page
    or panel with status 'partial'; a transient read error is raised and retried.

    Runs anywhere the work directory is reachable at the same path (a thread, a process, a Dask
    or Ray worker on another host): the inputs are absolute paths and the options, the record and
    images go to the work directory keyed by content, and what comes back is the run's outcome
    without its contents (`outcome_only`). With `progress_dir`, pages done are written there,
    under `progress_name` (the input as the build host named it) when given."""
    logger = get_run_logger()
    prefect_env.attach_pipeline_loggers()
    pdf = Path(pdf)
    progress = PageProgress(progress_dir, Path(progress_name or pdf)) if progress_dir is not None else None
    started = time.perf_counter()
    with progress or nullcontext():
        run = process_document(pdf, options, on_page=progress)
    seconds = time.perf_counter() - started
    if run.failed:
        logger.error("%s: FAILED: %s", pdf.name, run.error)
    else:
        queued = sum(p.review_status == "queued" for p in run.pairs)
        source = "reused from the cache" if run.cached else "computed"
        logger.info(
            "%s: %s, %d pages, %d figures, %d pairs (%d queued), %d rejects, %s in %.2fs",
            pdf.name, run.status.value, run.page_count, run.figures, len(run.pairs), queued, len(run.rejects), source, seconds,
        )
    return outcome_only(run)


def outcome_of(pdf: Path, future: PrefectFuture) -> DocumentRun:
    """A finished task's run, read back whole from the work directory under the input's name;
    a task that failed outright becomes a failed run with the reason."""
    future.wait()
    state = future.state
    if state.is_completed():
        outcome = state.result()
        try:
            return with_stored_contents(outcome, pdf)
        except (OSError, ValueError) as exc:
            return new_run(pdf).fail(
                f"the task's record {outcome.directory} cannot be read here ({type(exc).__name__}); "
                "is the work directory shared with the workers at the same path?"
            )
    error = state.result(raise_on_failure=False)
    reason = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else (state.message or state.name)
    return new_run(pdf).fail(f"task {state.name}: {reason}")


@flow(name="process-documents", log_prints=False)
def process_documents(
    pdfs: list[Path], options: BuildOptions, progress_id: Any = None, progress_dir: Path | None = None
) -> list[DocumentRun]:
    """Steps 1–3 for each PDF as one task on this flow's task runner; runs in input order.

    Tasks get absolute paths (theirs may be another process's or host's working directory); on a
    cluster (`runner.staging`) the path of the input's copy in the shared work directory."""
    logger = get_run_logger()
    task_options = options.with_absolute_paths()
    futures = []
    for pdf in pdfs:
        source = stage_input(pdf, task_options.work_dir) if options.runner.staging else pdf.absolute()
        futures.append((pdf, process_pdf_task.submit(source, task_options, progress_dir, pdf.absolute())))
    pdf_by_run = {future.task_run_id: pdf for pdf, future in futures}
    runs: dict[Path, DocumentRun] = {}
    for done, future in enumerate(as_completed([future for _, future in futures]), start=1):
        pdf = pdf_by_run[future.task_run_id]
        run = runs[pdf] = outcome_of(pdf, future)
        if run.failed:
            logger.error("%s: FAILED: %s", pdf.name, run.error)
        if progress_id is not None:
            update_progress_artifact(progress_id, progress=100.0 * done / len(futures), description=f"{done}/{len(futures)} PDFs done")
    return [runs[pdf] for pdf in pdfs]


@task(name="record-build", cache_policy=NO_CACHE, persist_result=False)
def record_build_task(documents: list[DocumentRun], options: BuildOptions) -> BuildRecord:
    """Save the build and register its queued pairs and possible misses in the review database."""
    record = record_build(documents, options)
    queued = sum(p.review_status == "queued" for p in record.pairs)
    get_run_logger().info(
        "recorded %s: %d pairs, %d queued for review, %d possible misses",
        record.build_id, len(record.pairs), queued, len(record.proposals),
    )
    return record


class BuildFlowResult(BaseModel):
    """What `build_dataset` returns: the recorded build (each PDF's run) and the published version."""

    record: BuildRecord = Field(description="The build: each PDF's run (pairs, rejects, status), in input order.")
    published: PublishSummary | None = Field(None, description="The published version, when publishing ran.")
    publish_error: str | None = Field(None, description="Why publishing failed (storage, bad images), in one line.")
    artifacts: dict[str, str] = Field(default_factory=dict, description="Artifact key -> artifact id of this run.")


@flow(name="build-dataset", log_prints=False)
def build_dataset(
    pdfs: list[Path],
    options: BuildOptions | None = None,
    publish: bool = True,
    review_url: str = DEFAULT_REVIEW_URL,
    progress_dir: Path | None = None,
) -> BuildFlowResult:
    """Steps 1–3 per PDF in parallel (on `options.runner`), the review queue, and publishing.

    Parameters:
        pdfs: atlas PDF files.
        options: build options (dataset, work directory, registry, step options, runner, translation).
        publish: publish the build as the next version.
        review_url: base URL of the review page (`mmretinal review serve`), linked from the run.
        progress_dir: where per-PDF tasks write their pages done (the terminal's progress bar).
    """
    logger = get_run_logger()
    prefect_env.attach_pipeline_loggers()
    options = options or BuildOptions()
    pdf_paths = [Path(pdf) for pdf in pdfs]
    if not pdf_paths:
        raise ValueError("build_dataset needs at least one PDF")
    logger.info("building %s from %d PDFs into %s (%s runner)", options.dataset, len(pdf_paths), options.work_dir, options.runner.kind)
    cleaned = clean_work_dir(options)
    if cleaned:
        logger.info("removed %d folder(s) and file(s) left in %s by builds that no longer run", cleaned, options.work_dir)
    progress_id = create_progress_artifact(
        0.0, key=artifact_key(options.dataset, "build-progress"), description=f"PDFs done of {len(pdf_paths)}"
    )
    runner = process_documents.with_options(task_runner=make_task_runner(options.runner))
    documents = runner(pdf_paths, options, progress_id, progress_dir)
    record = record_build_task(documents, options)
    artifacts = publish_build_artifacts(record, review_url)
    if record.failures:
        logger.error(
            "%d of %d PDFs failed: %s",
            len(record.failures), len(documents), ", ".join(Path(d.pdf).name for d in record.failures),
        )
    published = publish_error = None
    if publish and record.pairs:
        from data_manifests.registry import PublishError

        try:
            published = publish_and_announce(record, options)
        except (PublishError, OSError) as exc:  # storage: one line, and the build's summary still stands
            publish_error = str(exc)
            logger.error("publish failed: %s", publish_error)
    elif publish:
        logger.error("no pairs found in any input; nothing to publish")
    return BuildFlowResult(record=record, published=published, artifacts=artifacts, publish_error=publish_error)


# ---------------------------------------------------------------------------- publishing


@task(name="publish-build", cache_policy=NO_CACHE, persist_result=False)
def publish_build_task(record: BuildRecord, options: BuildOptions) -> PublishSummary:
    """Apply review decisions, translate (step 4) and publish the next version."""
    summary = publish_build(record, options)
    get_run_logger().info("published %s: %d pairs -> %s", summary.ref, summary.n_pairs, summary.path)
    return summary


def published_event_payload(summary: PublishSummary, build_id: str) -> dict[str, Any]:
    from data_manifests import parse_ref
    from data_manifests.registry import MANIFEST_PARQUET

    dataset, version = parse_ref(summary.ref)
    return {
        "dataset": dataset,
        "version": version,
        "ref": summary.ref,
        "fingerprint": summary.fingerprint,
        "n_pairs": summary.n_pairs,
        "manifest": str(Path(summary.path) / MANIFEST_PARQUET),
        "path": summary.path,
        "build_id": build_id,
    }


def emit_published(summary: PublishSummary, build_id: str) -> str | None:
    """Announce a new version; automations (e.g. the pretraining trigger) match on it."""
    payload = published_event_payload(summary, build_id)
    event = emit_event(
        event=PUBLISHED_EVENT,
        resource={"prefect.resource.id": f"mmretinal.dataset.{payload['dataset']}", "prefect.resource.name": payload["dataset"]},
        related=[
            {
                "prefect.resource.id": f"mmretinal.manifest.{payload['dataset']}.{payload['version']}",
                "prefect.resource.role": "manifest",
                "prefect.resource.name": summary.ref,
            }
        ],
        payload=payload,
    )
    return str(event.id) if event is not None else None


def publish_and_announce(record: BuildRecord, options: BuildOptions) -> PublishSummary:
    """Publish a build (typed, as the build made it), show it in the run and announce it."""
    logger = get_run_logger()
    summary = publish_build_task(record, options)
    publish_manifest_artifact(options.dataset, summary)
    publish_report_artifact(options, summary)  # the dataset report page of the version
    if summary.unchanged:
        logger.info("%s already holds this content: no new version, no %s event", summary.ref, PUBLISHED_EVENT)
    else:
        event_id = emit_published(summary, record.build_id)
        logger.info("emitted %s for %s (event %s)", PUBLISHED_EVENT, summary.ref, event_id)
    return summary


@flow(name="publish-manifest", log_prints=False)
def publish_manifest(build_id: str | None = None, options: BuildOptions | None = None) -> PublishSummary:
    """Apply review decisions to a recorded build, publish it, and emit `mmretinal.manifest.published`.

    Parameters:
        build_id: build to publish (default: the latest build in the work directory).
        options: build options (dataset, work directory, registry, translation).
    """
    prefect_env.attach_pipeline_loggers()
    options = options or BuildOptions()
    record = load_build(Path(options.work_dir), build_id)
    if not record.pairs:
        raise ValueError(f"build {record.build_id} in {options.work_dir} has no pairs; nothing to publish")
    return publish_and_announce(record, options)
