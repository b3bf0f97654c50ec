"""Decoding CTC log-probs into text.

Decoders are small classes with one method,
``decode(log_probs (batch, frames, classes), lengths (batch,)) -> list[Hypothesis]``,
made by ``make_decoder(options, tokenizer, frame_shift)`` from a frozen
``DecodingOptions``; variants come from ``dataclasses.replace``. A decoder that
holds resources (worker processes) releases them in ``close()``; every decoder
is also a context manager.

* ``GreedyDecoder``: the best class per frame, repeats collapsed, blanks removed.
* ``BeamSearchDecoder``: CTC prefix beam search (pyctcdecode), with or without
  a KenLM word n-gram model, hotwords and an n-best list.

Both take ``blank_penalty``: a number subtracted from the blank's log-probability
in every frame before decoding. A CTC model that is unsure between a letter and
blank says blank, so its errors lean to deletions; the penalty evens them out.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import multiprocessing
import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from asr.errors import AsrError

INSTALL_BEAM = "pip install pyctcdecode kenlm"


@dataclass(frozen=True)
class DecodingOptions:
    decoder: str = "greedy"  # "greedy" or "beam"
    beam_width: int = 32
    lm_path: str | None = None  # KenLM .arpa or binary, for "beam"
    unigrams_path: str | None = None  # one word per line; read next to the LM when absent
    alpha: float = 0.5  # LM weight
    beta: float = 1.0  # word insertion bonus
    blank_penalty: float = 0.0  # subtracted from the blank's log-prob in every frame (fewer deletions)
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


def penalise_blank(log_probs: torch.Tensor, blank: int, penalty: float) -> torch.Tensor:
    """``log_probs`` (batch, frames, classes) as float32, with ``penalty`` taken off the blank's column."""
    log_probs = log_probs.detach().float()
    if penalty:
        log_probs = log_probs.clone()
        log_probs[..., blank] -= penalty
    return log_probs


class GreedyDecoder:
    """Best class per frame, repeats collapsed, blanks removed."""

    def __init__(self, tokenizer, frame_shift: float, blank_penalty: float = 0.0) -> None:
        self.tokenizer = tokenizer
        self.frame_shift = frame_shift
        self.blank_penalty = float(blank_penalty)
        self.info = _word_boundaries(tokenizer.labels)

    def decode(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[Hypothesis]:
        """log_probs: (batch, frames, classes), lengths: (batch,) -> one hypothesis per utterance."""
        best, best_ids = penalise_blank(log_probs, self.tokenizer.blank, self.blank_penalty).max(dim=-1)
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

    def close(self) -> None:
        """Nothing to release; here for the common decoder interface."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------- beam search

def _beam_search(ctc, settings: dict, logits) -> list[tuple]:
    """Beams for one utterance: (text, [(word, (first frame, end frame))], acoustic score, total score).

    Module level so that pool workers can run it: ``ctc`` (pyctcdecode's decoder)
    pickles as its alphabet and a key; the language model it names lives in a
    class-level table that a forked worker inherits. The LM weights are set on
    every call, so one pool serves every (alpha, beta) of a tuning grid.
    """
    if len(logits) == 0:
        return [("", [], 0.0, 0.0)]
    ctc.reset_params(alpha=float(settings["alpha"]), beta=float(settings["beta"]))
    beams = ctc.decode_beams(logits, beam_width=settings["beam_width"], hotwords=settings["hotwords"] or None,
                             hotword_weight=float(settings["hotword_weight"]))
    # drop the KenLM state: it cannot cross a process boundary
    return [(text, words, float(acoustic), float(total)) for text, _, words, acoustic, total in beams]


def _worker_init() -> None:
    """Pool workers leave Ctrl-C to the parent process."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _release(ctc, resources: dict) -> None:
    """Stop the worker pool and drop pyctcdecode's reference to the LM (also run at garbage collection)."""
    pool = resources.pop("pool", None)
    if pool is not None:
        pool.terminate()
        pool.join()
    ctc.cleanup()


class BeamSearchDecoder:
    """CTC prefix beam search with pyctcdecode, optionally fused with a KenLM word n-gram model.

    ``options.lm_path`` names a KenLM model (``.arpa`` or binary). Its vocabulary
    comes from ``options.unigrams_path``, else from ``unigrams.txt`` beside the
    model (``asr.lm.build_lm`` writes it), else, for an ``.arpa`` file, from the
    file itself. Without ``lm_path`` the search uses the acoustic scores alone
    (``alpha`` and ``beta`` then have no effect; hotwords still do). The
    tokenizer's ``labels`` may be characters (space separates words) or
    sentencepiece pieces (``\u2581`` starts a word).

    Each ``Hypothesis`` carries the best text, its total score (acoustic
    log-probability, after the blank penalty, plus ``alpha`` times the LM
    log-probability, ``beta`` per word and hotword bonuses), up to ``nbest - 1``
    distinct alternatives, and its words with times and confidences:

    * times: pyctcdecode's frame span of each word (first frame of its first
      token to the last frame of its last token, blanks excluded), times the
      model's frame shift;
    * confidence: the word's posterior probability over the final beams. The
      beams' total scores are turned into probabilities with a softmax, and a
      word's confidence is the summed probability of the beams that contain the
      same word at an overlapping time (the n-best approximation of the word
      posterior used for confidence estimation in large-vocabulary systems).
      It is 1 when no surviving competitor disagrees, and always at least the
      best beam's own probability. With ``beam_width=1`` it is always 1.

    A batch of more than one utterance is decoded in ``options.processes``
    worker processes (a pool forked once, on first use, and kept until
    ``close()``); with ``processes=0`` everything runs in this process.
    """

    def __init__(self, options: DecodingOptions, tokenizer, frame_shift: float) -> None:
        from asr.errors import require

        if options.beam_width < 1:
            raise AsrError(f"beam width must be at least 1, got {options.beam_width}")
        if options.nbest < 1:
            raise AsrError(f"nbest must be at least 1, got {options.nbest}")
        if options.processes < 0:
            raise AsrError(f"processes must be 0 or more, got {options.processes}")
        if options.lm_path:
            require("kenlm", "pip install 'asr[lm]' (or kenlm): beam search with a language model needs it")
        with _quiet("pyctcdecode"):  # without kenlm it logs a warning at import, even when no LM is wanted
            pyctcdecode = require("pyctcdecode", INSTALL_BEAM)
        self.options = options
        self.tokenizer = tokenizer
        self.frame_shift = frame_shift
        lm_path, unigrams = None, None
        if options.lm_path:
            lm_path = Path(options.lm_path)
            if not lm_path.is_file():
                raise AsrError(f"language model not found: {lm_path}")
            unigrams = _unigrams_for(lm_path, options.unigrams_path)
        with _quiet("pyctcdecode"):
            try:
                self._ctc = pyctcdecode.build_ctcdecoder(
                    _search_labels(tokenizer.labels), None if lm_path is None else str(lm_path), unigrams,
                    alpha=float(options.alpha), beta=float(options.beta))
            except (OSError, RuntimeError) as exc:  # kenlm's error for a file it cannot read
                raise AsrError(f"cannot load the language model {lm_path}: {exc}") from None
            except ValueError as exc:
                raise AsrError(f"these labels do not suit beam search: {exc}") from None
        self.has_lm = lm_path is not None
        self._resources: dict = {}
        self._finalizer = weakref.finalize(self, _release, self._ctc, self._resources)

    # ----------------------------------------------------------------- interface

    def decode(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[Hypothesis]:
        """log_probs: (batch, frames, classes), lengths: (batch,) -> one hypothesis per utterance."""
        if not self._finalizer.alive:
            raise AsrError("this decoder has been closed")
        log_probs = penalise_blank(log_probs, self.tokenizer.blank, self.options.blank_penalty).cpu()
        arrays = [log_probs[b, : int(n)].numpy() for b, n in enumerate(lengths.tolist())]
        search = functools.partial(_beam_search, self._ctc, self._settings())
        pool = self._pool() if len(arrays) > 1 else None
        results = pool.map(search, arrays) if pool is not None else [search(a) for a in arrays]
        return [self._hypothesis(beams) for beams in results]

    def set_weights(self, alpha: float, beta: float, blank_penalty: float | None = None) -> None:
        """Change the LM weight, word bonus (and blank penalty) without reloading the LM (for tuning them)."""
        penalty = self.options.blank_penalty if blank_penalty is None else float(blank_penalty)
        self.options = replace(self.options, alpha=float(alpha), beta=float(beta), blank_penalty=penalty)

    def close(self) -> None:
        """Stop the worker processes (cleanly) and release the LM."""
        pool = self._resources.pop("pool", None)
        if pool is not None:
            pool.close()
            pool.join()
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----------------------------------------------------------------- internals

    def _settings(self) -> dict:
        o = self.options
        return {"beam_width": o.beam_width, "alpha": o.alpha, "beta": o.beta,
                "hotwords": [w for w in o.hotwords if w.strip()], "hotword_weight": o.hotword_weight}

    def _pool(self):
        """The worker pool, forked on first use (after the LM is loaded, so workers share it)."""
        if self.options.processes < 2 or "fork" not in multiprocessing.get_all_start_methods():
            return None  # pyctcdecode's workers find the LM through fork only
        if "pool" not in self._resources:
            context = multiprocessing.get_context("fork")
            self._resources["pool"] = context.Pool(self.options.processes, _worker_init)
        return self._resources["pool"]

    def _hypothesis(self, beams: list[tuple]) -> Hypothesis:
        totals = [b[3] for b in beams]
        top = max(totals)
        weights = [math.exp(t - top) for t in totals]
        norm = sum(weights)
        posteriors = [w / norm for w in weights]
        # per beam: word -> its frame spans, for the overlap test
        spans = []
        for _, words, _, _ in beams:
            table: dict[str, list[tuple[int, int]]] = {}
            for word, frames in words:
                table.setdefault(word, []).append(frames)
            spans.append(table)
        text, best_words, _, total = beams[0]
        words = []
        for word, (start, end) in best_words:
            confidence = sum(p for p, table in zip(posteriors, spans)
                             if any(s < max(end, start + 1) and start < max(e, s + 1) for s, e in table.get(word, ())))
            words.append(Word(word, start * self.frame_shift, end * self.frame_shift, min(1.0, confidence)))
        alternatives = []
        for other, *_ in beams[1:]:
            if len(alternatives) >= self.options.nbest - 1:
                break
            if other != text and other not in alternatives:
                alternatives.append(other)
        return Hypothesis(text, words, total, alternatives)


class _WordStart(str):
    """The lone word-start piece "\u2581" of a sentencepiece vocabulary, as pyctcdecode should read it.

    A lone "\u2581" starts a word whose letters come in the next pieces ("\u2581" "s"
    "at" is "sat"). pyctcdecode 0.5 also reads any piece that *ends* in "\u2581" as
    ending a word, and remembers that in one flag shared by all beams, so the
    next candidate token of whichever beam comes next is forced to start a new
    word: "window" came out as "wind ow". This label looks like "\u2581" in every
    way except that its last character reads as empty, so it starts a word and
    sets no flag.
    """

    __slots__ = ()

    def __getitem__(self, key):
        if key == slice(-1, None):
            return ""
        return str.__getitem__(self, key)


def _search_labels(labels: list[str]) -> list[str]:
    """The tokenizer's labels as given to pyctcdecode."""
    out = []
    for label in labels:
        if label == "\u2581":
            label = _WordStart(label)
        elif label == "<unk>" and any(other.startswith("\u2581") for other in labels):
            label = "\u2581\u2047"  # "<unk>" would become "\u2581\u2047\u2581", which ends in "\u2581" too
        out.append(label)
    return out


def _unigrams_for(lm_path: Path, unigrams_path: str | None) -> list[str] | None:
    from asr.lm import load_unigrams

    if unigrams_path:
        return load_unigrams(unigrams_path)
    beside = lm_path.parent / "unigrams.txt"
    if beside.is_file():
        return load_unigrams(beside)
    if lm_path.suffix == ".arpa":
        return None  # pyctcdecode reads them from the ARPA file
    raise AsrError(f"no word list for the language model {lm_path}: put unigrams.txt beside it "
                   "(python -m asr.lm writes one) or give DecodingOptions.unigrams_path")


@contextlib.contextmanager
def _quiet(name: str):
    """Raise a logger's level to ERROR for a while (pyctcdecode logs its guesses about the labels)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        logger.setLevel(level)


def make_decoder(options: DecodingOptions, tokenizer, frame_shift: float):
    """The one place where a decoder is chosen."""
    if options.decoder == "greedy":
        return GreedyDecoder(tokenizer, frame_shift, options.blank_penalty)
    if options.decoder == "beam":
        return BeamSearchDecoder(options, tokenizer, frame_shift)
    raise ValueError(f"unknown decoder {options.decoder!r}; choose greedy or beam")
