"""CER of a LibriSpeech-demo model per voice: the same held-out sentences spoken by each voice.

    python tools/voice_cer.py --model exp/demo/model.pt [--voices flite:slt flite:rms ...]
        [--sentences 60] [--config recipes/librispeech/demo.toml] [--work exp/voice_cer] [--out voice_cer.txt]

Every voice speaks the same sentences: the first ``--sentences`` of the demo's
test split, which the demo never trains on, at random rates and pitches drawn
as the demo draws them. So the rows compare voices, not sentences, and a voice
the demo trains on ("in training") can be set beside one it holds out ("held
out"). Each row gives greedy CER and, when the model has tuned beam-search
options (stage ``tune``), beam+LM CER. The default voices are the demo's four
flite voices and two espeak-ng ones, one of each engine held out.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone, installed or not

VOICES = ["flite:slt", "flite:awb", "flite:kal16", "flite:rms", "espeak-ng:en-us", "espeak-ng:en-us+f4"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a CTC model file (model.pt)")
    parser.add_argument("--voices", nargs="+", default=VOICES, help="TTS voices, ENGINE:NAME")
    parser.add_argument("--sentences", type=int, default=60, help="test sentences per voice (default 60)")
    parser.add_argument("--config", help="the demo config whose split and voices apply (default: the demo's)")
    parser.add_argument("--work", default="exp/voice_cer", help="folder for the synthesised audio")
    parser.add_argument("--seed", type=int, default=5, help="seed of the rates and pitches")
    parser.add_argument("--out", default="voice_cer.txt", help="write the table here too")
    args = parser.parse_args(argv)

    from asr.corpora import read_librispeech
    from asr.decoding import DecodingOptions, make_decoder
    from asr.errors import AsrError
    from asr.inference import decode_batches, iter_log_probs, load_recognizer
    from asr.recipes.librispeech import lj_text, make_config
    from asr.recipes.synth import make_librispeech_corpus, split_sentences
    from asr.recipes.tts import Voice
    from asr.scoring import score

    try:
        config = make_config(args.config, "demo")
        voices = [Voice.parse(v) for v in args.voices]
        text = Path(config.synth.text) if config.synth.text else lj_text()
        sentences = split_sentences(config.synth, text)["test-synth"][: args.sentences]
        model = load_recognizer(args.model)
        folders = {v.id: f"voice-{i}" for i, v in enumerate(voices)}
        corpus = make_librispeech_corpus(Path(args.work), {folders[v.id]: sentences for v in voices},
                                         {folders[v.id]: [v] for v in voices}, seed=args.seed,
                                         rate_range=config.synth.rate_range, pitch_range=config.synth.pitch_range,
                                         workers=config.synth.workers or os.cpu_count() or 1, progress=False)
    except AsrError as exc:
        print(f"voice_cer: error: {exc}", file=sys.stderr)
        return 1
    held_out = set(config.synth.dev_voices) | set(config.synth.test_voices)
    options = {"greedy": DecodingOptions()}
    if model.decoding.lm_path:
        options["beam+LM"] = replace(model.decoding, processes=2)
    lines = [f"model: {args.model}; {len(sentences)} test sentences per voice (CER %, WER % in brackets)", "",
             f"{'voice':<26} {'in the demo':<12} " + " ".join(f"{name:>16}" for name in options)]
    with contextlib.ExitStack() as stack:  # one decoder (and beam-search pool) for every voice
        decoders = [stack.enter_context(make_decoder(o, model.tokenizer, model.frame_shift)) for o in options.values()]
        for voice in voices:
            entries = read_librispeech(corpus / folders[voice.id])
            refs = {e["id"]: e["text"] for e in entries}
            batches = list(iter_log_probs(model, entries))  # the acoustic model runs once; each decoder reads it
            cells = []
            for decoder in decoders:
                result = score(refs, decode_batches(decoder, batches, entries))
                cells.append(f"{100 * result.cer.rate:6.1f} ({100 * result.wer.rate:5.1f})")
            role = "held out" if voice.id in held_out else "in training"
            lines.append(f"{voice.id:<26} {role:<12} " + " ".join(f"{c:>16}" for c in cells))
    table = "\n".join(lines)
    print(table)
    Path(args.out).write_text(table + "\n")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
