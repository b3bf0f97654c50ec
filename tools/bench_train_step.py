"""Training-step time on this machine: the BiGRU on padded batches against packed sequences.

    python tools/bench_train_step.py [--model small] [--n-mels 64] [--batch-seconds 60]
                                     [--utterance-seconds 4 8 16] [--steps 5]

For each utterance length, a batch of that many seconds of audio (random noise,
random character targets) takes full training steps: log-mels, SpecAugment, the
model, CTC loss, backward, gradient clipping and AdamW. The two BiGRU paths
(``BiGRU.pack``) alternate in the same process on the same model and batch, and
each reports its median time per step.
"""

import argparse
import platform
import statistics
import time

import torch
from torch.nn import functional as F

from asr.features import FeatureConfig, FeatureExtractor, SpecAugment, SpecAugmentConfig
from asr.model import BiGRU, CTCModel, count_parameters, named_config


def step(model, features, augment, optimizer, audio, lengths, targets, target_lengths) -> float:
    started = time.perf_counter()
    feats, frames = features(audio, lengths)
    log_probs, out_lengths = model(augment(feats), frames)
    loss = F.ctc_loss(log_probs.transpose(0, 1), targets, out_lengths, target_lengths, zero_infinity=True)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    optimizer.step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small", help="a named model config")
    parser.add_argument("--n-mels", type=int, default=64)
    parser.add_argument("--batch-seconds", type=float, default=60.0, help="audio per batch, as the demo's max_frames")
    parser.add_argument("--utterance-seconds", type=float, nargs="+", default=[4.0, 8.0, 16.0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per path and length (after 2 warm-ups)")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = CTCModel(named_config(args.model, n_mels=args.n_mels)).train()
    features = FeatureExtractor(FeatureConfig(n_mels=args.n_mels))
    augment = SpecAugment(SpecAugmentConfig(freq_width=12, time_width=20, freq_warp=0.12)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    layers = [m for m in model.modules() if isinstance(m, BiGRU)]
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads; "
          f"torch {torch.__version__}")
    print(f"model: {args.model} ({count_parameters(model):,} parameters), {args.n_mels} mels; "
          f"batches of {args.batch_seconds:g} s of audio; median of {args.steps} steps")
    print(f"{'utterances':>16} {'packed s/step':>14} {'padded s/step':>14} {'speed-up':>9}")
    for seconds in args.utterance_seconds:
        batch = max(1, round(args.batch_seconds / seconds))
        samples = int(seconds * 16000)
        lengths = torch.full((batch,), samples)
        lengths[1::2] = int(samples * 0.9)  # bucketed batches still differ a little in length
        audio = 0.1 * torch.randn(batch, samples)
        target_lengths = torch.full((batch,), int(seconds * 12))
        targets = torch.randint(1, 29, (batch, int(target_lengths[0])))
        times = {True: [], False: []}
        for round_ in range(args.steps + 2):
            for pack in (True, False):
                for layer in layers:
                    layer.pack = pack
                took = step(model, features, augment, optimizer, audio, lengths, targets, target_lengths)
                if round_ >= 2:
                    times[pack].append(took)
        packed, padded = statistics.median(times[True]), statistics.median(times[False])
        print(f"{batch:>3} x {seconds:>5.1f} s     {packed:>14.3f} {padded:>14.3f} {packed / padded:>8.2f}x")


if __name__ == "__main__":
    main()
