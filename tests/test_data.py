import json

import pytest
import soundfile as sf
import numpy as np

from asr.corpora import read_librispeech, read_ljspeech
from asr.data import BucketingBatchSampler, SpeechDataset, collate, read_manifest, write_manifest
from asr.errors import AsrError
from asr.text import CharTokenizer


def test_librispeech_reader_on_real_layout(shared_data):
    entries = read_librispeech(shared_data / "librispeech-sample" / "LibriSpeech" / "test-clean")
    assert len(entries) == 4
    first = entries[0]
    assert first["id"] == "1089-134686-0000" and first["speaker"] == "1089"
    assert first["audio_filepath"].endswith("1089-134686-0000.flac")
    assert 1.0 < first["duration"] < 35.0
    assert first["text"] == first["text"].lower() and first["text"].split()[0].isalpha()


def test_librispeech_reader_errors(tmp_path):
    with pytest.raises(AsrError, match="not a LibriSpeech subset"):
        read_librispeech(tmp_path / "nope")
    (tmp_path / "1" / "2").mkdir(parents=True)
    (tmp_path / "1" / "2" / "1-2.trans.txt").write_text("1-2-0000 HELLO\n")
    with pytest.raises(AsrError, match="missing"):
        read_librispeech(tmp_path)


def test_ljspeech_reader(shared_data):
    entries = read_ljspeech(shared_data / "ljspeech" / "LJSpeech-1.1", ids=["LJ001-0007"])
    assert len(entries) == 1
    assert "fourteen fifty five" in entries[0]["text"]


def test_manifest_round_trip_and_errors(tmp_path):
    entries = [{"audio_filepath": "/a.flac", "duration": 1.5, "text": "hi"}]
    path = write_manifest(entries, tmp_path / "m" / "x.jsonl")
    assert read_manifest(path) == entries
    assert json.loads(path.read_text().splitlines()[0])["duration"] == 1.5
    (tmp_path / "bad.jsonl").write_text('{"duration": 1}\n')
    with pytest.raises(AsrError, match="bad.jsonl:1"):
        read_manifest(tmp_path / "bad.jsonl")


def test_bucketing_sampler_limits_frames_and_covers_everything():
    rng = np.random.default_rng(0)
    durations = list(rng.uniform(1, 15, size=300))
    sampler = BucketingBatchSampler(durations, max_frames=6000, seed=3)
    batches = sampler.batches(1)
    assert sorted(i for b in batches for i in b) == list(range(300))
    padded = real = 0
    for batch in batches:
        longest = max(sampler.frames[i] for i in batch)
        assert longest * len(batch) <= 6000
        padded += longest * len(batch)
        real += sum(sampler.frames[i] for i in batch)
    assert real / padded > 0.9  # little padding
    assert sampler.batches(1) == sampler.batches(1)  # deterministic
    assert sampler.batches(1) != sampler.batches(2)  # reshuffled per epoch


def test_sortagrad_first_epoch_is_shortest_first():
    durations = [5.0, 1.0, 3.0, 2.0, 4.0] * 4
    sampler = BucketingBatchSampler(durations, max_frames=1000, sortagrad=True)
    longest = [max(durations[i] for i in b) for b in sampler.batches(0)]
    assert longest == sorted(longest)


def test_sampler_rejects_too_long_utterance():
    with pytest.raises(AsrError, match="max_frames"):
        BucketingBatchSampler([30.0], max_frames=1000)


def test_collate_pads(tmp_path):
    paths = []
    for i, n in enumerate([16000, 8000]):
        p = tmp_path / f"{i}.wav"
        sf.write(p, np.zeros(n, dtype=np.float32), 16000)
        paths.append({"audio_filepath": str(p), "duration": n / 16000, "text": "ab" * (i + 1)})
    ds = SpeechDataset(paths, CharTokenizer())
    batch = collate([ds[0], ds[1]])
    assert batch.audio.shape == (2, 16000) and batch.audio_lengths.tolist() == [16000, 8000]
    assert batch.targets.shape == (2, 4) and batch.target_lengths.tolist() == [2, 4]
