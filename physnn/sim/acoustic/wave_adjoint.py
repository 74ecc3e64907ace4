"""The gradient of ``sim:acoustic-wave``'s probe energies by the adjoint method.

Why: recording the time loop for autograd costs about ten forward passes per backward pass
(a dozen small tensors per step, thousands of steps) and memory that grows with the steps.
The loop is linear in its state, so its vector-Jacobian product is the same loop run
backwards with every operator transposed: one in-place pass over the steps, as cheap as the
forward pass, that needs only what the gradient reads from the forward pass (the probes'
pressure and the design cells' divergence at every step: ``[steps, B, probes + design
cells]``, never the field).

The forward step ``n -> n + 1`` (``solver.Scheme.field_step``), on flat cells with ghost rows
(``wp`` cells per row, ``mid`` = all but the first and last row)::

    q      = p + kappa pad(d)                       # viscous term, d = last step's divergence
    vx'    = vx + cx (q[wp:] - q[:-wp]);  vy' = vy + cy (q[1:] - q[:-1])
    d'     = vx'[wp:] - vx'[:-2wp] + vy'[wp:-wp] - vy'[wp-1:-wp-1]
    p'_mid = a p_mid + b d';  p' += gain u_n at the source cells;  E += dt (W p'_probes)^2

and its transpose, from the adjoints ``(P, VX, VY, D)`` of ``(p', vx', vy', d')``::

    P[probes] += 2 dt W^T (gE * W p'_probes);  g_u[n] = gain . P[source cells]
    g_b      += P_mid d'                         # the design cells' divergence factor
    D        += b P_mid;   P_mid_old = a P_mid
    VX[wp:] += D; VX[:-2wp] -= D; VY[wp:-wp] += D; VY[wp-1:-wp-1] -= D
    Q = transpose of the two differences (cx VX, cy VY);  P = Q + pad(P_mid_old);  D = kappa Q_mid

``tests/test_wave_adjoint.py`` checks it against autograd through the recorded loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .waveform import WaveformCavity, WaveTables


def adjoint_energies(
    dev: WaveformCavity, tb: WaveTables, u: torch.Tensor, ratio2: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Probe energies ``[B, n_probes]`` (Pa^2 s) of the per-step source values ``u [B, S]``
    (``S`` steps of drive, zero after), differentiable in ``u`` and in ``ratio2`` (the
    design cells' ``(c / c0)^2``, ``WaveTables.with_speed``) by the adjoint pass; and the final
    pressure ``[B, cells]`` (not differentiable)."""
    r = u.new_zeros(0) if ratio2 is None else ratio2.flatten()
    energy, p = _Adjoint.apply(dev, tb, u, r)
    return energy, p


class _Adjoint(torch.autograd.Function):
    """The time loop as one autograd node: in-place forward, transposed loop backward."""

    @staticmethod
    def forward(
        ctx: Any, dev: WaveformCavity, tb: WaveTables, u: torch.Tensor, ratio2: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.b0 = tb.b[tb.design_idx]  # the background's factor: d b / d ratio2
        if ratio2.numel():
            tb = tb.with_speed(ratio2)
        p, reads, dd = _forward(dev, tb, u, record_design=ratio2.numel() > 0)
        pk = reads if tb.probe_w is None else reads @ tb.probe_w  # [steps, B, probes]
        ctx.dev, ctx.tb, ctx.n_src = dev, tb, u.shape[1]
        ctx.save_for_backward(pk, dd)
        ctx.mark_non_differentiable(p)
        return dev.config.time_step * pk.square().sum(0), p

    @staticmethod
    def backward(
        ctx: Any, g_energy: torch.Tensor, _g_p: torch.Tensor | None
    ) -> tuple[Any, ...]:
        pk, dd = ctx.saved_tensors
        n_src = ctx.n_src if ctx.needs_input_grad[2] else 0
        g_u, g_b = _backward(ctx.dev, ctx.tb, pk, dd, g_energy, n_src)
        g_ratio2 = g_b * ctx.b0 if g_b is not None and ctx.needs_input_grad[3] else None
        return None, None, g_u, g_ratio2


def _forward(
    dev: WaveformCavity, tb: WaveTables, u: torch.Tensor, record_design: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the loop in place; return the final pressure, the probe cells' pressure after
    every step ``[steps, B, probe cells]`` and the design cells' divergence ``[steps, B,
    cells]`` (empty without ``record_design``)."""
    cfg, scheme = dev.config, dev.scheme
    steps, batch = cfg.steps, u.shape[0]
    kappa = cfg.viscous_time / cfg.time_step
    with torch.no_grad():
        p, vx, vy, div, _ = dev._initial_state(batch, u.device, u.dtype)
        bufs = (torch.empty_like(vy), torch.zeros_like(p) if kappa else p)
        reads = u.new_empty(steps, batch, tb.probe_idx.numel())
        dd = u.new_empty(steps if record_design else 0, batch, tb.design_idx.numel())
        src = u.unsqueeze(2) * tb.src_gain  # [B, S, source cells]
        n_src = u.shape[1]
        for n in range(steps):
            p, vx, vy, div = scheme.field_step(tb, p, vx, vy, div, kappa, bufs)
            if n < n_src:
                p.index_add_(1, tb.src_idx, src[:, n])
            torch.index_select(p, 1, tb.probe_idx, out=reads[n])
            if record_design:
                torch.index_select(div, 1, tb.design_idx, out=dd[n])
    return p, reads, dd


def _backward(
    dev: WaveformCavity, tb: WaveTables, pk: torch.Tensor, dd: torch.Tensor,
    g_energy: torch.Tensor, n_src: int,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The transposed loop (see the module docstring): gradients of the first ``n_src``
    steps' source values ``[B, n_src]`` (None when 0) and of the design cells' divergence
    factor ``[cells]``."""
    cfg, n, wp = dev.config, dev.geometry.n_cells, dev.geometry.wp
    steps, batch = pk.shape[0], pk.shape[1]
    kappa = cfg.viscous_time / cfg.time_step
    mid = slice(wp, n - wp)
    design = dd.shape[0] > 0
    with torch.no_grad():
        zeros = pk.new_zeros
        gp, spare = zeros(batch, n), zeros(batch, n)  # P, and the buffer of the next P
        gvx, gvy = zeros(batch, n - wp), zeros(batch, n - 1)
        tx, ty = zeros(batch, n - wp), zeros(batch, n - 1)
        gd = zeros(batch, n - 2 * wp)
        g_src = zeros(n_src, batch, tb.src_idx.numel()) if n_src else None
        g_b = zeros(batch, tb.design_idx.numel()) if design else None
        # d E / d p'(probes) at every step: 2 dt (gE * pk) W^T, [steps, B, probe cells]
        seed = (2 * cfg.time_step) * (pk * g_energy)
        if tb.probe_w is not None:
            seed = seed @ tb.probe_w.T
        for k in range(steps - 1, -1, -1):
            gp.index_add_(1, tb.probe_idx, seed[k])
            if g_src is not None and k < n_src:
                torch.index_select(gp, 1, tb.src_idx, out=g_src[k])
            gm = gp[:, mid]
            if g_b is not None:
                g_b.addcmul_(gm.index_select(1, tb.design_idx), dd[k])
            if tb.lossless:
                gd.add_(gm)
            else:
                gd.addcmul_(tb.b, gm)
            gvx[:, wp:].add_(gd)
            gvx[:, : n - 2 * wp].sub_(gd)
            gvy[:, wp : n - wp].add_(gd)
            gvy[:, wp - 1 : n - wp - 1].sub_(gd)
            torch.mul(tb.cx, gvx, out=tx)
            torch.mul(tb.cy, gvy, out=ty)
            new = spare  # Q: the transposed differences, then P = Q + a P_mid, D = kappa Q_mid
            new[:, :wp].zero_()
            new[:, wp:].copy_(tx)
            new[:, :-wp].sub_(tx)
            new[:, 1:].add_(ty)
            new[:, :-1].sub_(ty)
            if kappa:
                torch.mul(new[:, mid], kappa, out=gd)
            else:
                gd.zero_()
            if tb.lossless:
                new[:, mid].add_(gm)
            else:
                new[:, mid].addcmul_(tb.a, gm)
            gp, spare = new, gp
    g_u = (g_src * tb.src_gain).sum(2).T if g_src is not None else None
    return g_u, (g_b.sum(0) if g_b is not None else None)
