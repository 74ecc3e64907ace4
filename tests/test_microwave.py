"""Physics of the microwave metasurface cavity simulator (``sim:microwave``)."""

import math

import pytest
import torch

from physnn.core import make_device
from physnn.sim.microwave import MetasurfaceCavity, MicrowaveConfig, green_2d, radiation_kernel

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def cavity(**kw):
    """A small cavity: 8 features (16 one-bit elements), 6 frequencies; builds in ~0.1 s."""
    return MetasurfaceCavity.from_description(**{"n_in": 8, "n_out": 6, "cavity_radius": 2.0, **kw})


def configs(b=8, n=8, seed=0, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 4, (b, n), generator=g).to(device=device, dtype=dtype)


# -- the Green's function ----------------------------------------------------------------


def test_green_function_is_the_outgoing_2d_green_function():
    """(i/4) H0^(1)(kr): its small- and large-argument forms fix the convention."""
    small = torch.tensor([1e-4, 1e-3], dtype=torch.float64)
    euler = 0.5772156649015329
    log_form = 0.25j * (1 + 2j / math.pi * (torch.log(small / 2) + euler))
    assert torch.allclose(green_2d(small), log_form, rtol=1e-6)
    large = torch.tensor([200.0, 1000.0], dtype=torch.float64)
    outgoing = 0.25j * (2 / (math.pi * large)).sqrt() * torch.exp(1j * (large - math.pi / 4))
    assert torch.allclose(green_2d(large), outgoing, rtol=2e-3)
    # and torch's own Bessel functions agree to their (limited, ~4e-7) accuracy
    kr = torch.linspace(0.05, 40.0, 2001, dtype=torch.float64)
    torch_g = torch.complex(-0.25 * torch.special.bessel_y0(kr), 0.25 * torch.special.bessel_j0(kr))
    assert (green_2d(kr) - torch_g).abs().max() < 1e-6
    assert torch.allclose(radiation_kernel(kr), green_2d(kr).imag, rtol=0, atol=1e-15)


# -- limits and equivalences -------------------------------------------------------------


def test_free_space_limit_is_the_direct_coupling_between_two_antennas():
    """No walls, no scatterers, a vanishing metasurface: two coupled dipoles in free space.

    ``W = [[w, -G], [-G, w]]`` with ``w = 1/alpha - i/4`` gives ``H = G / (w^2 - G^2)``, and
    ``s = 2 d H`` with the port load ``d = gamma nu / chi^2``.
    """
    tx, rx = [0.3, -0.2], [-1.1, 0.9]
    dev = cavity(
        walls=False,
        n_scatterers=0,
        ms_chi=1e-7,
        disorder=0.0,
        tx_positions=[tx],
        rx_positions=[rx],
        n_out=9,
        f_min_ghz=4.0,
        f_max_ghz=7.0,
    )
    s = dev.transfer(configs(3))[:, 0, 0]  # [b, f]
    cfg = dev.config
    nu = dev.nu
    r = math.dist(tx, rx)
    g = green_2d(2 * math.pi * nu * r)
    w = (
        torch.complex(
            (cfg.antenna_res**2 - nu**2) / cfg.antenna_chi**2,
            -cfg.antenna_gamma * nu / cfg.antenna_chi**2,
        )
        - 0.25j
    )
    d = cfg.antenna_gamma * nu / cfg.antenna_chi**2
    expected = 2 * d * g / (w**2 - g**2)
    for row in s:  # the metasurface configuration no longer matters
        assert torch.allclose(row, expected, rtol=1e-9, atol=0)
    # weakly coupled antennas: H -> alpha_t alpha_r G, the Born (single-pass) coupling
    far = cavity(
        walls=False,
        n_scatterers=0,
        ms_chi=1e-7,
        disorder=0.0,
        tx_positions=[[0.0, 0.0]],
        rx_positions=[[40.0, 0.0]],
    )
    g = green_2d(2 * math.pi * far.nu * 40.0)
    w = (
        torch.complex(
            (1 - far.nu**2) / cfg.antenna_chi**2, -cfg.antenna_gamma * far.nu / cfg.antenna_chi**2
        )
        - 0.25j
    )
    d = cfg.antenna_gamma * far.nu / cfg.antenna_chi**2
    born = 2 * d * g / w**2
    assert torch.allclose(far.transfer(configs(1))[0, 0, 0], born, rtol=1e-3)


@pytest.mark.parametrize("kw", [{}, {"n_tx": 2, "n_rx": 2, "n_out": 12}, {"elements_per_feature": 1}])
def test_fast_schur_path_equals_the_dense_solve(kw):
    dev = cavity(seed=3, **kw)
    x = configs(4)
    s = dev.transfer(x)  # [b, rx, tx, f]
    load = dev.gamma * dev.nu[:, None] / dev.chi**2  # [f, N]
    n_tx = dev.config.n_tx
    for t in range(n_tx):
        p = dev.dipole_moments(x, source=t)  # [b, f, N], full N x N solve
        for r in range(dev.config.n_rx):
            i = n_tx + r
            dense = 2 * (load[:, t] * load[:, i]).sqrt() * p[..., i]
            assert torch.allclose(s[:, r, t], dense, rtol=1e-10, atol=1e-13)


def test_output_is_gain_times_magnitude_link_major():
    dev = cavity(n_tx=1, n_rx=2, n_out=10, seed=4)
    x = configs(5)
    y = dev(x)
    s = dev.transfer(x)  # [b, 2, 1, 5]
    assert y.shape == (5, 10)
    assert torch.allclose(y, dev.gain * s.abs().flatten(1), rtol=1e-12)
    assert torch.allclose(y[:, 5:], dev.gain * s[:, 1, 0].abs(), rtol=1e-12)


# -- reciprocity -------------------------------------------------------------------------


def test_reciprocity_swapping_source_and_probe():
    dev = cavity(n_tx=2, n_rx=3, n_out=12, seed=5)
    x = configs(6)
    forward = dev.transfer(x)  # [b, rx, tx, f]
    backward = dev.transfer(x, reverse=True)  # [b, tx, rx, f]
    assert forward.is_complex()
    assert torch.allclose(backward.transpose(1, 2), forward, rtol=1e-11, atol=1e-14)


def test_reciprocity_swapping_the_antennas_positions():
    """Two separately built cavities (the dipoles in another order): identical complex S21."""
    a, b = [[0.4, -0.3]], [[-0.8, 0.7]]
    one = cavity(tx_positions=a, rx_positions=b, seed=6)
    two = cavity(tx_positions=b, rx_positions=a, seed=6)
    assert torch.equal(one.positions[2:], two.positions[2:])  # same walls, scatterers, surface
    x = configs(6)
    s1, s2 = one.transfer(x), two.transfer(x)
    assert torch.allclose(s1, s2, rtol=1e-11, atol=1e-14)
    assert torch.equal(one(x), one(x))


# -- nonlinearity ------------------------------------------------------------------------


def _pair_interaction(dev, x0, j, k, level=1.0):
    """Second difference of the complex transfer under flipping features j and k."""
    xj, xk, xjk = x0.clone(), x0.clone(), x0.clone()
    xj[:, j] = level
    xk[:, k] = level
    xjk[:, [j, k]] = level
    s = [dev.transfer(v)[:, 0, 0] for v in (x0, xj, xk, xjk)]
    single = (s[1] - s[0]).abs().mean() + (s[2] - s[0]).abs().mean()
    pair = (s[3] - s[1] - s[2] + s[0]).abs().mean()
    return pair / single


def test_multiple_scattering_makes_the_response_nonlinear_in_the_configuration():
    dev = cavity(seed=7)
    x0 = torch.zeros(1, 8, dtype=torch.float64)
    ratio = _pair_interaction(dev, x0, 1, 5)
    assert ratio > 0.05  # the complex field is not additive in the element states
    e = torch.eye(8, dtype=torch.float64)
    y = [dev(v) for v in (x0, x0 + e[1], x0 + e[5], x0 + e[1] + e[5])]
    assert (y[3] - y[1] - y[2] + y[0]).abs().max() > 0.05 * y[0].abs().max()
    # weak elements (alpha ~ chi^2): single flips ~ chi^2, the pair interaction ~ chi^4, so
    # their ratio falls as chi^2 (the Born limit, where the field is additive)
    assert _pair_interaction(cavity(seed=7, ms_chi=0.06), x0, 1, 5) < ratio / 20
    r2, r1 = (_pair_interaction(cavity(seed=7, ms_chi=c), x0, 1, 5) for c in (0.02, 0.01))
    assert r2 / r1 == pytest.approx(4.0, rel=0.1)


# -- the input domain --------------------------------------------------------------------


def test_non_level_input_is_rejected_naming_the_levels():
    dev = cavity()
    x = configs(3)
    x[1, 4] = 1.5
    with pytest.raises(ValueError) as e:
        dev(x)
    msg = str(e.value)
    assert "sim:microwave" in msg and "input[1, 4]" in msg and "levels {0, 1, 2, 3}" in msg
    for bad in (-1.0, 4.0):
        with pytest.raises(ValueError, match="levels"):
            dev(torch.full((1, 8), bad))
    assert dev.accounting.samples == 0


def test_clip_snaps_to_the_nearest_level():
    x = configs(4)
    noisy = x + 0.3 * (torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) - 0.5)
    noisy[0, 0] = 7.0  # far out of range: snaps to 3
    ref = x.clone()
    ref[0, 0] = 3.0
    assert torch.equal(cavity(clip=True)(noisy), cavity()(ref))


@pytest.mark.parametrize("epf", [1, 2])
def test_the_four_levels_are_four_distinct_states(epf):
    dev = cavity(elements_per_feature=epf, seed=8)
    assert dev.n_ms == 8 * epf
    x = torch.zeros(4, 8, dtype=torch.float64)
    x[:, 2] = torch.arange(4.0)
    y = dev(x)
    diffs = (y[:, None] - y[None]).abs().amax(-1) + torch.eye(4)
    assert diffs.min() > 1e-3
    res = dev.element_resonances(x)
    states = torch.tensor(dev.config.ms_states, dtype=torch.float64)
    spread = dev.ms_spread
    if epf == 2:  # level = 2 b_hi + b_lo: (off, off), (off, on), (on, off), (on, on)
        bits = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=torch.long)
        assert torch.allclose(res[:, 4:6], states[bits] * spread[4:6])
    else:
        assert torch.allclose(res[:, 2], states * spread[2])


# -- seeding -----------------------------------------------------------------------------


def test_same_seed_same_cavity_different_seed_different_cavity():
    x = configs(5)
    a, b, c = cavity(seed=11), cavity(seed=11), cavity(seed=12)
    assert torch.equal(a.positions, b.positions) and a.gain == b.gain
    assert torch.equal(a(x), b(x))
    assert a.positions.shape != c.positions.shape or (a.positions - c.positions).abs().max() > 0.1
    assert not torch.allclose(a(x), c(x), rtol=0.05)


def test_output_noise_is_seeded():
    kw = {"seed": 13, "noise": [{"kind": "readout", "sigma": 0.05}]}
    x = configs(4)
    a, b = cavity(**kw), cavity(**kw)
    ya, yb = a(x), b(x)
    assert torch.equal(ya, yb)
    assert not torch.equal(a(x), ya)  # the stream moves on
    clean = cavity(seed=13)(x)
    assert 0.01 < (ya - clean).std() < 0.1
    state = a.state_dict()
    y1 = a(x)
    a.load_state_dict(state)
    assert torch.equal(a(x), y1)


# -- contract: shapes, dtypes, gradients, accounting --------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_dtype_and_no_grad_on_the_black_box_path(device, dtype):
    dev = cavity(seed=14)
    x = configs(5, dtype=dtype, device=device).requires_grad_(True)
    y = dev(x)
    assert y.shape == (5, 6) and y.dtype == dtype and y.device == x.device
    assert not y.requires_grad and y.grad_fn is None
    ref = dev(configs(5)).cpu()
    tol = 1e-3 if dtype == torch.float32 else 1e-12
    assert torch.allclose(y.detach().cpu().double(), ref, rtol=tol)
    assert torch.isfinite(y).all() and (y >= 0).all()


def test_batch_and_chunking_do_not_change_the_answer():
    x = configs(11)
    batched = cavity(seed=15)(x)
    chunked = cavity(seed=15, chunk=3)(x)
    single = torch.cat([cavity(seed=15)(x[i : i + 1]) for i in range(3)])
    assert torch.allclose(batched, chunked, rtol=1e-12)
    assert torch.allclose(batched[:3], single, rtol=1e-12)


def test_two_bit_elements_have_a_true_gradient():
    dev = cavity(elements_per_feature=1, seed=16)
    x = configs(2).requires_grad_(True)
    y = dev.forward_with_grad(x)
    assert y.requires_grad
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(0), dtype=y.dtype)
    (y * w).sum().backward()
    assert x.grad.abs().max() > 0
    # finite difference along the relaxation (levels interpolate linearly): central, inside 1..2
    x1 = torch.ones(1, 8, dtype=torch.float64, requires_grad=True)
    (dev.forward_with_grad(x1) * w[:1]).sum().backward()
    h = 1e-6
    e = torch.zeros(1, 8, dtype=torch.float64)
    e[0, 3] = 1.0
    with torch.no_grad():
        plus = (dev._measure(x1 + h * e) * w[:1]).sum()
        minus = (dev._measure(x1 + 0.5 * h * e) * w[:1]).sum()
    fd = (plus - minus) / (0.5 * h)
    assert x1.grad[0, 3].item() == pytest.approx(fd.item(), rel=1e-4, abs=1e-8)


def test_one_bit_elements_have_a_zero_gradient_but_run():
    dev = cavity(seed=17)
    x = configs(3).requires_grad_(True)
    y = dev.forward_with_grad(x)
    assert torch.allclose(y, dev(x.detach()), rtol=1e-12)
    y.sum().backward()
    assert x.grad is not None and torch.equal(x.grad, torch.zeros_like(x))


# -- solver = "flips": the Woodbury update of the two reference states ---------------------
_PERTURBED = [{"kind": "drift", "sigma": 2.0}, {"kind": "sudden", "at": 1, "action": "move"},
              {"kind": "sudden", "at": 2, "action": "flip"}]


@pytest.mark.parametrize("kw", [{}, {"n_tx": 2, "n_rx": 2, "n_out": 12}, {"chunk": 3},
                                {"perturbations": _PERTURBED}])
def test_the_flips_solver_gives_the_dense_answer(kw):
    dense, flips = cavity(seed=7, **kw), cavity(seed=7, solver="flips", **kw)
    for d in (dense, flips):
        d.advance(3)  # a no-op without perturbations; drift, a moved scatterer, flipped elements
    x = configs(11)
    x[0], x[1], x[2] = 0.0, 3.0, 0.0  # every element at a reference state, then a single flip
    x[2, 5] = 1.0
    for reverse in (False, True):
        want = dense.transfer(x, reverse=reverse)
        assert torch.allclose(flips.transfer(x, reverse=reverse), want, rtol=1e-10, atol=1e-13)
        single = flips.transfer(x.float(), reverse=reverse).to(want.dtype)  # complex64
        assert ((single - want).abs() / want.abs()).max() < 1e-3
    assert torch.allclose(flips.transfer(x[:2]), dense.transfer(x[:2]), rtol=1e-10, atol=1e-13)


def test_the_flips_solver_keeps_the_zero_gradient_of_one_bit_elements():
    dev = cavity(seed=17, solver="flips")
    x = configs(3).requires_grad_(True)
    y = dev.forward_with_grad(x)
    assert torch.allclose(y, cavity(seed=17)(x.detach()), rtol=1e-10)
    y.sum().backward()
    assert x.grad is not None and torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("kw, words", [
    ({"solver": "lu"}, ["unknown solver 'lu'", "dense", "flips"]),
    ({"solver": "flips", "elements_per_feature": 1}, ["flips", "elements_per_feature = 2"]),
    ({"solver": "flips", "ms_states": (1.0, 1.0)}, ["flips", "two different element states"]),
])
def test_a_solver_that_cannot_apply_is_refused_in_one_line(kw, words):
    with pytest.raises(ValueError) as e:
        cavity(**kw)
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words)


def test_spec_and_accounting():
    dev = cavity(switch_time_s=2e-4, measure_time_s=8e-4, source_power_w=1e-3, bias_power_w=0.5)
    spec = dev.spec
    assert (spec.n_in, spec.n_out, spec.domain.levels) == (8, 6, (0.0, 1.0, 2.0, 3.0))
    assert spec.time_per_query_s == pytest.approx(1e-3)
    assert spec.energy_per_query_j == pytest.approx(1e-3 * 8e-4 + 0.5 * 1e-3)
    dev(configs(7))
    assert dev.accounting.samples == 7 and dev.accounting.calls == 1
    assert dev.accounting.device_time_s == pytest.approx(7e-3)


# -- passivity ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"wall_gamma": 0.0, "ms_gamma": 0.0, "scatterer_gamma": 0.0},  # lossless but the ports
        {"elements_per_feature": 1, "antenna_chi": 1.0, "n_tx": 2, "n_out": 12},
    ],
)
def test_passive_power_balance_and_transmission_bound(kw):
    """Supplied = absorbed + radiated, both >= 0, hence |s| <= 1 (derivation in the module)."""
    dev = cavity(**{"seed": 18, "n_out": 12, "f_min_ghz": 4.5, "f_max_ghz": 6.0, **kw})
    x = configs(16)
    for src in range(dev.config.n_tx):
        pb = dev.power_balance(x, source=src)
        supplied = pb["supplied"]
        assert torch.allclose(supplied, pb["absorbed"] + pb["radiated"], rtol=1e-9, atol=1e-12)
        assert (pb["absorbed"] > 0).all() and (pb["radiated"] >= -1e-12).all()
    s = dev.transfer(configs(200, seed=1)).abs()
    assert s.max() <= 1.0
    assert s.max() > 0.05  # the bound is not trivially far away


def test_the_bound_is_nearly_reached_when_only_the_ports_absorb():
    """Lossless walls, scatterers and metasurface: at some frequency and configuration a
    cavity mode couples both matched ports and |s| comes close to 1 (never above)."""
    lossless = {"wall_gamma": 0.0, "ms_gamma": 0.0, "scatterer_gamma": 0.0}
    dev = cavity(seed=18, n_out=200, f_min_ghz=4.5, f_max_ghz=6.0, **lossless)
    s = dev.transfer(configs(20)).abs()
    assert 0.9 < s.max() <= 1.0
    lossy = cavity(seed=18, n_out=200, f_min_ghz=4.5, f_max_ghz=6.0)
    assert lossy.transfer(configs(20)).abs().max() < s.max()


def test_a_closed_cavity_radiates_little():
    """Dense walls confine the field: most supplied power ends in the loads, not outside."""
    dev = cavity(seed=19)
    pb = dev.power_balance(configs(4))
    assert (pb["radiated"] / pb["supplied"]).mean() < 0.15
    open_ = cavity(seed=19, walls=False)
    pb = open_.power_balance(configs(4))
    assert (pb["radiated"] / pb["supplied"]).mean() > 0.3


# -- usefulness as a physical layer --------------------------------------------------------


def test_default_outputs_vary_across_configurations():
    dev = MetasurfaceCavity()  # the defaults: 20 features, 40 one-bit elements, 20 frequencies
    assert (dev.spec.n_in, dev.spec.n_out, dev.n_ms) == (20, 20, 40)
    y = dev(configs(200, n=20))
    cv = y.std(0) / y.mean(0)
    assert cv.min() > 0.1, cv
    assert 0.5 < y.mean() < 2.0  # gain scales the outputs to order 1
    corr = torch.corrcoef(y.T)
    assert (corr - torch.eye(20)).abs().max() < 0.98  # the frequencies are not redundant


# -- factory, description, plots, errors --------------------------------------------------


def test_factory_and_description_rebuild_the_same_cavity():
    x = configs(3)
    a = make_device("sim:microwave", n_in=8, n_out=6, cavity_radius=2.0, seed=20)
    b = cavity(seed=20)
    assert torch.equal(a(x), b(x))
    d = b.describe()
    assert d["kind"] == "sim:microwave"
    c = make_device(d)
    assert torch.equal(c(x), b(x))


def test_plot_spectra_and_geometry():
    from matplotlib.figure import Figure

    dev = cavity(seed=21)
    fig = Figure()
    ax1, ax2 = fig.subplots(1, 2)
    dev.plot_spectra(ax1, n=3)
    assert len(ax1.lines) == 3
    assert len(ax1.lines[0].get_xdata()) == dev.n_freq
    dev.plot_spectra(ax2, configs(2))
    assert len(ax2.lines) == 2
    dev.plot_geometry(ax1)
    assert len(ax1.collections) >= 4


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"n_out": 7, "n_rx": 2}, ["n_out=7", "n_tx * n_rx = 2"]),
        ({"elements_per_feature": 3}, ["elements_per_feature", "3"]),
        ({"ms_states": (1.0, 1.1, 1.2)}, ["ms_states", "2"]),
        ({"elements_per_feature": 1, "ms_states": (1.0, 1.1)}, ["ms_states", "4"]),
        ({"f_min_ghz": 6.0, "f_max_ghz": 5.0}, ["f_min_ghz"]),
        ({"wall_chi": 0.0}, ["wall_chi"]),
        ({"ms_gamma": -0.1}, ["ms_gamma"]),
        ({"tx_positions": [[0.0, 0.0], [1.0, 1.0]]}, ["tx_positions", "1"]),
        ({"n_in": 80}, ["metasurface", "cavity_radius"]),
        ({"tx_positions": [[0.0, 0.0]], "rx_positions": [[0.0, 0.01]]}, ["tx", "rx", "apart"]),
        ({"noise": [{"kind": "glitter"}]}, ["glitter"]),
        ({"cavity_radius": 0.8}, ["cavity_radius=0.8"]),
    ],
)
def test_bad_configuration_is_a_clear_value_error(kw, words):
    with pytest.raises(ValueError) as e:
        cavity(**kw)
    for w in words:
        assert w in str(e.value)


# -- typed parameters, tensors that follow .to() ------------------------------------------


def test_typed_config_and_description_build_the_same_cavity():
    dev = MetasurfaceCavity(MicrowaveConfig(n_in=8, n_out=6, cavity_radius=2.0, seed=4))
    again = make_device(dev.describe())
    x = torch.randint(0, 4, (3, 8)).double()
    assert torch.equal(dev(x), again(x))
    with pytest.raises(TypeError, match="n_freq"):
        MetasurfaceCavity.from_description(n_freq=3)


def test_apply_to_tensors_converts_the_dipoles_and_clears_the_cache():
    dev = cavity(seed=5)
    x = torch.randint(0, 4, (3, 8), generator=torch.Generator().manual_seed(0)).float()
    before = dev(x)
    assert dev._cache
    dev.apply_to_tensors(lambda t: t.to(torch.float32) if t.is_floating_point() else t)
    assert not dev._cache
    assert dev.positions.dtype == dev.nu.dtype == dev.chi.dtype == torch.float32
    after = dev(x)
    assert after.dtype == torch.float32
    assert torch.allclose(after, before, rtol=1e-3, atol=1e-4)
    dev.apply_to_tensors(lambda t: t.to(torch.float64) if t.is_floating_point() else t)
    assert dev.positions.dtype == torch.float64 and torch.isfinite(dev(x.double())).all()


@pytest.mark.parametrize("device", DEVICES)
def test_apply_to_tensors_moves_a_perturbed_cavity(device):
    kw = {"seed": 6, "perturbations": [{"kind": "drift", "sigma": 2.0},
                                       {"kind": "sudden", "at": 1, "action": "move"},
                                       {"kind": "sudden", "at": 2, "action": "flip"}]}
    ref, dev = cavity(**kw), cavity(**kw)
    dev.apply_to_tensors(lambda t: t.to(device))
    assert dev.positions.device.type == torch.device(device).type
    for d in (ref, dev):
        d.advance(3)
    x = torch.randint(0, 4, (3, 8), generator=torch.Generator().manual_seed(1)).double()
    assert torch.allclose(dev(x.to(device)).cpu(), ref(x), rtol=1e-9, atol=1e-12)
