"""Beam search on hand-built log-prob tensors: without an LM, with a tiny KenLM model,
hotwords, n-best lists, word times and confidences, sentencepiece labels, worker pools."""

import math

import pytest
import torch

from asr.decoding import BeamSearchDecoder, DecodingOptions, GreedyDecoder, make_decoder
from asr.errors import AsrError
from asr.lm import build_lm, kenlm_programs_built
from asr.text import CharTokenizer, SentencePieceTokenizer

TOK = CharTokenizer()
SHIFT = 0.03


needs_kenlm = pytest.mark.skipif(not kenlm_programs_built(),
                                 reason="KenLM programs not built: run bash tools/build_kenlm.sh")


def frames(*columns, tok=TOK) -> torch.Tensor:
    """Log-probs from one column per frame: a symbol ('_' is blank) or a dict {symbol: probability};
    the probability left over is spread over the other classes."""
    n = tok.vocab_size
    index = {"_": 0, **{label: i for i, label in enumerate(tok.labels) if label}}
    out = torch.empty(len(columns), n)
    for t, column in enumerate(columns):
        probs = {column: 0.9} if isinstance(column, str) else column
        rest = (1 - sum(probs.values())) / (n - len(probs))
        out[t] = math.log(rest)
        for symbol, p in probs.items():
            out[t, index[symbol]] = math.log(p)
    return out


def spell(text: str) -> list[str]:
    """Peaky frames for ``text``: each character once, a blank after each (so doubles survive)."""
    return [c for ch in text for c in (ch, "_")]


def decode(decoder, lp: torch.Tensor):
    return decoder.decode(lp[None], torch.tensor([lp.shape[0]]))[0]


def beam(**options) -> BeamSearchDecoder:
    return make_decoder(DecodingOptions(decoder="beam", **options), TOK, SHIFT)


# "the ?at" where the first letter of the second word is k (0.5) or c (0.4)
AMBIGUOUS = frames(*spell("the "), {"k": 0.5, "c": 0.4}, "_", *spell("at"))


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    if not kenlm_programs_built():
        pytest.skip("KenLM programs not built: run bash tools/build_kenlm.sh")
    folder = tmp_path_factory.mktemp("lm")
    text = folder / "text.txt"
    text.write_text("the cat sat on the mat\nthe cat ate\na cat and a hat\nthe hat sat on the cat\n")
    return build_lm(text, folder / "lm", order=3, memory="50M")


def test_beam_without_lm_agrees_with_greedy_on_a_peaky_input():
    lp = frames(*"hh_e_ll_llo__  _wo_rr_ld")
    greedy = decode(GreedyDecoder(TOK, SHIFT), lp)
    with beam() as decoder:
        hyp = decode(decoder, lp)
    assert hyp.text == greedy.text == "hello world"
    assert [(w.word, round(w.start, 6), round(w.end, 6)) for w in hyp.words] == \
        [(w.word, round(w.start, 6), round(w.end, 6)) for w in greedy.words]


def test_beam_finds_the_likelier_labelling_where_greedy_is_wrong():
    # Per frame: blank 0.4, "a" 0.35. Greedy takes blank twice: "" (p = 0.16).
    # "a" sums three paths: a a, a _, _ a: 0.35^2 + 2 * 0.35 * 0.4 = 0.4025.
    lp = frames({"_": 0.4, "a": 0.35}, {"_": 0.4, "a": 0.35})
    assert decode(GreedyDecoder(TOK, SHIFT), lp).text == ""
    with beam() as decoder:
        hyp = decode(decoder, lp)
    assert hyp.text == "a"
    # the three paths, plus a little from "a" next to a space, which also reads "a"
    assert math.log(0.4025) <= hyp.score < math.log(0.42)


# "c?t": the middle frame says blank (0.5) a little more than "a" (0.45)
UNSURE = frames("c", "_", {"_": 0.5, "a": 0.45}, "_", "t")


def test_blank_penalty_turns_a_near_deletion_into_the_letter():
    assert decode(GreedyDecoder(TOK, SHIFT), UNSURE).text == "ct"
    assert decode(GreedyDecoder(TOK, SHIFT, blank_penalty=0.5), UNSURE).text == "cat"
    assert decode(make_decoder(DecodingOptions(blank_penalty=0.5), TOK, SHIFT), UNSURE).text == "cat"
    with beam() as decoder:
        assert decode(decoder, UNSURE).text == "ct"
        plain = decode(decoder, UNSURE).score
        decoder.set_weights(alpha=0.5, beta=1.0, blank_penalty=0.5)
        assert decoder.options.blank_penalty == 0.5
        hyp = decode(decoder, UNSURE)
        assert hyp.text == "cat" and hyp.score < plain  # the penalty is part of the score
        decoder.set_weights(alpha=0.5, beta=1.0)  # a penalty not given is kept
        assert decoder.options.blank_penalty == 0.5
    # a confident blank stays a blank
    assert decode(GreedyDecoder(TOK, SHIFT, blank_penalty=0.5), frames(*spell("cat"))).text == "cat"
    # the caller's tensor is left alone
    before = UNSURE.clone()
    decode(GreedyDecoder(TOK, SHIFT, blank_penalty=2.0), UNSURE)
    assert torch.equal(UNSURE, before)


@needs_kenlm
def test_lm_moves_the_output_to_an_in_vocabulary_word(tiny_lm):
    assert decode(GreedyDecoder(TOK, SHIFT), AMBIGUOUS).text == "the kat"
    with beam() as decoder:
        assert decode(decoder, AMBIGUOUS).text == "the kat"
    for path in (tiny_lm.binary, tiny_lm.arpa):
        with beam(lm_path=str(path), alpha=0.5, beta=1.0) as decoder:
            assert decoder.has_lm
            assert decode(decoder, AMBIGUOUS).text == "the cat"


@needs_kenlm
def test_lm_weight_zero_leaves_the_acoustics_in_charge(tiny_lm):
    # "sat" and "mat" are both words; the acoustics say s (0.6) over m (0.3)
    lp = frames(*spell("the cat "), {"s": 0.6, "m": 0.3}, "_", *spell("at"))
    with beam(lm_path=str(tiny_lm.binary), alpha=0.0, beta=0.0) as decoder:
        assert decode(decoder, lp).text == "the cat sat"
        decoder.set_weights(alpha=0.5, beta=1.0)
        assert decoder.options.alpha == 0.5
        assert decode(decoder, lp).text == "the cat sat"  # "the cat sat" is also the likelier sentence


def test_hotwords_pull_the_output_towards_them():
    lp = frames(*spell("the "), {"c": 0.5, "k": 0.4}, "_", *spell("at"))
    with beam() as decoder:
        assert decode(decoder, lp).text == "the cat"
    with beam(hotwords=("kat",), hotword_weight=5.0) as decoder:
        assert decode(decoder, lp).text == "the kat"
    with beam(hotwords=("kat",), hotword_weight=0.0) as decoder:
        assert decode(decoder, lp).text == "the cat"


def test_nbest_gives_distinct_alternatives():
    lp = frames(*spell("the "), {"k": 0.5, "c": 0.3, "h": 0.15}, "_", *spell("at"))
    with beam(nbest=3) as decoder:
        hyp = decode(decoder, lp)
    assert hyp.text == "the kat"
    assert hyp.alternatives[:2] == ["the cat", "the hat"]
    assert len(set(hyp.alternatives + [hyp.text])) == len(hyp.alternatives) + 1
    with beam(nbest=1) as decoder:
        assert decode(decoder, lp).alternatives == []


def test_word_times_and_confidences():
    with beam() as decoder:
        hyp = decode(decoder, AMBIGUOUS)
    the, kat = hyp.words
    assert (the.word, kat.word) == ("the", "kat")
    # "the" spans frames 0-4 (t _ h _ e: the last token ends at frame 5), "kat" frames 8-12
    assert the.start == pytest.approx(0.0) and the.end == pytest.approx(5 * SHIFT)
    assert kat.start == pytest.approx(8 * SHIFT) and kat.end == pytest.approx(13 * SHIFT)
    assert the.confidence == pytest.approx(1.0, abs=1e-3)  # every beam agrees on "the"
    # kat against cat: 0.5 / (0.5 + 0.4) of the mass, less what the other letters take
    assert 0.45 < kat.confidence < 0.6
    assert all(0.0 < w.confidence <= 1.0 for w in hyp.words)


def test_a_batch_respects_lengths_and_a_pool_gives_the_same_answers():
    a, b, c = frames(*spell("cat")), frames(*spell("ab")), AMBIGUOUS
    lengths = torch.tensor([len(a), len(b), len(c), 0])
    batch = torch.zeros(4, max(lengths), TOK.vocab_size)
    for i, x in enumerate((a, b, c)):
        batch[i, : len(x)] = x
    with beam() as decoder:
        serial = decoder.decode(batch, lengths)
    with beam(processes=2) as decoder:
        parallel = decoder.decode(batch, lengths)
        pool = decoder._resources["pool"]
        again = decoder.decode(batch, lengths)
        assert decoder._resources["pool"] is pool  # created once, reused
    assert [h.text for h in serial] == ["cat", "ab", "the kat", ""]
    assert parallel == serial == again
    assert "pool" not in decoder._resources
    with pytest.raises(AsrError, match="closed"):
        decoder.decode(batch, lengths)


SENTENCES = ["the cat sat on the mat", "a cat and a hat", "the hat sat on the cat", "that cat ate the rat",
             "the mat is on the hat", "cats and rats sat on mats", "a hat for the cat", "the rat ate a hat"] * 3


def piece_frames(tok, *columns) -> torch.Tensor:
    """Frames from pieces (or {piece: probability}), a blank after each."""
    return frames(*[c for column in columns for c in (column, "_")], tok=tok)


def test_sentencepiece_labels():
    tok = SentencePieceTokenizer.train(SENTENCES, vocab_size=20)
    ids = tok.encode("the cat sat")
    assert tok.labels[ids[-3]] == "\u2581"  # a lone word-start piece: "sat" is "\u2581" "s" "at"
    lp = piece_frames(tok, *[tok.labels[i] for i in ids])
    greedy = decode(GreedyDecoder(tok, SHIFT), lp)
    with make_decoder(DecodingOptions(decoder="beam", nbest=2), tok, SHIFT) as decoder:
        hyp = decode(decoder, lp)
    assert hyp.text == greedy.text == "the cat sat"
    assert [w.word for w in hyp.words] == ["the", "cat", "sat"]
    assert all(a.start < a.end <= b.start for a, b in zip(hyp.words, hyp.words[1:]))


def test_sentencepiece_lone_word_start_piece_does_not_split_other_words():
    # every class is a candidate in every frame (p >= e^-5), the lone "\u2581" included
    tok = SentencePieceTokenizer.train(SENTENCES, vocab_size=20)
    ids = tok.encode("that cat ate the hat")
    lp = frames(*[c for i in ids for c in ({tok.labels[i]: 0.75}, {"_": 0.75})], tok=tok)
    assert decode(GreedyDecoder(tok, SHIFT), lp).text == "that cat ate the hat"
    with make_decoder(DecodingOptions(decoder="beam", beam_width=16), tok, SHIFT) as decoder:
        assert decode(decoder, lp).text == "that cat ate the hat"


@needs_kenlm
def test_sentencepiece_labels_with_an_lm(tiny_lm):
    tok = SentencePieceTokenizer.train(SENTENCES, vocab_size=28, model_type="bpe")
    assert {"\u2581the", "\u2581r", "\u2581c", "at"} <= set(tok.labels)
    lp = piece_frames(tok, "\u2581the", {"\u2581r": 0.5, "\u2581c": 0.4}, "at")
    with make_decoder(DecodingOptions(decoder="beam"), tok, SHIFT) as decoder:
        assert decode(decoder, lp).text == "the rat"
    with make_decoder(DecodingOptions(decoder="beam", lm_path=str(tiny_lm.binary)), tok, SHIFT) as decoder:
        assert decode(decoder, lp).text == "the cat"  # "rat" is not in the LM's text


@needs_kenlm
def test_unigrams_come_from_beside_the_lm_or_the_options(tiny_lm, tmp_path):
    lonely = tmp_path / "lm.bin"
    lonely.write_bytes(tiny_lm.binary.read_bytes())
    with pytest.raises(AsrError, match="unigrams.txt"):
        beam(lm_path=str(lonely))
    with beam(lm_path=str(lonely), unigrams_path=str(tiny_lm.unigrams)) as decoder:
        assert decode(decoder, AMBIGUOUS).text == "the cat"


def test_bad_options_and_files_are_one_line_errors(tmp_path):
    with pytest.raises(AsrError, match="not found"):
        beam(lm_path=str(tmp_path / "missing.bin"))
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"not a language model")
    (tmp_path / "unigrams.txt").write_text("cat\n")
    with pytest.raises(AsrError, match="cannot load"):
        beam(lm_path=str(bad))
    with pytest.raises(AsrError, match="beam width"):
        beam(beam_width=0)


def test_options_round_trip_through_plain_data():
    from asr.config import from_dict, to_dict

    options = DecodingOptions(decoder="beam", alpha=0.7, blank_penalty=1.5, hotwords=("kat",), lm_path="/x/lm.bin")
    data = to_dict(options)
    assert data["hotwords"] == ["kat"]
    assert from_dict(DecodingOptions, data) == options
    with pytest.raises(AsrError, match="unknown key 'from_the_future'"):
        from_dict(DecodingOptions, {**data, "from_the_future": 1})
    with pytest.raises(AsrError, match="alpha: expected a number"):
        from_dict(DecodingOptions, {**data, "alpha": "0.7"})
