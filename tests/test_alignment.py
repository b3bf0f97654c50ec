"""Forced alignment on hand-built emissions: word spans, cut points, too-short audio."""

import pytest
import torch

from asr.alignment import WordSpan, align_words, cut_points
from asr.errors import AsrError
from asr.text import CharTokenizer


class Emitter:
    """A recognizer stand-in whose model emits a fixed (frames, classes) log-prob matrix."""

    def __init__(self, emission: torch.Tensor, frame_shift: float = 0.03):
        self.tokenizer, self.frame_shift, self.emission = CharTokenizer(), frame_shift, emission

    def log_probs(self, audio, lengths):
        return self.emission[None], torch.tensor([self.emission.shape[0]])


def emission_for(peaks: dict[int, str], frames: int) -> torch.Tensor:
    """Blank everywhere, except the given frames, where one symbol is near certain."""
    tok = CharTokenizer()
    probs = torch.full((frames, tok.vocab_size), 0.001)
    probs[:, tok.blank] = 1.0
    for frame, symbol in peaks.items():
        probs[frame] = 0.001
        probs[frame, tok.symbols.index(symbol)] = 1.0
    return (probs / probs.sum(-1, keepdim=True)).log()


def test_words_are_found_where_their_characters_peak():
    # "six" at frames 5-7, a space at 12, "two" at 20-22 of 30 frames (30 ms each)
    peaks = {5: "s", 6: "i", 7: "x", 12: " ", 20: "t", 21: "w", 22: "o"}
    spans = align_words(Emitter(emission_for(peaks, 30)), torch.zeros(14400), "six two")
    assert [s.word for s in spans] == ["six", "two"]
    assert spans[0].start == pytest.approx(5 * 0.03) and spans[0].end == pytest.approx(8 * 0.03)
    assert spans[1].start == pytest.approx(20 * 0.03) and spans[1].end == pytest.approx(23 * 0.03)
    assert all(-0.1 < s.score <= 0 for s in spans)  # the path goes through the peaks: near certain


def test_an_unlikely_transcript_scores_low():
    peaks = {5: "s", 6: "i", 7: "x", 12: " ", 20: "t", 21: "w", 22: "o"}
    wrong = align_words(Emitter(emission_for(peaks, 30)), torch.zeros(14400), "ten one")
    assert all(s.score < -2 for s in wrong)


def test_cuts_widen_spans_but_stop_half_way_to_the_next_word():
    spans = [WordSpan("six", 0.50, 0.60, 0.0), WordSpan("two", 0.70, 0.90, 0.0), WordSpan("one", 1.5, 1.6, 0.0)]
    cuts = cut_points(spans, duration=1.7, pad=0.15)
    assert cuts[0] == pytest.approx((0.35, 0.65))  # the pad before; the gap's midpoint after
    assert cuts[1] == pytest.approx((0.65, 1.05))
    assert cuts[2] == pytest.approx((1.35, 1.7))  # never past the end of the audio


def test_too_few_frames_for_the_text_is_a_clear_error():
    with pytest.raises(AsrError, match="too few"):
        align_words(Emitter(emission_for({}, 4)), torch.zeros(1920), "seven eight")


def test_a_subword_model_cannot_align_words():
    model = Emitter(emission_for({}, 10))
    model.tokenizer.symbols = [s for s in model.tokenizer.symbols if s != " "]
    with pytest.raises(AsrError, match="character model"):
        align_words(model, torch.zeros(4800), "one")
