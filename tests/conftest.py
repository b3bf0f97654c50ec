"""Shared fixtures: the real data beside the repository (skipped without it), TTS engines,
and a tiny speech corpus with a tiny CTC trainer over it."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

SHARED = Path(os.environ.get("ASR_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off"]


@pytest.fixture
def shared_data():
    """The real recordings beside the repository; tests that need them skip without them."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED} (set ASR_SHARED_DATA)")
    return SHARED


@pytest.fixture
def need_espeak():
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (bash tools/install_system_deps.sh)")


def make_ctc_corpus(folder: Path, n: int = 12) -> list[dict]:
    """``n`` utterances of 0.25-0.75 s of noise, each with a two-word transcript, as manifest entries."""
    rng = np.random.default_rng(0)
    entries = []
    for i in range(n):
        samples = int(rng.integers(4000, 12000))
        path = folder / f"u{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(samples)).astype(np.float32), 16000)
        text = " ".join(rng.choice(WORDS, size=2))
        entries.append({"id": f"u{i}", "audio_filepath": str(path), "duration": samples / 16000, "text": text})
    return entries


@pytest.fixture
def ctc_corpus(tmp_path):
    return make_ctc_corpus(tmp_path)


def make_ctc_trainer(corpus, exp_dir, max_steps=8, transform=None, callbacks=None, **overrides):
    """A tiny CTC model (2 BiGRU layers of 16) and a ``Trainer`` over ``corpus``, with the standard
    callbacks (time budget, TensorBoard, learning curve) unless ``callbacks`` says otherwise;
    ``overrides`` go to its ``TrainConfig``."""
    from asr import callbacks as hooks
    from asr.features import FeatureConfig, SpecAugmentConfig
    from asr.model import CTCModel, named_config
    from asr.text import CharTokenizer
    from asr.training import TrainConfig, Trainer

    torch.manual_seed(0)
    model = CTCModel(named_config("small", n_mels=20, cnn_channels=4, n_res_blocks=1, rnn_dim=16,
                                  n_rnn_layers=2, classifier_dim=16, dropout=0.1))
    config = TrainConfig(max_steps=max_steps, lr=3e-3, max_frames=1600, checkpoint_every=3, log_every=2,
                         specaugment=SpecAugmentConfig(freq_width=4, time_width=5, freq_warp=0.1), seed=7,
                         **overrides)
    if callbacks is None:
        callbacks = hooks.standard(config, exp_dir)
    return Trainer.for_ctc(model, CharTokenizer(), FeatureConfig(n_mels=20), corpus, config, exp_dir,
                           dev_entries=corpus[:3], transform=transform, callbacks=callbacks)


@pytest.fixture
def ctc_trainer():
    return make_ctc_trainer
