"""Physical local learning (PhyLL), the model-free forward-forward rule of Momeni et al. (2023).

Each block is trained alone: positive samples carry their true label, negative samples the
same input with a wrong label; the block learns to make the goodness (cosine similarity of
``|h|`` with a fixed random direction ``zeta``) larger for positives than for negatives.
No gradient ever flows through a device.

Two knobs make the negatives harder (``LocalRuleSettings.wrong_label`` and
``negatives_per_positive``): the wrong label the network currently finds most plausible
instead of a random one, and several wrong labels per positive. A third changes the
inputs themselves (``augment``, ``physnn.train.augment``). Their defaults are the paper's
rule, number for number.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .augment import AugmentFn, DigitCodec, make_augment
from .flops import FlopMeter, signature
from .network import Block, PhysicalNetwork

WRONG_LABELS = ("random", "hard", "mixed")
"""``train.wrong_label``: how a negative's wrong label is chosen (see ``LocalRuleSettings``)."""


def check_wrong_label(name: str) -> None:
    """Refuse, in one line, a ``train.wrong_label`` outside ``WRONG_LABELS`` (the trainer and
    the config both ask here)."""
    if name not in WRONG_LABELS:
        raise ValueError(f"train.wrong_label must be one of {', '.join(WRONG_LABELS)}, got {name!r}")


def overlay_label(
    x: torch.Tensor,
    labels: torch.Tensor,
    n_classes: int,
    amplitude: float | str = 1.0,
    width: int = 1,
) -> torch.Tensor:
    """Zero the first ``n_classes * width`` entries and set the ``label``-th run of ``width``.

    ``width=1`` is the paper's vowel encoding (one entry per class); a wider run is a label
    *row* of an image-like input (the optical MNIST set-up writes one SLM row per class), so
    the label moves as much light as a stroke of the image does.
    ``amplitude="batch_max"`` reproduces the paper's code (max |x| of the batch), which makes a
    sample's encoding depend on its batch-mates; a fixed number avoids that.
    """
    if amplitude == "batch_max":
        amp = x.abs().max()
    else:
        amp = torch.as_tensor(float(amplitude), dtype=x.dtype, device=x.device)
    if width < 1 or n_classes * width > x.shape[1]:
        raise ValueError(
            f"label slots n_classes*width = {n_classes}*{width} must fit the {x.shape[1]} inputs"
        )
    out = x.clone()
    out[:, : n_classes * width] = 0
    rows = torch.arange(x.shape[0], device=x.device)
    if width == 1:
        out[rows, labels] = amp
    else:
        view = out[:, : n_classes * width].view(x.shape[0], n_classes, width)
        view[rows, labels] = amp
    return out


def wrong_labels(labels: torch.Tensor, n_classes: int, gen: torch.Generator) -> torch.Tensor:
    """A label drawn uniformly from the wrong classes of each sample (never the true one)."""
    shift = torch.randint(1, n_classes, labels.shape, generator=gen, device=gen.device)
    return (labels + shift.to(labels.device)) % n_classes


def wrong_label_sets(labels: torch.Tensor, n_classes: int, gen: torch.Generator,
                     k: int = 1) -> torch.Tensor:
    """``k`` distinct wrong labels per sample, uniformly without replacement, ``[N, k]``.

    ``k = 1`` draws exactly what ``wrong_labels`` draws (the paper's rule, the same numbers);
    a larger ``k`` takes the first ``k`` of a random order of the ``n_classes - 1`` nonzero
    label shifts, so the labels of a sample differ from each other and from the true one.
    """
    if k == 1:
        return wrong_labels(labels, n_classes, gen).unsqueeze(1)
    order = torch.rand(labels.shape[0], n_classes - 1, generator=gen, device=gen.device)
    shift = order.argsort(1)[:, :k] + 1
    return (labels.unsqueeze(1) + shift.to(labels.device)) % n_classes


def hardest_wrong_labels(scores: torch.Tensor, labels: torch.Tensor, k: int = 1) -> torch.Tensor:
    """The ``k`` wrong labels with the highest ``scores`` (``[N, n_classes]``) per sample,
    most plausible first, ``[N, k]``: the negatives the network currently confuses most."""
    s = scores.clone()
    s[torch.arange(s.shape[0], device=s.device), labels.to(s.device)] = -torch.inf
    return s.topk(k, dim=1).indices.to(labels.device)


def goodness(h: torch.Tensor, zeta: torch.Tensor) -> torch.Tensor:
    """Cosine similarity between ``|h|`` and the fixed unit vector ``zeta``, per sample."""
    return F.cosine_similarity(h.abs(), zeta.unsqueeze(0), dim=1, eps=1e-12)


def phyll_loss(g_pos: torch.Tensor, g_neg: torch.Tensor, alpha: float) -> torch.Tensor:
    """mean(softplus(-alpha * (g_pos - g_neg))): pushes each positive above its negatives.

    ``g_neg`` may hold ``K`` negatives per positive, stacked negative-major (``[K * N]``: the
    first negative of every sample, then the second, ...); the mean is then over all
    ``K * N`` (positive, negative) pairs.
    """
    if g_neg.numel() != g_pos.numel():
        k, rest = divmod(g_neg.numel(), g_pos.numel())
        if rest or k < 1:
            raise ValueError(f"{g_neg.numel()} negatives do not pair with {g_pos.numel()} "
                             "positives (K negatives per positive, stacked negative-major)")
        g_pos = g_pos.repeat(k)
    return F.softplus(-alpha * (g_pos - g_neg)).mean()


@dataclass(kw_only=True)
class LocalRuleSettings:
    """The hyperparameters of a goodness-based local rule; also the ``[train]`` keys of an
    experiment config (``physnn.experiments.config.TrainConfig`` extends this class), so
    the two can never disagree on a name, a type or a default."""

    lr: float = 5e-4
    inner_steps: int = 10
    """Adam steps per batch on the same cached device measurements."""
    alpha: float = 4.0
    """Sharpness of the pairwise softplus loss."""
    label_amplitude: float | str = 1.0
    """A fixed label amplitude, or ``"batch_max"`` (the paper's code: max |x| of the batch)."""
    batch_size: int = 0
    """0 = full batch, as in the paper."""
    wrong_label: str = "random"
    """A negative's wrong label: ``random`` (uniform, the paper), ``hard`` (the wrong label the
    network scores highest on the batch it is about to train on: ``n_classes`` more device
    passes per sample and epoch) or ``mixed`` (hard for a random half of the samples)."""
    negatives_per_positive: int = 1
    """K distinct wrong labels per sample (at most ``n_classes - 1``); each positive is paired
    with each of its K negatives. Device queries per sample, block and epoch: 1 + K."""
    augment: str = "none"
    """Input-side augmentation of the training batches: ``none``, ``shift`` (images) or
    ``jitter`` (feature vectors); see ``physnn.train.augment``."""
    augment_size: float = 0.0
    """``shift``: the largest offset in pixels; ``jitter``: the relative noise's standard
    deviation; 0 = the augmentation's default (1 pixel, 0.02)."""


@dataclass(kw_only=True)
class PhyLLSettings(LocalRuleSettings):
    """A local rule's hyperparameters plus what the data set fixes (classes, label width)."""

    n_classes: int
    label_width: int = 1
    """Inputs per class in the label overlay (the data set's label slots / n_classes)."""


class PhyLL:
    """Trains a ``PhysicalNetwork`` block by block, one Adam per block."""

    def __init__(self, net: PhysicalNetwork, settings: PhyLLSettings, gen: torch.Generator,
                 image_shape: tuple[int, int] | None = None,
                 digit_layout: DigitCodec | None = None):
        k, c = settings.negatives_per_positive, settings.n_classes
        if not 1 <= k <= c - 1:
            raise ValueError(f"train.negatives_per_positive (distinct wrong labels per sample) "
                             f"must be in [1, n_classes - 1 = {c - 1}], got {k}")
        check_wrong_label(settings.wrong_label)
        self.net = net
        self.s = settings
        self.gen = gen
        self.image_shape = image_shape
        self.flops = FlopMeter()
        self.optimizers = [torch.optim.Adam(b.linear.parameters(), lr=settings.lr) for b in net.blocks]
        self.augment: AugmentFn | None = make_augment(
            settings.augment, settings.augment_size, c * settings.label_width, image_shape,
            net.blocks[0].device.spec.domain, digit_layout,
        )
        """The training batches' augmentation (None: ``augment = "none"``)."""

    def digital_modules(self) -> list[torch.nn.Module]:
        """The blocks' Linears: the only trained weights (the devices are black boxes)."""
        return [b.linear for b in self.net.blocks]

    def state_dict(self) -> dict:
        """Optimizers, random stream and FLOP totals: what a bit-exact resume needs
        besides the network's own state."""
        return {
            "optimizers": [o.state_dict() for o in self.optimizers],
            "gen": self.gen.get_state(),
            "flops": self.flops.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state_dict`` (the network is restored separately)."""
        for o, s in zip(self.optimizers, state["optimizers"], strict=True):
            o.load_state_dict(s)
        self.gen.set_state(state["gen"])
        self.flops.load_state_dict(state["flops"])

    def train_epoch(self, x: torch.Tensor, y: torch.Tensor) -> list[float]:
        """One pass over the data; returns the mean final inner-step loss of each block.

        Random wrong labels (and ``mixed``'s choice of samples to make hard) are drawn for the
        whole epoch up front; hard ones are chosen batch by batch, on the (augmented) batch
        about to be trained, with the weights it is about to start from.
        """
        s, n = self.s, x.shape[0]
        k = s.negatives_per_positive
        y_rand = None if s.wrong_label == "hard" else wrong_label_sets(y, s.n_classes, self.gen, k)
        hard = torch.rand(n, generator=self.gen).to(y.device) < 0.5 \
            if s.wrong_label == "mixed" else None
        order = torch.randperm(n, generator=self.gen).to(x.device)
        bs = n if s.batch_size <= 0 else s.batch_size
        totals = [0.0] * len(self.net.blocks)
        for start in range(0, n, bs):
            idx = order[start : start + bs]
            xb, yb = self.augmented(x[idx]), y[idx]
            y_neg = self.negative_labels(
                xb, yb, None if y_rand is None else y_rand[idx], None if hard is None else hard[idx]
            )
            pos = overlay_label(xb, yb, s.n_classes, s.label_amplitude, s.label_width)
            neg = overlay_label(xb.repeat(k, 1), y_neg.T.reshape(-1), s.n_classes,
                                s.label_amplitude, s.label_width)  # negative-major: [K * B]
            for b, losses in enumerate(self.train_batch(pos, neg)):
                totals[b] += losses * idx.numel()
        return [t / n for t in totals]

    def augmented(self, xb: torch.Tensor) -> torch.Tensor:
        """A training batch as ``train.augment`` changes it (fresh draws from the trainer's
        generator); never called on evaluation data."""
        return xb if self.augment is None else self.augment(xb, self.gen)

    def negative_labels(self, xb: torch.Tensor, yb: torch.Tensor, y_rand: torch.Tensor | None,
                        hard: torch.Tensor | None) -> torch.Tensor:
        """The batch's ``[B, K]`` wrong labels: ``y_rand`` (drawn for the epoch), with the
        samples ``hard`` marks (all when ``y_rand`` is None) replaced by their K hardest.

        Choosing the hardest scores every label of those samples (``scores``: one device pass
        per sample, label and block), charged to training (its queries happen inside
        ``train_epoch``, its FLOPs go to the ``train`` phase) and measured on a copy of the
        devices' noise streams (``PhysicalNetwork.evaluating``), so it does not change the
        noise that training's own measurements draw.
        """
        if y_rand is not None and hard is None:
            return y_rand
        pick = torch.ones_like(yb, dtype=torch.bool) if hard is None else hard
        out = torch.empty(yb.shape[0], self.s.negatives_per_positive, dtype=torch.long,
                          device=yb.device) if y_rand is None else y_rand.clone()
        if bool(pick.any()):
            rows = pick.nonzero().flatten()
            with self.net.evaluating():
                sc = self.scores(xb[rows.to(xb.device)], phase="train")
            out[rows] = hardest_wrong_labels(sc, yb[rows], self.s.negatives_per_positive)
        return out

    # The three pieces a goodness-based local rule defines (FF overrides them).
    def block_loss(self, block: Block, f_pos: torch.Tensor, f_neg: torch.Tensor) -> torch.Tensor:
        """The block's local loss on its cached measurements of positives and negatives."""
        return phyll_loss(
            goodness(block.linear(f_pos), block.zeta),
            goodness(block.linear(f_neg), block.zeta),
            self.s.alpha,
        )

    def block_goodness(self, block: Block, h: torch.Tensor) -> torch.Tensor:
        """The block's goodness of its output, summed over blocks to score a candidate label."""
        return goodness(h, block.zeta)

    def to_next(self, k: int, h: torch.Tensor) -> torch.Tensor:
        """Block ``k``'s output as block ``k + 1``'s input."""
        return self.net.blocks[k].to_next(h, self.net.blocks[k + 1].device.spec.domain)

    def train_batch(self, pos: torch.Tensor, neg: torch.Tensor) -> list[float]:
        """Train every block on one batch; returns each block's final inner-step loss.

        Each block queries its device once per sample and reuses the measurement for all
        ``inner_steps``, so extra optimisation costs digital FLOPs, not device queries.
        """
        blocks = self.net.blocks
        losses = []
        for k, (block, opt) in enumerate(zip(blocks, self.optimizers, strict=True)):
            f_pos, f_neg = block.features(pos), block.features(neg)  # one query per sample
            key = (k, signature(f_pos, f_neg), self.s.inner_steps)  # fixes the op sequence
            with self.flops.count("train", key):
                for _ in range(self.s.inner_steps):
                    opt.zero_grad(set_to_none=True)
                    loss = self.block_loss(block, f_pos, f_neg)
                    loss.backward()
                    opt.step()
                losses.append(float(loss.detach()))
                if k + 1 < len(blocks):
                    with torch.no_grad():
                        pos = self.to_next(k, block.linear(f_pos))
                        neg = self.to_next(k, block.linear(f_neg))
        return losses

    @torch.no_grad()
    def scores(self, x: torch.Tensor, batch_size: int = 4096, max_rows: int = 4096,
               phase: str = "eval", per_block: bool = False) -> torch.Tensor:
        """Summed goodness over blocks for every candidate label, ``[N, n_classes]``
        (``per_block``: each block's goodness, ``[N, n_classes, blocks]``, summed by nobody).

        Each batch of ``batch_size`` samples is scored as ``n_classes`` device calls, one per
        label in order; the labels are stacked into calls of at most ``max_rows`` rows (the
        memory budget), which a device measures as those consecutive calls (``calls_of``):
        the numbers, noise draws and query accounting of label-by-label scoring, with one
        pass of the network per stack instead of one per label. ``phase``: the FLOP phase
        charged (``train`` when training scores labels to choose hard negatives).
        """
        c, blocks = self.s.n_classes, self.net.blocks
        distinct = len({id(b.device) for b in blocks}) == len(blocks)  # else: the old order
        shape = (x.shape[0], c, len(blocks)) if per_block else (x.shape[0], c)
        out = torch.empty(shape, device=x.device)
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size]
            b = xb.shape[0]
            step = max(1, max_rows // b) if distinct else 1
            for first in range(0, c, step):
                labels = torch.arange(first, min(c, first + step), device=x.device)
                lab = labels.repeat_interleave(b)
                z = overlay_label(xb.repeat(labels.numel(), 1), lab, c, self.s.label_amplitude,
                                  self.s.label_width)
                total, each = self._goodness(z, b, phase)
                if per_block:
                    per = torch.stack(each, 1).view(labels.numel(), b, len(blocks))
                    out[start : start + b, first : first + labels.numel()] = per.transpose(0, 1)
                else:
                    out[start : start + b, first : first + labels.numel()] = total.view(-1, b).T
        return out

    def _goodness(self, z: torch.Tensor, rows: int,
                  phase: str = "eval") -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(goodness summed over blocks, each block's) for the label-overlaid ``z``, each
        device measuring it as calls of ``rows`` rows."""
        blocks = self.net.blocks
        total: torch.Tensor | None = None
        each = []
        for k, block in enumerate(blocks):
            with block.device.calls_of(rows):
                f = block.features(z)
            with self.flops.count(phase, ("scores", k, signature(f))):
                h = block.linear(f)
                g = self.block_goodness(block, h)
                total = g if total is None else total + g
                each.append(g)
                if k + 1 < len(blocks):
                    z = self.to_next(k, h)
        assert total is not None  # a network has at least one block
        return total, each

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The label whose overlay gives the largest summed goodness (``n_classes`` passes)."""
        return self.scores(x).argmax(1)
