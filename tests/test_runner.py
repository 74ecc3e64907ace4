import numpy as np
import pytest

from physnn.experiments.config import load_config, presets
from physnn.experiments.runlog import read_run
from physnn.experiments.runner import run
from physnn.experiments.summary import train


def _same(a, b):
    for key in a["metrics"]:
        if key != "wall_time_s":
            np.testing.assert_array_equal(a["metrics"][key], b["metrics"][key], err_msg=key)
    for block in a["accounting"]:
        for k, v in a["accounting"][block].items():
            if k not in ("wall_time_s", "peak_memory_bytes"):  # measured, not computed
                assert v == b["accounting"][block][k], (block, k)


def test_same_seed_gives_identical_numbers(tiny_config, tmp_path):
    a = run(tiny_config, tmp_path / "a.h5", progress=False)
    b = run(tiny_config, tmp_path / "b.h5", progress=False)
    _same(a.record, b.record)
    c = run(tiny_config, tmp_path / "c.h5", seed=1, progress=False)
    assert not np.array_equal(a.record["metrics"]["loss"], c.record["metrics"]["loss"])


def test_resume_equals_uninterrupted(tiny_config, tmp_path):
    full = run(tiny_config, tmp_path / "full.h5", progress=False)
    part = run(tiny_config, tmp_path / "part.h5", progress=False, stop_after=1)
    assert part.record["status"] == "running"
    assert len(part.record["metrics"]["epoch"]) == 1
    part = run(tiny_config, tmp_path / "part.h5", progress=False, stop_after=2)
    assert read_run(tmp_path / "part.h5")["status"] == "running"
    resumed = run(tiny_config, tmp_path / "part.h5", progress=False)
    assert resumed.record["status"] == "complete"
    _same(full.record, resumed.record)
    assert resumed.test_acc == full.test_acc
    np.testing.assert_array_equal(
        full.record["predictions"]["test_pred"], resumed.record["predictions"]["test_pred"]
    )


def test_resume_refuses_a_different_config(tiny_config, tmp_path):
    run(tiny_config, tmp_path / "r.h5", progress=False, stop_after=1)
    tiny_config["train"]["lr"] = 1e-2
    with pytest.raises(ValueError, match="different config"):
        run(tiny_config, tmp_path / "r.h5", progress=False)


def test_a_log_from_before_a_new_key_resumes_and_counts_as_finished(tiny_config, tmp_path,
                                                                     monkeypatch):
    """A run logged before a config key existed (here: written without train.ensemble) is
    the same run: it resumes to the uninterrupted numbers, and a sweep reuses it finished."""
    from physnn.experiments.config import ExperimentConfig
    from physnn.experiments.sweep import _finished

    full = run(tiny_config, tmp_path / "full.h5", progress=False)
    today = ExperimentConfig.to_dict

    def without_ensemble(self):
        d = today(self)
        del d["train"]["ensemble"]
        return d

    with monkeypatch.context() as m:
        m.setattr(ExperimentConfig, "to_dict", without_ensemble)
        run(tiny_config, tmp_path / "old.h5", progress=False, stop_after=1)
        run(tiny_config, tmp_path / "old_done.h5", progress=False)
    assert "ensemble" not in read_run(tmp_path / "old.h5")["config"]["train"]
    resumed = run(tiny_config, tmp_path / "old.h5", progress=False)
    _same(full.record, resumed.record)
    cfg = load_config(tiny_config)
    assert _finished(tmp_path / "old_done.h5", cfg) is not None
    assert _finished(tmp_path / "old_done.h5", cfg.merged({"train": {"lr": 1e-2}})) is None
    assert _finished(tmp_path / "old_done.h5", cfg.merged({"train": {"ensemble": 2}})) is None


def test_run_log_contents(tiny_config, tmp_path):
    r = run(tiny_config, tmp_path / "r.h5", progress=False)
    rec = read_run(tmp_path / "r.h5", checkpoint=True)
    assert rec["status"] == "complete" and rec["config"] == {**tiny_config, "seed": 0}
    m = rec["metrics"]
    assert m["loss"].shape == (4, 2)
    assert np.isnan(m["test_acc"][0]) and not np.isnan(m["test_acc"][1])
    assert rec["accounting"]["block0"]["samples"] == m["train_queries"].sum() / 2 + m[
        "eval_queries"
    ].sum() / 2
    assert rec["accounting"]["block0"]["energy_j"] > 0
    assert rec["accounting"]["digital"]["flops_train"] > 0
    assert 0.5 < rec["reference"]["logistic_regression_test_acc"] <= 1
    assert rec["checkpoint"]["epoch"] == 4
    assert r.test_acc == pytest.approx(
        (rec["predictions"]["test_true"] == rec["predictions"]["test_pred"]).mean()
    )


def test_bad_device_input_fails_before_anything_is_logged(tiny_config, tmp_path):
    tiny_config["train"]["label_amplitude"] = 2.0  # outside the optical SLM's [0, 1]
    with pytest.raises(ValueError, match=r"sim:optical: input\[0, \d\] = 2 is outside .*\[0, 1\]"):
        run(tiny_config, tmp_path / "bad.h5", progress=False)
    assert not (tmp_path / "bad.h5").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind either


def test_unreadable_run_log_is_a_clear_error(tmp_path):
    p = tmp_path / "x.h5"
    p.write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        read_run(p)


def test_config_validation():
    assert "digits-optical" in presets()
    with pytest.raises(ValueError, match="unknown config key 'train.lrr'"):
        load_config({"train": {"lrr": 1}})
    with pytest.raises(ValueError, match="train.epochs must be >= 1"):
        load_config({"train": {"epochs": 0}})
    with pytest.raises(ValueError, match="neither a preset nor"):
        load_config("no-such-preset")


def test_train_several_seeds_writes_summary(tiny_config, tmp_path):
    s = train(tiny_config, out=tmp_path, seeds=2, epochs=2, progress=False)
    assert [int(r.record["seed"]) for r in s.results] == [0, 1]
    folder = tmp_path / tiny_config["name"]
    assert (folder / "seed0.h5").exists() and (folder / "seed1.h5").exists()
    assert "mean ± std over 2 seeds" in (folder / "summary.md").read_text()
    mean, std = s.test_acc
    accs = [r.test_acc for r in s.results]
    assert mean == pytest.approx(np.mean(accs)) and std == pytest.approx(np.std(accs, ddof=1))


def test_overwrite_drops_the_old_log_before_a_failing_restart(tiny_config, tmp_path):
    p = tmp_path / "r.h5"
    run(tiny_config, p, progress=False, stop_after=1)
    tiny_config["train"]["label_amplitude"] = 2.0
    with pytest.raises(ValueError, match="outside the allowed domain"):
        run(tiny_config, p, progress=False, overwrite=True)
    assert not p.exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="CUDA is available here")
def test_unavailable_torch_device_is_a_clear_error(tiny_config, tmp_path):
    with pytest.raises(ValueError, match="CUDA is not available"):
        run(tiny_config, tmp_path / "r.h5", torch_device="cuda", progress=False)
    with pytest.raises(ValueError, match="unknown torch device 'gpu0'"):
        run(tiny_config, tmp_path / "r.h5", torch_device="gpu0", progress=False)


def test_overrides_parse_toml_values_and_reject_unknown_keys(tiny_config):
    from physnn.experiments.config import apply_overrides

    cfg = apply_overrides(
        tiny_config, ["train.lr=1e-3", "network.hidden=[8, 8]", "name=my run", "device.pool=2"]
    )
    assert cfg.train.lr == 1e-3 and cfg.network.hidden == [8, 8]
    assert cfg.name == "my run" and cfg.device["pool"] == 2
    assert tiny_config["train"]["lr"] == 2e-3  # the input is not modified
    with pytest.raises(ValueError, match="unknown config key 'train.lrr'"):
        apply_overrides(tiny_config, ["train.lrr=1"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        apply_overrides(tiny_config, ["train.lr"])
    with pytest.raises(ValueError, match="train.epochs must be >= 1"):
        apply_overrides(tiny_config, ["train.epochs=0"])


def test_unknown_data_key_names_the_allowed_ones(tiny_config, tmp_path):
    tiny_config["data"]["colour"] = "red"
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['colour'\] in \[data\].*test_fraction"):
        run(tiny_config, tmp_path / "r.h5", progress=False)
