"""Perturbation models: seeded drift and sudden changes of the simulated physics."""

from __future__ import annotations

import math

import pytest
import torch

from physnn.core import make_device
from physnn.core.effects import NonIdealDevice
from physnn.core.perturbation import advance, parse_perturbations, perturbable

SMALL_ACOUSTIC = {"kind": "sim:acoustic", "n_in": 4, "grid": [10, 10], "n_microphones": 2,
                  "bins_per_mic": 3, "n_membranes": 2, "n_scatterers": 3, "window_steps": 96,
                  "transient_steps": 48, "first_bin": 4}
SMALL_MICROWAVE = {"kind": "sim:microwave", "n_in": 6, "n_out": 6, "n_scatterers": 3,
                   "cavity_radius": 1.6}


def _x(dev, n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return dev.spec.domain.from_unit(torch.rand(n, dev.spec.n_in, generator=g, dtype=torch.float64))


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("base", [{"kind": "sim:optical", "n_in": 16}, SMALL_ACOUSTIC, SMALL_MICROWAVE])
def test_empty_schedule_is_bit_identical_and_clock_does_nothing(base):
    plain, empty = make_device(base), make_device({**base, "perturbations": []})
    x = _x(plain)
    assert torch.equal(plain(x), empty(x))
    assert "perturbations" not in plain.describe()
    assert "perturbation" not in plain.state_dict()
    assert advance(empty, 3) == [] and not empty.perturbed
    assert torch.equal(plain(x), empty(x))


@pytest.mark.parametrize(
    "base, sudden",
    [
        ({"kind": "sim:optical", "n_in": 16}, {"action": "redraw", "fraction": 0.5}),
        (SMALL_ACOUSTIC, {"action": "move", "count": 1}),
        (SMALL_MICROWAVE, {"action": "flip", "count": 4}),
        (SMALL_MICROWAVE, {"action": "move", "count": 2, "distance": 0.4}),
    ],
)
def test_sudden_change_fires_at_its_tick_and_changes_the_physics(base, sudden):
    ref = make_device(base)
    dev = make_device({**base, "perturbations": [{"kind": "sudden", "at": 2, **sudden}]})
    x = _x(ref)
    y0 = ref(x)
    assert dev.advance(1) == []
    assert torch.equal(dev(x), y0)  # nothing before tick 2
    fired = dev.advance(1)
    assert [f["tick"] for f in fired] == [2] and fired[0]["action"] == sudden["action"]
    assert _rel(dev(x), y0) > 1e-3
    dev.reset_perturbations()
    assert torch.allclose(dev(x), y0, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("base", [{"kind": "sim:optical", "n_in": 16}, SMALL_ACOUSTIC, SMALL_MICROWAVE])
def test_drift_changes_output_gradually_and_resume_replays_it(base):
    desc = {**base, "perturbations": [{"kind": "drift", "sigma": 0.5, "rate": 1.0}]}
    dev = make_device(desc)
    x = _x(dev)
    y0 = dev(x)
    dev.advance(1)
    small = _rel(dev(x), y0)
    dev.advance(4)
    large = _rel(dev(x), y0)
    assert 0 < small < large
    assert dev.clock == 5 and dev.temperature != 0
    again = make_device(dev.describe())  # the description rebuilds the device at clock 0
    assert torch.allclose(again(x), y0, rtol=1e-9, atol=1e-12)
    again.load_state_dict(dev.state_dict())
    assert again.clock == 5 and again.temperature == dev.temperature
    assert torch.equal(again(x), dev(x))  # noise streams and drift both continue identically


def test_optical_drift_keeps_the_cavity_unitary_and_magnitude_scales_with_coupling():
    n = 64
    base = {"kind": "sim:optical", "n_in": n, "camera_shape": [8, 8], "n_modes": n}
    outs = {}
    for coupling in (0.1, 1.0):
        dev = make_device({**base, "perturbations": [{"kind": "drift", "rate": 1.0,
                                                      "coupling": coupling}]})
        dev.advance(1)
        tm = dev.transmission
        assert torch.allclose(tm.conj().T @ tm, torch.eye(n, dtype=tm.dtype), atol=1e-10)
        outs[coupling] = tm
    pristine = make_device(base).transmission
    assert _rel(outs[0.1], pristine) < _rel(outs[1.0], pristine)


def test_acoustic_drift_follows_the_speed_of_sound_and_checks_stability():
    dev = make_device({**SMALL_ACOUSTIC, "perturbations": [{"kind": "drift", "rate": 10.0}]})
    c0, rho0 = dev.config.c, dev.config.rho
    dev.advance(1)
    assert math.isclose(dev.config.c / c0 - 1, 10 * 0.5 / 293.15, rel_tol=1e-12)  # +0.17 %/K
    assert math.isclose(dev.config.rho * dev.config.c**2, rho0 * c0**2, rel_tol=1e-12)
    assert dev.describe()["c"] == c0  # the description is the undisturbed cavity
    hot = make_device({**SMALL_ACOUSTIC, "perturbations": [{"kind": "drift", "rate": 200.0}]})
    with pytest.raises(ValueError, match="stability limit"):
        hot.advance(1)


def test_acoustic_remove_and_add_change_the_scatterers():
    for action, sign in (("remove", -1), ("add", 1)):
        dev = make_device({**SMALL_ACOUSTIC,
                           "perturbations": [{"kind": "sudden", "at": 1, "action": action}]})
        n0 = len(dev._scatterer_blocks())
        dev.advance(1)
        assert len(dev._scatterer_blocks()) == n0 + sign
        assert int(dev.solid.sum()) == len(dev.scatterer_cells)


def test_perturbations_reach_through_a_non_ideality_wrapper():
    dev = make_device({"kind": "sim:optical", "n_in": 16, "outputs": [{"kind": "readout"}],
                       "perturbations": [{"kind": "sudden", "at": 1}]})
    assert isinstance(dev, NonIdealDevice) and perturbable(dev) is dev.inner
    assert [e["tick"] for e in advance(dev, 1)] == [1]
    assert dev.state_dict()["inner"]["perturbation"]["clock"] == 1


def test_seed_determines_the_walk_and_the_events():
    desc = {"kind": "sim:optical", "n_in": 16,
            "perturbations": [{"kind": "drift", "sigma": 1.0}, {"kind": "sudden", "at": 2}]}
    a, b, c = make_device(desc), make_device(desc), make_device({**desc, "seed": 5})
    for d in (a, b, c):
        d.advance(3)
    assert a.temperature == b.temperature != c.temperature
    assert torch.equal(a.transmission, b.transmission)


@pytest.mark.parametrize(
    "specs, match",
    [
        ({"kind": "drift"}, "list of tables"),
        ([{"kind": "wobble"}], "unknown kind"),
        ([{"kind": "drift"}, {"kind": "drift"}], "only one drift"),
        ([{"kind": "drift", "speed": 1}], "unknown drift key"),
        ([{"kind": "drift", "sigma": -1}], "sigma must be >= 0"),
        ([{"kind": "sudden"}], "needs 'at'"),
        ([{"kind": "sudden", "at": 0}], "integer tick >= 1"),
        ([{"kind": "sudden", "at": 2, "action": "melt"}], "unknown action"),
        ([{"kind": "sudden", "at": 2, "count": 1}], "unknown key"),
        ([{"kind": "sudden", "at": 2, "fraction": "half"}], "finite number"),
    ],
)
def test_bad_descriptions_are_rejected(specs, match):
    with pytest.raises(ValueError, match=match):
        parse_perturbations(specs, "sim:optical", {"redraw": {"fraction": 0.5}})


def test_bad_description_through_the_factory_names_the_device():
    with pytest.raises(ValueError, match="sim:microwave.*allowed: \\['flip', 'move'\\]"):
        make_device({**SMALL_MICROWAVE, "perturbations": [{"kind": "sudden", "at": 1,
                                                           "action": "redraw"}]})
    with pytest.raises(ValueError, match="whole number"):
        make_device({**SMALL_ACOUSTIC, "perturbations": [{"kind": "sudden", "at": 1,
                                                          "count": 1.5}]})
