"""Unsupervised PhyLL: the same local rule with no label anywhere in training.

The paper's abstract claims PhyLL trains deep physical networks without labels as well; its
text gives no recipe, so this follows Hinton's forward-forward (2022): positives are the real
inputs as they are (label slots left at zero), negatives are inputs corrupted without looking
at a label (``physnn.train.negatives``: hybrid images, shuffled or mixed feature vectors).
Each block learns, alone and with one device query per sample and batch for each of the two,
to give real data a larger goodness than corrupted data: the same cosine goodness and
pairwise softplus loss as supervised PhyLL. Labels enter only afterwards, in the linear
read-out on the blocks' outputs (``train.readout = "linear"``), which is how such a network
is scored; it has no goodness per label to predict with.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .augment import DigitCodec
from .negatives import NegativeFn
from .network import Block, PhysicalNetwork
from .phyll import PhyLL, PhyLLSettings, phyll_loss


class UnsupervisedPhyLL(PhyLL):
    """PhyLL with label-free negatives; ``train.method = "phyll-unsupervised"``."""

    uses_labels = False
    """The runner's cue: evaluate with the linear read-out, on inputs without a label."""

    def __init__(self, net: PhysicalNetwork, settings: PhyLLSettings, gen: torch.Generator,
                 negatives: NegativeFn, image_shape: tuple[int, int] | None = None,
                 directions: int = 1, seed: int = 0, digit_layout: DigitCodec | None = None):
        super().__init__(net, settings, gen, image_shape, digit_layout)
        self.negatives = negatives
        self.slots = settings.n_classes * settings.label_width
        self.directions: dict[int, torch.Tensor] = {}
        """Per block, ``directions`` fixed unit vectors when more than the block's one ``zeta``:
        goodness is then the best cosine over them, so real inputs need not all line up with
        one direction (which would leave the read-out nothing to tell classes apart by)."""
        if directions > 1:
            for k, block in enumerate(net.blocks):
                g = torch.Generator().manual_seed(seed * 1_000_003 + 7919 * (k + 1))
                z = torch.randn(directions, block.zeta.numel(), generator=g, dtype=torch.float64)
                self.directions[id(block)] = F.normalize(z, dim=1).to(block.zeta)

    def block_loss(self, block: Block, f_pos: torch.Tensor, f_neg: torch.Tensor) -> torch.Tensor:
        """PhyLL's loss; with several directions, goodness is the best cosine over them."""
        z = self.directions.get(id(block))
        if z is None:
            return super().block_loss(block, f_pos, f_neg)

        def best(h: torch.Tensor) -> torch.Tensor:
            return (F.normalize(h.abs(), dim=1, eps=1e-12) @ z.T).amax(1)

        return phyll_loss(best(block.linear(f_pos)), best(block.linear(f_neg)), self.s.alpha)

    def train_epoch(self, x: Any, y: torch.Tensor | None = None) -> list[float]:
        """One pass over ``x`` (``y`` is ignored: nothing here sees a label)."""
        n = x.shape[0]
        order = torch.randperm(n, generator=self.gen).to(x.device)
        bs = n if self.s.batch_size <= 0 else self.s.batch_size
        totals = [0.0] * len(self.net.blocks)
        for start in range(0, n, bs):
            idx = order[start : start + bs]
            pos = self.augmented(x[idx])
            neg = self.negatives(pos, self.gen, self.slots, self.image_shape)
            for k, loss in enumerate(self.train_batch(pos, neg)):
                totals[k] += loss * idx.numel()
        return [t / n for t in totals]

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Refused: without labels there is no goodness per label (use the linear read-out)."""
        raise ValueError("train.method 'phyll-unsupervised' has no goodness per label to "
                         "predict with; it is scored by the linear read-out "
                         "(train.readout = 'linear')")
