"""The readers of the real corpora: AN4 as SPHERE files (the official archive, downloaded from a
loopback mirror) and as raw big-endian PCM (the shared data's form), the AN4 recipe's
speaker-disjoint split, ESC-10's own layout; and level independence of the features."""

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr.checkpoint import ModelFile
from asr.corpora import read_an4, read_an4_audio, read_esc, read_esc10
from asr.errors import AsrError

SPEAKERS = ["fash", "fbbh", "fclc", "mblw", "mcen", "mdxs", "mjgk"]


def tone(seconds: float, freq: float, seed: int) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(seed).standard_normal(len(t))
            ).astype(np.float32)


def an4_tree(root: Path, raw: bool, parts=("train",)) -> dict[str, np.ndarray]:
    """An AN4 folder: SPHERE (.sph) or headerless big-endian (.raw) recordings and transcriptions."""
    audio = {}
    for part in parts:
        folder, lines = ("an4_clstk" if part == "train" else "an4test_clstk"), []
        for s, speaker in enumerate(SPEAKERS if part == "train" else ["fvap", "mmxg"]):
            for n in range(2):
                utt = f"an{100 + 10 * s + n}-{speaker}-b"
                samples = tone(0.5 + 0.1 * n, 200 + 30 * s, s)
                path = root / "wav" / folder / speaker / f"{utt}.{'raw' if raw else 'sph'}"
                path.parent.mkdir(parents=True, exist_ok=True)
                if raw:
                    path.write_bytes((samples * 32767).astype(">i2").tobytes())
                else:
                    sf.write(str(path), samples, 16000, format="NIST", subtype="PCM_16")
                audio[utt] = samples
                lines.append(f"<s> ENTER {['SIX', 'P I T T S'][n]} </s> ({utt})")
        (root / "etc").mkdir(parents=True, exist_ok=True)
        (root / "etc" / f"an4_{part}.transcription").write_text("\n".join(lines) + "\n")
    return audio


@pytest.mark.parametrize("raw", [True, False])
def test_an4_reader_reads_sphere_and_raw_big_endian(tmp_path, raw):
    audio = an4_tree(tmp_path, raw)
    entries = read_an4(tmp_path)
    assert len(entries) == 14 and {e["speaker"] for e in entries} == set(SPEAKERS)
    first = entries[0]
    assert first["id"] == "an100-fash-b" and first["text"] == "enter six"
    assert entries[1]["text"] == "enter p i t t s"
    samples, rate = read_an4_audio(first["source"])
    assert rate == 16000 and np.allclose(samples, audio[first["id"]], atol=1e-4)  # byte order read right
    (tmp_path / "etc" / "an4_train.transcription").write_text("<s> YES </s> (an999-fash-b)\n")
    with pytest.raises(AsrError, match="no recording an999-fash-b"):
        read_an4(tmp_path)
    with pytest.raises(AsrError, match="without its test part"):
        read_an4(tmp_path, "test")


def test_an4_reader_on_the_shared_corpus(shared_data):
    if not (shared_data / "an4").is_dir():
        pytest.skip("the shared data has no an4/")
    entries = read_an4(shared_data / "an4")
    assert len(entries) == 948 and len({e["speaker"] for e in entries}) == 74
    samples, rate = read_an4_audio(entries[0]["source"])
    assert rate == 16000 and 0.01 < np.abs(samples).max() < 1.0  # big-endian: speech, not noise at full scale


def test_an4_download_and_prepare_split_by_speaker(server, tmp_path, capsys):
    from asr.recipes import an4

    tree = tmp_path / "src" / "an4"
    an4_tree(tree, raw=False, parts=("train", "test"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(tree, arcname="an4")
    data = buf.getvalue()
    server.serve("mirror/an4_sphere.tar.gz", data)
    (tmp_path / "sums").write_text(f"{hashlib.sha256(data).hexdigest()}  an4_sphere.tar.gz\n")
    config = tmp_path / "an4.toml"
    config.write_text(f'[download]\nmirror = "{server.base_url}/mirror"\nchecksums = "{tmp_path / "sums"}"\n'
                      f'[an4]\ndev_speakers = 2\n')
    exp = tmp_path / "exp"
    assert an4.main(["download", "--config", str(config), "--exp-dir", str(exp), "--no-progress"]) == 0
    assert an4.main(["prepare", "--config", str(config), "--exp-dir", str(exp), "--no-progress"]) == 0
    import dataclasses

    from asr.data import read_manifest

    cfg = dataclasses.replace(an4.make_config(str(config), "prepare"), exp_dir=str(exp))

    train, dev, test = (read_manifest(exp / "manifests" / f"an4-{s}.jsonl") for s in ("train", "dev", "test"))
    assert len(train) + len(dev) == 14 and len(test) == 4
    dev_speakers = {e["speaker"] for e in dev}
    assert len(dev_speakers) == 2 and not dev_speakers & {e["speaker"] for e in train}  # by speaker, never by utterance
    assert {s[0] for s in dev_speakers} == {"f", "m"}  # one of each sex
    assert all(Path(e["audio_filepath"]).suffix == ".flac" and e["duration"] > 0.4 for e in train + dev + test)
    assert an4.split_speakers(SPEAKERS, 2, 0) == an4.split_speakers(SPEAKERS, 2, 0)  # deterministic
    with pytest.raises(AsrError, match="dev_speakers must be between"):
        an4.split_speakers(SPEAKERS, 7, 0)
    assert cfg.corpus_root == exp / "data" / "an4"


def test_an4_prompts_look_like_an4(tmp_path):
    from asr.recipes.an4 import make_prompts
    from asr.text import normalize_text

    prompts = make_prompts(500, ["pittsburgh", "cindy"], seed=1)
    assert prompts == make_prompts(500, ["pittsburgh", "cindy"], seed=1)
    assert all(p and normalize_text(p) == p for p in prompts)
    assert "p i t t s b u r g h" in prompts and any(p.startswith("erase ") for p in prompts)
    assert any(len(p.split()) >= 5 and all(w in ("oh", "zero", "one", "two", "three", "four", "five", "six", "seven",
                                                  "eight", "nine") for w in p.split()) for p in prompts)


def test_quiet_recordings_give_the_same_features():
    """Some AN4 speakers record at 4 % of full scale: per-utterance normalisation makes the level
    irrelevant (the same speech at 100 % and 4 % gives the same normalised log-mels)."""
    from asr.features import FeatureConfig, FeatureExtractor

    rng = np.random.default_rng(0)
    t = np.arange(24000) / 16000
    speech = torch.tensor((np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) * 0.4
                           + 0.003 * rng.standard_normal(len(t))).astype(np.float32))
    features = FeatureExtractor(FeatureConfig(n_mels=64))
    loud, frames = features(speech[None], torch.tensor([24000]))
    quiet, _ = features(0.04 * speech[None], torch.tensor([24000]))
    assert (loud - quiet).abs().max() < 0.02
    assert (loud - quiet).abs().mean() < 2e-3
    as_recorded = FeatureExtractor(FeatureConfig(n_mels=64, level="none"))  # what models before "level" used
    assert (as_recorded(speech[None], torch.tensor([24000]))[0]
            - as_recorded(0.04 * speech[None], torch.tensor([24000]))[0]).abs().max() > 0.5  # the test can fail


def test_model_files_from_before_level_keep_their_features():
    """A model file written before the ``level`` setting existed computed its features as recorded:
    it loads with ``level = "none"``, and a new one keeps what it was written with."""
    from asr.checkpoint import ModelFile
    from asr.features import FeatureConfig
    from asr.model import ModelConfig

    data = ModelFile(task="ctc", model_config=ModelConfig(), feature_config=FeatureConfig(), weights={},
                     tokenizer={"kind": "char"}).to_data()
    assert ModelFile.from_data(data, "new").feature_config.level == "rms"
    del data["feature_config"]["level"]
    assert ModelFile.from_data(data, "old").feature_config.level == "none"


def esc10_tree(root: Path) -> None:
    for c, name in enumerate(["Dog bark", "Rain", "Sea waves"], 1):
        for fold in range(1, 6):
            path = root / f"{c:03d} - {name}" / f"{fold}-{1000 * c + fold}-A.ogg"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), tone(0.5, 200 * c, fold), 16000, format="OGG", subtype="VORBIS")


def test_esc10_reader_reads_its_own_layout(tmp_path):
    esc10_tree(tmp_path / "esc10")
    (tmp_path / "esc10" / "README.md").write_text("not a class folder")
    entries = read_esc(tmp_path / "esc10")
    assert len(entries) == 15 and entries == read_esc10(tmp_path / "esc10")
    first = entries[0]
    assert (first["label"], first["target"], first["fold"], first["speaker"]) == ("dog_bark", 0, 1, "1001")
    assert {e["label"] for e in entries} == {"dog_bark", "rain", "sea_waves"}
    bad = tmp_path / "esc10" / "001 - Dog bark" / "x.ogg"
    sf.write(str(bad), tone(0.2, 100, 0), 16000, format="OGG", subtype="VORBIS")
    with pytest.raises(AsrError, match="not an ESC-10 file name"):
        read_esc10(tmp_path / "esc10")
    with pytest.raises(AsrError, match="no '<NNN - Class name>"):
        read_esc10(tmp_path)


def test_esc10_demo_runs_the_five_folds(tmp_path, monkeypatch):
    from asr.recipes import esc50

    esc10_tree(tmp_path / "esc10")
    config = tmp_path / "esc.toml"
    config.write_text(f'exp_dir = "{tmp_path / "exp"}"\ncompare = ["cnn2d", "m5"]\n[data]\ncorpus = "{tmp_path / "esc10"}"\n'
                      '[features]\nn_mels = 32\n[model]\nkind = "cnn2d"\nchannels = [4, 8]\nconvs_per_block = 2\n'
                      '[train]\nmax_steps = 6\n'
                      'checkpoint_every = 3\ncache_audio = true\n[early_stopping]\neval_every = 3\n')
    assert esc50.main(["demo", "--config", str(config), "--no-progress"]) == 0
    cv = tmp_path / "exp" / "results" / "cv"
    assert (cv / "confusion.png").is_file() and "mean over 5 folds" in (cv / "folds.txt").read_text()
    assert ModelFile.load(tmp_path / "exp" / "fold1" / "model.pt").model_config.convs_per_block == 2
    # compare: the config's own kind keeps its two convolutions a block, M5 (which has no such blocks) runs as M5
    assert esc50.main(["compare", "--config", str(config), "--no-progress"]) == 0
    table = (cv / "compare.md").read_text()
    assert "| cnn2d |" in table and "| m5 |" in table
