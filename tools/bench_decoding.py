"""Real-time factor of beam search (with a word n-gram LM) against greedy decoding.

    python tools/bench_decoding.py --model exp/ljspeech/char/finetune/model.pt \
        [--lm exp/ljspeech/lm/lm.bin] [--clips 40] [--beam-widths 8 32 128] [--out bench_decoding.txt]

The model runs once over real LJ Speech clips from the shared data (LJ002-*,
the recipe's test clips); its log-probs are then decoded by the greedy decoder
and by the beam decoder at each beam width, all in the same run, so the numbers
compare. The real-time factor (RTF) is decoding seconds per second of audio
(smaller is faster); the acoustic model's own RTF is printed beside it. Without
``--lm`` a 4-gram LM is built from the shared lj-text-train.txt (KenLM's
programs are needed: ``bash tools/build_kenlm.sh``). The table names the
machine (CPU model, cores, threads) and is also written to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone, installed or not


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a CTC model file (model.pt)")
    parser.add_argument("--lm", help="KenLM model (default: a 4-gram of lj-text-train.txt, built in --work)")
    parser.add_argument("--clips", type=int, default=40, help="real LJ002 clips to decode (default 40)")
    parser.add_argument("--beam-widths", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--alpha", type=float, help="LM weight (default: the model's tuned one, else 0.5)")
    parser.add_argument("--beta", type=float, help="word bonus (default: the model's tuned one, else 1.0)")
    parser.add_argument("--processes", type=int, default=2, help="beam search worker processes (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the acoustic model (default 2)")
    parser.add_argument("--work", default="exp/bench", help="folder for the LM built here (default exp/bench)")
    parser.add_argument("--out", default="bench_decoding.txt", help="write the table here too")
    args = parser.parse_args(argv)

    import torch

    from asr.corpora import read_ljspeech
    from asr.device import cpu_model
    from asr.decoding import DecodingOptions, make_decoder
    from asr.errors import AsrError
    from asr.inference import decode_batches, iter_log_probs, load_recognizer
    from asr.recipes import shared_data
    from asr.scoring import score

    torch.set_num_threads(args.threads)
    try:
        model = load_recognizer(args.model)
        tuned = model.decoding
        lm_path = args.lm
        if lm_path is None:
            from asr.lm import build_lm

            lm_path = str(build_lm(shared_data("text", "lj-text-train.txt"), Path(args.work) / "lm", order=4).binary)
        clips = [e for e in read_ljspeech(shared_data("ljspeech", "LJSpeech-1.1")) if e["id"].startswith("LJ002-")]
        clips = sorted(clips, key=lambda e: e["id"])[: args.clips]
        if not clips:
            raise AsrError("no LJ002 clips in the shared data")
    except AsrError as exc:
        print(f"bench_decoding: error: {exc}", file=sys.stderr)
        return 1
    audio = sum(e["duration"] for e in clips)
    refs = {e["id"]: e["text"] for e in clips}

    started = time.perf_counter()
    batches = list(iter_log_probs(model, clips, max_frames=20000))
    acoustic = time.perf_counter() - started

    def run(options: DecodingOptions) -> tuple[float, float, float]:
        with make_decoder(options, model.tokenizer, model.frame_shift) as decoder:
            if len(batches[0][0]) > 1:  # start the worker pool outside the timing
                decoder.decode(batches[0][1][:2], batches[0][2][:2])
            started = time.perf_counter()
            hyps = decode_batches(decoder, batches, clips)
            seconds = time.perf_counter() - started
        result = score(refs, hyps)
        return seconds, result.wer.rate, result.cer.rate

    alpha = args.alpha if args.alpha is not None else (tuned.alpha if tuned.lm_path else 0.5)
    beta = args.beta if args.beta is not None else (tuned.beta if tuned.lm_path else 1.0)
    rows = [("greedy", *run(DecodingOptions()))]
    for width in args.beam_widths:
        options = DecodingOptions(decoder="beam", beam_width=width, lm_path=lm_path, alpha=alpha, beta=beta,
                                  processes=args.processes)
        rows.append((f"beam {width} + LM", *run(options)))

    lines = [
        f"machine: {cpu_model()}, {os.cpu_count()} cores visible; torch threads {args.threads}, "
        f"beam search processes {args.processes}; Python {platform.python_version()}, torch {torch.__version__}",
        f"model: {args.model} ({model.tokenizer.kind}, {model.tokenizer.vocab_size} classes, "
        f"frame shift {1000 * model.frame_shift:.0f} ms)",
        f"LM: {lm_path} (alpha {alpha:g}, beta {beta:g})",
        f"audio: {len(clips)} real LJ002 clips, {audio:.1f} s; acoustic model RTF {acoustic / audio:.4f} "
        f"({acoustic:.1f} s)",
        "",
        f"{'decoder':<16} {'seconds':>8} {'RTF':>8} {'x greedy':>9} {'WER %':>7} {'CER %':>7}",
    ]
    greedy_seconds = rows[0][1]
    for name, seconds, wer, cer in rows:
        lines.append(f"{name:<16} {seconds:>8.2f} {seconds / audio:>8.5f} {seconds / greedy_seconds:>9.1f} "
                     f"{100 * wer:>7.2f} {100 * cer:>7.2f}")
    table = "\n".join(lines)
    print(table)
    Path(args.out).write_text(table + "\n")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
