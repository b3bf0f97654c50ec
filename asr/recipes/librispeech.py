"""LibriSpeech recipe: download -> prepare -> train -> evaluate, and an offline demo.

    python -m asr.recipes.librispeech download --config recipes/librispeech/config.toml
    python -m asr.recipes.librispeech prepare  --config recipes/librispeech/config.toml
    python -m asr.recipes.librispeech train    --config recipes/librispeech/config.toml [--resume]
    python -m asr.recipes.librispeech evaluate --config recipes/librispeech/config.toml

    python -m asr.recipes.librispeech demo [--exp-dir DIR]

``demo`` needs no network and no GPU: it speaks LJ Speech text with TTS voices
into a corpus in the exact LibriSpeech layout (held-out sentences and voices
for dev and test), then runs prepare, train and evaluate on it, and also
scores the real LJ Speech clips. Every stage reads the experiment config and
can be rerun; finished work is skipped.
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from asr.config import load_config
from asr.data import read_librispeech, read_ljspeech, read_manifest, write_manifest
from asr.errors import AsrError
from asr.features import FeatureConfig
from asr.recipes import recipe_config_path, run_stages, shared_data
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
    n_train: int = 4000
    n_dev: int = 100
    n_test: int = 200
    min_words: int = 3
    max_words: int = 16
    dev_voices: tuple[str, ...] = ("espeak-ng:en-029+Annie", "espeak-ng:en-gb-x-rp+m4")
    test_voices: tuple[str, ...] = ("espeak-ng:en-us+f4", "flite:slt")
    rate_range: tuple[float, float] = (0.85, 1.2)
    pitch_range: tuple[float, float] = (0.8, 1.25)
    seed: int = 0


@dataclass
class RecipeConfig:
    exp_dir: str = "exp/librispeech"
    model_name: str = "seed"
    model: dict = field(default_factory=dict)  # overrides of the named model config
    features: FeatureConfig = field(default_factory=FeatureConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)

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
    from asr.model import CTCModel, count_parameters, named_config
    from asr.text import CharTokenizer
    from asr.training import Trainer

    tokenizer = CharTokenizer()
    model_config = named_config(config.model_name, n_mels=config.features.n_mels,
                                n_classes=tokenizer.vocab_size, **config.model)
    model = CTCModel(model_config)
    train_entries = [e for e in _entries(config, config.data.train) if e["duration"] <= config.data.max_duration]
    dev_entries = _entries(config, config.data.dev)
    hours = sum(e["duration"] for e in train_entries) / 3600
    print(f"model {config.model_name}: {count_parameters(model):,} parameters; "
          f"{len(train_entries)} training utterances ({hours:.2f} h); {config.train.max_steps} steps")
    config.exp.mkdir(parents=True, exist_ok=True)
    (config.exp / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    trainer = Trainer.for_ctc(model, tokenizer, config.features, train_entries, config.train, config.exp,
                              dev_entries=dev_entries)
    started = time.perf_counter()
    trainer.run(resume=resume, progress=progress)
    path = trainer.export(config.exp / "model.pt")
    minutes = (time.perf_counter() - started) / 60
    print(f"trained to step {trainer.step} in {minutes:.1f} min; model saved to {path}")
    return path


def evaluate(config: RecipeConfig, progress: bool = True, **_) -> dict:
    """Greedy WER/CER on each test set; ref/hyp/errs files under ``<exp>/results``."""
    from asr.evaluation import evaluate_sets, format_table
    from asr.inference import load_model

    model_path = config.exp / "model.pt"
    model = load_model(model_path)
    sets = {s: read_manifest(config.manifest(s)) for s in config.data.test}
    if config.data.ljspeech:
        sets["lj-real"] = read_manifest(config.manifest("lj-real"))
    results = evaluate_sets(model, sets, config.exp / "results", progress=progress)
    table = format_table([(name, "greedy", s) for name, s in results.items()])
    (config.exp / "results" / "wer.txt").write_text(table + "\n")
    print(table)
    return results


# --------------------------------------------------------------------------- offline demo

def _split_sentences(config: SynthConfig) -> dict[str, list[str]]:
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
    voices = {
        "train-synth": [v for v in available_voices() if v.id not in held_out],
        "dev-synth": [Voice.parse(v) for v in config.synth.dev_voices],
        "test-synth": [Voice.parse(v) for v in config.synth.test_voices],
    }
    started = time.perf_counter()
    make_librispeech_corpus(config.corpus.parent, _split_sentences(config.synth), voices, seed=config.synth.seed,
                            rate_range=config.synth.rate_range, pitch_range=config.synth.pitch_range,
                            progress=progress)
    print(f"synthetic corpus ready in {config.corpus} ({time.perf_counter() - started:.0f} s); "
          f"{len(voices['train-synth'])} training voices, held out: {', '.join(sorted(held_out))}")


def demo(config: RecipeConfig, resume: bool = False, progress: bool = True) -> None:
    started = time.perf_counter()
    synthesize(config, progress=progress)
    prepare(config)
    model_path = config.exp / "model.pt"
    if resume or not model_path.exists():
        train(config, resume=resume, progress=progress)
    else:
        print(f"{model_path} exists: skipping training (delete it, or pass --resume, to train again)")
    evaluate(config, progress=progress)
    print(f"demo finished in {(time.perf_counter() - started) / 60:.1f} min")
    print(f"model: {model_path}")
    print(f"try:   asr transcribe --model {model_path} AUDIO.wav")


STAGES = {"download": download, "prepare": prepare, "train": train, "evaluate": evaluate,
          "synthesize": synthesize, "demo": demo}


def main(argv=None) -> int:
    return run_stages("LibriSpeech recipe (stages: " + ", ".join(STAGES) + ")", STAGES, make_config, argv)


if __name__ == "__main__":
    sys.exit(main())
