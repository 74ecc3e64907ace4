"""The learning rules (phyll, ff, pat, backprop) on one network contract, and the ledger."""

import copy
import mmap
import sys

import numpy as np
import pytest
import torch
from conftest import whole_and_resumed

from physnn.core import make_device
from physnn.core.device import Domain
from physnn.experiments.config import load_config
from physnn.experiments.runner import build_network, make_trainer, run
from physnn.train.backprop import EndToEndSettings, to_domain
from physnn.train.ff import ff_goodness, ff_loss, length_normalise
from physnn.train.ledger import LedgerFlopMeter, PeakMemory, SampledFlops, ledger
from physnn.train.methods import METHODS
from physnn.train.pat import PhysicsAware, rebuildable_description, twin_building_cost


def _cfg(tiny_config, method, **train):
    cfg = copy.deepcopy(tiny_config)
    if method in ("pat", "backprop"):
        train = {"batch_size": 128, **train}  # end-to-end rules take several steps per epoch
    cfg["train"].update(method=method, eval_train=False, epochs=3, **train)
    return load_config(cfg)


def _data(n=96, n_in=74, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, n_in, generator=g)
    x[:, :10] = 0
    y = torch.randint(0, 10, (n,), generator=g)
    return x, y


def test_registry_and_config_validation(tiny_config):
    assert set(METHODS) == {"phyll", "phyll-unsupervised", "ff", "pat", "backprop"}
    bad = copy.deepcopy(tiny_config)
    bad["train"]["method"] = "hebbian"
    with pytest.raises(ValueError, match="allowed"):
        load_config(bad)
    for key, value in (("pat_mismatch", 1.5), ("ff_threshold", 0.0), ("digital_j_per_flop", -1)):
        bad = copy.deepcopy(tiny_config)
        bad["train"][key] = value
        with pytest.raises(ValueError, match=key):
            load_config(bad)


@pytest.mark.parametrize("method", ["ff", "pat", "backprop"])
def test_resume_is_bit_exact(tiny_config, tmp_path, method):
    cfg = _cfg(tiny_config, method)
    full, resumed = whole_and_resumed(cfg, tmp_path)
    for key in ("loss", "test_acc", "train_queries", "eval_queries"):
        np.testing.assert_array_equal(full.record["metrics"][key], resumed.record["metrics"][key])
    a, b = full.record["accounting"], resumed.record["accounting"]
    assert a["digital"] == b["digital"]
    for k in ("flops_train_total", "flops_model_bwd", "queries_train", "energy_train_j"):
        assert a["ledger"][k] == b["ledger"][k], k


def test_pat_with_an_exact_twin_takes_backprops_steps(tiny_config):
    """Same physics, same inputs: the twin's Jacobian is the simulator's, so the updates agree."""
    x, y = _data()
    params = []
    for method in ("backprop", "pat"):
        cfg = _cfg(tiny_config, method)
        net = build_network(cfg, x.shape[1], seed=3)
        trainer = make_trainer(cfg, net, 10, seed=3)
        trainer.train_batch(x, y)
        params.append(torch.cat([p.flatten() for p in net.parameters()]))
    torch.testing.assert_close(params[0], params[1], rtol=1e-5, atol=1e-6)
    # the same twin given as a description (pat_twin), built with each block's n_in and seed
    cfg = _cfg(tiny_config, "pat", pat_twin=copy.deepcopy(tiny_config["device"]))
    net = build_network(cfg, x.shape[1], seed=3)
    make_trainer(cfg, net, 10, seed=3).train_batch(x, y)
    torch.testing.assert_close(torch.cat([p.flatten() for p in net.parameters()]), params[0],
                               rtol=1e-5, atol=1e-6)
    # a mismatched twin (another random cavity) gives different steps
    cfg = _cfg(tiny_config, "pat", pat_mismatch=1.0)
    net = build_network(cfg, x.shape[1], seed=3)
    make_trainer(cfg, net, 10, seed=3).train_batch(x, y)
    mism = torch.cat([p.flatten() for p in net.parameters()])
    assert (mism - params[0]).abs().max() > 1e-4


def test_pat_trains_a_black_box_backprop_refuses_it(tiny_config):
    x, y = _data()
    cfg = _cfg(tiny_config, "backprop")
    net = build_network(cfg, x.shape[1], seed=0)
    for d in net.devices:
        d.differentiable = False  # as real hardware: no forward_with_grad
    with pytest.raises(ValueError, match="differentiable"):
        make_trainer(cfg, net, 10, seed=0)
    with pytest.raises(NotImplementedError):
        net.devices[1].forward_with_grad(torch.rand(2, net.devices[1].spec.n_in))
    pat = PhysicsAware(net, EndToEndSettings(10, lr=1e-2, batch_size=32), torch.Generator())
    before = net.blocks[0].linear.weight.detach().clone()
    losses = [pat.train_epoch(x, y)[0] for _ in range(4)]
    assert losses[-1] < losses[0]
    assert not torch.equal(before, net.blocks[0].linear.weight)
    assert pat.flops.split("model")[0] > 0 and pat.flops.split("model")[1] > 0
    with pytest.raises(ValueError, match="2 blocks"):
        PhysicsAware(net, EndToEndSettings(10), torch.Generator(), twin=["sim:optical"])
    with pytest.raises(ValueError, match="maps"):
        PhysicsAware(net, EndToEndSettings(10), torch.Generator(), twin="sim:optical")


def test_twin_description_rebuilds_the_device():
    dev = make_device({"kind": "sim:acoustic", "n_in": 6, "grid": [8, 8], "n_scatterers": 1,
                       "window_steps": 64, "transient_steps": 32, "seed": 4,
                       "noise": [{"kind": "readout", "sigma": 0.0}]})
    twin = make_device(rebuildable_description(dev))
    x = torch.rand(3, 6, dtype=torch.float64)
    torch.testing.assert_close(dev(x), twin(x))
    wrapped = make_device({"kind": "sim:optical", "n_in": 5, "camera_shape": [4, 4],
                           "outputs": [{"kind": "quantize", "bits": 6, "lo": 0, "hi": 4}]})
    again = make_device(rebuildable_description(wrapped))
    x = torch.rand(2, 5)
    torch.testing.assert_close(wrapped(x), again(x))


def test_twin_building_cost_is_charged():
    dev = make_device({"kind": "sim:optical", "n_in": 5, "camera_shape": [4, 4]})
    assert twin_building_cost(dev) == (0, 0)  # a simulator costs nothing to build
    dev.calibration_queries, dev.fit_flops = 300, 12345
    assert twin_building_cost(dev) == (300, 12345)


def test_ff_pieces():
    h = torch.tensor([[1.0, -2.0, 3.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(ff_goodness(h), torch.tensor([10 / 3, 0.0]))
    n = length_normalise(h)
    torch.testing.assert_close(n[0].norm(), torch.tensor(1.0))
    assert torch.equal(n[1], torch.zeros(3))
    good = ff_loss(torch.tensor([5.0]), torch.tensor([0.0]), threshold=2.0)
    bad = ff_loss(torch.tensor([0.0]), torch.tensor([5.0]), threshold=2.0)
    assert good < 0.2 < bad


def test_local_rules_learn(tiny_config):
    x, y = _data(n=200)
    for method, extra in (("ff", {"lr": 5e-3, "ff_threshold": 0.5}), ("phyll", {})):
        cfg = _cfg(tiny_config, method, **extra)
        net = build_network(cfg, x.shape[1], seed=1)
        trainer = make_trainer(cfg, net, 10, seed=1)
        losses = [trainer.train_epoch(x, y) for _ in range(4)]
        assert losses[-1][0] < losses[0][0], method
        assert trainer.predict(x[:7]).shape == (7,)


def test_to_domain_matches_the_block_mapping_and_passes_gradients(tiny_config):
    h = torch.randn(5, 9, requires_grad=True)
    net = build_network(load_config(tiny_config), 74, seed=0)
    dom = net.blocks[1].device.spec.domain
    torch.testing.assert_close(to_domain(h, dom), net.blocks[0].to_next(h, dom))
    to_domain(h, dom).square().sum().backward()
    assert h.grad.abs().sum() > 0
    levels = Domain(levels=(0, 1, 2, 3))
    h2 = h.detach().clone().requires_grad_()
    z = to_domain(h2, levels)
    assert set(z.detach().unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    z.sum().backward()  # straight through the snap
    assert h2.grad.abs().sum() > 0


def test_flop_meter_counts_pointwise_and_splits_backward():
    m = LedgerFlopMeter()
    a = torch.randn(100, 50, requires_grad=True)
    with m.count("train"):
        a.relu().sum().backward()
    fwd, bwd = m.split("train")
    assert fwd >= 100 * 50 * 2  # relu + sum
    assert bwd > 0
    lin = torch.nn.Linear(50, 20)
    with m.count("eval"):
        lin(a.detach())
    assert m.totals["eval"] >= 2 * 100 * 50 * 20
    state = m.state_dict()
    m2 = LedgerFlopMeter()
    m2.load_state_dict(state)
    assert m2.split("train") == (fwd, bwd) and m2.totals["eval"] == m.totals["eval"]


def test_peak_memory_sees_a_large_allocation():
    mem = PeakMemory("cpu", interval_s=0.001).start()
    big = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    big += 1
    peak = mem.stop()
    del big
    assert peak >= 48 * 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MADV_PAGEOUT is Linux's")
def test_peak_memory_sees_an_allocation_while_mapped_file_pages_are_reclaimed(tmp_path):
    """CI once read a peak of 0 for 64 MiB: the kernel had reclaimed file pages (libraries)
    during the measure, and the whole RSS fell by more than the tensor added."""
    size = 128 * 2**20
    with open(tmp_path / "f", "wb+") as f:
        f.truncate(size)
        m = mmap.mmap(f.fileno(), size)
        m.write(b"x" * size)  # resident file pages, counted in the RSS
        m.flush()
        mem = PeakMemory("cpu").start()
        try:
            m.madvise(21)  # MADV_PAGEOUT: reclaim them, as memory pressure would
        except OSError:
            pytest.skip("this kernel has no MADV_PAGEOUT")
        big = torch.ones(64 * 2**20 // 4)
        big += 1
        peak = mem.stop()
        del big
        m.close()
    assert peak >= 48 * 2**20


def test_ledger_energy_is_queries_times_joules_plus_flops_times_joules(tiny_config, tmp_path):
    cfg = _cfg(tiny_config, "pat", digital_j_per_flop=2e-12)
    r = run(cfg, tmp_path / "p.h5", progress=False)
    led = r.record["accounting"]["ledger"]
    assert led["queries_train"] == r.record["metrics"]["train_queries"].sum() > 0
    assert led["flops_model_fwd"] > 0 and led["flops_model_bwd"] > 0  # the twin's cost
    e_dev = led["device_j_per_query"] * led["queries_train"]
    assert led["energy_train_j"] == pytest.approx(e_dev + 2e-12 * led["flops_train_total"])
    assert led["flops_train_total"] == pytest.approx(
        led["flops_train_fwd"] + led["flops_train_bwd"] + led["flops_model_fwd"]
        + led["flops_model_bwd"]
    )
    assert led["wall_time_s"] > 0
    assert led["peak_memory_method"] in ("rss_peak_kernel", "rss_sampled")
    assert led["method"] == "pat"
    # backprop's forward pass is the device's: only the backward through it is digital
    b = run(_cfg(tiny_config, "backprop"), tmp_path / "b.h5", progress=False)
    bl = b.record["accounting"]["ledger"]
    assert bl["flops_model_fwd"] == 0 and bl["flops_model_bwd"] > 0
    assert bl["flops_train_total"] < led["flops_train_total"]
    # phyll: no model at all
    p = run(_cfg(tiny_config, "phyll"), tmp_path / "l.h5", progress=False)
    pl = p.record["accounting"]["ledger"]
    assert pl["flops_model_fwd"] == pl["flops_model_bwd"] == 0 and pl["flops_train_bwd"] > 0


def test_ledger_function_by_hand():
    class Dev:
        def __init__(self, samples, energy):
            self.accounting = type("A", (), {"samples": samples, "energy_j": energy})()

    m = LedgerFlopMeter()
    m.totals.update(train=1000, model=500, eval=10)
    m.backward.update(train=400, model=300)
    led = ledger(
        method="pat", metrics={"train_queries": [60, 60], "eval_queries": [0, 30]},
        devices=[Dev(75, 7.5), Dev(75, 7.5)], flops=m, j_per_flop=1e-3, wall_time_s=1.0,
        peak_memory_bytes=5, peak_memory_method="x", twin_calibration_queries=10, twin_fit_flops=100,
    )
    assert led["device_j_per_query"] == pytest.approx(0.1)
    assert led["flops_train_total"] == 1600  # train + model + fit
    assert led["energy_device_train_j"] == pytest.approx(0.1 * (120 + 10))
    assert led["energy_digital_train_j"] == pytest.approx(1.6)
    assert led["flops_bwd"] == 700 and led["flops_fwd"] == 810


def test_sampled_flops_counts_exactly_then_extrapolates_per_sample():
    lin = torch.nn.Linear(8, 8)
    exact, sampled = LedgerFlopMeter(), LedgerFlopMeter()
    counter = SampledFlops(sampled, "model", every=3)
    for i, n in enumerate((4, 4, 2, 4, 6)):
        x = torch.randn(n, 8, requires_grad=True)
        with exact.count("model"):
            lin(x).sum().backward()
        with counter.count("block1", n):
            lin(x).sum().backward()
        # FLOPs per sample of a Linear are constant: extrapolation is exact here
        assert sampled.split("model") == exact.split("model"), i
    assert counter.calls["block1"] == 5
    again = SampledFlops(LedgerFlopMeter(), "model", every=3)
    again.load_state_dict(counter.state_dict())
    assert again.rate == counter.rate and again.calls == counter.calls
    with pytest.raises(ValueError, match="every"):
        SampledFlops(sampled, "model", every=0)


def test_sampled_flops_by_default_counts_each_call_size_once():
    """``every=None``: exact for a fixed op sequence with a per-call constant part (the
    per-sample rate of ``every=k`` would miss it on a batch of another size)."""
    lin = torch.nn.Linear(8, 8)
    exact, sampled = LedgerFlopMeter(cache=False), LedgerFlopMeter()
    counter = SampledFlops(sampled, "model")
    measured = []
    for n in (4, 4, 2, 4, 2, 6):
        x = torch.randn(n, 8, requires_grad=True)
        with exact.count("model"):
            (lin(x).sum() + lin.weight.square().sum()).backward()  # the penalty: per call
        before = dict(counter.exact)
        with counter.count("block1", n):
            (lin(x).sum() + lin.weight.square().sum()).backward()
        measured.append(counter.exact != before)
        assert sampled.split("model") == exact.split("model"), n
    assert measured == [True, False, True, False, False, True]
    again = SampledFlops(LedgerFlopMeter(), "model")
    again.load_state_dict(counter.state_dict())
    assert again.exact == counter.exact
