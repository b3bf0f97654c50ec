"""Shared fixtures: the real data beside the repository (skipped without it), TTS engines, a
Range-capable HTTP server on 127.0.0.1, and tiny corpora with a tiny CTC trainer over them."""

import http.server
import os
import re
import shutil
import threading
import urllib.parse
from dataclasses import dataclass, field
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


def make_librispeech_corpus(root: Path, subset: str = "train-tiny", n: int = 24, seed: int = 0) -> Path:
    """A tiny corpus in the LibriSpeech layout (``root/LibriSpeech/<subset>/<spk>/<chapter>/``): tones
    and noise of 0.3 to 0.9 s, each with a two- or three-word transcript."""
    rng = np.random.default_rng(seed)
    folder = root / "LibriSpeech" / subset / "19" / "198"
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        samples = int(rng.integers(4800, 14400))
        t = np.arange(samples) / 16000
        audio = 0.2 * np.sin(2 * np.pi * (200 + 40 * i) * t) + 0.05 * rng.standard_normal(samples)
        sf.write(folder / f"19-198-{i:04d}.flac", audio.astype(np.float32), 16000)
        lines.append(f"19-198-{i:04d} " + " ".join(rng.choice(WORDS, size=2 + i % 2)).upper())
    (folder / "19-198.trans.txt").write_text("\n".join(lines) + "\n")
    return root


TINY_RECIPE = """
model_name = "small"
[model]
cnn_channels = 4
n_res_blocks = 1
rnn_dim = {rnn_dim}
n_rnn_layers = 1
classifier_dim = 16
dropout = 0.0
[features]
n_mels = 20
[data]
root = "{root}"
train = ["train-tiny"]
dev = []
test = []
[train]
max_steps = {max_steps}
max_frames = {max_frames}
accumulate = {accumulate}
lr = 3e-3
log_every = 1
checkpoint_every = {checkpoint_every}
eval_every = 0
sortagrad = false
specaugment = false
"""


@pytest.fixture
def tiny_recipe(tmp_path):
    """Write a LibriSpeech-recipe config over a tiny corpus: ``tiny_recipe(name, **settings)`` -> path.
    Deterministic (no dropout, SpecAugment or waveform augmentation), so runs can be compared."""
    corpus = make_librispeech_corpus(tmp_path / "corpus")

    def write(name: str = "tiny", max_steps: int = 8, max_frames: int = 600, accumulate: int = 1,
              checkpoint_every: int = 2, rnn_dim: int = 16) -> Path:
        path = tmp_path / f"{name}.toml"
        path.write_text(TINY_RECIPE.format(root=corpus, max_steps=max_steps, max_frames=max_frames,
                                           accumulate=accumulate, checkpoint_every=checkpoint_every,
                                           rnn_dim=rnn_dim))
        return path

    return write


# --------------------------------------------------------------------------- a loopback HTTP server

@dataclass
class ServerState:
    """What the loopback server serves and saw; ``serve`` puts a file on it."""

    root: Path
    base_url: str = ""
    ranges: bool = True  # honour Range requests
    drop_after: int | None = None  # send this many body bytes, then hang up (once)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    def serve(self, name: str, data: bytes) -> str:
        """Put ``data`` on the server as ``name``; returns its URL."""
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return f"{self.base_url}/{name}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "TestServer/1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        state: ServerState = self.server.state
        range_header = self.headers.get("Range")
        state.requests.append((self.path, range_header))
        rel = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        path = (state.root / rel).resolve()
        if not path.is_relative_to(state.root) or not path.is_file():
            state.statuses.append(404)
            self.send_error(404)
            return
        data = path.read_bytes()
        start, status = 0, 200
        if range_header and state.ranges:
            start = int(re.fullmatch(r"bytes=(\d+)-", range_header).group(1))
            if start >= len(data):
                state.statuses.append(416)
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        state.statuses.append(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes" if state.ranges else "none")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if state.drop_after is not None:
            body, state.drop_after = body[: state.drop_after], None
            self.close_connection = True
        self.wfile.write(body)
        self.wfile.flush()


@pytest.fixture
def server(tmp_path):
    """A Range-capable HTTP server on 127.0.0.1 serving ``tmp_path/www`` (downloads, resumes, mirrors)."""
    root = (tmp_path / "www").resolve()
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.state = ServerState(root=root, base_url=f"http://127.0.0.1:{httpd.server_address[1]}")
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd.state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# --------------------------------------------------------------------------- helpers of several test files

@pytest.fixture
def waveform_augment():
    """A factory of waveform augmentations with every random part on: speed, room, shift, noise, gain."""
    from asr.augment import AugmentConfig, WaveformAugment

    return lambda: WaveformAugment(AugmentConfig(speed_prob=0.5, reverb_prob=0.5, noise_prob=0.5,
                                                 snr_range=(5.0, 30.0), synthetic_noise=True, gain_range=(-6.0, 6.0)))


@pytest.fixture
def padded_and_packed():
    """``run(layer, x, lengths)``: (output, input gradient, weight gradients) of a BiGRU layer on the
    padded path, then packed."""
    def run(layer, x: torch.Tensor, lengths: torch.Tensor) -> list[tuple]:
        runs = []
        for pack in (False, True):
            layer.pack = pack
            layer.zero_grad()
            inputs = x.clone().requires_grad_()
            out = layer(inputs, lengths)
            out.pow(2).sum().backward()
            runs.append((out, inputs.grad, [p.grad.clone() for p in layer.parameters()]))
        return runs

    return run
