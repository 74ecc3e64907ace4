"""train.ensemble: M networks on the same devices, scored by their summed goodness."""

import copy

import numpy as np
import pytest
import torch
from conftest import refused_in_one_line, whole_and_resumed

from physnn.experiments.config import load_config
from physnn.experiments.runner import TrainSession, run
from physnn.train.ensemble import Ensemble
from physnn.train.methods import evaluation


def session(cfg: dict) -> TrainSession:
    return TrainSession(load_config(cfg), 0, "cpu", progress=False)


def weights(net: torch.nn.Module) -> list[torch.Tensor]:
    return [b.linear.weight.detach().clone() for b in net.blocks]


@pytest.fixture
def noiseless(tiny_config):
    cfg = copy.deepcopy(tiny_config)
    cfg["device"]["camera"] = []  # no noise: member 0's measurements cannot depend on turns
    return cfg


@pytest.mark.parametrize("method", ["phyll", "ff"])
def test_member_zero_trains_as_the_single_network(noiseless, method):
    noiseless["train"]["method"] = method
    single = session(noiseless)
    noiseless["train"]["ensemble"] = 3
    ens = session(noiseless)
    assert isinstance(ens.trainer, Ensemble) and len(ens.trainer.members) == 3
    assert ens.trainer.members[0].net is ens.net
    for s in (single, ens):
        for _ in range(2):
            s.trainer.train_epoch(s.data.x_train, s.data.y_train)
    for a, b in zip(weights(single.net), weights(ens.net), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the other members are other networks: their own weights and directions, the same devices
    m1, m2 = (m.net for m in ens.trainer.members[1:])
    assert all(b1.device is b0.device for b1, b0 in zip(m1.blocks, ens.net.blocks, strict=True))
    assert not torch.equal(m1.blocks[0].zeta, ens.net.blocks[0].zeta)
    assert not torch.equal(weights(m1)[0], weights(m2)[0])
    assert not torch.equal(weights(m1)[0], weights(ens.net)[0])


def test_predict_is_the_argmax_of_the_members_summed_goodness(tiny_config):
    cfg = copy.deepcopy(tiny_config)
    cfg["train"]["ensemble"] = 3
    s = session(cfg)
    s.trainer.train_epoch(s.data.x_train, s.data.y_train)
    x = s.data.x_test
    dev = s.net.blocks[0].device
    with evaluation(s.trainer, s.net):
        q0 = dev.accounting.samples
        pred = s.trainer.predict(x)
        asked = dev.accounting.samples - q0
    with evaluation(s.trainer, s.net):  # the same noise again: score member by member
        each = [m.scores(x) for m in s.trainer.members]
    assert asked == 3 * 10 * x.shape[0]  # members x labels x samples
    assert torch.equal(pred, sum(each).argmax(1))
    # the members disagree somewhere, so the sum is not any single member's vote
    assert any(not torch.equal(e.argmax(1), each[0].argmax(1)) for e in each[1:])


def test_training_queries_and_digital_work_scale_with_members(tiny_config, tmp_path):
    cfg = copy.deepcopy(tiny_config)
    cfg["train"].update(epochs=1, eval_every=1, eval_train=False)
    one = run(cfg, tmp_path / "one.h5", progress=False).record
    cfg["train"]["ensemble"] = 3
    three = run(cfg, tmp_path / "three.h5", progress=False).record
    for key in ("train_queries", "eval_queries"):
        assert three["metrics"][key][-1] == 3 * one["metrics"][key][-1] > 0, key
    led1, led3 = one["accounting"]["ledger"], three["accounting"]["ledger"]
    assert led3["queries_train"] == 3 * led1["queries_train"]
    assert led3["flops_train_total"] == pytest.approx(3 * led1["flops_train_total"], rel=0.01)


def test_resumed_ensemble_equals_uninterrupted(tiny_config, tmp_path):
    cfg = copy.deepcopy(tiny_config)
    cfg["train"].update(epochs=3, eval_every=3, eval_train=False, ensemble=2, average=0.5)
    full, resumed = whole_and_resumed(cfg, tmp_path)
    for key in ("loss", "test_acc", "train_queries", "eval_queries"):
        np.testing.assert_array_equal(full.record["metrics"][key], resumed.record["metrics"][key])
    np.testing.assert_array_equal(full.record["predictions"]["test_pred"],
                                  resumed.record["predictions"]["test_pred"])
    assert full.record["accounting"]["digital"] == resumed.record["accounting"]["digital"]


def test_a_checkpoint_of_another_ensemble_size_is_refused(tiny_config):
    cfg = copy.deepcopy(tiny_config)
    cfg["train"]["ensemble"] = 2
    state = session(cfg).trainer.state_dict()
    cfg["train"]["ensemble"] = 3
    with pytest.raises(ValueError, match="checkpoint has 2 ensemble members, this run 3"):
        session(cfg).trainer.load_state_dict(state)


@pytest.mark.parametrize(("train", "message"), [
    ({"ensemble": 0}, r"train.ensemble \(.*\) must be >= 1, got 0"),
    ({"ensemble": 2, "method": "backprop"},
     r"train.ensemble = 2 applies to train.method phyll or ff .*not 'backprop'"),
    ({"ensemble": 2, "readout": "both"},
     r"train.ensemble = 2 is scored by the members' summed goodness; set train.readout = "
     r"'goodness', 'weighted' or 'weighted-or-sum' \(got 'both'\)"),
])
def test_bad_ensemble_settings_are_refused_in_one_line(tiny_config, train, message):
    refused_in_one_line(tiny_config, train, message)
