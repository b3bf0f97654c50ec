"""LibriSpeech recipe: download -> prepare -> lm -> [tokenizer] -> train -> tune -> evaluate, and an offline demo.

    python -m asr.recipes.librispeech download  --config recipes/librispeech/config.toml
    python -m asr.recipes.librispeech prepare   --config recipes/librispeech/config.toml
    python -m asr.recipes.librispeech lm        --config recipes/librispeech/config.toml
    python -m asr.recipes.librispeech tokenizer --config recipes/librispeech/config.toml
    python -m asr.recipes.librispeech train     --config recipes/librispeech/config.toml [--resume]
    python -m asr.recipes.librispeech tune      --config recipes/librispeech/config.toml
    python -m asr.recipes.librispeech evaluate  --config recipes/librispeech/config.toml

    python -m asr.recipes.librispeech demo [--exp-dir DIR]

``lm`` gets the word n-gram model for beam search: the official LibriSpeech LM
(``[lm] source = "download:3-gram.pruned.1e-7.arpa.gz"``) or one built with
KenLM from a text (``[lm] text = PATH``; by default the shared LJ Speech text),
into ``<exp>/lm/lm.bin`` and ``unigrams.txt``. ``tokenizer`` trains a
sentencepiece model on the training transcripts (``<exp>/tokenizer/spm.model``),
which ``train`` uses when the config says ``tokenizer = "sentencepiece"``.
``tune`` grid-searches the LM weight and word bonus on the dev set and stores
the best pair in ``<exp>/decoding.json`` and in ``model.pt``, so that
``evaluate`` (greedy and beam+LM rows) and ``asr transcribe`` use them.

``demo`` needs no network and no GPU: it speaks LJ Speech text with TTS voices
into a corpus in the exact LibriSpeech layout (held-out sentences and voices
for dev and test), then runs prepare, train and evaluate on it (with lm and
tune in between when KenLM's programs are built), and also scores the real LJ
Speech clips. Every stage reads the experiment config and can be rerun;
finished work is skipped.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from asr.augment import AugmentConfig, WaveformAugment
from asr.config import load_config
from asr.data import read_librispeech, read_ljspeech, read_manifest, write_manifest
from asr.decoding import DecodingOptions
from asr.errors import AsrError
from asr.features import FeatureConfig
from asr.recipes import print_finish, recipe_config_path, run_stages, shared_data, train_once
from asr.training import TrainConfig


@dataclass
class DataConfig:
    root: str = "data"  # holds LibriSpeech/<subset>/...; relative paths are under exp_dir
    train: tuple[str, ...] = ("train-clean-100",)
    dev: tuple[str, ...] = ("dev-clean",)
    test: tuple[str, ...] = ("test-clean", "test-other")
    max_duration: float = 17.0  # longer training utterances are left out
    ljspeech: bool = False  # also evaluate on the real LJ Speech clips in the shared data


@dataclass
class DownloadConfig:
    mirror: str = ""  # another host (or local folder) holding the same files
    checksums: str = ""  # sha256sum-style file overriding the built-in digests


@dataclass
class SynthConfig:
    """The demo corpus: LJ Speech text spoken by TTS voices, LibriSpeech layout."""

    text: str = ""  # default: the shared lj-text-train.txt
    n_train: int = 6500
    n_dev: int = 100
    n_test: int = 200
    min_words: int = 3
    max_words: int = 18
    dev_voices: tuple[str, ...] = ("espeak-ng:en-029+Annie", "espeak-ng:en-gb-x-rp+m4")
    test_voices: tuple[str, ...] = ("espeak-ng:en-us+f4", "flite:rms")
    rate_range: tuple[float, float] = (0.85, 1.2)
    pitch_range: tuple[float, float] = (0.8, 1.25)
    balance: str = "voice"  # "voice": every training voice an equal share; "engine": every TTS engine
    engines: tuple[str, ...] = ("espeak-ng", "flite")  # training voices: the installed catalogue voices of these
    renditions: int = 1  # times each training sentence is spoken, each time by another voice
    seed: int = 0
    workers: int = 0  # synthesis processes; 0: one per CPU core

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1


@dataclass
class LMConfig:
    """The word n-gram model for beam search (stage ``lm``), in ``<exp>/lm``."""

    source: str = ""  # "download:<name>" (a file of asr.download.LIBRISPEECH_LM); "" builds from `text`
    text: str = ""  # text to build from, one sentence per line; default: the shared lj-text-train.txt
    order: int = 4
    prune: str = ""  # lmplz count thresholds per order, e.g. "0 0 1"; "" keeps every n-gram
    memory: str = "1G"  # lmplz sort memory (e.g. "1G", "20%" of RAM); raise it for large texts


@dataclass
class DecodingConfig:
    """Beam search, and the alpha/beta/blank-penalty grid that stage ``tune`` tries on the dev set."""

    beam_width: int = 32
    alphas: tuple[float, ...] = (0.2, 0.4, 0.7, 1.0, 1.5)
    betas: tuple[float, ...] = (0.0, 1.0, 2.5)
    blank_penalties: tuple[float, ...] = (0.0,)  # taken off the blank's log-prob in every frame
    max_utterances: int = 200  # dev utterances to tune on (evenly spaced); 0: all
    processes: int = 2  # beam search worker processes


@dataclass
class SubwordConfig:
    """The sentencepiece model of stage ``tokenizer`` (used when ``tokenizer = "sentencepiece"``)."""

    vocab_size: int = 256
    model_type: str = "unigram"  # or "bpe"
    text: str = ""  # default: the transcripts of the training subsets


@dataclass
class RecipeConfig:
    exp_dir: str = "exp/librispeech"
    model_name: str = "seed"
    model: dict = field(default_factory=dict)  # overrides of the named model config
    tokenizer: str = "char"  # "char" or "sentencepiece"
    features: FeatureConfig = field(default_factory=FeatureConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig.off)  # waveform augmentation of training audio
    data: DataConfig = field(default_factory=DataConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    subwords: SubwordConfig = field(default_factory=SubwordConfig)
    # > 0: the demo's training budget (train.time_budget_minutes) shrinks, when synthesis ran slowly,
    # so that the whole demo ends within this many minutes; demo_reserve_minutes are kept for the
    # LM, tuning and evaluation after training
    demo_minutes: float = 0.0
    demo_reserve_minutes: float = 3.0

    @property
    def exp(self) -> Path:
        return Path(self.exp_dir)

    @property
    def corpus(self) -> Path:
        root = Path(self.data.root)
        return (root if root.is_absolute() else self.exp / root) / "LibriSpeech"

    def manifest(self, subset: str) -> Path:
        return self.exp / "manifests" / f"{subset}.jsonl"


def make_config(path: str | None, stage: str) -> RecipeConfig:
    default = recipe_config_path("librispeech", "demo" if stage == "demo" else "config")
    return load_config(RecipeConfig(), path or (default if default.exists() else None))


# --------------------------------------------------------------------------- stages

def download(config: RecipeConfig, progress: bool = True, **_) -> None:
    """Fetch the subsets from openslr.org (checksums verified, resumable, safe extraction)."""
    from asr.download import LIBRISPEECH, fetch

    for subset in dict.fromkeys(config.data.train + config.data.dev + config.data.test):
        if subset not in LIBRISPEECH:
            raise AsrError(f"unknown LibriSpeech subset {subset!r}; known: {', '.join(LIBRISPEECH)}")
        if (config.corpus / subset).is_dir() and any((config.corpus / subset).iterdir()):
            print(f"{subset}: already in {config.corpus}")
            continue
        fetch(LIBRISPEECH[subset], config.corpus.parent / "downloads", config.corpus.parent,
              mirror=config.download.mirror or None, checksums=config.download.checksums or None,
              progress=progress)
        print(f"{subset}: extracted to {config.corpus / subset}")


def prepare(config: RecipeConfig, **_) -> None:
    """One JSON-lines manifest per subset, under ``<exp>/manifests``."""
    for subset in dict.fromkeys(config.data.train + config.data.dev + config.data.test):
        path = config.manifest(subset)
        if path.exists():
            continue
        entries = read_librispeech(config.corpus / subset)
        write_manifest(entries, path)
        hours = sum(e["duration"] for e in entries) / 3600
        print(f"{subset}: {len(entries)} utterances, {hours:.2f} h -> {path}")
    if config.data.ljspeech and not config.manifest("lj-real").exists():
        entries = read_ljspeech(shared_data("ljspeech", "LJSpeech-1.1"))
        write_manifest(entries, config.manifest("lj-real"))
        print(f"lj-real: {len(entries)} real LJ Speech clips -> {config.manifest('lj-real')}")


def _entries(config: RecipeConfig, subsets) -> list[dict]:
    return [e for s in subsets for e in read_manifest(config.manifest(s))]


def train(config: RecipeConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train the CTC model; writes ``<exp>/model.pt``, TensorBoard logs and a learning curve."""
    train_entries = [e for e in _entries(config, config.data.train) if e["duration"] <= config.data.max_duration]
    dev_entries = _entries(config, config.data.dev)
    return train_model(config, train_entries, dev_entries, config.exp, config.train, resume=resume,
                       progress=progress)


def train_model(config: RecipeConfig, train_entries: list[dict], dev_entries: list[dict], exp_dir: Path,
                schedule: TrainConfig, init_from: Path | None = None, resume: bool = False,
                progress: bool = True) -> Path:
    """Train a model of ``config`` (model, features, tokenizer) with ``schedule`` in ``exp_dir``.

    ``init_from``: a model file whose weights start the training (fine-tuning);
    tensors whose shapes differ (an output layer over other units) keep their
    fresh initialisation. A resumed run takes everything from its checkpoint.
    Returns ``exp_dir/model.pt``.
    """
    from asr.model import CTCModel, count_parameters, named_config
    from asr.training import Trainer, seed_everything

    tokenizer = make_tokenizer(config)
    model_config = named_config(config.model_name, n_mels=config.features.n_mels,
                                n_classes=tokenizer.vocab_size, **config.model)
    seed_everything(schedule.seed)  # the initial weights too come from the seed
    model = CTCModel(model_config)
    exp_dir = Path(exp_dir)
    resuming = resume and (exp_dir / "checkpoints" / "last.pt").exists()
    if init_from is not None and not resuming:
        kept = load_initial_weights(model, init_from)
        print(f"starting from {init_from} ({kept})")
    hours = sum(e["duration"] for e in train_entries) / 3600
    print(f"model {config.model_name} ({tokenizer.kind}, {tokenizer.vocab_size} classes): "
          f"{count_parameters(model):,} parameters; {len(train_entries)} training utterances ({hours:.2f} h); "
          f"{schedule.max_steps} steps")
    exp_dir.mkdir(parents=True, exist_ok=True)
    (exp_dir / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    augment = WaveformAugment(config.augment, seed=schedule.seed) if config.augment.active else None
    trainer = Trainer.for_ctc(model, tokenizer, config.features, train_entries, schedule, exp_dir,
                              dev_entries=dev_entries, transform=augment)
    started = time.perf_counter()
    trainer.run(resume=resume, progress=progress)
    path = trainer.export(exp_dir / "model.pt")
    minutes = (time.perf_counter() - started) / 60
    print(f"trained to step {trainer.step} in {minutes:.1f} min; model saved to {path}")
    return path


def load_initial_weights(model, path) -> str:
    """Copy a model file's weights into ``model`` where names and shapes agree; says what was copied."""
    from asr import checkpoint

    own = model.state_dict()
    theirs = checkpoint.load(path)["model"]
    weights = {k: v for k, v in theirs.items() if k in own and own[k].shape == v.shape}
    if not weights:
        raise AsrError(f"{path}: no weights fit this model (another model config?)")
    model.load_state_dict(weights, strict=False)
    fresh = sorted(set(own) - set(weights))
    return f"{len(weights)} of {len(own)} tensors" + (f"; newly initialised: {', '.join(fresh)}" if fresh else "")


# --------------------------------------------------------------------------- units and language model

def _training_text(config: RecipeConfig) -> list[str]:
    if config.subwords.text:
        path = Path(config.subwords.text)
        if not path.is_file():
            raise AsrError(f"{path}: subword training text not found")
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [e["text"] for e in _entries(config, config.data.train)]


def tokenizer(config: RecipeConfig, **_) -> Path:
    """Train the sentencepiece model (``<exp>/tokenizer/spm.model``); kept while its settings stay."""
    from asr.text import SentencePieceTokenizer

    folder = config.exp / "tokenizer"
    path, settings_path = folder / "spm.model", folder / "spm.json"
    settings = {**asdict(config.subwords), "train": list(config.data.train)}
    if path.exists() and settings_path.exists() and json.loads(settings_path.read_text()) == settings:
        return path
    if config.subwords.model_type not in ("unigram", "bpe"):
        raise AsrError(f"subwords.model_type must be unigram or bpe, got {config.subwords.model_type!r}")
    sentences = _training_text(config)
    try:
        tok = SentencePieceTokenizer.train(sentences, config.subwords.vocab_size, config.subwords.model_type)
    except RuntimeError as exc:  # e.g. a vocabulary larger than the text allows
        reason = str(exc).strip().splitlines()[-1]
        raise AsrError(f"cannot train the sentencepiece model: {reason}") from None
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(tok.model_bytes)
    tmp.replace(path)
    settings_path.write_text(json.dumps(settings) + "\n")
    print(f"sentencepiece {config.subwords.model_type} model, {tok.vocab_size - 1} pieces, "
          f"from {len(sentences)} sentences -> {path}")
    return path


def make_tokenizer(config: RecipeConfig):
    """The tokenizer the config asks for (training the sentencepiece model if needed)."""
    from asr.text import CharTokenizer, SentencePieceTokenizer

    if config.tokenizer == "char":
        return CharTokenizer()
    if config.tokenizer == "sentencepiece":
        return SentencePieceTokenizer(tokenizer(config).read_bytes())
    raise AsrError(f"tokenizer must be char or sentencepiece, got {config.tokenizer!r}")


def _held_out_texts(config: RecipeConfig) -> set[str]:
    """Normalised transcripts of the dev and test sets prepared so far: an LM text must not hold them."""
    from asr.text import normalize_text

    subsets = list(config.data.dev + config.data.test) + (["lj-real"] if config.data.ljspeech else [])
    return {normalize_text(e["text"]) for s in subsets if config.manifest(s).exists()
            for e in read_manifest(config.manifest(s))}


def lm(config: RecipeConfig, progress: bool = True, held_out=(), **_):
    """The word n-gram model for beam search, in ``<exp>/lm`` (restartable; finished files are kept).

    ``[lm] source = "download:NAME"`` fetches a file of the official LibriSpeech LM
    (an ``.arpa.gz`` is unpacked and converted; ``librispeech-lm-norm.txt.gz`` is
    built from). Otherwise the model is built from ``[lm] text`` (by default the
    shared LJ Speech text), leaving out any sentence of the dev and test sets
    (and of ``held_out``).
    """
    from asr.download import LIBRISPEECH_LM, fetch, gunzip
    from asr.lm import build_lm, load_unigrams, prepare_arpa
    from asr.text import normalize_text

    folder = config.exp / "lm"
    prune = config.lm.prune or None
    if config.lm.source:
        kind, _, name = config.lm.source.partition(":")
        if kind != "download" or name not in LIBRISPEECH_LM:
            raise AsrError(f"lm.source must be download:NAME with NAME one of {', '.join(LIBRISPEECH_LM)}; "
                           f"got {config.lm.source!r}")
        downloaded = fetch(LIBRISPEECH_LM[name], folder / "downloads", folder / "downloads",
                           mirror=config.download.mirror or None, checksums=config.download.checksums or None,
                           progress=progress)
        unpacked = gunzip(downloaded)
        if unpacked.suffix == ".arpa":
            files = prepare_arpa(unpacked, folder)
        else:
            files = build_lm(unpacked, folder, order=config.lm.order, prune=prune, memory=config.lm.memory)
    else:
        text = Path(config.lm.text) if config.lm.text else shared_data("text", "lj-text-train.txt")
        if not text.is_file():
            raise AsrError(f"{text}: language model text not found")
        held_out = _held_out_texts(config) | {normalize_text(t) for t in held_out}
        lines = text.read_text(encoding="utf-8", errors="replace").splitlines()
        kept = [line for line in lines if normalize_text(line) not in held_out]
        if len(kept) < len(lines):  # build from a copy without them; rewritten only when it changes
            filtered = folder / "text.txt"
            content = "".join(line + "\n" for line in kept)
            if not filtered.exists() or filtered.read_text(encoding="utf-8") != content:
                folder.mkdir(parents=True, exist_ok=True)
                filtered.write_text(content, encoding="utf-8")
            print(f"{text}: left out {len(lines) - len(kept)} sentences of the dev and test sets")
            text = filtered
        files = build_lm(text, folder, order=config.lm.order, prune=prune, memory=config.lm.memory)
    print(f"language model: {files.binary} ({len(load_unigrams(files.unigrams))} words)")
    return files


def _spread(entries: list[dict], n: int) -> list[dict]:
    """``n`` entries evenly spaced over the list (all of them when ``n`` is 0 or larger)."""
    if n <= 0 or n >= len(entries):
        return entries
    return [entries[round(i * (len(entries) - 1) / max(1, n - 1))] for i in range(n)]


def tune_model(model_path: Path, dev_entries: list[dict], lm_files, decoding: DecodingConfig,
               progress: bool = True) -> DecodingOptions:
    """Grid-search alpha, beta and the blank penalty for ``model_path`` on ``dev_entries``; store the best.

    Writes ``decoding.json`` beside the model (the options, and what they were
    tuned on) and the options into the model file itself. A finished tuning is
    kept while it is newer than the model and the LM and its grid is unchanged.
    """
    from asr.inference import load_model
    from asr.tuning import grid_search, store_decoding, stored_options

    model_path = Path(model_path)
    out = model_path.parent / "decoding.json"
    options = DecodingOptions(decoder="beam", beam_width=decoding.beam_width, lm_path=str(lm_files.binary.resolve()),
                              unigrams_path=str(lm_files.unigrams.resolve()), processes=decoding.processes)
    entries = _spread(sorted(dev_entries, key=lambda e: e["id"]), decoding.max_utterances)
    plan = {"alphas": list(decoding.alphas), "betas": list(decoding.betas),
            "blank_penalties": list(decoding.blank_penalties), "utterances": len(entries),
            "beam_width": decoding.beam_width, "lm_path": options.lm_path}
    if out.exists() and all(out.stat().st_mtime >= p.stat().st_mtime for p in (model_path, lm_files.binary)):
        previous = json.loads(out.read_text())
        if previous.get("tuned_on", {}).get("plan") == plan:
            print(f"{out}: already tuned ({_weights(DecodingOptions.from_dict(previous))})")
            return DecodingOptions.from_dict(previous)
    model = load_model(model_path)
    result = grid_search(model, entries, options, decoding.alphas, decoding.betas, decoding.blank_penalties,
                         progress=progress)
    best = result.best_point
    store_decoding(model_path, result.best)
    record = {**stored_options(result.best), "tuned_on": {
        "plan": plan, "wer": best.scores.wer.rate, "cer": best.scores.cer.rate, "seconds": round(result.seconds, 1)}}
    out.write_text(json.dumps(record, indent=2) + "\n")
    (model_path.parent / "tune-grid.txt").write_text(result.table() + "\n")
    print(f"alpha/beta/blank grid on {len(entries)} dev utterances ({result.seconds:.0f} s):\n{result.table()}")
    print(f"best: {_weights(result.best)} -> {out} and {model_path}")
    return result.best


def _weights(options: DecodingOptions) -> str:
    return f"alpha {options.alpha:g}, beta {options.beta:g}, blank penalty {options.blank_penalty:g}"


def tune(config: RecipeConfig, progress: bool = True, **_) -> DecodingOptions:
    """Choose the LM weight, word bonus and blank penalty on the dev set for ``<exp>/model.pt``."""
    files = lm(config, progress=progress)
    return tune_model(config.exp / "model.pt", _entries(config, config.data.dev), files, config.decoding,
                      progress=progress)


def evaluate(config: RecipeConfig, progress: bool = True, **_) -> dict:
    """WER/CER on each test set: greedy, and beam+LM once ``tune`` has run; files under ``<exp>/results``.

    Returns the scores by test set name (greedy), and by ``"<set> beam+LM"``.
    """
    from dataclasses import replace

    from asr.evaluation import evaluate_sets, format_table
    from asr.inference import load_model

    model_path = config.exp / "model.pt"
    model = load_model(model_path)
    sets = {s: read_manifest(config.manifest(s)) for s in config.data.test}
    if config.data.ljspeech:
        sets["lj-real"] = read_manifest(config.manifest("lj-real"))
    results = evaluate_sets(model, sets, config.exp / "results", progress=progress)
    rows = [(name, "greedy", s) for name, s in results.items()]
    if model.extra.get("decoding"):
        options = replace(DecodingOptions.from_dict(model.extra["decoding"]), processes=config.decoding.processes)
        beam = evaluate_sets(model, sets, config.exp / "results", options, tag="beam-lm", progress=progress)
        setup = f"beam+LM a={options.alpha:g} b={options.beta:g}" + (
            f" bp={options.blank_penalty:g}" if options.blank_penalty else "")
        rows += [(name, setup, s) for name, s in beam.items()]
        results.update({f"{name} beam+LM": s for name, s in beam.items()})
    table = format_table(sorted(rows, key=lambda r: list(sets).index(r[0])))
    (config.exp / "results" / "wer.txt").write_text(table + "\n")
    print(table)
    return results


# --------------------------------------------------------------------------- offline demo

def split_sentences(config: SynthConfig) -> dict[str, list[str]]:
    """Disjoint train/dev/test sentences from the text file (no normalised duplicates across splits)."""
    from asr.text import normalize_text

    path = Path(config.text) if config.text else shared_data("text", "lj-text-train.txt")
    if not path.is_file():
        raise AsrError(f"{path}: text file not found")
    seen, sentences = set(), []
    for line in path.read_text(encoding="utf-8").splitlines():
        norm = normalize_text(line)
        if config.min_words <= len(norm.split()) <= config.max_words and norm not in seen:
            seen.add(norm)
            sentences.append(line.strip())
    random.Random(config.seed).shuffle(sentences)
    needed = config.n_dev + config.n_test + config.n_train
    if len(sentences) < needed:
        raise AsrError(f"{path}: {len(sentences)} usable sentences, {needed} needed")
    return {
        "dev-synth": sentences[: config.n_dev],
        "test-synth": sentences[config.n_dev: config.n_dev + config.n_test],
        "train-synth": sentences[config.n_dev + config.n_test: needed],
    }


def synthesize(config: RecipeConfig, progress: bool = True, **_) -> None:
    """Speak the demo corpus (restartable: finished subsets are skipped)."""
    from asr.synth import Voice, available_voices, make_librispeech_corpus

    held_out = set(config.synth.dev_voices) | set(config.synth.test_voices)
    train = [v for v in available_voices(config.synth.engines) if v.id not in held_out]
    silent = [e for e in config.synth.engines if not any(v.engine == e for v in train)]
    if silent:
        raise AsrError(f"[synth] engines: no training voice of {', '.join(silent)} is installed "
                       f"(see tools/install_system_deps.sh)")
    voices = {
        "train-synth": train,
        "dev-synth": [Voice.parse(v) for v in config.synth.dev_voices],
        "test-synth": [Voice.parse(v) for v in config.synth.test_voices],
    }
    started = time.perf_counter()
    make_librispeech_corpus(config.corpus.parent, split_sentences(config.synth), voices, seed=config.synth.seed,
                            rate_range=config.synth.rate_range, pitch_range=config.synth.pitch_range,
                            balance=config.synth.balance, renditions={"train-synth": config.synth.renditions},
                            workers=config.synth.worker_count,
                            progress=progress)
    print(f"synthetic corpus ready in {config.corpus} ({time.perf_counter() - started:.0f} s); "
          f"{len(voices['train-synth'])} training voices, held out: {', '.join(sorted(held_out))}")


def fit_demo_budget(config: RecipeConfig, elapsed_minutes: float) -> RecipeConfig:
    """``config`` with a training budget that ends the demo within ``demo_minutes``.

    Training gets what is left after ``elapsed_minutes`` (synthesis and preparation)
    and ``demo_reserve_minutes`` (LM, tuning, evaluation): never more than its own
    ``time_budget_minutes``, never less than one minute. Unchanged when either is 0.
    """
    budget = config.train.time_budget_minutes
    if config.demo_minutes <= 0 or budget <= 0:
        return config
    left = max(1.0, round(config.demo_minutes - config.demo_reserve_minutes - elapsed_minutes, 1))
    if left >= budget:
        return config
    print(f"demo: {elapsed_minutes:.1f} min gone before training; its budget cut from {budget:g} to {left:g} min "
          f"to end within {config.demo_minutes:g} (demo_minutes)")
    return replace(config, train=replace(config.train, time_budget_minutes=left))


def demo(config: RecipeConfig, resume: bool = False, progress: bool = True) -> None:
    from asr.lm import kenlm_programs_built

    started = time.perf_counter()
    synthesize(config, progress=progress)
    prepare(config)
    model_path = config.exp / "model.pt"
    if not resume and not model_path.exists():  # a fresh training run (a resumed one keeps its schedule)
        config = fit_demo_budget(config, (time.perf_counter() - started) / 60)
    train_once(model_path, lambda: train(config, resume=resume, progress=progress), resume)
    if kenlm_programs_built():
        tune(config, progress=progress)
    else:
        print("KenLM programs not built: no beam+LM rows (run bash tools/build_kenlm.sh, then the tune stage)")
    evaluate(config, progress=progress)
    print_finish(started, model_path, f"asr transcribe --model {model_path} AUDIO.wav")


STAGES = {"download": download, "prepare": prepare, "lm": lm, "tokenizer": tokenizer, "train": train,
          "tune": tune, "evaluate": evaluate, "synthesize": synthesize, "demo": demo}


def main(argv=None) -> int:
    return run_stages("LibriSpeech recipe (stages: " + ", ".join(STAGES) + ")", STAGES, make_config, argv)


if __name__ == "__main__":
    sys.exit(main())
