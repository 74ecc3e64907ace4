"""The machine a benchmark run measured on: CPU, cores, load, torch, GPU.

Ratios measured in one run on one machine are comparable; absolute times are not, so every
suite result carries this record (``info()``) and the ``machine`` group shows it as rows.

    python -m benchmarks.machine [--quick]
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int | None:
    """Cores this process may run on (CPU affinity, e.g. a container's cpuset); None where the
    platform does not say (macOS, Windows)."""
    getter = getattr(os, "sched_getaffinity", None)
    return len(getter(0)) if getter is not None else None


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: a busy machine makes every ratio noisier."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def gpu_info() -> dict[str, Any] | None:
    """Name and memory of CUDA device 0, or None without a usable GPU (the path modules skip)."""
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return {
        "name": str(props.name),
        "memory_gib": round(props.total_memory / 2**30, 2),
        "count": torch.cuda.device_count(),
        "cuda": torch.version.cuda,
    }


def info() -> dict[str, Any]:
    """Everything the results depend on, as one JSON-ready dict (taken at the start of a run)."""
    return {
        "cpu": cpu_model(),
        "arch": platform.machine(),
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "load_average": load_average(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu_info(),
    }


def _row(name: str, value: float, unit: str) -> dict[str, Any]:
    return {"group": "machine", "name": name, "value": float(value), "unit": unit,
            "baseline": None, "ratio": None, "target": None, "ok": None}


def rows(quick: bool, machine: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The machine record as rows (facts, not measurements: no baseline, ratio or target)."""
    m = machine if machine is not None else info()
    out = [_row(f"logical cores (os.cpu_count): {m['cpu']}", m["cpu_count"] or 0, "cores")]
    if m["usable_cores"] is not None:
        out.append(_row("cores usable by this process (affinity)", m["usable_cores"], "cores"))
    if m["load_average"] is not None:
        out.append(_row("load average at start (1 min)", m["load_average"][0], "runnable tasks"))
    out.append(_row(f"torch {m['torch']} intra-op threads", m["torch_threads"], "threads"))
    gpu = m["gpu"]
    if gpu is not None:
        out.append(_row(f"GPU memory: {gpu['name']} (CUDA {gpu['cuda']})", gpu["memory_gib"], "GiB"))
    return out


if __name__ == "__main__":
    from benchmarks.suite import run_alone

    raise SystemExit(run_alone(rows))
