#!/usr/bin/env python
"""Make a synthetic corpus with the espeak-ng and flite voices, in a real corpus layout.

    python tools/make_synthetic_corpus.py voices
    python tools/make_synthetic_corpus.py librispeech --text ../shared/data/text/lj-text-train.txt \\
        --out data/synth --n-train 5000 --n-dev 200 --n-test 200
    python tools/make_synthetic_corpus.py speech-commands --words yes no up down --out data/synth-commands

``librispeech`` draws distinct sentences from a text file (one per line) and writes
the subsets train-clean-100, dev-clean and test-clean under OUT/LibriSpeech. The
dev and test voices are held out of training, as LibriSpeech holds out speakers.
Both commands can be run again: finished parts are skipped, interrupted ones resume.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asr.errors import AsrError  # noqa: E402
from asr.recipes.synth import BALANCES, make_librispeech_corpus, make_speech_commands_corpus  # noqa: E402
from asr.recipes.tts import VOICES, Voice, available_voices  # noqa: E402
from asr.text import normalize_text  # noqa: E402

DEV_VOICES = ("espeak-ng:en-029+Annie", "espeak-ng:en-gb-x-rp+m4", "espeak-ng:en-us-nyc+linda")
TEST_VOICES = ("flite:slt", "espeak-ng:en-us+f4", "espeak-ng:en-gb-scotland+m7")
SUBSETS = ("train-clean-100", "dev-clean", "test-clean")
COMMAND_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")


def _voices(ids: list[str]) -> list[Voice]:
    return [Voice.parse(v) for v in ids]


def read_sentences(path: Path, counts: list[int], seed: int) -> list[list[str]]:
    """Distinct sentences of a text file, shuffled by ``seed``, cut into parts of ``counts`` sentences."""
    import numpy as np

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AsrError(f"cannot read {path}: {exc}") from None
    seen, sentences = set(), []
    for line in lines:
        key = normalize_text(line)
        if key and key not in seen:
            seen.add(key)
            sentences.append(line.strip())
    if sum(counts) > len(sentences):
        raise AsrError(f"{path} has {len(sentences)} distinct sentences, {sum(counts)} asked for")
    order = np.random.default_rng(seed).permutation(len(sentences))
    parts, start = [], 0
    for n in counts:
        parts.append([sentences[i] for i in order[start:start + n]])
        start += n
    return parts


def librispeech(args) -> None:
    counts = [args.n_train, args.n_dev, args.n_test]
    if min(counts) < 0:
        raise AsrError("sentence counts must not be negative")
    dev, test = _voices(args.dev_voices), _voices(args.test_voices)
    train = _voices(args.train_voices) if args.train_voices else [
        v for v in available_voices() if v not in dev and v not in test]
    parts = read_sentences(args.text, counts, args.seed)
    subsets = {name: part for name, part in zip(SUBSETS, parts) if part}
    voices = dict(zip(SUBSETS, (train, dev, test)))
    out = make_librispeech_corpus(args.out, subsets, {k: voices[k] for k in subsets}, seed=args.seed,
                                  balance=args.balance, renditions={SUBSETS[0]: args.renditions} if parts[0] else None,
                                  workers=args.workers, progress=not args.quiet)
    print(out)


def speech_commands(args) -> None:
    voices = _voices(args.voices) if args.voices else list(available_voices())
    out = make_speech_commands_corpus(
        args.out, args.words, voices, per_voice=args.per_voice,
        validation_voices=_voices(args.validation_voices) if args.validation_voices else None,
        testing_voices=_voices(args.testing_voices) if args.testing_voices else None,
        seed=args.seed, noise_seconds=args.noise_seconds, workers=args.workers, progress=not args.quiet)
    print(out)


def list_voices(args) -> None:
    present = set(available_voices())
    for index, voice in enumerate(VOICES):
        print(f"{100 + index}  {voice.id:34s} {'' if voice in present else '(not installed)'}".rstrip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Make a synthetic speech corpus in a real corpus layout.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--out", type=Path, required=True, help="output folder")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--workers", type=int, default=2, help="parallel synthesis processes")
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("librispeech", help="sentences from a text file, LibriSpeech layout")
    p.add_argument("--text", type=Path, required=True, help="text file, one sentence per line")
    p.add_argument("--n-train", type=int, required=True)
    p.add_argument("--n-dev", type=int, default=0)
    p.add_argument("--n-test", type=int, default=0)
    p.add_argument("--train-voices", nargs="+", metavar="VOICE",
                   help="default: every installed catalogue voice not used for dev or test")
    p.add_argument("--dev-voices", nargs="+", default=list(DEV_VOICES), metavar="VOICE")
    p.add_argument("--test-voices", nargs="+", default=list(TEST_VOICES), metavar="VOICE")
    p.add_argument("--balance", choices=BALANCES, default="voice",
                   help="equal shares of the sentences per voice, or per TTS engine")
    p.add_argument("--renditions", type=int, default=1,
                   help="times each training sentence is spoken, each time by another voice")
    common(p)
    p.set_defaults(func=librispeech)

    p = sub.add_parser("speech-commands", help="single words, Speech Commands layout")
    p.add_argument("--words", nargs="+", default=list(COMMAND_WORDS))
    p.add_argument("--voices", nargs="+", metavar="VOICE", help="default: every installed catalogue voice")
    p.add_argument("--per-voice", type=int, default=5, help="recordings of each word by each voice")
    p.add_argument("--validation-voices", nargs="+", metavar="VOICE")
    p.add_argument("--testing-voices", nargs="+", metavar="VOICE")
    p.add_argument("--noise-seconds", type=float, default=30.0)
    common(p)
    p.set_defaults(func=speech_commands)

    p = sub.add_parser("voices", help="list the voice catalogue with LibriSpeech speaker ids")
    p.set_defaults(func=list_voices)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except AsrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
