"""``example:tanh-mixer``: a stand-in for a lab instrument, written as a lab would write one.

The "instrument" applies ``n_in`` voltages to a fixed, random resistive coupling network whose
``n_out`` output nodes each saturate (``tanh``), and reads the nodes with a noisy digitiser.
A real driver replaces ``_respond`` with its instrument calls (see README.md); everything
else (validation, accounting, seeding, the open/close lifecycle) comes from
``physnn.core.device.Device``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from physnn.core.device import Device, DeviceSpec, Domain, finite_number, whole_number

KIND = "example:tanh-mixer"


class TanhMixer(Device):
    """``outputs = tanh(gain * W @ (2 x - 1) + bias) + N(0, noise^2)``, ``W`` drawn from ``seed``.

    The keyword arguments are the keys of a device description (``kind`` aside), so physnn's
    ``make_device({"kind": "example:tanh-mixer", ...})`` calls this class directly, and
    ``describe()`` returns keys that rebuild the same device. A wrong key is a TypeError,
    which physnn reports as a bad parameter of this kind.
    """

    def __init__(
        self,
        n_in: int = 16,
        n_out: int = 64,
        *,
        gain: float = 2.0,
        noise: float = 0.01,
        settle_s: float = 1e-3,
        seed: int = 0,
        clip: bool = False,
    ) -> None:
        # check the description here, before anything would reach an instrument
        whole_number(f"{KIND}: n_in", n_in)
        whole_number(f"{KIND}: n_out", n_out)
        finite_number(f"{KIND}: gain", gain, lo=0, strict=True)
        finite_number(f"{KIND}: noise", noise, lo=0)
        finite_number(f"{KIND}: settle_s", settle_s, lo=0)
        spec = DeviceSpec(
            name=KIND, n_in=n_in, n_out=n_out, domain=Domain(0.0, 1.0),
            output_units="V", time_per_query_s=settle_s,
        )
        super().__init__(spec, seed=seed, clip=clip)
        self.gain, self.noise, self.settle_s = float(gain), float(noise), float(settle_s)
        g = torch.Generator().manual_seed(seed)  # the network's resistors: fixed per seed
        self.coupling = torch.randn(n_out, n_in, generator=g, dtype=torch.float64) / math.sqrt(n_in)
        self.bias = 0.5 * torch.randn(n_out, generator=g, dtype=torch.float64)

    def _respond(self, x: torch.Tensor) -> torch.Tensor:
        """The noiseless node voltages: where a real driver would talk to its instrument."""
        w = self.coupling.to(x.device, x.dtype)
        b = self.bias.to(x.device, x.dtype)
        return torch.tanh(self.gain * (2 * x - 1) @ w.T + b)

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        # x is already checked: [batch, n_in], finite, inside the domain. Noise comes from
        # the device's own seeded stream, so runs repeat exactly and resume identically.
        y = self._respond(x)
        if self.noise > 0:
            y = y + self.noise * torch.randn(y.shape, generator=self.generator(y.device),
                                             device=y.device, dtype=y.dtype)
        return y

    def apply_to_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Move the fixed coupling with the layer (``.to("cuda")``, ``.double()``)."""
        self.coupling, self.bias = fn(self.coupling), fn(self.bias)

    def describe(self) -> dict[str, Any]:
        """Every key, defaults filled in: run logs store it and it rebuilds this device."""
        s = self.spec
        return {"kind": KIND, "n_in": s.n_in, "n_out": s.n_out, "gain": self.gain,
                "noise": self.noise, "settle_s": self.settle_s, "seed": self.seed,
                "clip": self.clip}
