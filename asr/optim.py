"""Optimisers and the learning-rate schedule: AdamW, Muon for hidden matrices, OneCycle.

``make_optimizer`` is the one place that maps ``TrainConfig.optimizer`` to an
optimiser. Muon orthogonalises each update with Newton-Schulz iterations, which are
matrix products, in bfloat16 (``muon_precision``). By default (``"auto"``) Muon runs only
where this machine multiplies bfloat16 fast (``asr.device.bf16_is_fast``); elsewhere the
run trains with AdamW instead, and says so: there the float32 iterations made a demo step
1.5 times as long, and at equal time AdamW ended within half a point of them
(``docs/design.md``). ``"fp32"`` keeps Muon in float32, ``"bf16"`` forces bfloat16.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from asr.device import bf16_is_fast
from asr.errors import AsrError

OPTIMIZERS = ("adamw", "muon")  # the values of TrainConfig.optimizer
NS_COEFFICIENTS = (3.4445, -4.775, 2.0315)  # Muon's quintic Newton-Schulz iteration (Jordan et al.)


def orthogonalize(update: Tensor, dtype: torch.dtype = torch.bfloat16, steps: int = 5, eps: float = 1e-7) -> Tensor:
    """The nearest (semi-)orthogonal matrix to ``update``, roughly: Muon's Newton-Schulz iteration
    (as ``torch.optim.Muon`` runs it, but in ``dtype``). update: (rows, cols) -> same shape, in ``dtype``."""
    a, b, c = NS_COEFFICIENTS
    x = update.to(dtype)
    tall = update.size(0) > update.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)  # spectral norm at most 1
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """Muon (momentum, orthogonalised) for 2-D weight matrices, ``torch.optim.Muon``'s update with
    Nesterov momentum and its ``"match_rms_adamw"`` step size (so it shares AdamW's learning rate),
    its Newton-Schulz products in ``ns_dtype``. Same state layout as ``torch.optim.Muon``."""

    def __init__(self, params, lr: float, weight_decay: float, momentum: float = 0.95,
                 ns_dtype: torch.dtype = torch.bfloat16, ns_steps: int = 5) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum})
        self.ns_dtype, self.ns_steps = ns_dtype, ns_steps

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, decay, momentum = group["lr"], group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.ndim != 2:
                    raise ValueError("Muon updates 2-D weight matrices only")
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - momentum)
                update = orthogonalize(p.grad.lerp(buf, momentum), self.ns_dtype, self.ns_steps)
                p.mul_(1 - lr * decay)
                p.add_(update, alpha=-lr * 0.2 * math.sqrt(max(p.shape)))
        return loss


class MuonAdamW(torch.optim.Optimizer):
    """Muon for the 2-D weight matrices of hidden layers, AdamW for everything else.

    Convolution kernels, norms, biases and the output layer stay with AdamW, as Muon's
    authors advise. The two optimisers share this object's param groups (group 0: Muon,
    group 1: AdamW), so one learning-rate scheduler drives both.
    """

    def __init__(self, model: torch.nn.Module, lr: float, weight_decay: float,
                 ns_dtype: torch.dtype = torch.bfloat16) -> None:
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        output = linears[-1].weight if linears else None  # the output layer (the last one registered)
        matrices, others = [], []
        for p in model.parameters():
            (matrices if p.ndim == 2 and p is not output else others).append(p)
        groups = [{"params": matrices}, {"params": others}]
        # "betas" in the defaults makes OneCycleLR cycle AdamW's beta1 (Muon ignores it), as it does for AdamW alone
        super().__init__(groups, {"lr": lr, "weight_decay": weight_decay, "betas": (0.9, 0.999)})
        self.muon = Muon([self.param_groups[0]], lr=lr, weight_decay=weight_decay, ns_dtype=ns_dtype)
        self.adamw = torch.optim.AdamW([self.param_groups[1]], lr=lr, weight_decay=weight_decay)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():  # step runs under no_grad; the closure's backward needs a graph
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
        # loading gives the inner optimisers new group dicts: share them again
        self.param_groups[:] = [self.muon.param_groups[0], self.adamw.param_groups[0]]


MUON_PRECISIONS = ("auto", "bf16", "fp32")


def make_optimizer(model: torch.nn.Module, name: str, lr: float, weight_decay: float,
                   device: torch.device | str = "cpu", muon_precision: str = "auto") -> torch.optim.Optimizer:
    """AdamW, or Muon with AdamW (``MuonAdamW``); ``muon_precision="auto"`` falls back to AdamW
    where bfloat16 is slow (the optimiser's ``fallback`` then says why)."""
    if name == "muon" and muon_precision not in MUON_PRECISIONS:
        raise AsrError(f"unknown muon_precision {muon_precision!r}; choose from {', '.join(MUON_PRECISIONS)}")
    if name == "muon" and muon_precision == "auto" and not bf16_is_fast(torch.device(device)):
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        optimizer.fallback = "instead of muon: bfloat16 is slow on this machine"
        return optimizer
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    if name == "muon":
        return MuonAdamW(model, lr, weight_decay, torch.float32 if muon_precision == "fp32" else torch.bfloat16)
    raise AsrError(f"unknown optimizer {name!r}; choose {' or '.join(OPTIMIZERS)}")


def describe_optimizer(optimizer: torch.optim.Optimizer) -> str:
    """``adamw``, ``muon (bf16 Newton-Schulz)``, ``muon (fp32 Newton-Schulz)``, or ``adamw (instead of
    muon: ...)``."""
    if isinstance(optimizer, MuonAdamW):
        return f"muon ({'bf16' if optimizer.muon.ns_dtype == torch.bfloat16 else 'fp32'} Newton-Schulz)"
    fallback = getattr(optimizer, "fallback", "")
    return type(optimizer).__name__.lower() + (f" ({fallback})" if fallback else "")


def one_cycle(optimizer: torch.optim.Optimizer, lr: float, total_steps: int, pct_start: float,
              div_factor: float, final_div_factor: float) -> torch.optim.lr_scheduler.OneCycleLR:
    """OneCycleLR, safe for very short runs (a one-step warm-up divides by zero in torch's)."""
    if math.isclose(pct_start * total_steps, 1.0):
        pct_start = (2.0 if total_steps > 2 else 0.5) / total_steps
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps, pct_start=pct_start,
                                               div_factor=div_factor, final_div_factor=final_div_factor)
