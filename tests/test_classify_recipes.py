"""The classification recipes: download and prepare against loopback archives, and tiny end-to-end runs."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr import checkpoint, cli
from asr.adaptation import self_train
from asr.classify import make_trainer
from asr.corpora import DIGITS
from asr.data import load_entry_audio, read_task
from asr.inference import load_classifier
from asr.errors import AsrError
from asr.model import Ensemble, count_parameters
from asr.recipes import esc50, fsdd, speech_commands

HAVE_ESPEAK = shutil.which("espeak-ng") is not None

TINY_TRAINING = """
[model]
kind = "cnn2d"
channels = [4, 8]
[features]
n_mels = 16
[train]
max_steps = 8
lr = 3e-3
max_frames = 1600
max_batch_size = 8
log_every = 2
checkpoint_every = 4
[early_stopping]
eval_every = 4
patience = 3
[lr_find]
steps = 6
min_lr = 1e-4
max_lr = 1.0
"""


def wav_bytes(seconds: float, rate: int = 16000, freq: float = 300.0, seed: int = 0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    audio = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    buf = io.BytesIO()
    sf.write(buf, audio.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def write_config(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# --------------------------------------------------------------------------- Speech Commands

def speech_commands_archive() -> bytes:
    """A Speech Commands v0.01-layout tar.gz: files at the top level, as the real archive has them."""
    words, speakers = ("yes", "no", "marvin", "tree"), ("0a1b2c3d", "1b2c3d4e", "2c3d4e5f")
    members = {"README.md": b"tiny fixture\n", "_background_noise_/white_noise.wav": wav_bytes(2.0, freq=50),
               "_background_noise_/README.md": b"noises\n"}
    for w, word in enumerate(words):
        for s, speaker in enumerate(speakers):
            for n in range(2):
                members[f"{word}/{speaker}_nohash_{n}.wav"] = wav_bytes(1.0, freq=200 + 80 * w, seed=s)
    members["validation_list.txt"] = "".join(f"{w}/{speakers[1]}_nohash_0.wav\n" for w in words).encode()
    members["testing_list.txt"] = "".join(f"{w}/{speakers[2]}_nohash_{n}.wav\n" for w in words
                                          for n in range(2)).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_speech_commands_download_and_prepare(server, tmp_path, capsys):
    data = speech_commands_archive()
    server.serve("mirror/speech_commands_v0.01.tar.gz", data)
    exp = tmp_path / "exp"
    base = f"""exp_dir = "{exp}"
[data]
version = "v0.01"
task = "12"
unknown_share = 0.5
silence_share = 0.5
[download]
mirror = "{server.base_url}/mirror"
"""
    config = write_config(tmp_path / "sc.toml", base)
    # the built-in digest is the real corpus's, which the fixture does not match
    assert speech_commands.main(["download", "--config", config, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "checksum mismatch for speech_commands_v0.01.tar.gz" in err and err.count("\n") == 1

    (tmp_path / "SHA256SUMS").write_text(f"{hashlib.sha256(data).hexdigest()}  speech_commands_v0.01.tar.gz\n")
    config = write_config(tmp_path / "sc.toml", base + f'checksums = "{tmp_path / "SHA256SUMS"}"\n')
    assert speech_commands.main(["download", "--config", config, "--no-progress"]) == 0
    corpus = exp / "data" / "speech_commands_v0.01"
    assert (corpus / "yes" / "0a1b2c3d_nohash_0.wav").is_file() and (corpus / "testing_list.txt").is_file()
    assert speech_commands.main(["download", "--config", config, "--no-progress"]) == 0  # done: no request
    assert "already in" in capsys.readouterr().out
    assert len(server.requests) == 2

    assert speech_commands.main(["prepare", "--config", config]) == 0
    task = json.loads((exp / "task.json").read_text())
    assert task["labels"] == ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
                              "_unknown_", "_silence_"]
    assert [Path(p).name for p in task["noise_files"]] == ["white_noise.wav"]
    manifests = {split: [json.loads(line) for line in (exp / "manifests" / f"{split}.jsonl").open()]
                 for split in ("train", "dev", "test")}
    counts = {split: {label: sum(e["label"] == label for e in entries) for label in ("yes", "no", "_unknown_",
                                                                                    "_silence_")}
              for split, entries in manifests.items()}
    # train: speaker 0 (2 clips per word) + speaker 1's second clips; dev: speaker 1's first clips; test: speaker 2
    assert counts["train"] == {"yes": 3, "no": 3, "_unknown_": 3, "_silence_": 3}
    assert counts["dev"] == {"yes": 1, "no": 1, "_unknown_": 1, "_silence_": 1}
    assert counts["test"] == {"yes": 2, "no": 2, "_unknown_": 2, "_silence_": 2}
    assert {e["speaker"] for e in manifests["test"] if e["label"] != "_silence_"} == {"2c3d4e5f"}
    unknown_sources = {Path(e["audio_filepath"]).parent.name for m in manifests.values() for e in m
                       if e["label"] == "_unknown_"}
    assert unknown_sources <= {"marvin", "tree"}

    all_words = write_config(tmp_path / "all.toml", base.replace('task = "12"', 'task = "all"'))
    assert speech_commands.main(["prepare", "--config", all_words]) == 0
    assert json.loads((exp / "task.json").read_text())["labels"] == ["marvin", "no", "tree", "yes"]


# --------------------------------------------------------------------------- ESC-50

def esc50_archive() -> bytes:
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for fold in range(1, 6):
            for target, category in ((0, "dog"), (10, "rain")):
                for take in "AB":
                    src = 1000 * fold + target
                    name = f"{fold}-{src}-{take}-{target}.wav"
                    zf.writestr(f"ESC-50-master/audio/{name}", wav_bytes(0.3, rate=44100, freq=200 + 40 * target))
                    rows.append(f"{name},{fold},{target},{category},True,{src},{take}")
        zf.writestr("ESC-50-master/meta/esc50.csv", "\n".join(rows) + "\n")
        zf.writestr("ESC-50-master/README.md", "tiny fixture\n")
    return buf.getvalue()


def test_esc50_download_and_prepare_folds(server, tmp_path):
    data = esc50_archive()
    server.serve("m/master.zip", data)
    exp = tmp_path / "exp"
    config = write_config(tmp_path / "esc.toml", f"""exp_dir = "{exp}"
[data]
dev_share = 0.25
[download]
mirror = "{server.base_url}/m"
checksums = "{tmp_path / 'sums'}"
""")
    (tmp_path / "sums").write_text(f"{hashlib.sha256(data).hexdigest()}  master.zip\n")
    assert esc50.main(["download", "--config", config, "--no-progress"]) == 0
    assert (exp / "data" / "ESC-50-master" / "meta" / "esc50.csv").is_file()
    assert esc50.main(["prepare", "--config", config]) == 0
    for k in range(1, 6):
        folder = exp / f"fold{k}"
        assert json.loads((folder / "task.json").read_text())["labels"] == ["dog", "rain"]
        splits = {s: [json.loads(line) for line in (folder / "manifests" / f"{s}.jsonl").open()]
                  for s in ("train", "dev", "test")}
        assert {e["fold"] for e in splits["test"]} == {k} and len(splits["test"]) == 4
        assert k not in {e["fold"] for e in splits["train"] + splits["dev"]}
        assert len(splits["train"]) + len(splits["dev"]) == 16 and len(splits["dev"]) == 4
        assert not {e["speaker"] for e in splits["dev"]} & {e["speaker"] for e in splits["train"]}


def test_esc50_bad_fold(tmp_path, capsys):
    config = write_config(tmp_path / "esc.toml", f'exp_dir = "{tmp_path}"\n[data]\nfolds = [6]\n')
    assert esc50.main(["train", "--config", config]) == 1
    assert "data.folds" in capsys.readouterr().err


# --------------------------------------------------------------------------- FSDD

def fake_fsdd(root: Path, speakers=("ann", "bob", "cat", "dan"), per_digit: int = 2) -> Path:
    root.mkdir(parents=True)
    for s, speaker in enumerate(speakers):
        for digit in range(3):
            for i in range(per_digit):
                (root / f"{digit}_{speaker}_{i}.wav").write_bytes(
                    wav_bytes(0.3 + 0.05 * i, rate=8000, freq=250 + 200 * digit + 10 * s, seed=i))
    return root


def fsdd_config(tmp_path: Path, recordings: Path, exp: Path, extra: str = "", top: str = "") -> str:
    return write_config(tmp_path / "fsdd.toml", f"""exp_dir = "{exp}"
{top}
{TINY_TRAINING}
[data]
recordings = "{recordings}"
test_speaker = "ann"
dev_speaker = "bob"
[augment]
synthetic_noise = true
{extra}""")


def test_fsdd_prepare_is_speaker_independent(tmp_path, capsys):
    recordings = fake_fsdd(tmp_path / "rec")
    config = fsdd_config(tmp_path, recordings, tmp_path / "exp")
    assert fsdd.main(["prepare", "--config", config]) == 0
    splits = {s: [json.loads(line) for line in (tmp_path / "exp" / "manifests" / f"{s}.jsonl").open()]
              for s in ("train", "dev", "test")}
    assert {e["speaker"] for e in splits["test"]} == {"ann"} and {e["speaker"] for e in splits["dev"]} == {"bob"}
    assert {e["speaker"] for e in splits["train"]} == {"cat", "dan"}
    bad = Path(config).read_text().replace('test_speaker = "ann"', 'test_speaker = "zed"')
    assert fsdd.main(["prepare", "--config", write_config(tmp_path / "bad.toml", bad)]) == 1
    assert "speaker 'zed' is not in" in capsys.readouterr().err


def test_a_config_with_a_base_overrides_it_table_by_table(tmp_path, capsys):
    """``base = "other.toml"``: the other file's tables, with this file's keys on top; a missing base
    or a cycle of bases is a one-line error."""
    write_config(tmp_path / "a.toml", 'exp_dir = "A"\nensemble = 2\n[augment]\nnoise_prob = 0.8\nspeed_prob = 0.5\n'
                                      '[train]\nlr = 2e-3\nmax_steps = 100\n')
    (tmp_path / "sub").mkdir()
    child = write_config(tmp_path / "sub" / "b.toml", 'base = "../a.toml"\nexp_dir = "B"\n[augment]\nspeed_prob = 0.1\n')
    config = fsdd.make_config(child, "prepare")
    assert (config.exp_dir, config.ensemble) == ("B", 2)
    assert (config.augment.noise_prob, config.augment.speed_prob) == (0.8, 0.1)  # the table merged, not replaced
    assert (config.train.lr, config.train.max_steps) == (2e-3, 100)
    missing = write_config(tmp_path / "m.toml", 'base = "nope.toml"\n')
    cycle = write_config(tmp_path / "c1.toml", 'base = "c2.toml"\n')
    write_config(tmp_path / "c2.toml", 'base = "c1.toml"\n')
    for path, message in ((missing, "nope.toml: config file not found"), (cycle, "is a cycle of bases")):
        assert fsdd.main(["prepare", "--config", path]) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_shipped_fsdd_variants_differ_from_cv_toml_only_where_they_say():
    """recipes/fsdd/cv-*.toml name cv.toml as their base; what each changes, and nothing else."""
    from asr.config import to_dict
    repo = Path(__file__).resolve().parents[1] / "recipes" / "fsdd"
    cv = to_dict(fsdd.make_config(str(repo / "cv.toml"), "cv"))

    def changes(name):
        new = to_dict(fsdd.make_config(str(repo / name), "cv"))
        flat = lambda d, pre="": {k2: v2 for k, v in d.items() for k2, v2 in (
            flat(v, f"{pre}{k}.").items() if isinstance(v, dict) else [(f"{pre}{k}", v)])}
        a, b = flat(cv), flat(new)
        return {k: b[k] for k in b if a.get(k) != b[k]}

    assert changes("cv-ensemble.toml") == {"exp_dir": "exp/fsdd-cv-ensemble", "ensemble": 3}
    assert changes("cv-no-hiss.toml") == {"exp_dir": "exp/fsdd-cv-no-hiss", "augment.noises": []}
    assert changes("cv-an4-digits.toml") == {"exp_dir": "exp/fsdd-cv-an4-digits", "augment.noises": [],
                                             "an4_digits.aligner": "exp/an4/model.pt"}
    encoder = changes("cv-an4-encoder.toml")
    assert encoder["model.kind"] == "encoder" and encoder["train.lr"] == 1e-3 and encoder["augment.noises"] == []


def test_fsdd_prepare_on_the_real_recordings(shared_data, tmp_path):
    config = write_config(tmp_path / "c.toml", f'exp_dir = "{tmp_path}"\n[data]\ntest_speaker = "theo"\n'
                                               f'dev_speaker = "george"\nrecordings = "{shared_data}/fsdd/recordings"\n')
    assert fsdd.main(["prepare", "--config", config]) == 0
    counts = {s: len((tmp_path / "manifests" / f"{s}.jsonl").read_text().splitlines()) for s in ("train", "dev", "test")}
    assert counts == {"train": 1500, "dev": 500, "test": 500}


def test_fsdd_default_split_trains_on_four_speakers(shared_data, tmp_path):
    """The committed config's split: four speakers train, their clips 0-4 validate, the fifth tests."""
    config = write_config(tmp_path / "c.toml", f'exp_dir = "{tmp_path}"\n[data]\ntest_speaker = "george"\n'
                                               f'recordings = "{shared_data}/fsdd/recordings"\n')
    assert fsdd.main(["prepare", "--config", config]) == 0
    splits = {s: [json.loads(line) for line in (tmp_path / "manifests" / f"{s}.jsonl").open()]
              for s in ("train", "dev", "test")}
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [1800, 200, 500]
    assert {e["speaker"] for e in splits["train"]} == {e["speaker"] for e in splits["dev"]} == {
        "jackson", "nicolas", "theo", "yweweler"}
    assert {e["speaker"] for e in splits["test"]} == {"george"}
    assert all(e["index"] < 5 for e in splits["dev"]) and all(e["index"] >= 5 for e in splits["train"])


def test_fsdd_train_resume_is_exact_and_evaluate_writes_reports(tmp_path):
    """Training with augmentation and early-stopping checks, stopped half way and resumed,
    ends with the same weights as one straight run."""
    torch.set_num_threads(1)
    recordings = fake_fsdd(tmp_path / "rec")
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    config = fsdd_config(tmp_path, recordings, straight)
    assert fsdd.main(["prepare", "--config", config]) == 0
    assert fsdd.main(["train", "--config", config, "--no-progress"]) == 0

    config = fsdd_config(tmp_path, recordings, halves)
    assert fsdd.main(["prepare", "--config", config]) == 0
    cfg = fsdd.make_config(config, "train")
    labels, splits, noise = read_task(cfg.exp)
    trainer = make_trainer(cfg, labels, splits["train"], noise, cfg.exp, dev=splits["dev"], verbose=False)
    trainer.run(stop_after=4, progress=False)  # an interrupted run: 4 of 8 steps
    fsdd.train(cfg, resume=True, progress=False)
    (a, a_state), (b, b_state) = (checkpoint.load_training(exp / "checkpoints" / "last.pt")
                                  for exp in (straight, halves))
    assert a_state.step == b_state.step == 8
    for name, weight in a.weights.items():
        assert torch.equal(weight, b.weights[name]), name

    assert fsdd.main(["evaluate", "--config", config, "--no-progress"]) == 0
    for split in ("dev", "test"):
        folder = halves / "results" / split
        assert (folder / "confusion.png").read_bytes()[:4] == b"\x89PNG"
        assert (folder / "report.txt").read_text().startswith(f"{split}: accuracy ")
        assert len((folder / "predictions.tsv").read_text().splitlines()) == 1 + 6
    state = json.loads((halves / "early_stopping.json").read_text())
    assert [e["step"] for e in state["evals"]] == [8] and (halves / "model.pt").is_file()
    assert (halves / "learning_curve.png").is_file() and list((halves / "tensorboard").rglob("events.*"))


def test_fsdd_ensemble_trains_seeded_members_and_averages_them(tmp_path, capsys):
    torch.set_num_threads(1)
    recordings = fake_fsdd(tmp_path / "rec")
    exp = tmp_path / "exp"
    config = fsdd_config(tmp_path, recordings, exp, top="ensemble = 2\nadapt_batchnorm = true")
    assert fsdd.main(["prepare", "--config", config]) == 0
    assert fsdd.main(["train", "--config", config, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "ensemble member 2 of 2 (seed 1)" in out and "ensemble of 2: trained in" in out
    members = [load_classifier(exp / "members" / str(i) / "model.pt") for i in range(2)]
    assert [json.loads((exp / "members" / str(i) / "config.json").read_text())["train"]["seed"] for i in range(2)] == [0, 1]
    a, b = (dict(m.net.named_parameters()) for m in members)
    assert any(not torch.equal(a[name], b[name]) for name in a)  # two seeds, two models

    ensemble = load_classifier(exp / "model.pt")
    assert isinstance(ensemble.net, Ensemble) and len(ensemble.net.members) == 2
    audio = torch.stack([load_entry_audio(e)[:2400] for e in read_task(exp)[1]["test"]])
    lengths = torch.full((len(audio),), 2400)
    mean = torch.stack([m.log_probs(audio, lengths).exp() for m in members]).mean(0)
    assert torch.allclose(ensemble.log_probs(audio, lengths).exp(), mean, atol=1e-5)

    def steps():
        return [checkpoint.load_training(exp / "members" / str(i) / "checkpoints" / "last.pt")[1].step for i in range(2)]

    before = steps()
    assert fsdd.main(["train", "--config", config, "--resume", "--no-progress"]) == 0  # finished: nothing to add
    assert steps() == before
    stored = (exp / "model.pt").read_bytes()
    capsys.readouterr()
    assert fsdd.main(["evaluate", "--config", config, "--no-progress"]) == 0
    assert (exp / "results" / "test" / "report.txt").read_text().startswith("test: accuracy ")
    assert (exp / "results" / "test-adapted" / "report.txt").read_text().startswith("test-adapted: accuracy ")
    assert (exp / "results" / "test-adapted" / "confusion.png").is_file()
    out = capsys.readouterr().out
    assert "test-adapted: accuracy" in out and "dev-adapted: accuracy" in out
    assert (exp / "model.pt").read_bytes() == stored  # the adapted statistics are not saved
    capsys.readouterr()
    assert cli.main(["info", str(exp / "model.pt")]) == 0
    info = capsys.readouterr().out
    assert '"members": 2' in info and f"parameters: {count_parameters(ensemble.net):,}" in info

    data = checkpoint.load(exp / "model.pt")  # a member count that disagrees with the weights: one clear line
    for members in (3, 1, 0, "2"):
        checkpoint.save_atomic({**data, "members": members}, tmp_path / "bad.pt")
        capsys.readouterr()
        assert cli.main(["classify", str(recordings / "0_ann_0.wav"), "--model", str(tmp_path / "bad.pt")]) != 0
        err = capsys.readouterr().err
        assert "bad ensemble size" in err and "holds weights for 2" in err and "Traceback" not in err


@pytest.mark.slow
def test_fsdd_adapt_self_trains_on_the_speakers_unlabelled_clips_and_scores_his_others(tmp_path, capsys):
    torch.set_num_threads(1)
    recordings = fake_fsdd(tmp_path / "rec")
    exp = tmp_path / "exp"
    settings = "[self_train]\nrounds = 2\nthreshold = 0.05\nsteps = 3\nbalance = true\n[data]\nenrol_from = 1"
    config = fsdd_config(tmp_path, recordings, exp, top="ensemble = 2")
    config = write_config(tmp_path / "adapt.toml", Path(config).read_text().replace("[data]", settings, 1))
    assert fsdd.main(["prepare", "--config", config]) == 0
    assert fsdd.main(["train", "--config", config, "--no-progress"]) == 0
    capsys.readouterr()
    assert fsdd.main(["adapt", "--config", config, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "self-training round 2 of 2: " in out and " of 3 clips labelled with probability >= 0.05" in out
    for when in ("before", "after"):  # scored on his clips 0-0 (3), adapted on his clips 1 (3)
        report = (exp / "self_train" / "results" / when / "report.txt").read_text()
        assert report.startswith("ann's clips 0-0, ") and "/ 3 clips)" in report
        tsv = (exp / "self_train" / "results" / when / "predictions.tsv").read_text()
        assert {line.split("\t")[0].split("_")[2] for line in tsv.splitlines()[1:]} == {"0"}
    adapted = load_classifier(exp / "self_train" / "model.pt")
    trained = load_classifier(exp / "model.pt")
    assert isinstance(adapted.net, Ensemble) and len(adapted.net.members) == 2
    a, b = dict(adapted.net.named_parameters()), dict(trained.net.named_parameters())
    assert any(not torch.equal(a[name], b[name]) for name in a)  # fine-tuned, not copied
    assert (exp / "self_train" / "self_train.json").is_file()

    # the clips' own labels are never read: the same clips with every label wrong adapt identically
    cfg = fsdd.make_config(config, "adapt")
    labels, splits, noise = read_task(exp)
    enrol = [e for e in splits["test"] if e["index"] >= 1]
    wrong = [dict(e, label=labels[(labels.index(e["label"]) + 1) % len(labels)]) for e in enrol]
    again = self_train(cfg, exp / "model.pt", labels, splits["train"], noise, wrong, tmp_path / "wrong", progress=False)
    c = dict(load_classifier(again).net.named_parameters())
    assert all(torch.equal(a[name], c[name]) for name in a)
    with pytest.raises(AsrError, match="trained for other labels"):  # guesses would be read as other classes
        self_train(cfg, exp / "model.pt", labels[::-1], splits["train"], noise, enrol, tmp_path / "other", progress=False)

    # a rerun goes on after the last finished round; other settings start again
    (exp / "self_train" / "round2" / "model.pt").unlink()
    capsys.readouterr()
    assert fsdd.main(["adapt", "--config", config, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "round 1 of 2 already done" in out and "self-training round 1 of 2" not in out
    d = dict(load_classifier(exp / "self_train" / "model.pt").net.named_parameters())
    assert all(torch.equal(a[name], d[name]) for name in a)  # seeded: the same second round
    changed = write_config(tmp_path / "changed.toml", Path(config).read_text().replace("steps = 3", "steps = 2"))
    assert fsdd.main(["adapt", "--config", changed, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "self-training again" in out and "self-training round 1 of 2" in out

    for bad in ("enrol_from = 0", "enrol_from = 9"):  # nothing to score, nothing to adapt on: one line each
        path = write_config(tmp_path / "bad.toml", Path(config).read_text().replace("enrol_from = 1", bad))
        assert fsdd.main(["adapt", "--config", path, "--no-progress"]) == 1
        err = capsys.readouterr().err
        assert "data.enrol_from" in err and "Traceback" not in err


def test_fsdd_demo_prints_the_held_out_and_the_enrolled_accuracy(tmp_path, capsys):
    torch.set_num_threads(1)
    recordings = fake_fsdd(tmp_path / "rec")
    config = fsdd_config(tmp_path, recordings, tmp_path / "exp")
    text = Path(config).read_text().replace("[data]", "[self_train]\nrounds = 1\nsteps = 2\n[data]\nenrol_from = 1", 1)
    assert fsdd.main(["demo", "--config", write_config(tmp_path / "demo.toml", text), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "held-out speaker ann: accuracy " in out and "(6 clips, never heard in training)" in out
    assert "on the speaker's clips 0-0 (3; " in out and "self-trained on the other 3, unlabelled (adapt)" in out
    assert (tmp_path / "exp" / "self_train" / "model.pt").is_file()
    text = text.replace("enrol_from = 1", "enrol_from = 0").replace(str(tmp_path / "exp"), str(tmp_path / "exp2"))
    assert fsdd.main(["demo", "--config", write_config(tmp_path / "demo2.toml", text), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "adapt skipped: data.enrol_from = 0 leaves the speaker 6 clips to adapt on and 0 to score" in out
    assert not (tmp_path / "exp2" / "self_train").exists()


# --------------------------------------------------------------------------- end to end on synthetic speech

@pytest.mark.skipif(not HAVE_ESPEAK, reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_speech_commands_synthetic_end_to_end(tmp_path, capsys):
    torch.set_num_threads(1)
    exp = tmp_path / "exp"
    config = write_config(tmp_path / "demo.toml", f"""exp_dir = "{exp}"
{TINY_TRAINING}
[data]
version = "synthetic"
task = "all"
[synth]
words = ["yes", "no", "stop"]
voices = ["espeak-ng:en-us", "espeak-ng:en-us+f4", "espeak-ng:en+m2", "espeak-ng:en-029+Annie"]
validation_voices = ["espeak-ng:en-029+Annie"]
testing_voices = ["espeak-ng:en-us+f4"]
per_voice = 2
noise_seconds = 2
[compare]
kinds = ["cnn2d", "m5"]
""")
    for stage in ("synthesize", "prepare", "lr_find", "train", "evaluate"):
        assert speech_commands.main([stage, "--config", config, "--no-progress"]) == 0, stage
    out = capsys.readouterr().out
    assert "suggested peak lr" in out and "test: accuracy" in out
    assert (exp / "lr_find" / "lr_find.png").is_file()
    assert json.loads((exp / "task.json").read_text())["labels"] == ["no", "stop", "yes"]
    assert "most confused" in (exp / "results" / "test" / "report.txt").read_text()

    clip = next((exp / "data" / "speech_commands_synthetic" / "stop").glob("*.wav"))
    assert cli.main(["classify", str(clip), "--model", str(exp / "model.pt"), "--format", "json",
                     "--top-k", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["label"] in ("yes", "no", "stop") and len(result["top_k"]) == 3

    assert speech_commands.main(["compare", "--config", config, "--no-progress"]) == 0
    table = (exp / "compare" / "results.md").read_text()
    assert "| cnn2d |" in table and "| m5 |" in table


@pytest.mark.skipif(not HAVE_ESPEAK, reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_fsdd_tts_digits_join_the_training_set_only(tmp_path, capsys):
    recordings = fake_fsdd(tmp_path / "rec")
    exp = tmp_path / "exp"
    config = fsdd_config(tmp_path, recordings, exp, '[synth]\nper_voice = 1\nvoices = ["espeak-ng:en-us+m3"]\n')
    assert fsdd.main(["prepare", "--config", config, "--no-progress"]) == 0
    clips = sorted((exp / "data" / "tts_digits").glob("*.wav"))
    assert len(clips) == 10 and all(sf.info(str(c)).samplerate == 8000 for c in clips)
    splits = {s: [json.loads(line) for line in (exp / "manifests" / f"{s}.jsonl").open()]
              for s in ("train", "dev", "test")}
    is_tts = lambda e: Path(e["audio_filepath"]).parent.name == "tts_digits"  # noqa: E731
    tts = [e for e in splits["train"] if is_tts(e)]
    assert len(tts) == 10 and sorted(e["label"] for e in tts) == sorted(DIGITS)
    assert not any(is_tts(e) for e in splits["dev"] + splits["test"])
    changed = Path(config).read_text().replace("per_voice = 1", "per_voice = 2")
    assert fsdd.main(["prepare", "--config", write_config(tmp_path / "c2.toml", changed)]) == 1
    assert "other synth settings" in capsys.readouterr().err


def test_committed_compare_config_pits_the_asr_encoder_against_every_baseline():
    """recipes/speech_commands/compare.toml: every kind, the demo's ASR model as a start, and
    features and encoder sizes that let that model's encoder weights load."""
    from asr.model import named_config
    from asr.recipes import recipe_config_path

    config = speech_commands.make_config(str(recipe_config_path("speech_commands", "compare")), "compare")
    demo = speech_commands.make_config(str(recipe_config_path("speech_commands", "demo")), "demo")
    assert sorted(config.compare.kinds) == ["cnn2d", "complex_cnn", "encoder", "m5"]
    assert config.compare.init_from == "exp/demo/model.pt"
    assert config.model.encoder_name == "small" and config.model.encoder == named_config("small")
    assert config.features.n_mels == named_config("small").n_mels
    assert config.synth == demo.synth  # the demo's corpus, shared through data.root
    assert (config.exp / config.data.root).resolve() == (demo.exp / demo.data.root).resolve()


def an4_digit_tree(root: Path) -> None:
    """A tiny AN4 folder in the raw big-endian layout: two speakers, digits among other words."""
    lines = []
    for s, speaker in enumerate(("fxyz", "mabc")):
        for n, text in enumerate(("ENTER SIX TWO", "ERASE C Q", "NINE")):
            utt = f"an{200 + 10 * s + n}-{speaker}-b"
            t = np.arange(16000) / 16000
            audio = 0.3 * np.sin(2 * np.pi * (300 + 100 * n + 50 * s) * t)
            path = root / "wav" / "an4_clstk" / speaker / f"{utt}.raw"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes((audio * 32767).astype(">i2").tobytes())
            lines.append(f"<s> {text} </s> ({utt})")
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "an4_train.transcription").write_text("\n".join(lines) + "\n")


def char_model_file(path: Path) -> Path:
    from asr.checkpoint import ModelFile
    from asr.features import FeatureConfig
    from asr.model import CTCModel, named_config
    from asr.text import CharTokenizer

    torch.manual_seed(0)
    config = named_config("small", n_mels=20, cnn_channels=4, n_res_blocks=1, rnn_dim=8, n_rnn_layers=1,
                          classifier_dim=8)
    return ModelFile("ctc", config, FeatureConfig(n_mels=20), CTCModel(config).state_dict(),
                     tokenizer=CharTokenizer().to_dict()).save(path)


def test_fsdd_training_set_gets_the_digit_words_of_an4_speakers(tmp_path, capsys):
    """an4_digits cuts every digit word out of the AN4 utterances (never their other words) with
    the aligner, at 8 kHz, named as FSDD names clips; prepare adds them to train, never to dev or
    test. A missing aligner is skipped with a note, or is an error when asked."""
    an4_digit_tree(tmp_path / "an4")
    aligner = char_model_file(tmp_path / "aligner.pt")
    recordings = fake_fsdd(tmp_path / "rec")
    exp = tmp_path / "exp"
    extra = f'[an4_digits]\naligner = "{aligner}"\nroot = "{tmp_path / "an4"}"\nmin_score = -100.0\n'
    config = fsdd_config(tmp_path, recordings, exp, extra=extra)
    assert fsdd.main(["prepare", "--config", config, "--no-progress"]) == 0
    clips = sorted(p.name for p in (exp / "data" / "an4_digits").glob("*.wav"))
    assert clips == ["2_an4-fxyz_1.wav", "2_an4-mabc_1.wav", "6_an4-fxyz_0.wav", "6_an4-mabc_0.wav",
                     "9_an4-fxyz_2.wav", "9_an4-mabc_2.wav"]
    for name in clips:
        info = sf.info(str(exp / "data" / "an4_digits" / name))
        assert info.samplerate == 8000 and 0.05 < info.duration <= 1.0
    splits = {s: [json.loads(line) for line in (exp / "manifests" / f"{s}.jsonl").open()] for s in ("train", "dev", "test")}
    assert sum(e["speaker"].startswith("an4-") for e in splits["train"]) == 6
    assert not any(e["speaker"].startswith("an4-") for e in splits["dev"] + splits["test"])
    assert "plus 6 digit words of 2 AN4 speakers" in capsys.readouterr().out
    capped = fsdd_config(tmp_path, recordings, tmp_path / "exp4", extra=extra + "per_digit = 1\n")
    assert fsdd.main(["prepare", "--config", capped, "--no-progress"]) == 0  # one word of each digit
    train = [json.loads(line) for line in (tmp_path / "exp4" / "manifests" / "train.jsonl").open()]
    assert sorted(e["label"] for e in train if e["speaker"].startswith("an4-")) == ["nine", "six", "two"]
    assert "plus 3 digit words of" in capsys.readouterr().out

    missing = fsdd_config(tmp_path, recordings, tmp_path / "exp2", extra=extra.replace(str(aligner), "nowhere.pt"))
    assert fsdd.main(["prepare", "--config", missing]) == 0
    assert "nowhere.pt not found" in capsys.readouterr().out
    assert not (tmp_path / "exp2" / "data" / "an4_digits").exists()
    strict = fsdd_config(tmp_path, recordings, tmp_path / "exp3",
                         extra=extra.replace(str(aligner), "nowhere.pt") + 'if_missing = "error"\n')
    assert fsdd.main(["prepare", "--config", strict]) == 1
    assert "run python -m asr.recipes.an4 demo first" in capsys.readouterr().err


def test_fsdd_cv_holds_out_each_speaker_in_turn(tmp_path, capsys):
    torch.set_num_threads(1)
    recordings = fake_fsdd(tmp_path / "rec", speakers=("ann", "bob", "cat"), per_digit=6)
    exp = tmp_path / "exp"
    config = write_config(tmp_path / "cv.toml",  # no dev speaker: the others' clips 0-4 validate
                          Path(fsdd_config(tmp_path, recordings, exp)).read_text().replace('dev_speaker = "bob"', ""))
    assert fsdd.main(["cv", "--config", config, "--no-progress"]) == 0
    result = json.loads((exp / "results" / "cv" / "speakers.json").read_text())
    assert sorted(result["speakers"]) == ["ann", "bob", "cat"]
    for speaker in ("ann", "bob", "cat"):
        test = [json.loads(line) for line in (exp / "cv" / speaker / "manifests" / "test.jsonl").open()]
        train = [json.loads(line) for line in (exp / "cv" / speaker / "manifests" / "train.jsonl").open()]
        assert {e["speaker"] for e in test} == {speaker} and speaker not in {e["speaker"] for e in train}
        report = (exp / "cv" / speaker / "results" / "test" / "report.txt").read_text()
        assert f"{100 * result['speakers'][speaker]['test']:.2f}%" in report
    accuracies = [row["test"] for row in result["speakers"].values()]
    assert result["mean"]["test"] == pytest.approx(sum(accuracies) / 3)
    assert "mean over 3 held-out speakers" in capsys.readouterr().out


def test_classifier_step_benchmark_times_both_kernel_layouts_or_two_configs(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "tools/bench_classifier_step.py", "--clips", "2", "--seconds", "1",
                           "--steps", "1"], capture_output=True, text=True, timeout=300, cwd=repo)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("machine: ") and "cnn2d [24, 48, 96, 192], 2 convolutions a block" in lines[1]
    assert [line.split()[0] for line in lines[3:5]] == ["channels-last", "contiguous"]
    assert float(lines[-1].split("x as fast")[0].split()[-1]) > 0
    # --baseline: the config against another, here the same CNN on 32 kHz audio at a frame every 10 ms
    other = tmp_path / "fine.toml"
    other.write_text('base = "%s"\n[features]\nsample_rate = 32000\nhop_length = 320\n' % (repo / "recipes/esc50/esc10.toml"))
    proc = subprocess.run([sys.executable, "tools/bench_classifier_step.py", "--baseline", str(other), "--clips", "2",
                           "--seconds", "1", "--steps", "1"], capture_output=True, text=True, timeout=300, cwd=repo)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "every 10 ms of 32 kHz audio (101 frames a clip)" in lines[2] and "fine.toml" in lines[2]
    assert "every 55 ms of 16 kHz audio (19 frames a clip)" in lines[1] and "esc10.toml" in lines[1]
    assert lines[-1].startswith("esc10.toml: ") and lines[-1].endswith("x as fast as fine.toml")
    # two files of one name are told apart by their paths; a config against itself is refused
    (tmp_path / "b").mkdir()
    twin = tmp_path / "b" / "fine.toml"
    twin.write_text(other.read_text())
    proc = subprocess.run([sys.executable, "tools/bench_classifier_step.py", "--config", str(other), "--baseline",
                           str(twin), "--clips", "2", "--seconds", "1", "--steps", "1"],
                          capture_output=True, text=True, timeout=300, cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[0] for line in proc.stdout.splitlines()[4:6]] == [str(other), str(twin)]
    proc = subprocess.run([sys.executable, "tools/bench_classifier_step.py", "--baseline", "recipes/esc50/esc10.toml"],
                          capture_output=True, text=True, timeout=300, cwd=repo)
    assert proc.returncode == 1 and "is --config itself" in proc.stderr and "Traceback" not in proc.stderr
