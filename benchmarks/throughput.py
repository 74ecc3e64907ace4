"""Simulator throughput (samples/s) per substrate and training time per epoch per preset.

    python benchmarks/throughput.py [--batch 400] [--repeats 3] [--threads 2] [--presets ...]

Absolute times depend on the machine and its load; compare numbers from one invocation.
"""

from __future__ import annotations

import argparse
import time

import torch

from physnn.core import KINDS, make_device
from physnn.experiments import load_config
from physnn.experiments.runner import build_network, load_data, make_trainer, map_into_domain


def device_throughput(kind: str, batch: int, repeats: int) -> tuple[float, int, int]:
    dev = make_device(kind)
    gen = torch.Generator().manual_seed(0)
    x = dev.spec.domain.from_unit(torch.rand(batch, dev.spec.n_in, generator=gen))
    dev(x[:2])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        dev(x)
        best = min(best, time.perf_counter() - t0)
    return batch / best, dev.spec.n_in, dev.spec.n_out


def epoch_time(preset: str, repeats: int) -> tuple[float, int]:
    cfg = load_config(preset)
    data = load_data(cfg, 0)
    net = build_network(cfg, data.n_features, 0)
    data = map_into_domain(data, net.blocks[0].device.spec.domain)
    trainer = make_trainer(cfg, net, data.n_classes, 0)
    trainer.train_epoch(data.x_train, data.y_train)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        trainer.train_epoch(data.x_train, data.y_train)
        best = min(best, time.perf_counter() - t0)
    return best, data.x_train.shape[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=400)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--presets", nargs="*", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {a.threads} thread(s), batch {a.batch}\n")
    print("| device | n_in -> n_out | samples/s |\n|---|---|---:|")
    for kind in [k for k in KINDS if k.startswith("sim:")]:  # simulators only
        sps, n_in, n_out = device_throughput(kind, a.batch, a.repeats)
        print(f"| {kind} | {n_in} -> {n_out} | {sps:,.0f} |")
    from physnn.experiments.config import presets

    names = a.presets if a.presets is not None else presets()
    print("\n| preset | train samples | s / training epoch (no evaluation) |\n|---|---:|---:|")
    for name in names:
        t, n = epoch_time(name, a.repeats)
        print(f"| {name} | {n} | {t:.3f} |")


if __name__ == "__main__":
    main()
