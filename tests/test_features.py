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


def test_specaugment_masks_in_training_only():
    torch.manual_seed(0)
    aug = SpecAugment(SpecAugmentConfig(freq_masks=2, freq_width=10, time_masks=2, time_width=20, time_ratio=1.0))
    feats = torch.randn(4, 40, 200)
    assert torch.equal(aug.eval()(feats), feats)
    masked = aug.train()(feats)
    assert masked.shape == feats.shape
    assert (masked == 0).float().mean() > 0.02
    assert not torch.equal(masked[0] == 0, masked[1] == 0)  # masks differ per utterance
