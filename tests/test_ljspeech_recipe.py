"""The LJ Speech recipe end to end on a tiny config: synthetic pretraining, fine-tuning on
real clips, LM, tuning, subwords, and the four-row comparison; then a restart."""

import json

import pytest

from asr.errors import AsrError
from asr.inference import load_model
from asr.lm import find_kenlm_binary
from asr.recipes import ljspeech

TINY = """\
model_name = "small"

[model]
cnn_channels = 4
n_res_blocks = 1
rnn_dim = 16
n_rnn_layers = 1
classifier_dim = 16

[features]
n_mels = 40

[synth]
n_train = 10
n_dev = 3
n_test = 0

[real]
n_dev = 2
max_train = 3
max_test = 2

[train]
max_steps = 2
max_frames = 2000
eval_every = 0
checkpoint_every = 1
log_every = 1
max_eval_utterances = 2

[finetune]
max_steps = 1
max_frames = 2000
checkpoint_every = 1
log_every = 1

[subword_pretrain]
max_steps = 1
max_frames = 2000
checkpoint_every = 1
log_every = 1

[subwords]
vocab_size = 40
model_type = "bpe"

[lm]
order = 3
memory = "100M"

[decoding]
beam_width = 8
alphas = [0.5, 1.0]
betas = [0.0, 1.0]
processes = 0
"""


@pytest.fixture
def need_kenlm():
    try:
        find_kenlm_binary("lmplz")
        find_kenlm_binary("build_binary")
    except AsrError:
        pytest.skip("KenLM programs not built: run bash tools/build_kenlm.sh")


@pytest.mark.slow
@pytest.mark.slow
def test_demo_on_a_tiny_config(tmp_path, shared_data, need_espeak, need_kenlm, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    exp = tmp_path / "exp"
    args = ["demo", "--config", str(config), "--exp-dir", str(exp), "--no-progress"]
    assert ljspeech.main(args) == 0
    out = capsys.readouterr().out

    table = (exp / "results" / "wer.txt").read_text()
    for setup in ("greedy", "beam, no LM", "beam + LM", "beam + LM + subwords"):
        assert f"lj-test (real)         {setup} " in table
    assert table in out
    char, sub = exp / "char" / "finetune" / "model.pt", exp / "subwords" / "finetune" / "model.pt"
    for path in (char, sub, exp / "lm" / "lm.bin"):
        assert str(path) in out and path.is_file()

    # the real splits: dev clips are held out of fine-tuning; the test is LJ002
    manifests = {name: [json.loads(line) for line in (exp / "manifests" / f"{name}.jsonl").read_text().splitlines()]
                 for name in ("lj-train", "lj-dev", "lj-test")}
    assert [len(m) for m in manifests.values()] == [3, 2, 2]
    assert not {e["id"] for e in manifests["lj-train"]} & {e["id"] for e in manifests["lj-dev"]}
    assert all(e["id"].startswith("LJ002-") for e in manifests["lj-test"])

    # both models are tuned; the subword model has sentencepiece units; fine-tuning started from pretraining
    for path, kind in ((char, "char"), (sub, "sentencepiece")):
        model = load_model(path)
        assert model.tokenizer.kind == kind
        assert model.decoding.decoder == "beam"
        assert (path.parent / "decoding.json").is_file()
    assert "starting from" in out and str(exp / "char" / "pretrain" / "model.pt") in out

    # a second run redoes nothing that is finished
    stamps = {p: p.stat().st_mtime_ns for p in (char, sub, exp / "lm" / "lm.bin")}
    assert ljspeech.main(args) == 0
    out = capsys.readouterr().out
    assert "skipping" in out and "already tuned" in out and "trained to step" not in out
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert (exp / "results" / "wer.txt").read_text() == table


def test_stages_explain_what_is_missing(tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    assert ljspeech.main(["evaluate", "--config", str(config), "--exp-dir", str(tmp_path / "exp")]) == 1
    assert "manifest not found" in capsys.readouterr().err
    assert ljspeech.main(["finetune", "--config", str(config), "--exp-dir", str(tmp_path / "exp")]) == 1
    assert "run the pretrain stage first" in capsys.readouterr().err
