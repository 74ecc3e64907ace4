"""``sim:acoustic-wave``'s adjoint gradient equals autograd through the recorded time loop."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from physnn.sim.acoustic.wave_config import WaveformConfig
from physnn.sim.acoustic.waveform import WaveformCavity

SMALL: dict[str, Any] = {"grid": (14, 16), "sample_rate": 8000, "dx": 0.02, "sponge_cells": 2}


def _gradients(gradient: str, x_grad: bool = True, **kw: Any) -> dict[str, Any]:
    """Energies, input gradient and speed gradient of a random weighted loss."""
    cfg = WaveformConfig(**{**SMALL, "n_in": 60, **kw}, gradient=gradient)
    dev = WaveformCavity(cfg)
    gen = torch.Generator().manual_seed(3)
    if dev.wave_speed.numel():
        with torch.no_grad():  # a non-uniform speed, inside the range
            dev.wave_speed.copy_(250 + 90 * torch.rand(dev.wave_speed.shape, generator=gen,
                                                       dtype=torch.float64))
    x = (2 * torch.rand(3, cfg.n_in, generator=gen, dtype=torch.float64) - 1).requires_grad_(x_grad)
    y = dev.forward_with_grad(x)
    w = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    (y * w).sum().backward()
    return {"y": y.detach(), "x": x.grad, "speed": dev.wave_speed.grad}


def _close(a: torch.Tensor | None, b: torch.Tensor | None, tol: float = 1e-12) -> None:
    assert a is not None and b is not None
    assert float((a - b).abs().max()) <= tol * float(b.abs().max()), (a, b)


CASES = {
    "sponge": {},
    "viscous": {"viscous_time": 2e-6},
    "label tones, fractions": {"n_in": 63, "label_tones": [1000, 1300, 1600], "label_s": 0.005,
                               "readout": "fraction"},
    "bilinear probes, scatterers, walls": {
        "probes": [[3.3, 12.6], [6.5, 12.2], [9.7, 11.9]], "n_scatterers": 2,
        "wall_reflection": 0.9, "tail_s": 0.002,
    },
}


@pytest.mark.parametrize("kw", CASES.values(), ids=CASES.keys())
def test_adjoint_equals_autograd(kw: dict[str, Any]) -> None:
    adj, ref = _gradients("adjoint", **kw), _gradients("autograd", **kw)
    _close(adj["y"], ref["y"])
    _close(adj["x"], ref["x"])
    _close(adj["speed"], ref["speed"])
    assert float(ref["speed"].abs().max()) > 0 and float(ref["x"].abs().max()) > 0


def test_adjoint_without_a_design_region_losslessly_or_without_input_gradient() -> None:
    adj, ref = _gradients("adjoint", design_region=[]), _gradients("autograd", design_region=[])
    _close(adj["x"], ref["x"])
    assert adj["speed"] is None
    rigid = {"sponge_cells": 0, "design_region": [], "wall_reflection": 1.0}  # the lossless update
    adj, ref = _gradients("adjoint", **rigid), _gradients("autograd", **rigid)
    _close(adj["y"], ref["y"])
    _close(adj["x"], ref["x"])
    adj, ref = _gradients("adjoint", x_grad=False), _gradients("autograd", x_grad=False)
    assert adj["x"] is None
    _close(adj["speed"], ref["speed"])


def test_adjoint_in_float32_and_the_final_field() -> None:
    cfg = WaveformConfig(**SMALL, n_in=60)
    dev = WaveformCavity(cfg)
    x = (2 * torch.rand(2, 60, generator=torch.Generator().manual_seed(0)) - 1).requires_grad_(True)
    out = dev.simulate(x)
    with torch.no_grad():
        ref = dev.simulate(x.detach())
    assert out["energy"].dtype == torch.float32 and out["energy"].requires_grad
    _close(out["energy"].detach(), ref["energy"], 1e-5)
    _close(out["p"], ref["p"], 1e-5)
    out["energy"].sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float32 and torch.isfinite(x.grad).all()


def test_an_unknown_gradient_method_is_refused() -> None:
    with pytest.raises(ValueError, match=r"gradient must be one of \['adjoint', 'autograd'\], got 'ad'"):
        WaveformConfig(**SMALL, n_in=60, gradient="ad")
