import pytest

from asr.errors import AsrError
from asr.scoring import read_kaldi_text, score, write_details


def test_corpus_level_rates_sum_errors():
    refs = {"a": "one two three four", "b": "five"}
    hyps = {"a": "one two three four", "b": "six"}
    s = score(refs, hyps)
    # corpus level: 1 error over 5 words = 0.2 (a mean of per-utterance rates would be 0.5)
    assert s.wer.rate == pytest.approx(0.2)
    assert (s.wer.substitutions, s.wer.deletions, s.wer.insertions) == (1, 0, 0)
    assert s.cer.reference_length == len("one two three four") + len("five")


def test_scoring_normalises_both_sides():
    assert score({"a": "Hello, World!"}, {"a": "hello world"}).wer.rate == 0.0


def test_mismatched_ids_are_a_clear_error():
    with pytest.raises(AsrError, match="missing from the hypotheses.*first: b"):
        score({"a": "x", "b": "y"}, {"a": "x"})
    with pytest.raises(AsrError, match="not in the references"):
        score({"a": "x"}, {"a": "x", "z": "y"})


def test_kaldi_text_reading(tmp_path):
    p = tmp_path / "t"
    p.write_text("u1 hello world\nu2\n\nu3 x\n")
    assert read_kaldi_text(p) == {"u1": "hello world", "u2": "", "u3": "x"}
    p.write_text("u1 a\nu1 b\n")
    with pytest.raises(AsrError, match="duplicate"):
        read_kaldi_text(p)


def test_details_file(tmp_path):
    out = write_details({"a": "the cat sat", "b": "ok"}, {"a": "the hat sat down", "b": "ok"}, tmp_path / "errs.txt")
    text = out.read_text()
    assert text.index("a  errors=2") < text.index("b  errors=0")  # worst first
    assert "REF:" in text and "HYP:" in text
