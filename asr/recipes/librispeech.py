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
(``[lm] source = "download:3-gram.pruned.1e-7.arpa.gz"``) or one built with KenLM
from a text (``[lm] text``; by default the shared LJ Speech text), into
``<exp>/lm``. ``tokenizer`` trains a sentencepiece model on the training
transcripts, which ``train`` uses when the config says ``tokenizer =
"sentencepiece"``. ``tune`` chooses the LM weight, word bonus and blank penalty on
the dev set and stores them in ``model.pt``, so that ``evaluate`` and ``asr
transcribe`` decode with them.

``demo`` needs no network and no GPU: it speaks LJ Speech text with TTS voices into a
corpus in the exact LibriSpeech layout (held-out sentences and voices for dev and
test), then runs prepare, train, lm, tune and evaluate on it, and also scores the
real LJ Speech clips. Every stage can be rerun; finished work is skipped.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from asr import experiment
from asr.config import load_config
from asr.errors import AsrError
from asr.experiment import ASRConfig
from asr.recipes import print_finish, recipe_config_path, shared_data, stage_runner, train_once
from asr.recipes.synth import SentenceSynthConfig, synthesize_sentences


@dataclass
class LibriSpeechConfig(ASRConfig):
    exp_dir: str = "exp/librispeech"
    synth: SentenceSynthConfig = field(default_factory=SentenceSynthConfig)  # the demo's corpus
    # > 0: the demo's training budget (train.time_budget_minutes) shrinks, when synthesis ran slowly,
    # so that the whole demo ends within this many minutes; demo_reserve_minutes are kept for the
    # LM, tuning and evaluation after training, or more on a slow machine: that work takes about
    # demo_reserve_share of what synthesis and preparation took (both are CPU-bound)
    demo_minutes: float = 0.0
    demo_reserve_minutes: float = 3.0
    demo_reserve_share: float = 0.8


def make_config(path: str | None, stage: str) -> LibriSpeechConfig:
    default = recipe_config_path("librispeech", "demo" if stage == "demo" else "config")
    return load_config(LibriSpeechConfig(), path or (default if default.exists() else None))


def lj_text() -> Path:
    return shared_data("text", "lj-text-train.txt")


# --------------------------------------------------------------------------- stages

def download(config: LibriSpeechConfig, progress: bool = True) -> None:
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


def prepare(config: LibriSpeechConfig) -> None:
    """One JSON-lines manifest per subset, under ``<exp>/manifests``."""
    experiment.prepare(config, shared_data("ljspeech", "LJSpeech-1.1") if config.data.ljspeech else None)


def tokenizer(config: LibriSpeechConfig) -> Path:
    """Train the sentencepiece model on the training transcripts (``<exp>/tokenizer/spm.model``)."""
    return experiment.tokenizer(config, [e["text"] for e in config.entries(config.data.train)])


def train(config: LibriSpeechConfig, resume: bool = True, progress: bool = True) -> Path:
    """Train the CTC model; writes ``<exp>/model.pt``, TensorBoard logs and a learning curve."""
    tok = experiment.make_tokenizer(config, [e["text"] for e in config.entries(config.data.train)])
    return experiment.train_ctc(config, tok, config.training_entries(), config.entries(config.data.dev), config.exp,
                                resume=resume, progress=progress)


def lm(config: LibriSpeechConfig, progress: bool = True):
    """The word n-gram model for beam search, in ``<exp>/lm``; no dev or test sentence is in its text."""
    held_out = [e["text"] for s in list(config.data.dev) + config.test_sets if config.manifest(s).exists()
                for e in config.entries([s])]
    return experiment.build_language_model(config, None if config.lm.text else lj_text(), held_out, progress)


def tune(config: LibriSpeechConfig, progress: bool = True):
    """Choose the LM weight, word bonus and blank penalty on the dev set for ``<exp>/model.pt``."""
    return experiment.tune(config.exp / "model.pt", config.entries(config.data.dev), lm(config, progress),
                           config.decoding, progress=progress)


def evaluate(config: LibriSpeechConfig, progress: bool = True) -> dict:
    """WER/CER on each test set: greedy, and beam+LM once ``tune`` has run; files under ``<exp>/results``."""
    sets = {s: config.entries([s]) for s in config.test_sets}
    return experiment.evaluate(config.exp / "model.pt", sets, config.exp / "results", config.decoding.processes,
                               progress)


# --------------------------------------------------------------------------- offline demo

def synthesize(config: LibriSpeechConfig, progress: bool = True) -> None:
    """Speak the demo corpus (restartable: finished subsets are skipped)."""
    synthesize_sentences(config.synth, config.corpus.parent, lj_text(), progress)


def fit_demo_budget(config: LibriSpeechConfig, elapsed_minutes: float) -> LibriSpeechConfig:
    """``config`` with a training budget that ends the demo within ``demo_minutes``.

    Training gets what is left after ``elapsed_minutes`` (synthesis and preparation)
    and the reserve for the LM, tuning and evaluation: ``demo_reserve_minutes``, or
    ``demo_reserve_share`` of ``elapsed_minutes`` where that is more (a slow machine is slow
    at both). Never more than its own ``time_budget_minutes``, never less than one minute.
    Unchanged when either is 0.
    """
    budget = config.train.time_budget_minutes
    if config.demo_minutes <= 0 or budget <= 0:
        return config
    reserve = max(config.demo_reserve_minutes, config.demo_reserve_share * elapsed_minutes)
    left = max(1.0, round(config.demo_minutes - reserve - elapsed_minutes, 1))
    if left >= budget:
        return config
    print(f"demo: {elapsed_minutes:.1f} min gone before training; its budget cut from {budget:g} to {left:g} min "
          f"to end within {config.demo_minutes:g} (demo_minutes)")
    return replace(config, train=replace(config.train, time_budget_minutes=left))


def demo(config: LibriSpeechConfig, resume: bool = True, progress: bool = True) -> None:
    from asr.lm import kenlm_programs_built

    started = time.perf_counter()
    synthesize(config, progress=progress)
    prepare(config)
    model_path = config.exp / "model.pt"
    fresh = not resume or not (config.exp / "checkpoints" / "last.pt").exists()
    if fresh and not (resume and model_path.exists()):  # a fresh training run (a resumed one keeps its schedule)
        config = fit_demo_budget(config, (time.perf_counter() - started) / 60)
    train_once(model_path, lambda: train(config, resume=resume, progress=progress), resume)
    if kenlm_programs_built():
        tune(config, progress=progress)
    else:
        print("KenLM programs not built: no beam+LM rows (run bash tools/build_kenlm.sh, then the tune stage)")
    evaluate(config, progress=progress)
    print_finish(started, model_path, f"asr transcribe --model {model_path} AUDIO.wav", config.exp)


STAGES = {"download": download, "prepare": prepare, "lm": lm, "tokenizer": tokenizer, "train": train,
          "tune": tune, "evaluate": evaluate, "synthesize": synthesize, "demo": demo}


main = stage_runner("LibriSpeech recipe", STAGES, make_config)


if __name__ == "__main__":
    sys.exit(main())
