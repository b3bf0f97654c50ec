import math

import numpy as np
import pytest
import soundfile as sf
import torch
from torchaudio.functional import fftconvolve

from asr.augment import (AugmentConfig, WaveformAugment, change_speed, mix_at_snr, reverberate,
                         room_impulse_response, snr_db)
from asr.data import SpeechDataset
from asr.errors import AsrError
from asr.text import CharTokenizer



@pytest.mark.parametrize("target", [-5.0, 0.0, 10.0, 20.0])
def test_noise_mixing_hits_the_snr(target):
    g = torch.Generator().manual_seed(0)
    speech = torch.sin(torch.arange(16000) / 16000 * 2 * torch.pi * 300) * 0.2
    noise = torch.randn(16000, generator=g) * 0.7
    mixed = mix_at_snr(speech, noise, target)
    assert snr_db(speech, mixed - speech) == pytest.approx(target, abs=1e-3)
    assert torch.equal(mix_at_snr(torch.zeros(100), noise[:100], 0.0), torch.zeros(100))


def test_waveform_augment_shift_speed_noise():
    audio = torch.randn(16000) * 0.1
    assert change_speed(audio, 160).shape == (16000,)
    assert change_speed(audio, 176).numel() == 17600  # 160/176: slower, longer
    assert change_speed(audio, 144).numel() == 14400

    shift_only = WaveformAugment(AugmentConfig(time_shift=0.1, speed_prob=0.0, noise_prob=0.0))
    torch.manual_seed(3)
    shifted = shift_only(audio)
    assert shifted.shape == audio.shape and not torch.equal(shifted, audio)
    lag = int(torch.argmax(torch.stack([torch.dot(torch.roll(audio, k), shifted) for k in range(-1600, 1601)]))) - 1600
    assert lag != 0 and torch.allclose(shifted[1600:-1600], torch.roll(audio, lag)[1600:-1600])
    at_32k = WaveformAugment(AugmentConfig(time_shift=0.1, speed_prob=0.0, noise_prob=0.0), sample_rate=32000)
    impulse = torch.zeros(32000)
    impulse[16000] = 1.0
    lags = [abs(int(at_32k(impulse).argmax()) - 16000) for _ in range(100)]
    assert 1600 < max(lags) <= 3200  # 0.1 s is 3,200 samples at 32 kHz

    noisy = WaveformAugment(AugmentConfig(time_shift=0.0, speed_prob=0.0, noise_prob=1.0, snr_range=(5.0, 5.0),
                                          synthetic_noise=True))
    out = noisy(audio)
    assert snr_db(audio, out - audio) == pytest.approx(5.0, abs=1e-3)
    torch.manual_seed(1)
    a = noisy(audio)
    torch.manual_seed(1)
    assert torch.equal(a, noisy(audio))  # the draws come from torch's generator, which checkpoints save
    assert torch.equal(WaveformAugment(AugmentConfig(noise_prob=1.0, speed_prob=0.0, time_shift=0.0))(audio), audio)



def test_generated_noises_can_be_chosen():
    """augment.noises picks the generated noises (hiss only here: nothing added below 2.5 kHz);
    an unknown name fails when the augmenter is built, not mid-training."""
    hiss = WaveformAugment(AugmentConfig(time_shift=0.0, speed_prob=0.0, noise_prob=1.0, snr_range=(0.0, 0.0),
                                         synthetic_noise=True, noises=("hiss",)))
    assert len(hiss.noises()) == 1 and len(WaveformAugment(AugmentConfig(synthetic_noise=True)).noises()) == 5
    audio = torch.sin(torch.arange(16000) / 16000 * 2 * torch.pi * 300) * 0.2
    spectrum = torch.fft.rfft(hiss(audio) - audio).abs()
    assert spectrum[:2400].sum() < 1e-3 * spectrum.sum()
    with pytest.raises(AsrError, match="unknown noise 'rain'"):
        WaveformAugment(AugmentConfig(noises=("white_noise", "rain")))


@pytest.mark.parametrize("rt60, drr", [(0.3, 0.0), (0.6, 10.0)])
def test_room_impulse_response_decays_and_has_the_ratio(rt60, drr):
    torch.manual_seed(0)
    rir = room_impulse_response(rt60, drr)
    assert rir.numel() == int(rt60 * 16000) and rir[0] == 1.0
    tail = rir[1:]
    assert 10 * math.log10(1.0 / float(tail.pow(2).sum())) == pytest.approx(drr, abs=1e-3)
    tenth = tail.numel() // 10
    fall = 10 * math.log10(float(tail[:tenth].pow(2).mean() / tail[-tenth:].pow(2).mean()))
    assert fall == pytest.approx(0.9 * 60, abs=2.0)  # 60 dB per rt60; the two tenths are 0.9 rt60 apart


def test_reverberate_is_a_convolution_at_the_same_level():
    g = torch.Generator().manual_seed(1)
    audio = torch.randn(16000, generator=g) * 0.1
    rir = room_impulse_response(0.4, 3.0, generator=g)
    wet = reverberate(audio, rir)
    assert wet.shape == audio.shape
    reference = fftconvolve(audio, rir)[:16000]
    reference = reference * audio.pow(2).mean().sqrt() / reference.pow(2).mean().sqrt()
    assert torch.allclose(wet, reference, atol=1e-5)
    assert wet.pow(2).mean().sqrt() == pytest.approx(float(audio.pow(2).mean().sqrt()), rel=1e-4)
    impulse = torch.zeros(8000)
    impulse[100] = 1.0
    assert torch.allclose(reverberate(impulse, rir)[100:100 + rir.numel()] / reverberate(impulse, rir)[100],
                          rir[:7900], atol=1e-4)  # an impulse comes back as the room's response


def test_waveform_augment_reverberates_and_can_be_off():
    audio = torch.randn(16000) * 0.1
    assert not AugmentConfig.off().active and AugmentConfig().active
    assert torch.equal(WaveformAugment(AugmentConfig.off())(audio), audio)
    room = WaveformAugment(AugmentConfig(time_shift=0.0, speed_prob=0.0, noise_prob=0.0, reverb_prob=1.0,
                                         rt60_range=(0.5, 0.5), drr_range=(0.0, 0.0)))
    torch.manual_seed(2)
    wet = room(audio)
    torch.manual_seed(2)
    assert torch.equal(wet, room(audio))  # the same draws give the same room
    assert wet.shape == audio.shape and not torch.allclose(wet, audio, atol=1e-3)
    # at 0 dB DRR half the energy arrives late: the dry signal explains only part of the wet one
    corr = float(torch.dot(wet, audio) / (wet.norm() * audio.norm()))
    assert 0.5 < corr < 0.85


def test_speech_dataset_applies_the_transform_after_the_cache(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, (0.1 * np.random.default_rng(0).standard_normal(8000)).astype(np.float32), 16000)
    calls = []

    def louder(audio):
        calls.append(1)
        return audio * 2

    ds = SpeechDataset([{"audio_filepath": str(path), "duration": 0.5, "text": "yes"}], CharTokenizer(),
                       cache_audio=True, transform=louder)
    first, tokens = ds[0]
    again, _ = ds[0]
    assert torch.equal(first, again) and len(calls) == 2  # transformed on every read
    assert torch.allclose(first, 2 * ds.cache[0])  # the cache holds the audio as read
    assert tokens.tolist() == CharTokenizer().encode("yes")


def test_noise_from_a_folder_of_recordings(tmp_path):
    folder = tmp_path / "noise" / "sub"
    folder.mkdir(parents=True)
    t = np.arange(32000) / 16000
    sf.write(folder / "hum.flac", (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), 16000)
    (folder / "notes.txt").write_text("not audio")
    noisy = WaveformAugment(AugmentConfig(time_shift=0.0, speed_prob=0.0, noise_prob=1.0, snr_range=(5.0, 5.0),
                                          noise_dir=str(tmp_path / "noise")))
    assert noisy.noise_files == [str(folder / "hum.flac")]
    audio = torch.randn(16000) * 0.1
    added = noisy(audio) - audio
    assert snr_db(audio, added) == pytest.approx(5.0, abs=1e-3)
    spectrum = torch.fft.rfft(added).abs()
    assert int(spectrum.argmax()) == 1000  # 1 Hz bins: the recording's 1 kHz tone, not generated noise
    with pytest.raises(AsrError, match="noise folder not found"):
        WaveformAugment(AugmentConfig(noise_dir=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(AsrError, match="no noise recordings"):
        WaveformAugment(AugmentConfig(noise_dir=str(tmp_path / "empty")))
