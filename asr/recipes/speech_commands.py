"""Speech Commands recipe: keyword spotting on v0.01 (30 words) or v0.02 (35 words).

    python -m asr.recipes.speech_commands STAGE --config recipes/speech_commands/config.toml [--resume]

with STAGE download, prepare, lr_find, train, evaluate or compare, in that order; and, offline,

    python -m asr.recipes.speech_commands demo [--exp-dir DIR]

``data.task = "all"`` classifies every word of the corpus; ``"12"`` is the
classic task of ten words (yes no up down left right on off stop go) plus
``_unknown_`` (all other words) and ``_silence_`` (stretches of
``_background_noise_``). The official ``validation_list.txt`` and
``testing_list.txt`` split the corpus; ``_background_noise_`` also feeds the
noise mixing of training clips. ``data.corpus`` points the recipe at any other
corpus in the same folder-per-label layout.

``demo`` needs no network: ``synthesize`` speaks the words with the TTS voices
(held-out voices for validation and testing) in the Speech Commands layout,
then prepare, train and evaluate run on it. ``compare`` trains the shared
encoder and the three baselines on the prepared task and tabulates them.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from asr import classify
from asr.classify import ClassifyConfig, ModelSection
from asr.config import load_config
from asr.corpora import KWS12_LABELS, background_noise_files, read_label_folders, split_by_lists, to_twelve_classes
from asr.data import describe_splits, read_task, write_task
from asr.download import DownloadConfig
from asr.errors import AsrError
from asr.recipes import print_finish, recipe_config_path, stage_runner, train_once
from asr.reports import write_json

VERSIONS = ("v0.01", "v0.02", "synthetic")


@dataclass
class SpeechCommandsData:
    version: str = "v0.02"  # "v0.01", "v0.02", or "synthetic" (made by the synthesize stage)
    task: str = "all"  # "all": every word of the corpus; "12": ten words, _unknown_ and _silence_
    root: str = "data"  # downloads and corpora; relative paths are under exp_dir
    corpus: str = ""  # use this folder-per-label corpus instead of the version's
    unknown_share: float = 0.1  # task "12": unknown-word clips per clip of the ten words
    silence_share: float = 0.1  # task "12": silence clips per clip of the ten words
    seed: int = 0


@dataclass
class WordSynthConfig:
    """The offline corpus: words spoken by the TTS voices, in the Speech Commands layout."""

    words: tuple[str, ...] = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
                              "zero", "one", "two", "three", "bed", "bird", "cat", "dog", "tree", "wow")
    voices: tuple[str, ...] = ()  # default: every catalogue voice installed here
    validation_voices: tuple[str, ...] = ("espeak-ng:en-029+Annie", "espeak-ng:en-gb-x-rp+m4")
    testing_voices: tuple[str, ...] = ("flite:slt", "espeak-ng:en-us+f4")
    per_voice: int = 4
    noise_seconds: float = 30.0
    seed: int = 0
    workers: int = 1


@dataclass
class CompareConfig:
    kinds: tuple[str, ...] = ("encoder", "cnn2d", "complex_cnn", "m5")
    init_from: str = ""  # also train the encoder from this ASR model's encoder weights ("encoder+asr")
    lrs: dict[str, float] = field(default_factory=dict)  # peak learning rate per variant name; default: train.lr


@dataclass
class SpeechCommandsConfig(ClassifyConfig):
    """The Speech Commands recipe: the classification config, the corpus version and task, the
    synthetic corpus and the model comparison."""

    exp_dir: str = "exp/speech_commands"
    data: SpeechCommandsData = field(default_factory=SpeechCommandsData)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    synth: WordSynthConfig = field(default_factory=WordSynthConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)

    @property
    def root(self) -> Path:
        root = Path(self.data.root)
        return root if root.is_absolute() else self.exp / root

    @property
    def corpus(self) -> Path:
        if self.data.corpus:
            return Path(self.data.corpus)
        if self.data.version not in VERSIONS:
            raise AsrError(f"unknown Speech Commands version {self.data.version!r}; choose from {', '.join(VERSIONS)}")
        return self.root / f"speech_commands_{self.data.version}"


def make_config(path: str | None, stage: str) -> SpeechCommandsConfig:
    default = recipe_config_path("speech_commands", "demo" if stage == "demo" else "config")
    return load_config(SpeechCommandsConfig(), path or (default if default.exists() else None))


# --------------------------------------------------------------------------- stages

def download(config: SpeechCommandsConfig, progress: bool = True) -> None:
    """Fetch the corpus archive (checksum verified, resumable) and unpack it."""
    from asr.download import SPEECH_COMMANDS, fetch

    version = config.data.version
    if version not in SPEECH_COMMANDS:
        raise AsrError(f"nothing to download for version {version!r} (downloadable: {', '.join(SPEECH_COMMANDS)})")
    resource = SPEECH_COMMANDS[version]
    if (config.corpus / f".{resource.filename}.extracted").exists():
        print(f"{version}: already in {config.corpus}")
        return
    fetch(resource, config.root / "downloads", config.corpus, mirror=config.download.mirror or None,
          checksums=config.download.checksums or None, progress=progress)
    print(f"{version}: extracted to {config.corpus}")


def synthesize(config: SpeechCommandsConfig, progress: bool = True) -> None:
    """Speak the synthetic corpus (restartable: a finished corpus is skipped)."""
    from asr.recipes.synth import make_speech_commands_corpus
    from asr.recipes.tts import Voice, available_voices

    s = config.synth
    if config.data.version != "synthetic" and not config.data.corpus:
        raise AsrError("the synthesize stage makes data.version = \"synthetic\"; set it in the config")
    voices = [Voice.parse(v) for v in s.voices] if s.voices else list(available_voices())
    if not voices:
        raise AsrError("no TTS voice is installed (apt-get install espeak-ng flite)")
    held_out = [Voice.parse(v) for v in s.validation_voices + s.testing_voices]
    voices += [v for v in held_out if v not in voices]
    started = time.perf_counter()
    make_speech_commands_corpus(config.corpus, list(s.words), voices, per_voice=s.per_voice,
                                validation_voices=[Voice.parse(v) for v in s.validation_voices],
                                testing_voices=[Voice.parse(v) for v in s.testing_voices], seed=s.seed,
                                noise_seconds=s.noise_seconds, workers=s.workers, progress=progress)
    print(f"synthetic Speech Commands corpus ready in {config.corpus} ({time.perf_counter() - started:.0f} s): "
          f"{len(s.words)} words x {len(voices)} voices x {s.per_voice}")


def prepare(config: SpeechCommandsConfig) -> None:
    """Manifests for train (training), dev (validation_list.txt) and test (testing_list.txt)."""
    corpus = config.corpus
    entries = read_label_folders(corpus)
    parts = split_by_lists(entries, corpus)
    noise = background_noise_files(corpus)
    if config.data.task == "12":
        d = config.data
        splits = {name: to_twelve_classes(parts[part], noise, d.unknown_share, d.silence_share, seed=d.seed + i)
                  for i, (name, part) in enumerate((("train", "training"), ("dev", "validation"),
                                                    ("test", "testing")))}
        labels = list(KWS12_LABELS)
        missing = sorted({label for label in labels[:10]} - {e["label"] for e in entries})
        if missing:
            print(f"note: the corpus has no clips of {', '.join(missing)}")
    elif config.data.task == "all":
        splits = {"train": parts["training"], "dev": parts["validation"], "test": parts["testing"]}
        labels = sorted({e["label"] for e in entries})
    else:
        raise AsrError(f"unknown task {config.data.task!r}; choose \"all\" or \"12\"")
    write_task(config.exp, labels, splits, noise)
    print(f"{corpus}: {describe_splits(labels, splits)}; {len(noise)} background noise recordings")


def train(config: SpeechCommandsConfig, resume: bool = True, progress: bool = True) -> dict:
    return classify.train_stage(config, resume=resume, progress=progress)


def evaluate(config: SpeechCommandsConfig, progress: bool = True) -> dict:
    return classify.evaluate_stage(config, progress=progress, sets=("dev", "test"))


def lr_find(config: SpeechCommandsConfig, progress: bool = True) -> dict:
    return classify.lr_find_stage(config, progress=progress)


def compare(config: SpeechCommandsConfig, resume: bool = True, progress: bool = True) -> list[dict]:
    """The shared encoder (from scratch, and from an ASR model if ``compare.init_from``) against the baselines."""
    variants = {}
    for kind in config.compare.kinds:
        convs = config.model.convs_per_block if kind == config.model.kind else 1  # the 2-D CNNs' only
        variants[kind] = (replace(config.model, kind=kind, init_from="", convs_per_block=convs),
                          config.compare.lrs.get(kind))
    if config.compare.init_from:
        name = "encoder+asr"
        variants[name] = (replace(config.model, kind="encoder", init_from=config.compare.init_from, convs_per_block=1),
                          config.compare.lrs.get(name))
    return compare_variants(config, variants, resume=resume, progress=progress)


def compare_variants(config: SpeechCommandsConfig, variants: dict[str, tuple[ModelSection, float | None]],
                  resume: bool = True, progress: bool = True) -> list[dict]:
    """Train and test several models on the prepared task, one folder each under ``<exp>/compare/``.

    ``variants`` maps a name to (model section, peak learning rate or None for
    ``train.lr``). Writes ``<exp>/compare/results.md`` (accuracy, parameters,
    training time) and ``results.json``; a variant whose folder already holds a
    result is not trained again.
    """
    labels, splits, noise = read_task(config.exp)
    root = config.exp / "compare"
    rows = []
    for name, (section, lr) in variants.items():
        sub = replace(config, exp_dir=str(root / name), model=section,
                      train=replace(config.train, lr=lr) if lr else config.train)
        result_path = sub.exp / "result.json"
        if result_path.exists() and resume:
            rows.append(json.loads(result_path.read_text()))
            print(f"{name}: already done ({100 * rows[-1]['test_accuracy']:.2f}%); --restart redoes it")
            continue
        print(f"=== {name}")
        write_task(sub.exp, labels, splits, noise)
        summary = classify.train_classifier(sub, labels, splits, noise, sub.exp, resume=resume, progress=progress)
        report = classify.evaluate_stage(sub, progress=progress, sets=("test",))["test"]
        row = {"name": name, "kind": section.kind, "init_from": section.init_from, "lr": sub.train.lr,
               "parameters": summary["parameters"], "steps": summary["steps"], "best_step": summary["best_step"],
               "train_seconds": summary["train_seconds"], "dev_accuracy": summary["dev_accuracy"],
               "test_accuracy": report.accuracy}
        write_json(row, result_path)
        rows.append(row)
    head = "| model | parameters | steps (best) | training time | dev accuracy | test accuracy |"
    lines = [head, "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        dev = "-" if r["dev_accuracy"] is None else f"{100 * r['dev_accuracy']:.2f}%"
        lines.append(f"| {r['name']} | {r['parameters']:,} | {r['steps']} ({r['best_step']}) | "
                     f"{r['train_seconds'] / 60:.1f} min | {dev} | {100 * r['test_accuracy']:.2f}% |")
    root.mkdir(parents=True, exist_ok=True)
    (root / "results.md").write_text("\n".join(lines) + "\n")
    write_json(rows, root / "results.json")
    print("\n".join(lines))
    return rows


def demo(config: SpeechCommandsConfig, resume: bool = True, progress: bool = True) -> None:
    started = time.perf_counter()
    synthesize(config, progress=progress)
    prepare(config)
    model_path = config.exp / "model.pt"
    train_once(model_path, lambda: train(config, resume=resume, progress=progress), resume)
    evaluate(config, progress=progress)
    print_finish(started, model_path, f"asr classify --model {model_path} --top-k 3 AUDIO.wav", config.exp)


STAGES = {"download": download, "synthesize": synthesize, "prepare": prepare, "lr_find": lr_find, "train": train,
          "evaluate": evaluate, "compare": compare, "demo": demo}


main = stage_runner("Speech Commands recipe", STAGES, make_config)


if __name__ == "__main__":
    sys.exit(main())
