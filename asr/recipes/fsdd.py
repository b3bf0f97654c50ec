"""Free Spoken Digit Dataset recipe: spoken digits, speaker-independent.

    python -m asr.recipes.fsdd prepare  [--config recipes/fsdd/config.toml]
    python -m asr.recipes.fsdd lr_find
    python -m asr.recipes.fsdd train    [--resume]
    python -m asr.recipes.fsdd evaluate
    python -m asr.recipes.fsdd adapt

    python -m asr.recipes.fsdd demo [--exp-dir DIR]
    python -m asr.recipes.fsdd cv   [--config ...]   # each speaker held out in turn: the mean

FSDD (``{digit}_{speaker}_{index}.wav``, 8 kHz) is in the shared data folder, so
every stage runs offline. One speaker is held out for testing; the model trains
on the four others (early stopping on their clips 0-4, which it does not train
on) and is scored on a voice it has never heard. ``demo`` runs prepare, train
and evaluate and prints the held-out speaker's accuracy; with ``adapt_batchnorm``
(the default config) also the accuracy once the models' BatchNorm statistics are
re-estimated on the held-out speaker's clips, without their labels. ``adapt``
(in ``demo`` too when ``self_train.rounds`` > 0) enrols the held-out speaker
without labels: the models self-train on half of the speaker's clips and are scored, before
and after, on the other half.

With ``synth.per_voice`` > 0 the training set also gets the digits spoken by
the TTS voices (``synthesize``, offline), written in the FSDD layout at 8 kHz:
many more voices than the corpus's few speakers. With ``an4_digits.aligner`` set to a
character model (the AN4 demo's), the training set also gets real speakers: the digit
words of AN4's training part (74 speakers), cut out by forced alignment (``an4_digits``).
Dev and test stay FSDD's.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from asr import classify
from asr.adaptation import self_train
from asr.classify import ClassifyConfig
from asr.inference import load_classifier
from asr.config import load_config
from asr.corpora import DIGITS, read_fsdd
from asr.data import describe_splits, read_task, write_task
from asr.errors import AsrError
from asr.experiment import spread
from asr.recipes import print_finish, recipe_config_path, shared_data, stage_runner, train_once


@dataclass
class FSDDData:
    recordings: str = ""  # FSDD's recordings/ folder; default: the shared data's fsdd/recordings
    test_speaker: str = "george"  # held out for testing
    dev_speaker: str = ""  # "": train on every other speaker and validate (early stopping) on their clips
    # with the upstream test indices (0-4), which are then not trained on; a name: that speaker validates
    enrol_from: int = 25  # adapt: the test speaker's clips with this index or above adapt, unlabelled; the rest score


@dataclass
class DigitSynthConfig:
    """Extra training speakers: the digits spoken by the TTS voices, written in the FSDD layout."""

    per_voice: int = 0  # clips per digit and voice; 0 = train on the real speakers only
    voices: tuple[str, ...] = ()  # default: every installed voice of asr.recipes.tts.DEFAULT_ENGINES (espeak-ng, flite)
    rate_range: tuple[float, float] = (0.8, 1.25)
    pitch_range: tuple[float, float] = (0.8, 1.25)
    seed: int = 0


@dataclass
class AN4DigitsConfig:
    """Extra real speakers: the digit words that AN4's training speakers say, cut out of their
    utterances by forced alignment, written in the FSDD layout at 8 kHz."""

    aligner: str = ""  # a character CTC model that reads AN4 (the AN4 demo's exp/an4/model.pt); "" = off
    root: str = ""  # an AN4 folder (raw or SPHERE layout); default: the shared data's an4
    pad: float = 0.15  # seconds kept on each side of a word's aligned span (never past the gap's midpoint)
    min_score: float = -0.5  # words aligned less surely (mean log-probability of their tokens) are left out
    if_missing: str = "skip"  # the aligner file is missing: "skip" (train without) or "error"
    # at most this many words of each digit join the training set, spread over the speakers
    # (0: all); AN4 says "one" eight times as often as "zero"
    per_digit: int = 0


@dataclass
class FSDDConfig(ClassifyConfig):
    """The FSDD recipe: the classification config, the speaker split (one speaker held out for the
    test) and the digits spoken by TTS voices that join the training set."""

    exp_dir: str = "exp/fsdd"
    data_dir: str = ""  # the generated training clips (TTS, AN4 digits); "" = <exp_dir>/data
    data: FSDDData = field(default_factory=FSDDData)
    synth: DigitSynthConfig = field(default_factory=DigitSynthConfig)
    an4_digits: AN4DigitsConfig = field(default_factory=AN4DigitsConfig)

    @property
    def generated(self) -> Path:
        return Path(self.data_dir) if self.data_dir else self.exp / "data"

    @property
    def tts_dir(self) -> Path:
        return self.generated / "tts_digits"

    @property
    def an4_dir(self) -> Path:
        return self.generated / "an4_digits"


def make_config(path: str | None, stage: str) -> FSDDConfig:
    default = recipe_config_path("fsdd", "config")
    return load_config(FSDDConfig(), path or (default if default.exists() else None))


def synthesize(config: FSDDConfig, progress: bool = True) -> None:
    """Speak every digit ``synth.per_voice`` times with each TTS voice, at a seeded random rate
    and pitch, into ``<exp>/data/tts_digits/{digit}_{voice hash}_{n}.wav`` (8 kHz, as FSDD)."""
    import numpy as np
    import soundfile as sf
    from tqdm import tqdm

    from asr.recipes.synth import speaker_hash
    from asr.recipes.tts import Voice, available_voices, synthesize as speak

    s = config.synth
    if s.per_voice < 1:
        raise AsrError("synth.per_voice is 0: there is nothing to synthesize")
    voices = [Voice.parse(v) for v in s.voices] if s.voices else list(available_voices())
    if not voices:
        raise AsrError("no TTS voice is installed (apt-get install espeak-ng flite)")
    out = config.tts_dir
    out.mkdir(parents=True, exist_ok=True)
    stamp = json.dumps({"voices": [v.id for v in voices], **asdict(s)}, sort_keys=True)
    marker = out / ".settings.json"
    if marker.exists() and marker.read_text() != stamp:
        raise AsrError(f"{out} was made with other synth settings; delete it to make it again")
    marker.write_text(stamp)
    rng = np.random.default_rng(s.seed)
    jobs = [(digit, voice, n) for voice in voices for digit in range(10) for n in range(s.per_voice)]
    log_rates = rng.uniform(*np.log(s.rate_range), len(jobs))
    log_pitches = rng.uniform(*np.log(s.pitch_range), len(jobs))
    for (digit, voice, n), rate, pitch in tqdm(list(zip(jobs, np.exp(log_rates), np.exp(log_pitches))),
                                               desc="TTS digits", unit="clip", disable=not progress):
        path = out / f"{digit}_{speaker_hash(voice)}_{n}.wav"
        if not path.exists():
            tmp = path.with_name(f".{path.name}.tmp")
            sf.write(str(tmp), speak(DIGITS[digit], voice, rate=float(rate), pitch=float(pitch), sample_rate=8000),
                     8000, format="WAV", subtype="PCM_16")
            tmp.replace(path)
    print(f"{len(jobs)} TTS digit clips ({len(voices)} voices) in {out}")


def an4_digits(config: FSDDConfig, progress: bool = True) -> Path | None:
    """Cut every digit word (zero to nine) out of AN4's training utterances with the aligner model
    into ``<exp>/data/an4_digits/{digit}_an4-{speaker}_{n}.wav`` (8 kHz, as FSDD). None when the
    aligner is not set, or is missing and ``if_missing`` is "skip"."""
    import soundfile as sf
    import torchaudio.functional as AF
    from tqdm import tqdm

    from asr.alignment import align_words, cut_points
    from asr.audio import to_mono
    from asr.corpora import read_an4, read_an4_audio
    from asr.inference import load_recognizer

    s = config.an4_digits
    if not s.aligner:
        return None
    if not Path(s.aligner).exists():
        if s.if_missing == "skip":
            print(f"an4_digits: {s.aligner} not found (run the AN4 demo first); training without AN4's speakers")
            return None
        raise AsrError(f"an4_digits.aligner {s.aligner} not found: run python -m asr.recipes.an4 demo first")
    out = config.an4_dir
    marker = out / ".done.json"
    shaping = {k: v for k, v in asdict(s).items() if k not in ("if_missing", "per_digit")}  # what shapes the clips
    stamp = json.dumps(shaping, sort_keys=True)
    if marker.exists():
        if json.loads(marker.read_text())["settings"] != stamp:
            raise AsrError(f"{out} was made with other an4_digits settings; delete it to make it again")
        return out
    root = Path(s.root) if s.root else shared_data("an4")
    utterances = [e for e in read_an4(root, "train") if set(e["text"].split()) & set(DIGITS)]
    model = load_recognizer(s.aligner)
    rate = model.features.config.sample_rate  # the aligner hears the audio at its own rate
    out.mkdir(parents=True, exist_ok=True)
    counts, kept, dropped = {}, 0, 0
    for e in tqdm(utterances, desc="aligning AN4", unit="utt", disable=not progress):
        samples, raw_rate = read_an4_audio(e["source"])
        audio = to_mono(samples, raw_rate, rate)
        spans = align_words(model, audio, e["text"])
        for span, (start, end) in zip(spans, cut_points(spans, audio.numel() / rate, s.pad)):
            if span.word not in DIGITS:
                continue
            if span.score < s.min_score:
                dropped += 1
                continue
            n = counts[e["speaker"]] = counts.get(e["speaker"], -1) + 1
            clip = AF.resample(audio[int(start * rate): int(end * rate)], rate, 8000)
            sf.write(str(out / f"{DIGITS.index(span.word)}_an4-{e['speaker']}_{n}.wav"), clip.numpy(), 8000,
                     format="WAV", subtype="PCM_16")
            kept += 1
    marker.write_text(json.dumps({"settings": stamp, "clips": kept, "left_out": dropped, "speakers": len(counts)}))
    print(f"{kept} digit words of {len(counts)} AN4 speakers cut out with {s.aligner} "
          f"({dropped} aligned less surely than {s.min_score} left out) -> {out}")
    return out


def _recordings(config: FSDDConfig) -> Path:
    return Path(config.data.recordings) if config.data.recordings else shared_data("fsdd", "recordings")


def prepare(config: FSDDConfig, progress: bool = True) -> None:
    """Manifests for a speaker-independent split: train, dev (one speaker), test (another)."""
    root = _recordings(config)
    entries = read_fsdd(root)
    speakers = sorted({e["speaker"] for e in entries})
    test, dev = config.data.test_speaker, config.data.dev_speaker
    for who in (test, dev) if dev else (test,):
        if who not in speakers:
            raise AsrError(f"speaker {who!r} is not in {root} (speakers: {', '.join(speakers)})")
    if test == dev:
        raise AsrError("the test and dev speakers must differ")
    rest = [e for e in entries if e["speaker"] != test]
    if dev:
        splits = {"train": [e for e in rest if e["speaker"] != dev], "dev": [e for e in rest if e["speaker"] == dev]}
        held = f"dev speaker {dev}"
    else:
        splits = {"train": [e for e in rest if e["index"] >= 5], "dev": [e for e in rest if e["index"] < 5]}
        held = "dev = their clips 0-4"
    splits["test"] = [e for e in entries if e["speaker"] == test]
    train_speakers = sorted({e["speaker"] for e in splits["train"]})
    if config.synth.per_voice:
        synthesize(config, progress=progress)
        tts = read_fsdd(config.tts_dir)
        splits["train"] += tts
        held += f"; plus {len(tts)} TTS clips of {len({e['speaker'] for e in tts})} voices"
    if an4_digits(config, progress=progress):
        an4 = read_fsdd(config.an4_dir)
        if config.an4_digits.per_digit:
            an4 = [e for d in DIGITS for e in spread([e for e in an4 if e["label"] == d], config.an4_digits.per_digit)]
        splits["train"] += an4
        held += f"; plus {len(an4)} digit words of {len({e['speaker'] for e in an4})} AN4 speakers"
    write_task(config.exp, list(DIGITS), splits)
    print(f"FSDD from {root}: train speakers {', '.join(train_speakers)} ({held}); test speaker {test}; "
          + describe_splits(list(DIGITS), splits))


def train(config: FSDDConfig, resume: bool = True, progress: bool = True) -> dict:
    return classify.train_stage(config, resume=resume, progress=progress)


def evaluate(config: FSDDConfig, progress: bool = True) -> dict:
    return classify.evaluate_stage(config, progress=progress, sets=("dev", "test"))


def enrolment_split(config: FSDDConfig, test: list[dict]) -> tuple[list[dict], list[dict]]:
    """The test speaker's clips that adapt (index >= data.enrol_from) and those that score."""
    return ([e for e in test if e["index"] >= config.data.enrol_from],
            [e for e in test if e["index"] < config.data.enrol_from])


def adapt(config: FSDDConfig, progress: bool = True) -> dict:
    """Unsupervised enrolment of the held-out speaker: self-training (``[self_train]``) on the
    speaker's clips numbered ``data.enrol_from`` and above, unlabelled; the trained and the adapted
    models are scored on the speaker's other clips."""
    labels, splits, noise = read_task(config.exp)
    enrol, held = enrolment_split(config, splits.get("test") or [])
    if not enrol or not held:
        raise AsrError(f"data.enrol_from = {config.data.enrol_from} leaves the test speaker no clips to "
                       f"{'adapt on' if not enrol else 'score'} ({len(enrol) + len(held)} clips)")
    cut = config.data.enrol_from
    out = config.exp / "self_train"
    path = self_train(config, config.exp / "model.pt", labels, splits["train"], noise, enrol, out, progress)
    title = f"{config.data.test_speaker}'s clips 0-{cut - 1}"
    reports = {"before": classify.score_set(load_classifier(config.exp / "model.pt"), held,
                                            f"{title}, as trained", out / "results" / "before", progress),
               "after": classify.score_set(load_classifier(path), held,
                                           f"{title}, self-trained on the other {len(enrol)}", out / "results" / "after",
                                           progress)}
    return {**reports, "enrolled": len(enrol), "model": path}


def lr_find(config: FSDDConfig, progress: bool = True) -> dict:
    return classify.lr_find_stage(config, progress=progress)


def demo(config: FSDDConfig, resume: bool = True, progress: bool = True) -> None:
    started = time.perf_counter()
    prepare(config, progress=progress)
    model_path = config.exp / "model.pt"
    train_once(model_path, lambda: train(config, resume=resume, progress=progress), resume)
    reports = evaluate(config, progress=progress)
    test = reports["test"]
    print(f"held-out speaker {config.data.test_speaker}: accuracy {100 * test.accuracy:.2f}% "
          f"({test.total} clips, never heard in training)")
    if "test-adapted" in reports:
        print(f"  {100 * reports['test-adapted'].accuracy:.2f}% with the BatchNorm statistics re-estimated on "
              f"the speaker's {test.total} clips, unlabelled (adapt_batchnorm)")
    enrol, held = enrolment_split(config, read_task(config.exp)[1]["test"])
    if config.self_train.rounds and not (enrol and held):
        print(f"  (adapt skipped: data.enrol_from = {config.data.enrol_from} leaves the speaker "
              f"{len(enrol)} clips to adapt on and {len(held)} to score)")
    elif config.self_train.rounds:
        result = adapt(config, progress=progress)
        print(f"  {100 * result['after'].accuracy:.2f}% on the speaker's clips 0-{config.data.enrol_from - 1} "
              f"({result['after'].total}; {100 * result['before'].accuracy:.2f}% as trained) once the models have "
              f"self-trained on the other {result['enrolled']}, unlabelled (adapt): {result['model']}")
    print_finish(started, model_path, f"asr classify --model {model_path} --top-k 3 AUDIO.wav", config.exp)


def cv(config: FSDDConfig, resume: bool = True, progress: bool = True) -> dict:
    """Every speaker held out in turn: prepare, train and evaluate in ``<exp>/cv/<speaker>/`` (the
    generated clips shared), then each speaker's accuracy and the mean in ``<exp>/results/cv/``."""
    import statistics

    from asr.reports import write_json

    started = time.perf_counter()
    speakers = sorted({e["speaker"] for e in read_fsdd(_recordings(config))})
    data_dir = str(config.generated)
    reports = {}
    for speaker in speakers:
        print(f"=== held-out speaker {speaker}")
        sub = replace(config, exp_dir=str(config.exp / "cv" / speaker), data_dir=data_dir,
                      data=replace(config.data, test_speaker=speaker, dev_speaker=""))
        prepare(sub, progress=progress)
        train_once(sub.exp / "model.pt", lambda: train(sub, resume=resume, progress=progress), resume)
        reports[speaker] = evaluate(sub, progress=progress)
    rows = {s: {k: r[k].accuracy for k in ("test", "test-adapted") if k in r} for s, r in reports.items()}
    means = {k: statistics.mean(row[k] for row in rows.values()) for k in next(iter(rows.values()))}
    out = config.exp / "results" / "cv"
    out.mkdir(parents=True, exist_ok=True)
    write_json({"speakers": rows, "mean": means}, out / "speakers.json")
    lines = [f"{s}: " + ", ".join(f"{k} {100 * a:.2f}%" for k, a in row.items()) for s, row in rows.items()]
    lines.append(f"mean over {len(rows)} held-out speakers: " + ", ".join(f"{k} {100 * a:.2f}%"
                                                                          for k, a in means.items()))
    (out / "speakers.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    model = config.exp / "cv" / speakers[0] / "model.pt"
    print_finish(started, model, f"asr classify --model {model} AUDIO.wav", config.exp)
    return {"speakers": rows, "mean": means}


STAGES = {"synthesize": synthesize, "an4_digits": an4_digits, "prepare": prepare, "lr_find": lr_find,
          "train": train, "evaluate": evaluate, "adapt": adapt, "demo": demo, "cv": cv}


main = stage_runner("FSDD spoken-digit recipe", STAGES, make_config)


if __name__ == "__main__":
    sys.exit(main())
