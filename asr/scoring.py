"""Scoring: corpus-level WER and CER through jiwer, and per-utterance alignments.

Errors are summed over all utterances and divided by the total reference
length (not a mean of per-utterance rates). Both sides go through the same
``normalize_text`` as the training targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jiwer

from asr.errors import AsrError
from asr.text import normalize_text


@dataclass
class ErrorCounts:
    rate: float  # (S + D + I) / N
    substitutions: int
    deletions: int
    insertions: int
    reference_length: int  # N: words (WER) or characters (CER)

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions


@dataclass
class Scores:
    wer: ErrorCounts
    cer: ErrorCounts
    utterances: int


def _counts(output, unit_count: int) -> ErrorCounts:
    errors = output.substitutions + output.deletions + output.insertions
    rate = errors / unit_count if unit_count else float(errors > 0)
    return ErrorCounts(rate, output.substitutions, output.deletions, output.insertions, unit_count)


def _paired(refs: dict[str, str], hyps: dict[str, str]) -> tuple[list[str], list[str], list[str]]:
    missing = sorted(set(refs) - set(hyps))
    extra = sorted(set(hyps) - set(refs))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} id(s) missing from the hypotheses (first: {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} id(s) not in the references (first: {extra[0]})")
        raise AsrError("reference and hypothesis ids differ: " + "; ".join(parts))
    if not refs:
        raise AsrError("nothing to score: no utterances")
    ids = sorted(refs)
    return ids, [normalize_text(refs[i]) for i in ids], [normalize_text(hyps[i]) for i in ids]


def score(refs: dict[str, str], hyps: dict[str, str]) -> Scores:
    """Corpus-level WER and CER for utterances keyed by id (both sides must have the same ids)."""
    _, ref, hyp = _paired(refs, hyps)
    words = jiwer.process_words(ref, hyp)
    chars = jiwer.process_characters(ref, hyp)
    n_words = sum(len(r.split()) for r in ref)
    n_chars = sum(len(r) for r in ref)
    return Scores(_counts(words, n_words), _counts(chars, n_chars), len(ref))


def read_kaldi_text(path) -> dict[str, str]:
    """Read ``utt_id text`` lines (Kaldi ``text`` files; the id ends at the first space or tab, so
    ``asr transcribe``'s ``utt_id<TAB>text`` lines read too). An id alone means empty text."""
    path = Path(path)
    if not path.is_file():
        raise AsrError(f"{path}: no such file")
    out: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise AsrError(f"{path}: not a UTF-8 text file of 'utt_id text' lines") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        utt_id, *rest = line.strip().split(None, 1)
        text = rest[0] if rest else ""
        if utt_id in out:
            raise AsrError(f"{path}:{number}: duplicate utterance id {utt_id!r}")
        out[utt_id] = text.strip()
    return out


def write_kaldi_text(texts: dict[str, str], path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k} {texts[k]}\n" for k in sorted(texts)), encoding="utf-8")
    return path


def write_details(refs: dict[str, str], hyps: dict[str, str], path) -> Path:
    """Per-utterance alignments, worst utterances first (like icefall's errs-*.txt)."""
    ids, ref, hyp = _paired(refs, hyps)
    rows = []
    for utt_id, r, h in zip(ids, ref, hyp):
        out = jiwer.process_words(r, h)
        errors = out.substitutions + out.deletions + out.insertions
        alignment = jiwer.visualize_alignment(out, show_measures=False, skip_correct=False)
        body = "\n".join(line for line in alignment.splitlines()[1:] if line.strip())
        rows.append((errors, utt_id, f"{utt_id}  errors={errors} words={len(r.split())} "
                     f"(S={out.substitutions} D={out.deletions} I={out.insertions})\n{body}\n"))
    rows.sort(key=lambda row: (-row[0], row[1]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(r[2] for r in rows), encoding="utf-8")
    return path
