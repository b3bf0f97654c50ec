#!/usr/bin/env python
"""Can the data loader keep training fed? Audio-seconds per second of ready batches, against what
a training step consumes, on this machine.

    python tools/bench_loader.py [--manifest exp/demo/manifests/train-synth.jsonl] [--config recipes/librispeech/demo.toml]
                                 [--model small] [--device auto] [--batches 40] [--workers 0 1 2 ...]

The loader reads manifest entries as training does (the config's batching and waveform
augmentation: noise, rooms) and collates them, with 0 (in the training process), 1, 2 and
every CPU's worth of DataLoader workers; the log-mel front end is timed apart, on the CPU
and, when there is one, on the GPU, where the trainer computes it. The training step
(forward, CTC, backward, optimiser) of the named model on the same batches gives the rate
the loader must reach. Without ``--manifest`` it makes 200 utterances of noise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", help="a training manifest (default: 200 utterances of noise made here)")
    parser.add_argument("--config", default="recipes/librispeech/demo.toml", help="batching and augmentation")
    parser.add_argument("--model", default="small", help="the named model whose training step is timed")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batches", type=int, default=40, help="batches per measurement")
    parser.add_argument("--workers", type=int, nargs="+", help="worker counts (default: 0, 1, 2 and all CPUs)")
    args = parser.parse_args(argv)

    import numpy as np
    import soundfile as sf
    import torch

    from asr.augment import WaveformAugment
    from asr.data import BucketingBatchSampler, SpeechDataset, collate, read_manifest
    from asr.device import describe, resolve_device
    from asr.errors import AsrError
    from asr.features import FeatureExtractor
    from asr.recipes.librispeech import make_config
    from asr.text import CharTokenizer
    from asr.training import SkipUnreadable

    try:
        config = make_config(args.config, "train")
        if args.manifest:
            entries = read_manifest(args.manifest)
        else:
            folder, rng = Path(tempfile.mkdtemp(prefix="bench-loader-")), np.random.default_rng(0)
            entries = []
            for i in range(200):
                n = int(rng.uniform(2, 8) * 16000)
                sf.write(folder / f"{i}.flac", (0.1 * rng.standard_normal(n)).astype(np.float32), 16000)
                entries.append({"audio_filepath": str(folder / f"{i}.flac"), "duration": n / 16000, "text": "a b"})
        device = resolve_device(args.device)
    except AsrError as exc:
        print(f"bench_loader: error: {exc}", file=sys.stderr)
        return 1
    cores = os.cpu_count() or 1
    counts = args.workers or sorted({0, 1, 2, cores})
    augment = WaveformAugment(config.augment, seed=0) if config.augment.active else None
    dataset = SpeechDataset(entries, CharTokenizer(), transform=augment)
    dataset.item_seed = 0
    sampler = BucketingBatchSampler(dataset.durations, config.train.max_frames, seed=0)
    batches = sampler.batches(1)[: args.batches]
    audio_seconds = sum(dataset.durations[i] for b in batches for i in b)
    print(f"machine: {describe(device)}; {cores} CPUs; torch {torch.__version__}")
    print(f"data: {len(entries)} utterances; {len(batches)} batches of at most {config.train.max_frames / 100:.0f} s "
          f"({audio_seconds:.0f} s of audio); augmentation: {'on' if augment else 'off'}")
    rows = []
    for workers in counts:
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=SkipUnreadable(collate),
                                             num_workers=workers, pin_memory=device.type == "cuda",
                                             prefetch_factor=4 if workers else None)
        started = time.perf_counter()
        for _ in loader:
            pass
        rows.append((f"loader, {workers} worker{'s' if workers != 1 else ''}", audio_seconds /
                     (time.perf_counter() - started)))
    devices = [torch.device("cpu")] + ([device] if device.type == "cuda" else [])
    sample = [collate([dataset[i] for i in b]) for b in batches[:8]]
    sample_seconds = sum(dataset.durations[i] for b in batches[:8] for i in b)
    for where in devices:
        features = FeatureExtractor(config.features).to(where)
        features(sample[0].audio.to(where), sample[0].audio_lengths.to(where))
        started = time.perf_counter()
        for batch in sample:
            features(batch.audio.to(where), batch.audio_lengths.to(where))
        if where.type == "cuda":
            torch.cuda.synchronize()
        rows.append((f"log-mels on {where.type}", sample_seconds / (time.perf_counter() - started)))
    step = train_step_rate(args.model, config, sample, device)
    rows.append((f"training step, {args.model} on {device.type} (what the loader must feed)", sample_seconds / step))
    width = max(len(name) for name, _ in rows)
    print(f"\n{'':<{width}}  audio s / s")
    for name, rate in rows:
        print(f"{name:<{width}}  {rate:>11.0f}")
    need = rows[-1][1]
    best = max(rate for name, rate in rows if name.startswith("loader"))
    print(f"\nthe loader's best keeps {'up' if best >= need else 'not up'}: {best:.0f} against {need:.0f} audio s / s")
    return 0


def train_step_rate(model_name: str, config, sample, device) -> float:
    """Median seconds per training step over the sample batches, summed over them."""
    import torch

    from asr.model import CTCModel, named_config
    from asr.training import TrainConfig, Trainer, ctc_loss

    class Durations:
        durations = [1.0]

    model = CTCModel(named_config(model_name, n_mels=config.features.n_mels))
    trainer = Trainer(model, Durations(), lambda out, batch: ctc_loss(*out, batch, 0), {}, config.features,
                      TrainConfig(max_steps=100, lr=1e-4, device=str(device), optimizer=config.train.optimizer,
                                  precision=config.train.precision), exp_dir="unused")
    times = []
    for batch in sample + sample[:1]:
        started = time.perf_counter()
        trainer.train_step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:]) * len(sample)


if __name__ == "__main__":
    sys.exit(main())
