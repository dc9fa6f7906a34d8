"""Metric numbers equal pycocoevalcap's on fixed strings; METEOR is reported unavailable without Java."""

from __future__ import annotations

import shutil

import pytest

from keepfit.ffa.metrics import caption_scores
from keepfit.ffa.vocab import Vocabulary, clean_report, tokenize_report

REFERENCES = {
    "a": "hyperfluorescent leakage appears at the macula . macular edema is present .",
    "b": "the retinal vessels fill normally in the early phase .",
    "c": "ring shaped staining surrounds the optic disc .",
}
HYPOTHESES = {
    "a": "hyperfluorescent leakage appears at the macula .",
    "b": "the retinal vessels fill normally .",
    "c": "staining surrounds the optic disc in the late phase .",
}


def _direct():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts = {k: [v] for k, v in REFERENCES.items()}
    res = {k: [v] for k, v in HYPOTHESES.items()}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return gts, res, {
        **{f"BLEU_{n}": b for n, b in enumerate(bleu, 1)},
        "ROUGE_L": Rouge().compute_score(gts, res)[0],
        "CIDEr": Cider().compute_score(gts, res)[0],
    }


def test_scores_equal_pycocoevalcap_without_meteor():
    _, _, expected = _direct()
    scores = caption_scores(REFERENCES, HYPOTHESES, meteor=False)
    for name, value in expected.items():
        assert scores.scores[name] == pytest.approx(value, abs=1e-12), name
    assert 0 < scores.scores["BLEU_4"] < scores.scores["BLEU_1"] < 1


def test_bleu_1_matches_the_formula_on_one_pair():
    scores = caption_scores({"x": "the cat sat on the mat"}, {"x": "the cat sat on mat"}, meteor=False)
    brevity = 2.718281828459045 ** (1 - 6 / 5)
    assert scores.scores["BLEU_1"] == pytest.approx(brevity * 5 / 5, rel=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs Java (default-jre-headless)")
def test_meteor_equals_pycocoevalcap():
    from pycocoevalcap.meteor.meteor import Meteor

    gts, res, _ = _direct()
    scorer = Meteor()
    expected, _ = scorer.compute_score(gts, res)
    del scorer
    scores = caption_scores(REFERENCES, HYPOTHESES)
    assert scores.scores["METEOR"] == pytest.approx(expected, abs=1e-12)
    assert scores.unavailable == {}


def test_without_java_meteor_is_unavailable_and_the_rest_is_computed(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    scores = caption_scores(REFERENCES, HYPOTHESES)
    assert scores.scores["METEOR"] is None and "java not found" in scores.unavailable["METEOR"]
    assert scores.scores["CIDEr"] > 0 and scores.scores["ROUGE_L"] > 0


def test_empty_hypothesis_scores_zero_instead_of_failing():
    scores = caption_scores({"x": "leakage at the macula ."}, {"x": ""}, meteor=False)
    assert scores.scores["ROUGE_L"] == 0 and scores.scores["BLEU_1"] < 1e-6


def test_cleaning_and_vocabulary():
    assert clean_report("Leakage (late) at the Macula; edema-like change!\nNormal disc.") == (
        "leakage late at the macula . edema like change . normal disc ."
    )
    assert tokenize_report("黄斑区渗漏。视盘正常", "zh") == ["黄", "斑", "区", "渗", "漏", "。", "视", "盘", "正", "常", "。"]
    vocab = Vocabulary.build(["a b b c c c", "c"], min_frequency=2)
    assert vocab.tokens[4:] == ["c", ".", "b"]
    ids = vocab.encode("c b a", max_length=90)
    assert ids == [4, 6, vocab.unk_id, 5, vocab.eos_id] and vocab.decode(ids) == "c b <unk> ."
    assert len(vocab.encode("b " * 200, max_length=90)) == 91
    assert Vocabulary.from_json(vocab.to_json()).tokens == vocab.tokens
