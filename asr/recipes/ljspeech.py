"""LJ Speech recipe: pretrain on synthetic speech, fine-tune on real speech, and measure
what beam search, a language model and subword units add on real clips.

    python -m asr.recipes.ljspeech demo [--exp-dir DIR] [--config recipes/ljspeech/demo.toml]

Everything runs offline from the shared data folder. The stages, in order (each
can be run alone with ``python -m asr.recipes.ljspeech STAGE``; each is
restartable, and finished work is skipped):

    synthesize  the LJ Speech text (lj-text-train.txt) spoken by TTS voices, LibriSpeech layout
    prepare     manifests: train-synth, dev-synth; the real clips lj-train (LJ001, less lj-dev),
                lj-dev (a few LJ001 clips, for tuning) and lj-test (LJ002)
    lm          a word n-gram model of lj-text-train.txt              -> <exp>/lm/lm.bin
    pretrain    a character model trained on the synthetic speech     -> <exp>/char/pretrain/model.pt
    finetune    ... trained on the real lj-train clips                -> <exp>/char/finetune/model.pt
    tune        alpha and beta for beam+LM on lj-dev                  -> <exp>/char/finetune/decoding.json
    tokenizer   a sentencepiece model of the training transcripts     -> <exp>/tokenizer/spm.model
    subwords    pretrain, finetune and tune a sentencepiece model     -> <exp>/subwords/finetune/model.pt
                (its encoder starts from the pretrained character model's)
    evaluate    WER and CER on lj-test: greedy, beam without LM, beam with LM, beam with LM and subwords
    demo        all of the above

Training, the LM and tuning are the library's (``asr.experiment``) and the synthetic
corpus is the LibriSpeech demo's kind (``asr.recipes.synth``); this recipe adds the
real-speech splits, fine-tuning (training continued from pretrained weights with a
new, short schedule) and the comparison. None of the LJ001/LJ002 sentences is in
lj-text-train.txt, so neither the synthetic corpus nor the LM leaks the test set.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from asr import experiment
from asr.config import load_config
from asr.corpora import read_ljspeech
from asr.data import read_manifest, write_manifest
from asr.decoding import DecodingOptions
from asr.errors import AsrError
from asr.experiment import ASRConfig, SubsetsConfig
from asr.features import FeatureConfig
from asr.model import ModelConfig, named_config
from asr.recipes import print_finish, recipe_config_path, shared_data, stage_runner
from asr.recipes.synth import SentenceSynthConfig, synthesize_sentences
from asr.training import TrainConfig


@dataclass
class RealConfig:
    """The real LJ Speech clips: fine-tuning, tuning and test splits."""

    root: str = ""  # an LJSpeech-1.1 folder; default: the shared ljspeech/LJSpeech-1.1
    train_prefix: str = "LJ001"  # clips for fine-tuning (less the dev clips)
    test_prefix: str = "LJ002"  # clips for the test
    n_dev: int = 20  # clips of train_prefix, evenly spaced, held out for tuning alpha and beta
    max_train: int = 0  # at most this many fine-tuning clips (0: all); for quick trials
    max_test: int = 0  # at most this many test clips (0: all)


def _synth_defaults() -> SentenceSynthConfig:
    # the test set is real speech: no synthetic test sentences, and only the dev voices held out
    dev_voices = SentenceSynthConfig().dev_voices
    return SentenceSynthConfig(n_train=3000, n_dev=60, n_test=0, dev_voices=dev_voices, test_voices=dev_voices)


@dataclass
class LJConfig(ASRConfig):
    exp_dir: str = "exp/ljspeech"
    model_name: str = "small"
    model: ModelConfig = field(default_factory=lambda: named_config("small"))
    features: FeatureConfig = field(default_factory=lambda: FeatureConfig(n_mels=80))
    data: SubsetsConfig = field(default_factory=lambda: SubsetsConfig(train=("train-synth",), dev=("dev-synth",),
                                                                      test=()))
    synth: SentenceSynthConfig = field(default_factory=_synth_defaults)
    real: RealConfig = field(default_factory=RealConfig)
    # A character model already trained on synthetic speech of lj-text-train.txt, such as the
    # LibriSpeech demo's exp/demo/model.pt: when the file exists, it is the pretrained model
    # and the pretraining run is skipped. Its features must match [features].
    pretrained: str = ""
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=100, lr=1e-3))
    # pretraining of the subword model, which starts from the pretrained character model's encoder
    subword_pretrain: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=200))

    def units(self, kind: str) -> Path:
        """The folder of the character (``"char"``) or subword (``"subwords"``) models."""
        return self.exp / kind


def make_config(path: str | None, stage: str) -> LJConfig:
    default = recipe_config_path("ljspeech", "demo")
    return load_config(LJConfig(), path or (default if default.exists() else None))


# --------------------------------------------------------------------------- data

def synthesize(config: LJConfig, progress: bool = True) -> None:
    """The synthetic pretraining corpus: lj-text-train.txt spoken by TTS voices, LibriSpeech layout."""
    synthesize_sentences(config.synth, config.corpus.parent, shared_data("text", "lj-text-train.txt"), progress)


def prepare(config: LJConfig) -> None:
    """Manifests of the synthetic subsets, and of the real clips: lj-train, lj-dev, lj-test."""
    experiment.prepare(config)
    real = ("lj-train", "lj-dev", "lj-test")
    if all(config.manifest(name).exists() for name in real):
        return
    root = Path(config.real.root) if config.real.root else shared_data("ljspeech", "LJSpeech-1.1")
    entries = sorted(read_ljspeech(root), key=lambda e: e["id"])
    pool = [e for e in entries if e["id"].startswith(config.real.train_prefix + "-")]
    test = [e for e in entries if e["id"].startswith(config.real.test_prefix + "-")]
    if not pool or not test:
        raise AsrError(f"{root}: no {config.real.train_prefix}-* or no {config.real.test_prefix}-* clips")
    dev = experiment.spread(pool, config.real.n_dev) if config.real.n_dev else []
    dev_ids = {e["id"] for e in dev}
    train = [e for e in pool if e["id"] not in dev_ids]
    if config.real.max_train:
        train = experiment.spread(train, config.real.max_train)
    if config.real.max_test:
        test = experiment.spread(test, config.real.max_test)
    for name, part in zip(real, (train, dev, test)):
        write_manifest(part, config.manifest(name))
        minutes = sum(e["duration"] for e in part) / 60
        print(f"{name}: {len(part)} real clips, {minutes:.1f} min -> {config.manifest(name)}")


def lm(config: LJConfig, progress: bool = True):
    """The word n-gram model for beam search, from the shared lj-text-train.txt (less any dev or test sentence)."""
    held_out = [e["text"] for name in ("dev-synth", "lj-dev", "lj-test") if config.manifest(name).exists()
                for e in read_manifest(config.manifest(name))]
    return experiment.build_language_model(config, None if config.lm.text else shared_data("text", "lj-text-train.txt"),
                                           held_out, progress)


def tokenizer(config: LJConfig) -> Path:
    """The sentencepiece model of the subword setup, trained on the training transcripts."""
    return experiment.tokenizer(config, [e["text"] for e in config.entries(config.data.train)])


# --------------------------------------------------------------------------- models

def _train(config: LJConfig, exp_dir: Path, train_entries, dev_entries, schedule: TrainConfig,
           init_from: Path | None, resume: bool, progress: bool) -> Path:
    """Train unless ``exp_dir/model.pt`` exists; an interrupted run continues from its checkpoint;
    ``resume=False`` (``--restart``) trains again from the start."""
    path = exp_dir / "model.pt"
    if path.exists() and resume:
        print(f"{path} exists: skipping (--restart trains again)")
        return path
    tok = experiment.make_tokenizer(config, [e["text"] for e in config.entries(config.data.train)])
    return experiment.train_ctc(config, tok, train_entries, dev_entries, exp_dir, schedule, init_from=init_from,
                                resume=resume, progress=progress)


def _synthetic(config: LJConfig) -> tuple[list[dict], list[dict]]:
    return config.training_entries(), config.entries(config.data.dev)


def _pretrain(config: LJConfig, kind: str, resume: bool, progress: bool) -> Path:
    train, dev = _synthetic(config)
    if kind == "char":
        target = config.units("char") / "pretrain" / "model.pt"
        if config.pretrained and Path(config.pretrained).is_file() and not target.exists():
            import shutil

            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(config.pretrained, target.with_suffix(".tmp"))
            target.with_suffix(".tmp").replace(target)
            print(f"pretrained character model: {config.pretrained} -> {target}")
        return _train(config, config.units("char") / "pretrain", train, dev, config.train, None, resume, progress)
    # the subword model starts from the character model's encoder; its output layer starts afresh
    start = pretrain(config, progress=progress)
    return _train(_subword_config(config), config.units("subwords") / "pretrain", train, dev,
                  config.subword_pretrain, start, resume, progress)


def _finetune(config: LJConfig, kind: str, resume: bool, progress: bool) -> Path:
    start = config.units(kind) / "pretrain" / "model.pt"
    if not start.exists():
        raise AsrError(f"{start} not found: run the pretrain stage first")
    train, dev = read_manifest(config.manifest("lj-train")), read_manifest(config.manifest("lj-dev"))
    unit_config = config if kind == "char" else _subword_config(config)
    return _train(unit_config, config.units(kind) / "finetune", train, dev, config.finetune, start, resume, progress)


def _subword_config(config: LJConfig) -> LJConfig:
    return replace(config, tokenizer="sentencepiece")


def pretrain(config: LJConfig, resume: bool = True, progress: bool = True) -> Path:
    """The character model, trained on the synthetic speech."""
    return _pretrain(config, "char", resume, progress)


def finetune(config: LJConfig, resume: bool = True, progress: bool = True) -> Path:
    """The pretrained character model, trained further on the real lj-train clips."""
    return _finetune(config, "char", resume, progress)


def tune(config: LJConfig, progress: bool = True) -> DecodingOptions:
    """alpha and beta of beam+LM for the fine-tuned character model, on lj-dev."""
    return _tune(config, "char", progress)


def _tune(config: LJConfig, kind: str, progress: bool) -> DecodingOptions:
    model_path = config.units(kind) / "finetune" / "model.pt"
    if not model_path.exists():
        raise AsrError(f"{model_path} not found: run the finetune stage first")
    dev = read_manifest(config.manifest("lj-dev"))
    if not dev:
        raise AsrError("lj-dev is empty: set real.n_dev to hold out clips for tuning")
    return experiment.tune(model_path, dev, lm(config, progress=progress), config.decoding, progress=progress)


def subwords(config: LJConfig, resume: bool = True, progress: bool = True) -> Path:
    """The sentencepiece model: pretrain (from the character model's encoder), fine-tune, tune."""
    tokenizer(config)
    _pretrain(config, "subwords", resume, progress)
    path = _finetune(config, "subwords", resume, progress)
    _tune(config, "subwords", progress)
    return path


# --------------------------------------------------------------------------- evaluation

def evaluate(config: LJConfig, progress: bool = True) -> list[tuple[str, str, object]]:
    """WER and CER on lj-test for the four setups; ``<exp>/results/wer.txt`` and per-setup hyp/errs files."""
    from asr.evaluation import evaluate_sets, format_table
    from asr.inference import load_recognizer

    test = {"lj-test": read_manifest(config.manifest("lj-test"))}
    out = config.exp / "results"
    rows = []
    char = load_recognizer(config.units("char") / "finetune" / "model.pt")
    sub = load_recognizer(config.units("subwords") / "finetune" / "model.pt")
    beam = DecodingOptions(decoder="beam", beam_width=config.decoding.beam_width,
                           processes=config.decoding.processes)
    setups = [
        ("greedy", "greedy", char, DecodingOptions()),
        ("beam", "beam, no LM", char, beam),
        ("beam-lm", "beam + LM", char, _tuned(char)),
        ("subwords-beam-lm", "beam + LM + subwords", sub, _tuned(sub)),
    ]
    for tag, name, model, options in setups:
        options = replace(options, processes=config.decoding.processes)
        scores = evaluate_sets(model, test, out, options, tag=tag, progress=progress)["lj-test"]
        rows.append(("lj-test (real)", name, scores))
    table = format_table(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "wer.txt").write_text(table + "\n")
    print(table)
    return rows


def _tuned(model) -> DecodingOptions:
    if not model.decoding.lm_path:
        raise AsrError("this model has no tuned beam+LM settings: run the tune stage first")
    return model.decoding


def demo(config: LJConfig, resume: bool = True, progress: bool = True) -> list:
    started = time.perf_counter()
    synthesize(config, progress=progress)
    prepare(config)
    files = lm(config, progress=progress)
    pretrain(config, resume=resume, progress=progress)
    finetune(config, resume=resume, progress=progress)
    tune(config, progress=progress)
    subwords(config, resume=resume, progress=progress)
    rows = evaluate(config, progress=progress)
    print(f"subword model:   {config.units('subwords') / 'finetune' / 'model.pt'}")
    print(f"language model:  {files.binary}")
    char = config.units("char") / "finetune" / "model.pt"
    print_finish(started, char, f"asr transcribe --model {char} AUDIO.wav   (beam+LM with the tuned weights; "
                 "--decoder greedy for greedy)", config.exp)
    return rows


STAGES = {"synthesize": synthesize, "prepare": prepare, "lm": lm, "pretrain": pretrain, "finetune": finetune,
          "tune": tune, "tokenizer": tokenizer, "subwords": subwords, "evaluate": evaluate, "demo": demo}


main = stage_runner("LJ Speech recipe", STAGES, make_config)


if __name__ == "__main__":
    sys.exit(main())
