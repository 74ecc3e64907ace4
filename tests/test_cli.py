import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import cli_here

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
    # the same command again (in this process: the entry point is checked above) finds the
    # finished run and does not train again; then the report draws its figures
    again = cli_here("train", "digits-optical", "--epochs", "2", "--out", "out", "--no-progress",
                     "--set", "train.eval_every=1", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "PhyLL test accuracy" in again.stdout
    assert read_run(log)["wall_time_s"] == rec["wall_time_s"]

    r = cli_here("report", str(log), cwd=tmp_path)
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


# issue 18: bad input files and flag values are one line naming the file or the flag (the
# other cases run in-process: tests/test_calibration.py::test_import_refuses_bad_files_and_flags)
@pytest.mark.parametrize("args, message", [
    (["import", "empty.npz"], "empty.npz is empty (0 bytes); expected an .npz archive"),
    (["import", "ok.csv", "--domain", "a,b"], "--domain expects two numbers LO,HI with LO < HI "
                                              "(e.g. 0,1), got 'a,b'"),
    (["device", "latin1.toml"], "latin1.toml is not UTF-8 text: byte 0xe9 at offset 21 (line 2)"),
])
def test_bad_files_and_flags_are_one_line_naming_the_culprit(tmp_path, args, message):
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "ok.csv").write_text("in_0,out_0\n0,1\n1,2\n")
    (tmp_path / "latin1.toml").write_bytes(b'kind = "sim:optical"\n\xe9 = 1\n')
    if args[0] == "import":
        args = [*args, "--out", "r.h5", "--no-plot"]
    p = physnn(*args, cwd=tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stderr.startswith(f"physnn {args[0]}: error: ") and "Traceback" not in p.stderr
    assert len(p.stderr.splitlines()) == 1 and message in p.stderr, p.stderr


# issue 18: a --set value of the wrong type, non-finite or out of range is one line naming
# the key (inf, nan and alpha=-4 used to train: to NaN device inputs or to 0 % with exit 0)
@pytest.mark.parametrize("assignment, message", [
    ("train.epochs=1.5", "config key 'train.epochs' must be an integer, got 1.5 (float)"),
    ("train.epochs=true", "config key 'train.epochs' must be an integer, got True (bool)"),
    ("train.epochs=abc", "config key 'train.epochs' must be an integer, got 'abc' (str)"),
    ("train.batch_size=true", "config key 'train.batch_size' must be an integer, got True"),
    ('train.lr="1e-3"', "config key 'train.lr' must be a number, got '1e-3' (str)"),
    ("train.lr=inf", "train.lr must be a finite number > 0, got inf"),
    ("train.alpha=nan", "must be a finite number > 0, got nan"),
    ("train.label_amplitude=nan", "must be a finite number > 0 or 'batch_max', got nan"),
    ("train.alpha=-4", "must be > 0, got -4.0"),
    ("network.hidden=5", "config key 'network.hidden' must be a list of integers, got 5"),
    ("seed=abc", "config key 'seed' must be an integer, got 'abc' (str)"),
])
def test_bad_set_values_are_one_line_naming_the_key(tmp_path, monkeypatch, capsys, assignment,
                                                    message):
    from physnn.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", "digits-optical", "--no-progress", "--set", assignment]) == 2
    err = capsys.readouterr().err
    key = assignment.partition("=")[0]
    assert err.startswith("physnn train: error: ") and len(err.splitlines()) == 1, err
    assert message in err and key in err, err
    assert not (tmp_path / "runs").exists()


# issue 18: flags are checked by argparse, naming the flag; --seed -5 was torch's "expected
# non-negative integer", --threads -1 a torch RuntimeError in fit and calibrate, the sweep's
# --dry-run accepted them all, --gpus-per-run nan trained
@pytest.mark.parametrize("args, message", [
    (["train", "digits-optical", "--seed", "-5"],
     "argument --seed: expected an integer in [0, 4294967295], got '-5'"),
    (["train", "digits-optical", "--threads", "-1"],
     "argument --threads: expected an integer >= 1, got '-1'"),
    (["train", "digits-optical", "--threads", "0"],
     "argument --threads: expected an integer >= 1, got '0'"),
    (["train", "digits-optical", "--epochs", "0"],
     "argument --epochs: expected an integer >= 1, got '0'"),
    (["train", "digits-optical", "--epochs", "-1"],
     "argument --epochs: expected an integer >= 1, got '-1'"),
    (["compare", "digits-optical", "--seeds", "0"],
     "argument --seeds: expected an integer >= 1, got '0'"),
    (["continual", "perturbation-recovery", "--jobs", "-1"],
     "argument --jobs: expected an integer >= 1, got '-1'"),
    (["train", "digits-optical", "--retries", "-1"],
     "argument --retries: expected an integer >= 0, got '-1'"),
    (["train", "digits-optical", "--gpus-per-run", "-1"],
     "argument --gpus-per-run: expected a finite number >= 0, got '-1'"),
    (["train", "digits-optical", "--gpus-per-run", "nan"],
     "argument --gpus-per-run: expected a finite number >= 0, got 'nan'"),
    (["sweep", "examples/sweeps/digits-quick.toml", "--dry-run", "--threads", "-1"],
     "argument --threads: expected an integer >= 1, got '-1'"),
    (["sweep", "examples/sweeps/digits-quick.toml", "--dry-run", "--jobs", "0"],
     "argument --jobs: expected an integer >= 1, got '0'"),
    (["sweep", "examples/sweeps/digits-quick.toml", "--dry-run", "--retries", "-1"],
     "argument --retries: expected an integer >= 0, got '-1'"),
    (["sweep", "examples/sweeps/digits-quick.toml", "--dry-run", "--gpus-per-run", "inf"],
     "argument --gpus-per-run: expected a finite number >= 0, got 'inf'"),
    (["fit", "missing.h5", "--out", "t.pt", "--threads", "-1"],
     "argument --threads: expected an integer >= 1, got '-1'"),
    (["calibrate", "sim:optical", "--out", "r.h5", "--threads", "0"],
     "argument --threads: expected an integer >= 1, got '0'"),
])
def test_bad_flag_values_are_one_line_naming_the_flag(tmp_path, monkeypatch, capsys, args,
                                                      message):
    from pathlib import Path

    from physnn.cli import main

    args = [str(Path(__file__).parents[1] / a) if a.startswith("examples/") else a for a in args]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main([*args, "--out", "out"] if "--out" not in args else args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"physnn {args[0]}: error: {message}", err
    assert "Traceback" not in err and not list(tmp_path.iterdir())


def test_bad_values_through_the_real_command_line(tmp_path):  # issue 18
    p = physnn("train", "digits-optical", "--set", "train.alpha=-4", cwd=tmp_path)
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1, p.stderr
    assert "physnn train: error: train.alpha (" in p.stderr and "got -4.0" in p.stderr
    p = physnn("train", "digits-optical", "--seed", "-5", cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.splitlines()[-1] == ("physnn train: error: argument --seed: expected an "
                                         "integer in [0, 4294967295], got '-5'")
