"""Parse a caption into figure id, figure title and per-panel texts.

Handles both book styles (`图3-12 标题 A．… B．…` + `Fig. 3-12 Title. A. … B. …`, and
`FIGURE 3-12. Title. A. … B. …`), panel markers `A.`/`A．`/`A、`/`(a)`, ranges (`A–C.`,
`A~C`), sentences shared by all panels, and `左图/右图` (`上图/下图`) for two-panel figures.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pipeline.captions import match_caption_start
from pipeline.clean import remove_ocr_spacing

Language = str  # "en" | "zh"

_LETTERS = "ABCDEFGHIJ"
_BEFORE = r"(?:(?<=^)|(?<=[\s。；;，,:：)）\u4e00-\u9fff]))"
_RANGE = rf"{_BEFORE}(?P<r0>[A-J])\s*[-–—~～至·−‐]\s*(?P<r1>[A-J])\s*[.:、．：](?!\d)"
_SINGLE = rf"{_BEFORE}(?P<s>[A-J])\s*[.:、．：](?![\d.．]|[A-Za-z][.．])"
_PAREN = r"[(（](?P<p>[a-jA-J])[)）]"
_SIDE = r"(?P<side>左图|右图|上图|下图)[:：]?"
# OCR may read the full stop after a label as a comma; between Chinese characters a lone capital
# letter followed by a comma is still a panel label.
_OCR_COMMA = r"(?<=[\u4e00-\u9fff])(?P<o>[A-J])[，,](?=[\u4e00-\u9fff])"
PANEL_MARKER = re.compile(f"{_RANGE}|{_SINGLE}|{_PAREN}|{_SIDE}|{_OCR_COMMA}")
_SIDE_LETTER = {"左图": "A", "上图": "A", "右图": "B", "下图": "B"}


@dataclass
class CaptionSegment:
    """A piece of caption text and the panels it describes (None: all panels)."""

    letters: tuple[str, ...] | None
    text: str


@dataclass
class ParsedCaption:
    figure_id: str
    language: Language
    style: str
    title: str
    segments: list[CaptionSegment] = field(default_factory=list)

    @property
    def letters(self) -> list[str]:
        found = {letter for seg in self.segments if seg.letters for letter in seg.letters}
        return sorted(found, key=_LETTERS.index)

    def panel_texts(self, letter: str | None) -> list[str]:
        """This panel's text pieces: shared segments and the segments naming it, in printed order."""
        return [
            seg.text
            for seg in self.segments
            if seg.text and (seg.letters is None or letter is None or letter in seg.letters)
        ]


def _split_title(body: str, language: Language) -> tuple[str, str]:
    """Title = first sentence (or, in Chinese, the words before the first space)."""
    body = body.strip()
    if language == "zh":
        match = re.search(r"[。]|\s+", body)
    else:
        match = re.search(r"\.(?:\s+|$)", body)
    if not match:
        return body, ""
    return body[: match.start()].strip(), body[match.end() :].strip()


def parse_caption(text: str) -> ParsedCaption | None:
    """Parse caption text that starts with a figure number; None if it does not."""
    flat = remove_ocr_spacing(re.sub(r"\s*\n\s*", " ", text).strip())
    start = match_caption_start(flat)
    if not start:
        return None
    figure_id, style, offset = start
    language = "zh" if style == "zh" else "en"
    body = flat[offset:].strip()
    markers = list(PANEL_MARKER.finditer(body))
    head = body[: markers[0].start()] if markers else body
    title, shared = _split_title(head, language)
    parsed = ParsedCaption(figure_id=figure_id, language=language, style=style, title=title.rstrip(".。 "))
    if shared:
        parsed.segments.append(CaptionSegment(None, shared))
    for index, marker in enumerate(markers):
        end = markers[index + 1].start() if index + 1 < len(markers) else len(body)
        segment_text = body[marker.end() : end].strip()
        parsed.segments.append(CaptionSegment(_marker_letters(marker), segment_text))
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
        parsed.segments.append(CaptionSegment(None, " ".join(last[1:])))


def _marker_letters(marker: re.Match[str]) -> tuple[str, ...]:
    if marker.group("r0"):
        first, last = _LETTERS.index(marker.group("r0")), _LETTERS.index(marker.group("r1"))
        return tuple(_LETTERS[first : last + 1])
    if marker.group("s"):
        return (marker.group("s"),)
    if marker.group("p"):
        return (marker.group("p").upper(),)
    if marker.group("o"):
        return (marker.group("o"),)
    return (_SIDE_LETTER[marker.group("side")],)
