"""Seeded books drawn from a wide layout space, so that scores can be broken down by layout.

The bundled sample atlas (:mod:`testbed.sample_atlas`) is one house style. Real atlases and
papers put captions above, below, beside the figure or in the other column; number figures
``Figure 3``, ``Fig. 3.12``, ``图 3.12``, ``Figura 2.3:``, ``Abbildung 4`` or ``FIG. 1 –``; stitch
panels into one image with thin or no gutters; print panel letters in the image, over it or under
it; scan pages with or without an invisible OCR text layer; and mix in charts, diagrams and
vector drawings that are not retinal. Every figure here draws its layout from that space with a
seeded generator, and every drawn feature is written to the truth (:class:`VariedPanelTruth`).

Captions follow the canonical form of :mod:`testbed.sample_atlas`: figure title + the panel's
own text + every text shared by all panels. Latin-script captions (en, es, de, fr) are compared
with a pair's ``caption_en``, Chinese ones with ``caption_zh``.

Traps that must never become captions (list-of-figures lines, body text that starts with a
figure label) go to ``traps.jsonl``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import pymupdf
from pydantic import BaseModel, Field

from foundation.files import write_atomic
from foundation.labels import label_for_index
from foundation.records import BBox
from testbed import synthetic_images
from testbed.sample_atlas import (
    _KIND_ASPECT,
    _KIND_MODALITY,
    PAGE_HEIGHT,
    PAGE_WIDTH,
    PIXELS_PER_POINT,
    PanelTruth,
    _encode,
    _font,
    _rounded,
    _save_pdf,
    _text_width,
    _wrap,
    canonical_caption,
)

logger = logging.getLogger(__name__)

MARGIN_X = 56.0
CONTENT_TOP = 60.0
CONTENT_BOTTOM = 792.0
COLUMN_GAP = 20.0

CaptionPosition = Literal["below", "above", "beside_same_column", "other_column"]
Grid = Literal["1", "1x2", "1+2", "2x2", "3+2", "2x3"]
Embedding = Literal["separate", "stitched", "vector"]
LabelStyle = Literal["in_image", "white_over", "under_panel", "absent"]
NumberingStyle = Literal["figure_plain", "fig_dotted", "zh_dotted", "figura_colon", "abbildung", "fig_caps_dash", "figure_dashed"]
ScanKind = Literal["born_digital", "image_only", "ocr_layer"]
Language = Literal["en", "zh", "es", "de", "fr"]

GRID_ROWS: dict[str, list[list[int]]] = {
    "1": [[0]],
    "1x2": [[0, 1]],
    "1+2": [[0], [1, 2]],
    "2x2": [[0, 1], [2, 3]],
    "3+2": [[0, 1, 2], [3, 4]],
    "2x3": [[0, 1, 2], [3, 4, 5]],
}
NUMBERING_LANGUAGE: dict[str, Language] = {
    "figure_plain": "en",
    "fig_dotted": "en",
    "zh_dotted": "zh",
    "figura_colon": "es",
    "abbildung": "de",
    "fig_caps_dash": "fr",
    "figure_dashed": "en",
}
LAYOUT_FEATURES = (
    "caption_position", "caption_width", "placement", "grid", "embedding", "stitched_gutter_px",
    "label_style", "numbering_style", "language", "scan_kind", "retinal", "columns", "figures_on_page",
)
"""Truth fields that scores are broken down by."""

# ---------------------------------------------------------------- phrase banks (canonical, no final stop)

_TITLES: dict[str, list[str]] = {
    "en": ["Central retinal vein occlusion", "Diabetic macular oedema", "Choroidal neovascularisation",
           "Branch retinal artery occlusion", "Central serous chorioretinopathy", "Full-thickness macular hole"],
    "es": ["Oclusión de la vena central de la retina", "Edema macular diabético", "Neovascularización coroidea",
           "Coriorretinopatía serosa central"],
    "de": ["Zentralvenenverschluss", "Diabetisches Makulaödem", "Choroidale Neovaskularisation",
           "Retinopathia centralis serosa"],
    "fr": ["Occlusion de la veine centrale de la rétine", "Oedème maculaire diabétique",
           "Néovascularisation choroïdienne", "Choriorétinopathie séreuse centrale"],
    "zh": ["视网膜中央静脉阻塞", "糖尿病黄斑水肿", "脉络膜新生血管", "中心性浆液性脉络膜视网膜病变"],
}
_PANEL_TEXT: dict[str, dict[str, list[str]]] = {
    "en": {"cfp": ["Colour fundus photograph shows scattered haemorrhages", "Fundus photograph shows hard exudates at the macula"],
           "red_free": ["Red-free photograph shows the nerve fibre layer defect"],
           "ffa": ["Fluorescein angiography shows late leakage", "FFA shows capillary non-perfusion"],
           "icga": ["ICGA shows a polypoidal lesion"],
           "oct": ["OCT shows cystoid macular oedema", "OCT shows subretinal fluid"],
           "other": ["Number of patients referred each year", "Flow of patients through the clinic", "Slit-lamp view of the anterior segment"]},
    "es": {"cfp": ["Retinografía en color con hemorragias dispersas"], "red_free": ["Retinografía aneritra"],
           "ffa": ["La angiografía fluoresceínica muestra fuga tardía"], "icga": ["La ICGA muestra un pólipo"],
           "oct": ["La OCT muestra edema macular quístico"], "other": ["Pacientes atendidos por año"]},
    "de": {"cfp": ["Farbfundusfoto mit verstreuten Blutungen"], "red_free": ["Rotfreie Aufnahme der Nervenfaserschicht"],
           "ffa": ["Fluoreszenzangiographie mit später Leckage"], "icga": ["ICGA mit polypoider Läsion"],
           "oct": ["OCT zeigt ein zystoides Makulaödem"], "other": ["Anzahl der Patienten pro Jahr"]},
    "fr": {"cfp": ["Rétinographie couleur avec hémorragies"], "red_free": ["Cliché en lumière anérythre"],
           "ffa": ["Angiographie à la fluorescéine avec diffusion tardive"], "icga": ["ICGA montrant un polype"],
           "oct": ["OCT montrant un oedème maculaire cystoïde"], "other": ["Nombre de patients par année"]},
    "zh": {"cfp": ["彩色眼底照相示散在出血", "眼底照相示黄斑区硬性渗出"], "red_free": ["无赤光眼底照相示神经纤维层缺损"],
           "ffa": ["荧光素血管造影示晚期渗漏"], "icga": ["ICGA示息肉样病灶"],
           "oct": ["OCT示黄斑囊样水肿", "OCT示视网膜下积液"], "other": ["每年转诊患者人数"]},
}
_SHARED: dict[str, list[str]] = {
    "en": ["CLINICAL DATA: a 62-year-old man with sudden loss of vision"],
    "es": ["Varón de 62 años con pérdida súbita de visión"],
    "de": ["Ein 62-jähriger Mann mit plötzlichem Sehverlust"],
    "fr": ["Homme de 62 ans avec une baisse brutale de la vision"],
    "zh": ["患者男，62岁，右眼视力突然下降"],
}
_NON_RETINAL_TITLES: dict[str, list[str]] = {
    "en": ["Referral pathway of the screening programme", "Patients seen per year", "Slit-lamp photograph of the anterior segment"],
    "es": ["Circuito de derivación del programa", "Pacientes atendidos por año"],
    "de": ["Ablauf des Screeningprogramms", "Patienten pro Jahr"],
    "fr": ["Circuit de dépistage du programme", "Patients vus par année"],
    "zh": ["筛查项目转诊流程", "每年就诊人数"],
}
_BODY: dict[str, list[str]] = {
    "en": ["The retina was examined after pupil dilation and the findings were recorded at each visit. "
           "Visual acuity improved over the following months while the macular thickness decreased.",
           "Treatment was started within two weeks of the first symptoms. The fellow eye remained normal "
           "throughout the follow-up period and no new lesions were seen."],
    "es": ["Se examinó la retina tras la dilatación pupilar y se registraron los hallazgos en cada visita. "
           "La agudeza visual mejoró en los meses siguientes."],
    "de": ["Die Netzhaut wurde nach Pupillenerweiterung untersucht und die Befunde wurden bei jedem Besuch "
           "festgehalten. Die Sehschärfe besserte sich in den folgenden Monaten."],
    "fr": ["La rétine a été examinée après dilatation pupillaire et les résultats ont été notés à chaque visite. "
           "L'acuité visuelle s'est améliorée au cours des mois suivants."],
    "zh": ["　　散瞳后检查眼底，每次随访均记录检查结果。随后数月视力逐渐提高，黄斑厚度下降。治疗在症状出现后两周内开始，对侧眼在随访期间始终正常。"],
}
_BODY_LABEL_VERB = {"en": "shows the course of the disease over one year", "es": "muestra la evolución de la enfermedad",
                    "de": "zeigt den Verlauf der Erkrankung", "fr": "montre l'évolution de la maladie",
                    "zh": "所示为病程一年的变化"}
_LOF_HEADING = {"en": "List of Figures", "es": "Índice de figuras", "de": "Abbildungsverzeichnis",
                "fr": "Table des figures", "zh": "插图目录"}
_RETINAL_KINDS = ["cfp", "cfp", "red_free", "ffa", "ffa", "icga", "oct", "oct"]
_NON_RETINAL_KINDS = ["diagram", "chart", "slit_lamp"]


# ---------------------------------------------------------------- options and truth


class VariedAtlasOptions(BaseModel):
    """What to generate: how many books and figures, and which layout features are held fixed."""

    books: int = Field(3, ge=1, le=200, description="Number of books to write.")
    pages_per_book: int = Field(3, ge=1, le=60, description="Figure pages per book (a list-of-figures page may come on top).")
    scanned_share: float = Field(0.4, ge=0.0, le=1.0, description="Share of books that are scans (image-only or with an OCR text layer).")
    non_retinal_share: float = Field(0.15, ge=0.0, le=1.0, description="Share of figures that are charts, diagrams, photos or vector drawings.")
    two_figure_share: float = Field(0.3, ge=0.0, le=1.0, description="Share of pages that hold two figures.")
    list_of_figures_share: float = Field(0.5, ge=0.0, le=1.0, description="Share of books that open with a list-of-figures page.")
    body_label_share: float = Field(0.5, ge=0.0, le=1.0, description="Share of pages whose body text has a paragraph starting with a figure label.")
    image_dir: Path | None = Field(
        None, description="Folder with cfp/, ffa/, oct/, other/ real images to use instead of synthetic pixels (never in tests)."
    )
    fixed: dict[str, str | int | bool] = Field(
        default_factory=dict,
        description="Layout features held at one value for every figure, e.g. {'caption_position': 'above'}; keys from LAYOUT_FEATURES.",
    )


class VariedPanelTruth(PanelTruth):
    """One panel of a varied book: the sample-atlas truth plus every layout feature of its figure."""

    caption_position: str = Field(description="below, above, beside_same_column or other_column.")  # type: ignore[assignment]
    panel_index: int = Field(description="0-based reading-order position of the panel in its figure.")
    language: Language = Field(description="Language the caption is printed in.")
    caption_column: Literal["same", "other"] = Field(description="Caption in the figure's column or in the other column.")
    caption_width: Literal["figure", "text_block", "side"] = Field(description="Caption as wide as the figure, the text block, or the room beside it.")
    placement: Literal["top", "bottom"] = Field(description="Figure at the top or bottom of its page or column.")
    grid: Grid = Field(description="Panel grid: 1, 1x2, 1+2, 2x2, 3+2, 2x3.")
    embedding: Embedding = Field(description="Panels embedded one by one, stitched into one image, or drawn as vectors.")
    stitched_gutter_px: int | None = Field(description="Gutter between stitched panels in image pixels (0: abutting); None when not stitched.")
    panel_gap_pt: float = Field(description="Space between separate panels on the page in points.")
    label_style: LabelStyle = Field(description="Panel letters drawn in the image, as white text over it, under each panel, or absent.")
    numbering_style: NumberingStyle = Field(description="How the figure number is printed.")
    figure_label: str = Field(description="The label as printed, e.g. 'Fig. 3.12' or '图 3.12'.")
    scan_kind: ScanKind = Field(description="born_digital, image_only scan, or scan with an invisible OCR text layer.")
    vector: bool = Field(description="Figure drawn with vector shapes.")
    retinal: bool = Field(description="Figure shows retinal images (False: chart, diagram, photo, vector drawing).")
    columns: int = Field(description="Text columns on the page.")
    figures_on_page: int = Field(description="Figures on the page (1 or 2).")
    caption_full: str = Field(description="The whole printed caption, label included.")


class TrapLine(BaseModel):
    """Text that starts like a caption but is not one: must never be published as a caption."""

    pdf: str = Field(description="PDF file name.")
    page: int = Field(description="1-based page of the trap.")
    kind: Literal["list_of_figures", "body_label"] = Field(description="A list-of-figures entry or a body paragraph opening with a figure label.")
    text: str = Field(description="The first printed line of the trap.")
    marker: str = Field(description="Text found only in the trap (a dot leader, the body sentence): a caption holding it came from the trap.")


class VariedAtlas(BaseModel):
    """What generate_varied_atlas wrote."""

    out_dir: Path = Field(description="Directory holding the PDFs, truth.jsonl and traps.jsonl.")
    pdfs: list[Path] = Field(description="Paths of the written PDFs.")
    truth_path: Path = Field(description="Path of truth.jsonl (one VariedPanelTruth per panel).")
    traps_path: Path = Field(description="Path of traps.jsonl (text that must never become a caption).")
    truth: list[VariedPanelTruth] = Field(description="The truth rows as written.")
    traps: list[TrapLine] = Field(description="The trap lines as written.")


def read_varied_truth(path: Path) -> list[VariedPanelTruth]:
    """Load a varied truth.jsonl, naming the file and line of a bad row."""
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(VariedPanelTruth.model_validate_json(line))
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: invalid truth row: {exc}") from exc
    return rows


# ---------------------------------------------------------------- drawing a figure's layout


class FigureLayout(BaseModel):
    """The layout drawn for one figure."""

    figure_id: str = Field(description="Figure number as the caption normalises it ('3.12', '3-12', '4').")
    kinds: list[str] = Field(description="Image kind of each panel (synthetic_images.GENERATORS keys, or 'vector').")
    retinal: bool = Field(description="Retinal figure (False: chart, diagram, photo or vector drawing).")
    grid: Grid = Field(description="Panel grid.")
    embedding: Embedding = Field(description="separate images, one stitched image, or vector shapes.")
    gutter_px: int | None = Field(description="Gutter of a stitched image in pixels (0: abutting).")
    label_style: LabelStyle = Field(description="Where panel letters are printed.")
    caption_position: CaptionPosition = Field(description="Where the caption is printed.")
    caption_width: Literal["figure", "text_block", "side"] = Field(description="Width the caption is wrapped to.")
    placement: Literal["top", "bottom"] = Field(description="Figure at the top or the bottom of its column.")
    width_fraction: float = Field(description="Figure width as a share of the column width.")
    title: str = Field(description="Figure title (canonical, no final stop).")
    panel_texts: list[str] = Field(description="Each panel's own text; empty when the caption has no panel segments.")
    shared: str | None = Field(description="Closing sentence shared by all panels.")


def _pick(rng: np.random.Generator, values: list):
    return values[int(rng.integers(0, len(values)))]


def _grid_for(count: int) -> Grid:
    return {1: "1", 2: "1x2", 3: "1+2", 4: "2x2", 5: "3+2", 6: "2x3"}[count]


def figure_number(style: str, chapter: int, number: int) -> tuple[str, str]:
    """(figure id as the caption normalises it, label as printed) for a numbering style."""
    if style in ("figure_plain", "abbildung", "fig_caps_dash"):
        fid = str(number)
    elif style == "figure_dashed":
        fid = f"{chapter}-{number}"
    else:
        fid = f"{chapter}.{number}"
    label = {
        "figure_plain": f"Figure {fid}", "fig_dotted": f"Fig. {fid}", "zh_dotted": f"图 {fid}",
        "figura_colon": f"Figura {fid}", "abbildung": f"Abbildung {fid}", "fig_caps_dash": f"FIG. {fid}",
        "figure_dashed": f"FIGURE {fid}",
    }[style]
    return fid, label


def _label_after(style: str) -> str:
    return {"figura_colon": ": ", "fig_caps_dash": " – ", "figure_plain": ". ", "figure_dashed": ". "}.get(style, " ")


def draw_layout(
    rng: np.random.Generator, figure_id: str, language: Language, columns: int,
    options: VariedAtlasOptions, fixed: dict,
) -> FigureLayout:
    """Draw one figure's layout; `fixed` holds features that must take a given value."""
    retinal = bool(fixed.get("retinal", rng.random() >= options.non_retinal_share))
    embedding = fixed.get("embedding") or _pick(rng, ["separate", "separate", "stitched"] + ([] if retinal else ["vector"]))
    if embedding == "vector":
        retinal = False
    grid = fixed.get("grid") or (_pick(rng, ["1", "1x2"]) if embedding == "vector" else _pick(rng, list(GRID_ROWS)))
    count = sum(len(row) for row in GRID_ROWS[grid])
    if retinal:
        kinds = [_pick(rng, _RETINAL_KINDS) for _ in range(count)]
    else:
        kinds = ["vector"] * count if embedding == "vector" else [_pick(rng, _NON_RETINAL_KINDS) for _ in range(count)]
    gutter = fixed.get("stitched_gutter_px")
    gutter = (int(gutter) if gutter is not None else int(rng.integers(0, 7))) if embedding == "stitched" else None
    label_style = fixed.get("label_style") or ("absent" if count == 1 else _pick(rng, ["in_image", "white_over", "under_panel", "absent"]))
    if count == 1:
        label_style = "absent"
    if embedding == "vector" and label_style in ("in_image", "white_over"):
        label_style = "under_panel"
    positions = ["below", "below", "above", "beside_same_column"] + (["other_column"] if columns == 2 else [])
    position = fixed.get("caption_position") or _pick(rng, positions)
    if position == "beside_same_column":
        caption_width = "side"
    elif position == "other_column":
        caption_width = "text_block"
    else:
        caption_width = fixed.get("caption_width") or _pick(rng, ["figure", "text_block"])
    placement = fixed.get("placement") or _pick(rng, ["top", "bottom"])
    if position == "beside_same_column":
        width_fraction = float(rng.uniform(0.55, 0.65))
    elif position == "other_column":
        width_fraction = 1.0
    else:
        width_fraction = float(rng.uniform(0.6, 0.95))
    if grid in ("2x3", "3+2") and position != "beside_same_column":
        width_fraction = max(width_fraction, 0.85)
    if retinal:
        title = _pick(rng, _TITLES[language])
        texts = [_pick(rng, _PANEL_TEXT[language][kind]) for kind in kinds] if count > 1 and label_style != "absent" else []
        shared = _pick(rng, _SHARED[language]) if (count == 1 or label_style == "absent" or rng.random() < 0.4) else None
    else:
        title = _pick(rng, _NON_RETINAL_TITLES[language])
        texts = [_pick(rng, _PANEL_TEXT[language]["other"]) for _ in kinds] if count > 1 and label_style != "absent" else []
        shared = None
    return FigureLayout(
        figure_id=figure_id, kinds=kinds, retinal=retinal, grid=grid, embedding=embedding, gutter_px=gutter,
        label_style=label_style, caption_position=position, caption_width=caption_width, placement=placement,
        width_fraction=width_fraction, title=title, panel_texts=texts, shared=shared,
    )


def printed_caption(layout: FigureLayout, label: str, style: str, language: Language) -> str:
    """The caption as printed: label, title, panel segments, shared closing sentence."""
    zh = language == "zh"
    stop = "。" if zh else ". "
    text = label + _label_after(style) + layout.title + stop
    for index, segment in enumerate(layout.panel_texts):
        letter = label_for_index(index)
        marker = f"{letter}．" if zh else (f"({letter.lower()}) " if style in ("fig_dotted", "fig_caps_dash") else f"{letter}. ")
        text += marker + segment + stop
    if layout.shared:
        text += layout.shared + stop
    return text.strip()


def panel_caption(layout: FigureLayout, index: int | None, language: Language) -> str:
    pieces = [layout.title]
    if index is not None and layout.panel_texts:
        pieces.append(layout.panel_texts[index])
    elif index is None:
        pieces.extend(layout.panel_texts)
    if layout.shared:
        pieces.append(layout.shared)
    return canonical_caption(pieces, "zh" if language == "zh" else "en")


# ---------------------------------------------------------------- images


ImageMaker = Callable[[str, int, int], np.ndarray]


def _synthetic_images(rng: np.random.Generator) -> ImageMaker:
    def make(kind: str, width: int, height: int) -> np.ndarray:
        return synthetic_images.GENERATORS[kind](rng, (width, height))

    return make


def _real_images(rng: np.random.Generator, image_dir: Path) -> ImageMaker:
    """Real images by modality folder (cfp, ffa, oct, other), resized to the panel."""
    folders = {"cfp": "cfp", "red_free": "cfp", "ffa": "ffa", "icga": "ffa", "oct": "oct"}
    files: dict[str, list[Path]] = {}
    for folder in ("cfp", "ffa", "oct", "other"):
        found = sorted(p for p in (image_dir / folder).glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        files[folder] = found
    if not any(files.values()):
        raise ValueError(f"{image_dir}: no images in cfp/, ffa/, oct/ or other/")
    synthetic = _synthetic_images(rng)

    def make(kind: str, width: int, height: int) -> np.ndarray:
        choices = files.get(folders.get(kind, "other"), [])
        if not choices:
            return synthetic(kind, width, height)
        image = cv2.imread(str(_pick(rng, choices)), cv2.IMREAD_COLOR)
        if image is None:
            return synthetic(kind, width, height)
        return np.ascontiguousarray(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)[:, :, ::-1])

    return make


# ---------------------------------------------------------------- page writing


class _Style(BaseModel):
    fontname: str
    fontsize: float
    leading: float


def _styles(language: Language) -> tuple[_Style, _Style]:
    if language == "zh":
        return _Style(fontname="zh", fontsize=9.5, leading=1.5), _Style(fontname="zh", fontsize=8.5, leading=1.45)
    return _Style(fontname="tiro", fontsize=9.5, leading=1.3), _Style(fontname="helv", fontsize=8.0, leading=1.3)


class _Page:
    """One page being written: a text writer, columns and the bands figures take from them."""

    def __init__(self, doc: pymupdf.Document, columns: int) -> None:
        self.page = doc.new_page(width=PAGE_WIDTH, height=PAGE_HEIGHT)
        self.writer = pymupdf.TextWriter(self.page.rect)
        self.white = pymupdf.TextWriter(self.page.rect, color=(1, 1, 1))
        width = (PAGE_WIDTH - 2 * MARGIN_X - (COLUMN_GAP if columns == 2 else 0)) / columns
        self.columns = [(MARGIN_X + i * (width + COLUMN_GAP), MARGIN_X + i * (width + COLUMN_GAP) + width) for i in range(columns)]
        self.bands: list[list[tuple[float, float]]] = [[] for _ in range(columns)]

    def text(self, x: float, top: float, lines: list[str] | tuple[str, ...], style: _Style, white: bool = False) -> float:
        """Write lines from `top`; returns the bottom of the last line."""
        font = _font(style.fontname)
        writer = self.white if white else self.writer
        baseline = top + style.fontsize * 0.95
        for line in lines:
            writer.append((x, baseline), line, font=font, fontsize=style.fontsize)
            baseline += style.fontsize * style.leading
        return top + (len(lines) - 1) * style.fontsize * style.leading + style.fontsize * 1.25

    def finish(self) -> None:
        self.writer.write_text(self.page)
        self.white.write_text(self.page)


def _text_height(lines: int, style: _Style) -> float:
    return (lines - 1) * style.fontsize * style.leading + style.fontsize * 1.25 if lines else 0.0


class _VariedBookWriter:
    def __init__(self, book: str, rng: np.random.Generator, language: Language, numbering: str, scan_kind: ScanKind,
                 images: ImageMaker) -> None:
        self.book, self.rng, self.language, self.numbering, self.scan_kind = book, rng, language, numbering, scan_kind
        self.images = images
        self.doc = pymupdf.open()
        self.truth: list[VariedPanelTruth] = []
        self.traps: list[TrapLine] = []
        self.body_style, self.caption_style = _styles(language)

    # -- text

    def _fill(self, page: _Page, number: int, column: int, top: float, bottom: float, body_label: str | None) -> None:
        """Body paragraphs in a free band of a column; the first may start with a figure label."""
        x0, x1 = page.columns[column]
        style = self.body_style
        y = top
        cursor = int(self.rng.integers(0, 100))
        first = True
        while bottom - y > style.fontsize * style.leading * 2.5:
            paragraph = _BODY[self.language][cursor % len(_BODY[self.language])]
            cursor += 1
            if first and body_label:
                joiner = "" if self.language == "zh" else " "
                paragraph = body_label + joiner + _BODY_LABEL_VERB[self.language] + ("。" if self.language == "zh" else ". ") + paragraph.strip("　")
                self.traps.append(TrapLine(pdf=f"{self.book}.pdf", page=number, kind="body_label",
                                           text=_wrap(paragraph, x1 - x0, style.fontname, style.fontsize)[0],
                                           marker=_BODY_LABEL_VERB[self.language]))
            first = False
            lines = list(_wrap(paragraph, x1 - x0, style.fontname, style.fontsize))
            room = int((bottom - y - style.fontsize * 1.25) // (style.fontsize * style.leading)) + 1
            lines = lines[:room]
            if not lines:
                break
            y = page.text(x0, y, lines, style) + 6

    def list_of_figures(self, entries: list[tuple[str, str, int]]) -> None:
        page = _Page(self.doc, 1)
        number = self.doc.page_count
        heading = _Style(fontname="zh" if self.language == "zh" else "tibo", fontsize=15, leading=1.6)
        y = page.text(MARGIN_X, CONTENT_TOP, [_LOF_HEADING[self.language]], heading) + 14
        for label, title, printed_page in entries:
            left = f"{label}  {title}"
            right = str(printed_page)
            style = self.body_style
            room = PAGE_WIDTH - 2 * MARGIN_X - _text_width(left, style.fontname, style.fontsize) - _text_width(right, style.fontname, style.fontsize)
            dots = " " + "." * max(3, int(room / max(0.1, _text_width(".", style.fontname, style.fontsize))) - 4) + " "
            line = left + dots + right
            page.text(MARGIN_X, y, [line], style)
            self.traps.append(TrapLine(pdf=f"{self.book}.pdf", page=number, kind="list_of_figures", text=line, marker="....."))
            y += 16
        page.finish()

    # -- figures

    def _place_images(self, page: _Page, layout: FigureLayout, x0: float, y0: float, width: float, gap: float) -> tuple[list[BBox], BBox, float]:
        """Draw the panels; returns panel boxes, figure box and the figure's height (labels under panels included)."""
        rows = GRID_ROWS[layout.grid]
        aspects = [2.0 if kind == "oct" else (1.4 if kind == "vector" else float(self.rng.uniform(*_KIND_ASPECT[kind]))) for kind in layout.kinds]
        under = 11.0 if layout.label_style == "under_panel" else 0.0
        count = len(layout.kinds)
        boxes: list[BBox] = [(0.0, 0.0, 0.0, 0.0)] * count
        if layout.embedding == "stitched":
            gutter = int(layout.gutter_px or 0)
            total_px = int(round(width * PIXELS_PER_POINT))
            images = [None] * count
            for row in rows:
                row_h = int(round((total_px - gutter * (len(row) - 1)) / sum(aspects[i] for i in row)))
                x_px = 0
                for position, index in enumerate(row):
                    w = total_px - x_px if position == len(row) - 1 else int(round(aspects[index] * row_h))
                    image = self.images(layout.kinds[index], max(8, w), max(8, row_h))
                    if layout.label_style == "in_image":
                        synthetic_images.draw_panel_label(image, label_for_index(index))
                    images[index] = image
                    x_px += w + gutter
            # letters under the panels of a stitched figure print in a white band the image leaves
            # under each row (under the last row, on the page below it)
            band_px = int(round(under * PIXELS_PER_POINT))
            stitched, pixel_boxes = synthetic_images.stitch_panels(images, rows, gutter, 255, row_gutter=gutter + band_px)
            scale = width / stitched.shape[1]
            rect = pymupdf.Rect(x0, y0, x0 + width, y0 + stitched.shape[0] * scale)
            page.page.insert_image(rect, stream=_encode(stitched, "cfp"), keep_proportion=False)
            boxes = [_rounded((x0 + b[0] * scale, y0 + b[1] * scale, x0 + b[2] * scale, y0 + b[3] * scale)) for b in pixel_boxes]
        else:
            y = y0
            for row in rows:
                row_h = (width - gap * (len(row) - 1)) / sum(aspects[i] for i in row)
                x = x0
                for index in row:
                    w = aspects[index] * row_h
                    box = (x, y, x + w, y + row_h)
                    if layout.embedding == "vector":
                        self._vector_panel(page, box)
                    else:
                        image = self.images(layout.kinds[index], max(8, int(w * PIXELS_PER_POINT)), max(8, int(row_h * PIXELS_PER_POINT)))
                        if layout.label_style == "in_image":
                            synthetic_images.draw_panel_label(image, label_for_index(index))
                        page.page.insert_image(pymupdf.Rect(*box), stream=_encode(image, layout.kinds[index]), keep_proportion=False)
                    boxes[index] = _rounded(box)
                    x += w + gap
                y += row_h + gap + under
        for index, box in enumerate(boxes):
            letter = label_for_index(index)
            if layout.label_style == "white_over":
                page.text(box[0] + 3, box[1] + 2, [letter], _Style(fontname="hebo", fontsize=10, leading=1.2), white=True)
            elif layout.label_style == "under_panel":
                style = _Style(fontname="helv", fontsize=8, leading=1.2)
                marker = f"({letter.lower()})"
                page.text((box[0] + box[2]) / 2 - _text_width(marker, "helv", 8) / 2, box[3] + 1.5, [marker], style)
        figure_box = _rounded((min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes) + under))
        return boxes, figure_box, figure_box[3] - y0

    def _vector_panel(self, page: _Page, box: tuple[float, float, float, float]) -> None:
        """A small flow diagram: boxes with words, joined by arrows (no raster at all)."""
        x0, y0, x1, y1 = box
        page.page.draw_rect(pymupdf.Rect(box), color=(0.4, 0.4, 0.4), width=0.6)
        steps = 3
        step_h = (y1 - y0 - 10) / steps
        words = ["Screening", "Grading", "Referral", "Treatment"]
        for i in range(steps):
            top = y0 + 5 + i * step_h
            rect = pymupdf.Rect(x0 + (x1 - x0) * 0.2, top + 2, x1 - (x1 - x0) * 0.2, top + step_h - 6)
            page.page.draw_rect(rect, color=(0.1, 0.2, 0.5), fill=(0.85, 0.9, 1.0), width=0.8)
            page.text(rect.x0 + 4, rect.y0 + max(0.0, rect.height / 2 - 5), [words[i % len(words)]], _Style(fontname="helv", fontsize=7, leading=1.2))
            if i < steps - 1:
                middle = (x0 + x1) / 2
                page.page.draw_line((middle, rect.y1), (middle, rect.y1 + 6), color=(0, 0, 0), width=0.8)
        page.page.draw_circle((x1 - 10, y0 + 10), 4, color=(0.6, 0.1, 0.1), fill=(1, 0.8, 0.8))

    def _caption_lines(self, caption: str, width: float) -> tuple[str, ...]:
        return _wrap(caption, width, self.caption_style.fontname, self.caption_style.fontsize)

    def figure_block(self, page: _Page, number: int, column: int, layout: FigureLayout, label: str, figures_on_page: int,
                     top: float, bottom: float) -> tuple[float, float]:
        """Place one figure and its caption in a column band; returns the band it took (top, bottom)."""
        x0, x1 = page.columns[column]
        col_w = x1 - x0
        scanned = self.scan_kind != "born_digital"
        gap = float(self.rng.uniform(2.0, 6.0)) if scanned else float(self.rng.uniform(4.0, 8.0))
        caption = printed_caption(layout, label, self.numbering, self.language)
        position = layout.caption_position
        fig_w = col_w * layout.width_fraction
        if position == "beside_same_column":
            fig_x, cap_x, cap_w = x0, x0 + fig_w + 12, col_w - fig_w - 12
        elif layout.caption_width == "figure" and position in ("below", "above"):
            fig_x = x0 + (col_w - fig_w) / 2
            cap_x, cap_w = fig_x, fig_w
        else:
            fig_x = x0 + (col_w - fig_w) / 2
            cap_x, cap_w = x0, col_w
        if position == "other_column":
            other_x0, other_x1 = page.columns[1 - column]
            cap_x, cap_w = other_x0, other_x1 - other_x0
        lines = self._caption_lines(caption, cap_w)
        cap_h = _text_height(len(lines), self.caption_style)
        # the panel aspects are drawn again when the panels are placed (same generator state), so the
        # block can be measured first and the width shrunk until it fits the band
        rows = GRID_ROWS[layout.grid]
        aspects_state = self.rng.bit_generator.state
        for _ in range(6):
            self.rng.bit_generator.state = aspects_state
            aspects = [2.0 if k == "oct" else (1.4 if k == "vector" else float(self.rng.uniform(*_KIND_ASPECT[k]))) for k in layout.kinds]
            unit = sum(1.0 / sum(aspects[i] for i in row) for row in rows)
            under = 11.0 * len(rows) if layout.label_style == "under_panel" else 0.0
            fig_h = fig_w * unit + gap * (len(rows) - 1) + under
            stacked = position in ("below", "above")
            block_h = fig_h + (cap_h + 6 if stacked else 0.0)
            if position in ("beside_same_column", "other_column"):
                block_h = max(fig_h, cap_h)
            if block_h <= bottom - top - 4:
                break
            fig_w *= 0.8
            if layout.caption_width == "figure" and position in ("below", "above"):
                fig_x = x0 + (col_w - fig_w) / 2
                cap_x, cap_w = fig_x, fig_w
                lines = self._caption_lines(caption, cap_w)
                cap_h = _text_height(len(lines), self.caption_style)
            elif position != "beside_same_column":
                fig_x = x0 + (col_w - fig_w) / 2
        self.rng.bit_generator.state = aspects_state
        block_top = top if layout.placement == "top" else bottom - block_h
        fig_y = block_top + (cap_h + 6 if position == "above" else 0.0)
        cap_y = {"below": block_top + fig_h + 6, "above": block_top}.get(position, block_top)
        boxes, figure_box, _ = self._place_images(page, layout, fig_x, fig_y, fig_w, gap)
        cap_bottom = page.text(cap_x, cap_y, lines, self.caption_style)
        cap_right = cap_x + max(_text_width(line, self.caption_style.fontname, self.caption_style.fontsize) for line in lines)
        caption_box = _rounded((cap_x, cap_y, cap_right, cap_bottom))
        count = len(layout.kinds)
        for index, kind in enumerate(layout.kinds):
            modality, sublabel = _KIND_MODALITY.get(kind, ("other", None))
            letter = label_for_index(index) if count > 1 and layout.label_style != "absent" else None
            text = panel_caption(layout, index if count > 1 else None, self.language)
            self.truth.append(VariedPanelTruth(
                pdf=f"{self.book}.pdf", book=self.book, page=number, bbox=boxes[index], figure_bbox=figure_box,
                figure_id=layout.figure_id, panel=letter, panel_count=count, modality=modality, sublabel=sublabel,
                caption_en=None if self.language == "zh" else text, caption_zh=text if self.language == "zh" else None,
                caption_page=number, caption_position=position, caption_bbox=caption_box, scanned=scanned,
                stitched=layout.embedding == "stitched", pair=layout.retinal and modality != "other",
                panel_index=index, language=self.language,
                caption_column="other" if position == "other_column" else "same", caption_width=layout.caption_width,
                placement=layout.placement, grid=layout.grid, embedding=layout.embedding,
                stitched_gutter_px=layout.gutter_px, panel_gap_pt=0.0 if layout.embedding == "stitched" else round(gap, 2),
                label_style=layout.label_style, numbering_style=self.numbering, figure_label=label,
                scan_kind=self.scan_kind, vector=layout.embedding == "vector", retinal=layout.retinal,
                columns=len(page.columns), figures_on_page=figures_on_page, caption_full=caption,
            ))
        used_bottom = block_top + block_h
        if position == "other_column":
            page.bands[1 - column].append((block_top, used_bottom))
        return block_top, used_bottom

    def figure_page(self, layouts: list[tuple[FigureLayout, str]], columns: int, body_label: str | None) -> None:
        page = _Page(self.doc, columns)
        number = self.doc.page_count
        # running header and folio
        header = _Style(fontname="helv" if self.language != "zh" else "zh", fontsize=8, leading=1.2)
        page.text(MARGIN_X, 34, [f"{self.book}"], header)
        page.page.draw_line((MARGIN_X, 46), (PAGE_WIDTH - MARGIN_X, 46), color=(0.3, 0.3, 0.3), width=0.5)
        page.text(PAGE_WIDTH / 2 - 5, 806, [str(number)], header)
        column_of = [0, 0] if columns == 1 else ([0, 1] if self.rng.random() < 0.5 else [0, 0])
        placements = ["top", "bottom"]
        for slot, (layout, label) in enumerate(layouts):
            if len(layouts) == 2:
                layout.placement = placements[slot]
            column = column_of[slot]
            if layout.caption_position == "other_column" and columns == 2:
                column = 0
                if len(layouts) == 2:
                    column_of = [0, 0]
            taken = page.bands[column]
            top, bottom = CONTENT_TOP, CONTENT_BOTTOM
            for band_top, band_bottom in taken:
                if band_top <= CONTENT_TOP + 1:
                    top = max(top, band_bottom + 10)
                else:
                    bottom = min(bottom, band_top - 10)
            if len(layouts) == 2 and slot == 0:
                bottom = min(bottom, (CONTENT_TOP + CONTENT_BOTTOM) / 2 - 6)
            band = self.figure_block(page, number, column, layout, label, len(layouts), top, bottom)
            page.bands[column].append(band)
        for column in range(columns):
            edges = sorted(page.bands[column])
            y = CONTENT_TOP
            for band_top, band_bottom in edges + [(CONTENT_BOTTOM, CONTENT_BOTTOM)]:
                if band_top - y > 30:
                    self._fill(page, number, column, y + (4 if y > CONTENT_TOP else 0), band_top - 8, body_label)
                    body_label = None
                y = max(y, band_bottom + 10)
        page.finish()


# ---------------------------------------------------------------- scanning


def _scan_varied(doc: pymupdf.Document, truth: list[VariedPanelTruth], rng: np.random.Generator, text_layer: bool) -> tuple[pymupdf.Document, list[VariedPanelTruth]]:
    """Rasterise each page (noise, slight skew, JPEG) into a new PDF; with `text_layer` the page's
    words are put back as invisible text (render mode 3) where the scan shows them."""
    scanned = pymupdf.open()
    transforms = {}
    for page in doc:
        dpi = int(rng.integers(150, 181))
        angle = float(rng.uniform(0.2, 0.9)) * (1 if rng.random() < 0.5 else -1)
        pixmap = page.get_pixmap(dpi=dpi)
        ink = np.frombuffer(pixmap.samples, dtype=np.uint8).reshape(pixmap.height, pixmap.width, pixmap.n)[:, :, :3]
        noise = rng.standard_normal(ink.shape[:2], dtype=np.float32)[:, :, None] * 6.0
        image = np.clip(ink.astype(np.float32) * 0.94 + noise, 0, 255).astype(np.uint8)
        matrix = cv2.getRotationMatrix2D((pixmap.width / 2, pixmap.height / 2), angle, 1.0)
        rotated = cv2.warpAffine(image, matrix, (pixmap.width, pixmap.height), flags=cv2.INTER_LINEAR, borderValue=(238, 238, 238))
        ok, jpeg = cv2.imencode(".jpg", rotated[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(60, 80))])
        if not ok:
            raise RuntimeError("could not encode a scanned page")
        new_page = scanned.new_page(width=page.rect.width, height=page.rect.height)
        new_page.insert_image(new_page.rect, stream=jpeg.tobytes(), keep_proportion=False)
        scale_x, scale_y = pixmap.width / page.rect.width, pixmap.height / page.rect.height
        transforms[page.number + 1] = (matrix, scale_x, scale_y, page.rect)

        def move_point(x: float, y: float) -> tuple[float, float]:
            px = matrix @ np.array([x * scale_x, y * scale_y, 1.0])
            return float(px[0] / scale_x), float(px[1] / scale_y)

        if text_layer:
            writer = pymupdf.TextWriter(new_page.rect)
            for block in page.get_text("dict")["blocks"]:
                for line in block.get("lines", []):
                    for span in line["spans"]:
                        if not span["text"].strip():
                            continue
                        x, y = move_point(*span["origin"])
                        fontname = "zh" if any("\u4e00" <= ch <= "\u9fff" for ch in span["text"]) else "helv"
                        writer.append((x, y), span["text"], font=_font(fontname), fontsize=span["size"])
            writer.write_text(new_page, render_mode=3)

    def move(box: BBox, page_number: int) -> BBox:
        matrix, scale_x, scale_y, rect = transforms[page_number]
        corners = np.array([[box[0], box[1]], [box[2], box[1]], [box[0], box[3]], [box[2], box[3]]], dtype=np.float64)
        pixels = np.column_stack([corners[:, 0] * scale_x, corners[:, 1] * scale_y, np.ones(4)])
        moved = pixels @ matrix.T
        xs, ys = moved[:, 0] / scale_x, moved[:, 1] / scale_y
        return _rounded((max(0.0, xs.min()), max(0.0, ys.min()), min(rect.width, xs.max()), min(rect.height, ys.max())))

    moved = [
        row.model_copy(update={"bbox": move(row.bbox, row.page), "figure_bbox": move(row.figure_bbox, row.page),
                               "caption_bbox": move(row.caption_bbox, row.caption_page)})
        for row in truth
    ]
    return scanned, moved


# ---------------------------------------------------------------- books


def _book_style(rng: np.random.Generator, fixed: dict, options: VariedAtlasOptions) -> tuple[str, Language, ScanKind]:
    numbering = fixed.get("numbering_style")
    if numbering is None and "language" in fixed:
        numbering = _pick(rng, [s for s, lang in NUMBERING_LANGUAGE.items() if lang == fixed["language"]])
    numbering = numbering or _pick(rng, list(NUMBERING_LANGUAGE))
    language = NUMBERING_LANGUAGE[numbering]
    scan_kind = fixed.get("scan_kind")
    if scan_kind is None:
        scan_kind = _pick(rng, ["image_only", "ocr_layer"]) if rng.random() < options.scanned_share else "born_digital"
    return numbering, language, scan_kind


def write_varied_book(path: Path, seed: int, book_index: int, options: VariedAtlasOptions) -> tuple[list[VariedPanelTruth], list[TrapLine]]:
    """Write one varied book; the same (seed, book_index, options) give the same bytes."""
    rng = np.random.default_rng([seed, book_index, 1011])
    fixed = dict(options.fixed)
    unknown = sorted(set(fixed) - set(LAYOUT_FEATURES))
    if unknown:
        raise ValueError(f"unknown fixed layout features {unknown}; known: {list(LAYOUT_FEATURES)}")
    numbering, language, scan_kind = _book_style(rng, fixed, options)
    images = _real_images(rng, options.image_dir) if options.image_dir else _synthetic_images(rng)
    writer = _VariedBookWriter(Path(path).stem, rng, language, numbering, scan_kind, images)
    chapter = int(rng.integers(1, 9))
    with_lof = bool(fixed.get("list_of_figures", rng.random() < options.list_of_figures_share))
    plans = []
    counter = 0
    for _ in range(options.pages_per_book):
        columns = int(fixed.get("columns") or (2 if rng.random() < 0.4 else 1))
        on_page = int(fixed.get("figures_on_page") or (2 if rng.random() < options.two_figure_share else 1))
        layouts = []
        for _ in range(on_page):
            counter += 1
            figure_id, label = figure_number(numbering, chapter, counter)
            layout = draw_layout(rng, figure_id, language, columns, options, fixed)
            if on_page == 2 and layout.grid in ("2x3", "3+2", "2x2", "1+2") and "grid" not in fixed:
                layout.grid = "1x2"
                layout.kinds = layout.kinds[:2]
                layout.panel_texts = layout.panel_texts[:2]
            if on_page == 2 and layout.caption_position == "other_column":
                layout.caption_position, layout.caption_width = "below", "text_block"
            layouts.append((layout, label))
        body_label = None
        if rng.random() < options.body_label_share:
            body_label = layouts[0][1]
        plans.append((layouts, columns, body_label))
    if with_lof:
        entries = [(label, layout.title, index + 2) for index, (layouts, _, _) in enumerate(plans) for layout, label in layouts]
        writer.list_of_figures(entries)
    for layouts, columns, body_label in plans:
        writer.figure_page(layouts, columns, body_label)
    doc, truth = writer.doc, writer.truth
    if scan_kind != "born_digital":
        doc, truth = _scan_varied(doc, truth, rng, text_layer=scan_kind == "ocr_layer")
    _save_pdf(doc, Path(path))
    return truth, writer.traps


def generate_varied_atlas(out_dir: Path, seed: int = 0, options: VariedAtlasOptions | None = None) -> VariedAtlas:
    """Write `options.books` varied books plus truth.jsonl and traps.jsonl into out_dir."""
    options = options or VariedAtlasOptions()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pdfs, truth, traps = [], [], []
    for index in range(options.books):
        pdf = out_dir / f"varied-s{seed}-b{index}.pdf"
        book_truth, book_traps = write_varied_book(pdf, seed, index, options)
        pdfs.append(pdf)
        truth.extend(book_truth)
        traps.extend(book_traps)
        logger.info("wrote %s: %d panels", pdf, len(book_truth))
    truth_path, traps_path = out_dir / "truth.jsonl", out_dir / "traps.jsonl"
    write_atomic(truth_path, "".join(row.model_dump_json() + "\n" for row in truth).encode("utf-8"))
    write_atomic(traps_path, "".join(row.model_dump_json() + "\n" for row in traps).encode("utf-8"))
    return VariedAtlas(out_dir=out_dir, pdfs=pdfs, truth_path=truth_path, traps_path=traps_path, truth=truth, traps=traps)


def summarise_varied(atlas: VariedAtlas) -> str:
    """A few lines for the CLI: books, panels, and how often each layout feature value occurs."""
    from collections import Counter

    lines = [f"{len(atlas.pdfs)} books, {len({(t.pdf, t.figure_id) for t in atlas.truth})} figures, "
             f"{len(atlas.truth)} panels ({sum(t.pair for t in atlas.truth)} retinal), {len(atlas.traps)} trap lines"]
    for feature in LAYOUT_FEATURES:
        counts = Counter(str(getattr(row, feature)) for row in atlas.truth)
        lines.append(f"  {feature}: " + ", ".join(f"{value} {count}" for value, count in sorted(counts.items())))
    lines.append(f"truth: {atlas.truth_path}")
    return "\n".join(lines)


__all__ = [
    "LAYOUT_FEATURES",
    "TrapLine",
    "VariedAtlas",
    "VariedAtlasOptions",
    "VariedPanelTruth",
    "generate_varied_atlas",
    "read_varied_truth",
    "summarise_varied",
    "write_varied_book",
]
