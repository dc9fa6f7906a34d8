"""The generator's shapes, case pooling, trunk loading from a KeepFIT checkpoint, and decoding."""

from __future__ import annotations

import pytest
import torch

from keepfit.ffa.decoding import beam_search, blocked_words, greedy_decode
from keepfit.ffa.model import ReportGenerator, ReportModelConfig, pool_cases
from keepfit.ffa.vocab import Vocabulary

TINY = {
    "image_size": 64,
    "grid_size": 2,
    "vision": {"arch": "custom", "widths": [8, 16, 32, 64], "pretrained": False},
    "d_model": 32,
    "num_heads": 4,
    "d_ff": 64,
    "num_encoder_layers": 1,
    "num_decoder_layers": 1,
    "max_length": 30,
}


def _vocab() -> Vocabulary:
    return Vocabulary.build(["a b c d e f g h . i j k l m n"], min_frequency=1)


def _model(vocab: Vocabulary, seed: int = 0, **overrides) -> ReportGenerator:
    torch.manual_seed(seed)
    return ReportGenerator(ReportModelConfig(**{**TINY, **overrides}), len(vocab)).eval()


def _trigrams(sequence: list[int]) -> list[tuple[int, int, int]]:
    return [tuple(sequence[i : i + 3]) for i in range(len(sequence) - 2)]


def test_published_defaults_and_shapes():
    published = ReportModelConfig()
    assert (published.d_model, published.num_heads, published.d_ff, published.num_encoder_layers) == (512, 8, 512, 3)
    assert (published.num_decoder_layers, published.dropout, published.visual_dropout, published.max_length) == (3, 0.1, 0.5, 90)
    vocab = _vocab()
    model = _model(vocab)
    images = torch.rand(5, 3, 64, 64)
    memory = model.encode(images, torch.tensor([2, 3]))
    assert memory.shape == (2, 4, 32)
    logits = model(images, torch.tensor([2, 3]), torch.ones(2, 7, dtype=torch.long))
    assert logits.shape == (2, 7, len(vocab))


def test_case_pooling_averages_each_cases_frames():
    grids = torch.arange(5 * 2 * 3, dtype=torch.float32).view(5, 2, 3)
    pooled = pool_cases(grids, torch.tensor([2, 3]))
    assert torch.allclose(pooled[0], grids[:2].mean(0)) and torch.allclose(pooled[1], grids[2:].mean(0))


def test_trunk_starts_from_a_keepfit_checkpoint(tmp_path):
    import keepfit

    torch.manual_seed(3)
    pretrained = keepfit.create_model("tiny")
    path = keepfit.save_checkpoint(pretrained, tmp_path / "keepfit.pth")
    model = ReportGenerator(ReportModelConfig(**{**TINY, "pretrained_checkpoint": str(path)}), 20)
    trunk = model.visual.model.state_dict()
    for key, value in pretrained.vision_model.model.state_dict().items():
        assert torch.equal(trunk[key], value), key
    assert model.config.vision.widths == pretrained.config.vision.widths
    with pytest.raises(FileNotFoundError, match="pretrained checkpoint not found"):
        ReportGenerator(ReportModelConfig(**{**TINY, "pretrained_checkpoint": str(tmp_path / "none.pth")}), 20)


def test_blocked_words_complete_a_repeated_trigram():
    assert blocked_words([5, 6, 7, 5, 6]) == {7}
    assert blocked_words([5, 6, 7]) == set()
    assert blocked_words([4, 4, 4, 4]) == {4}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_trigram_blocking_never_repeats_a_trigram(seed):
    vocab = _vocab()
    model = _model(vocab, seed)
    favoured = vocab.index["c"]
    with torch.no_grad():
        model.output.bias.zero_()
        model.output.bias[favoured] = 8.0  # without blocking the model says "c c c c ..."
        model.output.bias[vocab.eos_id] = -8.0
    memory = model.encode(torch.rand(3, 3, 64, 64))
    for unblocked in (beam_search(model, memory, vocab, 3, 30, False), greedy_decode(model, memory, vocab, 30, False)):
        assert any(len(set(_trigrams(s))) < len(_trigrams(s)) for s in unblocked)
    for blocked in (beam_search(model, memory, vocab, 3, 30, True), greedy_decode(model, memory, vocab, 30, True)):
        for sequence in blocked:
            assert len(sequence) > 3
            assert len(set(_trigrams(sequence))) == len(_trigrams(sequence)), sequence


def test_beam_of_one_is_greedy_and_beam_never_scores_below_greedy_on_short_reports():
    vocab = _vocab()
    model = _model(vocab, 4)
    memory = model.encode(torch.rand(4, 3, 64, 64))
    assert beam_search(model, memory, vocab, 1, 12) == greedy_decode(model, memory, vocab, 12)
    sequences = beam_search(model, memory, vocab, 3, 12)
    assert len(sequences) == 4 and all(len(s) <= 12 for s in sequences)
    assert all(vocab.eos_id not in s and vocab.pad_id not in s for s in sequences)
