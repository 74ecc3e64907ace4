"""wavetorch 0.2.1's simulation (Hughes et al., Sci. Adv. 2019) as a benchmark peer.

Its package ``__init__`` imports the data, plotting and training modules (librosa, seaborn,
pandas); the simulation modules (``utils``, ``operators``, ``cell``, ``geom``, ``source``,
``probe``, ``rnn``) need only torch, numpy and scikit-image. They are loaded from the
installed package directory under a synthetic package name, with one patch outside the
physics: ``skimage.draw.circle`` (removed in scikit-image 0.19) is ``disk((r, c), radius)``.
Install with ``pip install -e .[bench]`` (``wavetorch==0.2.1``, ``scikit-image``).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

import torch

_PKG = "_wavetorch_sim"
_MODULES = ("utils", "operators", "cell", "geom", "source", "probe", "rnn")


def load() -> types.SimpleNamespace | None:
    """The simulation modules as attributes, or ``None`` when wavetorch is not installed."""
    if _PKG in sys.modules:
        return types.SimpleNamespace(**{m: sys.modules[f"{_PKG}.{m}"] for m in _MODULES})
    spec = importlib.util.find_spec("wavetorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        import skimage.draw
    except ImportError:
        return None
    if not hasattr(skimage.draw, "circle"):
        def circle(r: float, c: float, radius: float, shape: Any = None) -> Any:
            return skimage.draw.disk((r, c), radius, shape=shape)

        skimage.draw.circle = circle  # type: ignore[attr-defined]
    pkg = types.ModuleType(_PKG)
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules[_PKG] = pkg
    try:
        mods = {m: importlib.import_module(f"{_PKG}.{m}") for m in _MODULES}
    except ImportError:
        del sys.modules[_PKG]
        return None
    return types.SimpleNamespace(**mods)


def model(g: int, c_nl: float, probes: int = 4) -> torch.nn.Module:
    """The comparable set-up: ``g x g`` free-form geometry (frozen), one source, intensity
    probes on a column near the far side (see ``/work/shared/BENCHMARKS.md``)."""
    wt = load()
    if wt is None:
        raise ImportError("wavetorch is not installed (pip install -e .[bench])")
    abs_n = 4 if g <= 40 else 20
    geom = wt.geom.WaveGeometryFreeForm((g, g), h=1, c0=1, c1=0.5, abs_N=abs_n, rho="half")
    for prm in geom.parameters():
        prm.requires_grad_(False)
    cell = wt.cell.WaveCell(0.6, geom, c_nl=c_nl)
    src = wt.source.WaveSource(g // 2, abs_n + 1)
    col = g - abs_n - 2
    rows = [abs_n + 1 + (k + 1) * (g - 2 * abs_n - 2) // (probes + 1) for k in range(probes)]
    prb = [wt.probe.WaveIntensityProbe(r, col) for r in rows]
    return wt.rnn.WaveRNN(cell, src, prb)  # type: ignore[no-any-return]


def run(net: torch.nn.Module, batch: int, steps: int, grad: bool) -> float:
    """One forward (and backward w.r.t. the input when ``grad``) of ``batch`` drives of
    ``steps`` steps; returns a number that depends on the result."""
    x = torch.randn(batch, steps, generator=torch.Generator().manual_seed(0)) * 1e-2
    if grad:
        x.requires_grad_(True)
        y = net(x)
        y.sum().backward()
        assert x.grad is not None
        return float(x.grad.abs().sum())
    with torch.no_grad():
        return float(net(x).sum())
