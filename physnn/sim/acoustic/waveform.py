"""``sim:acoustic-wave``: the acoustic cavity driven by raw audio, probe energies out.

Wave physics as a recurrent network (Hughes, Williamson, Minkov and Fan, "Wave physics as an
analog recurrent neural network", Science Advances 5:eaay6946, 2019): a waveform enters the
cavity at a source, propagates, scatters off the walls, rigid cells and a region of
trainable wave speed, and each probe reports the energy that reached it.

One query, for a batch of waveforms ``x [B, T]`` (``T = n_in`` samples at ``sample_rate``,
values in [-1, 1]):

1. resample: the band-limited waveform at the grid's half steps ``(n + 1/2) dt``
   (``resample.Resampler``: a Kaiser-windowed sinc, a chunk of ``CHUNK`` steps at a time);
2. inject: the waveform is the source's volume velocity ``q = volume_velocity * x(t)``,
   which adds ``rho c^2 dt q / dx^2`` to the pressure of the source cell each step (spread
   bilinearly for a fractional position), as a speaker of ``sim:acoustic`` does;
3. propagate: the leapfrog of ``sim:acoustic`` (``solver.Scheme.field_step``: the same grid,
   walls, sponge and rigid scatterers, built by ``geometry.build_geometry``), for
   ``ceil((T / sample_rate + tail_s) / dt)`` steps;
4. read: ``E_k = sum_n p_k(n dt)^2 dt`` at each probe ``k`` (bilinear for a fractional
   position), accumulated as a running sum: ``[B, n_probes]`` in Pa^2 s, or each probe's
   share of the total with ``readout = "fraction"``.

The design region. A box of cells whose wave speed ``c(r)`` differs from the background
``c0``: the pressure update reads ``dp/dt = -rho c(r)^2 div v``, so the divergence term of
those cells is scaled by ``(c / c0)^2`` (the density stays that of air; the time step is set
by the fastest speed allowed, ``speed_range[1]``, so every speed in the range is stable).
``WaveformCavity.wave_speed`` holds it: a float64 leaf tensor ``[rows, cols]`` in m/s with
``requires_grad``, the parameter a caller optimises (wavetorch's trainable material)::

    dev = make_device({"kind": "sim:acoustic-wave", "readout": "fraction"})
    opt = torch.optim.Adam([dev.wave_speed], lr=2.0)
    y = dev.forward_with_grad(x)                     # [B, probes], differentiable
    loss = torch.nn.functional.nll_loss(y.log(), labels)
    opt.zero_grad(); loss.backward(); opt.step(); dev.project_speed()

A query clamps the speed into ``speed_range`` (stability does not depend on the optimiser);
``project_speed`` clamps the parameter itself, so its gradient does not stay zero outside.
``describe()`` writes the current speed as ``design_speed``: ``make_device`` rebuilds the
trained cavity.

Label tones. With ``label_tones`` (Hz) the first ``len(label_tones)`` inputs are not samples
but the amplitudes of Hann-windowed tone bursts played for ``label_s`` seconds before the
waveform (``drive``): PhyLL's label, overlaid on those inputs, reaches the probes as a tone
burst of its class (``docs/devices.md``, the raw-audio experiments).

``trainable_tensors()`` is ``[wave_speed]`` and ``project_trainable()`` is ``project_speed``:
``train.train_device`` trains the speed inside backprop's optimiser, and the device's
``state_dict`` carries it, so a checkpoint resumes it.

Memory. ``device(x)`` (no autograd) runs in place on the grid's fields: it keeps the field,
one chunk of the resampled drive and the running sums, never the time history, so memory
does not depend on ``T``. ``forward_with_grad`` differentiates by the adjoint loop
(``gradient = "adjoint"``, ``wave_adjoint``): the same in-place loop forwards, keeping only
the probes' pressure and the design cells' divergence at every step, and its transpose
backwards: a forward and backward pass costs about 2.8 black-box queries at the presets' size
(``benchmarks/wave_gradient.py``). ``gradient = "autograd"`` records every step instead (the
reference; memory grows with ``T``, ``checkpoint_steps`` bounds it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Self

import torch

from ...core.device import Device, DeviceSpec, Domain
from ...core.effects import Effect, apply_effects, make_effects
from .geometry import Geometry, build_geometry
from .resample import Resampler
from .solver import Scheme
from .wave_config import NAME, WAVE_READOUT_UNITS, WaveformConfig

CHUNK = 64
"""Time steps whose drive is resampled at once (the drive a query holds at a time)."""


@dataclass
class WaveTables:
    """The field step's tables on one torch device and dtype (``solver.FieldTables``), the
    source and probe cells, and the design cells whose divergence factor ``b`` is scaled."""

    cx: torch.Tensor
    """Vertical face coefficients (``courant0^2``, 0 at rigid faces)."""
    cy: torch.Tensor
    """Horizontal face coefficients."""
    a: torch.Tensor
    """Loss factor of the pressure update (grid without ghost rows)."""
    b: torch.Tensor
    """Divergence factor of the pressure update (background speed)."""
    lossless: bool
    """``a = b = 1`` on every fluid cell and no design region."""
    src_idx: torch.Tensor
    """Flat cells the source drives."""
    src_gain: torch.Tensor
    """Pressure per step per unit source value, per source cell."""
    probe_idx: torch.Tensor
    """Flat cells the probes read."""
    probe_w: torch.Tensor | None
    """``[probe cells, probes]`` interpolation weights; None when every probe is one cell."""
    design_idx: torch.Tensor
    """Design cells, flat in the grid without ghost rows (row-major over the region)."""

    def with_speed(self, ratio2: torch.Tensor | None) -> WaveTables:
        """These tables with ``b`` of the design cells times ``ratio2 = (c / c0)^2``
        (differentiable in ``ratio2``); ``None``: as they are."""
        if ratio2 is None or not self.design_idx.numel():
            return self
        b = self.b.index_put((self.design_idx,), self.b[self.design_idx] * ratio2.flatten())
        return WaveTables(self.cx, self.cy, self.a, b, False, self.src_idx, self.src_gain,
                          self.probe_idx, self.probe_w, self.design_idx)


def label_bursts(cfg: WaveformConfig) -> torch.Tensor:
    """``[n_label, label_samples]``: a Hann-windowed sine of each label tone (peak 1), at
    ``sample_rate`` (float64; ``[0, 0]`` without label tones)."""
    n = cfg.label_samples
    t = torch.arange(n, dtype=torch.float64)
    window = torch.sin(torch.pi * (t + 0.5) / max(n, 1)).square()
    f = torch.tensor(cfg.label_tones, dtype=torch.float64).unsqueeze(1)
    return window * torch.sin(2 * torch.pi * f * t / cfg.sample_rate)


class WaveformCavity(Device):
    """``sim:acoustic-wave``: waveforms ``[B, n_in]`` in [-1, 1] -> probe energies
    ``[B, n_probes]`` (see the module docstring for the physics, the design region and
    memory). Black box by default; ``forward_with_grad`` differentiates through the time
    loop w.r.t. the input and ``wave_speed``."""

    differentiable = True

    def __init__(self, config: WaveformConfig | None = None) -> None:
        cfg = config if config is not None else WaveformConfig()
        self.config = cfg
        try:
            cavity = cfg.cavity_config()
            self.geometry: Geometry = build_geometry(cavity)
        except ValueError as e:  # the shared checks name sim:acoustic's keys: use ours
            text = str(e).replace("speakers:", "source:").replace("microphones:", "probes:")
            raise ValueError(f"{NAME}: {text}") from None
        self.scheme = Scheme(cavity, self.geometry, NAME)
        self.resampler = Resampler(cfg.sample_rate, cfg.time_step, cfg.n_samples)
        self.label_bursts = label_bursts(cfg)
        """``[n_label, label_samples]`` float64: each label tone's burst at ``sample_rate``."""
        self.output_effects: list[Effect] = make_effects(cfg.noise)
        spec = DeviceSpec(
            name=NAME, n_in=cfg.n_in, n_out=cfg.n_probes, domain=Domain(-1.0, 1.0),
            output_units=WAVE_READOUT_UNITS[cfg.readout], time_per_query_s=cfg.duration_s,
            energy_per_query_j=cfg.source_power_w * cfg.duration_s,
        )
        super().__init__(spec, seed=cfg.seed, clip=cfg.clip)
        speed = torch.tensor(cfg.design_speed or [], dtype=torch.float64)
        self.wave_speed = speed.reshape(cfg.design_shape).requires_grad_(True)
        """Wave speed (m/s) of the design region's cells, ``[rows, cols]``: a float64 leaf
        tensor to optimise (see the module docstring); a query clamps it to ``speed_range``."""
        self._tables: dict[tuple[str, torch.dtype], WaveTables] = {}

    @classmethod
    def from_description(cls, **description: Any) -> Self:
        """Build from a description's keys (the ``sim:acoustic-wave`` entry point); an unknown
        key is a TypeError naming it."""
        return cls(WaveformConfig(**description))

    # -- tables and the design region --------------------------------------------------------
    def _tab(self, device: torch.device, dtype: torch.dtype) -> WaveTables:
        key = (str(device), dtype)
        if key not in self._tables:
            self._tables[key] = self._build_tables(device, dtype)
        return self._tables[key]

    def _build_tables(self, device: torch.device, dtype: torch.dtype) -> WaveTables:
        """The geometry's fields and the transducer cells on ``device`` in ``dtype``."""
        cfg, geom = self.config, self.geometry
        dp_per_q = cfg.rho * cfg.c**2 * cfg.time_step / cfg.dx**2  # Pa per step per m^2/s
        cells = geom.bilinear(*cfg.source_point)
        gain = [w * cfg.volume_velocity * dp_per_q * float(geom.b_flat[i]) for i, w in cells]
        probe_cells: list[int] = []
        weights = []
        for k, (r, col) in enumerate(cfg.probe_points):
            for idx, w in geom.bilinear(r, col):
                probe_cells.append(idx)
                row = [0.0] * cfg.n_probes
                row[k] = w
                weights.append(row)
        single = len(probe_cells) == cfg.n_probes
        design: list[int] = []
        if cfg.design_region:
            r0, c0, r1, c1 = cfg.design_region
            design = [geom.flat(r, c) - geom.wp for r in range(r0, r1) for c in range(c0, c1)]

        def t(v: Any) -> torch.Tensor:
            return torch.as_tensor(v, dtype=torch.float64).to(device=device, dtype=dtype)

        def i(v: list[int]) -> torch.Tensor:
            return torch.tensor(v, dtype=torch.long, device=device)

        return WaveTables(
            cx=t(geom.cx), cy=t(geom.cy), a=t(geom.a_mid), b=t(geom.b_mid),
            lossless=bool((geom.a_mid == geom.b_mid).all()) and not design,
            src_idx=i([c for c, _ in cells]), src_gain=t(gain), probe_idx=i(probe_cells),
            probe_w=None if single else t(weights), design_idx=i(design),
        )

    def speed_ratio2(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
        """``(c / c0)^2`` of the design cells, the speed clamped into ``speed_range``
        (differentiable in ``wave_speed`` when autograd is on); None without a design region."""
        if not self.wave_speed.numel():
            return None
        lo, hi = self.config.speed_range or (self.config.c, self.config.c)
        c = self.wave_speed.clamp(lo, hi).to(device=device, dtype=dtype)
        return (c / self.config.c).square()

    def project_speed(self) -> None:
        """Clamp ``wave_speed`` into ``speed_range`` in place (after an optimiser step)."""
        lo, hi = self.config.speed_range or (self.config.c, self.config.c)
        with torch.no_grad():
            self.wave_speed.clamp_(lo, hi)

    def trainable_tensors(self) -> list[torch.Tensor]:
        """``[wave_speed]`` (``[]`` without a design region): what ``train.train_device``
        trains (see ``Device.trainable_tensors``)."""
        return [self.wave_speed] if self.wave_speed.numel() else []

    def project_trainable(self) -> None:
        """``project_speed``: the speed back into ``speed_range`` after an optimiser step."""
        self.project_speed()

    # -- the time loop -----------------------------------------------------------------------
    def drive(self, x: torch.Tensor) -> torch.Tensor:
        """The waveform a query plays, ``[B, n_samples]``: the label tones' burst (amplitudes
        ``x[:, :n_label]``), then the samples ``x[:, n_label:]``; ``x`` itself without label
        tones (differentiable)."""
        n = self.config.n_label
        if not n:
            return x
        burst = x[:, :n] @ self.label_bursts.to(device=x.device, dtype=x.dtype)
        return torch.cat([burst, x[:, n:]], 1)

    def simulate(self, x: torch.Tensor, *, trace: bool = False) -> dict[str, torch.Tensor]:
        """Run one query's time loop on waveforms ``x [B, n_in]`` (no validation, accounting
        or noise; differentiable when autograd is on).

        Returns ``energy`` (``[B, n_probes]``, Pa^2 s) and ``p`` (the final pressure,
        ``[B, rows, cols]``); with ``trace``, also ``trace`` (``[B, steps, n_probes]``: the
        probes' pressure after every step, i.e. at ``t = (n + 1) dt``), a diagnostic whose
        memory grows with the steps (the field's history is never kept).
        """
        tb = self._tab(x.device, x.dtype)
        grad = torch.is_grad_enabled() and (x.requires_grad or self.wave_speed.requires_grad)
        if grad and not trace and self.config.gradient == "adjoint":
            return self._simulate_adjoint(tb, x)
        with torch.set_grad_enabled(grad):
            x = self.drive(x)
            tb = tb.with_speed(self.speed_ratio2(x.device, x.dtype))
            state = self._initial_state(x.shape[0], x.device, x.dtype)
            traces: list[torch.Tensor] | None = [] if trace else None
            steps, seg = self.config.steps, self.config.checkpoint_steps
            if grad and 0 < seg < steps and not trace:
                from torch.utils.checkpoint import checkpoint

                for start in range(0, steps, seg):
                    state = checkpoint(
                        self._segment, tb, x, start, min(start + seg, steps), None, *state,
                        use_reentrant=False, preserve_rng_state=False,
                    )
            else:
                state = self._segment(tb, x, 0, steps, traces, *state)
        h, w = self.config.grid
        p, acc = state[0], state[4]
        out = {"energy": acc, "p": p.reshape(x.shape[0], h + 2, w + 2)[:, 1:-1, 1:-1]}
        if traces is not None:
            out["trace"] = torch.cat(traces, 1)
        return out

    def _simulate_adjoint(self, tb: WaveTables, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``simulate`` with autograd on, differentiated by the adjoint loop (``wave_adjoint``):
        the drive and the design cells' factor are computed here with autograd, the loop is
        one node."""
        from .wave_adjoint import adjoint_energies

        x = self.drive(x)
        ratio2 = self.speed_ratio2(x.device, x.dtype)
        n_src = min(self.resampler.last_step(), self.config.steps)
        span = 16 * CHUNK  # the resampler's band matrix stays small for long waveforms
        u = torch.cat(
            [self.resampler.values(x, a, min(a + span, n_src)) for a in range(0, n_src, span)]
            or [x.new_zeros(x.shape[0], 0)], 1,
        )
        energy, p = adjoint_energies(self, tb, u, ratio2)
        h, w = self.config.grid
        return {"energy": energy, "p": p.reshape(x.shape[0], h + 2, w + 2)[:, 1:-1, 1:-1]}

    def _initial_state(
        self, batch: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, ...]:
        """Rest: pressure, face velocities, divergence and the probes' running sums at zero."""
        n, wp = self.geometry.n_cells, self.geometry.wp

        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(batch, *shape, device=device, dtype=dtype)

        return zeros(n), zeros(n - wp), zeros(n - 1), zeros(n - 2 * wp), zeros(self.config.n_probes)

    def _segment(
        self, tb: WaveTables, x: torch.Tensor, start: int, stop: int,
        traces: list[torch.Tensor] | None, *state: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """Steps ``start .. stop - 1`` from ``state = (p, vx, vy, div, acc)``: in place on
        fresh buffers without autograd, out of place with it."""
        p, vx, vy, div, acc = state
        grad = torch.is_grad_enabled()
        kappa = self.config.viscous_time / self.config.time_step
        bufs: tuple[torch.Tensor, torch.Tensor] | None = None
        if not grad:
            p, vx, vy, div, acc = (s.clone() for s in state)  # own the buffers
            bufs = (torch.empty_like(vy), torch.zeros_like(p) if kappa else p)
        dt = self.config.time_step
        quiet = self.resampler.last_step()
        for a in range(start, stop, CHUNK):
            b = min(a + CHUNK, stop)
            src = None
            if a < quiet:  # the source per step and cell: [B, steps, source cells]
                src = self.resampler.values(x, a, b).unsqueeze(2) * tb.src_gain
            read = []
            for k in range(b - a):
                p, vx, vy, div = self.scheme.field_step(tb, p, vx, vy, div, kappa, bufs)
                if src is not None:
                    sk = src[:, k]
                    p = p.index_add(1, tb.src_idx, sk) if grad else p.index_add_(1, tb.src_idx, sk)
                read.append(p.index_select(1, tb.probe_idx))
            pk = torch.stack(read, 1)  # [B, steps, probe cells]
            if tb.probe_w is not None:
                pk = pk @ tb.probe_w
            acc = acc + dt * pk.square().sum(1)
            if traces is not None:
                traces.append(pk)
        return p, vx, vy, div, acc

    # -- the contract ------------------------------------------------------------------------
    def energies(self, x: torch.Tensor) -> torch.Tensor:
        """Ideal probe energies in Pa^2 s, ``[B, n_probes]`` (no validation, accounting or
        noise; differentiable when autograd is on)."""
        y = self.simulate(x)["energy"]
        if not torch.isfinite(y).all():
            raise FloatingPointError(f"{NAME}: the simulation diverged; check dt and speed_range")
        return y

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        y = self.energies(x)
        if self.config.readout == "fraction":
            tiny = torch.finfo(y.dtype).tiny
            y = y / (y.sum(1, keepdim=True) + tiny)
        return apply_effects(y, self.output_effects, self.generator(x.device))

    def plot(self, fig: Any, x: torch.Tensor) -> bool:
        """The cavity's pressure field for the first waveform of ``x`` (``wave_plot``)."""
        from .wave_plot import plot_wave_field

        plot_wave_field(self, fig, x[:1])
        return True

    def describe(self) -> dict[str, Any]:
        """The resolved configuration, the design region's current speed as ``design_speed``
        (``make_device`` rebuilds this cavity, trained speed included)."""
        d = {k: v for k, v in asdict(self.config).items() if v is not None}
        d["grid"] = list(d["grid"])
        if self.wave_speed.numel():
            d["design_speed"] = self.wave_speed.detach().cpu().tolist()
        return {"kind": NAME, **d}
