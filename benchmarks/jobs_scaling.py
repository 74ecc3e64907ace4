"""Wall time of a multi-seed ``physnn train`` with ``--jobs 1`` against ``--jobs N``, in one run.

The job runner's claim: N seeds on N cores take about 1/N of the wall time of running them
one after another, with the same per-seed numbers. Both arms run here, in this process, one
after the other (this machine is shared and noisy: the ratio is the result, not the seconds):

- ``--jobs 1 --threads 1``: the seeds one after another on one core (numbers to compare);
- ``--jobs 1`` (torch's default threads): one after another, each seed using every core;
- ``--jobs N``: N worker processes, one torch thread each.

    python benchmarks/jobs_scaling.py --preset digits-optical --seeds 2 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from physnn.experiments.summary import train


def arm(preset: str, seeds: int, jobs: int, threads: int | None, epochs: int | None,
        folder: Path) -> tuple[float, list[float]]:
    """(wall seconds, per-seed test accuracy) of one fresh multi-seed run."""
    default = torch.get_num_threads()
    if threads is not None and jobs == 1:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    summary = train(preset, out=folder, seeds=seeds, epochs=epochs, jobs=jobs, threads=threads,
                    progress=False)
    wall = time.perf_counter() - t0
    torch.set_num_threads(default)
    return wall, [r.test_acc for r in summary.results]


def main() -> None:
    """Run the three arms and print (and optionally save) their times and ratios."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="digits-optical")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--epochs", type=int, help="override train.epochs (default: the preset's)")
    p.add_argument("--json", help="write the results here")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        serial, acc_serial = arm(a.preset, a.seeds, 1, 1, a.epochs, Path(tmp) / "serial")
        default, acc_default = arm(a.preset, a.seeds, 1, None, a.epochs, Path(tmp) / "default")
        pooled, acc_pooled = arm(a.preset, a.seeds, a.jobs, 1, a.epochs, Path(tmp) / "pooled")
    out = {
        "preset": a.preset, "seeds": a.seeds, "jobs": a.jobs, "cores": torch.get_num_threads(),
        "wall_s": {"jobs1_threads1": serial, "jobs1_default_threads": default,
                   f"jobs{a.jobs}_threads1": pooled},
        "ratio_pooled_over_serial": pooled / serial,
        "ratio_pooled_over_default": pooled / default,
        "test_acc": {"jobs1_threads1": acc_serial, "jobs1_default_threads": acc_default,
                     f"jobs{a.jobs}_threads1": acc_pooled},
        "identical_per_seed": acc_serial == acc_pooled,
    }
    print(json.dumps(out, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
