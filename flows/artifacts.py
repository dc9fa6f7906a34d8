"""What a build run shows in the Prefect UI: summary table, example pairs, review link, publish note.

The builders that turn records into rows and markdown are plain functions (testable without a
server); `publish_*` functions hand them to Prefect's artifact API inside a flow run.
"""

from __future__ import annotations

import base64
import logging
import re
from collections import Counter
from pathlib import Path
from urllib.parse import urlencode

from curation.build import BuildOptions, BuildRecord, PublishSummary
from foundation.imaging import ImageDecodeError, decode_image, encode_png
from foundation.records import DocumentRun, Pair

logger = logging.getLogger(__name__)

MODALITY_COLUMNS = ("CFP", "FFA", "OCT", "other")
THUMBNAIL_PIXELS = 96
EXAMPLE_PAIRS = 6
CAPTION_CHARS = 140


def artifact_key(dataset: str, kind: str) -> str:
    """Artifact keys allow lower-case letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{dataset}-{kind}".lower()).strip("-")


def review_page_url(base_url: str, build_id: str) -> str:
    """The review page's queue of one build (route `/queue?build=<build_id>` in flows/review_app.py)."""
    return f"{base_url.rstrip('/')}/queue?{urlencode({'build': build_id})}"


def summary_rows(documents: list[DocumentRun]) -> list[dict[str, object]]:
    """One row per PDF and a total row: pages, figures, pairs by modality, review split,
    possible misses, failures."""
    rows: list[dict[str, object]] = []
    totals: Counter[str] = Counter()
    counted = ("pages", "scanned pages", "figures", "pairs", *MODALITY_COLUMNS, "auto-accepted", "queued", "possible misses")
    for doc in documents:
        modality = Counter(pair.modality for pair in doc.pairs)
        queued = sum(pair.review_status == "queued" for pair in doc.pairs)
        row: dict[str, object] = {
            "book": doc.book,
            "pdf": Path(doc.pdf).name,
            "status": doc.status.value,
            "pages": doc.page_count,
            "scanned pages": doc.scanned_pages,
            "figures": doc.figures,
            "pairs": len(doc.pairs),
            **{modality_name: modality.get(modality_name, 0) for modality_name in MODALITY_COLUMNS},
            "auto-accepted": len(doc.pairs) - queued,
            "queued": queued,
            "possible misses": sum(r.proposal is not None for r in doc.rejects),
            "cache": "reused" if doc.cached else "computed",
            "failure": "; ".join(doc.errors),
        }
        rows.append(row)
        for name in counted:
            totals[name] += int(row[name])  # type: ignore[arg-type]
    failed = sum(doc.failed for doc in documents)
    partial = sum(doc.status.value == "partial" for doc in documents)
    status = ", ".join(part for part in (f"{failed} failed" if failed else "", f"{partial} partial" if partial else "") if part)
    rows.append(
        {
            "book": "TOTAL",
            "pdf": f"{len(documents)} PDFs",
            "status": status or "all ok",
            **{name: totals[name] for name in counted},
            "cache": f"{sum(doc.cached for doc in documents)} reused",
            "failure": "",
        }
    )
    return rows


def summary_description(record: BuildRecord) -> str:
    pairs = record.pairs
    queued = sum(pair.review_status == "queued" for pair in pairs)
    lines = [
        f"Build `{record.build_id}` of `{record.dataset}`: {len(record.documents)} PDFs, {len(pairs)} pairs, "
        f"{len(pairs) - queued} auto-accepted, {queued} queued for review, "
        f"{len(record.proposals)} possible misses to look at."
    ]
    lines += [f"FAILED {Path(doc.pdf).name}: {doc.error}" for doc in record.failures]
    lines += [
        f"PARTIAL {Path(doc.pdf).name}: {'; '.join(doc.errors)}" for doc in record.documents if doc.status.value == "partial"
    ]
    return "\n\n".join(lines)


def thumbnail_data_uri(image_file: str | Path, max_pixels: int = THUMBNAIL_PIXELS) -> str | None:
    """A small PNG of a panel as a data URI, or None when the file cannot be (or must not be) decoded.

    Goes through the guarded decoder, so an image bomb costs a header read, not the batch.
    """
    try:
        image = decode_image(image_file, max_side=max_pixels)
    except ImageDecodeError as exc:
        logger.warning("no thumbnail: %s", exc)
        return None
    return "data:image/png;base64," + base64.b64encode(encode_png(image)).decode("ascii")


def pick_examples(pairs: list[Pair], count: int = EXAMPLE_PAIRS) -> list[Pair]:
    """A few pairs worth a look: queued ones first, then one per modality, then the rest in order."""
    chosen: list[Pair] = []
    seen: set[str] = set()

    def take(pair: Pair) -> None:
        if len(chosen) < count and pair.pair_id not in seen:
            chosen.append(pair)
            seen.add(pair.pair_id)

    for pair in [p for p in pairs if p.review_status == "queued"][: count // 2]:
        take(pair)
    for modality in MODALITY_COLUMNS:
        for pair in pairs:
            if pair.modality == modality:
                take(pair)
                break
    for pair in pairs:
        take(pair)
    return chosen


def _cell(text: str | None) -> str:
    text = " ".join((text or "").split())
    if len(text) > CAPTION_CHARS:
        text = text[: CAPTION_CHARS - 1] + "…"
    return text.replace("|", "\\|") or "—"


def examples_markdown(record: BuildRecord, review_url: str | None = None, count: int = EXAMPLE_PAIRS) -> str:
    """Markdown table of example pairs with embedded ~96 px thumbnails (a few KB each)."""
    examples = pick_examples(record.pairs, count)
    lines = [f"### Example pairs of build `{record.build_id}`", ""]
    if not examples:
        return "\n".join([*lines, "No pairs were found in any input."])
    lines += [
        "| panel | pair | modality | review | caption (en) | caption (zh) |",
        "|---|---|---|---|---|---|",
    ]
    for pair in examples:
        uri = thumbnail_data_uri(pair.image_file)
        image = f"![{pair.pair_id}]({uri})" if uri else "(image missing)"
        modality = f"{pair.modality} {pair.modality_confidence:.2f}"
        review = pair.review_status + (f" (alignment {pair.alignment_score:.2f})" if pair.review_status == "queued" else "")
        lines.append(
            f"| {image} | `{pair.pair_id}` p.{pair.page} | {modality} | {review} "
            f"| {_cell(pair.caption_en)} | {_cell(pair.caption_zh)} |"
        )
    if review_url:
        lines += ["", f"Queued pairs are reviewed at [{review_url}]({review_url}) (`mmretinal review serve`)."]
    return "\n".join(lines)


def publish_markdown(summary: PublishSummary) -> str:
    counts = "\n".join(
        f"- {group.replace('_', ' ')}: " + ", ".join(f"{name} {n}" for name, n in sorted(values.items()))
        for group, values in summary.counts.items()
    )
    heading = f"Unchanged: `{summary.ref}` already holds this content" if summary.unchanged else f"Published `{summary.ref}`"
    return (
        f"### {heading}\n\n{summary.n_pairs} pairs in `{summary.path}`\n\n"
        f"fingerprint `{summary.fingerprint}`\n\n{counts}\n"
    )


def publish_build_artifacts(record: BuildRecord, review_base_url: str) -> dict[str, str]:
    """Create the summary table, the examples and the review link of a build run; returns key -> id."""
    from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

    keys = {
        "summary": artifact_key(record.dataset, "build-summary"),
        "examples": artifact_key(record.dataset, "build-examples"),
        "review": artifact_key(record.dataset, "review-queue"),
    }
    review_url = review_page_url(review_base_url, record.build_id)
    ids = {
        keys["summary"]: create_table_artifact(
            summary_rows(record.documents), key=keys["summary"], description=summary_description(record)
        ),
        keys["examples"]: create_markdown_artifact(
            examples_markdown(record, review_url), key=keys["examples"], description="A few pairs of this build."
        ),
        keys["review"]: create_link_artifact(
            review_url,
            link_text=f"Review queue of {record.build_id}",
            key=keys["review"],
            description=f"{sum(p.review_status == 'queued' for p in record.pairs)} pairs queued and "
            f"{len(record.proposals)} possible misses; "
            f"serve the page with `mmretinal review serve --db {record.review_db}`.",
        ),
    }
    return {key: str(artifact_id) for key, artifact_id in ids.items()}


def publish_manifest_artifact(dataset: str, summary: PublishSummary) -> str:
    from prefect.artifacts import create_markdown_artifact

    key = artifact_key(dataset, "published")
    return str(create_markdown_artifact(publish_markdown(summary), key=key, description=f"Published {summary.ref}."))


REPORTS_DIR = "reports"


def publish_report_artifact(options: BuildOptions, summary: PublishSummary) -> str | None:
    """Write the dataset report (data_manifests/report.py) of a just-published version under
    `<work_dir>/reports/` and show it on the run: a markdown artifact with the counts and plots, and
    a link to the HTML page. A report that cannot be made is logged and skipped: the version is
    already published and stays so."""
    from prefect.artifacts import create_link_artifact, create_markdown_artifact

    from data_manifests.registry import RegistryError, load_manifest
    from data_manifests.report import write_report

    try:
        loaded = load_manifest(options.registry_root, summary.ref, image_store=options.image_store)
        out = (Path(options.work_dir) / REPORTS_DIR / f"{loaded.meta.dataset}-{loaded.meta.version}-report.html").resolve()
        report = write_report(loaded, out)
    except (RegistryError, OSError, ValueError) as exc:
        logger.warning("no dataset report for %s: %s", summary.ref, exc)
        return None
    key = artifact_key(loaded.meta.dataset, "dataset-report")
    artifact_id = create_markdown_artifact(report.markdown(), key=key, description=f"Dataset report of {summary.ref}.")
    create_link_artifact(
        out.as_uri(), link_text=f"{summary.ref} report (HTML)", key=f"{key}-page",
        description=f"Self-contained page; rebuild with `mmretinal manifest report {summary.ref}`.",
    )
    return str(artifact_id)
