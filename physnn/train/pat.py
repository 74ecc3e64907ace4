"""Physics-aware training (PAT, Wright et al., Nature 601:549, 2022).

The forward pass runs on the real device (a black box: a counted query); the backward pass
uses the Jacobian of a differentiable *twin* evaluated at the same inputs. The downstream
layers see the measured output, so the gradient is ``J_twin(x)^T dL/dy`` at the measured
``y``: exact where the twin is exact, biased by the sim-to-real gap where it is not. This is
``physnn.nn.physics_aware`` with the twins below, on ``Backprop``'s network; the
twin's forward and backward passes are charged to the ledger's ``model`` phase.

Twins (``train.pat_twin``):

- ``""`` (default): the simulator's own differentiable model, rebuilt from each block's
  device description (same physics, same seed; its noise draws are its own).
- a device description (a kind, a ``.toml`` path or a table), or a list of one per block:
  e.g. a fitted ``surrogate`` (built with the block's ``n_in`` and device seed, so
  ``{block}`` in a surrogate's path picks the block's twin). It must be differentiable and
  match the block's n_in/n_out. Its building cost (calibration queries, fitting FLOPs; see
  ``twin_building_cost``) is charged to the run's ledger.

``train.pat_mismatch`` = epsilon in [0, 1] mimics the sim-to-real gap with the simulator
twin: its output is ``(1 - eps) f(x) + eps f'(x)``, where ``f'`` is the same kind of device
built with a different seed (different random physics: another transmission matrix, other
scatterers and membranes, another metasurface layout). 0 = exact model, 1 = a twin of the
wrong cavity. The forward pass stays on the real device either way.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core import make_device
from ..core.device import Device
from ..nn import Twin
from .backprop import Backprop, EndToEndSettings
from .network import PhysicalNetwork

MISMATCH_SEED_OFFSET = 100_003
"""Seed shift of the mismatched twin ``f'`` (any shift gives an independent random cavity)."""


def rebuildable_description(device: Device) -> dict[str, Any]:
    """``device.describe()``: every device describes itself in the form make_device takes."""
    return dict(device.describe())


def twin_building_cost(twin: Device) -> tuple[int, int]:
    """(calibration queries, fitting FLOPs) it took to build ``twin``; (0, 0) for a simulator.

    A device may state both as ``calibration_queries`` and ``fit_flops``. For a fitted
    ``surrogate`` they are taken from its fit record: every calibration sample (train,
    validation and test splits) was one device query, and each epoch run cost about 6 FLOPs
    per parameter per training sample (forward 2, backward 4) plus 2 per validation sample.
    """
    if hasattr(twin, "calibration_queries") or hasattr(twin, "fit_flops"):
        return int(getattr(twin, "calibration_queries", 0)), int(getattr(twin, "fit_flops", 0))
    fitted = getattr(twin, "twin", None)
    fit, model = getattr(fitted, "fit", None), getattr(fitted, "model", None)
    if not isinstance(fit, dict) or "split" not in fit or model is None:
        return 0, 0
    split = fit["split"]
    params = sum(p.numel() for p in model.parameters())
    epochs = int(fit.get("epochs_run", 0))
    queries = int(sum(split.values()))
    flops = epochs * params * (6 * int(split["train"]) + 2 * int(split["validation"]))
    return queries, int(flops)


class PhysicsAware(Backprop):
    """Backprop's network and read-out; device gradients from a twin (see the module)."""

    name = "pat"

    def __init__(
        self,
        net: PhysicalNetwork,
        settings: EndToEndSettings,
        gen: torch.Generator,
        *,
        twin: Any = "",
        mismatch: float = 0.0,
    ):
        if not 0.0 <= float(mismatch) <= 1.0:
            raise ValueError(f"train.pat_mismatch must be in [0, 1], got {mismatch}")
        if twin not in ("", None) and float(mismatch) > 0:
            raise ValueError(
                "train.pat_mismatch applies to the simulator twin only; with a fitted twin "
                "(train.pat_twin set) the mismatch is whatever the fit left: set pat_mismatch=0"
            )
        self.mismatch = float(mismatch)
        self.twins: dict[int, list[tuple[float, Device]]] = {}
        blocks = net.blocks
        descs = list(twin) if isinstance(twin, list) else [twin] * len(blocks)
        if len(descs) != len(blocks):
            raise ValueError(
                f"train.pat_twin lists {len(descs)} twins for {len(blocks)} blocks; "
                "give one description, or one per block"
            )
        for k in range(1, len(blocks)):  # block 0 needs no gradient: nothing trains before it
            self.twins[k] = self._build_twin(k, blocks[k].device, descs[k])
        super().__init__(net, settings, gen)

    def _build_twin(self, k: int, device: Device, desc: Any) -> list[tuple[float, Device]]:
        if desc in ("", None):
            own = rebuildable_description(device)
            parts = []
            if self.mismatch < 1:
                parts.append((1.0 - self.mismatch, make_device(own)))
            if self.mismatch > 0:
                other = dict(own, seed=int(own.get("seed", 0)) + MISMATCH_SEED_OFFSET)
                parts.append((self.mismatch, make_device(other)))
        else:  # the block's n_in and seed: a surrogate finds its twin per block ({block})
            own = rebuildable_description(device)
            parts = [(1.0, make_device(desc, n_in=device.spec.n_in, seed=own.get("seed", 0)))]
        for _, t in parts:
            if (t.spec.n_in, t.spec.n_out) != (device.spec.n_in, device.spec.n_out):
                raise ValueError(
                    f"PAT twin of block {k} maps {t.spec.n_in} -> {t.spec.n_out}, but the "
                    f"device maps {device.spec.n_in} -> {device.spec.n_out}"
                )
        return parts

    def _check_devices(self, net: PhysicalNetwork) -> None:
        """The devices may be black boxes (real hardware); the twins carry the gradient."""
        for k, parts in self.twins.items():
            for _, t in parts:
                if not t.differentiable:
                    raise ValueError(
                        f"PAT twin of block {k} ({t.spec.name}) is not differentiable; use a "
                        "simulator or a surrogate description as train.pat_twin"
                    )

    @property
    def twin_devices(self) -> list[Device]:
        """Every block's twin devices, in block order (their state is the trainer's)."""
        return [t for parts in self.twins.values() for _, t in parts]

    @property
    def twin_calibration_queries(self) -> int:
        """Device queries it took to build the twins (charged to the run's ledger)."""
        return sum(twin_building_cost(t)[0] for t in self.twin_devices)

    @property
    def twin_fit_flops(self) -> int:
        """FLOPs it took to fit the twins (charged to the run's ledger)."""
        return sum(twin_building_cost(t)[1] for t in self.twin_devices)

    def twin(self, k: int) -> Twin:
        """Block ``k``'s twin: ``(weight, device)`` pairs, mixed by their weights."""
        return self.twins[k]

    def state_dict(self) -> dict[str, Any]:
        """Backprop's state plus the twins' random streams."""
        return {**super().state_dict(), "twins": [t.state_dict() for t in self.twin_devices]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` saved."""
        super().load_state_dict(state)
        for t, s in zip(self.twin_devices, state["twins"], strict=True):
            t.load_state_dict(s)
