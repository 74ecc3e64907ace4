"""Continual training through a perturbation schedule: loop, monitor, resume, summary, CLI."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from physnn.cli import main
from physnn.core.perturbation import perturbable
from physnn.experiments.config import load_config
from physnn.experiments.continual import (
    DropMonitor,
    continual,
    parse_arm,
    recovery,
    run_continual,
)

CFG = {
    "name": "tiny-continual",
    "data": {"name": "digits", "reserve_label_slots": True},
    "device": {
        "kind": "sim:optical", "camera_shape": [8, 8],
        "perturbations": [{"kind": "sudden", "at": 3, "fraction": 1.0}],
    },
    "network": {"hidden": [24], "skip": True},
    "train": {"epochs": 5, "lr": 5e-3, "inner_steps": 3},
    "continual": {"eval_every": 2, "monitor_window": 1, "drop_points": 5.0},
}


def test_monitor_raises_an_alarm_on_a_drop_and_clears_it_on_recovery():
    mon = DropMonitor(window=2, drop_points=10, recover_points=2)
    seen = [mon.update(e, a) for e, a in enumerate([0.9, 0.92, 0.95, math.nan, 0.5, 0.8, 0.92], 1)]
    assert [s[0] for s in seen] == [False, False, False, False, True, False, False]
    assert [s[1] for s in seen] == [False] * 6 + [True]
    assert mon.alarms[0]["epoch"] == 5 and mon.alarms[0]["recovered_epoch"] == 7
    assert mon.alarms[0]["reference"] == pytest.approx(93.5)
    other = DropMonitor(2, 10, 2)
    other.load_state_dict(mon.state_dict())
    assert other.update(8, 0.5) == mon.update(8, 0.5) == (True, False)
    with pytest.raises(ValueError, match="monitor_window"):
        DropMonitor(window=0)


def test_arms_parse():
    assert parse_arm("phyll") == ("phyll", False)
    assert parse_arm("pat:frozen") == ("pat", True)
    with pytest.raises(ValueError, match="frozen"):
        parse_arm("phyll:sleepy")


def test_loop_follows_the_schedule_and_a_frozen_arm_stops_training(tmp_path):
    run = run_continual(CFG, tmp_path / "a.h5", arm="phyll", seed=0, progress=False)
    m = run.metrics
    assert m["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert m["event"].tolist() == [0, 0, 1, 0, 0]
    assert np.isnan(m["test_acc_event"][[0, 1, 3, 4]]).all() and not np.isnan(m["test_acc_event"][2])
    # evaluated every 2 epochs, at the change and at the end
    assert (~np.isnan(m["test_acc"])).tolist() == [False, True, True, True, True]
    assert (m["train_queries"] > 0).all() and m["trained"].tolist() == [1] * 5
    frozen = run_continual(CFG, tmp_path / "f.h5", arm="phyll:frozen", seed=0, progress=False)
    f = frozen.metrics
    assert f["trained"].tolist() == [1, 1, 0, 0, 0]  # frozen at the onset (tick 3)
    assert f["train_queries"][2:].sum() == 0
    assert f["test_acc"][1] == m["test_acc"][1]  # identical until the freeze
    rec = recovery(run, window=1, recover_points=2.0, tail_fraction=0.5)
    assert rec["event_epoch"] == 3 and rec["onset"] == 3
    assert rec["pre_acc"] == pytest.approx(m["test_acc"][1])
    assert rec["drop_points"] == pytest.approx(100 * (m["test_acc"][1] - m["test_acc_event"][2]))


def test_interrupted_run_resumes_to_the_same_numbers(tmp_path):
    full = run_continual(CFG, tmp_path / "full.h5", arm="phyll", seed=1, progress=False)
    part = tmp_path / "part.h5"
    first = run_continual(CFG, part, arm="phyll", seed=1, progress=False, stop_after=3)
    assert first.record["status"] == "running" and len(first.metrics["epoch"]) == 3
    done = run_continual(CFG, part, arm="phyll", seed=1, progress=False)
    for key in ("test_acc", "test_acc_event", "loss", "train_queries", "event"):
        np.testing.assert_array_equal(done.metrics[key], full.metrics[key])
    other = copy.deepcopy(CFG)
    other["train"]["lr"] = 1e-3
    with pytest.raises(ValueError, match="different config"):
        run_continual(other, part, arm="phyll", seed=1, progress=False)


def test_image_shifts_reach_a_continual_run_as_they_reach_train(tmp_path):
    """The rule gets the data's image shape, as in ``physnn train``: without it a shift
    augmentation was refused as if the digits were not images."""
    cfg = copy.deepcopy(CFG)
    cfg["train"].update(augment="shift", augment_size=1, epochs=2)
    shifted = run_continual(cfg, tmp_path / "s.h5", arm="phyll", seed=0, progress=False)
    plain = run_continual({**CFG, "train": {**CFG["train"], "epochs": 2}}, tmp_path / "p.h5",
                          arm="phyll", seed=0, progress=False)
    assert shifted.metrics["epoch"].tolist() == [1, 2]
    assert not np.array_equal(shifted.metrics["loss"], plain.metrics["loss"])  # it did shift


@pytest.mark.parametrize("readout", ["linear", "both", "weighted"])
def test_a_read_out_it_would_ignore_is_refused(tmp_path, readout):
    cfg = copy.deepcopy(CFG)
    cfg["train"]["readout"] = readout
    with pytest.raises(ValueError, match="train.readout must be 'goodness'") as err:
        run_continual(cfg, tmp_path / "r.h5", arm="phyll", seed=1, progress=False)
    assert "\n" not in str(err.value) and not (tmp_path / "r.h5").exists()


def test_pat_twin_is_stale_unless_tracked(tmp_path):
    from physnn.experiments.runner import build_network, load_data, make_trainer

    cfg = copy.deepcopy(CFG)
    cfg["network"]["hidden"] = [16, 16]
    cfg["train"].update(method="pat", epochs=3, batch_size=256)
    for track in (False, True):
        cfg["continual"]["track_twin"] = track
        run = run_continual(cfg, tmp_path / f"pat{track}.h5", arm="pat", seed=0, progress=False)
        full = load_config(cfg)
        raw = load_data(full, 0)
        net = build_network(full, raw.n_features, 0)
        trainer = make_trainer(full, net, raw.n_classes, 0, raw.label_width)
        from physnn.experiments.runlog import read_run

        ck = read_run(run.path, checkpoint=True)["checkpoint"]["state"]
        net.load_state_dict(ck["network"])
        trainer.load_state_dict(ck["trainer"])
        twin = perturbable(trainer.twin_devices[0])
        assert perturbable(net.devices[1]).clock == 3
        assert twin.clock == (3 if track else 0)


def test_continual_writes_table_json_and_plot(tmp_path):
    summary = continual(CFG, methods=["phyll", "phyll:frozen"], seeds=1, out=tmp_path,
                        progress=False)
    folder = tmp_path / "tiny-continual"
    for name in ("continual.md", "continual.json", "continual.png"):
        assert (folder / name).stat().st_size > 0
    assert (folder / "phyll-frozen" / "seed0.h5").is_file()
    table = {t["arm"]: t for t in summary.table()}
    assert set(table) == {"phyll", "phyll:frozen"}
    assert "drop_points" in table["phyll"]
    assert "| phyll:frozen | 1 |" in summary.markdown()


def test_cli_continual_runs_and_rejects_bad_input(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        'name = "tiny-cli"\n[data]\nname = "digits"\nreserve_label_slots = true\n'
        '[device]\nkind = "sim:optical"\ncamera_shape = [6, 6]\n'
        'perturbations = [{kind = "drift", rate = 0.5}]\n'
        '[network]\nhidden = [8]\n[train]\nepochs = 2\ninner_steps = 1\n'
    )
    rc = main(["continual", str(cfg), "--methods", "phyll", "--out", str(tmp_path),
               "--no-progress", "--threads", "1"])
    assert rc == 0
    assert "physnn continual" in capsys.readouterr().out
    assert main(["continual", str(cfg), "--methods", "phyll:asleep", "--out", str(tmp_path)]) == 2
    assert main(["continual", str(cfg), "--set", "continual.nope=1", "--out", str(tmp_path)]) == 2
    assert "unknown config key" in capsys.readouterr().err
