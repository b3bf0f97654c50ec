"""Forced alignment: where each word of a known transcript lies in the audio, from a CTC model.

``align_words(model, audio, text)`` runs the model once and asks torchaudio's CTC forced
aligner for the best path through the transcript's tokens; the frames of a word's tokens
give its span. CTC emits a token on a frame or two of the sound, so a span marks where a
word is rather than where it starts and ends; ``cut_points`` widens each span by ``pad``
seconds, never past the midpoint to the next word, to cut the whole word out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from asr.errors import AsrError


@dataclass(frozen=True)
class WordSpan:
    word: str
    start: float  # seconds: the first frame of the word's first token
    end: float  # seconds: the end of the frame of its last token
    score: float  # the mean over its tokens of the log of their mean probability on the path (0: certain)


def align_words(model, audio: torch.Tensor, text: str) -> list[WordSpan]:
    """The words of ``text`` (as the model's tokenizer writes them) located in ``audio``
    ((samples,) at the model's sample rate) by ``model``, an ``asr.inference.Recognizer`` whose tokenizer
    has a space symbol (characters). Raises ``AsrError`` if the audio is too short for the text."""
    import torchaudio.functional as AF

    tokenizer = model.tokenizer
    words = text.split()
    if not words:
        return []
    if " " not in getattr(tokenizer, "symbols", ()):
        raise AsrError("forced alignment needs a character model (its tokenizer has no space symbol)")
    space = tokenizer.symbols.index(" ")
    ids = tokenizer.encode(" ".join(words))
    log_probs, lengths = model.log_probs(audio[None], torch.tensor([audio.numel()]))
    emission = log_probs[:, : int(lengths[0])].float().cpu()
    repeats = sum(a == b for a, b in zip(ids, ids[1:]))
    if emission.shape[1] < len(ids) + repeats:
        raise AsrError(f"{emission.shape[1]} frames are too few for the {len(ids)} tokens of {text!r}")
    path, scores = AF.forced_align(emission, torch.tensor([ids], dtype=torch.int32), blank=tokenizer.blank)
    spans = AF.merge_tokens(path[0], scores[0].exp())
    shift = model.frame_shift
    out, current = [], []
    for span in spans + [None]:
        if span is None or span.token == space:
            if current:
                probs = torch.tensor([s.score for s in current]).clamp_min(1e-12)
                out.append(WordSpan(words[len(out)], current[0].start * shift, current[-1].end * shift,
                                    float(probs.log().mean())))
            current = []
        else:
            current.append(span)
    return out  # one span per word: the path goes through every token, spaces included


def cut_points(spans: list[WordSpan], duration: float, pad: float = 0.15) -> list[tuple[float, float]]:
    """(start, end) in seconds to cut each word out: its span widened by ``pad`` on each side,
    but not past the midpoint of the gap to a neighbouring word, nor past the audio."""
    cuts = []
    for i, span in enumerate(spans):
        lo = (spans[i - 1].end + span.start) / 2 if i else 0.0
        hi = (span.end + spans[i + 1].start) / 2 if i + 1 < len(spans) else duration
        cuts.append((max(lo, span.start - pad), min(hi, span.end + pad)))
    return cuts
