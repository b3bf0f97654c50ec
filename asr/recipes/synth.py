"""Synthetic corpora in the layouts of real ones, spoken by the TTS voices of ``asr.recipes.tts``.

The corpora are laid out exactly like the real ones, so the same readers and recipes
run on them offline:

* ``make_librispeech_corpus`` writes ``LibriSpeech/<subset>/<speaker>/<chapter>/``
  with 16 kHz FLAC files and ``*.trans.txt`` transcripts;
* ``make_speech_commands_corpus`` writes ``<word>/<hash>_nohash_<n>.wav`` (1 s,
  16 kHz), ``_background_noise_/`` and the validation and testing lists.

Everything is deterministic for a given seed: which voice speaks which sentence,
the rate and pitch of every utterance, its level, and the generated noises.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import multiprocessing
import os
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

from asr.augment import NOISES, make_noise
from asr.errors import AsrError
from asr.recipes.tts import FEMALE, SAMPLE_RATE, VOICES, Voice, check_voice, synthesize
from asr.text import normalize_text

BALANCES = ("voice", "engine")  # make_librispeech_corpus: equal shares per voice, or per engine


def _draw(rng: np.random.Generator, low_high: tuple[float, float], n: int) -> np.ndarray:
    """Log-uniform factors in [low, high]."""
    low, high = low_high
    if not (0.25 <= low <= high <= 4.0):
        raise AsrError(f"bad factor range {low_high}: need 0.25 <= low <= high <= 4")
    return np.exp(rng.uniform(math.log(low), math.log(high), n))


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _fingerprint(**parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _init_worker() -> None:
    """Pool workers: one torch thread each (the parallelism is the pool); Ctrl-C is the parent's."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


def _render(job: tuple) -> float:
    """Synthesise one utterance into a file (written atomically); returns its duration."""
    path, text, voice_id, rate, pitch, fixed_seconds = job
    path = Path(path)
    if path.exists():
        return sf.info(str(path)).duration
    audio = synthesize(text, Voice.parse(voice_id), rate=rate, pitch=pitch)
    if fixed_seconds:
        audio = _fit(audio, int(fixed_seconds * SAMPLE_RATE))
    fmt = "FLAC" if path.suffix == ".flac" else "WAV"
    tmp = path.with_name(f".{path.name}.tmp")
    sf.write(str(tmp), audio, SAMPLE_RATE, format=fmt, subtype="PCM_16")
    os.replace(tmp, path)
    return len(audio) / SAMPLE_RATE


def _run_jobs(jobs: list[tuple], workers: int, progress: bool, desc: str) -> list[float]:
    """Render all jobs in ``workers`` processes, in order."""
    for job in jobs:
        Path(job[0]).parent.mkdir(parents=True, exist_ok=True)
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(jobs), desc=desc, unit="utt")
        except ImportError:  # pragma: no cover - tqdm is a dependency
            pass
    durations = []
    try:
        with contextlib.ExitStack() as stack:
            if workers > 1:
                # fork, as torch's DataLoader does on Linux: a spawned worker would import torch again
                method = "fork" if sys.platform.startswith("linux") else "spawn"
                pool = stack.enter_context(multiprocessing.get_context(method).Pool(workers, _init_worker))
                results = pool.imap(_render, jobs, chunksize=4)
            else:
                results = map(_render, jobs)
            for seconds in results:
                durations.append(seconds)
                if bar is not None:
                    bar.update()
    finally:
        if bar is not None:
            bar.close()
    return durations


def _finished(done: Path, pending: Path, fingerprint: str, what: str) -> bool:
    """True if the work behind ``fingerprint`` is done; else mark it as started.

    A part begun or finished with other inputs is an error rather than something
    to mix with: the files already there would not match the new inputs.
    """
    for marker in (done, pending):
        if marker.exists() and json.loads(marker.read_text())["fingerprint"] != fingerprint:
            raise AsrError(f"{what} was made from other inputs or settings; delete it to make it again")
    if done.exists():
        return True
    pending.parent.mkdir(parents=True, exist_ok=True)
    pending.write_text(json.dumps({"fingerprint": fingerprint}) + "\n")
    return False


def _speaker_id(voice: Voice) -> int:
    """The LibriSpeech speaker id of a voice: 100 + its catalogue index (others: 1000-9999)."""
    if voice in VOICES:
        return 100 + VOICES.index(voice)
    return 1000 + zlib.crc32(voice.id.encode()) % 9000


def _chapter_base(subset: str) -> int:
    return (zlib.crc32(subset.encode()) % 900 + 100) * 1000


def make_librispeech_corpus(root, subsets: dict[str, list[str]], voices: dict[str, list[Voice]], *,
                            seed: int = 0, rate_range: tuple[float, float] = (0.85, 1.2),
                            pitch_range: tuple[float, float] = (0.8, 1.25), balance: str = "voice",
                            renditions: dict[str, int] | None = None, workers: int = 2,
                            progress: bool = True) -> Path:
    """Speak sentences in the LibriSpeech layout; returns ``root/LibriSpeech``.

    ``subsets`` maps a subset name (``"train-clean-100"``, ``"test-clean"``, ...) to
    its sentences, ``voices`` maps the same names to the voices that speak them.
    Each sentence is spoken once, by one voice (round-robin over a seeded shuffle,
    so every voice gets an equal share), at a seeded random rate and pitch. With
    ``balance="engine"`` every engine gets an equal share instead, split equally
    among its voices (so a few flite voices are heard as much as many espeak-ng
    variants). ``renditions`` maps subset names to how many times each of their
    sentences is spoken (default 1), every time by a different voice (and with
    ``balance="engine"``, by each engine in turn) at its own rate and pitch. Writes

        LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt:04d>.flac
        LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt
        LibriSpeech/SPEAKERS.TXT   (ID | SEX | SUBSET | MINUTES | NAME, NAME = voice id)

    A voice has the same speaker id in every subset (100 + its index in ``VOICES``);
    a chapter holds at most 100 utterances. Sentences that normalise to nothing are
    skipped. A finished subset is skipped on the next call; an interrupted one
    resumes where it stopped.
    """
    base = Path(root) / "LibriSpeech"
    if balance not in BALANCES:
        raise AsrError(f"balance must be one of {', '.join(BALANCES)}, got {balance!r}")
    missing = sorted(set(subsets) - set(voices))
    if missing:
        raise AsrError(f"no voices given for subset(s): {', '.join(missing)}")
    for name in subsets:
        if not name or "/" in name or name.startswith("."):
            raise AsrError(f"bad subset name {name!r}")
        if not voices[name]:
            raise AsrError(f"no voices given for subset {name}")
        for voice in voices[name]:
            check_voice(voice)
    renditions = dict(renditions or {})
    unknown = sorted(set(renditions) - set(subsets))
    if unknown:
        raise AsrError(f"renditions given for unknown subset(s): {', '.join(unknown)}")
    if not all(isinstance(n, int) and n >= 1 for n in renditions.values()):
        raise AsrError(f"renditions must be whole numbers of at least 1, got {renditions}")

    for name, sentences in subsets.items():
        _make_librispeech_subset(base, name, sentences, list(voices[name]), seed=seed, rate_range=rate_range,
                                 pitch_range=pitch_range, balance=balance, renditions=renditions.get(name, 1),
                                 workers=workers, progress=progress)
    _write_speakers(base)
    return base


def _make_librispeech_subset(base: Path, name: str, sentences: list[str], voices: list[Voice], *, seed: int,
                             rate_range, pitch_range, balance: str, renditions: int, workers: int,
                             progress: bool) -> None:
    if len(set(voices)) != len(voices):
        raise AsrError(f"subset {name}: a voice is listed twice")
    subset_dir = base / name
    done, pending = base / f".{name}.complete", base / f".{name}.pending"
    fingerprint = _fingerprint(layout="librispeech-1", sentences=list(sentences), voices=[v.id for v in voices],
                               seed=seed, rate_range=list(rate_range), pitch_range=list(pitch_range),
                               **({"balance": balance} if balance != "voice" else {}),
                               **({"renditions": renditions} if renditions != 1 else {}))

    texts = [normalize_text(s) for s in sentences]
    # Each sentence fills `renditions` consecutive slots of `order`, which the round-robin
    # below gives to different groups, then to different voices of a group.
    order = [i for i in _rng(seed, name).permutation(len(sentences)) if texts[i] for _ in range(renditions)]
    rng = _rng(seed + 1, name)
    rates, pitches = _draw(rng, rate_range, len(order)), _draw(rng, pitch_range, len(order))

    turn = [voices[j] for j in rng.permutation(len(voices))]
    by_key: dict[str, list[Voice]] = {}  # engine (or one group of all) -> its voices, in turn order
    for voice in turn:
        by_key.setdefault(voice.engine if balance == "engine" else "", []).append(voice)
    groups = list(by_key.values())
    need = -(-renditions // len(groups))  # voices of one group that speak the same sentence
    if need > min(map(len, groups)):
        raise AsrError(f"subset {name}: {renditions} renditions of each sentence need {need} different voices"
                       + (" of every engine" if balance == "engine" else ""))
    counts: dict[Voice, int] = {}
    jobs, rows = [], []  # rows: (voice, speaker, chapter, utt, text) in job order
    for k, i in enumerate(order):
        group = groups[k % len(groups)]
        voice = group[(k // len(groups)) % len(group)]
        n = counts[voice] = counts.get(voice, 0) + 1
        speaker, chapter, utt = _speaker_id(voice), _chapter_base(name) + (n - 1) // 100, (n - 1) % 100
        path = subset_dir / str(speaker) / str(chapter) / f"{speaker}-{chapter}-{utt:04d}.flac"
        jobs.append((str(path), sentences[i], voice.id, float(rates[k]), float(pitches[k]), 0.0))
        rows.append((voice, speaker, chapter, utt, texts[i].upper()))

    if _finished(done, pending, fingerprint, f"{subset_dir} (and {done.name})"):
        return
    durations = _run_jobs(jobs, workers, progress, desc=name)

    chapters: dict[tuple[int, int], list[str]] = {}
    seconds: dict[Voice, float] = {}
    for (voice, speaker, chapter, utt, text), d in zip(rows, durations):
        chapters.setdefault((speaker, chapter), []).append(f"{speaker}-{chapter}-{utt:04d} {text}")
        seconds[voice] = seconds.get(voice, 0.0) + d
    for (speaker, chapter), lines in chapters.items():
        trans = subset_dir / str(speaker) / str(chapter) / f"{speaker}-{chapter}.trans.txt"
        trans.write_text("\n".join(sorted(lines)) + "\n")
    speakers = [[_speaker_id(v), v.id, round(seconds[v] / 60, 2)] for v in voices if v in seconds]
    done.write_text(json.dumps({"fingerprint": fingerprint, "subset": name, "utterances": len(jobs),
                                "seconds": round(sum(durations), 2), "speakers": sorted(speakers)}) + "\n")
    pending.unlink()


def _write_speakers(base: Path) -> None:
    rows = []
    for marker in base.glob(".*.complete"):
        info = json.loads(marker.read_text())
        rows += [(speaker, info["subset"], minutes, voice_id) for speaker, voice_id, minutes in info["speakers"]]
    lines = [";ID  |SEX| SUBSET           |MINUTES| NAME (the TTS voice)"]
    for speaker, subset, minutes, voice_id in sorted(rows):
        sex = "F" if voice_id in FEMALE else "M" if Voice.parse(voice_id) in VOICES else "-"
        lines.append(f"{speaker:<5}| {sex} | {subset:<17}| {minutes:6.2f}| {voice_id}")
    path, text = base / "SPEAKERS.TXT", "\n".join(lines) + "\n"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


# ---------------------------------------------------------------- Speech Commands

def _fit(audio: np.ndarray, length: int) -> np.ndarray:
    """Centre ``audio`` in exactly ``length`` samples: pad with zeros or cut both ends."""
    if len(audio) >= length:
        start = (len(audio) - length) // 2
        return audio[start:start + length]
    left = (length - len(audio)) // 2
    return np.pad(audio, (left, length - len(audio) - left))


def speaker_hash(voice: Voice) -> str:
    """The 8-hex-digit speaker id of a voice in Speech Commands file names."""
    return hashlib.sha1(voice.id.encode()).hexdigest()[:8]


def make_speech_commands_corpus(root, words: list[str], voices: list[Voice], *, per_voice: int = 5,
                                validation_voices: Sequence[Voice] | None = None,
                                testing_voices: Sequence[Voice] | None = None, seed: int = 0,
                                rate_range: tuple[float, float] = (0.8, 1.25),
                                pitch_range: tuple[float, float] = (0.8, 1.25), noise_seconds: float = 30,
                                workers: int = 2, progress: bool = True) -> Path:
    """Speak single words in the Speech Commands layout; returns ``root``.

    Every voice says every word ``per_voice`` times, each at a seeded random rate
    and pitch, into ``root/<word>/<speakerhash>_nohash_<n>.wav`` (16 kHz, 16-bit,
    exactly 1 s, the word centred). ``root/_background_noise_/`` gets the noises of
    ``NOISES``, ``noise_seconds`` each. ``validation_list.txt`` and
    ``testing_list.txt`` name the files of ``validation_voices`` and
    ``testing_voices`` (by default about 10% of the voices each, chosen by the
    seed), so each voice belongs to one split only. A finished corpus is skipped
    on the next call; an interrupted one resumes.
    """
    root = Path(root)
    words = list(words)
    voices = list(voices)
    for word in words:
        if normalize_text(word) != word or " " in word:
            raise AsrError(f"bad word {word!r}: use lower-case letters a-z and apostrophes only")
    if not words or len(set(words)) != len(words):
        raise AsrError("give one or more distinct words")
    if not voices or len(set(voices)) != len(voices):
        raise AsrError("give one or more distinct voices")
    if per_voice < 1:
        raise AsrError(f"per_voice must be at least 1, got {per_voice}")
    for voice in voices:
        check_voice(voice)

    shuffled = [voices[i] for i in _rng(seed, "splits").permutation(len(voices))]
    share = round(0.1 * len(voices)) or (1 if len(voices) >= 3 else 0)
    validation = list(validation_voices) if validation_voices is not None else shuffled[:share]
    testing = list(testing_voices) if testing_voices is not None else shuffled[share:2 * share]
    outside = [v.id for v in validation + testing if v not in voices]
    if outside:
        raise AsrError(f"split voices not among the voices: {', '.join(outside)}")
    if set(validation) & set(testing):
        raise AsrError("a voice cannot be in both the validation and the testing split")

    done, pending = root / ".complete", root / ".pending"
    fingerprint = _fingerprint(layout="speech-commands-1", words=words, voices=[v.id for v in voices],
                               per_voice=per_voice, validation=[v.id for v in validation],
                               testing=[v.id for v in testing], seed=seed, rate_range=list(rate_range),
                               pitch_range=list(pitch_range), noise_seconds=noise_seconds)

    rng = _rng(seed, "speech-commands")
    n = len(words) * len(voices) * per_voice
    rates, pitches = _draw(rng, rate_range, n), _draw(rng, pitch_range, n)
    jobs, lists = [], {"validation": [], "testing": []}
    split_of = {v: "validation" for v in validation} | {v: "testing" for v in testing}
    for word in words:
        for voice in voices:
            for k in range(per_voice):
                rel = f"{word}/{speaker_hash(voice)}_nohash_{k}.wav"
                j = len(jobs)
                jobs.append((str(root / rel), word, voice.id, float(rates[j]), float(pitches[j]), 1.0))
                if voice in split_of:
                    lists[split_of[voice]].append(rel)

    if _finished(done, pending, fingerprint, str(root)):
        return root
    noise_dir = root / "_background_noise_"
    noise_dir.mkdir(parents=True, exist_ok=True)
    for kind in NOISES:
        path = noise_dir / f"{kind}.wav"
        if not path.exists():
            tmp = path.with_name(f".{path.name}.tmp")
            sf.write(str(tmp), make_noise(kind, noise_seconds, seed=seed), SAMPLE_RATE, format="WAV",
                     subtype="PCM_16")
            os.replace(tmp, path)

    _run_jobs(jobs, workers, progress, desc="speech commands")
    for split, rels in lists.items():
        (root / f"{split}_list.txt").write_text("".join(f"{r}\n" for r in sorted(rels)))
    done.write_text(json.dumps({"fingerprint": fingerprint, "utterances": len(jobs)}) + "\n")
    pending.unlink()
    return root


# ---------------------------------------------------------------- the demos' sentence corpus

@dataclass
class SentenceSynthConfig:
    """A corpus of sentences spoken by TTS voices in the LibriSpeech layout (held-out sentences and
    voices for dev and test): the ``[synth]`` table of the LibriSpeech, LJ Speech and AN4 recipes."""

    text: str = ""  # one sentence per line; "" = the recipe's default (the shared lj-text-train.txt)
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


def split_sentences(config: SentenceSynthConfig, text: Path) -> dict[str, list[str]]:
    """Disjoint train/dev/test sentences from the text file (no normalised duplicates across splits)."""
    import random

    if not text.is_file():
        raise AsrError(f"{text}: text file not found")
    seen, sentences = set(), []
    for line in text.read_text(encoding="utf-8").splitlines():
        norm = normalize_text(line)
        if config.min_words <= len(norm.split()) <= config.max_words and norm not in seen:
            seen.add(norm)
            sentences.append(line.strip())
    random.Random(config.seed).shuffle(sentences)
    needed = config.n_dev + config.n_test + config.n_train
    if len(sentences) < needed:
        raise AsrError(f"{text}: {len(sentences)} usable sentences, {needed} needed")
    return {
        "dev-synth": sentences[: config.n_dev],
        "test-synth": sentences[config.n_dev: config.n_dev + config.n_test],
        "train-synth": sentences[config.n_dev + config.n_test: needed],
    }


def synthesize_sentences(config: SentenceSynthConfig, root: Path, default_text: Path, progress: bool = True) -> Path:
    """Speak the corpus into ``root/LibriSpeech/{train,dev,test}-synth`` (restartable: finished subsets
    are skipped); the dev and test voices speak no training sentence."""
    import time

    from asr.recipes.tts import available_voices

    held_out = set(config.dev_voices) | set(config.test_voices)
    train = [v for v in available_voices(config.engines) if v.id not in held_out]
    silent = [e for e in config.engines if not any(v.engine == e for v in train)]
    if silent:
        raise AsrError(f"[synth] engines: no training voice of {', '.join(silent)} is installed "
                       f"(see tools/install_system_deps.sh)")
    voices = {"train-synth": train, "dev-synth": [Voice.parse(v) for v in config.dev_voices],
              "test-synth": [Voice.parse(v) for v in config.test_voices]}
    started = time.perf_counter()
    text = Path(config.text) if config.text else default_text
    corpus = make_librispeech_corpus(root, split_sentences(config, text), voices, seed=config.seed,
                                     rate_range=config.rate_range, pitch_range=config.pitch_range,
                                     balance=config.balance, renditions={"train-synth": config.renditions},
                                     workers=config.workers or os.cpu_count() or 1, progress=progress)
    print(f"synthetic corpus ready in {corpus} ({time.perf_counter() - started:.0f} s); "
          f"{len(voices['train-synth'])} training voices, held out: {', '.join(sorted(held_out))}")
    return corpus
