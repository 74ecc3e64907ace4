"""The device contract (validation, no autograd, accounting, lifecycle, seeding), the
non-idealities and the factory."""

import math
from pathlib import Path

import pytest
import torch

from physnn.core import (
    Device,
    DeviceSpec,
    Domain,
    NonIdealDevice,
    Quantization,
    ReadoutNoise,
    Saturation,
    ShotNoise,
    make_device,
    make_effects,
)
from physnn.sim.optical import OpticalCavity

SMALL = {"kind": "sim:optical", "n_in": 16, "camera_shape": (4, 4)}
NOISY_CAMERA = [{"kind": "shot", "photons": 200.0}, {"kind": "readout", "sigma": 0.05}]


def small(**kw):
    return make_device({**SMALL, **kw})


def noisy(seed=0, **kw):
    return make_device({**SMALL, "camera": NOISY_CAMERA, "seed": seed, **kw})


def inputs(b=4, n=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, n, generator=g, dtype=dtype)


class Echo(Device):
    """A minimal black box: output = 2 * input; records what reached the 'hardware'."""

    def __init__(self, domain=None, n_in=3, **kw):
        spec = DeviceSpec(
            name="test:echo",
            n_in=n_in,
            n_out=n_in,
            domain=domain or Domain(),
            time_per_query_s=0.25,
            energy_per_query_j=0.125,
        )
        super().__init__(spec, **kw)
        self.measured = []

    def _measure(self, x):
        self.measured.append(x.clone())
        return 2 * x


# -- validation ---------------------------------------------------------------------------


def test_non_tensor_input_is_a_type_error_naming_the_device():
    dev = small()
    with pytest.raises(TypeError, match="sim:optical") as e:
        dev([[0.5] * 16])
    assert "torch.Tensor" in str(e.value) and "list" in str(e.value)


@pytest.mark.parametrize("shape", [(16,), (2, 15), (2, 17), (2, 4, 4), (16, 1)])
def test_wrong_shape_is_rejected_with_shape_and_expected_width(shape):
    dev = small()
    with pytest.raises(ValueError) as e:
        dev(torch.full(shape, 0.5))
    msg = str(e.value)
    assert "sim:optical" in msg
    assert str(tuple(shape)) in msg
    assert "[batch, 16]" in msg
    assert dev.accounting.samples == 0 and dev.accounting.calls == 0


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_non_floating_dtype_is_rejected(dtype):
    dev = small()
    with pytest.raises(ValueError) as e:
        dev(torch.zeros(2, 16, dtype=dtype))
    msg = str(e.value)
    assert "sim:optical" in msg and str(dtype) in msg
    assert "torch.float32" in msg and "torch.float64" in msg


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("clip", [False, True])
def test_non_finite_input_names_the_index_and_domain(bad, clip):
    dev = small(clip=clip)  # clipping never hides a NaN or an Inf
    x = torch.full((3, 16), 0.5)
    x[1, 3] = bad
    x[2, 0] = bad  # a later offender: the first one (row-major) is reported
    with pytest.raises(ValueError) as e:
        dev(x)
    msg = str(e.value)
    assert "sim:optical" in msg
    assert "input[1, 3]" in msg and "input[2, 0]" not in msg
    assert "not finite" in msg
    assert "[0, 1]" in msg
    assert dev.accounting.samples == 0


@pytest.mark.parametrize("bad", [1.5, -0.25])
def test_out_of_domain_input_names_value_index_and_domain(bad):
    dev = small()
    x = torch.full((4, 16), 0.5)
    x[2, 5] = bad
    x[3, 1] = 7.0
    with pytest.raises(ValueError) as e:
        dev(x)
    msg = str(e.value)
    assert "sim:optical" in msg
    assert "input[2, 5]" in msg and f"{bad:g}" in msg
    assert "[0, 1]" in msg
    assert "2 entries out of domain" in msg
    assert "clip=True" in msg
    assert dev.accounting.samples == 0


def test_rejected_input_never_reaches_the_hardware():
    dev = Echo()
    for x in (torch.tensor([[0.1, 2.0, 0.3]]), torch.tensor([[0.1, math.nan, 0.3]])):
        with pytest.raises(ValueError):
            dev(x)
    assert dev.measured == []
    assert dev.accounting.calls == 0


def test_domain_edges_are_allowed():
    dev = Echo()
    x = torch.tensor([[0.0, 1.0, 0.5]])
    assert torch.equal(dev(x), 2 * x)


def test_clip_projects_instead_of_raising():
    x = inputs(3)
    x_out = x.clone()
    x_out[0, 0], x_out[1, 7], x_out[2, 15] = -3.0, 1.25, 40.0
    clipped = small(clip=True)(x_out)
    reference = small()(x_out.clamp(0.0, 1.0))
    assert torch.equal(clipped, reference)

    echo = Echo(clip=True)
    y = echo(torch.tensor([[-1.0, 0.5, 3.0]]))
    assert torch.equal(y, torch.tensor([[0.0, 1.0, 2.0]]))
    assert torch.equal(echo.measured[0], torch.tensor([[0.0, 0.5, 1.0]]))


def test_discrete_domain_rejects_a_value_off_the_levels():
    dev = Echo(domain=Domain(levels=(0, 1, 2, 3)))
    ok = torch.tensor([[0.0, 3.0, 2.0], [1.0, 1.0, 0.0]])
    assert torch.equal(dev(ok), 2 * ok)
    bad = ok.clone()
    bad[1, 2] = 1.5
    with pytest.raises(ValueError) as e:
        dev(bad)
    msg = str(e.value)
    assert "test:echo" in msg and "input[1, 2]" in msg and "1.5" in msg
    assert "levels {0, 1, 2, 3}" in msg


def test_discrete_domain_project_snaps_to_the_nearest_level():
    dom = Domain(levels=(3, 0, 1, 2))  # unsorted on purpose
    assert dom.levels == (0.0, 1.0, 2.0, 3.0) and (dom.lo, dom.hi) == (0.0, 3.0)
    x = torch.tensor([0.4, 0.6, 1.9, 2.2, -5.0, 10.0, 3.0])
    assert torch.equal(dom.project(x), torch.tensor([0.0, 1.0, 2.0, 2.0, 0.0, 3.0, 3.0]))

    dev = Echo(domain=dom, clip=True)
    y = dev(torch.tensor([[0.4, 2.6, 9.0]]))
    assert torch.equal(y, torch.tensor([[0.0, 6.0, 6.0]]))


def test_discrete_domain_accepts_float32_levels_that_are_not_representable():
    dev = Echo(domain=Domain(levels=(0.0, 1 / 3, 2 / 3, 1.0)))
    x = torch.tensor([[1 / 3, 2 / 3, 0.0]], dtype=torch.float32)
    assert torch.allclose(dev(x), 2 * x)


def test_domain_construction_errors():
    with pytest.raises(ValueError, match="lo < hi"):
        Domain(1.0, 0.0)
    with pytest.raises(ValueError, match="at least 2 levels"):
        Domain(levels=(1.0,))


def test_empty_batch_is_rejected():
    dev = small()
    with pytest.raises(ValueError) as e:
        dev(torch.zeros(0, 16))
    assert "sim:optical" in str(e.value) and "empty batch" in str(e.value)


# -- no autograd ------------------------------------------------------------------------


def test_call_never_joins_the_autograd_graph():
    dev = small()
    x = inputs(3).requires_grad_(True)
    with torch.enable_grad():
        y = dev(x)
    assert y.shape == (3, 16)
    assert not y.requires_grad and y.grad_fn is None
    assert x.grad is None


def test_forward_with_grad_gives_the_optical_gradient():
    dev = make_device({**SMALL, "n_in": 4, "camera_shape": (2, 2)})
    x = (0.2 + 0.6 * inputs(2, 4, dtype=torch.float64)).requires_grad_(True)
    y = dev.forward_with_grad(x)
    assert y.requires_grad
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # and it is the right gradient
    assert torch.autograd.gradcheck(dev.forward_with_grad, (x.detach().requires_grad_(True),))
    # the value equals the black-box output
    assert torch.allclose(y.detach(), dev(x.detach()))


def test_black_box_device_has_no_gradient():
    dev = Echo()
    assert dev.differentiable is False
    with pytest.raises(NotImplementedError, match="test:echo"):
        dev.forward_with_grad(torch.full((1, 3), 0.5, requires_grad=True))


# -- accounting -------------------------------------------------------------------------


def test_accounting_counts_samples_calls_time_and_energy():
    dev = Echo()
    dev(torch.full((3, 3), 0.5))
    dev(torch.full((5, 3), 0.5))
    a = dev.accounting
    assert (a.samples, a.calls) == (8, 2)
    assert a.device_time_s == 8 * 0.25
    assert a.energy_j == 8 * 0.125
    assert a.wall_time_s > 0


def test_optical_accounting_follows_its_spec():
    dev = small(frame_rate_hz=50.0, power_w=2e-3)
    spec = dev.spec
    assert spec.time_per_query_s == pytest.approx(1 / 50)
    assert spec.energy_per_query_j == pytest.approx(2e-3 / 50)
    t = e = 0.0
    for b in (7, 1, 4):
        dev(inputs(b))
        t += b * spec.time_per_query_s
        e += b * spec.energy_per_query_j
    dev.forward_with_grad(inputs(2))
    t += 2 * spec.time_per_query_s
    e += 2 * spec.energy_per_query_j
    a = dev.accounting
    assert (a.samples, a.calls) == (14, 4)
    assert a.device_time_s == pytest.approx(t, rel=1e-12)
    assert a.energy_j == pytest.approx(e, rel=1e-12)


# -- lifecycle --------------------------------------------------------------------------


def test_context_manager_opens_and_closes():
    dev = small()
    assert dev.is_open is False
    with dev as d:
        assert d is dev and dev.is_open is True
        d(inputs(1))
    assert dev.is_open is False
    with pytest.raises(RuntimeError):
        with dev:
            raise RuntimeError("boom")
    assert dev.is_open is False


def test_call_opens_a_closed_device():
    dev = small()
    dev(inputs(1))
    assert dev.is_open


def test_wrapper_lifecycle_reaches_the_inner_device():
    inner = small()
    dev = NonIdealDevice(inner, outputs=[{"kind": "readout", "sigma": 0.0}])
    with dev:
        assert dev.is_open and inner.is_open
    assert not dev.is_open and not inner.is_open


# -- seeding and state ------------------------------------------------------------------


def test_same_seed_gives_identical_noisy_outputs():
    x = inputs(6)
    a, b = noisy(seed=11), noisy(seed=11)
    ya1, yb1 = a(x), b(x)
    ya2, yb2 = a(x), b(x)
    assert torch.equal(ya1, yb1) and torch.equal(ya2, yb2)
    assert not torch.equal(ya1, ya2)  # the noise really is there and moves on


def test_different_seeds_differ():
    x = inputs(6)
    assert not torch.allclose(noisy(seed=1)(x), noisy(seed=2)(x))
    # the same physics (one transmission matrix) with noise seeded differently
    inner = small(seed=1)
    out = [{"kind": "readout", "sigma": 0.1}]
    a = NonIdealDevice(inner, outputs=out, seed=5)(x)
    b = NonIdealDevice(inner, outputs=out, seed=6)(x)
    assert torch.equal(a, NonIdealDevice(inner, outputs=out, seed=5)(x))
    assert (a - b).abs().max() > 0.01


def test_noise_is_drawn_from_the_device_stream_not_the_global_one():
    x = inputs(6)
    torch.manual_seed(0)
    y1 = noisy(seed=5)(x)
    torch.manual_seed(1)
    y2 = noisy(seed=5)(x)
    assert torch.equal(y1, y2)


def test_state_dict_restores_the_random_stream():
    x = inputs(5)
    dev = noisy(seed=4)
    dev(x)  # the stream has moved on
    state = dev.state_dict()
    y1 = dev(x)
    acc1 = dev.accounting.as_dict()
    y_later = dev(x)
    assert not torch.equal(y1, y_later)
    dev.load_state_dict(state)
    assert dev.accounting.samples == 5
    y2 = dev(x)
    assert torch.equal(y1, y2)
    assert dev.accounting.samples == acc1["samples"] and dev.accounting.calls == acc1["calls"]

    fresh = noisy(seed=4)  # a resumed run in a new process
    fresh.load_state_dict(state)
    assert torch.equal(fresh(x), y1)


def test_state_dict_taken_before_the_first_call_rewinds_the_stream():
    x = inputs(5)
    dev = noisy(seed=4)
    state = dev.state_dict()
    y1 = dev(x)
    dev.load_state_dict(state)
    assert torch.equal(dev(x), y1)


def test_wrapper_state_dict_restores_inner_and_outer_streams():
    x = inputs(5)
    dev = NonIdealDevice(noisy(seed=2), outputs=[{"kind": "readout", "sigma": 0.1}])
    dev(x)
    state = dev.state_dict()
    assert "inner" in state
    y1 = dev(x)
    dev(x)
    dev.load_state_dict(state)
    assert torch.equal(dev(x), y1)


# -- non-idealities against hand-computed values -----------------------------------------


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_soft_saturation_is_level_tanh():
    y = torch.tensor([-3.0, 0.0, 0.5, 1.0, 4.0, 100.0], dtype=torch.float64)
    out = Saturation(level=2.0, mode="soft")(y, gen())
    expected = torch.tensor([2.0 * math.tanh(v / 2.0) for v in y.tolist()], dtype=torch.float64)
    assert torch.allclose(out, expected, rtol=0, atol=1e-12)
    assert out[-1] == pytest.approx(2.0) and out.max() <= 2.0


def test_hard_saturation_clips_at_the_level():
    y = torch.tensor([-5.0, -1.0, 0.0, 0.5, 1.999, 2.0, 3.0, 100.0])
    out = Saturation(level=2.0, mode="hard")(y, gen())
    assert torch.equal(out, torch.tensor([-2.0, -1.0, 0.0, 0.5, 1.999, 2.0, 2.0, 2.0]))


def test_saturation_rejects_bad_parameters():
    with pytest.raises(ValueError, match="soft"):
        Saturation(mode="smooth")
    with pytest.raises(ValueError, match="level"):
        Saturation(level=0.0)


def test_quantization_two_bits_over_unit_range():
    q = Quantization(bits=2, lo=0.0, hi=1.0)
    y = torch.tensor([0.0, 0.1, 0.2, 0.4, 0.6, 0.9, 1.0, -0.5, 1.5], dtype=torch.float64)
    expected = torch.tensor([0, 0, 1 / 3, 1 / 3, 2 / 3, 1, 1, 0, 1], dtype=torch.float64)
    assert torch.allclose(q(y, gen()), expected, rtol=0, atol=1e-12)
    levels = torch.unique(q(torch.linspace(-0.2, 1.2, 1001, dtype=torch.float64), gen()))
    assert torch.allclose(levels, torch.tensor([0, 1 / 3, 2 / 3, 1], dtype=torch.float64))


def test_quantization_on_a_shifted_range():
    q = Quantization(bits=3, lo=-1.0, hi=1.0)  # step 2/7
    y = torch.tensor([-1.0, -0.9, -0.05, 0.05, 0.2, 1.0], dtype=torch.float64)
    step = 2 / 7
    expected = torch.tensor(
        [-1.0, -1.0, -1 + 3 * step, -1 + 4 * step, -1 + 4 * step, 1.0], dtype=torch.float64
    )
    assert torch.allclose(q(y, gen()), expected, rtol=0, atol=1e-12)


def test_quantization_gradient_is_straight_through():
    y = torch.tensor([-0.3, 0.1, 0.45, 0.8, 1.7], requires_grad=True)
    out = Quantization(bits=2)(y, gen())
    (out * torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])).sum().backward()
    assert torch.equal(y.grad, torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))


def test_quantization_rejects_bad_parameters():
    with pytest.raises(ValueError, match="bits"):
        Quantization(bits=0)
    with pytest.raises(ValueError, match="bits"):
        Quantization(bits=33)
    with pytest.raises(ValueError, match="lo < hi"):
        Quantization(lo=1.0, hi=1.0)


def test_readout_noise_has_the_requested_std():
    y = torch.full((200_000,), 3.0, dtype=torch.float64)
    out = ReadoutNoise(sigma=0.05)(y, gen(1))
    assert (out - 3.0).std().item() == pytest.approx(0.05, rel=0.02)
    assert abs((out - 3.0).mean().item()) < 5 * 0.05 / math.sqrt(y.numel())
    assert torch.equal(ReadoutNoise(sigma=0.05)(y, gen(1)), out)  # seeded
    assert torch.equal(ReadoutNoise(sigma=0.0)(y, gen(1)), y)


def test_shot_noise_preserves_the_mean_and_has_poisson_variance():
    photons = 50.0
    for level in (0.3, 2.0):
        y = torch.full((200_000,), level, dtype=torch.float64)
        out = ShotNoise(photons=photons)(y, gen(2))
        assert out.mean().item() == pytest.approx(level, rel=0.01)
        assert out.var().item() == pytest.approx(level / photons, rel=0.03)
        # values are whole photon counts
        counts = out * photons
        assert torch.allclose(counts, counts.round(), atol=1e-9)


def test_shot_noise_gradient_is_straight_through():
    y = torch.tensor([0.5, 1.0, 2.0], requires_grad=True)
    ShotNoise(photons=10.0)(y, gen()).sum().backward()
    assert torch.equal(y.grad, torch.ones(3))


def test_make_effects_builds_from_descriptions():
    sat = Saturation(level=3.0)
    effects = make_effects(
        [{"kind": "readout", "sigma": 0.2}, {"kind": "quantize", "bits": 4, "hi": 2.0}, sat]
    )
    assert effects[0] == ReadoutNoise(sigma=0.2)
    assert effects[1] == Quantization(bits=4, lo=0.0, hi=2.0)
    assert effects[2] is sat
    assert make_effects(None) == []
    assert effects[1].describe() == {"kind": "quantize", "bits": 4, "lo": 0.0, "hi": 2.0}


def test_make_effects_rejects_an_unknown_kind():
    with pytest.raises(ValueError) as e:
        make_effects([{"kind": "blur", "radius": 2}])
    msg = str(e.value)
    assert "'blur'" in msg
    for k in ("quantize", "readout", "saturation", "shot"):
        assert k in msg
    with pytest.raises(ValueError, match="None"):
        make_effects([{"sigma": 0.1}])


@pytest.mark.parametrize(
    "spec, words",
    [
        ({"kind": "readout", "sgima": 0.1}, ["'readout'", "sgima"]),
        ({"kind": "shot", "photons": 10, "gain": 2}, ["'shot'", "gain"]),
        ({"kind": "saturation", "mode": "smooth"}, ["saturation", "smooth"]),
        ({"kind": "saturation", "level": -1.0}, ["saturation", "level"]),
        ({"kind": "quantize", "bits": 0}, ["quantize", "bits"]),
        ({"kind": "readout", "sigma": -0.1}, ["readout", "sigma"]),
    ],
)
def test_make_effects_rejects_bad_parameters_naming_the_kind(spec, words):
    with pytest.raises(ValueError) as e:
        make_effects([spec])
    for w in words:
        assert w in str(e.value)


@pytest.mark.parametrize("photons", [0.0, -5.0])
def test_shot_noise_rejects_non_positive_photons(photons):
    with pytest.raises(ValueError, match="photons"):
        make_effects([{"kind": "shot", "photons": photons}])


def test_non_ideal_device_quantises_inputs_like_a_dac():
    inner = small()  # noise-free
    dev = NonIdealDevice(inner, inputs=[{"kind": "quantize", "bits": 3}])
    step = 1 / 7
    k = torch.randint(0, 8, (6, 16), generator=gen(3)).double()
    x0 = k * step
    wiggle = (torch.rand(6, 16, generator=gen(4), dtype=torch.float64) - 0.5) * 0.8 * step
    x1 = (x0 + wiggle).clamp(0, 1)  # less than half a step away
    y0, y1 = dev(x0), dev(x1)
    assert torch.equal(y0, y1)
    assert torch.allclose(y0, inner(x0), atol=1e-10)
    assert not torch.allclose(inner(x0), inner(x1))  # the inner device does see the wiggle
    x2 = x0.clone()
    x2[:, 0] = torch.where(k[:, 0] < 7, x0[:, 0] + step, x0[:, 0] - step)  # one full step
    assert not torch.allclose(dev(x2), y0)


def test_non_ideal_device_applies_output_effects_in_order():
    inner = small()
    dev = NonIdealDevice(
        inner,
        outputs=[{"kind": "saturation", "level": 0.8, "mode": "hard"}, {"kind": "quantize", "bits": 4}],
    )
    assert dev.spec == inner.spec and dev.differentiable
    x = inputs(8, dtype=torch.float64)
    ideal = inner(x)
    assert ideal.max() > 0.8  # the saturation has something to do
    expected = torch.round(ideal.clamp(0.0, 0.8) * 15) / 15
    y = dev(x)
    assert torch.allclose(y, expected, atol=1e-12)
    assert y.max() <= 0.8 and torch.allclose(y * 15, (y * 15).round(), atol=1e-9)
    d = dev.describe()
    assert d["kind"] == "sim:optical"
    assert [e["kind"] for e in d["outputs"]] == ["saturation", "quantize"]


def test_non_ideal_device_output_noise_and_gradient():
    inner = small()
    dev = NonIdealDevice(inner, outputs=[{"kind": "readout", "sigma": 0.1}], seed=9)
    x = inputs(4, dtype=torch.float64)
    diff = dev(x) - inner(x)
    assert 0.05 < diff.std().item() < 0.15
    xg = x.clone().requires_grad_(True)
    dev.forward_with_grad(xg).sum().backward()
    ref = x.clone().requires_grad_(True)
    inner.forward_with_grad(ref).sum().backward()
    assert torch.allclose(xg.grad, ref.grad)  # additive noise: same gradient


def test_non_ideal_device_around_a_black_box():
    inner = Echo()
    dev = NonIdealDevice(inner, inputs=[{"kind": "quantize", "bits": 1}])
    assert dev.differentiable is False
    x = torch.tensor([[0.2, 0.7, 1.0]], requires_grad=True)
    with torch.enable_grad():
        y = dev(x)
    assert torch.equal(y, torch.tensor([[0.0, 2.0, 2.0]])) and not y.requires_grad
    with pytest.raises(NotImplementedError, match="test:echo"):
        dev.forward_with_grad(x)


# -- factory ------------------------------------------------------------------------------


def test_make_device_by_name():
    dev = make_device("sim:optical")
    assert isinstance(dev, OpticalCavity)
    assert dev.spec.name == "sim:optical"
    assert (dev.spec.n_in, dev.spec.n_out) == (74, 400)
    assert dev.describe()["kind"] == "sim:optical"


def test_make_device_from_a_dict_leaves_the_dict_alone():
    desc = {"kind": "sim:optical", "n_in": 9, "camera_shape": [3, 3], "pool": 2, "pool_stride": 1}
    before = dict(desc)
    dev = make_device(desc)
    assert desc == before
    assert (dev.spec.n_in, dev.spec.n_out) == (9, 4)
    assert dev.config.slm_shape == (3, 3)


def test_make_device_from_toml(tmp_path):
    path = tmp_path / "optical.toml"
    path.write_text(
        "[device]\n"
        'kind = "sim:optical"\n'
        "n_in = 16\n"
        "camera_shape = [4, 4]\n"
        "seed = 7\n"
        'camera = [{kind = "shot", photons = 300.0}]\n'
        'outputs = [{kind = "quantize", bits = 6, hi = 4.0}]\n'
    )
    x = inputs(5)
    dev = make_device(path)
    assert isinstance(dev, NonIdealDevice) and isinstance(dev.inner, OpticalCavity)
    assert dev.inner.config.camera_shape == (4, 4) and dev.seed == 8
    again = make_device(str(path))
    ref = make_device(
        {
            **SMALL,
            "seed": 7,
            "camera": [{"kind": "shot", "photons": 300.0}],
            "outputs": [{"kind": "quantize", "bits": 6, "hi": 4.0}],
        }
    )
    y = dev(x)
    assert torch.equal(y, again(x)) and torch.equal(y, ref(x))


def test_make_device_from_toml_without_a_device_table(tmp_path):
    path = tmp_path / "bare.toml"
    path.write_text('kind = "sim:optical"\nn_in = 4\ncamera_shape = [2, 2]\n')
    assert make_device(path).spec.n_out == 4


def test_make_device_overrides(tmp_path):
    dev = make_device("sim:optical", n_in=9, camera_shape=(3, 3), seed=3)
    assert (dev.spec.n_in, dev.spec.n_out, dev.seed) == (9, 9, 3)
    path = tmp_path / "d.toml"
    path.write_text('[device]\nkind = "sim:optical"\nn_in = 16\ncamera_shape = [4, 4]\n')
    assert make_device(path, n_in=4).spec.n_in == 4
    assert make_device(SMALL, clip=True).clip is True


@pytest.mark.parametrize("desc", ["sim:nope", "optical", {"kind": "sim:nope"}, {"n_in": 3}])
def test_make_device_unknown_kind_lists_the_allowed_kinds(desc):
    with pytest.raises(ValueError) as e:
        make_device(desc)
    msg = str(e.value)
    assert "sim:optical" in msg and "allowed" in msg
    if isinstance(desc, str):
        assert repr(desc) in msg


def test_make_device_unknown_kind_in_toml(tmp_path):
    path = tmp_path / "d.toml"
    path.write_text('[device]\nkind = "sim:nope"\n')
    with pytest.raises(ValueError, match="sim:nope"):
        make_device(path)


def test_make_device_missing_toml_is_file_not_found(tmp_path):
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(FileNotFoundError, match="nowhere.toml"):
        make_device(missing)
    with pytest.raises(FileNotFoundError):
        make_device(str(Path("definitely/not/here.toml")))


def test_make_device_bad_parameters_are_value_errors():
    with pytest.raises(ValueError) as e:
        make_device("sim:optical", n_pixels=3)
    assert "sim:optical" in str(e.value) and "n_pixels" in str(e.value)
    with pytest.raises(ValueError, match="encoding"):
        make_device("sim:optical", encoding="polarisation")
    with pytest.raises(ValueError, match="blur"):
        make_device({**SMALL, "camera": [{"kind": "blur"}]})
    with pytest.raises(ValueError, match="blur"):
        make_device({**SMALL, "outputs": [{"kind": "blur"}]})


def test_domain_from_unit_maps_linearly_and_snaps_to_levels():
    u = torch.tensor([0.0, 0.3, 0.6, 1.0])
    assert torch.allclose(Domain(-1.0, 3.0).from_unit(u), torch.tensor([-1.0, 0.2, 1.4, 3.0]))
    assert torch.equal(Domain(levels=(0, 1, 2, 3)).from_unit(u), torch.tensor([0.0, 1.0, 2.0, 3.0]))


def test_kinds_register_at_run_time_and_a_broken_entry_point_is_one_line():
    """A lab's own kind joins the registry; an entry point that cannot load (stale metadata
    after an upgrade, a broken plug-in) names itself and the fix instead of a traceback."""
    from importlib.metadata import EntryPoint

    from physnn.core import KINDS, register_kind

    class Echo(Device):
        def __init__(self, n_in: int = 3, seed: int = 0):
            super().__init__(DeviceSpec("lab:echo", n_in, n_in), seed=seed)

        def _measure(self, x: torch.Tensor) -> torch.Tensor:
            return x

    register_kind("lab:echo", Echo, replace=True)
    assert "lab:echo" in KINDS and make_device({"kind": "lab:echo", "n_in": 2}).spec.n_out == 2
    with pytest.raises(ValueError, match="already registered"):
        register_kind("lab:echo", Echo)
    eps = KINDS._eps()
    eps["lab:stale"] = EntryPoint("lab:stale", "physnn.sim.optical:NoSuchCavity", "physnn.devices")
    try:
        with pytest.raises(ValueError, match=r"'lab:stale' is registered as .*NoSuchCavity.*"
                                             r"cannot be loaded.*reinstall"):
            make_device("lab:stale")
    finally:
        del eps["lab:stale"]
        KINDS._runtime.pop("lab:echo", None)


# -- issue 18: bad descriptions and inputs are one line naming the key -----------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_refused(dtype):
    # issue 18: they passed is_floating_point() and failed later inside torch
    with pytest.raises(ValueError, match=rf"input dtype {dtype} is not allowed; use torch.float32 "
                                         r"or torch.float64"):
        Echo()(torch.zeros(2, 3, dtype=dtype))


@pytest.mark.parametrize("key, value", [
    ("n_in", 2.5), ("n_in", 16.0), ("n_in", True), ("n_in", 0), ("n_in", 10**7),
])
def test_device_sizes_must_be_whole_numbers_within_the_limit(key, value):
    # issue 18: n_in=2.5 was accepted (truncated) and 10**7 failed in the allocator
    with pytest.raises(ValueError, match=rf"sim:optical: {key} must be a whole number in "
                                         rf"1\.\.1048576, got {value!r}"):
        make_device({**SMALL, key: value})
    with pytest.raises(ValueError, match=r"n_out must be a whole number"):
        DeviceSpec("test:spec", 3, 2.0)  # every backend's spec, not only descriptions


@pytest.mark.parametrize("desc, message", [
    ({"outputs": [{"kind": "readout", "sigma": math.inf}]}, "readout: sigma must be a finite"),
    ({"camera": [{"kind": "readout", "sigma": -0.5}]}, "readout: sigma must be a finite number >= 0"),
    ({"camera": [{"kind": "shot", "photons": math.inf}]}, "shot: photons"),
    ({"outputs": [{"kind": "saturation", "level": math.inf}]}, "saturation: level"),
    ({"outputs": [{"kind": "quantize", "bits": 2.5}]}, "quantize: bits must be a whole number"),
    ({"outputs": [{"kind": "quantize", "hi": math.inf}]}, "quantize: hi must be a finite"),
    ({"gain": math.inf}, "sim:optical: gain must be a finite number"),
    ({"frame_rate_hz": 0.0}, "sim:optical: frame_rate_hz must be a finite number > 0"),
    ({"phase_range": math.nan}, "sim:optical: phase_range is NaN"),
    ({"n_modes": 10**5}, r"100000-mode transmission matrix would need 149\.0 GiB, over the "
                         r"budget of 8 GiB .*lower n_in, camera_shape or n_modes"),
])
def test_non_finite_or_absurd_description_values_name_the_key(desc, message):
    # issue 18: readout sigma=inf was accepted and every output became -inf or nan
    with pytest.raises(ValueError, match=message):
        make_device({**SMALL, **desc})


@pytest.mark.parametrize("desc, message", [
    ({"kind": "sim:microwave", "ms_chi": math.inf}, "sim:microwave: ms_chi must be a finite"),
    ({"kind": "sim:microwave", "n_scatterers": 10**5}, r"sim:microwave: 100150 dipoles .* "
                                                       r"GiB, over the budget of 8 GiB"),
    ({"kind": "sim:microwave", "n_out": 20.0}, "sim:microwave: n_out must be a whole number"),
    ({"kind": "sim:acoustic", "c": math.inf}, "sim:acoustic: c must be a finite number"),
    ({"kind": "sim:acoustic", "n_in": 10**5}, r"sim:acoustic: .* 100000 tones would need .* "
                                              r"over the budget of 8 GiB"),
])
def test_every_simulator_refuses_non_finite_values_and_absurd_sizes(desc, message):
    # issue 18
    with pytest.raises(ValueError, match=message):
        make_device(desc)


def test_a_toml_description_that_is_not_utf8_or_not_toml_names_the_file(tmp_path):
    # issue 18: a Latin-1 file was a bare UnicodeDecodeError without the file's name
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'kind = "sim:optical"\n# caf\xe9\n')
    with pytest.raises(ValueError, match=r"latin1.toml is not UTF-8 text: byte 0xe9 at offset 26 "
                                         r"\(line 2\)"):
        make_device(path)
    path.write_text('kind = "sim:optical\n')
    with pytest.raises(ValueError, match=r"latin1.toml is not valid TOML"):
        make_device(path)
