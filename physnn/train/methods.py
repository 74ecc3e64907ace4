"""The learning rules by name: ``train.method`` -> a trainer factory.

Every trainer honours one contract (what the runner relies on): built from
``(train, net, n_classes, seed)`` (``train``: the config's ``[train]`` section);
``train_epoch(x, y) -> list[float]`` (one pass; ``x`` may be a lazy feature store, so only
``x[index_tensor]``, ``x[a:b]`` and ``x.shape`` are used);
``predict(x) -> LongTensor``; ``state_dict()`` / ``load_state_dict()`` (bit-exact resume);
``flops`` (a FlopMeter with phases ``train``, ``eval`` and, for PAT and backprop, ``model``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

import torch
from torch import nn

from .augment import DigitCodec
from .backprop import Backprop, EndToEndSettings
from .ensemble import GOODNESS_RULES, Ensemble, member_network
from .ff import FFSettings, ForwardForward
from .flops import FlopMeter
from .ledger import LedgerFlopMeter
from .negatives import negative_generator
from .network import PhysicalNetwork
from .pat import PhysicsAware
from .phyll import LocalRuleSettings, PhyLL, PhyLLSettings
from .unsupervised import UnsupervisedPhyLL


class Trainer(Protocol):
    """The contract of the module docstring, so the runner drives every rule the same way."""

    @property
    def flops(self) -> FlopMeter:
        """The rule's digital FLOPs by phase (read-only here: rules may keep a richer meter)."""
        ...

    def train_epoch(self, x: Any, y: torch.Tensor) -> list[float]:
        """One pass over the training data; returns the rule's losses (one per block or one)."""
        ...

    def predict(self, x: Any) -> torch.Tensor:
        """Class indices for ``x``, by the rule's own decision (goodness per label, or a head)."""
        ...

    def digital_modules(self) -> list[nn.Module]:
        """Every trainable digital module (what ``train.average`` averages)."""
        ...

    def state_dict(self) -> dict:
        """Everything besides the network that a bit-exact resume needs (optimizers, streams)."""
        ...

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state_dict``."""
        ...


class RuleConfig(Protocol):
    """What the factories read of an experiment's ``[train]`` section
    (``physnn.experiments.config.TrainConfig`` is one)."""

    method: str
    lr: float
    batch_size: int
    ff_threshold: float
    pat_twin: Any
    pat_mismatch: float
    negatives: str
    directions: int
    ensemble: int
    train_device: bool
    device_lr: float


def evaluation(trainer: Trainer, net: PhysicalNetwork) -> AbstractContextManager[None]:
    """The network's devices and the trainer's twins (PAT's) measuring on a copy of their
    noise streams, put back afterwards (``Device.evaluating``)."""
    return net.evaluating(getattr(trainer, "twin_devices", ()))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed + 1)


def _local_settings(t: RuleConfig, n_classes: int, label_width: int) -> dict[str, Any]:
    """The local rules' hyperparameters (every field of LocalRuleSettings) from ``[train]``."""
    return {
        "n_classes": n_classes,
        "label_width": label_width,
        **{f.name: getattr(t, f.name) for f in dataclasses.fields(LocalRuleSettings)},
    }


def _phyll(t: RuleConfig, net: PhysicalNetwork, n_classes: int, seed: int,
           label_width: int = 1, image_shape: tuple[int, int] | None = None,
           digit_layout: DigitCodec | None = None) -> PhyLL:
    trainer = PhyLL(net, PhyLLSettings(**_local_settings(t, n_classes, label_width)), _gen(seed),
                    image_shape, digit_layout)
    trainer.flops = LedgerFlopMeter()  # the same FLOP counting as every other rule
    return trainer


def _ff(t: RuleConfig, net: PhysicalNetwork, n_classes: int, seed: int,
        label_width: int = 1, image_shape: tuple[int, int] | None = None,
        digit_layout: DigitCodec | None = None) -> ForwardForward:
    s = FFSettings(**_local_settings(t, n_classes, label_width), threshold=t.ff_threshold)
    return ForwardForward(net, s, _gen(seed), image_shape, digit_layout)


def _unsupervised(t: RuleConfig, net: PhysicalNetwork, n_classes: int, seed: int,
                  label_width: int = 1, image_shape: tuple[int, int] | None = None,
                  digit_layout: DigitCodec | None = None) -> UnsupervisedPhyLL:
    s = PhyLLSettings(**_local_settings(t, n_classes, label_width))
    negatives = negative_generator(t.negatives, image_shape)
    trainer = UnsupervisedPhyLL(net, s, _gen(seed), negatives, image_shape,
                                directions=t.directions, seed=seed, digit_layout=digit_layout)
    trainer.flops = LedgerFlopMeter()
    return trainer


def _e2e(t: RuleConfig, n_classes: int) -> EndToEndSettings:
    return EndToEndSettings(n_classes=n_classes, lr=t.lr, batch_size=t.batch_size,
                            train_device=t.train_device, device_lr=t.device_lr)


def _backprop(t: RuleConfig, net: PhysicalNetwork, n_classes: int, seed: int,
              label_width: int = 1, image_shape: tuple[int, int] | None = None,
              digit_layout: DigitCodec | None = None) -> Backprop:
    return Backprop(net, _e2e(t, n_classes), _gen(seed))


def _pat(t: RuleConfig, net: PhysicalNetwork, n_classes: int, seed: int,
         label_width: int = 1, image_shape: tuple[int, int] | None = None,
         digit_layout: DigitCodec | None = None) -> PhysicsAware:
    return PhysicsAware(net, _e2e(t, n_classes), _gen(seed), twin=t.pat_twin, mismatch=t.pat_mismatch)


Factory = Callable[..., Trainer]
"""``(train_config, net, n_classes, seed, label_width=1, image_shape=None,
digit_layout=None) -> Trainer``."""

METHODS: dict[str, Factory] = {
    "phyll": _phyll,
    "phyll-unsupervised": _unsupervised,
    "ff": _ff,
    "pat": _pat,
    "backprop": _backprop,
}
"""Learning rules by ``train.method``; model-free: phyll, phyll-unsupervised (no labels), ff;
needing a model: pat, backprop."""


def make_trainer(
    train: RuleConfig, net: PhysicalNetwork, n_classes: int, seed: int, label_width: int = 1,
    image_shape: tuple[int, int] | None = None, digit_layout: DigitCodec | None = None,
) -> Trainer:
    """The trainer ``train.method`` names, for ``net`` (``train``: a config's ``[train]``).

    ``label_width``: inputs per class in the label overlay (``Dataset.label_width``); the
    end-to-end rules overlay no label and ignore it. ``image_shape``: the data's
    (``Dataset.image_shape``), for label-free negatives that need one; ``digit_layout``
    (``Dataset.digit_layout``), for augmentations that change features written as digits.
    """
    if train.method not in METHODS:
        raise ValueError(f"unknown train.method {train.method!r}; allowed: {sorted(METHODS)}")
    factory = METHODS[train.method]
    data = {"label_width": label_width, "image_shape": image_shape, "digit_layout": digit_layout}
    first = factory(train, net, n_classes, seed, **data)
    m = getattr(train, "ensemble", 1)
    if m == 1:
        return first
    if train.method not in GOODNESS_RULES or m < 1:
        raise ValueError(f"train.ensemble = {m} needs train.method in "
                         f"{', '.join(GOODNESS_RULES)} and ensemble >= 1 (got {train.method!r})")
    members = [first]
    for k in range(1, m):  # member k: its own weights, directions and rule stream
        gen = torch.Generator().manual_seed(_MEMBER_SEED * k + seed)
        members.append(factory(train, member_network(net, gen), n_classes,
                               _MEMBER_SEED * k + seed, **data))
    assert all(isinstance(t, PhyLL) for t in members)  # GOODNESS_RULES are PhyLL's kind
    return Ensemble(members)  # type: ignore[arg-type]


_MEMBER_SEED = 1_000_003
"""Ensemble member k of seed s draws from seed ``k * _MEMBER_SEED + s``: apart from every
run's own seed (< 2**32 is allowed, but the runs' seeds are small) and from each other."""


def uses_labels(trainer: Trainer) -> bool:
    """False for a rule trained without labels (scored by the linear read-out only)."""
    return bool(getattr(trainer, "uses_labels", True))
