"""Read-outs besides the paper's summed goodness: a linear read-out of the blocks' outputs
for a neutral label (``LinearReadout``), and goodness with learned block weights
(``BlockWeights``).

Goodness-per-label prediction (the paper's) runs every sample once per candidate label, so
it costs ``n_classes`` device passes per sample; the linear read-out costs one. It overlays a
*neutral* label (every label slot at ``amplitude / n_classes``), concatenates the blocks'
outputs (each scaled to unit length, as goodness is scale-free) and fits a multinomial
logistic regression on the training set. Only the read-out is trained; the blocks are not.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from .flops import FlopMeter, signature
from .network import PhysicalNetwork, device_queries


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


def _lbfgs(w: torch.Tensor, b: torch.Tensor, loss_of: Callable[[], torch.Tensor],
           max_iter: int, flops: FlopMeter | None, key: Any) -> None:
    """Minimise ``loss_of()`` over ``w`` and ``b`` in place (L-BFGS, strong Wolfe: the same
    steps every time); each loss-and-gradient evaluation is charged to ``readout`` under
    ``key`` (see ``LinearReadout.fit``)."""
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        with flops.count("readout", key) if flops is not None else nullcontext():
            loss = loss_of()
            loss.backward()
        return loss

    opt.step(closure)


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
        key = ("closure", signature(z, w), self.l2 != 0)
        _lbfgs(w, b, lambda: F.cross_entropy(z @ w + b, y) + self.l2 * w.square().sum(),
               self.max_iter, flops, key)
        self.weight, self.bias = w.detach(), b.detach()
        return self

    def predict(self, f: torch.Tensor) -> torch.Tensor:
        """The most likely class per row of ``f`` (features as ``fit`` saw them)."""
        if self.weight is None or self.bias is None or self.mean is None or self.std is None:
            raise RuntimeError("LinearReadout.predict before fit")
        return (((f - self.mean) / self.std) @ self.weight + self.bias).argmax(1)


class BlockScorer(Protocol):
    """A rule that scores every label block by block (``PhyLL.scores``, ``Ensemble.scores``)."""

    def scores(self, x: Any, *, per_block: bool) -> torch.Tensor:
        """``[N, n_classes, blocks]`` goodness with ``per_block=True``."""
        ...


class BlockWeights:
    """Goodness with learned weights: a label's score is ``sum_b w_b g_b + c_label``.

    The paper sums the blocks' goodness with equal weights; when a later block separates the
    classes worse than the first (as on the microwave vowels), the equal sum lets it
    outvote the better one. The ``blocks + n_classes`` numbers are fitted by multinomial
    logistic regression on the training split's scores, each block's scores standardised
    first (L-BFGS from the equal sum, deterministic). It uses the same device passes as
    goodness prediction, plus one scoring of the training split per fit.
    """

    def __init__(self, l2: float = 1e-3, max_iter: int = 100):
        self.l2, self.max_iter = l2, max_iter
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    def fit(self, s: torch.Tensor, y: torch.Tensor, flops: FlopMeter | None = None) -> BlockWeights:
        """Fit on the training split's per-block scores ``s`` (``[N, n_classes, blocks]``)."""
        self.mean = s.mean((0, 1))
        self.std = s.std((0, 1)).clamp_min(1e-12) if s.shape[0] * s.shape[1] > 1 \
            else torch.ones_like(self.mean)
        z = (s - self.mean) / self.std
        w = torch.ones(s.shape[2], device=s.device, requires_grad=True)
        b = torch.zeros(s.shape[1], device=s.device, requires_grad=True)
        key = ("block-weights", signature(z, w))
        _lbfgs(w, b, lambda: F.cross_entropy(z @ w + b, y)
               + self.l2 * (w.square().sum() + b.square().sum()), self.max_iter, flops, key)
        self.weight, self.bias = w.detach(), b.detach()
        return self

    def predict(self, s: torch.Tensor) -> torch.Tensor:
        """The label with the highest weighted score, per row of ``s``."""
        if self.weight is None or self.bias is None or self.mean is None or self.std is None:
            raise RuntimeError("BlockWeights.predict before fit")
        return (((s - self.mean) / self.std) @ self.weight + self.bias).argmax(1)


def stratified_folds(y: torch.Tensor, k: int) -> torch.Tensor:
    """Fold index per sample: each class's samples dealt to folds ``0..k-1`` in turn, in
    their order (deterministic, no generator)."""
    folds = torch.empty_like(y)
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        folds[idx] = torch.arange(len(idx), device=y.device) % k
    return folds


def cross_validated_accuracy(s: torch.Tensor, y: torch.Tensor, k: int = 5,
                             flops: FlopMeter | None = None) -> float:
    """``BlockWeights``' accuracy on held-out folds of ``s`` (``k``-fold, stratified): what
    the fitted weights are worth on tokens they were not fitted on. No device query."""
    folds, right = stratified_folds(y, k), 0
    for i in range(k):
        fit = BlockWeights().fit(s[folds != i], y[folds != i], flops)
        right += int((fit.predict(s[folds == i]) == y[folds == i]).sum())
    return right / len(y)


def weighted_goodness(scorer: BlockScorer, net: PhysicalNetwork, x_train: Any,
                      y_train: torch.Tensor, x_test: Any, y_test: torch.Tensor,
                      flops: FlopMeter | None = None, *, or_sum: bool = False) -> dict[str, Any]:
    """Fit ``BlockWeights`` on the training split's scores and predict the test split
    (``x_*``: tensors or lazy feature stores, as the rules take them).

    Returns the test and training accuracy of the weighted score, the plain sum's test
    accuracy (``test_acc_summed``: the same measurements, no extra query), the device
    queries of the training split's scoring (``readout_fit_queries``), the fitted block
    weights (in standardised units) and the test predictions (``y_pred``).

    ``or_sum`` (``train.readout = "weighted-or-sum"``): the ``blocks + n_classes`` fitted
    numbers can over-fit a small training split (an ensemble of 5 x 3 blocks on 253 vowel
    tokens lost 3 points to the plain sum), so predict with the plain sum instead unless
    the weights' 5-fold cross-validated accuracy on the training split beats the plain
    sum's accuracy there (which fits nothing); ``readout_summed`` is 1 when the sum was used.
    """
    s_test = scorer.scores(x_test, per_block=True)  # first, as goodness prediction does
    q0 = device_queries(net)
    s_train = scorer.scores(x_train, per_block=True)
    fit_queries = device_queries(net) - q0
    fit = BlockWeights().fit(s_train, y_train, flops)
    y_pred, y_fit = fit.predict(s_test), fit.predict(s_train)
    assert fit.weight is not None
    summed = s_test.sum(2).argmax(1)
    found: dict[str, Any] = {}
    if or_sum:
        y_sum = s_train.sum(2).argmax(1)
        use_sum = cross_validated_accuracy(s_train, y_train, flops=flops) <= float(
            (y_sum == y_train).float().mean())
        if use_sum:
            y_pred, y_fit = summed, y_sum
        found["readout_summed"] = float(use_sum)
    return {
        "test_acc": (y_pred == y_test).float().mean().item(),
        "train_acc": (y_fit == y_train).float().mean().item(),
        "test_acc_summed": (summed == y_test).float().mean().item(),
        "readout_fit_queries": fit_queries,
        "readout_block_weights": fit.weight.cpu().tolist(),
        **found,
        "y_pred": y_pred,
    }
