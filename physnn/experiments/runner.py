"""Run an experiment config: build data, devices and network; train; log; resume after a crash."""

from __future__ import annotations

import inspect
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .._version import __version__
from ..core import make_device
from ..data import DATASETS, Dataset
from ..train.averaging import WeightAverage
from ..train.ledger import PeakMemory, run_ledger
from ..train.methods import Trainer
from ..train.methods import make_trainer as make_method_trainer
from ..train.network import Block, PhysicalNetwork
from ..train.readout import LinearReadout, neutral_features
from .config import apply_overrides, load_config
from .reference import logistic_regression_accuracy
from .runlog import read_run, write_run

METRICS = ("epoch", "train_acc", "test_acc", "wall_time_s", "train_queries", "eval_queries")


@dataclass
class RunResult:
    path: Path
    test_acc: float
    train_acc: float
    reference_acc: float
    record: dict[str, Any]


def load_data(cfg: dict[str, Any], seed: int) -> Dataset:
    d = dict(cfg["data"])
    name = d.pop("name", None)
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; allowed: {sorted(DATASETS)}")
    loader = DATASETS[name]
    allowed = set(inspect.signature(loader).parameters) - {"seed"}
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} in [data] for data set {name!r}; allowed: {sorted(allowed)}"
        )
    return loader(seed=seed, **d)


def build_network(
    cfg: dict[str, Any], n_in: int, seed: int, torch_device: str = "cpu"
) -> PhysicalNetwork:
    """One device per block (seeded ``seed*1000 + k``: distinct cavities) and its Linear."""
    gen = torch.Generator().manual_seed(seed)
    blocks = []
    for k, width in enumerate(cfg["network"]["hidden"]):
        desc = dict(cfg["device"])
        desc.update(n_in=n_in, seed=seed * 1000 + k)
        dev = make_device(desc)
        blocks.append(Block(dev, int(width), skip=bool(cfg["network"]["skip"]), gen=gen))
        n_in = int(width)
    return PhysicalNetwork(blocks).to(torch_device)


def make_trainer(
    cfg: dict[str, Any], net: PhysicalNetwork, n_classes: int, seed: int, label_width: int = 1
) -> Trainer:
    """The learning rule ``train.method`` names (physnn.train.methods.METHODS).

    ``label_width``: inputs per class in the label overlay (``Dataset.label_width``).
    """
    return make_method_trainer(cfg, net, n_classes, seed, label_width=label_width)


def map_into_domain(data: Dataset, domain) -> Dataset:
    """Map features from [0, 1] into the first device's input domain (snap to its levels)."""
    if domain.levels is None and (domain.lo, domain.hi) == (0.0, 1.0):
        return data
    return data.map_features(domain.from_unit)


def _check_torch_device(name: str) -> None:
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown torch device {name!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"torch device {name!r} requested but CUDA is not available here; use cpu")


def _queries(net: PhysicalNetwork) -> int:
    return sum(d.accounting.samples for d in net.devices)


def run(
    config: dict[str, Any],
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
    cfg = load_config(config)  # merged onto the defaults and validated
    seed = int(cfg["seed"] if seed is None else seed)
    cfg["seed"] = seed
    out = Path(out)
    _check_torch_device(torch_device)
    if overwrite:
        out.unlink(missing_ok=True)  # a failed restart must not leave the old log looking current
    t_cfg = cfg["train"]
    epochs = int(t_cfg["epochs"])

    raw = load_data(cfg, seed).to(torch_device)
    net = build_network(cfg, raw.n_features, seed, torch_device)
    data = map_into_domain(raw, net.blocks[0].device.spec.domain)
    trainer = make_trainer(cfg, net, data.n_classes, seed, data.label_width)
    decay = float(t_cfg["average"])
    average = WeightAverage(trainer.digital_modules(), decay) if decay else None

    metrics: dict[str, list] = {k: [] for k in METRICS}
    metrics["loss"] = []
    start_epoch, wall_before, peak_before = 0, 0.0, 0.0
    reference: dict[str, float] = {}
    created = datetime.now(UTC).isoformat(timespec="seconds")
    if out.exists() and not overwrite:
        prev = read_run(out, checkpoint=True)
        if prev["config"] != cfg:
            raise ValueError(
                f"{out} holds a run of a different config; choose another --out or overwrite"
            )
        if prev.get("status") == "complete":
            return _result(out, prev)
        ck = prev.get("checkpoint")
        if ck is not None:
            net.load_state_dict_full(ck["network"])
            trainer.load_state_dict(ck["trainer"])
            if average is not None:
                average.load_state_dict(ck["average"])
            metrics = {k: list(v) for k, v in ck["metrics"].items()}
            start_epoch, wall_before = ck["epoch"], ck["wall_time_s"]
            reference, created = prev["reference"], prev.get("created", created)
            peak_before = prev["accounting"].get("ledger", {}).get("peak_memory_bytes", 0.0)
    if not reference:
        x_tr, x_te = raw.plain_features()  # before any device quantisation
        if progress and sys.stderr.isatty():  # minutes on Fashion-MNIST: say why nothing moves
            tqdm.write(f"{cfg['name']} seed {seed}: fitting the logistic-regression reference "
                       f"on {len(x_tr)} samples x {x_tr.shape[1]} features", file=sys.stderr)
        y_tr, y_te = data.y_train.cpu().numpy(), data.y_test.cpu().numpy()
        reference = {
            "logistic_regression_test_acc": logistic_regression_accuracy(x_tr, y_tr, x_te, y_te, seed)
        }
        if net.blocks[0].device.spec.domain.levels is not None:
            # what the device's input levels (a 2-bit metasurface) leave to a linear classifier
            q_tr, q_te = data.plain_features()
            reference["logistic_regression_quantised_test_acc"] = logistic_regression_accuracy(
                q_tr, y_tr, q_te, y_te, seed
            )

    devices = [d.describe() for d in net.devices]
    memory = PeakMemory(torch_device).start()  # the ledger's peak memory of this run
    t0 = time.perf_counter() - wall_before
    last = epochs if stop_after is None else min(epochs, start_epoch + stop_after)
    bar = tqdm(
        range(start_epoch, last), total=epochs, initial=start_epoch,
        disable=None if progress else True,  # None: bars only on a terminal, not in logs
        desc=f"{cfg['name']} seed {seed}", unit="epoch", leave=False,
    )
    y_pred = None
    for epoch in bar:
        q0 = _queries(net)
        losses = trainer.train_epoch(data.x_train, data.y_train)
        if average is not None:
            average.update()
        q1 = _queries(net)
        final = epoch + 1 == epochs
        train_acc = test_acc = math.nan
        linear = {"test_acc_linear": math.nan, "readout_fit_queries": 0, "eval_queries_linear": 0}
        if final or (epoch + 1) % int(t_cfg["eval_every"]) == 0:
            with average.swapped_in() if average is not None else nullcontext():
                if t_cfg["readout"] in ("goodness", "both"):
                    y_pred = trainer.predict(data.x_test)
                    test_acc = (y_pred == data.y_test).float().mean().item()
                    if t_cfg["eval_train"]:
                        y_fit = trainer.predict(data.x_train)
                        train_acc = (y_fit == data.y_train).float().mean().item()
                if t_cfg["readout"] in ("linear", "both"):
                    linear = _linear_readout(cfg, net, data, trainer.flops)
                    if t_cfg["readout"] == "linear":
                        test_acc, y_pred = linear["test_acc_linear"], linear.pop("y_pred")
                    linear.pop("y_pred", None)
            bar.set_postfix(loss=f"{losses[-1]:.4f}", test=f"{test_acc:.3f}")
        if t_cfg["readout"] != "goodness":
            for key, value in linear.items():
                metrics.setdefault(key, []).append(value)
        q_eval = _queries(net) - q1 - linear["readout_fit_queries"] - linear["eval_queries_linear"]
        for key, value in zip(
            METRICS,
            (epoch + 1, train_acc, test_acc, time.perf_counter() - t0, q1 - q0, q_eval),
            strict=True,
        ):
            metrics[key].append(value)
        metrics["loss"].append(losses)
        record = {
            "status": "complete" if final else "running",
            "physnn_version": __version__,
            "name": cfg["name"],
            "seed": seed,
            "created": created,
            "wall_time_s": time.perf_counter() - t0,
            "config": cfg,
            "devices": devices,
            "metrics": metrics,
            "accounting": {
                **{f"block{k}": d.accounting.as_dict() for k, d in enumerate(net.devices)},
                "digital": {f"flops_{k}": float(v) for k, v in trainer.flops.totals.items()},
                "ledger": run_ledger(
                    cfg, net, trainer, metrics, wall_time_s=time.perf_counter() - t0,
                    memory=memory, peak_before=peak_before,
                ),
            },
            "reference": reference,
            "predictions": {}
            if y_pred is None
            else {"test_true": data.y_test.cpu().numpy(), "test_pred": y_pred.cpu().numpy()},
            "checkpoint": {
                "epoch": epoch + 1,
                "wall_time_s": time.perf_counter() - t0,
                "network": net.state_dict_full(),
                "trainer": trainer.state_dict(),
                **({} if average is None else {"average": average.state_dict()}),
                "metrics": metrics,
            },
        }
        write_run(out, record)
    bar.close()
    memory.stop()
    return _result(out, read_run(out))


def _linear_readout(cfg: dict[str, Any], net: PhysicalNetwork, data: Dataset, flops) -> dict:
    """Fit the neutral-label linear read-out on the training set; score it on the test set.

    Device queries: one pass per sample and block to fit (training set), one to predict.
    """
    args = (data.n_classes, cfg["train"]["label_amplitude"], data.label_width, flops)
    q0 = _queries(net)
    readout = LinearReadout(data.n_classes).fit(
        neutral_features(net, data.x_train, *args), data.y_train, flops
    )
    q1 = _queries(net)
    y_pred = readout.predict(neutral_features(net, data.x_test, *args))
    return {
        "test_acc_linear": (y_pred == data.y_test).float().mean().item(),
        "readout_fit_queries": q1 - q0,
        "eval_queries_linear": _queries(net) - q1,
        "y_pred": y_pred,
    }


def _result(path: Path, rec: dict[str, Any]) -> RunResult:
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


def _mean_std(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


@dataclass
class Summary:
    """Several seeds of one config: the numbers a paper would report."""

    name: str
    results: list[RunResult]

    def _stats(self, attr: str) -> tuple[float, float]:
        v = np.array([getattr(r, attr) for r in self.results])
        return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0

    @property
    def test_acc(self) -> tuple[float, float]:
        return self._stats("test_acc")

    @property
    def method(self) -> str:
        """The learning rule's display name (PhyLL, FF, PAT, backprop)."""
        rules = {r.record["config"]["train"]["method"] for r in self.results}
        names = {"phyll": "PhyLL", "ff": "FF", "pat": "PAT", "backprop": "backprop"}
        return "/".join(names.get(m, m) for m in sorted(rules))

    @property
    def reference_acc(self) -> tuple[float, float]:
        return self._stats("reference_acc")

    @property
    def quantised_reference_acc(self) -> list[float]:
        """Logistic regression on the device-quantised inputs per seed (empty without levels)."""
        key = "logistic_regression_quantised_test_acc"
        out = [float(r.record["reference"][key]) for r in self.results if key in r.record["reference"]]
        return out if len(out) == len(self.results) else []

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seeds": [int(r.record["seed"]) for r in self.results],
            "test_acc": [r.test_acc for r in self.results],
            "train_acc": [r.train_acc for r in self.results],
            "logistic_regression_test_acc": [r.reference_acc for r in self.results],
            **(
                {"logistic_regression_quantised_test_acc": self.quantised_reference_acc}
                if self.quantised_reference_acc
                else {}
            ),
            "test_acc_mean": self.test_acc[0],
            "test_acc_std": self.test_acc[1],
            "runs": [str(r.path) for r in self.results],
            **(
                {
                    "test_acc_linear": self.linear_acc,
                    "test_acc_linear_mean": _mean_std(self.linear_acc)[0],
                    "test_acc_linear_std": _mean_std(self.linear_acc)[1],
                }
                if self.linear_acc
                else {}
            ),
        }

    @property
    def linear_acc(self) -> list[float]:
        """Final test accuracy of the linear read-out per seed (empty when not evaluated)."""
        out = []
        for r in self.results:
            v = np.asarray(r.record["metrics"].get("test_acc_linear", []), dtype=float)
            v = v[~np.isnan(v)]
            if v.size:
                out.append(float(v[-1]))
        return out if len(out) == len(self.results) else []

    def markdown(self) -> str:
        rule = self.method
        lines = [
            f"# {self.name}",
            "",
            f"| seed | {rule} test acc | {rule} train acc | logistic regression test acc | "
            "train device queries | wall time (s) |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for r in self.results:
            m = r.record["metrics"]
            lines.append(
                f"| {r.record['seed']} | {100 * r.test_acc:.2f} % | {100 * r.train_acc:.2f} % | "
                f"{100 * r.reference_acc:.2f} % | {int(np.sum(m['train_queries'])):,} | "
                f"{r.record['wall_time_s']:.1f} |"
            )
        (mu, sd), (rmu, rsd) = self.test_acc, self.reference_acc
        lines += [
            "",
            f"{rule} test accuracy: {100 * mu:.2f} ± {100 * sd:.2f} % (mean ± std over "
            f"{len(self.results)} seeds)",
            f"Logistic regression on the same splits: {100 * rmu:.2f} ± {100 * rsd:.2f} %",
        ]
        if self.quantised_reference_acc:
            qmu, qsd = _mean_std(self.quantised_reference_acc)
            lines.append(
                f"Logistic regression on the device's quantised inputs: {100 * qmu:.2f} ± "
                f"{100 * qsd:.2f} %"
            )
        if self.linear_acc:
            lmu, lsd = _mean_std(self.linear_acc)
            lines.append(
                f"{rule} with the linear read-out (one device pass per sample): "
                f"{100 * lmu:.2f} ± {100 * lsd:.2f} %"
            )
        return "\n".join(lines)


def train(
    source: str | Path | dict[str, Any],
    *,
    out: str | Path = "runs",
    seed: int | None = None,
    seeds: int = 1,
    epochs: int | None = None,
    overrides: list[str] | None = None,
    torch_device: str = "cpu",
    progress: bool = True,
    overwrite: bool = False,
) -> Summary:
    """Train ``seeds`` consecutive seeds of a preset or config; what ``physnn train`` runs.

    Each seed writes ``OUT/NAME/seed<S>.h5``; the summary goes to ``summary.md`` and
    ``summary.json`` beside them. Rerunning the same command resumes unfinished seeds.
    ``overrides`` are ``section.key=value`` strings, as ``physnn train --set``.
    """
    import json

    cfg = apply_overrides(load_config(source), list(overrides or []))
    if epochs is not None:
        cfg["train"]["epochs"] = int(epochs)
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    first = int(cfg["seed"] if seed is None else seed)
    folder = Path(out) / cfg["name"]
    results = []
    seed_bar = tqdm(
        range(first, first + seeds), desc="seeds",
        disable=None if progress and seeds > 1 else True,
    )
    for s in seed_bar:
        results.append(
            run(cfg, folder / f"seed{s}.h5", seed=s, torch_device=torch_device,
                progress=progress, overwrite=overwrite)
        )
    summary = Summary(cfg["name"], results)
    (folder / "summary.md").write_text(summary.markdown() + "\n")
    (folder / "summary.json").write_text(json.dumps(summary.as_dict(), indent=2) + "\n")
    return summary
