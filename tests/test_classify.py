"""Clip classification: corpus readers, the 12-class task, augmentation, models, reports, ``asr classify``."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr import cli
from asr.adaptation import balance_to_prior
from asr.checkpoint import ModelFile
from asr.classify import MixupCollate, adapt_batchnorm, classification_loss, load_body_weights
from asr.config import from_dict, to_dict
from asr.corpora import (DIGITS, KWS12_LABELS, SILENCE, UNKNOWN, background_noise_files, read_esc50, read_fsdd,
                         read_label_folders, split_by_lists, to_twelve_classes, which_set)
from asr.data import ClassificationDataset, collate, load_entry_audio
from asr.errors import AsrError
from asr.features import FeatureConfig, FeatureExtractor
from asr.inference import ClipClassifier, classify, format_prediction, load_classifier, predict
from asr.model import (CLASSIFIER_KINDS, Classifier, ClassifierConfig, CTCModel, Ensemble, PoolingHead, build_model,
                       count_parameters, named_config)
from asr.reports import Report


def write_wav(path: Path, seconds: float = 1.0, rate: int = 16000, freq: float = 440.0, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).standard_normal(len(t))
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * noise).astype(np.float32), rate)
    return path


def speech_commands_tree(root: Path, words=("yes", "no", "cat", "tree"), speakers=("0a1b2c3d", "1b2c3d4e", "2c3d4e5f"),
                         lists: bool = True) -> Path:
    """A Speech Commands-layout corpus: <word>/<speaker>_nohash_<n>.wav, noise, split lists."""
    for w, word in enumerate(words):
        for s, speaker in enumerate(speakers):
            for n in range(2):
                write_wav(root / word / f"{speaker}_nohash_{n}.wav", 1.0 if n == 0 else 0.8, freq=200 + 50 * w,
                          seed=s)
    write_wav(root / "_background_noise_" / "white_noise.wav", 3.0, freq=60)
    write_wav(root / "_background_noise_" / "hum.wav", 2.0, freq=50)
    if lists:
        (root / "validation_list.txt").write_text("".join(f"{w}/{speakers[1]}_nohash_{n}.wav\n"
                                                          for w in words for n in range(2)))
        (root / "testing_list.txt").write_text("".join(f"{w}/{speakers[2]}_nohash_{n}.wav\n"
                                                       for w in words for n in range(2)))
    return root


# --------------------------------------------------------------------------- readers

def test_folder_per_label_reader_with_split_lists_and_noise(tmp_path):
    root = speech_commands_tree(tmp_path / "sc")
    (root / ".hidden").mkdir()
    entries = read_label_folders(root)
    assert len(entries) == 4 * 3 * 2
    assert {e["label"] for e in entries} == {"yes", "no", "cat", "tree"}
    first = entries[0]
    assert first["id"] == "cat/0a1b2c3d_nohash_0.wav" and first["speaker"] == "0a1b2c3d"
    assert first["duration"] == pytest.approx(1.0) and Path(first["audio_filepath"]).is_file()
    assert [Path(p).name for p in background_noise_files(root)] == ["hum.wav", "white_noise.wav"]

    splits = split_by_lists(entries, root)
    assert {e["speaker"] for e in splits["training"]} == {"0a1b2c3d"}
    assert {e["speaker"] for e in splits["validation"]} == {"1b2c3d4e"}
    assert {e["speaker"] for e in splits["testing"]} == {"2c3d4e5f"}
    assert sum(len(v) for v in splits.values()) == len(entries)


def test_folder_reader_without_lists_splits_by_speaker_hash(tmp_path):
    root = speech_commands_tree(tmp_path / "sc", speakers=[f"{i:08x}" for i in range(30)], words=("go",),
                                lists=False)
    splits = split_by_lists(read_label_folders(root), root)
    for name, entries in splits.items():
        for e in entries:
            assert which_set(e["id"]) == name
    speakers = [{e["speaker"] for e in v} for v in splits.values()]
    assert not (speakers[0] & speakers[1]) and not (speakers[0] & speakers[2]) and not (speakers[1] & speakers[2])
    assert which_set("x/abc_nohash_0.wav") == which_set("y/abc_nohash_7.wav")
    (root / "testing_list.txt").write_text("")
    with pytest.raises(AsrError, match="not the other"):
        split_by_lists([], root)


def test_folder_reader_errors(tmp_path):
    with pytest.raises(AsrError, match="not a folder"):
        read_label_folders(tmp_path / "missing")
    (tmp_path / "_background_noise_").mkdir()
    with pytest.raises(AsrError, match="no <label>"):
        read_label_folders(tmp_path)


def test_twelve_class_mapping(tmp_path):
    words = ("yes", "no", "cat", "tree", "bed")
    root = speech_commands_tree(tmp_path / "sc", words=words, speakers=[f"{i:08x}" for i in range(10)], lists=False)
    entries = read_label_folders(root)
    noise = background_noise_files(root)
    mapped = to_twelve_classes(entries, noise, unknown_share=0.5, silence_share=0.25, seed=1)
    known = [e for e in mapped if e["label"] in ("yes", "no")]
    unknown = [e for e in mapped if e["label"] == UNKNOWN]
    silence = [e for e in mapped if e["label"] == SILENCE]
    assert len(known) == 40 and len(unknown) == 20 and len(silence) == 10
    assert {Path(e["audio_filepath"]).parent.name for e in unknown} <= {"cat", "tree", "bed"}
    assert set(e["label"] for e in mapped) <= set(KWS12_LABELS)
    assert mapped == to_twelve_classes(entries, noise, unknown_share=0.5, silence_share=0.25, seed=1)
    for e in silence:
        audio = load_entry_audio(e)
        assert audio.shape == (16000,)
        assert e["offset"] + e["duration"] <= 3.0 + 1e-6
        whole, _ = sf.read(e["audio_filepath"], dtype="float32")
        start = int(e["offset"] * 16000)
        assert torch.allclose(audio, torch.from_numpy(whole[start:start + 16000]) * e["gain"])
    with pytest.raises(AsrError, match="background noise"):
        to_twelve_classes(entries, [], silence_share=0.1)


def test_esc50_reader(tmp_path):
    root = tmp_path / "ESC-50-master"
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for i, (fold, target, category) in enumerate([(1, 0, "dog"), (2, 0, "dog"), (1, 19, "thunderstorm")]):
        name = f"{fold}-{100 + i}-A-{target}.wav"
        write_wav(root / "audio" / name, 0.5, rate=44100)
        rows.append(f"{name},{fold},{target},{category},{target == 0},{100 + i},A")
    (root / "meta").mkdir()
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    entries = read_esc50(root)
    assert [(e["fold"], e["label"], e["target"], e["esc10"]) for e in entries] == [
        (1, "dog", 0, True), (2, "dog", 0, True), (1, "thunderstorm", 19, False)]
    assert entries[0]["duration"] == pytest.approx(0.5) and entries[0]["id"] == "1-100-A-0"
    (root / "audio" / "1-100-A-0.wav").unlink()
    with pytest.raises(AsrError, match="missing"):
        read_esc50(root)
    with pytest.raises(AsrError, match="not an ESC-50 folder"):
        read_esc50(tmp_path)


def test_fsdd_reader(tmp_path):
    for name in ("7_george_12", "0_yweweler_3"):
        write_wav(tmp_path / f"{name}.wav", 0.4, rate=8000)
    entries = read_fsdd(tmp_path)
    assert [(e["label"], e["speaker"], e["index"]) for e in entries] == [("zero", "yweweler", 3),
                                                                       ("seven", "george", 12)]
    assert entries[0]["duration"] == pytest.approx(0.4)
    write_wav(tmp_path / "seven_george.wav", 0.1, rate=8000)
    with pytest.raises(AsrError, match="not an FSDD file name"):
        read_fsdd(tmp_path)


def test_fsdd_reader_on_the_real_recordings(shared_data):
    entries = read_fsdd(shared_data / "fsdd" / "recordings")
    assert len(entries) == 2500
    assert sorted({e["speaker"] for e in entries}) == ["george", "jackson", "nicolas", "theo", "yweweler"]
    assert {e["label"] for e in entries} == set(DIGITS)
    audio = load_entry_audio(entries[0])  # 8 kHz on disk, 16 kHz in memory
    assert audio.numel() == pytest.approx(entries[0]["duration"] * 16000, abs=2)


def test_classification_dataset(tmp_path):
    root = speech_commands_tree(tmp_path / "sc", words=("yes", "no"))
    entries = read_label_folders(root)
    dataset = ClassificationDataset(entries, ["no", "yes"], transform=lambda a: a * 0, cache_audio=True)
    audio, target = dataset[0]
    assert target.tolist() == [0] and audio.abs().sum() == 0 and len(dataset.cache) == 1
    assert dataset.durations[0] == pytest.approx(1.0)
    with pytest.raises(AsrError, match="not in the label set"):
        ClassificationDataset(entries, ["yes"])


def test_mixup_batches_and_loss():
    torch.manual_seed(0)
    items = [(torch.full((n,), float(k + 1)), torch.tensor([k])) for k, n in enumerate((800, 600, 700, 500))]
    batch = MixupCollate(0.4)(items)
    w = batch.mix
    assert w.shape == (4,) and bool(((w >= 0.5) & (w <= 1)).all())
    first, second = batch.targets[:, 0], batch.targets[:, 1]
    assert first.tolist() == [0, 1, 2, 3] and sorted(second.tolist()) == [0, 1, 2, 3]
    for i in range(4):  # each clip is w * itself + (1 - w) * its partner, over the longer of the two
        j = int(second[i])
        assert batch.audio_lengths[i] == max(len(items[i][0]), len(items[j][0]))
        assert batch.audio[i, 0].item() == pytest.approx(w[i] * (i + 1) + (1 - w[i]) * (j + 1))
    log_probs = torch.log_softmax(torch.randn(4, 5), dim=-1)
    expected = -(w * log_probs[torch.arange(4), first] + (1 - w) * log_probs[torch.arange(4), second]).mean()
    assert classification_loss(log_probs, batch).item() == pytest.approx(expected.item(), rel=1e-5)
    plain = collate(items)  # no mixup: the plain cross-entropy
    assert plain.mix is None
    assert classification_loss(log_probs, plain).item() == pytest.approx(
        -log_probs[torch.arange(4), plain.targets[:, 0]].mean().item(), rel=1e-5)


def test_mixup_by_loudness_hears_a_quiet_clip_at_its_label_weight():
    """Between-class mixing: a clip 20 dB below its partner enters the mixture 10 times louder
    than plain mixup would put it, so that both are heard at the share their labels get."""
    torch.manual_seed(0)
    loud, quiet = torch.ones(3200), torch.full((3200,), 0.1)  # 0 dB and -20 dB
    assert MixupCollate(1.0).loudness_db(torch.stack([loud, quiet])).tolist() == pytest.approx([0.0, -20.0], abs=1e-4)
    items = [(loud, torch.tensor([0])), (quiet, torch.tensor([1]))]
    for _ in range(5):
        batch = MixupCollate(1.0, by_loudness=True)(items)
        w = batch.mix
        for i, (own, other) in enumerate(((loud, quiet), (quiet, loud))):
            if int(batch.targets[i, 1]) == i:  # mixed with itself: unchanged but for the scale
                continue
            g = 20 * math.log10(own[0] / other[0])
            p = 1 / (1 + 10 ** (g / 20) * (1 - w[i]) / w[i])
            expected = (p * own[0] + (1 - p) * other[0]) / math.sqrt(p ** 2 + (1 - p) ** 2)
            assert batch.audio[i, 0].item() == pytest.approx(float(expected), rel=1e-5)
            # the two clips' contributions stand in the ratio of their label weights (in amplitude)
            share_own, share_other = p * own[0], (1 - p) * other[0]
            assert float(share_own / share_other) == pytest.approx(float(w[i] / (1 - w[i])), rel=1e-4)


# --------------------------------------------------------------------------- features and models

def test_feature_kinds():
    audio, lengths = torch.randn(2, 16000), torch.tensor([16000, 8000])
    logmel = FeatureConfig(n_mels=40)
    assert (logmel.kind, logmel.feature_dim) == ("logmel", 40)
    feats, frames = FeatureExtractor(FeatureConfig(kind="complex", n_fft=256, win_length=256))(audio, lengths)
    assert feats.shape == (2, 2 * 129, 101) and frames.tolist() == [101, 51]
    assert FeatureConfig(kind="complex", n_fft=256).feature_dim == 258
    assert feats[1, :, 51:].abs().sum() == 0
    assert feats[0].pow(2).mean() == pytest.approx(1.0, rel=1e-3)
    wave, n = FeatureExtractor(FeatureConfig(kind="waveform"))(audio, lengths)
    assert wave.shape == (2, 1, 8000) and n.tolist() == [8000, 4000]
    assert wave[1, 0, :4000].mean().abs() < 1e-5 and wave[1, 0, :4000].pow(2).mean() == pytest.approx(1.0, rel=1e-3)
    with pytest.raises(ValueError, match="unknown feature kind"):
        FeatureExtractor(FeatureConfig(kind="mfcc"))


def tiny_encoder(**kw):
    sizes = dict(n_mels=16, cnn_channels=4, n_res_blocks=1, rnn_dim=8, n_rnn_layers=2, classifier_dim=8, dropout=0.0)
    return named_config("small", **{**sizes, **kw})


def tiny_classifier(kind: str, pooling: str = "mean", n_classes: int = 5) -> ClassifierConfig:
    n_feats = {"encoder": 16, "cnn2d": 16, "complex_cnn": 2 * 33, "m5": 1}[kind]
    channels = {"encoder": (), "cnn2d": (4, 8), "complex_cnn": (4, 8), "m5": (8, 8, 8, 8)}[kind]
    return ClassifierConfig(kind=kind, n_classes=n_classes, pooling=pooling, n_feats=n_feats, channels=channels,
                            dropout=0.0, encoder=tiny_encoder() if kind == "encoder" else None)


def test_balance_to_prior_gives_each_class_its_share_and_moves_the_weakest_guesses():
    # 4 clips of each of 3 classes; the model pulls the two least sure "a"s into "c"
    probs = torch.tensor([[0.8, 0.1, 0.1]] * 2 + [[0.30, 0.05, 0.65], [0.35, 0.05, 0.60]]
                         + [[0.1, 0.8, 0.1]] * 4 + [[0.05, 0.05, 0.9]] * 4)
    prior = torch.tensor([10.0, 10.0, 10.0])  # training clips per class
    q = balance_to_prior(probs, prior)
    assert torch.allclose(q.sum(1), torch.ones(12), atol=1e-6)
    assert torch.allclose(q.sum(0), torch.full((3,), 4.0), atol=1e-3)
    assert probs.argmax(-1).tolist() == [0, 0, 2, 2] + [1] * 4 + [2] * 4
    assert q.argmax(-1).tolist() == [0] * 4 + [1] * 4 + [2] * 4
    fair = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.7, 0.2], [0.2, 0.1, 0.7]])  # already balanced: kept
    assert torch.allclose(balance_to_prior(fair, prior), fair, atol=1e-6)
    skewed = balance_to_prior(probs, torch.tensor([2.0, 1.0, 1.0]))  # shares follow the prior
    assert torch.allclose(skewed.sum(0), torch.tensor([6.0, 3.0, 3.0]), atol=1e-3)


@pytest.mark.parametrize("pooling", ["mean", "attention"])
@pytest.mark.parametrize("kind", CLASSIFIER_KINDS)
def test_classifier_forward_and_padding(kind, pooling):
    torch.manual_seed(0)
    config = tiny_classifier(kind, pooling)
    model = build_model(config).eval()
    assert isinstance(model, Classifier)
    long, short = (3000, 1500) if kind == "m5" else (40, 23)
    a, b = torch.randn(1, config.n_feats, long), torch.randn(1, config.n_feats, short)
    batch = torch.zeros(2, config.n_feats, long)
    batch[0], batch[1, :, :short] = a[0], b[0]
    log_probs = model(batch, torch.tensor([long, short]))
    assert log_probs.shape == (2, 5)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(log_probs[1], model(b, torch.tensor([short]))[0], atol=1e-5)
    assert torch.allclose(log_probs[0], model(a, torch.tensor([long]))[0], atol=1e-5)
    tiny = model(torch.randn(1, config.n_feats, 3), torch.tensor([3]))  # shorter than the poolings
    assert tiny.shape == (1, 5) and torch.isfinite(tiny).all()


def test_ensemble_averages_its_members_probabilities():
    torch.manual_seed(0)
    config = tiny_classifier("cnn2d")
    ensemble = build_model(config, members=3).eval()
    assert isinstance(ensemble, Ensemble) and ensemble.config == config
    assert count_parameters(ensemble) == 3 * count_parameters(build_model(config))
    feats, lengths = torch.randn(4, 16, 30), torch.tensor([30, 25, 16, 9])
    members = torch.stack([m(feats, lengths).exp() for m in ensemble.members])
    assert not torch.allclose(members[0], members[1])  # members start from different weights
    log_probs = ensemble(feats, lengths)
    assert torch.allclose(log_probs.exp(), members.mean(0), atol=1e-6)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(4), atol=1e-5)
    with pytest.raises(ValueError, match="one config"):
        Ensemble([Classifier(config), Classifier(tiny_classifier("cnn2d", n_classes=3))])
    with pytest.raises(ValueError, match="classifiers only"):
        build_model(named_config("small"), members=2)


def test_adapt_batchnorm_re_estimates_the_statistics_on_the_given_clips(tmp_path):
    torch.manual_seed(0)
    net = build_model(tiny_classifier("cnn2d"), members=2)
    features = FeatureExtractor(FeatureConfig(n_mels=16))
    model = ClipClassifier(net, features, [str(i) for i in range(net.config.n_classes)], torch.device("cpu"))
    entries = [{"audio_filepath": str(write_wav(tmp_path / f"{i}.wav", 0.4 + 0.1 * i, freq=300 + 150 * i, seed=i)),
                "duration": 0.4 + 0.1 * i} for i in range(4)]
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    seen = []  # what the first BatchNorm of the second member gets in a plain (eval) pass: one batch here
    hook = norms[len(norms) // 2].register_forward_hook(lambda module, args, out: seen.append(args[0].detach()))
    before = predict(model, entries)
    hook.remove()
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}

    assert adapt_batchnorm(model, entries) == len(norms) == 2 * 2
    x = torch.cat(seen)
    first = norms[len(norms) // 2]
    assert torch.allclose(first.running_mean, x.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(first.running_var, x.var((0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-6)
    assert all(m.momentum == 0.1 and not m.training for m in norms) and not net.training
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in weights.items())  # only the statistics moved
    after = predict(model, entries)
    assert not torch.allclose(before, after)

    stats = [m.running_mean.clone() for m in norms]
    adapt_batchnorm(model, entries)  # from the clips alone, not from the statistics before
    assert all(torch.allclose(a, m.running_mean, atol=1e-6) for a, m in zip(stats, norms))
    with pytest.raises(AsrError, match="no BatchNorm layers"):
        adapt_batchnorm(ClipClassifier(build_model(tiny_classifier("encoder")), features, model.labels,
                                       torch.device("cpu")), entries)
    with pytest.raises(AsrError, match="no clips"):
        adapt_batchnorm(model, [])


@pytest.mark.parametrize("pooling", ["mean", "attention", "meanmax"])
def test_pooling_head_ignores_padded_frames(pooling):
    torch.manual_seed(0)
    head = PoolingHead(6, 3, pooling, dropout=0.0)
    x = torch.randn(2, 10, 6)
    lengths = torch.tensor([10, 4])
    weights = head.weights(x, lengths)
    assert torch.allclose(weights.sum(-1), torch.ones(2)) and weights[1, 4:].abs().sum() == 0
    if pooling != "attention":
        assert torch.allclose(weights[1, :4], torch.full((4,), 0.25))
    if pooling == "meanmax":  # the valid frames' mean plus their maximum, feature by feature
        pooled = torch.stack([x[0].mean(0) + x[0].amax(0), x[1, :4].mean(0) + x[1, :4].amax(0)])
        assert torch.allclose(head(x, lengths), head.out(pooled), atol=1e-6)
    garbage = x.clone()
    garbage[1, 4:] = 1e6
    assert torch.allclose(head(x, lengths), head(garbage, lengths))


def test_classifier_config_validation_and_round_trip():
    config = named_config("kws-encoder")
    again = from_dict(ClassifierConfig, to_dict(config))
    assert again == config and again.encoder == named_config("small") and config.n_feats == config.encoder.n_mels
    assert count_parameters(build_model(named_config("kws-m5"))) == 559_116  # M5 as published: about 0.5 M
    for bad, match in [({"kind": "rnn"}, "unknown classifier kind"), ({"pooling": "max"}, "unknown pooling"),
                       ({"kind": "encoder"}, "needs an encoder"), ({"kind": "m5", "n_feats": 80}, "waveforms"),
                       ({"kind": "encoder", "n_feats": 40, "encoder": named_config("small", n_mels=80)}, "80 mels")]:
        with pytest.raises(ValueError, match=match):
            ClassifierConfig(**bad)
    with pytest.raises(AsrError, match="unknown key 'layers'"):
        from_dict(ClassifierConfig, {"kind": "m5", "n_feats": 1, "layers": 3})


def save_ctc(path: Path, config) -> CTCModel:
    model = CTCModel(config)
    ModelFile("ctc", config, FeatureConfig(n_mels=config.n_mels, hop_length=80), model.state_dict(),
              tokenizer={"kind": "char"}).save(path)
    return model


def test_encoder_weights_from_a_ctc_checkpoint(tmp_path):
    torch.manual_seed(0)
    ctc = save_ctc(tmp_path / "asr.pt", tiny_encoder(n_classes=29))
    classifier = Classifier(tiny_classifier("encoder"))
    head_before = {k: v.clone() for k, v in classifier.head.state_dict().items()}
    assert load_body_weights(classifier, ModelFile.load(tmp_path / "asr.pt")) == len(ctc.encoder.state_dict())
    for name, weight in ctc.encoder.state_dict().items():
        assert torch.equal(classifier.encoder.state_dict()[name], weight), name
    assert all(torch.equal(v, head_before[k]) for k, v in classifier.head.state_dict().items())

    save_ctc(tmp_path / "other.pt", tiny_encoder(rnn_dim=12))
    fit = r"does not fit.*proj.weight is \(12, 32\) there, \(8, 32\) here.*rnn_dim=12"
    with pytest.raises(AsrError, match=fit) as excinfo:
        load_body_weights(Classifier(tiny_classifier("encoder")), ModelFile.load(tmp_path / "other.pt"))
    assert "\n" not in str(excinfo.value)
    with pytest.raises(AsrError, match="no ASR encoder"):
        load_body_weights(Classifier(tiny_classifier("cnn2d")), ModelFile.load(tmp_path / "asr.pt"))
    with pytest.raises(AsrError, match="no such model file"):
        ModelFile.load(tmp_path / "missing.pt")


def test_recipe_model_from_an_asr_checkpoint_takes_its_front_end(tmp_path, capsys):
    from asr.classify import ModelSection, build_classifier

    torch.manual_seed(0)
    ctc = save_ctc(tmp_path / "asr.pt", tiny_encoder(n_mels=24))
    section = ModelSection(kind="encoder", pooling="attention", init_from=str(tmp_path / "asr.pt"), dropout=0.0)
    model, features = build_classifier(section, FeatureConfig(n_mels=80), n_classes=4)
    assert (features.n_mels, features.hop_length, features.kind) == (24, 80, "logmel")
    assert model.config.encoder == tiny_encoder(n_mels=24) and model.config.n_feats == 24
    assert all(torch.equal(model.encoder.state_dict()[k], v) for k, v in ctc.encoder.state_dict().items())
    assert "encoder initialised from" in capsys.readouterr().out

    frozen, _ = build_classifier(ModelSection(kind="encoder", init_from=str(tmp_path / "asr.pt"),
                                              freeze_encoder=True), FeatureConfig(), 4, verbose=False)
    assert not any(p.requires_grad for p in frozen.encoder.parameters())
    assert all(p.requires_grad for p in frozen.head.parameters())
    with pytest.raises(AsrError, match="an ASR model; its encoder can start model.kind = \"encoder\" only"):
        build_classifier(ModelSection(kind="cnn2d", init_from=str(tmp_path / "asr.pt")), FeatureConfig(), 4)
    with pytest.raises(AsrError, match="reads 'waveform' features"):
        build_classifier(ModelSection(kind="m5"), FeatureConfig(kind="complex"), 4)


def test_recipe_model_from_another_classifier_takes_its_body_and_front_end(tmp_path, capsys):
    """Transfer between label sets: a cnn2d trained on other words starts a digit classifier."""
    from asr.classify import ModelSection, build_classifier

    torch.manual_seed(0)
    theirs = tiny_classifier("cnn2d", n_classes=3)
    front_end = FeatureConfig(n_mels=16, f_max=4000.0, floor_db=45.0)
    members = Ensemble([Classifier(theirs), Classifier(theirs)])
    for path, weights, n in ((tmp_path / "one.pt", members.members[1].state_dict(), 1),
                             (tmp_path / "two.pt", members.state_dict(), 2)):
        ModelFile("classify", theirs, front_end, weights, labels=("yes", "no", "up"), members=n).save(path)

    section = ModelSection(kind="cnn2d", channels=(16, 32), init_from=str(tmp_path / "one.pt"), dropout=0.0)
    model, features = build_classifier(section, FeatureConfig(n_mels=40), n_classes=10)
    assert features == front_end
    assert (model.config.channels, model.config.n_feats, model.config.n_classes) == ((4, 8), 16, 10)
    assert all(torch.equal(model.encoder.state_dict()[k], v)
               for k, v in members.members[1].encoder.state_dict().items())
    assert model.head.out.weight.shape[0] == 10
    out = capsys.readouterr().out
    assert "features: those of" in out and "encoder initialised from" in out and "(12 tensors)" in out

    model, _ = build_classifier(replace(section, init_from=str(tmp_path / "two.pt")), FeatureConfig(), 10,
                                verbose=False)
    assert all(torch.equal(model.encoder.state_dict()[k], v)
               for k, v in members.members[0].encoder.state_dict().items())
    assert not torch.equal(model.encoder.state_dict()["blocks.0.0.weight"],
                           members.members[1].encoder.state_dict()["blocks.0.0.weight"])
    frozen, _ = build_classifier(replace(section, freeze_encoder=True), FeatureConfig(), 10, verbose=False)
    assert not any(p.requires_grad for p in frozen.encoder.parameters())

    with pytest.raises(AsrError, match="a 'cnn2d' classifier, but model.kind is 'm5'") as excinfo:
        build_classifier(replace(section, kind="m5"), FeatureConfig(), 10)
    assert "\n" not in str(excinfo.value)
    with pytest.raises(AsrError, match="its weights cannot start a 'encoder' one"):
        load_body_weights(Classifier(tiny_classifier("encoder")), ModelFile.load(tmp_path / "one.pt"))
    smaller = ClassifierConfig(kind="cnn2d", n_classes=3, n_feats=16, channels=(2, 8), dropout=0.0)
    with pytest.raises(AsrError, match=r"does not fit.*blocks.0.0.weight is \(4, 1, 3, 3\) there.*channels="):
        load_body_weights(Classifier(smaller), ModelFile.load(tmp_path / "one.pt"))


# --------------------------------------------------------------------------- reports

def test_report_counts_pairs_and_plot(tmp_path):
    labels = ["three", "tree", "two"]
    refs = [0, 0, 0, 1, 1, 1, 1, 2]
    hyps = [0, 0, 1, 0, 0, 1, 1, 2]
    report = Report.from_predictions(labels, refs, hyps)
    assert report.confusion.tolist() == [[2, 1, 0], [2, 2, 0], [0, 0, 1]]
    assert report.accuracy == pytest.approx(5 / 8)
    assert report.confused_pairs()[0] == ("tree", "three", 2, 0.5)
    text = report.text("test")
    assert text.startswith("test: accuracy 62.50% (5 / 8 clips)")
    assert "tree -> three: 2 (50.0% of tree)" in text and "three -> tree: 1 (33.3% of three)" in text
    rows = {r["label"]: r for r in report.per_class()}
    assert rows["tree"]["recall"] == 0.5 and rows["three"]["precision"] == pytest.approx(0.5)
    from asr.reports import write_report

    out = write_report(report, tmp_path / "res", "test")
    png = out / "confusion.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "metrics.json").read_text())["confusion"] == report.confusion.tolist()


# --------------------------------------------------------------------------- asr classify

def save_classifier(path: Path, labels=("yes", "no", "up")) -> Path:
    torch.manual_seed(0)
    config = ClassifierConfig(kind="cnn2d", n_classes=len(labels), n_feats=16, channels=(4, 8), dropout=0.0)
    model = Classifier(config)
    ModelFile("classify", config, FeatureConfig(n_mels=16), model.state_dict(), labels=tuple(labels)).save(path)
    return path


def test_classify_library_call(tmp_path):
    model = load_classifier(save_classifier(tmp_path / "m.pt"))
    prediction = classify(model, write_wav(tmp_path / "a.wav", 0.5, rate=8000), top_k=5)
    assert [label for label, _ in prediction.top_k] and len(prediction.top_k) == 3
    assert prediction.label == prediction.top_k[0][0] and prediction.probability == prediction.top_k[0][1]
    assert sum(p for _, p in prediction.top_k) == pytest.approx(1.0, abs=1e-4)
    probs = [p for _, p in prediction.top_k]
    assert probs == sorted(probs, reverse=True)
    assert format_prediction(prediction, "a.wav", "text").count("\t") == 6


def test_cli_classify_formats(tmp_path, capsys):
    model = save_classifier(tmp_path / "m.pt")
    a, b = write_wav(tmp_path / "a.wav", 0.7), write_wav(tmp_path / "b.flac", 0.3, rate=8000, freq=900)
    assert cli.main(["classify", str(a), str(b), "--model", str(model)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    file, label, prob = lines[0].split("\t")
    assert file == str(a) and label in ("yes", "no", "up") and 0 < float(prob) <= 1

    assert cli.main(["classify", str(a), str(b), "--model", str(model), "--format", "json", "--top-k", "2"]) == 0
    objects = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["file"] for o in objects] == [str(a), str(b)]
    for o in objects:
        assert set(o) == {"file", "label", "probability", "top_k"} and len(o["top_k"]) == 2
        assert o["top_k"][0] == {"label": o["label"], "probability": o["probability"]}

    assert cli.main(["classify", str(a), "--model", str(model), "--top-k", "3"]) == 0
    assert capsys.readouterr().out.count("\t") == 6


def test_cli_classify_bad_files(tmp_path, capsys):
    model = save_classifier(tmp_path / "m.pt")
    good = write_wav(tmp_path / "good.wav", 0.5)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "junk.wav").write_text("not audio at all")
    bad = [tmp_path / "missing.wav", tmp_path / "empty.wav", tmp_path / "junk.wav", tmp_path]
    assert cli.main(["classify", *map(str, bad), str(good), "--model", str(model)]) == 1
    captured = capsys.readouterr()
    errors = captured.err.splitlines()
    assert len(errors) == len(bad) and all(line.startswith("asr: error: ") for line in errors)
    assert "Traceback" not in captured.err
    assert captured.out.startswith(str(good))  # the good file is still classified

    ctc = tmp_path / "asr.pt"
    save_ctc(ctc, tiny_encoder())
    for model_arg, match in [(ctc, "not a classifier"), (tmp_path / "nope.pt", "no such model file"),
                             (tmp_path / "junk.wav", "not a readable asr model file")]:
        assert cli.main(["classify", str(good), "--model", str(model_arg)]) == 1
        err = capsys.readouterr().err
        assert match in err and err.count("\n") == 1 and "Traceback" not in err
    assert cli.main(["classify", str(good), "--model", str(model), "--top-k", "0"]) == 1
    assert "--top-k" in capsys.readouterr().err
