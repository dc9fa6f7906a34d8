"""Figure-number patterns shared by caption detection (step 1) and caption parsing (step 2).

The label words come from a data file (`pipeline/data/figure_labels.tsv`: one line per language);
numbers may have chapter parts or not (`1`, `1.2`, `3-12`, `5-3-1`, `3.12a`, supplementary `S1`,
`e3`) and any separator may follow (`.`, `:`, `|`, a dash, or nothing). Tolerant of the noise OCR
and typesetting add: full-width digits and punctuation, spaces inside numbers (`图3 - 1 2`), dashes
read as `一`/`—`/`–`, `l`/`I` read for `1` and `O` for `0`.

Traps stay out: a running-text citation (`Figure 3 shows …`, `(Fig. 2)`, `图3-12所示`) and a
list-of-figures entry (dot leaders or a page number at the end of the line).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from pathlib import Path

from pipeline.clean import FIGURE_DASH, FIGURE_DIGIT, normalise_figure_id

LABELS_FILE = Path(__file__).parent / "data" / "figure_labels.tsv"
CJK_LABEL = re.compile(r"[\u3400-\u9fff]")

_RUN = rf"{FIGURE_DIGIT}(?:[ ]?{FIGURE_DIGIT}){{0,2}}"
_NUMBER = rf"(?P<supp>[Ss]|e(?=\d))?{_RUN}(?:\s*(?:{FIGURE_DASH}|\.(?=\s*{FIGURE_DIGIT}))\s*{_RUN}){{0,2}}(?P<suffix>[a-z](?![a-z]))?"
_AFTER = r"(?![0-9])\s*(?:[.．:：|｜—–\-]\s*)?"


def read_label_words(path: Path = LABELS_FILE) -> dict[str, list[str]]:
    """language -> label words, from the data file (comments and blank lines skipped)."""
    words: dict[str, list[str]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        language, *labels = [part.strip() for part in line.split("\t")]
        if not labels:
            raise ValueError(f"{path}:{number}: a language needs at least one label word")
        words.setdefault(language, []).extend(label for label in labels if label)
    return words


@functools.lru_cache(maxsize=4)
def caption_start_pattern(path: Path = LABELS_FILE) -> re.Pattern[str]:
    words = {word for labels in read_label_words(path).values() for word in labels}

    def word_pattern(word: str) -> str:
        parts = [re.escape(part) for part in word.split()]
        body = r"\s+".join(parts)
        return body if CJK_LABEL.search(word) else body + r"\.?(?![A-Za-z])"

    alternation = "|".join(word_pattern(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"^\s*(?P<label>{alternation})\s*(?P<number>{_NUMBER}){_AFTER}", re.IGNORECASE)


def normalise_width(text: str) -> str:
    """Full-width ASCII forms to half-width (NFKC), keeping CJK punctuation like 。and ，."""
    return "".join(
        unicodedata.normalize("NFKC", ch) if "\uff01" <= ch <= "\uff5e" or ch == "\u3000" else ch for ch in text
    )


_LIST_ENTRY = re.compile(r"(?:(?:\.\s?){3,}|…+|\s{3,}|\t)\s*[0-9ivxlc]{1,4}\s*$", re.IGNORECASE)


def match_caption_start(text: str) -> tuple[str, str, int] | None:
    """Return (figure_id, style, end offset) when `text` starts with a figure label and number.

    style is 'zh' (a CJK label: 图3-12), 'en_figure' (a label in capitals: FIGURE 3-12, FIG. 1)
    or 'en_fig' (Fig. 3-12, Figure 1, Figura 2.3). The offset is in the width-normalised text,
    which has the same length as `text`.
    """
    normalised = normalise_width(text)
    m = caption_start_pattern().match(normalised)
    if not m or _is_citation(normalised[m.end() :], normalised[: m.end()]) or _LIST_ENTRY.search(normalised):
        return None
    number = m.group("number")
    supplementary = (m.group("supp") or "").upper() if m.group("supp") in ("S", "s") else (m.group("supp") or "")
    core = number[len(m.group("supp") or "") :]
    suffix = m.group("suffix") or ""
    if suffix:
        core = core[: -len(suffix)]
    figure_id = supplementary + normalise_figure_id(core) + suffix
    label = m.group("label")
    if CJK_LABEL.search(label):
        style = "zh"
    elif label.isupper():
        style = "en_figure"
    else:
        style = "en_fig"
    return figure_id, style, m.end()


_CITATION_FOLLOWERS = tuple(")]】,;、") + ("所示", "）", "，", "；")


def _is_citation(rest: str, matched: str) -> bool:
    """Text after a figure number that reads as a running-text citation, not a caption title:
    `Figure 3-15).`, `图3-12所示`, `Figure 3-12 shows ...`, `Fig. 2)41.`."""
    rest = rest.lstrip()
    if not rest:
        return False
    if rest.startswith(_CITATION_FOLLOWERS):
        return True
    ends_with_separator = matched.rstrip()[-1:] in ".．:：|｜—–-"
    return rest[0].islower() and not ends_with_separator
