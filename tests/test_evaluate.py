"""physnn evaluate: a trained run scored again from its checkpoint, with its own read-out or
another, without training."""

import json

import h5py
import pytest
from conftest import cli_here, tiny

from physnn.experiments.evaluate import evaluate_run
from physnn.experiments.runner import run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished weighted run, the same run trained with weighted-or-sum, and a stopped one."""
    tmp = tmp_path_factory.mktemp("evaluate")
    cfg = tiny()
    cfg["train"].update(epochs=2, eval_every=1, readout="weighted")
    weighted = run(cfg, tmp / "w" / "seed0.h5", progress=False)
    cfg["train"]["readout"] = "weighted-or-sum"
    either = run(cfg, tmp / "e" / "seed0.h5", progress=False)
    cfg["train"].update(readout="goodness", epochs=4)
    stopped = run(cfg, tmp / "s" / "seed0.h5", progress=False, stop_after=1)
    return tmp, weighted, either, stopped


def test_the_runs_own_read_out_gives_its_logged_numbers_exactly(runs):
    _, weighted, _, _ = runs
    got = evaluate_run(weighted.path)
    m = weighted.record["metrics"]
    assert (got["readout"], got["epoch"], got["seed"]) == ("weighted", 2, 0)
    assert got["test_acc"] == got["logged_test_acc"] == m["test_acc"][-1]
    assert got["test_acc_summed"] == m["test_acc_summed"][-1]
    assert got["train_acc"] == m["train_acc"][-1]


def test_another_read_out_gives_what_a_run_trained_with_it_logs(runs):
    _, weighted, either, _ = runs
    got = evaluate_run(weighted.path, readout="weighted-or-sum")
    m = either.record["metrics"]
    assert got["test_acc"] == m["test_acc"][-1] and got["readout_summed"] == m["readout_summed"][-1]
    assert got["logged_test_acc"] == weighted.record["metrics"]["test_acc"][-1]
    with h5py.File(weighted.path) as f:  # the log itself is left as it was
        assert f.attrs["config_json"].count('"weighted"') == 1


def test_a_stopped_run_is_scored_at_its_last_epoch(runs):
    _, _, _, stopped = runs
    assert stopped.record["status"] == "running"
    got = evaluate_run(stopped.path)
    assert got["epoch"] == 1 and got["readout"] == "goodness"
    assert got["test_acc"] == got["logged_test_acc"] == stopped.record["metrics"]["test_acc"][0]


def test_the_command_prints_a_table_or_json_and_refuses_in_one_line(runs):
    tmp, weighted, _, _ = runs
    p = cli_here("evaluate", "w", "e", "--readout", "weighted-or-sum", "--no-progress", cwd=tmp)
    assert p.returncode == 0, p.stderr
    assert "| seed0.h5 | 0 | 2 | weighted-or-sum |" in p.stdout
    assert "test_acc over 2 runs:" in p.stdout
    p = cli_here("evaluate", "w/seed0.h5", "--json", "--threads", "1", "--no-progress", cwd=tmp)
    assert json.loads(p.stdout)[0]["test_acc"] == weighted.record["metrics"]["test_acc"][-1]
    for args, message in (
        (("missing.h5",), "physnn evaluate: error: run log missing.h5 does not exist"),
        (("w", "--readout", "best"), "physnn evaluate: error: train.readout must be one of"),
        (("s", "--readout", "linear", "--device", "tpu"), "physnn evaluate: error:"),
    ):
        p = cli_here("evaluate", *args, "--no-progress", cwd=tmp)
        assert p.returncode == 2 and p.stderr.startswith(message), p.stderr
        assert p.stderr.count("\n") == 1
    p = cli_here("evaluate", "w", "--threads", "0", cwd=tmp)  # argparse's usage, then the line
    assert p.returncode == 2 and p.stderr.splitlines()[-1] == (
        "physnn evaluate: error: argument --threads: expected an integer >= 1, got '0'")


def test_a_continual_run_is_scored_as_it_logged(tmp_path):
    from test_continual import CFG

    from physnn.experiments.continual import run_continual

    run = run_continual(CFG, tmp_path / "a.h5", arm="phyll", seed=0, progress=False)
    got = evaluate_run(tmp_path / "a.h5")
    assert got["epoch"] == 5 and got["test_acc"] == got["logged_test_acc"] == run.metrics["test_acc"][-1]
