"""Data-parallel training under ``torchrun``: which process this is, and the few collectives the
trainer needs.

``torchrun --nproc_per_node N -m asr.recipes.librispeech train ...`` starts N processes with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and a rendezvous in their environment; ``World.init``
joins them into one process group (NCCL on GPUs, gloo on CPUs). Run without ``torchrun``,
the world is one process and every function here does nothing.
"""

from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from asr.errors import AsrError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def main(self) -> bool:
        """The process that writes checkpoints, model files, logs and plots."""
        return self.rank == 0

    @classmethod
    def init(cls, device: str = "auto") -> "World":
        """This process's place in the ``torchrun`` world (joining its process group once)."""
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return cls()
        local = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = device != "cpu" and torch.cuda.is_available()
        if not dist.is_initialized():
            if cuda:
                torch.cuda.set_device(local)
            try:
                dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=30),
                                        store=_store(size), rank=int(os.environ.get("RANK", "0")), world_size=size)
            except (RuntimeError, ValueError) as exc:
                raise AsrError(f"cannot join the torchrun process group: {str(exc).splitlines()[0]}") from None
        return cls(dist.get_rank(), dist.get_world_size(), local, dist.get_backend())

    def device(self, name: str) -> str:
        """The device name for this process: its own GPU under a multi-GPU world."""
        if self.size > 1 and name in ("auto", "cuda") and self.backend == "nccl":
            return f"cuda:{self.local_rank}"
        return name

    def broadcast(self, obj):
        """Rank 0's ``obj``, on every rank."""
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        if self.size == 1:
            return [obj]
        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def mean(self, value: float) -> float:
        """The mean of every rank's ``value`` (gloo reduces on the CPU, NCCL on this rank's GPU)."""
        if self.size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device="cuda" if self.backend == "nccl" else "cpu")
        dist.all_reduce(t)
        return float(t) / self.size

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def _store(size: int):
    """torchrun's rendezvous store, under a prefix of its own for every restart: the workers that
    ``--max-restarts`` starts again would otherwise find the dead ones' addresses in it and hang."""
    rank = int(os.environ.get("RANK", "0"))
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ.get("MASTER_PORT", "29500")),
                          size, is_master=rank == 0 and not agent, timeout=datetime.timedelta(minutes=30),
                          wait_for_workers=False)
    return dist.PrefixStore(f"asr/restart{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def leave(status: int) -> int:
    """Return ``status``, or, in a process that joined a process group, leave the group and end
    the process with ``status`` at once. The interpreter's own teardown of gloo's threads aborts
    a finished worker now and then ("terminate called without an active exception"), which
    torchrun would report as a failed run."""
    if not dist.is_initialized():
        return status
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def restarted() -> bool:
    """True in a process that ``torchrun --max-restarts`` started again after a failure."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
