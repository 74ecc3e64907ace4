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
relaxation, so ``forward_with_grad`` has a true gradient with respect to the input. With
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
input's torch device. ``MetasurfaceCavity.dipole_moments`` keeps the full dense solve as
a reference (about 25x slower with the defaults).

``solver = "flips"`` (1-bit elements) goes further: a 1-bit element's inverse polarisability
takes one of two values, so every configuration is one of two references (all elements off,
all on; inverted once per frequency at construction) plus a diagonal change on the ``k``
elements that differ from it. Woodbury's identity turns the ``M x M`` solve into a ``k x k``
one, ``k <= M / 2`` with the nearer reference: 2-5x faster per call at 40-76 elements, 3x per
``vowels-microwave-digits`` epoch (``python -m benchmarks.microwave``), equal to the dense
solve to 1e-13 in complex128 and closer to it than the dense solve's own complex64 answer.
Not bit-identical to ``dense`` (the default), so runs that pinned their numbers keep them.
"""


from .cavity import MetasurfaceCavity
from .config import LEVELS, MicrowaveConfig
from .green import green_2d, pair_distances, radiation_kernel

__all__ = [
    "LEVELS", "MetasurfaceCavity", "MicrowaveConfig", "green_2d", "pair_distances", "radiation_kernel",
]
