"""The fast time loop: pressure and its divergence only, fused chunks of steps, no host reads.

The staggered leapfrog needs the face velocities ``w`` only through ``D w`` (the divergence
the pressure update reads, already a state variable): ``D w^{n+1/2} = D w^{n-1/2} +
D C G q^n`` with ``q = p + kappa (p^n - p^{n-1})``. ``D C G`` is a variable-coefficient
5-point operator whose four face coefficients are ``cx``/``cy`` (zero on faces touching a
rigid cell), so this path carries two grid arrays instead of four and equals the reference
scheme (``solver.Scheme``, kept for the energy diagnostic) up to round-off.

The membranes' cubic gets a fixed number of Newton steps; the size of the last step is
folded into a device tensor and checked once per query, so nothing in the time loop waits
for the host. A query whose membranes did not converge is re-run on the reference path
(up to 60 Newton steps per time step), which raises the usual error if it fails too.

On a CPU the whole query is one call of a C loop (``native``; with autograd, the loop and
its adjoint). Elsewhere (a GPU, or ``PHYSNN_COMPILE=0``) ``CHUNK`` steps are one call of
``chunk``, run eagerly or compiled with ``torch.compile``
(Triton on a GPU; on a CPU inductor takes one to two minutes per shape here, which the C
loop avoids). ``PHYSNN_COMPILE``: ``0`` uses neither (plain torch ops), ``1`` compiles
``chunk`` at its first call, unset or ``auto`` compiles it on a GPU once eager runs of a
chunk shape have taken ``COMPILE_AFTER_S`` seconds (a one-off query never pays the compile
time). A failing compilation warns once and stays eager; compiled and eager ``chunk`` give
bit-identical results on the CPU (measured), and so does the C loop.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

from . import native
from .config import AcousticConfig, resolved
from .solver import Tables

NEWTON_STEPS = 6
"""Newton steps per time step for nonlinear membranes. Measured on the preset cavity driven
with every input at 1: five reach the tolerance (the last step is 2e-5 of it in float64),
six leave a margin up to ten times that drive; the last step's size is checked once per
query."""

CHUNK = 8
"""Time steps per call of the step function (amortises the call and guard overhead)."""

GROUPED_CELLS = 64 * 64
"""Grids up to this many cells run whole groups of samples in lockstep (vectorised across
the samples); larger ones one sample at a time (vectorised along the rows, and a sample's
grid stays in cache)."""

COMPILE_AFTER_S = 3.0
"""``auto`` mode (GPU): eager seconds spent on one chunk shape before it is compiled."""


class Static(NamedTuple):
    """The scheme's compile-time constants (the compiled code specialises on them)."""

    n: int
    wp: int
    kappa: float
    lossless: bool
    linear: bool
    mic_single: bool
    p_ref: float
    tol: float
    newton: int


class Stencil:
    """Per-(device, dtype) tensors of the fast path, derived from the reference ``Tables``."""

    def __init__(self, cfg: AcousticConfig, tb: Tables, n: int, wp: int) -> None:
        cx, cy = tb.cx, tb.cy
        self.cs, self.cn = cx[wp:].contiguous(), cx[: n - 2 * wp].contiguous()
        self.ce, self.cw = cy[wp : n - wp].contiguous(), cy[wp - 1 : n - wp - 1].contiguous()
        # transducer cells in the grid without its ghost rows
        self.src_idx, self.mem_idx = tb.src_idx - wp, tb.mem_idx - wp
        self.spk_idx, self.mic_idx = tb.spk_idx - wp, tb.mic_idx - wp
        eps = torch.finfo(tb.cx.dtype).eps
        self.static = Static(
            n=n, wp=wp, kappa=float(cfg.viscous_time / resolved(cfg.dt)), lossless=tb.lossless,
            linear=tb.linear, mic_single=tb.mic_single, p_ref=float(cfg.membrane_p_ref),
            tol=math.sqrt(8 * eps), newton=NEWTON_STEPS,
        )
        n_w, ramp = int(resolved(cfg.window_steps)), int(cfg.ramp_steps)
        self.n_w, self.ramp, self.t0 = n_w, ramp, int(resolved(cfg.transient_steps))
        # speaker source per step and unit input: the fade-in, then one periodic window
        env = [0.5 - 0.5 * math.cos(math.pi * k / ramp) if k < ramp else 1.0 for k in range(ramp + 1)]
        idx = torch.arange(ramp, device=tb.cone.device)
        env_t = torch.tensor(env, dtype=tb.cone.dtype, device=tb.cone.device)
        cone0 = tb.cone[idx % n_w] * env_t[:ramp, None]
        cone1 = tb.cone[(idx + 1) % n_w] * env_t[1:, None]
        fade = ((cone1 - cone0) * tb.tone_norm)[:, :, None] * tb.spk_gain
        self.drive = torch.cat([fade, tb.drive], 0)  # [ramp + window, n_in, speaker cells]
        self.drive_2d = self.drive.permute(1, 0, 2).reshape(self.drive.shape[1], -1).contiguous()
        """``[n_in, rows x speaker cells]``: the drive table as one matrix (one matmul)."""
        self.drive_2d_f64 = self.drive_2d.double()
        a, b = tb.a, tb.b
        c2 = float(cx.abs().max()) if cx.numel() else 0.0
        faces = (self.cs, self.cn, self.ce, self.cw)
        self.native_ok = all(bool(((c == 0) | (c == c2)).all()) for c in faces)
        """True when every face coefficient is ``courant^2`` or 0 (what the C loop encodes)."""
        self.c2 = c2
        flags = torch.zeros(n - 2 * wp, dtype=torch.uint8, device=cx.device)
        for k, c in enumerate(faces):
            flags += (c != 0).to(torch.uint8) * (1 << k)
        self.flags = flags.cpu().contiguous()
        # lossy cells (a, b != 1) per row of the grid: a sparse list (walls, sponge)
        lossy = ((a != 1) | (b != 1)) & ~torch.tensor(tb.lossless)
        cells = lossy.nonzero().flatten()
        rows = torch.div(cells, wp, rounding_mode="floor")
        h = (n - 2 * wp) // wp
        counts = torch.bincount(rows, minlength=h)
        self.loss_ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).cpu()
        self.loss_col = (cells - rows * wp).cpu()
        self.loss_a, self.loss_b = a[cells].contiguous(), b[cells].contiguous()
        zero = torch.zeros_like(tb.basis[:1])
        self.basis = torch.cat([tb.basis, zero], 0)  # row n_w: outside the window
        self.tb = tb
        self._rows: dict[tuple[str, int, int], torch.Tensor] = {}

    def drive_rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows of ``drive`` for steps ``start .. stop - 1`` (on the device, made once: a
        host-to-device copy per chunk could wait for the queue)."""
        key = ("drive", start, stop)
        if key not in self._rows:
            rows = [s if s < self.ramp else self.ramp + s % self.n_w for s in range(start, stop)]
            self._rows[key] = torch.tensor(rows, device=self.drive.device)
        return self._rows[key]

    def basis_rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows of ``basis`` read after steps ``start .. stop - 1`` (``n_w``: no read)."""
        key = ("basis", start, stop)
        if key not in self._rows:
            ks = [s + 1 - self.t0 for s in range(start, stop)]
            rows = [k if 0 <= k < self.n_w else self.n_w for k in ks]
            self._rows[key] = torch.tensor(rows, device=self.basis.device)
        return self._rows[key]


def _membranes(
    st: Static, tb: Tables, x: torch.Tensor, u: torch.Tensor, target: torch.Tensor,
    worst: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x^{n+1}`` of the discrete-gradient membranes (see ``Scheme.membrane_step``) and the
    running worst ratio of the last Newton step to its tolerance."""
    if st.linear:
        return x + (u * tb.lin_num + target - tb.w2 * x) * tb.lin_den, worst
    b = x - u
    a2 = tb.c2 + tb.a3 * b
    a1 = tb.c1 + tb.c2 * b + tb.a3 * (b * b)
    a0 = b * (tb.c0 + b * a2) - 2 * u - target
    a2x2 = 2 * a2
    z = x + u
    step = z
    for _ in range(st.newton):
        res = a0 + z * (a1 + z * (a2 + tb.a3 * z))
        slope = a1 + z * (a2x2 + tb.a3x3 * z)
        step = res / slope
        z = z - step
    stop = st.tol * (1 + x.detach().abs().amax())
    return z, torch.maximum(worst, step.detach().abs().amax() / stop)


def chunk(
    st: Static, s: Stencil, p: torch.Tensor, div: torch.Tensor, xm: torch.Tensor,
    um: torch.Tensor, acc: torch.Tensor, worst: torch.Tensor, src: torch.Tensor | None,
    basis: torch.Tensor | None,
) -> tuple[torch.Tensor, ...]:
    """``len(src or basis)`` time steps of the pressure ``p`` (grid without its ghost rows)
    and ``div = D w``; ``src [K, B, speaker cells]`` is the drive, ``basis [K, mics, 2 bins]``
    the read-out (zero rows outside the window)."""
    tb, n, wp = s.tb, st.n, st.wp
    steps = src.shape[0] if src is not None else (basis.shape[0] if basis is not None else 0)
    n_mem = xm.shape[1]
    for k in range(steps):
        q = p + st.kappa * div if st.kappa else p
        q = torch.nn.functional.pad(q, (wp, wp))
        qc = q[:, wp : n - wp]
        div = (
            div + s.cs * (q[:, 2 * wp :] - qc) - s.cn * (qc - q[:, : n - 2 * wp])
            + s.ce * (q[:, wp + 1 : n - wp + 1] - qc) - s.cw * (qc - q[:, wp - 1 : n - wp - 1])
        )
        parts = [src[k]] if src is not None else []
        if n_mem:
            target = tb.w2 * (p[:, s.mem_idx] / st.p_ref)
            x_new, worst = _membranes(st, tb, xm, um, target, worst)
            xm, um = x_new, x_new - xm
            parts.append(um * tb.mem_src)
        p = p + div if st.lossless else tb.a * p + tb.b * div
        if parts:
            idx = s.mem_idx if src is None else (s.src_idx if n_mem else s.spk_idx)
            p = p.index_add(1, idx, torch.cat(parts, 1) if len(parts) > 1 else parts[0])
        if basis is not None:
            pmic = p[:, s.mic_idx]
            if not st.mic_single:
                pmic = pmic @ tb.mic_w
            acc = acc + pmic.unsqueeze(2) * basis[k]
    return p, div, xm, um, acc, worst


class Runner:
    """Runs ``chunk`` eagerly or compiled, per chunk shape (see the module docstring)."""

    def __init__(self) -> None:
        self.compiled: Any = None
        self.failed = False
        self.eager_s: dict[tuple[Any, ...], float] = {}
        self.ready: set[tuple[Any, ...]] = set()

    def mode(self) -> str:
        """``0``, ``1`` or ``auto`` from ``PHYSNN_COMPILE``."""
        m = os.environ.get("PHYSNN_COMPILE", "auto").strip().lower()
        return {"0": "0", "false": "0", "off": "0", "1": "1", "true": "1", "on": "1"}.get(m, "auto")

    def __call__(self, key: tuple[Any, ...], *args: Any) -> tuple[torch.Tensor, ...]:
        """``chunk(*args)``; ``key`` names the shape, dtype and device (what a compile serves)."""
        mode = self.mode()
        if mode != "0" and not self.failed and not torch.is_grad_enabled():
            auto = key[4] != "cpu" and self.eager_s.get(key, 0.0) > COMPILE_AFTER_S
            if key in self.ready or mode == "1" or auto:
                try:
                    if self.compiled is None:
                        self.compiled = torch.compile(chunk, dynamic=None, fullgraph=True)
                    out = self.compiled(*args)
                    self.ready.add(key)
                    return out
                except Exception as e:  # noqa: BLE001 - any compiler failure: stay eager
                    self.failed = True
                    warnings.warn(
                        f"sim:acoustic: torch.compile failed ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:120] if str(e) else ''}); running eagerly",
                        RuntimeWarning, stacklevel=3,
                    )
        t = time.perf_counter()
        out = chunk(*args)
        self.eager_s[key] = self.eager_s.get(key, 0.0) + time.perf_counter() - t
        return out


RUNNER = Runner()
"""The process-wide runner (compiled code is shared by cavities of the same shape)."""


def _structs(s: Stencil, b: int, start: int, stop: int, read: bool) -> tuple[Any, Any, list[Any]]:
    """The C structs of one run (and the tensors they point to, kept alive by the caller)."""
    st, tb = s.static, s.tb
    keep = [s.flags, s.loss_ptr, s.loss_col, s.spk_idx, s.mem_idx, s.mic_idx]
    geo = native.Geo(
        B=b, h=(st.n - 2 * st.wp) // st.wp, wp=st.wp, start=start, stop=stop, ramp=s.ramp,
        n_w=s.n_w, t0=s.t0, lossless=int(st.lossless), newton=st.newton, linear=int(st.linear),
        n_spk=s.spk_idx.numel(), n_mem=s.mem_idx.numel(), read=int(read),
        n_mc=s.mic_idx.numel(), mic_single=int(st.mic_single), n_mic=tb.mic_w.shape[1],
        n_acc=tb.basis.shape[2], n_rows=s.drive.shape[0], kappa=st.kappa, c2=s.c2,
        p_ref=st.p_ref, tol=st.tol, **{k: native.ptr(v) for k, v in zip(
            ("flags", "loss_ptr", "loss_col", "spk_idx", "mem_idx", "mic_idx"), keep, strict=True)},
    )
    tabs = [s.loss_a, s.loss_b, tb.w2, tb.lin_num, tb.lin_den, tb.a3, tb.a3x3, tb.c2, tb.c1,
            tb.c0, tb.mem_src, tb.mic_w, tb.basis]
    tabs = [t.contiguous() for t in tabs]
    tab = native.Tab(**{k: native.ptr(v) for k, v in zip(native.TAB_FIELDS, tabs, strict=True)})
    return geo, tab, keep + tabs


def _sources_table(s: Stencil, x: torch.Tensor | None) -> torch.Tensor | None:
    """``[B, rows, speaker cells]``: every drive row of ``s.drive`` applied to ``x``."""
    if x is None or not s.spk_idx.numel():
        return None
    # in float64 (one small matmul): a float32 sum of 20 tones would round differently from
    # the per-step products of the reference; this one is correctly rounded
    table = (x.double() @ s.drive_2d_f64).to(x.dtype)
    return table.view(x.shape[0], s.drive.shape[0], -1)


def _native(
    s: Stencil, x: torch.Tensor | None, read: bool, start: int, stop: int,
    state: tuple[torch.Tensor, ...], xtraj: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """The C loop on copies of ``state`` (a checkpoint may re-use the inputs)."""
    p, div, xm, um, acc, worst = (t.detach().contiguous().clone() for t in state)
    per = torch.zeros(p.shape[0], dtype=p.dtype)
    src = _sources_table(s, x.detach() if x is not None else None)
    _run_c("fwd", s, start, stop, read, [p, div, xm, um, acc, per, src, xtraj])
    return p, div, xm, um, acc, torch.maximum(worst, per.max())


def _run_c(
    name: str, s: Stencil, start: int, stop: int, read: bool, arrays: list[torch.Tensor | None]
) -> None:
    """Call the C ``name`` on per-sample ``arrays`` (``[B, ...]``, updated in place): whole
    groups of ``native.LANES`` samples in the lane-interleaved layout, the rest one by one."""
    first = next(a for a in arrays if a is not None)
    b, dtype = first.shape[0], first.dtype
    lanes = native.LANES[dtype]
    n = b // lanes * lanes if s.static.n <= GROUPED_CELLS else 0
    if n:
        grouped = [None if a is None else a[:n].reshape(n // lanes, lanes, -1).transpose(1, 2)
                   .contiguous() for a in arrays]
        _threads(name, s, start, stop, read, True, grouped)
        for a, g in zip(arrays, grouped, strict=True):
            if a is not None and g is not None:
                a[:n] = g.transpose(1, 2).reshape(a[:n].shape)
    if n < b:
        _threads(name, s, start, stop, read, False, [None if a is None else a[n:] for a in arrays])


def _threads(
    name: str, s: Stencil, start: int, stop: int, read: bool, grouped: bool,
    arrays: list[torch.Tensor | None],
) -> None:
    """Split the samples (or groups) over ``torch.get_num_threads()`` threads: the samples
    are independent and ctypes releases the GIL during the call."""
    first = next(a for a in arrays if a is not None)
    count, dtype = first.shape[0], first.dtype
    parts = max(1, min(torch.get_num_threads(), count))
    bounds = [count * k // parts for k in range(parts + 1)]

    def part(k: int) -> None:
        lo, hi = bounds[k], bounds[k + 1]
        geo, tab, _keep = _structs(s, hi - lo, start, stop, read)
        native.call(name, dtype, grouped, geo, tab, *(None if a is None else a[lo:hi] for a in arrays))

    if parts == 1:
        part(0)
        return
    with ThreadPoolExecutor(parts) as pool:
        list(pool.map(part, range(parts)))


class _Adjoint(torch.autograd.Function):
    """The C loop with its adjoint: the gradient of ``p`` and the sums w.r.t. the drive.

    Forward records the membranes' trajectory (``[B, steps + 2, membranes]``, the only
    state the backward pass needs: the field's update is linear); backward runs the adjoint
    scheme backwards in time in C, then maps the speaker rows to the inputs with one matmul.
    """

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, s: Stencil, read: bool, start: int, stop: int,
        *state: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        xtraj = torch.zeros(x.shape[0], stop - start + 2, state[2].shape[1], dtype=x.dtype)
        out = _native(s, x, read, start, stop, state, xtraj)
        ctx.s, ctx.read, ctx.span = s, read, (start, stop)
        ctx.state0 = tuple(t.detach() for t in state)  # the C loop works on copies
        ctx.save_for_backward(xtraj, x.detach())
        ctx.mark_non_differentiable(out[1], out[2], out[3], out[5])
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        xtraj, x = ctx.saved_tensors
        s: Stencil = ctx.s
        if watched():  # a FLOP counter would not see the C adjoint: it counts a torch replay
            _replayed_grad(ctx, x, grads)  # counted only; the gradient is the adjoint's below
        b, n_mem = xtraj.shape[0], xtraj.shape[2]
        gp, gacc = grads[0], grads[4]
        nm = s.static.n - 2 * s.static.wp
        lp = gp.contiguous().clone() if gp is not None else xtraj.new_zeros(b, nm)
        ld = torch.zeros_like(lp)
        lx, lu = xtraj.new_zeros(b, n_mem), xtraj.new_zeros(b, n_mem)
        shape = (b, s.tb.mic_w.shape[1], s.tb.basis.shape[2])
        gacc = gacc.contiguous() if gacc is not None else xtraj.new_zeros(shape)
        lam_src = xtraj.new_zeros(b, s.drive.shape[0], s.spk_idx.numel())
        _run_c("bwd", s, ctx.span[0], ctx.span[1], ctx.read, [lp, ld, lx, lu, gacc, lam_src, xtraj])
        # in float64 like the forward's table: a float32 product over this long axis would
        # round differently with the number of threads the matmul splits it over
        gx = (lam_src.flatten(1).double() @ s.drive_2d_f64.T).to(x.dtype)
        return (gx, None, None, None, None) + (None,) * 6


def watched() -> bool:
    """A dispatch mode (a FLOP counter of the ledger, a debugging mode) sees every torch op.

    Why it matters: the C loop's arithmetic is invisible to it, so while one is active the
    torch steps also run, on copies, for the counter to see; the results still come from the
    C loop, so counting never changes a number. The ledger counts a simulator once per call
    size, so this costs little.
    """
    return bool(_get_current_dispatch_mode_stack())


def _replayed_grad(ctx: Any, x: torch.Tensor, grads: tuple[torch.Tensor | None, ...]) -> torch.Tensor:
    """The input gradient of a C-loop forward recomputed through the torch steps, so that a
    watching FLOP counter sees the backward pass's work (as a checkpointed recompute)."""
    with torch.enable_grad():
        xr = x.detach().requires_grad_()
        out = torch_steps(ctx.s, xr, ctx.read, *ctx.span, *(t.clone() for t in ctx.state0))
        pairs = [(o, g) for o, g in zip(out, grads, strict=False) if g is not None and o.requires_grad]
        if not pairs:
            return torch.zeros_like(x)
        (gx,) = torch.autograd.grad([o for o, _ in pairs], [xr], [g for _, g in pairs])
    return gx


def use_native(s: Stencil, p: torch.Tensor, x: torch.Tensor | None) -> bool:
    """The C loop serves this run: CPU, float32/64, equal face coefficients."""
    return (
        p.device.type == "cpu" and p.dtype in (torch.float32, torch.float64)
        and s.native_ok and native.available()
    )


def advance_fast(
    s: Stencil, x: torch.Tensor | None, read: bool, start: int, stop: int,
    p: torch.Tensor, div: torch.Tensor, xm: torch.Tensor, um: torch.Tensor, acc: torch.Tensor,
    worst: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """Steps ``start .. stop - 1`` in chunks of ``CHUNK``; ``p`` without its ghost rows."""
    if use_native(s, p, x):
        state = (p, div, xm, um, acc, worst)
        if watched():  # the counter sees the torch steps' arithmetic; the C loop's numbers stay
            with torch.no_grad():
                torch_steps(s, None if x is None else x.detach(), read, start, stop,
                            *(t.detach().clone() for t in state))
        if torch.is_grad_enabled() and x is not None and x.requires_grad:
            if any(t.requires_grad for t in state):
                raise NotImplementedError("sim:acoustic: gradients w.r.t. the initial state")
            out: tuple[torch.Tensor, ...] = _Adjoint.apply(x, s, read, start, stop, *state)
            return out
        return _native(s, x, read, start, stop, state)
    return torch_steps(s, x, read, start, stop, p, div, xm, um, acc, worst)


def torch_steps(
    s: Stencil, x: torch.Tensor | None, read: bool, start: int, stop: int,
    p: torch.Tensor, div: torch.Tensor, xm: torch.Tensor, um: torch.Tensor, acc: torch.Tensor,
    worst: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """``advance_fast`` in torch ops, ``CHUNK`` steps per ``chunk`` call (GPU, fallback, and
    whenever a dispatch mode watches)."""
    st = s.static
    table = _sources_table(s, x)
    for a in range(start, stop, CHUNK):
        b = min(a + CHUNK, stop)
        src = None if table is None else table[:, s.drive_rows(a, b)].transpose(0, 1)
        basis = s.basis[s.basis_rows(a, b)] if read else None
        if src is None and basis is None:
            basis = torch.zeros(b - a, *s.basis.shape[1:], dtype=p.dtype, device=p.device)
        key = (st, b - a, tuple(p.shape), p.dtype, str(p.device), src is None, basis is None)
        p, div, xm, um, acc, worst = RUNNER(key, st, s, p, div, xm, um, acc, worst, src, basis)
    return p, div, xm, um, acc, worst
