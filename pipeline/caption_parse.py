"""Parse a caption into figure id, figure title and per-panel texts.

Handles both book styles (`图3-12 标题 A．… B．…` + `Fig. 3-12 Title. A. … B. …`, and
`FIGURE 3-12. Title. A. … B. …`), panel markers `A.`/`A．`/`A、`/`(a)`, ranges (`A–C.`,
`A~C`), sentences shared by all panels, and `左图/右图` (`上图/下图`) for two-panel figures.
"""

from __future__ import annotations

import re

from foundation.labels import label_key, label_range
from foundation.records import CaptionSegment, CaptionStart, ParsedCaption
from pipeline.captions import match_caption_start, normalise_width
from pipeline.clean import remove_ocr_spacing

_BEFORE = r"(?:(?<=^)|(?<=[\s。；;，,:：)）\u4e00-\u9fff]))"
# A label: a capital letter, optionally with a sub-panel number (A, K, A1, B2).
_LABEL = r"[A-Z](?:[1-9]\d?)?"
_RANGE = rf"{_BEFORE}(?P<r0>{_LABEL})\s*[-–—~～至·−‐]\s*(?P<r1>{_LABEL})\s*[.:、．：](?!\d)"
_SINGLE = rf"{_BEFORE}(?P<s>{_LABEL})\s*[.:、．：](?![\d.．]|[A-Za-z][.．])"
# (a), (A), (a1), (B2) and numbered panels (1), (12)
_PAREN = r"[(（](?P<p>[a-zA-Z](?:[1-9]\d?)?|[1-9]\d?)[)）]"
_SIDE = r"(?P<side>左图|右图|上图|下图)[:：]?"
# OCR may read the full stop after a label as a comma; between Chinese characters a lone capital
# letter followed by a comma is still a panel label.
_OCR_COMMA = r"(?<=[\u4e00-\u9fff])(?P<o>[A-Z])[，,](?=[\u4e00-\u9fff])"
PANEL_MARKER = re.compile(f"{_RANGE}|{_SINGLE}|{_PAREN}|{_SIDE}|{_OCR_COMMA}")
FREE_LETTERS = "ABCDEFGHIJ"
"""Letters taken as panel labels wherever they stand; a later letter (K, L, …) only continues a
sequence the caption has already reached, so a stray capital ("vitamin A. …", "type K.") is
not read as a panel."""
_SIDE_LETTER = {"左图": "A", "上图": "A", "右图": "B", "下图": "B"}


def _split_title(body: str, language: str) -> tuple[str, str]:
    """Title = first sentence (or, in Chinese, the words before the first space)."""
    body = body.strip()
    if language == "zh":
        match = re.search(r"[。]|\s+", body)
    else:
        match = re.search(r"\.(?:\s+|$)", body)
    if not match:
        return body, ""
    return body[: match.start()].strip(), body[match.end() :].strip()


def _flatten(text: str) -> str:
    return remove_ocr_spacing(re.sub(r"\s*\n\s*", " ", text).strip())


def parse_caption(text: str, start: CaptionStart | None = None) -> ParsedCaption | None:
    """Parse caption text that starts with a figure number; None if it does not.

    `start` is the figure number step 1 already found at the beginning of `text` (its offset is
    in the width-normalised text, which has the same length); without it the text is matched here.
    """
    if start is None:
        match = match_caption_start(_flatten(text))
        if not match:
            return None
        figure_id, style, _ = match
        body = _flatten(text)[match[2] :].strip()
    else:
        figure_id, style = start.figure_id, start.style
        body = _flatten(normalise_width(text)[start.end :])
    language = "zh" if style == "zh" else "en"
    markers = _in_sequence(list(PANEL_MARKER.finditer(body)))
    head = body[: markers[0].start()] if markers else body
    title, shared = _split_title(head, language)
    parsed = ParsedCaption(figure_id=figure_id, language=language, style=style, title=title.rstrip(".。 "))
    if shared:
        parsed.segments.append(CaptionSegment(letters=None, text=shared))
    for index, marker in enumerate(markers):
        end = markers[index + 1].start() if index + 1 < len(markers) else len(body)
        segment_text = body[marker.end() : end].strip()
        parsed.segments.append(CaptionSegment(letters=_marker_letters(marker), text=segment_text))
    _split_trailing_shared(parsed)
    return parsed


_SENTENCE_END = re.compile(r"(?<=[。！？])|(?<=[.!?])\s+(?=[A-Z])")


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def _split_trailing_shared(parsed: ParsedCaption) -> None:
    """A closing note after the last panel's text applies to every panel.

    When every other panel text is one sentence and the last one has more, the extra
    sentences are read as shared (`…D．OCT示双层征。本例经治疗后病灶消退。`).
    """
    labelled = [seg for seg in parsed.segments if seg.letters]
    if len(labelled) < 2 or parsed.segments[-1] is not labelled[-1]:
        return
    if any(len(_sentences(seg.text)) != 1 for seg in labelled[:-1]):
        return
    last = _sentences(labelled[-1].text)
    if len(last) > 1:
        labelled[-1].text = last[0]
        parsed.segments.append(CaptionSegment(letters=None, text=" ".join(last[1:])))


def _in_sequence(markers: list[re.Match[str]]) -> list[re.Match[str]]:
    """Markers whose letters are free (A–J) or continue the sequence reached so far."""
    kept: list[re.Match[str]] = []
    reached = -1
    for marker in markers:
        labels = _marker_letters(marker)
        first = label_key(labels[0])[0]
        if labels[0][0] not in FREE_LETTERS and first > reached + 1 and not labels[0].isdigit():
            continue
        kept.append(marker)
        reached = max(reached, *(label_key(label)[0] for label in labels))
    return kept


def _marker_letters(marker: re.Match[str]) -> tuple[str, ...]:
    if marker.group("r0"):
        return label_range(marker.group("r0"), marker.group("r1"))
    if marker.group("s"):
        return (marker.group("s"),)
    if marker.group("p"):
        return (marker.group("p").upper(),)  # (a) and (A) name the same panel
    if marker.group("o"):
        return (marker.group("o"),)
    return (_SIDE_LETTER[marker.group("side")],)
