"""Physics and contract of the acoustic cavity simulator (``sim:acoustic``)."""

import math
import subprocess
import sys
import textwrap

import pytest
import torch

from physnn.core import make_device
from physnn.sim.acoustic import CFL_LIMIT, AcousticCavity, AcousticConfig

F64 = torch.float64


def small(**kw):
    """A 12x12 cavity, 4 tones on bins 3..6 of a 64-step window: fast enough for unit tests."""
    base = dict(
        n_in=4, grid=(12, 12), first_bin=3, window_steps=64, transient_steps=256, ramp_steps=16,
        n_scatterers=2, volume_velocity=1e-3,
    )
    return AcousticCavity.from_description(**{**base, **kw})


def inputs(b=6, n=4, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, n, generator=g, dtype=F64).to(dtype)


def pulse(dev, width=1.5):
    """A smooth Gaussian pressure pulse (Pa) off-centre in the cavity."""
    h, w = dev.config.grid
    r = torch.arange(h, dtype=F64)[:, None]
    c = torch.arange(w, dtype=F64)[None, :]
    return torch.exp(-((r - h / 3) ** 2 + (c - w / 2.5) ** 2) / (2 * width**2))


# -- energy bookkeeping -------------------------------------------------------------------


def energy_trace(dev, steps):
    """The scheme's energy per step for the pulse, from the in-place (black-box) loop, checked
    against the out-of-place (autograd) loop, which must follow the same trajectory."""
    with torch.no_grad():
        out = dev.simulate(None, steps, p0=pulse(dev), energy=True, read=False)
    with torch.enable_grad():
        twin = dev.simulate(None, steps, p0=pulse(dev), energy=True, read=False)
    assert torch.allclose(out["energy"], twin["energy"], rtol=1e-12, atol=0)
    assert torch.allclose(out["p"], twin["p"], rtol=1e-9, atol=1e-12)
    return out["energy"][:, 0], out["p"]


@pytest.mark.parametrize(
    "membranes",
    [
        {"membranes": [], "membrane_freq_hz": []},
        # linear, undamped membranes exchange energy with the field but lose none
        {"membrane_alpha": 0.0, "membrane_beta": 0.0, "membrane_q": math.inf},
    ],
    ids=["field-only", "linear-membranes"],
)
def test_lossless_cavity_conserves_the_discrete_energy(membranes):
    dev = small(wall_reflection=1.0, viscous_time=0.0, **membranes)
    assert dev.geometry.loss.abs().max() == 0
    e, p_end = energy_trace(dev, 600)
    assert e[0] > 0
    drift = (e - e[0]).abs().max() / e[0]
    assert drift < 1e-12, f"relative energy drift {drift:.3g}"
    # the field did move (otherwise conservation would be trivial)
    assert (p_end[0] - pulse(dev) * (~dev.solid)).abs().max() > 0.1
    if dev.sources.mem_idx.numel():  # and the membranes took part in the exchange
        probe = small(wall_reflection=1.0, viscous_time=0.0, membrane_coupling=0.0,
                      **{k: v for k, v in membranes.items() if k != "membrane_coupling"})
        p_free = probe.simulate(None, 600, p0=pulse(dev), read=False)["p"]
        assert (p_free - p_end).abs().max() > 1e-3


@pytest.mark.parametrize(
    "loss",
    [{"wall_reflection": 0.5}, {"wall_reflection": 1.0, "sponge_cells": 2}],
    ids=["walls", "sponge"],
)
def test_lossy_cavity_energy_decays_monotonically(loss):
    dev = small(viscous_time=0.0, membrane_alpha=0.0, membrane_beta=0.0, membrane_q=math.inf, **loss)
    e, _ = energy_trace(dev, 600)
    steps = e[1:] - e[:-1]
    assert (steps <= 1e-14 * e[0]).all(), f"energy rose by {steps.max().item():.3g} J/m"
    assert e[-1] < 0.2 * e[0]


def test_nonlinear_membranes_conserve_energy_exactly():
    """The discrete-gradient membrane update conserves the energy at any amplitude."""
    kw = dict(wall_reflection=1.0, viscous_time=0.0, membrane_q=math.inf, membrane_p_ref=0.05)
    e, p_end = energy_trace(small(**kw), 600)  # |x| >> 1: strongly stiffened membranes
    assert (e - e[0]).abs().max() / e[0] < 1e-10
    _, p_lin = energy_trace(small(membrane_alpha=0.0, membrane_beta=0.0, **kw), 600)
    assert (p_end - p_lin).abs().max() > 0.1 * p_lin.abs().max()  # the nonlinearity matters


# -- stability --------------------------------------------------------------------------


def test_cfl_violation_raises_with_the_courant_number():
    with pytest.raises(ValueError, match=r"Courant number c\*dt/dx = 0\.75 .*0\.707107"):
        AcousticCavity.from_description(courant=0.75)
    dx, c = 0.02, 343.0
    with pytest.raises(ValueError, match=r"Courant number c\*dt/dx = 0\.8 "):
        AcousticCavity.from_description(dx=dx, c=c, dt=0.8 * dx / c)
    # viscous absorption tightens the limit, and the message says so
    with pytest.raises(ValueError, match=r"viscous_time"):
        AcousticCavity.from_description(courant=0.69, viscous_time=3e-6)
    ok = AcousticCavity.from_description(courant=0.7, viscous_time=0.0)
    assert ok.config.courant < CFL_LIMIT


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="alpha"):
        AcousticCavity.from_description(membrane_alpha=2.0, membrane_beta=1.0)
    with pytest.raises(ValueError, match="outside grid"):
        AcousticCavity.from_description(microphones=[[30, 1]])
    with pytest.raises(ValueError, match="Nyquist"):
        AcousticCavity.from_description(n_in=40, window_steps=64)
    with pytest.raises(ValueError, match="touches a scatterer"):
        AcousticCavity.from_description(scatterers=[[5, 2]], speakers=[[5, 2]])
    with pytest.raises(ValueError, match="readout"):
        AcousticCavity.from_description(readout="volts")


# -- linear and nonlinear response --------------------------------------------------------


def test_weak_drive_obeys_superposition():
    dev = small(readout="amplitude")
    a, b = 1e-3 * inputs(4, seed=1), 1e-3 * inputs(4, seed=2)

    def spectrum(x):
        return dev.simulate(x)["spectrum"]

    s_a, s_b, s_ab = spectrum(a), spectrum(b), spectrum(a + b)
    err = (s_ab - s_a - s_b).abs().max() / s_ab.abs().max()
    assert err < 2e-4, f"superposition error {err:.3g} at weak drive"
    # magnitudes scale linearly (bins off the tones hold only the tiny nonlinear products)
    y1, y2 = dev(a), dev(2 * a)
    assert torch.allclose(y2, 2 * y1, rtol=1e-3, atol=1e-3 * y1.max().item())
    # the same check at full drive fails: the membranes are nonlinear
    strong = (spectrum(0.5 * (a + b) / 1e-3) - spectrum(0.5 * a / 1e-3) - spectrum(0.5 * b / 1e-3))
    assert strong.abs().max() / spectrum(0.5 * (a + b) / 1e-3).abs().max() > 30 * err


def two_tone(**kw):
    """Tones on bins 4 and 7; read f1, f2, 2 f1 (8), f1 + f2 (11), 2 f1 - f2 (1), 3 f1 (12).

    No second-order product (bins 0, 3, 8, 11, 14) falls on a third-order one (1, 4, 7, 10,
    12, 15, 18, 21) among the bins read.
    """
    return small(first_bin=4, bin_spacing=3, n_in=2, bins=[4, 7, 8, 11, 1, 12], n_microphones=1,
                 readout="amplitude", **kw)


def test_weak_drive_products_grow_with_the_order_of_the_nonlinearity():
    """Perturbative regime: relative to the f1 line, 2 f1 and f1 + f2 (quadratic, alpha) grow
    as the drive A, 2 f1 - f2 and 3 f1 (cubic, beta) as A^2."""
    dev = two_tone(membrane_alpha=0.5, membrane_beta=1.0)
    x = torch.tensor([[1.0, 1.0]], dtype=F64)
    lo, hi = dev(1e-3 * x)[0], dev(1e-2 * x)[0]
    growth = (hi[2:] / hi[0]) / (lo[2:] / lo[0])
    assert torch.allclose(growth[:2], torch.full((2,), 10.0, dtype=F64), rtol=0.1), growth
    assert torch.allclose(growth[2:], torch.full((2,), 100.0, dtype=F64), rtol=0.2), growth
    # a symmetric (odd) membrane makes no quadratic products
    odd = two_tone(membrane_alpha=0.0, membrane_beta=1.0)(1e-2 * x)[0]
    assert (odd[2:4] / odd[0] < 1e-6).all() and (odd[4:] / odd[0] > 1e-6).all()


@pytest.mark.parametrize("alpha,beta", [(0.5, 1.0), (0.0, 1.0)])
def test_strong_drive_creates_harmonics_and_intermodulation(alpha, beta):
    dev = two_tone(membrane_alpha=alpha, membrane_beta=beta)
    x = torch.tensor([[1.0, 1.0]], dtype=F64)
    weak, strong = dev(1e-3 * x)[0], dev(x)[0]
    # products relative to the f1 line: at the floor at weak drive, clearly up at full drive
    rel_weak, rel_strong = weak[2:] / weak[0], strong[2:] / strong[0]
    assert (rel_weak < 2e-4).all()
    products = slice(0, 4) if alpha else slice(2, 4)  # quadratic and cubic, or cubic only
    assert (rel_strong[products] > 10 * rel_weak[products]).all(), (rel_weak, rel_strong)
    assert (rel_strong[products] > 1e-3).all()
    # Duffing hardening shifts the resonance: the f1 transfer changes with the drive level
    assert abs(strong[0] / (weak[0] / 1e-3) - 1) > 0.05


def test_linear_cavity_read_out_is_leakage_free():
    """Linear membranes, full drive: the tones sit on bins, so every other bin reads only the
    residue of the start-up transient (nothing leaks from the tone lines)."""
    dev = two_tone(membrane_alpha=0.0, membrane_beta=0.0)
    y = dev(torch.tensor([[1.0, 1.0]], dtype=F64))[0]
    assert (y[2:] / y[0] < 1e-6).all()


def test_resonance_shifts_with_drive_amplitude():
    """Duffing hardening: the in-band transfer |P(f)| / drive depends on the drive level."""
    dev = small(readout="amplitude", membrane_alpha=0.0)
    x = torch.full((1, 4), 1.0, dtype=F64)
    gain_weak, gain_strong = dev(1e-3 * x) / 1e-3, dev(x)
    tone_cols = [i for i, b in enumerate(sum(dev.config.bins, [])) if b in dev.config.tone_bins]
    change = ((gain_strong - gain_weak)[0, tone_cols].abs() / gain_weak[0, tone_cols]).max()
    assert change > 0.02


# -- numerical convergence ----------------------------------------------------------------


def _response_on_grid(n):
    """Complex microphone response at a low tone, for the same physical cavity at dx = L/n.

    Speaker and microphone sit on cell corners (half-integer cell coordinates), which stay
    corners when dx halves; time steps, window and transient scale with dx (fixed Courant).
    """
    r = n // 8

    def u(a):
        return r * a + (r - 1) / 2

    dev = AcousticCavity.from_description(
        n_in=1, grid=(n, n), dx=0.16 / n, courant=0.5, viscous_time=0.0, wall_reflection=0.5,
        first_bin=1, bins=[1], window_steps=32 * r, transient_steps=64 * r, ramp_steps=8 * r,
        speakers=[[u(1.5), u(1.5)]], microphones=[[u(5.5), u(4.5)]],
        membranes=[], membrane_freq_hz=[], scatterers=[], readout="amplitude",
    )
    return dev.simulate(torch.ones(1, 1, dtype=F64))["spectrum"][0, 0, 0]


def test_microphone_response_converges_with_grid_refinement():
    ref = _response_on_grid(64)
    errors = [abs(_response_on_grid(n) - ref) / abs(ref) for n in (8, 16, 32)]
    assert errors[1] < 0.6 * errors[0] and errors[2] < 0.6 * errors[1], errors


# -- black-box mode: memory independent of the number of steps -----------------------------

MEMORY_SCRIPT = textwrap.dedent(
    """
    import re, torch
    torch.set_num_threads(1)
    from physnn.sim.acoustic import AcousticCavity

    def status(key):  # kB -> MB, from the kernel's accounting of this process
        with open("/proc/self/status") as f:
            return int(re.search(key + r":\\s+(\\d+)", f.read()).group(1)) / 1024

    def reset_peak():  # Linux >= 4.0: restart the peak-RSS counter (VmHWM) from now
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    try:
        reset_peak()
    except OSError:
        print("SKIP")
        raise SystemExit(0)

    B, n_mic = 1024, 4
    x = torch.rand(B, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def cavity(transient):
        return AcousticCavity.from_description(n_in=2, grid=(8, 8), first_bin=3, window_steps=64,
                              transient_steps=transient, n_microphones=n_mic, n_scatterers=0,
                              readout="amplitude")

    short, long = cavity(250 - 64), cavity(2000 - 64)   # 250 and 2000 steps
    short(x)  # warm up the allocator
    reset_peak(); short(x); peak_short = status("VmHWM")
    reset_peak(); long(x); peak_long = status("VmHWM")
    # control: keeping only the microphone signals of the long run would cost this much
    # (first hand freed heap memory back, or the control would re-use it unseen)
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    rss = status("VmRSS")
    reset_peak()
    history = [torch.ones(B, n_mic, dtype=torch.float64) for _ in range(2000)]
    peak_control = status("VmHWM")
    print(peak_short, peak_long, peak_control - rss, B * n_mic * 2000 * 8 / 2**20)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self (Linux)")
def test_black_box_memory_does_not_grow_with_the_number_of_steps():
    """Peak RSS of 2000 steps equals that of 250 steps; a stored history would show."""
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT], capture_output=True, text=True, timeout=120, check=True
    )
    if out.stdout.strip() == "SKIP":
        pytest.skip("cannot reset the peak RSS counter (/proc/self/clear_refs)")
    peak_short, peak_long, control_growth, history_mb = (float(v) for v in out.stdout.split())
    assert history_mb > 60
    assert control_growth > 0.8 * history_mb  # the measurement does see a stored history
    assert peak_long - peak_short < 0.1 * history_mb, (peak_short, peak_long)


def test_black_box_keeps_no_graph_and_forward_with_grad_does():
    dev = small()
    x = inputs().requires_grad_(True)
    y = dev(x)
    assert not y.requires_grad and y.grad_fn is None
    y2 = dev.forward_with_grad(x)  # checkpointed: forward in place, backward recomputes
    assert y2.requires_grad
    assert torch.equal(y, y2.detach())
    y3 = small(checkpoint_steps=0).forward_with_grad(x)  # the out-of-place loop throughout
    assert torch.allclose(y, y3.detach(), rtol=1e-10, atol=1e-12)


# -- gradients ------------------------------------------------------------------------------


def test_forward_with_grad_matches_finite_differences():
    dev = small(noise=[])
    x = inputs(2, seed=3).requires_grad_(True)
    y = dev.forward_with_grad(x)
    w = torch.linspace(-1, 1, y.shape[1], dtype=F64)
    (y * w).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().max() > 0
    eps = 1e-6
    for i in range(4):
        xp, xm = x.detach().clone(), x.detach().clone()
        xp[0, i] += eps
        xm[0, i] -= eps
        fd = ((dev(xp) - dev(xm)) * w).sum() / (2 * eps)
        assert fd.item() == pytest.approx(x.grad[0, i].item(), rel=1e-4, abs=1e-8)
    # recomputing the loop in checkpointed segments gives the same gradient as storing it
    assert dev.config.checkpoint_steps and dev.config.total_steps > dev.config.checkpoint_steps
    x2 = x.detach().clone().requires_grad_(True)
    (small(noise=[], checkpoint_steps=0).forward_with_grad(x2) * w).sum().backward()
    assert torch.allclose(x2.grad, x.grad, rtol=1e-10, atol=1e-14)


# -- seeding --------------------------------------------------------------------------------


def test_same_seed_same_device_and_noise():
    noise = [{"kind": "readout", "sigma": 0.05}]
    a, b = small(seed=4, noise=noise), small(seed=4, noise=noise)
    x = inputs()
    assert a.scatterer_cells == b.scatterer_cells
    assert torch.equal(a(x), b(x))
    assert torch.equal(a(x), b(x))  # the noise streams advance identically
    clean = small(seed=4)
    assert not torch.allclose(a(x), clean(x))


def test_scatterers_come_from_the_seed_or_the_config():
    a, b = small(seed=1, n_scatterers=3), small(seed=2, n_scatterers=3)
    assert a.scatterer_cells and a.scatterer_cells != b.scatterer_cells
    assert a.scatterer_cells == small(seed=1, n_scatterers=3).scatterer_cells
    x = inputs()
    assert not torch.allclose(a(x), b(x))
    given = small(seed=1, scatterers=[[6, 6], [6, 7]])
    assert given.scatterer_cells == [[6, 6], [6, 7]]
    assert int(given.solid.sum()) == 2
    snap = given.field_snapshot(x[0], 100)
    assert snap[6, 6] == 0 and snap[6, 7] == 0 and snap.abs().max() > 0


# -- the device contract -------------------------------------------------------------------


def test_contract_shape_domain_and_accounting():
    dev = small()
    cfg = dev.config
    assert dev.spec.n_out == cfg.n_microphones * cfg.n_bins == 20
    y = dev(inputs(5, dtype=torch.float32))
    assert y.shape == (5, 20) and y.dtype == torch.float32
    with pytest.raises(ValueError, match=r"sim:acoustic: input\[1, 2\] = 1\.5 is outside"):
        bad = inputs(3)
        bad[1, 2] = 1.5
        dev(bad)
    with pytest.raises(ValueError, match="expected"):
        dev(inputs(3, n=5))
    duration = cfg.total_steps * cfg.dt
    assert dev.spec.time_per_query_s == pytest.approx(duration)
    assert dev.spec.energy_per_query_j == pytest.approx(cfg.speaker_power_w * duration)
    assert dev.accounting.samples == 5 and dev.accounting.device_time_s == pytest.approx(5 * duration)
    clipped = small(clip=True)
    assert clipped(torch.full((1, 4), 2.0)).shape == (1, 20)


def test_float64_in_float64_out_and_float32_agrees():
    dev = small()
    x = inputs()
    y64 = dev(x)
    y32 = dev(x.float())
    assert y64.dtype == F64 and y32.dtype == torch.float32
    assert torch.allclose(y32.double(), y64, rtol=1e-3, atol=1e-4)


def test_default_device_20_in_20_out_with_varied_outputs():
    dev = make_device({"kind": "sim:acoustic"})
    assert (dev.spec.n_in, dev.spec.n_out) == (20, 20)
    y = dev(inputs(48, n=20, dtype=torch.float32))
    cv = y.std(0) / y.mean(0)
    assert (cv > 0.2).all() and (cv < 2).all()  # neither constant nor wild
    assert torch.allclose(y.mean(0), torch.ones(20), atol=0.5)  # calibrated read-out is O(1)
    bins = [b for row in dev.config.bins for b in row]
    assert len(set(bins)) == 20  # every channel reads its own frequency


def test_describe_rebuilds_the_same_device():
    dev = small(seed=3, noise=[{"kind": "readout", "sigma": 0.0}])
    twin = make_device(dev.describe())
    assert twin.describe() == dev.describe()
    x = inputs()
    assert torch.equal(dev(x), twin(x))


def test_readout_modes():
    x = inputs()
    amp = small(readout="amplitude")(x)
    cal_dev = small(readout="calibrated")
    assert torch.allclose(cal_dev(x), amp / cal_dev.calibration(), rtol=1e-12)
    db = small(readout="db")(x)
    assert torch.allclose(db, 20 * torch.log10(amp / 20e-6), rtol=1e-12)


# -- inspection -----------------------------------------------------------------------------


def test_field_snapshot_and_plot_layout():
    from matplotlib.figure import Figure

    dev = small()
    x = inputs(2)
    assert dev.field_snapshot(x, 0).abs().max() == 0
    snap = dev.field_snapshot(x, 50)
    assert snap.shape == dev.config.grid and snap.abs().max() > 0
    assert torch.equal(snap, dev.field_snapshot(x[:1], 50))  # the first sample
    with pytest.raises(ValueError, match="step"):
        dev.field_snapshot(x, dev.config.total_steps + 1)
    fig = Figure()
    ax = fig.add_subplot()
    assert dev.plot_layout(ax, x, step=60) is ax
    labels = {t.get_text() for t in ax.get_legend().get_texts()}
    assert {"speakers", "microphones", "Duffing membranes", "rigid scatterers"} <= labels
    ax2 = Figure().add_subplot()
    dev.plot_layout(ax2)  # geometry only


# -- typed parameters, tensors that follow .to() ------------------------------------------


def test_typed_config_and_description_build_the_same_cavity():
    cfg = AcousticConfig(n_in=4, grid=(12, 12), first_bin=3, window_steps=64, transient_steps=64,
                         ramp_steps=16, n_scatterers=2, seed=3)
    dev = AcousticCavity(cfg)
    again = make_device(dev.describe())
    x = torch.rand(2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(dev(x), again(x))
    with pytest.raises(TypeError, match="n_speaker\\b"):
        AcousticCavity.from_description(n_speaker=3)


def test_apply_to_tensors_converts_the_tables_and_clears_the_cache():
    dev = small(n_in=4, transient_steps=64)
    x = torch.rand(2, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    before = dev(x)
    assert dev._tables
    dev.apply_to_tensors(lambda t: t.to(torch.float32) if t.is_floating_point() else t)
    assert not dev._tables
    assert dev.geometry.cx.dtype == dev.sources.drive.dtype == torch.float32
    assert dev.sources.mem_idx.dtype == torch.long and dev.solid.dtype == torch.bool
    after = dev(x)
    assert after.dtype == torch.float64  # measurements follow the input's dtype
    assert torch.allclose(after, before, rtol=1e-4, atol=1e-6)
    dev.apply_to_tensors(lambda t: t.to(torch.float64) if t.is_floating_point() else t)
    assert torch.allclose(dev(x), before, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_apply_to_tensors_survives_a_rebuild(device):
    kw = dict(transient_steps=64, perturbations=[{"kind": "drift", "sigma": 1.0},
                                                 {"kind": "sudden", "at": 1, "action": "move"}])
    ref, dev = small(**kw), small(**kw)
    dev.apply_to_tensors(lambda t: t.to(device))
    for d in (ref, dev):
        d.advance(2)
    assert dev.geometry.cx.device.type == torch.device(device).type  # applied again after it
    x = torch.rand(2, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert torch.allclose(dev(x.to(device)).cpu(), ref(x), rtol=1e-9, atol=1e-12)
