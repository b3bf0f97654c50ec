"""The ``asr`` command as a user runs it: real processes, exit codes, stderr lines."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from asr.checkpoint import ModelFile
from asr.features import FeatureConfig
from asr.model import CTCModel, named_config
from asr.text import CharTokenizer


def run(*args):
    return subprocess.run([sys.executable, "-m", "asr", *map(str, args)], capture_output=True, text=True, timeout=120)


def assert_one_line_error(proc, fragment):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """An untrained tiny model: enough to exercise every output path."""
    torch.manual_seed(0)
    tok = CharTokenizer()
    config = named_config("small", n_mels=20, cnn_channels=4, n_res_blocks=1, rnn_dim=8, n_rnn_layers=1,
                          classifier_dim=8)
    model = CTCModel(config)
    with torch.no_grad():  # make "a" the most likely class everywhere: the output is non-empty
        model.classifier[-1].bias[tok.symbols.index("a")] = 50.0
    path = tmp_path_factory.mktemp("model") / "model.pt"
    return ModelFile("ctc", config, FeatureConfig(n_mels=20), model.state_dict(), tokenizer=tok.to_dict()).save(path)


@pytest.fixture
def wav(tmp_path):
    path = tmp_path / "speech.wav"
    sf.write(path, (0.1 * np.random.default_rng(0).standard_normal(22050 * 2)).astype(np.float32), 22050)
    return path


def test_info_seed_counts_parameters():
    proc = run("info", "seed")
    assert proc.returncode == 0, proc.stderr
    assert "parameters: 23,705,373" in proc.stdout


def test_info_on_a_model_file(model_file):
    proc = run("info", model_file)
    assert proc.returncode == 0 and "parameters:" in proc.stdout and '"tokenizer": "char"' in proc.stdout


@pytest.mark.parametrize("fmt", ["txt", "json", "srt", "vtt"])
def test_transcribe_formats(model_file, wav, tmp_path, fmt):
    proc = run("transcribe", wav, "--model", model_file, "--format", fmt, "--output-dir", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "out" / f"speech.{fmt}").read_text()
    if fmt == "json":
        data = json.loads(text)
        assert data["text"] and data["words"]
        assert {"word", "start", "end", "confidence"} <= set(data["words"][0])
        assert 0 <= data["words"][0]["start"] < data["words"][0]["end"] <= 2.05
    elif fmt == "srt":
        assert text.startswith("1\n00:00:0") and " --> " in text
    elif fmt == "vtt":
        assert text.startswith("WEBVTT")


def test_transcribe_prints_to_stdout(model_file, wav):
    proc = run("transcribe", wav, "--model", model_file)
    assert proc.returncode == 0 and proc.stdout.strip().startswith("a")


@pytest.mark.parametrize("kind", ["missing", "empty", "truncated", "not_audio", "directory"])
def test_transcribe_bad_input(model_file, tmp_path, kind):
    path = tmp_path / "bad.flac"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        sf.write(path, np.zeros(48000, dtype=np.float32) + 0.1, 16000)
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "not_audio":
        path.write_text("hello, I am a text file\n" * 50)
    elif kind == "directory":
        path.mkdir()
    proc = run("transcribe", path, "--model", model_file)
    assert_one_line_error(proc, str(path))


def test_transcribe_keeps_going_past_a_bad_file(model_file, wav, tmp_path):
    proc = run("transcribe", tmp_path / "nope.wav", wav, "--model", model_file)
    assert proc.returncode == 1
    assert "nope.wav" in proc.stderr and proc.stdout.startswith("speech\t")  # utt_id<TAB>text: the stem


def test_transcribe_bad_model(tmp_path, wav):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"garbage")
    assert_one_line_error(run("transcribe", wav, "--model", bad), "not a readable asr model file")
    assert_one_line_error(run("transcribe", wav, "--model", tmp_path / "none.pt"), "no such model file")


def test_score(tmp_path):
    (tmp_path / "ref").write_text("a the cat sat\nb on the mat\n")
    (tmp_path / "hyp").write_text("b on a mat\na the cat sat\n")
    proc = run("score", "--ref", tmp_path / "ref", "--hyp", tmp_path / "hyp", "--metric", "wer",
               "--details", tmp_path / "errs.txt")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("WER 16.67% [ 1 / 6 words")
    assert "REF:" in (tmp_path / "errs.txt").read_text()
    proc = run("score", "--ref", tmp_path / "ref", "--hyp", tmp_path / "hyp", "--metric", "cer")
    assert proc.stdout.startswith("CER ")


def test_score_mismatched_files(tmp_path):
    (tmp_path / "ref").write_text("a x\nb y\n")
    (tmp_path / "hyp").write_text("a x\nc y\n")
    assert_one_line_error(run("score", "--ref", tmp_path / "ref", "--hyp", tmp_path / "hyp"), "ids differ")
    assert_one_line_error(run("score", "--ref", tmp_path / "nope", "--hyp", tmp_path / "hyp"), "no such file")
    (tmp_path / "bin").write_bytes(bytes(range(256)))
    assert_one_line_error(run("score", "--ref", tmp_path / "bin", "--hyp", tmp_path / "hyp"), "not a UTF-8")


@pytest.mark.parametrize("args, fragment", [(["transcribe"], "required"), (["score", "--metric", "per"], "invalid choice"),
                                            (["nonsense"], "invalid choice")])
def test_bad_arguments_are_one_line(args, fragment):
    proc = run(*args)
    assert proc.returncode == 2
    assert_one_line_error(proc, fragment)


def test_transcribe_several_files_round_trips_through_score(model_file, tmp_path):
    """asr transcribe a.wav b.wav > hyp.txt && asr score --ref ref.txt --hyp hyp.txt"""
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        sf.write(tmp_path / f"{name}.wav", (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
    proc = run("transcribe", tmp_path / "a.wav", tmp_path / "b.wav", "--model", model_file)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["a", "b"]  # utt_id<TAB>text, the id the stem
    (tmp_path / "hyp.txt").write_text(proc.stdout)
    (tmp_path / "ref.txt").write_text("a a\nb the cat\n")
    proc = run("score", "--ref", tmp_path / "ref.txt", "--hyp", tmp_path / "hyp.txt", "--metric", "wer")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("WER ") and "over 2 utterances" in proc.stdout


def test_transcribe_takes_folders_and_manifests(model_file, tmp_path):
    rng = np.random.default_rng(0)
    entries = []
    for i, name in enumerate(("x/u1.flac", "y/u2.wav")):
        path = tmp_path / "audio" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (0.1 * rng.standard_normal(8000 + 800 * i)).astype(np.float32), 16000)
        entries.append({"id": f"utt{i}", "audio_filepath": str(path), "duration": 0.5})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    folder = run("transcribe", tmp_path / "audio", "--model", model_file)
    assert folder.returncode == 0, folder.stderr
    assert [line.split("\t")[0] for line in folder.stdout.splitlines()] == ["u1", "u2"]
    manifest = run("transcribe", tmp_path / "m.jsonl", "--model", model_file, "--format", "all",
                   "--output-dir", tmp_path / "out")
    assert manifest.returncode == 0, manifest.stderr
    for fmt in ("txt", "json", "srt", "vtt", "tsv"):
        assert (tmp_path / "out" / f"utt0.{fmt}").is_file(), fmt
    tsv = (tmp_path / "out" / "utt1.tsv").read_text().splitlines()
    assert tsv[0] == "start\tend\ttext" and all(len(line.split("\t")) == 3 for line in tsv[1:])
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run("transcribe", tmp_path / "empty", "--model", model_file), "no audio files")


def test_the_api_decodes_as_the_cli_does_and_keeps_its_decoder(model_file, wav):
    """transcribe() without options uses the model file's decoding, as asr transcribe does; a
    decoder is made once per set of options."""
    import asr
    from asr.decoding import DecodingOptions

    model = asr.load_model(model_file)
    first = asr.transcribe(model, str(wav))
    assert asr.transcribe(model, str(wav)).text == first.text
    assert list(model._decoders) == [model.decoding]  # one decoder, reused
    proc = run("transcribe", wav, "--model", model_file)
    assert proc.stdout.strip() == first.text
    asr.transcribe(model, str(wav), DecodingOptions(decoder="beam", beam_width=4))
    assert len(model._decoders) == 2
    model.close()
    assert not model._decoders


def test_transcribe_without_the_optional_extras(model_file, wav, tmp_path):
    """`pip install .` without [lm] and [train]: kenlm, tensorboard and matplotlib cannot be
    imported, greedy transcription works, and beam search with an LM says what to install."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class Missing:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('kenlm', 'tensorboard', 'matplotlib'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, Missing())\n")
    import os

    env = {**os.environ, "PYTHONPATH": str(blocker)}
    proc = subprocess.run([sys.executable, "-m", "asr", "transcribe", str(wav), "--model", str(model_file)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0 and proc.stdout.strip().startswith("a"), proc.stderr
    (tmp_path / "lm.arpa").write_text("\\data\\\n")
    proc = subprocess.run([sys.executable, "-m", "asr", "transcribe", str(wav), "--model", str(model_file),
                           "--lm", str(tmp_path / "lm.arpa")], capture_output=True, text=True, timeout=120, env=env)
    assert_one_line_error(proc, "kenlm is not installed")
