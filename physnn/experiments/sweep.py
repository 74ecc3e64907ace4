"""Sweeps: candidates (a grid, random draws, presets, learning rules) x seeds, and the
held-out tuning protocol: choose on tune seeds, then report the chosen candidate once.

A sweep is a TOML spec (``physnn sweep SPEC.toml``; docs/cluster.md has the format). Every
trial is an ordinary run (``runner.run``) with its own resumable run log in
``OUT/NAME/trials/CANDIDATE/seed<S>.h5``, the candidate's folder named from its parameters,
so rerunning the same command skips finished trials and resumes the rest, on whichever
executor (``jobs.Executor``). With ``tune_seeds`` and ``report_seeds`` the sweep runs every
candidate on the tune seeds only, picks by the mean of ``select`` over them (ties broken by
``tie_break``, then the first listed), then runs the chosen one on the report seeds;
report-seed results never reach the choice.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .config import ExperimentConfig, same_config
from .jobs import Executor, Job, Outcome, execute, ray_session
from .runlog import read_run
from .runner import check_torch_device, run, run_result
from .sweep_results import Stats, SweepResult
from .sweep_spec import ACCURACIES, Candidate, SweepSpec, _seed_text, load_spec

# -- trials ---------------------------------------------------------------------------------


def trial_figures(path: Path, record: dict[str, Any]) -> dict[str, float]:
    """What the sweep table needs of one run log: accuracies and the ledger's numbers."""
    r = run_result(Path(path), record)

    def last(key: str) -> float:  # a read-out's own accuracy at the last evaluation
        v = np.asarray(record["metrics"].get(key, []), dtype=float)
        v = v[~np.isnan(v)]
        return float(v[-1]) if v.size else math.nan

    ledger = record["accounting"].get("ledger", {})
    return {
        **{k: float(v) for k, v in ledger.items() if isinstance(v, int | float)},
        "test_acc": r.test_acc, "train_acc": r.train_acc,
        "test_acc_linear": last("test_acc_linear"), "test_acc_summed": last("test_acc_summed"),
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
    if rec.get("status") != "complete" or not same_config(rec["config"], cfg.to_dict()):
        return None
    return trial_figures(path, rec)


def _score(r: Stats, metric: str, goal: str) -> float:
    """Higher is better; NaN is worst. Rounded so that equal means over different seed
    orders tie exactly (float sums can differ in their last bit)."""
    v = r.mean(metric)
    return -math.inf if math.isnan(v) else round(v if goal == "max" else -v, 12)


def choose(rows: list[Stats], metric: str, goal: str, report_seeds: list[int],
           tie_break: Sequence[tuple[str, str]] = ()) -> Stats:
    """The candidate with the best mean ``metric`` over its tune seeds; on a tie, the best by
    each ``(metric, goal)`` of ``tie_break`` in turn, then the first listed.

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
    keys = [(metric, goal), *tie_break]
    return max(eligible, key=lambda r: tuple(_score(r, m, g) for m, g in keys))  # first on a tie


def chosen_by(rows: list[Stats], chosen: Stats, metric: str, goal: str,
              tie_break: Sequence[tuple[str, str]] = ()) -> str:
    """How ``choose`` settled a tie on ``metric`` ("" when there was none), for the table."""
    tied = [r for r in rows if r is not chosen and r.complete
            and _score(r, metric, goal) == _score(chosen, metric, goal)]
    if not tied:
        return ""
    for m, g in tie_break:
        tied = [r for r in tied if _score(r, m, g) == _score(chosen, m, g)]
        if not tied:
            return f"on a tie of the mean {metric}, by the {'higher' if g == 'max' else 'lower'} {m}"
    return f"on a tie of the mean {metric}, as the first listed"


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
    cands = s.candidates()
    folder = Path(out) / s.name
    t0 = time.perf_counter()
    with ray_session(executor):
        rows = _run_phase("tune" if s.protocol else "grid", cands,
                          s.tune_seeds if s.protocol else s.seeds, s, folder, executor,
                          torch_device, progress)
        result = SweepResult(s, folder, rows, executor=executor.describe(), command=command)
        if all(r.errors and not r.figures for r in rows):
            result.write()  # the table names every failure
            raise ValueError(f"every trial of sweep {s.name!r} failed; first: {rows[0].status}")
        if s.protocol:
            for r in rows:
                for m in [s.select, *(m for m, _ in s.tie_break)]:
                    if r.figures and m not in next(iter(r.figures.values())):
                        raise ValueError(f"{m!r} (select or tie_break) is not a figure of these "
                                         f"runs; try {', '.join(ACCURACIES)} or a run-ledger entry")
            try:
                result.chosen = choose(rows, s.select, s.goal, s.report_seeds, s.tie_break)
                result.chosen_by = chosen_by(rows, result.chosen, s.select, s.goal, s.tie_break)
            except ValueError:
                result.write()  # the tune table shows what went wrong
                raise
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


__all__ = ["Candidate", "Stats", "SweepResult", "SweepSpec", "choose", "chosen_by", "dry_run",
           "load_spec", "run_trial", "sweep", "trial_figures"]
