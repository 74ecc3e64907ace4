"""Sweeps: the spec, the candidates, the held-out protocol, resuming, and a pool that loses a
worker. Ray's executor is in test_cluster.py."""

from __future__ import annotations

import copy
import importlib.util
import math
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import tomli_w

from physnn.cli import main
from physnn.experiments.jobs import Executor
from physnn.experiments.runlog import read_run, write_run
from physnn.experiments.sweep import Stats, SweepResult, choose, chosen_by, dry_run, load_spec, sweep

COMPARED = ("test_acc", "train_acc", "test_acc_linear", "reference_acc", "queries_train",
            "queries_eval", "flops_train_total", "flops_eval")
"""Every figure of a trial that must not depend on where it ran (wall time and memory do)."""


def _base(tmp_path: Path, cfg: dict) -> str:
    path = tmp_path / "tiny.toml"
    path.write_text(tomli_w.dumps(cfg))
    return str(path)


def _spec(base: str, **extra) -> dict:
    return {"name": "tiny", "base": base, "tune_seeds": [100, 101], "report_seeds": [0],
            "axes": {"train.lr": [5e-4, 2e-3], "train.inner_steps": [2, 3]}, **extra}


def figures(result) -> dict:
    """(phase, candidate, seed) -> the executor-independent figures of a sweep's table."""
    out = {}
    for r in [*result.rows, *([result.report] if result.report else [])]:
        for s, f in r.figures.items():
            out[(r.phase, r.candidate.slug, s)] = {
                k: None if math.isnan(f[k]) else f[k] for k in COMPARED if k in f}
    return out


def test_the_spec_is_checked_in_one_line_each(tmp_path: Path, tiny_config) -> None:
    base = _base(tmp_path, tiny_config)
    bad = [
        ({"report_seeds": [0, 100]}, r"seed\(s\) \[100\] are both tune and report seeds; physnn "
         "never selects on a report seed"),
        ({"colour": 1}, r"unknown key\(s\) \['colour'\]; allowed: name, base"),
        ({"seeds": [0, 1]}, "give seeds .* or tune_seeds and report_seeds .*, not both"),
        ({"tune_seeds": "9-3"}, "tune_seeds' must be a list of seeds or a range like '0-9'"),
        ({"goal": "up"}, "goal must be 'max' or 'min', got 'up'"),
        ({"axes": {"train.lr": []}}, "axis 'train.lr' must list at least one value"),
        ({"axes": {"train.lr": [1e-3, 0.001]}}, "axis 'train.lr' lists a value twice"),
        ({"random": {"draws": 2, "train.lr": {"gauss": [0, 1]}}}, "random key 'train.lr' must be"),
        ({"random": {"draws": 2, "train.lr": {"log_uniform": [0, 1]}}}, "low > 0"),
        ({"base": "no-such-preset"}, "base 'no-such-preset' is neither a preset nor"),
        ({"resources": {"gpus": -1}}, "resources.gpus must be >= 0"),
        ({"tie_break": "train_acc"}, "tie_break must be a list of metrics, each optionally"),
        ({"tie_break": ["train_acc:up"]}, "the goal after ':' must be 'max' or 'min', got 'up'"),
        ({"tie_break": ["Train-Acc"]}, "each tie_break metric must be one of test_acc"),
    ]
    for change, message in bad:
        spec = {**_spec(base), **change}
        with pytest.raises(ValueError, match=message):
            load_spec(spec)
    spec = _spec(base)
    del spec["report_seeds"]
    with pytest.raises(ValueError, match="needs both tune_seeds .* and report_seeds"):
        load_spec(spec)
    with pytest.raises(FileNotFoundError, match="sweep spec .*nope.toml does not exist"):
        load_spec(tmp_path / "nope.toml")


def test_a_candidate_is_one_line_of_set_that_reads_back(tmp_path: Path, tiny_config) -> None:
    from physnn.experiments.config import apply_overrides

    base = _base(tmp_path, tiny_config)
    spec = load_spec({"name": "w", "base": base, "seeds": [0], "axes": {
        "network.hidden": [[20, 20, 20, 20], [8]], "train.readout": ["both"]}})
    for c in spec.candidates():
        sets = c.assignments()
        assert not any("\n" in a for a in sets), sets
        assert apply_overrides(base, sets).to_dict() == c.config([]).to_dict()
    assert "network.hidden=[20, 20, 20, 20]" in spec.candidates()[0].assignments()


def test_candidates_cross_the_grid_with_seeded_random_draws(tmp_path: Path, tiny_config) -> None:
    base = _base(tmp_path, tiny_config)
    spec = load_spec({**_spec(base), "random": {
        "draws": 3, "seed": 7, "train.alpha": {"uniform": [2.0, 6.0]},
        "network.skip": {"choice": [True, False]}}})
    cands = spec.candidates()
    assert len(cands) == 3 * 4
    assert len({c.slug for c in cands}) == 12  # every trial folder distinct
    again = load_spec({**_spec(base), "random": {
        "draws": 3, "seed": 7, "train.alpha": {"uniform": [2.0, 6.0]},
        "network.skip": {"choice": [True, False]}}}).candidates()
    assert [c.params for c in cands] == [c.params for c in again]  # draws are seeded
    alphas = {c.params["train.alpha"] for c in cands}
    assert len(alphas) == 3 and all(2.0 <= a <= 6.0 for a in alphas)
    cfg = cands[0].config([])
    assert cfg.train.alpha == cands[0].params["train.alpha"]
    assert cfg.network.skip == cands[0].params["network.skip"]
    assert cfg.train.lr == 5e-4 and cfg.train.inner_steps == 2
    # a table of settings is one axis value; preset axes start from another base
    multi = load_spec({"name": "m", "seeds": [0], "axes": {
        "preset": ["digits-optical", "vowels-acoustic"],
        "rule": [{"label": "pat", "train.method": "pat", "train.batch_size": 64},
                 {"train.method": "phyll"}]}}).candidates()
    assert [c.slug for c in multi] == [
        "preset=digits-optical,rule=pat", "preset=digits-optical,rule=method=phyll",
        "preset=vowels-acoustic,rule=pat", "preset=vowels-acoustic,rule=method=phyll"]
    assert multi[2].config([]).name == "vowels-acoustic"
    assert multi[2].config([]).train.batch_size == 64
    assert "rule=pat" in dry_run(load_spec({"name": "m", "seeds": [0], "axes": {
        "rule": [{"label": "pat", "train.method": "pat"}]}, "base": "digits-optical"}))


def _row(slug: str, phase: str, seeds: list[int], accs: list[float]) -> Stats:
    from physnn.experiments.sweep import Candidate

    r = Stats(Candidate({"x": slug}, "digits-optical", slug), phase, seeds)
    r.figures = {s: {"test_acc": a} for s, a in zip(seeds, accs, strict=True)}
    return r


def test_choose_takes_the_best_tune_mean_and_refuses_report_seeds() -> None:
    a, b = _row("a", "tune", [100, 101], [0.9, 0.8]), _row("b", "tune", [100, 101], [0.9, 0.9])
    assert choose([a, b], "test_acc", "max", [0, 1]) is b
    assert choose([a, b], "test_acc", "min", [0, 1]) is a
    tie = _row("c", "tune", [100, 101], [0.9, 0.9])
    assert choose([b, tie], "test_acc", "max", [0, 1]) is b  # the first on a tie
    with pytest.raises(ValueError, match="refusing to select on a with seeds \\[0\\]"):
        choose([_row("a", "tune", [0, 100], [1.0, 0.5]), b], "test_acc", "max", [0, 1])
    with pytest.raises(ValueError, match="only tune seeds choose, never a report seed"):
        choose([_row("a", "report", [2], [1.0]), b], "test_acc", "max", [0, 1])
    failed = _row("f", "tune", [100, 101], [0.99, 0.99])
    failed.figures, failed.errors = {100: {"test_acc": 0.99}}, {101: "ValueError: boom"}
    assert choose([failed, a], "test_acc", "max", [0]) is a  # a candidate must finish every seed
    with pytest.raises(ValueError, match="none can be chosen; first problem: failed on 1 seed"):
        choose([failed], "test_acc", "max", [0])


def test_a_tie_goes_to_the_tie_break_metrics_in_turn_then_the_first_listed(
    tmp_path: Path, tiny_config
) -> None:
    def row(slug: str, acc: list[float], train: float, queries: float) -> Stats:
        r = _row(slug, "tune", [100, 101, 102][:len(acc)], acc)
        for f in r.figures.values():
            f.update(train_acc=train, queries_train=queries)
        return r

    b, c, d = (row("b", [0.9, 0.9], 0.95, 100), row("c", [0.9, 0.9], 0.97, 200),
               row("d", [0.9, 0.9], 0.97, 150))
    assert choose([b, c, d], "test_acc", "max", [0]) is b
    assert choose([b, c, d], "test_acc", "max", [0], [("train_acc", "max")]) is c
    both = [("train_acc", "max"), ("queries_train", "min")]
    assert choose([b, c, d], "test_acc", "max", [0], both) is d
    assert choose([b, c, d], "test_acc", "max", [0], [("queries_train", "min")]) is b
    assert chosen_by([b, c, d], d, "test_acc", "max", both) == \
        "on a tie of the mean test_acc, by the lower queries_train"
    assert chosen_by([b, c, d], c, "test_acc", "max", both[:1]) == \
        "on a tie of the mean test_acc, as the first listed"
    better = row("a", [0.95, 0.9], 0.5, 900)
    assert choose([b, better], "test_acc", "max", [0], both) is better  # never over the metric
    assert chosen_by([b, better], better, "test_acc", "max", both) == ""
    # the same accuracies in another order tie, although their float means differ in the last bit
    up, down = row("up", [0.1, 0.2, 0.3], 0.5, 1), row("down", [0.3, 0.2, 0.1], 0.6, 1)
    assert up.mean("test_acc") != down.mean("test_acc")
    assert choose([up, down], "test_acc", "max", [0], [("train_acc", "max")]) is down
    spec = load_spec(_spec(_base(tmp_path, tiny_config), tie_break=["train_acc", "queries_train:min"]))
    assert spec.tie_break == both and load_spec(
        {**__import__("tomllib").loads(spec.to_toml()), "base": spec.base}).tie_break == both
    result = SweepResult(spec, tmp_path, [b, c, d], chosen=d, report=d, chosen_by=chosen_by(
        [b, c, d], d, "test_acc", "max", both))
    md = result.markdown()
    assert "(a tie goes to the higher mean train_acc, then the lower mean queries_train, then " \
           "the first listed)" in md
    assert "; on a tie of the mean test_acc, by the lower queries_train)" in md
    assert result.as_dict()["chosen_by"] == result.chosen_by


@pytest.fixture(scope="module")
def reference(tmp_path_factory, request):
    """The tiny 2 x 2 sweep on tune seeds 100-101 and report seed 0, in this process."""
    from physnn.experiments.config import load_config

    tmp = tmp_path_factory.mktemp("sweep")
    cfg = load_config("digits-optical").to_dict()
    cfg["device"]["camera_shape"] = [8, 8]
    cfg["network"]["hidden"] = [32, 32]
    cfg["train"].update(epochs=3, eval_every=1, inner_steps=3, lr=2e-3)
    base = _base(tmp, cfg)
    spec = _spec(base)
    result = sweep(spec, out=tmp / "here", progress=False)
    return spec, result, tmp


def test_a_sweep_chooses_on_tune_seeds_and_reports_once(reference) -> None:
    spec, result, tmp = reference
    folder = tmp / "here" / "tiny"
    for name in ("sweep.md", "sweep.csv", "sweep.json", "sweep.png", "sweep.toml"):
        assert (folder / name).is_file(), name
    assert len(result.rows) == 4 and all(r.complete for r in result.rows)
    best = max(result.rows, key=lambda r: r.mean("test_acc"))
    assert result.chosen is best
    assert result.report is not None and result.report.seeds == [0]
    assert result.report.candidate.slug == best.candidate.slug
    # report seeds ran for the chosen candidate only
    logs = sorted(p.relative_to(folder / "trials").as_posix() for p in folder.rglob("seed*.h5"))
    assert logs == sorted([f"{r.candidate.slug}/seed{s}.h5" for r in result.rows for s in (100, 101)]
                          + [f"{best.candidate.slug}/seed0.h5"])
    md = (folder / "sweep.md").read_text()
    assert "Tune seeds 100, 101 chose" in md and "report seeds 0 report the chosen" in md
    assert md.count("**chosen**") == 1
    rows = (folder / "sweep.csv").read_text().splitlines()
    assert rows[0].startswith("phase,candidate,train.lr,train.inner_steps,seeds,metric,mean,std")
    assert len(rows) == 1 + 4 + 1
    # every trial is an ordinary run log of its candidate's config and seed
    rec = read_run(folder / "trials" / best.candidate.slug / "seed0.h5")
    assert rec["status"] == "complete" and rec["seed"] == 0
    assert rec["config"]["train"]["lr"] == best.candidate.params["train.lr"]


def test_a_rerun_skips_finished_trials_and_resumes_the_rest(reference) -> None:
    spec, result, tmp = reference
    folder = tmp / "here" / "tiny" / "trials"
    logs = sorted(folder.rglob("seed*.h5"))
    stamps = {p: p.stat().st_mtime_ns for p in logs}
    victim = logs[0]
    victim.unlink()  # as if that trial had never finished
    again = sweep(spec, out=tmp / "here", progress=False)
    assert figures(again) == figures(result)
    assert victim.is_file()
    assert all(p.stat().st_mtime_ns == stamps[p] for p in logs if p != victim)  # not rerun


def test_a_rigged_candidate_best_only_on_report_seeds_is_not_chosen(reference) -> None:
    """Plant complete run logs that give the worst tune candidate 100 % on the report seeds:
    the choice must not move and the planted logs must stay unread."""
    spec, result, tmp = reference
    worst = min(result.rows, key=lambda r: r.mean("test_acc"))
    assert worst is not result.chosen
    out = tmp / "rigged"
    trials = out / "tiny" / "trials"
    src = tmp / "here" / "tiny" / "trials"
    for p in src.rglob("seed10*.h5"):  # the tune trials, already run
        dest = trials / p.relative_to(src)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(p.read_bytes())
    rec = read_run(src / worst.candidate.slug / "seed100.h5", checkpoint=True)
    rigged = copy.deepcopy(rec)
    rigged["seed"] = 0
    rigged["metrics"]["test_acc"][:] = 1.0
    planted = trials / worst.candidate.slug / "seed0.h5"
    write_run(planted, rigged)
    before = planted.stat().st_mtime_ns
    again = sweep(spec, out=out, progress=False)
    assert again.chosen is not None and again.chosen.candidate.slug == result.chosen.candidate.slug
    assert again.report is not None and again.report.candidate.slug != worst.candidate.slug
    assert figures(again) == figures(result)
    assert planted.stat().st_mtime_ns == before
    assert not math.isclose(again.report.mean("test_acc"), 1.0)


def test_a_config_error_fails_its_candidate_alone(tmp_path: Path, tiny_config) -> None:
    tiny_config["train"].update(epochs=1, eval_every=1)
    spec = {"name": "bad", "base": _base(tmp_path, tiny_config), "seeds": [0],
            "axes": {"train.lr": [-1.0, 2e-3]}}
    result = sweep(spec, out=tmp_path, progress=False)
    bad, good = result.rows
    assert bad.errors == {0: "ValueError: train.lr must be > 0, got -1.0"}
    assert good.complete and good.mean("test_acc") > 0.2
    md = (tmp_path / "bad" / "sweep.md").read_text()
    assert "failed on 1 seed(s); seed 0: ValueError: train.lr must be > 0, got -1.0" in md
    # the command says so in its exit status, and every trial failing is an error
    spec_path = tmp_path / "bad.toml"
    spec_path.write_text(tomli_w.dumps(spec))
    assert main(["sweep", str(spec_path), "--out", str(tmp_path), "--no-progress"]) == 1
    spec["axes"] = {"train.lr": [-1.0]}
    spec_path.write_text(tomli_w.dumps(spec))
    assert main(["sweep", str(spec_path), "--out", str(tmp_path / "x"), "--no-progress"]) == 2


def _pool_workers() -> list[int]:
    """Worker processes of this process's spawn pools."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        ppid = int(next(ln for ln in status.splitlines() if ln.startswith("PPid:")).split()[1])
        if ppid == os.getpid() and b"multiprocessing.spawn" in cmd:
            out.append(int(pid))
    return out


def kill_mid_trial(trials: Path, find, timeout: float = 900.0) -> dict:
    """Start a thread that kills one worker process once a trial has written its first epoch
    (its run log exists but is not complete); the returned dict says whom it killed.

    The thread watches until it has killed, until ``killed["stop"]`` is set (the caller's
    sweep is over) or for ``timeout`` s: on a loaded machine Ray's workers can take minutes
    to start, and a watcher that gave up first made the test fail for no fault of the code."""
    stop = threading.Event()
    killed: dict = {"stop": stop}

    def watch() -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not stop.is_set():
            running = []
            for p in trials.rglob("seed*.h5"):
                try:
                    running.append(read_run(p)["status"] == "running")
                except (OSError, ValueError, KeyError):  # a log being replaced: look again
                    continue
            pids = find()
            if any(running) and pids:
                os.kill(pids[0], signal.SIGKILL)
                killed["pid"] = pids[0]
                return
            time.sleep(0.05)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    killed["thread"] = t
    return killed


def test_a_pool_gives_the_same_table_and_survives_a_killed_worker(reference) -> None:
    spec, result, tmp = reference
    spec = {**spec, "retries": 3}
    killed = kill_mid_trial(tmp / "pool" / "tiny" / "trials", _pool_workers)
    pooled = sweep(spec, out=tmp / "pool", jobs=2, progress=False)
    killed["stop"].set()
    killed["thread"].join(timeout=5)
    assert "pid" in killed, f"no worker was killed: the trials ran too fast to catch one {killed}"
    assert all(r.complete for r in pooled.rows) and pooled.report is not None
    assert pooled.report.complete
    assert figures(pooled) == figures(result)


def test_executor_options_are_checked() -> None:
    with pytest.raises(ValueError, match="--jobs and --ray exclude each other"):
        Executor(jobs=2, ray="local")
    with pytest.raises(ValueError, match="CPUs and GPUs per run are Ray resources: add --ray"):
        Executor(gpus=0.5)
    with pytest.raises(ValueError, match="retries must be >= 0"):
        Executor(retries=-1)
    assert "0.25 GPU" in Executor(ray="local", gpus=0.25).describe()


# -- Ray ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_instance():
    """A local Ray instance with 2 CPUs, as on the CI machine, started by physnn's own
    ``ray="local"`` path."""
    from unittest import mock

    from physnn.experiments.jobs import Executor, ray_session

    pytest.importorskip(
        "ray", reason="Ray is not installed (an optional extra: pip install -e '.[cluster]')")
    session = ray_session(Executor(ray="local"))
    with mock.patch("physnn.experiments.jobs.usable_cores", return_value=2):  # for ray.init only
        ray = session.__enter__()
    try:
        yield ray
    finally:
        session.__exit__(None, None, None)


def test_a_local_ray_runs_its_jobs_at_normal_priority(ray_instance) -> None:
    """Ray's default nice 15 let the other test worker starve the Ray tests (330 s for a 33 s
    test); runs on a local instance get the CPU share of a pool worker."""
    import subprocess

    from physnn.experiments.jobs import Executor, Job, run_jobs

    nice = Job("nice", subprocess.check_output, {"args": ["nice"], "text": True})  # prints it
    assert run_jobs([nice], executor=Executor(ray="local"), progress=False) == ["0\n"]


def _ray_trials() -> list[int]:
    """Ray worker processes running a sweep trial (Ray titles them ``ray::LABEL``)."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if cmd.startswith(b"ray::") and b" seed " in cmd:
                out.append(int(pid))
    return out


def test_a_ray_bar_shows_the_steps_of_its_running_jobs(ray_instance) -> None:
    """Ray tasks reach the parent's bar through an actor, as pool workers do through a
    queue. Ray reuses its workers: a later task without a bar reports to no stale actor."""
    import io
    import re

    import test_jobs  # the pool's counting job, sent to Ray's workers by value
    from tqdm import tqdm

    from physnn.experiments import jobs as jobs_module
    from physnn.experiments.jobs import Job

    ray_instance.cloudpickle.register_pickle_by_value(test_jobs)
    out = io.StringIO()
    bar = tqdm(total=2, file=out, disable=False, mininterval=0)
    jobs = [Job(f"count {c}", test_jobs._count_to, {"n": 4, "pause": 0.7}) for c in "ab"]
    outcomes = jobs_module._run_ray(jobs, Executor(ray="local"), bar)
    bar.close()
    assert [o.result for o in outcomes] == [4, 4]
    for c in "ab":
        assert re.search(rf"count {c} [0-4]/4", out.getvalue()), out.getvalue()
    quiet = tqdm(total=1, disable=True)  # no bar: no actor, and the worker reports nowhere
    assert jobs_module._run_ray(jobs[:1], Executor(ray="local"), quiet)[0].result == 4


def test_a_lost_progress_actor_costs_the_bar_and_nothing_else(ray_instance) -> None:
    from physnn.experiments.jobs import RaySteps, _take, _ToActor

    actor = ray_instance.remote(num_cpus=0)(RaySteps).remote()
    _ToActor(actor).put_nowait((0, 1, 2))
    assert _take(ray_instance, actor) == [(0, 1, 2)]
    ray_instance.kill(actor)
    _ToActor(actor).put_nowait((0, 2, 2))  # a task reporting to it does not fail
    assert _take(ray_instance, actor) is None  # the parent drops the postfix, not the runs


def test_reporting_progress_to_ray_costs_under_a_few_milliseconds(ray_instance) -> None:
    """Once an epoch, in the task: a call nothing waits for (0.4 ms measured on the 2 busy
    cores of a loaded machine; a round trip to the actor would wait for its reply too)."""
    from physnn.experiments.jobs import RaySteps, _ToActor

    actor = ray_instance.remote(num_cpus=0)(RaySteps).remote()
    to_actor = _ToActor(actor)
    t0 = time.perf_counter()
    for k in range(500):
        to_actor.put_nowait((3, k, 500))
    per_call = (time.perf_counter() - t0) / 500
    assert ray_instance.get(actor.take.remote()) == [(3, 499, 500)]  # the latest, in order
    assert per_call < 3e-3, f"{per_call * 1e6:.0f} us per epoch report"


def test_ray_gives_the_in_process_table_exactly(reference, ray_instance) -> None:
    spec, result, tmp = reference
    on_ray = sweep(spec, out=tmp / "ray", ray="local", progress=False)
    assert "Ray" in on_ray.executor
    assert figures(on_ray) == figures(result)
    assert (tmp / "ray" / "tiny" / "sweep.md").read_text().count("**chosen**") == 1


def test_a_ray_worker_killed_mid_trial_is_retried(reference, ray_instance) -> None:
    spec, result, tmp = reference
    killed = kill_mid_trial(tmp / "ray-kill" / "tiny" / "trials", _ray_trials)
    on_ray = sweep(spec, out=tmp / "ray-kill", ray="local", progress=False)
    killed["stop"].set()
    killed["thread"].join(timeout=5)
    assert "pid" in killed, "no Ray worker was killed: the trials ran too fast to catch one"
    assert all(r.complete for r in on_ray.rows) and on_ray.report is not None
    assert on_ray.report.complete
    assert figures(on_ray) == figures(result)


def test_train_runs_its_seeds_on_ray_with_the_numbers_of_a_pool(tiny_config, tmp_path: Path,
                                                                 ray_instance) -> None:
    from physnn.experiments.summary import train

    tiny_config["train"].update(epochs=2, eval_every=1)
    pooled = train(tiny_config, out=tmp_path / "pool", seeds=2, jobs=2, progress=False)
    on_ray = train(tiny_config, out=tmp_path / "ray", seeds=2, ray="local", progress=False)
    assert [r.test_acc for r in on_ray.results] == [r.test_acc for r in pooled.results]
    assert [r.record["metrics"]["loss"].tolist() for r in on_ray.results] == \
        [r.record["metrics"]["loss"].tolist() for r in pooled.results]


def test_the_example_sweeps_load_and_the_api_example_learns(example) -> None:
    root = Path(__file__).resolve().parents[1] / "examples" / "sweeps"
    specs = sorted(root.glob("*.toml"))
    assert specs
    for path in specs:
        spec = load_spec(path)
        for c in spec.candidates():
            c.config(spec.set)  # every candidate is a valid config
        assert spec.protocol and not set(spec.tune_seeds) & set(spec.report_seeds)
    assert example("sweep_api").main(epochs=1, jobs=1) > 0.5  # chance is 0.1


def test_ray_errors_are_one_line(monkeypatch, capsys, tmp_path: Path) -> None:
    from physnn.experiments.jobs import import_ray

    # nothing listens on port 1: refused at once, not after Ray's minutes of waiting
    assert main(["train", "digits-optical", "--ray", "127.0.0.1:1", "--epochs", "1",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    if importlib.util.find_spec("ray") is None:  # without the extra, the one line says so
        assert err == ('physnn train: error: --ray needs Ray, an optional extra: '
                       'pip install -e ".[cluster]"')
    else:
        assert err.startswith("physnn train: error: no Ray cluster answers at 127.0.0.1:1")
    assert "\n" not in err
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if not installed
    with pytest.raises(ValueError, match=r"--ray needs Ray, an optional extra: pip install -e "
                       r"\"\.\[cluster\]\""):
        import_ray()


def test_ray_refuses_runs_no_node_can_take(reference, ray_instance) -> None:
    spec, result, tmp = reference
    # connected already: an explicit other address is refused, not silently replaced
    with pytest.raises(ValueError, match="this process is already connected to Ray"):
        sweep(spec, out=tmp / "elsewhere", ray=_listening(), progress=False)
    with pytest.raises(ValueError, match=r"each run asks Ray for 0.5 GPU\(s\) but the cluster has 0"):
        sweep(spec, out=tmp / "gpu", ray="local", gpus_per_run=0.5, progress=False)
    with pytest.raises(ValueError, match=r"each run asks Ray for 64 CPU\(s\) but the cluster has 2"):
        sweep({**spec, "resources": {"cpus": 64}}, out=tmp / "cpu", ray="local", progress=False)


def _listening() -> str:
    """The address of a socket that accepts connections (and is not a Ray cluster)."""
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    _listening.keep = srv  # type: ignore[attr-defined]  # open until the test ends
    return f"127.0.0.1:{srv.getsockname()[1]}"


def test_an_error_message_cannot_break_the_markdown_table() -> None:
    from physnn.experiments.sweep_results import _cell

    assert _cell("ValueError: a | b\n  c") == "ValueError: a \\| b c"
