"""The one job runner behind every multi-run command (seeds x methods x presets x sweeps).

Each job is an ordinary run that writes its own resumable run log, so jobs share nothing
but a folder: they run one after another in this process, on a local process pool, or as
tasks on a Ray cluster (``Executor``). A job that fails costs that job alone; a job whose
worker process dies is started again, up to ``retries`` times, and resumes from its last
epoch; the same command run again skips what finished and resumes the rest. Same seed,
same numbers, whichever way the jobs ran, as long as each runs with the same number of torch
threads: BLAS splits a long reduction (a weight gradient summed over a batch) between threads,
so the thread count can move the last digits (docs/cluster.md).
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .runlog import RunLogWriteError

USER_ERRORS = (ValueError, FileNotFoundError, TypeError, ConnectionError, RunLogWriteError,
               ImportError)
"""What a run raises for a bad config, a missing file, a lost link, a run log it cannot
write (full disk) or an optional extra that is not installed (its message names the
``pip install``): it fails that run alone. In this process anything else is a bug and
stops the command with its traceback."""

RAY_INSTALL = 'pip install -e ".[cluster]"'


@dataclass(frozen=True)
class Job:
    """One run: ``fn(**kwargs)``; ``fn`` must be a module-level function (it is pickled)."""

    label: str
    """How progress and errors name the job, e.g. ``digits-optical phyll seed 3``."""
    fn: Callable[..., Any]
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """What one job came to: its result, or the one line that says why it failed."""

    result: Any = None
    error: str | None = None
    exception: BaseException | None = None

    @property
    def ok(self) -> bool:
        """Whether the job returned a result."""
        return self.error is None


@dataclass(frozen=True)
class Executor:
    """Where jobs run: this process (``jobs=1``), ``jobs`` local worker processes, or Ray.

    ``ray``: ``None`` for no Ray, ``"local"`` to start a Ray instance on this machine (or use
    the one this process is already connected to), else the address of a running cluster
    (``"auto"``, ``"HOST:6379"``, ``"ray://HOST:10001"``). On Ray each job asks for ``cpus``
    CPUs (default: ``threads``, else 1) and ``gpus`` GPUs; fractions let several share one.
    """

    jobs: int = 1
    threads: int | None = None
    ray: str | None = None
    cpus: float | None = None
    gpus: float = 0.0
    retries: int = 2
    """Times a job whose worker process died is started again (it resumes its run log)."""

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {self.jobs}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.gpus < 0:
            raise ValueError(f"GPUs per run must be >= 0, got {self.gpus}")
        if self.cpus is not None and self.cpus <= 0:
            raise ValueError(f"CPUs per run must be > 0, got {self.cpus}")
        if self.ray is None and (self.gpus > 0 or self.cpus is not None):
            raise ValueError(
                "CPUs and GPUs per run are Ray resources: add --ray (a local instance) or "
                "--ray ADDRESS; without Ray every run uses --device and --threads"
            )
        if self.ray is not None and self.jobs > 1:
            raise ValueError(
                "--jobs and --ray exclude each other: Ray runs as many jobs at once as the "
                "cluster's CPUs and GPUs allow (set CPUs and GPUs per run instead)"
            )
        if self.ray is not None and not self.ray.strip():
            raise ValueError("--ray takes no value (a local instance) or a cluster address")

    @property
    def job_cpus(self) -> float:
        """CPUs one job asks Ray for."""
        return float(self.cpus if self.cpus is not None else self.threads or 1)

    def describe(self) -> str:
        """One line for summaries: how the jobs ran."""
        if self.ray is not None:
            where = "a local Ray instance" if self.ray == "local" else f"Ray at {self.ray}"
            gpus = f", {self.gpus:g} GPU" if self.gpus else ""
            return f"{where} ({self.job_cpus:g} CPU{gpus} per run)"
        if self.jobs > 1:
            return f"a local pool of {self.jobs} processes ({worker_threads(self.jobs, self.threads)} " \
                   "thread(s) each)"
        return f"this process ({worker_threads(1, self.threads)} thread(s))"


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


_PROGRESS: Any = None
"""In a pool worker or Ray task: where its job's progress goes (``report_progress``)."""
_JOB = -1
"""In a pool worker or Ray task: the index of the job it is running."""


def report_progress(done: int, total: int) -> None:
    """Tell the parent's progress bar that the running job has ``done`` of ``total`` steps
    (a run: epochs saved). A no-op outside a pool worker or Ray task, where the run draws its
    own bar; in a pool worker about 5 microseconds, once an epoch (``tests/test_jobs.py``
    bounds it)."""
    if _PROGRESS is not None:
        try:
            _PROGRESS.put_nowait((_JOB, done, total))
        except (ValueError, OSError, queue_module.Full):  # a closed queue never fails a run
            pass


def _call(index: int, fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """What a pool worker runs: the job, knowing its index for ``report_progress``."""
    global _JOB
    _JOB = index
    return fn(**kwargs)


def _init_pool_worker(threads: int, progress: Any = None) -> None:
    global _PROGRESS
    _init_worker(threads)
    _PROGRESS = progress
    if progress is not None:
        progress.cancel_join_thread()  # exiting never waits on unsent progress: it can go
    for sig in (signal.SIGINT, signal.SIGTERM):  # unwind as Ctrl-C: temporary files removed
        signal.signal(sig, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    """The first signal unwinds the job; later ones (Ctrl-C reaches the workers, then the
    parent's SIGTERM) are ignored so they cannot cut that clean-up short."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt


def _stop_workers(pool: ProcessPoolExecutor, grace_s: float = 30.0) -> None:
    """Stop the running jobs too when the parent is interrupted or terminated. Shutting the
    pool down only cancels the queued jobs, and the interpreter's exit then waits for the
    running ones: ``kill`` on a ``--jobs`` run left its workers computing for hours."""
    workers = list((pool._processes or {}).values())  # the pool has no public handle on them
    pool.shutdown(wait=False, cancel_futures=True)
    for w in workers:
        if w.is_alive():
            w.terminate()  # SIGTERM: the job unwinds; its run log keeps its last epoch
    deadline = time.monotonic() + grace_s
    for w in workers:
        w.join(max(0.0, deadline - time.monotonic()))
        if w.is_alive():
            w.kill()
            w.join()


def _failed(error: BaseException) -> Outcome:
    return Outcome(error=f"{type(error).__name__}: {error}", exception=error)


def _raise_failures(jobs: Sequence[Job], outcomes: Sequence[Outcome]) -> None:
    failures = [f"{j.label}: {o.error}" for j, o in zip(jobs, outcomes, strict=True) if not o.ok]
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise ValueError(
            f"{len(failures)} of {len(jobs)} runs failed{more}; the others finished and rerunning "
            f"the same command resumes the failed ones. First: {failures[0]}"
        )


def execute(
    jobs: Sequence[Job], executor: Executor | None = None, *, progress: bool = True,
    desc: str = "runs",
) -> list[Outcome]:
    """Run every job on ``executor``; return their outcomes in the order given.

    Never raises for a job that failed: its ``Outcome`` says why. In this process only the
    user's errors (``USER_ERRORS``) are caught; on a pool or Ray every error is, since the
    job ran elsewhere.
    """
    ex = executor or Executor()
    jobs = list(jobs)
    bar = tqdm(total=len(jobs), desc=desc, unit="run",
               disable=None if progress and len(jobs) > 1 else True)
    try:
        if not jobs:
            return []
        if ex.ray is not None:
            return _run_ray(jobs, ex, bar)
        if ex.jobs == 1 or len(jobs) == 1:
            return _run_here(jobs, ex, bar)
        return _run_pool(jobs, ex, bar)
    finally:
        bar.close()


def run_jobs(
    jobs: Sequence[Job],
    *,
    n_jobs: int = 1,
    threads: int | None = None,
    executor: Executor | None = None,
    progress: bool = True,
    desc: str = "runs",
) -> list[Any]:
    """Run every job; return their results in the order given.

    ``executor`` (or ``n_jobs`` / ``threads``) says where (see ``Executor``). A job that
    raises fails alone: the others run to the end, then a ``ValueError`` names every failed
    job. A single job run in this process raises its own error, as the run itself would.
    """
    ex = executor or Executor(jobs=n_jobs, threads=threads)
    jobs = list(jobs)
    outcomes = execute(jobs, ex, progress=progress, desc=desc)
    if len(jobs) == 1 and ex.ray is None and outcomes[0].exception is not None:
        raise outcomes[0].exception
    _raise_failures(jobs, outcomes)
    return [o.result for o in outcomes]


def _run_here(jobs: list[Job], ex: Executor, bar: tqdm) -> list[Outcome]:
    import torch

    before = torch.get_num_threads()
    if ex.threads is not None:
        _init_worker(ex.threads)
    out = []
    try:
        for job in jobs:
            bar.set_postfix_str(job.label)
            try:
                out.append(Outcome(job.fn(**job.kwargs)))
            except USER_ERRORS as e:
                out.append(_failed(e))
            bar.update()
    finally:
        torch.set_num_threads(before)  # the caller's process keeps its own setting
    return out


def _run_pool(jobs: list[Job], ex: Executor, bar: tqdm) -> list[Outcome]:
    """At most ``ex.jobs`` jobs in flight, so a worker that dies costs an attempt only to the
    jobs that were running (the pool stops them all); those start again on a fresh pool."""
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    n_workers = min(ex.jobs, len(jobs))
    outcomes: list[Outcome | None] = [None] * len(jobs)
    attempts = [0] * len(jobs)
    queue = deque(range(len(jobs)))
    shown: dict[int, str] = {}
    while queue:
        # the running jobs' epochs, for the bar; a fresh queue per pool, since a worker killed
        # while writing to one can leave its lock held
        steps = ctx.Queue() if not bar.disable else None
        pool = ProcessPoolExecutor(
            max_workers=min(n_workers, len(queue)), mp_context=ctx, initializer=_init_pool_worker,
            initargs=(worker_threads(ex.jobs, ex.threads), steps),
        )
        running: dict[Future[Any], int] = {}
        broken = False
        try:
            while queue or running:
                while queue and not broken and len(running) < n_workers:
                    i = queue.popleft()
                    attempts[i] += 1
                    running[pool.submit(_call, i, jobs[i].fn, jobs[i].kwargs)] = i
                if not running:
                    break
                done, _ = wait(running, timeout=None if steps is None else 1.0,
                               return_when=FIRST_COMPLETED)
                finished = 0
                for fut in done:
                    i = running.pop(fut)
                    shown.pop(i, None)
                    try:
                        outcomes[i] = Outcome(fut.result())
                    except BrokenProcessPool as e:
                        broken = True
                        if attempts[i] <= ex.retries:
                            queue.appendleft(i)  # starts again, resuming its run log
                            continue
                        outcomes[i] = _failed(RuntimeError(
                            f"a worker process of the pool died while this run was running, "
                            f"{attempts[i]} time(s) ({e})"))
                    except Exception as e:  # noqa: BLE001 - reported with the job's name
                        outcomes[i] = _failed(e)
                    finished += 1
                _show_steps(bar, _drain(steps), shown, jobs, set(running.values()))
                bar.update(finished)  # after the postfix, so the last line names no finished run
        except BaseException:
            _stop_workers(pool)
            raise
        pool.shutdown(wait=not broken, cancel_futures=True)
    return [o if o is not None else Outcome(error="not run") for o in outcomes]


def _drain(steps: Any) -> list[tuple[int, int, int]]:
    """Every ``report_progress`` message a pool's queue holds now."""
    out = []
    while steps is not None:
        try:
            out.append(steps.get_nowait())
        except queue_module.Empty:
            break
    return out


def _show_steps(bar: tqdm, messages: Sequence[tuple[int, int, int]], shown: dict[int, str],
                jobs: list[Job], running: set[int]) -> None:
    """The running jobs' latest ``report_progress`` as the bar's postfix."""
    for i, done, total in messages:
        if i in running:  # not a late message of a job that has finished
            shown[i] = f"{jobs[i].label} {done}/{total}"
    bar.set_postfix_str(", ".join(shown[i] for i in sorted(shown) if i in running))


# -- Ray ------------------------------------------------------------------------------------


def import_ray() -> Any:
    """The ``ray`` module, or a one-line error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ValueError(f"--ray needs Ray, an optional extra: {RAY_INSTALL}") from None
    return ray


LOCAL_RAY_CONFIG: dict[str, Any] = {"worker_niceness": 0}
"""Ray's settings for the instance ``ray="local"`` starts. Ray runs its workers at nice 15 by
default, so its control plane stays responsive; on a shared machine that lets any ordinary
process take nearly all the CPU from the runs (a sweep test took 404 s instead of 33 s beside
two busy loops). At nice 0 a run gets the share a ``--jobs`` pool worker gets. A cluster keeps
its own setting (``RAY_worker_niceness=0 ray start --head`` to match)."""


@contextmanager
def ray_session(executor: Executor) -> Iterator[Any]:
    """Connect to Ray for the ``with`` block (once, however many batches of jobs run in it).

    A Ray this process already connected to is used as it is and left running; one this
    block starts (a local instance) or attaches to (a cluster) is disconnected at its end.
    """
    if executor.ray is None:
        yield None
        return
    ray = import_ray()
    explicit = executor.ray not in ("local", "auto")
    if explicit:
        _reachable(executor.ray)
    if ray.is_initialized():
        if explicit:  # never send runs somewhere other than where the caller said
            raise ValueError(
                f"this process is already connected to Ray (at "
                f"{ray.get_runtime_context().gcs_address}), not to {executor.ray}; use ray='local' "
                "to run on that connection, or ray.shutdown() first"
            )
        yield ray
        return
    # Ray's own log lines stay in its session folder; a job's error comes back as an Outcome
    common = dict(log_to_driver=False, configure_logging=True, logging_level="warning")
    if executor.ray == "local":
        ray.init(num_cpus=usable_cores(), include_dashboard=False,
                 _system_config=LOCAL_RAY_CONFIG, **common)
    else:
        try:
            ray.init(address=executor.ray, **common)
        except ConnectionError as e:
            raise ConnectionError(f"could not attach to the Ray cluster at {executor.ray}: {e}") \
                from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse in one line an address where nothing listens (Ray itself waits minutes)."""
    import socket

    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return  # "auto" and other forms: Ray's own lookup and messages
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConnectionError(
            f"no Ray cluster answers at {address} ({e.strerror or e}); start one with "
            "'ray start --head' or use --ray alone for a local instance"
        ) from None


class RaySteps:
    """A Ray actor (``ray.remote(RaySteps)``) that keeps each running job's latest
    ``report_progress`` until the parent's bar takes them: Ray tasks cannot reach a local
    queue. Calls from one task reach it in order, so the latest is the last put."""

    def __init__(self) -> None:
        self.latest: dict[int, tuple[int, int, int]] = {}

    def put(self, message: tuple[int, int, int]) -> None:
        """Keep ``(job, done, total)`` as that job's latest."""
        self.latest[message[0]] = message

    def take(self) -> list[tuple[int, int, int]]:
        """The latest message of each job that reported since the last call."""
        out, self.latest = list(self.latest.values()), {}
        return out


class _ToActor:
    """``report_progress``'s queue in a Ray task: a call on the actor that nothing waits
    for (0.4 ms on a busy 2-core machine, once an epoch; ``tests/test_sweep.py``
    bounds it)."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def put_nowait(self, message: tuple[int, int, int]) -> None:
        try:
            self.actor.put.remote(message)
        except Exception:  # noqa: BLE001 - the bar's actor gone never fails a run
            pass


def _ray_call(fn: Callable[..., Any], kwargs: dict[str, Any], threads: int, index: int = -1,
              steps: Any = None) -> Any:
    """What a Ray task runs: the job, with the torch threads its CPUs pay for, its epochs
    reported to ``steps`` (a ``RaySteps`` actor) when the parent shows a bar."""
    global _PROGRESS, _JOB
    _init_worker(threads)
    _PROGRESS, _JOB = (_ToActor(steps) if steps is not None else None), index
    try:
        return fn(**kwargs)
    finally:  # Ray reuses its workers: the next task reports to its own bar or to none
        _PROGRESS, _JOB = None, -1


def _feasible(cluster: dict[str, float], ex: Executor) -> None:
    """Refuse runs no node could take (Ray would leave them pending for ever)."""
    for key, need in (("CPU", ex.job_cpus), ("GPU", ex.gpus)):
        have = float(cluster.get(key, 0.0))
        if need > have:
            raise ValueError(
                f"each run asks Ray for {need:g} {key}(s) but the cluster has {have:g}; lower "
                f"{'[resources] cpus / --threads' if key == 'CPU' else '--gpus-per-run'} or add "
                "nodes that have them"
            )


def _absolute_paths(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Paths travel absolute: a Ray worker need not share this process's working folder."""
    return {k: v.absolute() if isinstance(v, Path) else v for k, v in kwargs.items()}


def _run_ray(jobs: list[Job], ex: Executor, bar: tqdm) -> list[Outcome]:
    with ray_session(ex) as ray:
        _feasible(ray.cluster_resources(), ex)
        threads = ex.threads or max(1, int(ex.job_cpus))
        task = ray.remote(_ray_call)
        steps = None if bar.disable else ray.remote(num_cpus=0)(RaySteps).remote()
        if _take(ray, steps) is None:  # up before the runs start, so a short first run's
            steps = None               # epochs show too; one that cannot start costs the bar
        refs = {
            task.options(  # the name is the task's in Ray's dashboard and its process title
                name=job.label, num_cpus=ex.job_cpus, num_gpus=ex.gpus, max_retries=ex.retries,
            ).remote(job.fn, _absolute_paths(job.kwargs), threads, i, steps): i
            for i, job in enumerate(jobs)
        }
        outcomes: list[Outcome | None] = [None] * len(jobs)
        pending, shown = list(refs), dict[int, str]()
        while pending:
            done, pending = ray.wait(pending, num_returns=1,
                                     timeout=None if steps is None else 1.0)
            for ref in done:
                shown.pop(refs[ref], None)
                outcomes[refs[ref]] = _ray_outcome(ray, ref, ex)
            messages = _take(ray, steps)
            if messages is None:  # the bar's actor is lost (its node died): the runs go on
                steps = None
            else:
                _show_steps(bar, messages, shown, jobs, {refs[r] for r in pending})
            bar.update(len(done))
    return [o if o is not None else Outcome(error="not run") for o in outcomes]


def _take(ray: Any, steps: Any) -> list[tuple[int, int, int]] | None:
    """The running jobs' latest progress from the ``RaySteps`` actor; ``None`` when there is
    no actor or it is gone, which never fails the runs it only shows."""
    if steps is None:
        return None
    try:
        return list(ray.get(steps.take.remote(), timeout=30))
    except Exception:  # noqa: BLE001 - any Ray error here only loses the postfix
        return None


def _ray_outcome(ray: Any, ref: Any, ex: Executor) -> Outcome:
    """A finished task's result, or the one line that says why it failed."""
    from ray import exceptions as rx

    try:
        return Outcome(ray.get(ref))
    except rx.RayTaskError as e:  # the job itself raised: report its own error
        return _failed(e.cause if isinstance(e.cause, BaseException) else e)
    except rx.RayError as e:  # its worker or node died, more than `retries` times
        return _failed(RuntimeError(
            f"its Ray worker died {ex.retries + 1} time(s): "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"))
