"""Report cleaning and the word vocabulary built from training reports.

English reports are lower-cased, split into sentences, stripped of punctuation and rejoined with
" . " (R2Gen's cleaning), so the metrics compare the same word sequences the model produces.
Chinese reports are tokenised per character, sentences separated by "。".
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from foundation.files import atomic_output

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
_SENTENCE_END = re.compile(r"[.;!?]+(?:\s+|$)|\n+")
_ZH_SENTENCE_END = re.compile(r"[。；！？;!?]+")
_NON_WORD = re.compile(r"[^a-z0-9\s]+")
_NON_ZH = re.compile(r"[^\u4e00-\u9fff0-9a-zA-Z]+")


def clean_report(text: str, language: Literal["en", "zh"] = "en") -> str:
    """Normalised report: space-separated tokens, sentences ending in ' .' (or '。')."""
    if language == "zh":
        sentences = [_NON_ZH.sub("", s) for s in _ZH_SENTENCE_END.split(text)]
        return " 。 ".join(" ".join(s) for s in sentences if s) + (" 。" if any(sentences) else "")
    sentences = []
    for sentence in _SENTENCE_END.split(text.lower()):
        words = _NON_WORD.sub(" ", sentence.replace("-", " ")).split()
        if words:
            sentences.append(" ".join(words))
    return " . ".join(sentences) + " ." if sentences else ""


def tokenize_report(text: str, language: Literal["en", "zh"] = "en") -> list[str]:
    return clean_report(text, language).split()


class Vocabulary:
    """Word <-> id with <pad>=0, <bos>=1, <eos>=2, <unk>=3, then words by frequency (ties alphabetical)."""

    def __init__(self, words: Iterable[str], language: Literal["en", "zh"] = "en") -> None:
        self.tokens = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        self.index = {token: i for i, token in enumerate(self.tokens)}
        self.language = language

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    @classmethod
    def build(cls, reports: Iterable[str], min_frequency: int = 3, language: Literal["en", "zh"] = "en") -> Vocabulary:
        counts = Counter(token for report in reports for token in tokenize_report(report, language))
        kept = sorted((w for w, n in counts.items() if n >= min_frequency), key=lambda w: (-counts[w], w))
        return cls(kept, language)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, report: str, max_length: int) -> list[int]:
        """Word ids of a report, truncated to `max_length` words, followed by <eos>."""
        words = tokenize_report(report, self.language)[:max_length]
        return [self.index.get(w, self.unk_id) for w in words] + [self.eos_id]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ids up to the first <eos>; <pad> and <bos> are dropped."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id):
                continue
            words.append(self.tokens[i] if 0 <= i < len(self.tokens) else UNK)
        return " ".join(words)

    def to_json(self) -> dict:
        return {"language": self.language, "tokens": self.tokens}

    @classmethod
    def from_json(cls, payload: dict) -> Vocabulary:
        tokens = list(payload["tokens"])
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"vocabulary does not start with the special tokens {SPECIALS}")
        return cls(tokens[len(SPECIALS) :], payload.get("language", "en"))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with atomic_output(path) as out:
            out.write(json.dumps(self.to_json(), ensure_ascii=False).encode())
        return path
