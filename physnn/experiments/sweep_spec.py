"""A sweep's spec: its TOML format, checked in one line per problem, and its candidates.

The format is documented in docs/cluster.md; ``physnn.experiments.sweep`` runs a spec.
"""

from __future__ import annotations

import itertools
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

from .config import ExperimentConfig, apply_overrides, base_source, nested, presets

SPEC_KEYS = ("name", "base", "set", "seeds", "tune_seeds", "report_seeds", "select", "goal",
             "tie_break", "retries", "axes", "random", "resources")
DISTRIBUTIONS = ("uniform", "log_uniform", "int_uniform", "choice")
ACCURACIES = ("test_acc", "test_acc_linear", "test_acc_summed", "train_acc")
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

    def settings(self) -> dict[str, Any]:
        """The config keys the candidate sets and their values (a table axis sets several)."""
        out: dict[str, Any] = {}
        for name, value in self.params.items():
            if name == "preset":
                continue
            out.update({k: x for k, x in value.items() if k != "label"}
                       if isinstance(value, dict) else {name: value})
        return out

    def assignments(self) -> list[str]:
        """The candidate's parameters as ``--set`` strings (what ``physnn train`` would take)."""
        return [f"{k}={_toml_value(x)}" for k, x in self.settings().items()]

    def config(self, common: list[str]) -> ExperimentConfig:
        """The candidate's whole config: base, the spec's ``set``, then its parameters."""
        cfg = apply_overrides(self.base, common)
        for key, value in self.settings().items():
            cfg = cfg.merged(nested(key, value))
        return cfg


def _toml_value(v: Any) -> str:
    """``v`` as TOML on one line (what ``--set`` takes; tomli_w breaks arrays over lines)."""
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
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
    tie_break: list[tuple[str, str]] = field(default_factory=list)
    """(metric, goal) pairs that order candidates whose mean ``select`` ties, in turn."""
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
        seen: set[str] = set()
        for c in out:
            if c.slug in seen:
                raise ValueError(f"two candidates of sweep {self.name!r} share the name {c.slug!r}; "
                                 "give axis values that differ in text")
            seen.add(c.slug)
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
        d.update(select=self.select, goal=self.goal)
        if self.tie_break:
            d["tie_break"] = [f"{m}:{g}" for m, g in self.tie_break]
        d["retries"] = self.retries
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
    data, where, folder, default_name = _read(source, name)
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {', '.join(SPEC_KEYS)}")
    spec = SweepSpec(name=str(data.get("name", default_name)))
    if not re.fullmatch(r"[A-Za-z0-9._+-]+", spec.name):
        raise ValueError(f"{where}: name {spec.name!r} must be letters, digits and . _ + - only")
    _axes(spec, data, folder, where)
    base = data.get("base")
    if base is None and "preset" not in spec.axes:
        raise ValueError(f"{where}: give base = a preset or a config .toml, or a 'preset' axis; "
                         f"presets: {', '.join(presets())}")
    if base is not None:
        if "preset" in spec.axes:
            raise ValueError(f"{where}: give base or a 'preset' axis, not both")
        spec.base = base_source(base, folder, where)
    sets = data.get("set", [])
    if not isinstance(sets, list) or not all(isinstance(s, str) for s in sets):
        raise ValueError(f"{where}: set must be a list of 'section.key=value' strings")
    spec.set = list(sets)
    _random(spec, dict(data.get("random", {})), where)
    _seeds(spec, data, where)
    _choice_and_resources(spec, data, where)
    return spec


def _read(source: str | Path | dict[str, Any], name: str | None
          ) -> tuple[dict[str, Any], str, Path, str]:
    """(the spec as data, how errors name it, the folder relative paths start from, its name)."""
    if isinstance(source, dict):
        return dict(source), "sweep spec", Path.cwd(), name or "sweep"
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"sweep spec {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"sweep spec {path} is not valid TOML: {e}") from None
    return data, f"sweep spec {path}", path.parent, name or path.stem


def _axes(spec: SweepSpec, data: dict[str, Any], folder: Path, where: str) -> None:
    axes = data.get("axes", {})
    if not isinstance(axes, dict):
        raise ValueError(f"{where}: [axes] must be a table of KEY = [values]")
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"{where}: axis {key!r} must list at least one value, got {values!r}")
        if key == "preset":
            values = [base_source(v, folder, where) for v in values]
        elif any(isinstance(v, dict) for v in values):
            if not all(isinstance(v, dict) and v for v in values):
                raise ValueError(f"{where}: axis {key!r} mixes tables of settings with plain values")
        if len(values) != len({_value_text(v) for v in values}):
            raise ValueError(f"{where}: axis {key!r} lists a value twice: {values}")
        spec.axes[key] = values


def _random(spec: SweepSpec, rand: dict[str, Any], where: str) -> None:
    if not rand:
        return
    spec.draws = int(rand.pop("draws", 0))
    spec.draw_seed = int(rand.pop("seed", 0))
    if spec.draws < 1:
        raise ValueError(f"{where}: [random] needs draws = N >= 1 (candidates drawn)")
    for key, dist in rand.items():
        if not isinstance(dist, dict) or len(dist) != 1 or next(iter(dist)) not in DISTRIBUTIONS:
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


def _seeds(spec: SweepSpec, data: dict[str, Any], where: str) -> None:
    if "seeds" in data and ("tune_seeds" in data or "report_seeds" in data):
        raise ValueError(f"{where}: give seeds (every candidate on every seed, no choice) or "
                         "tune_seeds and report_seeds (the held-out protocol), not both")
    if ("tune_seeds" in data) != ("report_seeds" in data):
        raise ValueError(f"{where}: the held-out protocol needs both tune_seeds (they choose) and "
                         "report_seeds (they report the chosen candidate once)")
    if "tune_seeds" not in data:
        spec.seeds = parse_seeds(data.get("seeds", [0]), "seeds")
        return
    spec.tune_seeds = parse_seeds(data["tune_seeds"], "tune_seeds")
    spec.report_seeds = parse_seeds(data["report_seeds"], "report_seeds")
    both = sorted(set(spec.tune_seeds) & set(spec.report_seeds))
    if both:
        raise ValueError(f"{where}: seed(s) {both} are both tune and report seeds; physnn never "
                         "selects on a report seed (tune on seeds >= 100, report on 0-9)")


def _check_metric(metric: str, key: str, where: str) -> None:
    if metric not in ACCURACIES and not re.fullmatch(r"[a-z_]+", metric):
        raise ValueError(f"{where}: {key} must be one of {', '.join(ACCURACIES)} or a run-ledger "
                         f"entry such as queries_train or wall_time_s, got {metric!r}")


def _tie_break(value: Any, where: str) -> list[tuple[str, str]]:
    """``["train_acc", "queries_train:min"]`` -> [(metric, goal), ...]; goal ``max`` unless
    given after a colon."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: tie_break must be a list of metrics, each optionally with "
                         f"':max' or ':min' (e.g. [\"queries_train:min\"]), got {value!r}")
    out = []
    for item in value:
        metric, _, goal = item.partition(":")
        _check_metric(metric, "each tie_break metric", where)
        if goal not in ("", "max", "min"):
            raise ValueError(f"{where}: tie_break {item!r}: the goal after ':' must be 'max' or "
                             f"'min', got {goal!r}")
        out.append((metric, goal or "max"))
    return out


def _choice_and_resources(spec: SweepSpec, data: dict[str, Any], where: str) -> None:
    spec.select = str(data.get("select", "test_acc"))
    _check_metric(spec.select, "select", where)
    spec.goal = str(data.get("goal", "max"))
    if spec.goal not in ("max", "min"):
        raise ValueError(f"{where}: goal must be 'max' or 'min', got {spec.goal!r}")
    spec.tie_break = _tie_break(data.get("tie_break", []), where)
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
