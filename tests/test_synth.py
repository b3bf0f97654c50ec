"""Synthetic corpora: real TTS engines, written in the real layouts, read back with soundfile."""

import hashlib
import importlib.util
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr.errors import AsrError
from asr.augment import NOISE_KINDS, NOISES, make_noise
from asr.recipes.synth import make_librispeech_corpus, make_speech_commands_corpus, speaker_hash
from asr.recipes.tts import DEFAULT_ENGINES, ENGINES, VOICES, Voice, available_voices, synthesize

ROOT = Path(__file__).resolve().parents[1]
HAVE_ESPEAK = shutil.which("espeak-ng") is not None
HAVE_FLITE = shutil.which("flite") is not None
needs_espeak = pytest.mark.skipif(not HAVE_ESPEAK, reason="espeak-ng is not installed (apt-get install espeak-ng)")
needs_both = pytest.mark.skipif(not (HAVE_ESPEAK and HAVE_FLITE),
                                reason="espeak-ng and flite are not installed (apt-get install espeak-ng flite)")
HAVE_RHVOICE = shutil.which("RHVoice-test") is not None
needs_rhvoice = pytest.mark.skipif(not HAVE_RHVOICE, reason="RHVoice is not installed (Debian non-free: "
                                   "bash tools/install_system_deps.sh --non-free)")

ESPEAK = Voice("espeak-ng", "en-us+f2")
FLITE = Voice("flite", "slt")
RHVOICE = Voice("rhvoice", "bdl")
SENTENCE = "The prisoners fished for alms at the gratings, 2 of them."


def test_voice_ids_round_trip():
    assert ESPEAK.id == "espeak-ng:en-us+f2"
    assert Voice.parse("flite:slt") == FLITE
    assert all(Voice.parse(v.id) == v for v in VOICES)
    assert 16 <= len(VOICES) == len(set(VOICES))
    with pytest.raises(AsrError):
        Voice.parse("en-us")
    with pytest.raises(AsrError):
        Voice.parse("festival:kal")


@needs_both
@pytest.mark.parametrize("voice", [ESPEAK, FLITE, pytest.param(RHVOICE, marks=needs_rhvoice)], ids=str)
def test_synthesize_speaks(voice):
    audio = synthesize(SENTENCE, voice)
    assert audio.dtype == np.float32 and audio.ndim == 1
    seconds = len(audio) / 16000
    assert 2.0 < seconds < 6.0
    assert 0.2 < np.abs(audio).max() <= 1.0
    assert np.sqrt(np.mean(audio**2)) > 0.02  # speech, not a click in silence
    lead = np.abs(audio[:800]).max()  # the first 50 ms: trimmed silence
    assert lead < 0.01
    assert np.array_equal(audio, synthesize(SENTENCE, voice))  # deterministic
    fast, slow = synthesize(SENTENCE, voice, rate=1.3), synthesize(SENTENCE, voice, rate=0.8)
    assert len(fast) < len(audio) < len(slow)
    assert len(synthesize(SENTENCE, voice, sample_rate=8000)) == pytest.approx(len(audio) / 2, rel=0.02)


def _f0(audio: np.ndarray, sample_rate: int = 16000) -> float:
    """Median F0 (Hz) of the voiced 40 ms frames, by autocorrelation."""
    frame, found = int(0.04 * sample_rate), []
    for start in range(0, len(audio) - frame, frame // 2):
        x = audio[start:start + frame] - audio[start:start + frame].mean()
        if np.sqrt(np.mean(x**2)) < 0.05 * np.abs(audio).max():
            continue
        ac = np.correlate(x, x, "full")[frame - 1:]
        lo, hi = sample_rate // 400, sample_rate // 60
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.5 * ac[0]:
            found.append(sample_rate / lag)
    return float(np.median(found))


@needs_rhvoice
def test_rhvoice_pitch_follows_the_factor():
    low, high = synthesize(SENTENCE, RHVOICE, pitch=0.8), synthesize(SENTENCE, RHVOICE, pitch=1.25)
    assert _f0(high) / _f0(low) == pytest.approx(1.25 / 0.8, rel=0.15)
    assert len(high) == pytest.approx(len(low), rel=0.05)  # pitch alone leaves the timing


@needs_both
def test_catalogue_voices_are_distinct():
    assert available_voices() == tuple(v for v in VOICES if v.engine in DEFAULT_ENGINES)  # opt-in engines left out
    voices = available_voices(ENGINES)
    assert voices == tuple(v for v in VOICES if v.engine != "rhvoice" or HAVE_RHVOICE)
    with pytest.raises(AsrError, match="unknown TTS engine"):
        available_voices(["festival"])
    digests = {hashlib.sha1(synthesize("hello there", v).tobytes()).hexdigest() for v in voices}
    assert len(digests) == len(voices)  # no variant silently ignored by its engine


@needs_both
def test_synthesize_errors():
    with pytest.raises(AsrError, match="nothing to say"):
        synthesize(" -- ", ESPEAK)
    with pytest.raises(AsrError, match="no voice"):
        synthesize("hello", Voice("flite", "nosuch"))
    with pytest.raises(AsrError, match="rhvoice has no voice .nosuch.|rhvoice is not installed"):
        synthesize("hello", Voice("rhvoice", "nosuch"))
    with pytest.raises(AsrError, match="no variant"):
        synthesize("hello", Voice("espeak-ng", "en-us+nosuch"))
    with pytest.raises(AsrError, match="failed"):
        synthesize("hello", Voice("espeak-ng", "xx-nosuch"))


@needs_both
def test_librispeech_layout(tmp_path):
    subsets = {"train-clean-100": ["Hello there, world.", "It cost 5 pounds!", "Well-known facts", "--"],
               "test-clean": ["A man lay on the cold stones.", "He made all his money.", "Good night."]}
    voices = {"train-clean-100": [ESPEAK, FLITE], "test-clean": [Voice("espeak-ng", "en+m2")]}
    base = make_librispeech_corpus(tmp_path, subsets, voices, workers=2, progress=False)
    assert base == tmp_path / "LibriSpeech"

    expected = {"train-clean-100": {"HELLO THERE WORLD", "IT COST FIVE POUNDS", "WELL KNOWN FACTS"},
                "test-clean": {"A MAN LAY ON THE COLD STONES", "HE MADE ALL HIS MONEY", "GOOD NIGHT"}}
    speakers = {ESPEAK: str(100 + VOICES.index(ESPEAK)), FLITE: str(100 + VOICES.index(FLITE))}
    for subset, texts in expected.items():
        flacs = sorted((base / subset).glob("*/*/*.flac"))
        assert len(flacs) == len(texts)
        for path in (base / subset).rglob("*"):  # speaker/chapter/files and nothing else
            depth = len(path.relative_to(base / subset).parts)
            assert path.is_dir() if depth < 3 else path.suffix in (".flac", ".txt") and depth == 3
        found = {}
        for trans in (base / subset).glob("*/*/*.trans.txt"):
            speaker, chapter = trans.parent.parent.name, trans.parent.name
            assert trans.name == f"{speaker}-{chapter}.trans.txt"
            for line in trans.read_text().splitlines():
                utt, text = line.split(" ", 1)
                assert re.fullmatch(rf"{speaker}-{chapter}-\d{{4}}", utt)
                assert re.fullmatch(r"[A-Z' ]+", text)
                flac = trans.parent / f"{utt}.flac"
                info = sf.info(str(flac))
                assert (info.format, info.subtype, info.samplerate, info.channels) == ("FLAC", "PCM_16", 16000, 1)
                assert 0.5 < info.duration < 5
                found[utt] = text
        assert len(found) == len(flacs) and set(found.values()) == texts
    train_speakers = {p.name for p in (base / "train-clean-100").iterdir()}
    assert train_speakers == set(speakers.values())  # two voices, balanced: both speak
    speakers_txt = (base / "SPEAKERS.TXT").read_text()
    assert f"{speakers[FLITE]:<5}| F | train-clean-100  |" in speakers_txt
    assert "| espeak-ng:en+m2" in speakers_txt

    stamps = {p: p.stat().st_mtime_ns for p in base.rglob("*")}
    make_librispeech_corpus(tmp_path, subsets, voices, workers=2, progress=False)
    assert {p: p.stat().st_mtime_ns for p in base.rglob("*")} == stamps  # second call: nothing to do
    with pytest.raises(AsrError, match="other inputs"):
        make_librispeech_corpus(tmp_path, {"test-clean": ["Something else."]}, voices, progress=False)


@needs_both
@pytest.mark.parametrize("balance, flite_share", [("voice", 2), ("engine", 4)])
def test_librispeech_balance(tmp_path, balance, flite_share):
    espeak = [ESPEAK, Voice("espeak-ng", "en+m2"), Voice("espeak-ng", "en-us+m3")]
    sentences = [f"Sentence number {n}." for n in range(8)]
    base = make_librispeech_corpus(tmp_path, {"train": sentences}, {"train": [*espeak, FLITE]}, balance=balance,
                                   workers=2, progress=False)
    spoken = {p.name: len(list(p.glob("*/*.flac"))) for p in (base / "train").iterdir()}
    assert sum(spoken.values()) == 8
    assert spoken[str(100 + VOICES.index(FLITE))] == flite_share  # engine: half of them, for one voice
    assert all(spoken.get(str(100 + VOICES.index(v)), 0) >= 1 for v in espeak)


@needs_both
def test_librispeech_renditions(tmp_path):
    espeak = [ESPEAK, Voice("espeak-ng", "en+m2"), Voice("espeak-ng", "en-us+m3")]
    sentences = [f"Sentence number {n}." for n in range(4)]
    base = make_librispeech_corpus(tmp_path, {"train": sentences, "test": sentences[:2]},
                                   {"train": [*espeak, FLITE], "test": [ESPEAK]}, balance="engine",
                                   renditions={"train": 2}, workers=2, progress=False)
    engine = {str(100 + VOICES.index(v)): v.engine for v in [*espeak, FLITE]}
    speakers: dict[str, list[str]] = {}  # text -> the speakers who say it
    for trans in (base / "train").glob("*/*/*.trans.txt"):
        for line in trans.read_text().splitlines():
            speakers.setdefault(line.split(" ", 1)[1], []).append(trans.parent.parent.name)
    assert len(speakers) == 4 and len(list((base / "train").glob("*/*/*.flac"))) == 8
    for text, who in speakers.items():  # twice each, by one voice of each engine
        assert sorted(engine[s] for s in who) == ["espeak-ng", "flite"], text
    assert len(list((base / "test").glob("*/*/*.flac"))) == 2  # other subsets: once

    with pytest.raises(AsrError, match="3 renditions of each sentence need 2 different voices of every engine"):
        make_librispeech_corpus(tmp_path / "b", {"train": sentences}, {"train": [*espeak, FLITE]}, balance="engine",
                                renditions={"train": 3}, progress=False)
    with pytest.raises(AsrError, match="need 2 different voices$"):
        make_librispeech_corpus(tmp_path / "b", {"train": sentences}, {"train": [ESPEAK]},
                                renditions={"train": 2}, progress=False)
    with pytest.raises(AsrError, match="unknown subset"):
        make_librispeech_corpus(tmp_path / "b", {"train": sentences}, {"train": [ESPEAK]},
                                renditions={"dev": 2}, progress=False)
    with pytest.raises(AsrError, match="at least 1"):
        make_librispeech_corpus(tmp_path / "b", {"train": sentences}, {"train": [ESPEAK]},
                                renditions={"train": 0}, progress=False)


def test_librispeech_balance_is_checked(tmp_path):
    with pytest.raises(AsrError, match="balance"):
        make_librispeech_corpus(tmp_path, {"train": ["A."]}, {"train": [ESPEAK]}, balance="speaker", progress=False)


@needs_espeak
def test_speech_commands_layout(tmp_path):
    voices = [Voice("espeak-ng", n) for n in ("en-us", "en-us+f4", "en+m2", "en-029+Annie")]
    root = make_speech_commands_corpus(tmp_path, ["yes", "stop"], voices, per_voice=2,
                                       validation_voices=voices[:1], testing_voices=voices[1:2],
                                       noise_seconds=2, workers=1, progress=False)
    assert root == tmp_path
    wavs = sorted(tmp_path.glob("*/*.wav"))
    assert {p.parent.name for p in wavs} == {"yes", "stop", "_background_noise_"}
    speech = [p for p in wavs if p.parent.name != "_background_noise_"]
    assert len(speech) == 2 * 4 * 2
    for path in speech:
        assert re.fullmatch(r"[0-9a-f]{8}_nohash_[01]\.wav", path.name)
        audio, rate = sf.read(str(path))
        assert rate == 16000 and len(audio) == 16000 and sf.info(str(path)).subtype == "PCM_16"
        assert np.abs(audio).max() > 0.1
    noises = {p.stem: sf.read(str(p)) for p in (tmp_path / "_background_noise_").glob("*.wav")}
    assert set(noises) == set(NOISES)
    assert all(rate == 16000 and len(a) == 32000 for a, rate in noises.values())

    def split(name):
        rels = (tmp_path / f"{name}_list.txt").read_text().split()
        assert all((tmp_path / r).is_file() for r in rels)
        return {r.split("/")[1].split("_")[0] for r in rels}, len(rels)

    (val, n_val), (test, n_test) = split("validation"), split("testing")
    assert val == {speaker_hash(voices[0])} and test == {speaker_hash(voices[1])}
    assert n_val == n_test == 2 * 2

    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    make_speech_commands_corpus(tmp_path, ["yes", "stop"], voices, per_voice=2, validation_voices=voices[:1],
                                testing_voices=voices[1:2], noise_seconds=2, workers=1, progress=False)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == stamps


@needs_espeak
def test_speech_commands_default_splits_are_disjoint(tmp_path):
    voices = [v for v in VOICES if v.engine == "espeak-ng"][:10]
    make_speech_commands_corpus(tmp_path, ["go"], voices, per_voice=1, noise_seconds=1, workers=1,
                                progress=False)
    val = set((tmp_path / "validation_list.txt").read_text().split())
    test = set((tmp_path / "testing_list.txt").read_text().split())
    assert len(val) == len(test) == 1 and not val & test


def test_noises_are_deterministic_and_distinct():
    a = {k: make_noise(k, 1.0, seed=3) for k in NOISE_KINDS}
    assert all(np.array_equal(a[k], make_noise(k, 1.0, seed=3)) for k in NOISE_KINDS)
    assert all(len(x) == 16000 and np.abs(x).max() == pytest.approx(0.5, abs=1e-3) for x in a.values())
    spectra = {k: np.abs(np.fft.rfft(x)) for k, x in a.items()}
    low = {k: s[:500].sum() / s.sum() for k, s in spectra.items()}  # energy share below 500 Hz
    assert low["brown_noise"] > low["pink_noise"] > low["white_noise"] > low["running_tap"]
    hiss = spectra["hiss"]  # nothing below 2.5 kHz, most of it above 4 kHz
    assert hiss[:2400].sum() < 1e-3 * hiss.sum() and hiss[4000:].sum() > 0.6 * hiss.sum()
    with pytest.raises(AsrError):
        make_noise("traffic", 1.0)


def _tool():
    spec = importlib.util.spec_from_file_location("make_synthetic_corpus", ROOT / "tools" / "make_synthetic_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_one_line_errors(tmp_path, capsys):
    tool = _tool()
    assert tool.main(["speech-commands", "--words", "Yes", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: bad word 'Yes'") and err.count("\n") == 1
    text = tmp_path / "text.txt"
    text.write_text("One sentence.\n")
    assert tool.main(["librispeech", "--text", str(text), "--out", str(tmp_path), "--n-train", "5"]) == 1
    err = capsys.readouterr().err
    assert "has 1 distinct sentences, 5 asked for" in err and err.count("\n") == 1
    assert tool.main(["librispeech", "--text", str(tmp_path / "missing.txt"), "--out", str(tmp_path),
                      "--n-train", "1", "--test-voices", "bogus"]) == 1
    assert capsys.readouterr().err.startswith("error: bad voice 'bogus'")


@needs_both
def test_tool_balance(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("".join(f"Sentence number {n}.\n" for n in range(6)))
    out = tmp_path / "corpus"
    assert _tool().main(["librispeech", "--text", str(text), "--out", str(out), "--n-train", "6", "--quiet",
                         "--train-voices", "espeak-ng:en-us+f2", "espeak-ng:en+m2", "flite:slt",
                         "--balance", "engine"]) == 0
    flite = out / "LibriSpeech" / "train-clean-100" / str(100 + VOICES.index(FLITE))
    assert len(list(flite.glob("*/*.flac"))) == 3  # half of the sentences for the one flite voice
