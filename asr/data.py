"""Data: corpus readers, JSON-lines manifests, a bucketing batch sampler, collate.

A manifest line is ``{"audio_filepath": ..., "duration": seconds, "text": ...}``
(or ``"label"`` instead of ``"text"`` for classification; a classification
clip that is a stretch of a longer file also has ``"offset"`` and ``"gain"``).
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import soundfile as sf
import torch
from torch.utils.data import Dataset, Sampler

from asr.audio import AUDIO_SUFFIXES, load_audio
from asr.errors import AsrError
from asr.text import normalize_text


# --------------------------------------------------------------------------- manifests

def read_manifest(path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        raise AsrError(f"{path}: manifest not found")
    entries = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                entry["audio_filepath"], entry["duration"] = str(entry["audio_filepath"]), float(entry["duration"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise AsrError(f"{path}:{number}: not a manifest line (needs audio_filepath and duration)") from None
            entries.append(entry)
    return entries


def write_manifest(entries: Iterable[dict], path) -> Path:
    """Write atomically: a reader never sees half a manifest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for entry in entries:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- corpus readers

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


# --------------------------------------------------------------------------- datasets

class AudioDataset(Dataset):
    """Manifest entries and their audio, optionally cached after the first read.

    Subclasses say what goes with the audio; ``durations`` feed the batch sampler.
    ``transform`` (waveform -> waveform, e.g. ``asr.augment.WaveformAugment``) runs
    on every item that ``waveform`` returns; audio is cached before it.
    """

    def __init__(self, entries: list[dict], cache_audio: bool = False, transform=None) -> None:
        self.entries = entries
        self.cache: dict[int, torch.Tensor] | None = {} if cache_audio else None
        self.transform = transform

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def durations(self) -> list[float]:
        return [e["duration"] for e in self.entries]

    def audio(self, index: int) -> torch.Tensor:
        audio = None if self.cache is None else self.cache.get(index)
        if audio is None:
            audio = load_entry_audio(self.entries[index])
            if self.cache is not None:
                self.cache[index] = audio
        return audio

    def waveform(self, index: int) -> torch.Tensor:
        """The item's audio after ``transform``."""
        audio = self.audio(index)
        return audio if self.transform is None else self.transform(audio)


class SpeechDataset(AudioDataset):
    """Manifest entries -> (waveform (samples,), token ids (tokens,))."""

    def __init__(self, entries: list[dict], tokenizer, cache_audio: bool = False, transform=None) -> None:
        super().__init__(entries, cache_audio, transform)
        self.tokenizer = tokenizer

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        text = self.entries[index]["text"]
        return self.waveform(index), torch.tensor(self.tokenizer.encode(text), dtype=torch.long)


def load_entry_audio(entry: dict) -> torch.Tensor:
    """A manifest entry's audio (samples,) at 16 kHz: the whole file, or its ``offset``/``duration``
    stretch scaled by ``gain`` when the entry has an ``offset`` (silence clips)."""
    if "offset" not in entry:
        return load_audio(entry["audio_filepath"])
    from asr.audio import to_mono_16k

    path = entry["audio_filepath"]
    try:
        with sf.SoundFile(path) as f:
            f.seek(int(entry["offset"] * f.samplerate))
            samples = f.read(int(round(entry["duration"] * f.samplerate)), dtype="float32", always_2d=True)
            rate = f.samplerate
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AsrError(f"{path}: cannot read {entry['duration']} s at {entry['offset']} s ({exc})") from None
    return to_mono_16k(samples, rate) * float(entry.get("gain", 1.0))


class ClassificationDataset(AudioDataset):
    """Manifest entries with a ``label`` -> (waveform (samples,), label index (1,))."""

    def __init__(self, entries: list[dict], labels: list[str], transform=None, cache_audio: bool = False) -> None:
        index = {label: i for i, label in enumerate(labels)}
        unknown = sorted({e["label"] for e in entries} - set(index))
        if unknown:
            raise AsrError(f"labels not in the label set: {', '.join(unknown[:5])}")
        super().__init__(entries, cache_audio, transform)
        self.labels = list(labels)
        self.targets = [index[e["label"]] for e in entries]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.waveform(index), torch.tensor([self.targets[index]], dtype=torch.long)


@dataclass
class Batch:
    audio: torch.Tensor  # (batch, samples)
    audio_lengths: torch.Tensor  # (batch,)
    targets: torch.Tensor  # (batch, max_tokens), padded with 0
    target_lengths: torch.Tensor  # (batch,)
    indices: list[int] | None = None
    mix: torch.Tensor | None = None  # (batch,) mixup: the weight of targets[:, 0]; targets[:, 1] has the rest

    def to(self, device) -> "Batch":
        return Batch(self.audio.to(device), self.audio_lengths.to(device), self.targets.to(device),
                     self.target_lengths.to(device), self.indices, None if self.mix is None else self.mix.to(device))


def pad_sequence_1d(items: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(x) for x in items], dtype=torch.long)
    out = torch.zeros(len(items), int(lengths.max()) if len(items) else 0, dtype=items[0].dtype)
    for i, x in enumerate(items):
        out[i, : len(x)] = x
    return out, lengths


def collate(items: list[tuple[torch.Tensor, torch.Tensor]]) -> Batch:
    audio, audio_lengths = pad_sequence_1d([a for a, _ in items])
    targets, target_lengths = pad_sequence_1d([t for _, t in items])
    return Batch(audio, audio_lengths, targets, target_lengths)


# --------------------------------------------------------------------------- sampler

class BucketingBatchSampler(Sampler[list[int]]):
    """Batches of similar durations, at most ``max_frames`` padded feature frames each.

    A batch's cost is ``len(batch) * longest`` frames, padding included, so
    grouping by duration keeps padding low. Batch order is shuffled every epoch
    from ``seed + epoch``; with ``sortagrad`` the first epoch runs shortest first.
    The sampler knows its position, so training resumes mid-epoch exactly.
    """

    def __init__(self, durations: list[float], max_frames: int, frame_shift: float = 0.01,
                 seed: int = 0, shuffle: bool = True, sortagrad: bool = False,
                 max_batch_size: int | None = None) -> None:
        if not durations:
            raise AsrError("cannot batch an empty dataset")
        self.frames = [max(1, math.ceil(d / frame_shift)) for d in durations]
        if max(self.frames) > max_frames:
            raise AsrError(
                f"an utterance of {max(durations):.1f} s needs more than max_frames={max_frames}; raise it")
        self.max_frames = max_frames
        self.max_batch_size = max_batch_size
        self.seed, self.shuffle, self.sortagrad = seed, shuffle, sortagrad
        self.epoch = 0
        self.position = 0  # batches of the current epoch already handed out

    def batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed * 100_003 + epoch)
        order = list(range(len(self.frames)))
        if self.shuffle:
            rng.shuffle(order)  # ties between equal durations break differently each epoch
        order.sort(key=lambda i: self.frames[i])
        batches, current, longest = [], [], 0
        for i in order:
            longest_if_added = max(longest, self.frames[i])
            full = self.max_batch_size is not None and len(current) >= self.max_batch_size
            if current and (longest_if_added * (len(current) + 1) > self.max_frames or full):
                batches.append(current)
                current, longest_if_added = [], self.frames[i]
            current.append(i)
            longest = longest_if_added
        if current:
            batches.append(current)
        if self.shuffle and not (self.sortagrad and epoch == 0):
            rng.shuffle(batches)
        return batches

    def __len__(self) -> int:
        return len(self.batches(self.epoch))

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.batches(self.epoch)
        while self.position < len(batches):
            batch = batches[self.position]
            self.position += 1
            yield batch
        self.epoch += 1
        self.position = 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
