import json
import subprocess
import sys

import numpy as np

from physnn.experiments.runlog import read_run


def physnn(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "physnn", *args], cwd=cwd, capture_output=True, text=True,
        timeout=600,
    )


def test_train_and_report_end_to_end(tmp_path):
    p = physnn("train", "digits-optical", "--epochs", "2", "--out", "out", "--no-progress",
               "--set", "train.eval_every=1", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "PhyLL test accuracy" in p.stdout and "Logistic regression" in p.stdout
    log = tmp_path / "out" / "digits-optical" / "seed0.h5"
    rec = read_run(log)
    assert rec["status"] == "complete" and len(rec["metrics"]["epoch"]) == 2
    assert rec["config"]["train"]["epochs"] == 2 and rec["config"]["train"]["eval_every"] == 1
    assert not np.isnan(rec["metrics"]["test_acc"]).any()  # evaluated every epoch
    # second call finds the finished run and does not train again
    again = physnn("train", "digits-optical", "--epochs", "2", "--out", "out", "--no-progress",
                   "--set", "train.eval_every=1", cwd=tmp_path)
    assert again.returncode == 0 and read_run(log)["wall_time_s"] == rec["wall_time_s"]

    r = physnn("report", str(log), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    folder = tmp_path / "out" / "digits-optical"
    pngs = [folder / f"seed0_{k}.png" for k in ("curves", "confusion", "device")]
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_errors_are_one_clear_line(tmp_path):
    p = physnn("train", "no-such-preset", cwd=tmp_path)
    assert p.returncode == 2
    assert "error: 'no-such-preset' is neither a preset nor" in p.stderr
    assert "Traceback" not in p.stderr
    p = physnn("report", "missing.h5", cwd=tmp_path)
    assert p.returncode == 2 and "does not exist" in p.stderr


def test_device_and_presets_commands(tmp_path):
    p = physnn("device", "sim:optical", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    spec = json.loads(p.stdout)["spec"]
    assert spec["name"] == "sim:optical" and spec["n_out"] == 400
    assert "digits-optical" in physnn("presets", cwd=tmp_path).stdout.split()
