"""Microwave cavity with a programmable metasurface: a 2-D coupled-dipole model.

In the spirit of PhysFad (Faqiri, Saigre-Tardif, del Hougne et al., IEEE Trans. Antennas
Propag. 2022; our own normalisation, not their numbers), every object in the cavity is a
point dipole in 2-D (a scalar, TM-polarised field): transmitting and receiving antennas,
"environment" dipoles lining the walls of an irregular (chaotic) enclosure plus a few
scatterers inside it, and the elements of a programmable metasurface on part of the wall.

Physics (units: lengths in centre wavelengths ``lambda0 = c / f0``, ``f0`` the band centre;
frequencies normalised, ``nu = f / f0``, so ``k r = 2 pi nu r``):

- dipole ``i`` has the Lorentzian inverse polarisability
  ``1/alpha_i(nu) = (nu_i^2 - nu^2 - i gamma_i nu) / chi_i^2``: resonance ``nu_i``,
  absorption ``gamma_i`` (for an antenna: its port load) and coupling strength ``chi_i``
  (radiative linewidth: HWHM ``chi^2 / 8``, ``Q_rad = 4 / chi^2``; absorption Q ``1/gamma``);
- dipoles couple through the 2-D Green's function ``G(r) = (i/4) H0^(1)(k r)``. Its
  self-term is regularised in the standard way: the divergent real part is absorbed into the
  (dressed) resonance ``nu_i`` and the imaginary part ``i/4`` (radiation damping) is kept;
- the dipole moments solve ``W p = e`` with ``W = diag(1/alpha) - G``, ``e`` the drive (1 on
  the transmitting antenna); the transfer function is ``H_rt = [W^-1]_rt``, and the reported
  complex transmission is ``s_rt = 2 sqrt(d_r d_t) H_rt`` with ``d = gamma nu / chi^2`` the
  antennas' load conductance. Power balance ``Im p_t = sum_i d_i |p_i|^2 + p^H J p / 4``
  (supplied = absorbed + radiated, ``d_i = gamma_i nu / chi_i^2 >= 0``, ``J_ij = J0(k r_ij)``
  positive semi-definite) gives ``d_r |p_r|^2 <= |p_t| - d_t |p_t|^2 <= 1 / (4 d_t)``, i.e.
  ``|s| <= 1``: a passive cavity delivers at most the source's available power to the
  receiver (nearly reached when only the two matched ports absorb).

Default structure (seeded): a smoothly deformed circle of mean radius 2.5 lambda0 lined with
dipoles every 0.15 lambda0, resonant well below the band (``wall_res=0.7``: driven above
resonance they respond like a metal, and about 3% of the supplied power leaks out), six
scatterers, 40 metasurface elements 0.2 lambda0 apart on an arc of the wall, and two matched
antennas (load = radiation at ``f0``) 0.75 lambda0 or more apart inside.

``W`` is complex symmetric, so the cavity is reciprocal: ``s_rt = s_tr``.

Input: ``n_in`` features with 4 levels each (2 bits). With ``elements_per_feature=2`` (the
default, the paper's 40-bit metasurface for 20 features) feature ``j`` drives two adjacent
1-bit elements, level ``= 2 b_hi + b_lo``; a bit switches its element's resonance between
``ms_states[0]`` (off, out of band) and ``ms_states[1]`` (on, in band). With
``elements_per_feature=1`` each feature drives one 2-bit (varactor-like) element whose
resonance is ``ms_states[level]``, interpolated linearly between levels: a continuous
relaxation, so :meth:`forward_with_grad` has a true gradient with respect to the input. With
1-bit elements the level -> bits map is piecewise constant: the gradient is exactly zero
(the graph still connects, so ``forward_with_grad`` runs).

Output: ``gain * |s_rt(f)|`` at ``n_out / (n_tx n_rx)`` frequencies per antenna pair,
link-major, ``gain`` scaling the mean output to about 1, then optional ``noise`` effects.

Speed: multiple scattering makes ``s`` a nonlinear (rational) function of the metasurface
state. Only the metasurface diagonal of ``W`` changes between samples, so the fixed dipoles
(antennas, walls, scatterers) are eliminated once per frequency at construction (Schur
complement); a query then solves one ``M x M`` complex system per sample and frequency
(``M`` metasurface elements), batched with ``torch.linalg.solve`` in chunks of samples,
in complex128 for float64 inputs and complex64 otherwise (relative error ~1e-4), on the
input's torch device. :meth:`MetasurfaceCavity.dipole_moments` keeps the full dense solve as
a reference (about 25x slower with the defaults).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from scipy import special

from ..core.device import Device, DeviceSpec, Domain
from ..core.effects import Effect, apply_effects, make_effects
from ..core.perturbation import Perturbable, Sudden

LEVELS = (0.0, 1.0, 2.0, 3.0)
"""The 4 input levels (2 bits) of every feature."""


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


@dataclass
class MicrowaveConfig:
    n_in: int = 20
    """Input features; each has 4 levels {0, 1, 2, 3} and drives its own metasurface elements."""
    n_out: int = 20
    """Outputs: ``n_freq x n_tx x n_rx`` with ``n_freq = n_out / (n_tx n_rx)``."""
    f_min_ghz: float = 5.0
    f_max_ghz: float = 5.5
    """The measured band; ``f0`` (centre) sets the unit of length ``lambda0 = c / f0``."""
    elements_per_feature: int = 2
    """2: two 1-bit elements per feature (40-bit metasurface for 20 features); 1: one 2-bit
    element with 4 resonance states (differentiable relaxation)."""
    ms_states: tuple[float, ...] | None = None
    """Element resonances ``nu = f_res / f0`` per state: 2 (off, on) for 1-bit elements, 4
    for 2-bit elements. Default (1.3, 1.0) and (0.91, 0.97, 1.03, 1.09)."""
    ms_chi: float = 0.6
    ms_gamma: float = 0.01
    ms_spacing: float = 0.2
    """Distance between neighbouring metasurface elements along the wall (lambda0)."""
    ms_offset: float = 0.15
    """Distance of the metasurface in front of the wall (lambda0)."""
    n_tx: int = 1
    n_rx: int = 1
    tx_positions: list[list[float]] | None = None
    rx_positions: list[list[float]] | None = None
    """Antenna positions (lambda0, cavity centre at the origin); default: seeded, inside."""
    antenna_res: float = 1.0
    antenna_chi: float = 0.5
    antenna_gamma: float | None = None
    """Port load of the antennas; default ``chi^2 / 4``: load = radiation (matched) at f0."""
    cavity_radius: float = 2.5
    """Mean radius of the enclosure (lambda0)."""
    deformation: float = 0.2
    """Relative depth of the seeded smooth wall deformation (0: a circle; > 0.1: chaotic)."""
    walls: bool = True
    """False removes the enclosure (free space; for tests and open-metasurface set-ups)."""
    wall_spacing: float = 0.15
    wall_jitter: float = 0.03
    """Seeded radial jitter of the wall dipoles (lambda0)."""
    wall_res: float = 0.7
    wall_chi: float = 1.5
    wall_gamma: float = 0.01
    n_scatterers: int = 6
    scatterer_res: float = 1.05
    scatterer_chi: float = 1.0
    scatterer_gamma: float = 0.02
    disorder: float = 0.005
    """Seeded relative spread of every resonance (fabrication tolerance)."""
    gain: float | None = None
    """Output scale; default: 1 / mean |s| over 64 seeded random configurations."""
    noise: list[dict[str, Any]] = field(default_factory=list)
    """Output effects (after ``gain``), e.g. ``[{"kind": "readout", "sigma": 0.01}]``."""
    switch_time_s: float = 2e-4
    """Metasurface reconfiguration (PIN-diode switching + settling) per query."""
    measure_time_s: float = 8e-4
    """Frequency sweep (VNA) per query."""
    source_power_w: float = 1e-3
    bias_power_w: float = 0.0
    """Metasurface bias power drawn while a configuration is held."""
    chunk: int = 50
    """Samples per batched solve (bounds memory: chunk x n_freq x M x M complex numbers)."""
    perturbations: list[dict[str, Any]] = field(default_factory=list)
    """Resonance drift and sudden changes (see physnn.core.perturbation); empty: stable."""
    seed: int = 0
    clip: bool = False

    def __post_init__(self):
        if self.n_in < 1:
            raise ValueError(f"n_in must be >= 1, got {self.n_in}")
        if self.n_tx < 1 or self.n_rx < 1:
            raise ValueError(f"n_tx and n_rx must be >= 1, got {self.n_tx}, {self.n_rx}")
        links = self.n_tx * self.n_rx
        if self.n_out < 1 or self.n_out % links:
            raise ValueError(f"n_out={self.n_out} must be a positive multiple of n_tx * n_rx = {links}")
        if not 0 < self.f_min_ghz <= self.f_max_ghz:
            raise ValueError(
                f"band needs 0 < f_min_ghz <= f_max_ghz, got [{self.f_min_ghz}, {self.f_max_ghz}]"
            )
        if self.n_out // links > 1 and self.f_min_ghz == self.f_max_ghz:
            raise ValueError("several frequencies need f_min_ghz < f_max_ghz")
        if self.elements_per_feature not in (1, 2):
            raise ValueError(
                f"elements_per_feature must be 1 (2-bit elements) or 2 (1-bit elements), "
                f"got {self.elements_per_feature}"
            )
        n_states = 4 if self.elements_per_feature == 1 else 2
        if self.ms_states is None:
            self.ms_states = (0.91, 0.97, 1.03, 1.09) if n_states == 4 else (1.3, 1.0)
        self.ms_states = tuple(float(s) for s in self.ms_states)
        if len(self.ms_states) != n_states or any(not s > 0 for s in self.ms_states):
            raise ValueError(
                f"ms_states must hold {n_states} positive resonances (in units of f0) for "
                f"elements_per_feature={self.elements_per_feature}, got {self.ms_states}"
            )
        for name in (
            "ms_chi",
            "antenna_chi",
            "wall_chi",
            "scatterer_chi",
            "antenna_res",
            "wall_res",
            "scatterer_res",
            "cavity_radius",
            "ms_spacing",
            "wall_spacing",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.antenna_gamma is None:
            self.antenna_gamma = self.antenna_chi**2 / 4
        if not self.antenna_gamma > 0:
            raise ValueError(f"antenna_gamma (the port load) must be > 0, got {self.antenna_gamma}")
        for name in (
            "ms_gamma",
            "wall_gamma",
            "scatterer_gamma",
            "disorder",
            "deformation",
            "wall_jitter",
            "ms_offset",
            "switch_time_s",
            "measure_time_s",
            "source_power_w",
            "bias_power_w",
        ):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.deformation >= 0.5:
            raise ValueError(f"deformation must be < 0.5, got {self.deformation}")
        if self.n_scatterers < 0:
            raise ValueError(f"n_scatterers must be >= 0, got {self.n_scatterers}")
        if self.chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {self.chunk}")
        if self.gain is not None and not self.gain > 0:
            raise ValueError(f"gain must be > 0, got {self.gain}")
        for name, n in (("tx_positions", self.n_tx), ("rx_positions", self.n_rx)):
            pos = getattr(self, name)
            if pos is None:
                continue
            pos = [[float(c) for c in p] for p in pos]
            if len(pos) != n or any(len(p) != 2 for p in pos):
                raise ValueError(f"{name} must hold {n} (x, y) positions, got {pos}")
            setattr(self, name, pos)


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


class MetasurfaceCavity(Perturbable, Device):
    """``sim:microwave``: a seeded 2-D coupled-dipole cavity with a programmable metasurface.

    Dipole order: transmitters, receivers, wall dipoles, scatterers, metasurface elements
    (feature ``j`` owns elements ``j * elements_per_feature ...``). See the module docstring
    for the physics; :meth:`transfer` gives the complex transmission, :meth:`dipole_moments`
    the dense reference solve, :meth:`plot_spectra` and :meth:`plot_geometry` the pictures.
    """

    differentiable = True
    SUDDEN_ACTIONS = {"move": {"count": 1, "distance": 0.5}, "flip": {"count": 4}}
    """Sudden changes: ``move`` displaces ``count`` environment scatterers by ``distance``
    (lambda0) in seeded directions (an object moved in the room); ``flip`` inverts the
    response of ``count`` metasurface elements (a diode soldered the wrong way round or a
    bias line swapped: the element's on and off states trade places)."""
    DRIFT_COUPLING = -1e-4
    """1/K: relative shift of every dipole's resonance per kelvin: thermal expansion of an
    aluminium enclosure (-23 ppm/K) plus the temperature coefficients of the elements' diodes
    and the PCB substrate (order -1e-4/K together)."""
    DRIFT_UNIT = "1/K"

    def __init__(self, **kwargs: Any):
        cfg = MicrowaveConfig(**kwargs)
        self.config = cfg
        self.noise: list[Effect] = make_effects(cfg.noise)
        period = cfg.switch_time_s + cfg.measure_time_s
        spec = DeviceSpec(
            name="sim:microwave",
            n_in=cfg.n_in,
            n_out=cfg.n_out,
            domain=Domain(levels=LEVELS),
            output_units="|S21| x gain",
            time_per_query_s=period,
            energy_per_query_j=cfg.source_power_w * cfg.measure_time_s + cfg.bias_power_w * period,
        )
        super().__init__(spec, seed=cfg.seed, clip=cfg.clip)
        self.n_links = cfg.n_tx * cfg.n_rx
        self.n_freq = cfg.n_out // self.n_links
        self.n_ant = cfg.n_tx + cfg.n_rx
        self.n_ms = cfg.n_in * cfg.elements_per_feature
        self.f0_ghz = 0.5 * (cfg.f_min_ghz + cfg.f_max_ghz)
        self.frequencies_ghz = torch.linspace(
            cfg.f_min_ghz, cfg.f_max_ghz, self.n_freq, dtype=torch.float64
        )
        self.nu = self.frequencies_ghz / self.f0_ghz
        self._build_geometry()
        self._precompute()
        self._cache: dict[tuple, dict[str, torch.Tensor]] = {}
        self._flipped: torch.Tensor | None = None
        self.gain = float(cfg.gain) if cfg.gain is not None else self._reference_gain()
        self._init_perturbations(cfg.perturbations)
        if self.perturbed:
            self._pristine = (self.positions.clone(), self.res_fixed.clone(), self.ms_spread.clone())

    # -- perturbation hooks (see physnn.core.perturbation) ----------------------------
    def _perturb_reset(self) -> None:
        self.positions = self._pristine[0].clone()
        self._flipped = None

    def _perturb_sudden(self, event: Sudden, gen: torch.Generator) -> str:
        cfg = self.config
        if event.action == "flip":
            k = max(0, min(int(event.params["count"]), self.n_ms))
            idx = torch.randperm(self.n_ms, generator=gen)[:k]
            flip = torch.zeros(self.n_ms, dtype=torch.bool) if self._flipped is None else self._flipped
            flip = flip.clone()
            flip[idx] = ~flip[idx]
            self._flipped = flip
            return f"flipped metasurface elements {sorted(idx.tolist())}"
        first = self.n_ant + self.kinds.count("wall")
        scat = list(range(first, first + cfg.n_scatterers))
        order = torch.randperm(len(scat), generator=gen).tolist() if scat else []
        r_in = cfg.cavity_radius * (1 - cfg.deformation) - max(cfg.ms_offset, cfg.wall_jitter) - 0.3
        dist = float(event.params["distance"])
        done = []
        for j in order[: int(event.params["count"])]:
            i = scat[j]
            for _ in range(200):
                ang = 2 * math.pi * float(torch.rand((), generator=gen, dtype=torch.float64))
                new = self.positions[i] + dist * torch.tensor([math.cos(ang), math.sin(ang)],
                                                              dtype=torch.float64)
                others = torch.cat([self.positions[:i], self.positions[i + 1 :]])
                if float(new.norm()) <= r_in and float((others - new).norm(dim=-1).min()) >= 0.3:
                    self.positions[i] = new
                    done.append(f"moved scatterer {i - first} by {dist:g} lambda0")
                    break
        return "; ".join(done) or "move: no free place, nothing changed"

    def _perturb_rebuild(self, delta_k: float, coupling: float) -> None:
        scale = 1.0 + coupling * delta_k
        if not scale > 0:
            raise ValueError(f"{self.spec.name}: drift to dT = {delta_k:.4g} K gives resonances <= 0")
        self.res_fixed = self._pristine[1] * scale
        self.ms_spread = self._pristine[2] * scale
        self._precompute()
        self._cache.clear()

    # -- structure ---------------------------------------------------------------------
    def _build_geometry(self) -> None:
        cfg = self.config
        g = torch.Generator().manual_seed(cfg.seed)
        pts, s = _boundary(cfg, g)
        perimeter = float(s[-1])
        n_wall = max(3, round(perimeter / cfg.wall_spacing)) if cfg.walls else 0
        wall = _along(pts, s, torch.arange(n_wall, dtype=torch.float64) * perimeter / max(n_wall, 1))
        jitter = cfg.wall_jitter * (2 * torch.rand(n_wall, generator=g, dtype=torch.float64) - 1)
        wall = wall * (1 + jitter / wall.norm(dim=-1))[:, None]
        ms_len = self.n_ms * cfg.ms_spacing
        if ms_len > 0.8 * perimeter:
            raise ValueError(
                f"{self.n_ms} metasurface elements at ms_spacing={cfg.ms_spacing} need "
                f"{ms_len:.3g} lambda0 of wall, more than 80% of the perimeter "
                f"{perimeter:.3g}; enlarge cavity_radius or reduce ms_spacing"
            )
        start = perimeter * torch.rand(1, generator=g, dtype=torch.float64)
        ms = _along(pts, s, start + cfg.ms_spacing * (torch.arange(self.n_ms) + 0.5))
        ms = ms * (1 - cfg.ms_offset / ms.norm(dim=-1))[:, None]
        r_in = cfg.cavity_radius * (1 - cfg.deformation) - max(cfg.ms_offset, cfg.wall_jitter)
        if r_in < 1.0:
            raise ValueError(
                f"cavity_radius={cfg.cavity_radius} leaves {r_in:.3g} lambda0 inside the walls; "
                "use cavity_radius >= 1.5 (or less deformation)"
            )
        ant = [cfg.tx_positions, cfg.rx_positions]
        given = torch.tensor([p for a in ant if a is not None for p in a], dtype=torch.float64)
        for i, n in enumerate((cfg.n_tx, cfg.n_rx)):
            if ant[i] is None:  # seeded, 0.75 lambda0 apart, inside the enclosure
                ant[i] = _sample_inside(n, 0.8 * r_in, given.reshape(-1, 2), 0.75, g, "antennas")
                given = torch.cat([given.reshape(-1, 2), ant[i]])
        ant = torch.cat([torch.as_tensor(a, dtype=torch.float64).reshape(-1, 2) for a in ant])
        scat = _sample_inside(cfg.n_scatterers, r_in - 0.3, ant, 0.5, g, "scatterers")
        self.positions = torch.cat([ant, wall, scat, ms])
        self.kinds = (
            ["tx"] * cfg.n_tx
            + ["rx"] * cfg.n_rx
            + ["wall"] * n_wall
            + ["scatterer"] * cfg.n_scatterers
            + ["metasurface"] * self.n_ms
        )
        self.n_fixed = len(self.positions) - self.n_ms
        d = pair_distances(self.positions)
        d.fill_diagonal_(math.inf)
        if d.min() < 0.02:
            i, j = divmod(int(d.argmin()), len(d))
            raise ValueError(
                f"dipoles {i} ({self.kinds[i]}) and {j} ({self.kinds[j]}) are {d.min():.3g} "
                "lambda0 apart (< 0.02): move the antennas or change the geometry"
            )
        # Lorentzian parameters of the fixed dipoles (resonance spread by `disorder`)
        counts = {"antenna": self.n_ant, "wall": n_wall, "scatterer": cfg.n_scatterers,
                  "ms": self.n_ms}

        def per_dipole(param: str, kinds=tuple(counts)) -> torch.Tensor:
            values = [getattr(cfg, f"{k}_{param}") for k in kinds for _ in range(counts[k])]
            return torch.tensor(values, dtype=torch.float64)

        res = per_dipole("res", ("antenna", "wall", "scatterer"))  # metasurface: set by input
        self.chi = per_dipole("chi")
        self.gamma = per_dipole("gamma")
        spread = 1 + cfg.disorder * torch.randn(len(self.positions), generator=g, dtype=torch.float64)
        spread[: self.n_ant] = 1.0  # antennas are identical (a matched pair)
        self.res_fixed = res * spread[: self.n_fixed]
        self.ms_spread = spread[self.n_fixed :]
        self.ms_states = torch.tensor(cfg.ms_states, dtype=torch.float64)

    def inverse_polarizability(self, res: torch.Tensor, idx: slice | torch.Tensor) -> torch.Tensor:
        """``(res^2 - nu^2 - i gamma nu) / chi^2`` for dipoles ``idx`` with resonances ``res``.

        ``res`` is ``[..., n]``; returns ``[..., n_freq, n]`` complex.
        """
        nu = self.nu.to(device=res.device, dtype=res.dtype)[:, None]
        chi2 = self.chi[idx].to(device=res.device, dtype=res.dtype) ** 2
        gam = self.gamma[idx].to(device=res.device, dtype=res.dtype)
        re = (res.unsqueeze(-2) ** 2 - nu**2) / chi2
        return torch.complex(re, (-gam * nu / chi2).expand_as(re))

    def _green(self) -> torch.Tensor:
        """``G[f, i, j]``, the coupling between dipoles, self-terms ``i/4`` (regularised)."""
        d = pair_distances(self.positions)
        kr = 2 * math.pi * self.nu[:, None, None] * d
        eye = torch.eye(len(d), dtype=torch.bool)
        g = green_2d(torch.where(eye, torch.ones_like(kr), kr))
        return torch.where(eye, torch.complex(torch.zeros_like(kr), 0.25 * torch.ones_like(kr)), g)

    def _precompute(self) -> None:
        """Eliminate the fixed dipoles once per frequency (complex128, on the CPU)."""
        nf = self.n_fixed
        g = self._green()
        self._g = g
        w_ff = (
            torch.diag_embed(self.inverse_polarizability(self.res_fixed, slice(0, nf))) - g[:, :nf, :nf]
        )
        g_mf = g[:, nf:, :nf]
        rhs = torch.cat(
            [
                g_mf.transpose(-1, -2),
                torch.eye(nf, self.n_ant, dtype=g.dtype).expand(len(g), nf, self.n_ant),
            ],
            dim=-1,
        )
        sol = torch.linalg.solve(w_ff, rhs)
        x_fm, a = sol[..., : self.n_ms], sol[..., self.n_ms :]
        self._h0 = a[:, : self.n_ant, :]  # [f, antenna, antenna] = [W_FF^-1] among antennas
        self._u = -g_mf @ a  # [f, M, antenna]
        self._s0 = -g[:, nf:, nf:] - g_mf @ x_fm  # [f, M, M]
        # load conductance of the antennas' ports: d = gamma nu / chi^2
        self._load = self.gamma[: self.n_ant] * self.nu[:, None] / self.chi[: self.n_ant] ** 2

    def _tensors(self, device: torch.device, cdtype: torch.dtype) -> dict[str, torch.Tensor]:
        key = (str(device), cdtype)
        if key not in self._cache:
            rdtype = torch.float64 if cdtype == torch.complex128 else torch.float32
            self._cache[key] = {
                "s0": self._s0.to(device, cdtype),
                "u": self._u.to(device, cdtype),
                "h0": self._h0.to(device, cdtype),
                "norm": (2 * (self._load[:, :, None] * self._load[:, None, :]).sqrt()).to(
                    device, rdtype
                ),
            }
        return self._cache[key]

    # -- the metasurface ---------------------------------------------------------------
    def element_resonances(self, x: torch.Tensor) -> torch.Tensor:
        """Resonance ``nu`` of every metasurface element for inputs ``x`` ``[B, n_in]`` -> ``[B, M]``."""
        states = self.ms_states.to(device=x.device, dtype=x.dtype)
        spread = self.ms_spread.to(device=x.device, dtype=x.dtype)
        flipped = None if self._flipped is None else self._flipped.to(x.device)
        if self.config.elements_per_feature == 2:
            lv = torch.round(x)  # zero gradient: the level -> bits map is piecewise constant
            hi = torch.floor(lv / 2)
            bits = torch.stack([hi, lv - 2 * hi], dim=-1).flatten(1)  # [B, 2 n_in]: hi, lo
            if flipped is not None:  # an inverted element: on and off trade places
                bits = torch.where(flipped, 1 - bits, bits)
            res = states[0] + (states[1] - states[0]) * bits
        else:  # piecewise-linear interpolation between the 4 states: a continuous relaxation
            i = torch.floor(x).clamp(0, 2)
            t = x - i
            i = i.long()
            res = states[i] * (1 - t) + states[i + 1] * t
            if flipped is not None:
                rev = states.flip(0)
                res = torch.where(flipped, rev[i] * (1 - t) + rev[i + 1] * t, res)
        return res * spread

    def transfer(self, x: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        """Complex transmission ``s[b, rx, tx, f]`` (``|s| <= 1``), the fast Schur path.

        ``reverse=True`` drives the receivers and probes the transmitters, returning
        ``s[b, tx, rx, f]`` (equal to the forward one transposed, by reciprocity).
        """
        cfg = self.config
        if x.dtype != torch.float64:  # single precision (complex64) for float32/16 inputs
            x = x.float()
        cdtype = torch.complex128 if x.dtype == torch.float64 else torch.complex64
        t = self._tensors(x.device, cdtype)
        tx = slice(0, cfg.n_tx)
        rx = slice(cfg.n_tx, self.n_ant)
        src, rcv = (rx, tx) if reverse else (tx, rx)
        u_src, u_rcv = t["u"][..., src], t["u"][..., rcv]
        h0 = t["h0"][:, rcv, src]
        norm = t["norm"][:, rcv, src]
        inv = self.inverse_polarizability(self.element_resonances(x), slice(self.n_fixed, None))
        out = []
        for b0 in range(0, x.shape[0], cfg.chunk):
            inv_b = inv[b0 : b0 + cfg.chunk].to(cdtype)
            s = t["s0"].expand(inv_b.shape[0], *t["s0"].shape).clone()
            s.diagonal(dim1=-2, dim2=-1).add_(inv_b)
            sol = torch.linalg.solve(s, u_src.expand(inv_b.shape[0], *u_src.shape))
            h = h0 + u_rcv.transpose(-1, -2) @ sol  # [b, f, rcv, src]
            out.append(h * norm)
        return torch.cat(out).permute(0, 2, 3, 1)

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        y = self.gain * self.transfer(x).abs().flatten(1).to(x.dtype)
        return apply_effects(y, self.noise, self.generator(y.device))

    # -- reference solve and diagnostics -----------------------------------------------
    def dipole_moments(self, x: torch.Tensor, source: int = 0) -> torch.Tensor:
        """All dipole moments ``p[b, f, i]`` for a unit drive on antenna ``source`` (index
        among tx then rx), from the full dense ``N x N`` solve (slow; a reference)."""
        x = x.detach().to("cpu", torch.float64)
        inv = torch.cat(
            [
                self.inverse_polarizability(self.res_fixed, slice(0, self.n_fixed)).expand(
                    x.shape[0], self.n_freq, self.n_fixed
                ),
                self.inverse_polarizability(self.element_resonances(x), slice(self.n_fixed, None)),
            ],
            dim=-1,
        )
        w = torch.diag_embed(inv) - self._g
        e = torch.zeros(len(self.positions), 1, dtype=w.dtype)
        e[source] = 1
        return torch.linalg.solve(w, e.expand(*w.shape[:-1], 1)).squeeze(-1)

    def power_balance(self, x: torch.Tensor, source: int = 0) -> dict[str, torch.Tensor]:
        """Power supplied ``Im p_source``, absorbed ``sum d_i |p_i|^2`` and radiated
        ``p^H (J0/4) p`` (each ``[B, n_freq]``) from the dense solve: supplied = absorbed +
        radiated, and both are >= 0 for a passive cavity."""
        p = self.dipole_moments(x, source)
        load = self.gamma * self.nu[:, None] / self.chi**2  # [f, N]
        absorbed = (load * p.abs().square()).sum(-1)
        kr = 2 * math.pi * self.nu[:, None, None] * pair_distances(self.positions)
        j = torch.complex(radiation_kernel(kr), torch.zeros_like(kr))
        radiated = (p.conj().unsqueeze(-2) @ j @ p.unsqueeze(-1)).squeeze(-1).squeeze(-1).real
        return {"supplied": p[..., source].imag, "absorbed": absorbed, "radiated": radiated}

    # -- pictures ----------------------------------------------------------------------
    def plot(self, fig: Any, x: torch.Tensor) -> bool:
        """Cavity geometry and |transfer function| spectra for a few inputs."""
        ax_g, ax_s = fig.subplots(1, 2)
        self.plot_geometry(ax_g)
        self.plot_spectra(ax_s, x[:4])
        return True

    def plot_spectra(self, ax: Any, x: torch.Tensor | None = None, n: int = 4) -> Any:
        """Draw the output ``gain |s(f)|`` (first link) against frequency on a matplotlib Axes.

        ``x``: configurations ``[B, n_in]`` (default: all off, all on, and ``n - 2`` seeded
        random ones). Noise-free. Returns ``ax``.
        """
        if x is None:
            g = torch.Generator().manual_seed(self.seed + 7)
            rand = torch.randint(0, 4, (max(n - 2, 0), self.config.n_in), generator=g)
            x = torch.cat(
                [
                    torch.zeros(1, self.config.n_in),
                    torch.full((1, self.config.n_in), 3.0),
                    rand.to(torch.float64),
                ]
            )[:n]
            labels = ["all 0", "all 3"] + [f"random {i}" for i in range(len(x) - 2)]
        else:
            labels = [f"input {i}" for i in range(len(x))]
        x = self.validate(x.to(torch.float64))
        with torch.no_grad():
            y = self.gain * self.transfer(x)[:, 0, 0].abs()
        f = self.frequencies_ghz.numpy()
        for yi, lab in zip(y.numpy(), labels, strict=True):
            ax.plot(f, yi, marker=".", label=lab)
        ax.set(
            xlabel="frequency (GHz)",
            ylabel=r"gain $\times$ |S21|",
            title=f"{self.spec.name}: {len(x)} metasurface configurations",
        )
        ax.legend(fontsize="small")
        return ax

    def plot_geometry(self, ax: Any) -> Any:
        """Draw the dipoles (walls, scatterers, metasurface, antennas) on a matplotlib Axes."""
        pos = self.positions.numpy()
        style = {
            "wall": ("k", "."),
            "scatterer": ("tab:gray", "o"),
            "metasurface": ("tab:orange", "s"),
            "tx": ("tab:red", "^"),
            "rx": ("tab:blue", "v"),
        }
        for kind, (color, marker) in style.items():
            sel = [i for i, k in enumerate(self.kinds) if k == kind]
            if sel:
                ax.scatter(pos[sel, 0], pos[sel, 1], c=color, marker=marker, s=14, label=kind)
        ax.set(aspect="equal", xlabel=r"x ($\lambda_0$)", ylabel=r"y ($\lambda_0$)")
        ax.legend(fontsize="small")
        return ax

    def _reference_gain(self) -> float:
        g = torch.Generator().manual_seed(self.seed + 1)
        x = torch.randint(0, 4, (64, self.config.n_in), generator=g).to(torch.float64)
        with torch.no_grad():
            return 1.0 / float(self.transfer(x).abs().mean())

    def describe(self) -> dict[str, Any]:
        d = asdict(self.config)
        d["ms_states"] = list(d["ms_states"])
        d["perturbations"] = self.describe_perturbations()
        if not d["perturbations"]:
            del d["perturbations"]
        return {"kind": "sim:microwave", **d}
