"""Surrogate devices: fitting a twin to a calibration record (split, early stopping,
fidelity), saving it with provenance, and using it as a device, in a network and from a CSV."""

import numpy as np
import pytest
import torch

from physnn.cli import main
from physnn.core import make_device
from physnn.experiments.runlog import read_run
from physnn.experiments.runner import run
from physnn.twins import calibrate, read_record
from physnn.twins.surrogate import FitSettings, Surrogate, Twin, fidelity, fit_surrogate

SMALL = {"kind": "sim:optical", "n_in": 8, "camera_shape": [3, 3],
         "outputs": [{"kind": "readout", "sigma": 0.01}]}
FAST = {"hidden": [64, 64], "epochs": 150, "patience": 10, "lr": 3e-3}


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    path = tmp_path_factory.mktemp("rec") / "small.h5"
    return calibrate(make_device(SMALL), samples=3000, out=path, progress=False)


@pytest.fixture(scope="module")
def twin(record, tmp_path_factory):
    out = tmp_path_factory.mktemp("twin") / "twin.pt"
    return fit_surrogate(record, out=out, progress=False, fourier=1, **FAST)


def test_fidelity_figures():
    g = np.random.default_rng(0)
    y = g.normal(size=(200, 3)) * [1.0, 10.0, 0.1]
    y[:, 2] = 5.0  # a constant channel has no variance to explain
    perfect = fidelity(y, y)
    assert perfect["nmse"][:2] == [0.0, 0.0] and np.isnan(perfect["nmse"][2])
    assert perfect["r2_overall"] == 1.0 and perfect["constant_outputs"] == 1
    mean = fidelity(np.broadcast_to(y.mean(0), y.shape), y)
    np.testing.assert_allclose(mean["nmse"][:2], 1.0)
    noisy = y + g.normal(size=y.shape) * [0.5, 0.5, 0.0]
    f = fidelity(noisy, y, noise_floor=np.array([0.1, 0.1, 0.1]))
    var = y.var(0)
    np.testing.assert_allclose(f["nmse"][:2], np.mean((noisy - y) ** 2, 0)[:2] / var[:2])
    np.testing.assert_allclose(f["r2"][:2], 1 - np.asarray(f["nmse"][:2]))
    np.testing.assert_allclose(f["nmse_overall"], np.mean(f["nmse"][:2]))
    np.testing.assert_allclose(f["nmse_noise_floor"], np.mean(0.01 / var[:2]))


def test_fit_splits_stops_early_and_reaches_the_noise_limited_fidelity(record, twin):
    split = twin.fit["split"]
    assert split == {"train": 2100, "validation": 450, "test": 450}
    assert twin.fit["best_epoch"] <= twin.fit["epochs_run"] <= 150
    test = twin.fidelity["test"]
    assert test["n"] == 450 and len(test["nmse"]) == record.n_out == 9
    assert test["nmse_overall"] < 0.05  # a smooth 8 -> 9 device is easy with 2100 samples
    assert test["nmse_overall"] >= test["nmse_noise_floor"]
    assert twin.source["record_fingerprint"] == record.fingerprint()
    assert twin.source["device"]["kind"] == "sim:optical"
    assert twin.source["record_provenance"]["source"] == "calibrate"
    # early stopping: a small patience ends long before the epoch budget
    quick = fit_surrogate(record, progress=False, hidden=[16], epochs=500, patience=2, lr=0.05)
    assert quick.fit["epochs_run"] < 500
    assert quick.fit["epochs_run"] - quick.fit["best_epoch"] == 2


def test_fit_is_reproducible_and_the_file_holds_everything(record, twin):
    again = fit_surrogate(record, out=None, progress=False, fourier=1, **FAST)
    x = torch.rand(5, 8)
    with torch.no_grad():
        torch.testing.assert_close(again.predict(x), twin.predict(x))
    loaded = Twin.load(twin.path)  # weights_only load: no code in the file
    with torch.no_grad():
        torch.testing.assert_close(loaded.predict(x), twin.predict(x))
    assert loaded.fidelity == twin.fidelity and loaded.source == twin.source
    assert loaded.fit["settings"]["fourier"] == 1 and loaded.fit["settings"]["hidden"] == [64, 64]
    with pytest.raises(ValueError, match="too few"):
        fit_surrogate(calibrate(make_device(SMALL), samples=8, repeats=0, progress=False))
    with pytest.raises(ValueError, match="activation 'cubic' is unknown"):
        FitSettings(activation="cubic")


def test_surrogate_is_a_device(twin):
    sur = make_device({"kind": "surrogate", "path": str(twin.path)})
    assert (sur.spec.n_in, sur.spec.n_out, sur.spec.name) == (8, 9, "surrogate")
    x = torch.rand(6, 8, requires_grad=True)
    y = sur(x)
    assert not y.requires_grad and y.shape == (6, 9) and sur.accounting.samples == 6
    g = torch.autograd.grad(sur.forward_with_grad(x).sum(), x)[0]
    assert g.abs().sum() > 0
    with pytest.raises(ValueError, match="outside the allowed domain"):
        sur(torch.full((1, 8), 1.5))
    # it reproduces the device it twins, to within the fidelity figure
    dev = make_device(SMALL)
    xt = torch.rand(400, 8)
    nmse = ((sur(xt) - dev(xt)) ** 2).mean(0) / dev(xt).var(0)
    assert nmse.mean() < 0.1
    # the description rebuilds it
    again = make_device(sur.describe())
    torch.testing.assert_close(again(xt), sur(xt))
    with pytest.raises(ValueError, match=r"fitted to a device with 8 inputs, but n_in=12"):
        make_device({"kind": "surrogate", "path": str(twin.path), "n_in": 12})
    with pytest.raises(ValueError, match="unknown parameter"):
        make_device({"kind": "surrogate", "path": str(twin.path), "camera_shape": [3, 3]})
    with pytest.raises(FileNotFoundError):
        make_device({"kind": "surrogate", "path": "no/such/twin.pt"})


def test_measured_noise_and_seeded_streams(twin):
    noisy = make_device({"kind": "surrogate", "path": str(twin.path), "noise": "measured", "seed": 4})
    clean = make_device({"kind": "surrogate", "path": str(twin.path)})
    x = torch.rand(1, 8).repeat(4000, 1)
    resid = noisy(x) - clean(x)
    np.testing.assert_allclose(resid.std(0).numpy(), twin.noise_floor.numpy(), rtol=0.1)
    twin2 = make_device({"kind": "surrogate", "path": str(twin.path), "noise": "measured", "seed": 4})
    torch.testing.assert_close(twin2(x[:10]), make_device(noisy.describe())(x[:10]))


def test_surrogate_of_a_device_is_fitted_once_and_cached(tmp_path):
    desc = {"kind": "surrogate", "of": SMALL, "n_in": 8, "seed": 1003, "cache": str(tmp_path),
            "calibration": {"samples": 1500}, "fit": FAST}
    first = make_device(desc)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and {p.rsplit(".", 1)[1] for p in files} == {"h5", "pt"}
    rec = read_record(next(tmp_path.glob("*.h5")))
    assert rec.device["seed"] == 1003  # the very device block 3 of seed 1 would have
    mtime = next(tmp_path.glob("*.pt")).stat().st_mtime_ns
    again = make_device(desc)
    assert next(tmp_path.glob("*.pt")).stat().st_mtime_ns == mtime  # loaded, not refitted
    x = torch.rand(4, 8)
    torch.testing.assert_close(first(x), again(x))
    # the same file asked for with other settings is refused, not silently reused
    with pytest.raises(ValueError, match="different source or with different settings"):
        make_device({**desc, "path": first.describe()["path"], "fit": {**FAST, "epochs": 3}})
    # unknown keys are the twinned device's parameters
    wide = make_device({**desc, "n_in": 5, "camera_shape": [2, 2]})
    assert (wide.spec.n_in, wide.spec.n_out) == (5, 4)


def test_a_preset_runs_on_surrogates_of_its_devices(tiny_config, tmp_path):
    cfg = tiny_config
    sim = dict(cfg["device"])
    cfg["device"] = {"kind": "surrogate", "of": sim, "cache": str(tmp_path / "twins"),
                     "calibration": {"samples": 1500, "repeats": 3},
                     "fit": {"hidden": [64], "epochs": 40, "patience": 5}}
    res = run(cfg, tmp_path / "run.h5", progress=False)
    rec = read_run(res.path)
    assert rec["status"] == "complete" and rec["devices"][0]["kind"] == "surrogate"
    assert len(list((tmp_path / "twins").glob("*.pt"))) == 2  # one twin per block
    assert res.test_acc > 0.25  # well above chance (0.1) after 4 epochs on rough twins


def test_an_imported_csv_trains_on_the_vowel_task_with_one_command(tmp_path, monkeypatch):
    from physnn.experiments import load_config
    from physnn.experiments.runner import load_data

    cavity = make_device({"kind": "sim:acoustic", "n_in": 20, "seed": 0})
    data = load_data(load_config("vowels-acoustic"), 0)
    g = torch.Generator().manual_seed(0)
    x = data.x_train[torch.randint(data.x_train.shape[0], (400,), generator=g)]
    x[:, :7] = 0
    x[torch.arange(400), torch.randint(7, (400,), generator=g)] = 1.0  # label overlay
    x = torch.cat([x, torch.rand(400, 20, generator=g)]).clamp(0, 1)
    y = cavity(x)
    header = [f"in_{i}" for i in range(20)] + [f"out_{i}" for i in range(y.shape[1])]
    rows = [",".join(f"{v:.7g}" for v in row) for row in torch.cat([x, y], 1).tolist()]
    (tmp_path / "pairs.csv").write_text(",".join(header) + "\n" + "\n".join(rows) + "\n")
    monkeypatch.chdir(tmp_path)
    code = main(["train", "vowels-acoustic", "--set", "device.kind=surrogate",
                 "--set", "device.record=pairs.csv", "--set", "device.fit={hidden=[64], epochs=60}",
                 "--epochs", "40", "--threads", "1", "--no-progress", "--out", "runs"])
    assert code == 0
    log = read_run(tmp_path / "runs" / "vowels-acoustic+kind=surrogate,record=pairs.csv,"
                   "fit=hidden=64,epochs=60" / "seed0.h5")
    assert log["status"] == "complete" and log["devices"][0]["kind"] == "surrogate"
    assert log["devices"][0]["record"].endswith("pairs.csv")
    assert log["devices"][0]["noise"] == "none"  # issue 19: the preset's readout noise is not added
    acc = log["metrics"]["test_acc"][-1]
    assert acc > 0.4, acc  # 7 classes: chance is 0.14
    assert len(list((tmp_path / "twins").glob("pairs-*.pt"))) == 1  # one twin for both blocks


def test_fit_command(tmp_path, record, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["fit", str(record.path), "--out", "t.pt", "--hidden", "32", "--epochs", "30",
                 "--no-progress"])
    assert code == 0
    assert "held-out test split (450 samples): pooled NMSE" in capsys.readouterr().out  # issue 19
    assert Surrogate(path=tmp_path / "t.pt").twin.fit["settings"]["hidden"] == [32]
    assert main(["fit", "nope.h5", "--out", "t.pt"]) == 2
    assert "does not exist" in capsys.readouterr().err


# -- issue 19: honest twins --------------------------------------------------------------------


def test_pooled_nmse_is_the_headline_and_near_constant_outputs_are_named():  # issue 19
    g = np.random.default_rng(0)
    n = 1000
    signal = g.normal(size=(n, 3)) * [1.0, 10.0, 100.0]  # three orders of magnitude
    flat = 5.0 + g.normal(size=(n, 3)) * [1e-4, 3e-4, 0.0]  # near-constant, noisy / constant
    target = np.c_[signal[:, :1], flat[:, :2], signal[:, 1:], flat[:, 2:]]
    pred = target + g.normal(size=target.shape) * [0.05, 0, 0, 0.5, 5.0, 0]
    pred[:, [1, 2]] = target[:, [1, 2]].mean(0)  # the noise of a flat channel is unpredictable
    f = fidelity(pred, target)
    sse, ss = ((pred - target) ** 2).sum(), ((target - target.mean(0)) ** 2).sum()
    per = ((pred - target) ** 2).mean(0)[:5] / target.var(0)[:5]
    np.testing.assert_allclose(f["nmse_pooled"], sse / ss)
    np.testing.assert_allclose(f["r2_pooled"], 1 - sse / ss)
    np.testing.assert_allclose(f["nmse_overall"], per.mean())
    assert f["nmse_pooled"] < 0.01 < 0.3 < f["nmse_overall"]  # the flat channels dominate it
    assert f["near_constant"] == [1, 2, 5] and f["constant_outputs"] == 1
    np.testing.assert_allclose(f["nmse_overall_without_near_constant"], per[[0, 3, 4]].mean())


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """A tiny twin of imported pairs: 3 signal outputs, 2 near-constant noisy ones."""
    folder = tmp_path_factory.mktemp("measured")
    g = np.random.default_rng(3)
    x = g.uniform(0, 1, (600, 4))
    y = np.c_[x @ [1.0, -1, 0.5, 2], 10 * x[:, 0] * x[:, 1], 0.3 * x[:, 2:].sum(1),
              5 + 1e-5 * g.normal(size=(600, 2))]
    np.savez(folder / "pairs.npz", inputs=x, outputs=y)
    assert main(["import", str(folder / "pairs.npz"), "--out", str(folder / "rec.h5"),
                 "--domain", "0,1", "--no-plot"]) == 0
    return fit_surrogate(folder / "rec.h5", out=folder / "twin.pt", progress=False,
                         hidden=[32], epochs=60, patience=10, lr=1e-2)


def test_fit_names_near_constant_outputs_and_stores_the_pooled_figures(measured):  # issue 19
    test = Twin.load(measured.path).fidelity["test"]  # stored in the twin file
    assert test["near_constant"] == [3, 4]
    assert test["nmse_pooled"] < 0.1 < test["nmse_overall"]
    np.testing.assert_allclose(test["r2_pooled"], 1 - test["nmse_pooled"])
    lines = measured.fidelity_text().splitlines()
    assert lines[1].startswith(f"held-out test split (90 samples): pooled NMSE "
                               f"{test['nmse_pooled']:.4g} (R^2 {test['r2_pooled']:.4f}")
    assert lines[2].startswith(f"per-output mean NMSE {test['nmse_overall']:.4g}")
    assert any(line.startswith("2 near-constant outputs") and line.split(": ")[1].startswith("3, 4;")
               for line in lines)


def test_a_twin_of_measured_data_adds_no_synthetic_noise_unless_asked(measured, twin, caplog):
    # issue 19: a preset's noise, kept by --set device.kind=surrogate, came on top of real data
    noise = [{"kind": "readout", "sigma": 0.5}]
    base = {"kind": "surrogate", "path": str(measured.path), "seed": 2}
    x = torch.rand(50, 4)
    with caplog.at_level("WARNING", logger="physnn.surrogate"):
        quiet = make_device({**base, "noise": noise})
    assert any("fitted to measured data" in r.getMessage() and "ignored" in r.getMessage()
               for r in caplog.records)
    torch.testing.assert_close(quiet(x), make_device(base)(x))
    d = quiet.describe()
    assert d["noise"] == "none" and d["synthetic_noise"] is False  # the run log says so
    caplog.clear()
    noisy = make_device({**base, "noise": noise, "synthetic_noise": True})
    assert not caplog.records
    assert (noisy(x) - make_device(base)(x)).std() > 0.3
    assert noisy.describe()["noise"][0]["sigma"] == 0.5 and noisy.describe()["synthetic_noise"]
    torch.testing.assert_close(make_device(noisy.describe())(x), make_device(noisy.describe())(x))
    # a twin of a simulator keeps its noise as configured (a simulated stand-in for readout)
    sim = make_device({"kind": "surrogate", "path": str(twin.path), "noise": noise})
    assert sim.describe()["noise"][0]["sigma"] == 0.5 and "synthetic_noise" not in sim.describe()
    assert make_device({"kind": "surrogate", "path": str(twin.path)}).describe()["noise"] == "none"
    with pytest.raises(ValueError, match="synthetic_noise must be true or false"):
        make_device({**base, "synthetic_noise": "yes"})


def test_device_command_describes_a_twin_file(measured):  # issue 19
    import json
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "physnn", "device", str(measured.path)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    shown = json.loads(p.stdout)
    assert shown["spec"]["n_in"] == 4 and shown["description"]["kind"] == "surrogate"
    about = shown["about"]
    assert about["twin_of"]["n_out"] == 5 and about["measured_data"] is True
    assert about["fitted_on"]["record_path"].endswith("rec.h5")
    assert about["fitted_on"]["split"] == {"train": 420, "validation": 90, "test": 90}
    assert about["test_fidelity"]["nmse_pooled"] == measured.fidelity["test"]["nmse_pooled"]
    assert about["test_fidelity"]["near_constant"] == [3, 4] and about["noise"] == "none"
