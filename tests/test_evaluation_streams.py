"""Evaluation never touches training's noise: how often a run evaluates changes what is
measured, never what is learned (``Device.evaluating``, ``PhysicalNetwork.evaluating``)."""

import copy

import numpy as np
import pytest
import torch

from physnn.core import make_device
from physnn.experiments.continual import run_continual
from physnn.experiments.runlog import read_run
from physnn.experiments.runner import run
from physnn.hardware.emulator import Emulator

NOISY = {
    "kind": "sim:optical", "camera_shape": [8, 8],
    "camera": [{"kind": "shot", "photons": 200.0}, {"kind": "readout", "sigma": 0.05}],
}
WRAPPED = {**NOISY, "camera": [], "outputs": [{"kind": "readout", "sigma": 0.05}],
           "inputs": [{"kind": "readout", "sigma": 0.01}]}


def _x(b: int = 6, n: int = 16) -> torch.Tensor:
    return torch.rand(b, n, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("desc", [NOISY, WRAPPED], ids=["simulator", "wrapped"])
def test_evaluating_leaves_the_training_stream_where_it_was(desc):
    plain, probed = make_device({**desc, "n_in": 16}), make_device({**desc, "n_in": 16})
    x = _x()
    first = plain(x)
    assert torch.equal(probed(x), first)
    with probed.evaluating():
        seen = probed(x)
        again = probed(x)
    with probed.evaluating():
        fresh = probed(x)
    assert not torch.equal(seen, again)  # noise within one evaluation moves on
    assert torch.equal(seen, fresh)  # and each evaluation starts from training's streams
    after = probed(x)
    assert torch.equal(after, plain(x))  # training continues as if nothing happened
    assert torch.equal(after, seen)


def _final_state(path):
    state = read_run(path, checkpoint=True)["checkpoint"]["state"]
    return state["network"], state["trainer"]


def _assert_same(a, b, where: str = "") -> None:
    """Weights, optimiser state and noise streams equal bit for bit; the devices' query
    and FLOP counters (``accounting``, ``flops``) differ by the evaluations, as they should."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            if k not in ("accounting", "flops"):
                _assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            _assert_same(u, v, f"{where}/{i}")
    else:
        assert a == b, where


@pytest.mark.parametrize(("method", "readout"), [("phyll", "both"), ("backprop", "goodness")])
def test_eval_every_changes_what_is_measured_never_what_is_learned(
    tiny_config, tmp_path, method, readout
):
    finals, records = [], []
    for every in (1, 200):
        cfg = copy.deepcopy(tiny_config)
        cfg["train"].update(epochs=2, eval_every=every, method=method, readout=readout,
                            eval_train=True)
        path = tmp_path / f"every{every}.h5"
        records.append(run(cfg, path, progress=False).record)
        finals.append(_final_state(path))
    _assert_same(finals[0], finals[1])
    often, once = (r["metrics"] for r in records)
    assert often["test_acc"][-1] == once["test_acc"][-1]  # the last evaluation too
    assert np.array_equal(often["loss"], once["loss"])
    assert sum(often["eval_queries"]) > sum(once["eval_queries"])  # it did evaluate more


def test_a_continual_run_learns_the_same_whatever_its_evaluation(tiny_config, tmp_path):
    finals = []
    for every in (1, 3):
        cfg = copy.deepcopy(tiny_config)
        cfg["train"]["epochs"] = 3
        cfg["continual"] = {"eval_every": every}
        run_continual(cfg, tmp_path / f"c{every}.h5", arm="phyll", progress=False)
        finals.append(_final_state(tmp_path / f"c{every}.h5"))
    _assert_same(finals[0], finals[1])


def test_a_board_with_state_is_put_back_after_evaluating(tmp_path):
    """The emulator's noise lives on the board: saved before an evaluation, restored after,
    so the serial device draws what the simulator it serves does, evaluation included."""
    desc = {**NOISY, "n_in": 16}
    reference = make_device(desc)
    with Emulator(desc) as emu:
        dev = make_device({"kind": "serial", "port": emu.address, "n_in": 16})
        x = _x()
        assert torch.equal(dev(x), reference(x))
        with dev.evaluating(), reference.evaluating():
            assert torch.equal(dev(x), reference(x))
            assert torch.equal(dev(x), reference(x))
        assert torch.equal(dev(x), reference(x))
        dev.close()
