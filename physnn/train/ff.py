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

from .augment import DigitCodec
from .ledger import LedgerFlopMeter
from .network import Block, PhysicalNetwork
from .phyll import PhyLL, PhyLLSettings


def ff_goodness(h: torch.Tensor) -> torch.Tensor:
    """Mean squared ReLU activity per sample (sum of squares / width)."""
    return F.relu(h).square().mean(1)


def ff_loss(g_pos: torch.Tensor, g_neg: torch.Tensor, threshold: float) -> torch.Tensor:
    """mean(softplus(theta - g_pos)) + mean(softplus(g_neg - theta)); each sample on its own,
    so ``K`` negatives per positive (``train.negatives_per_positive``) are simply ``K`` times
    as many negatives in the second mean."""
    return F.softplus(threshold - g_pos).mean() + F.softplus(g_neg - threshold).mean()


def length_normalise(h: torch.Tensor) -> torch.Tensor:
    """``relu(h) / ||relu(h)||`` per sample (a zero vector stays zero)."""
    a = F.relu(h)
    return a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)


@dataclass(kw_only=True)
class FFSettings(PhyLLSettings):
    """PhyLL's settings plus FF's goodness threshold (the rest of the loop is shared)."""

    threshold: float = 2.0
    """theta: the goodness that separates positive from negative samples."""


class ForwardForward(PhyLL):
    """Trains each block alone with FF's goodness and loss (see the module docstring)."""

    s: FFSettings

    def __init__(self, net: PhysicalNetwork, settings: FFSettings, gen: torch.Generator,
                 image_shape: tuple[int, int] | None = None,
                 digit_layout: DigitCodec | None = None):
        super().__init__(net, settings, gen, image_shape, digit_layout)
        self.flops = LedgerFlopMeter()

    def block_loss(self, block: Block, f_pos: torch.Tensor, f_neg: torch.Tensor) -> torch.Tensor:
        """FF's per-sample threshold loss in place of PhyLL's pairwise one."""
        return ff_loss(
            ff_goodness(block.linear(f_pos)), ff_goodness(block.linear(f_neg)), self.s.threshold
        )

    def block_goodness(self, block: Block, h: torch.Tensor) -> torch.Tensor:
        """FF's squared-activity goodness, so prediction scores labels as training did."""
        return ff_goodness(h)

    def to_next(self, k: int, h: torch.Tensor) -> torch.Tensor:
        """Length-normalised: the next block sees only the direction of the activity."""
        return super().to_next(k, length_normalise(h))

