"""The fast path of ``sim:acoustic`` (``fast``, ``native``) against the reference scheme.

The reference (``simulate(reference=True)``: face velocities, Newton to convergence, one
step at a time) is the scheme whose energy conservation ``test_acoustic`` checks; the fast
path (pressure and ``D w`` only, fixed Newton steps, the C loop and its adjoint) must
follow it to round-off over a 576-step query: relative to the largest value, 1e-12 in
float64 (measured 2e-15) and 5e-5 in float32 (measured 9e-7 with losses; 2e-5 in the
lossless cavity, where round-off never decays: there the fast path's float32 error against
float64 is 1.5e-5, the reference's 6e-6, as ``D w`` is accumulated, not recomputed).
"""

import pytest
import torch

from physnn.sim.acoustic import AcousticCavity, AcousticConfig, fast, native

F64, F32 = torch.float64, torch.float32
TOL = {F64: 1e-12, F32: 5e-5}

CASES = {
    "preset": {},  # 6 scatterers, 4 nonlinear membranes, lossy walls, viscous absorption
    "sponge-linear": {"sponge_cells": 3, "membrane_alpha": 0.0, "membrane_beta": 0.0},
    "lossless": {"viscous_time": 0.0, "wall_reflection": 1.0, "n_scatterers": 9},
}


def drive(b: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 20, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("case", sorted(CASES))
def test_fast_path_follows_the_reference_scheme(case, dtype):
    dev = AcousticCavity(AcousticConfig(**CASES[case]))
    assert dev.solid.any() and dev.sources.mem_idx.numel() == 4
    x = drive(17, dtype)
    with torch.no_grad():
        ref = dev.simulate(x, reference=True)
        out = dev.simulate(x)
    for key in ("p", "_re_im"):
        assert rel(out[key], ref[key]) < TOL[dtype], (case, key, rel(out[key], ref[key]))
    assert (out["p"][:, dev.solid] == 0).all()


@pytest.mark.parametrize("case", sorted(CASES))
def test_torch_steps_follow_the_reference_scheme(case, monkeypatch):
    """``PHYSNN_COMPILE=0``: the same fast scheme as plain torch ops (what a GPU runs)."""
    monkeypatch.setenv("PHYSNN_COMPILE", "0")
    dev = AcousticCavity(AcousticConfig(**CASES[case]))
    x = drive(3, F64)
    with torch.no_grad():
        ref = dev.simulate(x, reference=True)["_re_im"]
        out = dev.simulate(x)["_re_im"]
    assert rel(out, ref) < TOL[F64]


@pytest.mark.skipif(not native.available(), reason="no C compiler")
@pytest.mark.parametrize("dtype", [F64, F32])
def test_c_loop_equals_the_torch_steps_bit_for_bit(dtype, monkeypatch):
    dev = AcousticCavity()
    x = drive(21, dtype)  # a group of 16 (float32) or two of 8 (float64), then one by one
    with torch.no_grad():
        c_loop = dev.simulate(x)
        monkeypatch.setenv("PHYSNN_COMPILE", "0")
        torch_steps = dev.simulate(x)
    for key in ("p", "_re_im"):
        assert torch.equal(c_loop[key], torch_steps[key]), key


@pytest.mark.parametrize("case", sorted(CASES))
def test_adjoint_gradient_equals_autograd_through_the_steps(case, monkeypatch):
    """The C adjoint (implicit derivative of the membranes' solve) against autograd through
    the torch steps (through every Newton step), for the read-out and the final field."""
    dev = AcousticCavity(AcousticConfig(**CASES[case]))
    w = torch.randn(10, *dev.config.grid, generator=torch.Generator().manual_seed(3), dtype=F64)
    grads = []
    for mode in ("auto", "0"):
        monkeypatch.setenv("PHYSNN_COMPILE", mode)
        x = drive(10, F64, seed=1).requires_grad_(True)  # a group of 8, then 2 one by one
        out = dev.simulate(x)
        (out["_re_im"].square().sum() + 1e-2 * (out["p"] * w).sum()).backward()
        assert x.grad is not None
        grads.append(x.grad)
    assert rel(grads[0], grads[1]) < 1e-9


@pytest.mark.parametrize("dtype", [F64, F32])
def test_fixed_newton_steps_converge_at_ten_times_the_preset_drive(dtype):
    dev = AcousticCavity(AcousticConfig(volume_velocity=3e-3))
    tb = dev._tab(torch.device("cpu"), dtype)
    s = dev._stencil(tb)
    p, _, _, xm, um, acc, div = dev._initial_state(4, torch.device("cpu"), dtype, None)
    n, wp = dev.geometry.n_cells, dev.geometry.wp
    state = (p[:, wp : n - wp].contiguous(), div, xm, um, acc, torch.zeros((), dtype=dtype))
    with torch.no_grad():
        out = fast.advance_fast(s, torch.ones(4, 20, dtype=dtype), True, 0, 576, *state)
    assert out[2].abs().max() > 2  # strongly nonlinear: |x| ~ 2.8 (x ~ 1 at the onset)
    assert 0 < float(out[5]) <= 1e-2  # the last Newton step, relative to its tolerance


def test_unconverged_membranes_rerun_on_the_reference_path(monkeypatch):
    """One Newton step is not enough: the query's single check catches it and the reference
    path (Newton to convergence) gives the answer, bit for bit."""
    monkeypatch.setattr(fast, "NEWTON_STEPS", 1)
    dev = AcousticCavity()
    x = drive(3, F64)
    with torch.no_grad():
        tb = dev._tab(torch.device("cpu"), F64)
        assert dev._run_fast(tb, x, True, 576, dev._initial_state(3, x.device, F64, None)) is None
        out = dev.simulate(x)["_re_im"]
        ref = dev.simulate(x, reference=True)["_re_im"]
    assert torch.equal(out, ref)



def test_without_a_c_compiler_the_torch_steps_run_with_one_warning(tmp_path):
    """A machine without a working compiler: one RuntimeWarning, then the same numbers."""
    import os
    import subprocess
    import sys

    script = (
        "import warnings, torch\n"
        "from physnn.sim.acoustic import AcousticCavity, native\n"
        "dev = AcousticCavity(); x = torch.rand(3, 20, dtype=torch.float64)\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    with torch.no_grad():\n"
        "        a = dev.simulate(x)['_re_im']; b = dev.simulate(x, reference=True)['_re_im']\n"
        "print(native.available(), sum('C time loop did not build' in str(m.message) for m in w),\n"
        "      float((a - b).abs().max() / b.abs().max()))\n"
    )
    env = {**os.environ, "CC": "false", "PHYSNN_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    ok, warned, err = out.stdout.split()
    assert ok == "False" and warned == "1" and float(err) < 1e-12
    assert not list(tmp_path.glob("*.so"))


def test_results_do_not_depend_on_the_number_of_threads():
    """The C loop splits the samples over torch's threads: same numbers, forward and adjoint."""
    dev = AcousticCavity()
    x = drive(37, F32)
    outs = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            xg = x.clone().requires_grad_(True)
            y = dev.amplitudes(xg)
            y.sum().backward()
            outs.append((y.detach(), xg.grad))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


class _HostReads(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the ops that copy a tensor's value to the host (``float(t)``, ``bool(t)``,
    ``t.item()``): on a GPU, each one waits for every queued kernel."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_the_torch_steps_read_the_host_once_per_query(monkeypatch):
    """The fast path's only host read is the membranes' convergence check at the end; the
    reference path reads the Newton step size every iteration (the measurement sees it)."""
    monkeypatch.setenv("PHYSNN_COMPILE", "0")
    dev = AcousticCavity()
    x = drive(4, F32)
    counts = []
    for reference in (False, True):
        with torch.no_grad():
            dev.simulate(x, reference=reference)  # builds the tables (host reads, once)
        with torch.no_grad(), _HostReads() as reads:
            dev.simulate(x, reference=reference)
        counts.append(reads.count)
    assert counts[0] == 1
    assert counts[1] > 576 * 3  # >= 3 Newton steps per time step


def _counted_grad(dev: AcousticCavity, x: torch.Tensor, backward_watched_only: bool):
    """The ledger's counter around a twin's forward and backward; (fwd, bwd, dx)."""
    from physnn.train.ledger import LedgerFlopMeter

    meter = LedgerFlopMeter(cache=False)
    xr = x.clone().requires_grad_()
    if backward_watched_only:  # forward by the C loop, backward under the counter
        y = dev.amplitudes(xr)
        with meter.count("model"):
            y.sum().backward()
    else:
        with meter.count("model"):
            dev.amplitudes(xr).sum().backward()
    fwd, bwd = meter.split("model")
    return fwd, bwd, xr.grad


@pytest.mark.skipif(not native.available(), reason="needs a C compiler for the C loop")
def test_a_flop_counter_sees_the_simulators_work():
    """The C loop is invisible to torch's dispatch: under a FLOP counter the torch steps also
    run for it to count, so the ledger charges a twin its real FLOPs, not zero, and the
    numbers (the C loop's) are the same with and without the counter."""
    # the default cavity with a shorter transient and window: every step costs ~0.1 s counted
    dev = AcousticCavity(AcousticConfig(transient_steps=32, window_steps=128))
    x = drive(4, F64)
    cells_steps = dev.config.grid[0] * dev.config.grid[1] * dev.config.total_steps * 4
    fwd, bwd, g_counted = _counted_grad(dev, x, backward_watched_only=False)
    assert fwd > 5 * cells_steps and bwd > 5 * cells_steps
    xr = x.clone().requires_grad_()
    dev.amplitudes(xr).sum().backward()  # the C loop and its adjoint, unwatched
    assert torch.equal(g_counted, xr.grad)
    fwd2, bwd2, g2 = _counted_grad(dev, x, backward_watched_only=True)
    assert fwd2 < fwd / 100  # the forward ran outside the counter
    assert bwd2 > 5 * cells_steps  # the C adjoint's work, counted on a torch replay
    assert torch.equal(g2, xr.grad)
