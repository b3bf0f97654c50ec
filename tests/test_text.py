import pytest

from asr.text import BLANK, CharTokenizer, SentencePieceTokenizer, normalize_text, number_to_words, tokenizer_from_dict


@pytest.mark.parametrize("raw, expected", [
    ("Hello, World!", "hello world"),
    ("  many   spaces\tand\nlines ", "many spaces and lines"),
    ("It's the dog's bone.", "it's the dog's bone"),
    ("'quoted' words", "quoted words"),
    ("rock 'n' roll", "rock n roll"),
    ("forty-two line Bible", "forty two line bible"),
    ("Caf\u00e9 na\u00efve", "cafe naive"),
    ("It\u2019s", "it's"),
    ("in 1455, 3 men", "in one thousand four hundred fifty five three men"),
    ("1,000 people", "one thousand people"),
    ("MR. SMITH; (aside)", "mr smith aside"),
    ("", ""),
    ("!!!", ""),
])
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected


def test_number_to_words():
    assert number_to_words(0) == "zero"
    assert number_to_words(19) == "nineteen"
    assert number_to_words(40) == "forty"
    assert number_to_words(101) == "one hundred one"
    assert number_to_words(2_000_003) == "two million three"


def test_char_tokenizer_round_trip():
    tok = CharTokenizer()
    assert tok.vocab_size == 29 and tok.blank == BLANK == 0
    ids = tok.encode("Don't stop")
    assert BLANK not in ids
    assert tok.decode(ids) == "don't stop"
    assert tok.labels[0] == "" and tok.labels[1] == " "
    assert isinstance(tokenizer_from_dict(tok.to_dict()), CharTokenizer)


def test_sentencepiece_tokenizer_round_trip():
    sentences = ["the cat sat on the mat", "a dog ran in the park", "the bird sang a song"] * 30
    tok = SentencePieceTokenizer.train(sentences, vocab_size=20)
    ids = tok.encode("the cat ran")
    assert BLANK not in ids and tok.decode(ids) == "the cat ran"
    again = tokenizer_from_dict(tok.to_dict())
    assert again.encode("the cat ran") == ids and again.vocab_size == tok.vocab_size
