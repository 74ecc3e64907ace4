"""Run one seed of an experiment config: build data, devices and network; train; log; resume."""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from tqdm import tqdm

from ..core import Domain, make_device
from ..data import DATASETS, Dataset
from ..data.dataset import DIGIT_LEVELS, DigitLayout
from ..train.averaging import WeightAverage
from ..train.flops import FlopMeter
from ..train.ledger import PeakMemory, run_ledger
from ..train.methods import Trainer, evaluation, uses_labels
from ..train.methods import make_trainer as make_rule_trainer
from ..train.network import Block, PhysicalNetwork, device_queries
from ..train.readout import BlockScorer, LinearReadout, neutral_features, weighted_goodness
from .config import ConfigSource, ExperimentConfig, load_config
from .config_checks import WEIGHTED_READOUTS
from .loop import run_epochs
from .reference import logistic_regression_accuracy

METRICS = ("epoch", "train_acc", "test_acc", "wall_time_s", "train_queries", "eval_queries")

_LINEAR = {"test_acc_linear": math.nan, "readout_fit_queries": 0, "eval_queries_linear": 0}
READOUT_METRICS: dict[str, dict[str, Any]] = {
    "linear": _LINEAR, "both": _LINEAR,
    "weighted": {"test_acc_summed": math.nan, "readout_fit_queries": 0},
    "weighted-or-sum": {"test_acc_summed": math.nan, "readout_fit_queries": 0,
                        "readout_summed": math.nan},
}
"""The metrics a read-out logs besides ``METRICS``, at their value for an epoch without an
evaluation (the weighted ones also log their block weights, ``readout_block_weights``)."""


@dataclass
class RunResult:
    """The outcome of one run: its log's path, final accuracies and the whole record."""

    path: Path
    test_acc: float
    train_acc: float
    reference_acc: float
    record: dict[str, Any]


def load_data(cfg: ConfigSource, seed: int) -> Dataset:
    """The data set ``[data]`` names, split by ``seed``; unknown loader keys are refused."""
    d = dict(load_config(cfg).data)
    name = d.pop("name", None)
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; allowed: {sorted(DATASETS)}")
    loader = DATASETS[name]  # a plug-in that cannot be imported: a one-line ValueError
    _check_loader_keys(name, loader, d)
    data = loader(seed=seed, **d)
    if not isinstance(data, Dataset):
        raise ValueError(f"data set {name!r} ({DATASETS.provider(name)}): its loader returned a "
                         f"{type(data).__name__}, not a physnn.data.Dataset")
    return data


def _check_loader_keys(name: str, loader: Callable[..., Any], keys: dict[str, Any]) -> None:
    """Refuse ``[data]`` keys the loader does not take, before calling it; a loader taking
    ``**kwargs`` (a plug-in forwarding to its own reader) checks its own."""
    try:
        params = inspect.signature(loader).parameters
    except (TypeError, ValueError):  # no signature to read (a builtin): the loader checks
        return
    kinds = {p.kind for p in params.values()}
    if "seed" not in params and inspect.Parameter.VAR_KEYWORD not in kinds:
        raise ValueError(f"data set {name!r} ({DATASETS.provider(name)}): its loader takes no "
                         "seed argument; a loader must accept seed= (it picks the split)")
    if inspect.Parameter.VAR_KEYWORD in kinds:
        return
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    allowed = {k for k, p in params.items() if p.kind in named} - {"seed"}
    unknown = sorted(set(keys) - allowed)
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} in [data] for data set {name!r}; allowed: {sorted(allowed)}"
        )


def build_network(
    cfg: ConfigSource, n_in: int, seed: int, torch_device: str = "cpu"
) -> PhysicalNetwork:
    """One device per block (seeded ``seed*1000 + k``: distinct cavities) and its Linear."""
    cfg = load_config(cfg)
    gen = torch.Generator().manual_seed(seed)
    blocks = []
    for k, width in enumerate(cfg.network.hidden):
        desc = dict(cfg.device)
        desc.update(n_in=n_in, seed=seed * 1000 + k)
        dev = make_device(desc)
        if k == 0:
            check_digit_levels(cfg, dev.spec.domain)
        blocks.append(Block(dev, int(width), skip=cfg.network.skip, gen=gen))
        n_in = int(width)
    return PhysicalNetwork(blocks).to(torch_device)


def check_digit_levels(cfg: ExperimentConfig, domain: Domain) -> None:
    """Refuse ``data.digits`` written for another number of levels than the first device's
    inputs have: its snapping would turn every digit into a wrong one, silently."""
    digits, levels = cfg.data.get("digits", 1), cfg.data.get("digit_levels", DIGIT_LEVELS)
    if digits != 1 and domain.levels is not None and len(domain.levels) != levels:
        raise ValueError(f"data.digit_levels = {levels}, but the device's inputs take "
                         f"{len(domain.levels)} levels ({domain.describe()}); set "
                         f"data.digit_levels = {len(domain.levels)}")


def map_into_domain(data: Dataset, domain: Domain) -> Dataset:
    """Map features from [0, 1] into the first device's input domain (snap to its levels)."""
    if domain.levels is None and (domain.lo, domain.hi) == (0.0, 1.0):
        return data
    return data.map_features(domain.from_unit)


def make_trainer(cfg: ConfigSource, net: PhysicalNetwork, n_classes: int, seed: int,
                 label_width: int = 1, image_shape: tuple[int, int] | None = None,
                 digit_layout: DigitLayout | None = None) -> Trainer:
    """The learning rule ``cfg.train.method`` names, for ``net`` (see physnn.train.methods)."""
    return make_rule_trainer(load_config(cfg).train, net, n_classes, seed, label_width,
                             image_shape, digit_layout)


def check_torch_device(name: str) -> None:
    """Refuse a torch device name this machine cannot use, in one line."""
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown torch device {name!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"torch device {name!r} requested but CUDA is not available here; use cpu")


def references(cfg: ExperimentConfig, raw: Dataset, data: Dataset, domain: Domain, seed: int,
               progress: bool) -> dict[str, float]:
    """Logistic regression on the same split (fitted in torch on the data's torch device,
    once per split in this process): on the plain features (before ``data.digits`` splits
    them), and for a device with input levels also on exactly the quantised inputs it sees."""
    if cfg.data.get("digits", 1) != 1:  # the features themselves, not their digits
        raw = load_data(cfg.merged({"data": {"digits": 1}}), seed).to(str(data.y_train.device))
    x_tr, x_te = raw.plain_features()  # before any device quantisation
    if progress and sys.stderr.isatty():  # a while on Fashion-MNIST: say why nothing moves
        tqdm.write(f"{cfg.name} seed {seed}: fitting the logistic-regression reference "
                   f"on {len(x_tr)} samples x {x_tr.shape[1]} features", file=sys.stderr)
    y_tr, y_te = data.y_train.cpu().numpy(), data.y_test.cpu().numpy()
    dev = data.y_train.device
    out = {"logistic_regression_test_acc": logistic_regression_accuracy(
        x_tr, y_tr, x_te, y_te, seed, device=dev)}
    if domain.levels is not None:  # what a 2-bit metasurface's levels leave to a linear model
        q_tr, q_te = data.plain_features()
        out["logistic_regression_quantised_test_acc"] = logistic_regression_accuracy(
            q_tr, y_tr, q_te, y_te, seed, device=dev
        )
    return out


def linear_readout(net: PhysicalNetwork, data: Dataset, amplitude: float | str,
                   flops: FlopMeter) -> dict[str, Any]:
    """Fit the neutral-label linear read-out on the training set; score it on the test set.

    Device queries: one pass per sample and block to fit (training set), one to predict.
    """
    args = (data.n_classes, amplitude, data.label_width, flops)
    q0 = device_queries(net)
    readout = LinearReadout(data.n_classes).fit(
        neutral_features(net, data.x_train, *args), data.y_train, flops
    )
    q1 = device_queries(net)
    y_pred = readout.predict(neutral_features(net, data.x_test, *args))
    return {
        "test_acc_linear": (y_pred == data.y_test).float().mean().item(),
        "readout_fit_queries": q1 - q0,
        "eval_queries_linear": device_queries(net) - q1,
        "y_pred": y_pred,
    }


class TrainSession:
    """One seed of ``physnn train`` as the epoch loop drives it (see ``loop``)."""

    def __init__(self, cfg: ExperimentConfig, seed: int, torch_device: str, progress: bool):
        self.cfg, self.seed, self.progress = cfg, seed, progress
        self.raw = load_data(cfg, seed).to(torch_device)
        self.net = build_network(cfg, self.raw.n_features, seed, torch_device)
        self.data = map_into_domain(self.raw, self.net.blocks[0].device.spec.domain)
        self.trainer: Trainer = make_rule_trainer(
            cfg.train, self.net, self.data.n_classes, seed, self.data.label_width,
            self.data.image_shape, self.data.digit_layout,
        )
        decay = cfg.train.average
        self.average = WeightAverage(self.trainer.digital_modules(), decay) if decay else None
        self.metrics: dict[str, list[Any]] = {k: [] for k in (*METRICS, "loss")}
        self.reference: dict[str, float] = {}
        self.peak_before = 0.0
        self.memory = PeakMemory(torch_device)
        self.clock: Callable[[], float] = lambda: 0.0
        self.y_pred: torch.Tensor | None = None

    def begin(self, resumed: dict[str, Any] | None, clock: Callable[[], float]) -> None:
        """Fit the logistic-regression references (once per run) and start the memory probe."""
        self.clock = clock
        if resumed is not None:
            self.reference = dict(resumed["reference"])
            self.peak_before = resumed["accounting"].get("ledger", {}).get("peak_memory_bytes", 0.0)
        if not self.reference:
            domain = self.net.blocks[0].device.spec.domain
            self.reference = references(self.cfg, self.raw, self.data, domain, self.seed,
                                        self.progress)
            if not uses_labels(self.trainer):  # what the physics gives before any training
                with evaluation(self.trainer, self.net):
                    untrained = linear_readout(self.net, self.data, 0.0, self.trainer.flops)
                self.reference["linear_readout_untrained_test_acc"] = untrained[
                    "test_acc_linear"]
        self.memory.start()  # the ledger's peak memory of this run

    def evaluate(self) -> tuple[float, float, dict[str, Any]]:
        """(train accuracy, test accuracy, the read-out's own figures) by ``train.readout``."""
        t, data = self.cfg.train, self.data
        train_acc = test_acc = math.nan
        linear: dict[str, Any] = {}
        average = self.average.swapped_in() if self.average is not None else nullcontext()
        with average, evaluation(self.trainer, self.net):
            if t.readout in WEIGHTED_READOUTS:
                found = weighted_goodness(
                    cast(BlockScorer, self.trainer), self.net, data.x_train, data.y_train,
                    data.x_test, data.y_test, self.trainer.flops,
                    or_sum=t.readout == "weighted-or-sum")
                self.y_pred = found.pop("y_pred")
                test_acc, fit_acc = found.pop("test_acc"), found.pop("train_acc")
                return (fit_acc if t.eval_train else math.nan), test_acc, found
            if t.readout in ("goodness", "both"):
                self.y_pred = self.trainer.predict(data.x_test)
                test_acc = (self.y_pred == data.y_test).float().mean().item()
                if t.eval_train:
                    y_fit = self.trainer.predict(data.x_train)
                    train_acc = (y_fit == data.y_train).float().mean().item()
            if t.readout in ("linear", "both"):
                amplitude = t.label_amplitude if uses_labels(self.trainer) else 0.0
                linear = linear_readout(self.net, data, amplitude, self.trainer.flops)
                y_lin = linear.pop("y_pred")
                if t.readout == "linear":
                    test_acc, self.y_pred = linear["test_acc_linear"], y_lin
        return train_acc, test_acc, linear

    def epoch(self, epoch: int) -> dict[str, str]:
        """Train one epoch, evaluate when due, append a metrics row."""
        t, net, m = self.cfg.train, self.net, self.metrics
        q0 = device_queries(net)
        losses = self.trainer.train_epoch(self.data.x_train, self.data.y_train)
        if self.average is not None:
            self.average.update()
        q1 = device_queries(net)
        extra = dict(READOUT_METRICS.get(t.readout, {}))
        if t.readout in WEIGHTED_READOUTS:
            extra["readout_block_weights"] = [math.nan] * len(net.blocks)
        train_acc = test_acc = math.nan
        evaluate = epoch + 1 == t.epochs or (epoch + 1) % t.eval_every == 0
        if evaluate:
            train_acc, test_acc, found = self.evaluate()
            extra.update(found)
        for key, value in extra.items():
            m.setdefault(key, []).append(value)
        q_eval = (device_queries(net) - q1 - extra.get("readout_fit_queries", 0)
                  - extra.get("eval_queries_linear", 0))
        row = (epoch + 1, train_acc, test_acc, self.clock(), q1 - q0, q_eval)
        for key, value in zip(METRICS, row, strict=True):
            m[key].append(value)
        m["loss"].append(losses)
        return {"loss": f"{losses[-1]:.4f}", "test": f"{test_acc:.3f}"} if evaluate else {}

    def record(self) -> dict[str, Any]:
        """Metrics, devices, accounting with the ledger, references, predictions."""
        net, trainer, data = self.net, self.trainer, self.data
        return {
            "devices": [d.describe() for d in net.devices],
            "metrics": self.metrics,
            "accounting": {
                **{f"block{k}": d.accounting.as_dict() for k, d in enumerate(net.devices)},
                "digital": {f"flops_{k}": float(v) for k, v in trainer.flops.totals.items()},
                "ledger": run_ledger(
                    self.cfg, net, trainer, self.metrics, wall_time_s=self.clock(),
                    memory=self.memory, peak_before=self.peak_before,
                ),
            },
            "reference": self.reference,
            "predictions": {} if self.y_pred is None else {
                "test_true": data.y_test.cpu().numpy(), "test_pred": self.y_pred.cpu().numpy()
            },
        }

    def state_dict(self) -> dict[str, Any]:
        """Network (devices included), trainer, weight average and metrics."""
        return {
            "network": self.net.state_dict(),
            "trainer": self.trainer.state_dict(),
            **({} if self.average is None else {"average": self.average.state_dict()}),
            "metrics": self.metrics,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict``."""
        self.net.load_state_dict(state["network"])
        self.trainer.load_state_dict(state["trainer"])
        if self.average is not None:
            self.average.load_state_dict(state["average"])
        self.metrics = {k: list(v) for k, v in state["metrics"].items()}

    def end(self) -> None:
        """Stop the memory probe."""
        self.memory.stop()


def run(
    config: ConfigSource,
    out: str | Path,
    *,
    seed: int | None = None,
    torch_device: str = "cpu",
    progress: bool = True,
    overwrite: bool = False,
    stop_after: int | None = None,
) -> RunResult:
    """Train one seed of ``config`` and write its run log to ``out`` (an ``.h5`` path).

    If ``out`` holds an unfinished run of the same config it resumes from its checkpoint and
    reaches the numbers an uninterrupted run would. ``stop_after`` ends the run after that
    many epochs, as an interruption would (for tests and for splitting long jobs).
    """
    cfg = load_config(config)
    if seed is not None:  # checked as the config's own seed is: an integer in range
        cfg = cfg.merged({"seed": seed})
    check_torch_device(torch_device)
    session = TrainSession(cfg, cfg.seed, torch_device, progress)
    record = run_epochs(
        session, out, config=cfg.to_dict(), name=cfg.name, seed=cfg.seed, epochs=cfg.train.epochs,
        desc=f"{cfg.name} seed {cfg.seed}", progress=progress, overwrite=overwrite,
        stop_after=stop_after,
    )
    return run_result(Path(out), record)


def run_result(path: Path, rec: dict[str, Any]) -> RunResult:
    """The ``RunResult`` of a run log read back (last evaluated accuracies)."""
    m = rec["metrics"]
    test = m["test_acc"][~np.isnan(m["test_acc"])] if len(m["test_acc"]) else np.array([])
    train = m["train_acc"][~np.isnan(m["train_acc"])] if len(m["train_acc"]) else np.array([])
    return RunResult(
        path=path,
        test_acc=float(test[-1]) if test.size else math.nan,
        train_acc=float(train[-1]) if train.size else math.nan,
        reference_acc=float(rec["reference"].get("logistic_regression_test_acc", math.nan)),
        record=rec,
    )
