"""Greedy and beam-search decoding with hard trigram blocking.

Trigram blocking forbids a word that would complete a trigram already present in the
hypothesis (its log-probability becomes -inf), so no report repeats a three-word phrase;
<eos> is never blocked. Beam search keeps finished hypotheses in the beam at their final score
(no length normalisation, as in R2Gen) and runs batched over cases and beams.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from keepfit.ffa.vocab import Vocabulary


class DecodeConfig(BaseModel):
    """How reports are generated."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["beam", "greedy"] = Field("beam", description="Beam search or greedy decoding.")
    beam_size: int = Field(3, description="Hypotheses kept per case in beam search.")
    block_trigrams: bool = Field(True, description="Forbid words that would repeat a trigram of the hypothesis.")
    max_length: int = Field(90, description="Most words generated per report.")


def blocked_words(sequence: list[int]) -> set[int]:
    """Words that would complete a trigram already in `sequence` (its last two words + the word)."""
    if len(sequence) < 3:
        return set()
    last = (sequence[-2], sequence[-1])
    return {sequence[i + 2] for i in range(len(sequence) - 2) if (sequence[i], sequence[i + 1]) == last}


def _forbid(logprobs: torch.Tensor, sequences: list[list[int]], active: torch.Tensor, vocab: Vocabulary, block: bool) -> None:
    logprobs[:, vocab.pad_id] = float("-inf")
    logprobs[:, vocab.bos_id] = float("-inf")
    if not block:
        return
    for row, sequence in enumerate(sequences):
        if active[row]:
            words = blocked_words(sequence)
            words.discard(vocab.eos_id)
            if words:
                logprobs[row, list(words)] = float("-inf")


@torch.no_grad()
def greedy_decode(model, memory: torch.Tensor, vocab: Vocabulary, max_length: int = 90, block_trigrams: bool = True) -> list[list[int]]:
    """Most likely next word at every step; returns word ids per case (without <eos>)."""
    batch = memory.shape[0]
    tokens = torch.full((batch, 1), vocab.bos_id, dtype=torch.long, device=memory.device)
    sequences: list[list[int]] = [[] for _ in range(batch)]
    active = torch.ones(batch, dtype=torch.bool)
    for _ in range(max_length):
        logprobs = model.next_token_logits(memory, tokens).float().log_softmax(-1)
        _forbid(logprobs, sequences, active, vocab, block_trigrams)
        chosen = logprobs.argmax(-1)
        for row in range(batch):
            if active[row]:
                word = int(chosen[row])
                if word == vocab.eos_id:
                    active[row] = False
                else:
                    sequences[row].append(word)
        if not active.any():
            break
        tokens = torch.cat([tokens, chosen[:, None]], dim=1)
    return sequences


@torch.no_grad()
def beam_search(
    model, memory: torch.Tensor, vocab: Vocabulary, beam_size: int = 3, max_length: int = 90, block_trigrams: bool = True
) -> list[list[int]]:
    """Highest-scoring hypothesis per case under summed log-probabilities; word ids without <eos>."""
    batch, beams = memory.shape[0], beam_size
    device = memory.device
    memory = memory.repeat_interleave(beams, dim=0)
    tokens = torch.full((batch * beams, 1), vocab.bos_id, dtype=torch.long, device=device)
    scores = torch.zeros(batch, beams, device=device)
    scores[:, 1:] = float("-inf")
    finished = torch.zeros(batch * beams, dtype=torch.bool, device=device)
    sequences: list[list[int]] = [[] for _ in range(batch * beams)]
    for _ in range(max_length):
        logprobs = model.next_token_logits(memory, tokens).float().log_softmax(-1)
        _forbid(logprobs, sequences, ~finished.cpu(), vocab, block_trigrams)
        logprobs[finished] = float("-inf")
        logprobs[finished, vocab.pad_id] = 0.0
        vocab_size = logprobs.shape[1]
        candidates = (scores.view(-1, 1) + logprobs).view(batch, beams * vocab_size)
        scores, flat = candidates.topk(beams, dim=1)
        origin = (torch.arange(batch, device=device)[:, None] * beams + flat // vocab_size).view(-1)
        words = (flat % vocab_size).view(-1)
        previous_finished = finished[origin]
        finished = previous_finished | (words == vocab.eos_id)
        origin_list, words_list = origin.tolist(), words.tolist()
        sequences = [
            sequences[o] + ([] if done or w == vocab.eos_id else [w])
            for o, w, done in zip(origin_list, words_list, previous_finished.tolist())
        ]
        tokens = torch.cat([tokens[origin], words[:, None]], dim=1)
        if finished.all():
            break
    best = scores.argmax(dim=1).tolist()
    return [sequences[row * beams + best[row]] for row in range(batch)]


def decode(model, memory: torch.Tensor, vocab: Vocabulary, config: DecodeConfig) -> list[list[int]]:
    if config.method == "greedy" or config.beam_size <= 1:
        return greedy_decode(model, memory, vocab, config.max_length, config.block_trigrams)
    return beam_search(model, memory, vocab, config.beam_size, config.max_length, config.block_trigrams)
