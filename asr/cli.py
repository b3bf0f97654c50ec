"""The ``asr`` command: argument parsing only, then library calls.

    asr transcribe INPUT... --model PATH [--format txt|json|srt|vtt|tsv|all] [--output-dir DIR]
                   [--decoder greedy|beam] [--lm LM] [--alpha A] [--beta B] [--beam-width N]
                   [--blank-penalty P] [--hotwords WORD...] [--device auto|cpu|cuda]
    asr classify AUDIO... --model PATH [--top-k K] [--format text|json]
    asr score --ref REF --hyp HYP [--metric wer|cer] [--details FILE]
    asr info MODEL_OR_CONFIG

An INPUT is an audio file, a folder (its audio files, at any depth) or a JSON-lines
manifest. Bad input gives one line on stderr and a non-zero exit status, never a
traceback (set ``ASR_DEBUG=1`` to see one).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from asr.errors import ArgumentParser, AsrError


def expand_inputs(inputs: list[str]) -> list[tuple[str, str]]:
    """(utterance id, audio path) for every input: a file (id: its stem), a folder (its audio files at
    any depth, sorted; ids their stems, or their paths under the folder where stems repeat) or a
    ``.jsonl`` manifest (its entries' ``id``, else the file stem).
    A path that does not exist is kept, so that it fails, with its name, where it is read."""
    from asr.audio import AUDIO_SUFFIXES
    from asr.data import read_manifest

    out = []
    for item in inputs:
        path = Path(item)
        if path.suffix == ".jsonl" and path.is_file():
            out += [(e.get("id") or Path(e["audio_filepath"]).stem, e["audio_filepath"]) for e in read_manifest(path)]
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
            if not files:
                raise AsrError(f"{path}: a folder with no audio files ({', '.join(AUDIO_SUFFIXES)})")
            stems = [p.stem for p in files]
            if len(set(stems)) < len(stems):
                stems = [str(p.relative_to(path).with_suffix("")).replace(os.sep, "/") for p in files]
            out += list(zip(stems, map(str, files)))
        else:
            out.append((path.stem, item))
    ids = [i for i, _ in out]
    if len(set(ids)) < len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise AsrError(f"two inputs have the utterance id {dup!r}; give them in separate runs or in a manifest")
    return out


def _options(args, model):
    """The model's own decoding (a recipe's tuned beam search, else greedy), with the flags' changes."""
    from dataclasses import replace

    changes = {k: v for k, v in {
        "decoder": args.decoder or ("beam" if args.lm else None), "lm_path": args.lm,
        "unigrams_path": args.unigrams, "beam_width": args.beam_width, "alpha": args.alpha,
        "beta": args.beta, "blank_penalty": args.blank_penalty, "hotword_weight": args.hotword_weight,
        "hotwords": tuple(args.hotwords) if args.hotwords else None,
    }.items() if v is not None}
    if args.lm and not args.unigrams:
        changes["unigrams_path"] = None  # the tuned LM's word list does not belong to this LM
    return replace(model.decoding, **changes)


def _transcribe(args) -> int:
    from tqdm import tqdm

    from asr.inference import load_recognizer, transcribe, write_result

    inputs = expand_inputs(args.audio)
    if args.format == "all" and args.output_dir is None:
        args.output_dir = "."
    with load_recognizer(args.model, device=args.device) as model:
        options = _options(args, model)
        failed = 0
        many = len(inputs) > 1
        for utt_id, path in tqdm(inputs, desc="transcribing", unit="file", disable=None if many else True,
                                 file=sys.stderr):
            try:
                result = transcribe(model, path, options)
            except AsrError as exc:
                tqdm.write(f"asr: error: {exc}", file=sys.stderr)
                failed += 1
                continue
            text = write_result(result, path, args.format, args.output_dir, name=utt_id if many else None)
            if args.output_dir is None:
                sys.stdout.write(f"{utt_id}\t{text}" if many and args.format == "txt" else text)
                sys.stdout.flush()
    return 1 if failed else 0


def _classify(args) -> int:
    from asr.inference import classify, format_prediction, load_classifier

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

    from asr.config import to_dict
    from asr.model import NAMED_CONFIGS, build_model, count_parameters

    target = args.target
    extra, members = {}, 1
    if target in NAMED_CONFIGS:
        config, source = NAMED_CONFIGS[target], f"named config {target!r}"
    elif Path(target).suffix == ".toml":
        config, source = _recipe_model(target), f"recipe config {target}"
    else:
        from asr.checkpoint import ModelFile

        model = ModelFile.load(target)
        config, source, members = model.model_config, f"model file {target}", model.members
        extra = {"task": model.task, "feature_config": to_dict(model.feature_config), "members": members}
        if model.tokenizer:
            extra["tokenizer"] = model.tokenizer.get("kind")
        if model.labels:
            extra["labels"] = list(model.labels)
        if model.decoding:
            extra["decoding"] = to_dict(model.decoding)
        if model.provenance:
            extra["trained"] = model.provenance
    net = build_model(config, members)
    print(f"{source}: {type(net).__name__}")
    print(json.dumps({"model_config": to_dict(config), **extra}, indent=2, default=str))
    print(f"parameters: {count_parameters(net):,}")
    return 0


def _recipe_model(path: str):
    """The CTC model a recipe config describes: its ``model_name`` with ``[model]`` overriding it, at
    its ``[features] n_mels``."""
    from dataclasses import replace

    from asr.config import load_config, read_toml
    from asr.model import NAMED_CONFIGS, ModelConfig

    data = read_toml(path)
    name = data.get("model_name")
    if name not in NAMED_CONFIGS or not isinstance(NAMED_CONFIGS[name], ModelConfig):
        known = ", ".join(k for k, v in NAMED_CONFIGS.items() if isinstance(v, ModelConfig))
        raise AsrError(f"{path}: names no speech recognition model config (model_name); known: {known}")
    config = load_config(NAMED_CONFIGS[name], data=data.get("model", {}))
    n_mels = data.get("features", {}).get("n_mels")
    return replace(config, n_mels=n_mels) if isinstance(n_mels, int) else config


FORMATS = ("txt", "json", "srt", "vtt", "tsv", "all")  # asr.inference.FORMATS, without importing torch for --help


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="asr", description="End-to-end CTC speech recognition.")
    from asr import __version__

    parser.add_argument("--version", action="version", version=f"asr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("transcribe", help="transcribe audio files, folders or manifests")
    p.add_argument("audio", nargs="+", metavar="INPUT",
                   help="audio files (wav, flac, ogg, ...; any sample rate), folders of them, or .jsonl manifests")
    p.add_argument("--model", required=True, help="model file (model.pt from a recipe)")
    p.add_argument("--format", choices=FORMATS, default="txt",
                   help="txt (several inputs: utt_id<TAB>text lines, as asr score reads), json, srt, vtt, tsv, "
                        "or all (every format, as files)")
    p.add_argument("--output-dir", help="write <utt_id>.<format> files here instead of printing")
    p.add_argument("--decoder", choices=["greedy", "beam"], help="default: what the model file says (greedy, or "
                                                                  "the beam search and LM a recipe tuned)")
    p.add_argument("--lm", help="KenLM language model (.arpa or binary) for beam search (implies --decoder beam)")
    p.add_argument("--unigrams", help="the LM's word list (default: unigrams.txt beside the LM)")
    p.add_argument("--beam-width", type=int)
    p.add_argument("--alpha", type=float, help="LM weight")
    p.add_argument("--beta", type=float, help="word insertion bonus")
    p.add_argument("--blank-penalty", type=float, help="taken off the blank's log-probability in every frame")
    p.add_argument("--hotwords", nargs="+", help="words to favour in beam search")
    p.add_argument("--hotword-weight", type=float)
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu or cuda")
    p.set_defaults(run=_transcribe)

    p = sub.add_parser("classify", help="label audio clips with a keyword or sound classifier")
    p.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg, ...; any sample rate)")
    p.add_argument("--model", required=True, help="classifier file (model.pt from a classification recipe)")
    p.add_argument("--top-k", type=int, default=1, help="also show the K most likely labels")
    p.add_argument("--format", choices=["text", "json"], default="text",
                   help="text: FILE, then LABEL and PROBABILITY per label, tab-separated; json: one object per line")
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu or cuda")
    p.set_defaults(run=_classify)

    p = sub.add_parser("score", help="WER or CER of hypotheses against references")
    p.add_argument("--ref", required=True, help="reference file of 'utt_id text' lines (space or tab)")
    p.add_argument("--hyp", required=True, help="hypothesis file of 'utt_id text' lines (asr transcribe's output)")
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
