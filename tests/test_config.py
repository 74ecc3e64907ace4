"""The typed experiment config: TOML in and out, --set, one-line errors, old run logs."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from physnn.experiments.config import (
    ExperimentConfig,
    TrainConfig,
    apply_overrides,
    load_config,
    presets,
)
from physnn.experiments.loop import CHECKPOINT_FORMAT
from physnn.experiments.runlog import read_run, write_run
from physnn.experiments.runner import run
from physnn.train.phyll import LocalRuleSettings


@pytest.mark.parametrize("name", presets())
def test_every_preset_round_trips_through_toml(name: str, tmp_path: Path) -> None:
    cfg = load_config(name)
    assert isinstance(cfg, ExperimentConfig)
    path = tmp_path / "c.toml"
    path.write_text(cfg.to_toml())
    assert load_config(path) == cfg
    assert load_config(tomllib.loads(cfg.to_toml())).to_dict() == cfg.to_dict()


def test_the_train_section_extends_the_local_rules_settings() -> None:
    assert issubclass(TrainConfig, LocalRuleSettings)
    t, s = TrainConfig(), LocalRuleSettings()
    assert (t.lr, t.inner_steps, t.alpha, t.label_amplitude, t.batch_size) == (
        s.lr, s.inner_steps, s.alpha, s.label_amplitude, s.batch_size)


@pytest.mark.parametrize(("assignment", "message"), [
    ("train.lrr=1", "unknown config key 'train.lrr'; allowed here: alpha, average"),
    ("train.lr='fast'", "config key 'train.lr' must be a number, got 'fast'"),
    ("train.eval_train=1", "config key 'train.eval_train' must be true or false, got 1"),
    ("network.hidden=[1.5]", "config key 'network.hidden' must be a list of integers"),
    ("seed=0.5", "config key 'seed' must be an integer, got 0.5"),
    ("network=3", "config key 'network' must be a table"),
    ("train.epochs=0", "train.epochs must be >= 1, got 0"),
    ("train.readout='vote'", "train.readout must be one of goodness, linear, both"),
    ("train.label_amplitude='max'", "train.label_amplitude must be a number or 'batch_max'"),
    ("continual.tail_fraction=0", r"continual.tail_fraction must be in \(0, 1\]"),
    ("train.method='hebbian'", "train.method 'hebbian' is not available"),
])
def test_bad_values_are_one_line_errors_naming_the_key(assignment: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        apply_overrides("digits-optical", [assignment])
    assert "\n" not in str(info.value)


def test_integers_become_floats_where_a_number_is_declared_and_nothing_else_is_coerced() -> None:
    cfg = apply_overrides("digits-optical", ["train.lr=1", "train.label_amplitude=3",
                                              "data.n_train=5"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert isinstance(cfg.train.label_amplitude, float)
    assert cfg.data["n_train"] == 5 and isinstance(cfg.data["n_train"], int)
    assert apply_overrides(cfg, ["train.label_amplitude='batch_max'"]).train.label_amplitude \
        == "batch_max"


def test_free_form_sections_merge_key_by_key_and_the_input_is_not_modified() -> None:
    base = load_config("vowels-microwave")
    cfg = apply_overrides(base, ["device.ms_chi=0.6", "data.source='hillenbrand'"])
    assert cfg.device["kind"] == "sim:microwave" and cfg.device["ms_chi"] == 0.6
    assert cfg.data["pad_to"] == 20 and base.device["ms_chi"] == 0.3


def test_a_config_changed_in_place_is_checked_again_where_it_is_used(tiny_config, tmp_path) -> None:
    cfg = load_config(tiny_config)
    cfg.train.epochs = 0
    with pytest.raises(ValueError, match="train.epochs must be >= 1"):
        run(cfg, tmp_path / "r.h5", progress=False)


def test_an_old_run_log_reads_but_refuses_to_resume_in_one_line(tiny_config, tmp_path) -> None:
    """Run logs of the dict-config physnn (checkpoint format 1) load for report and
    compare --from-logs; resuming one says why it cannot."""
    path = tmp_path / "old.h5"
    run(tiny_config, path, progress=False, stop_after=1)
    rec = read_run(path, checkpoint=True)
    assert rec["checkpoint"]["format"] == CHECKPOINT_FORMAT
    state = rec["checkpoint"]["state"]
    old = {**rec, "checkpoint": {"epoch": 1, "wall_time_s": 0.0, **state}}  # format 1 layout
    write_run(path, old)
    assert read_run(path)["config"] == load_config(tiny_config).to_dict()
    with pytest.raises(ValueError, match="checkpoint format 1.*cannot be resumed.*--overwrite"):
        run(tiny_config, path, progress=False)
    assert run(tiny_config, path, progress=False, overwrite=True).record["status"] == "complete"
