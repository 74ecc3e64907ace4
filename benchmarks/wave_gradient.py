"""The raw-audio cavity's gradient: the adjoint loop against autograd through the time loop.

    python -m benchmarks.wave_gradient [--quick]

The cavity of the ``vowels-wave-backprop`` preset (24 x 24 cells, 8 kHz audio, a 12 x 7
design region, 3 probes, energy fractions), one batch of waveforms, the gradient of a loss
on the probe fractions with respect to the design region's wave speed and the inputs: the
work of one optimiser step of that preset. Interleaved in one process (A/B/A/B, medians, one
thread): ``gradient = "adjoint"`` (``physnn.sim.acoustic.wave_adjoint``) against
``gradient = "autograd"`` (every step recorded, ``checkpoint_steps = 256`` as before the
adjoint existed). ``ratio`` is autograd's time over the adjoint's (> 1: the adjoint is
faster). The last row is the adjoint's forward + backward over one black-box forward pass:
what a gradient costs in queries' worth of simulation.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from physnn.sim.acoustic.wave_config import WaveformConfig
from physnn.sim.acoustic.waveform import WaveformCavity

Row = dict[str, Any]

PRESET_DEVICE: dict[str, Any] = {
    "kind": "sim:acoustic-wave", "sample_rate": 8000, "grid": [24, 24], "dx": 0.02,
    "sponge_cells": 4, "readout": "fraction",
}
"""The device of ``vowels-wave-backprop`` (``n_in`` set per case)."""


def _device(n_in: int, gradient: str = "adjoint") -> WaveformCavity:
    cfg = {k: v for k, v in PRESET_DEVICE.items() if k != "kind"}
    return WaveformCavity(WaveformConfig(**cfg, n_in=n_in, gradient=gradient))


def _interleaved(fns: list[Callable[[], object]], reps: int) -> list[float]:
    """Median seconds of each function, run in turn ``reps`` times after one warm-up each."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for fn, ts in zip(fns, times, strict=True):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return [statistics.median(ts) for ts in times]


def _gradient_step(gradient: str, n_in: int, batch: int) -> Callable[[], object]:
    """One forward + backward of the cavity with the given gradient method."""
    dev = _device(n_in, gradient)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(batch, n_in, generator=gen, dtype=torch.float64) * 2 - 1
    labels = torch.randint(0, 3, (batch,), generator=gen)

    def step() -> object:
        dev.wave_speed.grad = None
        xg = x.clone().requires_grad_(True)
        y = dev.forward_with_grad(xg)
        torch.nn.functional.nll_loss(y.clamp_min(1e-12).log(), labels).backward()
        return dev.wave_speed.grad

    return step


def _black_box(n_in: int, batch: int) -> Callable[[], object]:
    dev = _device(n_in)
    x = torch.rand(batch, n_in, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def query() -> object:
        with torch.no_grad():
            return dev(x * 2 - 1)

    return query


def rows(quick: bool) -> list[Row]:
    """Adjoint against autograd, and the adjoint's cost in black-box forward passes."""
    torch.set_num_threads(1)
    n_in, batch, reps = (200, 8, 3) if quick else (800, 32, 3)
    steps = _device(n_in).config.steps
    t_adj, t_auto, t_fwd = _interleaved(
        [_gradient_step("adjoint", n_in, batch), _gradient_step("autograd", n_in, batch),
         _black_box(n_in, batch)], reps,
    )
    case = f"24x24, batch {batch}, {n_in} samples ({steps} steps)"
    return [
        {"group": "wave gradient", "name": f"forward + backward, adjoint, {case}",
         "value": t_adj, "unit": "s", "baseline": "autograd through the loop (checkpoint 256)",
         "ratio": t_auto / t_adj, "target": ">= 3x", "ok": t_auto / t_adj >= 3},
        {"group": "wave gradient", "name": f"forward + backward, adjoint, in black-box queries, {case}",
         "value": t_adj / t_fwd, "unit": "queries", "baseline": "one black-box forward",
         "ratio": None, "target": "<= 3", "ok": t_adj / t_fwd <= 3},
    ]


if __name__ == "__main__":
    import sys

    from benchmarks.suite import run_alone

    sys.exit(run_alone(rows, sys.argv[1:]))
