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
  any loss it is conserved to round-off (see ``AcousticCavity.simulate`` with
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

The raw-audio mode, ``sim:acoustic-wave`` (``waveform.WaveformCavity``), drives the same
grid and scheme with a waveform at a source and reads the time-integrated squared pressure
at probes, with a design region of trainable wave speed (see ``waveform``).
"""

from .cavity import AcousticCavity
from .config import CFL_LIMIT, P_REF_SPL, READOUT_UNITS, AcousticConfig
from .plot import plot_layout
from .wave_config import WaveformConfig
from .waveform import WaveformCavity

__all__ = [
    "CFL_LIMIT", "P_REF_SPL", "READOUT_UNITS", "AcousticCavity", "AcousticConfig",
    "WaveformCavity", "WaveformConfig", "plot_layout",
]
