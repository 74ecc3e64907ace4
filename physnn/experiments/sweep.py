"""Sweeps: candidates (a grid, random draws, presets, learning rules) x seeds, and the
held-out tuning protocol: choose on tune seeds, then report the chosen candidate once.

A sweep is a TOML spec (``physnn sweep SPEC.toml``; docs/cluster.md has the format). Every
trial is an ordinary run (``runner.run``) with its own resumable run log in
``OUT/NAME/trials/CANDIDATE/seed<S>.h5``, the candidate's folder named from its parameters,
so rerunning the same command skips finished trials and resumes the rest, on whichever
executor (``jobs.Executor``). With ``tune_seeds`` and ``report_seeds`` the sweep runs every
candidate on the tune seeds only, picks by the mean of ``select`` over them, then runs the
chosen one on the report seeds; report-seed results never reach the choice.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import re
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

from ..core.atomic import save_figure_atomic, write_text_atomic
from .config import ExperimentConfig, apply_overrides, presets
from .jobs import Executor, Job, Outcome, execute, ray_session
from .runlog import read_run
from .runner import check_torch_device, run, run_result

SPEC_KEYS = ("name", "base", "set", "seeds", "tune_seeds", "report_seeds", "select", "goal",
             "retries", "axes", "random", "resources")
DISTRIBUTIONS = ("uniform", "log_uniform", "int_uniform", "choice")
ACCURACIES = ("test_acc", "test_acc_linear", "train_acc")
"""Metrics a sweep can select by besides the run ledger's entries (``queries_train``,
``flops_train_total``, ``energy_train_j``, ``wall_time_s``, ...)."""


# -- the spec ---------------------------------------------------------------------------------


def parse_seeds(value: Any, key: str) -> list[int]:
    """Seeds as a list of integers or a range ``"A-B"`` (both ends included)."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", value)
        if not m or int(m[1]) > int(m[2]):
            raise ValueError(f"sweep key {key!r} must be a list of seeds or a range like '0-9', "
                             f"got {value!r}")
        return list(range(int(m[1]), int(m[2]) + 1))
    if (not isinstance(value, list) or not value
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)):
        raise ValueError(f"sweep key {key!r} must be a non-empty list of seeds >= 0 or a range "
                         f"like '0-9', got {value!r}")
    if len(set(value)) != len(value):
        raise ValueError(f"sweep key {key!r} lists a seed twice: {value}")
    return list(value)


def _seed_text(seeds: list[int]) -> str:
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def _value_text(v: Any) -> str:
    """A parameter value as it appears in a trial's folder name and the table (unique:
    ``repr`` of a float is the shortest text that reads back as the same float)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, dict):
        return str(v["label"]) if "label" in v else "+".join(
            f"{k.rsplit('.', 1)[-1]}={_value_text(x)}" for k, x in v.items())
    if isinstance(v, list):
        return "-".join(_value_text(x) for x in v)
    return str(v)


@dataclass(frozen=True)
class Candidate:
    """One point of the sweep: a base config and the parameters set on it."""

    params: dict[str, Any]
    """Axis name -> value, as the spec gives them (the table's columns)."""
    base: str
    """The preset or config file the candidate starts from."""
    slug: str
    """Its folder name under ``trials/``, made from its parameters."""

    def assignments(self) -> list[str]:
        """The candidate's parameters as ``--set`` strings (what ``physnn train`` would take)."""
        out = []
        for name, value in self.params.items():
            if name == "preset":
                continue
            items = ({k: x for k, x in value.items() if k != "label"} if isinstance(value, dict)
                     else {name: value})
            out += [f"{k}={_toml_value(x)}" for k, x in items.items()]
        return out

    def config(self, common: list[str]) -> ExperimentConfig:
        """The candidate's whole config: base, the spec's ``set``, then its parameters."""
        cfg = apply_overrides(self.base, common)
        for name, value in self.params.items():
            if name == "preset":
                continue
            items = ({k: x for k, x in value.items() if k != "label"} if isinstance(value, dict)
                     else {name: value})
            for key, x in items.items():
                cfg = cfg.merged(_nested(key, x))
        return cfg


def _nested(key: str, value: Any) -> dict[str, Any]:
    """``"train.lr", 1e-3`` as ``{"train": {"lr": 1e-3}}`` (the config checks the key)."""
    *parents, leaf = key.strip().split(".")
    top: dict[str, Any] = {}
    node = top
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return top


def _toml_value(v: Any) -> str:
    return tomli_w.dumps({"v": v}).partition("=")[2].strip()


@dataclass
class SweepSpec:
    """A sweep as its TOML spec says (see ``load_spec``)."""

    name: str
    base: str | None = None
    set: list[str] = field(default_factory=list)
    axes: dict[str, list[Any]] = field(default_factory=dict)
    random: dict[str, dict[str, Any]] = field(default_factory=dict)
    draws: int = 0
    draw_seed: int = 0
    seeds: list[int] = field(default_factory=list)
    tune_seeds: list[int] = field(default_factory=list)
    report_seeds: list[int] = field(default_factory=list)
    select: str = "test_acc"
    goal: str = "max"
    retries: int = 2
    cpus: float | None = None
    gpus: float = 0.0

    @property
    def protocol(self) -> bool:
        """Whether the sweep chooses on tune seeds and reports on report seeds."""
        return bool(self.tune_seeds)

    def candidates(self) -> list[Candidate]:
        """Every candidate: the grid of ``axes`` crossed with the random draws (if any)."""
        grid = [[(name, v) for v in values] for name, values in self.axes.items()]
        draws = self._draws() or [{}]
        out: list[Candidate] = []
        for draw in draws:
            for point in itertools.product(*grid):
                params = {**dict(point), **draw}
                base = str(params.get("preset", self.base))
                out.append(Candidate(params, base, _slug(params)))
        seen: dict[str, Candidate] = {}
        for c in out:
            if c.slug in seen:
                raise ValueError(f"two candidates of sweep {self.name!r} share the name {c.slug!r}; "
                                 "give axis values that differ in text")
            seen[c.slug] = c
        return out

    def _draws(self) -> list[dict[str, Any]]:
        rng = np.random.default_rng(self.draw_seed)
        draws = []
        for _ in range(self.draws if self.random else 0):
            d: dict[str, Any] = {}
            for key, dist in self.random.items():
                (kind, arg), = dist.items()
                if kind == "choice":
                    d[key] = arg[int(rng.integers(len(arg)))]
                elif kind == "int_uniform":
                    d[key] = int(rng.integers(arg[0], arg[1] + 1))
                elif kind == "uniform":
                    d[key] = float(f"{rng.uniform(arg[0], arg[1]):.3g}")
                else:  # log_uniform
                    d[key] = float(f"{math.exp(rng.uniform(math.log(arg[0]), math.log(arg[1]))):.3g}")
            draws.append(d)
        return draws

    def to_toml(self) -> str:
        """The spec as TOML (what ``sweep.toml`` beside the results holds)."""
        d: dict[str, Any] = {"name": self.name}
        if self.base is not None:
            d["base"] = self.base
        if self.set:
            d["set"] = self.set
        for key in ("seeds", "tune_seeds", "report_seeds"):
            if getattr(self, key):
                d[key] = getattr(self, key)
        d.update(select=self.select, goal=self.goal, retries=self.retries)
        if self.axes:
            d["axes"] = self.axes
        if self.random:
            d["random"] = {"draws": self.draws, "seed": self.draw_seed, **self.random}
        res: dict[str, Any] = {"gpus": self.gpus}
        if self.cpus is not None:
            res["cpus"] = self.cpus
        d["resources"] = res
        return tomli_w.dumps(d)


def _slug(params: dict[str, Any]) -> str:
    if not params:
        return "base"
    leaves = [k.rsplit(".", 1)[-1] for k in params]
    parts = []
    for key, leaf in zip(params, leaves, strict=True):
        short = leaf if leaves.count(leaf) == 1 else key
        value = params[key]
        if key == "preset" and isinstance(value, str) and value.endswith(".toml"):
            value = Path(value).stem
        parts.append(f"{short}={_value_text(value)}")
    slug = re.sub(r"[^A-Za-z0-9._=,+-]", "-", ",".join(parts))
    if len(slug) > 120:  # file systems cap names at 255 bytes; keep them readable too
        import hashlib

        slug = slug[:100] + "," + hashlib.sha1(slug.encode()).hexdigest()[:10]
    return slug


def load_spec(source: str | Path | dict[str, Any], *, name: str | None = None) -> SweepSpec:
    """A checked ``SweepSpec`` from a TOML file or a dict; the first problem in one line."""
    where = "sweep spec"
    folder = Path.cwd()
    if isinstance(source, dict):
        data = dict(source)
        default_name = name or "sweep"
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"sweep spec {path} does not exist")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"sweep spec {path} is not valid TOML: {e}") from None
        where, folder, default_name = f"sweep spec {path}", path.parent, name or path.stem
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {', '.join(SPEC_KEYS)}")
    spec = SweepSpec(name=str(data.get("name", default_name)))
    if not re.fullmatch(r"[A-Za-z0-9._+-]+", spec.name):
        raise ValueError(f"{where}: name {spec.name!r} must be letters, digits and . _ + - only")

    axes = data.get("axes", {})
    if not isinstance(axes, dict):
        raise ValueError(f"{where}: [axes] must be a table of KEY = [values]")
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"{where}: axis {key!r} must list at least one value, got {values!r}")
        if key == "preset":
            values = [_base_text(v, folder, where) for v in values]
        elif any(isinstance(v, dict) for v in values):
            if not all(isinstance(v, dict) and v for v in values):
                raise ValueError(f"{where}: axis {key!r} mixes tables of settings with plain values")
        if len(values) != len({_value_text(v) for v in values}):
            raise ValueError(f"{where}: axis {key!r} lists a value twice: {values}")
        spec.axes[key] = values

    base = data.get("base")
    if base is None and "preset" not in spec.axes:
        raise ValueError(f"{where}: give base = a preset or a config .toml, or a 'preset' axis; "
                         f"presets: {', '.join(presets())}")
    if base is not None:
        if "preset" in spec.axes:
            raise ValueError(f"{where}: give base or a 'preset' axis, not both")
        spec.base = _base_text(base, folder, where)

    sets = data.get("set", [])
    if not isinstance(sets, list) or not all(isinstance(s, str) for s in sets):
        raise ValueError(f"{where}: set must be a list of 'section.key=value' strings")
    spec.set = list(sets)

    rand = dict(data.get("random", {}))
    if rand:
        spec.draws = int(rand.pop("draws", 0))
        spec.draw_seed = int(rand.pop("seed", 0))
        if spec.draws < 1:
            raise ValueError(f"{where}: [random] needs draws = N >= 1 (candidates drawn)")
        for key, dist in rand.items():
            if (not isinstance(dist, dict) or len(dist) != 1
                    or next(iter(dist)) not in DISTRIBUTIONS):
                kinds = " | ".join(f"{d} = [...]" for d in DISTRIBUTIONS)
                raise ValueError(f"{where}: random key {key!r} must be a table {{{kinds}}}, "
                                 f"got {dist!r}")
            (kind, arg), = dist.items()
            if kind != "choice" and (not isinstance(arg, list) or len(arg) != 2
                                     or not all(isinstance(a, int | float) for a in arg)
                                     or arg[0] > arg[1] or (kind == "log_uniform" and arg[0] <= 0)):
                raise ValueError(f"{where}: random key {key!r}: {kind} takes [low, high] with "
                                 f"low <= high{' and low > 0' if kind == 'log_uniform' else ''}, "
                                 f"got {arg!r}")
            if kind == "choice" and (not isinstance(arg, list) or not arg):
                raise ValueError(f"{where}: random key {key!r}: choice takes a non-empty list")
            if key in spec.axes:
                raise ValueError(f"{where}: {key!r} is both an axis and a random key")
            spec.random[key] = dist
    if not spec.axes and not spec.random:
        pass  # one candidate: the base itself (seeds only)

    if "seeds" in data and ("tune_seeds" in data or "report_seeds" in data):
        raise ValueError(f"{where}: give seeds (every candidate on every seed, no choice) or "
                         "tune_seeds and report_seeds (the held-out protocol), not both")
    if ("tune_seeds" in data) != ("report_seeds" in data):
        raise ValueError(f"{where}: the held-out protocol needs both tune_seeds (they choose) and "
                         "report_seeds (they report the chosen candidate once)")
    if "tune_seeds" in data:
        spec.tune_seeds = parse_seeds(data["tune_seeds"], "tune_seeds")
        spec.report_seeds = parse_seeds(data["report_seeds"], "report_seeds")
        both = sorted(set(spec.tune_seeds) & set(spec.report_seeds))
        if both:
            raise ValueError(f"{where}: seed(s) {both} are both tune and report seeds; physnn never "
                             "selects on a report seed (tune on seeds >= 100, report on 0-9)")
    else:
        spec.seeds = parse_seeds(data.get("seeds", [0]), "seeds")

    spec.select = str(data.get("select", "test_acc"))
    spec.goal = str(data.get("goal", "max"))
    if spec.goal not in ("max", "min"):
        raise ValueError(f"{where}: goal must be 'max' or 'min', got {spec.goal!r}")
    spec.retries = data.get("retries", 2)
    if not isinstance(spec.retries, int) or spec.retries < 0:
        raise ValueError(f"{where}: retries must be an integer >= 0, got {spec.retries!r}")
    res = data.get("resources", {})
    if not isinstance(res, dict) or set(res) - {"cpus", "gpus"}:
        raise ValueError(f"{where}: [resources] takes cpus and gpus (per trial, on Ray)")
    if "cpus" in res:
        if not isinstance(res["cpus"], int | float) or res["cpus"] <= 0:
            raise ValueError(f"{where}: resources.cpus must be > 0, got {res['cpus']!r}")
        spec.cpus = float(res["cpus"])
    spec.gpus = float(res.get("gpus", 0.0))
    if spec.gpus < 0:
        raise ValueError(f"{where}: resources.gpus must be >= 0, got {spec.gpus}")
    return spec


def _base_text(value: Any, folder: Path, where: str) -> str:
    """A preset name, or a config file (relative to the spec's folder) as an absolute path."""
    if not isinstance(value, str):
        raise ValueError(f"{where}: a base must be a preset name or a .toml path, got {value!r}")
    if value in presets():
        return value
    path = Path(value) if Path(value).is_absolute() else folder / value
    if path.suffix == ".toml" and path.is_file():
        return str(path.resolve())
    raise ValueError(f"{where}: base {value!r} is neither a preset nor an existing .toml file; "
                     f"presets: {', '.join(presets())}")


# -- trials ---------------------------------------------------------------------------------


def trial_figures(path: Path, record: dict[str, Any]) -> dict[str, float]:
    """What the sweep table needs of one run log: accuracies and the ledger's numbers."""
    r = run_result(Path(path), record)
    lin = np.asarray(record["metrics"].get("test_acc_linear", []), dtype=float)
    lin = lin[~np.isnan(lin)]
    ledger = record["accounting"].get("ledger", {})
    return {
        **{k: float(v) for k, v in ledger.items() if isinstance(v, int | float)},
        "test_acc": r.test_acc, "train_acc": r.train_acc,
        "test_acc_linear": float(lin[-1]) if lin.size else math.nan,
        "reference_acc": r.reference_acc,
        "wall_time_s": float(record["wall_time_s"]),
    }


def run_trial(config: ExperimentConfig, out: Path, seed: int, torch_device: str) -> dict[str, float]:
    """One trial (a module-level function: pools and Ray pickle it): an ordinary run; only
    its figures travel back."""
    res = run(config, out, seed=seed, torch_device=torch_device, progress=False)
    return trial_figures(res.path, res.record)


def _finished(path: Path, cfg: ExperimentConfig) -> dict[str, float] | None:
    """The figures of a complete run log of exactly this config, else None (run it)."""
    if not path.is_file():
        return None
    try:
        rec = read_run(path)
    except ValueError:
        return None  # the run itself says what is wrong with the file
    if rec.get("status") != "complete" or rec["config"] != cfg.to_dict():
        return None
    return trial_figures(path, rec)


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


def choose(rows: list[Stats], metric: str, goal: str, report_seeds: list[int]) -> Stats:
    """The candidate with the best mean ``metric`` over its tune seeds (the first on a tie).

    Refuses any row that holds a report seed: selection never sees one.
    """
    for r in rows:
        leaked = sorted((set(r.seeds) | set(r.figures) | set(r.errors)) & set(report_seeds))
        if leaked or r.phase != "tune":
            raise ValueError(f"refusing to select on {r.candidate.slug} with seeds "
                             f"{leaked or r.seeds} ({r.phase}): only tune seeds choose, never a "
                             "report seed")
    eligible = [r for r in rows if r.complete and not math.isnan(r.mean(metric))]
    if not eligible:
        first = next((r.status for r in rows if r.errors), "no value of the metric")
        raise ValueError(f"no candidate has {metric!r} on every tune seed, so none can be chosen; "
                         f"first problem: {first}")
    sign = 1.0 if goal == "max" else -1.0
    return max(eligible, key=lambda r: sign * r.mean(metric))  # max keeps the first on a tie


# -- the sweep ------------------------------------------------------------------------------


@dataclass
class SweepResult:
    """A finished sweep: every candidate's row, the choice and its report."""

    spec: SweepSpec
    folder: Path
    rows: list[Stats]
    chosen: Stats | None = None
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
                f"{self._metric_label()} over them; report seeds {_seed_text(s.report_seeds)} "
                "report the chosen candidate, run once. No report seed entered the choice.", ""]
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
                r.status]) + " |")
        if self.report is not None and self.chosen is not None:
            rep = self.report
            lines += [
                "", f"## Report seeds {_seed_text(s.report_seeds)}: the chosen candidate, once", "",
                f"Chosen: `{rep.candidate.slug}` (tune seeds: {fmt(*self.chosen.mean_std(metric))}).",
                "",
                f"| {metric} mean ± std | per seed | logistic regression, same splits | "
                "train device queries | wall time per run (s) | status |",
                "|---:|---:|---:|---:|---:|---|",
                f"| **{fmt(*rep.mean_std(metric))}** | "
                f"{' / '.join(fmt1(v) for v in rep.values(metric)) or '-'} | "
                f"{fmt(*rep.mean_std('reference_acc'))} | {_num(rep.mean('queries_train'))} | "
                f"{_num(rep.mean('wall_time_s'), '.1f')} | {rep.status} |",
            ]
            if rep.candidate.assignments():
                lines += ["", "The chosen settings on their own: `" + " ".join(
                    f"--set {a}" for a in rep.candidate.assignments()) + "`."]
        return "\n".join(lines)

    def figure(self) -> Any:
        """The metric against each axis (tune seeds, mean ± std), the chosen candidate starred
        and its report-seed result beside it."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        axes = self.axes or ["candidate"]
        metric, scale = self.spec.select, 100.0 if self.spec.select in ACCURACIES else 1.0
        fig, panels = plt.subplots(1, len(axes), figsize=(4.2 * len(axes), 3.6), squeeze=False)
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
        fig.tight_layout()
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
            "tune_seeds": self.spec.tune_seeds, "report_seeds": self.spec.report_seeds,
            "seeds": self.spec.seeds, "executor": self.executor, "command": self.command,
            "wall_time_s": self.wall_time_s, "rows": [stats(r) for r in self.rows],
            "chosen": self.chosen.candidate.slug if self.chosen else None,
            "report": stats(self.report) if self.report else None,
        }

    def write(self) -> None:
        """``sweep.md``, ``.csv``, ``.json``, ``.png`` and the spec as ``sweep.toml``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.folder / "sweep.toml", self.spec.to_toml())
        write_text_atomic(self.folder / "sweep.md", self.markdown() + "\n")
        write_text_atomic(self.folder / "sweep.csv", self.csv())
        write_text_atomic(self.folder / "sweep.json", json.dumps(
            self.as_dict(), indent=2, default=_json_default) + "\n")
        import matplotlib.pyplot as plt

        fig = self.figure()
        save_figure_atomic(self.folder / "sweep.png", fig)
        plt.close(fig)


def _json_default(v: Any) -> Any:
    if isinstance(v, float | np.floating) and math.isnan(v):
        return None
    return str(v)


def _num(v: float, spec: str = ".3g") -> str:
    return "-" if math.isnan(v) else format(v, spec)


def _run_phase(phase: str, cands: list[Candidate], seeds: list[int], spec: SweepSpec,
               folder: Path, executor: Executor, torch_device: str, progress: bool) -> list[Stats]:
    """Every candidate on ``seeds``: finished trials are read back, the rest run as jobs."""
    rows = [Stats(c, phase, list(seeds)) for c in cands]
    jobs: list[Job] = []
    where: list[tuple[Stats, int]] = []
    for row in rows:
        c = row.candidate
        try:
            cfg = c.config(spec.set)
        except (ValueError, FileNotFoundError) as e:  # this candidate's config alone is bad
            row.errors = {s: f"{type(e).__name__}: {e}" for s in seeds}
            continue
        for s in seeds:
            path = folder / "trials" / c.slug / f"seed{s}.h5"
            done = _finished(path, cfg)
            if done is not None:
                row.figures[s] = done
                continue
            jobs.append(Job(f"{c.slug} seed {s}", run_trial, dict(
                config=cfg, out=path, seed=s, torch_device=torch_device)))
            where.append((row, s))
    outcomes: list[Outcome] = execute(jobs, executor, progress=progress, desc=f"{phase} trials")
    for (row, s), o in zip(where, outcomes, strict=True):
        if o.ok:
            row.figures[s] = o.result
        else:
            row.errors[s] = str(o.error)
    return rows


def sweep(
    spec: str | Path | dict[str, Any] | SweepSpec,
    *,
    out: str | Path = "runs/sweeps",
    jobs: int = 1,
    threads: int | None = None,
    ray: str | None = None,
    gpus_per_run: float | None = None,
    retries: int | None = None,
    torch_device: str = "cpu",
    progress: bool = True,
    command: str = "",
) -> SweepResult:
    """Run a sweep; what ``physnn sweep SPEC.toml`` runs. Writes ``OUT/NAME/sweep.{md,csv,json,
    png,toml}`` and every trial's run log under ``OUT/NAME/trials/``.

    ``jobs`` / ``ray`` choose the executor (``jobs.Executor``). Every trial runs on ``threads``
    torch threads (default: the spec's ``resources.cpus``, else 1) whichever executor runs
    it, so the same seed gives the same numbers; on Ray it asks for the spec's
    ``[resources]`` (``gpus_per_run`` overrides its GPUs). A trial that
    fails (a bad config, a worker that died more than ``retries`` times) fails alone: its
    message is in the table and the rest go on; rerunning the same call resumes.
    """
    s = spec if isinstance(spec, SweepSpec) else load_spec(spec)
    # every executor runs a trial on the same number of threads (the spec's CPUs per trial,
    # default 1): the thread count can move a run's last digits, the executor must not
    executor = Executor(
        jobs=jobs, threads=threads if threads is not None else max(1, int(s.cpus or 1)), ray=ray,
        retries=s.retries if retries is None else retries,
        cpus=s.cpus if ray is not None else None,
        gpus=(s.gpus if gpus_per_run is None else gpus_per_run) if ray is not None else 0.0,
    )
    if ray is None:
        check_torch_device(torch_device)
    if s.select not in ACCURACIES and not re.fullmatch(r"[a-z_]+", s.select):
        raise ValueError(f"select must be one of {', '.join(ACCURACIES)} or a run-ledger entry "
                         f"such as queries_train or wall_time_s, got {s.select!r}")
    cands = s.candidates()
    folder = Path(out) / s.name
    t0 = time.perf_counter()
    with ray_session(executor):
        rows = _run_phase("tune" if s.protocol else "grid", cands,
                          s.tune_seeds if s.protocol else s.seeds, s, folder, executor,
                          torch_device, progress)
        if all(r.errors and not r.figures for r in rows):
            first = rows[0].status
            raise ValueError(f"every trial of sweep {s.name!r} failed; first: {first}")
        result = SweepResult(s, folder, rows, executor=executor.describe(), command=command)
        if s.protocol:
            for r in rows:
                if r.figures and s.select not in next(iter(r.figures.values())):
                    raise ValueError(f"select {s.select!r} is not a figure of these runs; try "
                                     f"{', '.join(ACCURACIES)} or a run-ledger entry")
            result.chosen = choose(rows, s.select, s.goal, s.report_seeds)
            (result.report,) = _run_phase("report", [result.chosen.candidate], s.report_seeds,
                                          s, folder, executor, torch_device, progress)
    result.wall_time_s = time.perf_counter() - t0
    result.write()
    return result


def dry_run(spec: str | Path | dict[str, Any] | SweepSpec, out: str | Path = "runs/sweeps") -> str:
    """What a sweep would run, one candidate per line, without running anything."""
    s = spec if isinstance(spec, SweepSpec) else load_spec(spec)
    cands = s.candidates()
    seeds = s.tune_seeds if s.protocol else s.seeds
    lines = [f"sweep {s.name}: {len(cands)} candidate(s) x {len(seeds)} seed(s) = "
             f"{len(cands) * len(seeds)} trials"
             + (f", then the chosen one on report seeds {_seed_text(s.report_seeds)}"
                if s.protocol else "") + f"; run logs in {Path(out) / s.name / 'trials'}/"]
    for c in cands:
        try:
            c.config(s.set)
            ok = ""
        except ValueError as e:
            ok = f"  <- config error: {e}"
        lines.append(f"  {c.slug}  ({c.base}{''.join(' --set ' + a for a in c.assignments())})"
                     f"{ok}")
    return "\n".join(lines)


__all__ = ["Candidate", "Stats", "SweepResult", "SweepSpec", "choose", "dry_run", "load_spec",
           "run_trial", "sweep"]
