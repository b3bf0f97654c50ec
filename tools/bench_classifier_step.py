"""Classifier training-step time on this machine: the 2-D CNN's kernel layouts, or two configs, compared.

    python tools/bench_classifier_step.py [--config recipes/esc50/esc10.toml] [--baseline OTHER.toml]
                                          [--clips 32] [--seconds 5] [--steps 8]

A batch of ``--clips`` clips of ``--seconds`` of noise (as the ESC-10 demo's batches:
32 clips of 5 s) takes full training steps, ``Trainer.train_step`` as training runs
it: log-mels, SpecAugment, the config's model, cross-entropy, backward, clipping,
AdamW and the OneCycle schedule. Two trainers from the same seed take turns on the
same batch: one with ``CNN2d``'s channels-last kernels (the default), one with the
same kernels made contiguous. With ``--baseline`` the two are instead the config and
the baseline config (features, model, schedule), both with channels-last kernels, each
config on those seconds of noise at the sample rate it reads its audio at (one batch
for both when their rates agree). Each
reports its median time per step, and the last line their ratio, measured in the same process.
"""

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone, installed or not

from asr.classify import _Loss, build_classifier
from asr.config import load_config
from asr.data import Batch
from asr.device import describe, resolve_device
from asr.errors import AsrError
from asr.recipes.esc50 import ESC50Config
from asr.training import Trainer, seed_everything


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="recipes/esc50/esc10.toml", help="an ESC-50 recipe config")
    parser.add_argument("--baseline", help="another ESC-50 config to time against --config, instead of the layouts")
    parser.add_argument("--clips", type=int, default=32, help="clips per batch")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per clip")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per layout (after 2 warm-ups)")
    args = parser.parse_args()
    config = load_config(ESC50Config(), args.config)
    baseline = load_config(ESC50Config(), args.baseline) if args.baseline else config
    if args.baseline and Path(args.baseline).resolve() == Path(args.config).resolve():
        raise AsrError(f"--baseline {args.baseline} is --config itself: name another config")
    for path, c in ((args.config, config), (args.baseline, baseline)):
        if c.model.kind not in ("cnn2d", "complex_cnn"):
            raise AsrError(f"{path}: model.kind is {c.model.kind!r}; the bench times the 2-D CNN")
    device = resolve_device("cpu")
    n_classes = 10

    def make_trainer(c: ESC50Config, layout: torch.memory_format) -> Trainer:
        seed_everything(0)
        model, features = build_classifier(c.model, c.features, n_classes, verbose=False)
        model.encoder.blocks.to(memory_format=layout)
        train = replace(c.train, max_steps=2 * (args.steps + 2), time_budget_minutes=0.0)
        return Trainer(model, SimpleNamespace(durations=[1.0]), _Loss(0.0), {}, features, train, exp_dir="unused")

    if args.baseline:  # both channels-last; named by file, or by path when the file names are alike
        same = Path(args.config).name == Path(args.baseline).name
        names = (args.config, args.baseline) if same else (Path(args.config).name, Path(args.baseline).name)
        runs = {names[0]: (config, torch.channels_last), names[1]: (baseline, torch.channels_last)}
        described = list(runs)
        lead, other = names
    else:
        names = ("channels-last", "contiguous")
        runs = {names[0]: (config, torch.channels_last), names[1]: (config, torch.contiguous_format)}
        described = [names[0]]
        lead, other = "channels-last kernels", "contiguous ones"
    trainers = {name: make_trainer(c, layout) for name, (c, layout) in runs.items()}
    targets = torch.randint(0, n_classes, (args.clips, 1))

    def make_batch(rate: int) -> Batch:  # --seconds of noise at the rate a config reads its audio at
        samples = int(args.seconds * rate)
        return Batch(0.1 * torch.randn(args.clips, samples), torch.full((args.clips,), samples), targets,
                     torch.ones(args.clips, dtype=torch.long))

    by_rate = {rate: make_batch(rate) for rate in {c.features.sample_rate for c, _ in runs.values()}}
    batches = {name: by_rate[c.features.sample_rate] for name, (c, _) in runs.items()}  # one batch a rate
    print(f"machine: {describe(device)}; torch {torch.__version__}")
    for name in described:
        c, f = runs[name][0], runs[name][0].features
        frames = int(trainers[name].features.output_lengths(batches[name].audio_lengths)[0])
        convs = f", {c.model.convs_per_block} convolutions a block" if c.model.convs_per_block > 1 else ""
        print(f"{name if args.baseline else 'model'}: {c.model.kind} {list(c.model.channels)}{convs}, "
              f"{c.model.pooling} pooling, on {f.n_mels} log-mels every {1000 * f.frame_shift:g} ms of "
              f"{f.sample_rate / 1000:g} kHz audio ({frames} frames a clip)")
    print(f"batches of {args.clips} x {args.seconds:g} s; median of {args.steps} steps")
    times = {name: [] for name in trainers}
    for round_ in range(args.steps + 2):
        for name, trainer in trainers.items():
            started = time.perf_counter()
            trainer.train_step(batches[name])
            if round_ >= 2:
                times[name].append(time.perf_counter() - started)
    median = {name: statistics.median(t) for name, t in times.items()}
    for name, seconds in median.items():
        print(f"{name:>20} {seconds:.4f} s/step")
    print(f"{lead}: {median[names[1]] / median[names[0]]:.2f}x as fast as {other}")


if __name__ == "__main__":
    try:
        main()
    except AsrError as exc:
        sys.exit(f"bench_classifier_step: {exc}")
