"""In-silico end-to-end backpropagation through the differentiable simulators (the upper bound).

The network is the same :class:`PhysicalNetwork` PhyLL trains, plus a digital read-out
``Linear(width of the last block -> n_classes)`` trained with cross-entropy; one Adam for all
digital parameters. Between blocks the per-sample min-max mapping into the next device's
domain is the one :meth:`Block.to_next` applies, made differentiable (a straight-through
estimator where the domain has discrete levels). No label is overlaid: the label slots keep
their neutral value, and a prediction is one pass per sample.

Real hardware cannot run this rule: it needs ``Device.forward_with_grad``. The backward pass
runs segment by segment (digital layers, then the device, then the previous digital
layers ...) so the ledger can tell the FLOPs of the trainable layers (phase ``train``) from
those of differentiating through the physics (phase ``model``). The device's forward pass
counts as a device query, not as digital FLOPs: it is what the physical system would do.
Block 0's device is never differentiated: nothing trainable lies before it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core.device import Domain
from .ledger import LedgerFlopMeter, SampledFlops
from .network import PhysicalNetwork


def to_domain(h: torch.Tensor, domain: Domain) -> torch.Tensor:
    """:meth:`Block.to_next` with gradients: per-sample min-max into ``domain``.

    Values equal ``Block.to_next``'s; on a discrete domain the snap to the levels passes the
    gradient straight through.
    """
    lo, hi = h.amin(1, keepdim=True), h.amax(1, keepdim=True)
    u = (h - lo) / (hi - lo).clamp_min(1e-12)
    cont = (domain.lo + (domain.hi - domain.lo) * u).clamp(domain.lo, domain.hi)
    if domain.levels is None:
        return cont
    return cont + (domain.from_unit(u.detach()) - cont).detach()


MODEL_FLOP_SAMPLE_EVERY = 10
"""Differentiating through a device model: FLOPs counted exactly on every 10th call per block
and direction, per sample in between (see :class:`physnn.train.ledger.SampledFlops`)."""


@dataclass
class EndToEndSettings:
    n_classes: int
    lr: float = 1e-3
    batch_size: int = 64
    """0 = full batch (one update per epoch: rarely enough for an end-to-end rule)."""


class Backprop:
    """End-to-end cross-entropy training through ``forward_with_grad`` of every device."""

    name = "backprop"

    def __init__(self, net: PhysicalNetwork, settings: EndToEndSettings, gen: torch.Generator):
        self._check_devices(net)
        self.net = net
        self.s = settings
        self.gen = gen
        self.flops = LedgerFlopMeter()
        self.model_flops = SampledFlops(self.flops, "model", MODEL_FLOP_SAMPLE_EVERY)
        width = net.blocks[-1].linear.out_features
        self.readout = nn.Linear(width, settings.n_classes)
        bound = 1.0 / math.sqrt(width)
        with torch.no_grad():
            self.readout.weight.uniform_(-bound, bound, generator=gen)
            self.readout.bias.uniform_(-bound, bound, generator=gen)
        self.readout.to(net.blocks[-1].linear.weight.device)
        params = [p for m in self.digital_modules() for p in m.parameters()]
        self.optimizer = torch.optim.Adam(params, lr=settings.lr)

    def _check_devices(self, net: PhysicalNetwork) -> None:
        """Every device after the first is differentiated through: it needs a gradient."""
        for k, b in enumerate(net.blocks[1:], start=1):
            if not b.device.differentiable:
                raise ValueError(
                    f"method {self.name!r} needs differentiable devices; block {k}'s "
                    f"{b.device.spec.name} is a black box (use phyll or ff, or pat with a twin)"
                )

    # -- state ---------------------------------------------------------------------------------
    def digital_modules(self) -> list[nn.Module]:
        return [b.linear for b in self.net.blocks] + [self.readout]

    def state_dict(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "readout": self.readout.state_dict(),
            "gen": self.gen.get_state(),
            "flops": self.flops.state_dict(),
            "model_flops": self.model_flops.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.readout.load_state_dict(state["readout"])
        self.gen.set_state(state["gen"])
        self.flops.load_state_dict(state["flops"])
        self.model_flops.load_state_dict(state.get("model_flops", {}))

    # -- the device segment: what PAT changes ----------------------------------------------------
    def device_forward(self, k: int, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(measured output, differentiable output whose backward is the device's gradient)."""
        y = self.net.blocks[k].device.forward_with_grad(z)
        return y.detach(), y

    # -- training ------------------------------------------------------------------------------
    def train_epoch(self, x: torch.Tensor, y: torch.Tensor) -> list[float]:
        """One pass in shuffled mini-batches; returns ``[mean cross-entropy]``."""
        n = x.shape[0]
        order = torch.randperm(n, generator=self.gen)
        bs = n if self.s.batch_size <= 0 else self.s.batch_size
        total = 0.0
        for start in range(0, n, bs):
            idx = order[start : start + bs].to(y.device)
            total += self.train_batch(x[idx], y[idx]) * idx.numel()
        return [total / n]

    def train_batch(self, xb: torch.Tensor, yb: torch.Tensor) -> float:
        blocks, flops = self.net.blocks, self.flops
        self.optimizer.zero_grad(set_to_none=True)
        segments = []  # (block input leaf, measurement leaf, device graph, block output)
        z = xb
        for k, block in enumerate(blocks):
            if k == 0:
                z_in, meas, graph = z, block.device(z), None
            else:
                z_in = z.detach().requires_grad_()
                meas, graph = self.device_forward(k, z_in)
            m = meas.detach().requires_grad_(graph is not None)
            with flops.count("train"):
                f = torch.cat([m, z_in], dim=1) if block.skip else m
                h = block.linear(f)
                if k + 1 < len(blocks):
                    out = to_domain(h, blocks[k + 1].device.spec.domain)
                else:
                    out = F.cross_entropy(self.readout(h), yb)
            segments.append((z_in, m, graph, out))
            z = out
        loss = z
        with flops.count("train"):
            loss.backward()
        for k in range(len(blocks) - 1, 0, -1):
            z_in, m, graph, _ = segments[k]
            if graph is not None:
                with self.model_flops.count(f"block{k}:backward", m.shape[0]):
                    graph.backward(m.grad)
            with flops.count("train"):
                segments[k - 1][3].backward(z_in.grad)
        with flops.count("train"):
            self.optimizer.step()
        return float(loss.detach())

    # -- inference -----------------------------------------------------------------------------
    @torch.no_grad()
    def logits(self, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """Class scores, ``[N, n_classes]``: one device query per sample per block."""
        blocks, parts = self.net.blocks, []
        for start in range(0, x.shape[0], batch_size):
            z = x[start : start + batch_size]
            for k, block in enumerate(blocks):
                f = block.features(z)
                with self.flops.count("eval"):
                    h = block.linear(f)
                    z = to_domain(h, blocks[k + 1].device.spec.domain) if k + 1 < len(blocks) \
                        else self.readout(h)
            parts.append(z)
        return torch.cat(parts)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).argmax(1)
