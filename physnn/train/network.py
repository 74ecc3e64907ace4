"""The physical network: blocks of (black-box device -> optional skip -> digital Linear).

Only the Linear layers are trainable. A block's device is queried once per sample; the
measured features are then reused for every inner optimisation step, which is what makes
model-free local learning cheap in device queries. Each device sits in its block as a
``physnn.nn.PhysicalLayer``, so ``net.state_dict()`` carries the devices' random
streams and accounting with the weights: it is a complete checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from typing import overload

import torch
from torch import nn

from ..core.device import Device, Domain
from ..nn import PhysicalLayer
from .flops import FlopMeter, signature


def fixed_unit_vector(n: int, gen: torch.Generator) -> torch.Tensor:
    """zeta_k: drawn once from N(0, 1) and normalised; the direction a block's goodness measures."""
    z = torch.randn(n, generator=gen, dtype=torch.float64)
    return (z / z.norm()).float()


class Block(nn.Module):
    """``device -> [concat(device output, block input)] -> Linear``."""

    zeta: torch.Tensor

    def __init__(
        self,
        device: Device,
        n_hidden: int,
        *,
        skip: bool = True,
        gen: torch.Generator,
    ):
        super().__init__()
        self.physical = PhysicalLayer(device)
        self.skip = skip
        n_feat = device.spec.n_out + (device.spec.n_in if skip else 0)
        self.linear = nn.Linear(n_feat, n_hidden)
        bound = 1.0 / math.sqrt(n_feat)
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound, generator=gen)
            self.linear.bias.uniform_(-bound, bound, generator=gen)
        self.register_buffer("zeta", fixed_unit_vector(n_hidden, gen))

    @property
    def device(self) -> Device:
        """The block's physical device (the black box its layer wraps)."""
        return self.physical.device

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Measure the device (no gradient) and append the skip connection."""
        y = self.physical(x)
        return torch.cat([y, x], dim=1) if self.skip else y

    def to_next(self, h: torch.Tensor, domain: Domain) -> torch.Tensor:
        """Map a block output into the next device's input domain (per-sample min-max)."""
        h = h.detach()
        lo, hi = h.amin(1, keepdim=True), h.amax(1, keepdim=True)
        return domain.from_unit((h - lo) / (hi - lo).clamp_min(1e-12))


class BlockList(nn.ModuleList):
    """``nn.ModuleList`` of ``Block``: the same module, typed so its items are Blocks."""

    def __init__(self, blocks: Iterable[Block]):
        super().__init__(blocks)

    @overload
    def __getitem__(self, idx: slice) -> BlockList: ...

    @overload
    def __getitem__(self, idx: int) -> Block: ...

    def __getitem__(self, idx: int | slice) -> Block | BlockList:
        item = super().__getitem__(idx)
        assert isinstance(item, Block | BlockList)
        return item

    def __iter__(self) -> Iterator[Block]:
        return iter(self._modules.values())  # type: ignore[arg-type]


def device_queries(net: PhysicalNetwork) -> int:
    """Samples sent to every device of ``net`` so far (their accounting, summed)."""
    return sum(d.accounting.samples for d in net.devices)


class PhysicalNetwork(nn.Module):
    """A stack of blocks; block k+1 sees the detached output of block k."""

    def __init__(self, blocks: Sequence[Block]):
        super().__init__()
        self.blocks = BlockList(blocks)

    @property
    def devices(self) -> list[Device]:
        """Every block's device, in order (what the ledger and the run log account)."""
        return [b.device for b in self.blocks]

    @contextmanager
    def evaluating(self, also: Iterable[Device] = ()) -> Iterator[None]:
        """Every device (and ``also``: a trainer's twins) measuring on a copy of its noise.

        What the runners wrap each evaluation in, so that when and how often a run evaluates
        never changes the noise its training draws (``Device.evaluating``).
        """
        with ExitStack() as stack:
            for d in (*self.devices, *also):
                stack.enter_context(d.evaluating())
            yield

    def forward(self, x: torch.Tensor, flops: FlopMeter | None = None) -> list[torch.Tensor]:
        """Block outputs ``h_k`` for input ``x``; digital FLOPs go to ``flops`` as ``eval``."""
        outs = []
        for k, block in enumerate(self.blocks):
            f = block.features(x)
            with flops.count("eval", ("net", k, signature(f))) if flops is not None else nullcontext():
                h = block.linear(f)
                if k + 1 < len(self.blocks):
                    x = block.to_next(h, self.blocks[k + 1].device.spec.domain)
            outs.append(h)
        return outs
