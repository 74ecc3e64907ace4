"""The job runner: same numbers in one process or a pool; a failed or killed job fails alone."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tqdm import tqdm

from physnn.experiments import jobs as jobs_module
from physnn.experiments.jobs import (
    Executor,
    Job,
    report_progress,
    run_jobs,
    usable_cores,
    worker_threads,
)
from physnn.experiments.runlog import read_run
from physnn.experiments.summary import train


def _square(x: int) -> int:
    return x * x


def _refuse(x: int) -> int:
    raise ValueError(f"bad value {x}")


def _die(x: int) -> int:
    os._exit(3)  # a worker killed mid-job (out of memory, kill -9)


def _die_once(marker: str) -> int:
    if not Path(marker).exists():
        Path(marker).touch()
        os._exit(3)
    return 1


def _count_to(n: int, pause: float) -> int:
    for k in range(n + 1):
        report_progress(k, n)
        time.sleep(pause)
    return n


def test_a_pools_bar_shows_the_steps_of_its_running_jobs(tmp_path: Path) -> None:
    """With --jobs each run's own epoch bar is off (workers share one terminal); the parent's
    bar names the running runs and their epochs instead. A worker that dies breaks its pool
    and that pool's queue: on the fresh pool the jobs start again, report and finish."""
    out = io.StringIO()
    bar = tqdm(total=3, file=out, disable=False, mininterval=0)
    jobs = [Job("dies once", _die_once, {"marker": str(tmp_path / "died")}),
            *(Job(f"count {c}", _count_to, {"n": 3, "pause": 0.8}) for c in "ab")]
    outcomes = jobs_module._run_pool(jobs, Executor(jobs=2, threads=1, retries=1), bar)
    bar.close()
    assert [o.result for o in outcomes] == [1, 3, 3] and (tmp_path / "died").exists()
    text = out.getvalue()
    for c in "ab":
        assert re.search(rf"count {c} [0-3]/3", text), text
    assert report_progress(1, 2) is None  # outside a pool worker: nothing to tell, no error


def test_reporting_progress_costs_microseconds(monkeypatch) -> None:
    steps = multiprocessing.get_context("spawn").Queue()
    monkeypatch.setattr(jobs_module, "_PROGRESS", steps)
    t0 = time.perf_counter()
    for k in range(2000):
        report_progress(k, 2000)
    per_call = (time.perf_counter() - t0) / 2000
    assert per_call < 200e-6, f"{per_call * 1e6:.0f} us per epoch report"  # 5 us measured
    assert steps.get(timeout=10) == (-1, 0, 2000)


def test_a_pool_returns_the_results_in_order() -> None:
    jobs = [Job(f"square {i}", _square, {"x": i}) for i in range(5)]
    assert run_jobs(jobs, n_jobs=2, progress=False) == [0, 1, 4, 9, 16]
    assert run_jobs(jobs, n_jobs=1, progress=False) == [0, 1, 4, 9, 16]


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_a_failing_job_fails_alone_and_is_named(n_jobs: int) -> None:
    jobs = [Job("square 2", _square, {"x": 2}), Job("refuse 7", _refuse, {"x": 7}),
            Job("square 3", _square, {"x": 3})]
    with pytest.raises(ValueError, match=r"1 of 3 runs failed.*refuse 7: ValueError: bad value 7"):
        run_jobs(jobs, n_jobs=n_jobs, progress=False)


def test_a_killed_worker_is_reported_with_its_job() -> None:
    jobs = [Job("dies", _die, {"x": 1})]
    jobs.append(Job("square 4", _square, {"x": 4}))
    with pytest.raises(ValueError, match="dies: RuntimeError: a worker process of the pool died"):
        run_jobs(jobs, n_jobs=2, progress=False)


def test_bad_arguments_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match="jobs must be >= 1, got 0"):
        run_jobs([], n_jobs=0)
    with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
        worker_threads(2, 0)
    assert worker_threads(3, 2) == 2  # the user's choice, whatever the load


def test_default_threads_are_the_usable_cores_shared_out() -> None:
    cores = usable_cores()
    assert cores == (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                     else os.cpu_count())
    assert worker_threads(1) == cores
    assert worker_threads(2) == max(1, cores // 2)
    assert worker_threads(4 * cores) == 1  # more jobs than cores: one thread each, never zero


_SHOW_WORKERS = """
from physnn.experiments.jobs import Job, run_jobs
import os
print(run_jobs([Job(str(i), os.getenv, {"key": "OMP_WAIT_POLICY"}) for i in range(2)],
               n_jobs=2, progress=False))
"""


@pytest.mark.parametrize("user", [None, "ACTIVE"])
def test_spawned_workers_run_openmp_passive_unless_the_user_chose(user: str | None) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(OMP_DISPLAY_ENV="VERBOSE", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    if user:
        env["OMP_WAIT_POLICY"] = user
    done = subprocess.run([sys.executable, "-c", _SHOW_WORKERS], env=env, capture_output=True,
                          text=True, timeout=300, check=True)
    policy = user or "PASSIVE"
    assert done.stdout.strip() == str([policy, policy])
    # libgomp's own report, once per process that loaded torch: this one and two workers
    spins = re.findall(r"GOMP_SPINCOUNT = '(\d+)'", done.stderr)
    assert len(spins) == 3
    assert all(int(n) == 0 for n in spins) if user is None else all(int(n) > 0 for n in spins)


def test_seeds_in_a_pool_give_the_numbers_of_seeds_in_one_process(tiny_config, tmp_path: Path) -> None:
    tiny_config["train"].update(epochs=2, eval_every=1)
    one = train(tiny_config, out=tmp_path / "one", seeds=2, jobs=1, threads=1, progress=False)
    two = train(tiny_config, out=tmp_path / "two", seeds=2, jobs=2, threads=1, progress=False)
    for a, b in zip(one.results, two.results, strict=True):
        assert a.test_acc == b.test_acc and a.record["seed"] == b.record["seed"]
        for key in ("loss", "test_acc", "train_queries"):
            assert (a.record["metrics"][key] == b.record["metrics"][key]).all()
    summary = json.loads((tmp_path / "two" / tiny_config["name"] / "summary.json").read_text())
    assert summary["test_acc"] == [r.test_acc for r in one.results]
    log = read_run(tmp_path / "two" / tiny_config["name"] / "seed1.h5")
    assert log["status"] == "complete"
