"""A one-page HTML report of a published version: what it holds, where it came from, what it looks like.

The page is self-contained (plots and example thumbnails are inline PNG data URIs), so it can be
mailed, attached to a Prefect run or opened from a shared drive without its image store.
Plots are drawn with matplotlib's object API (no pyplot state), so building a report from a
flow's worker thread is safe.
"""

from __future__ import annotations

import base64
import io
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment
from PIL import Image
from pydantic import BaseModel, Field

from data_manifests.registry import LoadedManifest
from foundation.files import write_atomic

logger = logging.getLogger(__name__)

MODALITY_ORDER = ("CFP", "FFA", "OCT")
COLOURS = ("#3b6ea8", "#d9822b", "#4a9c5d", "#a23b72", "#7a7a7a", "#c9b037")


class ReportOptions(BaseModel):
    """What the dataset report shows."""

    examples_per_modality: int = Field(6, ge=0, le=50, description="Example pairs shown per modality in the grid.")
    thumbnail_pixels: int = Field(160, ge=32, le=512, description="Longest side of an example thumbnail.")
    caption_chars: int = Field(220, ge=20, description="Example captions are cut to this many characters.")
    alignment_bins: int = Field(20, ge=2, le=100, description="Bins of the alignment-score histogram.")


@dataclass
class Plot:
    """One figure of the report: its id (for tests and anchors), title and PNG data URI."""

    id: str
    title: str
    data_uri: str


@dataclass
class Example:
    pair_id: str
    modality: str
    sublabel: str
    data_uri: str | None
    caption_en: str
    caption_zh: str
    origin: str


@dataclass
class DatasetReport:
    """Everything the page shows; `html()` renders it."""

    ref: str
    meta: dict
    n_pairs: int
    plots: list[Plot] = field(default_factory=list)
    examples: dict[str, list[Example]] = field(default_factory=dict)
    tables: dict[str, dict[str, int]] = field(default_factory=dict)

    def html(self) -> str:
        return _ENV.from_string(_TEMPLATE).render(report=self)

    def markdown(self) -> str:
        """Short summary with the plots inline, for a Prefect markdown artifact."""
        lines = [f"### Dataset report `{self.ref}`", "", f"{self.n_pairs} pairs, fingerprint `{self.meta['content_fingerprint']}`", ""]
        for name, counts in self.tables.items():
            lines.append(f"- {name}: " + ", ".join(f"{key} {value}" for key, value in counts.items()))
        lines.append("")
        lines += [f"![{plot.title}]({plot.data_uri})" for plot in self.plots]
        return "\n".join(lines)


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _figure(width: float = 6.0, height: float = 3.2):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=96, layout="constrained")
    return figure, figure.add_subplot()


def _render(figure) -> str:
    from matplotlib.ticker import MaxNLocator

    for axes in figure.axes:  # counts of pairs are whole numbers
        axes.xaxis.set_major_locator(MaxNLocator(integer=True)) if axes.get_xlabel() == "pairs" else None
        axes.yaxis.set_major_locator(MaxNLocator(integer=True)) if axes.get_ylabel() == "pairs" else None
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return _png_uri(buffer.getvalue())


def _bar(plot_id: str, title: str, counts: dict[str, int], xlabel: str = "pairs") -> Plot:
    figure, axes = _figure(6.0, max(1.6, 0.35 * len(counts) + 0.9))
    labels = list(counts) or ["(none)"]
    values = [counts[label] for label in counts] or [0]
    axes.barh(labels[::-1], values[::-1], color=COLOURS[0])
    for y, value in enumerate(values[::-1]):
        axes.text(value, y, f" {value}", va="center", fontsize=8)
    axes.set_xlabel(xlabel)
    axes.set_title(title, fontsize=10)
    axes.margins(x=0.15)
    return Plot(plot_id, title, _render(figure))


def _modality_sublabel_plot(rows: list[dict]) -> Plot:
    counts = Counter((row["modality"], row["modality_sublabel"] or "(none)") for row in rows)
    modalities = [m for m in MODALITY_ORDER if any(k[0] == m for k in counts)] + sorted(
        {k[0] for k in counts} - set(MODALITY_ORDER)
    )
    sublabels = sorted({k[1] for k in counts}, key=lambda s: (s != "(none)", s))
    figure, axes = _figure()
    left = [0] * len(modalities)
    for index, sublabel in enumerate(sublabels):
        values = [counts.get((modality, sublabel), 0) for modality in modalities]
        axes.barh(modalities, values, left=left, label=sublabel, color=COLOURS[index % len(COLOURS)])
        left = [a + b for a, b in zip(left, values)]
    axes.invert_yaxis()
    axes.set_xlabel("pairs")
    axes.set_title("Pairs by modality and sub-label", fontsize=10)
    axes.legend(fontsize=8, title="sub-label", title_fontsize=8, loc="lower right")
    return Plot("modality-sublabel", "Pairs by modality and sub-label", _render(figure))


def _caption_length_plot(rows: list[dict]) -> Plot:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.0, 2.8), dpi=96, layout="constrained")
    for index, (language, unit) in enumerate((("en", "words"), ("zh", "characters"))):
        axes = figure.add_subplot(1, 2, index + 1)
        texts = [row[f"caption_{language}"] for row in rows if row[f"caption_{language}"]]
        lengths = [len(t.split()) if unit == "words" else len("".join(t.split())) for t in texts]
        if lengths:
            axes.hist(lengths, bins=min(20, max(1, len(set(lengths)))), color=COLOURS[index])
        axes.set_xlabel(f"caption length ({unit})")
        axes.set_ylabel("pairs")
        axes.set_title(f"{language}: {len(lengths)} captions", fontsize=10)
    return Plot("caption-length", "Caption length per language", _render(figure))


def _origin_plot(rows: list[dict]) -> Plot:
    origins = ("printed", "machine", "missing")
    figure, axes = _figure(6.0, 2.4)
    languages = ["en", "zh"]
    left = [0, 0]
    for index, origin in enumerate(origins):
        values = [sum(row[f"caption_{lang}_origin"] == origin for row in rows) for lang in languages]
        axes.barh(languages, values, left=left, label=origin, color=COLOURS[index])
        left = [a + b for a, b in zip(left, values)]
    axes.invert_yaxis()
    axes.set_xlabel("pairs")
    axes.set_title("Caption origin: printed in the book or machine-translated", fontsize=10)
    axes.legend(fontsize=8, loc="lower right")
    return Plot("caption-origin", "Caption origin", _render(figure))


def _alignment_plot(rows: list[dict], bins: int) -> Plot:
    figure, axes = _figure(6.0, 2.8)
    scores = [row["alignment_score"] for row in rows]
    axes.hist(scores, bins=bins, range=(0.0, 1.0), color=COLOURS[2])
    axes.set_xlabel("alignment score")
    axes.set_ylabel("pairs")
    axes.set_title(f"Alignment score of {len(scores)} pairs", fontsize=10)
    return Plot("alignment-score", "Alignment-score histogram", _render(figure))


def _thumbnail(path: Path, pixels: int) -> str | None:
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((pixels, pixels))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", optimize=True)
    except OSError as exc:
        logger.warning("report: no thumbnail for %s: %s", path, exc)
        return None
    return _png_uri(buffer.getvalue())


def _cut(text: str | None, limit: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _spread(items: list, count: int) -> list:
    """`count` items spread evenly over the list (first and last included), so examples span the books."""
    if len(items) <= count:
        return items
    if count == 1:
        return items[:1]
    step = (len(items) - 1) / (count - 1)
    return [items[round(i * step)] for i in range(count)]


def build_report(loaded: LoadedManifest, options: ReportOptions | None = None) -> DatasetReport:
    """Counts, plots and example pairs of a loaded version."""
    options = options or ReportOptions()
    meta = loaded.meta
    rows = loaded.table.to_pylist()
    review = dict(Counter(row["review_status"] for row in rows))
    rejected = meta.excluded.by_reason.get("review_rejected", 0)
    if rejected:
        review["rejected (left out)"] = rejected
    by_modality = dict(Counter(row["modality"] for row in rows).most_common())
    by_book = dict(sorted(Counter(row["book"] for row in rows).items()))
    report = DatasetReport(
        ref=loaded.ref,
        meta=meta.model_dump(mode="json", exclude={"config", "excluded"}) | {"n_excluded": meta.excluded.n_excluded},
        n_pairs=len(rows),
        tables={
            "modality": by_modality,
            "book": by_book,
            "review outcome": review,
            "left out at publish": dict(meta.excluded.by_reason),
        },
    )
    report.plots = [
        _modality_sublabel_plot(rows),
        _bar("by-book", "Pairs by book", by_book),
        _caption_length_plot(rows),
        _origin_plot(rows),
        _bar("review-outcome", "Review outcome", review),
        _alignment_plot(rows, options.alignment_bins),
    ]
    modalities = [m for m in MODALITY_ORDER if m in by_modality] + sorted(set(by_modality) - set(MODALITY_ORDER))
    for modality in modalities:
        chosen = _spread([row for row in rows if row["modality"] == modality], options.examples_per_modality)
        report.examples[modality] = [
            Example(
                pair_id=row["pair_id"],
                modality=modality,
                sublabel=row["modality_sublabel"] or "",
                data_uri=_thumbnail(loaded.image_file(row["image_path"]), options.thumbnail_pixels),
                caption_en=_cut(row["caption_en"], options.caption_chars),
                caption_zh=_cut(row["caption_zh"], options.caption_chars),
                origin=f"en {row['caption_en_origin']}, zh {row['caption_zh_origin']}",
            )
            for row in chosen
        ]
    return report


def write_report(loaded: LoadedManifest, out: Path | str, options: ReportOptions | None = None) -> DatasetReport:
    """Build the report of `loaded` and write it as one HTML file at `out`."""
    report = build_report(loaded, options)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, report.html())
    logger.info("wrote the report of %s to %s", loaded.ref, out)
    return report


_ENV = Environment(autoescape=True)

_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{{ report.ref }} dataset report</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; padding: 0 1rem; color: #222; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
code { font-size: 12px; background: #f4f4f4; padding: 0 .25rem; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; } dl.meta dt { color: #666; }
table.counts { border-collapse: collapse; margin: .5rem 1.5rem .5rem 0; display: inline-table; vertical-align: top; }
table.counts th, table.counts td { border: 1px solid #ddd; padding: .15rem .6rem; text-align: left; }
table.counts td.n { text-align: right; }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; } .plots figure { margin: 0; } .plots img { max-width: 100%; border: 1px solid #eee; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: .8rem; }
.pair { border: 1px solid #ddd; border-radius: 4px; padding: .4rem; font-size: 12px; }
.pair img { display: block; margin: 0 auto .3rem; max-width: 100%; }
.pair .id { font-family: monospace; font-size: 11px; color: #555; } .pair .origin { color: #888; font-size: 11px; }
</style>
</head>
<body>
<h1>{{ report.ref }}</h1>
<p>{{ report.n_pairs }} image-text pairs published {{ report.meta.created }}.</p>
<dl class="meta" id="provenance">
  <dt>content fingerprint</dt><dd><code>{{ report.meta.content_fingerprint }}</code></dd>
  <dt>parent</dt><dd>{{ report.meta.parent or "none" }}</dd>
  <dt>pipeline version</dt><dd>{{ report.meta.pipeline_version }}</dd>
  <dt>config hash</dt><dd><code>{{ report.meta.config_hash }}</code></dd>
  <dt>left out at publish</dt><dd>{{ report.meta.n_excluded }}</dd>
  {% for name, sha in report.meta.input_pdfs.items() %}<dt>input PDF</dt><dd>{{ name }} <code>{{ sha[:16] }}…</code></dd>
  {% endfor %}
</dl>

<h2>Counts</h2>
{% for name, counts in report.tables.items() %}
<table class="counts" data-table="{{ name }}"><tr><th>{{ name }}</th><th>pairs</th></tr>
{% for key, value in counts.items() %}<tr><td>{{ key }}</td><td class="n">{{ value }}</td></tr>{% else %}<tr><td colspan="2">none</td></tr>{% endfor %}
</table>
{% endfor %}

<h2>Plots</h2>
<div class="plots">
{% for plot in report.plots %}<figure id="plot-{{ plot.id }}"><img class="plot" src="{{ plot.data_uri }}" alt="{{ plot.title }}"><figcaption>{{ plot.title }}</figcaption></figure>
{% endfor %}
</div>

<h2>Example pairs</h2>
{% for modality, examples in report.examples.items() %}
<h3>{{ modality }}</h3>
<div class="grid" data-modality="{{ modality }}">
{% for example in examples %}<div class="pair" data-pair-id="{{ example.pair_id }}">
  {% if example.data_uri %}<img class="thumb" src="{{ example.data_uri }}" alt="{{ example.pair_id }}">{% else %}<p>(image missing from the store)</p>{% endif %}
  <div class="id">{{ example.pair_id }}{% if example.sublabel %} · {{ example.sublabel }}{% endif %}</div>
  <div lang="en">{{ example.caption_en or "—" }}</div>
  <div lang="zh">{{ example.caption_zh or "—" }}</div>
  <div class="origin">{{ example.origin }}</div>
</div>
{% endfor %}
</div>
{% endfor %}
</body>
</html>
"""
