"""An exponential moving average of the digital weights, for evaluation only.

Full-batch local learning with a fresh random wrong label every epoch keeps the weights
moving: on small data sets (316 vowel tokens) the test accuracy of consecutive epochs
jumps by several points while the training accuracy stays put. Evaluating with a
(Polyak) average of the recent weights smooths that out. Training always continues from
the live weights; only predictions use the average. No device is queried to form it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn


class WeightAverage:
    """``avg <- decay * avg + (1 - decay) * w`` after every epoch, with Adam's bias correction.

    The correction divides by ``1 - decay**t``, so after ``t`` epochs the average weighs only
    the weights of those epochs (not the zeros it starts from): ``decay = 0.98`` averages over
    the last ~50 epochs, however few have run. ``modules``: every trainable digital module,
    averaged together so they match (``Trainer.digital_modules()``: the blocks' Linears, plus
    the read-out head of backprop and PAT).
    """

    def __init__(self, modules: Iterable[nn.Module], decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the averaging decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.params = [p for m in modules for p in m.parameters()]
        self.avg = [torch.zeros_like(p, dtype=torch.float64) for p in self.params]
        self.steps = 0

    @torch.no_grad()
    def update(self) -> None:
        """Fold the live weights in (once per epoch; kept in float64 so long runs do not round off)."""
        self.steps += 1
        for a, p in zip(self.avg, self.params, strict=True):
            a.mul_(self.decay).add_(p.double(), alpha=1.0 - self.decay)

    def averaged(self) -> list[torch.Tensor]:
        """The bias-corrected averages, one per parameter (the live weights before any update)."""
        if self.steps == 0:
            return [p.detach().clone() for p in self.params]
        corr = 1.0 - self.decay**self.steps
        return [(a / corr).to(p.dtype) for a, p in zip(self.avg, self.params, strict=True)]

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Inside the block the network holds the averaged weights; the live ones come back after."""
        live = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, a in zip(self.params, self.averaged(), strict=True):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, w in zip(self.params, live, strict=True):
                    p.copy_(w)

    def state_dict(self) -> dict:
        """The running average and its step count, so a resumed run evaluates the same weights."""
        return {"decay": self.decay, "steps": self.steps, "avg": [a.clone() for a in self.avg]}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state_dict``; refuses an average of another decay or parameter set."""
        if state["decay"] != self.decay or len(state["avg"]) != len(self.avg):
            raise ValueError(
                f"checkpoint holds an average with decay {state['decay']} over "
                f"{len(state['avg'])} tensors; this run has {self.decay} over {len(self.avg)}"
            )
        self.steps = int(state["steps"])
        for a, s in zip(self.avg, state["avg"], strict=True):
            a.copy_(s)
