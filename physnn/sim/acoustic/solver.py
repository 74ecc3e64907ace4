"""The reference time loop: staggered leapfrog for the field, a discrete-gradient step for
the membranes, one step at a time.

In place (no allocation per step, no history) when autograd is off; out of place, so that
autograd can record it, when it is on. See the package docstring for the physics. Queries
run ``fast`` (the same scheme without the face velocities, equal to this one to round-off);
this loop serves the energy diagnostic (``simulate(energy=True)``), ``reference=True`` and
the rare query whose membranes need more than ``fast.NEWTON_STEPS`` Newton steps (it
iterates to convergence, reading the step size on the host each iteration).
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

from .config import AcousticConfig, resolved
from .geometry import Geometry
from .sources import Sources

_NEWTON_MAX = 60
"""Most Newton steps per time step for nonlinear membranes (they stop at round-off; three
or four suffice at moderate drive)."""

State = tuple[torch.Tensor, ...]
"""``p, vx, vy, xm, um, acc, div``: pressure, face velocities (stored as
``w = -courant rho c v``), membrane displacement and its last step, the read-out sums and
``D w^{n-1/2}``."""


class FieldTables(Protocol):
    """What one step of the field alone reads (``Scheme.field_step``): ``Tables`` has it, and
    so does the raw-audio mode's table (``waveform``), whose ``b`` carries the design region's
    wave speed."""

    cx: torch.Tensor
    """Coefficient of the vertical faces (``courant^2``, 0 where a face touches a solid)."""
    cy: torch.Tensor
    """Coefficient of the horizontal faces."""
    a: torch.Tensor
    """Semi-implicit loss factor of the pressure update (grid without its ghost rows)."""
    b: torch.Tensor
    """Factor of the divergence in the pressure update (times ``(c / c0)^2`` where the wave
    speed ``c`` differs from the background ``c0``)."""
    lossless: bool
    """True when ``a = b = 1`` on every fluid cell (the update skips both products)."""


class Tables:
    """Per-(torch device, dtype) constants of one cavity, for the time loop."""

    def __init__(
        self, cfg: AcousticConfig, geom: Geometry, src: Sources, device: torch.device, dtype: torch.dtype
    ) -> None:
        def t(v: torch.Tensor) -> torch.Tensor:
            return v.to(device=device, dtype=dtype)

        def i(v: torch.Tensor) -> torch.Tensor:
            return v.to(device=device)

        self.cx, self.cy, self.a, self.b = t(geom.cx), t(geom.cy), t(geom.a_mid), t(geom.b_mid)
        self.lossless = bool((geom.a_mid == geom.b_mid).all())  # a = b = 1 inside, 0 on ghosts
        self.src_idx = i(src.src_idx)
        self.spk_idx = i(src.spk_idx)
        self.spk_gain = t(src.spk_gain)
        self.mem_idx = i(src.mem_idx)
        self.mic_idx = i(src.mic_idx)
        self.mic_w = t(src.mic_w)
        self.mic_single = src.mic_single
        self.cone = t(src.cone)  # [window, n_in]
        self.tone_norm = t(src.tone_norm)
        self.drive = t(src.drive)  # [window, n_in, speaker cells]
        self.basis = t(src.basis)  # [window, mics, 2 bins]
        m = src.membrane
        self.w2, self.g1 = t(m["w2"]), t(1 + m["g"])
        self.lin_num = t(1 - m["g"] + m["w2"] / 2)  # closed form of the linear membrane
        self.lin_den = t(1 / (1 + m["g"] + m["w2"] / 2))
        al, be = cfg.membrane_alpha, cfg.membrane_beta
        self.linear = al == 0 and be == 0
        # Horner coefficients of the cubic in x^{n+1} (see Scheme.membrane_step)
        self.a3 = t(m["w2"] * be / 4)
        self.a3x3 = 3 * self.a3
        self.c2 = t(m["w2"] * al / 3)
        self.c1 = t(1 + m["g"] + m["w2"] / 2)
        self.c0 = t(m["w2"] / 2 - 1 - m["g"])
        self.mem_src = t(m["src"])
        self.stencil: object | None = None
        """The fast path's tensors (``fast.Stencil``), built on first use."""


class Scheme:
    """The update rules of one configuration on one grid (no tensors of its own)."""

    def __init__(self, cfg: AcousticConfig, geom: Geometry, name: str) -> None:
        self.cfg = cfg
        self.n, self.wp = geom.n_cells, geom.wp
        self.name = name

    def envelope(self, n: int) -> float:
        """Raised-cosine fade-in of the speaker cone displacement at step ``n``."""
        r = self.cfg.ramp_steps
        if n >= r:
            return 1.0
        return 0.5 - 0.5 * math.cos(math.pi * n / r)

    def advance(
        self, tb: Tables, x: torch.Tensor | None, read: bool, energies: list[torch.Tensor] | None,
        start: int, stop: int, *state: torch.Tensor,
    ) -> State:
        """Steps ``start .. stop - 1`` of the scheme from ``state``; returns the new state."""
        cfg = self.cfg
        p, vx, vy, xm, um, acc, div = state
        grad = torch.is_grad_enabled()
        n_mem = xm.shape[1]
        n_w, t0 = int(resolved(cfg.window_steps)), int(resolved(cfg.transient_steps))
        p_ref = cfg.membrane_p_ref
        kappa = cfg.viscous_time / resolved(cfg.dt)
        bufs: tuple[torch.Tensor, torch.Tensor] | None = None
        if not grad:
            p, vx, vy, acc, div = (t.clone() for t in (p, vx, vy, acc, div))  # own the buffers
            bufs = (torch.empty_like(vy), torch.zeros_like(p) if kappa else p)
        drive = x is not None and tb.spk_idx.numel() > 0
        if drive and n_mem:
            src_idx: torch.Tensor | None = tb.src_idx
        else:
            src_idx = tb.spk_idx if drive else (tb.mem_idx if n_mem else None)
        for step in range(start, stop):
            # 1) face velocities at n + 1/2, stored as w = -courant * rho * c * v
            vx_old, vy_old = (vx.clone(), vy.clone()) if energies is not None else (vx, vy)
            vx, vy = self._velocities(tb, p, vx, vy, div, kappa, bufs)
            # 2) membranes: x^{n+1} from x^n, x^{n-1} and the pressure at n
            if n_mem:
                target = tb.w2 * (p.index_select(1, tb.mem_idx) / p_ref)
                x_new = self.membrane_step(tb, xm, um, target)
                um_new = x_new - xm
                if energies is not None:
                    energies.append(self.energy(tb, p, vx, vx_old, vy, vy_old, xm, x_new, um_new))
                xm, um = x_new, um_new
            elif energies is not None:
                energies.append(self.energy(tb, p, vx, vx_old, vy, vy_old, xm, xm, um))
            # 3) pressure at n + 1: divergence, losses, sources
            p, div = self._pressure(tb, p, vx, vy, div, grad)
            if src_idx is not None:
                s = self._sources(tb, x if drive else None, um if n_mem else None, step)
                p = p.index_add(1, src_idx, s) if grad else p.index_add_(1, src_idx, s)
            # 4) read the microphones over the window (p at step + 1)
            k = step + 1 - t0
            if read and 0 <= k < n_w:
                acc = self._read(tb, p, acc, k, grad)
        return p, vx, vy, xm, um, acc, div

    def field_step(
        self, tb: FieldTables, p: torch.Tensor, vx: torch.Tensor, vy: torch.Tensor,
        div: torch.Tensor, kappa: float, bufs: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One leapfrog step of the field alone (no sources, membranes or read-out): face
        velocities to ``n + 1/2``, then ``p^{n+1}``; returns ``p, vx, vy, div``. In place
        into ``bufs`` (see ``advance``) when given, out of place for autograd when None."""
        vx, vy = self._velocities(tb, p, vx, vy, div, kappa, bufs)
        p, div = self._pressure(tb, p, vx, vy, div, bufs is None)
        return p, vx, vy, div

    def _velocities(
        self, tb: FieldTables, p: torch.Tensor, vx: torch.Tensor, vy: torch.Tensor, div: torch.Tensor,
        kappa: float, bufs: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Viscous absorption: the gradient acts on ``p + kappa (p^n - p^{n-1})``."""
        n, wp = self.n, self.wp
        if bufs is None:
            q = p + kappa * torch.nn.functional.pad(div, (wp, wp)) if kappa else p
            vx = vx + tb.cx * (q[:, wp:] - q[:, :-wp])
            vy = vy + tb.cy * (q[:, 1:] - q[:, :-1])
            return vx, vy
        gbuf, q = bufs
        if kappa:
            torch.add(p[:, wp : n - wp], div, alpha=kappa, out=q[:, wp : n - wp])
        g = torch.sub(q[:, wp:], q[:, :-wp], out=gbuf[:, : n - wp])
        vx.addcmul_(tb.cx, g)
        g = torch.sub(q[:, 1:], q[:, :-1], out=gbuf)
        vy.addcmul_(tb.cy, g)
        return vx, vy

    def _pressure(
        self, tb: FieldTables, p: torch.Tensor, vx: torch.Tensor, vy: torch.Tensor, div: torch.Tensor,
        grad: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``p^{n+1}`` from the divergence of the face velocities, with the losses."""
        n, wp = self.n, self.wp
        mid = slice(wp, n - wp)
        if grad:
            div = vx[:, wp:] - vx[:, : n - 2 * wp] + vy[:, wp : n - wp] - vy[:, wp - 1 : n - wp - 1]
            p_mid = p[:, mid] + div if tb.lossless else tb.a * p[:, mid] + tb.b * div
            return torch.nn.functional.pad(p_mid, (wp, wp)), div
        torch.sub(vx[:, wp:], vx[:, : n - 2 * wp], out=div)
        div.add_(vy[:, wp : n - wp]).sub_(vy[:, wp - 1 : n - wp - 1])
        pmid = p[:, mid]
        if tb.lossless:
            pmid.add_(div)
        else:
            pmid.mul_(tb.a).addcmul_(tb.b, div)
        return p, div

    def _sources(
        self, tb: Tables, x: torch.Tensor | None, um: torch.Tensor | None, step: int
    ) -> torch.Tensor:
        """What the speakers (drive ``x``) and the moving membranes (``um``) add to ``p``."""
        src = []
        if x is not None:  # volume velocity = rate of change of the cone's volume displacement
            n_w = int(resolved(self.cfg.window_steps))
            if step < self.cfg.ramp_steps:
                cone0 = tb.cone[step % n_w] * self.envelope(step)
                cone1 = tb.cone[(step + 1) % n_w] * self.envelope(step + 1)
                tone = (cone1 - cone0) * tb.tone_norm
                src.append(x @ (tone.unsqueeze(1) * tb.spk_gain))
            else:
                src.append(x @ tb.drive[step % n_w])
        if um is not None:
            src.append(um * tb.mem_src)
        return torch.cat(src, 1) if len(src) > 1 else src[0]

    @staticmethod
    def _read(tb: Tables, p: torch.Tensor, acc: torch.Tensor, k: int, grad: bool) -> torch.Tensor:
        """Add window step ``k`` of every microphone to its running cos/sin sums."""
        pmic = p.index_select(1, tb.mic_idx)
        if not tb.mic_single:
            pmic = pmic @ tb.mic_w
        if grad:
            return acc + pmic.unsqueeze(2) * tb.basis[k]
        return acc.addcmul_(pmic.unsqueeze(2), tb.basis[k])

    def membrane_step(
        self, tb: Tables, x: torch.Tensor, u: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
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
            f"{self.name}: the membrane solver did not converge (|x| ~ "
            f"{float(z.abs().max()):.3g}); lower volume_velocity or raise membrane_p_ref"
        )

    def energy(
        self, tb: Tables, p: torch.Tensor, vx: torch.Tensor, vx_old: torch.Tensor, vy: torch.Tensor,
        vy_old: torch.Tensor, x_old: torch.Tensor, x_new: torch.Tensor, u_new: torch.Tensor,
    ) -> torch.Tensor:
        """The scheme's conserved energy at step n, in J per metre of depth.

        ``|p^n|^2/2 + <w^{n-1/2}, w^{n+1/2}>/(2 C^2)`` for the field, plus for each membrane
        ``mu p_ref^2 (u^2/(2 W^2) + (V(x^{n+1}) + V(x^n))/2) - mu p_ref p^n u/2`` with
        ``u = x^{n+1} - x^n`` (the last term is the staggered field-membrane exchange); in Pa^2
        cells, times ``dx^2 / (rho c^2)``.
        """
        cfg = self.cfg
        e = p.square().sum(1) / 2
        e = e + ((vx * vx_old).sum(1) + (vy * vy_old).sum(1)) / (2 * cfg.courant**2)
        if x_old.shape[1]:
            mu, pr = cfg.membrane_coupling, cfg.membrane_p_ref
            a, b = cfg.membrane_alpha, cfg.membrane_beta

            def pot(x: torch.Tensor) -> torch.Tensor:
                return x.square() / 2 + a * x**3 / 3 + b * x**4 / 4

            pm = p.index_select(1, tb.mem_idx)
            e_m = pr**2 * (u_new.square() / (2 * tb.w2) + (pot(x_new) + pot(x_old)) / 2)
            e = e + mu * (e_m - pr * pm * u_new / 2).sum(1)
        return e * cfg.dx**2 / (cfg.rho * cfg.c**2)
