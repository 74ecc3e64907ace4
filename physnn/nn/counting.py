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

import torch
from torch.utils import flop_counter
from torch.utils._python_dispatch import (
    TorchDispatchMode,
    _get_current_dispatch_mode_stack,
    _pop_mode,
    _push_mode,
)

aten = torch.ops.aten
_SHAPE_QUERIES = frozenset(
    getattr(getattr(aten, op), overload)
    for op, overload in [
        ("sym_is_contiguous", "default"), ("is_contiguous", "default"),
        ("is_contiguous", "memory_format"), ("is_strides_like_format", "default"),
        ("is_non_overlapping_and_dense", "default"), ("size", "default"),
        ("sym_size", "default"), ("stride", "default"), ("sym_stride", "default"),
        ("storage_offset", "default"), ("sym_storage_offset", "default"), ("numel", "default"),
        ("sym_numel", "default"), ("dim", "default"),
    ]
    if hasattr(aten, op) and hasattr(getattr(aten, op), overload)
) | {torch.ops.prim.layout.default}
"""Metadata queries torch's FLOP counter lets through uncounted (as ``NotImplemented``)."""
_COMPOSITE = torch._C.DispatchKey.CompositeImplicitAutograd
_DECOMPOSES: dict[Any, bool] = {}


class FlopDispatchMode(TorchDispatchMode):
    """torch's ``FlopCounterMode`` dispatch rule, without its per-module breakdown: an op with
    a composite decomposition is counted as the ops it decomposes into, any other op runs and
    ``formulas[op packet](*args, out_val=out, **kwargs)`` is called on it.

    Why not torch's own: that one tries every op's decomposition inside a fresh mode push,
    tracks modules and passes a compiler guard, about 150 us an op. A simulator replayed in
    torch ops under the ledger (the acoustic cavity: some 10^5 ops a pass) spent 45 s of a
    one-epoch run there. Whether an op decomposes is looked up once per op here, so the same
    ops are counted (``tests/test_flops.py`` checks the totals equal torch's mode's)."""

    def __init__(self, formulas: dict[Any, Any]) -> None:
        super().__init__()
        self.formulas = formulas

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in _SHAPE_QUERIES:
            return NotImplemented
        decomposes = _DECOMPOSES.get(func)
        if decomposes is None:
            decomposes = _DECOMPOSES[func] = func is not torch.ops.prim.device.default and (
                _COMPOSITE in func.py_kernels
                or torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), _COMPOSITE))
        if decomposes:
            with self:
                r = func.decompose(*args, **kwargs)
            if r is not NotImplemented:
                return r
        out = func(*args, **kwargs)
        formula = self.formulas.get(func._overloadpacket)
        if formula is not None:
            formula(*args, out_val=out, **kwargs)
        return out


_FLOP_MODES: tuple[type, ...] = tuple(
    c for c in (flop_counter.FlopCounterMode, getattr(flop_counter, "_FlopCounterMode", None),
                FlopDispatchMode)
    if isinstance(c, type)
)
"""Dispatch-mode classes of FLOP counters: torch's (the public one was the mode before 2.6)
and the ledger's."""


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
