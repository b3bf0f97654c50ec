"""The ``asr`` command: argument parsing only, then one library call per subcommand.

    asr transcribe AUDIO... --model PATH [--format txt|json|srt|vtt] [--output-dir DIR]
                   [--decoder greedy|beam] [--lm LM] [--alpha A] [--beta B] [--beam-width N]
                   [--blank-penalty P] [--hotwords WORD...]
    asr classify AUDIO... --model PATH [--top-k K] [--format text|json]
    asr score --ref REF --hyp HYP [--metric wer|cer] [--details FILE]
    asr info MODEL_OR_CONFIG

Bad input gives one line on stderr and a non-zero exit status, never a traceback
(set ``ASR_DEBUG=1`` to see one).
"""

from __future__ import annotations

import os
import sys

from asr.errors import ArgumentParser, AsrError


def _transcribe(args) -> int:
    from dataclasses import replace

    from asr.decoding import DecodingOptions, make_decoder
    from asr.inference import load_model

    model = load_model(args.model, device=args.device)
    # the model's tuned decoding (written by a recipe's tune stage) is the default; flags override it
    defaults = DecodingOptions.from_dict(model.extra.get("decoding") or {})
    changes = {k: v for k, v in {
        "decoder": args.decoder or ("beam" if args.lm else None), "lm_path": args.lm,
        "unigrams_path": args.unigrams, "beam_width": args.beam_width, "alpha": args.alpha,
        "beta": args.beta, "blank_penalty": args.blank_penalty, "hotword_weight": args.hotword_weight,
        "hotwords": tuple(args.hotwords) if args.hotwords else None,
    }.items() if v is not None}
    if args.lm and not args.unigrams:
        changes["unigrams_path"] = None  # the tuned LM's word list does not belong to this LM
    options = replace(defaults, **changes)
    with make_decoder(options, model.tokenizer, model.frame_shift) as decoder:
        return _transcribe_files(args, model, options, decoder)


def _transcribe_files(args, model, options, decoder) -> int:
    from asr.inference import transcribe, write_result

    failed = 0
    for path in args.audio:
        try:
            result = transcribe(model, path, options, decoder=decoder)
        except AsrError as exc:
            print(f"asr: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        text = write_result(result, path, args.format, args.output_dir)
        if args.output_dir is None:
            if args.format == "txt" and len(args.audio) > 1:
                text = f"{path}\t{text}"
            sys.stdout.write(text)
            sys.stdout.flush()
    return 1 if failed else 0


def _classify(args) -> int:
    from asr.classify import classify, format_prediction, load_classifier

    if args.top_k < 1:
        raise AsrError(f"--top-k must be at least 1, got {args.top_k}")
    model = load_classifier(args.model, device=args.device)
    failed = 0
    for path in args.audio:
        try:
            prediction = classify(model, path, top_k=args.top_k)
        except AsrError as exc:
            print(f"asr: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        sys.stdout.write(format_prediction(prediction, path, args.format))
        sys.stdout.flush()
    return 1 if failed else 0


def _score(args) -> int:
    from asr.scoring import read_kaldi_text, score, write_details

    refs, hyps = read_kaldi_text(args.ref), read_kaldi_text(args.hyp)
    result = score(refs, hyps)
    counts = result.wer if args.metric == "wer" else result.cer
    unit = "words" if args.metric == "wer" else "chars"
    print(f"{args.metric.upper()} {100 * counts.rate:.2f}% [ {counts.errors} / {counts.reference_length} {unit}, "
          f"{counts.insertions} ins, {counts.deletions} del, {counts.substitutions} sub ] "
          f"over {result.utterances} utterances")
    if args.details:
        write_details(refs, hyps, args.details)
        print(f"per-utterance alignments: {args.details}")
    return 0


def _info(args) -> int:
    import json
    from pathlib import Path

    from asr.model import NAMED_CONFIGS, build_model, count_parameters, named_config

    target = args.target
    if target in NAMED_CONFIGS:
        config, source = named_config(target), f"named config {target!r}"
        extra, members = {}, 1
    elif Path(target).suffix == ".toml":
        import tomllib

        try:
            data = tomllib.loads(Path(target).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise AsrError(f"{target}: not a readable TOML config ({exc})") from None
        name = data.get("model_name") or data.get("model", {}).get("name")
        if name not in NAMED_CONFIGS:
            raise AsrError(f"{target}: names no known model config (model_name); known: {', '.join(NAMED_CONFIGS)}")
        overrides = {k: v for k, v in data.get("model", {}).items() if k != "name"}
        if "model_name" in data and "n_mels" in data.get("features", {}):
            overrides.setdefault("n_mels", data["features"]["n_mels"])
        config = named_config(name, **overrides)
        source, extra, members = f"recipe config {target}", {}, 1
    else:
        from asr import checkpoint

        from asr.model import config_from_checkpoint

        data = checkpoint.load(target)
        config = config_from_checkpoint(data)
        source = f"model file {target}"
        extra = {k: data[k] for k in ("task", "feature_config", "step", "members") if k in data}
        members = data.get("members", 1)
        if "tokenizer" in data:
            extra["tokenizer"] = data["tokenizer"].get("kind")
        if "labels" in data:
            extra["labels"] = list(data["labels"])
    from dataclasses import asdict

    try:
        model = build_model(config, members)
    except (TypeError, ValueError) as exc:
        raise AsrError(f"{target}: {exc}") from None
    print(f"{source}: {type(model).__name__}")
    print(json.dumps({"model_config": asdict(config), **extra}, indent=2, default=str))
    print(f"parameters: {count_parameters(model):,}")
    return 0


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="asr", description="End-to-end CTC speech recognition.")
    from asr import __version__

    parser.add_argument("--version", action="version", version=f"asr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("transcribe", help="transcribe audio files")
    p.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg, ...; any sample rate)")
    p.add_argument("--model", required=True, help="model file (model.pt from a recipe)")
    p.add_argument("--format", choices=["txt", "json", "srt", "vtt"], default="txt")
    p.add_argument("--output-dir", help="write <name>.<format> files here instead of printing")
    p.add_argument("--decoder", choices=["greedy", "beam"], help="default: greedy, or what the model was tuned for")
    p.add_argument("--lm", help="KenLM language model (.arpa or binary) for beam search (implies --decoder beam)")
    p.add_argument("--unigrams", help="the LM's word list (default: unigrams.txt beside the LM)")
    p.add_argument("--beam-width", type=int)
    p.add_argument("--alpha", type=float, help="LM weight")
    p.add_argument("--beta", type=float, help="word insertion bonus")
    p.add_argument("--blank-penalty", type=float, help="taken off the blank's log-probability in every frame")
    p.add_argument("--hotwords", nargs="+", help="words to favour in beam search")
    p.add_argument("--hotword-weight", type=float)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.set_defaults(run=_transcribe)

    p = sub.add_parser("classify", help="label audio clips with a keyword or sound classifier")
    p.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg, ...; any sample rate)")
    p.add_argument("--model", required=True, help="classifier file (model.pt from a classification recipe)")
    p.add_argument("--top-k", type=int, default=1, help="also show the K most likely labels")
    p.add_argument("--format", choices=["text", "json"], default="text",
                   help="text: FILE, then LABEL and PROBABILITY per label, tab-separated; json: one object per line")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.set_defaults(run=_classify)

    p = sub.add_parser("score", help="WER or CER of hypotheses against references")
    p.add_argument("--ref", required=True, help="reference file of 'utt_id text' lines")
    p.add_argument("--hyp", required=True, help="hypothesis file of 'utt_id text' lines")
    p.add_argument("--metric", choices=["wer", "cer"], default="wer")
    p.add_argument("--details", help="write per-utterance alignments to this file")
    p.set_defaults(run=_score)

    p = sub.add_parser("info", help="show a model's config and parameter count")
    p.add_argument("target", help="a model file, a recipe config (.toml) or a named config (seed, small)")
    p.set_defaults(run=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except AsrError as exc:
        print(f"asr: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("asr: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `asr transcribe ... | head`: stop quietly, like other tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a bug, not bad input: still one line unless debugging
        if os.environ.get("ASR_DEBUG"):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"asr: error: {type(exc).__name__}: {message} (set ASR_DEBUG=1 for details)", file=sys.stderr)
        return 2
