"""The pinned cases of ``test_pins.py`` as physnn at commit bb30284 computes them, per machine.

Why per machine: torch and MKL pick their kernels by CPU (AVX2 or AVX-512, Intel or AMD), and
those kernels round differently, so bb30284's own numbers differ between two CPUs at round-off,
which an epoch of training then amplifies. A refactor is bit-identical to bb30284 on the same
machine; ``data/pins_bb30284.json`` holds bb30284's metrics from every machine recorded so far,
and on a CPU that matches none of them the test records bb30284 here (``record``).

Add this machine's set to the file (needs bb30284 in the clone's git history)::

    python tests/pins_reference.py --add
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REFERENCE = "bb30284"
PINS_FILE = Path(__file__).parent / "data" / f"pins_{REFERENCE}.json"
ROOT = Path(__file__).parents[1]


def load_pins() -> dict[str, Any]:
    """``{"reference", "cases": [{"preset", "set", "metrics"}], "machines": [{"machine",
    "metrics"}]}``: each case names the metrics it pins (not the wall times, say)."""
    return json.loads(PINS_FILE.read_text())


def machine() -> str:
    """What decides the rounding: the CPU, the kernels torch dispatches to, torch's version."""
    import torch

    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model} ({torch.backends.cpu.get_cpu_capability()}), torch {torch.__version__}"


def record(cases: list[dict[str, Any]], workdir: Path) -> list[dict[str, Any]]:
    """Each case's metrics from bb30284's runner on this machine (seed 0, one thread).

    Raises ``LookupError`` when the clone has no bb30284 (a shallow clone, an sdist).
    """
    tree = workdir / REFERENCE
    tree.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", REFERENCE], capture_output=True, check=False
    )
    if archive.returncode != 0:
        raise LookupError(
            f"commit {REFERENCE} is not in this clone's history ({archive.stderr.decode().strip()})"
        )
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    cases_file, out_file = workdir / "cases.json", workdir / "metrics.json"
    cases_file.write_text(json.dumps(cases))
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", str(cases_file), str(out_file)],
        cwd=tree, env=env, check=True,
    )
    return json.loads(out_file.read_text())


def _worker(cases_file: Path, out_file: Path) -> None:
    """Runs inside ``record``'s subprocess, with bb30284's physnn first on the path."""
    import numpy as np
    import torch

    import physnn
    from physnn.experiments.config import apply_overrides, load_config
    from physnn.experiments.runner import run

    if Path.cwd() not in Path(physnn.__file__).resolve().parents:
        raise RuntimeError(f"imported physnn from {physnn.__file__}, not from {Path.cwd()}")
    torch.set_num_threads(1)
    metrics = []
    for case in json.loads(cases_file.read_text()):
        cfg = apply_overrides(load_config(case["preset"]), case["set"])
        with tempfile.TemporaryDirectory() as tmp:
            got = run(cfg, Path(tmp) / "run.h5", seed=0, progress=False).record["metrics"]
        metrics.append({k: np.asarray(got[k]).tolist() for k in case["metrics"]})
    out_file.write_text(json.dumps(metrics))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--add", action="store_true", help=f"append this machine's set to {PINS_FILE}")
    p.add_argument("--worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        _worker(*a.worker)
        return
    if not a.add:
        p.error("nothing to do: pass --add")
    pins = load_pins()
    name = f"{machine()}, recorded {datetime.date.today().isoformat()}"
    with tempfile.TemporaryDirectory() as tmp:
        metrics = record(pins["cases"], Path(tmp))
    pins["machines"].append({"machine": name, "metrics": metrics})
    PINS_FILE.write_text(json.dumps(pins, indent=1) + "\n")
    print(f"{PINS_FILE}: added {name}")


if __name__ == "__main__":
    main()
