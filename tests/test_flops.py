"""FLOPs charged from the per-signature cache equal counting every step with torch's counter."""

import copy

import pytest
import torch

from physnn.experiments.config import load_config
from physnn.experiments.runner import build_network, make_trainer
from physnn.train.flops import FlopMeter, signature
from physnn.train.ledger import LedgerFlopMeter
from physnn.train.readout import neutral_features


def _data(n: int = 100, n_in: int = 74, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, n_in, generator=g)
    x[:, :10] = 0
    return x, torch.randint(0, 10, (n,), generator=g)


def _run(cfg, cache: bool) -> tuple[dict[str, int], int, list[torch.Tensor]]:
    x, y = _data()
    net = build_network(cfg, x.shape[1], seed=1)
    trainer = make_trainer(cfg, net, 10, seed=1)
    trainer.flops.cache = cache
    for _ in range(3):
        trainer.train_epoch(x, y)
    trainer.predict(x[:37])
    trainer.predict(x)
    neutral_features(net, x, 10, flops=trainer.flops)
    params = [p.detach().clone() for m in trainer.digital_modules() for p in m.parameters()]
    return trainer.flops.state_dict(), trainer.flops.measurements, params


@pytest.mark.parametrize("method,batch_size", [
    ("phyll", 0), ("phyll", 40), ("ff", 40), ("backprop", 32), ("pat", 32),
])
def test_cached_counts_equal_counting_every_step(tiny_config, method: str, batch_size: int) -> None:
    cfg = copy.deepcopy(tiny_config)
    cfg["train"].update(method=method, batch_size=batch_size)
    cfg = load_config(cfg)
    exact, n_exact, p_exact = _run(cfg, cache=False)
    cached, n_cached, p_cached = _run(cfg, cache=True)
    assert cached == exact  # every phase, forward and backward parts (":backward" keys)
    assert exact["train"] > 0 and exact["eval"] > 0 and exact["train:backward"] > 0
    if method in ("backprop", "pat"):
        assert exact["model"] > 0
    assert n_cached < n_exact  # the counter ran only for new signatures
    for a, b in zip(p_exact, p_cached, strict=True):
        assert torch.equal(a, b)  # counting never changes the arithmetic


def test_a_key_is_counted_once_and_a_new_signature_is_counted_again() -> None:
    lin = torch.nn.Linear(8, 4)
    m = LedgerFlopMeter()
    for n in (5, 5, 5, 7):
        x = torch.randn(n, 8)
        with m.count("eval", signature(x)):
            lin(x)
    assert m.measurements == 2
    assert m.totals["eval"] == 2 * 8 * 4 * (5 + 5 + 5 + 7)  # addmm: the product's FLOPs
    plain = FlopMeter()
    with plain.count("eval", "k"):
        lin(torch.randn(3, 8))
    with plain.count("eval", "k"):
        lin(torch.randn(3, 8))
    assert plain.totals["eval"] == 2 * 2 * 8 * 4 * 3 and plain.measurements == 1


def test_without_a_key_every_block_is_counted() -> None:
    m = LedgerFlopMeter()
    for n in (3, 9):  # a data-dependent block: the same call site, different work
        with m.count("readout"):
            torch.randn(n, 10).sum()
    assert m.measurements == 2 and m.totals["readout"] == 120


def test_a_resumed_meter_rebuilds_its_cache_and_keeps_the_totals() -> None:
    lin = torch.nn.Linear(8, 4)
    x = torch.randn(6, 8)
    a = LedgerFlopMeter()
    for _ in range(4):
        with a.count("train", signature(x)):
            lin(x).square().sum().backward()
    b = LedgerFlopMeter()
    for _ in range(2):
        with b.count("train", signature(x)):
            lin(x).square().sum().backward()
    c = LedgerFlopMeter()
    c.load_state_dict(b.state_dict())
    for _ in range(2):
        with c.count("train", signature(x)):
            lin(x).square().sum().backward()
    assert c.state_dict() == a.state_dict() and c.measurements == 1


def test_the_read_out_is_charged_its_evaluations() -> None:
    """The read-out's fit charges each loss-and-gradient evaluation; counting every op of
    L-BFGS as well adds its vector updates, under 1 % at the digits read-out's size."""
    from physnn.train.readout import LinearReadout

    g = torch.Generator().manual_seed(0)
    f, y = torch.randn(1400, 64, generator=g), torch.randint(0, 10, (1400,), generator=g)
    cached, everything = FlopMeter(), FlopMeter()
    fitted = LinearReadout(10).fit(f, y, cached)
    with everything.count("readout"):
        reference = LinearReadout(10).fit(f, y)
    assert torch.equal(fitted.weight, reference.weight)  # counting changes nothing computed
    assert cached.measurements == 1  # one evaluation counted, the others charged from it
    total = everything.totals["readout"]
    assert 0.99 * total <= cached.totals["readout"] <= total


def _torch_mode_measure(self):
    """``LedgerFlopMeter._measure`` as it was, on torch's own ``FlopCounterMode``."""
    from contextlib import contextmanager

    from torch.utils.flop_counter import FlopCounterMode

    from physnn.train.ledger import _Tally

    @contextmanager
    def measure():
        tally, result = _Tally(), []
        with FlopCounterMode(display=False, custom_mapping=tally.mapping()):
            yield result
        result[:] = [tally.fwd + tally.bwd, tally.bwd]

    return measure()


def test_the_ledgers_dispatch_mode_counts_what_torchs_counter_counts(
    tiny_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ledger counts with its own lean dispatch mode (``FlopDispatchMode``): the same
    totals, forward and backward apart, as torch's ``FlopCounterMode`` with the same formulas,
    over the trainers' steps (complex optics, Adam, a twin, the read-outs) and an acoustic
    cavity's torch replay (pointwise-heavy, with its adjoint)."""
    from physnn.sim.acoustic import AcousticCavity, AcousticConfig

    cfgs = [load_config({**copy.deepcopy(tiny_config), "train": {
        **tiny_config["train"], "method": m, "batch_size": b, "epochs": 1}})
        for m, b in (("phyll", 0), ("pat", 32))]
    dev = AcousticCavity(AcousticConfig(n_in=4, first_bin=3, transient_steps=8, window_steps=64))
    dev.amplitudes(torch.zeros(1, 4, dtype=torch.float64))  # its one-off calibration, uncounted

    def counted() -> list[object]:
        meter = LedgerFlopMeter(cache=False)
        x = torch.rand(2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        with meter.count("cavity"):
            dev.amplitudes(x.requires_grad_()).square().sum().backward()
        return [_run(cfg, cache=False)[0] for cfg in cfgs] + [meter.split("cavity")]

    ours = counted()
    monkeypatch.setattr(LedgerFlopMeter, "_measure", _torch_mode_measure)
    assert ours == counted()
    assert ours[1]["model:backward"] > 0 and min(ours[2]) > 0
