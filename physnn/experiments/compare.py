"""Learning rules side by side: several methods x several seeds of one preset, with their ledgers.

``compare("digits-optical", methods=["phyll", "ff", "pat", "backprop"], seeds=5)`` trains
every (method, seed) through ``physnn.experiments.runner.run`` (so each run keeps its
HDF5 log, and rerunning the same call resumes unfinished runs), then writes

- ``OUT/NAME/compare.md`` and ``compare.csv``: accuracy mean ± std, training device queries,
  digital FLOPs (PAT including its twin), energy, wall time, peak memory per method;
- ``OUT/NAME/compare.png``: accuracy against training device queries (learning curves) and
  against training digital FLOPs (final accuracy, mean ± std);
- ``OUT/NAME/METHOD/seed<S>.h5``: every run's log.

Per-method settings (a method's own learning rate, batch size, ...) come from a settings
table ``[PRESET.METHOD]`` of ``[train]`` keys: ``TUNED_SETTINGS`` holds the ones tuned for
the built-in presets (on held-out seeds, with the same budget for every method; see
docs/methods.md), and ``settings=`` takes your own TOML file or dict.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import discard_stale, save_figure_atomic, write_text_atomic
from .config import ConfigSource, ExperimentConfig, apply_overrides, load_config, run_label
from .jobs import Executor, Job, run_jobs
from .runlog import read_run
from .runner import RunResult, check_torch_device, run, run_result

DEFAULT_METHODS = ("phyll", "ff", "pat", "backprop")

COLUMNS = (
    "method", "seeds", "test_acc_mean", "test_acc_std", "train_queries", "eval_queries",
    "flops_train", "flops_model", "flops_eval", "energy_train_j", "energy_total_j",
    "wall_time_s", "peak_memory_mib", "settings",
)
"""CSV columns; numbers are means over seeds (accuracy also its sample std)."""


TUNED_SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "digits-optical": {
        "phyll": {},  # the preset (paper-style settings: lr 5e-4, 10 inner steps, full batch)
        "ff": {"ff_threshold": 0.5, "lr": 2e-3},  # 5e-3 collapsed on 2 of 5 seeds
        "backprop": {"batch_size": 64, "lr": 3e-3},
        "pat": {"batch_size": 64, "lr": 3e-3},  # an exact twin takes backprop's steps
    },
    "vowels-acoustic": {  # NOT tuned: digits-optical's choices, every rule 200 epochs (the
        # preset's). Backprop and PAT ran 40 until issue 17 (a compute cap); the full 200 gave
        # 95.51 +- 5.08 % against 96.33 +- 3.93 % at 40 on seeds 0-4 (docs/methods.md)
        "phyll": {},
        "ff": {"ff_threshold": 0.5, "lr": 2e-3},
        "backprop": {"batch_size": 32, "lr": 3e-3},
        "pat": {"batch_size": 32, "lr": 3e-3},
    },
}
"""Per-method ``[train]`` settings for the built-in presets, ``{preset: {method: {key: v}}}``.

digits-optical: chosen on held-out seeds 100-104 (never a reported seed); docs/methods.md lists
every setting tried and its accuracy. A preset missing here runs every method as the preset
says.
"""


def load_settings(source: str | Path | dict | None) -> dict[str, dict[str, dict[str, Any]]]:
    """Per-method settings from a TOML file or a dict; ``None``: the built-in ones."""
    if source is None:
        return copy.deepcopy(TUNED_SETTINGS)
    if isinstance(source, dict):
        return copy.deepcopy(source)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"compare settings file {path} does not exist")
    with path.open("rb") as f:
        return tomllib.load(f)


@dataclass
class MethodResult:
    """All seeds of one method."""

    method: str
    settings: dict[str, Any]
    results: list[RunResult] = field(default_factory=list)

    def ledgers(self) -> list[dict[str, Any]]:
        """Every seed's efficiency ledger (queries, FLOPs, energy, time, memory)."""
        return [r.record["accounting"]["ledger"] for r in self.results]

    def mean(self, key: str) -> float:
        """Mean over seeds of one ledger entry."""
        return float(np.mean([float(led[key]) for led in self.ledgers()]))

    @property
    def test_acc(self) -> tuple[float, float]:
        """Final test accuracy, mean and sample std over seeds."""
        v = np.array([r.test_acc for r in self.results])
        return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0

    def row(self) -> dict[str, Any]:
        """This method's row of the comparison table (means over seeds)."""
        mu, sd = self.test_acc
        return {
            "method": self.method,
            "seeds": " ".join(str(r.record["seed"]) for r in self.results),
            "test_acc_mean": mu,
            "test_acc_std": sd,
            "train_queries": self.mean("queries_train"),
            "eval_queries": self.mean("queries_eval"),
            "flops_train": self.mean("flops_train_total"),
            "flops_model": self.mean("flops_model_fwd") + self.mean("flops_model_bwd")
            + self.mean("flops_twin_fit"),
            "flops_eval": self.mean("flops_eval"),
            "energy_train_j": self.mean("energy_train_j"),
            "energy_total_j": self.mean("energy_total_j"),
            "wall_time_s": self.mean("wall_time_s"),
            "peak_memory_mib": self.mean("peak_memory_bytes") / 2**20,
            "settings": " ".join(f"{k}={v}" for k, v in self.settings.items()),
        }


@dataclass
class Comparison:
    """Every method's results on one preset: the table, the CSV and the plots."""
    name: str
    methods: list[MethodResult]
    command: str = ""
    j_per_flop: float = math.nan

    def rows(self) -> list[dict[str, Any]]:
        """One table row per method."""
        return [m.row() for m in self.methods]

    def csv(self) -> str:
        """The table as CSV (numbers are means over seeds)."""
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
        w.writeheader()
        for row in self.rows():
            w.writerow(row)
        return buf.getvalue()

    def markdown(self) -> str:
        """The table as Markdown, with the per-method settings and the command."""
        n = {len(m.results) for m in self.methods}
        lines = [
            f"# {self.name}: learning rules compared",
            "",
            f"Mean over {'/'.join(map(str, sorted(n)))} seeds (accuracy: mean ± sample std). "
            "Digital FLOPs: everything a computer does that the physical system does not, "
            "counted with torch.utils.flop_counter extended to pointwise ops; *of which model* "
            "is the differentiable twin (PAT) or simulator backward pass (backprop). Energy: "
            f"device J/query x queries + {self.j_per_flop:g} J/FLOP x FLOPs (training).",
            "",
            "| method | test accuracy (%) | train device queries | digital FLOPs (train) | "
            "of which model | energy train (J) | wall time (s) | peak memory (MiB) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in self.rows():
            lines.append(
                f"| {r['method']} | {100 * r['test_acc_mean']:.2f} ± {100 * r['test_acc_std']:.2f} "
                f"| {r['train_queries']:.3g} | {r['flops_train']:.3g} | {r['flops_model']:.3g} "
                f"| {r['energy_train_j']:.3g} | {r['wall_time_s']:.1f} | "
                f"{r['peak_memory_mib']:.1f} |"
            )
        lines += ["", "Per-method settings (on top of the preset):", ""]
        for r in self.rows():
            lines.append(f"- {r['method']}: {r['settings'] or '(preset as is)'}")
        if self.command:
            lines += ["", f"Command: `{self.command}`"]
        return "\n".join(lines)

    def figure(self):
        """Accuracy against training device queries and against training digital FLOPs."""
        from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

        fig = Figure(figsize=(11, 4.2), layout="constrained")
        ax_q, ax_f = fig.subplots(1, 2)
        for i, m in enumerate(self.methods):
            color = f"C{i}"
            curves = []
            for r in m.results:
                met = r.record["metrics"]
                ok = ~np.isnan(met["test_acc"])
                q = np.cumsum(met["train_queries"])[ok]
                curves.append((q, 100 * met["test_acc"][ok]))
            length = min(len(c[0]) for c in curves)
            q = np.mean([c[0][:length] for c in curves], 0)
            acc = np.array([c[1][:length] for c in curves])
            mu, sd = acc.mean(0), acc.std(0)
            ax_q.plot(q, mu, "o-", color=color, label=m.method, ms=3)
            ax_q.fill_between(q, mu - sd, mu + sd, color=color, alpha=0.2)
            row = m.row()
            ax_f.errorbar(
                row["flops_train"], 100 * row["test_acc_mean"], yerr=100 * row["test_acc_std"],
                fmt="o", color=color, label=m.method, capsize=3,
            )
            ax_f.annotate(m.method, (row["flops_train"], 100 * row["test_acc_mean"]),
                          textcoords="offset points", xytext=(5, 5))
        ax_q.set(xlabel="training device queries (cumulative)", ylabel="test accuracy (%)",
                 xscale="log", title="accuracy vs device queries")
        ax_q.legend()
        ax_f.set(xlabel="training digital FLOPs (incl. twin / simulator gradient)",
                 ylabel="final test accuracy (%)", xscale="log",
                 title="accuracy vs digital FLOPs")
        fig.suptitle(self.name)
        return fig

    def as_dict(self) -> dict[str, Any]:
        """The table and every run log's path, for ``compare.json``."""
        return {
            "name": self.name,
            "command": self.command,
            "rows": self.rows(),
            "runs": {m.method: [str(r.path) for r in m.results] for m in self.methods},
        }


def from_logs(folder: str | Path, methods: list[str] | tuple[str, ...] | None = None) -> Comparison:
    """The comparison of the complete run logs in ``folder`` (``OUT/NAME``), without training.

    Rebuilds the table and plot, e.g. after the defaults changed (the runner then refuses
    to resume old logs as a different config) or to redraw them. Incomplete logs are left
    out and named in the error if a method has no complete run.
    """

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no comparison folder {folder}")
    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and any(p.glob("seed*.h5")))
    methods = list(methods) if methods else [m for m in DEFAULT_METHODS if m in found] + [
        m for m in found if m not in DEFAULT_METHODS
    ]
    out, name, j_per_flop = [], folder.name, math.nan
    for m in methods:
        paths = sorted((folder / m).glob("seed*.h5"), key=lambda p: int(p.stem[4:]))
        recs = [(p, read_run(p)) for p in paths]
        done = [(p, r) for p, r in recs if r.get("status") == "complete"]
        if not done:
            raise ValueError(f"no complete run log of method {m!r} in {folder / m}")
        train = done[0][1]["config"]["train"]
        try:
            preset = load_config(done[0][1]["config"]["name"]).to_dict()["train"]
        except ValueError:
            preset = {}
        chosen = {k: v for k, v in train.items() if k != "method" and preset.get(k, v) != v}
        j_per_flop = float(train.get("digital_j_per_flop", j_per_flop))
        out.append(MethodResult(m, chosen, [run_result(p, r) for p, r in done]))
        name = done[0][1]["config"]["name"]
    return Comparison(name, out, command=f"physnn compare --from-logs {folder}",
                      j_per_flop=j_per_flop)


COMPARE_OUTPUTS = ("compare.md", "compare.csv", "compare.json", "compare.png")
"""What ``write_outputs`` writes into a comparison's folder."""


def write_outputs(comp: Comparison, folder: Path) -> None:
    """``compare.md``, ``.csv``, ``.json`` and ``.png`` in ``folder``, each written atomically."""
    write_text_atomic(folder / "compare.md", comp.markdown() + "\n")
    write_text_atomic(folder / "compare.csv", comp.csv())
    write_text_atomic(folder / "compare.json", json.dumps(comp.as_dict(), indent=2) + "\n")
    save_figure_atomic(folder / "compare.png", comp.figure())


def method_config(
    base: ExperimentConfig, method: str, settings: dict[str, Any]
) -> tuple[ExperimentConfig, dict[str, Any]]:
    """``base`` with ``train.method = method`` and the method's ``[train]`` settings."""
    chosen = dict(settings.get(method, {}))
    allowed = ExperimentConfig().to_dict()["train"]
    unknown = sorted(set(chosen) - set(allowed))
    if unknown:
        raise ValueError(
            f"compare settings for {method!r} set unknown [train] key(s) {unknown}; "
            f"allowed: {sorted(allowed)}"
        )
    return base.merged({"train": {"method": method, **copy.deepcopy(chosen)}}), chosen


def compare(
    source: ConfigSource,
    *,
    methods: list[str] | tuple[str, ...] = DEFAULT_METHODS,
    seeds: int = 5,
    seed: int | None = None,
    out: str | Path = "runs/compare",
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
) -> Comparison:
    """Train ``seeds`` seeds of every method on a preset or config; what ``physnn compare`` runs.

    ``overrides`` (``section.key=value``) apply to every method, after the per-method
    ``settings``; ``epochs`` overrides ``train.epochs`` for all. Seeds run
    ``seed .. seed + seeds - 1`` (default: the config's seed); ``jobs`` runs at once;
    ``ray`` / ``gpus_per_run`` / ``retries``: Ray and restarts (``jobs.Executor``);
    ``name``: the folder under ``out`` (default ``config.run_label``).
    """
    from ..train.methods import METHODS

    methods = list(methods)
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"unknown method(s) {bad}; allowed: {sorted(METHODS)}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods listed twice: {methods}")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    executor = Executor(jobs=jobs, threads=threads, ray=ray, gpus=gpus_per_run, retries=retries)
    if ray is None:  # on a cluster the workers' devices count, not this machine's
        check_torch_device(torch_device)
    base = load_config(source)
    table = load_settings(settings).get(base.name, {})
    first = base.seed if seed is None else int(seed)
    label = run_label(base.name, list(overrides or []), name)
    folder = Path(out) / label
    if overwrite:
        discard_stale(folder, COMPARE_OUTPUTS)
    results, runs = [], []
    for m in methods:
        cfg, chosen = method_config(base, m, table)
        try:
            cfg = apply_overrides(cfg, list(overrides or []))
        except ValueError as e:  # a --set that only some rules take: say where it belongs
            raise ValueError(f"{e} (--set applies to every method; to set a [train] key for "
                             f"{', '.join(x for x in methods if x != m) or 'one method'} only, "
                             f"give it in a --settings file under [{base.name}.METHOD])") from e
        if epochs is not None:
            cfg = cfg.merged({"train": {"epochs": epochs}})
        for o in overrides or []:
            chosen[o.partition("=")[0].strip()] = o.partition("=")[2]
        if epochs is not None:
            chosen["epochs"] = int(epochs)
        results.append(MethodResult(m, chosen))
        runs += [
            Job(f"{label} {m} seed {s}", run, dict(
                config=cfg, out=folder / m / f"seed{s}.h5", seed=s, torch_device=torch_device,
                progress=progress and jobs == 1 and ray is None, overwrite=overwrite,
            ))
            for s in range(first, first + seeds)
        ]
    done = iter(run_jobs(runs, executor=executor, progress=progress,
                         desc=f"compare {label}"))
    for mr in results:
        mr.results = [next(done) for _ in range(seeds)]
    comp = Comparison(label, results, command=command, j_per_flop=base.train.digital_j_per_flop)
    folder.mkdir(parents=True, exist_ok=True)
    write_outputs(comp, folder)
    return comp
