"""PhyLL's training epoch against a bare-torch loop doing the same arithmetic, and what the
FLOP ledger costs inside it.

    python -m benchmarks.epoch [--quick]

The paper's set-up on the vowel task (vowels-microwave: 3 blocks of 20 units, skip, full
batch, 10 inner Adam steps): each block's device is a surrogate twin, a 20 -> 20 MLP of the
default ``physnn fit`` architecture (256, 256, SiLU). Its weights are drawn at random rather
than fitted (fitting needs a calibration of the microwave cavity): the arithmetic per epoch is
the same. The bare loop has the same overlay, network, Adam and inner steps and nothing
else: no input validation, no device accounting, no FLOP ledger, no validation pass. Times
are CPU seconds of this process (one torch thread), medians of interleaved repeats (A/B/A/B)
so that load from other processes touches both alike.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from physnn.core.device import Domain
from physnn.experiments import load_config
from physnn.experiments.runner import build_network, load_data, make_trainer, map_into_domain
from physnn.train.flops import FlopMeter, signature
from physnn.train.ledger import LedgerFlopMeter
from physnn.train.network import Block, PhysicalNetwork
from physnn.train.phyll import PhyLL
from physnn.twins.mlp import build_mlp
from physnn.twins.surrogate import Surrogate, Twin

PRESET = "vowels-microwave"
TWIN_HIDDEN = (64, 64)
TIME_TARGET = 1.3
"""physnn's epoch may take at most 1.3x the bare loop's."""
LEDGER_TARGET = 0.05
"""The FLOP ledger may cost at most 5 % of an epoch."""


class NoMeter(FlopMeter):
    """Counts nothing: the epoch without any FLOP accounting (the ledger's baseline)."""

    @contextmanager
    def count(self, phase: str, key: Any = None) -> Iterator[None]:
        """Run the block uncounted."""
        yield


class CallCounter(LedgerFlopMeter):
    """The ledger's meter, also counting how often a block is charged."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    @contextmanager
    def count(self, phase: str, key: Any = None) -> Iterator[None]:
        """Charge the block as the ledger does; one more call."""
        self.calls += 1
        with super().count(phase, key):
            yield


def cached_call_seconds(x: torch.Tensor, n: int = 20000) -> float:
    """CPU seconds of one cached ``count`` (key built as PhyLL builds it, empty block)."""
    meter = LedgerFlopMeter()
    a, b = x[:, :40], x[:, :40]
    with meter.count("train", (0, signature(a, b), 10)):
        pass
    t0 = time.process_time()
    for _ in range(n):
        with meter.count("train", (0, signature(a, b), 10)):
            pass
    return (time.process_time() - t0) / n


def random_twin(domain: Domain, n: int = 20, seed: int = 0) -> Twin:
    """A 20 -> 20 twin of the default fit architecture with random weights."""
    model = build_mlp(n, n, {"hidden": TWIN_HIDDEN, "activation": "silu"},
                      gen=torch.Generator().manual_seed(seed))
    spec = {"name": "sim:microwave", "n_in": n, "n_out": n,
            "domain": {"lo": domain.lo, "hi": domain.hi, "levels": domain.levels}}
    return Twin(model=model, spec=spec, y_mean=torch.zeros(n), y_std=torch.ones(n),
                fidelity={}, source={}, fit={})


def setup(seed: int = 0) -> tuple[PhyLL, Any, torch.Tensor, torch.Tensor]:
    """The physnn trainer on the vowel set with surrogate devices, and the training data."""
    cfg = load_config(PRESET)
    data = load_data(cfg, seed)
    domain = Domain(lo=0.0, hi=3.0, levels=(0.0, 1.0, 2.0, 3.0))  # 2-bit metasurface inputs
    twin = random_twin(domain)
    gen = torch.Generator().manual_seed(seed)
    blocks = [Block(Surrogate(twin=twin, seed=seed * 1000 + k, progress=False), int(w),
                    skip=cfg.network.skip, gen=gen) for k, w in enumerate(cfg.network.hidden)]
    net = PhysicalNetwork(blocks)
    data = map_into_domain(data, domain)
    trainer = make_trainer(cfg, net, data.n_classes, seed, data.label_width)
    assert isinstance(trainer, PhyLL)
    x = torch.as_tensor(data.x_train[:]).float()
    return trainer, cfg, x, data.y_train


class BareLoop:
    """PhyLL's epoch in plain torch: the trainer's weights, twins and random stream, copied."""

    def __init__(self, trainer: PhyLL):
        s = trainer.s
        self.n_classes, self.amp, self.alpha, self.steps = s.n_classes, float(s.label_amplitude), \
            s.alpha, s.inner_steps
        self.gen = torch.Generator()
        self.gen.set_state(trainer.gen.get_state())
        self.linears = [copy.deepcopy(b.linear) for b in trainer.net.blocks]
        self.zetas = [b.zeta.clone() for b in trainer.net.blocks]
        self.mlps = [copy.deepcopy(b.device.twin.model) for b in trainer.net.blocks]  # type: ignore[attr-defined]
        self.opts = [torch.optim.Adam(m.parameters(), lr=s.lr) for m in self.linears]
        self.levels = torch.tensor([0.0, 1.0, 2.0, 3.0])

    def overlay(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        out[:, : self.n_classes] = 0
        out[torch.arange(x.shape[0]), labels] = torch.tensor(self.amp)
        return out

    def device(self, k: int, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # the twin: inputs [0, 3] -> [-1, 1], MLP, unit output scale
            return self.mlps[k]((x - 0.0) * (2.0 / 3.0) - 1.0) * torch.ones(1) + torch.zeros(1)

    def goodness(self, k: int, h: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(h.abs(), self.zetas[k].unsqueeze(0), dim=1, eps=1e-12)

    def to_next(self, h: torch.Tensor) -> torch.Tensor:
        lo, hi = h.amin(1, keepdim=True), h.amax(1, keepdim=True)
        v = 0.0 + 3.0 * ((h - lo) / (hi - lo).clamp_min(1e-12))
        return self.levels[(v.unsqueeze(-1) - self.levels).abs().argmin(-1)]

    def epoch(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One full-batch epoch: overlay, per block one measurement and ``steps`` Adam steps."""
        c = self.n_classes
        y_neg = (y + torch.randint(1, c, y.shape, generator=self.gen)) % c
        order = torch.randperm(x.shape[0], generator=self.gen)
        xb = x[order]
        pos, neg = self.overlay(xb, y[order]), self.overlay(xb, y_neg[order])
        for k, (lin, opt) in enumerate(zip(self.linears, self.opts, strict=True)):
            f_pos = torch.cat([self.device(k, pos), pos], dim=1)
            f_neg = torch.cat([self.device(k, neg), neg], dim=1)
            for _ in range(self.steps):
                opt.zero_grad(set_to_none=True)
                g = self.goodness(k, lin(f_pos)) - self.goodness(k, lin(f_neg))
                F.softplus(-self.alpha * g).mean().backward()
                opt.step()
            if k + 1 < len(self.linears):
                with torch.no_grad():
                    pos, neg = self.to_next(lin(f_pos)), self.to_next(lin(f_neg))


def _cpu(fn: Callable[[], Any]) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median CPU seconds of each function, run in turn ``repeats`` times after a warm-up."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(_cpu(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def check_same_arithmetic(trainer: PhyLL, bare: BareLoop, x: torch.Tensor, y: torch.Tensor) -> float:
    """Largest weight difference after one epoch each: the two loops compute the same thing."""
    trainer.train_epoch(x, y)
    bare.epoch(x, y)
    return max(float((b.linear.weight - lin.weight).detach().abs().max())
               for b, lin in zip(trainer.net.blocks, bare.linears, strict=True))


def _train_with(trainer: Any, meter: FlopMeter, x: Any, y: torch.Tensor) -> Callable[[], Any]:
    def go() -> None:
        trainer.flops = meter
        trainer.train_epoch(x, y)
    return go


def preset_ledger_rows(presets: tuple[str, ...], repeats: int,
                       per_call: float) -> list[dict[str, Any]]:
    """The FLOP ledger's share of a PhyLL epoch of whole presets (their simulators as devices),
    cached and counted on every step (as before)."""
    out = []
    for preset in presets:
        cfg = load_config(preset)
        data = load_data(cfg, 0)
        net = build_network(cfg, data.n_features, 0)
        data = map_into_domain(data, net.blocks[0].device.spec.domain)
        trainer = make_trainer(cfg, net, data.n_classes, 0, data.label_width)
        meters: dict[str, FlopMeter] = {"cached": LedgerFlopMeter(), "none": NoMeter(),
                                        "exact": LedgerFlopMeter(cache=False)}
        counter = CallCounter()
        _train_with(trainer, counter, data.x_train, data.y_train)()
        t = interleaved({k: _train_with(trainer, m, data.x_train, data.y_train)
                         for k, m in meters.items()}, repeats)
        share = counter.calls * per_call / t["none"]
        out.append({
            "group": "epoch", "name": f"FLOP ledger in a {preset} PhyLL epoch: {counter.calls} "
            f"cached charges x {per_call * 1e6:.1f} us", "value": share,
            "unit": "fraction of the epoch", "baseline": f"the epoch without meter ({t['none']:.3f} s)",
            "ratio": None, "target": f"< {LEDGER_TARGET:.0%}", "ok": share < LEDGER_TARGET,
        })
        for k, how in (("cached", "cached per signature"), ("exact", "counted every step, as before")):
            out.append({
                "group": "epoch", "name": f"FLOP ledger in a {preset} PhyLL epoch ({how}; A/B)",
                "value": t[k] / t["none"] - 1, "unit": "fraction of the epoch",
                "baseline": f"same epoch, no FLOP meter ({t['none']:.3f} s)",
                "ratio": t["none"] / t[k], "target": None, "ok": None,
            })
    return out


def rows(quick: bool) -> list[dict[str, Any]]:
    """Epoch time against the bare loop; the ledger's cost in training and in evaluation."""
    torch.set_num_threads(1)
    repeats = 5 if quick else 30
    trainer, _, x, y = setup()
    bare = BareLoop(trainer)
    diff = check_same_arithmetic(trainer, bare, x, y)
    if diff > 1e-5:
        raise RuntimeError(f"the bare loop drifted from PhyLL's arithmetic (max |dW| = {diff:.3g})")
    cached, exact, none = LedgerFlopMeter(), LedgerFlopMeter(cache=False), NoMeter()

    def train_with(meter: FlopMeter) -> Callable[[], Any]:
        return _train_with(trainer, meter, x, y)

    def eval_with(meter: FlopMeter) -> Callable[[], Any]:
        def go() -> None:
            trainer.flops = meter
            trainer.predict(x)
        return go

    counter = CallCounter()
    train_with(counter)()
    train_calls = counter.calls
    counter.calls = 0
    eval_with(counter)()
    eval_calls = counter.calls
    per_call = cached_call_seconds(x)
    t = interleaved({"physnn": train_with(cached), "bare": lambda: bare.epoch(x, y),
                     "none": train_with(none), "exact": train_with(exact)}, repeats)
    e = interleaved({"cached": eval_with(cached), "none": eval_with(none),
                     "exact": eval_with(exact)}, repeats)
    n = x.shape[0]
    setting = f"vowels n={n}, 3 blocks 20->20, surrogate MLP {TWIN_HIDDEN} devices, full batch, 10 steps"
    speed = t["bare"] / t["physnn"]
    led_train = t["physnn"] / t["none"] - 1
    led_eval = e["cached"] / e["none"] - 1
    presets = () if quick else ("digits-optical", "vowels-microwave")
    return [
        {"group": "epoch", "name": f"PhyLL training epoch ({setting})", "value": t["physnn"],
         "unit": "s CPU", "baseline": f"bare-torch loop, same arithmetic ({t['bare']:.4f} s)",
         "ratio": speed, "target": f"time <= {TIME_TARGET}x baseline",
         "ok": speed >= 1 / TIME_TARGET},
        {"group": "epoch", "name": f"FLOP ledger in a training epoch: {train_calls} cached "
         f"charges x {per_call * 1e6:.1f} us each", "value": train_calls * per_call / t["none"],
         "unit": "fraction of the epoch", "baseline": f"the epoch without meter ({t['none']:.4f} s)",
         "ratio": None, "target": f"< {LEDGER_TARGET:.0%}",
         "ok": train_calls * per_call / t["none"] < LEDGER_TARGET},
        {"group": "epoch", "name": "FLOP ledger in a training epoch (cached), A/B epoch times",
         "value": led_train, "unit": "fraction of the epoch",
         "baseline": f"same epoch, no FLOP meter ({t['none']:.4f} s)",
         "ratio": t["none"] / t["physnn"], "target": None, "ok": None},
        {"group": "epoch", "name": "FLOP ledger in a training epoch (counter on every step, "
         "as before)", "value": t["exact"] / t["none"] - 1, "unit": "fraction of the epoch",
         "baseline": "same epoch, no FLOP meter", "ratio": t["none"] / t["exact"],
         "target": None, "ok": None},
        {"group": "epoch", "name": f"FLOP ledger in evaluation (predict, n={n}): {eval_calls} "
         "cached charges", "value": eval_calls * per_call / e["none"],
         "unit": "fraction of the evaluation",
         "baseline": f"the evaluation without meter ({e['none']:.4f} s)", "ratio": None,
         "target": f"< {LEDGER_TARGET:.0%}", "ok": eval_calls * per_call / e["none"] < LEDGER_TARGET},
        {"group": "epoch", "name": f"FLOP ledger in evaluation (predict, n={n}, cached), A/B times",
         "value": led_eval, "unit": "fraction of the evaluation",
         "baseline": f"same evaluation, no FLOP meter ({e['none']:.4f} s)",
         "ratio": e["none"] / e["cached"], "target": None, "ok": None},
        {"group": "epoch", "name": "FLOP ledger in evaluation (counter on every block, as before)",
         "value": e["exact"] / e["none"] - 1, "unit": "fraction of the evaluation",
         "baseline": "same evaluation, no FLOP meter", "ratio": e["none"] / e["exact"],
         "target": None, "ok": None},
        *preset_ledger_rows(presets, 11, per_call),
    ]


def main() -> None:
    """Print the rows (``--quick``: fewer repeats)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    for row in rows(p.parse_args().quick):
        print(row)


if __name__ == "__main__":
    main()
