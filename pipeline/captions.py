"""Figure-number patterns shared by caption detection (step 1) and caption parsing (step 2).

Tolerant of the noise OCR and typesetting add: full-width digits and punctuation, spaces
inside numbers (`图3 - 1 2`), dashes read as `一`/`—`/`–`, `l`/`I` read for `1` and `O` for `0`.
"""

from __future__ import annotations

import re
import unicodedata

from pipeline.clean import FIGURE_DASH, FIGURE_DIGIT, normalise_figure_id

_RUN = rf"{FIGURE_DIGIT}(?:[ ]?{FIGURE_DIGIT}){{0,2}}"
_NUMBER = rf"{_RUN}(?:\s*{FIGURE_DASH}\s*{_RUN}){{1,2}}"

CAPTION_START = re.compile(
    rf"""^\s*(?:
        (?P<zh>图)\s*(?P<zh_id>{_NUMBER})
      | (?P<figure>FIGURE|FIG\.?)\s*(?P<figure_id>{_NUMBER})\s*[.:]?
      | (?P<fig>Fig(?:ure)?\.?)\s*(?P<fig_id>{_NUMBER})\s*[.:]?
    )""",
    re.VERBOSE,
)


def normalise_width(text: str) -> str:
    """Full-width ASCII forms to half-width (NFKC), keeping CJK punctuation like 。and ，."""
    return "".join(
        unicodedata.normalize("NFKC", ch) if "\uff01" <= ch <= "\uff5e" or ch == "\u3000" else ch for ch in text
    )


def match_caption_start(text: str) -> tuple[str, str, int] | None:
    """Return (figure_id, style, end offset) when `text` starts with a figure number.

    style is 'zh' (图3-12), 'en_figure' (FIGURE 3-12, the English book style) or 'en_fig'
    (Fig. 3-12, the English half of a bilingual caption).
    """
    normalised = normalise_width(text)
    m = CAPTION_START.match(normalised)
    if not m or _is_citation(normalised[m.end() :]):
        return None
    if m.group("zh"):
        return normalise_figure_id(m.group("zh_id")), "zh", m.end()
    if m.group("figure"):
        return normalise_figure_id(m.group("figure_id")), "en_figure", m.end()
    return normalise_figure_id(m.group("fig_id")), "en_fig", m.end()


_CITATION_FOLLOWERS = tuple(")]】,;、") + ("所示",)


def _is_citation(rest: str) -> bool:
    """Text after a figure number that reads as a running-text citation, not a caption title:
    `Figure 3-15).`, `图3-12所示`, `Figure 3-12 shows ...`."""
    rest = normalise_width(rest).lstrip()
    if not rest:
        return False
    if rest.startswith(_CITATION_FOLLOWERS) or rest.startswith(("）", "，", "；")):
        return True
    return rest[0].islower()
