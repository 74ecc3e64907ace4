"""This machine's memory bandwidth, one thread: the ceiling of a bandwidth-bound stencil.

STREAM-like kernels with torch on one thread: triad ``a = b + s c`` and copy ``a = b`` on
arrays far larger than the caches, and the triad on arrays that fit in L2. A 5-point
leapfrog must read two fields and write one per cell update (12 bytes in float32), so its
ceiling is ``triad bytes/s / 12`` cell updates per second from memory.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

LEAPFROG_BYTES = 12
"""Bytes per cell update a float32 5-point leapfrog moves at the least."""


def _best(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs (after one warm-up)."""
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def measure_bandwidth(quick: bool) -> dict[str, float]:
    """``triad_gbs``, ``copy_gbs`` (from memory), ``triad_l2_gbs`` (in cache) and
    ``leapfrog_cells_per_s`` (triad bytes/s / 12)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        n = (8 if quick else 32) * 2**20  # floats: 32 MiB (quick) or 128 MiB per array
        a, b, c = (torch.rand(n) for _ in range(3))
        reps = 3 if quick else 7

        def triad() -> None:
            torch.add(b, c, alpha=1.5, out=a)

        def copy() -> None:
            a.copy_(b)

        triad_gbs = 3 * 4 * n / _best(triad, reps) / 1e9
        copy_gbs = 2 * 4 * n / _best(copy, reps) / 1e9
        m = 32 * 1024  # 128 KiB per array: three fit in L2
        a2, b2, c2 = (torch.rand(m) for _ in range(3))
        inner = 200

        def triad_l2() -> None:
            for _ in range(inner):
                torch.add(b2, c2, alpha=1.5, out=a2)

        l2_gbs = 3 * 4 * m * inner / _best(triad_l2, reps) / 1e9
    finally:
        torch.set_num_threads(threads)
    return {
        "triad_gbs": triad_gbs,
        "copy_gbs": copy_gbs,
        "triad_l2_gbs": l2_gbs,
        "leapfrog_cells_per_s": triad_gbs * 1e9 / LEAPFROG_BYTES,
    }


def rows(quick: bool) -> list[dict[str, object]]:
    """The measured limits as benchmark rows (no baseline: they are the baselines)."""
    bw = measure_bandwidth(quick)
    units = {"triad_gbs": "GB/s", "copy_gbs": "GB/s", "triad_l2_gbs": "GB/s",
             "leapfrog_cells_per_s": "cell updates/s"}
    names = {"triad_gbs": "STREAM triad, arrays >> caches, 1 thread",
             "copy_gbs": "copy, arrays >> caches, 1 thread",
             "triad_l2_gbs": "triad in L2 (128 KiB arrays), 1 thread",
             "leapfrog_cells_per_s": "5-point leapfrog ceiling = triad / 12 B"}
    return [
        {"group": "limits", "name": names[k], "value": v, "unit": units[k], "baseline": None,
         "ratio": None, "target": None, "ok": None}
        for k, v in bw.items()
    ]


if __name__ == "__main__":
    for row in rows(quick=False):
        print(row)
