"""A 4-trial sweep on each executor, in one process: one after another, a local pool of 2, and a
local Ray instance with 2 CPUs; wall-time ratios to the first and a check that every trial's
numbers are identical.

    python -m benchmarks.executors [--quick] [--epochs N]

The sweep is ``digits-optical`` x ``train.lr`` in {5e-4, 2e-3} x seeds {0, 1}, one torch
thread per trial in every executor (the sweep's default, so that the numbers cannot depend on
the executor). The Ray instance is started before its timed sweep, as on a cluster that is
already up; a row says how long starting it took. The ratio is the result: this machine is
shared.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from physnn.experiments.sweep import SweepResult, sweep

GROUP = "executors"
TARGET = 0.6
"""Two workers on two cores: at most 0.6 of the wall time of one after another."""
COMPARED = ("test_acc", "train_acc", "queries_train", "flops_train_total")


def spec(epochs: int | None) -> dict[str, Any]:
    """The 4-trial sweep (no selection: every candidate on every seed)."""
    sets = ["train.eval_train=false"] + ([f"train.epochs={epochs}"] if epochs else [])
    return {"name": "executors", "base": "digits-optical", "set": sets, "seeds": [0, 1],
            "axes": {"train.lr": [5e-4, 2e-3]}}


def figures(result: SweepResult) -> dict[tuple[str, int], tuple[float | None, ...]]:
    """Each trial's compared figures (NaN as None: a NaN never equals itself)."""
    return {(r.candidate.slug, s): tuple(None if math.isnan(f[k]) else f[k] for k in COMPARED)
            for r in result.rows for s, f in r.figures.items()}


def timed(folder: Path, epochs: int | None, **executor: Any) -> tuple[float, SweepResult]:
    t0 = time.perf_counter()
    result = sweep(spec(epochs), out=folder, progress=False, **executor)
    return time.perf_counter() - t0, result


def _row(name: str, value: float, unit: str, baseline: str | None = None,
         ratio: float | None = None, target: str | None = None, ok: bool | None = None,
         **extra: Any) -> dict[str, Any]:
    return {"group": GROUP, "name": name, "value": value, "unit": unit, "baseline": baseline,
            "ratio": ratio, "target": target, "ok": ok, **extra}


def rows(quick: bool, epochs: int | None = None) -> list[dict[str, Any]]:
    """Wall times and ratios of the three executors on the same sweep, and their agreement."""
    epochs = 3 if quick and epochs is None else epochs
    length = f"{epochs} epochs" if epochs else "the preset's 60 epochs"
    what = f"4-trial sweep of digits-optical ({length})"
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        base, one = timed(Path(tmp) / "one", epochs, jobs=1)
        ref = figures(one)
        out.append(_row(f"{what}, one after another (--jobs 1)", base, "s"))
        arms: list[tuple[str, dict[str, Any]]] = [("local pool (--jobs 2)", {"jobs": 2})]
        try:
            import ray
        except ImportError:
            ray = None
            out.append({**_row("Ray local: not measured", 0.0, "runs"),
                        "note": "Ray is not installed: pip install -e '.[cluster]'"})
        if ray is not None:
            arms.append(("local Ray, 2 CPUs, already running (--ray)", {"ray": "local"}))
        for label, executor in arms:
            if "ray" in executor:  # start it first: an existing cluster does not pay this
                t0 = time.perf_counter()
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
                out.append(_row("starting a local Ray instance (not in the row below)",
                                time.perf_counter() - t0, "s"))
            try:
                wall, res = timed(Path(tmp) / label.split()[1], epochs, **executor)
            finally:
                if "ray" in executor:
                    ray.shutdown()
            differ = sum(1 for k, v in figures(res).items() if ref.get(k) != v) + len(
                set(ref) - set(figures(res)))
            ratio = wall / base
            out.append(_row(f"{what}, {label}", wall, "s", "--jobs 1", ratio,
                            None if quick else f"<= {TARGET}",
                            None if quick else ratio <= TARGET, executor=res.executor))
            out.append(_row(f"{label}: trials whose numbers differ from --jobs 1", float(differ),
                            "trials", target="0", ok=differ == 0))
    return out


def main() -> None:
    """Print the rows."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3 epochs per trial, no targets")
    p.add_argument("--epochs", type=int, help="epochs per trial (default: the preset's 60)")
    a = p.parse_args()
    for row in rows(a.quick, a.epochs):
        print(row)


if __name__ == "__main__":
    main()
