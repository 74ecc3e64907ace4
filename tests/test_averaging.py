"""train.average: evaluation with an exponential moving average of the digital weights."""

import numpy as np
import pytest
import torch

from physnn.experiments.config import apply_overrides
from physnn.experiments.continual import run_continual
from physnn.experiments.runlog import read_run
from physnn.experiments.runner import build_network, load_data, make_trainer, map_into_domain, run
from physnn.train.averaging import WeightAverage


def _net(cfg):
    data = load_data(cfg, 0)
    return build_network(cfg, data.n_features, 0)


def _linears(net):
    return [b.linear for b in net.blocks]


def _set(net, value):
    with torch.no_grad():
        for b in net.blocks:
            for p in b.linear.parameters():
                p.fill_(value)


def test_average_is_bias_corrected(tiny_config):
    net = _net(tiny_config)
    avg = WeightAverage(_linears(net), 0.9)
    _set(net, 2.0)
    avg.update()
    assert all(torch.equal(a, torch.full_like(a, 2.0)) for a in avg.averaged())  # no pull to 0
    _set(net, 5.0)
    avg.update()
    expected = (0.9 * 0.1 * 2.0 + 0.1 * 5.0) / (1 - 0.9**2)
    for a in avg.averaged():
        torch.testing.assert_close(a, torch.full_like(a, expected))


def test_swapped_in_restores_the_live_weights_even_after_an_error(tiny_config):
    net = _net(tiny_config)
    avg = WeightAverage(_linears(net), 0.5)
    _set(net, 1.0)
    avg.update()
    _set(net, 3.0)  # live weights the average has not seen yet
    with pytest.raises(RuntimeError, match="boom"), avg.swapped_in():
        assert all(torch.all(p == 1.0) for b in net.blocks for p in b.linear.parameters())
        raise RuntimeError("boom")
    assert all(torch.all(p == 3.0) for b in net.blocks for p in b.linear.parameters())


def test_decay_outside_the_unit_interval_is_refused(tiny_config):
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        WeightAverage(_linears(_net(tiny_config)), 1.0)
    with pytest.raises(ValueError, match=r"train.average .* must be in \[0, 1\)"):
        apply_overrides(tiny_config, ["train.average=1.5"])


@pytest.mark.parametrize("method", ["phyll", "backprop"])
def test_the_runner_predicts_with_the_average_and_trains_the_live_weights(
    tiny_config, tmp_path, method
):
    cfg = dict(tiny_config, device={**tiny_config["device"], "camera": []})  # noiseless: re-playable
    cfg["train"] = {**cfg["train"], "average": 0.7, "epochs": 3, "eval_every": 3, "method": method}
    r = run(cfg, tmp_path / "avg.h5", progress=False)
    ck = read_run(tmp_path / "avg.h5", checkpoint=True)["checkpoint"]["state"]

    raw = load_data(cfg, 0)
    net = build_network(cfg, raw.n_features, 0)
    data = map_into_domain(raw, net.blocks[0].device.spec.domain)
    net.load_state_dict(ck["network"])
    trainer = make_trainer(cfg, net, data.n_classes, 0)
    trainer.load_state_dict(ck["trainer"])
    if method == "backprop":  # its read-out head is averaged with the blocks
        assert trainer.readout in trainer.digital_modules()
    avg = WeightAverage(trainer.digital_modules(), 0.7)
    avg.load_state_dict(ck["average"])
    assert avg.steps == 3
    live = trainer.predict(data.x_test)
    with avg.swapped_in():
        averaged = trainer.predict(data.x_test)
    np.testing.assert_array_equal(r.record["predictions"]["test_pred"], averaged.numpy())
    assert not torch.equal(averaged, live)  # so the line above tells them apart
    # the live weights are what training continues from: a run without averaging ends on them
    plain = run({**cfg, "train": {**cfg["train"], "average": 0.0}}, tmp_path / "plain.h5",
                progress=False)
    np.testing.assert_array_equal(plain.record["predictions"]["test_pred"], live.numpy())


def test_extra_modules_are_averaged_with_the_blocks(tiny_config):
    net, head = _net(tiny_config), torch.nn.Linear(4, 2)
    avg = WeightAverage(_linears(net) + [head], 0.5)
    with torch.no_grad():
        head.weight.fill_(1.0)
    avg.update()
    with torch.no_grad():
        head.weight.fill_(3.0)
    avg.update()
    with avg.swapped_in():
        torch.testing.assert_close(head.weight, torch.full_like(head.weight, (0.25 + 1.5) / 0.75))
    assert torch.all(head.weight == 3.0)


@pytest.mark.parametrize(("stops", "method"), [([1], "phyll"), ([1, 1], "phyll"), ([1], "backprop")])
def test_resume_with_an_average_equals_uninterrupted(tiny_config, tmp_path, stops, method):
    train = {**tiny_config["train"], "average": 0.8, "eval_every": 1, "method": method}
    cfg = dict(tiny_config, train=train)
    full = run(cfg, tmp_path / "full.h5", progress=False)
    for n in stops:
        run(cfg, tmp_path / "part.h5", progress=False, stop_after=n)
    resumed = run(cfg, tmp_path / "part.h5", progress=False)
    for key in ("test_acc", "train_acc"):
        np.testing.assert_array_equal(full.record["metrics"][key], resumed.record["metrics"][key])
    np.testing.assert_array_equal(
        full.record["predictions"]["test_pred"], resumed.record["predictions"]["test_pred"]
    )


def test_continual_runs_refuse_an_average(tiny_config, tmp_path):
    cfg = dict(tiny_config, train={**tiny_config["train"], "average": 0.9})
    with pytest.raises(ValueError, match="train.average is for 'physnn train'"):
        run_continual(cfg, tmp_path / "c.h5", arm="phyll", progress=False)
