"""Speakers, membranes and microphones on the grid, and the tone and read-out tables.

Every tone and every read-out bin is periodic in the measurement window, so one window of
each table serves the whole run: the tables do not grow with the number of steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .config import AcousticConfig, resolved
from .geometry import Geometry


@dataclass
class Sources:
    """Where the cavity is driven and read, as float64/long tensors (CPU when built)."""

    spk_idx: torch.Tensor
    """Flat cells the speakers drive (bilinear spreading)."""
    spk_gain: torch.Tensor
    """``[n_in, speaker cells]`` pressure per step per unit input (tone k on speaker k mod S)."""
    mem_idx: torch.Tensor
    """Flat cell of each membrane."""
    src_idx: torch.Tensor
    """Speaker cells, then membrane cells: where sources are added."""
    membrane: dict[str, torch.Tensor]
    """Membrane scheme constants: ``w2`` (W^2), ``g`` (damping), ``src`` (back-coupling)."""
    mic_idx: torch.Tensor
    """Flat cells the microphones read."""
    mic_w: torch.Tensor
    """``[mic cells, microphones]`` interpolation weights."""
    mic_single: bool
    """True when every microphone sits on one cell (no interpolation needed)."""
    tone_phase: torch.Tensor
    """Seeded phase of each tone."""
    cone: torch.Tensor
    """``[window, n_in]`` cone displacement of each tone over one window."""
    tone_norm: torch.Tensor
    """``1 / (2 sin(w dt / 2))`` per tone: each tone's volume velocity is a unit cosine."""
    drive: torch.Tensor
    """``[window, n_in, speaker cells]`` steady-state source per step."""
    basis: torch.Tensor
    """``[window, mics, 2 bins]`` cos and sin of every read-out bin."""


def _speakers(cfg: AcousticConfig, geom: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """Speaker cells and gains: tone k plays on speaker k mod S; bilinear spreading over cells."""
    bflat = geom.b_flat
    dt = resolved(cfg.dt)
    dp_per_q = cfg.rho * cfg.c**2 * dt / cfg.dx**2  # Pa per step per (m^2/s)
    spk_cells: list[int] = []
    spk_gain = torch.zeros(cfg.n_in, 0, dtype=torch.float64)
    cols = []
    for s, (r, col) in enumerate(resolved(cfg.speakers)):
        for idx, wgt in geom.bilinear(r, col):
            spk_cells.append(idx)
            g = torch.zeros(cfg.n_in, dtype=torch.float64)
            g[s :: cfg.n_speakers] = wgt * cfg.volume_velocity * dp_per_q * float(bflat[idx])
            cols.append(g)
    spk_gain = torch.stack(cols, 1) if cols else spk_gain
    return torch.tensor(spk_cells, dtype=torch.long), spk_gain


def _membranes(cfg: AcousticConfig, geom: Geometry, mem_idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """Constants of the membranes' discrete-gradient (average-vector-field) scheme.

    Exactly energy conserving for any potential V(x) = x^2/2 + alpha x^3/3 + beta x^4/4:
      (x^{n+1} - 2 x^n + x^{n-1}) + g (x^{n+1} - x^{n-1})
          = W^2 (p^n / p_ref - [V(x^{n+1}) - V(x^{n-1})] / (x^{n+1} - x^{n-1}))
    with g = w0 dt / (2 Q). Linear membranes: the average-acceleration Newmark scheme,
    solved in closed form; W = 2 tan(w0 dt / 2) puts its resonance exactly at w0.
    Nonlinear membranes: Newton steps on the cubic in x^{n+1}.
    """
    dt = resolved(cfg.dt)
    freqs = resolved(cfg.membrane_freq_hz)
    wdt = torch.tensor([2 * math.pi * f * dt for f in freqs], dtype=torch.float64)
    g = wdt / cfg.membrane_q / 2 if math.isfinite(cfg.membrane_q) else torch.zeros_like(wdt)
    return {
        "w2": (2 * torch.tan(wdt / 2)).square(),
        "g": g,
        "src": -cfg.membrane_coupling * cfg.membrane_p_ref * geom.b_flat[mem_idx],
    }


def _microphones(cfg: AcousticConfig, geom: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    mic_cells: list[int] = []
    mic_w = []
    for k, (r, col) in enumerate(resolved(cfg.microphones)):
        for idx, wgt in geom.bilinear(r, col):
            mic_cells.append(idx)
            row = torch.zeros(cfg.n_microphones, dtype=torch.float64)
            row[k] = wgt
            mic_w.append(row)
    return torch.tensor(mic_cells, dtype=torch.long), torch.stack(mic_w, 0)


def build_sources(cfg: AcousticConfig, geom: Geometry) -> Sources:
    """The transducers of ``cfg`` on ``geom`` and one window of tones and read-out basis."""
    spk_idx, spk_gain = _speakers(cfg, geom)
    mem_idx = torch.tensor([geom.flat(r, col) for r, col in resolved(cfg.membranes)], dtype=torch.long)
    membrane = _membranes(cfg, geom, mem_idx)
    mic_idx, mic_w = _microphones(cfg, geom)
    n_w = int(resolved(cfg.window_steps))
    steps = torch.arange(n_w, dtype=torch.long)[:, None]
    g = torch.Generator().manual_seed(cfg.seed + 7919)
    tone_m = torch.tensor(cfg.tone_bins, dtype=torch.long)
    tone_phase = 2 * math.pi * torch.rand(cfg.n_in, generator=g, dtype=torch.float64)
    # cone displacement sin(theta) of each tone; the source is its step difference,
    # divided by 2 sin(w dt / 2) so that each tone's volume velocity is cos(theta(n + 1/2))
    cone = torch.sin(2 * math.pi / n_w * ((tone_m * steps) % n_w).double() + tone_phase)
    tone_norm = 1 / (2 * torch.sin(math.pi * tone_m.double() / n_w))
    steady = (cone.roll(-1, 0) - cone) * tone_norm  # [window, n_in]
    bins = torch.tensor(cfg.read_bins, dtype=torch.long)  # [mics, bins]
    ang = 2 * math.pi / n_w * ((bins[None] * steps[:, :, None]) % n_w).double()
    return Sources(
        spk_idx=spk_idx,
        spk_gain=spk_gain,
        mem_idx=mem_idx,
        src_idx=torch.cat([spk_idx, mem_idx]),
        membrane=membrane,
        mic_idx=mic_idx,
        mic_w=mic_w,
        mic_single=len(mic_idx) == cfg.n_microphones,
        tone_phase=tone_phase,
        cone=cone,
        tone_norm=tone_norm,
        drive=steady[:, :, None] * spk_gain[None],
        basis=torch.cat([torch.cos(ang), torch.sin(ang)], 2),
    )
