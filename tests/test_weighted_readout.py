"""train.readout = "weighted": the blocks' goodness with weights fitted on the training split."""

import copy

import numpy as np
import pytest
import torch
from conftest import refused_in_one_line, whole_and_resumed

from physnn.experiments.config import load_config
from physnn.experiments.runner import TrainSession, run
from physnn.experiments.sweep import trial_figures
from physnn.train.methods import evaluation
from physnn.train.readout import BlockWeights, cross_validated_accuracy, stratified_folds


def test_block_weights_learn_to_trust_the_informative_block():
    gen = torch.Generator().manual_seed(0)
    n, c = 600, 5
    y = torch.randint(0, c, (n,), generator=gen)
    good = 0.3 * torch.randn(n, c, generator=gen)
    good[torch.arange(n), y] += 1.0  # block 0 favours the true label
    loud = 3.0 * torch.randn(n, c, generator=gen)  # block 1: loud and uninformative
    s = torch.stack([good, loud], 2)
    tr, te = slice(0, 400), slice(400, None)
    fit = BlockWeights().fit(s[tr], y[tr])
    assert fit.weight is not None and fit.weight[0] > 5 * fit.weight[1].abs()
    weighted = (fit.predict(s[te]) == y[te]).float().mean()
    summed = (s[te].sum(2).argmax(1) == y[te]).float().mean()
    assert weighted > 0.95 and summed < 0.6
    with pytest.raises(RuntimeError, match="before fit"):
        BlockWeights().predict(s)


def test_per_block_scores_add_up_to_the_summed_scores(tiny_config):
    s = TrainSession(load_config(tiny_config), 0, "cpu", progress=False)
    s.trainer.train_epoch(s.data.x_train, s.data.y_train)
    x = s.data.x_test[:50]
    with evaluation(s.trainer, s.net):
        summed = s.trainer.scores(x)
    with evaluation(s.trainer, s.net):  # the same noise draws again
        per = s.trainer.scores(x, per_block=True)
    assert per.shape == (50, 10, 2)
    torch.testing.assert_close(per.sum(2), summed)


def test_a_weighted_run_measures_what_a_goodness_run_does(tiny_config, tmp_path):
    cfg = copy.deepcopy(tiny_config)
    cfg["train"].update(epochs=2, eval_every=1, eval_train=False)
    plain = run(cfg, tmp_path / "goodness.h5", progress=False).record["metrics"]
    cfg["train"]["readout"] = "weighted"
    rec = run(cfg, tmp_path / "weighted.h5", progress=False).record
    m = rec["metrics"]
    # the same training and the same test measurements: the plain sum is the goodness run's
    np.testing.assert_array_equal(m["test_acc_summed"], plain["test_acc"])
    np.testing.assert_array_equal(m["eval_queries"], plain["eval_queries"])
    np.testing.assert_array_equal(m["loss"], plain["loss"])
    n_train = 1797 - len(rec["predictions"]["test_true"])  # the digits' training split
    assert list(m["readout_fit_queries"]) == [n_train * 10 * 2] * 2  # every label, both blocks
    assert m["readout_block_weights"].shape == (2, 2) and np.isfinite(m["readout_block_weights"]).all()
    assert rec["predictions"]["test_pred"].shape == rec["predictions"]["test_true"].shape
    acc = (rec["predictions"]["test_pred"] == rec["predictions"]["test_true"]).mean()
    assert acc == pytest.approx(m["test_acc"][-1])
    assert rec["accounting"]["digital"]["flops_readout"] > 0
    # a sweep can select by either: its table carries both
    figs = trial_figures(tmp_path / "weighted.h5", rec)
    assert (figs["test_acc"], figs["test_acc_summed"]) == (m["test_acc"][-1], m["test_acc_summed"][-1])


def test_resumed_weighted_run_equals_uninterrupted(tiny_config, tmp_path):
    cfg = copy.deepcopy(tiny_config)
    cfg["train"].update(epochs=3, eval_every=1, readout="weighted", ensemble=2)
    full, resumed = whole_and_resumed(cfg, tmp_path)
    for key in ("test_acc", "train_acc", "test_acc_summed", "readout_block_weights", "eval_queries"):
        np.testing.assert_array_equal(full.record["metrics"][key], resumed.record["metrics"][key])


def test_weighted_is_refused_for_rules_without_goodness(tiny_config):
    refused_in_one_line(tiny_config, {"readout": "weighted", "method": "backprop"},
                        r"train.readout = 'weighted' weighs the blocks' goodness: "
                        r"train.method phyll or ff, not 'backprop'")


def test_folds_are_stratified_and_cross_validation_sees_over_fitting():
    y = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1, 2, 2])
    assert stratified_folds(y, 2).tolist() == [0, 0, 1, 1, 0, 0, 1, 1, 0, 1]
    gen = torch.Generator().manual_seed(1)
    n, c = 400, 4
    y = torch.randint(0, c, (n,), generator=gen)
    good = 0.3 * torch.randn(n, c, generator=gen)
    good[torch.arange(n), y] += 1.0
    s = torch.stack([good, 3.0 * torch.randn(n, c, generator=gen)], 2)
    assert cross_validated_accuracy(s, y) > 0.9  # the weights generalise: block 1 turned down
    noise = torch.randn(n, c, 2, generator=gen)  # nothing to learn: chance on held-out folds
    assert cross_validated_accuracy(noise, y) < 0.4


def test_weighted_or_sum_predicts_with_the_plain_sum_unless_the_weights_cross_validate(
        tiny_config, tmp_path):
    cfg = copy.deepcopy(tiny_config)
    cfg["train"].update(epochs=2, eval_every=1, readout="weighted")
    weighted = run(cfg, tmp_path / "weighted.h5", progress=False).record["metrics"]
    cfg["train"]["readout"] = "weighted-or-sum"
    rec = run(cfg, tmp_path / "either.h5", progress=False).record
    m = rec["metrics"]
    for key in ("loss", "test_acc_summed", "readout_block_weights", "eval_queries"):
        np.testing.assert_array_equal(m[key], weighted[key])  # the same run, measured alike
    summed = m["readout_summed"]
    assert set(summed.tolist()) <= {0.0, 1.0}
    np.testing.assert_array_equal(m["test_acc"], np.where(summed == 1, m["test_acc_summed"],
                                                          weighted["test_acc"]))
    acc = (rec["predictions"]["test_pred"] == rec["predictions"]["test_true"]).mean()
    assert acc == pytest.approx(m["test_acc"][-1])
    refused_in_one_line(tiny_config, {"readout": "weighted-or-sum", "method": "backprop"},
                        r"train.readout = 'weighted-or-sum' weighs the blocks' goodness")
