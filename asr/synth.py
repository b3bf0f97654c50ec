"""Synthetic speech from text-to-speech engines, written in the layouts of real corpora.

Three engines are driven as subprocesses: ``espeak-ng`` (formant synthesis, many
accents and voice variants), ``flite`` (CMU diphone and clustergen voices) and
``rhvoice`` (``RHVoice-test``: statistical parametric voices trained on recordings
of real speakers, among them CMU ARCTIC speakers; Debian non-free, opt-in).
The corpora they produce are laid out exactly like the real ones, so the same
readers and recipes run on them offline:

* ``make_librispeech_corpus`` writes ``LibriSpeech/<subset>/<speaker>/<chapter>/``
  with 16 kHz FLAC files and ``*.trans.txt`` transcripts;
* ``make_speech_commands_corpus`` writes ``<word>/<hash>_nohash_<n>.wav`` (1 s,
  16 kHz), ``_background_noise_/`` and the validation and testing lists.

Everything is deterministic for a given seed: which voice speaks which sentence,
the rate and pitch of every utterance, its level, and the generated noises.

A voice is named ``engine:name``, e.g. ``espeak-ng:en-us+f2`` or ``flite:slt``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import multiprocessing
import os
import shutil
import subprocess
import sys
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

from asr.errors import AsrError
from asr.text import normalize_text

SAMPLE_RATE = 16000
ENGINES = ("espeak-ng", "flite", "rhvoice")
# The engines whose voices the corpora use unless told otherwise: the free ones that
# tools/install_system_deps.sh installs. RHVoice is Debian non-free and opt-in, so that
# what a recipe synthesises does not depend on what else happens to be installed.
DEFAULT_ENGINES = ("espeak-ng", "flite")
BALANCES = ("voice", "engine")  # make_librispeech_corpus: equal shares per voice, or per engine
_PROGRAM = {"espeak-ng": "espeak-ng", "flite": "flite", "rhvoice": "RHVoice-test"}
_INSTALL = {"espeak-ng": "apt-get install espeak-ng", "flite": "apt-get install flite",
            "rhvoice": "apt-get install rhvoice rhvoice-english (Debian non-free; tools/install_system_deps.sh --non-free)"}
_RHVOICE_DIRS = ("/usr/share/RHVoice/voices", "/usr/local/share/RHVoice/voices")


@dataclass(frozen=True)
class Voice:
    """One TTS voice: an engine and the engine's own name for the voice."""

    engine: str  # "espeak-ng" | "flite" | "rhvoice"
    name: str  # espeak-ng: "<language>[+<variant>]"; flite: a voice from `flite -lv`; rhvoice: a voice folder

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise AsrError(f"unknown TTS engine {self.engine!r} (expected one of {', '.join(ENGINES)})")
        if not self.name or self.name != self.name.strip():
            raise AsrError(f"bad {self.engine} voice name {self.name!r}")

    @property
    def id(self) -> str:
        return f"{self.engine}:{self.name}"

    @classmethod
    def parse(cls, text: str) -> "Voice":
        """``"espeak-ng:en-us+m3"`` -> ``Voice("espeak-ng", "en-us+m3")``."""
        engine, sep, name = text.strip().partition(":")
        if not sep:
            raise AsrError(f"bad voice {text!r}: expected ENGINE:NAME, e.g. espeak-ng:en-us+m3 or flite:slt")
        return cls(engine, name)

    def __str__(self) -> str:
        return self.id


# The catalogue. Its order is part of the corpora made from it (the LibriSpeech
# speaker id of a voice is 100 + its index here): append, never reorder.
#
# espeak-ng 1.51 ignores a variant after "en-gb" ("en-gb+f3" sounds exactly like
# "en-gb"), so British English is named by its other code, "en". Left out: the
# flite voices kal (8 kHz) and awb_time (speaks only times of day); the espeak-ng
# mbrola voices (need the mbrola package and its voice files); the variants
# whisper and female_whisper (no voicing), croak (rough), Alicia (breath noise
# over the whole signal), and the novelty variants (Demonic, Tweaky, UniRobot,
# anikaRobot, robosoft*, announcer) that sound like effects, not speakers.
VOICES: tuple[Voice, ...] = tuple(Voice.parse(v) for v in (
    "flite:kal16",          # US male, diphone
    "flite:awb",            # Scottish male, clustergen
    "flite:rms",            # US male, clustergen
    "flite:slt",            # US female, clustergen
    "espeak-ng:en-us",
    "espeak-ng:en-us+f2",
    "espeak-ng:en-us+m3",
    "espeak-ng:en-us+f4",
    "espeak-ng:en-us+klatt4",
    "espeak-ng:en-us+Andy",
    "espeak-ng:en-us-nyc+m6",
    "espeak-ng:en-us-nyc+linda",
    "espeak-ng:en+m2",
    "espeak-ng:en+f3",
    "espeak-ng:en-gb-x-rp+m4",
    "espeak-ng:en-gb-x-rp+f5",
    "espeak-ng:en-gb-scotland+m7",
    "espeak-ng:en-gb-scotland+f1",
    "espeak-ng:en-029+m1",
    "espeak-ng:en-029+Annie",
    "espeak-ng:en-gb-x-gbclan+m5",
    "espeak-ng:en-gb-x-gbclan+aunty",
    "espeak-ng:en-gb-x-gbcwmd+steph",
    "espeak-ng:en-us+belinda",
    "rhvoice:alan",         # Scottish male
    "rhvoice:bdl",          # US male (CMU ARCTIC)
    "rhvoice:clb",          # US female (CMU ARCTIC)
    "rhvoice:slt",          # US female (CMU ARCTIC; the speaker of flite:slt)
    "rhvoice:evgeniy-eng",  # male, Russian-accented English
    "rhvoice:lyubov",       # female
))

_FEMALE = {"flite:slt", "espeak-ng:en-us+f2", "espeak-ng:en-us+f4", "espeak-ng:en-us-nyc+linda",
           "espeak-ng:en+f3", "espeak-ng:en-gb-x-rp+f5", "espeak-ng:en-gb-scotland+f1",
           "espeak-ng:en-029+Annie", "espeak-ng:en-gb-x-gbclan+aunty",
           "espeak-ng:en-gb-x-gbcwmd+steph", "espeak-ng:en-us+belinda", "rhvoice:clb", "rhvoice:slt",
           "rhvoice:lyubov"}

# Mean F0 (Hz) of the flite voices that honour int_f0_target_mean. rms takes its
# F0 contour from a separate model that ignores the target, so its pitch is
# changed by resampling instead (which moves the formants too).
_FLITE_F0 = {"kal16": 95.0, "awb": 132.0, "slt": 172.0}
_ESPEAK_AMPLITUDE = 60  # espeak-ng's default of 100 clips with some variants


# ---------------------------------------------------------------- engines


@lru_cache(maxsize=None)
def _engine_present(engine: str) -> bool:
    return shutil.which(_PROGRAM[engine]) is not None


def _run(engine: str, args: list[str], stdin: bytes | None = None) -> bytes:
    try:
        proc = subprocess.run([_PROGRAM[engine], *args], input=stdin, capture_output=True, timeout=300)
    except FileNotFoundError:
        raise AsrError(f"{engine} is not installed: {_INSTALL[engine]}") from None
    except subprocess.TimeoutExpired:
        raise AsrError(f"{engine} did not finish within 300 s") from None
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        raise AsrError(f"{engine} failed (exit {proc.returncode}): {lines[-1] if lines else 'no message'}")
    return proc.stdout


@lru_cache(maxsize=None)
def _flite_voices() -> frozenset[str]:
    out = _run("flite", ["-lv"]).decode(errors="replace")
    return frozenset(out.partition(":")[2].split())


@lru_cache(maxsize=None)
def _espeak_variants() -> frozenset[str]:
    out = _run("espeak-ng", ["--voices=variant"]).decode(errors="replace")
    names = set()
    for line in out.splitlines()[1:]:
        for field in line.split():
            if field.startswith("!v/"):
                names.add(field[3:])
    return frozenset(names)


@lru_cache(maxsize=None)
def _rhvoice_voices() -> frozenset[str]:
    return frozenset(p.name for d in _RHVOICE_DIRS if Path(d).is_dir() for p in Path(d).iterdir()
                     if (p / "voice.info").is_file())


def _check_voice(voice: Voice) -> None:
    """Fail early on a voice the engine would silently replace by another."""
    if not _engine_present(voice.engine):
        raise AsrError(f"{voice.engine} is not installed: {_INSTALL[voice.engine]}")
    if voice.engine == "flite":
        if "/" not in voice.name and voice.name not in _flite_voices():
            raise AsrError(f"flite has no voice {voice.name!r} (flite -lv lists: {' '.join(sorted(_flite_voices()))})")
    elif voice.engine == "rhvoice":  # RHVoice-test speaks an unknown voice in its default one
        if voice.name not in _rhvoice_voices():
            found = " ".join(sorted(_rhvoice_voices())) or "none"
            raise AsrError(f"rhvoice has no voice {voice.name!r} (installed: {found}; {_INSTALL['rhvoice']})")
    else:
        variant = voice.name.partition("+")[2]
        if variant and variant not in _espeak_variants():
            raise AsrError(f"espeak-ng has no variant {variant!r} (see espeak-ng --voices=variant)")


def available_voices(engines: Sequence[str] = DEFAULT_ENGINES) -> tuple[Voice, ...]:
    """The catalogue voices of ``engines`` whose engine (and voice) is installed on this machine."""
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        raise AsrError(f"unknown TTS engine(s) {', '.join(unknown)} (expected some of {', '.join(ENGINES)})")
    found = []
    for voice in VOICES:
        if voice.engine not in engines:
            continue
        try:
            _check_voice(voice)
        except AsrError:
            continue
        found.append(voice)
    return tuple(found)


def _speakable(text: str) -> str:
    """The text handed to the engine: the normalised words, with the phrase punctuation kept.

    Speaking the normalised words keeps audio and transcript in step (an engine
    would read "1455" or "Mr." its own way); keeping , . ; : ? ! keeps the pauses
    and intonation of the sentence.
    """
    target = normalize_text(text)
    pieces = []
    for token in text.split():
        words = normalize_text(token)
        if not words:
            continue
        stripped = token.rstrip("\"')]}\u201d\u2019")
        mark = stripped[-1] if stripped and stripped[-1] in ",.;:?!" else ""
        pieces.append(words + mark)
    spoken = " ".join(pieces)
    words_only = " ".join(w.rstrip(",.;:?!") for w in spoken.split())
    return spoken if words_only == target else target


def _read_wav(data: bytes, voice: Voice) -> tuple[np.ndarray, int]:
    if not data:
        raise AsrError(f"{voice.engine} produced no audio for voice {voice.id}")
    try:
        audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AsrError(f"{voice.engine} produced unreadable audio for voice {voice.id}: {exc}") from None
    return audio.mean(axis=1), rate


@lru_cache(maxsize=64)
def _resampler(orig: int, new: int):
    """``torchaudio.functional.resample`` with its filter kernel computed once per rate pair."""
    import torchaudio

    return torchaudio.transforms.Resample(orig, new)


def _resample(audio: np.ndarray, orig: int, new: int) -> np.ndarray:
    if orig == new:
        return audio
    import torch

    with torch.no_grad():
        return _resampler(orig, new)(torch.from_numpy(np.ascontiguousarray(audio))).numpy()


def _trim(audio: np.ndarray, sample_rate: int, margin: float = 0.1, floor_db: float = -40.0) -> np.ndarray:
    """Cut leading and trailing silence down to ``margin`` seconds (padding with zeros if shorter)."""
    frame = sample_rate // 100
    n = len(audio) // frame
    if n == 0:
        return audio
    rms = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1))
    loud = np.flatnonzero(rms > max(rms.max() * 10 ** (floor_db / 20), 1e-4))
    if len(loud) == 0:
        return audio
    keep = int(margin * sample_rate)
    start, end = loud[0] * frame, min((loud[-1] + 1) * frame, len(audio))
    lead, tail = max(0, start - keep), min(len(audio), end + keep)
    return np.concatenate([np.zeros(keep - (start - lead), np.float32), audio[lead:tail],
                           np.zeros(keep - (tail - end), np.float32)])


def _level(key: str) -> float:
    """A peak level between -12 and -1 dBFS that depends only on ``key``."""
    u = zlib.crc32(key.encode()) / 0xFFFFFFFF
    return 10 ** ((-12 + 11 * u) / 20)


def synthesize(text: str, voice: Voice | str, rate: float = 1.0, pitch: float = 1.0,
               sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Speak ``text`` with ``voice``: float32 mono samples at ``sample_rate``.

    ``rate`` > 1 speaks faster, ``pitch`` > 1 higher (both are factors around the
    voice's own). Silence before and after is cut to about 0.1 s, and the peak is
    set to a level between -12 and -1 dBFS drawn deterministically from the text,
    voice, rate and pitch. Raises ``AsrError`` if the engine is missing or fails.
    """
    if isinstance(voice, str):
        voice = Voice.parse(voice)
    if not (0.25 <= rate <= 4.0) or not (0.25 <= pitch <= 4.0):
        raise AsrError(f"rate and pitch must be between 0.25 and 4, got rate={rate} pitch={pitch}")
    spoken = _speakable(text)
    if not spoken:
        raise AsrError(f"nothing to say in {text!r}")
    _check_voice(voice)

    if voice.engine == "espeak-ng":
        args = ["-v", voice.name, "-s", str(max(80, round(175 * rate))),
                "-p", str(min(99, max(0, round(50 + 100 * math.log(pitch))))),
                "-a", str(_ESPEAK_AMPLITUDE), "--stdout"]
        audio, sr = _read_wav(_run("espeak-ng", args, stdin=spoken.encode()), voice)
    elif voice.engine == "rhvoice":  # -r and -t are percentages of the voice's own rate and pitch
        args = ["-p", voice.name, "-r", str(max(50, round(100 * rate))), "-t", str(round(100 * pitch)),
                "-o", "/dev/stdout"]
        audio, sr = _read_wav(_run("rhvoice", args, stdin=spoken.encode()), voice)
    else:
        f0 = _FLITE_F0.get(voice.name)
        # Without an F0 target, pitch comes from playing the audio faster: stretch
        # durations by the same factor first, and soften it to keep the formants plausible.
        shift = 1.0 if f0 is not None else math.sqrt(pitch)
        args = ["-voice", voice.name, "--setf", f"duration_stretch={shift / rate:.4f}"]
        if f0 is not None:
            args += ["--setf", f"int_f0_target_mean={f0 * pitch:.1f}"]
        audio, sr = _read_wav(_run("flite", [*args, "-t", spoken, "-o", "/dev/stdout"]), voice)
        if shift != 1.0:
            sr = int(round(sr * shift / 100)) * 100  # a round rate keeps the resampling kernel small

    audio = _trim(_resample(audio, sr, sample_rate), sample_rate)
    peak = float(np.abs(audio).max())
    if peak < 1e-4:
        raise AsrError(f"{voice.engine} produced silence for voice {voice.id}")
    level = _level(f"{voice.id}|{rate:.4f}|{pitch:.4f}|{spoken}")
    return (audio * (level / peak)).astype(np.float32)


# ---------------------------------------------------------------- corpora


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
            _check_voice(voice)
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
        sex = "F" if voice_id in _FEMALE else "M" if Voice.parse(voice_id) in VOICES else "-"
        lines.append(f"{speaker:<5}| {sex} | {subset:<17}| {minutes:6.2f}| {voice_id}")
    path, text = base / "SPEAKERS.TXT", "\n".join(lines) + "\n"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


# ---------------------------------------------------------------- Speech Commands

NOISES = ("white_noise", "pink_noise", "brown_noise", "mains_hum", "running_tap")


def make_noise(kind: str, seconds: float, sample_rate: int = SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """A background noise from ``NOISES`` as float32 samples with peak 0.5."""
    n = int(seconds * sample_rate)
    rng = _rng(seed, kind)
    freqs = np.fft.rfftfreq(n, 1 / sample_rate)

    def shaped(gain: np.ndarray) -> np.ndarray:
        spectrum = np.fft.rfft(rng.standard_normal(n)) * gain
        return np.fft.irfft(spectrum, n)

    safe = np.maximum(freqs, 1.0)
    if kind == "white_noise":
        audio = rng.standard_normal(n)
    elif kind == "pink_noise":  # power falls 3 dB per octave
        audio = shaped(np.where(freqs >= 20, 1 / np.sqrt(safe), 0.0))
    elif kind == "brown_noise":  # power falls 6 dB per octave
        audio = shaped(np.where(freqs >= 20, 1 / safe, 0.0))
    elif kind == "mains_hum":  # 50 Hz and its harmonics, slowly wavering, over a little hiss
        t = np.arange(n) / sample_rate
        drift = 0.2 * np.sin(2 * np.pi * 0.1 * t + rng.uniform(0, 2 * np.pi))
        audio = 0.01 * rng.standard_normal(n)
        for h in range(1, 16):
            amp = (1.0 if h % 2 else 0.5) / h
            audio += amp * np.sin(2 * np.pi * h * (50 + drift) * t + rng.uniform(0, 2 * np.pi))
    elif kind == "running_tap":  # band-limited splashing: 400-6000 Hz noise with a fluttering envelope
        band = np.where((freqs > 400) & (freqs < 6000), 1.0, 0.0) / np.sqrt(np.maximum(freqs, 400) / 400)
        audio = shaped(band)
        flutter = shaped(np.where((freqs > 0.5) & (freqs < 25), 1.0, 0.0))
        audio *= 1 + 0.6 * flutter / (np.abs(flutter).max() + 1e-9)
    else:
        raise AsrError(f"unknown noise {kind!r} (expected one of {', '.join(NOISES)})")
    return (0.5 * audio / (np.abs(audio).max() + 1e-9)).astype(np.float32)


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
        _check_voice(voice)

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
