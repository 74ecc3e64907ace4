"""Acoustic cavity: peak memory and time against the number of time steps, black box vs autograd.

    python benchmarks/acoustic_memory.py [--batch 400] [--steps 256 1024 4096] [--threads 1]

Each measurement runs in a fresh interpreter and reads the kernel's peak resident set size
(VmHWM, reset just before the call; Linux only). The black box (``device(x)``) accumulates
the microphone spectra as running sums, so its peak must not grow with the steps; the
baselines in the same run are ``forward_with_grad`` plus a backward pass, with gradient
checkpointing (segments of 32 steps) and without it (every step stored). Absolute numbers
depend on the machine; compare rows of one invocation.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

MEASURE = """
import json, re, sys, time, torch
mode, batch, steps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
from physnn.sim.acoustic import AcousticCavity

def status(key):
    with open("/proc/self/status") as f:
        return int(re.search(key + r":\\s+(\\d+)", f.read()).group(1)) / 1024

window = 256
dev = AcousticCavity.from_description(transient_steps=max(steps - window, 0), window_steps=window,
                     readout="amplitude", checkpoint_steps=32 if mode == "grad-checkpoint" else 0)
x = torch.rand(batch, dev.spec.n_in, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    dev(x[:2])  # warm-up: imports, allocator
if mode != "black-box":
    xw = x[:2].clone().requires_grad_(True)
    dev.forward_with_grad(xw).sum().backward()
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
t0 = time.perf_counter()
if mode == "black-box":
    dev(x)
else:
    xg = x.clone().requires_grad_(True)
    dev.forward_with_grad(xg).sum().backward()
wall = time.perf_counter() - t0
print(json.dumps({"peak_mb": status("VmHWM") - before, "wall_s": wall}))
"""


def measure(mode: str, batch: int, steps: int, threads: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, mode, str(batch), str(steps), str(threads)],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=400)
    p.add_argument("--steps", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--grad-batch", type=int, default=32, help="batch of the autograd baselines")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    if not sys.platform.startswith("linux"):
        raise SystemExit("needs Linux (/proc/self/status, /proc/self/clear_refs)")
    print(f"{'mode':16s} {'batch':>5s} {'steps':>6s} {'peak MB':>9s} {'wall s':>8s} {'samples/s':>10s}")
    for mode, batch in (
        ("black-box", args.batch),
        ("grad-checkpoint", args.grad_batch),
        ("grad-full", args.grad_batch),
    ):
        for steps in args.steps:
            r = measure(mode, batch, steps, args.threads)
            print(
                f"{mode:16s} {batch:5d} {steps:6d} {r['peak_mb']:9.1f} {r['wall_s']:8.3f} "
                f"{batch / r['wall_s']:10.0f}"
            )


if __name__ == "__main__":
    main()
