"""``sim:acoustic`` against wavetorch 0.2.1 (CPU, one thread) and the bandwidth ceiling.

    python -m benchmarks.acoustic

Same grid, batch and number of steps on both sides, measured interleaved (A/B/A/B, medians)
in one process: physnn's cavity with its membranes against ``WaveCell(c_nl=1e-3)``, and
the plain field update (no membranes) against ``c_nl = 0``. ``value`` is physnn's cell
updates per second (interior cells x batch x steps / seconds); ``ratio`` is physnn's speed
over wavetorch's (> 1: physnn is faster). At 128 x 128 and 512 x 512 the black-box rows
also compare with the float32 5-point leapfrog ceiling of this machine
(``limits.measure_bandwidth``; both grids fit in the caches here, so the fraction can pass 1;
2048 x 2048 is streamed from memory). Forward + backward is the gradient of the summed read-out
with respect to the inputs (``amplitudes``; wavetorch: its summed probe intensities).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks import limits, wavetorch_harness
from physnn.sim.acoustic import AcousticCavity, AcousticConfig

Row = dict[str, Any]


def _interleaved(a: Callable[[], object], b: Callable[[], object], reps: int) -> tuple[float, float]:
    """Median seconds of ``a`` and ``b`` run alternately (after one warm-up each)."""
    a()
    b()
    ta, tb = [], []
    for _ in range(reps):
        for fn, ts in ((a, ta), (b, tb)):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)


def _cavity(g: int, membranes: bool) -> AcousticCavity:
    kw: dict[str, Any] = {} if g == 20 else {"window_steps": 256, "transient_steps": 64}
    return AcousticCavity(AcousticConfig(grid=(g, g), n_membranes=4 if membranes else 0, **kw))


def _physnn(dev: AcousticCavity, batch: int, steps: int, grad: bool) -> Callable[[], object]:
    x = torch.rand(batch, dev.config.n_in, generator=torch.Generator().manual_seed(1))

    def fwd() -> object:
        with torch.no_grad():
            return dev.simulate(x, steps)["_re_im"]

    def fwd_bwd() -> object:
        xg = x.clone().requires_grad_(True)
        dev.amplitudes(xg).sum().backward()
        return xg.grad

    return fwd_bwd if grad else fwd


def _case(g: int, batch: int, steps: int, membranes: bool, grad: bool, reps: int) -> tuple[float, float]:
    """Seconds of physnn and of wavetorch for one case."""
    dev = _cavity(g, membranes)
    net = wavetorch_harness.model(g, 1e-3 if membranes else 0.0)
    return _interleaved(
        _physnn(dev, batch, steps, grad),
        lambda: wavetorch_harness.run(net, batch, steps, grad),
        reps,
    )


def _row(name: str, cells: float, t_phys: float, t_wt: float, target: float) -> Row:
    ratio = t_wt / t_phys
    return {
        "group": "acoustic", "name": name, "value": cells / t_phys, "unit": "cell updates/s",
        "baseline": "wavetorch 0.2.1 (same grid, batch, steps)", "ratio": ratio,
        "target": f">= {target:g}x", "ok": ratio >= target,
    }


def rows(quick: bool) -> list[Row]:
    """The acoustic rows; without wavetorch, one row saying so."""
    torch.set_num_threads(1)
    if wavetorch_harness.load() is None:
        return [{"group": "acoustic", "name": "wavetorch comparison skipped: wavetorch is not "
                 "installed (pip install -e .[bench])", "value": float("nan"), "unit": "",
                 "baseline": None, "ratio": None, "target": None, "ok": None}]
    reps = 3 if quick else 5
    out: list[Row] = []
    fwd = [(20, 1, 576, 3.0), (20, 64, 576, 5.0)] + ([] if quick else [(20, 400, 576, 5.0)])
    # 128 x 128 and 512 x 512 fit in this machine's caches (0.13 and 2 MB per field);
    # 2048 x 2048 (16 MB per field) is the one streamed from memory
    big = [(128, 1, 64 if quick else 320), (512, 1, 16 if quick else 128)]
    big += [] if quick else [(2048, 1, 16)]
    for g, b, t, target in fwd:
        tp, tw = _case(g, b, t, True, False, reps)
        out.append(_row(f"black-box forward {g}x{g}, batch {b}, {t} steps, membranes", g * g * b * t,
                        tp, tw, target))
    tp, tw = _case(20, 64, 576, False, False, reps)
    out.append(_row("black-box forward 20x20, batch 64, 576 steps, field only (c_nl = 0)",
                    20 * 20 * 64 * 576, tp, tw, 5.0))
    ceiling = limits.measure_bandwidth(quick)["leapfrog_cells_per_s"]
    for g, b, t in big:
        tp, tw = _case(g, b, t, True, False, reps)
        row = _row(f"black-box forward {g}x{g}, batch {b}, {t} steps, membranes", g * g * b * t,
                   tp, tw, 1.0)
        out.append(row)
        frac = row["value"] / ceiling
        out.append({
            "group": "acoustic", "name": f"black-box forward {g}x{g}: fraction of the leapfrog "
            "bandwidth ceiling (triad / 12 B)", "value": frac, "unit": "fraction",
            "baseline": f"{ceiling:.3g} cell updates/s", "ratio": None, "target": ">= 0.4",
            "ok": frac >= 0.4,
        })
    grads = [(20, 64, 576), (128, 1, 64 if quick else 320), (512, 1, 16 if quick else 64)]
    for g, b, t in grads if not quick else grads[:2]:
        tp, tw = _case(g, b, t, True, True, reps)
        out.append(_row(f"forward + backward {g}x{g}, batch {b}, {t} steps, membranes",
                        g * g * b * t, tp, tw, 2.0))
    if torch.cuda.is_available() and not quick:
        out.append(_gpu_row())
    return out


def _gpu_row() -> Row:
    """Full-batch throughput of the default cavity on the GPU (float32)."""
    dev = _cavity(20, True)
    x = torch.rand(4096, dev.config.n_in, device="cuda")
    with torch.no_grad():
        dev.simulate(x)
        torch.cuda.synchronize()
        t = time.perf_counter()
        dev.simulate(x)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t
    return {"group": "acoustic", "name": "GPU black-box forward 20x20, batch 4096, 576 steps",
            "value": 400 * 4096 * 576 / dt, "unit": "cell updates/s", "baseline": None,
            "ratio": None, "target": None, "ok": None}


if __name__ == "__main__":
    for r in rows(quick=False):
        print(r)
