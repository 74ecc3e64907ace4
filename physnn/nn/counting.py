"""Who pays for which FLOPs: the physical system's work is never counted as digital work.

The efficiency ledger counts digital FLOPs with ``torch.utils.flop_counter`` modes, which see
every op dispatched while they are active. A simulator standing in for a physical system, or
a twin whose cost belongs to its own ledger phase, must not leak into whatever counter the
caller has open (say, the trainable layers' ``train`` phase), so this module can hide the
ops of a block of code from every enclosing FLOP counter, and defines the small meter
protocol ``physnn.nn.physics_aware`` charges a twin's passes to.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

from torch.utils import flop_counter
from torch.utils._python_dispatch import _get_current_dispatch_mode_stack, _pop_mode, _push_mode

_FLOP_MODES: tuple[type, ...] = tuple(
    c for c in (flop_counter.FlopCounterMode, getattr(flop_counter, "_FlopCounterMode", None))
    if isinstance(c, type)
)
"""Dispatch-mode classes of torch's FLOP counter (the public one was the mode before 2.6)."""


@contextmanager
def hidden_from_flop_counters() -> Iterator[None]:
    """Run the block with every active FLOP counter paused; other dispatch modes stay on.

    Why: a device's measurement is what the physical system does, not digital work, and a
    twin's passes are charged to their own meter; an enclosing counter must see neither.
    """
    stack = _get_current_dispatch_mode_stack()
    if not any(isinstance(m, _FLOP_MODES) for m in stack):
        yield
        return
    popped = [_pop_mode() for _ in stack]  # top of the stack first
    kept = [m for m in reversed(popped) if not isinstance(m, _FLOP_MODES)]
    for m in kept:
        _push_mode(m)
    try:
        yield
    finally:
        for _ in kept:
            _pop_mode()
        for m in reversed(popped):
            _push_mode(m)


class TwinMeter(Protocol):
    """What ``physnn.nn.physics_aware`` charges a twin's FLOPs to.

    ``count(key, n_samples)`` wraps one forward (``key`` ends in ``:forward``) or backward
    (``:backward``) pass of ``n_samples`` samples. ``physnn.train.ledger.SampledFlops`` is
    one (the ledger's ``model`` phase); ``TwinFlops`` is a plain exact one.
    """

    def count(self, key: str, n_samples: int) -> AbstractContextManager[Any]:
        """A context that counts the FLOPs of the pass it wraps under ``key``."""
        ...


class TwinFlops:
    """Exact FLOPs of a twin's passes per key (matrix products, as torch's counter knows them).

    For users of ``physnn.nn`` outside the trainers: ``totals["layer:backward"]`` is what
    differentiating through the twin cost. The trainers use the ledger's pointwise-aware,
    sampled meter instead.
    """

    def __init__(self) -> None:
        self.totals: dict[str, int] = defaultdict(int)
        self.samples: dict[str, int] = defaultdict(int)

    @contextmanager
    def count(self, key: str, n_samples: int) -> Iterator[None]:
        """Count the wrapped pass exactly under ``key`` (``n_samples`` kept for per-sample rates)."""
        mode = flop_counter.FlopCounterMode(display=False)
        with mode:
            yield
        self.totals[key] += int(mode.get_total_flops())
        self.samples[key] += int(n_samples)
