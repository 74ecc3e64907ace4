"""``sim:microwave``'s two solvers: ``solver = "flips"`` against the dense solve it replaces.

    python -m benchmarks.microwave            # the real measurement (about two minutes)
    python -m benchmarks.microwave --quick    # fewer repeats, no training epoch

Each query of the cavity solves the metasurface's coupled system at every frequency. The
dense solver factors the whole ``M x M`` system per sample; ``flips`` factors only the
``k <= M / 2`` elements whose bit differs from the nearer of two precomputed states (all
off, all on), so its gain grows with ``M``. Rows, one torch thread, interleaved A/B repeats
in one process (``ratio`` = dense seconds / flips seconds, the median over pairs):

- a device call on the training split's first-block inputs (label overlaid, so most label
  bits are off) and on uniform random levels (what hidden blocks see: ``k`` near ``M / 2``,
  the hardest case), for the geometries of ``vowels-microwave`` (20 inputs, 40 elements),
  ``vowels-microwave-digits`` (32 inputs, 64 elements) and a 38-input cavity (76 elements,
  the digits with a two-input label);
- how far apart the two answers are (max relative difference of ``|s|``) in single
  precision, as training runs, against the dense solve's own single-precision error;
- one PhyLL training epoch of ``vowels-microwave-digits`` (an ensemble of 3 networks of 3
  blocks) with each solver.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

from physnn.experiments import load_config
from physnn.experiments.runner import TrainSession
from physnn.sim.microwave import MetasurfaceCavity, MicrowaveConfig

from .optical import ab

TARGET = 2.0
"""``flips`` should at least halve a device call at the digits' 64 elements."""
GEOMETRIES: tuple[tuple[str, int, dict[str, Any]], ...] = (
    ("vowels-microwave", 20, {}), ("vowels-microwave-digits", 32, {}),
    ("38 inputs, ms_spacing 0.16", 38, {"ms_spacing": 0.16}),
)
"""(name, inputs, device keys): a preset's name means its data feed the first-block row."""


def _cavity(n_in: int, extra: dict[str, Any], solver: str) -> MetasurfaceCavity:
    return MetasurfaceCavity(MicrowaveConfig(n_in=n_in, ms_chi=0.3, solver=solver, **extra))


def _first_block_inputs(preset: str) -> torch.Tensor:
    """The preset's training split with the true label overlaid at the top level, as its
    first block sees its positives (the synthetic vowels)."""
    s = TrainSession(load_config(preset), 0, "cpu", progress=False)
    x = torch.as_tensor(s.data.x_train).clone()
    x[:, : s.data.label_slots] = 0.0
    x[torch.arange(len(x)), s.data.y_train] = 3.0
    return x.float()


def call_rows(quick: bool) -> list[dict[str, Any]]:
    """A device call with each solver, per geometry and kind of input."""
    out = []
    for name, n_in, extra in GEOMETRIES:
        dense, flips = _cavity(n_in, extra, "dense"), _cavity(n_in, extra, "flips")
        data = _first_block_inputs(name) if name.startswith("vowels") else None
        rand = torch.randint(0, 4, (253, n_in), generator=torch.Generator().manual_seed(0)).float()
        for what, x in (("first block (data + label)", data), ("uniform random levels", rand)):
            if x is None:
                continue
            sec, ratio = ab(partial(flips, x), partial(dense, x), 3 if quick else 9)
            target = f">= {TARGET:g}x" if n_in == 32 else None
            out.append({
                "group": "microwave", "name": f"device call, {name} ({2 * n_in} elements), "
                f"{len(x)} x {what}", "value": sec, "unit": "s", "baseline": "solver = dense",
                "ratio": ratio, "target": target, "ok": ratio >= TARGET if target else None,
            })
    return out


def agreement_rows() -> list[dict[str, Any]]:
    """Max relative difference of ``|s|``: flips and dense in single precision, each against
    the dense double-precision answer (the 64-element geometry, 253 random configurations)."""
    dense, flips = _cavity(32, {}, "dense"), _cavity(32, {}, "flips")
    x = torch.randint(0, 4, (253, 32), generator=torch.Generator().manual_seed(1))
    want = dense.transfer(x.double()).abs()

    def err(dev: MetasurfaceCavity) -> float:
        return float(((dev.transfer(x.float()).abs().double() - want).abs() / want).max())

    e_flips, e_dense = err(flips), err(dense)
    return [{
        "group": "microwave", "name": f"|s| in single precision, 64 elements: max relative error "
        f"of flips (dense: {e_dense:.1e})", "value": e_flips, "unit": "relative",
        "baseline": "dense solve in double precision", "ratio": None,
        "target": "<= 1e-3 (read-out noise: 1e-2)", "ok": e_flips <= 1e-3,
    }]


def epoch_rows(quick: bool) -> list[dict[str, Any]]:
    """One training epoch of vowels-microwave-digits (synthetic vowels) with each solver."""
    sessions = {}
    for solver in ("dense", "flips"):
        cfg = load_config("vowels-microwave-digits").merged(
            {"device": {"solver": solver}, "train": {"eval_every": 10**6, "epochs": 10**6}})
        sessions[solver] = TrainSession(cfg, 0, "cpu", progress=False)
    sec, ratio = ab(lambda: sessions["flips"].epoch(0), lambda: sessions["dense"].epoch(0),
                    1 if quick else 3)
    return [{
        "group": "microwave", "name": "PhyLL epoch, vowels-microwave-digits (ensemble of 3 x 3 "
        "blocks, 64 elements)", "value": sec, "unit": "s", "baseline": "solver = dense",
        "ratio": ratio, "target": None, "ok": None,
    }]


def rows(quick: bool) -> list[dict[str, Any]]:
    """The benchmark rows (see the suite's row contract); ``quick``: fewer repeats, no epoch."""
    torch.set_num_threads(1)
    return call_rows(quick) + agreement_rows() + ([] if quick else epoch_rows(quick))


if __name__ == "__main__":
    import sys

    from benchmarks.suite import run_alone

    sys.exit(run_alone(rows, sys.argv[1:]))
