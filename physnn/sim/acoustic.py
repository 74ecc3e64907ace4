"""Acoustic cavity: a 2-D wave equation with nonlinear membranes, driven by a multitone speaker.

The physics, in the order one time step applies it (leapfrog on a staggered grid, pressure at
cell centres and integer steps, face velocities at half steps):

* field: ``dv/dt = -grad(p + tau dp/dt) / rho`` and ``dp/dt = -rho c^2 div v``. ``tau``
  (``viscous_time``) is a lumped viscous absorption growing as f^2; it also damps the
  grid's slow near-cut-off modes, which would otherwise keep ringing into the read-out. Faces
  touching a rigid scatterer carry no velocity. The outer walls are locally reacting with a
  normal-incidence reflection coefficient ``R`` (impedance ``Z = rho c (1 + R) / (1 - R)``);
  an optional graded sponge layer damps the pressure near the walls. Wall and sponge losses
  act on the pressure semi-implicitly, so the discrete energy decays monotonically; without
  any loss it is conserved to round-off (see :meth:`AcousticCavity.simulate` with
  ``energy=True``).
* membranes: Duffing-type resonators at single cells,
  ``x'' + (w0 / Q) x' + w0^2 (x + alpha x^2 + beta x^3) = w0^2 p / p_ref``; a moving membrane
  changes its cell's volume, so its velocity is a pressure source ``dp/dt = -mu p_ref x'``
  (``mu`` = ``membrane_coupling``). They are integrated with an energy-conserving discrete
  gradient (a cubic solved by Newton per step), so field plus membranes conserve energy
  exactly for any amplitude when lossless, and the scheme stays stable however hard the
  membranes stiffen. ``beta`` gives odd products (3 f, 2 f1 - f2) and a hardening resonance
  (amplitude-dependent transfer); ``alpha`` (an asymmetric membrane) gives 2 f and f1 +- f2.
* speakers: monopole sources whose volume velocity is the rate of change of a cone
  displacement (no net volume is injected, so no pressure drift). Input ``k`` is the
  amplitude of tone ``k``, exactly on DFT bin ``first_bin + k * bin_spacing`` of the
  measurement window, played by speaker ``k mod n_speakers`` with a seeded phase after a
  raised-cosine fade-in.
* microphones: after ``transient_steps`` the pressure at each microphone is projected on
  ``cos`` and ``sin`` of its read-out bins over ``window_steps`` steps (running sums: no time
  history is stored, memory does not depend on the duration). The output is the amplitude of
  each bin, microphone-major, ``n_out = microphones x bins_per_mic``; tones and read-out bins
  are whole periods of the window, so the steady-state read-out is free of leakage. By
  default every channel is divided by its mean over a seeded reference batch
  (``readout="calibrated"``): the bins span three orders of magnitude in Pa.

Units: SI (pressure in Pa). ``dx`` and ``c`` set the physical scale; ``courant = c dt / dx``
must stay below the 2-D stability limit ``1 / sqrt(2)`` (``1 / sqrt(2 (1 + 2 tau / dt))``
with viscous absorption). Default: a 20 x 20 cell (40 cm) cavity, dx = 2 cm, dt = 35 us,
20 tones on 1.1-3.2 kHz, 4 microphones x 5 bins, 576 steps (20 ms) per query.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from ..core.device import Device, DeviceSpec, Domain
from ..core.effects import Effect, apply_effects, make_effects
from ..core.perturbation import Perturbable, Sudden

P_REF_SPL = 20e-6
"""Reference pressure (Pa) of the ``db`` read-out (sound pressure level)."""

READOUT_UNITS = {
    "calibrated": "DFT bin amplitude / channel reference amplitude",
    "amplitude": "Pa (DFT bin amplitude)",
    "db": "dB SPL (re 20 uPa) of the DFT bin amplitude",
}

_NEWTON_MAX = 60
"""Most Newton steps per time step for nonlinear membranes (they stop at round-off; three
or four suffice at moderate drive)."""

CFL_LIMIT = 1.0 / math.sqrt(2.0)
"""Stability limit of the Courant number ``c dt / dx`` for the 2-D staggered leapfrog."""

_DEFAULT_SPEAKERS = [(0.25, 0.12), (0.75, 0.12)]
_DEFAULT_MICROPHONES = [(0.15, 0.86), (0.4, 0.8), (0.63, 0.88), (0.87, 0.8)]
_DEFAULT_MEMBRANES = [(0.33, 0.4), (0.7, 0.36), (0.22, 0.62), (0.78, 0.64)]
_DEFAULT_MEMBRANE_BAND = [0.1, 0.37, 0.63, 0.9]
"""Default membrane resonances, as fractions of the tone band."""


def _fraction_points(fracs: list[tuple[float, float]], n: int, grid: tuple[int, int]) -> list:
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


@dataclass
class AcousticConfig:
    n_in: int = 20
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
    speakers: list | None = None
    """Speaker positions ``[row, col]`` in cell coordinates (cell centres are integers; a
    fractional position spreads the source bilinearly). Default: ``n_speakers`` near the left
    wall."""
    n_speakers: int = 2
    microphones: list | None = None
    """Microphone positions, like ``speakers`` (fractional = bilinear interpolation)."""
    n_microphones: int = 4
    bins: list | None = None
    """DFT bins of the measurement window: one list read at every microphone, or one list per
    microphone. Default: ``bins_per_mic`` distinct bins per microphone, staggered over the
    difference band (below the tones), the tone band and the sum band (above it)."""
    bins_per_mic: int = 5
    first_bin: int = 10
    """Bin of tone 0; tone k sits on bin ``first_bin + k * bin_spacing``."""
    bin_spacing: int = 1
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
    scatterers: list | None = None
    """Rigid cells ``[row, col]``; default: ``n_scatterers`` random blocks drawn from the seed."""
    n_scatterers: int = 6
    membranes: list | None = None
    """Membrane cells ``[row, col]`` (integers). Default: ``n_membranes`` preset cells."""
    n_membranes: int = 4
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
    one segment instead of the whole run, for one extra forward pass); 0 stores every step."""
    speaker_power_w: float = 0.5
    """Electrical power of the speakers (for the energy accounting)."""
    noise: list[dict[str, Any]] = field(default_factory=list)
    """Output non-idealities, e.g. ``[{"kind": "readout", "sigma": 0.01}]``."""
    perturbations: list[dict[str, Any]] = field(default_factory=list)
    """Temperature drift and sudden changes (see physnn.core.perturbation); empty: stable."""
    seed: int = 0
    clip: bool = False

    def __post_init__(self) -> None:
        if self.readout not in READOUT_UNITS:
            raise ValueError(f"readout must be one of {sorted(READOUT_UNITS)}, got {self.readout!r}")
        if self.n_in < 1:
            raise ValueError(f"n_in must be >= 1, got {self.n_in}")
        self.grid = tuple(int(v) for v in self.grid)
        if len(self.grid) != 2 or min(self.grid) < 3:
            raise ValueError(f"grid must be (rows, cols) with at least 3 cells each, got {self.grid}")
        for name in ("dx", "c", "rho"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.dt is not None:
            if not self.dt > 0:
                raise ValueError(f"dt must be > 0, got {self.dt}")
            self.courant = self.c * self.dt / self.dx
        else:
            self.dt = self.courant * self.dx / self.c
        if not self.viscous_time >= 0:
            raise ValueError(f"viscous_time must be >= 0, got {self.viscous_time}")
        kappa = self.viscous_time / self.dt
        limit = CFL_LIMIT / math.sqrt(1 + 2 * kappa)
        if not 0 < self.courant < limit:
            visc = f" / sqrt(1 + 2 viscous_time/dt) = {limit:.6f}" if kappa else ""
            raise ValueError(
                f"unstable time step: Courant number c*dt/dx = {self.courant:.6g} "
                f"(c={self.c:g} m/s, dt={self.dt:.6g} s, dx={self.dx:g} m) must be below the 2-D "
                f"stability limit 1/sqrt(2) = {CFL_LIMIT:.6f}{visc}; reduce dt or increase dx"
            )
        if not -1 < self.wall_reflection <= 1:
            raise ValueError(f"wall_reflection must be in (-1, 1], got {self.wall_reflection}")
        if self.sponge_cells < 0 or not self.sponge_strength >= 0:
            raise ValueError("sponge_cells and sponge_strength must be >= 0")
        if 2 * self.sponge_cells >= min(self.grid):
            raise ValueError(f"sponge_cells={self.sponge_cells} does not fit grid {self.grid}")
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
                f"tone bin {top} ({top / (n_w * self.dt):.4g} Hz) is above the grid's cut-off "
                f"(bin {cutoff_bin:.1f}); raise window_steps or lower first_bin/bin_spacing"
            )
        if self.transient_steps is None:
            self.transient_steps = n_w + n_w // 4
        if self.transient_steps < 0 or self.ramp_steps < 0:
            raise ValueError("transient_steps and ramp_steps must be >= 0")
        if self.speakers is None:
            self.speakers = _fraction_points(_DEFAULT_SPEAKERS, self.n_speakers, self.grid)
        if self.microphones is None:
            self.microphones = _fraction_points(_DEFAULT_MICROPHONES, self.n_microphones, self.grid)
        if self.membranes is None:
            self.membranes = _fraction_points(_DEFAULT_MEMBRANES, self.n_membranes, self.grid)
        self.speakers = _points(self.speakers, "speakers")
        self.microphones = _points(self.microphones, "microphones")
        self.membranes = _points(self.membranes, "membranes")
        self.n_speakers, self.n_microphones = len(self.speakers), len(self.microphones)
        self.n_membranes = len(self.membranes)
        if not self.speakers or not self.microphones:
            raise ValueError("the cavity needs at least one speaker and one microphone")
        self.bins = self._resolve_bins(top, cutoff_bin)
        for name in ("speakers", "microphones", "membranes"):
            for r, col in getattr(self, name):
                if not (0 <= r <= self.grid[0] - 1 and 0 <= col <= self.grid[1] - 1):
                    raise ValueError(f"{name}: position [{r}, {col}] is outside grid {self.grid}")
        if any(isinstance(v, float) for m in self.membranes for v in m):
            raise ValueError(f"membranes must sit on whole cells, got {self.membranes}")
        if len({tuple(m) for m in self.membranes}) != len(self.membranes):
            raise ValueError(f"membranes must sit on distinct cells, got {self.membranes}")
        if self.membrane_freq_hz is None:
            f_lo = self.first_bin / (n_w * self.dt)
            f_hi = top / (n_w * self.dt)
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
            w = 2 * math.pi * f0 * self.dt
            w2 = (2 * math.tan(min(w, 3.0) / 2)) ** 2
            if not (0 < w < math.pi / 2 and w2 * self.membrane_coupling < 2):
                raise ValueError(
                    f"membrane resonance {f0:g} Hz is not resolved by dt={self.dt:.4g} s: need "
                    f"0 < w0*dt < pi/2 (got {w:.3g}) and 4 tan^2(w0 dt/2) * coupling < 2 "
                    f"(got {w2 * self.membrane_coupling:.3g})"
                )
        if self.n_scatterers < 0:
            raise ValueError(f"n_scatterers must be >= 0, got {self.n_scatterers}")
        if self.scatterers is not None:
            self.scatterers = [[int(a), int(b)] for a, b in _points(self.scatterers, "scatterers")]
        if self.checkpoint_steps < 0:
            raise ValueError(f"checkpoint_steps must be >= 0, got {self.checkpoint_steps}")
        if not self.volume_velocity >= 0 or not self.speaker_power_w >= 0:
            raise ValueError("volume_velocity and speaker_power_w must be >= 0")

    def _resolve_bins(self, top: int, cutoff_bin: float) -> list[list[int]]:
        n_w, n_mic = int(self.window_steps), self.n_microphones
        if self.bins is None:
            bins = _default_bins(self.first_bin, top, n_mic, self.bins_per_mic, cutoff_bin, n_w)
        elif all(isinstance(b, int | float) for b in self.bins):
            bins = [[int(b) for b in self.bins] for _ in range(n_mic)]
        else:
            bins = [[int(b) for b in row] for row in self.bins]
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
    def n_bins(self) -> int:
        """Read-out bins per microphone."""
        return len(self.bins[0])

    @property
    def total_steps(self) -> int:
        return int(self.transient_steps) + int(self.window_steps)

    @property
    def tone_bins(self) -> list[int]:
        return [self.first_bin + k * self.bin_spacing for k in range(self.n_in)]


class _Tables:
    """Per-(torch device, dtype) constants of one cavity, for the time loop."""

    def __init__(self, cav: AcousticCavity, device: torch.device, dtype: torch.dtype):
        def t(v):
            return v.to(device=device, dtype=dtype)

        def i(v):
            return v.to(device=device)

        self.cx, self.cy, self.a, self.b = t(cav.cx), t(cav.cy), t(cav.a_mid), t(cav.b_mid)
        self.lossless = bool((cav.a_mid == cav.b_mid).all())  # a = b = 1 inside, 0 on ghosts
        self.src_idx = i(cav.src_idx)
        self.spk_idx = i(cav.spk_idx)
        self.spk_gain = t(cav.spk_gain)
        self.mem_idx = i(cav.mem_idx)
        self.mic_idx = i(cav.mic_idx)
        self.mic_w = t(cav.mic_w)
        self.mic_single = cav.mic_single
        self.cone = t(cav.cone)  # [window, n_in]
        self.tone_norm = t(cav.tone_norm)
        self.drive = t(cav.drive)  # [window, n_in, speaker cells]
        self.basis = t(cav.basis)  # [window, mics, 2 bins]
        m = cav.membrane
        self.w2, self.g1 = t(m["w2"]), t(1 + m["g"])
        self.lin_num = t(1 - m["g"] + m["w2"] / 2)  # closed form of the linear membrane
        self.lin_den = t(1 / (1 + m["g"] + m["w2"] / 2))
        al, be = cav.config.membrane_alpha, cav.config.membrane_beta
        self.linear = al == 0 and be == 0
        # Horner coefficients of the cubic in x^{n+1} (see AcousticCavity._membrane_step)
        self.a3 = t(m["w2"] * be / 4)
        self.a3x3 = 3 * self.a3
        self.c2 = t(m["w2"] * al / 3)
        self.c1 = t(1 + m["g"] + m["w2"] / 2)
        self.c0 = t(m["w2"] / 2 - 1 - m["g"])
        self.mem_src = t(m["src"])


class AcousticCavity(Perturbable, Device):
    """``sim:acoustic``: a seeded, batched 2-D acoustic cavity with nonlinear membranes.

    ``device(x)`` runs the time loop in place, without autograd and without any time
    history: the microphone spectra are accumulated as running sums, so memory does not
    depend on the number of steps. ``forward_with_grad`` is differentiable through the time
    loop (memory grows with the steps; ``checkpoint_steps`` bounds it). :meth:`simulate`
    exposes the raw scheme (initial fields, complex spectra, the discrete energy),
    :meth:`field_snapshot` and :meth:`plot_layout` show the field. See the module docstring
    for the physics.
    """

    differentiable = True
    SUDDEN_ACTIONS = {"move": {"count": 1}, "remove": {"count": 1}, "add": {"count": 1}}
    """Sudden changes: ``count`` rigid scatterers (connected blocks of cells) are moved to
    free places, removed, or new 1-3 cell blocks are added."""
    DRIFT_COUPLING = 0.5 / 293.15
    """1/K: relative change of the speed of sound per kelvin (ideal gas, c ~ sqrt(T):
    +0.17 %/K at 20 C). The density follows at constant pressure (rho c^2 = gamma p0 stays
    fixed); the time step (the sampling clock) does not, so the Courant number moves with c
    and is checked against the stability limit."""
    DRIFT_UNIT = "1/K"

    def __init__(self, **kwargs: Any):
        cfg = AcousticConfig(**kwargs)
        self.config = cfg
        self.base_config = cfg
        """The configuration as described (``config`` is the current, perturbed one)."""
        self.output_effects: list[Effect] = make_effects(cfg.noise)
        duration = cfg.total_steps * cfg.dt
        spec = DeviceSpec(
            name="sim:acoustic",
            n_in=cfg.n_in,
            n_out=cfg.n_microphones * cfg.n_bins,
            domain=Domain(0.0, 1.0),
            output_units=READOUT_UNITS[cfg.readout],
            time_per_query_s=duration,
            energy_per_query_j=cfg.speaker_power_w * duration,
        )
        super().__init__(spec, seed=cfg.seed, clip=cfg.clip)
        self._tables: dict[tuple, _Tables] = {}
        self._calibration: torch.Tensor | None = None
        self._build()
        self._init_perturbations(cfg.perturbations)
        self._scatterers_now = [list(c) for c in self.scatterer_cells]

    # -- perturbation hooks (see physnn.core.perturbation) ----------------------------------
    def _perturb_reset(self) -> None:
        self.config = self.base_config
        self._build()
        self._tables.clear()
        self._scatterers_now = [list(c) for c in self.scatterer_cells]

    def _scatterer_blocks(self) -> list[list[list[int]]]:
        """Connected (4-neighbour) groups of scatterer cells: the rigid objects."""
        left = {tuple(c) for c in self._scatterers_now}
        blocks = []
        while left:
            todo, block = [left.pop()], []
            while todo:
                r, col = todo.pop()
                block.append([r, col])
                for nb in ((r + 1, col), (r - 1, col), (r, col + 1), (r, col - 1)):
                    if nb in left:
                        left.remove(nb)
                        todo.append(nb)
            blocks.append(sorted(block))
        return sorted(blocks)

    def _occupied(self) -> torch.Tensor:
        """Cells a new scatterer must avoid: transducers and membranes (with a margin) and
        the current scatterers (with a one-cell gap)."""
        cfg = self.config
        h, w = cfg.grid
        busy = torch.zeros(h, w, dtype=torch.bool)
        for pts in (cfg.speakers, cfg.microphones, cfg.membranes):
            for r, col in pts:
                r0, c0 = int(math.floor(r)), int(math.floor(col))
                busy[max(r0 - 1, 0) : r0 + 3, max(c0 - 1, 0) : c0 + 3] = True
        for r, col in self._scatterers_now:
            busy[max(r - 1, 0) : r + 2, max(col - 1, 0) : col + 2] = True
        return busy

    def _place(self, shape: tuple[int, int], gen: torch.Generator) -> list[list[int]] | None:
        h, w = self.config.grid
        busy = self._occupied()
        sh, sw = shape
        for _ in range(1000):
            r = int(torch.randint(0, h - sh + 1, (1,), generator=gen))
            col = int(torch.randint(0, w - sw + 1, (1,), generator=gen))
            if not busy[r : r + sh, col : col + sw].any():
                return [[r + i, col + j] for i in range(sh) for j in range(sw)]
        return None

    def _perturb_sudden(self, event: Sudden, gen: torch.Generator) -> str:
        count, done = int(event.params["count"]), []
        for _ in range(count):
            blocks = self._scatterer_blocks()
            if event.action == "add":
                shape = tuple(int(v) for v in torch.randint(1, 4, (2,), generator=gen))
                cells = self._place(shape, gen)
                if cells is not None:
                    self._scatterers_now += cells
                    done.append(f"added a block at {cells[0]}")
                continue
            if not blocks:
                break
            block = blocks[int(torch.randint(0, len(blocks), (1,), generator=gen))]
            self._scatterers_now = [c for c in self._scatterers_now if c not in block]
            if event.action == "remove":
                done.append(f"removed the block at {block[0]}")
                continue
            rows = [c[0] for c in block]
            cols = [c[1] for c in block]
            r0, c0 = min(rows), min(cols)
            shape = (max(rows) - r0 + 1, max(cols) - c0 + 1)
            cells = self._place(shape, gen)
            if cells is None:  # nowhere to go: it stays where it was
                self._scatterers_now += block
                continue
            dr, dc = cells[0][0] - r0, cells[0][1] - c0
            self._scatterers_now += [[r + dr, col + dc] for r, col in block]
            done.append(f"moved the block at {block[0]} to {[r0 + dr, c0 + dc]}")
        return "; ".join(done) or f"{event.action}: nothing changed"

    def _perturb_rebuild(self, delta_k: float, coupling: float) -> None:
        if self.base_config.readout == "calibrated":
            self.calibration()  # the lab calibration was taken on the pristine cavity
        base = self.base_config
        c = base.c * (1 + coupling * delta_k)
        if not c > 0:
            raise ValueError(
                f"{self.spec.name}: drift to dT = {delta_k:.4g} K gives a speed of sound {c:.4g} m/s"
            )
        try:
            self.config = replace(
                base, c=c, rho=base.rho * (base.c / c) ** 2,
                scatterers=sorted(self._scatterers_now),
            )
        except ValueError as e:
            raise ValueError(
                f"{self.spec.name}: drift to dT = {delta_k:.4g} K (c = {c:.5g} m/s) breaks the "
                f"simulation: {e}"
            ) from None
        self._build()
        self._tables.clear()

    # -- geometry ----------------------------------------------------------------------------
    def _flat(self, r: int, col: int) -> int:
        return (r + 1) * self.wp + col + 1

    def _bilinear(self, r: float, col: float) -> list[tuple[int, float]]:
        h, w = self.config.grid
        r0, c0 = min(int(math.floor(r)), h - 1), min(int(math.floor(col)), w - 1)
        fr, fc = r - r0, col - c0
        out = []
        for dr, wr in ((0, 1 - fr), (1, fr)):
            for dc, wc in ((0, 1 - fc), (1, fc)):
                if wr * wc > 0:
                    out.append((self._flat(r0 + dr, c0 + dc), wr * wc))
        return out

    def _draw_scatterers(self) -> list[list[int]]:
        cfg = self.config
        h, w = cfg.grid
        keep_free = torch.zeros(h, w, dtype=torch.bool)
        for pts in (cfg.speakers, cfg.microphones, cfg.membranes):
            for r, col in pts:
                r0, c0 = int(math.floor(r)), int(math.floor(col))
                keep_free[max(r0 - 1, 0) : r0 + 3, max(c0 - 1, 0) : c0 + 3] = True
        g = torch.Generator().manual_seed(cfg.seed)
        cells: set[tuple[int, int]] = set()
        placed, tries = 0, 0
        while placed < cfg.n_scatterers and tries < 100 * (cfg.n_scatterers + 1):
            tries += 1
            sh, sw = (int(v) for v in torch.randint(1, 4, (2,), generator=g))
            r = int(torch.randint(1, max(h - sh, 2), (1,), generator=g))
            col = int(torch.randint(1, max(w - sw, 2), (1,), generator=g))
            block = keep_free[r : r + sh, col : col + sw]
            if block.numel() == sh * sw and not block.any():
                cells.update((r + i, col + j) for i in range(sh) for j in range(sw))
                keep_free[max(r - 1, 0) : r + sh + 1, max(col - 1, 0) : col + sw + 1] = True
                placed += 1
        return [list(c) for c in sorted(cells)]

    def _build(self) -> None:
        cfg = self.config
        h, w = cfg.grid
        self.wp = wp = w + 2
        self.n_cells = n = (h + 2) * wp
        cr = cfg.courant
        scat = cfg.scatterers if cfg.scatterers is not None else self._draw_scatterers()
        self.scatterer_cells = scat
        solid = torch.zeros(h, w, dtype=torch.bool)
        for r, col in scat:
            if not (0 <= r < h and 0 <= col < w):
                raise ValueError(f"scatterer cell [{r}, {col}] is outside grid {cfg.grid}")
            solid[r, col] = True
        self.solid = solid
        for name in ("speakers", "microphones", "membranes"):
            for r, col in getattr(cfg, name):
                for idx, _ in self._bilinear(r, col):
                    rr, cc = divmod(idx, wp)
                    if solid[rr - 1, cc - 1]:
                        raise ValueError(f"{name}: position [{r}, {col}] touches a scatterer")
        fluid = torch.zeros(h + 2, wp, dtype=torch.float64)
        fluid[1:-1, 1:-1] = (~solid).double()
        ff = fluid.flatten()
        # faces between flat cells i and i + wp (vertical), i and i + 1 (horizontal)
        self.cx = (cr**2) * ff[:-wp] * ff[wp:]
        self.cy = (cr**2) * ff[:-1] * ff[1:]
        # pressure damping per step: lossy walls (impedance) and the sponge layer
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
        loss = loss * fluid
        a = (1 - loss / 2) / (1 + loss / 2) * fluid
        b = 1 / (1 + loss / 2) * fluid
        self.loss = loss
        self.a_mid = a.flatten()[wp : n - wp].contiguous()
        self.b_mid = b.flatten()[wp : n - wp].contiguous()
        bflat = b.flatten()
        # speakers: tone k plays on speaker k mod S; bilinear spreading over cells
        dp_per_q = cfg.rho * cfg.c**2 * cfg.dt / cfg.dx**2  # Pa per step per (m^2/s)
        spk_cells: list[int] = []
        spk_gain = torch.zeros(cfg.n_in, 0, dtype=torch.float64)
        cols = []
        for s, (r, col) in enumerate(cfg.speakers):
            for idx, wgt in self._bilinear(r, col):
                spk_cells.append(idx)
                g = torch.zeros(cfg.n_in, dtype=torch.float64)
                g[s :: cfg.n_speakers] = wgt * cfg.volume_velocity * dp_per_q * float(bflat[idx])
                cols.append(g)
        spk_gain = torch.stack(cols, 1) if cols else spk_gain
        self.spk_idx = torch.tensor(spk_cells, dtype=torch.long)
        self.spk_gain = spk_gain  # [n_in, speaker cells]
        self.mem_idx = torch.tensor([self._flat(r, col) for r, col in cfg.membranes], dtype=torch.long)
        self.src_idx = torch.cat([self.spk_idx, self.mem_idx])
        # membranes, a discrete-gradient (average-vector-field) scheme, exactly energy
        # conserving for any potential V(x) = x^2/2 + alpha x^3/3 + beta x^4/4:
        #   (x^{n+1} - 2 x^n + x^{n-1}) + g (x^{n+1} - x^{n-1})
        #       = W^2 (p^n / p_ref - [V(x^{n+1}) - V(x^{n-1})] / (x^{n+1} - x^{n-1}))
        # with g = w0 dt / (2 Q). Linear membranes: the average-acceleration Newmark scheme,
        # solved in closed form; W = 2 tan(w0 dt / 2) puts its resonance exactly at w0.
        # Nonlinear membranes: Newton steps on the cubic in x^{n+1}.
        wdt = torch.tensor([2 * math.pi * f * cfg.dt for f in cfg.membrane_freq_hz], dtype=torch.float64)
        g = wdt / cfg.membrane_q / 2 if math.isfinite(cfg.membrane_q) else torch.zeros_like(wdt)
        self.membrane = {
            "w2": (2 * torch.tan(wdt / 2)).square(),
            "g": g,
            "src": -cfg.membrane_coupling * cfg.membrane_p_ref * bflat[self.mem_idx],
        }
        # microphones
        mic_cells: list[int] = []
        mic_w = []
        for k, (r, col) in enumerate(cfg.microphones):
            for idx, wgt in self._bilinear(r, col):
                mic_cells.append(idx)
                row = torch.zeros(cfg.n_microphones, dtype=torch.float64)
                row[k] = wgt
                mic_w.append(row)
        self.mic_idx = torch.tensor(mic_cells, dtype=torch.long)
        self.mic_w = torch.stack(mic_w, 0)  # [mic cells, microphones]
        self.mic_single = len(mic_cells) == cfg.n_microphones
        # tone waveforms and read-out basis over one window: every tone and every read-out
        # bin is periodic in the window, so one period serves the whole run (the tables do
        # not grow with the number of steps)
        n_w = int(cfg.window_steps)
        steps = torch.arange(n_w, dtype=torch.long)[:, None]
        g = torch.Generator().manual_seed(cfg.seed + 7919)
        tone_m = torch.tensor(cfg.tone_bins, dtype=torch.long)
        tone_phase = 2 * math.pi * torch.rand(cfg.n_in, generator=g, dtype=torch.float64)
        self.tone_phase = tone_phase
        # cone displacement sin(theta) of each tone; the source is its step difference,
        # divided by 2 sin(w dt / 2) so that each tone's volume velocity is cos(theta(n + 1/2))
        self.cone = torch.sin(2 * math.pi / n_w * ((tone_m * steps) % n_w).double() + tone_phase)
        self.tone_norm = 1 / (2 * torch.sin(math.pi * tone_m.double() / n_w))
        steady = (self.cone.roll(-1, 0) - self.cone) * self.tone_norm  # [window, n_in]
        self.drive = steady[:, :, None] * self.spk_gain[None]  # [window, n_in, speaker cells]
        bins = torch.tensor(cfg.bins, dtype=torch.long)  # [mics, bins]
        ang = 2 * math.pi / n_w * ((bins[None] * steps[:, :, None]) % n_w).double()
        self.basis = torch.cat([torch.cos(ang), torch.sin(ang)], 2)  # [window, mics, 2 bins]

    def _tab(self, device: torch.device, dtype: torch.dtype) -> _Tables:
        key = (str(device), dtype)
        if key not in self._tables:
            self._tables[key] = _Tables(self, device, dtype)
        return self._tables[key]

    # -- the time loop -------------------------------------------------------------------------
    def _envelope(self, n: int) -> float:
        """Raised-cosine fade-in of the speaker cone displacement at step ``n``."""
        r = self.config.ramp_steps
        if n >= r:
            return 1.0
        return 0.5 - 0.5 * math.cos(math.pi * n / r)

    def simulate(
        self,
        x: torch.Tensor | None = None,
        steps: int | None = None,
        *,
        p0: torch.Tensor | None = None,
        batch: int | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        energy: bool = False,
        read: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Run the scheme for ``steps`` (default: transient + window) and return its results.

        ``x`` ``[B, n_in]`` sets the tone amplitudes (``None``: no drive). ``p0`` is an initial
        pressure field ``[rows, cols]`` or ``[B, rows, cols]`` in Pa (default 0). Returns
        ``p`` (the final pressure, ``[B, rows, cols]``), ``spectrum`` (complex DFT amplitude of
        every read-out bin at every microphone over the window, ``[B, mics, bins]``, when
        ``read``) and ``energy`` (the scheme's conserved energy per step in J per metre of
        depth, ``[steps, B]``, when asked). Runs in place without time history unless
        autograd is enabled.
        """
        cfg = self.config
        steps = cfg.total_steps if steps is None else int(steps)
        if x is not None:
            dtype, device, batch = x.dtype, x.device, x.shape[0]
        elif p0 is not None:
            dtype = dtype or p0.dtype
            device = device or p0.device
            batch = batch or (p0.shape[0] if p0.ndim == 3 else 1)
        dtype = dtype or torch.float64
        device = torch.device(device or "cpu")
        batch = batch or 1
        tb = self._tab(device, dtype)
        h, w = cfg.grid
        n, wp = self.n_cells, self.wp
        zeros = dict(device=device, dtype=dtype)
        p = torch.zeros(batch, h + 2, wp, **zeros)
        if p0 is not None:
            p0 = p0.to(**zeros)
            p[:, 1:-1, 1:-1] = p0 if p0.ndim == 3 else p0.unsqueeze(0)
            p[:, 1:-1, 1:-1] *= (~self.solid).to(**zeros)
        n_mem = self.mem_idx.numel()
        state = (
            p.reshape(batch, n),
            torch.zeros(batch, n - wp, **zeros),  # vertical faces (between i and i + wp)
            torch.zeros(batch, n - 1, **zeros),  # horizontal faces (between i and i + 1)
            torch.zeros(batch, n_mem, **zeros),  # membrane displacement x^n
            torch.zeros(batch, n_mem, **zeros),  # x^n - x^{n-1}
            torch.zeros(batch, cfg.n_microphones, 2 * cfg.n_bins, **zeros),  # cos, sin sums
            torch.zeros(batch, n - 2 * wp, **zeros),  # D w^{n-1/2} = p^n - p^{n-1} (lossless)
        )
        energies: list[torch.Tensor] | None = [] if energy else None
        seg = int(cfg.checkpoint_steps)
        needs_grad = torch.is_grad_enabled() and x is not None and x.requires_grad
        if needs_grad and seg > 0 and not energy and steps > seg:
            # the forward of each segment runs in place without autograd; the backward pass
            # re-runs it out of place with autograd, one segment at a time
            from torch.utils.checkpoint import checkpoint

            for start in range(0, steps, seg):
                state = checkpoint(
                    self._advance, tb, x, read, None, start, min(start + seg, steps), *state,
                    use_reentrant=True, preserve_rng_state=False,
                )
        else:
            state = self._advance(tb, x, read, energies, 0, steps, *state)
        p, acc = state[0], state[5]
        out = {"p": p.reshape(batch, h + 2, wp)[:, 1:-1, 1:-1]}
        if read:
            nb = cfg.n_bins
            acc = acc * (2.0 / int(cfg.window_steps))
            out["spectrum"] = torch.complex(acc[..., :nb], -acc[..., nb:])  # sum p e^{-i w n}
            out["_re_im"] = acc
        if energy:
            out["energy"] = torch.stack(energies, 0)
        return out

    def _advance(self, tb: _Tables, x, read, energies, start, stop, p, vx, vy, xm, um, acc, div):
        """Steps ``start .. stop - 1`` of the scheme from the given state; returns the new state.

        In place (no allocation per step, no history) when autograd is off; out of place, so
        that autograd can record it, when it is on.
        """
        cfg = self.config
        grad = torch.is_grad_enabled()
        n, wp = self.n_cells, self.wp
        mid = slice(wp, n - wp)
        n_mem = xm.shape[1]
        n_w, t0, ramp = int(cfg.window_steps), int(cfg.transient_steps), int(cfg.ramp_steps)
        p_ref = cfg.membrane_p_ref
        kappa = cfg.viscous_time / cfg.dt
        energy = energies is not None
        if not grad:
            p, vx, vy, acc, div = (t.clone() for t in (p, vx, vy, acc, div))  # own the buffers
            gbuf = torch.empty_like(vy)
            qbuf = torch.zeros_like(p) if kappa else p
        drive = x is not None and tb.spk_idx.numel() > 0
        if drive and n_mem:
            src_idx = tb.src_idx
        else:
            src_idx = tb.spk_idx if drive else (tb.mem_idx if n_mem else None)
        for step in range(start, stop):
            # 1) face velocities at n + 1/2, stored as w = -courant * rho * c * v
            vx_old, vy_old = (vx.clone(), vy.clone()) if energy else (0, 0)
            # viscous absorption: the gradient acts on p + kappa (p^n - p^{n-1})
            if grad:
                q = p + kappa * torch.nn.functional.pad(div, (wp, wp)) if kappa else p
                vx = vx + tb.cx * (q[:, wp:] - q[:, :-wp])
                vy = vy + tb.cy * (q[:, 1:] - q[:, :-1])
            else:
                if kappa:
                    torch.add(p[:, mid], div, alpha=kappa, out=qbuf[:, mid])
                q = qbuf
                g = torch.sub(q[:, wp:], q[:, :-wp], out=gbuf[:, : n - wp])
                vx.addcmul_(tb.cx, g)
                g = torch.sub(q[:, 1:], q[:, :-1], out=gbuf)
                vy.addcmul_(tb.cy, g)
            # 2) membranes: x^{n+1} from x^n, x^{n-1} and the pressure at n
            if n_mem:
                target = tb.w2 * (p.index_select(1, tb.mem_idx) / p_ref)
                x_new = self._membrane_step(tb, xm, um, target)
                um_new = x_new - xm
                if energy:
                    energies.append(
                        self._energy(p, vx, vx_old, vy, vy_old, xm, x_new, um_new, tb)
                    )
                xm, um = x_new, um_new
            elif energy:
                energies.append(self._energy(p, vx, vx_old, vy, vy_old, xm, xm, um, tb))
            # 3) pressure at n + 1: divergence, losses, sources
            if grad:
                div = vx[:, wp:] - vx[:, : n - 2 * wp] + vy[:, wp : n - wp] - vy[:, wp - 1 : n - wp - 1]
                p_mid = p[:, mid] + div if tb.lossless else tb.a * p[:, mid] + tb.b * div
                p = torch.nn.functional.pad(p_mid, (wp, wp))
            else:
                torch.sub(vx[:, wp:], vx[:, : n - 2 * wp], out=div)
                div.add_(vy[:, wp : n - wp]).sub_(vy[:, wp - 1 : n - wp - 1])
                pmid = p[:, mid]
                if tb.lossless:
                    pmid.add_(div)
                else:
                    pmid.mul_(tb.a).addcmul_(tb.b, div)
            if src_idx is not None:
                src = []
                if drive:  # volume velocity = rate of change of the cone's volume displacement
                    if step < ramp:
                        cone0 = tb.cone[step % n_w] * self._envelope(step)
                        cone1 = tb.cone[(step + 1) % n_w] * self._envelope(step + 1)
                        tone = (cone1 - cone0) * tb.tone_norm
                        src.append(x @ (tone.unsqueeze(1) * tb.spk_gain))
                    else:
                        src.append(x @ tb.drive[step % n_w])
                if n_mem:
                    src.append(um * tb.mem_src)
                s = torch.cat(src, 1) if len(src) > 1 else src[0]
                p = p.index_add(1, src_idx, s) if grad else p.index_add_(1, src_idx, s)
            # 4) read the microphones over the window (p at step + 1)
            k = step + 1 - t0
            if read and 0 <= k < n_w:
                pmic = p.index_select(1, tb.mic_idx)
                if not tb.mic_single:
                    pmic = pmic @ tb.mic_w
                if grad:
                    acc = acc + pmic.unsqueeze(2) * tb.basis[k]
                else:
                    acc.addcmul_(pmic.unsqueeze(2), tb.basis[k])
        return p, vx, vy, xm, um, acc, div

    def _membrane_step(self, tb: _Tables, x: torch.Tensor, u: torch.Tensor, target: torch.Tensor):
        """x^{n+1} of the discrete-gradient membrane scheme (``u = x^n - x^{n-1}``).

        With ``b = x^{n-1}`` the scheme is a cubic ``A3 z^3 + A2 z^2 + A1 z + A0 = 0`` in
        ``z = x^{n+1}``, strictly increasing (the restoring force is monotone), solved by
        Newton steps from ``x^n + u``.
        """
        if tb.linear:
            return x + (u * tb.lin_num + target - tb.w2 * x) * tb.lin_den
        b = x - u
        a2 = torch.addcmul(tb.c2, tb.a3, b)  # W^2 (alpha/3 + beta b/4)
        a1 = torch.addcmul(tb.c1, tb.c2, b).addcmul_(tb.a3, b * b)  # g1 + W^2 (1/2 + ...)
        a0 = b * torch.addcmul(tb.c0, b, a2) - 2 * u - target
        a2x2 = 2 * a2
        z = x + u
        # Newton converges quadratically: once a step is below sqrt(tolerance), the error
        # left after it is about (R''/2R') step^2, below the tolerance
        stop = math.sqrt(8 * torch.finfo(x.dtype).eps) * (1 + float(x.detach().abs().max()))
        for _ in range(_NEWTON_MAX):
            res = torch.addcmul(a0, torch.addcmul(a1, torch.addcmul(a2, tb.a3, z), z), z)
            slope = torch.addcmul(a1, torch.addcmul(a2x2, tb.a3x3, z), z)
            step = res / slope
            z = z - step
            if float(step.detach().abs().max()) <= stop:
                return z
        raise FloatingPointError(
            f"{self.spec.name}: the membrane solver did not converge (|x| ~ "
            f"{float(z.abs().max()):.3g}); lower volume_velocity or raise membrane_p_ref"
        )

    def _energy(self, p, vx, vx_old, vy, vy_old, x_old, x_new, u_new, tb) -> torch.Tensor:
        """The scheme's conserved energy at step n, in J per metre of depth.

        ``|p^n|^2/2 + <w^{n-1/2}, w^{n+1/2}>/(2 C^2)`` for the field, plus for each membrane
        ``mu p_ref^2 (u^2/(2 W^2) + (V(x^{n+1}) + V(x^n))/2) - mu p_ref p^n u/2`` with
        ``u = x^{n+1} - x^n`` (the last term is the staggered field-membrane exchange); in Pa^2
        cells, times ``dx^2 / (rho c^2)``.
        """
        cfg = self.config
        e = p.square().sum(1) / 2
        e = e + ((vx * vx_old).sum(1) + (vy * vy_old).sum(1)) / (2 * cfg.courant**2)
        if x_old.shape[1]:
            mu, pr = cfg.membrane_coupling, cfg.membrane_p_ref
            a, b = cfg.membrane_alpha, cfg.membrane_beta

            def pot(x):
                return x.square() / 2 + a * x**3 / 3 + b * x**4 / 4

            pm = p.index_select(1, tb.mem_idx)
            e_m = pr**2 * (u_new.square() / (2 * tb.w2) + (pot(x_new) + pot(x_old)) / 2)
            e = e + mu * (e_m - pr * pm * u_new / 2).sum(1)
        return e * cfg.dx**2 / (cfg.rho * cfg.c**2)

    def amplitudes(self, x: torch.Tensor) -> torch.Tensor:
        """Ideal microphone read-out in Pa: ``|DFT bin|`` amplitudes ``[B, mics x bins]``.

        No validation, accounting or noise (use ``device(x)`` for a measurement);
        differentiable when autograd is on.
        """
        acc = self.simulate(x)["_re_im"]
        nb = self.config.n_bins
        power = acc[..., :nb].square() + acc[..., nb:].square()
        tiny = torch.finfo(x.dtype).tiny ** 0.5  # keeps the gradient finite at zero amplitude
        y = (power + tiny).sqrt().flatten(1)
        if not torch.isfinite(y).all():
            raise FloatingPointError(
                f"{self.spec.name}: the simulation diverged; lower volume_velocity or "
                "membrane_beta"
            )
        return y

    def calibration(self) -> torch.Tensor:
        """Per-channel reference amplitude (Pa) of the ``calibrated`` read-out, ``[n_out]``.

        The mean amplitude of each channel over a fixed batch of uniform random drives drawn
        from the seed (what a lab calibration with reference signals would give); computed
        once, in float64 on the CPU.
        """
        if self._calibration is None:
            g = torch.Generator().manual_seed(self.config.seed + 104729)
            ref = torch.rand(64, self.config.n_in, generator=g, dtype=torch.float64)
            with torch.no_grad():
                self._calibration = self.amplitudes(ref).mean(0)
        return self._calibration

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        y = self.amplitudes(x)
        mode = self.config.readout
        if mode == "calibrated":
            y = y / self.calibration().to(device=x.device, dtype=x.dtype)
        elif mode == "db":
            y = 20 * torch.log10(y / P_REF_SPL)
        return apply_effects(y, self.output_effects, self.generator(x.device))

    # -- inspection ------------------------------------------------------------------------
    def field_snapshot(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """Pressure field ``[rows, cols]`` (Pa) of the first sample of ``x`` after ``step`` steps."""
        if x.ndim == 1:
            x = x.unsqueeze(0)
        x = self.validate(x)[:1]
        if not 0 <= int(step) <= self.config.total_steps:
            raise ValueError(f"step must be in 0..{self.config.total_steps}, got {step}")
        with torch.no_grad():
            return self.simulate(x, int(step), read=False)["p"][0]

    def plot(self, fig, x: torch.Tensor) -> bool:
        """Field snapshot with speakers, scatterers, membranes and microphones."""
        fig.set_size_inches(6.5, 5.5)
        self.plot_layout(fig.subplots(), x[:1])
        return True

    def plot_layout(self, ax, x: torch.Tensor | None = None, step: int | None = None):
        """Draw the cavity on a matplotlib ``Axes``; see :func:`plot_layout`."""
        return plot_layout(self, ax, x, step)

    def describe(self) -> dict[str, Any]:
        """The resolved configuration (defaults filled in); ``None`` entries are dropped."""
        d = {k: v for k, v in asdict(self.base_config).items() if v is not None}
        d.pop("perturbations", None)
        if self.perturbed:
            d["perturbations"] = self.describe_perturbations()
        d["grid"] = list(d["grid"])
        return {"kind": "sim:acoustic", **d}


def plot_layout(cavity: AcousticCavity, ax, x: torch.Tensor | None = None, step: int | None = None):
    """Pressure snapshot (when ``x`` is given) with speakers, microphones, membranes, scatterers.

    Draws on the given matplotlib ``Axes`` only (the object API, no pyplot state); ``step``
    defaults to the end of the run. Returns ``ax``.
    """
    import numpy as np
    from matplotlib.patches import Rectangle

    cfg = cavity.config
    h, w = cfg.grid
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)
    if x is not None:
        step = cfg.total_steps if step is None else int(step)
        snap = cavity.field_snapshot(x, step).detach().double().cpu().numpy()
        vmax = max(float(np.abs(snap).max()), 1e-12)
        im = ax.imshow(snap, cmap="RdBu_r", vmin=-vmax, vmax=vmax, extent=extent)
        ax.figure.colorbar(im, ax=ax, label="pressure (Pa)", shrink=0.8)
        ax.set_title(f"pressure after {step} steps ({step * cfg.dt * 1e3:.2f} ms)")
    else:
        ax.imshow(np.zeros((h, w)), cmap="Greys", vmin=0, vmax=1, extent=extent)
        ax.set_title(f"acoustic cavity, {h} x {w} cells of {cfg.dx * 100:g} cm")
    solid = np.ma.masked_where(~cavity.solid.numpy(), np.ones((h, w)))
    ax.imshow(solid, cmap="Greys", vmin=0, vmax=1, extent=extent)
    wall = Rectangle((-0.5, -0.5), w, h, fill=False, lw=3, ec="dimgray",
                     label=f"walls (R = {cfg.wall_reflection:g})")
    ax.add_patch(wall)
    if cavity.scatterer_cells:
        ax.plot([], [], "s", color="black", ls="", label="rigid scatterers")

    def mark(pts, style, color, label):
        pts = np.asarray(pts, dtype=float).reshape(-1, 2)
        if len(pts):
            ax.plot(pts[:, 1], pts[:, 0], style, color=color, ms=9, mec="white", ls="", label=label)

    mark(cfg.speakers, ">", "tab:red", "speakers")
    mark(cfg.membranes, "D", "tab:purple", "Duffing membranes")
    mark(cfg.microphones, "o", "tab:green", "microphones")
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_xlabel("column (cells)")
    ax.set_ylabel("row (cells)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize="small")
    return ax
