"""Waveform augmentation of training audio: speed, reverberation, time shift, noise, gain.

``WaveformAugment`` is the ``transform`` of a training dataset (``SpeechDataset``
for recognition, ``ClassificationDataset`` for clips): it changes one waveform
(samples,) at the model's sample rate (16 kHz by default) at a time, before features
are computed. SpecAugment, which works on log-mels, is in ``asr.features``.

Every random draw comes from torch's global generator, which the ``Trainer``
seeds and saves in its checkpoints, so a resumed run sees the same augmentations.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from asr.audio import AUDIO_SUFFIXES, SAMPLE_RATE
from asr.errors import AsrError


@dataclass
class AugmentConfig:
    """What ``WaveformAugment`` does; a probability of 0 (or an empty range) turns a part off."""

    time_shift: float = 0.1  # seconds: a clip moves by up to this much either way (zero-filled)
    speed_prob: float = 0.5  # share of clips played faster or slower
    speed_range: tuple[float, float] = (0.9, 1.1)  # speed factors
    reverb_prob: float = 0.0  # share of clips played in a simulated room
    rt60_range: tuple[float, float] = (0.2, 0.7)  # seconds for the room's reverberation to fall by 60 dB
    drr_range: tuple[float, float] = (0.0, 12.0)  # direct-to-reverberant energy ratio, dB
    noise_prob: float = 0.8  # share of clips mixed with background noise
    snr_range: tuple[float, float] = (0.0, 20.0)  # signal-to-noise ratios in dB
    noise_dir: str = ""  # a folder of noise recordings (.wav, .flac, .ogg, any depth), e.g. MUSAN's noise/
    synthetic_noise: bool = False  # with no noise recordings at all: generated noises (make_noise)
    noises: tuple[str, ...] = ()  # the generated noises used (NOISE_KINDS); () = NOISES
    gain_range: tuple[float, float] = (0.0, 0.0)  # dB: each clip's level is changed by a random gain in this range

    @classmethod
    def off(cls) -> "AugmentConfig":
        """No waveform augmentation at all."""
        return cls(time_shift=0.0, speed_prob=0.0, reverb_prob=0.0, noise_prob=0.0)

    @property
    def active(self) -> bool:
        return bool(self.time_shift > 0 or self.speed_prob > 0 or self.reverb_prob > 0 or self.noise_prob > 0
                    or self.gain_range[1] > self.gain_range[0])


NOISES = ("white_noise", "pink_noise", "brown_noise", "mains_hum", "running_tap")
# and the ones a config must ask for: hiss, a recording channel's high-frequency floor
NOISE_KINDS = NOISES + ("hiss",)


def make_noise(kind: str, seconds: float, sample_rate: int = SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """A background noise from ``NOISES`` as float32 samples with peak 0.5."""
    n = int(seconds * sample_rate)
    rng = np.random.default_rng([seed, zlib.crc32(kind.encode())])
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
    elif kind == "hiss":  # white above 2.5 kHz, rising 6 dB per octave up to 5 kHz: a channel's treble floor
        audio = shaped(np.where(freqs >= 2500, np.minimum(safe, 5000) / 5000, 0.0))
    elif kind == "running_tap":  # band-limited splashing: 400-6000 Hz noise with a fluttering envelope
        band = np.where((freqs > 400) & (freqs < 6000), 1.0, 0.0) / np.sqrt(np.maximum(freqs, 400) / 400)
        audio = shaped(band)
        flutter = shaped(np.where((freqs > 0.5) & (freqs < 25), 1.0, 0.0))
        audio *= 1 + 0.6 * flutter / (np.abs(flutter).max() + 1e-9)
    else:
        raise AsrError(f"unknown noise {kind!r} (expected one of {', '.join(NOISE_KINDS)})")
    return (0.5 * audio / (np.abs(audio).max() + 1e-9)).astype(np.float32)


def mix_at_snr(signal: torch.Tensor, noise: torch.Tensor, snr_db: float) -> torch.Tensor:
    """``signal + g * noise`` with ``g`` chosen so that the power ratio is ``snr_db`` dB.

    Both are (samples,) of the same length. A silent signal or noise is returned unchanged.
    """
    p_signal, p_noise = signal.pow(2).mean(), noise.pow(2).mean()
    if p_signal <= 1e-12 or p_noise <= 1e-12:
        return signal
    gain = torch.sqrt(p_signal / (p_noise * 10 ** (snr_db / 10)))
    return signal + gain * noise


def snr_db(signal: torch.Tensor, noise: torch.Tensor) -> float:
    """The power ratio of ``signal`` to ``noise`` in dB."""
    return float(10 * torch.log10(signal.pow(2).mean() / noise.pow(2).mean()))


@lru_cache(maxsize=128)
def _resampler(orig: int, new: int):
    import torchaudio

    return torchaudio.transforms.Resample(orig, new)


def change_speed(audio: torch.Tensor, rate: int, base: int = 160) -> torch.Tensor:
    """Play (samples,) audio ``base / rate`` times as fast: resampled from ``base`` to ``rate``
    (in units of 100 Hz, so the filter stays small), pitch moving with the tempo."""
    if rate == base:
        return audio
    with torch.no_grad():
        return _resampler(base, rate)(audio[None])[0]


def room_impulse_response(rt60: float, drr_db: float, sample_rate: int = SAMPLE_RATE,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """A simulated room: a direct path (1 at sample 0) and a diffuse tail of Gaussian noise
    that decays by 60 dB in ``rt60`` seconds and carries ``drr_db`` dB less energy than the
    direct path (Polack's statistical model of late reverberation)."""
    n = max(2, int(rt60 * sample_rate))
    t = torch.arange(1, n) / sample_rate
    tail = torch.randn(n - 1, generator=generator) * torch.exp(-3 * math.log(10) * t / rt60)
    tail = tail * (10 ** (-drr_db / 20) / tail.pow(2).sum().sqrt().clamp(min=1e-12))
    return torch.cat([torch.ones(1), tail])


def reverberate(audio: torch.Tensor, rir: torch.Tensor) -> torch.Tensor:
    """(samples,) audio played through an impulse response, cut to its length and kept at its RMS.

    The convolution runs on FFTs of a power-of-two length: for a 5 s clip and a 0.5 s
    room that is 2.4 ms, against 25 ms for ``torchaudio.functional.fftconvolve``,
    whose transforms have the exact, awkward length of the full convolution.
    """
    n = audio.numel() + rir.numel() - 1
    size = 1 << (n - 1).bit_length()
    wet = torch.fft.irfft(torch.fft.rfft(audio, size) * torch.fft.rfft(rir, size), size)[: audio.numel()]
    return wet * (audio.pow(2).mean() / wet.pow(2).mean().clamp(min=1e-12)).sqrt()


def noise_dir_files(folder: str) -> list[str]:
    """The audio files anywhere under ``folder`` (sorted); none for ""."""
    if not folder:
        return []
    root = Path(folder)
    if not root.is_dir():
        raise AsrError(f"{root}: noise folder not found")
    files = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise AsrError(f"{root}: no noise recordings ({', '.join(AUDIO_SUFFIXES)}) in it")
    return files


class WaveformAugment:
    """Training-time augmentation of one waveform (samples,) at ``sample_rate``, in this order:
    speed, reverberation, time shift, background noise, gain."""

    def __init__(self, config: AugmentConfig, noise_files: list[str] = (), seed: int = 0,
                 sample_rate: int = SAMPLE_RATE) -> None:
        self.config = config
        self.sample_rate = sample_rate
        self.noise_files = list(noise_files) + noise_dir_files(config.noise_dir)  # a bad folder fails here, early
        unknown = [kind for kind in config.noises if kind not in NOISE_KINDS]
        if unknown:
            raise AsrError(f"augment.noises: unknown noise {unknown[0]!r} (expected some of {', '.join(NOISE_KINDS)})")
        self.seed = seed
        self._noises: list[torch.Tensor] | None = None

    def noises(self) -> list[torch.Tensor]:
        """Every noise recording (the corpus's ``noise_files``, then ``noise_dir``'s) at ``sample_rate``,
        loaded once; the generated noises when there are none and ``synthetic_noise`` is on."""
        if self._noises is None:
            if self.noise_files:
                from asr.audio import load_audio

                self._noises = [load_audio(path, self.sample_rate) for path in self.noise_files]
            elif self.config.synthetic_noise:
                kinds = self.config.noises or NOISES
                self._noises = [torch.from_numpy(make_noise(kind, 30.0, self.sample_rate, self.seed))
                                for kind in kinds]
            else:
                self._noises = []
        return self._noises

    @staticmethod
    def _uniform(low: float, high: float, g: torch.Generator | None = None) -> float:
        return low + (high - low) * float(torch.rand((), generator=g))

    def noise_like(self, n: int, g: torch.Generator | None = None) -> torch.Tensor:
        """A random stretch of ``n`` samples of a random noise recording (repeated if too short)."""
        noises = self.noises()
        noise = noises[int(torch.randint(len(noises), (), generator=g))]
        if noise.numel() < n:
            noise = noise.repeat(n // noise.numel() + 1)
        start = int(torch.randint(noise.numel() - n + 1, (), generator=g))
        return noise[start:start + n]

    def __call__(self, audio: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One clip, changed; the draws come from ``generator`` (default: torch's global one)."""
        c, g = self.config, generator
        low, high = c.speed_range
        if c.speed_prob > 0 and high > low and float(torch.rand((), generator=g)) < c.speed_prob:
            rate = round(160 / self._uniform(low, high, g))
            audio = change_speed(audio, rate)
        if c.reverb_prob > 0 and float(torch.rand((), generator=g)) < c.reverb_prob:
            rt60, drr = self._uniform(*c.rt60_range, g), self._uniform(*c.drr_range, g)
            rir = room_impulse_response(rt60, drr, self.sample_rate, g)
            audio = reverberate(audio, rir)
        if c.time_shift > 0:
            limit = int(c.time_shift * self.sample_rate)
            shift = int(torch.randint(-limit, limit + 1, (), generator=g))
            if shift > 0:
                audio = torch.cat([torch.zeros(shift), audio[:-shift]]) if shift < audio.numel() else audio * 0
            elif shift < 0:
                audio = torch.cat([audio[-shift:], torch.zeros(-shift)]) if -shift < audio.numel() else audio * 0
        if c.noise_prob > 0 and float(torch.rand((), generator=g)) < c.noise_prob and self.noises():
            audio = mix_at_snr(audio, self.noise_like(audio.numel(), g), self._uniform(*c.snr_range, g))
        if c.gain_range[1] > c.gain_range[0]:
            audio = audio * 10 ** (self._uniform(*c.gain_range, g) / 20)
        return audio
