"""A speech recognition experiment folder: what every ASR recipe (LibriSpeech, LJ Speech,
AN4) does with its manifests, in ``<exp>``.

``ASRConfig`` is the part of a recipe config that these steps read: the model, the
units (characters or sentencepiece subwords), features, training, augmentation, the
language model and the beam-search grid. The steps are restartable; finished work is
kept.

* ``tokenizer``: the sentencepiece model of the training transcripts (``<exp>/tokenizer``);
* ``train_ctc``: a CTC model trained in a folder (``model.pt``, checkpoints, TensorBoard);
* ``build_language_model``: a word n-gram model from a text (dev and test sentences left
  out) or the official LibriSpeech LM, in ``<exp>/lm``;
* ``tune``: the LM weight, word bonus and blank penalty chosen on dev, stored in the model;
* ``evaluate``: WER and CER on test sets, greedy and with the model's tuned decoding.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from asr.augment import AugmentConfig, WaveformAugment
from asr.config import to_dict
from asr.data import read_manifest
from asr.decoding import DecodingOptions
from asr.download import DownloadConfig
from asr.errors import AsrError
from asr.features import FeatureConfig
from asr.model import ModelConfig, named_config
from asr.training import TrainConfig


@dataclass
class LMConfig:
    """The word n-gram model for beam search, in ``<exp>/lm``."""

    source: str = ""  # "download:<name>" (a file of asr.download.LIBRISPEECH_LM); "" builds from `text`
    text: str = ""  # text to build from, one sentence per line; "" = the recipe's default text
    order: int = 4
    prune: str = ""  # lmplz count thresholds per order, e.g. "0 0 1"; "" keeps every n-gram
    memory: str = "1G"  # lmplz sort memory (e.g. "1G", "20%" of RAM); raise it for large texts


@dataclass
class DecodingConfig:
    """Beam search, and the alpha/beta/blank-penalty grid that ``tune`` tries on the dev set."""

    beam_width: int = 32
    alphas: tuple[float, ...] = (0.2, 0.4, 0.7, 1.0, 1.5)
    betas: tuple[float, ...] = (0.0, 1.0, 2.5)
    blank_penalties: tuple[float, ...] = (0.0,)  # taken off the blank's log-prob in every frame
    max_utterances: int = 200  # dev utterances to tune on (evenly spaced); 0: all
    processes: int = 2  # beam search worker processes


@dataclass
class SubwordConfig:
    """The sentencepiece model of ``tokenizer`` (used when ``tokenizer = "sentencepiece"``)."""

    vocab_size: int = 256
    model_type: Literal["unigram", "bpe"] = "unigram"
    text: str = ""  # default: the transcripts of the training subsets


@dataclass
class SubsetsConfig:
    """Which subsets of a corpus in the LibriSpeech layout train, tune and test: the ``[data]`` table."""

    root: str = "data"  # holds LibriSpeech/<subset>/...; relative paths are under exp_dir
    train: tuple[str, ...] = ("train-clean-100",)
    dev: tuple[str, ...] = ("dev-clean",)
    test: tuple[str, ...] = ("test-clean", "test-other")
    max_duration: float = 17.0  # longer training utterances are left out
    ljspeech: bool = False  # also evaluate on the real LJ Speech clips in the shared data ("lj-real")


@dataclass
class ASRConfig:
    """What every speech recognition recipe configures; recipes add their ``data`` tables."""

    NAMED_BASES = {"model": ("model_name", named_config)}

    exp_dir: str = "exp/asr"
    data: SubsetsConfig = field(default_factory=SubsetsConfig)
    model_name: str = "seed"  # a named model config (asr.model.NAMED_CONFIGS); [model] overrides it
    model: ModelConfig = field(default_factory=lambda: named_config("seed"))
    features: FeatureConfig = field(default_factory=FeatureConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig.off)  # waveform augmentation of training audio
    download: DownloadConfig = field(default_factory=DownloadConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    subwords: SubwordConfig = field(default_factory=SubwordConfig)
    tokenizer: Literal["char", "sentencepiece"] = "char"  # sentencepiece: subword units ([subwords])

    @property
    def exp(self) -> Path:
        return Path(self.exp_dir)

    @property
    def corpus(self) -> Path:
        """The folder holding the subsets: ``<data.root>/LibriSpeech``."""
        root = Path(self.data.root)
        return (root if root.is_absolute() else self.exp / root) / "LibriSpeech"

    @property
    def test_sets(self) -> list[str]:
        return list(self.data.test) + (["lj-real"] if self.data.ljspeech else [])

    def training_entries(self) -> list[dict]:
        """The training subsets' utterances up to ``data.max_duration``."""
        return [e for e in self.entries(self.data.train) if e["duration"] <= self.data.max_duration]

    def manifest(self, subset: str) -> Path:
        return self.exp / "manifests" / f"{subset}.jsonl"

    def entries(self, subsets) -> list[dict]:
        return [e for s in subsets for e in read_manifest(self.manifest(s))]


def spread(entries: list, n: int) -> list:
    """``n`` entries evenly spaced over the list (all of them when ``n`` is 0 or larger)."""
    if n <= 0 or n >= len(entries):
        return entries
    return [entries[round(i * (len(entries) - 1) / max(1, n - 1))] for i in range(n)]


# --------------------------------------------------------------------------- manifests

def prepare(config: ASRConfig, ljspeech: Path | None = None) -> None:
    """One JSON-lines manifest per subset of ``config.corpus`` under ``<exp>/manifests``, and with
    ``data.ljspeech`` one of the real LJ Speech clips in ``ljspeech`` ("lj-real")."""
    from asr.corpora import read_librispeech, read_ljspeech
    from asr.data import write_manifest

    for subset in dict.fromkeys(config.data.train + config.data.dev + config.data.test):
        path = config.manifest(subset)
        if path.exists():
            continue
        entries = read_librispeech(config.corpus / subset)
        write_manifest(entries, path)
        hours = sum(e["duration"] for e in entries) / 3600
        print(f"{subset}: {len(entries)} utterances, {hours:.2f} h -> {path}")
    if config.data.ljspeech and not config.manifest("lj-real").exists():
        if ljspeech is None:
            raise AsrError("data.ljspeech is set but no LJ Speech folder was given")
        entries = read_ljspeech(ljspeech)
        write_manifest(entries, config.manifest("lj-real"))
        print(f"lj-real: {len(entries)} real LJ Speech clips -> {config.manifest('lj-real')}")


# --------------------------------------------------------------------------- units

def tokenizer(config: ASRConfig, sentences: list[str]) -> Path:
    """Train the sentencepiece model (``<exp>/tokenizer/spm.model``) on ``sentences`` (or on
    ``[subwords] text``); kept while its settings and text stay the same."""
    import hashlib

    from asr.text import SentencePieceTokenizer

    folder = config.exp / "tokenizer"
    path, settings_path = folder / "spm.model", folder / "spm.json"
    if config.subwords.text:
        text = Path(config.subwords.text)
        if not text.is_file():
            raise AsrError(f"{text}: subword training text not found")
        lines = [line for line in text.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        lines = list(sentences)
    settings = {**to_dict(config.subwords), "text_sha1": hashlib.sha1("\n".join(lines).encode()).hexdigest()}
    if path.exists() and settings_path.exists() and json.loads(settings_path.read_text()) == settings:
        return path
    try:
        tok = SentencePieceTokenizer.train(lines, config.subwords.vocab_size, config.subwords.model_type)
    except RuntimeError as exc:  # e.g. a vocabulary larger than the text allows
        reason = str(exc).strip().splitlines()[-1]
        raise AsrError(f"cannot train the sentencepiece model: {reason}") from None
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(tok.model_bytes)
    tmp.replace(path)
    settings_path.write_text(json.dumps(settings) + "\n")
    print(f"sentencepiece {config.subwords.model_type} model, {tok.vocab_size - 1} pieces, "
          f"from {len(lines)} sentences -> {path}")
    return path


def make_tokenizer(config: ASRConfig, sentences: list[str] = ()):
    """The tokenizer the config asks for (training the sentencepiece model on ``sentences`` if needed)."""
    from asr.text import CharTokenizer, SentencePieceTokenizer

    if config.tokenizer == "char":
        return CharTokenizer()
    return SentencePieceTokenizer(tokenizer(config, sentences).read_bytes())


# --------------------------------------------------------------------------- training

def train_ctc(config: ASRConfig, tok, train_entries: list[dict], dev_entries: list[dict], exp_dir: Path,
              schedule: TrainConfig | None = None, init_from: Path | None = None, resume: bool = False,
              progress: bool = True) -> Path:
    """Train a model of ``config`` (model, features) over the units of ``tok`` (``make_tokenizer``)
    with ``schedule`` (default ``config.train``) in ``exp_dir``; returns ``exp_dir/model.pt``.

    ``init_from``: a model file whose weights start the training (fine-tuning); tensors
    whose shapes differ (an output layer over other units) keep their fresh
    initialisation. A resumed run takes everything from its checkpoint.
    """
    from asr import callbacks
    from asr.model import CTCModel, count_parameters
    from asr.training import Trainer, seed_everything

    schedule = schedule or config.train
    model_config = replace(config.model, n_mels=config.features.n_mels, n_classes=tok.vocab_size)
    seed_everything(schedule.seed)  # the initial weights too come from the seed
    model = CTCModel(model_config)
    exp_dir = Path(exp_dir)
    resuming = resume and (exp_dir / "checkpoints" / "last.pt").exists()
    if init_from is not None and not resuming:
        print(f"starting from {init_from} ({load_initial_weights(model, init_from)})")
    hours = sum(e["duration"] for e in train_entries) / 3600
    print(f"model {config.model_name} ({tok.kind}, {tok.vocab_size} classes): {count_parameters(model):,} "
          f"parameters; {len(train_entries)} training utterances ({hours:.2f} h); {schedule.max_steps} steps")
    exp_dir.mkdir(parents=True, exist_ok=True)
    (exp_dir / "config.json").write_text(json.dumps(to_dict(config), indent=2) + "\n")
    augment = (WaveformAugment(config.augment, seed=schedule.seed, sample_rate=config.features.sample_rate)
               if config.augment.active else None)
    trainer = Trainer.for_ctc(model, tok, config.features, train_entries, schedule, exp_dir, dev_entries=dev_entries,
                              transform=augment, callbacks=callbacks.standard(schedule, exp_dir, "CTC loss"))
    started = time.perf_counter()
    trainer.run(resume=resume, progress=progress)
    path = trainer.export(exp_dir / "model.pt")
    print(f"trained to step {trainer.step} in {(time.perf_counter() - started) / 60:.1f} min; model saved to {path}")
    return path


def load_initial_weights(model, path) -> str:
    """Copy a model file's weights into ``model`` where names and shapes agree; says what was copied."""
    from asr.checkpoint import ModelFile

    own = model.state_dict()
    theirs = ModelFile.load(path).weights
    weights = {k: v for k, v in theirs.items() if k in own and own[k].shape == v.shape}
    if not weights:
        raise AsrError(f"{path}: no weights fit this model (another model config?)")
    model.load_state_dict(weights, strict=False)
    fresh = sorted(set(own) - set(weights))
    return f"{len(weights)} of {len(own)} tensors" + (f"; newly initialised: {', '.join(fresh)}" if fresh else "")


# --------------------------------------------------------------------------- language model and tuning

def build_language_model(config: ASRConfig, default_text: Path | None, held_out=(), progress: bool = True):
    """The word n-gram model for beam search, in ``<exp>/lm`` (restartable; finished files are kept).

    ``[lm] source = "download:NAME"`` fetches a file of the official LibriSpeech LM (an
    ``.arpa.gz`` is unpacked and converted; ``librispeech-lm-norm.txt.gz`` is built
    from). Otherwise the model is built from ``[lm] text`` (else ``default_text``),
    leaving out every sentence of ``held_out`` (the dev and test transcripts).
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
        text = Path(config.lm.text) if config.lm.text else default_text
        if text is None or not text.is_file():
            raise AsrError(f"{text}: language model text not found")
        held_out = {normalize_text(t) for t in held_out}
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


def tune(model_path, dev_entries: list[dict], lm_files, decoding: DecodingConfig,
         progress: bool = True) -> DecodingOptions:
    """Grid-search alpha, beta and the blank penalty for ``model_path`` on ``dev_entries``; store the best.

    Writes ``decoding.json`` beside the model (the options, and what they were tuned on)
    and the options into the model file itself. A finished tuning is kept while it is
    newer than the model and the LM and its grid is unchanged.
    """
    from asr.evaluation import grid_search, store_decoding
    from asr.inference import load_recognizer

    model_path = Path(model_path)
    out = model_path.parent / "decoding.json"
    options = DecodingOptions(decoder="beam", beam_width=decoding.beam_width, lm_path=str(lm_files.binary.resolve()),
                              unigrams_path=str(lm_files.unigrams.resolve()), processes=decoding.processes)
    entries = spread(sorted(dev_entries, key=lambda e: e["id"]), decoding.max_utterances)
    plan = {"alphas": list(decoding.alphas), "betas": list(decoding.betas),
            "blank_penalties": list(decoding.blank_penalties), "utterances": len(entries),
            "beam_width": decoding.beam_width, "lm": str(lm_files.binary.resolve())}
    if out.exists() and all(out.stat().st_mtime >= p.stat().st_mtime for p in (model_path, lm_files.binary)):
        previous = json.loads(out.read_text())
        if previous.get("tuned_on", {}).get("plan") == plan:
            chosen = load_recognizer(model_path).decoding
            print(f"{out}: already tuned ({_weights(chosen)})")
            return chosen
    with load_recognizer(model_path) as model:
        result = grid_search(model, entries, options, decoding.alphas, decoding.betas, decoding.blank_penalties,
                             progress=progress)
    best = result.best_point
    store_decoding(model_path, result.best)
    record = {"alpha": result.best.alpha, "beta": result.best.beta, "blank_penalty": result.best.blank_penalty,
              "beam_width": result.best.beam_width, "tuned_on": {
                  "plan": plan, "wer": best.scores.wer.rate, "cer": best.scores.cer.rate,
                  "seconds": round(result.seconds, 1)}}
    out.write_text(json.dumps(record, indent=2) + "\n")
    (model_path.parent / "tune-grid.txt").write_text(result.table() + "\n")
    print(f"alpha/beta/blank grid on {len(entries)} dev utterances ({result.seconds:.0f} s):\n{result.table()}")
    print(f"best: {_weights(result.best)} -> {out} and {model_path}")
    return result.best


def _weights(options: DecodingOptions) -> str:
    return f"alpha {options.alpha:g}, beta {options.beta:g}, blank penalty {options.blank_penalty:g}"


def evaluate(model_path, sets: dict[str, list[dict]], out_dir, processes: int = 2, progress: bool = True) -> dict:
    """WER/CER of ``model_path`` on each set: greedy, and with the model's tuned decoding when it has
    one; files under ``out_dir/<set>/`` and the table in ``out_dir/wer.txt``. Returns the scores by
    set name (greedy), and by ``"<set> beam+LM"``."""
    from asr.evaluation import evaluate_sets, format_table
    from asr.inference import load_recognizer

    with load_recognizer(model_path) as model:
        results = evaluate_sets(model, sets, out_dir, progress=progress)
        rows = [(name, "greedy", s) for name, s in results.items()]
        if model.decoding.decoder == "beam" and model.decoding.lm_path:
            options = replace(model.decoding, processes=processes)
            beam = evaluate_sets(model, sets, out_dir, options, tag="beam-lm", progress=progress)
            setup = f"beam+LM a={options.alpha:g} b={options.beta:g}" + (
                f" bp={options.blank_penalty:g}" if options.blank_penalty else "")
            rows += [(name, setup, s) for name, s in beam.items()]
            results.update({f"{name} beam+LM": s for name, s in beam.items()})
    table = format_table(sorted(rows, key=lambda r: list(sets).index(r[0])))
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "wer.txt").write_text(table + "\n")
    print(table)
    return results
