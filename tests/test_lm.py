import os

import pytest

from asr.errors import AsrError
from asr.lm import build_lm, find_kenlm_binary, kenlm_programs_built, load_unigrams

TEXT = """\
The cat sat on the mat.
The dog sat on the log!
A cat and a dog sat on the mat, 2 times.
The cat sat on the mat.
"""


needs_kenlm = pytest.mark.skipif(
    not kenlm_programs_built(), reason="KenLM programs not built: run bash tools/build_kenlm.sh"
)


@pytest.fixture
def built(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    return build_lm(text, tmp_path / "lm", order=3, memory="50M")


@needs_kenlm
def test_arpa_header_has_counts_up_to_the_order(built):
    lines = built.arpa.read_text().splitlines()
    assert lines[lines.index("\\data\\") + 1].startswith("ngram 1=")
    counts = {int(line[6:].split("=")[0]): int(line.split("=")[1]) for line in lines if line.startswith("ngram ")}
    assert sorted(counts) == [1, 2, 3]
    # the 11 words of the normalised text plus <s>, </s> and <unk>
    assert counts[1] == 14


@needs_kenlm
def test_binary_loads_and_prefers_a_seen_sentence(built):
    kenlm = pytest.importorskip("kenlm")
    model = kenlm.Model(str(built.binary))
    assert model.order == 3
    seen = model.score("the cat sat on the mat", bos=True, eos=True)
    scrambled = model.score("mat the on sat cat the", bos=True, eos=True)
    assert seen > scrambled


@needs_kenlm
def test_unigrams_hold_the_normalised_vocabulary_by_frequency(built):
    words = load_unigrams(built.unigrams)
    assert set(words) == {"the", "cat", "sat", "on", "mat", "dog", "log", "a", "and", "two", "times"}
    assert words[0] == "the"
    assert len(words) == len(set(words))
    corpus = (built.arpa.parent / "corpus.txt").read_text().splitlines()
    assert corpus[2] == "a cat and a dog sat on the mat two times"


@needs_kenlm
def test_build_is_restartable(built, tmp_path):
    stamps = {p: p.stat().st_mtime_ns for p in (built.arpa, built.binary, built.unigrams)}
    again = build_lm(tmp_path / "text.txt", tmp_path / "lm", order=3, memory="50M")
    assert again == built
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # a new order rebuilds the model
    four = build_lm(tmp_path / "text.txt", tmp_path / "lm", order=4, memory="50M")
    assert "ngram 4=" in four.arpa.read_text()


@needs_kenlm
def test_kenlm_failure_is_one_line(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    with pytest.raises(AsrError) as info:
        build_lm(text, tmp_path / "lm", order=3, prune="0 1 0", memory="50M")
    assert "lmplz failed" in str(info.value)
    assert "\n" not in str(info.value)


def test_empty_text_is_an_error(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("... !!!\n\n")
    with pytest.raises(AsrError, match="no words"):
        build_lm(text, tmp_path / "lm")


def test_missing_programs_say_how_to_build_them(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("ASR_KENLM_DIR", str(empty))
    monkeypatch.setenv("HOME", str(empty))
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(AsrError) as info:
        find_kenlm_binary("lmplz")
    message = str(info.value)
    assert "bash tools/build_kenlm.sh" in message
    assert "\n" not in message


def test_programs_are_found_in_the_cache_dir(tmp_path, monkeypatch):
    bin_dir = tmp_path / "kenlm" / "bin"
    bin_dir.mkdir(parents=True)
    program = bin_dir / "lmplz"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    monkeypatch.setenv("ASR_KENLM_DIR", str(tmp_path / "kenlm"))
    monkeypatch.setenv("PATH", os.defpath)
    assert find_kenlm_binary("lmplz") == program
