"""The acoustic model: a Deep Speech 2-style encoder with a CTC head.

    log-mels (batch, n_mels, frames)
      -> Conv2d (stride over frequency and time)
      -> ResidualCNN blocks (LayerNorm over mels, GELU, dropout, conv), twice per block
      -> Linear to rnn_dim
      -> BiGRU stack (LayerNorm, GELU, bidirectional GRU, dropout)   = ``Encoder``
      -> Linear, GELU, dropout, Linear to the vocabulary, log-softmax = ``CTCModel``

``Classifier`` puts a pooling head (mean or attention over valid frames, then a
linear layer, log-softmax) on the same ``Encoder``, or on one of three
baselines: a 2-D CNN on log-mels, the same CNN on complex spectrograms, and the
M5 1-D CNN on raw waveforms. ``Ensemble`` averages the class probabilities of
several classifiers of one config (trained from different seeds).

The model returns log-probs and output lengths in every mode. It knows nothing
of losses, optimisers or decoding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from asr.errors import AsrError
from asr.kernels import BiGRURecurrence, Dropout


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


NAMED_CONFIGS: dict[str, ModelConfig | ClassifierConfig] = {  # classifiers: see below
    # The reference Deep Speech 2-style design: 23,705,373 parameters with 29 classes.
    "seed": ModelConfig(),
    # Trains usefully on 2 CPU cores in minutes. Stride 3 in time (33 output frames a
    # second): at stride 4 a typical utterance needed 72 % of its frames for its
    # characters and CTC's blanks between repeats, and the model learned less per step
    # (see the README). Two BiGRU layers of 320 rather than three of 256 (same size): a
    # GRU step is a chain of small matrix products, so fewer layers run faster.
    "small": ModelConfig(
        n_mels=64, cnn_channels=16, n_res_blocks=2, time_stride=3,
        rnn_dim=320, n_rnn_layers=2, classifier_dim=256, dropout=0.05,
    ),
}


def named_config(name: str, **overrides) -> ModelConfig:
    if name not in NAMED_CONFIGS:
        raise AsrError(f"unknown model config {name!r}; choose from {', '.join(sorted(NAMED_CONFIGS))}")
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
        """x: (batch, channels, feats, time) -> same shape, contiguous.

        Contiguous, so that the GELU, dropout and convolution after it do not run on a
        transposed view: GELU's backward on one took 15 times as long on a CPU, and a
        training step of `small` 1.01-1.07 times as long."""
        return self.norm(x.transpose(2, 3)).transpose(2, 3).contiguous()


class ResidualCNN(nn.Module):
    """Two pre-norm 3x3 convolutions with a residual connection."""

    def __init__(self, channels: int, kernel_size: int, n_feats: int, dropout: float) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.norm1 = CNNLayerNorm(n_feats)
        self.conv1 = nn.Conv2d(channels, channels, kernel_size, padding=pad)
        self.norm2 = CNNLayerNorm(n_feats)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size, padding=pad)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (batch, channels, feats, time), mask: (batch, 1, 1, time) -> same shape as x.

        Padded frames are zeroed before and after each convolution (the norms' biases would
        otherwise reach an utterance's last frames through the kernel), so its outputs and
        gradients do not depend on how much padding its batch gave it (tested).
        """
        y = self.conv1(self.dropout(F.gelu(self.norm1(x))) * mask) * mask
        y = self.conv2(self.dropout(F.gelu(self.norm2(y))) * mask) * mask
        return x + y


class BiGRU(nn.Module):
    """LayerNorm, GELU, one bidirectional GRU layer (batch-major), dropout.

    Each direction starts and ends at the utterance's real bounds, as if padding
    were not there: each runs on the padded batch, the forward one as it is, the
    backward one on every utterance reversed within its own length. That gives the
    outputs and gradients of a packed GRU in less time: a training step took 1.2
    to 2 times as long packed on a 2-core CPU, and 0.97 to 1.17 times as long
    (longer in 49 of 54 comparisons) on an H200 with cuDNN
    (``tools/bench_train_step.py``). ``pack = True`` runs the
    packed GRU instead. The weights are those of ``self.gru`` either way.

    Training on a CPU, the recurrence runs in ``BiGRURecurrence`` (``fused``):
    the same outputs and gradients, and a whole ``small`` training step 1.18,
    1.28 and 1.84 times as fast as through ``nn.GRU`` at 4, 8 and 16 s
    utterances on 2 cores. Under CPU autocast its input projections run in
    bfloat16 and its recurrence in float32. Inference (no gradients) and CUDA keep
    ``nn.GRU``.
    """

    _WEIGHTS = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    pack: bool = False  # True: packed sequences (tests, benchmarks)
    fused: bool = True  # BiGRURecurrence when training on a CPU; False: nn.GRU throughout

    def __init__(self, input_dim: int, hidden_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(input_dim)
        self.gru = nn.GRU(input_dim, hidden_dim, num_layers=1, batch_first=True, bidirectional=True)
        self.dropout = Dropout(dropout)
        # one direction's computation with no weights of its own (a tuple, so not a submodule)
        self._one_way = (nn.GRU(input_dim, hidden_dim, batch_first=True, device="meta"),)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x: (batch, time, input_dim), lengths: (batch,) -> (batch, time, 2 * hidden_dim), zero past each length."""
        x = F.gelu(self.norm(x))
        if self.pack:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, _ = self.gru(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        else:
            out = self._padded(x, lengths.to(x.device))
        return self.dropout(out)

    def _direction(self, x: torch.Tensor, suffix: str) -> torch.Tensor:
        weights = {name: getattr(self.gru, name + suffix) for name in self._WEIGHTS}
        return torch.func.functional_call(self._one_way[0], weights, (x,))[0]

    def _padded(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        t = torch.arange(x.shape[1], device=x.device)[None, :]
        valid = t < lengths[:, None]
        flip = torch.where(valid, lengths[:, None] - 1 - t, t)[..., None]  # reverses each utterance; its own inverse
        if self.fused and x.device.type == "cpu" and torch.is_grad_enabled():
            return self._fused(x, flip, valid)
        backward = self._direction(x.gather(1, flip.expand_as(x)), "_reverse")
        backward = backward.gather(1, flip.expand_as(backward))
        return torch.cat([self._direction(x, ""), backward], dim=-1) * valid[..., None]

    def _fused(self, x: torch.Tensor, flip: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        batch, steps, dim = x.shape
        w_ih, w_hh, b_ih, b_hh = (torch.stack([getattr(self.gru, name), getattr(self.gru, name + "_reverse")])
                                  for name in self._WEIGHTS)
        both = torch.stack([x, x.gather(1, flip.expand_as(x))]).transpose(1, 2)  # (2, T, B, C)
        gi = torch.baddbmm(b_ih[:, None, :], both.reshape(2, steps * batch, dim), w_ih.transpose(1, 2))
        h = BiGRURecurrence.apply(gi.view(2, steps, batch, -1), w_hh, b_hh).transpose(1, 2)  # (2, B, T, H)
        backward = h[1].gather(1, flip.expand_as(h[1]))
        return torch.cat([h[0], backward], dim=-1) * valid[..., None]


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
        self.res_blocks = nn.ModuleList(
            (ResidualCNN(config.cnn_channels, config.kernel_size, n_feats, config.dropout)
              for _ in range(config.n_res_blocks))
        )
        self.proj = nn.Linear(config.cnn_channels * n_feats, config.rnn_dim)
        self.rnn = BiGRUStack(config.rnn_dim, config.rnn_dim, config.n_rnn_layers, config.dropout)
        self.output_dim = self.rnn.output_dim

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return conv_output_lengths(self.conv, lengths, dim=1)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats: (batch, n_mels, frames), lengths: (batch,) -> ((batch, frames', output_dim), (batch,))."""
        # CPU autocast leaves the convolutions in float32: oneDNN's bfloat16 weight gradient (on a
        # CPU with AMX) returned NaN now and then for the same inputs (2 of 15 replays of one step).
        # The classification baselines (CNN2d, M5) do the same.
        with torch.autocast("cpu", enabled=False):
            x = self.conv(feats.unsqueeze(1).float())  # (batch, channels, feats', frames')
            b, c, f, t = x.shape
            out_lengths = self.output_lengths(lengths).clamp(min=1, max=t)
            mask = (torch.arange(t, device=x.device)[None, :] < out_lengths[:, None]).to(x.dtype)[:, None, None, :]
            x = x * mask
            for block in self.res_blocks:
                x = block(x, mask)
        x = self.proj(x.permute(0, 3, 1, 2).reshape(b, t, c * f))  # (batch, frames', rnn_dim)
        return self.rnn(x, out_lengths), out_lengths


class CTCModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.classifier = nn.Sequential(
            nn.Linear(self.encoder.output_dim, config.classifier_dim),
            nn.GELU(),
            Dropout(config.dropout),
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


# --------------------------------------------------------------------------- classification

CLASSIFIER_KINDS = ("encoder", "cnn2d", "complex_cnn", "m5")
POOLINGS = ("mean", "attention", "meanmax")
_DEFAULT_CHANNELS = {"encoder": (), "cnn2d": (16, 32, 64, 128), "complex_cnn": (16, 32, 64, 128),
                     "m5": (128, 128, 256, 512)}
FEATURE_KIND_OF = {"encoder": "logmel", "cnn2d": "logmel", "complex_cnn": "complex", "m5": "waveform"}


@dataclass
class ClassifierConfig:
    """A clip classifier: one of four bodies under one pooling head.

    ``kind`` picks the body and, with it, the input (``FEATURE_KIND_OF``):

    * ``"encoder"`` - the CTC model's ``Encoder`` (configured by ``encoder``) on log-mels;
    * ``"cnn2d"`` - a plain 2-D CNN on log-mels;
    * ``"complex_cnn"`` - the same CNN on complex spectrograms, real and imaginary parts as two channels;
    * ``"m5"`` - the M5 1-D CNN of Dai et al. (2017) on raw waveforms.
    """

    kind: str = "encoder"
    n_classes: int = 12
    pooling: str = "mean"  # over valid frames: "mean", "attention", or "meanmax" (the mean plus the maximum)
    n_feats: int = 80  # rows per input frame, ``FeatureConfig.feature_dim``
    channels: tuple[int, ...] = ()  # convolution widths of a baseline; () = the kind's default
    convs_per_block: int = 1  # cnn2d and complex_cnn: 3x3 convolutions before each pooling (VGG's 2)
    dropout: float = 0.1
    encoder: ModelConfig | None = None  # kind "encoder" only

    def __post_init__(self) -> None:
        if self.kind not in CLASSIFIER_KINDS:
            raise ValueError(f"unknown classifier kind {self.kind!r}; choose from {', '.join(CLASSIFIER_KINDS)}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}; choose from {', '.join(POOLINGS)}")
        if self.n_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {self.n_classes}")
        if self.convs_per_block < 1 or (self.convs_per_block > 1 and self.kind not in ("cnn2d", "complex_cnn")):
            raise ValueError(f"convs_per_block = {self.convs_per_block}: at least 1, and more only for the 2-D CNNs")
        self.channels = tuple(self.channels) or _DEFAULT_CHANNELS[self.kind]
        if self.kind == "encoder":
            if self.encoder is None:
                raise ValueError("a classifier of kind 'encoder' needs an encoder config")
            if self.encoder.n_mels != self.n_feats:
                raise ValueError(f"the encoder takes {self.encoder.n_mels} mels but n_feats is {self.n_feats}")
        elif self.kind == "complex_cnn" and self.n_feats % 2:
            raise ValueError(f"complex spectrograms have an even n_feats (real and imaginary rows), got {self.n_feats}")
        elif self.kind == "m5" and self.n_feats != 1:
            raise ValueError(f"M5 reads waveforms (n_feats = 1), got n_feats = {self.n_feats}")

    @property
    def feature_kind(self) -> str:
        """The ``FeatureConfig.kind`` this classifier reads."""
        return FEATURE_KIND_OF[self.kind]


NAMED_CONFIGS.update({
    # Keyword spotting (12 classes) on the `small` model's log-mels: its encoder, and the three baselines.
    "kws-encoder": ClassifierConfig(kind="encoder", pooling="attention", n_feats=NAMED_CONFIGS["small"].n_mels,
                                   encoder=NAMED_CONFIGS["small"]),
    "kws-cnn2d": ClassifierConfig(kind="cnn2d", n_feats=NAMED_CONFIGS["small"].n_mels),
    "kws-complex": ClassifierConfig(kind="complex_cnn", n_feats=2 * 201),  # n_fft = 400
    "kws-m5": ClassifierConfig(kind="m5", n_feats=1),
})


def time_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """(batch,) valid lengths -> (batch, frames) bool, True on valid frames."""
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]


class CNN2d(nn.Module):
    """A plain VGG-style CNN: blocks of 3x3 convolutions (``convs_per_block`` of them), each with
    batch norm and ReLU, then 2x2 max pooling.

    Padded frames are zeroed before every convolution after the first, so an utterance's
    output does not depend on the padding of its batch (in eval mode).
    """

    def __init__(self, in_channels: int, n_feats: int, channels: tuple[int, ...], dropout: float,
                 convs_per_block: int = 1) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.blocks = nn.ModuleList()
        for c_in, c_out in zip((in_channels, *channels[:-1]), channels):
            layers = []
            for c in (c_in, *[c_out] * (convs_per_block - 1)):
                layers += [nn.Conv2d(c, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
            self.blocks.append(nn.Sequential(*layers, nn.MaxPool2d(2)))
        # channels-last kernels: oneDNN's convolutions train faster with them, 1.45 times on AVX-512
        # and 1.17 times held to AVX2 (docs/design.md); load_state_dict copies into them and keeps them
        self.blocks.to(memory_format=torch.channels_last)
        self.dropout = Dropout(dropout)
        self.min_frames = 2 ** len(channels)
        self.output_dim = channels[-1] * (n_feats // in_channels // self.min_frames)
        if self.output_dim == 0:
            raise ValueError(f"{n_feats // in_channels} feature rows are too few for {len(channels)} poolings")

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats: (batch, in_channels * n_feats, frames) -> ((batch, frames', output_dim), (batch,)).

        With two input channels the first half of the rows is channel 0 (real
        parts), the second half channel 1 (imaginary parts).
        """
        if feats.shape[-1] < self.min_frames:
            feats = F.pad(feats, (0, self.min_frames - feats.shape[-1]))
        b, rows, t = feats.shape
        x = feats.reshape(b, self.in_channels, rows // self.in_channels, t)
        with torch.autocast("cpu", enabled=False):  # float32 convolutions on a CPU, as in Encoder
            x = x.float()
            for block in self.blocks:
                for layer in block[:-1]:
                    x = layer(x)
                    if isinstance(layer, nn.ReLU) and layer is not block[-2]:  # a convolution follows
                        x = x * time_mask(lengths, x.shape[-1])[:, None, None, :].to(x.dtype)
                x = block[-1](x)  # the pooling
                lengths = torch.div(lengths, 2, rounding_mode="floor").clamp(min=1)
                x = x * time_mask(lengths, x.shape[-1])[:, None, None, :].to(x.dtype)
        b, c, f, t = x.shape
        x = self.dropout(x.permute(0, 3, 1, 2).reshape(b, t, c * f))
        return x, lengths.clamp(max=t)


class M5(nn.Module):
    """M5 of Dai et al. (2017), "Very deep convolutional neural networks for raw waveforms".

    An 80-tap convolution with stride 4 (10 ms at 8 kHz), then 3-tap ones; each
    convolution is followed by batch norm, ReLU and 4x max pooling.
    """

    def __init__(self, channels: tuple[int, ...], dropout: float, first_kernel: int = 80,
                 first_stride: int = 4, pool: int = 4) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(zip((1, *channels[:-1]), channels)):
            conv = (nn.Conv1d(1, c_out, first_kernel, stride=first_stride, bias=False) if i == 0
                    else nn.Conv1d(c_in, c_out, 3, padding=1, bias=False))
            self.convs.append(conv)
            self.blocks.append(nn.Sequential(nn.BatchNorm1d(c_out), nn.ReLU(), nn.MaxPool1d(pool)))
        self.pool = pool
        self.dropout = Dropout(dropout)
        self.min_samples = first_kernel + first_stride * (pool ** len(channels) - 1)
        self.output_dim = channels[-1]

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats: (batch, 1, samples), lengths: (batch,) -> ((batch, frames', output_dim), (batch,))."""
        x = feats
        if x.shape[-1] < self.min_samples:
            x = F.pad(x, (0, self.min_samples - x.shape[-1]))
        lengths = lengths.clamp(min=self.min_samples)
        with torch.autocast("cpu", enabled=False):  # float32 convolutions on a CPU, as in Encoder
            x = x.float()
            for conv, block in zip(self.convs, self.blocks):
                x = block(conv(x))
                lengths = torch.div(conv_output_lengths(conv, lengths, dim=0), self.pool, rounding_mode="floor")
                lengths = lengths.clamp(min=1, max=x.shape[-1])
                x = x * time_mask(lengths, x.shape[-1])[:, None, :].to(x.dtype)
        return self.dropout(x.transpose(1, 2)), lengths


class PoolingHead(nn.Module):
    """Pool the valid frames of a sequence (mean, attention, or mean plus maximum), then a linear layer to class scores."""

    def __init__(self, dim: int, n_classes: int, pooling: str, dropout: float, attention_dim: int = 128) -> None:
        super().__init__()
        self.pooling = pooling
        if pooling == "attention":
            self.attention = nn.Sequential(nn.Linear(dim, attention_dim), nn.Tanh(), nn.Linear(attention_dim, 1))
        self.dropout = Dropout(dropout)
        self.out = nn.Linear(dim, n_classes)

    def weights(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x: (batch, frames, dim) -> (batch, frames) pooling weights, zero on padded frames, summing to 1."""
        mask = time_mask(lengths, x.shape[1])
        if self.pooling == "attention":
            scores = self.attention(x).squeeze(-1).float().masked_fill(~mask, float("-inf"))
            return torch.softmax(scores, dim=-1)
        return mask.float() / lengths.clamp(min=1)[:, None].float()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x: (batch, frames, dim), lengths: (batch,) -> scores (batch, n_classes)."""
        w = self.weights(x, lengths)
        valid = time_mask(lengths, x.shape[1])[..., None]
        pooled = torch.einsum("bt,btd->bd", w.to(x.dtype), x.masked_fill(~valid, 0))
        if self.pooling == "meanmax":  # a short event (a bark in 5 s of quiet) is not averaged away
            pooled = pooled + x.masked_fill(~valid, float("-inf")).amax(dim=1)
        return self.out(self.dropout(pooled))


class Classifier(nn.Module):
    """A body (``encoder``) that maps features to a frame sequence, and a pooling head.

    For kind "encoder" the body is the very ``Encoder`` of ``CTCModel``, so the
    weights of a speech recognition model can start it (``load_encoder_weights``).
    """

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        if config.kind == "encoder":
            self.encoder = Encoder(config.encoder)
        elif config.kind in ("cnn2d", "complex_cnn"):
            self.encoder = CNN2d(2 if config.kind == "complex_cnn" else 1, config.n_feats, config.channels,
                                 config.dropout, config.convs_per_block)
        else:
            self.encoder = M5(config.channels, config.dropout)
        self.head = PoolingHead(self.encoder.output_dim, config.n_classes, config.pooling, config.dropout)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """feats: (batch, n_feats, frames), lengths: (batch,) -> log_probs (batch, n_classes)."""
        x, out_lengths = self.encoder(feats, lengths)
        return F.log_softmax(self.head(x, out_lengths).float(), dim=-1)


class Ensemble(nn.Module):
    """Classifiers of one config whose class probabilities are averaged: it returns the log
    of their mean, log-probs (batch, n_classes) like each member."""

    def __init__(self, members: list[Classifier]) -> None:
        super().__init__()
        if not members or any(m.config != members[0].config for m in members):
            raise ValueError("an ensemble needs one or more classifiers of one config")
        self.members = nn.ModuleList(members)
        self.config = members[0].config

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        log_probs = torch.stack([member(feats, lengths) for member in self.members])
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_model(config, members: int = 1) -> nn.Module:
    """The model a config describes (the one place that maps configs to classes); a classifier
    config with ``members`` > 1 gives an ``Ensemble`` of that many."""
    if members < 1 or (members > 1 and not isinstance(config, ClassifierConfig)):
        raise ValueError(f"an ensemble of {members} is not a model here (classifiers only, one or more)")
    if isinstance(config, ModelConfig):
        return CTCModel(config)
    if isinstance(config, ClassifierConfig):
        return Classifier(config) if members == 1 else Ensemble([Classifier(config) for _ in range(members)])
    raise TypeError(f"no model for config type {type(config).__name__}")
