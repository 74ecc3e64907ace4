"""Digital FLOP accounting: only the trainable digital part, never the (physical) device.

Counting FLOPs means running torch's dispatch-level ``FlopCounterMode``, which sees every op
through Python: on small networks that costs several times the arithmetic itself (a vowel
epoch with a fitted 20 -> 20 twin as device: 0.094 s counted, 0.016 s not). Training repeats
the same op sequence on the same shapes, so a block given a ``key`` (what decides its op
sequence: shapes, dtypes, settings) is counted exactly the first time and charged the cached
counts after; the totals equal counting every time. Blocks whose op sequence depends on the
data (L-BFGS iterations, Newton steps) take no key and are counted every time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode


def signature(*tensors: torch.Tensor) -> tuple[Any, ...]:
    """What of ``tensors`` decides the op sequence and FLOPs run on them: shape, dtype, device.

    Part of a ``count`` key; the caller adds the settings its block reads (steps, block index).
    """
    return tuple((t.shape, t.dtype, t.device.type) for t in tensors)


class FlopMeter:
    """Accumulates FLOPs counted by ``torch.utils.flop_counter`` under named phases.

    ``cache=False`` counts every block even when it has a key (the reference the cached
    counts are tested against).
    """

    def __init__(self, cache: bool = True) -> None:
        self.totals: dict[str, int] = defaultdict(int)
        self.cache = cache
        self._cached: dict[tuple[str, Hashable], tuple[int, int]] = {}
        self.measurements = 0
        """Blocks counted with a FLOP counter running (the rest were charged from the cache)."""

    @contextmanager
    def _measure(self) -> Iterator[list[int]]:
        """Count the wrapped block; the yielded list is filled with ``[total, backward]``."""
        mode = FlopCounterMode(display=False)
        result: list[int] = []
        with mode:
            yield result
        result[:] = [int(mode.get_total_flops()), 0]

    @contextmanager
    def count(self, phase: str, key: Hashable | None = None) -> Iterator[None]:
        """Add the FLOPs of the wrapped block to ``phase``.

        ``key``: a hashable that determines the block's op sequence (see ``signature``); the
        block is counted exactly the first time per ``(phase, key)`` and charged those counts
        after, with no counter running. Without a key every call is counted.
        A device's measurement inside the block is not counted: ``physnn.nn.PhysicalLayer``
        hides the physical system's work from every FLOP counter.
        """
        cacheable = key is not None and self.cache
        hit = self._cached.get((phase, key)) if cacheable else None
        if hit is None:
            self.measurements += 1
            with self._measure() as result:
                yield
            hit = (result[0], result[1])
            if cacheable:
                self._cached[(phase, key)] = hit
        else:
            yield
        self._charge(phase, *hit)

    def _charge(self, phase: str, total: int, backward: int) -> None:
        self.totals[phase] += total

    def state_dict(self) -> dict[str, int]:
        """Totals per phase (a resumed run keeps counting from them; the cache is rebuilt)."""
        return dict(self.totals)

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from ``state_dict``'s totals."""
        self.totals = defaultdict(int, state)
