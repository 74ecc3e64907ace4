"""The raw-audio experiments (issue 20): backprop training the wave cavity's own speed, and
PhyLL on a fixed cavity with the label played as tone bursts. Tiny grids and few samples."""

import numpy as np
import pytest
import torch
from conftest import HILLENBRAND, needs_hillenbrand

from physnn import make_device
from physnn.experiments import load_config, run
from physnn.experiments.runlog import read_run
from physnn.train.backprop import Backprop, EndToEndSettings
from physnn.train.network import Block, PhysicalNetwork

TINY = {"kind": "sim:acoustic-wave", "n_in": 40, "sample_rate": 4000, "grid": [12, 16],
        "dx": 0.04, "sponge_cells": 2, "readout": "fraction", "checkpoint_steps": 64}
"""A cavity whose query runs 172 time steps (10 ms)."""


def _net(desc: dict, hidden: int = 3, seed: int = 0) -> PhysicalNetwork:
    gen = torch.Generator().manual_seed(seed)
    return PhysicalNetwork([Block(make_device(desc), hidden, skip=False, gen=gen)])


def _toy(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes of tone bursts: a low and a high frequency, random phase."""
    g = torch.Generator().manual_seed(1)
    t = torch.arange(40) / 4000
    y = torch.arange(n) % 2
    f = torch.where(y == 0, 300.0, 900.0).unsqueeze(1)
    phase = 2 * torch.pi * torch.rand(n, 1, generator=g)
    return (0.9 * torch.sin(2 * torch.pi * f * t + phase)).float(), y


def test_device_hook_defaults_and_the_wave_speed_in_the_state():
    optical = make_device({"kind": "sim:optical", "n_in": 4, "camera_shape": [2, 2]})
    assert optical.trainable_tensors() == []
    assert "trainable" not in optical.state_dict()
    dev = make_device(TINY)
    (speed,) = dev.trainable_tensors()
    assert speed is dev.wave_speed and speed.requires_grad
    state = dev.state_dict()
    with torch.no_grad():
        speed.fill_(300.0)
    dev.load_state_dict(state)
    assert dev.wave_speed is speed and float(speed.detach().max()) == pytest.approx(343.0)  # in place
    assert make_device({**TINY, "design_region": []}).trainable_tensors() == []


def test_backprop_trains_the_wave_speed_and_the_loss_goes_down():
    torch.manual_seed(0)
    net = _net(TINY)
    dev = net.blocks[0].device
    before = dev.wave_speed.detach().clone()
    rule = Backprop(net, EndToEndSettings(n_classes=2, lr=2e-2, batch_size=0,
                                          train_device=True, device_lr=5.0),
                    torch.Generator().manual_seed(2))
    x, y = _toy()
    losses = [rule.train_batch(x, y) for _ in range(6)]
    assert losses[-1] < losses[0]
    moved = (dev.wave_speed.detach() - before).abs()
    assert float(moved.max()) > 1.0  # m/s: Adam's steps of device_lr reached the cavity
    lo, hi = dev.config.speed_range
    assert float(dev.wave_speed.detach().min()) >= lo and float(dev.wave_speed.detach().max()) <= hi
    assert dev.describe()["design_speed"] == dev.wave_speed.detach().tolist()
    assert rule.flops.backward["model"] > 0  # block 0 is differentiated now, and charged


def test_without_train_device_the_speed_stays():
    net = _net(TINY)
    before = net.blocks[0].device.wave_speed.detach().clone()
    rule = Backprop(net, EndToEndSettings(n_classes=2, lr=2e-2, batch_size=0),
                    torch.Generator().manual_seed(2))
    x, y = _toy()
    rule.train_batch(x, y)
    assert torch.equal(net.blocks[0].device.wave_speed.detach(), before)


def test_train_device_refuses_a_device_with_nothing_to_train():
    net = _net({**TINY, "design_region": []})
    with pytest.raises(ValueError, match="block 0's device sim:acoustic-wave has no trainable") as e:
        Backprop(net, EndToEndSettings(n_classes=2, train_device=True), torch.Generator())
    assert "\n" not in str(e.value)


def test_config_checks_train_device_in_one_line():
    with pytest.raises(ValueError, match="train_device = true needs train.method = 'backprop'"):
        load_config("vowels-wave-backprop").merged({"train": {"method": "pat"}})
    with pytest.raises(ValueError, match="device_lr"):
        load_config("vowels-wave-backprop").merged({"train": {"device_lr": 0.0}})
    with pytest.raises(ValueError, match="train_device"):
        load_config("digits-optical").merged({"train": {"train_device": 1}})


def test_label_tones_are_a_burst_before_the_waveform():
    dev = make_device({**TINY, "n_in": 43, "label_tones": [500, 1000, 1500], "label_s": 0.005})
    cfg = dev.config
    assert (cfg.n_label, cfg.label_samples, cfg.n_samples) == (3, 20, 60)
    x = torch.zeros(3, 43, dtype=torch.float64)
    x[:, 3:] = 0.5
    x[torch.arange(3), torch.arange(3)] = 1.0
    drive = dev.drive(x)
    assert drive.shape == (3, 60) and torch.equal(drive[:, 20:], x[:, 3:])
    assert torch.allclose(drive[:, :20], dev.label_bursts)
    e = dev(x.float())
    assert not torch.allclose(e[0], e[1], rtol=1e-3)  # each label its own probe pattern
    for bad, match in [({"label_tones": [3000]}, "above the pass band"),
                       ({"label_tones": [100.0] * 40}, "leave no waveform"),
                       ({"label_tones": [300], "label_s": 0}, "label_s")]:
        with pytest.raises(ValueError, match=match):
            make_device({**TINY, **bad})


def _tiny_experiment(name: str, tmp_path, **train) -> dict:
    """A preset shrunk to seconds: 2 speaker groups' worth of women only, 40 samples at 4 kHz,
    a 12 x 16 grid of 4 cm cells."""
    return {
        "name": name, "seed": 0,
        "data": {"path": str(HILLENBRAND), "groups": ["w"], "length": 40, "sample_rate": 4000,
                 "test_fraction": 0.5},
        "device": {**{k: v for k, v in TINY.items() if k not in ("kind", "n_in")},
                   "checkpoint_steps": 64},
        "train": {"epochs": 2, "eval_every": 1, **train},
    }


@needs_hillenbrand
def test_wave_backprop_resumes_bit_identically(tmp_path):
    cfg = load_config("vowels-wave-backprop").merged(
        _tiny_experiment("vowels-wave-backprop", tmp_path, batch_size=64))
    cfg = cfg.merged({"data": {"vowels": ["ae", "iy"]}})
    whole = run(cfg, tmp_path / "whole.h5", progress=False)
    run(cfg, tmp_path / "split.h5", progress=False, stop_after=1)
    split = run(cfg, tmp_path / "split.h5", progress=False)
    a, b = whole.record, split.record
    assert a["devices"] == b["devices"]
    assert (np.asarray(a["devices"][0]["design_speed"]) != 343.0).any()  # trained, and logged
    np.testing.assert_array_equal(a["metrics"]["loss"], b["metrics"]["loss"])
    np.testing.assert_array_equal(a["metrics"]["test_acc"], b["metrics"]["test_acc"])
    state = read_run(tmp_path / "split.h5", checkpoint=True)["checkpoint"]["state"]["network"]
    extra = [v for k, v in state.items() if k.endswith("_extra_state")]
    assert extra and all("trainable" in v["device"] for v in extra)  # the speed is checkpointed


@needs_hillenbrand
def test_tiny_wave_phyll_trains_end_to_end(tmp_path):
    cfg = load_config("vowels-wave-phyll").merged(
        _tiny_experiment("vowels-wave-phyll", tmp_path, inner_steps=3))
    cfg = cfg.merged({"device": {"label_tones": [500, 800, 1100], "label_s": 0.005,
                                 "n_probes": 3}})
    r = run(cfg, tmp_path / "phyll.h5", progress=False)
    m = r.record["metrics"]
    assert r.record["status"] == "complete" and 0.0 <= r.test_acc <= 1.0
    assert m["loss"].shape == (2, 1) and np.isfinite(m["loss"]).all()
    n_train = int(m["train_queries"][0]) // 2  # a positive and a negative per sample
    assert n_train > 0 and r.record["devices"][0]["label_tones"] == [500.0, 800.0, 1100.0]
    speed = np.asarray(r.record["devices"][0]["design_speed"])
    assert (speed == 343.0).all()  # PhyLL never touches the cavity
