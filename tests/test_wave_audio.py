"""Raw-audio acoustic computing: ``sim:acoustic-wave`` and the ``hillenbrand-audio`` loader.

Small grids and short waveforms throughout: the whole file runs in seconds.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import numpy as np
import pytest
import torch
from conftest import HILLENBRAND, needs_hillenbrand
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from physnn import make_device
from physnn.data import DATASETS, load_hillenbrand_audio, speaker_split
from physnn.sim.acoustic import WaveformCavity
from physnn.sim.acoustic.resample import Resampler

KIND = "sim:acoustic-wave"


def _pulse(n: int, centre: float, sigma: float) -> torch.Tensor:
    """A sampled Gaussian ``[1, n]``: impulse-like, and band-limited far below Nyquist."""
    k = torch.arange(n, dtype=torch.float64)
    return torch.exp(-0.5 * ((k - centre) / sigma) ** 2)[None]


def _burst(n: int, shift: float, rate: float, f: float = 1000.0, sigma: float = 1e-3) -> torch.Tensor:
    """A Gaussian tone burst centred in ``n`` samples, delayed by ``shift`` samples."""
    t = (torch.arange(n, dtype=torch.float64) - shift) / rate - n / rate / 2
    return torch.exp(-0.5 * (t / sigma) ** 2) * torch.cos(2 * math.pi * f * t)


# -- resampling ---------------------------------------------------------------------------


def test_the_resampler_reconstructs_band_limited_tones() -> None:
    """The Kaiser-windowed sinc gives a tone between the samples to about 1e-4 up to 0.42 of
    the sample rate (what ``resample`` promises); linear interpolation is off by percent."""
    r = Resampler(8000.0, 1 / 68600, 400)
    k = torch.arange(400, dtype=torch.float64)
    tau = r.positions(1000, 2000)
    for f in (0.05, 0.2, 0.4):
        x = torch.cos(2 * math.pi * f * k + 0.3)[None]
        got = torch.cat([r.values(x, a, a + 250) for a in range(1000, 2000, 250)], 1)[0]
        assert (got - torch.cos(2 * math.pi * f * tau + 0.3)).abs().max() < 2e-4
    assert r.values(x, r.last_step(), r.last_step() + 10).abs().max() == 0  # past the end


# -- physics ------------------------------------------------------------------------------


def _green(
    t: torch.Tensor, r: float, c: float, rho: float, vv: float, t0: float, s: float
) -> torch.Tensor:
    """Pressure at distance ``r`` of a 2-D monopole with volume velocity
    ``q(t) = vv exp(-(t - t0)^2 / 2 s^2)``: the free-space Green's function
    ``H(ct - r) / (2 pi c sqrt(c^2 t^2 - r^2))`` convolved with ``rho c^2 q'``, written with
    ``t' = (r / c) cosh(eta)`` as ``p(t) = rho / (2 pi) int_0^inf q'(t - (r / c) cosh eta) d eta``
    (no singularity left to integrate)."""
    eta = torch.linspace(0, 12, 20001, dtype=torch.float64)
    tau = t[:, None] - (r / c) * torch.cosh(eta)[None]
    dq = -vv * (tau - t0) / s**2 * torch.exp(-0.5 * ((tau - t0) / s) ** 2)
    return rho / (2 * math.pi) * torch.trapezoid(dq, eta, dim=1)


def _peak_time(y: torch.Tensor, dt: float) -> float:
    """Time of the maximum of ``y`` (row n is t = (n + 1) dt), refined by a parabola."""
    i = int(torch.argmax(y))
    a, b, c = (float(v) for v in y[i - 1 : i + 2])
    return (i + 1 + 0.5 * (a - c) / (a - 2 * b + c)) * dt


def test_free_space_arrival_matches_the_2d_greens_function() -> None:
    """A Gaussian pulse (sigma = 1.5 samples at 10 kHz: impulse-like, ten cells a wavelength
    at its upper band edge) at a source 20 cells from a probe in free space (air-matched
    walls behind a 12-cell sponge, nothing in between): the simulated pressure peaks within
    one cell's travel time ``dx / c`` of the analytic 2-D Green's function's (measured: 0.08
    cells late, the leapfrog's numerical dispersion along an axis), and the waveform matches
    it to a few percent until the sponge's first reflection (over 1 ms later)."""
    rate, sigma, centre, r_cells = 10000.0, 1.5, 12.0, 20
    dev = make_device({
        "kind": KIND, "n_in": 34, "sample_rate": rate, "grid": [80, 90], "sponge_cells": 12,
        "wall_reflection": 0.0, "source": [40, 30], "probes": [[40, 30 + r_cells]],
        "design_region": [],
    })
    assert isinstance(dev, WaveformCavity)
    cfg = dev.config
    with torch.no_grad():
        trace = dev.simulate(_pulse(34, centre, sigma), trace=True)["trace"][0, :, 0]
    dt, r = cfg.time_step, r_cells * cfg.dx
    t = torch.arange(1, trace.shape[0] + 1, dtype=torch.float64) * dt
    exact = _green(t, r, cfg.c, cfg.rho, cfg.volume_velocity, centre / rate, sigma / rate)
    t_sim, t_exact = _peak_time(trace, dt), _peak_time(exact, dt)
    assert abs(t_sim - t_exact) <= cfg.dx / cfg.c
    # and where the pressure first reaches 2 % of its peak (the front)
    t_front = [float(t[int(torch.nonzero(y > 0.02 * y.max())[0])]) for y in (trace, exact)]
    assert abs(t_front[0] - t_front[1]) <= cfg.dx / cfg.c
    # the analytic peak: emission centre + distance / c, moved by less than the pulse's width
    # (q' peaks one sigma early, the 2-D Green's function's tail delays it)
    assert abs(t_exact - (centre / rate + r / cfg.c)) < sigma / rate
    window = (t > t_exact - 4 * sigma / rate) & (t < t_exact + 6 * sigma / rate)
    err = (trace[window] - exact[window]).norm() / exact[window].norm()
    assert err < 0.05, f"relative L2 error {float(err):.3g} around the arrival"


def test_probe_energies_are_invariant_to_a_sub_sample_shift() -> None:
    """A time shift of the input by a fraction of a sample leaves the probe energies
    unchanged within 1e-4 (relative).

    Why they should not change at all: the grid is linear and time-invariant, and the
    resampled drive of a band-limited input shifted by d samples is the band-limited
    fractional delay of the unshifted drive, an all-pass filter, so the output is delayed
    the same way and its energy (a sum of p^2 over a band-limited sequence, Parseval) is the
    same, as long as the whole response lies inside the run (``tail_s``: the sponge absorbs
    it). What is left: the resampling kernel's deviation from an ideal band-limited
    interpolator, about 2e-5 in amplitude at this burst's 1 kHz = 0.125 of the sample rate
    (``test_the_resampler_reconstructs_band_limited_tones``), twice that in energy, and
    the burst's truncation at the ends of the record (envelope 3e-4, energy ~1e-7). Measured:
    ~2e-8. Linear interpolation would change them by percent."""
    rate = 8000.0
    dev = make_device({"kind": KIND, "n_in": 64, "sample_rate": rate, "grid": [24, 24],
                       "sponge_cells": 4, "sponge_strength": 0.1, "tail_s": 0.005})
    assert isinstance(dev, WaveformCavity)
    with torch.no_grad():  # a non-uniform design region: the cavity is not symmetric
        dev.wave_speed.uniform_(0.5 * 343, 343, generator=torch.Generator().manual_seed(1))
    shifts = (0.0, 0.25, 0.37, 0.5, 1.0)
    y = dev(torch.stack([_burst(64, s, rate) for s in shifts]))
    assert (y > 0).all()
    assert torch.allclose(y[1:], y[:1].expand_as(y[1:]), rtol=1e-4, atol=0)
    softer = dev(0.99 * _burst(64, 0.0, rate)[None])  # while a 1 % change of amplitude shows
    assert torch.allclose(softer, 0.99**2 * y[:1], rtol=1e-9, atol=0)


class _PeakTensorBytes(TorchDispatchMode):
    """Tracks the bytes of every tensor storage the code under it allocates, live and peak
    (a storage is freed when its last tensor goes)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.now = 0
        self.peak = 0

    def _free(self, key: int) -> None:
        self.now -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                key, size = st.data_ptr(), st.nbytes()
                if size and key not in self.live:
                    self.live[key] = size
                    self.now += size
                    self.peak = max(self.peak, self.now)
                    weakref.finalize(st, self._free, key)
        return out


def test_memory_does_not_grow_with_the_duration() -> None:
    """No autograd: the peak of the tensors a query allocates is the same for a waveform
    twice as long. What it holds is the field, one chunk of the drive and its resampling
    kernel, and the running sums (about 0.2 MB here), never the history: storing the field
    every step would take over 10 times as much, and twice that for the longer waveform."""
    peaks, steps = [], []
    for n in (150, 300):
        dev = make_device({"kind": KIND, "n_in": n, "sample_rate": 16000, "grid": [20, 20],
                           "sponge_cells": 3})
        x = 0.5 * torch.sin(torch.arange(n) * 0.7)[None].repeat(2, 1)
        dev(x)  # tables built outside the measurement
        with _PeakTensorBytes() as m:
            dev(x)
        peaks.append(m.peak)
        steps.append(dev.config.steps)
    assert steps[1] > 1.9 * steps[0]
    assert peaks[1] <= peaks[0] * 1.01, peaks
    field = 2 * 22 * 22 * 4  # the pressure field of the batch, float32
    assert 10 * peaks[0] < steps[0] * field


def test_gradient_wrt_the_design_wave_speed() -> None:
    """``forward_with_grad`` gives a finite, nonzero gradient w.r.t. ``wave_speed`` that
    matches central finite differences (checkpointed segments), and the same outputs as a
    black-box query."""
    desc = {"kind": KIND, "n_in": 32, "grid": [16, 18], "sponge_cells": 3,
            "design_region": [5, 6, 10, 11], "readout": "fraction", "checkpoint_steps": 64}
    dev = make_device(desc)
    assert isinstance(dev, WaveformCavity)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        dev.wave_speed.uniform_(200, 330, generator=g)
    x = torch.rand(2, 32, generator=g, dtype=torch.float64) * 2 - 1
    y = dev.forward_with_grad(x)
    y[:, 0].sum().backward()
    grad = dev.wave_speed.grad
    assert grad is not None and grad.shape == (5, 5)
    assert torch.isfinite(grad).all() and grad.abs().max() > 0
    assert torch.allclose(dev(x), y.detach(), rtol=1e-12, atol=0)  # in place vs autograd
    h, (i, j) = 0.5, (2, 2)
    with torch.no_grad():
        dev.wave_speed[i, j] += h
        up = dev(x)[:, 0].sum()
        dev.wave_speed[i, j] -= 2 * h
        down = dev(x)[:, 0].sum()
    assert float((up - down) / (2 * h)) == pytest.approx(float(grad[i, j]), rel=1e-3)


def test_default_speed_at_the_top_of_its_range_still_has_a_gradient() -> None:
    dev = make_device({"kind": KIND, "n_in": 16, "grid": [14, 16], "sponge_cells": 2,
                       "design_region": [5, 6, 8, 9]})
    assert isinstance(dev, WaveformCavity)
    dev.forward_with_grad(torch.ones(1, 16)).sum().backward()
    assert dev.wave_speed.grad is not None and dev.wave_speed.grad.abs().max() > 0
    with torch.no_grad():
        dev.wave_speed.fill_(1000.0)
    dev.project_speed()
    assert float(dev.wave_speed.detach().max()) == dev.config.c


def test_describe_rebuilds_the_trained_cavity_and_noise_is_seeded() -> None:
    desc = {"kind": KIND, "n_in": 24, "grid": [14, 16], "sponge_cells": 2,
            "noise": [{"kind": "readout", "sigma": 1e-6}], "seed": 3}
    dev = make_device(desc)
    assert isinstance(dev, WaveformCavity)
    with torch.no_grad():
        dev.wave_speed.uniform_(200, 343, generator=torch.Generator().manual_seed(2))
    x = torch.rand(3, 24) * 2 - 1
    twin = make_device(dev.describe())
    assert torch.equal(dev(x), twin(x))  # trained speed, seed and noise stream included
    assert dev.spec.domain.lo == -1 and dev.spec.time_per_query_s == pytest.approx(24 / 8000)
    assert dev.accounting.samples == 3


@pytest.mark.parametrize(("key", "value", "message"), [
    ("bogus", 1, "unexpected keyword argument 'bogus'"),
    ("sample_rate", -8000, "sample_rate must be a finite number > 0"),
    ("courant", 0.9, "unstable time step"),
    ("source", [50, 3], r"source \[50, 3\] is outside grid"),
    ("probes", [[5, 5], [5, 5]], "probes must be distinct"),
    ("design_region", [2, 2, 40, 9], "design_region .* must satisfy"),
    ("design_speed", 1000.0, "outside speed_range"),
    ("speed_range", [300, 200], "speed_range must be"),
    ("readout", "db", "readout must be one of"),
    ("n_in", 2.5, "n_in must be a whole number"),
    ("dx", math.nan, "dx is NaN"),
])
def test_bad_keys_are_one_line_errors(key: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message) as e:
        make_device({"kind": KIND, "grid": [20, 20], "sponge_cells": 3, key: value})
    assert "\n" not in str(e.value)


# -- the loader ---------------------------------------------------------------------------

needs_wav = pytest.mark.skipif(
    not (HILLENBRAND / "wav").is_dir(),
    reason=f"Hillenbrand recordings not found at {HILLENBRAND / 'wav'} (reference data; it "
    "may not ship with the repository)",
)


@needs_hillenbrand
@needs_wav
def test_loader_splits_by_speaker_with_fixed_shapes() -> None:
    data = DATASETS["hillenbrand-audio"](path=HILLENBRAND, seed=4, vowels=["ae", "ei", "iy"],
                                         groups="w", length=1200, sample_rate=8000)
    assert data.class_names == ["ae", "ei", "iy"] and data.sample_rate == 8000
    assert data.x_train.shape[1] == data.x_test.shape[1] == 1200
    assert not set(data.train_speakers) & set(data.test_speakers)
    assert all(s.startswith("w") for s in data.train_speakers + data.test_speakers)
    tokens = data.train_tokens + data.test_tokens
    assert len(tokens) == len(data.x_train) + len(data.x_test) == 3 * 48
    assert {t[3:] for t in tokens} == {"ae", "ei", "iy"}
    for x, y, names in ((data.x_train, data.y_train, data.train_tokens),
                        (data.x_test, data.y_test, data.test_tokens)):
        assert torch.allclose(x.abs().amax(1), torch.ones(len(x)))
        assert [data.class_names[int(v)] for v in y] == [n[3:] for n in names]
    again = load_hillenbrand_audio(path=HILLENBRAND / "wav", seed=4, vowels=["ae", "ei", "iy"],
                                   groups="w", length=1200)
    assert again.test_tokens == data.test_tokens and torch.equal(again.x_test, data.x_test)
    other = load_hillenbrand_audio(path=HILLENBRAND, seed=5, vowels=["ae", "ei", "iy"],
                                   groups="w", length=1200)
    assert other.test_speakers != data.test_speakers


@needs_hillenbrand
@needs_wav
def test_loader_crops_pads_and_resamples() -> None:
    """16 kHz recordings are 5,274-13,737 samples: a 20,000-sample row is a padded one, a
    100-sample row a crop; ``sample_rate=None`` keeps 16 kHz."""
    kw: dict[str, Any] = dict(path=HILLENBRAND, vowels=["iy", "uw"], groups=["m", "w"])
    long = load_hillenbrand_audio(length=20000, sample_rate=None, crop="start", **kw)
    assert long.sample_rate == 16000
    assert (long.x_train[:, -3000:] == 0).all()  # padded at the end
    assert (long.x_train[:, :5000] != 0).any(1).all()
    mid = load_hillenbrand_audio(length=20000, sample_rate=None, **kw)
    assert (mid.x_train[:, :300] == 0).all() and (mid.x_train[:, -300:] == 0).all()
    short = load_hillenbrand_audio(length=100, sample_rate=4000, scale="unit", **kw)
    assert short.x_train.shape[1] == 100 and short.sample_rate == 4000
    assert short.x_train.min() >= 0 and short.x_train.max() <= 1


def test_speaker_split_is_disjoint_and_seeded() -> None:
    speakers = np.asarray([f"{g}{k:02d}" for g in "mw" for k in range(10) for _ in range(3)])
    train, test = speaker_split(speakers, 0.3, seed=1)
    assert not set(speakers[train]) & set(speakers[test])
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(speakers)))
    assert len(set(speakers[test])) == 6  # 3 of 10 in each group
    assert np.array_equal(speaker_split(speakers, 0.3, seed=1)[1], test)


@pytest.mark.parametrize(("kw", "message"), [
    ({"vowels": ["ae", "xx"]}, r"unknown vowel \['xx'\]; allowed: ae, ah"),
    ({"groups": ["w", "q"]}, r"unknown speaker group \['q'\]; allowed: m, w, b, g"),
    ({"length": 0}, "length must be a whole number"),
    ({"crop": "end"}, "crop must be one of"),
    ({"path": None}, "needs path="),
])
def test_loader_refuses_bad_options_in_one_line(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as e:
        load_hillenbrand_audio(**{"path": HILLENBRAND, **kw})
    assert "\n" not in str(e.value)


@needs_hillenbrand
@needs_wav
def test_loader_names_a_group_without_recordings() -> None:
    with pytest.raises(ValueError, match=r"no recordings of speaker group \['b'\] .* holds groups m, w"):
        load_hillenbrand_audio(path=HILLENBRAND, groups=["w", "b"])
