"""Reading and resampling speed of ``asr.audio``: per-call filters against the cached resampler.

    python tools/bench_audio.py [--seconds 600] [--rate 44100]

Writes a long test file, then times ``iter_chunks`` over it (20 s chunks) with
torchaudio's functional resample (the filter rebuilt for every block) and with
the cached ``Resample`` transform, alternating in the same process (best of two).
"""

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from asr import audio


def run(path) -> float:
    started = time.perf_counter()
    total = sum(c.audio.numel() for c in audio.iter_chunks(path))
    assert total > 0
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--rate", type=int, default=44100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.wav"
        noise = (0.1 * np.random.default_rng(0).standard_normal(int(args.seconds * args.rate))).astype(np.float32)
        sf.write(path, noise, args.rate)
        original = audio._resampler
        per_call_resampler = lambda orig, new: (lambda x: AF.resample(x, orig, new))  # noqa: E731
        cached, per_call = [], []
        for _ in range(2):  # alternate, keep the best of two: warm file cache for both
            cached.append(run(path))
            audio._resampler = per_call_resampler
            try:
                per_call.append(run(path))
            finally:
                audio._resampler = original
        cached, per_call = min(cached), min(per_call)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    print(f"{args.seconds:.0f} s at {args.rate} Hz, read in 20 s chunks:")
    print(f"  functional resample per block: {per_call:6.2f} s ({args.seconds / per_call:7.0f}x real time)")
    print(f"  cached Resample transform:     {cached:6.2f} s ({args.seconds / cached:7.0f}x real time)")
    print(f"  speed-up: {per_call / cached:.1f}x")


if __name__ == "__main__":
    main()
