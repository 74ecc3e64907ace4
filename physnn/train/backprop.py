"""In-silico end-to-end backpropagation through the differentiable simulators (the upper bound).

The network is the same ``PhysicalNetwork`` PhyLL trains, plus a digital read-out
``Linear(width of the last block -> n_classes)`` trained with cross-entropy; one Adam for all
digital parameters. Between blocks the per-sample min-max mapping into the next device's
domain is the one ``Block.to_next`` applies, made differentiable (a straight-through
estimator where the domain has discrete levels). No label is overlaid: the label slots keep
their neutral value, and a prediction is one pass per sample.

Real hardware cannot run this rule: it needs ``Device.forward_with_grad``. Each device joins
the graph through ``physnn.nn.physics_aware`` with itself as the twin, so one
``loss.backward()`` runs the whole backward pass, and the ledger still tells the FLOPs of the
trainable layers (phase ``train``) from those of differentiating through the physics (phase
``model``): the device's backward pass is charged to ``model`` and hidden from ``train``. The
device's forward pass counts as a device query, not as digital FLOPs: it is what the
physical system would do. Block 0's device is differentiated only with ``train_device``:
otherwise nothing trainable lies before it.

``train_device`` (wavetorch's experiment, Hughes et al., Sci. Adv. 2019): every block's
device's own tensors (``Device.trainable_tensors``, e.g. a wave cavity's speed) join the Adam
as a second parameter group with the step size ``device_lr`` (in their units); the same
``loss.backward()`` fills their gradients (the device's backward pass runs inside
``physics_aware``), and ``Device.project_trainable`` runs after each step. They travel in the
device's ``state_dict``, i.e. in the network's checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.device import Domain
from ..nn import Twin, physics_aware
from .flops import signature
from .ledger import LedgerFlopMeter, SampledFlops
from .network import PhysicalNetwork


def to_domain(h: torch.Tensor, domain: Domain) -> torch.Tensor:
    """``Block.to_next`` with gradients: per-sample min-max into ``domain``.

    Values equal ``Block.to_next``'s; on a discrete domain the snap to the levels passes the
    gradient straight through.
    """
    lo, hi = h.amin(1, keepdim=True), h.amax(1, keepdim=True)
    u = (h - lo) / (hi - lo).clamp_min(1e-12)
    cont = (domain.lo + (domain.hi - domain.lo) * u).clamp(domain.lo, domain.hi)
    if domain.levels is None:
        return cont
    return cont + (domain.from_unit(u.detach()) - cont).detach()


MODEL_FLOP_SAMPLE_EVERY: int | None = None
"""Differentiating through a device model: FLOPs counted exactly once per block, direction
and batch size, and charged the same afterwards (see ``physnn.train.ledger.SampledFlops``;
a simulator's op sequence is fixed by the batch size up to small data-dependent parts)."""


@dataclass
class EndToEndSettings:
    """What the end-to-end rules (backprop, PAT) need beyond the network."""

    n_classes: int
    lr: float = 1e-3
    batch_size: int = 64
    """0 = full batch (one update per epoch: rarely enough for an end-to-end rule)."""
    train_device: bool = False
    """Also train every block's device's own tensors (``Device.trainable_tensors``: a wave
    cavity's wave speed, as wavetorch does), in the same backward pass."""
    device_lr: float = 1.0
    """Adam's step size for the device's tensors, in their own units (m/s for a speed)."""


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
        groups: list[dict[str, Any]] = [{"params": params}]
        self.device_tensors = self._device_tensors(net) if settings.train_device else []
        if self.device_tensors:
            groups.append({"params": self.device_tensors, "lr": settings.device_lr})
        self.optimizer = torch.optim.Adam(groups, lr=settings.lr)

    def _check_devices(self, net: PhysicalNetwork) -> None:
        """Every device after the first is differentiated through: it needs a gradient."""
        for k, b in enumerate(net.blocks[1:], start=1):
            if not b.device.differentiable:
                raise ValueError(
                    f"method {self.name!r} needs differentiable devices; block {k}'s "
                    f"{b.device.spec.name} is a black box (use phyll or ff, or pat with a twin)"
                )

    def _device_tensors(self, net: PhysicalNetwork) -> list[torch.Tensor]:
        """Every block's device's trainable tensors (``train_device``); a device without any
        is refused in one line."""
        out: list[torch.Tensor] = []
        for k, b in enumerate(net.blocks):
            own = b.device.trainable_tensors()
            if not own or not b.device.differentiable:
                raise ValueError(
                    f"train.train_device = true: block {k}'s device {b.device.spec.name} has no "
                    "trainable tensors (Device.trainable_tensors; sim:acoustic-wave's wave_speed "
                    "in a design region is one); set train.train_device = false"
                )
            out += own
        return out

    # -- state ---------------------------------------------------------------------------------
    def digital_modules(self) -> list[nn.Module]:
        """The blocks' Linears and the read-out: everything this rule trains."""
        return [*(b.linear for b in self.net.blocks), self.readout]

    def state_dict(self) -> dict[str, Any]:
        """Optimizer, read-out, shuffling stream and FLOP counts: a resume is bit-exact."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "readout": self.readout.state_dict(),
            "gen": self.gen.get_state(),
            "flops": self.flops.state_dict(),
            "model_flops": self.model_flops.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` saved."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.readout.load_state_dict(state["readout"])
        self.gen.set_state(state["gen"])
        self.flops.load_state_dict(state["flops"])
        self.model_flops.load_state_dict(state.get("model_flops", {}))

    # -- the device's gradient: what PAT changes -------------------------------------------------
    def twin(self, k: int) -> Twin:
        """Where block ``k``'s gradient comes from: the device itself (in silico)."""
        return self.net.blocks[k].device

    def measure(self, k: int, z: torch.Tensor) -> torch.Tensor:
        """Block ``k``'s device output, differentiable through its twin (block 0: a plain
        query, since nothing trainable lies before it)."""
        block = self.net.blocks[k]
        if k == 0 and not self.device_tensors:
            return block.physical(z)
        if k == 0:  # the device's own tensors need its backward pass (the input's is unused)
            z = z.detach().requires_grad_()
        return physics_aware(z, block.device, self.twin(k), flops=self.model_flops, name=f"block{k}")

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
        """One Adam step on the cross-entropy of a batch; returns the loss."""
        blocks, flops = self.net.blocks, self.flops
        self.optimizer.zero_grad(set_to_none=True)
        z = xb
        for k, block in enumerate(blocks):
            m = self.measure(k, z)  # a device query; its FLOPs are not the trainable layers'
            with flops.count("train", ("forward", k, signature(m, z))):
                f = torch.cat([m, z], dim=1) if block.skip else m
                h = block.linear(f)
                if k + 1 < len(blocks):
                    z = to_domain(h, blocks[k + 1].device.spec.domain)
                else:
                    z = F.cross_entropy(self.readout(h), yb)
        with flops.count("train", ("backward", signature(xb))):  # the graph is fixed by then
            z.backward()  # the devices' backward passes go to model_flops, not to "train"
            self.optimizer.step()
        for block in blocks if self.device_tensors else []:
            block.device.project_trainable()
        return float(z.detach())

    # -- inference -----------------------------------------------------------------------------
    @torch.no_grad()
    def logits(self, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """Class scores, ``[N, n_classes]``: one device query per sample per block."""
        blocks, parts = self.net.blocks, []
        for start in range(0, x.shape[0], batch_size):
            z = x[start : start + batch_size]
            for k, block in enumerate(blocks):
                f = block.features(z)
                with self.flops.count("eval", ("scores", k, signature(f))):
                    h = block.linear(f)
                    z = to_domain(h, blocks[k + 1].device.spec.domain) if k + 1 < len(blocks) \
                        else self.readout(h)
            parts.append(z)
        return torch.cat(parts)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The class with the highest score, per sample."""
        return self.logits(x).argmax(1)
