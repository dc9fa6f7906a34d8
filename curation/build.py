"""The whole build as plain Python: steps 1–3 per PDF, the review queue, step 4 and publishing.

Per-PDF work (extract, align, classify) is cached in the work directory under a key made of the
PDF's sha256, the step options and the pipeline version, so an unchanged rebuild reuses it.
Review decisions are applied to the printed captions (before translation), so they are keyed by
what the atlas says, not by what a translation package produced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from pathlib import Path

import cv2
from pydantic import BaseModel, Field, model_validator

from pipeline import __version__, code_version
from pipeline.align import AlignmentReport, AlignOptions, align_document
from pipeline.extract import (
    ExtractionError,
    ExtractOptions,
    book_id,
    extract_pdf,
    load_extraction,
    open_pdf,
)
from foundation.files import sha256_file, write_atomic
from pipeline.modality import ModalityOptions, classify_modality
from pipeline.ocr import lazy_line_reader
from foundation.records import Pair, Status

log = logging.getLogger(__name__)

PAIRS_FILE = "pairs.json"


class BuildOptions(BaseModel):
    """Everything a build depends on; its hash is part of every cache key."""

    dataset: str = Field("mm-retinal", description="Name of the dataset to publish.")
    work_dir: Path = Field(Path(".mmretinal"), description="Extraction outputs, per-PDF caches, builds and the review database.")
    registry_root: Path = Field(Path("data_manifests"), description="Manifest registry root (published versions).")
    image_store: Path | None = Field(None, description="Content-addressed image store; default <registry_root>/images.")
    extract: ExtractOptions = Field(default_factory=ExtractOptions, description="Step 1 options.")
    align: AlignOptions = Field(default_factory=AlignOptions, description="Step 2 options.")
    modality: ModalityOptions = Field(default_factory=ModalityOptions, description="Step 3 options.")
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

    @property
    def review_db(self) -> Path:
        return self.work_dir / "review.sqlite"


def _hash(data: object) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def cache_key(pdf_sha256: str, options: BuildOptions) -> str:
    """Key of one PDF's steps 1–3: input content + step config + code version."""
    return _hash({"pdf": pdf_sha256, "config": options.step_config(), "version": code_version()})[:24]


class BookResult(BaseModel):
    """Steps 1–3 for one PDF."""

    pdf: str
    book: str | None = None
    pdf_sha256: str | None = None
    status: Status = Status.success
    error: str | None = None
    cache_key: str | None = None
    cached: bool = False
    pages: int = 0
    scanned_pages: int = 0
    figures: int = 0
    pairs: list[Pair] = Field(default_factory=list)
    alignment: AlignmentReport = Field(default_factory=AlignmentReport)
    seconds: dict[str, float] = Field(default_factory=dict, description="Wall time per step.")


def classify_pairs(pairs: list[Pair], options: ModalityOptions) -> list[Pair]:
    """Step 3: modality per panel from its image and its own caption text."""
    for pair in pairs:
        image = cv2.imread(pair.image_file, cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"cannot read panel image {pair.image_file}")
        caption = pair.caption_en or pair.caption_zh
        result = classify_modality(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), caption, options)
        pair.modality = result.modality
        pair.modality_sublabel = result.sublabel
        pair.modality_confidence = round(result.confidence, 4)
        pair.reasons.extend(f"modality {reason}" for reason in result.reasons)
        if result.needs_review and pair.review_status == "auto_accepted":
            pair.review_status = "queued"
            pair.reasons.append(f"modality confidence {result.confidence:.2f} is low")
    return pairs


def process_pdf(pdf_path: Path, options: BuildOptions) -> BookResult:
    """Steps 1–3 for one PDF, reusing the cached result when inputs and config are unchanged.

    Never raises for a bad PDF: the result carries status 'failed' and the reason.
    """
    pdf_path = Path(pdf_path)
    result = BookResult(pdf=str(pdf_path), book=book_id(pdf_path))
    try:
        open_pdf(pdf_path, options.extract).close()
        result.pdf_sha256 = sha256_file(pdf_path)
        result.cache_key = cache_key(result.pdf_sha256, options)
        book_dir = options.work_dir / "books" / result.book
        cached = _load_cached(book_dir, result.cache_key)
        if cached is not None:
            log.info("%s: unchanged, reusing steps 1-3 (%d pairs)", pdf_path.name, len(cached.pairs))
            return cached.model_copy(update={"cached": True, "pdf": str(pdf_path)})
        started = time.perf_counter()
        extraction = extract_pdf(pdf_path, options.work_dir / "books", options.extract, result.pdf_sha256)
        result.seconds["extract"] = round(time.perf_counter() - started, 3)
        result.pages = len(extraction.pages)
        result.scanned_pages = sum(p.scanned for p in extraction.pages)
        log.info("%s: step 1 extract: %d pages (%d scanned)", pdf_path.name, result.pages, result.scanned_pages)
        started = time.perf_counter()
        pairs, result.alignment = align_document(
            load_extraction(book_dir), book_dir, options.align, read_line=lazy_line_reader(options.extract.ocr)
        )
        result.seconds["align"] = round(time.perf_counter() - started, 3)
        result.figures = len({p.figure_id for p in pairs})
        log.info("%s: step 2 align: %d figures, %d panels", pdf_path.name, result.figures, len(pairs))
        started = time.perf_counter()
        result.pairs = classify_pairs(pairs, options.modality)
        result.seconds["modality"] = round(time.perf_counter() - started, 3)
        log.info("%s: step 3 modality: %s", pdf_path.name, dict(Counter(p.modality for p in pairs)))
        write_atomic(book_dir / PAIRS_FILE, result.model_dump_json(indent=1))
    except ExtractionError as exc:
        result.status, result.error = Status.failed, str(exc)
        log.error("%s: %s", pdf_path, exc)
    except Exception as exc:  # one broken PDF must not stop the batch
        result.status, result.error = Status.failed, f"{type(exc).__name__}: {exc}"
        log.exception("%s: build failed", pdf_path)
    return result


def _load_cached(book_dir: Path, key: str) -> BookResult | None:
    path = book_dir / PAIRS_FILE
    if not path.exists():
        return None
    try:
        cached = BookResult.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    if cached.cache_key != key or not all(Path(p.image_file).exists() for p in cached.pairs):
        return None
    return cached


# ---------------------------------------------------------------------------- builds


class BuildRecord(BaseModel):
    """What one build processed; publish reads its pairs back from here."""

    build_id: str
    dataset: str
    created: str
    books: list[BookResult]
    review_db: str

    @property
    def pairs(self) -> list[Pair]:
        return [pair for book in self.books for pair in book.pairs]

    @property
    def input_pdfs(self) -> dict[str, str]:
        return {Path(b.pdf).name: b.pdf_sha256 for b in self.books if b.pdf_sha256}

    @property
    def failures(self) -> list[BookResult]:
        return [b for b in self.books if b.status == Status.failed]


def build_id_for(books: list[BookResult], options: BuildOptions) -> str:
    """Same inputs, config and results give the same build id (and the same review queue)."""
    from curation.review_store import content_key

    pairs = sorted(content_key(pair) for book in books for pair in book.pairs)
    return "build-" + _hash({"keys": sorted(b.cache_key or b.pdf for b in books), "pairs": pairs, "dataset": options.dataset})[:12]


def record_build(books: list[BookResult], options: BuildOptions) -> BuildRecord:
    """Save the build and put its uncertain pairs in the review queue."""
    from curation.review_store import ReviewStore

    record = BuildRecord(
        build_id=build_id_for(books, options),
        dataset=options.dataset,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        books=books,
        review_db=str(options.review_db),
    )
    store = ReviewStore(options.review_db)
    pdf_roots = sorted({str(Path(b.pdf).resolve().parent) for b in books})
    store.register_build(record.build_id, options.dataset, record.pairs, source={"pdf_roots": pdf_roots})
    write_atomic(options.work_dir / "builds" / f"{record.build_id}.json", record.model_dump_json(indent=1))
    write_atomic(options.work_dir / "builds" / "latest", record.build_id)
    return record


def load_build(work_dir: Path, build_id: str | None = None) -> BuildRecord:
    builds = work_dir / "builds"
    build_id = build_id or (builds / "latest").read_text(encoding="utf-8").strip()
    return BuildRecord.model_validate_json((builds / f"{build_id}.json").read_text(encoding="utf-8"))


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


def publish_build(record: BuildRecord, options: BuildOptions) -> PublishSummary:
    """Apply review decisions, translate, and publish the next version of the dataset."""
    from data_manifests import publish
    from curation.review_store import ReviewStore

    pairs = ReviewStore(options.review_db).apply_decisions(record.pairs)
    pairs = translate_pairs(pairs, options)
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
    meta = published.meta
    return PublishSummary(
        ref=published.ref,
        unchanged=published.unchanged,
        path=str(published.path),
        n_pairs=meta.n_pairs,
        counts=meta.counts.model_dump(),
        fingerprint=meta.content_fingerprint,
    )


def run_build(pdfs: list[Path], options: BuildOptions) -> tuple[BuildRecord, PublishSummary | None]:
    """The whole build without an orchestrator: steps 1–3 per PDF, queue, step 4, publish."""
    books = [process_pdf(pdf, options) for pdf in pdfs]
    record = record_build(books, options)
    if not record.pairs:
        log.error("no pairs found in any input; nothing to publish")
        return record, None
    return record, publish_build(record, options)
