"""Scoring a recognizer on test sets, and tuning its beam search on a dev set.

``evaluate_sets`` decodes named sets and writes icefall-style files: for each set,
``<out>/<set>/`` gets ``ref.txt``, ``hyp-<tag>.txt`` (Kaldi ``utt_id text`` lines) and
``errs-<tag>.txt`` (per-utterance alignments, worst first).

``grid_search`` chooses the LM weight ``alpha``, the word bonus ``beta`` and the blank
penalty: the acoustic model runs once over the dev set, and its log-probs are decoded
again for every point of the grid in the decoder's worker pool. ``store_decoding``
writes the chosen options into the model file, where ``transcribe`` and the recipes'
``evaluate`` stages find them as the model's default decoding.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from asr.checkpoint import ModelFile
from asr.decoding import DecodingOptions, make_decoder
from asr.errors import AsrError
from asr.inference import Recognizer, decode_batches, iter_log_probs, recognize_entries
from asr.scoring import Scores, score, write_details, write_kaldi_text


def evaluate_sets(model: Recognizer, sets: dict[str, list[dict]], out_dir, options: DecodingOptions | None = None,
                  tag: str = "greedy", progress: bool = True) -> dict[str, Scores]:
    """Decode every set, write ref/hyp/errs files under ``out_dir/<set>/``, return the scores."""
    options = options or DecodingOptions()
    results = {}
    for name, entries in sets.items():
        if not entries:
            continue
        hyps = recognize_entries(model, entries, options, progress=progress)
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


# --------------------------------------------------------------------------- tuning

@dataclass
class GridPoint:
    alpha: float
    beta: float
    scores: Scores
    blank_penalty: float = 0.0

    @property
    def key(self) -> tuple[float, float, float]:
        return self.alpha, self.beta, self.blank_penalty


@dataclass
class TuneResult:
    best: DecodingOptions
    grid: list[GridPoint]
    seconds: float

    @property
    def best_point(self) -> GridPoint:
        """The grid point of ``best``, with its scores."""
        key = (self.best.alpha, self.best.beta, self.best.blank_penalty)
        return next(g for g in self.grid if g.key == key)

    def table(self) -> str:
        """The grid as text, best point marked."""
        best = self.best_point
        lines = [f"{'alpha':>6} {'beta':>6} {'blank':>6} {'WER %':>7} {'CER %':>7}"]
        for g in self.grid:
            mark = "  <- best" if g is best else ""
            lines.append(f"{g.alpha:>6.2f} {g.beta:>6.2f} {g.blank_penalty:>6.2f} {100 * g.scores.wer.rate:>7.2f} "
                         f"{100 * g.scores.cer.rate:>7.2f}{mark}")
        return "\n".join(lines)


def grid_search(model: Recognizer, entries: list[dict], options: DecodingOptions, alphas, betas,
                blank_penalties=None, max_frames: int = 20000, progress: bool = False) -> TuneResult:
    """Beam-search ``entries`` at every (alpha, beta, blank penalty); the best by WER, then CER, then grid order.

    ``blank_penalties`` defaults to the one in ``options``. ``options`` gives
    everything else (LM, beam width, worker processes); the returned ``best`` is
    ``options`` with the chosen alpha, beta and blank penalty.
    """
    if not entries:
        raise AsrError("no dev utterances to tune on")
    if not options.lm_path:
        raise AsrError("tuning alpha and beta needs a language model (lm_path)")
    if blank_penalties is None:
        blank_penalties = [options.blank_penalty]
    alphas, betas = [float(a) for a in alphas], [float(b) for b in betas]
    penalties = [float(p) for p in blank_penalties]
    if not alphas or not betas or not penalties:
        raise AsrError("give at least one alpha, one beta and one blank penalty to try")
    started = time.perf_counter()
    cached = list(iter_log_probs(model, entries, max_frames, progress))  # the acoustic model runs once
    refs = {e["id"]: e["text"] for e in entries}
    points = [(a, b, p) for p in penalties for a in alphas for b in betas]
    if progress:
        from tqdm import tqdm

        points = tqdm(points, desc="alpha/beta/blank grid", unit="point", leave=False)
    grid = []
    with make_decoder(replace(options, decoder="beam"), model.tokenizer, model.frame_shift) as decoder:
        for alpha, beta, penalty in points:
            decoder.set_weights(alpha, beta, penalty)
            grid.append(GridPoint(alpha, beta, score(refs, decode_batches(decoder, cached, entries)), penalty))
    best = min(grid, key=lambda g: (g.scores.wer.errors, g.scores.cer.errors))  # min keeps the first of ties
    return TuneResult(replace(options, decoder="beam", alpha=best.alpha, beta=best.beta,
                              blank_penalty=best.blank_penalty), grid, time.perf_counter() - started)


def store_decoding(model_path, options: DecodingOptions) -> Path:
    """Rewrite the model file (atomically) with ``options`` as its default decoding (in this
    process only: no worker processes)."""
    model = ModelFile.load(model_path)
    return replace(model, decoding=replace(options, processes=0)).save(model_path)
