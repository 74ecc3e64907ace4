"""The one job runner behind every multi-run command (seeds x methods x presets).

Each job is an ordinary run that writes its own resumable run log, so jobs share nothing
but the machine: they run one after another in this process (``n_jobs=1``) or on a local
process pool (``n_jobs > 1``), and a job that fails or is killed costs that job alone; the
same command run again skips what finished and resumes the rest. Same seed, same numbers,
whichever way the jobs ran.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm


@dataclass(frozen=True)
class Job:
    """One run: ``fn(**kwargs)``; ``fn`` must be a module-level function (it is pickled)."""

    label: str
    """How progress and errors name the job, e.g. ``digits-optical phyll seed 3``."""
    fn: Callable[..., Any]
    kwargs: dict[str, Any] = field(default_factory=dict)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, else every core)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def worker_threads(n_jobs: int, threads: int | None = None) -> int:
    """Torch threads per worker: ``threads``, or the usable cores shared out between the jobs.

    Not fewer where other processes are busy: with ``OMP_WAIT_POLICY=PASSIVE`` (physnn's
    default) a run beside two CPU-bound processes was no faster with one thread than with
    two on a 2-core machine (benchmarks/loaded.py; docs/getting-started.md, "Threads").
    """
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        return threads
    return max(1, usable_cores() // max(1, n_jobs))


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _failure(job: Job, error: BaseException) -> str:
    return f"{job.label}: {type(error).__name__}: {error}"


def _raise_failures(failures: list[str], n: int) -> None:
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise ValueError(
            f"{len(failures)} of {n} runs failed{more}; the others finished and rerunning the "
            f"same command resumes the failed ones. First: {failures[0]}"
        )


def run_jobs(
    jobs: Sequence[Job],
    *,
    n_jobs: int = 1,
    threads: int | None = None,
    progress: bool = True,
    desc: str = "runs",
) -> list[Any]:
    """Run every job; return their results in the order given.

    ``n_jobs > 1`` runs them on that many worker processes (spawned, each with
    ``worker_threads`` torch threads). A job that raises fails alone: the others run to
    the end, then a ``ValueError`` names every failed job.
    """
    if n_jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {n_jobs}")
    jobs = list(jobs)
    bar = tqdm(total=len(jobs), desc=desc, unit="run",
               disable=None if progress and len(jobs) > 1 else True)
    results: list[Any] = [None] * len(jobs)
    failures: list[str] = []
    if n_jobs == 1 or len(jobs) <= 1:
        if threads is not None:
            _init_worker(worker_threads(1, threads))
        for i, job in enumerate(jobs):
            bar.set_postfix_str(job.label)
            if len(jobs) == 1:  # a single run's error is the command's error, as it is
                results[i] = job.fn(**job.kwargs)
            else:
                try:
                    results[i] = job.fn(**job.kwargs)
                except (ValueError, FileNotFoundError, TypeError, ConnectionError) as e:
                    failures.append(_failure(job, e))
            bar.update()
        bar.close()
        _raise_failures(failures, len(jobs))
        return results
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    pool = ProcessPoolExecutor(
        max_workers=min(n_jobs, len(jobs)), mp_context=ctx, initializer=_init_worker,
        initargs=(worker_threads(n_jobs, threads),),
    )
    try:
        futures: dict[Future[Any], int] = {
            pool.submit(job.fn, **job.kwargs): i for i, job in enumerate(jobs)
        }
        for fut in as_completed(futures):
            i = futures[fut]
            try:
                results[i] = fut.result()
            except BrokenProcessPool as e:
                failures.append(_failure(jobs[i], RuntimeError(
                    f"a worker process of the pool died while this run was pending or running ({e})"
                )))
            except Exception as e:  # noqa: BLE001 - reported with the job's name below
                failures.append(_failure(jobs[i], e))
            bar.set_postfix_str(jobs[i].label)
            bar.update()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    bar.close()
    _raise_failures(failures, len(jobs))
    return results
