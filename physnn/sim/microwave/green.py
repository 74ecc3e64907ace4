"""The 2-D Green's function that couples the dipoles, and its radiative part."""

from __future__ import annotations

import torch
from scipy import special


def green_2d(kr: torch.Tensor) -> torch.Tensor:
    """The 2-D scalar Green's function ``(i/4) H0^(1)(kr) = (-Y0(kr) + i J0(kr)) / 4``.

    ``kr`` real and positive (any shape); returns complex128 on the CPU. Evaluated with
    ``scipy.special`` (to ~1e-16): ``torch.special.bessel_j0/y0`` err by up to 4e-7 for
    ``5 < kr < 8`` (torch 2.x), and the geometry is fixed, so this runs once per cavity.
    """
    h = special.hankel1(0, kr.detach().cpu().double().numpy())
    return torch.from_numpy(0.25j * h)


def radiation_kernel(kr: torch.Tensor) -> torch.Tensor:
    """``Im G = J0(kr) / 4`` including ``r = 0`` (float64, CPU): dipoles ``p`` radiate the
    power ``p^H (J0 / 4) p``; the kernel is positive semi-definite (a plane-wave integral)."""
    return torch.from_numpy(0.25 * special.j0(kr.detach().cpu().double().numpy()))


def pair_distances(pos: torch.Tensor) -> torch.Tensor:
    """``|r_i - r_j|``, exactly symmetric (``torch.cdist`` may use a matmul shortcut)."""
    return (pos[:, None, :] - pos[None, :, :]).norm(dim=-1)

