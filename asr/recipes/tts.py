"""Text-to-speech engines as subprocesses: synthetic voices for the demo corpora.

Three engines: ``espeak-ng`` (formant synthesis, many accents and voice variants),
``flite`` (CMU diphone and clustergen voices) and ``rhvoice`` (``RHVoice-test``:
statistical parametric voices trained on recordings of real speakers, among them CMU
ARCTIC speakers; Debian non-free, opt-in). ``synthesize`` speaks one text with one
voice; ``asr.recipes.synth`` lays many utterances out as real corpora.

A voice is named ``engine:name``, e.g. ``espeak-ng:en-us+f2`` or ``flite:slt``.
"""

from __future__ import annotations

import io
import math
import shutil
import subprocess
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

FEMALE = {"flite:slt", "espeak-ng:en-us+f2", "espeak-ng:en-us+f4", "espeak-ng:en-us-nyc+linda",
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


def check_voice(voice: Voice) -> None:
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
            check_voice(voice)
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
    check_voice(voice)

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
