"""The acoustic model: a Deep Speech 2-style encoder with a CTC head.

    log-mels (batch, n_mels, frames)
      -> Conv2d (stride over frequency and time)
      -> ResidualCNN blocks (LayerNorm over mels, GELU, dropout, conv), twice per block
      -> Linear to rnn_dim
      -> BiGRU stack (LayerNorm, GELU, bidirectional GRU, dropout)   = ``Encoder``
      -> Linear, GELU, dropout, Linear to the vocabulary, log-softmax = ``CTCModel``

The model returns log-probs and output lengths in every mode. It knows nothing
of losses, optimisers or decoding.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


@dataclass
class ModelConfig:
    n_mels: int = 128
    cnn_channels: int = 32
    n_res_blocks: int = 3
    kernel_size: int = 3
    freq_stride: int = 2
    time_stride: int = 2
    rnn_dim: int = 512
    n_rnn_layers: int = 5
    classifier_dim: int = 512
    n_classes: int = 29
    dropout: float = 0.1

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**data)


NAMED_CONFIGS: dict[str, ModelConfig] = {
    # The reference Deep Speech 2-style design: 23,705,373 parameters with 29 classes.
    "seed": ModelConfig(),
    # Trains usefully on 2 CPU cores in minutes.
    "small": ModelConfig(
        n_mels=80, cnn_channels=16, n_res_blocks=2, time_stride=3,
        rnn_dim=256, n_rnn_layers=3, classifier_dim=256, dropout=0.1,
    ),
}


def named_config(name: str, **overrides) -> ModelConfig:
    if name not in NAMED_CONFIGS:
        raise KeyError(f"unknown model config {name!r}; choose from {sorted(NAMED_CONFIGS)}")
    return replace(NAMED_CONFIGS[name], **overrides)


def conv_output_lengths(conv: nn.Conv2d, lengths: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Output lengths of ``conv`` along its ``dim`` spatial axis (0 = height, 1 = width)."""
    k, s, p, d = conv.kernel_size[dim], conv.stride[dim], conv.padding[dim], conv.dilation[dim]
    return torch.div(lengths + 2 * p - d * (k - 1) - 1, s, rounding_mode="floor") + 1


class CNNLayerNorm(nn.Module):
    """LayerNorm over the feature (mel) axis of a (batch, channels, feats, time) map."""

    def __init__(self, n_feats: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(n_feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, channels, feats, time) -> same shape."""
        return self.norm(x.transpose(2, 3)).transpose(2, 3)


class ResidualCNN(nn.Module):
    """Two pre-norm 3x3 convolutions with a residual connection."""

    def __init__(self, channels: int, kernel_size: int, n_feats: int, dropout: float) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.norm1 = CNNLayerNorm(n_feats)
        self.conv1 = nn.Conv2d(channels, channels, kernel_size, padding=pad)
        self.norm2 = CNNLayerNorm(n_feats)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size, padding=pad)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, channels, feats, time) -> same shape."""
        y = self.conv1(self.dropout(F.gelu(self.norm1(x))))
        y = self.conv2(self.dropout(F.gelu(self.norm2(y))))
        return x + y


class BiGRU(nn.Module):
    """LayerNorm, GELU, one bidirectional GRU layer (batch-major), dropout."""

    def __init__(self, input_dim: int, hidden_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(input_dim)
        self.gru = nn.GRU(input_dim, hidden_dim, num_layers=1, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x: (batch, time, input_dim), lengths: (batch,) -> (batch, time, 2 * hidden_dim).

        Padded frames are packed away, so the backward direction starts at each
        utterance's real end.
        """
        x = F.gelu(self.norm(x))
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return self.dropout(out)


class BiGRUStack(nn.Module):
    def __init__(self, input_dim: int, hidden_dim: int, n_layers: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            BiGRU(input_dim if i == 0 else 2 * hidden_dim, hidden_dim, dropout) for i in range(n_layers)
        )
        self.output_dim = 2 * hidden_dim if n_layers else input_dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x: (batch, time, input_dim) -> (batch, time, output_dim); every layer is batch-major."""
        for layer in self.layers:
            x = layer(x, lengths)
        return x


class Encoder(nn.Module):
    """Residual CNN front end and BiGRU stack, shared by the CTC and classification heads."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        pad = config.kernel_size // 2
        self.conv = nn.Conv2d(
            1, config.cnn_channels, config.kernel_size,
            stride=(config.freq_stride, config.time_stride), padding=pad,
        )
        n_feats = int(conv_output_lengths(self.conv, torch.tensor(config.n_mels), dim=0))
        self.res_blocks = nn.Sequential(
            *(ResidualCNN(config.cnn_channels, config.kernel_size, n_feats, config.dropout)
              for _ in range(config.n_res_blocks))
        )
        self.proj = nn.Linear(config.cnn_channels * n_feats, config.rnn_dim)
        self.rnn = BiGRUStack(config.rnn_dim, config.rnn_dim, config.n_rnn_layers, config.dropout)
        self.output_dim = self.rnn.output_dim

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return conv_output_lengths(self.conv, lengths, dim=1)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats: (batch, n_mels, frames), lengths: (batch,) -> ((batch, frames', output_dim), (batch,))."""
        x = self.res_blocks(self.conv(feats.unsqueeze(1)))  # (batch, channels, feats', frames')
        b, c, f, t = x.shape
        x = self.proj(x.permute(0, 3, 1, 2).reshape(b, t, c * f))  # (batch, frames', rnn_dim)
        out_lengths = self.output_lengths(lengths).clamp(min=1, max=t)
        return self.rnn(x, out_lengths), out_lengths


class CTCModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.classifier = nn.Sequential(
            nn.Linear(self.encoder.output_dim, config.classifier_dim),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.classifier_dim, config.n_classes),
        )

    @property
    def time_stride(self) -> int:
        """Feature frames per output frame."""
        return self.encoder.conv.stride[1]

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats: (batch, n_mels, frames) -> (log_probs (batch, frames', n_classes), lengths (batch,))."""
        x, out_lengths = self.encoder(feats, lengths)
        return F.log_softmax(self.classifier(x).float(), dim=-1), out_lengths


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_model(config) -> nn.Module:
    """The model a config describes (the one place that maps configs to classes)."""
    if isinstance(config, ModelConfig):
        return CTCModel(config)
    raise TypeError(f"no model for config type {type(config).__name__}")


def config_from_checkpoint(data: dict):
    """The model config stored in a checkpoint, as its dataclass."""
    task = data.get("task", "ctc")
    if task == "ctc":
        return ModelConfig.from_dict(data["model_config"])
    raise ValueError(f"unknown task {task!r} in checkpoint")
