"""The LibriSpeech recipe's stages, on tiny data: download/prepare against a loopback
mirror, and the offline demo end to end."""

import pytest
import hashlib
import io
import subprocess
import sys
import tarfile
from dataclasses import replace

import numpy as np
import soundfile as sf
import torch

from asr.checkpoint import ModelFile
from asr.recipes.librispeech import main


def librispeech_tarball(subset: str) -> bytes:
    """A LibriSpeech-layout archive: LibriSpeech/<subset>/<spk>/<chapter>/*.flac + trans.txt."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        def add(name, data):
            info = tarfile.TarInfo(f"LibriSpeech/{subset}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        lines = []
        for i in range(2):
            flac = io.BytesIO()
            sf.write(flac, np.zeros(8000 * (i + 1), dtype=np.float32), 16000, format="FLAC")
            add(f"19/198/19-198-000{i}.flac", flac.getvalue())
            lines.append(f"19-198-000{i} HELLO WORLD NUMBER {i}")
        add("19/198/19-198.trans.txt", ("\n".join(lines) + "\n").encode())
    return buf.getvalue()


def test_download_and_prepare_from_a_loopback_mirror(server, tmp_path, capsys):
    data = librispeech_tarball("dev-clean")
    server.serve("mirror/dev-clean.tar.gz", data)
    (tmp_path / "SHA256SUMS").write_text(f"{hashlib.sha256(data).hexdigest()}  dev-clean.tar.gz\n")
    config = tmp_path / "ls.toml"
    config.write_text(f"""
[data]
train = ["dev-clean"]
dev = ["dev-clean"]
test = ["dev-clean"]
[download]
mirror = "{server.base_url}/mirror"
checksums = "{tmp_path / 'SHA256SUMS'}"
""")
    exp = tmp_path / "exp"
    assert main(["download", "--config", str(config), "--exp-dir", str(exp), "--no-progress"]) == 0
    assert (exp / "data" / "LibriSpeech" / "dev-clean" / "19" / "198" / "19-198-0001.flac").exists()
    assert main(["prepare", "--config", str(config), "--exp-dir", str(exp)]) == 0
    manifest = (exp / "manifests" / "dev-clean.jsonl").read_text().splitlines()
    assert len(manifest) == 2 and '"text": "hello world number zero"' in manifest[0]
    # a second download is a no-op: no new request reaches the server
    before = len(server.requests)
    assert main(["download", "--config", str(config), "--exp-dir", str(exp), "--no-progress"]) == 0
    assert len(server.requests) == before


def test_download_refuses_a_tampered_archive(server, tmp_path, capsys):
    server.serve("mirror/dev-clean.tar.gz", librispeech_tarball("dev-clean"))
    config = tmp_path / "ls.toml"
    config.write_text(f'[data]\ntrain = ["dev-clean"]\ndev = []\ntest = []\n'
                      f'[download]\nmirror = "{server.base_url}/mirror"\n')
    # no checksum override: the official digest cannot match the fixture
    assert main(["download", "--config", str(config), "--exp-dir", str(tmp_path / "exp"), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("checksum" in err[0].lower() or "sha256" in err[0].lower())
    assert not (tmp_path / "exp" / "data" / "LibriSpeech" / "dev-clean").exists()


def test_unknown_config_key_is_one_line_error(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text("[train]\nmax_stepz = 3\n")
    assert main(["train", "--config", str(config), "--exp-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "unknown key 'max_stepz'" in err and "Traceback" not in err


TINY_DEMO = """
exp_dir = "unused"
model_name = "small"
[model]
cnn_channels = 4
n_res_blocks = 1
rnn_dim = 16
n_rnn_layers = 1
classifier_dim = 16
[features]
n_mels = 40
[data]
train = ["train-synth"]
dev = ["dev-synth"]
test = ["test-synth"]
ljspeech = false
[synth]
n_train = 10
n_dev = 2
n_test = 3
max_words = 6
[train]
max_steps = 4
max_frames = 4000
log_every = 2
checkpoint_every = 2
eval_every = 2
"""


@pytest.mark.slow
def test_demo_end_to_end_on_a_tiny_corpus(tmp_path, shared_data, need_espeak, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_DEMO)
    exp = tmp_path / "exp"
    assert main(["demo", "--config", str(config), "--exp-dir", str(exp), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "WER %" in out and f"model: {exp / 'model.pt'}" in out
    corpus = exp / "data" / "LibriSpeech"
    assert len(list((corpus / "train-synth").glob("*/*/*.flac"))) == 10
    for name in ("ref.txt", "hyp-greedy.txt", "errs-greedy.txt"):
        assert (exp / "results" / "test-synth" / name).stat().st_size > 0
    assert (exp / "learning_curve.png").exists() and (exp / "results" / "wer.txt").exists()
    # the saved model is what `asr transcribe` takes
    flac = next((corpus / "test-synth").glob("*/*/*.flac"))
    proc = subprocess.run([sys.executable, "-m", "asr", "transcribe", str(flac), "--model", str(exp / "model.pt"),
                           "--format", "json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert '"words"' in proc.stdout
    # training again from the same config gives the same model, whatever the RNG held before
    first = ModelFile.load(exp / "model.pt").weights
    torch.rand(1000)
    assert main(["train", "--config", str(config), "--exp-dir", str(exp), "--no-progress"]) == 0
    again = ModelFile.load(exp / "model.pt").weights
    assert all(torch.equal(first[name], again[name]) for name in first)


def test_synth_engines_choose_the_training_voices(tmp_path, shared_data, need_espeak, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_DEMO.replace("n_train = 10", "n_train = 6\nengines = [\"espeak-ng\"]")
                      .replace('test = ["test-synth"]', "test = []"))
    exp = tmp_path / "exp"
    assert main(["synthesize", "--config", str(config), "--exp-dir", str(exp), "--no-progress"]) == 0
    speakers = (exp / "data" / "LibriSpeech" / "SPEAKERS.TXT").read_text().splitlines()[1:]
    train = [line.split("|")[-1].strip() for line in speakers if "train-synth" in line]
    assert len(train) == 6 and all(v.startswith("espeak-ng:") for v in train)

    config.write_text(TINY_DEMO.replace("n_train = 10", "n_train = 6\nengines = [\"festival\"]"))
    assert main(["synthesize", "--config", str(config), "--exp-dir", str(tmp_path / "exp2")]) == 1
    err = capsys.readouterr().err
    assert "unknown TTS engine(s) festival" in err and "Traceback" not in err


def test_run_sh_runs_the_chosen_stages_in_order(tmp_path):
    """recipes/librispeech/run.sh (the shared recipes/stages.sh loop): stage 2 only, by number."""
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    with tarfile.open(fileobj=io.BytesIO(librispeech_tarball("dev-clean"))) as tar:
        tar.extractall(tmp_path / "exp" / "data", filter="data")
    config = tmp_path / "ls.toml"
    config.write_text(f'exp_dir = "{tmp_path / "exp"}"\n[data]\ntrain = ["dev-clean"]\ndev = []\ntest = []\n')
    env = {**os.environ, "CONFIG": str(config)}
    run = subprocess.run(["bash", str(root / "recipes/librispeech/run.sh"), "2", "prepare"],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("=== stage") == 1 and "=== stage prepare" in run.stdout
    assert len((tmp_path / "exp" / "manifests" / "dev-clean.jsonl").read_text().splitlines()) == 2
    bad = subprocess.run(["bash", str(root / "recipes/librispeech/run.sh"), "no_such_stage"],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "no_such_stage" in bad.stderr
    past_the_end = subprocess.run(["bash", str(root / "recipes/librispeech/run.sh"), "2", "9"],
                                  capture_output=True, text=True, env=env, cwd=tmp_path)
    assert past_the_end.returncode == 2 and "=== stage" not in past_the_end.stdout
    assert len(past_the_end.stderr.strip().splitlines()) == 1 and "'9'" in past_the_end.stderr


def test_demo_budget_takes_what_synthesis_left(capsys):
    from asr.recipes.librispeech import LibriSpeechConfig, fit_demo_budget
    from asr.training import TrainConfig

    config = LibriSpeechConfig(train=TrainConfig(time_budget_minutes=22), demo_minutes=28, demo_reserve_minutes=3,
                               demo_reserve_share=0.0)
    assert fit_demo_budget(config, 2.0) is config  # 23 min left: the training budget stands
    slow = fit_demo_budget(config, 6.0)
    assert slow.train.time_budget_minutes == 19.0 and slow.train.lr == config.train.lr
    # a machine that took 7 min to synthesize takes about 0.8 x 7 = 5.6 min for the LM, tuning and evaluation
    scaled = replace(config, demo_reserve_share=0.8)
    assert fit_demo_budget(scaled, 2.0) is scaled  # 0.8 x 2 < 3: the fixed reserve holds
    assert fit_demo_budget(scaled, 7.0).train.time_budget_minutes == 15.4
    assert config.train.time_budget_minutes == 22  # the given config is not changed
    assert "budget cut from 22 to 19 min" in capsys.readouterr().out
    assert fit_demo_budget(config, 40.0).train.time_budget_minutes == 1.0  # never below a minute
    for unlimited in (replace(config, demo_minutes=0), replace(config, train=TrainConfig())):
        assert fit_demo_budget(unlimited, 30.0) is unlimited
