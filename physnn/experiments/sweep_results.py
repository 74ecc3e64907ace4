"""A sweep's results: per-candidate figures over seeds, and the table, CSV, JSON and plot."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import save_figure_atomic, write_text_atomic
from .sweep_spec import ACCURACIES, Candidate, SweepSpec, _seed_text, _value_text


@dataclass
class Stats:
    """One candidate on one set of seeds: per-seed figures or errors, and their means."""

    candidate: Candidate
    phase: str
    """``tune``, ``report`` or ``grid`` (no protocol)."""
    seeds: list[int]
    figures: dict[int, dict[str, float]] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Whether every seed has figures and none failed."""
        return not self.errors and len(self.figures) == len(self.seeds)

    def values(self, metric: str) -> list[float]:
        """``metric`` per finished seed, in seed order."""
        return [self.figures[s].get(metric, math.nan) for s in self.seeds if s in self.figures]

    def mean_std(self, metric: str) -> tuple[float, float]:
        """Mean and sample std of ``metric`` over the finished seeds (NaN if any lacks it)."""
        v = np.asarray(self.values(metric), dtype=float)
        if v.size == 0 or np.isnan(v).any():
            return math.nan, math.nan
        return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0

    def mean(self, metric: str) -> float:
        """Mean of ``metric`` over the finished seeds."""
        return self.mean_std(metric)[0]

    @property
    def status(self) -> str:
        """``ok``, ``not run``, or how many seeds failed and the first message."""
        if self.complete:
            return "ok"
        if not self.errors:
            return "not run"
        (seed, msg), = list(self.errors.items())[:1]
        n = len(self.errors)
        return f"failed on {n} seed(s); seed {seed}: {msg}"


@dataclass
class SweepResult:
    """A finished sweep: every candidate's row, the choice and its report."""

    spec: SweepSpec
    folder: Path
    rows: list[Stats]
    chosen: Stats | None = None
    chosen_by: str = ""
    """How a tie on the metric was settled ("" when there was none)."""
    report: Stats | None = None
    executor: str = ""
    wall_time_s: float = 0.0
    command: str = ""

    @property
    def axes(self) -> list[str]:
        """The parameter names: grid axes, then random keys."""
        return [*self.spec.axes, *self.spec.random]

    def _metric_label(self) -> str:
        better = "higher" if self.spec.goal == "max" else "lower"
        return f"{self.spec.select} ({better} is better)"

    def _ties(self) -> str:
        order = [f"the {'higher' if g == 'max' else 'lower'} mean {m}" for m, g in self.spec.tie_break]
        return " (a tie goes to " + ", then ".join([*order, "the first listed"]) + ")"

    def table(self) -> list[dict[str, Any]]:
        """One row per candidate and phase: parameters, mean ± std, per seed, the ledger."""
        out = []
        metric = self.spec.select
        for r in [*self.rows, *([self.report] if self.report else [])]:
            mu, sd = r.mean_std(metric)
            acc, acc_sd = r.mean_std("test_acc")
            row: dict[str, Any] = {
                "phase": r.phase, "candidate": r.candidate.slug,
                **{a: _value_text(r.candidate.params.get(a, "")) for a in self.axes},
                "seeds": _seed_text(r.seeds), "metric": metric, "mean": mu, "std": sd,
                "per_seed": " ".join(
                    f"{s}:{r.figures[s].get(metric, math.nan):.6g}" for s in r.seeds if s in r.figures),
                "test_acc_mean": acc, "test_acc_std": acc_sd,
                "reference_acc_mean": r.mean("reference_acc"),
                "queries_train": r.mean("queries_train"),
                "flops_train_total": r.mean("flops_train_total"),
                "wall_time_s": r.mean("wall_time_s"),
                "chosen": self.chosen is not None and r.candidate.slug == self.chosen.candidate.slug,
                "status": r.status,
            }
            out.append(row)
        return out

    def csv(self) -> str:
        """``sweep.csv``: the table with full-precision numbers."""
        rows = self.table()
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["phase"], lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()

    def markdown(self) -> str:
        """``sweep.md``: what ran, how it chose, the tables."""
        s, metric = self.spec, self.spec.select
        pct = metric in ACCURACIES

        def fmt(mu: float, sd: float) -> str:
            if math.isnan(mu):
                return "-"
            return f"{100 * mu:.2f} ± {100 * sd:.2f} %" if pct else f"{mu:.4g} ± {sd:.2g}"

        def fmt1(v: float) -> str:
            return "-" if math.isnan(v) else (f"{100 * v:.2f}" if pct else f"{v:.4g}")

        base = (f"`{s.base}`" if s.base else "the presets of the `preset` axis") + (
            " with " + " ".join(f"`--set {a}`" for a in s.set) if s.set else "")
        axes = " x ".join(f"`{a}` ({len(v)})" for a, v in s.axes.items()) or "no grid axes"
        if s.random:
            axes += f", {s.draws} random draw(s) of " + ", ".join(f"`{k}`" for k in s.random)
        lines = [f"# sweep {s.name}", "", f"Base: {base}.", "",
                 f"Candidates: {len(self.rows)} ({axes}).", ""]
        if s.protocol:
            lines += [
                f"**Held-out protocol.** Tune seeds {_seed_text(s.tune_seeds)} chose, by the mean "
                f"{self._metric_label()} over them{self._ties()}; report seeds "
                f"{_seed_text(s.report_seeds)} report the chosen candidate, run once. No report "
                "seed entered the choice.", ""]
        else:
            lines += [f"Every candidate on seeds {_seed_text(s.seeds)}; no choice made.", ""]
        lines += [f"Ran on {self.executor}; sweep wall time {self.wall_time_s:.0f} s.", ""]
        if self.command:
            lines += ["```", self.command, "```", ""]
        axes_cols = self.axes
        head = ["", *axes_cols, f"{metric} mean ± std", "per seed", "train device queries",
                "digital FLOPs (train)", "wall time per run (s)", "status"]
        title = f"## Tune seeds {_seed_text(s.tune_seeds)}" if s.protocol else \
            f"## Seeds {_seed_text(s.seeds)}"
        lines += [title, "", "| " + " | ".join(head) + " |",
                  "|" + "|".join(["---"] * (len(axes_cols) + 1) + ["---:"] * 5 + ["---"]) + "|"]
        for r in self.rows:
            mark = "**chosen**" if self.chosen is r else ""
            per = " / ".join(fmt1(v) for v in r.values(metric))
            lines.append("| " + " | ".join([
                mark, *[_value_text(r.candidate.params.get(a, "")) for a in axes_cols],
                fmt(*r.mean_std(metric)), per or "-", _num(r.mean("queries_train")),
                _num(r.mean("flops_train_total")), _num(r.mean("wall_time_s"), ".1f"),
                _cell(r.status)]) + " |")
        if self.report is not None and self.chosen is not None:
            rep = self.report
            lines += [
                "", f"## Report seeds {_seed_text(s.report_seeds)}: the chosen candidate, once", "",
                f"Chosen: `{rep.candidate.slug}` (tune seeds: {fmt(*self.chosen.mean_std(metric))}"
                f"{'; ' + self.chosen_by if self.chosen_by else ''}).",
                "",
                f"| {metric} mean ± std | per seed | logistic regression, same splits | "
                "train device queries | wall time per run (s) | status |",
                "|---:|---:|---:|---:|---:|---|",
                f"| **{fmt(*rep.mean_std(metric))}** | "
                f"{' / '.join(fmt1(v) for v in rep.values(metric)) or '-'} | "
                f"{fmt(*rep.mean_std('reference_acc'))} | {_num(rep.mean('queries_train'))} | "
                f"{_num(rep.mean('wall_time_s'), '.1f')} | {_cell(rep.status)} |",
            ]
            if rep.candidate.assignments():
                lines += ["", "The chosen settings on their own: `" + " ".join(
                    f"--set {a}" for a in rep.candidate.assignments()) + "`."]
        return "\n".join(lines)

    def figure(self) -> Any:
        """The metric against each axis (tune seeds, mean ± std), the chosen candidate starred
        and its report-seed result beside it."""
        from matplotlib.figure import Figure

        axes = self.axes or ["candidate"]
        metric, scale = self.spec.select, 100.0 if self.spec.select in ACCURACIES else 1.0
        fig = Figure(figsize=(4.2 * len(axes), 3.6), layout="constrained")
        panels = fig.subplots(1, len(axes), squeeze=False)
        for ax, name in zip(panels[0], axes, strict=True):
            values = [r.candidate.params.get(name, r.candidate.slug) for r in self.rows]
            numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
            order = list(dict.fromkeys(_value_text(v) for v in values))  # first appearance
            pos = {t: i for i, t in enumerate(order)}

            def x_of(v: Any, numeric: bool = numeric, pos: dict[str, int] = pos) -> float:
                return float(v) if numeric else float(pos[_value_text(v)])

            groups: dict[str, list[Stats]] = {}
            for r in self.rows:
                rest = ",".join(f"{a}={_value_text(r.candidate.params[a])}"
                                for a in self.axes if a != name and a in r.candidate.params)
                groups.setdefault(rest, []).append(r)
            for rest, rows in groups.items():
                pts = sorted((x_of(r.candidate.params.get(name, r.candidate.slug)), *r.mean_std(metric))
                             for r in rows)
                xs, mus, sds = (np.array(c, dtype=float) for c in zip(*pts, strict=True))
                ax.errorbar(xs, scale * mus, yerr=scale * sds, marker="o", capsize=3,
                            label=rest or None, alpha=0.85)
            if self.chosen is not None:
                cx = x_of(self.chosen.candidate.params.get(name, self.chosen.candidate.slug))
                ax.plot([cx], [scale * self.chosen.mean(metric)], marker="*", ms=16, color="gold",
                        mec="black", ls="", label="chosen (tune seeds)", zorder=5)
                if self.report is not None:
                    mu, sd = self.report.mean_std(metric)
                    ax.errorbar([cx], [scale * mu], yerr=[scale * sd], marker="D", color="black",
                                capsize=4, ls="", label="chosen, report seeds", zorder=6)
            if numeric and all(float(v) > 0 for v in values) and \
                    max(map(float, values)) / min(map(float, values)) >= 4:
                ax.set_xscale("log")
            if not numeric:
                ax.set_xticks(range(len(order)), order, rotation=20, fontsize="small")
            ax.set(xlabel=name, ylabel=f"{metric}{' (%)' if scale == 100 else ''}")
            ax.grid(alpha=0.3)
            if len(groups) > 1 or self.chosen is not None:
                ax.legend(fontsize="x-small")
        seeds = _seed_text(self.spec.tune_seeds if self.spec.protocol else self.spec.seeds)
        fig.suptitle(f"sweep {self.spec.name}: mean ± std over seeds {seeds}", fontsize="medium")
        return fig

    def as_dict(self) -> dict[str, Any]:
        """Everything, for ``sweep.json``."""
        def stats(r: Stats) -> dict[str, Any]:
            return {"candidate": r.candidate.slug, "params": r.candidate.params,
                    "base": r.candidate.base, "phase": r.phase, "seeds": r.seeds,
                    "figures": {str(k): v for k, v in r.figures.items()},
                    "errors": {str(k): v for k, v in r.errors.items()}, "status": r.status}
        return {
            "name": self.spec.name, "select": self.spec.select, "goal": self.spec.goal,
            "tie_break": [f"{m}:{g}" for m, g in self.spec.tie_break],
            "tune_seeds": self.spec.tune_seeds, "report_seeds": self.spec.report_seeds,
            "seeds": self.spec.seeds, "executor": self.executor, "command": self.command,
            "wall_time_s": self.wall_time_s, "rows": [stats(r) for r in self.rows],
            "chosen": self.chosen.candidate.slug if self.chosen else None,
            "chosen_by": self.chosen_by,
            "report": stats(self.report) if self.report else None,
        }

    def write(self) -> None:
        """``sweep.md``, ``.csv``, ``.json``, ``.png`` and the spec as ``sweep.toml``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.folder / "sweep.toml", self.spec.to_toml())
        write_text_atomic(self.folder / "sweep.md", self.markdown() + "\n")
        write_text_atomic(self.folder / "sweep.csv", self.csv())
        write_text_atomic(self.folder / "sweep.json", json.dumps(
            self.as_dict(), indent=2, default=str) + "\n")
        save_figure_atomic(self.folder / "sweep.png", self.figure())


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (an error message may hold | or newlines)."""
    return " ".join(text.split()).replace("|", "\\|")


def _num(v: float, spec: str = ".3g") -> str:
    return "-" if math.isnan(v) else format(v, spec)
