"""A physical device as a torch layer.

``physnn.core.Device`` stays a plain class (its contract is ``_measure``); this module
is the bridge to ``torch.nn`` so a device fits wherever a layer does: in ``nn.Sequential``,
under hooks, in a user's own training loop, and in checkpoints. The device's mutable state
(its random streams and its accounting) travels in the module's ``state_dict`` as extra
state, so ``net.state_dict()`` of a network of physical layers is a complete checkpoint: a
loaded network continues the very same noise. ``.to()``, ``.double()`` and ``.cuda()`` reach
the device's own tensors through ``Device.apply_to_tensors``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..core.device import Device
from .counting import TwinMeter, hidden_from_flop_counters
from .physics_aware import Twin, check_twin, physics_aware, twin_devices


class PhysicalLayer(nn.Module):
    """A device as a layer: ``forward(x)`` is its measurement.

    Without ``twin`` the layer is a black box: inputs are validated, the measurement is
    counted in the device's accounting and comes back detached (nothing upstream of it can
    train through it, as with real hardware). With ``twin`` (a differentiable device,
    ``(weight, device)`` pairs, or ``device`` itself for backprop through a simulator) the
    forward pass is still the measurement and the backward pass is the twin's
    vector-Jacobian product (see ``physnn.nn.physics_aware``); ``flops`` and ``name``
    say where the twin's FLOPs are charged.
    """

    def __init__(
        self,
        device: Device,
        twin: Twin | None = None,
        *,
        flops: TwinMeter | None = None,
        name: str | None = None,
    ):
        super().__init__()
        if not isinstance(device, Device):
            raise TypeError(f"PhysicalLayer wraps a physnn Device, got {type(device).__name__}")
        if twin is not None:
            check_twin(device, twin)
            twin = twin if isinstance(twin, Device) else list(twin)
        self.device = device
        self.twin = twin
        self.flops = flops
        self.name = name

    @property
    def n_in(self) -> int:
        """Inputs per sample the device takes."""
        return self.device.spec.n_in

    @property
    def n_out(self) -> int:
        """Outputs per sample the device returns."""
        return self.device.spec.n_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The device's measurement of ``x`` (``[B, n_in] -> [B, n_out]``)."""
        if self.twin is None:
            with hidden_from_flop_counters():  # the physical system's work, not digital FLOPs
                return self.device(x)
        return physics_aware(x, self.device, self.twin, flops=self.flops, name=self.name)

    # -- checkpoints: the devices' random streams and accounting ------------------------------
    def _stateful(self) -> list[Device]:
        return [self.device, *twin_devices(self.device, self.twin)]

    def get_extra_state(self) -> dict[str, Any]:
        """The device's (and any twin's) mutable state: a checkpoint continues its noise."""
        states = [d.state_dict() for d in self._stateful()]
        return {"device": states[0], "twins": states[1:]}

    def set_extra_state(self, state: Any) -> None:
        """Restore what ``get_extra_state`` saved."""
        twins = twin_devices(self.device, self.twin)
        if len(state.get("twins", [])) != len(twins):
            raise ValueError(
                f"PhysicalLayer({self.device.spec.name}): the state holds "
                f"{len(state.get('twins', []))} twin states, this layer has {len(twins)} twins"
            )
        self.device.load_state_dict(state["device"])
        for t, s in zip(twins, state["twins"], strict=True):
            t.load_state_dict(s)

    # -- .to(), .double(), .cuda(): every tensor the devices keep ---------------------------
    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> PhysicalLayer:
        def keep_complex(t: torch.Tensor) -> torch.Tensor:
            # torch's .to(float64) would cast a transmission matrix to its real part: a
            # complex tensor follows the conversion through its parts and stays complex
            return torch.complex(fn(t.real), fn(t.imag)) if t.is_complex() else fn(t)

        for d in self._stateful():
            d.apply_to_tensors(keep_complex)
        super()._apply(fn, recurse)
        return self

    def extra_repr(self) -> str:
        """What the layer wraps and where its gradient comes from."""
        if self.twin is None:
            return f"{self.device!r}, black box"
        if self.twin is self.device:
            return f"{self.device!r}, differentiable in silico"
        twins = [self.twin] if isinstance(self.twin, Device) else [t for _, t in self.twin]
        return f"{self.device!r}, twin=" + " + ".join(repr(t) for t in twins)
