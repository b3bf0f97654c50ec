"""CPU kernels for training: the fused bidirectional GRU recurrence and a cheaper dropout.

Both compute exactly what the PyTorch modules they stand for compute, in less time on
a CPU; ``asr.model`` uses them when training there, and PyTorch's own everywhere else.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose masks, when training on a CPU, come from 16 random bits an element.

    PyTorch's CPU ``bernoulli_`` draws one number from its generator per element, which made
    dropout the costliest operation of a ``small`` training step after the matrix products
    (7 calls, 9 to 11 % of the step). Here one 64-bit draw gives four elements their masks,
    with the keep probability rounded to a multiple of 1/65536; the generator is still
    PyTorch's, so seeding and checkpointed RNG states govern it as before."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and 0 < self.p < 1 and x.device.type == "cpu"):
            return super().forward(x)
        n = x.numel()
        bits = torch.randint(-2**63, 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64).view(torch.int16)[:n]
        keep = bits.view(x.shape) >= round(self.p * 65536) - 32768
        return x * keep * (1 / (1 - self.p))


# cuDNN copies one direction's weights (views into the bidirectional GRU's block) into a block of
# their own at each call of BiGRU._direction, and warns that it does: meant, and cheap.
warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous chunk",
                        category=UserWarning)


class BiGRURecurrence(torch.autograd.Function):
    """The recurrent half of a GRU, both directions in one loop, with a hand-written backward.

    ``gi``: (2, T, B, 3H), each direction's input projection ``x W_ih^T + b_ih``
    (time-major, gates r, z, n as in ``nn.GRU``); ``w_hh``: (2, 3H, H); ``b_hh``:
    (2, 3H). Returns the hidden states (2, T, B, H), from a zero initial state.

    On a CPU, autograd through ``nn.GRU`` records about twenty small operations per
    time step and direction, and forms the recurrent weights' gradient as one
    rank-B product per step. Here each step is a handful of operations on both
    directions at once (one batched product each way), every factor that does not
    depend on the recurrence is computed for all steps in one go, and the weight
    gradient is one product over all steps and utterances.
    """

    @staticmethod
    def forward(ctx, gi: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor:
        # Under CPU autocast the recurrence still runs in float32 (its per-step products are
        # too small to gain from bfloat16); only the weight gradient's one large product below
        # takes the autocast dtype.
        ctx.low = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
        if ctx.low is None:
            return BiGRURecurrence._forward(ctx, gi, w_hh, b_hh)
        with torch.autocast("cpu", enabled=False):
            return BiGRURecurrence._forward(ctx, gi.float(), w_hh.float(), b_hh.float())

    @staticmethod
    def _forward(ctx, gi: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor:
        d, steps, batch, h3 = gi.shape
        hid = h3 // 3
        w_t = w_hh.transpose(1, 2)
        bias = b_hh[:, None, :].expand(d, batch, h3)
        gi_rz, gi_n = gi[..., : 2 * hid].unbind(1), gi[..., 2 * hid:].unbind(1)
        h = gi.new_zeros(d, batch, hid)
        hs, rs, zs, ns, ghns = [h], [], [], [], []
        for t in range(steps):
            gh = torch.baddbmm(bias, h, w_t)
            r, z = torch.sigmoid(gi_rz[t] + gh[..., : 2 * hid]).chunk(2, dim=-1)
            ghn = gh[..., 2 * hid:]
            n = torch.tanh(torch.addcmul(gi_n[t], r, ghn))
            h = torch.lerp(n, h, z)  # (1 - z) * n + z * h
            hs.append(h)
            rs.append(r)
            zs.append(z)
            ns.append(n)
            ghns.append(ghn)
        hs = torch.stack(hs, 1)  # (2, T + 1, B, H): the state before each step, then the last
        ctx.save_for_backward(w_hh, hs, torch.stack(rs, 1), torch.stack(zs, 1), torch.stack(ns, 1),
                              torch.stack(ghns, 1))
        return hs[:, 1:]

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        with torch.autocast("cpu", enabled=False):
            return BiGRURecurrence._backward(ctx, grad_out.to(ctx.saved_tensors[1].dtype))

    @staticmethod
    def _backward(ctx, grad_out: torch.Tensor):
        w_hh, hs, r, z, n, ghn = ctx.saved_tensors
        d, steps, batch, hid = r.shape
        a_n = (1 - z) * (1 - n * n)  # d h / d (n's pre-activation)
        a_z = (hs[:, :-1] - n) * z * (1 - z)  # d h / d (z's pre-activation)
        c_r = ghn * r * (1 - r)  # d (n's pre-activation) / d (r's pre-activation)
        a_n, a_z, c_r, r, z, grad_out = (x.unbind(1) for x in (a_n, a_z, c_r, r, z, grad_out))
        dh = hs.new_zeros(d, batch, hid)
        dghs, dns = [None] * steps, [None] * steps
        for t in range(steps - 1, -1, -1):
            g = dh + grad_out[t]
            dn = g * a_n[t]
            dgh = torch.cat([dn * c_r[t], g * a_z[t], dn * r[t]], dim=-1)
            dh = torch.baddbmm(g * z[t], dgh, w_hh)
            dghs[t], dns[t] = dgh, dn
        dgh = torch.stack(dghs, 1)  # (2, T, B, 3H)
        dgi = torch.cat([dgh[..., : 2 * hid], torch.stack(dns, 1)], dim=-1)
        dgh_all, h_prev = dgh.view(d, steps * batch, 3 * hid).transpose(1, 2), hs[:, :-1].reshape(d, steps * batch, hid)
        if ctx.low is not None:
            dw = torch.bmm(dgh_all.to(ctx.low), h_prev.to(ctx.low)).float()
        else:
            dw = torch.bmm(dgh_all, h_prev)
        return dgi, dw, dgh.sum(dim=(1, 2))
