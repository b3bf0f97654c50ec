"""Corpus-layout readers: each turns a corpus as distributed into manifest entries.

LibriSpeech (``speaker/chapter/*.flac`` + ``*.trans.txt``), LJ Speech (``metadata.csv``
+ ``wavs/``), CMU AN4 (SPHERE or raw big-endian), folder-per-label corpora such as
Speech Commands (with its split lists and the 12-class task), ESC-50 and ESC-10 in
their own layouts, and the Free Spoken Digit Dataset. Every
entry has ``id``, ``audio_filepath`` and ``duration``, and ``text`` (speech) or
``label`` (clips), and what else the corpus tells (``speaker``, ``fold``, ...).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Iterable

import numpy as np
import soundfile as sf

from asr.audio import AUDIO_SUFFIXES
from asr.errors import AsrError
from asr.text import normalize_text


def read_librispeech(subset_dir) -> list[dict]:
    """Read ``<subset>/<speaker>/<chapter>/*.flac`` with ``*.trans.txt`` into manifest entries.

    Entries also carry ``id`` (the utterance id) and ``speaker``.
    """
    subset_dir = Path(subset_dir)
    if not subset_dir.is_dir():
        raise AsrError(f"{subset_dir}: not a LibriSpeech subset directory")
    entries = []
    for trans in sorted(subset_dir.glob("*/*/*.trans.txt")):
        with open(trans, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                utt_id, _, text = line.strip().partition(" ")
                audio = trans.parent / f"{utt_id}.flac"
                if not audio.exists():
                    raise AsrError(f"{trans}: audio for {utt_id} is missing ({audio})")
                entries.append({
                    "id": utt_id,
                    "speaker": utt_id.split("-")[0],
                    "audio_filepath": str(audio),
                    "duration": sf.info(str(audio)).duration,
                    "text": normalize_text(text),
                })
    if not entries:
        raise AsrError(f"{subset_dir}: no *.trans.txt files found in the LibriSpeech layout")
    return entries


def read_ljspeech(root, ids: Iterable[str] | None = None) -> list[dict]:
    """Read LJ Speech (``metadata.csv`` + ``wavs/``), using the normalised transcript column."""
    root = Path(root)
    meta = root / "metadata.csv"
    if not meta.exists():
        raise AsrError(f"{root}: no metadata.csv (not an LJ Speech folder)")
    wanted = None if ids is None else set(ids)
    entries = []
    with open(meta, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("|")
            if len(parts) < 3 or (wanted is not None and parts[0] not in wanted):
                continue
            audio = root / "wavs" / f"{parts[0]}.wav"
            if audio.exists():
                entries.append({"id": parts[0], "speaker": "LJ", "audio_filepath": str(audio),
                                "duration": sf.info(str(audio)).duration, "text": normalize_text(parts[2])})
    return entries


# --------------------------------------------------------------------------- classification corpora

BACKGROUND_NOISE = "_background_noise_"
UNKNOWN, SILENCE = "_unknown_", "_silence_"
# The 12-class Speech Commands task: ten words, everything else as unknown, and silence.
KWS12_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
KWS12_LABELS = (*KWS12_WORDS, UNKNOWN, SILENCE)
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _speaker_of(name: str) -> str:
    """Speech Commands names files ``<speaker>_nohash_<n>.wav``; other corpora ``<speaker>_<rest>``."""
    stem = Path(name).stem
    return stem.split("_nohash_")[0] if "_nohash_" in stem else stem.split("_")[0]


def read_label_folders(root) -> list[dict]:
    """Read a folder-per-label corpus, ``<root>/<label>/<file>.wav`` (the Speech Commands layout).

    Folders whose names start with ``_`` or ``.`` (``_background_noise_``) hold no
    labelled clips and are skipped. Entries carry ``id`` (the path under ``root``,
    with ``/``), ``label`` (the folder), ``speaker`` (the file name before
    ``_nohash_``, or before its first ``_``), ``audio_filepath`` and ``duration``.
    """
    root = Path(root)
    if not root.is_dir():
        raise AsrError(f"{root}: not a folder")
    entries = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        for audio in sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES):
            entries.append({"id": f"{folder.name}/{audio.name}", "label": folder.name,
                            "speaker": _speaker_of(audio.name), "audio_filepath": str(audio),
                            "duration": sf.info(str(audio)).duration})
    if not entries:
        raise AsrError(f"{root}: no <label>/<file>.wav clips found (expected a folder per label)")
    return entries


def background_noise_files(root) -> list[str]:
    """The recordings in ``<root>/_background_noise_`` (may be none)."""
    folder = Path(root) / BACKGROUND_NOISE
    if not folder.is_dir():
        return []
    return [str(p) for p in sorted(folder.iterdir()) if p.suffix.lower() in AUDIO_SUFFIXES]


def which_set(name: str, validation_percentage: float = 10.0, testing_percentage: float = 10.0) -> str:
    """The Speech Commands split of a file from a hash of its speaker part (as the corpus's README defines)."""
    import hashlib
    import re

    speaker = re.sub(r"_nohash_.*$", "", Path(name).name)
    max_per_class = 2 ** 27 - 1
    percentage = (int(hashlib.sha1(speaker.encode()).hexdigest(), 16) % (max_per_class + 1)) * (100.0 / max_per_class)
    if percentage < validation_percentage:
        return "validation"
    if percentage < validation_percentage + testing_percentage:
        return "testing"
    return "training"


def split_by_lists(entries: list[dict], root) -> dict[str, list[dict]]:
    """``training``/``validation``/``testing`` by ``validation_list.txt`` and ``testing_list.txt``.

    The lists name files relative to ``root`` (``yes/0a7c2a8d_nohash_0.wav``). A corpus
    without them is split by ``which_set``, the hash rule the lists were made with.
    """
    root = Path(root)
    lists = {split: root / f"{split}_list.txt" for split in ("validation", "testing")}
    if all(p.exists() for p in lists.values()):
        named = {}
        for split, path in lists.items():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    named[line.strip()] = split
        split_of = lambda e: named.get(e["id"], "training")  # noqa: E731
    elif any(p.exists() for p in lists.values()):
        raise AsrError(f"{root}: has one of validation_list.txt and testing_list.txt but not the other")
    else:
        split_of = lambda e: which_set(e["id"])  # noqa: E731
    out: dict[str, list[dict]] = {"training": [], "validation": [], "testing": []}
    for entry in entries:
        out[split_of(entry)].append(entry)
    return out


def silence_entries(noise_files: list[str], n: int, seconds: float = 1.0, seed: int = 0,
                    gain_range: tuple[float, float] = (0.0, 1.0)) -> list[dict]:
    """``n`` clips of the ``_silence_`` class: ``seconds``-long stretches of background noise.

    Each entry names its stretch (``offset``) and level (``gain``), drawn from ``seed``,
    so the same list reads the same audio every time.
    """
    if n and not noise_files:
        raise AsrError("the _silence_ class needs background noise recordings (_background_noise_/*.wav)")
    rng = random.Random(seed)
    lengths = {path: sf.info(path).duration for path in noise_files}
    entries = []
    for i in range(n):
        path = noise_files[i % len(noise_files)]
        offset = rng.uniform(0.0, max(0.0, lengths[path] - seconds))
        entries.append({"id": f"{SILENCE}/{Path(path).stem}-{i}", "label": SILENCE, "speaker": SILENCE,
                        "audio_filepath": path, "offset": round(offset, 4),
                        "duration": min(seconds, lengths[path]), "gain": round(rng.uniform(*gain_range), 4)})
    return entries


def to_twelve_classes(entries: list[dict], noise_files: list[str], unknown_share: float = 0.1,
                      silence_share: float = 0.1, seed: int = 0) -> list[dict]:
    """The 12-class task: the ten ``KWS12_WORDS``, other words as ``_unknown_``, and ``_silence_``.

    As in the Speech Commands baseline, unknown words and silence clips each make
    up ``unknown_share`` / ``silence_share`` of the clips of the ten words (unknown
    words are subsampled with ``seed``; silence comes from ``noise_files``).
    """
    known = [e for e in entries if e["label"] in KWS12_WORDS]
    others = [dict(e, label=UNKNOWN) for e in entries if e["label"] not in KWS12_WORDS]
    random.Random(seed).shuffle(others)
    unknown = others[: round(unknown_share * len(known))]
    silence = silence_entries(noise_files, round(silence_share * len(known)), seed=seed)
    return known + sorted(unknown, key=lambda e: e["id"]) + silence


def read_esc50(root) -> list[dict]:
    """Read ESC-50 (``meta/esc50.csv`` and ``audio/``): entries with ``label`` (the category),
    ``target`` (its number), ``fold`` (1-5, for cross-validation) and ``esc10``."""
    import csv

    root = Path(root)
    meta = root / "meta" / "esc50.csv"
    if not meta.exists():
        raise AsrError(f"{root}: no meta/esc50.csv (not an ESC-50 folder)")
    entries = []
    with open(meta, encoding="utf-8", newline="") as f:
        for number, row in enumerate(csv.DictReader(f), 2):
            try:
                audio = root / "audio" / row["filename"]
                entry = {"id": Path(row["filename"]).stem, "label": row["category"], "target": int(row["target"]),
                         "fold": int(row["fold"]), "esc10": row.get("esc10", "False") == "True",
                         "speaker": row.get("src_file", ""), "audio_filepath": str(audio)}
            except (KeyError, ValueError, TypeError):
                raise AsrError(f"{meta}:{number}: expected filename, fold, target and category columns") from None
            if not audio.exists():
                raise AsrError(f"{meta}:{number}: {audio} is missing")
            entry["duration"] = sf.info(str(audio)).duration
            entries.append(entry)
    if not entries:
        raise AsrError(f"{meta}: no clips listed")
    return entries


def read_fsdd(recordings) -> list[dict]:
    """Read the Free Spoken Digit Dataset (``{digit}_{speaker}_{index}.wav``).

    ``label`` is the digit as a word (``"seven"``, as in Speech Commands), plus
    ``speaker`` and ``index`` (upstream holds out indices 0-4 for testing).
    """
    import re

    recordings = Path(recordings)
    if not recordings.is_dir():
        raise AsrError(f"{recordings}: not a folder")
    entries = []
    for audio in sorted(recordings.glob("*.wav")):
        match = re.fullmatch(r"(\d)_([^_]+)_(\d+)", audio.stem)
        if match is None:
            raise AsrError(f"{audio}: not an FSDD file name ({{digit}}_{{speaker}}_{{index}}.wav)")
        digit, speaker, index = match.groups()
        entries.append({"id": audio.stem, "label": DIGITS[int(digit)], "speaker": speaker, "index": int(index),
                        "audio_filepath": str(audio), "duration": sf.info(str(audio)).duration})
    if not entries:
        raise AsrError(f"{recordings}: no {{digit}}_{{speaker}}_{{index}}.wav files")
    return entries


# --------------------------------------------------------------------------- CMU AN4

_AN4_LINE = re.compile(r"^\s*(?:<s>)?\s*(.*?)\s*(?:</s>)?\s*\(\s*([^()\s]+)\s*\)\s*$")
AN4_PARTS = {"train": ("an4_train.transcription", "an4_clstk"), "test": ("an4_test.transcription", "an4test_clstk")}


def read_an4_audio(path) -> tuple[np.ndarray, int]:
    """An AN4 recording as float32 samples and their rate: NIST SPHERE (``.sph``, the official
    archive) or headerless 16 kHz 16-bit big-endian PCM (``.raw``, the an4_raw.bigendian form)."""
    path = Path(path)
    try:
        if path.suffix == ".raw":
            samples, rate = sf.read(str(path), format="RAW", subtype="PCM_16", endian="BIG", samplerate=16000,
                                    channels=1, dtype="float32")
        else:
            samples, rate = sf.read(str(path), dtype="float32")
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AsrError(f"{path}: not a readable AN4 recording ({str(exc).strip().splitlines()[-1]})") from None
    if samples.ndim != 1 or len(samples) == 0:
        raise AsrError(f"{path}: not a mono recording with samples")
    return samples, rate


def read_an4(root, part: str = "train") -> list[dict]:
    """Read a part (``train`` or ``test``) of CMU AN4: ``etc/an4_<part>.transcription`` lines
    ``<s> TEXT </s> (utt)`` and the recordings ``wav/an4_clstk/<speaker>/<utt>.sph`` (the official
    archive) or ``.raw`` (the raw big-endian form); the test part's are under ``an4test_clstk``.

    Entries carry ``id``, ``speaker`` (the recording folder, e.g. ``fash``; its first letter is
    the speaker's sex), ``text`` (normalised: "P I T T S" becomes "p i t t s") and ``source``
    (the recording, which ``read_an4_audio`` reads); the recipe converts them to FLAC.
    """
    root = Path(root)
    if part not in AN4_PARTS:
        raise AsrError(f"unknown AN4 part {part!r}; choose train or test")
    name, folder = AN4_PARTS[part]
    transcription = root / "etc" / name
    if not transcription.is_file():
        raise AsrError(f"{root}: no etc/{name} (not an AN4 folder, or without its {part} part)")
    recordings = {p.stem: p for p in (root / "wav" / folder).glob("*/*") if p.suffix in (".sph", ".raw")}
    entries = []
    for number, line in enumerate(transcription.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        match = _AN4_LINE.match(line)
        if match is None:
            raise AsrError(f"{transcription}:{number}: not a '<s> TEXT </s> (utterance)' line")
        text, utt = match.groups()
        source = recordings.get(utt)
        if source is None:
            raise AsrError(f"{transcription}:{number}: no recording {utt}.sph or {utt}.raw under wav/{folder}/")
        entries.append({"id": utt, "speaker": source.parent.name, "text": normalize_text(text),
                        "source": str(source)})
    if not entries:
        raise AsrError(f"{transcription}: no utterances")
    return entries


def read_esc10(root) -> list[dict]:
    """Read ESC-10 in its own layout, ``<NNN - Class name>/<fold>-<freesound id>-<take>.ogg``: entries
    as ``read_esc50`` gives them (``label`` as ESC-50 writes it: "dog_bark"; ``target`` NNN - 1;
    ``fold`` the file name's first field; ``speaker`` the source recording)."""
    root = Path(root)
    if not root.is_dir():
        raise AsrError(f"{root}: not a folder")
    entries = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        match = re.fullmatch(r"(\d{3}) - (.+)", folder.name)
        if match is None:
            continue
        target, label = int(match.group(1)) - 1, "_".join(match.group(2).lower().split())
        for audio in sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES):
            parts = audio.stem.split("-")
            if len(parts) != 3 or not parts[0].isdigit() or not 1 <= int(parts[0]) <= 5:
                raise AsrError(f"{audio}: not an ESC-10 file name (<fold>-<freesound id>-<take>.ogg)")
            entries.append({"id": audio.stem, "label": label, "target": target, "fold": int(parts[0]), "esc10": True,
                            "speaker": parts[1], "audio_filepath": str(audio), "duration": sf.info(str(audio)).duration})
    if not entries:
        raise AsrError(f"{root}: no '<NNN - Class name>/<fold>-<id>-<take>.ogg' clips (not an ESC-10 folder)")
    return entries


def read_esc(root) -> list[dict]:
    """ESC-50 (``meta/esc50.csv``) or ESC-10 (class folders), whichever ``root`` holds."""
    return read_esc50(root) if (Path(root) / "meta" / "esc50.csv").exists() else read_esc10(root)
