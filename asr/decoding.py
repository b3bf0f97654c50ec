"""Decoding CTC log-probs into text.

Decoders are small classes with one method,
``decode(log_probs (batch, frames, classes), lengths (batch,)) -> list[Hypothesis]``,
made by ``make_decoder(options, tokenizer, frame_shift)`` from a frozen
``DecodingOptions``; variants come from ``dataclasses.replace``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class DecodingOptions:
    decoder: str = "greedy"  # "greedy" or "beam"
    beam_width: int = 32
    lm_path: str | None = None  # KenLM .arpa or binary, for "beam"
    unigrams_path: str | None = None  # one word per line; read next to the LM when absent
    alpha: float = 0.5  # LM weight
    beta: float = 1.0  # word insertion bonus
    hotwords: tuple[str, ...] = ()
    hotword_weight: float = 10.0
    nbest: int = 1
    processes: int = 0  # worker processes for batch beam search (0: in this process)


@dataclass
class Word:
    word: str
    start: float  # seconds
    end: float
    confidence: float  # 0..1


@dataclass
class Hypothesis:
    text: str
    words: list[Word] = field(default_factory=list)
    score: float = 0.0  # log-probability-like score of the path
    alternatives: list[str] = field(default_factory=list)  # n-best texts after the first


def _word_boundaries(labels: list[str]):
    """For each class: (starts a new word, text it contributes)."""
    info = []
    for label in labels:
        if label == " ":
            info.append((True, ""))
        elif label.startswith("\u2581"):  # sentencepiece word start
            info.append((True, label[1:]))
        else:
            info.append((False, label))
    return info


class GreedyDecoder:
    """Best class per frame, repeats collapsed, blanks removed."""

    def __init__(self, tokenizer, frame_shift: float) -> None:
        self.tokenizer = tokenizer
        self.frame_shift = frame_shift
        self.info = _word_boundaries(tokenizer.labels)

    def decode(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[Hypothesis]:
        best, best_ids = log_probs.detach().float().max(dim=-1)
        return [self._one(best_ids[b, : int(n)].tolist(), best[b, : int(n)].exp().tolist(), float(best[b, : int(n)].sum()))
                for b, n in enumerate(lengths.tolist())]

    def _one(self, ids: list[int], probs: list[float], score: float) -> Hypothesis:
        blank = self.tokenizer.blank
        words: list[list] = []  # [text, first frame, last frame, probs]
        previous = blank
        for t, (i, p) in enumerate(zip(ids, probs)):
            if i != blank and i != previous:
                new_word, piece = self.info[i]
                if new_word or not words or words[-1][0] is None:
                    words.append([None, t, t, []])
                if piece:
                    words[-1][0] = (words[-1][0] or "") + piece
                    words[-1][2] = t
                    words[-1][3].append(p)
            previous = i
        out = [Word(w, s * self.frame_shift, (e + 1) * self.frame_shift, sum(ps) / len(ps))
               for w, s, e, ps in words if w]
        return Hypothesis(" ".join(w.word for w in out), out, score)


def make_decoder(options: DecodingOptions, tokenizer, frame_shift: float):
    """The one place where a decoder is chosen."""
    if options.decoder == "greedy":
        return GreedyDecoder(tokenizer, frame_shift)
    if options.decoder == "beam":
        from asr.beam import BeamSearchDecoder

        return BeamSearchDecoder(options, tokenizer, frame_shift)
    raise ValueError(f"unknown decoder {options.decoder!r}; choose greedy or beam")
