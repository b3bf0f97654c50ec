"""Training-step time on this machine: the BiGRU's paths (packed, padded, fused) compared.

    python tools/bench_train_step.py [--model small] [--n-mels 64] [--batch-seconds 60]
                                     [--utterance-seconds 4 8 16] [--steps 5]
                                     [--device cuda] [--precision fp32 bf16 fp16]
                                     [--optimizer adamw muon]

For each utterance length, a batch of that many seconds of audio (random noise,
random character targets) takes full training steps, ``Trainer.train_step`` as
training runs it: log-mels, SpecAugment, the model, CTC loss, backward, gradient
clipping, the optimizer (AdamW unless ``--optimizer`` says otherwise) and the
OneCycle schedule. The BiGRU paths alternate in the same process on the same model
and batch, and each reports its median time per step: packed sequences
(``BiGRU.pack``), the padded batch through ``nn.GRU`` (the default on CUDA), and on
a CPU the padded batch through ``BiGRURecurrence`` (``BiGRU.fused``, the default
there for training). With several ``--precision`` values
(autocast: bf16, on a CPU too, or fp16 with a GradScaler on CUDA) each gets a fresh model from
the same seed, and the last column compares its faster path with the first
precision's, measured in the same process. Several ``--optimizer`` values (``adamw``,
``muon``: see ``TrainConfig.optimizer``) are compared the same way, within each precision.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone, installed or not

from asr.data import Batch
from asr.errors import AsrError
from asr.features import FeatureConfig, SpecAugmentConfig
from asr.model import BiGRU, CTCModel, count_parameters, named_config
from asr.text import CharTokenizer
from asr.device import describe, resolve_device
from asr.optim import OPTIMIZERS
from asr.training import TrainConfig, Trainer, ctc_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small", help="a named model config")
    parser.add_argument("--n-mels", type=int, default=64)
    parser.add_argument("--batch-seconds", type=float, default=60.0, help="audio per batch, as the demo's max_frames")
    parser.add_argument("--utterance-seconds", type=float, nargs="+", default=[4.0, 8.0, 16.0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per path and length (after 2 warm-ups)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16", "fp16"],
                        help="autocast dtypes to compare (bf16 on a CPU too; fp16 is meant for CUDA)")
    parser.add_argument("--optimizer", nargs="+", default=["adamw"], choices=[*OPTIMIZERS, "muon-bf16", "muon-fp32"],
                        help="optimizers to compare (TrainConfig.optimizer; muon-bf16 and muon-fp32 set its "
                             "muon_precision, which muon leaves at auto: AdamW where bfloat16 is slow)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    blank = CharTokenizer().blank

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    paths = {"packed": (True, False), "padded": (False, False)}  # name -> (BiGRU.pack, BiGRU.fused)
    if device.type == "cpu":
        paths["fused"] = (False, True)

    def make_trainer(precision: str, optimizer: str) -> tuple[Trainer, list[BiGRU]]:
        torch.manual_seed(0)
        model = CTCModel(named_config(args.model, n_mels=args.n_mels))
        config = TrainConfig(max_steps=len(paths) * (args.steps + 2) * len(args.utterance_seconds), lr=1e-4,
                             specaugment=SpecAugmentConfig(freq_width=12, time_width=20, freq_warp=0.12),
                             device=str(device), precision=precision, optimizer=optimizer.split("-")[0],
                             muon_precision=optimizer.split("-")[1] if "-" in optimizer else "auto")
        # train_step alone: no data set (the sampler needs only durations) and nothing written to the exp folder
        trainer = Trainer(model, SimpleNamespace(durations=[1.0]), lambda out, batch: ctc_loss(*out, batch, blank),
                          {}, FeatureConfig(n_mels=args.n_mels), config, exp_dir="unused")
        return trainer, [m for m in model.modules() if isinstance(m, BiGRU)]

    print(f"machine: {describe(device)}; torch {torch.__version__}")
    print(f"model: {args.model} ({count_parameters(CTCModel(named_config(args.model, n_mels=args.n_mels))):,} "
          f"parameters), {args.n_mels} mels; batches of {args.batch_seconds:g} s of audio; median of {args.steps} steps")
    print(f"{'setup':>11} {'utterances':>16} " + " ".join(f"{name + ' s/step':>14}" for name in paths)
          + f" {'padded vs packed':>17}" + (f" {'fused vs padded':>16}" if "fused" in paths else "")
          + f" {'vs ' + args.precision[0] + '/' + args.optimizer[0]:>14}")
    baseline = {}
    for precision, optimizer in [(p, o) for p in args.precision for o in args.optimizer]:
        trainer, layers = make_trainer(precision, optimizer)
        for seconds in args.utterance_seconds:
            batch = max(1, round(args.batch_seconds / seconds))
            samples = int(seconds * 16000)
            lengths = torch.full((batch,), samples)
            lengths[1::2] = int(samples * 0.9)  # bucketed batches still differ a little in length
            target_lengths = torch.full((batch,), int(seconds * 12))
            data = Batch(0.1 * torch.randn(batch, samples), lengths,
                         torch.randint(1, 29, (batch, int(target_lengths[0]))), target_lengths)
            times = {name: [] for name in paths}
            for round_ in range(args.steps + 2):
                for name, (pack, fused) in paths.items():
                    for layer in layers:
                        layer.pack, layer.fused = pack, fused
                    sync()
                    started = time.perf_counter()
                    trainer.train_step(data)
                    sync()
                    if round_ >= 2:
                        times[name].append(time.perf_counter() - started)
            median = {name: statistics.median(t) for name, t in times.items()}
            fastest = min(median.values())
            best = baseline.setdefault(seconds, fastest)
            print(f"{precision + '/' + optimizer:>11} {batch:>3} x {seconds:>5.1f} s     "
                  + " ".join(f"{median[name]:>14.4f}" for name in paths)
                  + f" {median['packed'] / median['padded']:>16.2f}x"
                  + (f" {median['padded'] / median['fused']:>15.2f}x" if "fused" in paths else "")
                  + f" {best / fastest:>13.2f}x")


if __name__ == "__main__":
    try:
        main()
    except AsrError as exc:
        sys.exit(f"bench_train_step: {exc}")
