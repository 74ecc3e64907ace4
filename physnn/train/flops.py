"""Digital FLOP accounting: only the trainable digital part, never the (physical) device."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

from torch.utils.flop_counter import FlopCounterMode


class FlopMeter:
    """Accumulates FLOPs counted by ``torch.utils.flop_counter`` under named phases."""

    def __init__(self) -> None:
        self.totals: dict[str, int] = defaultdict(int)

    @contextmanager
    def count(self, phase: str) -> Iterator[None]:
        """Add the FLOPs of the wrapped block to ``phase``.

        A device's measurement inside the block is not counted: ``physnn.nn.PhysicalLayer``
        hides the physical system's work from every FLOP counter.
        """
        mode = FlopCounterMode(display=False)
        with mode:
            yield
        self.totals[phase] += mode.get_total_flops()

    def state_dict(self) -> dict[str, int]:
        """Totals per phase (a resumed run keeps counting from them)."""
        return dict(self.totals)

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from ``state_dict``'s totals."""
        self.totals = defaultdict(int, state)
