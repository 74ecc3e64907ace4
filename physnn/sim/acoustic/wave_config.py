"""The parameters of ``sim:acoustic-wave``: one typed dataclass that fills in and checks them.

The raw-audio mode runs the cavity of ``sim:acoustic`` (same grid, walls, sponge, scatterers
and leapfrog scheme) driven by a waveform instead of tones. What this module decides:

* the time step: ``dt = courant * dx / c_max`` with ``c_max`` the fastest wave speed the
  cavity can hold (the background ``c`` or the top of ``speed_range`` in the design region),
  so the 2-D stability limit ``c_max dt / dx < 1 / sqrt(2)`` holds for every speed the design
  region may take (``1 / sqrt(2 (1 + 2 viscous_time / dt))`` with viscous absorption);
* how many steps a query runs: the waveform lasts ``n_in / sample_rate`` seconds, plus
  ``tail_s``; ``steps = ceil(duration / dt)``;
* where the source, the probes and the design region sit (defaults: the source on the middle
  row near the left edge, the probes in a column near the right edge, the design region
  between them), and that they fit the grid.

Every key is checked at construction with a one-line ValueError naming it; an unknown key is
a TypeError from the dataclass, which ``make_device`` reports in one line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ...core.device import check_memory, finite_fields, finite_number, whole_number
from .config import CFL_LIMIT, AcousticConfig

NAME = "sim:acoustic-wave"
"""The device kind."""

WAVE_READOUT_UNITS = {
    "energy": "Pa^2 s (time-integrated squared pressure at each probe)",
    "fraction": "probe energy / total energy of all probes",
}
"""The read-outs ``readout`` may choose, with their units."""

GRADIENTS = ("adjoint", "autograd")
"""How ``forward_with_grad`` differentiates the time loop (``WaveformConfig.gradient``)."""

MAX_STEPS = 50_000_000
"""Most time steps one query may run (a typo in ``sample_rate`` or ``dx`` is refused
before a query runs for hours)."""


def _position(value: Any, key: str) -> list[float]:
    """``[row, col]`` in cell coordinates (fractional = bilinear), or a ValueError naming ``key``."""
    try:
        r, col = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{NAME}: {key} must be a [row, col] position, got {value!r}") from None
    if not (math.isfinite(r) and math.isfinite(col)):
        raise ValueError(f"{NAME}: {key} must be finite, got {value!r}")
    return [int(r) if r == int(r) else r, int(col) if col == int(col) else col]


@dataclass
class WaveformConfig:
    """Every parameter of ``sim:acoustic-wave`` with its default: the keys of a description.

    ``None`` marks a parameter derived from the others; construction fills it in (so
    ``config.dt`` or ``config.probes`` hold the values the simulation uses).
    """

    n_in: int = 1000
    """Samples per waveform (``T``): the input is ``[batch, n_in]``, values in [-1, 1]."""
    sample_rate: float = 8000.0
    """Sample rate of the input waveforms in Hz."""
    grid: tuple[int, int] = (40, 40)
    """Cells (rows, cols) inside the walls."""
    dx: float = 0.01
    """Cell size in m. The grid carries a wave with little dispersion up to about
    ``c / (10 dx)`` (ten cells a wavelength): 3.4 kHz at the default."""
    c: float = 343.0
    """Background speed of sound in m/s."""
    rho: float = 1.2
    """Air density in kg/m^3."""
    courant: float = 0.5
    """``c_max dt / dx`` (``c_max``: the fastest speed, see ``speed_range``); must be below
    1/sqrt(2). Ignored when ``dt`` is given."""
    dt: float | None = None
    """Time step in s (default ``courant * dx / c_max``)."""
    viscous_time: float = 0.0
    """Lumped viscous relaxation time (s) of ``sim:acoustic`` (0 = none)."""
    wall_reflection: float = 0.0
    """Normal-incidence reflection coefficient of the walls, in (-1, 1]; 0 matches the
    impedance of air (with the sponge: an open, absorbing boundary, as wavetorch's PML)."""
    sponge_cells: int = 6
    """Width of the graded absorbing layer along the walls (0 = none)."""
    sponge_strength: float = 0.1
    """Pressure damping per step at the wall in the sponge (quadratic profile inwards). The
    sponge damps pressure only, so it reflects part of a wave: about 10 % of a pulse's peak
    at 6 cells and 0.1 (0.2: 15 %; 16 cells at 0.03: 5 %)."""
    source: list[float] | None = None
    """Source position ``[row, col]`` (cell centres are integers; fractional = bilinear).
    Default: the middle row, two cells inside the sponge on the left."""
    probes: list[list[float]] | None = None
    """Probe positions, like ``source``. Default: ``n_probes`` in a column two cells inside
    the sponge on the right."""
    n_probes: int = 3
    """Probes of the default layout (when ``probes`` is not given): the outputs."""
    scatterers: list[list[int]] | None = None
    """Rigid cells ``[row, col]``; default: ``n_scatterers`` seeded blocks (as ``sim:acoustic``)."""
    n_scatterers: int = 0
    """Scatterer blocks drawn from the seed when ``scatterers`` is not given."""
    design_region: list[int] | None = None
    """The cells whose wave speed can be trained, ``[row0, col0, row1, col1]`` (rows
    ``row0 .. row1 - 1``, cols ``col0 .. col1 - 1``); ``[]`` = none. Default: the box between
    the source and the probes, inside the sponge."""
    design_speed: float | list[list[float]] | None = None
    """Wave speed (m/s) in the design region: one number, or one per cell ``[rows][cols]``.
    Default: ``c``. ``describe()`` writes the trained values here."""
    speed_range: list[float] | None = None
    """``[lo, hi]`` (m/s) the design region's speed is clamped to in a query (default
    ``[c / 2, c]``); ``hi`` sets the time step."""
    volume_velocity: float = 3e-4
    """Source volume velocity per unit input, m^2/s (2-D: per unit depth): the waveform is
    the source's volume velocity ``q(t) = volume_velocity * x(t)``."""
    tail_s: float = 0.0
    """Seconds the cavity keeps running after the waveform ends (its echo still counts)."""
    label_tones: list[float] = field(default_factory=list)
    """Frequencies (Hz) of label tones; ``[]`` = none. With ``L`` of them the first ``L``
    inputs are not samples but the amplitudes of Hann-windowed tone bursts at these
    frequencies, summed and played for ``label_s`` seconds before the waveform (the other
    ``n_in - L`` inputs): a label PhyLL overlays on the first inputs becomes a tone burst
    of its class's frequency. Each must be below ``0.42 sample_rate`` (the resampler's
    pass band)."""
    label_s: float = 0.01
    """Length of the label tone burst in seconds (only with ``label_tones``)."""
    readout: str = "energy"
    """``energy``: ``sum_n p_probe^2 dt`` in Pa^2 s; ``fraction``: each probe's share of the
    probes' total (sums to 1: the class scores of a wavetorch classifier)."""
    gradient: str = "adjoint"
    """How ``forward_with_grad`` differentiates the time loop: ``adjoint`` (the loop run
    backwards with its operators transposed, ``wave_adjoint``: one in-place pass, memory
    ``[steps, batch, probes + design cells]``) or ``autograd`` (every step recorded, the
    reference the adjoint is tested against; ``checkpoint_steps`` bounds its memory)."""
    checkpoint_steps: int = 256
    """With ``gradient = "autograd"``, store the state every this many steps and recompute
    each segment in the backward pass (0 stores every step)."""
    source_power_w: float = 0.5
    """Electrical power of the source (for the energy accounting)."""
    noise: list[dict[str, Any]] = field(default_factory=list)
    """Output non-idealities, e.g. ``[{"kind": "readout", "sigma": 0.01}]``."""
    seed: int = 0
    """Seed of the scatterers and the noise."""
    clip: bool = False
    """Project out-of-domain inputs onto [-1, 1] instead of rejecting them."""

    def __post_init__(self) -> None:
        finite_fields(NAME, self)
        self._check_basics()
        self._resolve_time()
        h, w = self.grid
        check_memory("grid", 8 * 16 * (h + 2) * (w + 2), f"{NAME}: a {h}x{w} grid")
        self._resolve_positions()
        self._resolve_design()

    def _check_basics(self) -> None:
        """Widths, the medium, the walls, the read-out and the numbers that must be >= 0."""
        self.n_in = whole_number(f"{NAME}: n_in", self.n_in)
        self.n_probes = whole_number(f"{NAME}: n_probes", self.n_probes, lo=1, hi=4096)
        try:
            grid = tuple(whole_number(f"{NAME}: grid", v, lo=5, hi=16384) for v in self.grid)
        except TypeError:
            raise ValueError(f"{NAME}: grid must be [rows, cols], got {self.grid!r}") from None
        if len(grid) != 2:
            raise ValueError(f"{NAME}: grid must be [rows, cols], got {self.grid!r}")
        self.grid = (grid[0], grid[1])
        if self.readout not in WAVE_READOUT_UNITS:
            raise ValueError(
                f"{NAME}: readout must be one of {sorted(WAVE_READOUT_UNITS)}, got {self.readout!r}"
            )
        for key in ("sample_rate", "dx", "c", "rho", "courant"):
            finite_number(f"{NAME}: {key}", getattr(self, key), lo=0, strict=True)
        for key in ("viscous_time", "tail_s", "volume_velocity", "source_power_w",
                    "sponge_strength", "wall_reflection"):
            floor = None if key == "wall_reflection" else 0
            finite_number(f"{NAME}: {key}", getattr(self, key), lo=floor)
        if self.dt is not None:
            finite_number(f"{NAME}: dt", self.dt, lo=0, strict=True)
        if not -1 < self.wall_reflection <= 1:
            raise ValueError(f"{NAME}: wall_reflection must be in (-1, 1], got {self.wall_reflection}")
        self.sponge_cells = whole_number(f"{NAME}: sponge_cells", self.sponge_cells, lo=0)
        if 2 * self.sponge_cells + 3 > min(self.grid):
            raise ValueError(f"{NAME}: sponge_cells={self.sponge_cells} does not fit grid {self.grid}")
        self.n_scatterers = whole_number(f"{NAME}: n_scatterers", self.n_scatterers, lo=0)
        self.checkpoint_steps = whole_number(f"{NAME}: checkpoint_steps", self.checkpoint_steps, lo=0)
        if self.gradient not in GRADIENTS:
            raise ValueError(f"{NAME}: gradient must be one of {list(GRADIENTS)}, got {self.gradient!r}")
        self._check_label_tones()
        rng = self.speed_range if self.speed_range is not None else [self.c / 2, self.c]
        ok = isinstance(rng, list | tuple) and len(rng) == 2
        for v in rng if ok else []:
            finite_number(f"{NAME}: speed_range", v, lo=0, strict=True)
        if not ok or not rng[0] <= rng[1]:
            raise ValueError(f"{NAME}: speed_range must be [lo, hi] with 0 < lo <= hi, got {rng!r}")
        self.speed_range = [float(rng[0]), float(rng[1])]

    def _check_label_tones(self) -> None:
        """``label_tones``: a list of frequencies inside the pass band, fewer than ``n_in``."""
        tones = self.label_tones
        if not isinstance(tones, list | tuple):
            raise ValueError(f"{NAME}: label_tones must be a list of frequencies (Hz), got {tones!r}")
        top = 0.42 * self.sample_rate
        for f in tones:
            finite_number(f"{NAME}: label_tones", f, lo=0, strict=True)
            if f >= top:
                raise ValueError(f"{NAME}: label_tones {f!r} Hz is above the pass band (0.42 "
                                 f"sample_rate = {top:g} Hz)")
        self.label_tones = [float(f) for f in tones]
        if len(self.label_tones) >= self.n_in:
            raise ValueError(f"{NAME}: {len(self.label_tones)} label_tones leave no waveform "
                             f"samples of the n_in={self.n_in} inputs")
        finite_number(f"{NAME}: label_s", self.label_s, lo=0, strict=True)

    @property
    def n_label(self) -> int:
        """Inputs that are label-tone amplitudes (the first ``len(label_tones)``)."""
        return len(self.label_tones)

    @property
    def label_samples(self) -> int:
        """Samples (at ``sample_rate``) of the label tone burst; 0 without label tones."""
        return max(1, round(self.label_s * self.sample_rate)) if self.label_tones else 0

    @property
    def n_samples(self) -> int:
        """Samples of the drive: the label burst, then the ``n_in - n_label`` waveform samples."""
        return self.label_samples + self.n_in - self.n_label

    @property
    def c_max(self) -> float:
        """The fastest wave speed of the cavity (background or design region): sets ``dt``."""
        return max(self.c, self.speed_range[1] if self.speed_range else self.c)

    def _resolve_time(self) -> None:
        """A stable time step and the number of steps a query runs."""
        if self.dt is None:
            self.dt = self.courant * self.dx / self.c_max
        self.courant = self.c_max * self.dt / self.dx
        limit = CFL_LIMIT / math.sqrt(1 + 2 * self.viscous_time / self.dt)
        if not 0 < self.courant < limit:
            raise ValueError(
                f"{NAME}: unstable time step: c_max*dt/dx = {self.courant:.6g} (c_max={self.c_max:g} "
                f"m/s, dt={self.dt:.6g} s, dx={self.dx:g} m) must be below the 2-D stability limit "
                f"{limit:.6f}; lower courant or dt, or raise dx"
            )
        if self.steps > MAX_STEPS:
            raise ValueError(
                f"{NAME}: a query would run {self.steps:,} time steps (over {MAX_STEPS:,}); lower "
                "n_in or tail_s, or raise sample_rate or dt"
            )

    @property
    def duration_s(self) -> float:
        """Seconds one query runs: the label burst (if any), the waveform, then ``tail_s``."""
        return self.n_samples / self.sample_rate + self.tail_s

    @property
    def steps(self) -> int:
        """Time steps one query runs."""
        return max(1, math.ceil(self.duration_s / self.time_step - 1e-9))

    @property
    def time_step(self) -> float:
        """``dt`` (resolved)."""
        if self.dt is None:
            raise RuntimeError("WaveformConfig.dt was read before it was resolved")
        return float(self.dt)

    def _inner(self) -> tuple[int, int, int, int]:
        """Rows and cols just inside the sponge: ``r_lo, r_hi, c_lo, c_hi`` (inclusive)."""
        h, w = self.grid
        m = self.sponge_cells + 2 if self.sponge_cells else 1
        return m, h - 1 - m, m, w - 1 - m

    def _resolve_positions(self) -> None:
        """Source and probe positions (defaults from the grid), inside the grid and distinct."""
        r_lo, r_hi, c_lo, c_hi = self._inner()
        mid = (self.grid[0] - 1) // 2
        if self.source is None:
            self.source = [mid, c_lo]
        if self.probes is None:  # evenly spaced, symmetric about the source's row
            n, gap = self.n_probes, (r_hi - r_lo) / self.n_probes
            rows = [min(r_hi, max(r_lo, mid + round(gap * (k - (n - 1) / 2)))) for k in range(n)]
            self.probes = [[r, c_hi] for r in rows]
        self.source = _position(self.source, "source")
        if not isinstance(self.probes, list | tuple) or not self.probes:
            raise ValueError(
                f"{NAME}: probes must be a non-empty list of [row, col], got {self.probes!r}"
            )
        self.probes = [_position(p, f"probes[{k}]") for k, p in enumerate(self.probes)]
        self.n_probes = len(self.probes)
        h, w = self.grid
        for key, (r, col) in [("source", self.source)] + [
                (f"probes[{k}]", p) for k, p in enumerate(self.probes)]:
            if not (0 <= r <= h - 1 and 0 <= col <= w - 1):
                raise ValueError(f"{NAME}: {key} [{r:g}, {col:g}] is outside grid {self.grid}")
        if len({tuple(p) for p in self.probes}) != len(self.probes):
            raise ValueError(f"{NAME}: probes must be distinct, got {self.probes}")
        if self.scatterers is not None:
            try:
                self.scatterers = [[int(a), int(b)] for a, b in self.scatterers]
            except (TypeError, ValueError):
                raise ValueError(
                    f"{NAME}: scatterers must be a list of [row, col] cells, got {self.scatterers!r}"
                ) from None

    def _resolve_design(self) -> None:
        """The design region (default: between source and probes) and its initial speed."""
        if self.design_region is None:
            r_lo, r_hi, _, _ = self._inner()
            c0 = math.floor(self.source_point[1]) + 3
            c1 = math.ceil(min(p[1] for p in self.probe_points)) - 1
            self.design_region = [r_lo, c0, r_hi + 1, c1] if c1 > c0 and r_hi >= r_lo else []
        region = list(self.design_region)
        if region:
            try:
                r0, c0, r1, c1 = (whole_number(f"{NAME}: design_region", v, lo=0) for v in region)
            except ValueError:
                raise ValueError(
                    f"{NAME}: design_region must be [row0, col0, row1, col1] (whole cells) or [], "
                    f"got {region!r}"
                ) from None
            if not (r0 < r1 <= self.grid[0] and c0 < c1 <= self.grid[1]):
                raise ValueError(
                    f"{NAME}: design_region {region} must satisfy row0 < row1 <= {self.grid[0]} "
                    f"and col0 < col1 <= {self.grid[1]}"
                )
            region = [r0, c0, r1, c1]
            for key, (r, col) in [("source", self.source_point)] + [
                    (f"probes[{k}]", p) for k, p in enumerate(self.probe_points)]:
                if r0 - 1 < r < r1 and c0 - 1 < col < c1:
                    raise ValueError(f"{NAME}: {key} [{r:g}, {col:g}] must lie outside the "
                                     f"design region {region}")
        self.design_region = region
        self._resolve_speed()

    def _resolve_speed(self) -> None:
        """``design_speed`` as one value per design cell, inside ``speed_range``."""
        rows, cols = self.design_shape
        lo, hi = self.speed_range or (self.c, self.c)
        value = self.c if self.design_speed is None else self.design_speed
        if isinstance(value, int | float) and not isinstance(value, bool):
            speed = [[float(value)] * cols for _ in range(rows)]
        else:
            try:
                speed = [[float(v) for v in row] for row in value]  # type: ignore[union-attr]
            except (TypeError, ValueError):
                speed = []
            if len(speed) != rows or any(len(row) != cols for row in speed):
                raise ValueError(
                    f"{NAME}: design_speed must be one number or {rows} rows of {cols} speeds "
                    f"(the design region), got {str(value)[:80]}"
                )
        flat = [v for row in speed for v in row]
        if flat and not all(lo <= v <= hi for v in flat):
            bad = next(v for v in flat if not lo <= v <= hi)
            raise ValueError(f"{NAME}: design_speed {bad!r} is outside speed_range [{lo:g}, {hi:g}]")
        self.design_speed = speed

    @property
    def source_point(self) -> list[float]:
        """The resolved source position ``[row, col]``."""
        return list(self.source or [])

    @property
    def probe_points(self) -> list[list[float]]:
        """The resolved probe positions."""
        return [list(p) for p in self.probes or []]

    @property
    def design_shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the design region (``(0, 0)`` without one)."""
        if not self.design_region:
            return 0, 0
        r0, c0, r1, c1 = self.design_region
        return r1 - r0, c1 - c0

    def cavity_config(self) -> AcousticConfig:
        """The ``sim:acoustic`` configuration whose grid this cavity reuses: same walls,
        sponge and scatterers, the source as its one speaker and the probes as microphones,
        no membranes (its tone and read-out keys are set to inert values)."""
        return AcousticConfig(
            n_in=1, grid=self.grid, dx=self.dx, c=self.c, rho=self.rho, dt=self.dt,
            viscous_time=self.viscous_time, wall_reflection=self.wall_reflection,
            sponge_cells=self.sponge_cells, sponge_strength=self.sponge_strength,
            speakers=[self.source_point], microphones=self.probe_points, membranes=[],
            scatterers=self.scatterers, n_scatterers=self.n_scatterers, bins=[1],
            first_bin=1, window_steps=4096, transient_steps=0, ramp_steps=0, seed=self.seed,
        )
