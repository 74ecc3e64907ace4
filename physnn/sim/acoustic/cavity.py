"""``sim:acoustic``: the cavity as a device (see the package docstring for the physics)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, fields, replace
from typing import Any, Self

import torch

from ...core.device import Device, DeviceSpec, Domain
from ...core.effects import Effect, apply_effects, make_effects
from ...core.perturbation import Perturbable, Sudden
from .config import P_REF_SPL, READOUT_UNITS, AcousticConfig, resolved
from .fast import Stencil, advance_fast, use_native
from .geometry import Geometry, build_geometry
from .plot import plot_layout
from .scatterers import place_block, scatterer_blocks
from .solver import Scheme, State, Tables
from .sources import Sources, build_sources


class AcousticCavity(Perturbable, Device):
    """``sim:acoustic``: a seeded, batched 2-D acoustic cavity with nonlinear membranes.

    ``device(x)`` runs the time loop in place, without autograd and without any time
    history: the microphone spectra are accumulated as running sums, so memory does not
    depend on the number of steps. ``forward_with_grad`` is differentiable through the time
    loop (on a CPU by the adjoint scheme, storing only the membranes' trajectory; with the
    torch steps memory grows with the steps and ``checkpoint_steps`` bounds it). ``simulate``
    exposes the raw scheme (initial fields, complex spectra, the discrete energy),
    ``field_snapshot`` and ``plot_layout`` show the field. See the package docstring
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


    def __init__(self, config: AcousticConfig | None = None) -> None:
        cfg = config if config is not None else AcousticConfig()
        self.config = cfg
        self.base_config = cfg
        """The configuration as described (``config`` is the current, perturbed one)."""
        self.output_effects: list[Effect] = make_effects(cfg.noise)
        duration = cfg.total_steps * resolved(cfg.dt)
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
        self._tables: dict[tuple[str, torch.dtype], Tables] = {}
        self._calibration: torch.Tensor | None = None
        self._tensor_fns: list[Callable[[torch.Tensor], torch.Tensor]] = []
        self._build()
        self._init_perturbations(cfg.perturbations)
        self._scatterers_now = [list(c) for c in self.scatterer_cells]

    @classmethod
    def from_description(cls, **description: Any) -> Self:
        """Build from a description's keys (the ``sim:acoustic`` entry point); an unknown key
        is a TypeError naming it."""
        return cls(AcousticConfig(**description))

    @property
    def solid(self) -> torch.Tensor:
        """``[rows, cols]`` bool mask of the rigid cells (as the cavity is now)."""
        return self.geometry.solid

    @property
    def scatterer_cells(self) -> list[list[int]]:
        """Rigid cells ``[row, col]`` (as the cavity is now)."""
        return self.geometry.scatterer_cells

    def apply_to_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Apply ``fn`` to the geometry, the transducer and tone tables and the calibration;
        drop the per-dtype tables. ``fn`` is kept: a perturbation that rebuilds the
        cavity applies it again."""
        self._tensor_fns.append(fn)
        self._apply(fn)
        if self._calibration is not None:
            self._calibration = fn(self._calibration)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        for part in (self.geometry, self.sources):
            for f in fields(part):
                value = getattr(part, f.name)
                if isinstance(value, torch.Tensor):
                    setattr(part, f.name, fn(value))
        self.sources.membrane = {k: fn(v) for k, v in self.sources.membrane.items()}
        self._tables.clear()

    def _build(self) -> None:
        """Geometry, sources and scheme of the current configuration."""
        self.geometry: Geometry = build_geometry(self.config)
        self.sources: Sources = build_sources(self.config, self.geometry)
        self.scheme = Scheme(self.config, self.geometry, self.spec.name)
        for fn in self._tensor_fns:
            self._apply(fn)
        self._tables.clear()

    # -- perturbation hooks (see physnn.core.perturbation) ----------------------------------
    def _perturb_reset(self) -> None:
        self.config = self.base_config
        self._build()
        self._scatterers_now = [list(c) for c in self.scatterer_cells]

    def _scatterer_blocks(self) -> list[list[list[int]]]:
        """The rigid objects as they are now (connected groups of scatterer cells)."""
        return scatterer_blocks(self._scatterers_now)

    def _perturb_sudden(self, event: Sudden, gen: torch.Generator) -> str:
        count, done = int(event.params["count"]), []
        for _ in range(count):
            blocks = self._scatterer_blocks()
            if event.action == "add":
                sh, sw = (int(v) for v in torch.randint(1, 4, (2,), generator=gen))
                cells = place_block(self.config, self._scatterers_now, (sh, sw), gen)
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
            cells = place_block(self.config, self._scatterers_now, shape, gen)
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

    # -- the time loop -------------------------------------------------------------------------
    def _tab(self, device: torch.device, dtype: torch.dtype) -> Tables:
        key = (str(device), dtype)
        if key not in self._tables:
            self._tables[key] = Tables(self.config, self.geometry, self.sources, device, dtype)
        return self._tables[key]

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
        reference: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Run the scheme for ``steps`` (default: transient + window) and return its results.

        ``x`` ``[B, n_in]`` sets the tone amplitudes (``None``: no drive). ``p0`` is an initial
        pressure field ``[rows, cols]`` or ``[B, rows, cols]`` in Pa (default 0). Returns
        ``p`` (the final pressure, ``[B, rows, cols]``), ``spectrum`` (complex DFT amplitude of
        every read-out bin at every microphone over the window, ``[B, mics, bins]``, when
        ``read``) and ``energy`` (the scheme's conserved energy per step in J per metre of
        depth, ``[steps, B]``, when asked). ``energy`` or ``reference`` run the reference
        scheme (``solver.Scheme``: face velocities, Newton to convergence) step by step instead
        of the fast path (``fast``), which equals it up to round-off.
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
        dev = torch.device(device or "cpu")
        batch = batch or 1
        tb = self._tab(dev, dtype)
        state = self._initial_state(batch, dev, dtype, p0)
        energies: list[torch.Tensor] | None = [] if energy else None
        if not (energy or reference):
            fast = self._run_fast(tb, x, read, steps, state)
            if fast is not None:
                state = fast
            else:  # the membranes did not converge in NEWTON_STEPS: the reference path decides
                return self.simulate(
                    x, steps, p0=p0, batch=batch, dtype=dtype, device=dev, read=read, reference=True
                )
        else:
            state = self._run_reference(tb, x, read, energies, steps, state)
        h, w = cfg.grid
        p, acc = state[0], state[5]
        out = {"p": p.reshape(batch, h + 2, self.geometry.wp)[:, 1:-1, 1:-1]}
        if read:
            nb = cfg.n_bins
            acc = acc * (2.0 / int(resolved(cfg.window_steps)))
            out["spectrum"] = torch.complex(acc[..., :nb], -acc[..., nb:])  # sum p e^{-i w n}
            out["_re_im"] = acc
        if energies is not None:
            out["energy"] = torch.stack(energies, 0)
        return out

    def _stencil(self, tb: Tables) -> Stencil:
        if tb.stencil is None:
            tb.stencil = Stencil(self.config, tb, self.geometry.n_cells, self.geometry.wp)
        assert isinstance(tb.stencil, Stencil)
        return tb.stencil

    def _run_fast(
        self, tb: Tables, x: torch.Tensor | None, read: bool, steps: int, state: State
    ) -> State | None:
        """The fast path (``fast.advance_fast``); ``None`` if the membranes did not converge."""
        s = self._stencil(tb)
        n, wp = self.geometry.n_cells, self.geometry.wp
        p, _, _, xm, um, acc, div = state
        worst = torch.zeros((), dtype=p.dtype, device=p.device)
        fs: tuple[torch.Tensor, ...] = (p[:, wp : n - wp].contiguous(), div, xm, um, acc, worst)
        seg = int(self.config.checkpoint_steps)
        grad = torch.is_grad_enabled() and x is not None and x.requires_grad
        if grad and 0 < seg < steps and not use_native(s, fs[0], x):
            from torch.utils.checkpoint import checkpoint

            for start in range(0, steps, seg):
                fs = checkpoint(
                    advance_fast, s, x, read, start, min(start + seg, steps), *fs,
                    use_reentrant=True, preserve_rng_state=False,
                )
        else:
            fs = advance_fast(s, x, read, 0, steps, *fs)
        pm, div, xm, um, acc, worst = fs
        if xm.shape[1] and not bool(worst <= 1):  # the one host read of a query
            return None
        return torch.nn.functional.pad(pm, (wp, wp)), p, p, xm, um, acc, div

    def _run_reference(
        self, tb: Tables, x: torch.Tensor | None, read: bool,
        energies: list[torch.Tensor] | None, steps: int, state: State,
    ) -> State:
        """The reference scheme, step by step (checkpointed segments when differentiating)."""
        seg = int(self.config.checkpoint_steps)
        needs_grad = torch.is_grad_enabled() and x is not None and x.requires_grad
        if needs_grad and seg > 0 and energies is None and steps > seg:
            # the forward of each segment runs in place without autograd; the backward pass
            # re-runs it out of place with autograd, one segment at a time
            from torch.utils.checkpoint import checkpoint

            for start in range(0, steps, seg):
                state = checkpoint(
                    self.scheme.advance, tb, x, read, None, start, min(start + seg, steps), *state,
                    use_reentrant=True, preserve_rng_state=False,
                )
            return state
        return self.scheme.advance(tb, x, read, energies, 0, steps, *state)

    def _initial_state(
        self, batch: int, device: torch.device, dtype: torch.dtype, p0: torch.Tensor | None
    ) -> State:
        """The scheme's state at step 0: pressure ``p0`` (0 in the rigid cells), all else at rest."""
        cfg = self.config
        h, w = cfg.grid
        n, wp = self.geometry.n_cells, self.geometry.wp
        p = torch.zeros(batch, h + 2, wp, device=device, dtype=dtype)
        if p0 is not None:
            p0 = p0.to(device=device, dtype=dtype)
            p[:, 1:-1, 1:-1] = p0 if p0.ndim == 3 else p0.unsqueeze(0)
            p[:, 1:-1, 1:-1] *= (~self.solid).to(device=device, dtype=dtype)
        n_mem = self.sources.mem_idx.numel()

        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(batch, *shape, device=device, dtype=dtype)

        return (
            p.reshape(batch, n),
            zeros(n - wp),  # vertical faces (between i and i + wp)
            zeros(n - 1),  # horizontal faces (between i and i + 1)
            zeros(n_mem),  # membrane displacement x^n
            zeros(n_mem),  # x^n - x^{n-1}
            zeros(cfg.n_microphones, 2 * cfg.n_bins),  # cos, sin sums
            zeros(n - 2 * wp),  # D w^{n-1/2} = p^n - p^{n-1} (lossless)
        )

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

    def plot(self, fig: Any, x: torch.Tensor) -> bool:
        """Field snapshot with speakers, scatterers, membranes and microphones."""
        fig.set_size_inches(6.5, 5.5)
        self.plot_layout(fig.subplots(), x[:1])
        return True

    def plot_layout(self, ax: Any, x: torch.Tensor | None = None, step: int | None = None) -> Any:
        """Draw the cavity on a matplotlib ``Axes``; see ``plot_layout``."""
        return plot_layout(self, ax, x, step)

    def describe(self) -> dict[str, Any]:
        """The resolved configuration (defaults filled in); ``None`` entries are dropped."""
        d = {k: v for k, v in asdict(self.base_config).items() if v is not None}
        d.pop("perturbations", None)
        if self.perturbed:
            d["perturbations"] = self.describe_perturbations()
        d["grid"] = list(d["grid"])
        return {"kind": "sim:acoustic", **d}
