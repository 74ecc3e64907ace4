"""The parameters of ``sim:acoustic``: one typed dataclass that fills in and checks them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ...core.device import check_memory, finite_fields

T = TypeVar("T")

P_REF_SPL = 20e-6
"""Reference pressure (Pa) of the ``db`` read-out (sound pressure level)."""

READOUT_UNITS = {
    "calibrated": "DFT bin amplitude / channel reference amplitude",
    "amplitude": "Pa (DFT bin amplitude)",
    "db": "dB SPL (re 20 uPa) of the DFT bin amplitude",
}

CFL_LIMIT = 1.0 / math.sqrt(2.0)
"""Stability limit of the Courant number ``c dt / dx`` for the 2-D staggered leapfrog."""

_DEFAULT_SPEAKERS = [(0.25, 0.12), (0.75, 0.12)]
_DEFAULT_MICROPHONES = [(0.15, 0.86), (0.4, 0.8), (0.63, 0.88), (0.87, 0.8)]
_DEFAULT_MEMBRANES = [(0.33, 0.4), (0.7, 0.36), (0.22, 0.62), (0.78, 0.64)]
_DEFAULT_MEMBRANE_BAND = [0.1, 0.37, 0.63, 0.9]
"""Default membrane resonances, as fractions of the tone band."""


def _fraction_points(
    fracs: list[tuple[float, float]], n: int, grid: tuple[int, int]
) -> list[list[float]]:
    if n > len(fracs):  # more than the preset layout: the extra ones down the middle column
        fracs = list(fracs) + [((k + 0.5) / (n - len(fracs)), 0.5) for k in range(n - len(fracs))]
    return [[round(fr * (grid[0] - 1)), round(fc * (grid[1] - 1))] for fr, fc in fracs[:n]]


def _spread(lo: int, hi: int, k: int) -> list[int]:
    """``k`` distinct integers spread evenly over ``[lo, hi]`` (fewer if the range is short)."""
    if hi < lo or k < 1:
        return []
    if k == 1:
        return [(lo + hi) // 2]
    return sorted({round(lo + (hi - lo) * (i + 0.5) / k) for i in range(k)})


def _default_bins(
    lo: int, top: int, n_mic: int, per_mic: int, cutoff_bin: float, n_w: int
) -> list[list[int]]:
    """Per microphone: 1/5 of its bins below the tones, 2/5 in the tone band, 2/5 above it,
    staggered so that every microphone reads different frequencies where the bands allow."""
    limit = min(2 * top, (n_w - 1) // 2, max(top + 1, int(0.5 * cutoff_bin)))
    n_diff = max(1, round(per_mic / 5))
    n_sum = max(1, round(2 * per_mic / 5)) if per_mic > 1 else 0
    n_band = per_mic - n_diff - n_sum
    bands = [(1, lo - 1, n_diff), (lo, top, n_band), (top + 1, limit, n_sum)]
    out: list[list[int]] = [[] for _ in range(n_mic)]
    for b_lo, b_hi, k in bands:
        pool = _spread(b_lo, b_hi, k * n_mic)
        for m in range(n_mic):
            out[m] += pool[m::n_mic][:k]
    for m in range(n_mic):  # short bands: fill up with unused bins
        for b in range(1, limit + 1):
            if len(out[m]) >= per_mic:
                break
            if b not in out[m]:
                out[m].append(b)
        out[m] = sorted(out[m])
    return out


def _points(value: Any, name: str) -> list[list[float]]:
    try:
        pts = [[float(a), float(b)] for a, b in value]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a list of [row, col] positions, got {value!r}") from None
    return [[int(a) if a == int(a) else a, int(b) if b == int(b) else b] for a, b in pts]



def resolved(value: T | None) -> T:
    """A parameter ``AcousticConfig`` derives when it is not given (``None`` in the
    description), read after construction has filled it in."""
    if value is None:
        raise RuntimeError("an AcousticConfig parameter was read before it was resolved")
    return value


@dataclass
class AcousticConfig:
    """Every parameter of ``sim:acoustic`` with its default: the keys of a device description.

    ``None`` marks a parameter derived from the others; construction fills it in (so
    ``config.dt`` or ``config.bins`` always hold the values the simulation uses) and checks
    the whole set, with a ValueError naming the parameter and what is allowed.
    """

    n_in: int = 20
    """Inputs: tone amplitudes in [0, 1], one tone per input."""
    grid: tuple[int, int] = (20, 20)
    """Cells (rows, cols) inside the walls."""
    dx: float = 0.02
    """Cell size in m."""
    c: float = 343.0
    """Speed of sound in m/s."""
    rho: float = 1.2
    """Air density in kg/m^3."""
    courant: float = 0.6
    """``c dt / dx``; must be below 1/sqrt(2). Ignored when ``dt`` is given."""
    dt: float | None = None
    """Time step in s (default ``courant * dx / c``)."""
    viscous_time: float = 3e-6
    """Lumped viscous relaxation time (s): the momentum equation sees ``p + tau dp/dt``, an
    absorption growing as f^2 that also damps the grid's slow near-cut-off modes (0 = none)."""
    wall_reflection: float = 0.4
    """Normal-incidence pressure reflection coefficient of the outer walls, in (-1, 1]."""
    sponge_cells: int = 0
    """Width of a graded absorbing layer along the walls (0 = none)."""
    sponge_strength: float = 0.2
    """Pressure damping per step at the wall in the sponge (quadratic profile inwards)."""
    speakers: list[list[float]] | None = None
    """Speaker positions ``[row, col]`` in cell coordinates (cell centres are integers; a
    fractional position spreads the source bilinearly). Default: ``n_speakers`` near the left
    wall."""
    n_speakers: int = 2
    """Speakers of the default layout (when ``speakers`` is not given)."""
    microphones: list[list[float]] | None = None
    """Microphone positions, like ``speakers`` (fractional = bilinear interpolation)."""
    n_microphones: int = 4
    """Microphones of the default layout (when ``microphones`` is not given)."""
    bins: list[int] | list[list[int]] | None = None
    """DFT bins of the measurement window: one list read at every microphone, or one list per
    microphone. Default: ``bins_per_mic`` distinct bins per microphone, staggered over the
    difference band (below the tones), the tone band and the sum band (above it)."""
    bins_per_mic: int = 5
    """Read-out bins per microphone of the default ``bins``."""
    first_bin: int = 10
    """Bin of tone 0; tone k sits on bin ``first_bin + k * bin_spacing``."""
    bin_spacing: int = 1
    """Bins between neighbouring tones."""
    window_steps: int | None = None
    """Steps of the measurement window (default: at least 256, about 8.8 steps per period of
    the highest tone)."""
    transient_steps: int | None = None
    """Steps before the window, for the cavity to reach its steady state (default: 1.25
    windows; the read-out then differs from the true steady state by ~1e-4 of the tone lines)."""
    ramp_steps: int = 32
    """Raised-cosine fade-in of the drive (fewer off-band transients)."""
    volume_velocity: float = 3e-4
    """Speaker volume velocity amplitude per unit input, m^2/s (2-D: per unit depth)."""
    scatterers: list[list[int]] | None = None
    """Rigid cells ``[row, col]``; default: ``n_scatterers`` random blocks drawn from the seed."""
    n_scatterers: int = 6
    """Scatterer blocks drawn from the seed when ``scatterers`` is not given."""
    membranes: list[list[int]] | None = None
    """Membrane cells ``[row, col]`` (integers). Default: ``n_membranes`` preset cells."""
    n_membranes: int = 4
    """Membranes of the default layout (when ``membranes`` is not given)."""
    membrane_freq_hz: list[float] | None = None
    """Resonance of each membrane; default spread over the tone band."""
    membrane_q: float = 4.0
    """Quality factor (``inf`` = undamped)."""
    membrane_alpha: float = 0.5
    """Quadratic stiffness (asymmetric membrane: even harmonics, sum and difference tones)."""
    membrane_beta: float = 1.0
    """Cubic (Duffing) stiffness: odd harmonics, 2 f1 - f2, amplitude-dependent resonance."""
    membrane_p_ref: float = 2.0
    """Pressure (Pa) giving unit static membrane displacement."""
    membrane_coupling: float = 0.5
    """Back-coupling ``mu``: a membrane's velocity injects ``-mu p_ref x'`` into ``dp/dt``."""
    readout: str = "calibrated"
    """``amplitude``: bin amplitudes in Pa; ``calibrated``: each channel divided by its mean
    amplitude over a seeded reference batch (channels span orders of magnitude, so this keeps
    every feature near 1); ``db``: sound pressure level in dB."""
    checkpoint_steps: int = 32
    """With autograd on (``forward_with_grad``), store the state only every this many steps
    and recompute each segment during the backward pass (gradient checkpointing: memory of
    one segment instead of the whole run, for one extra forward pass); 0 stores every step.
    On a CPU with the C loop the gradient comes from its adjoint, which stores only the
    membranes' trajectory (a few numbers per step): this applies to the torch steps."""
    speaker_power_w: float = 0.5
    """Electrical power of the speakers (for the energy accounting)."""
    noise: list[dict[str, Any]] = field(default_factory=list)
    """Output non-idealities, e.g. ``[{"kind": "readout", "sigma": 0.01}]``."""
    perturbations: list[dict[str, Any]] = field(default_factory=list)
    """Temperature drift and sudden changes (see physnn.core.perturbation); empty: stable."""
    seed: int = 0
    """Seed of the scatterers, the tone phases, the calibration batch and the noise."""
    clip: bool = False
    """Project out-of-domain inputs onto [0, 1] instead of rejecting them."""


    def __post_init__(self) -> None:
        finite_fields("sim:acoustic", self, allow_inf=("membrane_q",))
        self._check_medium()
        top, cutoff_bin = self._resolve_window()
        speakers = len(self.speakers) if self.speakers is not None else self.n_speakers
        window = self.ramp_steps + resolved(self.window_steps)
        check_memory(  # the grid's fields and the drive table [window, n_in, 4 cells a speaker]
            "n_in, grid or window_steps",
            8 * (8 * self.grid[0] * self.grid[1] + window * self.n_in * 4 * speakers),
            f"sim:acoustic: a {self.grid[0]}x{self.grid[1]} grid driven by {self.n_in} tones",
        )
        self._resolve_transducers(top, cutoff_bin)
        self._resolve_membranes(top)
        self._check_sources()

    def _check_medium(self) -> None:
        """The read-out, the grid, the medium and a stable time step."""
        if self.readout not in READOUT_UNITS:
            raise ValueError(f"readout must be one of {sorted(READOUT_UNITS)}, got {self.readout!r}")
        if self.n_in < 1:
            raise ValueError(f"n_in must be >= 1, got {self.n_in}")
        grid = tuple(int(v) for v in self.grid)
        if len(grid) != 2 or min(grid) < 3:
            raise ValueError(f"grid must be (rows, cols) with at least 3 cells each, got {grid}")
        self.grid = (grid[0], grid[1])
        for name in ("dx", "c", "rho"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.dt is not None:
            if not self.dt > 0:
                raise ValueError(f"dt must be > 0, got {self.dt}")
            self.courant = self.c * self.dt / self.dx
        else:
            self.dt = self.courant * self.dx / self.c
        dt = self.dt
        if not self.viscous_time >= 0:
            raise ValueError(f"viscous_time must be >= 0, got {self.viscous_time}")
        kappa = self.viscous_time / dt
        limit = CFL_LIMIT / math.sqrt(1 + 2 * kappa)
        if not 0 < self.courant < limit:
            visc = f" / sqrt(1 + 2 viscous_time/dt) = {limit:.6f}" if kappa else ""
            raise ValueError(
                f"unstable time step: Courant number c*dt/dx = {self.courant:.6g} "
                f"(c={self.c:g} m/s, dt={dt:.6g} s, dx={self.dx:g} m) must be below the 2-D "
                f"stability limit 1/sqrt(2) = {CFL_LIMIT:.6f}{visc}; reduce dt or increase dx"
            )
        if not -1 < self.wall_reflection <= 1:
            raise ValueError(f"wall_reflection must be in (-1, 1], got {self.wall_reflection}")
        if self.sponge_cells < 0 or not self.sponge_strength >= 0:
            raise ValueError("sponge_cells and sponge_strength must be >= 0")
        if 2 * self.sponge_cells >= min(self.grid):
            raise ValueError(f"sponge_cells={self.sponge_cells} does not fit grid {self.grid}")

    def _resolve_window(self) -> tuple[int, float]:
        """Window and transient lengths; returns the highest tone bin and the grid's cut-off bin."""
        if self.first_bin < 1 or self.bin_spacing < 1:
            raise ValueError("first_bin and bin_spacing must be >= 1")
        top = self.first_bin + self.bin_spacing * (self.n_in - 1)
        if self.window_steps is None:
            self.window_steps = max(256, 64 * math.ceil(8.8 * top / 64))
        n_w = int(self.window_steps)
        if top >= n_w / 2:
            raise ValueError(
                f"the highest tone (bin {top}) must lie below the window's Nyquist bin {n_w // 2}"
            )
        # the grid's cut-off: the fastest discrete mode has sin(w dt / 2) = courant * sqrt(2)
        cutoff_bin = n_w * 2 * math.asin(self.courant * math.sqrt(2)) / (2 * math.pi)
        if top >= cutoff_bin:
            raise ValueError(
                f"tone bin {top} ({top / (n_w * resolved(self.dt)):.4g} Hz) is above the grid's "
                f"cut-off (bin {cutoff_bin:.1f}); raise window_steps or lower first_bin/bin_spacing"
            )
        if self.transient_steps is None:
            self.transient_steps = n_w + n_w // 4
        if self.transient_steps < 0 or self.ramp_steps < 0:
            raise ValueError("transient_steps and ramp_steps must be >= 0")
        return top, cutoff_bin

    def _resolve_transducers(self, top: int, cutoff_bin: float) -> None:
        """Speaker, microphone and membrane positions and the read-out bins."""
        speakers = _points(
            _fraction_points(_DEFAULT_SPEAKERS, self.n_speakers, self.grid)
            if self.speakers is None else self.speakers, "speakers")
        microphones = _points(
            _fraction_points(_DEFAULT_MICROPHONES, self.n_microphones, self.grid)
            if self.microphones is None else self.microphones, "microphones")
        membranes = _points(
            _fraction_points(_DEFAULT_MEMBRANES, self.n_membranes, self.grid)
            if self.membranes is None else self.membranes, "membranes")
        self.speakers, self.microphones = speakers, microphones
        self.n_speakers, self.n_microphones = len(speakers), len(microphones)
        self.n_membranes = len(membranes)
        if not speakers or not microphones:
            raise ValueError("the cavity needs at least one speaker and one microphone")
        self.bins = self._resolve_bins(top, cutoff_bin)
        named = (("speakers", speakers), ("microphones", microphones), ("membranes", membranes))
        for name, pts in named:
            for r, col in pts:
                if not (0 <= r <= self.grid[0] - 1 and 0 <= col <= self.grid[1] - 1):
                    raise ValueError(f"{name}: position [{r}, {col}] is outside grid {self.grid}")
        if any(isinstance(v, float) for m in membranes for v in m):
            raise ValueError(f"membranes must sit on whole cells, got {membranes}")
        if len({tuple(m) for m in membranes}) != len(membranes):
            raise ValueError(f"membranes must sit on distinct cells, got {membranes}")
        self.membranes = [[int(r), int(col)] for r, col in membranes]

    def _resolve_membranes(self, top: int) -> None:
        """Membrane resonances (default: spread over the tone band) and a resolvable scheme."""
        n_w, dt = int(resolved(self.window_steps)), resolved(self.dt)
        if self.membrane_freq_hz is None:
            f_lo = self.first_bin / (n_w * dt)
            f_hi = top / (n_w * dt)
            fr = _DEFAULT_MEMBRANE_BAND
            self.membrane_freq_hz = [
                f_lo + fr[k % len(fr)] * (f_hi - f_lo) for k in range(self.n_membranes)
            ]
        self.membrane_freq_hz = [float(f) for f in self.membrane_freq_hz]
        if len(self.membrane_freq_hz) != self.n_membranes:
            raise ValueError(
                f"membrane_freq_hz has {len(self.membrane_freq_hz)} entries for "
                f"{self.n_membranes} membranes"
            )
        if not self.membrane_q > 0 or not self.membrane_p_ref > 0 or self.membrane_coupling < 0:
            raise ValueError("membrane_q and membrane_p_ref must be > 0, membrane_coupling >= 0")
        alpha, beta = self.membrane_alpha, self.membrane_beta
        if beta < 0 or (alpha != 0 and alpha**2 >= 3 * beta):
            raise ValueError(
                "the membrane restoring force x + alpha x^2 + beta x^3 must grow monotonically: "
                f"need beta >= 0 and alpha^2 < 3 beta, got alpha={alpha}, beta={beta}"
            )
        for f0 in self.membrane_freq_hz:
            w = 2 * math.pi * f0 * dt
            w2 = (2 * math.tan(min(w, 3.0) / 2)) ** 2
            if not (0 < w < math.pi / 2 and w2 * self.membrane_coupling < 2):
                raise ValueError(
                    f"membrane resonance {f0:g} Hz is not resolved by dt={dt:.4g} s: need "
                    f"0 < w0*dt < pi/2 (got {w:.3g}) and 4 tan^2(w0 dt/2) * coupling < 2 "
                    f"(got {w2 * self.membrane_coupling:.3g})"
                )

    def _check_sources(self) -> None:
        if self.n_scatterers < 0:
            raise ValueError(f"n_scatterers must be >= 0, got {self.n_scatterers}")
        if self.scatterers is not None:
            self.scatterers = [[int(a), int(b)] for a, b in _points(self.scatterers, "scatterers")]
        if self.checkpoint_steps < 0:
            raise ValueError(f"checkpoint_steps must be >= 0, got {self.checkpoint_steps}")
        if not self.volume_velocity >= 0 or not self.speaker_power_w >= 0:
            raise ValueError("volume_velocity and speaker_power_w must be >= 0")

    def _resolve_bins(self, top: int, cutoff_bin: float) -> list[list[int]]:
        n_w, n_mic = int(resolved(self.window_steps)), self.n_microphones
        given: list[Any] | None = self.bins
        if given is None:
            bins = _default_bins(self.first_bin, top, n_mic, self.bins_per_mic, cutoff_bin, n_w)
        elif all(isinstance(b, int | float) for b in given):
            bins = [[int(b) for b in given] for _ in range(n_mic)]
        else:
            bins = [[int(b) for b in row] for row in given]
            if len(bins) != n_mic or len({len(row) for row in bins}) != 1:
                raise ValueError(
                    f"bins must be one list shared by all microphones or {n_mic} lists of equal "
                    f"length (one per microphone), got {self.bins!r}"
                )
        flat = [b for row in bins for b in row]
        if not flat or min(flat) < 1 or max(flat) >= n_w / 2:
            raise ValueError(f"bins must be in 1..{(n_w - 1) // 2}, got {bins}")
        if any(len(set(row)) != len(row) for row in bins):
            raise ValueError(f"a microphone's bins must be distinct, got {bins}")
        return bins

    @property
    def read_bins(self) -> list[list[int]]:
        """The read-out bins of each microphone, ``[microphones][bins]`` (``bins`` resolved)."""
        bins: list[Any] = resolved(self.bins)
        return bins

    @property
    def transducers(self) -> dict[str, list[list[float]]]:
        """Speaker, microphone and membrane positions ``[row, col]`` by name (resolved)."""
        membranes: list[list[float]] = [[r, col] for r, col in resolved(self.membranes)]
        return {
            "speakers": resolved(self.speakers),
            "microphones": resolved(self.microphones),
            "membranes": membranes,
        }

    @property
    def n_bins(self) -> int:
        """Read-out bins per microphone."""
        return len(self.read_bins[0])

    @property
    def total_steps(self) -> int:
        """Steps of one query: the transient, then the measurement window."""
        return int(resolved(self.transient_steps)) + int(resolved(self.window_steps))

    @property
    def tone_bins(self) -> list[int]:
        """DFT bin of each input's tone."""
        return [self.first_bin + k * self.bin_spacing for k in range(self.n_in)]
