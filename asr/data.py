"""Data: corpus readers, JSON-lines manifests, a bucketing batch sampler, collate.

A manifest line is ``{"audio_filepath": ..., "duration": seconds, "text": ...}``
(or ``"label"`` instead of ``"text"`` for classification).
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

from asr.audio import load_audio
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


# --------------------------------------------------------------------------- datasets

class SpeechDataset(Dataset):
    """Manifest entries -> (waveform (samples,), token ids (tokens,))."""

    def __init__(self, entries: list[dict], tokenizer, cache_audio: bool = False) -> None:
        self.entries = entries
        self.tokenizer = tokenizer
        self.cache: dict[int, torch.Tensor] | None = {} if cache_audio else None

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def durations(self) -> list[float]:
        return [e["duration"] for e in self.entries]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        entry = self.entries[index]
        audio = None if self.cache is None else self.cache.get(index)
        if audio is None:
            audio = load_audio(entry["audio_filepath"])
            if self.cache is not None:
                self.cache[index] = audio
        return audio, torch.tensor(self.tokenizer.encode(entry["text"]), dtype=torch.long)


@dataclass
class Batch:
    audio: torch.Tensor  # (batch, samples)
    audio_lengths: torch.Tensor  # (batch,)
    targets: torch.Tensor  # (batch, max_tokens), padded with 0
    target_lengths: torch.Tensor  # (batch,)
    indices: list[int] | None = None

    def to(self, device) -> "Batch":
        return Batch(self.audio.to(device), self.audio_lengths.to(device),
                     self.targets.to(device), self.target_lengths.to(device), self.indices)


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
