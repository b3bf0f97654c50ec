"""Features: log-mel spectrograms, normalisation, and SpecAugment.

``FeatureExtractor`` turns padded waveforms into normalised log-mels;
``SpecAugment`` masks them while training and does nothing in eval mode.
Both are ``nn.Module``s so they run on the training device.

Besides log-mels (``kind = "logmel"``, the speech recognition front end), the
extractor gives the inputs of the classification baselines: complex
spectrograms (``"complex"``: real parts stacked over imaginary parts) and raw
waveforms at their own sample rate (``"waveform"``). Every kind has the same
shape contract, ``(batch, feature_dim, frames)`` with valid ``frames`` lengths,
so batching, masking and logging treat them alike. SpecAugment is for log-mels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torchaudio.transforms as T
from torch import nn

from asr.audio import SAMPLE_RATE

MIN_RATE, MAX_RATE = 8000, 48000  # the sample rates a model may read its audio at


@dataclass
class FeatureConfig:
    sample_rate: int = SAMPLE_RATE  # the rate audio is read at for this model: every loader resamples to it
    n_mels: int = 128
    n_fft: int = 400  # 25 ms window at 16 kHz
    win_length: int = 400
    hop_length: int = 160  # 10 ms hop
    # "utterance": per-utterance mean and variance per mel bin (a channel's tilt goes, and so does a steady
    # sound's spectral shape); "clip": one mean and variance per utterance over all its bins (the shape stays); "none"
    normalize: str = "utterance"
    kind: str = "logmel"  # "logmel", "complex" (STFT real and imaginary parts) or "waveform" (raw samples)
    f_min: float = 0.0  # log-mels: the bottom of the lowest mel band in Hz
    f_max: float = 0.0  # log-mels: the top of the highest mel band in Hz; 0 = sample_rate / 2
    waveform_sample_rate: int = 8000  # kind "waveform": samples are resampled to this rate
    floor_db: float = 0.0  # log-mels: floor each utterance at its loudest bin minus this many dB; 0 = off
    level: str = "rms"  # log-mels: "rms" scales each utterance to one RMS level first (recording level irrelevant), or "none"

    def __post_init__(self) -> None:
        if not MIN_RATE <= self.sample_rate <= MAX_RATE:
            raise ValueError(f"sample_rate: {self.sample_rate} Hz is outside {MIN_RATE}-{MAX_RATE} Hz")
        if self.f_max > self.sample_rate / 2:
            raise ValueError(f"f_max: {self.f_max:g} Hz is above half the sample rate ({self.sample_rate / 2:g} Hz)")

    @property
    def frame_shift(self) -> float:
        """Seconds between consecutive feature frames."""
        return self.hop_length / self.sample_rate

    @property
    def feature_dim(self) -> int:
        """Rows per frame of the extractor's output: n_mels, 2 x frequency bins, or 1 (waveform)."""
        if self.kind == "complex":
            return 2 * (self.n_fft // 2 + 1)
        return 1 if self.kind == "waveform" else self.n_mels


FEATURE_KINDS = ("logmel", "complex", "waveform")


@dataclass
class SpecAugmentConfig:
    freq_masks: int = 2
    freq_width: int = 27  # widest frequency mask, in mel bins
    time_masks: int = 2
    time_width: int = 40  # widest time mask, in frames
    time_ratio: float = 0.1  # a time mask covers at most this share of the utterance
    freq_warp: float = 0.0  # vocal tract length perturbation: mel axis scaled by 1 +- up to this


class FeatureExtractor(nn.Module):
    def __init__(self, config: FeatureConfig) -> None:
        super().__init__()
        self.config = config
        if config.kind == "logmel":
            self.mel = T.MelSpectrogram(
                sample_rate=config.sample_rate,
                n_fft=config.n_fft,
                win_length=config.win_length,
                hop_length=config.hop_length,
                n_mels=config.n_mels,
                f_min=config.f_min,
                f_max=config.f_max or None,
            )
        elif config.kind == "complex":
            self.stft = T.Spectrogram(n_fft=config.n_fft, win_length=config.win_length,
                                      hop_length=config.hop_length, power=None)
        elif config.kind == "waveform":
            rate, target = config.sample_rate, config.waveform_sample_rate
            self.resample = T.Resample(rate, target) if rate != target else nn.Identity()
        else:
            raise ValueError(f"unknown feature kind {config.kind!r}; choose from {', '.join(FEATURE_KINDS)}")

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames produced for waveforms of ``lengths`` samples (centred STFT; samples for "waveform")."""
        if self.config.kind == "waveform":
            g = math.gcd(self.config.sample_rate, self.config.waveform_sample_rate)
            orig, new = self.config.sample_rate // g, self.config.waveform_sample_rate // g
            return torch.div(lengths * new + orig - 1, orig, rounding_mode="floor")
        if self.config.kind == "complex":
            return torch.div(lengths, self.config.hop_length, rounding_mode="floor") + 1
        return torch.div(lengths, self.mel.spectrogram.hop_length, rounding_mode="floor") + 1

    @torch.no_grad()
    def forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """audio: (batch, samples), lengths: (batch,) -> ((batch, feature_dim, frames), (batch,)).

        ``feature_dim`` is ``n_mels`` for log-mels, ``2 * (n_fft // 2 + 1)`` for complex
        spectrograms (real parts, then imaginary parts) and 1 for waveforms, whose
        frames are samples at ``waveform_sample_rate``.
        """
        if self.config.kind != "logmel":
            return self._other_kinds(audio, lengths)
        feats = torch.log(self.mel(self._pad(self._level(audio, lengths))) + 1e-6)
        frames = self.output_lengths(lengths).clamp(max=feats.shape[-1])
        feats = feats[..., : max(1, int(frames.max()))]
        mask = torch.arange(feats.shape[-1], device=feats.device)[None, :] < frames[:, None]
        mask = mask[:, None, :]  # (batch, 1, frames)
        if self.config.floor_db > 0:
            peak = feats.masked_fill(~mask, -math.inf).amax(dim=(1, 2), keepdim=True)
            feats = torch.maximum(feats, peak - self.config.floor_db * math.log(10) / 10)
        if self.config.normalize in ("utterance", "clip"):  # statistics per mel bin, or over all bins
            dims = (-1,) if self.config.normalize == "utterance" else (1, 2)
            count = mask.expand_as(feats).sum(dims, keepdim=True).clamp(min=1).to(feats.dtype)
            mean = (feats * mask).sum(dims, keepdim=True) / count
            var = (((feats - mean) * mask) ** 2).sum(dims, keepdim=True) / count
            feats = (feats - mean) / (var + 1e-5).sqrt()
        elif self.config.normalize != "none":
            raise ValueError(f"unknown normalisation {self.config.normalize!r}")
        return feats.masked_fill(~mask, 0.0), frames

    def _level(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Each utterance scaled to an RMS of 0.05 (-26 dBFS) over its own samples, so that the
        fixed floor of the log (1e-6) sits at the same depth below every recording's level: a
        speaker recorded at 4 % of full scale gives the same features as one at full scale."""
        if self.config.level == "none":
            return audio
        if self.config.level != "rms":
            raise ValueError(f"unknown level {self.config.level!r}")
        audio = audio.float()
        # one utterance at a time: a sum over the padded row would depend on the batch's padding
        rms = torch.stack([row[: max(n, 1)].double().square().mean().sqrt().float()
                           for row, n in zip(audio, lengths.tolist())])
        return audio * (0.05 / (rms + 1e-8))[:, None]

    def _pad(self, audio: torch.Tensor) -> torch.Tensor:
        """Half a window of silence after the batch, so that every utterance's last frames see
        silence after its end, as they do when a longer one pads the batch: the centred STFT
        would otherwise reflect the longest utterance's own end back into them, and an
        utterance's features would depend on its batch (tested)."""
        return torch.nn.functional.pad(audio.float(), (0, self.config.n_fft // 2))

    def _other_kinds(self, audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Complex spectrograms or waveforms; "utterance" (or "clip") normalisation scales each
        utterance to unit RMS over its valid frames (and removes a waveform's mean), which keeps phase."""
        if self.config.kind == "complex":
            spec = self.stft(self._pad(audio))  # (batch, bins, frames), complex
            feats = torch.cat([spec.real, spec.imag], dim=1)
        else:
            feats = self.resample(audio.float())[:, None, :]  # (batch, 1, samples)
        frames = self.output_lengths(lengths).clamp(min=1, max=feats.shape[-1])
        feats = feats[..., : int(frames.max())]
        mask = (torch.arange(feats.shape[-1], device=feats.device)[None, :] < frames[:, None])[:, None, :]
        feats = feats.masked_fill(~mask, 0.0)
        if self.config.normalize in ("utterance", "clip"):
            count = (frames * feats.shape[1]).to(feats.dtype)[:, None, None]
            if self.config.kind == "waveform":
                feats = (feats - feats.sum(-1, keepdim=True) / count).masked_fill(~mask, 0.0)
            rms = ((feats ** 2).sum((1, 2), keepdim=True) / count).sqrt()
            feats = feats / (rms + 1e-5)
        elif self.config.normalize != "none":
            raise ValueError(f"unknown normalisation {self.config.normalize!r}")
        return feats, frames


class SpecAugment(nn.Module):
    """Frequency and time masking (Park et al., 2019), active in training mode only.

    With ``freq_warp`` it first stretches or squeezes each utterance's mel axis by
    a random factor (vocal tract length perturbation, Jaitly & Hinton 2013), which
    moves formants as a longer or shorter vocal tract would: other voices.
    """

    def __init__(self, config: SpecAugmentConfig) -> None:
        super().__init__()
        self.config = config
        self.freq = T.FrequencyMasking(config.freq_width, iid_masks=True)
        self.time = T.TimeMasking(config.time_width, iid_masks=True, p=config.time_ratio)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """feats: (batch, n_mels, frames) -> same shape, masked with zeros (the mean)."""
        if not self.training:
            return feats
        if self.config.freq_warp > 0:
            feats = self.warp(feats)
        x = feats.unsqueeze(1)  # iid masks need a channel axis
        for _ in range(self.config.freq_masks):
            x = self.freq(x)
        for _ in range(self.config.time_masks):
            x = self.time(x)
        return x.squeeze(1)

    def warp(self, feats: torch.Tensor) -> torch.Tensor:
        """feats: (batch, n_mels, frames) -> same shape; mel bin f reads bin f * factor."""
        batch, n_mels, frames = feats.shape
        factor = 1 + (2 * torch.rand(batch, device=feats.device) - 1) * self.config.freq_warp
        source = (torch.arange(n_mels, device=feats.device)[None, :] * factor[:, None]).clamp(max=n_mels - 1)
        low = source.floor().long()
        high = (low + 1).clamp(max=n_mels - 1)
        frac = (source - low)[:, :, None]
        gather = lambda index: feats.gather(1, index[:, :, None].expand(-1, -1, frames))  # noqa: E731
        return gather(low) * (1 - frac) + gather(high) * frac
