"""The seeded structure of the cavity: enclosure, wall dipoles, scatterers, metasurface, antennas."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...core.device import check_memory
from .config import MicrowaveConfig
from .green import pair_distances


def _boundary(cfg: MicrowaveConfig, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded smoothly deformed circle ``r(theta)``: a chaotic billiard for large deformation.

    Returns a fine polyline ``[K, 2]`` (closed, counter-clockwise) and its cumulative arc length.
    """
    m = torch.arange(2, 6, dtype=torch.float64)
    amp = torch.rand(4, generator=g, dtype=torch.float64) / m
    phase = 2 * math.pi * torch.rand(4, generator=g, dtype=torch.float64)
    theta = torch.linspace(0, 2 * math.pi, 4097, dtype=torch.float64)
    shape = (amp[:, None] * torch.cos(m[:, None] * theta + phase[:, None])).sum(0)
    shape = shape / shape.abs().max().clamp_min(1e-12)
    r = cfg.cavity_radius * (1 + cfg.deformation * shape)
    pts = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], -1)
    s = torch.cat([pts.new_zeros(1), (pts.diff(dim=0)).norm(dim=-1).cumsum(0)])
    return pts, s


def _along(pts: torch.Tensor, s: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """Points at arc lengths ``where`` (wrapped) on the polyline."""
    where = torch.remainder(where, s[-1])
    i = torch.searchsorted(s, where).clamp(1, len(s) - 1)
    t = ((where - s[i - 1]) / (s[i] - s[i - 1]))[:, None]
    return pts[i - 1] * (1 - t) + pts[i] * t


def _sample_inside(
    n: int, radius: float, avoid: torch.Tensor, min_dist: float, g: torch.Generator, what: str
) -> torch.Tensor:
    """``n`` seeded points uniform in a disc, ``min_dist`` from ``avoid`` and each other."""
    out = avoid.new_zeros(0, 2)
    for _ in range(2000 * max(n, 1)):
        if len(out) == n:
            return out
        u = torch.rand(2, generator=g, dtype=torch.float64)
        p = (
            radius
            * u[0].sqrt()
            * torch.stack([torch.cos(2 * math.pi * u[1]), torch.sin(2 * math.pi * u[1])])
        )
        others = torch.cat([avoid, out])
        if len(others) == 0 or (others - p).norm(dim=-1).min() >= min_dist:
            out = torch.cat([out, p[None]])
    if len(out) < n:
        raise ValueError(f"could not place {n} {what} in the cavity; enlarge cavity_radius")
    return out



@dataclass
class Dipoles:
    """Where the dipoles are and what they are, in the cavity's dipole order (tx, rx, wall,
    scatterers, metasurface); the metasurface resonances are set per query by the input."""

    positions: torch.Tensor
    """``[N, 2]`` positions (lambda0)."""
    kinds: list[str]
    """``tx``, ``rx``, ``wall``, ``scatterer`` or ``metasurface`` per dipole."""
    chi: torch.Tensor
    """``[N]`` coupling strengths."""
    gamma: torch.Tensor
    """``[N]`` absorptions (antennas: the port load)."""
    res_fixed: torch.Tensor
    """``[N - M]`` resonances of the fixed dipoles, disorder included."""
    ms_spread: torch.Tensor
    """``[M]`` disorder factor of each metasurface element's resonance."""
    ms_states: torch.Tensor
    """The element resonances per state (``MicrowaveConfig.ms_states``)."""

    @property
    def n_fixed(self) -> int:
        """Dipoles whose resonance does not depend on the input."""
        return len(self.res_fixed)


def _antennas(cfg: MicrowaveConfig, r_in: float, g: torch.Generator) -> torch.Tensor:
    """Antenna positions ``[n_tx + n_rx, 2]``: as given, or seeded 0.75 lambda0 apart inside."""
    ant = [cfg.tx_positions, cfg.rx_positions]
    given = torch.tensor([p for a in ant if a is not None for p in a], dtype=torch.float64)
    groups: list[torch.Tensor] = []
    for pos, n in zip(ant, (cfg.n_tx, cfg.n_rx), strict=True):
        if pos is None:
            drawn = _sample_inside(n, 0.8 * r_in, given.reshape(-1, 2), 0.75, g, "antennas")
            given = torch.cat([given.reshape(-1, 2), drawn])
            groups.append(drawn)
        else:
            groups.append(torch.as_tensor(pos, dtype=torch.float64).reshape(-1, 2))
    return torch.cat(groups)


def _check_spacing(positions: torch.Tensor, kinds: list[str]) -> None:
    d = pair_distances(positions)
    d.fill_diagonal_(math.inf)
    if d.min() < 0.02:
        i, j = divmod(int(d.argmin()), len(d))
        raise ValueError(
            f"dipoles {i} ({kinds[i]}) and {j} ({kinds[j]}) are {d.min():.3g} "
            "lambda0 apart (< 0.02): move the antennas or change the geometry"
        )


def build_dipoles(cfg: MicrowaveConfig, n_ms: int) -> Dipoles:
    """The cavity's dipoles for ``n_ms`` metasurface elements, drawn from ``cfg.seed``."""
    g = torch.Generator().manual_seed(cfg.seed)
    pts, s = _boundary(cfg, g)
    perimeter = float(s[-1])
    n_wall = max(3, round(perimeter / cfg.wall_spacing)) if cfg.walls else 0
    wall = _along(pts, s, torch.arange(n_wall, dtype=torch.float64) * perimeter / max(n_wall, 1))
    jitter = cfg.wall_jitter * (2 * torch.rand(n_wall, generator=g, dtype=torch.float64) - 1)
    wall = wall * (1 + jitter / wall.norm(dim=-1))[:, None]
    ms_len = n_ms * cfg.ms_spacing
    if ms_len > 0.8 * perimeter:
        raise ValueError(
            f"{n_ms} metasurface elements at ms_spacing={cfg.ms_spacing} need "
            f"{ms_len:.3g} lambda0 of wall, more than 80% of the perimeter "
            f"{perimeter:.3g}; enlarge cavity_radius or reduce ms_spacing"
        )
    n_all = cfg.n_tx + cfg.n_rx + n_wall + cfg.n_scatterers + n_ms
    n_freq = cfg.n_out // (cfg.n_tx * cfg.n_rx)
    check_memory(  # the Green's function table [f, N, N] and one chunk's [chunk, f, M, M]
        "n_in, n_out, n_scatterers, cavity_radius or chunk",
        16 * n_freq * (n_all**2 + cfg.chunk * n_ms**2),
        f"sim:microwave: {n_all} dipoles at {n_freq} frequencies",
    )
    start = perimeter * torch.rand(1, generator=g, dtype=torch.float64)
    ms = _along(pts, s, start + cfg.ms_spacing * (torch.arange(n_ms) + 0.5))
    ms = ms * (1 - cfg.ms_offset / ms.norm(dim=-1))[:, None]
    r_in = cfg.cavity_radius * (1 - cfg.deformation) - max(cfg.ms_offset, cfg.wall_jitter)
    if r_in < 1.0:
        raise ValueError(
            f"cavity_radius={cfg.cavity_radius} leaves {r_in:.3g} lambda0 inside the walls; "
            "use cavity_radius >= 1.5 (or less deformation)"
        )
    ant = _antennas(cfg, r_in, g)
    scat = _sample_inside(cfg.n_scatterers, r_in - 0.3, ant, 0.5, g, "scatterers")
    positions = torch.cat([ant, wall, scat, ms])
    kinds = (
        ["tx"] * cfg.n_tx
        + ["rx"] * cfg.n_rx
        + ["wall"] * n_wall
        + ["scatterer"] * cfg.n_scatterers
        + ["metasurface"] * n_ms
    )
    _check_spacing(positions, kinds)
    # Lorentzian parameters of the fixed dipoles (resonance spread by `disorder`)
    n_ant = cfg.n_tx + cfg.n_rx
    n_fixed = len(positions) - n_ms
    counts = {"antenna": n_ant, "wall": n_wall, "scatterer": cfg.n_scatterers, "ms": n_ms}

    def per_dipole(param: str, kinds: tuple[str, ...] = tuple(counts)) -> torch.Tensor:
        values = [getattr(cfg, f"{k}_{param}") for k in kinds for _ in range(counts[k])]
        return torch.tensor(values, dtype=torch.float64)

    res = per_dipole("res", ("antenna", "wall", "scatterer"))  # metasurface: set by input
    spread = 1 + cfg.disorder * torch.randn(len(positions), generator=g, dtype=torch.float64)
    spread[:n_ant] = 1.0  # antennas are identical (a matched pair)
    return Dipoles(
        positions=positions,
        kinds=kinds,
        chi=per_dipole("chi"),
        gamma=per_dipole("gamma"),
        res_fixed=res * spread[:n_fixed],
        ms_spread=spread[n_fixed:],
        ms_states=torch.tensor(cfg.ms_states, dtype=torch.float64),
    )
