"""CMU AN4 recipe: real speech of 74 training speakers, a small vocabulary (letters, digits,
numbers, dates, commands), and the benchmark that DS2-style models publish.

    python -m asr.recipes.an4 STAGE [--config recipes/an4/config.toml] [--exp-dir DIR]

with STAGE, in order:

    download    the official an4_sphere.tar.gz (NIST SPHERE), checksum verified, resumable
    prepare     FLAC copies and manifests: train and dev (speakers split, never utterances),
                and test when the corpus has its test part; reads the SPHERE archive or the
                raw big-endian form (the shared data's an4/)
    synthesize  AN4-like prompts (spelled words, letter and number strings, dates, commands)
                spoken by TTS voices, LibriSpeech layout: the pretraining corpus
    lm          a word n-gram of the training speakers' transcripts and the prompts
    pretrain    the model trained on the synthetic prompts (or ``pretrained``'s weights)
    train       ... fine-tuned on the real training speakers
    tune        alpha, beta and the blank penalty on the dev speakers, stored in model.pt
    evaluate    WER and CER on dev (and test), greedy and with the LM
    demo        all of the above, offline (under 30 minutes on 2 CPU cores)

The official test part is never used to choose anything: its speakers are not the dev
speakers, and no stage reads it but ``evaluate``. ``ASR_DEMO_SHORT=1`` runs the demo in its
short mode (fewer prompts and steps, the same code path), as CI does.
"""

from __future__ import annotations

import os
import random
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from asr import experiment
from asr.config import load_config
from asr.data import read_manifest, write_manifest
from asr.errors import AsrError
from asr.experiment import ASRConfig, SubsetsConfig
from asr.model import ModelConfig, named_config
from asr.recipes import print_finish, recipe_config_path, shared_data, stage_runner, train_once
from asr.training import TrainConfig


@dataclass
class AN4Data:
    root: str = ""  # an AN4 folder (etc/, wav/); "" = the download under <exp>/data/an4, else the shared an4/
    dev_speakers: int = 10  # training speakers held out as the dev set (5 of them female where there are)
    seed: int = 0


@dataclass
class PromptConfig:
    """The synthetic pretraining corpus: AN4-like prompts spoken by the TTS voices."""

    prompts: int = 3000  # generated prompts (the training speakers' transcripts come on top)
    dev_prompts: int = 100
    renditions: int = 2  # times each prompt is spoken, each time by another voice
    dev_voices: tuple[str, ...] = ("espeak-ng:en-029+Annie", "espeak-ng:en-gb-x-rp+m4")
    engines: tuple[str, ...] = ("espeak-ng", "flite")
    rate_range: tuple[float, float] = (0.8, 1.2)
    pitch_range: tuple[float, float] = (0.8, 1.25)
    seed: int = 0
    workers: int = 0  # synthesis processes; 0: one per CPU core


@dataclass
class ShortMode:
    """What ``ASR_DEMO_SHORT=1`` (CI) changes: fewer prompts and steps; 0 leaves a value as it is."""

    prompts: int = 0
    pretrain_steps: int = 0
    finetune_steps: int = 0


@dataclass
class AN4Config(ASRConfig):
    exp_dir: str = "exp/an4"
    model_name: str = "small"
    model: ModelConfig = field(default_factory=lambda: named_config("small"))
    an4: AN4Data = field(default_factory=AN4Data)
    # the synthetic corpus, in the LibriSpeech layout under <exp>/data
    data: SubsetsConfig = field(default_factory=lambda: SubsetsConfig(train=("an4-synth",), dev=("an4-synth-dev",),
                                                                      test=()))
    synth: PromptConfig = field(default_factory=PromptConfig)
    pretrained: str = ""  # a model file to start pretraining from (e.g. the LibriSpeech demo's); "" = from scratch
    pretrain: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=1000, lr=3e-3))
    short: ShortMode = field(default_factory=ShortMode)

    @property
    def corpus_root(self) -> Path:
        if self.an4.root:
            return Path(self.an4.root)
        downloaded = self.exp / "data" / "an4"
        return downloaded if downloaded.is_dir() else shared_data("an4")


def make_config(path: str | None, stage: str) -> AN4Config:
    default = recipe_config_path("an4", "config")
    config = load_config(AN4Config(), path or (default if default.exists() else None))
    return short_mode(config) if os.environ.get("ASR_DEMO_SHORT") else config


def short_mode(config: AN4Config) -> AN4Config:
    """The demo in CI: ``[short]``'s prompts and steps (no time budgets); the same stages and code."""
    s = config.short
    pretrain = replace(config.pretrain, max_steps=s.pretrain_steps, time_budget_minutes=0.0) \
        if s.pretrain_steps else config.pretrain
    finetune = replace(config.train, max_steps=s.finetune_steps, time_budget_minutes=0.0) \
        if s.finetune_steps else config.train
    synth = replace(config.synth, prompts=s.prompts) if s.prompts else config.synth
    return replace(config, synth=synth, pretrain=pretrain, train=finetune)


# --------------------------------------------------------------------------- data

def download(config: AN4Config, progress: bool = True) -> None:
    """Fetch and unpack the official archive into ``<exp>/data`` (``<exp>/data/an4``)."""
    from asr.download import AN4, fetch

    target = config.exp / "data"
    if (target / "an4" / "etc" / "an4_train.transcription").exists():
        print(f"AN4: already in {target / 'an4'}")
        return
    fetch(AN4, target / "downloads", target, mirror=config.download.mirror or None,
          checksums=config.download.checksums or None, progress=progress)
    if not (target / "an4" / "etc" / "an4_train.transcription").exists():
        raise AsrError(f"the archive did not contain an4/etc/an4_train.transcription (looked in {target})")
    print(f"AN4: extracted to {target / 'an4'}")


def split_speakers(speakers: list[str], n_dev: int, seed: int) -> set[str]:
    """``n_dev`` speakers for the dev set, half of them female (AN4 names speakers f... and m...)
    where there are enough, drawn with ``seed``."""
    if not 0 < n_dev < len(speakers):
        raise AsrError(f"an4.dev_speakers must be between 1 and {len(speakers) - 1}, got {n_dev}")
    rng = random.Random(seed)
    female = sorted(s for s in speakers if s.startswith("f"))
    male = sorted(s for s in speakers if not s.startswith("f"))
    rng.shuffle(female)
    rng.shuffle(male)
    n_female = min(len(female), n_dev // 2)
    return set(female[:n_female] + male[: n_dev - n_female])


def prepare(config: AN4Config, progress: bool = True) -> None:
    """FLAC copies of the recordings (16 kHz) and manifests an4-train, an4-dev (and an4-test)."""
    import soundfile as sf
    from tqdm import tqdm

    from asr.corpora import read_an4, read_an4_audio

    if config.manifest("an4-train").exists() and config.manifest("an4-dev").exists():
        return
    root = config.corpus_root
    parts = {"train": read_an4(root, "train")}
    if (root / "etc" / "an4_test.transcription").exists():
        parts["test"] = read_an4(root, "test")
    audio = config.exp / "data" / "an4-flac"
    for part, entries in parts.items():
        for e in tqdm(entries, desc=f"AN4 {part}", unit="utt", disable=not progress):
            path = audio / part / e["speaker"] / f"{e['id']}.flac"
            if not path.exists():
                samples, rate = read_an4_audio(e.pop("source"))
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.tmp")
                sf.write(str(tmp), samples, rate, format="FLAC", subtype="PCM_16")
                tmp.replace(path)
            e.pop("source", None)
            e["audio_filepath"], e["duration"] = str(path), sf.info(str(path)).duration
    speakers = sorted({e["speaker"] for e in parts["train"]})
    dev = split_speakers(speakers, config.an4.dev_speakers, config.an4.seed)
    splits = {"an4-train": [e for e in parts["train"] if e["speaker"] not in dev],
              "an4-dev": [e for e in parts["train"] if e["speaker"] in dev]}
    if "test" in parts:
        splits["an4-test"] = parts["test"]
    for name, entries in splits.items():
        write_manifest(entries, config.manifest(name))
        minutes = sum(e["duration"] for e in entries) / 60
        print(f"{name}: {len(entries)} utterances, {len({e['speaker'] for e in entries})} speakers, "
              f"{minutes:.1f} min -> {config.manifest(name)}")


# --------------------------------------------------------------------------- prompts

ONES = "zero one two three four five six seven eight nine".split()
TEENS = "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
MONTHS = ("january february march april may june july august september october november december").split()
ORDINALS = ("first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth "
            "fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth").split()
COMMANDS = ("yes", "no", "go", "stop", "start", "help", "repeat", "rubout", "erase", "enter")
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _two_digits(rng: random.Random) -> str:
    n = rng.randrange(10, 100)
    if n < 20:
        return TEENS[n - 10]
    return TENS[n // 10 - 2] + ("" if n % 10 == 0 else " " + ONES[n % 10])


def _digits(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(["oh", "zero"]) if d == 0 else ONES[d] for d in (rng.randrange(10) for _ in range(n)))


def _number(rng: random.Random) -> str:
    """A number as people read one out: digit by digit, in pairs, or a small number."""
    kind = rng.random()
    if kind < 0.3:
        return _digits(rng, rng.randint(1, 4))
    if kind < 0.6:
        return " ".join(_two_digits(rng) for _ in range(rng.randint(1, 2)))
    if kind < 0.8:
        return ONES[rng.randrange(1, 10)] + " " + _two_digits(rng)
    return rng.choice(ONES[1:] + TEENS + TENS)


def _letters(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(LETTERS) for _ in range(n))


def make_prompts(n: int, words: list[str], seed: int) -> list[str]:
    """``n`` AN4-like prompts: names and words spelled letter by letter, letter strings with numbers
    (with or without a command before them), digit strings (zip and phone numbers), numbers,
    dates and single commands. ``words`` are what gets spelled."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.25:
            text = " ".join(rng.choice(words))
        elif kind < 0.5:
            text = (rng.choice(["", "", "erase ", "rubout ", "enter "]) + _letters(rng, rng.randint(1, 5)) + " "
                    + _number(rng))
        elif kind < 0.65:
            text = _digits(rng, rng.choice([5, 5, 7, 10]))
        elif kind < 0.75:
            text = rng.choice(["", "enter "]) + _number(rng)
        elif kind < 0.85:
            year = f"nineteen {_two_digits(rng)}"
            text = f"{rng.choice(MONTHS)} {rng.choice(ORDINALS)} {year}"
        else:
            text = rng.choice(COMMANDS)
        out.append(" ".join(text.split()))
    return out


def spellable_words(config: AN4Config) -> list[str]:
    """Words to spell: those the training speakers spelled, and words of the shared LJ Speech text."""
    spelled = [e["text"].replace(" ", "") for e in read_manifest(config.manifest("an4-train"))
               if len(e["text"].split()) > 2 and all(len(w) == 1 for w in e["text"].split())]
    text = shared_data("text", "lj-text-train.txt", required=False)
    common = []
    if text.is_file():
        common = sorted({w for line in text.read_text(encoding="utf-8").splitlines()[:4000]
                         for w in line.lower().split() if w.isalpha() and 3 <= len(w) <= 9})
    return sorted(set(spelled)) + common


def prompt_texts(config: AN4Config) -> dict[str, list[str]]:
    """The prompts of the synthetic subsets: the training speakers' transcripts and generated ones."""
    real = [e["text"] for e in read_manifest(config.manifest("an4-train"))]
    words = spellable_words(config)
    generated = make_prompts(config.synth.prompts + config.synth.dev_prompts, words, config.synth.seed)
    return {"an4-synth": real + generated[config.synth.dev_prompts:], "an4-synth-dev": generated[: config.synth.dev_prompts]}


def synthesize(config: AN4Config, progress: bool = True) -> None:
    """Speak the prompts with the TTS voices (LibriSpeech layout, restartable)."""
    from asr.recipes.synth import make_librispeech_corpus
    from asr.recipes.tts import Voice, available_voices

    held_out = set(config.synth.dev_voices)
    train = [v for v in available_voices(config.synth.engines) if v.id not in held_out]
    if not train:
        raise AsrError("no TTS voice is installed (bash tools/install_system_deps.sh)")
    started = time.perf_counter()
    s = config.synth
    make_librispeech_corpus(config.corpus.parent, prompt_texts(config),
                            {"an4-synth": train, "an4-synth-dev": [Voice.parse(v) for v in s.dev_voices]},
                            seed=s.seed, rate_range=s.rate_range, pitch_range=s.pitch_range, balance="engine",
                            renditions={"an4-synth": s.renditions}, workers=s.workers or os.cpu_count() or 1,
                            progress=progress)
    print(f"synthetic AN4 prompts ready in {config.corpus} ({time.perf_counter() - started:.0f} s)")


# --------------------------------------------------------------------------- models

def lm(config: AN4Config, progress: bool = True):
    """A word n-gram of the training speakers' transcripts and the generated prompts (no dev or test
    speaker's transcript is in it)."""
    folder = config.exp / "lm"
    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "an4-text.txt"
    content = "".join(line + "\n" for line in prompt_texts(config)["an4-synth"])
    if not text.exists() or text.read_text() != content:
        text.write_text(content)
    return experiment.build_language_model(config, text, (), progress)


def pretrain(config: AN4Config, resume: bool = True, progress: bool = True) -> Path:
    """The model trained on the synthetic prompts (starting from ``pretrained`` when it names a model)."""
    folder = config.exp / "pretrain"
    if (folder / "model.pt").exists() and resume:
        print(f"{folder / 'model.pt'} exists: skipping (--restart trains again)")
        return folder / "model.pt"
    tok = experiment.make_tokenizer(config)
    start = Path(config.pretrained) if config.pretrained else None
    if start is not None and not start.is_file():
        print(f"{start} not found: pretraining from scratch")
        start = None
    return experiment.train_ctc(config, tok, config.training_entries(), config.entries(config.data.dev)[:100],
                                folder, config.pretrain, init_from=start, resume=resume, progress=progress)


def train(config: AN4Config, resume: bool = True, progress: bool = True) -> Path:
    """The pretrained model fine-tuned on the real training speakers (``<exp>/model.pt``)."""
    start = config.exp / "pretrain" / "model.pt"
    if not start.exists():
        raise AsrError(f"{start} not found: run the pretrain stage first")
    tok = experiment.make_tokenizer(config)
    return experiment.train_ctc(config, tok, config.entries(["an4-train"]), config.entries(["an4-dev"]), config.exp,
                                config.train, init_from=start, resume=resume, progress=progress)


def tune(config: AN4Config, progress: bool = True):
    """alpha, beta and the blank penalty for ``<exp>/model.pt`` on the dev speakers."""
    return experiment.tune(config.exp / "model.pt", config.entries(["an4-dev"]), lm(config, progress),
                           config.decoding, progress=progress)


def evaluate(config: AN4Config, progress: bool = True) -> dict:
    """WER and CER on the dev speakers (and on AN4's test part when it was prepared)."""
    sets = {name: config.entries([name]) for name in ("an4-dev", "an4-test") if config.manifest(name).exists()}
    return experiment.evaluate(config.exp / "model.pt", sets, config.exp / "results", config.decoding.processes,
                               progress)


def demo(config: AN4Config, resume: bool = True, progress: bool = True) -> dict:
    started = time.perf_counter()
    prepare(config, progress=progress)
    synthesize(config, progress=progress)
    experiment.prepare(config)
    lm(config, progress=progress)
    pretrain(config, resume=resume, progress=progress)
    model_path = config.exp / "model.pt"
    train_once(model_path, lambda: train(config, resume=resume, progress=progress), resume)
    tune(config, progress=progress)
    results = evaluate(config, progress=progress)
    print_finish(started, model_path, f"asr transcribe --model {model_path} AUDIO.wav", config.exp)
    return results


STAGES = {"download": download, "prepare": prepare, "synthesize": synthesize, "lm": lm, "pretrain": pretrain,
          "train": train, "tune": tune, "evaluate": evaluate, "demo": demo}


main = stage_runner("AN4 recipe", STAGES, make_config)


if __name__ == "__main__":
    sys.exit(main())
