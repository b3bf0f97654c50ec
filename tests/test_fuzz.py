"""Hostile input, tried systematically: property-based fuzzing (hypothesis) of the audio loader,
the Kaldi text and manifest readers, the config loader, the model-file loader and the text
normaliser. Any input gives a result or the project's one-line error, never another exception
or a hang (each example has a deadline). A fixed budget keeps the whole file near 30 s."""

import json
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asr.errors import AsrError

FUZZ = settings(max_examples=60, deadline=3000, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

HEADERS = [b"", b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x80>\x00\x00\x00}\x00\x00\x02\x00\x10\x00data",
           b"fLaC\x00\x00\x00\x22", b"OggS\x00\x02", b"ID3\x03\x00"]


def write(data: bytes | str, suffix: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="fuzz-"))
    path = folder / f"input{suffix}"
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass"))
    return path


@pytest.mark.slow
@FUZZ
@given(header=st.sampled_from(HEADERS), body=st.binary(max_size=4096), suffix=st.sampled_from([".wav", ".flac", ".ogg", ".mp3", ""]))
def test_audio_loader(header, body, suffix):
    from asr.audio import iter_chunks, load_audio

    path = write(header + body, suffix)
    try:
        audio = load_audio(path)
        assert audio.ndim == 1 and audio.numel() > 0
    except AsrError as exc:
        assert "\n" not in str(exc)
    try:
        for chunk in iter_chunks(path, chunk_seconds=0.5):
            assert chunk.audio.ndim == 1
    except AsrError as exc:
        assert "\n" not in str(exc)


@FUZZ
@given(st.text(max_size=400) | st.binary(max_size=400).map(lambda b: b.decode("latin-1")))
def test_kaldi_text_reader(text):
    from asr.scoring import read_kaldi_text

    path = write(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text, ".txt")
    try:
        table = read_kaldi_text(path)
        assert all(isinstance(k, str) and isinstance(v, str) and k and not k.isspace() for k, v in table.items())
    except AsrError as exc:
        assert "\n" not in str(exc)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=8)
ENTRY = st.dictionaries(st.sampled_from(["audio_filepath", "duration", "text", "id", "label", "offset"]), JSON_VALUES)


@FUZZ
@given(lines=st.lists(ENTRY.map(json.dumps) | st.text(max_size=60), max_size=6))
def test_manifest_reader(lines):
    from asr.data import read_manifest

    path = write("\n".join(lines), ".jsonl")
    try:
        entries = read_manifest(path)
        assert all(isinstance(e["audio_filepath"], str) and isinstance(e["duration"], float) for e in entries)
    except AsrError as exc:
        assert "\n" not in str(exc)


TOML_KEYS = st.sampled_from(["exp_dir", "model_name", "tokenizer", "train", "features", "data", "lm", "decoding",
                             "max_steps", "lr", "n_mels", "specaugment", "optimizer", "alphas", "nonsense"])
TOML_TREE = st.recursive(st.integers(-5, 10**6) | st.floats(allow_nan=False, allow_infinity=False) | st.booleans()
                         | st.text(string.ascii_letters + "-_.", max_size=10),
                         lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TOML_KEYS, inner, max_size=4),
                         max_leaves=12)


@FUZZ
@given(st.dictionaries(TOML_KEYS, TOML_TREE, max_size=5))
def test_config_loader_on_tables(data):
    from asr.config import load_config
    from asr.recipes.librispeech import LibriSpeechConfig

    try:
        config = load_config(LibriSpeechConfig(), data=data)
        assert isinstance(config, LibriSpeechConfig)
    except AsrError as exc:
        assert "\n" not in str(exc)


@FUZZ
@given(st.text(max_size=300))
def test_config_loader_on_any_text(text):
    from asr.config import load_config
    from asr.recipes.fsdd import FSDDConfig

    try:
        load_config(FSDDConfig(), write(text, ".toml"))
    except AsrError as exc:
        assert "\n" not in str(exc)


@FUZZ
@given(st.binary(max_size=2048))
def test_model_file_loader(data):
    from asr.checkpoint import ModelFile

    with pytest.raises(AsrError):
        ModelFile.load(write(b"PK\x03\x04" + data if data[:1] == b"\x00" else data, ".pt"))


@FUZZ
@given(st.text(max_size=200) | st.from_regex(r"[0-9,.\- ]{1,60}", fullmatch=True) | st.just("9" * 5000))
def test_normaliser(text):
    from asr.text import normalize_text

    out = normalize_text(text)
    assert set(out) <= set("abcdefghijklmnopqrstuvwxyz' ")
    assert normalize_text(out) == out  # a fixed point: scoring the normalised text changes nothing
