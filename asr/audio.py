"""Audio input: load any file soundfile reads, as mono float32 at 16 kHz (or a model's own rate).

Long recordings are read in chunks (``iter_chunks``) so that an hour-long file
is transcribed in bounded memory. Chunks are cut at the quietest point near
the chunk end, so that words are rarely split.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import torch
import torchaudio.transforms as AT

from asr.errors import AsrError

SAMPLE_RATE = 16000
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".sph")  # what corpus readers and noise folders pick up


def _open(path) -> sf.SoundFile:
    path = Path(path)
    if not path.exists():
        raise AsrError(f"{path}: no such file")
    if path.is_dir():
        raise AsrError(f"{path}: is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AsrError(f"{path}: file is empty")
    try:
        return sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AsrError(f"{path}: not a readable audio file ({_reason(exc)})") from None


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


@lru_cache(maxsize=8)
def _resampler(orig: int, new: int) -> AT.Resample:
    """torchaudio's resampler; its filter is computed once per rate pair, not per call."""
    return AT.Resample(orig, new)


def to_mono(samples: np.ndarray, rate: int, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """(frames,) or (frames, channels) numpy at ``rate`` -> (frames',) float32 tensor at ``sample_rate``."""
    audio = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    if audio.ndim == 2:
        audio = audio.mean(dim=1)
    if rate != sample_rate:
        with torch.no_grad():
            audio = _resampler(int(rate), int(sample_rate))(audio)
    return audio


def load_audio(path, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Read a whole file: (samples,) float32 mono at ``sample_rate``."""
    with _open(path) as f:
        try:
            samples = f.read(dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AsrError(f"{path}: audio data is damaged or truncated ({_reason(exc)})") from None
        rate = f.samplerate
    if samples.shape[0] == 0:
        raise AsrError(f"{path}: contains no audio samples")
    return to_mono(samples, rate, sample_rate)


def audio_duration(path) -> float:
    """Duration in seconds, read from the header."""
    with _open(path) as f:
        return f.frames / f.samplerate


@dataclass
class Chunk:
    audio: torch.Tensor  # (samples,) float32 at the rate asked for (16 kHz by default)
    offset: float  # seconds from the start of the file


def _quietest_cut(audio: torch.Tensor, search: int, window: int) -> int:
    """Index in the last ``search`` samples of ``audio`` at the centre of the ``window``-sample
    stretch with the least energy."""
    tail = audio[-search:]
    n = tail.numel() // window
    if n < 2:
        return audio.numel()
    energy = tail[: n * window].reshape(n, window).pow(2).mean(dim=1)
    return audio.numel() - search + int(energy.argmin()) * window + window // 2


def iter_chunks(path, chunk_seconds: float = 20.0, search_seconds: float = 3.0,
                sample_rate: int = SAMPLE_RATE) -> Iterator[Chunk]:
    """Yield consecutive chunks of at most ``chunk_seconds``, cut at a quiet point.

    Memory stays bounded by the chunk size whatever the file length.
    """
    chunk = int(chunk_seconds * sample_rate)
    search = int(min(search_seconds, chunk_seconds / 2) * sample_rate)
    window = max(1, sample_rate // 100)  # 10 ms, whatever the rate
    with _open(path) as f:
        src_rate = f.samplerate
        block = max(1, int(chunk_seconds * src_rate / 2))
        pending = torch.zeros(0)
        consumed = 0  # samples (at sample_rate) already yielded
        total = 0
        try:
            for samples in f.blocks(blocksize=block, dtype="float32", always_2d=True):
                total += samples.shape[0]
                pending = torch.cat([pending, to_mono(samples, src_rate, sample_rate)])
                while pending.numel() > chunk:
                    cut = _quietest_cut(pending[:chunk], search, window)
                    yield Chunk(pending[:cut].clone(), consumed / sample_rate)
                    consumed += cut
                    pending = pending[cut:]
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AsrError(f"{path}: audio data is damaged or truncated ({_reason(exc)})") from None
        if total == 0:
            raise AsrError(f"{path}: contains no audio samples")
        if pending.numel() > 0:
            yield Chunk(pending, consumed / sample_rate)
