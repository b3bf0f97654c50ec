import math

import pytest
import torch

from asr.decoding import DecodingOptions, GreedyDecoder, make_decoder
from asr.text import CharTokenizer

TOK = CharTokenizer()


def log_probs_for(frames: str, tok=TOK, p=0.9) -> torch.Tensor:
    """One frame per character of ``frames``; '_' is the blank."""
    n = tok.vocab_size
    out = torch.full((len(frames), n), math.log((1 - p) / (n - 1)))
    for t, ch in enumerate(frames):
        out[t, 0 if ch == "_" else tok.symbols.index(ch)] = math.log(p)
    return out


def test_greedy_collapses_repeats_and_removes_blanks():
    lp = log_probs_for("hh_e_ll_llo__  _wo_rr_ld")
    hyp = GreedyDecoder(TOK, frame_shift=0.03).decode(lp[None], torch.tensor([lp.shape[0]]))[0]
    assert hyp.text == "hello world"
    assert [w.word for w in hyp.words] == ["hello", "world"]


def test_greedy_word_times_from_frames():
    lp = log_probs_for("__hi__ _yo_")
    hyp = GreedyDecoder(TOK, frame_shift=0.04).decode(lp[None], torch.tensor([lp.shape[0]]))[0]
    hi, yo = hyp.words
    assert hi.start == pytest.approx(2 * 0.04) and hi.end == pytest.approx(4 * 0.04)
    assert yo.start == pytest.approx(8 * 0.04) and yo.end == pytest.approx(10 * 0.04)
    assert 0.85 < hi.confidence <= 0.91


def test_greedy_respects_lengths_in_a_batch():
    a, b = log_probs_for("a_b"), log_probs_for("cc_")
    batch = torch.stack([a, b])
    hyps = GreedyDecoder(TOK, 0.01).decode(batch, torch.tensor([3, 2]))
    assert [h.text for h in hyps] == ["ab", "c"]


def test_make_decoder_rejects_unknown():
    with pytest.raises(ValueError, match="unknown decoder"):
        make_decoder(DecodingOptions(decoder="nope"), TOK, 0.01)
