"""The learning rules by name: ``train.method`` -> a trainer factory.

Every trainer honours one contract (what the runner relies on): built from
``(cfg, net, n_classes, seed)``; ``train_epoch(x, y) -> list[float]`` (one pass; ``x`` may be
a lazy feature store, so only ``x[index_tensor]``, ``x[a:b]`` and ``x.shape`` are used);
``predict(x) -> LongTensor``; ``state_dict()`` / ``load_state_dict()`` (bit-exact resume);
``flops`` (a FlopMeter with phases ``train``, ``eval`` and, for PAT and backprop, ``model``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn

from .backprop import Backprop, EndToEndSettings
from .ff import FFSettings, ForwardForward
from .flops import FlopMeter
from .ledger import LedgerFlopMeter
from .network import PhysicalNetwork
from .pat import PhysicsAware
from .phyll import PhyLL, PhyLLSettings


class Trainer(Protocol):
    flops: FlopMeter

    def train_epoch(self, x: Any, y: torch.Tensor) -> list[float]: ...

    def predict(self, x: Any) -> torch.Tensor: ...

    def digital_modules(self) -> list[nn.Module]:
        """Every trainable digital module (what ``train.average`` averages)."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed + 1)


def _local_settings(cls, t: dict[str, Any], n_classes: int, label_width: int, **extra):
    """PhyLLSettings (or a subclass) from ``[train]``: every field that has a config key."""
    values: dict[str, Any] = {"n_classes": n_classes, "label_width": label_width, **extra}
    for f in dataclasses.fields(cls):
        if f.name in values or f.name not in t:
            continue
        v, default = t[f.name], f.default
        if isinstance(default, bool) or not isinstance(v, int | float):
            values[f.name] = v
        elif isinstance(default, float):
            values[f.name] = float(v)
        elif isinstance(default, int):
            values[f.name] = int(v)
        else:
            values[f.name] = v
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in known})


def _phyll(cfg: dict[str, Any], net: PhysicalNetwork, n_classes: int, seed: int,
           label_width: int = 1) -> PhyLL:
    s = _local_settings(PhyLLSettings, cfg["train"], n_classes, label_width)
    trainer = PhyLL(net, s, _gen(seed))
    trainer.flops = LedgerFlopMeter()  # the same FLOP counting as every other rule
    return trainer


def _ff(cfg: dict[str, Any], net: PhysicalNetwork, n_classes: int, seed: int,
        label_width: int = 1) -> ForwardForward:
    t = cfg["train"]
    s = _local_settings(FFSettings, t, n_classes, label_width, threshold=float(t["ff_threshold"]))
    return ForwardForward(net, s, _gen(seed))


def _e2e(t: dict[str, Any], n_classes: int) -> EndToEndSettings:
    return EndToEndSettings(n_classes=n_classes, lr=float(t["lr"]), batch_size=int(t["batch_size"]))


def _backprop(cfg: dict[str, Any], net: PhysicalNetwork, n_classes: int, seed: int,
              label_width: int = 1) -> Backprop:
    return Backprop(net, _e2e(cfg["train"], n_classes), _gen(seed))


def _pat(cfg: dict[str, Any], net: PhysicalNetwork, n_classes: int, seed: int,
         label_width: int = 1) -> PhysicsAware:
    t = cfg["train"]
    return PhysicsAware(
        net, _e2e(t, n_classes), _gen(seed), twin=t["pat_twin"], mismatch=float(t["pat_mismatch"])
    )


Factory = Callable[..., Trainer]
"""``(cfg, net, n_classes, seed, label_width=1) -> Trainer``."""

METHODS: dict[str, Factory] = {
    "phyll": _phyll,
    "ff": _ff,
    "pat": _pat,
    "backprop": _backprop,
}
"""Learning rules by ``train.method``; model-free: phyll, ff; needing a model: pat, backprop."""


def make_trainer(
    cfg: dict[str, Any], net: PhysicalNetwork, n_classes: int, seed: int, label_width: int = 1
) -> Trainer:
    """The trainer ``cfg["train"]["method"]`` names, for ``net``.

    ``label_width``: inputs per class in the label overlay (``Dataset.label_width``); the
    end-to-end rules overlay no label and ignore it.
    """
    method = cfg["train"]["method"]
    if method not in METHODS:
        raise ValueError(f"unknown train.method {method!r}; allowed: {sorted(METHODS)}")
    return METHODS[method](cfg, net, n_classes, seed, label_width=label_width)
