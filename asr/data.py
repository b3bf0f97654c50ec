"""Data: JSON-lines manifests, classification task folders, datasets, collate and a
length-bucketing batch sampler. Corpus-layout readers are in ``asr.corpora``.

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

from asr.audio import SAMPLE_RATE, load_audio, to_mono
from asr.errors import AsrError


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


# --------------------------------------------------------------------------- classification task folders

SPLITS = ("train", "dev", "test")


def write_task(exp, labels: list[str], splits: dict[str, list[dict]], noise_files: list[str] = ()) -> None:
    """Write ``<exp>/manifests/<split>.jsonl`` and ``<exp>/task.json`` (labels, noise recordings)."""
    exp = Path(exp)
    for name, entries in splits.items():
        write_manifest(entries, exp / "manifests" / f"{name}.jsonl")
    (exp / "task.json").write_text(json.dumps({"labels": list(labels), "noise_files": list(noise_files)},
                                              indent=2) + "\n")


def read_task(exp) -> tuple[list[str], dict[str, list[dict]], list[str]]:
    """(labels, {split: entries}, noise files) as ``write_task`` left them."""
    exp = Path(exp)
    if not (exp / "task.json").exists():
        raise AsrError(f"{exp}: no task.json; run the prepare stage first")
    task = json.loads((exp / "task.json").read_text())
    splits = {name: read_manifest(exp / "manifests" / f"{name}.jsonl") for name in SPLITS
              if (exp / "manifests" / f"{name}.jsonl").exists()}
    return task["labels"], splits, task.get("noise_files", [])


def describe_splits(labels: list[str], splits: dict[str, list[dict]]) -> str:
    parts = [f"{name} {len(entries)} clips ({sum(e['duration'] for e in entries) / 60:.1f} min)"
             for name, entries in splits.items()]
    return f"{len(labels)} classes; " + ", ".join(parts)


# --------------------------------------------------------------------------- datasets

@dataclass
class Unreadable:
    """What a training dataset gives for an item whose audio cannot be read: the run skips it."""

    index: int
    path: str
    reason: str


class AudioDataset(Dataset):
    """Manifest entries and their audio, optionally cached after the first read.

    Subclasses say what goes with the audio; ``durations`` feed the batch sampler.
    ``transform`` (waveform -> waveform, e.g. ``asr.augment.WaveformAugment``) runs
    on every item that ``waveform`` returns; audio is cached before it. With
    ``item_seed`` set, each item's transform draws from a generator of its own, seeded
    by (item_seed, epoch, index): the same draws whichever worker process reads it, so
    a run with DataLoader workers resumes exactly. With ``skip_unreadable`` an item
    whose file cannot be read comes back as ``Unreadable`` instead of an error.
    """

    def __init__(self, entries: list[dict], cache_audio: bool = False, transform=None,
                 sample_rate: int = SAMPLE_RATE) -> None:
        self.entries = entries
        self.sample_rate = sample_rate
        self.cache: dict[int, torch.Tensor] | None = {} if cache_audio else None
        self.transform = transform
        self.item_seed: int | None = None
        self.epoch = 0
        self.skip_unreadable = False

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def durations(self) -> list[float]:
        return [e["duration"] for e in self.entries]

    def audio(self, index: int) -> torch.Tensor:
        audio = None if self.cache is None else self.cache.get(index)
        if audio is None:
            audio = load_entry_audio(self.entries[index], self.sample_rate)
            if self.cache is not None:
                self.cache[index] = audio
        return audio

    def waveform(self, index: int) -> torch.Tensor:
        """The item's audio after ``transform``."""
        audio = self.audio(index)
        if self.transform is None:
            return audio
        if self.item_seed is None:
            return self.transform(audio)
        seed = (self.item_seed * 1_000_003 + self.epoch) * 1_000_003 + index
        return self.transform(audio, generator=torch.Generator().manual_seed(seed % 2**63))

    def item(self, index: int, target: torch.Tensor):
        """(waveform, target), or ``Unreadable`` when the file fails and ``skip_unreadable`` is set."""
        try:
            return self.waveform(index), target
        except AsrError as exc:
            if not self.skip_unreadable:
                raise
            return Unreadable(index, self.entries[index]["audio_filepath"], str(exc))


class SpeechDataset(AudioDataset):
    """Manifest entries -> (waveform (samples,), token ids (tokens,))."""

    def __init__(self, entries: list[dict], tokenizer, cache_audio: bool = False, transform=None,
                 sample_rate: int = SAMPLE_RATE) -> None:
        super().__init__(entries, cache_audio, transform, sample_rate)
        self.tokenizer = tokenizer

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | Unreadable:
        return self.item(index, torch.tensor(self.tokenizer.encode(self.entries[index]["text"]), dtype=torch.long))


def load_entry_audio(entry: dict, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """A manifest entry's audio (samples,) at ``sample_rate``: the whole file, or its ``offset``/``duration``
    stretch scaled by ``gain`` when the entry has an ``offset`` (silence clips)."""
    if "offset" not in entry:
        return load_audio(entry["audio_filepath"], sample_rate)

    path = entry["audio_filepath"]
    try:
        with sf.SoundFile(path) as f:
            f.seek(int(entry["offset"] * f.samplerate))
            samples = f.read(int(round(entry["duration"] * f.samplerate)), dtype="float32", always_2d=True)
            rate = f.samplerate
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AsrError(f"{path}: cannot read {entry['duration']} s at {entry['offset']} s ({exc})") from None
    return to_mono(samples, rate, sample_rate) * float(entry.get("gain", 1.0))


class ClassificationDataset(AudioDataset):
    """Manifest entries with a ``label`` -> (waveform (samples,), label index (1,))."""

    def __init__(self, entries: list[dict], labels: list[str], transform=None, cache_audio: bool = False,
                 sample_rate: int = SAMPLE_RATE) -> None:
        index = {label: i for i, label in enumerate(labels)}
        unknown = sorted({e["label"] for e in entries} - set(index))
        if unknown:
            raise AsrError(f"labels not in the label set: {', '.join(unknown[:5])}")
        super().__init__(entries, cache_audio, transform, sample_rate)
        self.labels = list(labels)
        self.targets = [index[e["label"]] for e in entries]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | Unreadable:
        return self.item(index, torch.tensor([self.targets[index]], dtype=torch.long))


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

    def weight(self, epoch: int, position: int) -> float:
        """Every batch is a whole one: weight 1 (``ShardedBatchSampler`` cuts batches)."""
        return 1.0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def split_batch(indices: list[int], frames: list[int], parts: int) -> list[list[int]]:
    """A batch cut into ``parts`` of near-equal audio: its items longest first, each to the part
    with the least audio so far (ties to the first part), so that the parts also differ by at
    most one item in count when lengths are equal. Deterministic."""
    out: list[list[int]] = [[] for _ in range(parts)]
    load = [0] * parts
    for i in sorted(indices, key=lambda i: (-frames[i], i)):
        k = min(range(parts), key=lambda p: (load[p], len(out[p]), p))
        out[k].append(i)
        load[k] += frames[i]
    return out


class ShardedBatchSampler(Sampler[list[int]]):
    """The batches of a ``BucketingBatchSampler`` of ``parts * accumulate`` times the audio, each cut
    into ``parts`` near-equal pieces (``split_batch``), of which this one takes piece ``part``, cut
    again into ``accumulate`` micro-batches, yielded one after the other.

    Data-parallel ranks (``parts`` = world size, ``part`` = rank) then train, step by step, on
    disjoint pieces of the very batches one process would train on with the whole budget, in
    the same order. ``weight(epoch, position)`` is a micro-batch's share of its whole batch
    (its size times ``parts`` over the whole's), by which its mean loss is scaled,
    so that the gradient averaged over ranks and summed over micro-batches is the whole batch's.
    A piece with no item gets the whole batch's first item at weight 0, so that every rank
    still takes part in every step. ``epoch`` and ``position`` count micro-batches, so resume is
    exact.
    """

    def __init__(self, whole: BucketingBatchSampler, parts: int, part: int, accumulate: int = 1) -> None:
        if not 0 <= part < parts or accumulate < 1:
            raise AsrError(f"piece {part} of {parts} (accumulating {accumulate}) does not exist")
        self.whole, self.parts, self.part, self.accumulate = whole, parts, part, accumulate
        self.epoch = 0
        self.position = 0
        self._plan: tuple[int, list[tuple[list[int], float]]] | None = None

    def plan(self, epoch: int) -> list[tuple[list[int], float]]:
        """(indices, weight) of every micro-batch of ``epoch``, in order."""
        if self._plan is None or self._plan[0] != epoch:
            out = []
            n = self.parts  # ranks' gradients are averaged, micro-batches' summed
            for batch in self.whole.batches(epoch):
                piece = split_batch(batch, self.whole.frames, self.parts)[self.part]
                for micro in split_batch(piece, self.whole.frames, self.accumulate):
                    out.append((micro, len(micro) * n / len(batch)) if micro else ([batch[0]], 0.0))
            self._plan = (epoch, out)
        return self._plan[1]

    def batches(self, epoch: int) -> list[list[int]]:
        return [indices for indices, _ in self.plan(epoch)]

    def weight(self, epoch: int, position: int) -> float:
        return self.plan(epoch)[position][1]

    def __len__(self) -> int:
        return len(self.plan(self.epoch))

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.batches(self.epoch)
        while self.position < len(batches):
            self.position += 1
            yield batches[self.position - 1]
        self.epoch += 1
        self.position = 0
