"""Language models in the recipes and the CLI: ``python -m asr.lm``, the LibriSpeech recipe's
``lm``, ``tune``, ``tokenizer`` and ``evaluate`` stages, and ``asr transcribe --decoder beam``."""

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr import checkpoint
from asr.checkpoint import ModelFile
from asr.errors import AsrError
from asr.experiment import DecodingConfig, LMConfig, SubsetsConfig, SubwordConfig, load_initial_weights
from asr.features import FeatureConfig
from asr.inference import load_model
from asr.lm import kenlm_programs_built, load_unigrams
from asr.model import CTCModel, named_config
from asr.recipes import librispeech
from asr.text import CharTokenizer


needs_kenlm = pytest.mark.skipif(not kenlm_programs_built(),
                                 reason="KenLM programs not built: run bash tools/build_kenlm.sh")

TEXT = "a cat sat on a mat\na hat and a cat\nthe cat sat\nthe mat is flat\nThe cat sat on a mat.\n"


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", *map(str, args)], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def tiny_model(path):
    """An untrained tiny character model whose output is "a" almost everywhere."""
    torch.manual_seed(0)
    tok = CharTokenizer()
    config = named_config("small", n_mels=20, cnn_channels=4, n_res_blocks=1, rnn_dim=8, n_rnn_layers=1,
                          classifier_dim=8)
    model = CTCModel(config)
    with torch.no_grad():
        model.classifier[-1].bias[tok.symbols.index("a")] = 5.0
    return ModelFile("ctc", config, FeatureConfig(n_mels=20), model.state_dict(), tokenizer=tok.to_dict()).save(path)


@pytest.fixture
def experiment(tmp_path):
    """A LibriSpeech-recipe experiment folder with a model, dev and test manifests, and an LM text."""
    exp = tmp_path / "exp"
    tiny_model(exp / "model.pt")
    rng = np.random.default_rng(0)
    entries = []
    for i, text in enumerate(["a cat sat", "the mat", "a hat", "the cat sat on a mat"]):
        path = tmp_path / f"u{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(16000 + 4000 * i)).astype(np.float32), 16000)
        entries.append({"id": f"u{i}", "audio_filepath": str(path), "duration": 1 + 0.25 * i, "text": text})
    from asr.data import write_manifest

    write_manifest(entries[:3], exp / "manifests" / "dev.jsonl")
    write_manifest(entries[1:], exp / "manifests" / "test.jsonl")
    (tmp_path / "text.txt").write_text(TEXT)
    config = librispeech.LibriSpeechConfig(
        exp_dir=str(exp), data=SubsetsConfig(train=("dev",), dev=("dev",), test=("test",)),
        lm=LMConfig(text=str(tmp_path / "text.txt"), order=3, memory="50M"),
        decoding=DecodingConfig(beam_width=8, alphas=(0.5, 1.0), betas=(0.0, 2.0),
                                blank_penalties=(0.0, 1.5), processes=2),
        subwords=SubwordConfig(vocab_size=24, model_type="bpe"))
    return config


@needs_kenlm
def test_lm_command_builds_a_model_from_text(tmp_path):
    (tmp_path / "text.txt").write_text(TEXT)
    # as documented: python -m asr.lm --text FILE --order 4 --out DIR
    proc = run("asr.lm", "--text", tmp_path / "text.txt", "--order", "4", "--out", tmp_path / "lm")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "lm" / "lm.bin").is_file() and "ngram 4=" in (tmp_path / "lm" / "lm.arpa").read_text()
    assert "a" in load_unigrams(tmp_path / "lm" / "unigrams.txt")
    assert str(tmp_path / "lm" / "lm.bin") in proc.stdout
    # an existing ARPA file: binary and word list beside each other
    proc = run("asr.lm", "--arpa", tmp_path / "lm" / "lm.arpa", "--out", tmp_path / "lm2")
    assert proc.returncode == 0, proc.stderr
    assert set(load_unigrams(tmp_path / "lm2" / "unigrams.txt")) == set(load_unigrams(tmp_path / "lm" / "unigrams.txt"))
    proc = run("asr.lm", "--text", tmp_path / "missing.txt", "--out", tmp_path / "lm3")
    assert proc.returncode == 1 and "not found" in proc.stderr and "Traceback" not in proc.stderr


@needs_kenlm
def test_lm_stage_leaves_out_dev_and_test_sentences(experiment):
    files = librispeech.lm(experiment, progress=False)
    corpus = (files.arpa.parent / "corpus.txt").read_text().splitlines()
    assert "the cat sat on a mat" not in corpus  # a test sentence
    assert corpus == ["a cat sat on a mat", "a hat and a cat", "the cat sat", "the mat is flat"]
    stamp = files.binary.stat().st_mtime_ns
    assert librispeech.lm(experiment, progress=False) == files
    assert files.binary.stat().st_mtime_ns == stamp  # restartable: nothing rebuilt


@pytest.mark.slow
@needs_kenlm
def test_tune_writes_decoding_json_and_the_model_picks_it_up(experiment, tmp_path, capsys):
    best = librispeech.tune(experiment, progress=False)
    exp = experiment.exp
    record = json.loads((exp / "decoding.json").read_text())
    assert (record["alpha"], record["beta"], record["blank_penalty"]) == (best.alpha, best.beta, best.blank_penalty)
    assert (best.alpha, best.beta) in {(0.5, 0.0), (0.5, 2.0), (1.0, 0.0), (1.0, 2.0)}
    assert best.blank_penalty in (0.0, 1.5)
    assert record["tuned_on"]["plan"]["utterances"] == 3
    assert record["tuned_on"]["plan"]["blank_penalties"] == [0.0, 1.5]
    grid = (exp / "tune-grid.txt").read_text().splitlines()
    assert len(grid) == 9 and grid[0].split() == ["alpha", "beta", "blank", "WER", "%", "CER", "%"]
    assert {float(line.split()[2]) for line in grid[1:]} == {0.0, 1.5}
    assert sum("<- best" in line for line in grid) == 1
    model = load_model(exp / "model.pt")
    options = model.decoding
    assert options.decoder == "beam" and options.lm_path == str((exp / "lm" / "lm.bin").resolve())
    stored = checkpoint.load(exp / "model.pt")["decoding"]  # on disk, relative to the model file
    assert stored["lm_path"] == "lm/lm.bin" and stored["unigrams_path"] == "lm/unigrams.txt"
    assert (options.alpha, options.beta, options.blank_penalty) == (best.alpha, best.beta, best.blank_penalty)

    # a second run keeps the result
    capsys.readouterr()
    librispeech.tune(experiment, progress=False)
    assert "already tuned" in capsys.readouterr().out

    # evaluate reports greedy and beam+LM rows
    results = librispeech.evaluate(experiment, progress=False)
    assert set(results) == {"test", "test beam+LM"}
    table = (exp / "results" / "wer.txt").read_text()
    assert "greedy" in table and "beam+LM" in table
    assert (exp / "results" / "test" / "hyp-beam-lm.txt").is_file()

    # the CLI decodes with the tuned LM by default: without the LM file it says so
    wav = tmp_path / "u0.wav"
    proc = run("asr", "transcribe", wav, "--model", exp / "model.pt", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    (exp / "lm" / "lm.bin").rename(exp / "lm" / "moved.bin")
    proc = run("asr", "transcribe", wav, "--model", exp / "model.pt")
    assert proc.returncode != 0 and "language model not found" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("asr", "transcribe", wav, "--model", exp / "model.pt", "--decoder", "greedy")
    assert proc.returncode == 0, proc.stderr


@needs_kenlm
def test_transcribe_beam_with_lm_gives_words_with_times_and_confidences(experiment, tmp_path):
    files = librispeech.lm(experiment, progress=False)
    wav = tmp_path / "speech.wav"
    sf.write(wav, (0.1 * np.random.default_rng(1).standard_normal(22050 * 2)).astype(np.float32), 22050)
    proc = run("asr", "transcribe", wav, "--model", experiment.exp / "model.pt", "--decoder", "beam",
               "--lm", files.binary, "--format", "json", "--beam-width", "16", "--alpha", "0.5", "--beta", "1",
               "--blank-penalty", "0.5")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["text"] and data["words"]
    for word in data["words"]:
        assert word["word"] in load_unigrams(files.unigrams)
        assert 0 <= word["start"] < word["end"] <= 2.05
        assert 0 < word["confidence"] <= 1


def test_beam_without_lm_from_the_cli(tmp_path):
    model = tiny_model(tmp_path / "model.pt")
    wav = tmp_path / "speech.wav"
    sf.write(wav, (0.1 * np.random.default_rng(1).standard_normal(16000)).astype(np.float32), 16000)
    proc = run("asr", "transcribe", wav, "--model", model, "--decoder", "beam", "--format", "json",
               "--hotwords", "cat")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert all(0 < w["confidence"] <= 1 and w["start"] < w["end"] for w in data["words"])


def test_tokenizer_stage_and_training_with_subwords(experiment, tmp_path):
    config = replace(experiment, tokenizer="sentencepiece", model_name="small",
                     features=FeatureConfig(n_mels=20),
                     model=named_config("small", cnn_channels=4, n_res_blocks=1, rnn_dim=8, n_rnn_layers=1,
                                        classifier_dim=8),
                     train=replace(experiment.train, max_steps=1, max_frames=1000, checkpoint_every=1,
                                   eval_every=0, log_every=1))
    path = librispeech.tokenizer(config)
    assert path.is_file() and json.loads((path.parent / "spm.json").read_text())["vocab_size"] == 24
    stamp = path.stat().st_mtime_ns
    librispeech.tokenizer(config)
    assert path.stat().st_mtime_ns == stamp
    model_path = librispeech.train(config, progress=False)
    model = load_model(model_path)
    assert model.tokenizer.kind == "sentencepiece" and model.net.config.n_classes == 25
    # a larger vocabulary than the text allows is a one-line error
    with pytest.raises(AsrError, match="sentencepiece"):
        librispeech.tokenizer(replace(config, subwords=replace(config.subwords, vocab_size=5000)))


def test_initial_weights_skip_layers_of_another_shape(tmp_path):
    source = tiny_model(tmp_path / "model.pt")
    config = named_config("small", n_mels=20, cnn_channels=4, n_res_blocks=1, rnn_dim=8, n_rnn_layers=1,
                          classifier_dim=8, n_classes=40)
    model = CTCModel(config)
    said = load_initial_weights(model, source)
    assert "classifier.3.weight" in said
    theirs, own = ModelFile.load(source).weights, model.state_dict()
    same = [k for k in own if own[k].shape == theirs[k].shape]
    assert len(same) == len(own) - 2  # all but the output layer's weight and bias
    assert all(torch.equal(own[k], theirs[k]) for k in same)


@needs_kenlm
def test_decoding_benchmark_runs(experiment, tmp_path, shared_data):
    files = librispeech.lm(experiment, progress=False)
    out = tmp_path / "bench.txt"
    proc = subprocess.run([sys.executable, "tools/bench_decoding.py", "--model", experiment.exp / "model.pt",
                           "--lm", files.binary, "--clips", "2", "--beam-widths", "4", "16", "--processes", "2",
                           "--threads", "1", "--out", out], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    table = out.read_text()
    assert "machine: " in table and "cores" in table
    assert [line.split()[0] for line in table.splitlines()[-3:]] == ["greedy", "beam", "beam"]


@pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("flite")),
                    reason="espeak-ng and flite are needed (bash tools/install_system_deps.sh)")
def test_voice_cer_tool_scores_each_voice_on_the_same_sentences(tmp_path, shared_data):
    model = tiny_model(tmp_path / "model.pt")
    out = tmp_path / "voices.txt"
    command = [sys.executable, "tools/voice_cer.py", "--model", model, "--sentences", "2", "--work", tmp_path / "work",
               "--out", out, "--voices", "flite:slt", "flite:rms"]
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=repo)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split() for line in out.read_text().splitlines()[3:]}
    assert rows["flite:slt"][1:3] == ["in", "training"] and rows["flite:rms"][1:3] == ["held", "out"]
    for row in rows.values():  # an untrained model that says "a": nearly every character wrong
        assert 80 <= float(row[3]) <= 100
    spoken = {p.parent.parent.parent.name: p for p in (tmp_path / "work").rglob("*.trans.txt")}
    texts = [sorted(line.split(" ", 1)[1] for line in p.read_text().splitlines()) for p in spoken.values()]
    assert len(texts) == 2 and texts[0] == texts[1]  # both voices said the same two sentences

    proc = subprocess.run([*command[:-2], "flite:nosuch"], capture_output=True, text=True, timeout=300, cwd=repo)
    assert proc.returncode == 1 and proc.stderr.startswith("voice_cer: error: flite has no voice")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
