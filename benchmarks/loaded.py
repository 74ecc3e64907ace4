"""The README's main job (its seeds one after another, without ``--jobs 2``) on a machine
other processes keep busy: wall time beside two CPU-bound competitors against the same job
alone, with physnn's thread defaults and with the old ones (torch's: every core, OpenMP
threads spin-waiting).

    python -m benchmarks.loaded [--quick] [--seeds 5] [--epochs N] [--no-old]

Each job runs in its own process (``python -m physnn.cli train digits-optical ...``), as a
user runs it; the competitors are ``python -c "while True: pass"``. The old defaults are
reproduced by importing torch before physnn (so libgomp starts without
``OMP_WAIT_POLICY=PASSIVE``) and passing torch's own default thread count. ``--quick`` runs a
one-epoch, one-seed variant with the new defaults only, without a target: it is mostly
Python imports, single-threaded. "Alone" means without the two competitors; whatever else
runs on the machine runs during both.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
COMPETITORS = 2
TARGET = 2.5
"""The job beside two competitors may take at most 2.5x its time alone."""
_OLD = "import torch, sys; from physnn.cli import main; sys.exit(main(sys.argv[1:]))"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def torch_default_threads() -> int:
    """torch's own default thread count in a fresh process (what the old CLI used)."""
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                         env=_env(), capture_output=True, text=True, check=True)
    return int(out.stdout)


def job_args(seeds: int, epochs: int | None, out: Path) -> list[str]:
    """The main job's arguments (``epochs``: a shorter variant; None: the preset's 60)."""
    args = ["train", "digits-optical", "--seeds", str(seeds), "--out", str(out), "--overwrite",
            "--no-progress"]
    if epochs is not None:
        args += ["--set", f"train.epochs={epochs}", "--set", f"train.eval_every={epochs}"]
    return args


def timed(args: list[str], old: bool, loaded: bool) -> tuple[float, float]:
    """(wall s, CPU s) of one job, beside ``COMPETITORS`` busy loops if ``loaded``."""
    cmd = [sys.executable, "-c", _OLD, *args, "--threads", str(torch_default_threads())] if old \
        else [sys.executable, "-m", "physnn.cli", *args]
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(COMPETITORS if loaded else 0)]
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(cmd, env=_env(), cwd=ROOT, check=True, capture_output=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _row(label: str, alone: tuple[float, float], busy: tuple[float, float], target: bool,
         what: str) -> dict[str, Any]:
    slow = busy[0] / alone[0]
    return {
        "group": "loaded",
        "name": f"{what}, {label}: wall beside {COMPETITORS} CPU-bound competitors / alone "
                f"(alone {alone[0]:.1f} s wall, {alone[1]:.1f} s CPU; beside them "
                f"{busy[0]:.1f} s wall, {busy[1]:.1f} s CPU)",
        "value": slow, "unit": "x wall time (loaded / alone)",
        "baseline": "the same command alone", "ratio": 1 / slow,
        "target": f"<= {TARGET}x" if target else None,
        "ok": slow <= TARGET if target else None,
    }


def rows(quick: bool, seeds: int = 5, epochs: int | None = None,
         old: bool = True) -> list[dict[str, Any]]:
    """Loaded/alone wall-time ratios of the main job, new defaults (and old, unless quick)."""
    if quick:
        seeds, epochs, old = 1, 1, False
    what = f"physnn train digits-optical --seeds {seeds}" + (
        f" --set train.epochs={epochs}" if epochs is not None else "")
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        args = job_args(seeds, epochs, Path(tmp))
        for label, is_old in [("new defaults", False), ("old defaults", True)][: 2 if old else 1]:
            alone = timed(args, is_old, loaded=False)
            busy = timed(args, is_old, loaded=True)
            # the quick variant is mostly imports (one process, one epoch): no target for it
            out.append(_row(label, alone, busy, not is_old and not quick, what))
    return out


def main() -> None:
    """Print the rows."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one seed, one epoch, new defaults only")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, help="shorter variant (default: the preset's)")
    p.add_argument("--no-old", action="store_true", help="skip the old defaults (slow when loaded)")
    a = p.parse_args()
    for row in rows(a.quick, a.seeds, a.epochs, not a.no_old):
        print(row)


if __name__ == "__main__":
    main()
