"""Step 4a: clean caption text into the canonical bilingual form.

Caption text arrives from a PDF text layer or OCR with line breaks, hyphenation, figure
numbers, panel letters, OCR spacing (`图3 - 1 2 视网膜 中央`), mixed-width punctuation and
character confusions (`0CT`, `3-l2`, `3一12`). These pure functions turn it into one form so
that captions compare, deduplicate and translate consistently:

- English: `"<Title>. <panel text>"`, ASCII punctuation, single spaces.
- Chinese: `"<标题>。<panel text>"` ending with `。`, full-width `。，：；（）`, half-width digits
  and latin letters, no spaces next to CJK characters.

Cross-references to other figures (`Same person as Figure 1-1A`, `同图1-1`, `(see Fig. 3-2)`)
stay in the text in one normalised form and are also returned as `CrossReference` records.
The OCR confusion table and the list of real English hyphenated words are data files in
`pipeline/data/`.
"""

from __future__ import annotations

import csv
import functools
import logging
import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

logger = logging.getLogger(__name__)

Language = Literal["en", "zh"]

DATA_DIR = Path(__file__).parent / "data"
OCR_CONFUSIONS_FILE = DATA_DIR / "ocr_confusions.tsv"
HYPHENATED_WORDS_FILE = DATA_DIR / "glossary_hyphenated_en.tsv"

# --- character classes -------------------------------------------------------------------

_CJK_RANGES = (
    ("\u3400", "\u4dbf"),
    ("\u4e00", "\u9fff"),
    ("\uf900", "\ufaff"),
    ("\U00020000", "\U0002ffff"),
)
_CJK_CLASS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_PUNCT_CLASS = "\u3000-\u303f\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65\u2018\u2019\u201c\u201d\u2014\u2026\u00b7"
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"), None)
_SPACE_LIKE = str.maketrans({"\u00a0": " ", "\u3000": " ", "\u2002": " ", "\u2003": " ", "\u2009": " ", "\t": " "})
_LIGATURES = str.maketrans({"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl"})


def is_cjk(char: str) -> bool:
    """True for a CJK ideograph (not CJK punctuation)."""
    return any(lo <= char <= hi for lo, hi in _CJK_RANGES)


def detect_language(text: str) -> Language:
    """'zh' when CJK ideographs make up at least a fifth of the letters, else 'en'."""
    cjk = sum(1 for ch in text if is_cjk(ch))
    latin = sum(1 for ch in text if ch.isascii() and ch.isalpha())
    if cjk == 0:
        return "en"
    return "zh" if cjk * 5 >= cjk + latin else "en"


def normalise_width(text: str) -> str:
    """Full-width digits and latin letters to ASCII; punctuation is left to the language rules."""
    return "".join(
        chr(ord(ch) - 0xFEE0) if ("\uff10" <= ch <= "\uff19" or "\uff21" <= ch <= "\uff3a" or "\uff41" <= ch <= "\uff5a") else ch
        for ch in text
    )


# --- data files --------------------------------------------------------------------------


class OcrConfusions(BaseModel):
    """The OCR confusion table, grouped by the context in which each rule applies."""

    latin_word_upper: dict[str, str] = Field(default_factory=dict, description="Digit -> letter inside upper-case words.")
    latin_word_lower: dict[str, str] = Field(default_factory=dict, description="Digit -> letter inside lower-case words.")
    number: dict[str, str] = Field(default_factory=dict, description="Letter -> digit inside numbers.")
    number_separator: dict[str, str] = Field(default_factory=dict, description="Character between digits -> hyphen.")
    zh_punctuation: dict[str, str] = Field(default_factory=dict, description="Half-width -> full-width in Chinese text.")
    en_punctuation: dict[str, str] = Field(default_factory=dict, description="Full-width/typographic -> ASCII in English text.")
    zh_word: dict[str, str] = Field(default_factory=dict, description="Chinese words OCR misreads as a look-alike word.")


def _read_tsv_rows(path: Path) -> Iterable[list[str]]:
    """Rows of a TSV data file without '#' comments and without its header row."""
    with open(path, encoding="utf-8", newline="") as handle:
        lines = [line for line in handle if line.strip() and not line.startswith("#")]
    for row in list(csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]:
        yield row


@functools.lru_cache(maxsize=8)
def load_ocr_confusions(path: Path = OCR_CONFUSIONS_FILE) -> OcrConfusions:
    """Read the OCR confusion table (context, wrong, right, note)."""
    table: dict[str, dict[str, str]] = {name: {} for name in OcrConfusions.model_fields}
    for line_number, row in enumerate(_read_tsv_rows(Path(path)), start=2):
        if len(row) < 3 or row[0] not in table or not row[1]:
            raise ValueError(f"{path}: malformed OCR confusion row near line {line_number}: {row!r}")
        table[row[0]][row[1]] = row[2]
    return OcrConfusions(**table)


class HyphenatedWords(BaseModel):
    """English words whose hyphen is real, so a line break after it keeps the hyphen."""

    compounds: frozenset[str] = Field(description="Whole hyphenated words, lower case.")
    suffixes: frozenset[str] = Field(description="Second parts that always follow a hyphen.")
    prefixes: frozenset[str] = Field(description="First parts that always precede a hyphen.")


@functools.lru_cache(maxsize=8)
def load_hyphenated_words(path: Path = HYPHENATED_WORDS_FILE) -> HyphenatedWords:
    """Read the list of real hyphenated words (kind, value)."""
    kinds: dict[str, set[str]] = {"compound": set(), "suffix": set(), "prefix": set()}
    for row in _read_tsv_rows(Path(path)):
        if len(row) < 2 or row[0] not in kinds:
            raise ValueError(f"{path}: malformed row {row!r}")
        kinds[row[0]].add(row[1].strip().lower())
    return HyphenatedWords(
        compounds=frozenset(kinds["compound"]), suffixes=frozenset(kinds["suffix"]), prefixes=frozenset(kinds["prefix"])
    )


# --- figure numbers ----------------------------------------------------------------------

# characters of figure numbers as printed or as OCR reads them (shared with caption detection)
FIGURE_DIGIT = r"(?:[0-9]|[lIO|](?![A-Za-z]))"
FIGURE_DASH = r"[-－—–一‐‑−ー_·~～]"
_RUN = rf"(?:{FIGURE_DIGIT}(?:[ ]{FIGURE_DIGIT}(?![0-9]))+|{FIGURE_DIGIT}+)"
_FIGURE_NUMBER = rf"{_RUN}(?:[ ]?{FIGURE_DASH}[ ]?{_RUN}|\.(?=[0-9]){_RUN}){{0,3}}"
_EN_LABEL = r"(?:[Ff][Ii][Gg](?:[Uu][Rr][Ee])?[Ss]?)"
_FIGURE_REF = rf"(?:(?P<label>图|{_EN_LABEL}\s?\.?)\s*(?P<number>{_FIGURE_NUMBER})(?P<panel>[A-Z](?![A-Za-z]))?)"

_LEADING_FIGURE_RE = re.compile(
    rf"^\s*(?:(?P<zh>图)|(?P<en>{_EN_LABEL}))\s*\.?\s*(?P<number>{_FIGURE_NUMBER})(?![0-9])\s*[.．:：、]?\s*"
)
_OCR_DIGITS = str.maketrans({"l": "1", "I": "1", "O": "0", "|": "1"})


def normalise_figure_id(raw: str) -> str:
    """'3 - 1 2' / '３－１２' / '3一l2' / '3.12' -> '3-12' (same ids as caption detection)."""
    compact = re.sub(r"\s+", "", normalise_width(raw))
    parts = re.split(rf"{FIGURE_DASH}|\.", compact)
    return "-".join(part.translate(_OCR_DIGITS).lstrip("0") or "0" for part in parts if part)


def split_figure_number(text: str) -> tuple[str | None, str]:
    """Split a leading figure number (`图3-12`, `Fig. 3-12`, `FIGURE 3-12.`) off the text.

    Returns (figure_id or None, remaining text).
    """
    match = _LEADING_FIGURE_RE.match(normalise_width(text))
    if not match:
        return None, text
    return normalise_figure_id(match.group("number")), normalise_width(text)[match.end():]


def strip_figure_number(text: str) -> str:
    """The text without its leading figure number."""
    return split_figure_number(text)[1]


# --- panel prefixes ----------------------------------------------------------------------

_PANEL_END = r"[.．、:：]"
_PANEL_PREFIX_RE = re.compile(
    rf"""^\s*(?:
        [(（]\s*(?P<paren>[A-Za-z](?:\s*[-–—~～,，、]\s*[A-Za-z])*)\s*[)）]\s*{_PANEL_END}?
      | (?P<range>[A-Z]\s*[-–—~～至]\s*[A-Z])\s*{_PANEL_END}
      | (?P<list>[A-Z](?:\s*(?:[,，、&]|\band\b|和|及)\s*[A-Z])+)\s*{_PANEL_END}
      | (?P<single>[A-Z])图?\s*{_PANEL_END}(?![A-Za-z]\s*[.．])
      | (?P<side>[左右上下])图\s*[.．、:：，,]?
    )\s*""",
    re.VERBOSE,
)


_SIDE_PANELS = {"左": "A", "上": "A", "右": "B", "下": "B"}


def split_panel_prefix(text: str) -> tuple[str | None, str]:
    """Split a leading panel label (`A.`, `A．`, `(a)`, `A、`, `A–C.`, `左图`) off the text.

    Returns (label or None, remaining text). Labels come back as 'A', 'A-C' or 'A,B';
    左图/上图 is panel 'A' and 右图/下图 panel 'B' (two-panel figures read left to right).
    """
    match = _PANEL_PREFIX_RE.match(text)
    if not match:
        return None, text
    if match.group("side"):
        label = _SIDE_PANELS[match.group("side")]
    else:
        raw = match.group("paren") or match.group("range") or match.group("list") or match.group("single")
        letters = re.findall(r"[A-Za-z]", re.sub(r"\band\b", ",", raw))
        is_range = bool(re.search(r"[-–—~～至]", raw))
        label = "-".join(letters).upper() if is_range else ",".join(letters).upper()
    return label, text[match.end():]


def strip_panel_prefix(text: str) -> str:
    """The text without its leading panel label."""
    return split_panel_prefix(text)[1]


# --- line joining ------------------------------------------------------------------------

_HYPHEN_BREAK_RE = re.compile(r"([A-Za-z]+)[-\u00ad\u2010\u2011][ \t]*\n[ \t]*([A-Za-z]+)")
_SOFT_HYPHEN_BREAK_RE = re.compile(r"\u00ad[ \t]*\n?[ \t]*")


def _keeps_hyphen(left: str, right: str, text: str, words: HyphenatedWords) -> bool:
    """Decide whether `left-<newline>right` is a real hyphenated word or a typesetting break."""
    compound = f"{left}-{right}".lower()
    if compound in words.compounds or right.lower() in words.suffixes or left.lower() in words.prefixes:
        return True
    if right[:1].isupper() and not left.isupper():
        return True
    lowered = text.lower()
    if re.search(rf"\b{re.escape(compound)}\b", lowered):
        return True
    if re.search(rf"\b{re.escape((left + right).lower())}\b", lowered):
        return False
    return len(left) == 1 or (left.isupper() and right.isupper() and len(left) <= 3)


def join_lines(text: str, words: HyphenatedWords | None = None) -> str:
    """Join wrapped lines: drop typesetting hyphens, no space between CJK lines, else one space."""
    words = words or load_hyphenated_words()
    text = _SOFT_HYPHEN_BREAK_RE.sub("", text)

    def join_hyphen(match: re.Match[str]) -> str:
        left, right = match.group(1), match.group(2)
        return f"{left}-{right}" if _keeps_hyphen(left, right, text, words) else left + right

    text = _HYPHEN_BREAK_RE.sub(join_hyphen, text)

    def join_newline(match: re.Match[str]) -> str:
        start, end = match.start(), match.end()
        before = text[start - 1] if start > 0 else ""
        after = text[end] if end < len(text) else ""
        if not before or not after:
            return ""
        wide = f"[{_CJK_CLASS}{_CJK_PUNCT_CLASS}]"
        if re.match(wide, before) or re.match(wide, after):
            return ""
        return " "

    return re.sub(r"[ \t]*\n[ \t\n]*", join_newline, text)


# --- OCR confusions ----------------------------------------------------------------------


def fix_ocr_confusions(text: str, confusions: OcrConfusions | None = None) -> str:
    """Fix characters OCR mistakes for one another, using context to decide which is meant.

    A digit inside a latin word becomes a letter (`0CT` -> `OCT`, `c0tton` -> `cotton`), a
    letter inside a number becomes a digit (`3-l2` -> `3-12`), and a dash-like character
    between two digits becomes a hyphen (`3一12` -> `3-12`).
    """
    confusions = confusions or load_ocr_confusions()
    for wrong, right in confusions.zh_word.items():
        text = text.replace(wrong, right)

    separators = "".join(re.escape(ch) for ch in confusions.number_separator)
    if separators:
        text = re.sub(
            rf"(?<=[0-9])(\s?)([{separators}])(\s?)(?=[0-9lIO])",
            lambda m: m.group(1) + confusions.number_separator[m.group(2)] + m.group(3),
            text,
        )

    def fix_token(match: re.Match[str]) -> str:
        token = match.group(0)
        letters = [ch for ch in token if ch.isalpha()]
        digits = [ch for ch in token if ch.isdigit()]
        if letters and digits:
            if len(letters) >= 2 and len(letters) > len(digits) and all(
                d in confusions.latin_word_upper or d in confusions.latin_word_lower for d in digits
            ):
                lower = sum(ch.islower() for ch in letters) > len(letters) / 2
                table = confusions.latin_word_lower if lower else confusions.latin_word_upper
                if all(d in table for d in digits):
                    return "".join(table.get(ch, ch) if ch.isdigit() else ch for ch in token)
            if len(digits) >= len(letters) and all(ch in confusions.number for ch in letters):
                return "".join(confusions.number.get(ch, ch) for ch in token)
        return token

    return re.sub(r"(?<![A-Za-z0-9])[A-Za-z0-9]+(?![A-Za-z0-9])", fix_token, text)


# --- cross-references --------------------------------------------------------------------


class CrossReference(BaseModel):
    """A mention of another figure inside a caption, e.g. 'Same patient as Figure 1-1A'."""

    kind: Literal["same_case", "see"] = Field(
        description="'same_case': the same patient/eye as the other figure; 'see': a pointer to look at it."
    )
    figure_id: str = Field(description="Normalised figure number referred to, e.g. '1-1'.")
    panel: str | None = Field(None, description="Panel letter referred to, when given ('A' in 'Figure 1-1A').")
    language: Language = Field(description="Language of the sentence holding the reference.")
    start: int = Field(description="Start offset of the reference in the text it was found in.")
    end: int = Field(description="End offset (exclusive) of the reference in that text.")
    text: str = Field(description="The reference in its normalised form, e.g. 'Same patient as Figure 1-1A'.")


_EN_SAME_CASE_RE = re.compile(
    rf"\b(?:the\s+)?(?:same|identical)\s+(?:person|patient|eye|case|subject|individual)\s+(?:as\s+(?:in\s+)?|of\s+){_FIGURE_REF}",
    re.IGNORECASE,
)
_EN_SEE_RE = re.compile(
    rf"(?P<open>[(（]\s*)?\b(?:see|cf\.?|compare|refer\s+to)\s+(?:also\s+)?{_FIGURE_REF}(?(open)\s*[)）])",
    re.IGNORECASE,
)
_ZH_SAME_CASE_RE = re.compile(
    rf"同一?(?:患者|病人|病例|眼)?\s*[，,]?\s*(?:见\s*)?{_FIGURE_REF}"
    rf"|与\s*{_FIGURE_REF.replace('?P<', '?P<b_')}\s*(?:为|系|是)?\s*同一(?:患者|病人|病例|眼)"
)
_ZH_SEE_RE = re.compile(rf"(?P<open>[(（]\s*)?(?:参见|详见|参考|见)\s*{_FIGURE_REF}(?(open)\s*[)）])")


def _reference_from_match(match: re.Match[str], kind: str, language: Language) -> CrossReference:
    groups = {k.removeprefix("b_"): v for k, v in match.groupdict().items() if v is not None}
    figure_id = normalise_figure_id(groups["number"])
    panel = groups.get("panel")
    target = f"{figure_id}{panel or ''}"
    if language == "en":
        text = f"Same patient as Figure {target}" if kind == "same_case" else f"(see Figure {target})"
    else:
        text = f"同图{target}" if kind == "same_case" else f"（见图{target}）"
    return CrossReference(
        kind=kind, figure_id=figure_id, panel=panel, language=language, start=match.start(), end=match.end(), text=text
    )


def find_cross_references(text: str) -> list[CrossReference]:
    """Every reference to another figure in the text, in order, with its normalised form."""
    found: list[CrossReference] = []
    for pattern, kind, language in (
        (_EN_SAME_CASE_RE, "same_case", "en"),
        (_ZH_SAME_CASE_RE, "same_case", "zh"),
        (_EN_SEE_RE, "see", "en"),
        (_ZH_SEE_RE, "see", "zh"),
    ):
        for match in pattern.finditer(text):
            if any(match.start() < ref.end and ref.start < match.end() for ref in found):
                continue
            found.append(_reference_from_match(match, kind, language))
    return sorted(found, key=lambda ref: ref.start)


def normalise_cross_references(text: str) -> str:
    """Rewrite each cross-reference in its normalised form; a same-case reference ends its sentence."""
    references = find_cross_references(text)
    for ref in reversed(references):
        replacement = ref.text
        rest = text[ref.end:]
        if ref.kind == "same_case":
            follower = rest.lstrip()[:1]
            if ref.language == "en" and follower not in {".", ",", ";", ":", ")", "，", "。", "；", "："}:
                replacement += "." + (" " if rest and not rest[:1].isspace() else "")
            if ref.language == "zh" and follower not in {"，", "。", "；", "：", "）", ",", ".", ";", ":", ")"}:
                replacement += "。"
        text = text[: ref.start] + replacement + rest
    return text


# --- punctuation and whitespace ----------------------------------------------------------

_EN_SPACE_BEFORE_RE = re.compile(r"\s+([,.;:!?%)\]])")
_EN_SPACE_AFTER_OPEN_RE = re.compile(r"([(\[])\s+")
_EN_MISSING_SPACE_RE = re.compile(r"(?<=[a-z]{2})([,;:])(?=[A-Za-z])|(?<=[a-z]{3})(\.)(?=[A-Z][a-z])")


def normalise_english(text: str, confusions: OcrConfusions | None = None) -> str:
    """ASCII punctuation, single spaces, no space before closing punctuation."""
    confusions = confusions or load_ocr_confusions()
    text = normalise_width(text).translate(_LIGATURES)
    text = "".join(confusions.en_punctuation.get(ch, ch) for ch in text)
    text = text.translate(_SPACE_LIKE)
    text = re.sub(r"\s+", " ", text)
    text = _EN_MISSING_SPACE_RE.sub(lambda m: (m.group(1) or m.group(2)) + " ", text)
    text = _EN_SPACE_BEFORE_RE.sub(r"\1", text)
    text = _EN_SPACE_AFTER_OPEN_RE.sub(r"\1", text)
    text = re.sub(r"([,;:])(?=[A-Za-z(])", r"\1 ", text)
    text = re.sub(r"(?<=[A-Za-z]{2})\((?=[A-Za-z0-9])", " (", text)
    text = re.sub(r"\)(?=[A-Za-z]{2})", ") ", text)
    text = re.sub(r"(?<!\.)\.\.(?!\.)", ".", text)
    return text.strip()


def _remove_zh_spaces(text: str) -> str:
    """Drop spaces except between two latin words or a latin word and a number."""
    pieces = re.split(r"(\s+)", text)
    rebuilt: list[str] = []
    for index, piece in enumerate(pieces):
        if index % 2 == 0:
            rebuilt.append(piece)
            continue
        before = pieces[index - 1][-1:] if index > 0 else ""
        after = pieces[index + 1][:1] if index + 1 < len(pieces) else ""
        latin_before = before.isascii() and before.isalnum()
        latin_after = after.isascii() and after.isalnum()
        if latin_before and latin_after and not (before.isdigit() and after.isdigit()):
            rebuilt.append(" ")
    return "".join(rebuilt)


def _is_panel_label_stop(chars: list[str], index: int) -> bool:
    """A full stop right after a lone capital letter is a panel label (`B．`) inside Chinese text."""
    if index < 1 or not ("A" <= chars[index - 1] <= "Z"):
        return False
    before_letter = chars[index - 2] if index >= 2 else ""
    return not (before_letter.isascii() and before_letter.isalnum())


def remove_ocr_spacing(text: str) -> str:
    """Remove the spaces OCR puts between CJK characters, digits and figure-number parts.

    `图 3 - 1 2 视网膜 中央` -> `图3-12 视网膜中央`... but spaces next to Latin letters stay, so
    a caption parser can still find `视盘水肿 A．彩色` panel labels. Use before parsing raw
    OCR captions; `clean_caption` removes the remaining spaces of Chinese text itself.
    """
    text = re.sub(
        rf"(?P<label>图|{_EN_LABEL}\.?)\s*(?P<number>{_FIGURE_NUMBER})(?![0-9])",
        lambda m: m.group("label") + (" " if m.group("label") != "图" else "") + re.sub(r"\s+", "", m.group("number")),
        text,
    )
    cjk_or_digit = f"[{_CJK_CLASS}{_CJK_PUNCT_CLASS}0-9]"
    wide = f"[{_CJK_CLASS}{_CJK_PUNCT_CLASS}]"
    text = re.sub(rf"(?<={wide})[ \t\u3000]+(?={cjk_or_digit})|(?<={cjk_or_digit})[ \t\u3000]+(?={wide})", "", text)
    return text


def normalise_chinese(text: str, confusions: OcrConfusions | None = None) -> str:
    """Full-width sentence punctuation, half-width digits and latin, no spaces around CJK."""
    confusions = confusions or load_ocr_confusions()
    text = normalise_width(text).translate(_LIGATURES).translate(_SPACE_LIKE)
    text = _remove_zh_spaces(text.strip())
    chars = list(text)
    for index, ch in enumerate(chars):
        before = chars[index - 1] if index > 0 else ""
        after = chars[index + 1] if index + 1 < len(chars) else ""
        between_digits = before.isdigit() and after.isdigit()
        if ch in (".", "．"):
            if _is_panel_label_stop(chars, index):
                chars[index] = "．"
            elif between_digits or (before.isascii() and before.isalpha() and after.isascii() and after.isalpha()):
                chars[index] = "."
            elif before and (is_cjk(before) or before in "）)」》%" or before.isdigit() or before.isalpha()):
                chars[index] = "。"
        elif ch in (",", ":") and between_digits:
            continue
        elif ch in confusions.zh_punctuation:
            chars[index] = confusions.zh_punctuation[ch]
    text = "".join(chars)
    text = re.sub(r"。{2,}", "。", text)
    text = re.sub(r"([，；：、])\1+", r"\1", text)
    return text


def normalise_punctuation(text: str, language: Language) -> str:
    """Punctuation and whitespace in the form of the given language."""
    return normalise_english(text) if language == "en" else normalise_chinese(text)


# --- the whole cleaning ------------------------------------------------------------------


class CleanedText(BaseModel):
    """A cleaned caption fragment with what was taken off its front and the references in it."""

    text: str = Field(description="Cleaned text without figure number and panel label.")
    language: Language = Field(description="Language the text was normalised as.")
    figure_id: str | None = Field(None, description="Figure number removed from the front, if any.")
    panel: str | None = Field(None, description="Panel label removed from the front, if any.")
    cross_references: list[CrossReference] = Field(
        default_factory=list, description="References to other figures; offsets are into `text`."
    )


def _prepare(text: str) -> str:
    text = unicodedata.normalize("NFC", text).translate(_ZERO_WIDTH).replace("\r\n", "\n").replace("\r", "\n")
    return join_lines(text)


def clean_caption(text: str, language: Language | None = None) -> CleanedText:
    """Clean one caption fragment (a title, a panel text or a whole caption)."""
    prepared = fix_ocr_confusions(normalise_width(_prepare(text)))
    language = language or detect_language(prepared)
    figure_id, rest = split_figure_number(prepared)
    panel, rest = split_panel_prefix(rest)
    if panel is not None and figure_id is None:
        figure_id, rest = split_figure_number(rest)
    rest = normalise_cross_references(rest)
    cleaned = normalise_punctuation(rest, language)
    return CleanedText(
        text=cleaned,
        language=language,
        figure_id=figure_id,
        panel=panel,
        cross_references=find_cross_references(cleaned),
    )


def clean_caption_text(text: str, language: Language | None = None) -> str:
    """`clean_caption(...).text`: the cleaned string alone."""
    return clean_caption(text, language).text


_PIECE_TRAILING = ".;,:。；，："


def canonical_caption(title: str, panel_text: str | Sequence[str] | None, language: Language) -> str:
    """Build the canonical caption from a parsed title and the text(s) that apply to one panel.

    Each piece is cleaned, loses its figure number or panel label and its trailing `.;,:`/`。；，：`,
    then English pieces are joined with ". " and end with "."; Chinese pieces are joined with
    "。" and end with "。" (the rule `testbed.sample_atlas` writes its truth with).
    """
    if panel_text is None:
        raw_pieces: list[str] = [title]
    elif isinstance(panel_text, str):
        raw_pieces = [title, panel_text]
    else:
        raw_pieces = [title, *panel_text]
    pieces = [clean_caption_text(piece, language).strip().rstrip(_PIECE_TRAILING).strip() for piece in raw_pieces if piece]
    pieces = [piece for piece in pieces if piece]
    if not pieces:
        return ""
    if language == "en":
        return ". ".join(pieces) + "."
    return "。".join(pieces) + "。"


_MATCH_DROP_RE = re.compile(r"[\W_]+", re.UNICODE)


def normalise_for_match(text: str, language: Language) -> str:
    """A comparison key: lower case, no punctuation, whitespace-insensitive.

    English keeps single spaces between words; Chinese keeps no spaces at all.
    """
    text = unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH).lower()
    text = _MATCH_DROP_RE.sub(" ", text)
    if language == "zh":
        return re.sub(r"\s+", "", text)
    return re.sub(r"\s+", " ", text).strip()
