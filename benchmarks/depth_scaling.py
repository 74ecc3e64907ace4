"""Peak memory and time per epoch against depth (2, 4, 8 blocks): local learning vs backprop.

PhyLL trains one block at a time on detached inputs, so its memory should not grow with
depth; end-to-end backpropagation keeps every block's activations (and the differentiable
device's graph) until the backward pass, so it should grow about linearly. Each
(method, depth) runs in a fresh Python process, so one measurement's allocator state cannot
leak into the next; both methods use the same batch size (default: full batch).

    python benchmarks/depth_scaling.py                      # digits-optical, 2/4/8 blocks
    python benchmarks/depth_scaling.py --epochs 3 --batch-size 256 --out depth.png

Prints a Markdown table and writes the plot (default ``depth_scaling.png``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

METHODS = ("phyll", "backprop")


def measure(preset: str, method: str, depth: int, width: int, epochs: int, batch_size: int,
            torch_device: str) -> dict:
    """Train ``epochs`` epochs of one (method, depth) in this process; time and peak memory."""
    import torch

    from physnn.experiments.config import load_config
    from physnn.experiments.runner import build_network, load_data, make_trainer, map_into_domain
    from physnn.train.ledger import PeakMemory

    torch.set_num_threads(1)
    cfg = load_config(preset).merged({"network": {"hidden": [width] * depth},
                                      "train": {"method": method, "batch_size": batch_size}})
    raw = load_data(cfg, 0).to(torch_device)
    net = build_network(cfg, raw.n_features, 0, torch_device)
    data = map_into_domain(raw, net.blocks[0].device.spec.domain)
    trainer = make_trainer(cfg, net, data.n_classes, 0)
    x, y = data.x_train, data.y_train
    with PeakMemory(torch_device) as mem:
        t0 = time.perf_counter()
        for _ in range(epochs):
            trainer.train_epoch(x, y)
        seconds = (time.perf_counter() - t0) / epochs
        peak = mem.peak_bytes
    return {"method": method, "depth": depth, "s_per_epoch": seconds,
            "peak_mib": peak / 2**20, "memory": mem.method}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="digits-optical")
    p.add_argument("--depths", default="2,4,8")
    p.add_argument("--width", type=int, default=200, help="units per block (default 200)")
    p.add_argument("--epochs", type=int, default=2, help="epochs timed per point (default 2)")
    p.add_argument("--batch-size", type=int, default=0, help="0 = full batch (default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="depth_scaling.png")
    p.add_argument("--one", nargs=2, metavar=("METHOD", "DEPTH"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.one:
        r = measure(a.preset, a.one[0], int(a.one[1]), a.width, a.epochs, a.batch_size, a.device)
        print(json.dumps(r))
        return 0
    depths = [int(d) for d in a.depths.split(",")]
    rows = []
    for method in METHODS:
        for depth in depths:
            cmd = [sys.executable, __file__, "--one", method, str(depth), "--preset", a.preset,
                   "--width", str(a.width), "--epochs", str(a.epochs),
                   "--batch-size", str(a.batch_size), "--device", a.device]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(f"{method} depth {depth}: {rows[-1]['s_per_epoch']:.2f} s/epoch, "
                  f"{rows[-1]['peak_mib']:.1f} MiB", file=sys.stderr)
    print(f"| method | blocks | time per epoch (s) | peak memory (MiB, {rows[0]['memory']}) |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['depth']} | {r['s_per_epoch']:.2f} | {r['peak_mib']:.1f} |")

    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_m, ax_t = fig.subplots(1, 2)
    for i, method in enumerate(METHODS):
        rs = [r for r in rows if r["method"] == method]
        d = [r["depth"] for r in rs]
        ax_m.plot(d, [r["peak_mib"] for r in rs], "o-", color=f"C{i}", label=method)
        ax_t.plot(d, [r["s_per_epoch"] for r in rs], "o-", color=f"C{i}", label=method)
    batch = "full batch" if a.batch_size <= 0 else f"batch {a.batch_size}"
    ax_m.set(xlabel="blocks", ylabel="peak memory above start (MiB)", xticks=depths,
             title=f"peak memory ({rows[0]['memory']})")
    ax_t.set(xlabel="blocks", ylabel="time per epoch (s)", xticks=depths, title="time per epoch")
    for ax in (ax_m, ax_t):
        ax.legend()
    fig.suptitle(f"{a.preset}: depth scaling, width {a.width}, {batch}")
    out = Path(a.out)
    fig.savefig(out, dpi=120)
    print(f"\nplot: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
