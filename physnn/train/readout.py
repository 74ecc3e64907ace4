"""The cheaper prediction: a linear read-out of the blocks' outputs for a neutral label.

Goodness-per-label prediction (the paper's) runs every sample once per candidate label, so
it costs ``n_classes`` device passes per sample; the read-out costs one. It overlays a
*neutral* label (every label slot at ``amplitude / n_classes``), concatenates the blocks'
outputs (each scaled to unit length, as goodness is scale-free) and fits a multinomial
logistic regression on the training set. Only the read-out is trained; the blocks are not.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F

from .flops import FlopMeter, signature
from .network import PhysicalNetwork


def neutral_label(
    x: torch.Tensor, n_classes: int, amplitude: float | str = 1.0, width: int = 1
) -> torch.Tensor:
    """Every label slot set to ``amplitude / n_classes``: no class is favoured."""
    amp = x.abs().max() if amplitude == "batch_max" else float(amplitude)
    out = x.clone()
    out[:, : n_classes * width] = amp / n_classes
    return out


@torch.no_grad()
def neutral_features(
    net: PhysicalNetwork,
    x,
    n_classes: int,
    amplitude: float | str = 1.0,
    width: int = 1,
    flops: FlopMeter | None = None,
    batch_size: int = 4096,
) -> torch.Tensor:
    """Concatenated unit-length block outputs for a neutral label, ``[N, sum of widths]``.

    The neutral value is projected onto the first device's domain: on a device with input
    levels (a 2-bit metasurface) ``amplitude / n_classes`` is rarely a level, and the nearest
    one is still the same for every class.
    """
    domain = net.blocks[0].device.spec.domain
    parts = []
    for start in range(0, x.shape[0], batch_size):
        xb = domain.project(neutral_label(x[start : start + batch_size], n_classes, amplitude, width))
        hs = net(xb, flops)
        parts.append(torch.cat([F.normalize(h, dim=1) for h in hs], dim=1))
    return torch.cat(parts)


class LinearReadout:
    """Multinomial logistic regression on fixed features (L-BFGS, deterministic)."""

    def __init__(self, n_classes: int, l2: float = 1e-4, max_iter: int = 200):
        self.n_classes, self.l2, self.max_iter = n_classes, l2, max_iter
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    def fit(self, f: torch.Tensor, y: torch.Tensor, flops: FlopMeter | None = None) -> LinearReadout:
        """Fit on standardised features (so one ``l2`` suits any feature scale).

        FLOPs go to ``readout``: each loss-and-gradient evaluation is charged what counting
        its first one measured (its op sequence depends only on the shapes); L-BFGS's own
        vector updates between evaluations are not counted. Counting every op of the fit
        instead ran torch's FLOP counter through some 10^5 dispatches and made the fit 6-10x
        slower; the updates it also counted are under 1 % of the total on the digits read-out
        (``tests/test_flops.py::test_the_read_out_is_charged_its_evaluations``).
        """
        self.mean, self.std = f.mean(0), f.std(0).clamp_min(1e-6)
        z = (f - self.mean) / self.std
        w = torch.zeros(f.shape[1], self.n_classes, device=f.device, requires_grad=True)
        b = torch.zeros(self.n_classes, device=f.device, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=self.max_iter, line_search_fn="strong_wolfe")
        key = ("closure", signature(z, w), self.l2 != 0)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            with flops.count("readout", key) if flops is not None else nullcontext():
                loss = F.cross_entropy(z @ w + b, y) + self.l2 * w.square().sum()
                loss.backward()
            return loss

        opt.step(closure)
        self.weight, self.bias = w.detach(), b.detach()
        return self

    def predict(self, f: torch.Tensor) -> torch.Tensor:
        """The most likely class per row of ``f`` (features as ``fit`` saw them)."""
        if self.weight is None or self.bias is None or self.mean is None or self.std is None:
            raise RuntimeError("LinearReadout.predict before fit")
        return (((f - self.mean) / self.std) @ self.weight + self.bias).argmax(1)
