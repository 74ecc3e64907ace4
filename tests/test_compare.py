"""physnn compare: methods x seeds through the runner, one table, one plot, every run log kept."""

import copy
import csv
import io

import pytest

from physnn.cli import main
from physnn.experiments.compare import compare, from_logs, method_config
from physnn.experiments.runlog import read_run

SETTINGS = {"phyll": {"lr": 3e-3}, "backprop": {"batch_size": 128, "lr": 3e-3}}


@pytest.fixture
def small(tiny_config):
    cfg = copy.deepcopy(tiny_config)
    cfg["train"].update(epochs=2, eval_every=1)
    return cfg


def test_compare_writes_table_plot_and_every_run_log(small, tmp_path):
    comp = compare(small, methods=["phyll", "backprop"], seeds=2, out=tmp_path,
                   settings={small["name"]: SETTINGS}, progress=False)
    folder = tmp_path / small["name"]
    for name in ("compare.md", "compare.csv", "compare.png", "compare.json"):
        assert (folder / name).stat().st_size > 0, name
    for method in ("phyll", "backprop"):
        for seed in (0, 1):
            rec = read_run(folder / method / f"seed{seed}.h5")
            assert rec["status"] == "complete" and rec["config"]["train"]["method"] == method
            assert rec["accounting"]["ledger"]["method"] == method
    assert read_run(folder / "backprop" / "seed0.h5")["config"]["train"]["batch_size"] == 128
    rows = list(csv.DictReader(io.StringIO((folder / "compare.csv").read_text())))
    assert [r["method"] for r in rows] == ["phyll", "backprop"]
    phyll, bp = comp.methods
    assert float(rows[0]["test_acc_mean"]) == pytest.approx(phyll.test_acc[0])
    assert float(rows[1]["flops_model"]) > 0 and float(rows[0]["flops_model"]) == 0
    # phyll queries positives and negatives: twice the samples of backprop per epoch and block
    assert float(rows[0]["train_queries"]) == 2 * float(rows[1]["train_queries"])
    md = (folder / "compare.md").read_text()
    assert "| phyll |" in md and "| backprop |" in md and "lr=0.003" in md
    # rerunning resumes: the complete logs are read back, not retrained
    stamp = (folder / "phyll" / "seed0.h5").stat().st_mtime_ns
    again = compare(small, methods=["phyll", "backprop"], seeds=2, out=tmp_path,
                    settings={small["name"]: SETTINGS}, progress=False)
    assert (folder / "phyll" / "seed0.h5").stat().st_mtime_ns == stamp
    assert again.rows()[0]["test_acc_mean"] == comp.rows()[0]["test_acc_mean"]
    # the table rebuilt from the logs alone (no training) has the same numbers
    rebuilt = from_logs(folder)
    assert [r["method"] for r in rebuilt.rows()] == ["phyll", "backprop"]
    for a, b in zip(rebuilt.rows(), comp.rows(), strict=True):
        for key in ("test_acc_mean", "train_queries", "flops_train", "energy_train_j"):
            assert a[key] == b[key], key
    assert "lr=0.003" in rebuilt.rows()[0]["settings"]
    with pytest.raises(FileNotFoundError):
        from_logs(tmp_path / "nothing")


def test_compare_rejects_bad_input(small, tmp_path):
    with pytest.raises(ValueError, match="unknown method"):
        compare(small, methods=["phyll", "sgd"], seeds=1, out=tmp_path, progress=False)
    with pytest.raises(ValueError, match="seeds"):
        compare(small, methods=["phyll"], seeds=0, out=tmp_path, progress=False)
    with pytest.raises(ValueError, match="unknown"):
        method_config(small, "ff", {"ff": {"threshhold": 1.0}})
    with pytest.raises(FileNotFoundError):
        compare(small, methods=["ff"], seeds=1, out=tmp_path, settings=tmp_path / "no.toml",
                progress=False)
    # a --set only PhyLL takes fails on the other arm before anything runs, saying where it goes
    with pytest.raises(ValueError, match=r"wrong_label.*not 'backprop'.*--settings file under "
                                         rf"\[{small['name']}\.METHOD\]"):
        compare(small, methods=["phyll", "backprop"], seeds=1, out=tmp_path / "c",
                overrides=["train.wrong_label=hard"], progress=False)
    assert not (tmp_path / "c").exists()


def test_cli_compare(tmp_path, capsys):
    settings = tmp_path / "s.toml"
    settings.write_text('[digits-optical.ff]\nlr = 5e-3\nff_threshold = 0.5\n')
    argv = [
        "compare", "digits-optical", "--methods", "ff,pat", "--seeds", "1", "--epochs", "1",
        "--settings", str(settings), "--out", str(tmp_path), "--threads", "1", "--no-progress",
        "--set", "device.camera_shape=[6, 6]", "--set", "network.hidden=[12, 12]",
        "--set", "train.inner_steps=2", "--set", "train.eval_train=false",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| ff |" in out and "| pat |" in out and "physnn compare digits-optical" in out
    folder = tmp_path / "digits-optical+camera_shape=6,6"  # issue 19: named by its device
    rec = read_run(folder / "ff" / "seed0.h5")
    assert rec["config"]["train"]["ff_threshold"] == 0.5
    (folder / "compare.md").unlink()
    assert main(["compare", "digits-optical", "--from-logs", "--out", str(tmp_path),
                 "--set", "device.camera_shape=[6, 6]"]) == 0
    assert (folder / "compare.md").is_file()
    assert main(["compare", "digits-optical", "--methods", "ff,nope", "--out", str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err
