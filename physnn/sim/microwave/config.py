"""The parameters of ``sim:microwave``: one typed dataclass, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...core.device import finite_fields

LEVELS = (0.0, 1.0, 2.0, 3.0)
"""The 4 input levels (2 bits) of every feature."""
SOLVERS = ("dense", "flips")
"""The ways a query can solve the metasurface's system (``MicrowaveConfig.solver``)."""


@dataclass
class MicrowaveConfig:
    """Every parameter of ``sim:microwave`` with its default: the keys of a device description.

    Lengths are in centre wavelengths ``lambda0``, resonances in units of ``f0``; each dipole
    family (``ms`` metasurface, ``antenna``, ``wall``, ``scatterer``) has a resonance ``res``,
    a coupling strength ``chi`` (radiative linewidth) and an absorption ``gamma``.
    """

    n_in: int = 20
    """Input features; each has 4 levels {0, 1, 2, 3} and drives its own metasurface elements."""
    n_out: int = 20
    """Outputs: ``n_freq x n_tx x n_rx`` with ``n_freq = n_out / (n_tx n_rx)``."""
    f_min_ghz: float = 5.0
    """Lower edge of the measured band (GHz)."""
    f_max_ghz: float = 5.5
    """Upper edge of the measured band; ``f0`` (centre) sets the unit of length ``lambda0 = c / f0``."""
    elements_per_feature: int = 2
    """2: two 1-bit elements per feature (40-bit metasurface for 20 features); 1: one 2-bit
    element with 4 resonance states (differentiable relaxation)."""
    ms_states: tuple[float, ...] | None = None
    """Element resonances ``nu = f_res / f0`` per state: 2 (off, on) for 1-bit elements, 4
    for 2-bit elements. Default (1.3, 1.0) and (0.91, 0.97, 1.03, 1.09)."""
    ms_chi: float = 0.6
    """Coupling strength of a metasurface element (how strongly its state matters)."""
    ms_gamma: float = 0.01
    """Absorption of a metasurface element."""
    ms_spacing: float = 0.2
    """Distance between neighbouring metasurface elements along the wall (lambda0)."""
    ms_offset: float = 0.15
    """Distance of the metasurface in front of the wall (lambda0)."""
    n_tx: int = 1
    """Transmitting antennas."""
    n_rx: int = 1
    """Receiving antennas."""
    tx_positions: list[list[float]] | None = None
    """Transmitter positions (lambda0, cavity centre at the origin); default: seeded, inside."""
    rx_positions: list[list[float]] | None = None
    """Receiver positions, like ``tx_positions``."""
    antenna_res: float = 1.0
    """Antenna resonance (units of f0)."""
    antenna_chi: float = 0.5
    """Antenna coupling strength."""
    antenna_gamma: float | None = None
    """Port load of the antennas; default ``chi^2 / 4``: load = radiation (matched) at f0."""
    cavity_radius: float = 2.5
    """Mean radius of the enclosure (lambda0)."""
    deformation: float = 0.2
    """Relative depth of the seeded smooth wall deformation (0: a circle; > 0.1: chaotic)."""
    walls: bool = True
    """False removes the enclosure (free space; for tests and open-metasurface set-ups)."""
    wall_spacing: float = 0.15
    """Distance between neighbouring wall dipoles (lambda0)."""
    wall_jitter: float = 0.03
    """Seeded radial jitter of the wall dipoles (lambda0)."""
    wall_res: float = 0.7
    """Wall dipole resonance, below the band: driven above it they respond like a metal."""
    wall_chi: float = 1.5
    """Wall dipole coupling strength."""
    wall_gamma: float = 0.01
    """Wall dipole absorption (sets how much power leaks out of the cavity)."""
    n_scatterers: int = 6
    """Scatterers inside the cavity, at seeded positions."""
    scatterer_res: float = 1.05
    """Scatterer resonance."""
    scatterer_chi: float = 1.0
    """Scatterer coupling strength."""
    scatterer_gamma: float = 0.02
    """Scatterer absorption."""
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
    """Source power during the sweep (energy accounting)."""
    bias_power_w: float = 0.0
    """Metasurface bias power drawn while a configuration is held."""
    chunk: int = 50
    """Samples per batched solve (bounds memory: chunk x n_freq x M x M complex numbers)."""
    solver: str = "dense"
    """How a query solves the metasurface's coupled system. ``"dense"``: one ``M x M`` solve
    per sample and frequency. ``"flips"`` (1-bit elements only): only the ``k <= M / 2``
    elements whose bit differs from the nearer of two precomputed states (all off, all on)
    enter a ``k x k`` solve, a Woodbury update of that state's inverse: several times faster
    (python -m benchmarks.microwave), the same physics to rounding (complex64: ~1e-4
    relative, like ``dense``) but not bit-identical to it, so the presets keep ``dense``."""
    perturbations: list[dict[str, Any]] = field(default_factory=list)
    """Resonance drift and sudden changes (see physnn.core.perturbation); empty: stable."""
    seed: int = 0
    """Seed of the geometry, the disorder, the reference gain and the noise."""
    clip: bool = False
    """Snap out-of-domain inputs to the nearest level instead of rejecting them."""

    def __post_init__(self) -> None:
        finite_fields("sim:microwave", self)
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
        self._check_solver()
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

    def _check_solver(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"unknown solver {self.solver!r}; allowed: {', '.join(SOLVERS)}")
        if self.solver == "flips" and self.elements_per_feature != 2:
            raise ValueError("solver 'flips' needs 1-bit elements (elements_per_feature = 2), got "
                             f"elements_per_feature = {self.elements_per_feature}")
        states = self.ms_states or ()
        if self.solver == "flips" and len(set(states)) < 2:
            raise ValueError(f"solver 'flips' needs two different element states, got ms_states "
                             f"{self.ms_states}")
