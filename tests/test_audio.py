import numpy as np
import pytest
import soundfile as sf
import torch

from asr.audio import SAMPLE_RATE, iter_chunks, load_audio
from asr.errors import AsrError


def tone(seconds, rate, freq=440.0, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100])
@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_load_resamples_to_16k(tmp_path, rate, fmt):
    path = tmp_path / f"a.{fmt}"
    sf.write(path, tone(1.0, rate), rate)
    audio = load_audio(path)
    assert audio.dtype == torch.float32 and audio.ndim == 1
    assert abs(audio.numel() - SAMPLE_RATE) <= 2
    # the 440 Hz tone survives resampling
    spectrum = torch.fft.rfft(audio).abs()
    assert abs(int(spectrum.argmax()) - 440) <= 2


def test_stereo_is_downmixed(tmp_path):
    left = tone(0.5, 16000)
    stereo = np.stack([left, -left], axis=1)  # cancels out when averaged
    sf.write(tmp_path / "s.wav", stereo, 16000)
    assert load_audio(tmp_path / "s.wav").abs().max() < 1e-4


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    (b"", "empty"),
    (b"this is not audio at all" * 10, "not a readable audio file"),
])
def test_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AsrError, match=message):
        load_audio(path)


def test_truncated_flac(tmp_path):
    path = tmp_path / "t.flac"
    sf.write(path, tone(3.0, 16000), 16000)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(AsrError):
        load_audio(path)


def test_chunks_cover_the_file_in_bounded_pieces(tmp_path):
    rate = 22050
    x = tone(65.0, rate)
    x[int(9.5 * rate): int(9.7 * rate)] = 0  # a pause where the first cut should go
    sf.write(tmp_path / "long.wav", x, rate)
    chunks = list(iter_chunks(tmp_path / "long.wav", chunk_seconds=10.0, search_seconds=2.0))
    assert all(c.audio.numel() <= 10 * SAMPLE_RATE for c in chunks)
    total = sum(c.audio.numel() for c in chunks)
    assert abs(total - 65 * SAMPLE_RATE) < 50
    assert 9.5 <= chunks[1].offset <= 9.7  # cut in the pause
    for a, b in zip(chunks, chunks[1:]):
        assert abs(a.offset + a.audio.numel() / SAMPLE_RATE - b.offset) < 1e-3
