"""Panel labels: one alphabet and one ordering shared by caption parsing, alignment and the
sample-atlas generator.

Labels are capital letters (A … Z), optionally followed by a number for sub-panels (`A1`, `B2`),
or plain numbers (`1`, `2`). Past Z, generated labels continue AA, AB, … so any panel count has
a label; parsing only reads what a caption prints.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable

PANEL_LETTERS = string.ascii_uppercase
LABEL_PATTERN = re.compile(r"^(?P<letters>[A-Z]{1,2})?(?P<number>\d{1,2})?$")


def label_for_index(index: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA, 27 -> AB, … (spreadsheet-style, never runs out)."""
    if index < 0:
        raise ValueError(f"panel index must be >= 0, got {index}")
    label = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, len(PANEL_LETTERS))
        label = PANEL_LETTERS[remainder] + label
    return label


def letter_index(letters: str) -> int:
    """Inverse of label_for_index for letter-only labels."""
    value = 0
    for char in letters:
        value = value * len(PANEL_LETTERS) + PANEL_LETTERS.index(char) + 1
    return value - 1


def label_key(label: str) -> tuple[int, int]:
    """Sort key: letters by alphabet position (A < B < … < Z < AA), then the sub-panel number."""
    match = LABEL_PATTERN.match(label)
    if not match or not label:
        return (10**6, 0)
    letters, number = match.group("letters"), match.group("number")
    return (letter_index(letters) if letters else -1, int(number) if number else -1)


def sort_labels(labels: Iterable[str]) -> list[str]:
    return sorted(set(labels), key=label_key)


def label_range(first: str, last: str) -> tuple[str, ...]:
    """Labels from `first` to `last` inclusive (`A`–`C`, `A1`–`A3`); just the two ends when they
    do not form a range."""
    a, b = LABEL_PATTERN.match(first), LABEL_PATTERN.match(last)
    if a and b and a.group("letters") and b.group("letters") and not a.group("number") and not b.group("number"):
        start, end = letter_index(a.group("letters")), letter_index(b.group("letters"))
        if start <= end:
            return tuple(label_for_index(i) for i in range(start, end + 1))
    if a and b and a.group("letters") == b.group("letters") and a.group("number") and b.group("number"):
        start, end = int(a.group("number")), int(b.group("number"))
        if start <= end:
            return tuple(f"{a.group('letters') or ''}{n}" for n in range(start, end + 1))
    return (first, last)
