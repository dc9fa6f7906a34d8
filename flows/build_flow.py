"""Prefect flows `build-dataset` and `publish-manifest`: thin wrappers over curation/build.py.

`build_dataset` runs steps 1–3 as one task per PDF in parallel (threads by default, processes
when asked), caches each task's result by PDF sha256 + step config + code version in the work
directory, reports a bad PDF without stopping the others, records the build (review queue) and
publishes it through the `publish_manifest` subflow, which emits `mmretinal.manifest.published`.
"""

from __future__ import annotations

from flows import prefect_env

prefect_env.apply_defaults()

import functools  # noqa: E402 - Prefect reads its settings from the environment on import
import hashlib  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Literal  # noqa: E402

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_progress_artifact, update_progress_artifact  # noqa: E402
from prefect.cache_policies import NONE as NO_CACHE  # noqa: E402
from prefect.context import TaskRunContext  # noqa: E402
from prefect.events import emit_event  # noqa: E402
from prefect.futures import PrefectFuture, as_completed  # noqa: E402
from prefect.states import State  # noqa: E402
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

from flows.artifacts import (  # noqa: E402
    BookOutcome,
    artifact_key,
    publish_build_artifacts,
    publish_manifest_artifact,
    publish_report_artifact,
)
from curation.build import (  # noqa: E402
    BookResult,
    BuildOptions,
    BuildRecord,
    PublishSummary,
    cache_key,
    load_build,
    process_pdf,
    publish_build,
    record_build,
)
from pipeline.extract import book_id  # noqa: E402
from foundation.files import sha256_file  # noqa: E402
from foundation.records import Status  # noqa: E402

PUBLISHED_EVENT = "mmretinal.manifest.published"
DEFAULT_REVIEW_URL = os.environ.get("MMRETINAL_REVIEW_URL", "http://127.0.0.1:8765")
PREFECT_RESULTS_DIR = "prefect-results"
TaskRunnerKind = Literal["threads", "processes"]


# ---------------------------------------------------------------------------- task runners


def make_task_runner(kind: TaskRunnerKind = "threads", workers: int | None = None) -> TaskRunner:
    """Threads share one process (PyMuPDF and the OCR engine release the GIL for most of their
    work); processes sidestep the GIL for pure-Python steps at the cost of a start-up per worker."""
    if kind == "threads":
        return ThreadPoolTaskRunner(max_workers=workers or min(8, os.cpu_count() or 1))
    if kind == "processes":
        return ProcessPoolTaskRunner(max_workers=workers or os.cpu_count() or 1)
    raise ValueError(f"unknown task runner {kind!r}; expected 'threads' or 'processes'")


def task_runner_from_env() -> TaskRunner:
    """The default runner of `build_dataset`: $MMRETINAL_TASK_RUNNER and $MMRETINAL_TASK_WORKERS."""
    kind = os.environ.get("MMRETINAL_TASK_RUNNER", "threads")
    workers = os.environ.get("MMRETINAL_TASK_WORKERS")
    return make_task_runner(kind, int(workers) if workers else None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- steps 1–3 per PDF


@functools.lru_cache(maxsize=1024)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(Path(path))


def pdf_sha256(pdf: Path) -> str:
    """sha256 of a file, memoised per (path, size, mtime) so the cache key and the task read it once."""
    stat = pdf.stat()
    return _sha256_of(str(pdf.resolve()), stat.st_size, stat.st_mtime_ns)


def pdf_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str | None:
    """PDF content + step config + code version (curation.build.cache_key) + work directory.

    The work directory is part of the key because the cached result points at panel images
    stored there. An unreadable PDF gets no key (no caching); the task reports it.
    """
    pdf, options = Path(parameters["pdf"]), parameters["options"]
    try:
        sha256 = pdf_sha256(pdf)
    except OSError:
        return None
    work_dir = hashlib.sha256(str(Path(options.work_dir).resolve()).encode()).hexdigest()[:8]
    return f"steps123-{cache_key(sha256, options)}-{work_dir}"


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
    cache_key_fn=pdf_cache_key,
    persist_result=True,
    retries=2,
    retry_delay_seconds=[1, 5],
    retry_condition_fn=retry_on_transient,
)
def process_pdf_task(pdf: Path, options: BuildOptions) -> BookResult:
    """Steps 1–3 for one PDF. A bad PDF comes back with status 'failed' (not retried, cached
    like any result of the same bytes); a read error before the steps start is raised and retried."""
    logger = get_run_logger()
    prefect_env.attach_pipeline_loggers()
    pdf = Path(pdf)
    if pdf.is_file():
        pdf_sha256(pdf)
    started = time.perf_counter()
    result = process_pdf(pdf, options)
    seconds = time.perf_counter() - started
    if result.status == Status.failed:
        logger.error("%s: FAILED: %s", pdf.name, result.error)
    else:
        queued = sum(p.review_status == "queued" for p in result.pairs)
        source = "reused from the pipeline cache" if result.cached else "computed"
        logger.info(
            "%s: %d pages, %d figures, %d pairs (%d queued), %s in %.2fs",
            pdf.name, result.pages, result.figures, len(result.pairs), queued, source, seconds,
        )
    return result


@task(name="record-build", cache_policy=NO_CACHE)
def record_build_task(books: list[BookResult], options: BuildOptions) -> BuildRecord:
    """Save the build and register its queued pairs in the review database."""
    record = record_build(books, options)
    queued = sum(p.review_status == "queued" for p in record.pairs)
    get_run_logger().info("recorded %s: %d pairs, %d queued for review", record.build_id, len(record.pairs), queued)
    return record


def outcome_of(pdf: Path, future: PrefectFuture) -> BookOutcome:
    """A finished task as a BookOutcome; a task that failed outright becomes a failed BookResult."""
    future.wait()
    state = future.state
    if state.is_completed():
        result: BookResult = state.result()
        from_cache = state.name == "Cached"
        if from_cache:
            result = result.model_copy(update={"cached": True, "pdf": str(pdf)})
        return BookOutcome(result=result, from_prefect_cache=from_cache, task_state=state.name)
    error = state.result(raise_on_failure=False)
    reason = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else (state.message or state.name)
    failed = BookResult(pdf=str(pdf), book=book_id(pdf), status=Status.failed, error=f"task {state.name}: {reason}")
    return BookOutcome(result=failed, task_state=state.name)


class BuildFlowResult(BaseModel):
    """What `build_dataset` returns: the recorded build, each PDF's outcome, the published version."""

    record: BuildRecord = Field(description="The saved build (its pairs and per-PDF results).")
    outcomes: list[BookOutcome] = Field(description="Per PDF: result, cache source and task state, in input order.")
    published: PublishSummary | None = Field(None, description="The published version, when publishing ran.")
    artifacts: dict[str, str] = Field(default_factory=dict, description="Artifact key -> artifact id of this run.")


@flow(name="build-dataset", task_runner=task_runner_from_env(), log_prints=False)
def build_dataset(
    pdfs: list[Path],
    options: BuildOptions | None = None,
    publish: bool = True,
    review_url: str = DEFAULT_REVIEW_URL,
) -> BuildFlowResult:
    """Steps 1–3 per PDF in parallel, the review queue, and (optionally) publishing.

    Parameters:
        pdfs: atlas PDF files.
        options: build options (dataset, work directory, registry, step options, translation).
        publish: publish the build as the next version (`publish-manifest` subflow).
        review_url: base URL of the review page (`mmretinal review serve`), linked from the run.
    """
    logger = get_run_logger()
    prefect_env.attach_pipeline_loggers()
    options = options or BuildOptions()
    pdf_paths = [Path(pdf) for pdf in pdfs]
    if not pdf_paths:
        raise ValueError("build_dataset needs at least one PDF")
    logger.info("building %s from %d PDFs into %s", options.dataset, len(pdf_paths), options.work_dir)
    progress_id = create_progress_artifact(
        0.0, key=artifact_key(options.dataset, "build-progress"), description=f"PDFs done of {len(pdf_paths)}"
    )
    process = process_pdf_task.with_options(result_storage=(Path(options.work_dir) / PREFECT_RESULTS_DIR).resolve())
    futures = [(pdf, process.submit(pdf, options)) for pdf in pdf_paths]
    pdf_by_run = {future.task_run_id: pdf for pdf, future in futures}
    outcomes: dict[Path, BookOutcome] = {}
    for done, future in enumerate(as_completed([future for _, future in futures]), start=1):
        pdf = pdf_by_run[future.task_run_id]
        outcome = outcomes[pdf] = outcome_of(pdf, future)
        if outcome.result.status == Status.failed:
            logger.error("%s: FAILED (%s): %s", pdf.name, outcome.task_state, outcome.result.error)
        elif outcome.from_prefect_cache:
            logger.info("%s: unchanged, served from the Prefect task cache", pdf.name)
        update_progress_artifact(progress_id, progress=100.0 * done / len(futures), description=f"{done}/{len(futures)} PDFs done")
    ordered = [outcomes[pdf] for pdf in pdf_paths]
    record = record_build_task([outcome.result for outcome in ordered], options)
    artifacts = publish_build_artifacts(record, ordered, review_url)
    failures = [o.result for o in ordered if o.result.status == Status.failed]
    if failures:
        logger.error("%d of %d PDFs failed: %s", len(failures), len(ordered), ", ".join(Path(b.pdf).name for b in failures))
    published = None
    if publish and record.pairs:
        published = PublishSummary.model_validate(
            publish_manifest(build_id=record.build_id, options=options)["published"]
        )
    elif publish:
        logger.error("no pairs found in any input; nothing to publish")
    return BuildFlowResult(record=record, outcomes=ordered, published=published, artifacts=artifacts)


# ---------------------------------------------------------------------------- publishing


@task(name="publish-build", cache_policy=NO_CACHE)
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


@flow(name="publish-manifest", log_prints=False)
def publish_manifest(build_id: str | None = None, options: BuildOptions | None = None) -> dict[str, Any]:
    """Apply review decisions to a recorded build, publish it, and emit `mmretinal.manifest.published`.

    Parameters:
        build_id: build to publish (default: the latest build in the work directory).
        options: build options (dataset, work directory, registry, translation).
    """
    logger = get_run_logger()
    prefect_env.attach_pipeline_loggers()
    options = options or BuildOptions()
    record = load_build(Path(options.work_dir), build_id)
    if not record.pairs:
        raise ValueError(f"build {record.build_id} in {options.work_dir} has no pairs; nothing to publish")
    summary = publish_build_task(record, options)
    artifact_id = publish_manifest_artifact(options.dataset, summary)
    report_artifact_id = publish_report_artifact(options, summary)  # dataset report page (flows/artifacts.py)
    if summary.unchanged:
        event_id = None
        logger.info("%s already holds this content: no new version, no %s event", summary.ref, PUBLISHED_EVENT)
    else:
        event_id = emit_published(summary, record.build_id)
        logger.info("emitted %s for %s (event %s)", PUBLISHED_EVENT, summary.ref, event_id)
    return {
        "build_id": record.build_id,
        "published": summary.model_dump(mode="json"),
        "event_id": event_id,
        "artifact_id": artifact_id,
        "report_artifact_id": report_artifact_id,
    }
