"""The machine: which device to run on, which precision, and whether bfloat16 is fast here.

CPUs differ: a bfloat16 matrix product runs about 4 times as fast as a float32 one
on a CPU with AVX-512 BF16 or AMX units, and 4 to 18 times as slow on one without
(AMD Zen 2 and 3, Intel before Cooper Lake, most laptops), where oneDNN emulates it.
So nothing here trusts a CPU flag alone: ``bf16_is_fast`` times both products once
per process, and every default that would use bfloat16 asks it first.
``ASR_CPU_BF16=fast`` or ``slow`` overrides the measurement.
"""

from __future__ import annotations

import functools
import os
import platform
import time

import torch

from asr.errors import AsrError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(name: str) -> torch.device:
    """``"auto"`` is CUDA when a GPU is visible, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AsrError("CUDA was asked for but no GPU is available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise AsrError(f"unknown device {name!r}; use auto, cpu or cuda") from None


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device``, or None for plain float32.

    ``"auto"`` is fp16 on CUDA and fp32 on a CPU (bfloat16 autocast learnt less per
    step on the demo even where it ran faster; see docs/design.md).
    """
    if precision not in PRECISIONS:
        raise AsrError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision == "auto":
        precision = "fp16" if device.type == "cuda" else "fp32"
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _best_times(fns, repeats: int) -> list[float]:
    """The best time of each function over ``repeats`` rounds, the functions taking turns within
    a round, so that a busy machine slows them alike (a warm-up call each first)."""
    for fn in fns:
        fn()  # the first call picks and builds the kernel
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            started = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - started)
    return best


@functools.cache
def bf16_speedup() -> float:
    """How many times faster a bfloat16 matrix product is than a float32 one on this CPU
    (a (320, 960) x (960, 320) product, the size of a Muon update; best of 20 each, taking
    turns, so that other work on the machine does not decide it; about 0.1 s)."""
    a = torch.randn(320, 960, generator=torch.Generator().manual_seed(0))  # the global generator is not touched
    b = a.bfloat16()
    fp32, bf16 = _best_times([lambda: a @ a.T, lambda: b @ b.T], 20)
    return fp32 / bf16


def bf16_is_fast(device: torch.device | str = "cpu") -> bool:
    """True where bfloat16 matrix products beat float32 ones: CUDA GPUs of compute capability 8
    and up, and CPUs whose measured ``bf16_speedup`` is at least 1.2."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    forced = os.environ.get("ASR_CPU_BF16", "").strip().lower()
    if forced in ("fast", "slow"):
        return forced == "fast"
    if forced:
        raise AsrError(f"ASR_CPU_BF16 must be fast or slow, got {forced!r}")
    return bf16_speedup() >= 1.2


def cpu_model() -> str:
    """The CPU's marketing name, as the kernel reports it; with its family and model numbers where
    the name alone says no generation (a virtual machine's "AMD EPYC")."""
    fields = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if not key.strip():
                    break  # the first processor's block is enough
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    if not any(c.isdigit() for c in name) and "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def describe(device: torch.device | str = "cpu") -> str:
    """One line naming the machine, for logs and result tables: the GPU, or the CPU model,
    torch's vector capability, whether bfloat16 is fast here, and the thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    bf16 = "fast" if bf16_is_fast(device) else "slow"
    return (f"{cpu_model()} ({torch.backends.cpu.get_cpu_capability()}, bfloat16 {bf16}, "
            f"{torch.get_num_threads()} threads)")


def slow_step_causes(device: torch.device, dtype: torch.dtype | None, optimizer: str) -> str:
    """The likely reasons, on this machine, for training steps far slower than a config expects.
    ``optimizer``: as ``asr.optim.describe_optimizer`` names it."""
    if device.type != "cpu":
        return "another program on the GPU, or a slower GPU than the config was timed on"
    causes = []
    if "fp32 Newton-Schulz" in optimizer:
        causes.append("Muon's orthogonalisation in float32 (muon_precision = \"fp32\")")
    if dtype == torch.bfloat16 and not bf16_is_fast(device):
        causes.append(f"bfloat16 autocast on a CPU that multiplies bfloat16 {1 / bf16_speedup():.1f} times slower "
                      f"than float32 (precision = \"fp32\" avoids it)")
    cores = os.cpu_count() or 1
    if torch.get_num_threads() < cores:
        causes.append(f"torch uses {torch.get_num_threads()} of {cores} cores (OMP_NUM_THREADS?)")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > cores + 0.5:
        causes.append(f"a busy machine (load average {load:.1f} on {cores} cores)")
    capability = torch.backends.cpu.get_cpu_capability()
    if not capability.startswith("AVX512"):
        causes.append(f"a CPU with narrower vector units ({cpu_model()}, {capability}) than the AVX-512 CPU "
                      f"the config was timed on")
    return "; ".join(causes) or f"a slower CPU than the config was timed on ({describe(device)})"
