"""Physics of the optical multimode cavity simulator (``sim:optical``)."""

import pytest
import torch

from physnn.core import make_device
from physnn.sim import optical
from physnn.sim.optical import OpticalCavity, OpticalConfig, haar_unitary

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def cavity(**kw):
    """n_in=16 fills a 4x4 SLM; with a 4x4 camera the cavity has exactly 16 modes."""
    return OpticalCavity.from_description(**{"n_in": 16, "camera_shape": (4, 4), **kw})


def inputs(b=8, n=16, seed=0, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, n, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)


def power(field):
    return field.abs().square().sum(-1)


# -- energy conservation ----------------------------------------------------------------


def test_square_geometry_has_as_many_modes_as_pixels():
    dev = cavity()
    assert dev.config.slm_shape == (4, 4)
    assert dev.config.n_modes == 16 and dev.n_slm == 16 and dev.n_cam == 16
    assert dev.transmission.shape == (16, 16)


def test_transmission_matrix_is_unitary():
    t = cavity(seed=3).transmission
    eye = torch.eye(16, dtype=t.dtype)
    assert torch.allclose(t.conj().T @ t, eye, atol=1e-12)
    assert torch.allclose(t @ t.conj().T, eye, atol=1e-12)


def test_haar_unitary_is_unitary_and_seeded():
    u = haar_unitary(9, torch.Generator().manual_seed(1))
    assert torch.allclose(u.conj().T @ u, torch.eye(9, dtype=u.dtype), atol=1e-12)
    assert torch.equal(u, haar_unitary(9, torch.Generator().manual_seed(1)))


def test_a_remembered_unitary_is_the_fresh_draw_and_moves_the_generator_alike():
    """Large unitaries come from an in-process cache; a hit must equal a fresh draw bit for
    bit, leave the generator where the draw would, and survive a caller editing its copy."""
    n = optical._HAAR_CACHE.min_n
    optical._HAAR_CACHE.clear()
    fresh_gen = torch.Generator().manual_seed(5)
    fresh = optical._draw_haar(n, fresh_gen, torch.complex128)
    after = torch.randn(3, generator=fresh_gen)
    for _ in range(2):  # a miss, then a hit
        gen = torch.Generator().manual_seed(5)
        u = haar_unitary(n, gen)
        assert torch.equal(u, fresh) and torch.equal(torch.randn(3, generator=gen), after)
        u.zero_()  # a caller changing its matrix in place changes no later draw
    assert len(optical._HAAR_CACHE._entries) == 1
    other = haar_unitary(n, torch.Generator().manual_seed(6))
    assert not torch.equal(other, fresh) and len(optical._HAAR_CACHE._entries) == 2


def test_the_unitary_cache_stays_within_its_bytes():
    cache = optical._HaarCache(min_n=8, max_bytes=3 * 300**2 * 16)
    for seed in range(5):
        cache.get(300, torch.Generator().manual_seed(seed), torch.complex128)
    assert len(cache._entries) == 3 and cache.nbytes <= cache.max_bytes
    kept = [cache.get(300, torch.Generator().manual_seed(s), torch.complex128) for s in (2, 3, 4)]
    assert len(cache._entries) == 3 and all(torch.allclose(k.conj().T @ k, torch.eye(300,
        dtype=k.dtype), atol=1e-10) for k in kept)


@pytest.mark.parametrize("encoding", ["phase", "amplitude"])
def test_propagation_conserves_power(encoding):
    dev = cavity(encoding=encoding, seed=1)
    x = inputs(32)
    field_in = dev.slm_field(x)
    field_out = dev.propagate(field_in)
    assert field_out.shape == (32, 16)
    p_in, p_out = power(field_in), power(field_out)
    assert torch.allclose(p_out, p_in, rtol=0, atol=1e-5)
    if encoding == "phase":
        assert torch.allclose(p_in, torch.ones(32, dtype=torch.float64), atol=1e-12)
    else:
        assert torch.allclose(p_in, x.square().sum(-1) / 16, atol=1e-12)
    # and the device output (gain = camera pixels) carries the same total
    assert torch.allclose(dev(x).sum(-1), 16 * p_in, atol=1e-5)


def test_phase_encoding_conserves_power_with_background_pixels():
    dev = cavity(n_in=11, slm_shape=(4, 4), background=0.3, seed=2)
    field_in = dev.slm_field(inputs(8, n=11))
    assert torch.allclose(power(dev.propagate(field_in)), torch.ones(8, dtype=torch.float64))


@pytest.mark.parametrize(
    "kw", [{"n_modes": 32}, {"camera_shape": (2, 2)}, {"camera_shape": (3, 4), "n_modes": 20}]
)
def test_unobserved_modes_lose_power(kw):
    dev = cavity(seed=5, **kw)
    x = inputs(64)
    field_in = dev.slm_field(x)
    p_in, p_out = power(field_in), power(dev.propagate(field_in))
    assert (p_out <= p_in + 1e-12).all()
    assert (p_out.mean() / p_in.mean()) < 0.95
    sv = torch.linalg.svdvals(dev.transmission)
    assert sv.max() <= 1 + 1e-12


# -- square-law detection ---------------------------------------------------------------


@pytest.mark.parametrize("gain", [None, 2.5])
def test_output_is_gain_times_intensity(gain):
    dev = cavity(gain=gain, seed=4)
    x = inputs(6)
    expected_gain = 16.0 if gain is None else gain
    assert dev.gain == expected_gain
    expected = expected_gain * dev.propagate(dev.slm_field(x)).abs().square()
    assert torch.allclose(dev(x), expected, rtol=1e-12, atol=0)
    # explicitly: camera pixel i = gain * |sum_j T_ij E_j|^2
    e = dev.slm_field(x)[0]
    pixel3 = expected_gain * abs(sum(dev.transmission[3, j] * e[j] for j in range(16))) ** 2
    assert dev(x)[0, 3].item() == pytest.approx(pixel3.item(), rel=1e-10)


def test_amplitude_encoding_is_quadratic_with_a_zero_background():
    dev = cavity(n_in=13, slm_shape=(4, 4), encoding="amplitude", seed=6)  # 3 background px
    x = 0.5 * inputs(6, n=13)
    assert torch.allclose(dev(2 * x), 4 * dev(x), rtol=1e-10, atol=1e-12)
    # a non-zero background is a reference field: scaling the inputs no longer scales by 4
    lit = cavity(n_in=13, slm_shape=(4, 4), encoding="amplitude", background=0.5, seed=6)
    assert not torch.allclose(lit(2 * x), 4 * lit(x), rtol=1e-3)
    assert torch.allclose(lit(torch.zeros(1, 13)).sum(), torch.tensor(3 * 0.25, dtype=torch.float32))


def test_amplitude_readout_is_the_square_root_of_intensity():
    x = inputs(6)
    intensity = cavity(seed=8)(x)
    amplitude = cavity(seed=8, readout="amplitude")(x)
    assert (intensity > 0).all()
    assert torch.allclose(amplitude, intensity.sqrt(), rtol=1e-10)
    assert "amplitude" in cavity(readout="amplitude").spec.output_units


# -- saturation -------------------------------------------------------------------------


def test_hard_camera_saturation_caps_the_pixels():
    x = inputs(32)
    ideal = cavity(seed=9)(x)
    level = 1.5
    sat = cavity(seed=9, camera=[{"kind": "saturation", "level": level, "mode": "hard"}])(x)
    assert (ideal > level).any()  # there is something to saturate
    assert sat.max() <= level
    below = ideal <= level
    assert torch.equal(sat[below], ideal[below])
    assert torch.all(sat[~below] == level)


def test_soft_camera_saturation_is_monotone_and_bounded():
    level = 0.7
    kw = {"encoding": "amplitude", "seed": 10}
    dev = cavity(camera=[{"kind": "saturation", "level": level, "mode": "soft"}], **kw)
    ideal = cavity(**kw)
    x0 = 0.2 + 0.8 * inputs(1)
    t = torch.linspace(0.05, 1.0, 40, dtype=torch.float64).unsqueeze(1)
    y = dev(t * x0)  # each pixel's intensity grows as t^2
    assert (y.diff(dim=0) > 0).all()
    assert (y < level).all() and (y >= 0).all()
    assert torch.allclose(y, level * torch.tanh(ideal(t * x0) / level), rtol=1e-12)
    assert (ideal(t * x0).max() > 2 * level).item()  # deep into saturation at the top


# -- pooling ----------------------------------------------------------------------------


def test_pooling_averages_two_by_two_blocks():
    x = inputs(5)
    full = cavity(seed=11)(x)
    dev = cavity(seed=11, pool=2)
    assert dev.spec.n_out == 4
    pooled = dev(x)
    assert pooled.shape == (5, 4)
    blocks = full.reshape(5, 2, 2, 2, 2).mean(dim=(2, 4)).reshape(5, 4)
    assert torch.allclose(pooled, blocks, rtol=1e-12)
    # top-left output is the mean of camera pixels (0,0), (0,1), (1,0), (1,1)
    assert pooled[0, 0].item() == pytest.approx(full[0, [0, 1, 4, 5]].mean().item())


def test_overlapping_pooling_with_a_stride():
    x = inputs(3)
    full = cavity(seed=12)(x).reshape(3, 4, 4)
    dev = cavity(seed=12, pool=2, pool_stride=1)
    assert dev.spec.n_out == 9
    windows = full.unfold(1, 2, 1).unfold(2, 2, 1).mean(dim=(-1, -2)).reshape(3, 9)
    assert torch.allclose(dev(x), windows, rtol=1e-12)


# -- nonlinearity and seeding -----------------------------------------------------------


def test_phase_encoding_is_nonlinear():
    dev = cavity(seed=13)
    a = 0.5 * inputs(4, seed=1)
    b = 0.5 * inputs(4, seed=2)
    zero = torch.zeros_like(a)
    lhs, rhs = dev(a + b), dev(a) + dev(b) - dev(zero)
    assert (lhs - rhs).abs().max() > 0.1 * lhs.abs().max()


def test_transmission_matrix_is_fixed_by_the_seed():
    assert torch.equal(cavity(seed=21).transmission, cavity(seed=21).transmission)
    other = cavity(seed=22).transmission
    assert (other - cavity(seed=21).transmission).abs().max() > 0.1
    x = inputs(3)
    assert torch.equal(cavity(seed=21)(x), cavity(seed=21)(x))
    assert not torch.allclose(cavity(seed=21)(x), cavity(seed=22)(x))


def test_factory_and_class_build_the_same_cavity():
    x = inputs(3)
    a = make_device("sim:optical", n_in=16, camera_shape=(4, 4), seed=5)
    assert torch.equal(a(x), cavity(seed=5)(x))


# -- batching, dtype, torch device ------------------------------------------------------


@pytest.mark.parametrize("pool", [1, 2])
def test_batch_equals_sample_by_sample(pool):
    dev = cavity(seed=14, pool=pool)
    x = inputs(9)
    batched = dev(x)
    single = torch.cat([dev(x[i : i + 1]) for i in range(9)])
    assert torch.allclose(batched, single, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_runs_on_the_input_dtype_and_device(device, dtype):
    dev = cavity(seed=15, pool=2, camera=[{"kind": "readout", "sigma": 0.0}])
    x = inputs(4, dtype=dtype, device=device)
    y = dev(x)
    assert y.dtype == dtype and y.device == x.device
    assert y.shape == (4, 4)
    ref = cavity(seed=15, pool=2)(inputs(4, dtype=torch.float64))
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    assert torch.allclose(y.cpu().double(), ref, rtol=tol, atol=tol)
    yg = dev.forward_with_grad(x.clone().requires_grad_(True))
    assert yg.dtype == dtype and yg.device == x.device


@pytest.mark.parametrize("device", DEVICES)
def test_noisy_camera_runs_on_the_input_device(device):
    dev = cavity(seed=16, camera=[{"kind": "shot", "photons": 100.0}, {"kind": "readout"}])
    x = inputs(4, device=device)
    y = dev(x)
    assert y.device == x.device and torch.isfinite(y).all()
    assert not torch.equal(y, dev(x))


# -- configuration errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"n_modes": 8}, ["n_modes=8", "16"]),
        ({"n_in": 16, "slm_shape": (4, 4), "camera_shape": (5, 5), "n_modes": 20}, ["n_modes", "25"]),
        ({"encoding": "polarisation"}, ["encoding", "polarisation"]),
        ({"readout": "phase"}, ["readout", "'phase'"]),
        ({"slm_shape": (3, 5)}, ["slm_shape", "15", "n_in=16"]),
        ({"n_in": 0}, ["n_in"]),
        ({"pool": 5}, ["pool=5", "(4, 4)"]),
        ({"pool": 0}, ["pool=0"]),
    ],
)
def test_bad_configuration_is_a_clear_value_error(kw, words):
    with pytest.raises(ValueError) as e:
        cavity(**kw)
    for w in words:
        assert w in str(e.value)


def test_unknown_parameter_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="n_pixels"):
        cavity(n_pixels=3)
    with pytest.raises(ValueError, match="bad parameters for device 'sim:optical'.*n_pixels"):
        make_device("sim:optical", n_pixels=3)


def test_typed_config_and_description_build_the_same_cavity():
    x = inputs(3)
    dev = OpticalCavity(OpticalConfig(n_in=16, camera_shape=(4, 4), seed=5, pool=2))
    again = make_device(dev.describe())
    assert torch.equal(dev(x), again(x))
    assert torch.equal(OpticalCavity()(torch.full((1, 74), 0.5)), make_device("sim:optical")(
        torch.full((1, 74), 0.5)))


# -- tensors follow .to() ---------------------------------------------------------------


def _double(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float64) if t.is_floating_point() else t


def test_apply_to_tensors_moves_the_transmission_and_clears_the_cache():
    dev = cavity(seed=17)
    x = inputs(4, dtype=torch.float32)
    before = dev(x)
    assert dev._tm_cache
    dev.apply_to_tensors(lambda t: t.to(torch.complex64) if t.is_complex() else t)
    assert not dev._tm_cache and dev.transmission.dtype == torch.complex64
    after = dev(x)
    assert after.dtype == torch.float32
    assert torch.allclose(after, before, rtol=1e-5, atol=1e-6)
    dev.apply_to_tensors(_double)  # complex tensors are not floating point: unchanged
    assert dev.transmission.dtype == torch.complex64


@pytest.mark.parametrize("device", DEVICES)
def test_apply_to_tensors_keeps_the_perturbed_structure_consistent(device):
    kw = {"seed": 18, "perturbations": [{"kind": "drift", "sigma": 0.5},
                                        {"kind": "sudden", "at": 2, "action": "redraw"}]}
    ref, dev = cavity(**kw), cavity(**kw)
    dev.apply_to_tensors(lambda t: t.to(device))
    assert dev.transmission.device.type == torch.device(device).type
    for d in (ref, dev):
        d.advance(3)
    x = inputs(3)
    assert torch.allclose(dev(x.to(device)).cpu(), ref(x), rtol=1e-10, atol=1e-12)


# -- arithmetic = "fast": the same physics, fewer operations --------------------------------


@pytest.mark.parametrize("encoding", ["phase", "amplitude"])
@pytest.mark.parametrize("kw", [{}, {"n_in": 5, "slm_shape": (4, 4), "background": 0.3},
                                {"pool": 2, "readout": "amplitude", "gain": 3.0}])
def test_fast_arithmetic_measures_what_exact_does(encoding, kw):
    kw = {"seed": 19, "encoding": encoding, **kw}
    exact, fast = cavity(**kw), cavity(arithmetic="fast", **kw)
    x = inputs(12, n=exact.spec.n_in)
    assert torch.allclose(fast(x), exact(x), rtol=1e-10, atol=1e-12)
    x32 = x.float()
    assert torch.allclose(fast(x32), exact(x32), rtol=1e-4, atol=1e-5)
    xg = x.clone().requires_grad_(True)
    (g_fast,) = torch.autograd.grad(fast.forward_with_grad(xg).sum(), xg)
    (g_exact,) = torch.autograd.grad(exact.forward_with_grad(xg).sum(), xg)
    assert torch.allclose(g_fast, g_exact, rtol=1e-8, atol=1e-10)


def test_fast_background_follows_a_changed_transmission_matrix():
    """The precomputed background is rebuilt on perturbations, .to() and in-place edits."""
    kw = {"n_in": 5, "slm_shape": (4, 4), "background": 0.7, "seed": 20}
    exact, fast = cavity(**kw), cavity(arithmetic="fast", **kw)
    x = inputs(6, n=5)
    assert torch.allclose(fast(x), exact(x), rtol=1e-10)
    for dev in (exact, fast):  # an in-place edit of the matrix (version counter)
        dev.transmission[:, 10] *= -1j
    assert torch.allclose(fast(x), exact(x), rtol=1e-10)
    for dev in (exact, fast):  # a new matrix
        dev.transmission = dev.transmission.roll(1, dims=1)
    assert torch.allclose(fast(x), exact(x), rtol=1e-10)
    drift = {**kw, "perturbations": [{"kind": "drift", "sigma": 0.5}]}
    exact, fast = cavity(**drift), cavity(arithmetic="fast", **drift)
    before = fast(x)
    for dev in (exact, fast):
        dev.advance(3)
    assert not torch.allclose(fast(x), before, rtol=1e-3)
    assert torch.allclose(fast(x), exact(x), rtol=1e-10)


def test_unknown_arithmetic_is_refused():
    with pytest.raises(ValueError, match="arithmetic must be 'exact' or 'fast'"):
        cavity(arithmetic="approximate")


# -- calls_of: one pass of the optics, the camera noise call by call ------------------------


@pytest.mark.parametrize("arithmetic", ["exact", "fast"])
def test_stacked_calls_measure_what_consecutive_calls_do(arithmetic):
    """7x7 camera, 5 rows a call: 245 normals a call, not a multiple of torch's block of 16."""
    camera = [{"kind": "saturation", "level": 4.0}, {"kind": "shot", "photons": 300.0},
              {"kind": "readout", "sigma": 0.05}, {"kind": "quantize", "bits": 8, "hi": 4.0}]
    kw = {"n_in": 12, "slm_shape": (4, 4), "camera_shape": (7, 7), "camera": camera,
          "seed": 21, "arithmetic": arithmetic}
    one, stacked, plain = cavity(**kw), cavity(**kw), cavity(**kw)
    x = inputs(15, n=12, dtype=torch.float32)
    want = torch.cat([one(x[i : i + 5]) for i in range(0, 15, 5)])
    with stacked.calls_of(5):
        got = stacked(x)
    assert torch.equal(got, want)
    assert not torch.equal(plain(x), want)  # a plain call of 15 rows draws other noise
    assert (stacked.accounting.samples, stacked.accounting.calls) == (15, 3)
    assert stacked(x[:5]).shape == (5, 49) and stacked.accounting.calls == 4  # block left


# -- the Gaussian shot-noise sampler (camera shot = "gaussian") ---------------------------


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("level", [0.004, 0.05, 1.0, 3.0])  # 8, 100, 2000, 6000 counts
def test_gaussian_shot_noise_has_the_poisson_mean_and_variance(level):
    from physnn.core.effects import ShotNoise

    photons, n = 2000.0, 400_000
    y = torch.full((n // 400, 400), level, dtype=torch.float64)
    out = ShotNoise(photons=photons, sampler="gaussian")(y, _gen(1))
    mean, var = level, level / photons  # in output units
    assert out.mean().item() == pytest.approx(mean, rel=4 * (var / n) ** 0.5 / mean)
    assert out.var().item() == pytest.approx(var, rel=0.02)
    counts = out * photons
    is_integer = torch.allclose(counts, counts.round(), atol=1e-6)
    assert is_integer == (level * photons < 20)  # exact Poisson below 20 counts only
    everywhere = ShotNoise(photons=photons, sampler="gaussian", exact_below=0.0)(y, _gen(1))
    assert everywhere.var().item() == pytest.approx(var, rel=0.02)
    assert not torch.allclose(everywhere * photons, (everywhere * photons).round(), atol=1e-6)


def test_gaussian_shot_noise_takes_the_readout_noise_into_its_draw():
    from physnn.core.effects import apply_effects, make_effects

    photons, sigma = 500.0, 0.03
    y = torch.tensor([0.01, 1.0], dtype=torch.float64).repeat(200_000, 1)  # 5 and 500 counts
    effects = make_effects([{"kind": "shot", "photons": photons, "sampler": "gaussian"},
                            {"kind": "readout", "sigma": sigma}])
    out = apply_effects(y, effects, _gen(2))
    assert torch.allclose(out.mean(0), y[0], atol=4e-4)
    want_var = y[0] / photons + sigma**2
    assert torch.allclose(out.var(0), want_var, rtol=0.02)
    plain = make_effects([{"kind": "shot", "photons": photons}, {"kind": "readout", "sigma": sigma}])
    assert torch.allclose(apply_effects(y, plain, _gen(2)).var(0), want_var, rtol=0.02)


def test_gaussian_shot_noise_passes_the_gradient_straight_through():
    from physnn.core.effects import ShotNoise

    y = torch.rand(8, 4, dtype=torch.float64, requires_grad=True)
    ShotNoise(photons=50.0, sampler="gaussian")(y, _gen()).sum().backward()
    assert torch.equal(y.grad, torch.ones_like(y))


@pytest.mark.parametrize("kw, words", [({"sampler": "normal"}, "sampler"),
                                       ({"exact_below": -1.0}, "exact_below")])
def test_bad_shot_sampler_is_refused(kw, words):
    from physnn.core.effects import make_effects

    with pytest.raises(ValueError, match=words):
        make_effects([{"kind": "shot", "photons": 10.0, **kw}])


def test_fast_camera_is_as_noisy_as_the_exact_one():
    """The fast options (arithmetic, Gaussian shot) keep the noise statistics of a camera."""
    camera = [{"kind": "shot", "photons": 200.0}, {"kind": "readout", "sigma": 0.05}]
    kw = {"seed": 22, "camera_shape": (4, 4)}
    exact = cavity(camera=camera, **kw)
    fast = cavity(arithmetic="fast", camera=[{**camera[0], "sampler": "gaussian"}, camera[1]], **kw)
    x = inputs(1).expand(20_000, -1)
    ye, yf = exact(x), fast(x)
    assert torch.allclose(yf.mean(0), ye.mean(0), rtol=0.01, atol=0.003)
    assert torch.allclose(yf.var(0), ye.var(0), rtol=0.06, atol=1e-4)


def test_validation_still_names_the_first_bad_entry():
    """The one-pass check lets good batches through; bad ones get the full message."""
    dev = cavity()
    x = inputs(4)
    assert dev.validate(x) is x
    for value, words in ((float("nan"), "not finite"), (float("inf"), "not finite"),
                         (1.5, "outside the allowed domain")):
        bad = x.clone()
        bad[2, 3] = value
        with pytest.raises(ValueError, match=r"input\[2, 3\].*" + words):
            dev.validate(bad)
    clipped = cavity(clip=True).validate(x * 2)
    assert clipped.max() == 1.0
