"""Hinton's forward-forward (FF) on a physical network: the classic local rule as a baseline.

Same skeleton as PhyLL (label overlay, wrong-class negatives redrawn every epoch, one device
query per sample per block per batch, a few inner Adam steps on the cached measurement,
model-free: the devices stay black boxes); what differs is FF's own goodness and loss:

- goodness ``g = mean(relu(h)^2)`` over the block's units (Hinton's sum of squares divided
  by the width, so one threshold serves any width);
- loss ``softplus(theta - g_pos) + softplus(g_neg - theta)``: positives above the threshold,
  negatives below it (each sample on its own, not a positive-negative pair as in PhyLL);
- length normalisation: the next block sees ``h / ||h||``, only the direction of the
  activity, so it cannot read the previous block's goodness off the vector's length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .ledger import LedgerFlopMeter
from .network import PhysicalNetwork
from .phyll import PhyLL, PhyLLSettings, overlay_label


def ff_goodness(h: torch.Tensor) -> torch.Tensor:
    """Mean squared ReLU activity per sample (sum of squares / width)."""
    return F.relu(h).square().mean(1)


def ff_loss(g_pos: torch.Tensor, g_neg: torch.Tensor, threshold: float) -> torch.Tensor:
    """mean(softplus(theta - g_pos)) + mean(softplus(g_neg - theta))."""
    return F.softplus(threshold - g_pos).mean() + F.softplus(g_neg - threshold).mean()


def length_normalise(h: torch.Tensor) -> torch.Tensor:
    """``relu(h) / ||relu(h)||`` per sample (a zero vector stays zero)."""
    a = F.relu(h)
    return a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)


@dataclass
class FFSettings(PhyLLSettings):
    threshold: float = 2.0
    """theta: the goodness that separates positive from negative samples."""


class ForwardForward(PhyLL):
    """Trains each block alone with FF's goodness and loss (see the module docstring)."""

    def __init__(self, net: PhysicalNetwork, settings: FFSettings, gen: torch.Generator):
        super().__init__(net, settings, gen)
        self.flops = LedgerFlopMeter()

    def _next(self, k: int, h: torch.Tensor) -> torch.Tensor:
        block = self.net.blocks[k]
        return block.to_next(length_normalise(h), self.net.blocks[k + 1].device.spec.domain)

    def train_batch(self, pos: torch.Tensor, neg: torch.Tensor) -> list[float]:
        blocks = self.net.blocks
        losses = []
        for k, (block, opt) in enumerate(zip(blocks, self.optimizers, strict=True)):
            f_pos, f_neg = block.features(pos), block.features(neg)  # one query per sample
            with self.flops.count("train"):
                for _ in range(self.s.inner_steps):
                    opt.zero_grad(set_to_none=True)
                    loss = ff_loss(
                        ff_goodness(block.linear(f_pos)), ff_goodness(block.linear(f_neg)),
                        self.s.threshold,
                    )
                    loss.backward()
                    opt.step()
                losses.append(float(loss.detach()))
                if k + 1 < len(blocks):
                    with torch.no_grad():
                        pos = self._next(k, block.linear(f_pos))
                        neg = self._next(k, block.linear(f_neg))
        return losses

    @torch.no_grad()
    def scores(self, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """Goodness summed over blocks for every candidate label, ``[N, n_classes]``."""
        c, blocks = self.s.n_classes, self.net.blocks
        parts = []
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size]
            scores = torch.empty(xb.shape[0], c, device=xb.device)
            for label in range(c):
                lab = torch.full((xb.shape[0],), label, dtype=torch.long, device=xb.device)
                z = overlay_label(xb, lab, c, self.s.label_amplitude, self.s.label_width)
                for k, block in enumerate(blocks):
                    f = block.features(z)
                    with self.flops.count("eval"):
                        h = block.linear(f)
                        g = ff_goodness(h)
                        scores[:, label] = g if k == 0 else scores[:, label] + g
                        if k + 1 < len(blocks):
                            z = self._next(k, h)
            parts.append(scores)
        return torch.cat(parts)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores(x).argmax(1)
