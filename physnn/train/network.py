"""The physical network: blocks of (black-box device -> optional skip -> digital Linear).

Only the Linear layers are trainable. A block's device is queried once per sample; the
measured features are then reused for every inner optimisation step, which is what makes
model-free local learning cheap in device queries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext

import torch
from torch import nn

from ..core.device import Device
from .flops import FlopMeter


def fixed_unit_vector(n: int, gen: torch.Generator) -> torch.Tensor:
    """zeta_k: drawn once from N(0, 1) and normalised; the direction a block's goodness measures."""
    z = torch.randn(n, generator=gen, dtype=torch.float64)
    return (z / z.norm()).float()


class Block(nn.Module):
    """``device -> [concat(device output, block input)] -> Linear``."""

    def __init__(
        self,
        device: Device,
        n_hidden: int,
        *,
        skip: bool = True,
        gen: torch.Generator,
    ):
        super().__init__()
        self.device = device
        self.skip = skip
        n_feat = device.spec.n_out + (device.spec.n_in if skip else 0)
        self.linear = nn.Linear(n_feat, n_hidden)
        bound = 1.0 / math.sqrt(n_feat)
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound, generator=gen)
            self.linear.bias.uniform_(-bound, bound, generator=gen)
        self.register_buffer("zeta", fixed_unit_vector(n_hidden, gen))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Measure the device (no gradient) and append the skip connection."""
        y = self.device(x)
        return torch.cat([y, x], dim=1) if self.skip else y

    def to_next(self, h: torch.Tensor, domain) -> torch.Tensor:
        """Map a block output into the next device's input domain (per-sample min-max)."""
        h = h.detach()
        lo, hi = h.amin(1, keepdim=True), h.amax(1, keepdim=True)
        return domain.from_unit((h - lo) / (hi - lo).clamp_min(1e-12))


class PhysicalNetwork(nn.Module):
    """A stack of blocks; block k+1 sees the detached output of block k."""

    def __init__(self, blocks: Sequence[Block]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    @property
    def devices(self) -> list[Device]:
        return [b.device for b in self.blocks]

    def forward(self, x: torch.Tensor, flops: FlopMeter | None = None) -> list[torch.Tensor]:
        """Block outputs ``h_k`` for input ``x``; digital FLOPs go to ``flops`` as ``eval``."""
        outs = []
        for k, block in enumerate(self.blocks):
            f = block.features(x)
            with flops.count("eval") if flops is not None else nullcontext():
                h = block.linear(f)
                if k + 1 < len(self.blocks):
                    x = block.to_next(h, self.blocks[k + 1].device.spec.domain)
            outs.append(h)
        return outs

    def state_dict_full(self) -> dict:
        """Parameters plus every device's mutable state (random streams, accounting)."""
        return {"params": self.state_dict(), "devices": [d.state_dict() for d in self.devices]}

    def load_state_dict_full(self, state: dict) -> None:
        self.load_state_dict(state["params"])
        for d, s in zip(self.devices, state["devices"], strict=True):
            d.load_state_dict(s)
