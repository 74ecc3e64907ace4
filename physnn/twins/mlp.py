"""The network a twin is: an MLP over optional periodic input features.

Weights are drawn from a generator of the fit's own (never the global random stream), so a
fit is reproducible whatever else the process does with torch's random state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


class Square(nn.Module):
    """``x**2``: the response of a square-law detector (camera, power meter), so a twin of
    one can represent ``|T x|^2`` exactly with one hidden layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Elementwise square."""
        return x * x


ARCH_KEYS = ("hidden", "activation", "fourier")
"""The fit settings that shape the network (stored in a twin file to rebuild it)."""
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh, "square": Square,
}


class Fourier(nn.Module):
    """Input features ``[u, cos(k pi u), sin(k pi u)]`` for ``k = 1..terms``, ``u`` in [-1, 1]:
    periodic responses (phase-encoded inputs) become easy for the layers above."""

    k: torch.Tensor

    def __init__(self, terms: int):
        super().__init__()
        self.register_buffer("k", math.pi * torch.arange(1, terms + 1, dtype=torch.float32))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """``[.., n]`` inputs to ``[.., n * (1 + 2 terms)]`` features."""
        a = (u.unsqueeze(-1) * self.k).flatten(-2)
        return torch.cat([u, torch.cos(a), torch.sin(a)], dim=-1)


def build_mlp(
    n_in: int, n_out: int, arch: Mapping[str, Any], gen: torch.Generator | None = None,
) -> nn.Sequential:
    """The twin's MLP (``arch``: hidden widths, activation, Fourier terms). With ``gen`` its
    weights are drawn from it (torch's default initialisation, uniform in +-1/sqrt(fan_in)),
    leaving the global random stream alone; without, they are left uninitialised, to be loaded.
    """
    terms = int(arch.get("fourier", 0))
    layers: list[nn.Module] = [Fourier(terms)] if terms else []
    width = n_in * (1 + 2 * terms)
    with torch.device("meta"):
        for h in arch["hidden"]:
            layers += [nn.Linear(width, h), ACTIVATIONS[arch["activation"]]()]
            width = h
        layers.append(nn.Linear(width, n_out))
    model = nn.Sequential(*layers).to_empty(device="cpu")
    if terms:
        model[0].k = math.pi * torch.arange(1, terms + 1, dtype=torch.float32)
    with torch.no_grad():
        for m in model if gen is not None else ():
            if isinstance(m, nn.Linear):
                bound = 1 / math.sqrt(m.in_features)
                m.weight.uniform_(-bound, bound, generator=gen)
                m.bias.uniform_(-bound, bound, generator=gen)
    return model
