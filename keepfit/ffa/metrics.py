"""Caption metrics through pycocoevalcap: BLEU-1..4, METEOR, ROUGE-L, CIDEr.

Texts are compared as the cleaned, space-separated word sequences (R2Gen's protocol: no PTB
tokeniser). METEOR runs pycocoevalcap's bundled Java jar; without a `java` executable it is
reported unavailable (None, with the reason) and the other metrics are still computed.
"""

from __future__ import annotations

import logging
import shutil
import threading
from typing import Any

from pydantic import BaseModel, Field

logger = logging.getLogger(__name__)

EMPTY_HYPOTHESIS = "<empty>"
"""Stands in for an empty generated report (ROUGE-L divides by the hypothesis length); matches nothing."""
METRIC_NAMES = ("BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr")


class CaptionScores(BaseModel):
    """Corpus-level scores of generated reports against one reference each."""

    scores: dict[str, float | None] = Field(description="Metric name -> corpus score; None where unavailable.")
    unavailable: dict[str, str] = Field(default_factory=dict, description="Metric name -> why it was not computed.")
    n: int = Field(description="Number of (reference, hypothesis) pairs scored.")

    def get(self, name: str) -> float | None:
        return self.scores.get(name)


def java_available() -> bool:
    return shutil.which("java") is not None


_METEOR: list[Any] = []
"""One METEOR jar process per Python process: starting Java and loading its tables takes seconds."""
_METEOR_LOCK = threading.Lock()


def _meteor(gts: dict[str, list[str]], res: dict[str, list[str]]) -> tuple[float | None, str | None]:
    if not java_available():
        return None, "java not found (install default-jre-headless)"
    from pycocoevalcap.meteor.meteor import Meteor

    with _METEOR_LOCK:
        try:
            if not _METEOR or _METEOR[0].meteor_p.poll() is not None:
                _METEOR[:] = [Meteor()]
            score, _ = _METEOR[0].compute_score(gts, res)
            return float(score), None
        except (ValueError, OSError) as exc:
            _METEOR.clear()
            return None, f"METEOR jar failed: {exc}"


def caption_scores(references: dict[str, str], hypotheses: dict[str, str], meteor: bool = True) -> CaptionScores:
    """Scores of `hypotheses` against `references` (same keys, cleaned texts)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if set(references) != set(hypotheses):
        raise ValueError("references and hypotheses must have the same ids")
    if not references:
        raise ValueError("nothing to score: no reports")
    keys = sorted(references)
    gts = {k: [references[k]] for k in keys}
    res = {k: [hypotheses[k] or EMPTY_HYPOTHESIS] for k in keys}
    scores: dict[str, float | None] = {}
    unavailable: dict[str, str] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    for n, value in enumerate(bleu, start=1):
        scores[f"BLEU_{n}"] = float(value)
    if meteor:
        value, reason = _meteor(gts, res)
        scores["METEOR"] = value
        if reason:
            unavailable["METEOR"] = reason
            logger.warning("METEOR unavailable: %s", reason)
    else:
        scores["METEOR"] = None
        unavailable["METEOR"] = "disabled"
    scores["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    return CaptionScores(scores=scores, unavailable=unavailable, n=len(keys))


def format_scores(scores: CaptionScores) -> dict[str, Any]:
    return {name: (round(v, 4) if v is not None else "n/a") for name, v in scores.scores.items()}
