"""Features: log-mel spectrograms, normalisation, and SpecAugment.

``FeatureExtractor`` turns padded waveforms into normalised log-mels;
``SpecAugment`` masks them while training and does nothing in eval mode.
Both are ``nn.Module``s so they run on the training device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchaudio.transforms as T
from torch import nn


@dataclass
class FeatureConfig:
    sample_rate: int = 16000
    n_mels: int = 128
    n_fft: int = 400  # 25 ms window at 16 kHz
    win_length: int = 400
    hop_length: int = 160  # 10 ms hop
    normalize: str = "utterance"  # "utterance" (per-utterance mean/variance per mel bin) or "none"

    @property
    def frame_shift(self) -> float:
        """Seconds between consecutive feature frames."""
        return self.hop_length / self.sample_rate


@dataclass
class SpecAugmentConfig:
    freq_masks: int = 2
    freq_width: int = 27  # widest frequency mask, in mel bins
    time_masks: int = 2
    time_width: int = 40  # widest time mask, in frames
    time_ratio: float = 0.1  # a time mask covers at most this share of the utterance


class FeatureExtractor(nn.Module):
    def __init__(self, config: FeatureConfig) -> None:
        super().__init__()
        self.config = config
        self.mel = T.MelSpectrogram(
            sample_rate=config.sample_rate,
            n_fft=config.n_fft,
            win_length=config.win_length,
            hop_length=config.hop_length,
            n_mels=config.n_mels,
        )

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames produced for waveforms of ``lengths`` samples (centred STFT)."""
        return torch.div(lengths, self.mel.spectrogram.hop_length, rounding_mode="floor") + 1

    @torch.no_grad()
    def forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """audio: (batch, samples), lengths: (batch,) -> ((batch, n_mels, frames), (batch,))."""
        feats = torch.log(self.mel(audio.float()) + 1e-6)
        frames = self.output_lengths(lengths).clamp(max=feats.shape[-1])
        mask = torch.arange(feats.shape[-1], device=feats.device)[None, :] < frames[:, None]
        mask = mask[:, None, :]  # (batch, 1, frames)
        if self.config.normalize == "utterance":
            count = frames[:, None, None].clamp(min=1).to(feats.dtype)
            mean = (feats * mask).sum(-1, keepdim=True) / count
            var = (((feats - mean) * mask) ** 2).sum(-1, keepdim=True) / count
            feats = (feats - mean) / (var + 1e-5).sqrt()
        elif self.config.normalize != "none":
            raise ValueError(f"unknown normalisation {self.config.normalize!r}")
        return feats.masked_fill(~mask, 0.0), frames


class SpecAugment(nn.Module):
    """Frequency and time masking (Park et al., 2019), active in training mode only."""

    def __init__(self, config: SpecAugmentConfig) -> None:
        super().__init__()
        self.config = config
        self.freq = T.FrequencyMasking(config.freq_width, iid_masks=True)
        self.time = T.TimeMasking(config.time_width, iid_masks=True, p=config.time_ratio)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """feats: (batch, n_mels, frames) -> same shape, masked with zeros (the mean)."""
        if not self.training:
            return feats
        x = feats.unsqueeze(1)  # iid masks need a channel axis
        for _ in range(self.config.freq_masks):
            x = self.freq(x)
        for _ in range(self.config.time_masks):
            x = self.time(x)
        return x.squeeze(1)
