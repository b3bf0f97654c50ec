import math
from dataclasses import replace

import pytest
import torch

from asr.features import FeatureConfig, FeatureExtractor, SpecAugment, SpecAugmentConfig


def test_logmel_shapes_and_per_utterance_normalisation():
    fe = FeatureExtractor(FeatureConfig(n_mels=40))
    audio = torch.randn(2, 16000)
    audio[1, 8000:] = 0
    feats, frames = fe(audio, torch.tensor([16000, 8000]))
    assert feats.shape == (2, 40, 101) and frames.tolist() == [101, 51]
    valid = feats[1, :, :51]
    assert torch.allclose(valid.mean(-1), torch.zeros(40), atol=1e-4)
    assert torch.allclose(valid.std(-1, unbiased=False), torch.ones(40), atol=1e-2)
    assert (feats[1, :, 51:] == 0).all()  # padding stays zero


def test_feature_rates_outside_the_range_are_refused():
    from asr.config import load_config
    from asr.errors import AsrError
    from asr.recipes.esc50 import ESC50Config

    with pytest.raises(ValueError, match="4000 Hz is outside 8000-48000"):
        FeatureConfig(sample_rate=4000)
    with pytest.raises(AsrError, match=r"^features: f_max: 9000 Hz is above half the sample rate \(8000 Hz\)$"):
        load_config(ESC50Config(), data={"features": {"f_max": 9000.0}})
    assert FeatureConfig(sample_rate=16000).frame_shift == 0.01
    assert FeatureConfig(sample_rate=32000, hop_length=320).frame_shift == 0.01


def test_a_model_at_32_khz_reads_its_audio_at_32_khz(tmp_path):
    """A 12 kHz whistle recorded at 44.1 kHz is above what 16 kHz audio can hold. Features
    declared at 32 kHz must see it in their top mel bands, through every path that reads
    audio for a model: the training dataset, batch inference and single-file inference."""
    import soundfile as sf

    from asr.data import ClassificationDataset
    from asr.inference import ClipClassifier, classify, predict

    t = torch.arange(44100) / 44100
    path = tmp_path / "whistle.wav"
    sf.write(str(path), (0.3 * torch.sin(2 * math.pi * 12000 * t)).numpy(), 44100)
    entries = [{"audio_filepath": str(path), "duration": 1.0, "label": "whistle"}]

    def top_share(config: FeatureConfig, audio: torch.Tensor) -> float:
        """The share of the mel energy in the bands above 10 kHz."""
        mel = FeatureExtractor(replace(config, normalize="none"))(audio[None], torch.tensor([audio.numel()]))[0][0]
        power = mel.exp().sum(-1)
        freqs = torch.linspace(0, config.sample_rate / 2, config.n_mels)  # roughly where each band lies
        return float(power[freqs > 10000].sum() / power.sum())

    high = FeatureConfig(sample_rate=32000, n_fft=1024, win_length=1024, hop_length=640, n_mels=64)
    audio = ClassificationDataset(entries, ["whistle"], sample_rate=32000)[0][0]
    assert audio.numel() == 32000 and top_share(high, audio) > 0.9
    low = ClassificationDataset(entries, ["whistle"])[0][0]  # the default 16 kHz: the whistle is gone
    assert low.numel() == 16000 and low.pow(2).mean().sqrt() < 0.01 < 0.2 < audio.pow(2).mean().sqrt()

    class TopBands(torch.nn.Module):  # "whistle" when the top quarter of the bands holds the energy
        def forward(self, feats, frames):
            top = feats[:, -16:].mean(dim=(1, 2)) - feats[:, :-16].mean(dim=(1, 2))
            return torch.stack([top, -top], dim=1).log_softmax(-1)

    model = ClipClassifier(TopBands(), FeatureExtractor(high), ["whistle", "hum"], torch.device("cpu"))
    assert predict(model, entries).argmax(-1).tolist() == [0]
    assert classify(model, path).label == "whistle"


def test_clip_normalisation_keeps_the_spectral_shape():
    """"clip" takes one mean and variance over all of an utterance's bins, so a low rumble and a
    high hiss still differ after it (per-bin normalisation makes every steady sound flat), and the
    result is the same whatever the recording level."""
    torch.manual_seed(0)
    n = 16000
    noise = torch.randn(n)
    spectrum = torch.fft.rfft(noise)
    freqs = torch.fft.rfftfreq(n, 1 / 16000)
    low = torch.fft.irfft(spectrum * (freqs < 500), n)
    high = torch.fft.irfft(spectrum * (freqs > 4000), n)
    audio, lengths = torch.stack([low, 0.01 * high]), torch.tensor([n, n])
    clip, _ = FeatureExtractor(FeatureConfig(n_mels=40, normalize="clip"))(audio, lengths)
    per_bin, _ = FeatureExtractor(FeatureConfig(n_mels=40, normalize="utterance"))(audio, lengths)
    for i in range(2):
        assert abs(float(clip[i].mean())) < 1e-4 and abs(float(clip[i].std(unbiased=False)) - 1) < 1e-2
    profile = clip.mean(-1)  # (2, 40): the average level of each band
    assert profile[0, :8].mean() - profile[0, -8:].mean() > 1.0  # the rumble: loud low bands
    assert profile[1, -8:].mean() - profile[1, :8].mean() > 1.0  # the hiss: loud high bands
    assert per_bin.mean(-1).abs().max() < 1e-4  # per bin, both profiles are flat
    louder, _ = FeatureExtractor(FeatureConfig(n_mels=40, normalize="clip"))(audio * 30, lengths)
    assert torch.allclose(louder, clip, atol=1e-3)


def test_floor_db_floors_each_utterance_below_its_own_peak():
    torch.manual_seed(0)
    t = torch.arange(16000) / 16000
    loud = torch.sin(2 * math.pi * 440 * t)  # one strong band, the rest near the log's floor
    audio = torch.stack([loud, 0.01 * loud])
    audio[1, 8400:] = 10.0  # past its last frame: must not count as the second utterance's peak
    lengths = torch.tensor([16000, 8000])
    plain, frames = FeatureExtractor(FeatureConfig(n_mels=40, normalize="none", level="none"))(audio, lengths)
    floored, _ = FeatureExtractor(FeatureConfig(n_mels=40, normalize="none", level="none", floor_db=30.0))(audio, lengths)
    drop = 30.0 * math.log(10) / 10  # 30 dB in natural-log power
    for i, n in enumerate(frames.tolist()):
        p, f = plain[i, :, :n], floored[i, :, :n]
        assert torch.allclose(f.amax(), p.amax())  # each utterance keeps its own peak
        assert torch.allclose(f.amin(), p.amax() - drop, atol=1e-5)  # and nothing lies further below it
        kept = p >= p.amax() - drop
        assert torch.equal(f[kept], p[kept]) and (f[~kept] > p[~kept]).all() and (~kept).any()
    assert (floored[1, :, frames[1]:] == 0).all()  # padding stays zero
    assert floored[0].amax() - floored[1].amax() > 3  # 40 dB apart: the floor is per utterance, not absolute


def test_f_min_leaves_out_what_lies_below_it():
    t = torch.arange(16000) / 16000
    audio = torch.stack([torch.sin(2 * math.pi * 100 * t), torch.sin(2 * math.pi * 1000 * t)])
    lengths = torch.tensor([16000, 16000])
    full, _ = FeatureExtractor(FeatureConfig(n_mels=40, normalize="none", f_max=4000.0))(audio, lengths)
    cut, _ = FeatureExtractor(FeatureConfig(n_mels=40, normalize="none", f_max=4000.0, f_min=200.0))(audio, lengths)
    full, cut = full[:, :, 5:-5], cut[:, :, 5:-5]  # frames away from the padded ends
    drop = 30.0 * math.log(10) / 10  # 30 dB in natural-log power
    assert cut[0].amax() < full[0].amax() - drop  # a 100 Hz hum: in a band of its own with f_min 0, gone with 200
    assert abs(cut[1].amax() - full[1].amax()) < 1.0  # a 1 kHz tone is in a band either way


def test_specaugment_masks_in_training_only():
    torch.manual_seed(0)
    aug = SpecAugment(SpecAugmentConfig(freq_masks=2, freq_width=10, time_masks=2, time_width=20, time_ratio=1.0))
    feats = torch.randn(4, 40, 200)
    assert torch.equal(aug.eval()(feats), feats)
    masked = aug.train()(feats)
    assert masked.shape == feats.shape
    assert (masked == 0).float().mean() > 0.02
    assert not torch.equal(masked[0] == 0, masked[1] == 0)  # masks differ per utterance
