"""The grid: rigid cells, face coefficients and the pressure losses of walls and sponge.

Cells are stored flat on a grid padded by one ghost cell on every side (``wp = cols + 2``
per row), so a neighbour is a fixed offset: ``+-1`` horizontally, ``+-wp`` vertically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .config import AcousticConfig
from .scatterers import draw_scatterers


@dataclass
class Geometry:
    """The cavity's fixed fields (float64 on the CPU when built), what the time loop reads."""

    grid: tuple[int, int]
    """Cells (rows, cols) inside the walls."""
    scatterer_cells: list[list[int]]
    """Rigid cells ``[row, col]``."""
    solid: torch.Tensor
    """``[rows, cols]`` bool mask of the rigid cells."""
    cx: torch.Tensor
    """Coefficient of the vertical faces (``courant^2``, 0 where a face touches a solid)."""
    cy: torch.Tensor
    """Coefficient of the horizontal faces."""
    loss: torch.Tensor
    """``[rows + 2, cols + 2]`` pressure damping per step (walls and sponge)."""
    a_mid: torch.Tensor
    """Semi-implicit loss factor of the pressure update, flat without the ghost rows."""
    b_mid: torch.Tensor
    """Semi-implicit factor of the divergence in the pressure update."""
    b_flat: torch.Tensor
    """``b`` on the whole padded grid (sources are scaled by it)."""

    @property
    def wp(self) -> int:
        """Padded row length: the flat offset between vertical neighbours."""
        return self.grid[1] + 2

    @property
    def n_cells(self) -> int:
        """Cells of the padded grid."""
        return (self.grid[0] + 2) * self.wp

    def flat(self, r: int, col: int) -> int:
        """Flat index of cell ``[r, col]``."""
        return (r + 1) * self.wp + col + 1

    def bilinear(self, r: float, col: float) -> list[tuple[int, float]]:
        """Cells and weights of a point between cell centres (a whole cell: itself, weight 1)."""
        h, w = self.grid
        r0, c0 = min(int(math.floor(r)), h - 1), min(int(math.floor(col)), w - 1)
        fr, fc = r - r0, col - c0
        out = []
        for dr, wr in ((0, 1 - fr), (1, fr)):
            for dc, wc in ((0, 1 - fc), (1, fc)):
                if wr * wc > 0:
                    out.append((self.flat(r0 + dr, c0 + dc), wr * wc))
        return out


def _solid(cfg: AcousticConfig, scat: list[list[int]]) -> torch.Tensor:
    h, w = cfg.grid
    solid = torch.zeros(h, w, dtype=torch.bool)
    for r, col in scat:
        if not (0 <= r < h and 0 <= col < w):
            raise ValueError(f"scatterer cell [{r}, {col}] is outside grid {cfg.grid}")
        solid[r, col] = True
    return solid


def _losses(cfg: AcousticConfig, fluid: torch.Tensor) -> torch.Tensor:
    """Pressure damping per step: lossy walls (impedance) and the sponge layer."""
    h, w = cfg.grid
    wp = w + 2
    cr = cfg.courant
    loss = torch.zeros(h + 2, wp, dtype=torch.float64)
    rw = cfg.wall_reflection
    per_face = cr * (1 - rw) / (1 + rw)
    walls = torch.zeros(h + 2, wp, dtype=torch.float64)
    walls[1, 1:-1] += 1
    walls[-2, 1:-1] += 1
    walls[1:-1, 1] += 1
    walls[1:-1, -2] += 1
    loss += per_face * walls
    if cfg.sponge_cells > 0:
        d = cfg.sponge_cells
        rr = torch.arange(h, dtype=torch.float64)
        cc = torch.arange(w, dtype=torch.float64)
        dist = torch.minimum(
            torch.minimum(rr, h - 1 - rr)[:, None], torch.minimum(cc, w - 1 - cc)[None, :]
        )
        depth = ((d - dist) / d).clamp_min(0)
        loss[1:-1, 1:-1] += cfg.sponge_strength * depth.square()
    return loss * fluid


def build_geometry(cfg: AcousticConfig) -> Geometry:
    """The grid of ``cfg``: scatterers (given or drawn from the seed), faces and losses."""
    h, w = cfg.grid
    wp = w + 2
    n = (h + 2) * wp
    cr = cfg.courant
    scat = cfg.scatterers if cfg.scatterers is not None else draw_scatterers(cfg)
    solid = _solid(cfg, scat)
    fluid = torch.zeros(h + 2, wp, dtype=torch.float64)
    fluid[1:-1, 1:-1] = (~solid).double()
    ff = fluid.flatten()
    loss = _losses(cfg, fluid)
    a = (1 - loss / 2) / (1 + loss / 2) * fluid
    b = 1 / (1 + loss / 2) * fluid
    geom = Geometry(
        grid=cfg.grid,
        scatterer_cells=scat,
        solid=solid,
        # faces between flat cells i and i + wp (vertical), i and i + 1 (horizontal)
        cx=(cr**2) * ff[:-wp] * ff[wp:],
        cy=(cr**2) * ff[:-1] * ff[1:],
        loss=loss,
        a_mid=a.flatten()[wp : n - wp].contiguous(),
        b_mid=b.flatten()[wp : n - wp].contiguous(),
        b_flat=b.flatten(),
    )
    for name, pts in cfg.transducers.items():
        for r, col in pts:
            for idx, _ in geom.bilinear(r, col):
                rr, cc = divmod(idx, wp)
                if solid[rr - 1, cc - 1]:
                    raise ValueError(f"{name}: position [{r}, {col}] touches a scatterer")
    return geom
