"""The whole build as plain Python: steps 1–3 per PDF, the review queue, step 4 and publishing.

Each PDF becomes one `DocumentRun` that the steps fill in memory: opened, validated and hashed
once, extracted (step 1, captions parsed there), aligned (step 2), classified (step 3), then
written once. The one cache is that record: `<work_dir>/documents/<key>/`, keyed by the PDF's
content + the step options + the steps' code version, so an unchanged rebuild reuses it. The
cache serves content; the book id and pair ids always come from the input being built, so the
same bytes under two names are two books.

Review decisions are applied to the printed captions (before translation), so they are keyed by
what the atlas says, not by what a translation package produced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from curation.review_store import ReviewStore, content_key
from foundation.documents import read_document_run, write_document_run
from foundation.files import OwnedDir, atomic_path, remove_dead_dirs, remove_stale_temp_files, sha256_file, write_atomic
from foundation.records import REVIEWABLE_REJECTS, DocumentRun, Pair, Status
from pipeline import __version__, code_version
from pipeline.align import AlignOptions, align_document
from pipeline.extract import (
    ExtractionError,
    ExtractOptions,
    PageCallback,
    book_id,
    extract_document,
    new_run,
    open_source,
    render_region,
)
from pipeline.images import ImageBank
from pipeline.modality import ModalityOptions, classify_document
from pipeline.ocr import lazy_line_reader

log = logging.getLogger(__name__)

DOCUMENTS_DIR = "documents"
PARTIAL_SUFFIX = ".partial"


class RunnerOptions(BaseModel):
    """Where the per-PDF tasks of a build run (an option like any other, not an environment variable)."""

    kind: Literal["threads", "processes", "dask", "ray"] = Field(
        "threads",
        description="'threads' (one process), 'processes' (one machine), 'dask' or 'ray' (a cluster).",
    )
    workers: int | None = Field(None, ge=1, description="Parallel PDFs (default: per runner).")
    dask_address: str | None = Field(
        None, description="Dask scheduler address (tcp://host:8786); default: start a local cluster."
    )
    stage_inputs: bool | None = Field(
        None,
        description="Copy each input PDF into <work_dir>/inputs/<sha256>/ before its task runs, so workers "
        "read it from the shared work directory, not from this host's paths (default: on for dask and ray).",
    )

    @property
    def staging(self) -> bool:
        return self.stage_inputs if self.stage_inputs is not None else self.kind in ("dask", "ray")


class BuildOptions(BaseModel):
    """Everything a build depends on: CLI options, Prefect parameters and `--config` file alike.

    Only the step options (extract, align, modality) are part of the cache key.
    """

    dataset: str = Field("mm-retinal", description="Name of the dataset to publish.")
    work_dir: Path = Field(Path(".mmretinal"), description="Per-PDF records and images, builds and the review database.")
    registry_root: Path = Field(Path("data_manifests"), description="Manifest registry root (published versions).")
    image_store: Path | None = Field(None, description="Content-addressed image store; default <registry_root>/images.")
    extract: ExtractOptions = Field(default_factory=ExtractOptions, description="Step 1 options.")
    align: AlignOptions = Field(default_factory=AlignOptions, description="Step 2 options.")
    modality: ModalityOptions = Field(default_factory=ModalityOptions, description="Step 3 options.")
    runner: RunnerOptions = Field(default_factory=RunnerOptions, description="Where the per-PDF tasks run.")
    translation_packages: list[Path] = Field(
        default_factory=list, description=".argosmodel files to install before translating (step 4)."
    )
    translation_packages_dir: Path | None = Field(
        None, description="Directory of installed argostranslate packages (default: argostranslate's own)."
    )
    glossary_files: list[Path] = Field(default_factory=list, description="Extra glossary TSVs for translation.")
    translation_home: Path | None = Field(
        None, description="Folder for argostranslate's data and cache (default: argostranslate's own, in the user's home)."
    )

    @model_validator(mode="after")
    def _paddle_home_in_work_dir(self) -> "BuildOptions":
        """PaddleX's home follows the work directory unless set explicitly."""
        if "paddle_home" not in self.extract.ocr.model_fields_set:
            self.extract.ocr.paddle_home = self.work_dir / "paddlex"
        return self

    def step_config(self) -> dict:
        """The options that change what steps 1–3 produce (paths excluded)."""
        return {
            "extract": self.extract.model_dump(mode="json", exclude={"ocr": {"paddle_home"}}),
            "align": self.align.model_dump(mode="json"),
            "modality": self.modality.model_dump(mode="json", exclude={"model_path", "cues_path"}),
        }

    def with_absolute_paths(self) -> "BuildOptions":
        """The same options with every path absolute: what tasks in another process or on
        another host get, since their working directory is not this one."""
        return type(self).model_validate(_absolute_paths(self.model_dump()))

    @property
    def review_db(self) -> Path:
        return self.work_dir / "review.sqlite"

    @property
    def documents_dir(self) -> Path:
        return self.work_dir / DOCUMENTS_DIR


def _absolute_paths(value: object) -> object:
    if isinstance(value, Path):
        return value.expanduser().absolute()
    if isinstance(value, dict):
        return {key: _absolute_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_absolute_paths(item) for item in value]
    return value


def _hash(data: object) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def cache_key(pdf_sha256: str, options: BuildOptions) -> str:
    """Key of one PDF's steps 1–3: input content + step config + the steps' code version."""
    return _hash({"pdf": pdf_sha256, "config": options.step_config(), "version": code_version()})[:24]


# ---------------------------------------------------------------------------- one PDF


def process_document(pdf_path: Path, options: BuildOptions, on_page: PageCallback | None = None) -> DocumentRun:
    """Steps 1–3 for one PDF, or its cached record when content, options and code are unchanged.

    Never raises for a bad PDF: the run carries status 'failed' and the reason; a bad page or
    panel makes it 'partial' and the rest of the book is built. `on_page` hears of each page of
    step 1 (not called for a cached record).
    """
    pdf_path = Path(pdf_path)
    run = new_run(pdf_path)
    started = time.perf_counter()
    try:
        doc, source = open_source(pdf_path, options.extract)
    except ExtractionError as exc:
        log.error("%s: %s", pdf_path, exc)
        return run.fail(str(exc))
    except Exception as exc:  # one broken PDF must not stop the batch
        log.error("%s: cannot open (%s: %s)", pdf_path, type(exc).__name__, exc)
        return run.fail(f"cannot open ({type(exc).__name__}: {exc})")
    run.source = source
    run.cache_key = cache_key(source.sha256, options)
    run.seconds["open"] = round(time.perf_counter() - started, 4)
    final = options.documents_dir / run.cache_key
    cached = _load_cached(final, pdf_path)
    if cached is not None:
        doc.close()
        log.info("%s: unchanged, reusing steps 1-3 (%d pairs)", pdf_path.name, len(cached.pairs))
        return cached
    owned = OwnedDir(options.documents_dir, prefix=f".{run.cache_key}.", suffix=PARTIAL_SUFFIX)
    staging = owned.path
    try:
        try:
            _run_steps(doc, run, ImageBank(staging), options, on_page)
        except Exception as exc:  # an unexpected failure must not stop the batch either
            log.exception("%s: build failed", pdf_path)
            run.fail(f"{type(exc).__name__}: {exc}")
        finally:
            doc.close()
        if run.failed:
            shutil.rmtree(staging, ignore_errors=True)
            owned.release()
            return run
        started = time.perf_counter()
        write_document_run(run, staging, final)
        owned.release(moved_to=final)
        run.seconds["write"] = round(time.perf_counter() - started, 4)
        return run
    finally:
        owned.release()


def clean_work_dir(options: BuildOptions) -> int:
    """Remove what killed builds left in the work dir: their `.partial` document folders and
    temporary files; folders of builds still running are kept (their owner lock is held)."""
    removed = remove_dead_dirs(options.documents_dir, f".*{PARTIAL_SUFFIX}")
    removed += remove_dead_dirs(options.work_dir / "progress", "*")
    removed += remove_stale_temp_files(options.documents_dir) + remove_stale_temp_files(options.work_dir)
    for path in removed:
        log.info("removed %s, left by a build that no longer runs", path)
    return len(removed)


def _run_steps(doc, run: DocumentRun, bank: ImageBank, options: BuildOptions, on_page: PageCallback | None) -> None:
    name = Path(run.pdf).name
    extract_document(doc, run, bank, options.extract, on_page)
    log.info("%s: step 1 extract: %d pages (%d scanned)", name, run.page_count, run.scanned_pages)
    if run.failed:
        return
    read_line = lazy_line_reader(options.extract.ocr) if options.align.read_panel_labels else None
    align_document(
        run, bank, options.align, read_line=read_line, render=lambda page, bbox: render_region(doc, page, bbox, bank)
    )
    log.info("%s: step 2 align: %d figures, %d panels", name, run.figures, len(run.pairs))
    classify_document(run, bank.pixels, options.modality)
    log.info("%s: step 3 modality: %s", name, dict(Counter(p.modality for p in run.pairs)))
    for error in run.errors:
        log.warning("%s: %s", name, error)


def _load_cached(directory: Path, pdf_path: Path) -> DocumentRun | None:
    try:
        cached = read_document_run(directory)
    except (OSError, ValueError):
        return None
    images = [p.image_file for p in cached.pairs] + [r.proposal.image_file for r in cached.rejects if r.proposal]
    if not all(Path(image).exists() for image in images):
        return None
    relabel(cached, pdf_path)
    cached.cached = True
    return cached


def relabel(run: DocumentRun, pdf_path: Path) -> DocumentRun:
    """Give a cached run the identity of the input being built: its path, book and pair ids."""
    old, new = run.book, book_id(pdf_path)
    run.pdf = str(pdf_path)
    run.book = new
    if run.source is not None:
        run.source = run.source.model_copy(update={"path": str(pdf_path), "book": new})
    pairs = run.pairs + [r.proposal for r in run.rejects if r.proposal is not None]
    for pair in pairs:
        pair.book = new
        pair.source_pdf = pdf_path.name
        if pair.pair_id.startswith(f"{old}/"):
            pair.pair_id = new + pair.pair_id[len(old) :]
    for reject in run.rejects:
        if reject.pair_id and reject.pair_id.startswith(f"{old}/"):
            reject.pair_id = new + reject.pair_id[len(old) :]
    return run


def outcome_only(run: DocumentRun) -> DocumentRun:
    """What a per-PDF task hands back: the run without its pages, pairs and rejects, which are
    stored in `run.directory` (the work directory, keyed by content). Small to send between
    processes and hosts, whatever the size of the book."""
    return run.model_copy(update={"pages": [], "pairs": [], "rejects": []})


def stage_input(pdf_path: Path, work_dir: Path) -> Path:
    """The input's bytes in the shared work directory, under its content hash and its own file
    name (which the book's identity comes from): `<work_dir>/inputs/<sha256>/<name>`. Copied once,
    atomically; an input that cannot be read is left where it is, for its task to fail on."""
    pdf_path = Path(pdf_path).absolute()
    try:
        staged = Path(work_dir).absolute() / "inputs" / sha256_file(pdf_path) / pdf_path.name
        if not staged.is_file():
            with atomic_path(staged) as temp:
                shutil.copyfile(pdf_path, temp)
        return staged
    except OSError as exc:
        log.debug("%s: not staged (%s)", pdf_path, exc)
        return pdf_path


def with_stored_contents(outcome: DocumentRun, pdf_path: Path) -> DocumentRun:
    """A task's outcome made whole again from its stored record, under the identity of the input
    as given (its path, book and pair ids); a failed outcome has nothing stored."""
    if outcome.failed or not outcome.directory:
        return relabel(outcome.model_copy(), Path(pdf_path))
    run = read_document_run(Path(outcome.directory))
    run = run.model_copy(update={key: getattr(outcome, key) for key in ("status", "errors", "seconds", "cached")})
    return relabel(run, Path(pdf_path))


# ---------------------------------------------------------------------------- builds


class BuildRecord(BaseModel):
    """What one build processed. Saved with each document's outcome only; the documents' pairs
    stay in their own records and are read back from there (`load_build`)."""

    build_id: str
    dataset: str
    created: str
    documents: list[DocumentRun]
    review_db: str
    seconds: dict[str, float] = Field(default_factory=dict, description="Wall time of the build-level stages.")

    @property
    def pairs(self) -> list[Pair]:
        return [pair for doc in self.documents for pair in doc.pairs]

    @property
    def proposals(self) -> list[Pair]:
        """Possible misses a reviewer may turn into pairs."""
        return [
            r.proposal for doc in self.documents for r in doc.rejects if r.proposal is not None and r.kind in REVIEWABLE_REJECTS
        ]

    @property
    def input_pdfs(self) -> dict[str, str]:
        return {Path(d.pdf).name: d.source.sha256 for d in self.documents if d.source is not None and not d.failed}

    @property
    def failures(self) -> list[DocumentRun]:
        return [d for d in self.documents if d.failed]

    def summary_json(self) -> str:
        """The saved form: outcomes without the documents' pages, pairs and rejects."""
        return self.model_dump_json(indent=1, exclude={"documents": {"__all__": {"pages", "pairs", "rejects"}}})


def build_id_for(documents: list[DocumentRun], options: BuildOptions) -> str:
    """Same inputs, config and results give the same build id (and the same review queue)."""
    keys = sorted(content_key(pair) for doc in documents for pair in doc.pairs)
    names = sorted(f"{doc.book}:{doc.cache_key or doc.pdf}" for doc in documents)
    return "build-" + _hash({"keys": names, "pairs": keys, "dataset": options.dataset})[:12]


def record_build(documents: list[DocumentRun], options: BuildOptions) -> BuildRecord:
    """Save the build and put its uncertain pairs and possible misses in the review queue."""
    started = time.perf_counter()
    record = BuildRecord(
        build_id=build_id_for(documents, options),
        dataset=options.dataset,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        documents=documents,
        review_db=str(options.review_db),
    )
    store = ReviewStore(options.review_db)
    pdf_roots = sorted({str(Path(d.pdf).resolve().parent) for d in documents})
    store.register_build(record.build_id, options.dataset, record.pairs + record.proposals, source={"pdf_roots": pdf_roots})
    write_atomic(options.work_dir / "builds" / f"{record.build_id}.json", record.summary_json())
    write_atomic(options.work_dir / "builds" / "latest", record.build_id)
    record.seconds["record"] = round(time.perf_counter() - started, 4)
    return record


def load_build(work_dir: Path, build_id: str | None = None) -> BuildRecord:
    """A saved build with each document's record read back from its directory."""
    builds = Path(work_dir) / "builds"
    build_id = build_id or (builds / "latest").read_text(encoding="utf-8").strip()
    record = BuildRecord.model_validate_json((builds / f"{build_id}.json").read_text(encoding="utf-8"))
    record.documents = [
        relabel(read_document_run(Path(d.directory)), Path(d.pdf)) if d.directory and not d.failed else d
        for d in record.documents
    ]
    return record


def translate_pairs(pairs: list[Pair], options: BuildOptions) -> list[Pair]:
    """Step 4b: fill the missing caption language (printed text is never changed)."""
    from pipeline.translate import ArgosTranslator, TranslatorOptions, fill_missing_language

    translator = ArgosTranslator(
        TranslatorOptions(
            packages_dir=options.translation_packages_dir,
            argos_home=options.translation_home,
            package_files=options.translation_packages,
            glossary_files=options.glossary_files,
            cache_path=options.work_dir / "translations.sqlite",
        )
    )
    return fill_missing_language(pairs, translator)


class PublishSummary(BaseModel):
    ref: str
    unchanged: bool = False
    path: str
    n_pairs: int
    counts: dict[str, dict[str, int]]
    fingerprint: str
    seconds: dict[str, float] = Field(default_factory=dict, description="Wall time of review, translation and publishing.")


def reviewed_pairs(record: BuildRecord, options: BuildOptions) -> list[Pair]:
    """The build's pairs with reviewers' decisions applied, plus the possible misses a reviewer
    turned into pairs (with a caption); dismissed and undecided possible misses stay out."""
    store = ReviewStore(options.review_db)
    pairs = store.apply_decisions(record.pairs)
    taken = {pair.pair_id for pair in pairs}
    for proposal in store.apply_decisions(record.proposals):
        if proposal.review_status not in ("accepted", "edited") or not (proposal.caption_en or proposal.caption_zh):
            continue
        pair_id, count = proposal.pair_id, 1
        while pair_id in taken:
            count += 1
            pair_id = f"{proposal.pair_id}#{count}"
        taken.add(pair_id)
        pairs.append(proposal.model_copy(update={"pair_id": pair_id}))
    return pairs


def publish_build(record: BuildRecord, options: BuildOptions) -> PublishSummary:
    """Apply review decisions, translate, and publish the next version of the dataset."""
    from data_manifests import publish

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    pairs = reviewed_pairs(record, options)
    seconds["review"] = round(time.perf_counter() - started, 4)
    started = time.perf_counter()
    pairs = translate_pairs(pairs, options)
    seconds["translate"] = round(time.perf_counter() - started, 4)
    started = time.perf_counter()
    published = publish(
        pairs,
        options.dataset,
        options.registry_root,
        config=options.step_config(),
        input_pdfs=record.input_pdfs,
        pipeline_version=__version__,
        image_store=options.image_store,
        if_changed=True,
    )
    seconds["publish"] = round(time.perf_counter() - started, 4)
    meta = published.meta
    return PublishSummary(
        ref=published.ref,
        unchanged=published.unchanged,
        path=str(published.path),
        n_pairs=meta.n_pairs,
        counts=meta.counts.model_dump(),
        fingerprint=meta.content_fingerprint,
        seconds=seconds,
    )


def run_build(pdfs: list[Path], options: BuildOptions) -> tuple[BuildRecord, PublishSummary | None]:
    """The whole build without an orchestrator: steps 1–3 per PDF, queue, step 4, publish."""
    clean_work_dir(options)
    documents = [process_document(pdf, options) for pdf in pdfs]
    record = record_build(documents, options)
    if not record.pairs:
        log.error("no pairs found in any input; nothing to publish")
        return record, None
    return record, publish_build(record, options)


def step_seconds(documents: list[DocumentRun]) -> dict[str, float]:
    """Total wall time per step over a build's documents (cached documents count nothing)."""
    totals: Counter[str] = Counter()
    for doc in documents:
        if not doc.cached:
            totals.update(doc.seconds)
    return {step: round(value, 3) for step, value in totals.items()}


__all__ = [
    "BuildOptions",
    "BuildRecord",
    "PublishSummary",
    "RunnerOptions",
    "Status",
    "cache_key",
    "clean_work_dir",
    "load_build",
    "outcome_only",
    "process_document",
    "publish_build",
    "record_build",
    "run_build",
    "with_stored_contents",
]
