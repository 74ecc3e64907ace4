"""The field picture of ``sim:acoustic-wave`` (``physnn.sim.acoustic.wave_plot``) and the
device figure ``physnn report`` draws for a raw-audio run: one of the run's test recordings,
or random inputs when the recordings cannot be loaded."""

import sys

import pytest
import torch
from conftest import HILLENBRAND, needs_hillenbrand
from matplotlib.figure import Figure

from physnn.data.audio import load_hillenbrand_audio
from physnn.experiments import load_config, run
from physnn.experiments import report as report_module
from physnn.sim.acoustic.wave_config import WaveformConfig
from physnn.sim.acoustic.wave_plot import field_snapshots, plot_wave_field
from physnn.sim.acoustic.waveform import WaveformCavity

SMALL = {
    "grid": (12, 16),
    "n_in": 65,
    "sample_rate": 8000,
    "dx": 0.04,
    "sponge_cells": 2,
    "label_tones": [1000.0],
    "label_s": 0.002,
}
"""A 12 x 16 cavity (a 4 x 3-cell design region), a 16-sample label burst and 64 samples:
172 time steps."""


def _device(**kw) -> WaveformCavity:
    """The small cavity with a non-uniform design region (so the speed enters the loop)."""
    dev = WaveformCavity(WaveformConfig(**{**SMALL, **kw}))
    with torch.no_grad():
        gen = torch.Generator().manual_seed(3)
        dev.wave_speed.copy_(
            200 + 143 * torch.rand(dev.wave_speed.shape, generator=gen, dtype=torch.float64)
        )
    return dev


def _waveforms(dev: WaveformCavity, batch: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return 2 * torch.rand(batch, dev.spec.n_in, generator=gen, dtype=torch.float64) - 1


def test_the_last_snapshot_is_the_devices_final_field_and_the_others_its_trace():
    dev = _device()
    x = _waveforms(dev)
    total = dev.config.steps
    assert total == 172 and dev.wave_speed.numel() and dev.config.n_label == 1
    steps = [total, 0, 37, 100]
    out = field_snapshots(dev, x, steps)
    assert out["p"].shape == (4, 2, 12, 16) and out["steps"] == steps
    with torch.no_grad():
        ref = dev.simulate(x, trace=True)
    scale = float(ref["p"].abs().max())
    assert scale > 0
    torch.testing.assert_close(out["p"][0], ref["p"], rtol=0, atol=1e-12 * scale)
    assert not out["p"][1].any()  # at rest before the first step
    rows, cols = zip(*(map(int, p) for p in dev.config.probe_points), strict=True)
    for k, s in ((2, 37), (3, 100)):  # the probes' pressure after s steps
        at_probes = out["p"][k][:, list(rows), list(cols)]
        torch.testing.assert_close(at_probes, ref["trace"][:, s - 1], rtol=0, atol=1e-12 * scale)
    torch.testing.assert_close(out["energy"], ref["energy"], rtol=1e-12, atol=0)


def test_the_intensity_at_the_probes_is_their_energy():
    dev = _device(probes=[[3, 12], [6, 12], [8, 11]], readout="fraction")
    x = _waveforms(dev, 3)
    out = field_snapshots(dev, x, [])
    assert out["p"].shape == (0, 3, 12, 16)
    intensity = out["intensity"]
    assert intensity.shape == (3, 12, 16) and bool((intensity >= 0).all())
    with torch.no_grad():
        energy = dev.simulate(x)["energy"]
    at_probes = intensity[:, [3, 6, 8], [12, 12, 11]]
    assert float(((at_probes - energy).abs() / energy).max()) < 1e-9
    assert float(intensity[:, 5, 4].min()) > float(at_probes.max())  # the source's cell is the loudest


def test_snapshot_steps_outside_the_query_are_refused():
    dev = _device()
    with pytest.raises(ValueError, match=r"snapshot steps \[173\] are outside 0 .. 172"):
        field_snapshots(dev, _waveforms(dev), [1, 173])


def test_plot_wave_field_draws_on_a_figure_without_pyplot(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # importing it would fail
    dev = _device()
    x = _waveforms(dev, 3)
    fig = Figure(figsize=(13, 7.5), layout="constrained")
    plot_wave_field(dev, fig, x, title="one waveform")
    # input, read-out, speed, 3 snapshots, intensity, and 5 colour bars
    assert len(fig.axes) == 12
    images = [im for ax in fig.axes for im in ax.images]
    assert len(images) == 5  # 3 snapshots, the intensity map, the speed map
    assert fig.get_suptitle() == "one waveform"
    out = field_snapshots(dev, x[:1], [dev.config.steps])
    drawn = images[-1].get_array()  # the intensity map, drawn last
    assert float(drawn.max()) == pytest.approx(float(out["intensity"].max()), rel=1e-12)
    fig.savefig(__import__("io").BytesIO(), format="png")

    plain = WaveformCavity(WaveformConfig(**SMALL))  # the background speed: no speed map
    fig = Figure(layout="constrained")
    plot_wave_field(plain, fig, x[:1])
    assert len(fig.axes) == 10 and fig.get_suptitle().startswith("sim:acoustic-wave: 12 x 16")


def _tiny_wave_run(tmp_path, data_dir) -> dict:
    """vowels-wave-phyll shrunk to seconds: women only, 40 samples at 4 kHz, one epoch."""
    return load_config("vowels-wave-phyll").merged(
        {
            "data": {
                "path": str(data_dir),
                "groups": ["w"],
                "length": 40,
                "sample_rate": 4000,
                "test_fraction": 0.5,
            },
            "device": {
                "sample_rate": 4000,
                "grid": [12, 16],
                "dx": 0.04,
                "sponge_cells": 2,
                "n_probes": 3,
                "label_tones": [500, 800, 1100],
                "label_s": 0.005,
            },
            "train": {"epochs": 1, "eval_every": 1, "inner_steps": 1},
        }
    )


@needs_hillenbrand
def test_report_draws_a_test_recording_and_falls_back_without_the_data(tmp_path, monkeypatch):
    data_dir = tmp_path / "hillenbrand"
    data_dir.symlink_to(HILLENBRAND, target_is_directory=True)
    cfg = _tiny_wave_run(tmp_path, data_dir)
    log = tmp_path / "wave.h5"
    run(cfg, log, progress=False)
    titles: dict[str, str] = {}
    save = report_module.save_figure_atomic

    def keep_title(path, fig):
        titles[path.name] = fig.get_suptitle()
        save(path, fig)

    monkeypatch.setattr(report_module, "save_figure_atomic", keep_title)
    first = load_hillenbrand_audio(
        path=HILLENBRAND,
        vowels=["ae", "ei", "iy"],
        groups=["w"],
        length=40,
        sample_rate=4000,
        test_fraction=0.5,
    ).test_tokens[0]
    paths = report_module.report(log, tmp_path / "out")
    device_png = tmp_path / "out" / "wave_device.png"
    assert device_png in paths and device_png.stat().st_size > 0
    assert f"vowel {first[3:5]}, speaker {first[:3]}" in titles["wave_device.png"]

    data_dir.unlink()  # a user's machine: the recordings are not there
    device_png.unlink()
    paths = report_module.report(log, tmp_path / "out")
    assert device_png in paths and device_png.stat().st_size > 0
    title = titles["wave_device.png"]
    assert "random input" in title and "could not be loaded" in title and "vowel" not in title
