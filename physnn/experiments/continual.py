"""Continual training: the device changes under a deployed network; does training keep up?

``continual("perturbation-recovery", methods=["phyll", "pat"], seeds=3)`` trains each arm
(a learning rule, optionally ``:frozen``) through the perturbation schedule of the config's
``[device] perturbations`` (see ``physnn.core.perturbation``). Every epoch is one tick
of each device's drift clock:

1. the clock advances (the drift walks; sudden changes due at this tick fire);
2. if something fired, test accuracy is measured at once on the changed device
   (``test_acc_event``: the drop before any retraining);
3. the arm trains one epoch on the *current* device (a ``:frozen`` arm stops training at
   ``continual.freeze_at``, default the onset of the first perturbation);
4. every ``continual.eval_every`` epochs, test accuracy on the current device; a
   ``DropMonitor`` compares it with its recent past and logs a drop (and the recovery).

PAT's twin is built from the device description at clock 0 (before any perturbation): a
stale twin. ``continual.track_twin = true`` advances the twin with the device instead (an
oracle that re-fits the twin every epoch; an upper bound for model-based training).

Each (arm, seed) keeps an HDF5 run log (``physnn.experiments.runlog.write_run``) with a checkpoint
every epoch (network, trainer, monitor; the devices' clocks replay the same drift), so
rerunning the same call resumes. ``OUT/NAME/continual.md|json|png`` hold the recovery
figures (epochs and device queries to get back within ``recover_points`` of the accuracy
before the perturbation) and the accuracy-vs-epoch plot with the perturbations marked.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import discard_stale, save_figure_atomic, write_text_atomic
from ..core.perturbation import advance, perturbable
from ..train.methods import evaluation
from ..train.network import device_queries
from .compare import load_settings
from .config import ConfigSource, ExperimentConfig, apply_overrides, load_config, run_label
from .jobs import Executor, Job, run_jobs
from .loop import run_epochs
from .runner import (
    build_network,
    check_torch_device,
    load_data,
    make_trainer,
    map_into_domain,
)

log = logging.getLogger("physnn.continual")

METRICS = (
    "epoch", "test_acc", "test_acc_event", "loss", "trained", "train_queries", "eval_queries",
    "event", "alarm", "recovered", "wall_time_s",
)

SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "perturbation-recovery": {"phyll": {}, "pat": {"batch_size": 64, "lr": 3e-3}},
    "perturbation-drift": {"phyll": {}, "pat": {"batch_size": 64, "lr": 3e-3}},
    "perturbation-recovery-acoustic": {"phyll": {}, "pat": {"batch_size": 32, "lr": 3e-3}},
}
"""Per-method ``[train]`` settings of the built-in presets (PAT: digits-optical's tuned
mini-batches, see docs/methods.md); ``settings=`` takes a TOML ``[PRESET.METHOD]`` file."""


class DropMonitor:
    """Flags a drop in test accuracy without knowing the schedule.

    The reference is the mean of the last ``window`` evaluations; an evaluation more than
    ``drop_points`` below it raises an alarm; the alarm clears (``recovered``) once accuracy
    is back within ``recover_points`` of the reference it fell from.
    """

    def __init__(self, window: int = 3, drop_points: float = 10.0, recover_points: float = 2.0,
                 label: str = ""):
        if window < 1 or not drop_points > 0 or not recover_points >= 0:
            raise ValueError(
                "continual.monitor_window must be >= 1, drop_points > 0, recover_points >= 0; "
                f"got {window}, {drop_points}, {recover_points}"
            )
        self.window, self.drop, self.recover = int(window), float(drop_points), float(recover_points)
        self.label = f"{label}: " if label else ""
        self.history: list[float] = []
        self.alarm_reference: float | None = None
        self.alarms: list[dict[str, float]] = []

    def update(self, epoch: int, acc: float) -> tuple[bool, bool]:
        """Feed one evaluation (accuracy in [0, 1]); returns (alarm raised, recovered)."""
        if math.isnan(acc):
            return False, False
        pts = 100 * acc
        alarm = recovered = False
        if self.alarm_reference is None:
            if len(self.history) >= self.window:
                ref = float(np.mean(self.history[-self.window :]))
                if pts < ref - self.drop:
                    alarm, self.alarm_reference = True, ref
                    self.alarms.append({"epoch": epoch, "accuracy": pts, "reference": ref})
                    log.warning("%sepoch %d: accuracy dropped to %.1f %% (reference %.1f %%)",
                                self.label, epoch, pts, ref)
        elif pts >= self.alarm_reference - self.recover:
            recovered = True
            self.alarms[-1]["recovered_epoch"] = epoch
            log.warning("%sepoch %d: accuracy recovered to %.1f %%", self.label, epoch, pts)
            self.alarm_reference = None
        self.history.append(pts)
        return alarm, recovered

    def state_dict(self) -> dict[str, Any]:
        """History and open alarm, so a resumed run raises the same alarms."""
        return {"history": list(self.history), "alarm_reference": self.alarm_reference,
                "alarms": copy.deepcopy(self.alarms)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict``."""
        self.history = list(state["history"])
        self.alarm_reference = state["alarm_reference"]
        self.alarms = copy.deepcopy(state["alarms"])


def onset(net) -> int | None:
    """First tick at which any device's physics changes (drift start or sudden change)."""
    ticks = []
    for d in net.devices:
        p = perturbable(d)
        if p is None:
            continue
        if p.drift is not None and (p.drift.sigma or p.drift.rate):
            ticks.append(p.drift.start + 1)
        ticks += [e.at for e in p.events]
    return min(ticks) if ticks else None


def parse_arm(arm: str) -> tuple[str, bool]:
    """``"phyll"`` -> (phyll, trained throughout); ``"phyll:frozen"`` -> frozen at onset."""
    method, _, mode = arm.partition(":")
    if mode not in ("", "frozen"):
        raise ValueError(f"arm {arm!r}: the only mode is ':frozen' (e.g. phyll:frozen)")
    return method, mode == "frozen"


@dataclass
class ArmRun:
    """One arm and seed of a continual run: its log's path and record."""
    arm: str
    seed: int
    path: Path
    record: dict[str, Any]

    @property
    def metrics(self) -> dict[str, np.ndarray]:
        """The per-epoch metrics as float arrays."""
        return {k: np.asarray(v, dtype=float) for k, v in self.record["metrics"].items()}


class ContinualSession:
    """One arm and seed of ``physnn continual`` as the epoch loop drives it (see ``loop``)."""

    def __init__(self, cfg: ExperimentConfig, arm: str, torch_device: str):
        _, self.frozen = parse_arm(arm)
        self.cfg, self.arm, c, seed = cfg, arm, cfg.continual, cfg.seed
        raw = load_data(cfg, seed).to(torch_device)
        self.net = build_network(cfg, raw.n_features, seed, torch_device)
        self.data = map_into_domain(raw, self.net.blocks[0].device.spec.domain)
        self.trainer = make_trainer(cfg, self.net, self.data.n_classes, seed,
                                    self.data.label_width, self.data.image_shape,
                                    digit_layout=self.data.digit_layout)
        self.monitor = DropMonitor(c.monitor_window, c.drop_points, c.recover_points,
                                   label=f"{cfg.name} {arm} seed {seed}")
        first_change = onset(self.net)
        epochs = cfg.train.epochs
        self.freeze_at = c.freeze_at or (first_change - 1 if first_change else epochs)
        self.twins = list(getattr(self.trainer, "twin_devices", [])) if c.track_twin else []
        self.metrics: dict[str, list[Any]] = {k: [] for k in METRICS}
        self.metrics.update({f"temperature_block{k}": [] for k in range(len(self.net.blocks))})
        self.events: list[list[dict[str, Any]]] = [[] for _ in self.net.blocks]
        self.clock: Callable[[], float] = lambda: 0.0

    def begin(self, resumed: dict[str, Any] | None, clock: Callable[[], float]) -> None:
        """Keep the run's clock (nothing else to set up: no reference fit)."""
        self.clock = clock

    def _evaluate(self) -> float:
        with evaluation(self.trainer, self.net):
            y_pred = self.trainer.predict(self.data.x_test)
        return (y_pred == self.data.y_test).float().mean().item()

    def _tick(self) -> list[dict[str, Any]]:
        """Advance every device's drift clock (and a tracked twin's) one epoch."""
        fired = []
        for k, d in enumerate(self.net.devices):
            for ev in advance(d, 1):
                self.events[k].append(ev)
                fired.append(ev)
        for t in self.twins:
            advance(t, 1)
        return fired

    def epoch(self, epoch: int) -> dict[str, str]:
        """Tick the devices' clocks, measure the drop, train, evaluate, monitor."""
        e, net, cfg = epoch + 1, self.net, self.cfg
        fired = self._tick()
        q0 = device_queries(net)
        acc_event = self._evaluate() if fired else math.nan
        q1 = device_queries(net)
        train = not (self.frozen and e > self.freeze_at)
        data = self.data
        loss = float(np.mean(self.trainer.train_epoch(data.x_train, data.y_train))) if train \
            else math.nan
        q2 = device_queries(net)
        due = e % cfg.continual.eval_every == 0 or e == cfg.train.epochs or fired
        acc = self._evaluate() if due else math.nan
        alarm, recovered = self.monitor.update(e, acc)
        row = (e, acc, acc_event, loss, float(train), q2 - q1, (q1 - q0) + (device_queries(net) - q2),
               float(len(fired)), float(alarm), float(recovered), self.clock())
        for key, value in zip(METRICS, row, strict=True):
            self.metrics[key].append(value)
        for k, d in enumerate(net.devices):
            p = perturbable(d)
            self.metrics[f"temperature_block{k}"].append(p.temperature if p is not None else math.nan)
        return {} if math.isnan(acc) else {"test": f"{acc:.3f}"}

    def record(self) -> dict[str, Any]:
        """Metrics, devices and the continual accounting (events, alarms)."""
        net = self.net
        return {
            "devices": [d.describe() for d in net.devices],
            "metrics": self.metrics,
            "accounting": {
                **{f"block{k}": d.accounting.as_dict() for k, d in enumerate(net.devices)},
                "continual": {
                    "arm": self.arm, "frozen_after_epoch": self.freeze_at if self.frozen else -1,
                    "events_json": json.dumps(self.events),
                    "alarms_json": json.dumps(self.monitor.alarms),
                },
            },
        }

    def state_dict(self) -> dict[str, Any]:
        """Network, trainer, monitor, metrics and events: a whole resume point."""
        return {
            "network": self.net.state_dict(), "trainer": self.trainer.state_dict(),
            "monitor": self.monitor.state_dict(), "metrics": self.metrics, "events": self.events,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict``; the devices' clocks replay the same drift."""
        self.net.load_state_dict(state["network"])
        self.trainer.load_state_dict(state["trainer"])
        self.monitor.load_state_dict(state["monitor"])
        self.metrics = {k: list(v) for k, v in state["metrics"].items()}
        self.events = state["events"]

    def end(self) -> None:
        """Nothing to release."""
        pass


def run_continual(
    config: ConfigSource,
    out: str | Path,
    *,
    arm: str = "phyll",
    seed: int | None = None,
    torch_device: str = "cpu",
    progress: bool = True,
    overwrite: bool = False,
    stop_after: int | None = None,
) -> ArmRun:
    """Train one arm and seed through the perturbation schedule; log to ``out`` (.h5).

    Resumes an unfinished log of the same config; ``stop_after`` ends after that many epochs
    (as an interruption would).
    """
    method, _ = parse_arm(arm)
    if method == "phyll-unsupervised":
        raise ValueError("physnn continual scores each epoch by the rule's own predictions; "
                         "phyll-unsupervised has none (train it with 'physnn train')")
    cfg = load_config(config).merged(  # checked like any config value: 1.5 is refused
        {"train": {"method": method}, **({} if seed is None else {"seed": seed})})
    check_torch_device(torch_device)
    if cfg.train.readout != "goodness":
        raise ValueError(
            "physnn continual scores each epoch by the rule's own predictions, so "
            f"train.readout must be 'goodness' (got {cfg.train.readout!r})")
    if cfg.train.average:
        raise ValueError(
            "train.average is for 'physnn train' runs: a weight average lags a changing device, "
            "and continual runs measure the live weights; set train.average = 0"
        )
    session = ContinualSession(cfg, arm, torch_device)
    record = run_epochs(
        session, out, config=cfg.to_dict(), name=cfg.name, seed=cfg.seed, epochs=cfg.train.epochs,
        desc=f"{cfg.name} {arm} seed {cfg.seed}", progress=progress, overwrite=overwrite,
        stop_after=stop_after,
    )
    return ArmRun(arm, cfg.seed, Path(out), record)


# -- the figures a user asks for ----------------------------------------------------------------
def recovery(run: ArmRun, window: int, recover_points: float, tail_fraction: float) -> dict:
    """Accuracy before/after the first perturbation, epochs and queries to recover, tail mean.

    ``pre``: mean test accuracy of the last ``window`` evaluations before the first sudden
    change (without one: before the onset; a drift may start at epoch 0);
    ``drop``: ``pre`` minus the accuracy measured right after the first sudden change;
    recovered at the first epoch whose accuracy is back within ``recover_points`` of ``pre``
    (``epochs``: training epochs on the changed device, ``queries``: their device queries);
    ``tail``: mean accuracy over the last ``tail_fraction`` of the epochs after the onset.
    """
    m = run.metrics
    ep, acc = m["epoch"], m["test_acc"]
    ev = np.flatnonzero(m["event"] > 0)
    temps = [m[k] for k in m if k.startswith("temperature_block")]
    moving = np.flatnonzero(np.any([np.abs(t) > 0 for t in temps], axis=0)) if temps \
        else np.array([], dtype=int)
    starts = [int(ep[ev[0]])] if len(ev) else []
    if len(moving):
        starts.append(int(ep[moving[0]]))
    out: dict[str, Any] = {"arm": run.arm, "seed": run.seed, "onset": min(starts) if starts else None}
    if out["onset"] is None:
        return out
    t0 = out["onset"]
    # the reference is the accuracy just before the first sudden change (a slow drift may have
    # run since the first epoch), else just before the drift began
    t_ref = int(ep[ev[0]]) if len(ev) else t0
    before = acc[(ep < t_ref) & ~np.isnan(acc)]
    pre = float(np.mean(before[-window:])) if before.size else math.nan
    out["pre_acc"] = pre
    after = (ep >= t0) & ~np.isnan(acc)
    tail_n = max(1, int(round(tail_fraction * int((ep >= t0).sum()))))
    tail = acc[ep >= ep.max() - tail_n + 1]
    out["tail_acc"] = float(np.nanmean(tail)) if np.any(~np.isnan(tail)) else math.nan
    out["final_acc"] = float(acc[~np.isnan(acc)][-1]) if np.any(~np.isnan(acc)) else math.nan
    if len(ev):
        i = ev[0]
        out["event_epoch"] = int(ep[i])
        out["post_acc"] = float(m["test_acc_event"][i])
        out["drop_points"] = 100 * (pre - out["post_acc"])
        ok = np.flatnonzero(after & (acc >= pre - recover_points / 100) & (ep >= ep[i]))
        out["recovered"] = bool(ok.size)
        if ok.size:
            j = ok[0]
            out["recover_epochs"] = int(ep[j] - ep[i] + 1)
            out["recover_queries"] = int(m["train_queries"][i : j + 1].sum())
            out["recover_eval_queries"] = int(m["eval_queries"][i : j + 1].sum())
    return out


@dataclass
class ContinualSummary:
    """Every arm and seed of one continual experiment, with its figures."""
    name: str
    config: ExperimentConfig
    runs: list[ArmRun] = field(default_factory=list)
    command: str = ""

    def rows(self) -> list[dict[str, Any]]:
        """The recovery figures of every run (see ``recovery``)."""
        c = self.config.continual
        return [recovery(r, c.monitor_window, c.recover_points, c.tail_fraction) for r in self.runs]

    def arms(self) -> list[str]:
        """The arms in the order they ran."""
        return list(dict.fromkeys(r.arm for r in self.runs))

    def table(self) -> list[dict[str, Any]]:
        """Per arm: mean ± std over seeds of every figure, and the recovered count."""
        rows, out = self.rows(), []
        for arm in self.arms():
            mine = [r for r in rows if r["arm"] == arm]
            t: dict[str, Any] = {"arm": arm, "seeds": len(mine)}
            for key in ("pre_acc", "post_acc", "drop_points", "tail_acc", "final_acc",
                        "recover_epochs", "recover_queries"):
                v = np.array([r[key] for r in mine if key in r], dtype=float)
                if v.size:
                    t[key] = (float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0)
            if any("recovered" in r for r in mine):
                t["recovered"] = f"{sum(bool(r.get('recovered')) for r in mine)}/{len(mine)}"
            out.append(t)
        return out

    def markdown(self) -> str:
        """The recovery table as Markdown, per arm, then the per-seed rows."""
        c = self.config.continual

        def fmt(t, key, scale=100.0, digits=1):
            if key not in t:
                return "-"
            mu, sd = t[key]
            return f"{scale * mu:.{digits}f} ± {scale * sd:.{digits}f}"

        lines = [f"# {self.name}: continual training through the perturbation schedule", ""]
        if self.command:
            lines += [f"command: `{self.command}`", ""]
        lines += [
            f"Recovered = back within {c.recover_points:g} points of the mean accuracy of the "
            f"last {c.monitor_window} evaluations before the first sudden change (or the drift) "
            f"(mean ± std over "
            f"seeds; epochs/queries over recovered seeds only). Tail = mean test accuracy over "
            f"the last {100 * c.tail_fraction:g} % of the epochs after the onset.",
            "",
            "| arm | seeds | before (%) | right after (%) | drop (points) | recovered | epochs to "
            "recover | train queries to recover | tail (%) | final (%) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for t in self.table():
            lines.append(
                f"| {t['arm']} | {t['seeds']} | {fmt(t, 'pre_acc')} | {fmt(t, 'post_acc')} | "
                f"{fmt(t, 'drop_points', 1.0)} | {t.get('recovered', '-')} | "
                f"{fmt(t, 'recover_epochs', 1.0)} | {fmt(t, 'recover_queries', 1.0, 0)} | "
                f"{fmt(t, 'tail_acc')} | {fmt(t, 'final_acc')} |"
            )
        lines += ["", "Per seed:", "", "```"]
        lines += [json.dumps(r) for r in self.rows()]
        lines += ["```"]
        return "\n".join(lines)

    def plot(self, path: Path) -> Path:
        """Test accuracy vs epoch per arm (mean ± std over seeds, every seed thin; at each
        sudden change, dashed, also the accuracy measured right after it), each block's drift
        temperature below (of the first arm's first seed: every arm sees the same schedule)."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(8, 6.5))
        ax, ax_t = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
        colors = ["tab:blue", "tab:red", "tab:green", "tab:orange", "tab:purple", "tab:brown"]
        events_drawn = set()
        for i, arm in enumerate(self.arms()):
            runs = [r for r in self.runs if r.arm == arm]
            color = colors[i % len(colors)]
            curves = []
            for r in runs:
                m = r.metrics
                ok = ~np.isnan(m["test_acc"])
                hit = ~np.isnan(m["test_acc_event"])  # right after a change, before retraining
                x = np.concatenate([m["epoch"][ok], m["epoch"][hit] - 0.5])
                y = 100 * np.concatenate([m["test_acc"][ok], m["test_acc_event"][hit]])
                order = np.argsort(x, kind="stable")
                x, y = x[order], y[order]
                ax.plot(x, y, color=color, lw=0.6, alpha=0.35)
                curves.append((x, y))
                for e in m["epoch"][m["event"] > 0]:
                    if e not in events_drawn:
                        events_drawn.add(e)
                        ax.axvline(e - 0.5, color="k", ls="--", lw=1)
                        ax.annotate("sudden change", (e - 0.5, 1), xycoords=("data", "axes fraction"),
                                    rotation=90, va="top", ha="right", fontsize="small")
            common = min(len(x) for x, _ in curves)
            ep = curves[0][0][:common]
            ys = np.stack([y[:common] for _, y in curves])
            ax.plot(ep, ys.mean(0), color=color, lw=2, label=f"{arm} (n={len(runs)})")
            if len(runs) > 1:
                ax.fill_between(ep, ys.mean(0) - ys.std(0, ddof=1), ys.mean(0) + ys.std(0, ddof=1),
                                color=color, alpha=0.15)
            m = runs[0].metrics
            if i == 0:
                for key in sorted(k for k in m if k.startswith("temperature_block")):
                    ax_t.plot(m["epoch"], m[key], lw=1, label=key.replace("temperature_", ""))
        ax.set(ylabel="test accuracy on the current device (%)", title=self.name)
        ax.legend(fontsize="small", loc="lower left")
        ax.grid(alpha=0.3)
        ax_t.set(xlabel="epoch (= device clock tick)", ylabel="drift dT (K)")
        ax_t.legend(fontsize="x-small", ncol=2)
        ax_t.grid(alpha=0.3)
        fig.tight_layout()
        save_figure_atomic(path, fig)
        return path

    def as_dict(self) -> dict[str, Any]:
        """Table, per-run figures and log paths, for ``continual.json``."""
        return {"name": self.name, "command": self.command, "table": self.table(),
                "runs": self.rows(), "logs": [str(r.path) for r in self.runs]}


def continual(
    source: ConfigSource,
    *,
    methods: list[str] | None = None,
    seeds: int = 1,
    seed: int | None = None,
    out: str | Path = "runs/continual",
    settings: str | Path | dict | None = None,
    overrides: list[str] | None = None,
    epochs: int | None = None,
    torch_device: str = "cpu",
    progress: bool = True,
    overwrite: bool = False,
    command: str = "",
    jobs: int = 1,
    threads: int | None = None,
    ray: str | None = None,
    gpus_per_run: float = 0.0,
    retries: int = 2,
    name: str | None = None,
) -> ContinualSummary:
    """Run every arm x seed of a config through its perturbation schedule; what
    ``physnn continual`` runs. Arms are learning rules, ``METHOD:frozen`` for a network that
    stops training at the onset. Writes ``OUT/NAME/ARM/seed<S>.h5`` and
    ``OUT/NAME/continual.{md,json,png}``; rerunning resumes. ``jobs``: runs at once;
    ``ray`` / ``gpus_per_run`` / ``retries``: Ray and restarts (``jobs.Executor``); ``name``:
    the folder under ``out`` (default ``config.run_label``)."""
    cfg = apply_overrides(source, list(overrides or []))
    if epochs is not None:
        cfg = cfg.merged({"train": {"epochs": epochs}})
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    arms = list(methods or ["phyll", "pat"])
    if not arms:
        raise ValueError("give at least one arm, e.g. phyll,pat,phyll:frozen")
    executor = Executor(jobs=jobs, threads=threads, ray=ray, gpus=gpus_per_run, retries=retries)
    if ray is None:  # on a cluster the workers' devices count, not this machine's
        check_torch_device(torch_device)
    per_method = (SETTINGS if settings is None else load_settings(settings)).get(cfg.name, {})
    first = cfg.seed if seed is None else int(seed)
    label = run_label(cfg.name, list(overrides or []), name)
    folder = Path(out) / label
    if overwrite:
        discard_stale(folder, ("continual.md", "continual.json", "continual.png"))
    runs = []
    for arm in arms:
        method, _ = parse_arm(arm)
        arm_cfg = cfg.merged({"train": {"method": method, **per_method.get(method, {})}})
        runs += [
            Job(f"{label} {arm} seed {s}", run_continual, dict(
                config=arm_cfg, out=folder / arm.replace(":", "-") / f"seed{s}.h5", arm=arm,
                seed=s, torch_device=torch_device, progress=progress and jobs == 1 and ray is None,
                overwrite=overwrite,
            ))
            for s in range(first, first + seeds)
        ]
    summary = ContinualSummary(label, cfg, command=command)
    summary.runs = run_jobs(runs, executor=executor, progress=progress, desc="runs")
    write_text_atomic(folder / "continual.md", summary.markdown() + "\n")
    write_text_atomic(folder / "continual.json", json.dumps(summary.as_dict(), indent=2) + "\n")
    summary.plot(folder / "continual.png")
    return summary
