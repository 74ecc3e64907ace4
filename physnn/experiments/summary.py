"""Several seeds of one config: ``physnn train``, and the numbers a paper would report."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import discard_stale, write_text_atomic
from .config import ConfigSource, apply_overrides, run_label
from .jobs import Executor, Job, run_jobs
from .runner import RunResult, check_torch_device, run

RULE_NAMES = {"phyll": "PhyLL", "phyll-unsupervised": "unsupervised PhyLL", "ff": "FF",
              "pat": "PAT", "backprop": "backprop"}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def _percent(value: float) -> str:
    """``12.34 %``, or ``n/a`` for a figure the run did not measure (NaN)."""
    return "n/a" if np.isnan(value) else f"{100 * value:.2f} %"


@dataclass
class Summary:
    """Several seeds of one config: the numbers a paper would report."""

    name: str
    results: list[RunResult]

    def _stats(self, attr: str) -> tuple[float, float]:
        return mean_std([getattr(r, attr) for r in self.results])

    @property
    def test_acc(self) -> tuple[float, float]:
        """Final test accuracy, mean and sample std over seeds."""
        return self._stats("test_acc")

    @property
    def method(self) -> str:
        """The learning rule's display name (PhyLL, FF, PAT, backprop)."""
        rules = {r.record["config"]["train"]["method"] for r in self.results}
        return "/".join(RULE_NAMES.get(m, m) for m in sorted(rules))

    @property
    def reference_acc(self) -> tuple[float, float]:
        """Logistic regression on the same splits, mean and sample std."""
        return self._stats("reference_acc")

    def _per_seed(self, key: str) -> list[float]:
        """Reference ``key`` of every seed (empty unless every run has it)."""
        out = [float(r.record["reference"][key]) for r in self.results if key in r.record["reference"]]
        return out if len(out) == len(self.results) else []

    @property
    def quantised_reference_acc(self) -> list[float]:
        """Logistic regression on the device-quantised inputs per seed (empty without levels)."""
        return self._per_seed("logistic_regression_quantised_test_acc")

    @property
    def untrained_readout_acc(self) -> list[float]:
        """The linear read-out on the untrained blocks per seed (label-free rules only)."""
        return self._per_seed("linear_readout_untrained_test_acc")

    def as_dict(self) -> dict[str, Any]:
        """Per-seed and summary figures, for ``summary.json``."""
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
            **(
                {"linear_readout_untrained_test_acc": self.untrained_readout_acc}
                if self.untrained_readout_acc
                else {}
            ),
            "test_acc_mean": self.test_acc[0],
            "test_acc_std": self.test_acc[1],
            "runs": [str(r.path) for r in self.results],
            **(
                {
                    "test_acc_linear": self.linear_acc,
                    "test_acc_linear_mean": mean_std(self.linear_acc)[0],
                    "test_acc_linear_std": mean_std(self.linear_acc)[1],
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
        """The per-seed table and the mean ± std lines ``physnn train`` prints."""
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
                f"| {r.record['seed']} | {100 * r.test_acc:.2f} % | {_percent(r.train_acc)} | "
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
            qmu, qsd = mean_std(self.quantised_reference_acc)
            lines.append(
                f"Logistic regression on the device's quantised inputs: {100 * qmu:.2f} ± "
                f"{100 * qsd:.2f} %"
            )
        if self.untrained_readout_acc:
            umu, usd = mean_std(self.untrained_readout_acc)
            lines.append(
                f"The same linear read-out on the untrained blocks (what the physics alone "
                f"gives): {100 * umu:.2f} ± {100 * usd:.2f} %"
            )
        if self.linear_acc:
            lmu, lsd = mean_std(self.linear_acc)
            lines.append(
                f"{rule} with the linear read-out (one device pass per sample): "
                f"{100 * lmu:.2f} ± {100 * lsd:.2f} %"
            )
        return "\n".join(lines)


def train(
    source: ConfigSource,
    *,
    out: str | Path = "runs",
    seed: int | None = None,
    seeds: int = 1,
    epochs: int | None = None,
    overrides: list[str] | None = None,
    torch_device: str = "cpu",
    progress: bool = True,
    overwrite: bool = False,
    jobs: int = 1,
    threads: int | None = None,
    ray: str | None = None,
    gpus_per_run: float = 0.0,
    retries: int = 2,
    name: str | None = None,
) -> Summary:
    """Train ``seeds`` consecutive seeds of a preset or config; what ``physnn train`` runs.

    Each seed writes ``OUT/NAME/seed<S>.h5``; the summary goes to ``summary.md`` and
    ``summary.json`` beside them. Rerunning the same command resumes unfinished seeds.
    ``overrides`` are ``section.key=value`` strings, as ``physnn train --set``; ``jobs``
    runs that many seeds at once in worker processes; ``ray`` / ``gpus_per_run`` /
    ``retries`` run them on Ray and restart runs whose worker died (``jobs.Executor``).
    ``name`` is the folder under ``out`` (default: ``config.run_label``, the config's name
    with a suffix naming any device or data override).
    """
    cfg = apply_overrides(source, list(overrides or []))
    if epochs is not None:
        cfg = cfg.merged({"train": {"epochs": epochs}})
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    executor = Executor(jobs=jobs, threads=threads, ray=ray, gpus=gpus_per_run, retries=retries)
    if ray is None:  # on a cluster the workers' devices count, not this machine's
        check_torch_device(torch_device)
    first = cfg.seed if seed is None else int(seed)
    label = run_label(cfg.name, list(overrides or []), name)
    folder = Path(out) / label
    if overwrite:
        discard_stale(folder, ("summary.md", "summary.json"))
    runs = [
        Job(f"{label} seed {s}", run, dict(
            config=cfg, out=folder / f"seed{s}.h5", seed=s, torch_device=torch_device,
            progress=progress and jobs == 1 and ray is None, overwrite=overwrite,
        ))
        for s in range(first, first + seeds)
    ]
    results = run_jobs(runs, executor=executor, progress=progress, desc="seeds")
    summary = Summary(label, results)
    write_text_atomic(folder / "summary.md", summary.markdown() + "\n")
    write_text_atomic(folder / "summary.json", json.dumps(summary.as_dict(), indent=2) + "\n")
    return summary
