"""Text: the normaliser shared by training targets and scoring, and tokenizers.

Every tokenizer has the same small interface:

* ``blank`` - the CTC blank index (defined here, once: index 0),
* ``vocab_size`` - number of output classes, blank included,
* ``encode(text) -> list[int]`` and ``decode(ids) -> str``,
* ``labels`` - one string per class, as pyctcdecode wants them,
* ``to_dict()`` - plain data stored inside checkpoints; ``tokenizer_from_dict``
  rebuilds the tokenizer from it.
"""

from __future__ import annotations

import re
import unicodedata

BLANK = 0

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))


def number_to_words(n: int) -> str:
    """Spell a non-negative integer in English words: 1455 -> 'one thousand four hundred fifty five'."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    for value, name in _SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            words = number_to_words(head) + " " + name
            return words if rest == 0 else words + " " + number_to_words(rest)
    raise AssertionError("unreachable")


def _spoken(digits: str) -> str:
    """A run of digits as words: a number up to 15 digits, digit by digit beyond (a serial number)."""
    if len(digits) > 15:
        return " ".join(_ONES[int(d)] for d in digits)
    return number_to_words(int(digits))


def normalize_text(text: str) -> str:
    """Normalise text for CTC targets and for scoring.

    Lower case, letters a-z, apostrophes inside words, single spaces. Digits are
    spelled out, accents are stripped, hyphens and other punctuation become spaces.
    """
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = text.lower()
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # 1,000 -> 1000
    text = re.sub(r"\d+", lambda m: " " + _spoken(m.group()) + " ", text)
    text = re.sub(r"[^a-z']+", " ", text)
    text = re.sub(r"(?<![a-z])'+|'+(?![a-z])", " ", text)  # quotes, not apostrophes
    return " ".join(text.split())


class CharTokenizer:
    """Characters: blank, space, apostrophe and a-z (29 classes)."""

    kind = "char"

    def __init__(self) -> None:
        self.symbols = ["<blank>", " ", "'"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
        self._index = {s: i for i, s in enumerate(self.symbols)}
        self.blank = BLANK

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    @property
    def labels(self) -> list[str]:
        return [""] + self.symbols[1:]

    def encode(self, text: str) -> list[int]:
        return [self._index[c] for c in normalize_text(text)]

    def decode(self, ids) -> str:
        return "".join(self.symbols[i] for i in ids if i != self.blank).strip()

    def to_dict(self) -> dict:
        return {"kind": self.kind}


class SentencePieceTokenizer:
    """Subword units from a sentencepiece model; the model's bytes travel with it.

    Class 0 is the CTC blank; sentencepiece piece ``i`` is class ``i + 1``. The
    sentencepiece model must be trained without <unk>/<s>/</s> being emitted in
    normal text (``tools`` and the recipes train it that way).
    """

    kind = "sentencepiece"

    def __init__(self, model_bytes: bytes) -> None:
        from asr.errors import require

        spm = require("sentencepiece", "pip install sentencepiece")
        self.model_bytes = bytes(model_bytes)
        self.sp = spm.SentencePieceProcessor(model_proto=self.model_bytes)
        self.blank = BLANK

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size() + 1

    @property
    def labels(self) -> list[str]:
        # pyctcdecode understands the "▁" word-boundary marker of sentencepiece.
        return [""] + [self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())]

    def encode(self, text: str) -> list[int]:
        return [i + 1 for i in self.sp.encode(normalize_text(text))]

    def decode(self, ids) -> str:
        return self.sp.decode([int(i) - 1 for i in ids if i != self.blank]).strip()

    def to_dict(self) -> dict:
        import torch

        return {"kind": self.kind, "model": torch.frombuffer(bytearray(self.model_bytes), dtype=torch.uint8)}

    @classmethod
    def train(cls, sentences, vocab_size: int, model_type: str = "unigram") -> "SentencePieceTokenizer":
        """Train a sentencepiece model on normalised sentences, in memory."""
        import io

        from asr.errors import require

        spm = require("sentencepiece", "pip install sentencepiece")
        buffer = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter([normalize_text(s) for s in sentences if normalize_text(s)]),
            model_writer=buffer,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=1.0,
            unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
            minloglevel=2,
        )
        return cls(buffer.getvalue())


Tokenizer = CharTokenizer | SentencePieceTokenizer


def tokenizer_from_dict(data: dict) -> Tokenizer:
    """Rebuild a tokenizer from what ``to_dict`` stored in a checkpoint."""
    kind = data.get("kind")
    if kind == "char":
        return CharTokenizer()
    if kind == "sentencepiece":
        model = data["model"]
        return SentencePieceTokenizer(bytes(model.numpy().tobytes()) if hasattr(model, "numpy") else model)
    raise ValueError(f"unknown tokenizer kind {kind!r}")
