"""Evaluate a recognizer on named test sets and write icefall-style result files.

For each set, ``<exp>/results/<set>/`` gets ``ref.txt``, ``hyp.txt`` (Kaldi
``utt_id text`` lines) and ``errs.txt`` (per-utterance alignments, worst first).
"""

from __future__ import annotations

from pathlib import Path

from asr.decoding import DecodingOptions, make_decoder
from asr.scoring import Scores, score, write_details, write_kaldi_text
from asr.inference import Recognizer, recognize_entries


def evaluate_sets(model: Recognizer, sets: dict[str, list[dict]], out_dir, options: DecodingOptions | None = None,
                  tag: str = "greedy", progress: bool = True) -> dict[str, Scores]:
    """Decode every set, write ref/hyp/errs files under ``out_dir/<set>/``, return the scores."""
    options = options or DecodingOptions()
    decoder = make_decoder(options, model.tokenizer, model.frame_shift)
    results = {}
    for name, entries in sets.items():
        if not entries:
            continue
        hyps = recognize_entries(model, entries, decoder, progress=progress)
        refs = {e["id"]: e["text"] for e in entries}
        folder = Path(out_dir) / name
        write_kaldi_text(refs, folder / "ref.txt")
        write_kaldi_text(hyps, folder / f"hyp-{tag}.txt")
        write_details(refs, hyps, folder / f"errs-{tag}.txt")
        results[name] = score(refs, hyps)
    return results


def format_table(rows: list[tuple[str, str, Scores]]) -> str:
    """A plain-text WER/CER table; rows are (test set, setup, scores)."""
    head = f"{'test set':<22} {'setup':<28} {'utts':>5} {'WER %':>7} {'CER %':>7}"
    lines = [head, "-" * len(head)]
    for name, setup, s in rows:
        lines.append(f"{name:<22} {setup:<28} {s.utterances:>5} {100 * s.wer.rate:>7.2f} {100 * s.cer.rate:>7.2f}")
    return "\n".join(lines)
