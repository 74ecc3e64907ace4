"""The typed experiment config: TOML in and out, --set, one-line errors, old run logs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import tomli_w

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
    ("train.lrr=1",
     "unknown config key 'train.lrr'; allowed here: alpha, augment, augment_size, average"),
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


# issue 18: every numeric key finite and in its declared range at load; these were accepted
# (NaN and inf reached the devices, alpha=-4 trained to 0 % with exit status 0)
@pytest.mark.parametrize(("assignment", "message"), [
    ("train.lr=inf", "train.lr must be a finite number > 0, got inf"),
    ("train.lr=1e400", "train.lr must be a finite number > 0, got inf"),
    ("train.alpha=nan", r"train.alpha \(the loss's sharpness.*\) must be a finite number > 0, "
                        "got nan"),
    ("train.alpha=-4", r"train.alpha \(.*\) must be > 0, got -4.0"),
    ("train.label_amplitude=nan", r"train.label_amplitude \(.*\) must be a finite number > 0 "
                                  "or 'batch_max', got nan"),
    ("train.label_amplitude=-1", r"train.label_amplitude \(.*\) must be > 0 or 'batch_max'"),
    ("train.digital_j_per_flop=inf", "train.digital_j_per_flop must be a finite number >= 0"),
    ("train.ff_threshold=-inf", "train.ff_threshold must be a finite number > 0, got -inf"),
    ("train.pat_mismatch=nan", r"train.pat_mismatch must be a finite number in \[0, 1\]"),
    ("seed=-5", r"seed \(seeds the data split.*\) must be in \[0, 4294967295\], got -5"),
    ("seed=4294967296", r"seed \(.*\) must be in \[0, 4294967295\], got 4294967296"),
    ("network.hidden=[200, 0]", r"network.hidden\[1\] \(each block's output width\) must be "
                                ">= 1, got 0"),
    ("train.epochs=99999999999999999999", "train.epochs must be an integer >= 1 within TOML's "
                                          "64 bits, got 99999999999999999999"),
    ("continual.monitor_window=0", "continual.monitor_window must be >= 1, got 0"),
    ("continual.drop_points=nan", r"continual.drop_points \(accuracy points\) must be a finite "
                                  r"number in \(0, 100\]"),
    ("continual.drop_points=101", r"continual.drop_points \(accuracy points\) must be in "
                                  r"\(0, 100\], got 101.0"),
    ("continual.recover_points=-1", r"continual.recover_points .* must be in \[0, 100\]"),
    ("train.lr=1\nx = 2", "config key 'train.lr' must be a number, got '1\\\\nx = 2'"),
])
def test_numbers_must_be_finite_and_in_range_in_one_line(assignment: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        apply_overrides("digits-optical", [assignment])
    assert "\n" not in str(info.value)


# issue 18: already refused before; kept here so they stay refused, by type, not truncated
@pytest.mark.parametrize(("assignment", "message"), [
    ("train.epochs=1.5", "config key 'train.epochs' must be an integer, got 1.5 (float)"),
    ("train.epochs=true", "config key 'train.epochs' must be an integer, got True (bool)"),
    ("train.epochs=abc", "config key 'train.epochs' must be an integer, got 'abc' (str)"),
    ("train.batch_size=true", "config key 'train.batch_size' must be an integer, got True"),
    ("train.lr=\"1e-3\"", "config key 'train.lr' must be a number, got '1e-3' (str)"),
    ("network.hidden=5", "config key 'network.hidden' must be a list of integers, got 5"),
    ("seed=abc", "config key 'seed' must be an integer, got 'abc' (str)"),
    ("train..lr=1", "--set expects KEY=VALUE (e.g. train.lr=1e-3), got 'train..lr=1'"),
])
def test_wrong_types_are_refused_not_coerced(assignment: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        apply_overrides("digits-optical", [assignment])
    assert "\n" not in str(info.value)


def _numeric_keys(cls: type, prefix: str = "") -> set[str]:
    """The dotted keys of ``cls`` (a config dataclass) whose type holds an int or a float."""
    import dataclasses
    import typing

    out = set()
    for key, tp in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(tp):
            out |= _numeric_keys(tp, f"{prefix}{key}.")  # type: ignore[arg-type]
        elif {int, float} & set(typing.get_args(tp) or (tp,)) - {bool}:
            out.add(prefix + key)
        elif any({int, float} & set(typing.get_args(a)) for a in typing.get_args(tp)):
            out.add(prefix + key)  # list[int]
    return out


def test_every_numeric_key_has_exactly_one_declared_range() -> None:
    """issue 18: a new numeric setting (in a config section or in LocalRuleSettings) cannot
    slip in without a range: RANGES must list it."""
    from physnn.experiments.config_checks import RANGES

    keys = _numeric_keys(ExperimentConfig)
    assert {"seed", "network.hidden", "train.alpha", "train.label_amplitude",
            "continual.drop_points"} <= keys
    assert keys == set(RANGES)


@pytest.mark.parametrize(("content", "message"), [
    (b'name = "x"\n[train]\nalpha = \xff\n',
     "is not UTF-8 text: byte 0xff at line 3, column 9 cannot be decoded; save it as UTF-8"),
    (b'name = "x"\n[train]\nlr = = 3\n',
     r"is not valid TOML: Invalid value \(at line 3, column 6\)"),
])
def test_a_config_file_that_is_not_utf8_or_not_toml_is_one_line(
        tmp_path: Path, content: bytes, message: str) -> None:
    """issue 18: it was a UnicodeDecodeError or TOMLDecodeError traceback."""
    path = tmp_path / "bad.toml"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        load_config(path)
    assert str(info.value).startswith(f"config {path} ") and "\n" not in str(info.value)


def test_a_seed_given_to_run_is_checked_like_the_configs(tiny_config, tmp_path) -> None:
    """issue 18: run(seed=-5) was torch's 'expected non-negative integer'; seed=1.5 was
    truncated to 1."""
    with pytest.raises(ValueError, match=r"seed \(.*\) must be in \[0, 4294967295\], got -5"):
        run(tiny_config, tmp_path / "r.h5", seed=-5, progress=False)
    with pytest.raises(ValueError, match="config key 'seed' must be an integer, got 1.5"):
        run(tiny_config, tmp_path / "r.h5", seed=1.5, progress=False)  # type: ignore[arg-type]
    assert not (tmp_path / "r.h5").exists()


def test_the_docs_state_every_declared_range() -> None:
    """issue 18: docs/getting-started.md's table is the user's view of RANGES; it must not
    drift from it."""
    from physnn.experiments.config_checks import RANGES

    text = (Path(__file__).parents[1] / "docs" / "getting-started.md").read_text()
    rows = {line.split("|")[1].strip(" `"): line for line in text.splitlines()
            if line.startswith("| `")}
    for key, allowed in RANGES.items():
        assert key in rows, f"docs/getting-started.md: no row for {key}"
        assert f"| `{allowed.text()}` |" in rows[key], (key, allowed.text(), rows[key])


# issue 19: a run whose device or data were overridden is not written under the bare preset name
def test_run_label_names_device_and_data_overrides():
    from physnn.experiments.config import run_label

    assert run_label("digits-optical", ["train.lr=1e-3", "network.hidden=[8]"]) == "digits-optical"
    assert run_label("vowels-microwave", [
        "data.source=hillenbrand", "data.path=/data/hillenbrand", "data.subset=momeni2023",
    ]) == "vowels-microwave+source=hillenbrand,path=hillenbrand,subset=momeni2023"
    shape = run_label("digits-optical", ["device.camera_shape=[6, 6]"])
    assert shape == "digits-optical+camera_shape=6,6"
    long = run_label("x", ["data.path=" + "a" * 200])
    assert len(long) < 70 and long != run_label("x", ["data.path=" + "a" * 199])
    assert run_label("x", ["device.kind=serial"], "bench-1") == "bench-1"
    for bad in ("", "a/b", ".."):
        with pytest.raises(ValueError, match="--name must be a plain folder name"):
            run_label("x", [], bad)


def test_two_experiments_never_share_a_folder(tmp_path, tiny_config):
    from physnn.experiments.summary import train

    cfg = tmp_path / "tiny.toml"
    tiny_config["name"] = "tiny"
    tiny_config["train"]["epochs"] = 1
    cfg.write_text(tomli_w.dumps(tiny_config))
    kw = dict(out=tmp_path / "runs", progress=False, threads=1)
    a = train(cfg, **kw)
    b = train(cfg, overrides=["device.camera_shape=[6, 6]"], **kw)
    c = train(cfg, overrides=["device.camera_shape=[6, 6]"], name="mine", **kw)
    assert (a.name, b.name, c.name) == ("tiny", "tiny+camera_shape=6,6", "mine")
    for s in (a, b, c):
        assert (tmp_path / "runs" / s.name / "seed0.h5").is_file()
    assert b.results[0].record["config"]["device"]["camera_shape"] == [6, 6]


def test_a_config_lists_only_what_it_changes_on_its_base(tmp_path: Path) -> None:
    """A ``base`` (a preset or a file, relative to the file naming it) is resolved first, then
    the file's own tables merge on top; free-form tables still merge key by key."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "mid.toml").write_text(
        'base = "vowels-microwave"\n[device]\nms_chi = 0.4\n[train]\nepochs = 7\n')
    (tmp_path / "sub" / "top.toml").write_text('base = "../mid.toml"\nname = "top"\n'
                                               '[train]\nlr = 1e-3\n')
    got = load_config(tmp_path / "sub" / "top.toml")
    want = load_config("vowels-microwave").merged(
        {"name": "top", "device": {"ms_chi": 0.4}, "train": {"epochs": 7, "lr": 1e-3}})
    assert got.to_dict() == want.to_dict()
    assert got.device["kind"] == "sim:microwave" and "base" not in got.to_dict()
    assert load_config({"base": "vowels-microwave", "seed": 3}).seed == 3


@pytest.mark.parametrize(("files", "message"), [
    ({"a.toml": 'base = "b.toml"', "b.toml": 'base = "a.toml"'},
     r"bases form a loop: .*a\.toml -> .*b\.toml -> .*a\.toml$"),
    ({"a.toml": "base = 3"}, r"a base must be a preset name or a \.toml path, got 3$"),
    ({"a.toml": 'base = "no-such-preset"'},
     r"base 'no-such-preset' is neither a preset nor an existing \.toml file"),
    ({"a.toml": 'base = "digits-optical"\n[train]\nlrr = 1.0'}, r"unknown config key 'train\.lrr'"),
])
def test_a_bad_base_is_one_line_naming_it(tmp_path: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=message) as e:
        load_config(tmp_path / "a.toml")
    assert "\n" not in str(e.value)
