"""physnn.nn: devices as torch layers, and physics-aware differentiation through a twin."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from physnn.core import Device, DeviceSpec, NonIdealDevice, make_device
from physnn.nn import PhysicalLayer, TwinFlops, physics_aware
from physnn.train.ledger import LedgerFlopMeter, SampledFlops
from physnn.train.network import Block, PhysicalNetwork


class Lens(Device):
    """A tiny differentiable device: ``tanh(x W) + sigma * noise``, W drawn from the seed."""

    differentiable = True

    def __init__(self, n_in: int = 4, n_out: int = 3, *, seed: int = 0, sigma: float = 0.0):
        super().__init__(DeviceSpec("test:lens", n_in, n_out), seed=seed)
        self.weight = torch.randn(n_in, n_out, generator=torch.Generator().manual_seed(seed))
        self.sigma = sigma

    def apply_to_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.weight = fn(self.weight)

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(x @ self.weight.to(x.dtype))
        if self.sigma:
            noise = torch.randn(y.shape, generator=self.generator(x.device), dtype=y.dtype)
            y = y + self.sigma * noise
        return y


def _x(n: int = 5, n_in: int = 4, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(n, n_in, generator=torch.Generator().manual_seed(1), dtype=dtype) * 0.8 + 0.1


def test_physical_layer_is_a_black_box_layer_in_sequential():
    lens = Lens(sigma=0.0)
    model = nn.Sequential(PhysicalLayer(lens), nn.Linear(3, 2))
    seen = []
    model[0].register_forward_hook(lambda m, inp, out: seen.append(out))
    x = _x().requires_grad_()
    out = model(x)
    torch.testing.assert_close(seen[0], torch.tanh(x.detach() @ lens.weight))
    assert not seen[0].requires_grad  # measured: detached, nothing before it trains
    assert lens.accounting.samples == 5 and lens.accounting.calls == 1
    out.sum().backward()
    assert x.grad is None and model[1].weight.grad is not None
    assert "PhysicalLayer(Lens(test:lens: 4 -> 3" in repr(model) and "black box" in repr(model)
    with pytest.raises(ValueError, match="outside the allowed domain"):
        model(torch.full((1, 4), 2.0))
    with pytest.raises(TypeError, match="wraps a physnn Device"):
        PhysicalLayer(nn.Linear(2, 2))  # type: ignore[arg-type]


def test_state_dict_carries_the_noise_stream_and_accounting():
    da, db = Lens(sigma=0.5, seed=3), Lens(sigma=0.5, seed=3)
    a, b = nn.Sequential(PhysicalLayer(da)), nn.Sequential(PhysicalLayer(db))
    x = _x()
    a(x), a(x)  # a's stream moves on; b's does not
    state = a.state_dict()
    assert "0._extra_state" in state
    assert not torch.equal(a(x), b(x))  # different points of the same stream
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    assert db.accounting.samples == da.accounting.samples == 20
    # a twin's stream travels with the layer too
    t1, t2 = Lens(sigma=0.5, seed=9), Lens(sigma=0.5, seed=9)
    la = PhysicalLayer(Lens(seed=1), twin=t1)
    lb = PhysicalLayer(Lens(seed=1), twin=t2)
    t1(x)
    lb.load_state_dict(la.state_dict())
    torch.testing.assert_close(t1(x), t2(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="twin states"):
        PhysicalLayer(Lens(seed=1)).load_state_dict(la.state_dict())


def test_to_double_reaches_the_device_tensors_through_wrappers():
    lens = Lens()
    layer = PhysicalLayer(NonIdealDevice(lens, outputs=[{"kind": "readout", "sigma": 0.0}]))
    model = nn.Sequential(layer, nn.Linear(3, 2))
    assert model.double() is model
    assert lens.weight.dtype == torch.float64 and model[1].weight.dtype == torch.float64
    model.to(torch.float32)
    assert lens.weight.dtype == torch.float32
    twin = Lens(seed=5)
    PhysicalLayer(Lens(), twin=twin).double()
    assert twin.weight.dtype == torch.float64


def test_gradient_is_the_twins_and_the_forward_is_the_devices():
    device, twin = Lens(seed=0), Lens(seed=1)  # another lens: a twin that differs
    x = _x(dtype=torch.float64).requires_grad_()
    y = physics_aware(x, device, twin)
    with torch.no_grad():
        torch.testing.assert_close(y, device(x))
        assert not torch.allclose(y, twin(x))
    g = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(2))
    (got,) = torch.autograd.grad(y, x, g)
    x2 = x.detach().clone().requires_grad_()
    (want,) = torch.autograd.grad(twin.forward_with_grad(x2), x2, g)
    torch.testing.assert_close(got, want)
    # a mix of twins: the weighted sum of their Jacobians
    other = Lens(seed=2)
    (mixed,) = torch.autograd.grad(physics_aware(x, device, [(0.7, twin), (0.3, other)]), x, g)
    (want2,) = torch.autograd.grad(other.forward_with_grad(x2), x2, g)
    torch.testing.assert_close(mixed, 0.7 * want + 0.3 * want2)
    # block 0 of a network: no gradient needed, a plain query and no twin run
    twin.accounting.samples = 0
    physics_aware(x.detach(), device, twin)
    assert twin.accounting.samples == 0


def test_in_silico_gradient_passes_gradcheck():
    lens = Lens(seed=4)
    x = _x(n=3, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: physics_aware(v, lens, lens), (x,))
    queries = lens.accounting.samples
    physics_aware(x, lens, lens)
    assert lens.accounting.samples == queries + 3  # one differentiable pass is the query
    layer = PhysicalLayer(lens, twin=lens)
    assert "in silico" in repr(layer)
    assert torch.autograd.gradcheck(layer, (x,))


def test_twin_is_checked_and_the_graph_is_freed():
    device = Lens()
    black = Lens()
    black.differentiable = False
    with pytest.raises(ValueError, match="black box"):
        PhysicalLayer(device, twin=black)
    with pytest.raises(ValueError, match=r"maps 4 -> 5, but the device test:lens maps 4 -> 3"):
        physics_aware(_x().requires_grad_(), device, Lens(n_out=5))
    x = _x().requires_grad_()
    y = physics_aware(x, device, Lens(seed=1))
    y.sum().backward(retain_graph=True)
    assert x.grad is not None
    first = x.grad.clone()
    y.sum().backward()  # a retained graph gives the same gradient again
    torch.testing.assert_close(x.grad, 2 * first)
    with pytest.raises(RuntimeError, match="freed"):
        y.sum().backward()


def test_twin_flops_go_to_the_meter_not_to_the_callers_counter():
    device, twin = Lens(n_in=16, n_out=8), Lens(n_in=16, n_out=8, seed=1)
    x = torch.rand(32, 16).requires_grad_()
    meter = TwinFlops()
    with FlopCounterMode(display=False) as outer:
        physics_aware(x, device, twin, flops=meter, name="lens").sum().backward()
        PhysicalLayer(device)(x)  # a measurement is the physical system's work
    assert outer.get_total_flops() == 0
    assert meter.totals["lens:forward"] == 2 * 32 * 16 * 8  # the twin's matrix product
    assert meter.totals["lens:backward"] == 2 * 32 * 16 * 8  # its input gradient
    with FlopCounterMode(display=False) as visible:  # no meter: the caller counts the twin
        physics_aware(x, device, twin).sum().backward()
    assert visible.get_total_flops() == 2 * 2 * 32 * 16 * 8
    # the ledger's sampled meter (what PAT and backprop charge to the "model" phase)
    ledger = LedgerFlopMeter()
    physics_aware(x, device, twin, flops=SampledFlops(ledger, "model", every=1),
                  name="block1").sum().backward()
    fwd, bwd = ledger.split("model")
    assert fwd >= 2 * 32 * 16 * 8 and bwd >= 2 * 32 * 16 * 8


def test_network_state_dict_is_a_complete_checkpoint():
    def net() -> PhysicalNetwork:
        gen = torch.Generator().manual_seed(0)
        blocks = [Block(Lens(seed=k, sigma=0.1), 4, skip=True, gen=gen) for k in range(2)]
        return PhysicalNetwork(blocks)

    a, b = net(), net()
    x = _x()
    a(x)
    torch.testing.assert_close(a.blocks[0].device.generator().get_state(),
                               a.state_dict()["blocks.0.physical._extra_state"]["device"]
                               ["generators"]["cpu"])
    b.load_state_dict(a.state_dict())
    ha, hb = a(x), b(x)
    torch.testing.assert_close(hb[-1], ha[-1], rtol=0, atol=0)  # the same noise continues
    assert [d.accounting.samples for d in b.devices] == [10, 10]
    assert isinstance(a.blocks[1], Block) and a.blocks[1].device is a.devices[1]


def test_torch_layer_example_learns(example):
    ex = example("torch_layer")
    frozen = ex.main(epochs=3, n_train=400)
    through = ex.main(epochs=3, n_train=400, train_before_device=True)
    assert frozen > 0.5 and through > 0.5  # chance is 0.1


def test_pat_with_surrogate_example_learns(example):
    ex = example("pat_with_surrogate")
    assert ex.main(epochs=5, samples=1000, fit_epochs=40, n_train=400) > 0.3  # chance is 0.1


@pytest.mark.parametrize("kind", ["sim:optical", "sim:microwave"])
def test_a_simulator_layer_moved_to_float64_measures_the_same_physics(kind):
    """Their transmission matrices and Green's functions are complex: ``.to(torch.float64)``
    must not cast them to their real part."""
    n_in = 74 if kind == "sim:optical" else 20
    dev = make_device({"kind": kind, "n_in": n_in, "seed": 0})
    x = torch.rand(4, n_in, generator=torch.Generator().manual_seed(0))
    if dev.spec.domain.levels is not None:
        x = dev.spec.domain.from_unit(x)
    layer = PhysicalLayer(make_device({"kind": kind, "n_in": n_in, "seed": 0})).to(torch.float64)
    out = layer(x.double())
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.float(), dev(x), rtol=1e-4, atol=1e-4)
