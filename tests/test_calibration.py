"""Calibration: sweeps, noise floor, SNR, dynamic range, saturation, drift; the HDF5 record
(atomic, provenance); importing measured pairs; checking a device against its record."""

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import h5py
import numpy as np
import pytest
import torch

from physnn.cli import main
from physnn.core import Device, DeviceSpec, Effect, NonIdealDevice, make_device
from physnn.twins import (
    calibrate,
    check,
    import_measurements,
    plot_record,
    read_record,
    write_record,
)

SMALL = {"kind": "sim:optical", "n_in": 16, "camera_shape": [4, 4]}
QUICK = {"repeats": 10, "repeat_inputs": 32, "drift_inputs": 16, "drift_checks": 10}
REFERENCE = Path(__file__).parent.parent / "calibration" / "reference" / "optical-8in.hdf5"


def device(sigma=0.0, rate=0.0, seed=0, **kw):
    outputs = [{"kind": "readout", "sigma": sigma}]
    if rate:
        outputs.append({"kind": "linear_drift", "rate": rate})
    return make_device({**SMALL, "seed": seed, "outputs": outputs, **kw})


@pytest.mark.parametrize("sigma, rate", [(0.05, 2e-5), (0.02, -1e-5), (0.1, 0.0)])
def test_calibration_reports_the_noise_and_drift_that_were_set(sigma, rate):
    rec = calibrate(device(sigma, rate), samples=5000, progress=False, **QUICK)
    s = rec.summary()
    assert s["noise_source"] == "repeats"
    assert abs(s["noise_floor_rms"] - sigma) < 0.1 * sigma
    assert np.all(np.abs(s["noise_floor"] - sigma) < 0.3 * sigma)  # each channel, 287 dof
    if rate:
        assert abs(s["drift_rate_common"] - rate) < 0.1 * abs(rate)
        assert s["drifting_channels"] == rec.n_out
        # the drift over the calibration, in noise floors, is what the rate implies
        span = rec.drift.query_index[-1] - rec.drift.query_index[0]
        np.testing.assert_allclose(np.median(s["drift_rel_noise"]), abs(rate) * span / sigma, rtol=0.15)
    else:
        assert abs(s["drift_rate_common"]) < 4 * s["drift_rate_common_stderr"]
        assert s["drifting_channels"] == 0
    # SNR: the sweep's spread over the noise floor
    signal = np.sqrt(rec.outputs.var(0, ddof=1) - s["noise_floor"] ** 2)
    np.testing.assert_allclose(s["snr"], signal / s["noise_floor"], rtol=1e-9)


def test_noiseless_device_has_zero_noise_floor_and_the_plan_is_as_documented():
    dev = device(0.0)
    rec = calibrate(dev, samples=300, repeats=4, repeat_inputs=8, drift_inputs=5, drift_checks=3,
                    response_coordinates=2, response_points=7, progress=False)
    assert np.all(rec.summary()["noise_floor"] < 1e-6)
    assert rec.repeats.outputs.shape == (4, 8, 16)
    assert rec.drift.outputs.shape == (4, 5, 16)  # before the sweep + after each of 3 chunks
    assert rec.response.inputs.shape == (14, 16)
    # query clock: every sample the device measured, in order
    total = 5 * 4 + 4 * 8 + 14 + 300
    assert dev.accounting.samples == total
    # drift refs (5) at 0; repeats 5..36; response 37..50; sweep chunks of 100, each followed by
    # a checkpoint
    assert rec.drift.query_index.tolist() == [0, 151, 256, 361] and total == 366
    assert rec.sweep.query_index[0] == 51 and rec.sweep.query_index[-1] == 360
    # response curves step one coordinate, everything else held
    x, c = rec.response.inputs, rec.response.extras["coordinate"]
    for j in np.unique(c):
        rows = x[c == j]
        others = np.delete(rows, j, axis=1)
        assert np.all(others == others[0]) and np.allclose(rows[:, j], np.linspace(0, 1, 7))


def test_sweep_over_discrete_levels_uses_each_level_equally():
    dev = make_device({"kind": "sim:microwave", "n_in": 6, "n_out": 4})
    rec = calibrate(dev, samples=1200, repeats=0, drift_inputs=0, response_coordinates=1,
                    progress=False)
    levels, counts = np.unique(rec.inputs, return_counts=True)
    assert levels.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert counts.min() > 0.2 * rec.inputs.size  # uniform over levels, ends included
    assert np.unique(rec.response.extras["value"]).tolist() == [0.0, 1.0, 2.0, 3.0]
    assert rec.spec["domain"]["levels"] == [0.0, 1.0, 2.0, 3.0]
    assert rec.repeats is None and rec.drift is None
    assert rec.summary()["noise_source"] in ("none", "duplicate inputs")


def test_saturation_and_dynamic_range():
    clipped = device(0.0, outputs=[{"kind": "readout", "sigma": 0.02},
                                   {"kind": "saturation", "level": 1.0, "mode": "hard"}])
    free = device(0.02)
    s_clip = calibrate(clipped, samples=2000, progress=False).summary()
    s_free = calibrate(free, samples=2000, progress=False).summary()
    assert s_clip["saturated_channels"] == 16 and np.all(s_clip["out_max"] <= 1.0)
    assert s_free["saturated_channels"] == 0
    span = s_free["out_max"] - s_free["out_min"]
    np.testing.assert_allclose(s_free["dynamic_range_db"], 20 * np.log10(span / s_free["noise_floor"]))


def test_record_round_trip_provenance_and_plot(tmp_path):
    dev = device(0.05, seed=7)
    rec = calibrate(dev, samples=800, out=tmp_path / "r.h5", command="pytest", progress=False)
    back = read_record(tmp_path / "r.h5")
    assert back.fingerprint() == rec.fingerprint() and back.status == "complete"
    for name in ("sweep", "repeats", "drift", "response"):
        np.testing.assert_array_equal(getattr(back, name).outputs, getattr(rec, name).outputs)
    p = back.provenance
    assert p["seed"] == dev.seed and p["command"] == "pytest" and p["source"] == "calibrate"
    assert p["physnn_version"] and p["created"]
    assert back.device["kind"] == "sim:optical" and back.device["seed"] == 7
    assert back.device["outputs"][0]["sigma"] == 0.05
    with h5py.File(tmp_path / "r.h5") as f:  # the stored summary is the recomputed one
        assert f.attrs["status"] == "complete"
        np.testing.assert_allclose(f["summary/noise_floor"][()], rec.summary()["noise_floor"])
        assert f["summary"].attrs["noise_source"] == "repeats"
    assert list(tmp_path.glob("*.part")) == []
    png = plot_record(back, tmp_path / "r.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class Disconnects(Device):
    """A device that stops answering after ``calls`` calls, as hardware losing its link does."""

    def __init__(self, calls):
        super().__init__(DeviceSpec("test:flaky", 4, 3))
        self.left = calls

    def _measure(self, x):
        self.left -= 1
        if self.left < 0:
            raise RuntimeError("link lost")
        return x[:, :3] * 2


def test_an_interrupted_calibration_never_leaves_a_complete_looking_file(tmp_path):
    out = tmp_path / "r.h5"
    with pytest.raises(RuntimeError, match="link lost"):
        calibrate(Disconnects(calls=20), samples=1000, batch_size=50, out=out, progress=False)
    assert out.exists()  # progress so far, marked as such
    with pytest.raises(ValueError, match="incomplete calibration"):
        read_record(out)
    partial = read_record(out, allow_incomplete=True)
    assert partial.status == "running" and 0 < partial.inputs.shape[0] < 1000
    assert list(tmp_path.glob("*.part")) == []
    # a recalibration that dies before its first checkpoint leaves no file at all, not the
    # older record looking current
    calibrate(Disconnects(calls=1000), samples=100, out=tmp_path / "s.h5", progress=False)
    assert read_record(tmp_path / "s.h5").status == "complete"
    with pytest.raises(RuntimeError):
        calibrate(Disconnects(calls=3), samples=1000, out=tmp_path / "s.h5", progress=False)
    assert not (tmp_path / "s.h5").exists()


def test_reading_what_is_not_a_record(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_record(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        read_record(tmp_path / "junk.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = [1, 2]
    with pytest.raises(ValueError, match="not a physnn calibration record"):
        read_record(tmp_path / "other.h5")
    with pytest.raises(ValueError, match=".h5"):
        write_record(tmp_path / "r.csv", calibrate(device(), samples=20, progress=False))


def test_reference_record_in_the_repository_still_reads():
    rec = read_record(REFERENCE)
    assert REFERENCE.stat().st_size < 200_000
    assert rec.n_in == 8 and rec.device["kind"] == "sim:optical"
    with h5py.File(REFERENCE) as f:
        np.testing.assert_allclose(f["summary/noise_floor"][()], rec.summary()["noise_floor"])
    assert abs(rec.summary()["noise_floor_rms"] - 0.05) < 0.005  # it was made with sigma 0.05


# -- import ----------------------------------------------------------------------------------------


def pairs(n=50, n_in=3, n_out=2, seed=0):
    g = np.random.default_rng(seed)
    x = g.uniform(0, 1, (n, n_in))
    return x, np.c_[x.sum(1), x[:, 0] ** 2][:, :n_out] + 0.0 * g.normal(size=(n, n_out))


def write_csv(path, a, header=None):
    lines = [",".join(header)] if header else []
    lines += [",".join(repr(float(v)) for v in row) for row in a]
    path.write_text("\n".join(lines) + "\n")


def test_import_csv_npz_hdf5_give_the_same_record(tmp_path):
    x, y = pairs()
    write_csv(tmp_path / "in.csv", x)
    write_csv(tmp_path / "out.csv", y, header=["a", "b"])
    write_csv(tmp_path / "both.csv", np.c_[y, x],
              header=["out_0", "out_1", "in_0", "in_1", "in_2"])
    np.savez(tmp_path / "p.npz", inputs=x, outputs=y)
    with h5py.File(tmp_path / "p.h5", "w") as f:
        f["inputs"], f["outputs"] = x, y
    recs = [
        import_measurements(tmp_path / "in.csv", tmp_path / "out.csv", domain=(0, 1)),
        import_measurements(tmp_path / "both.csv", domain=(0, 1)),
        import_measurements(tmp_path / "p.npz", domain=(0, 1)),
        import_measurements(tmp_path / "p.h5", domain=(0, 1)),
    ]
    for r in recs:
        np.testing.assert_allclose(r.inputs, x)
        np.testing.assert_allclose(r.outputs, y)
        assert r.provenance["source"] == "import" and r.device is None
    assert recs[0].fingerprint() == recs[2].fingerprint()
    write_record(tmp_path / "r.h5", recs[1])
    back = import_measurements(tmp_path / "r.h5")  # a record imports as itself
    assert back.fingerprint() == recs[1].fingerprint()
    assert back.provenance["origin"]["sha256"][0] == recs[1].provenance["origin"]["sha256"][0]


def test_import_infers_the_domain_and_noise_from_duplicates(tmp_path):
    g = np.random.default_rng(1)
    x = g.integers(0, 4, (40, 2)).astype(float)
    x = np.r_[x, x, x]  # every input measured three times
    y = x @ [[1.0], [2.0]] + g.normal(0, 0.1, (120, 1))
    np.savez(tmp_path / "p.npz", inputs=x, outputs=y)
    rec = import_measurements(tmp_path / "p.npz")
    assert rec.domain.levels == (0.0, 1.0, 2.0, 3.0)
    s = rec.summary()
    assert s["noise_source"] == "duplicate inputs" and abs(s["noise_floor_rms"] - 0.1) < 0.03
    xc = g.uniform(-2, 5, (30, 2))
    np.savez(tmp_path / "c.npz", inputs=xc, outputs=xc[:, :1])
    dom = import_measurements(tmp_path / "c.npz").domain
    assert (dom.lo, dom.hi) == (xc.min(), xc.max()) and dom.levels is None


def test_import_errors_name_what_is_wrong(tmp_path):
    x, y = pairs()
    write_csv(tmp_path / "in.csv", x)
    write_csv(tmp_path / "short.csv", y[:-1])
    with pytest.raises(ValueError, match="inputs have 50 rows but outputs have 49"):
        import_measurements(tmp_path / "in.csv", tmp_path / "short.csv")
    bad = y.copy()
    bad[7, 1] = np.nan
    write_csv(tmp_path / "nan.csv", bad)
    with pytest.raises(ValueError, match=r"outputs\[7, 1\] is nan"):
        import_measurements(tmp_path / "in.csv", tmp_path / "nan.csv")
    (tmp_path / "ragged.csv").write_text("1,2,3\n4,5,6\n7,8\n")
    with pytest.raises(ValueError, match="line 3: 2 values, expected 3"):
        import_measurements(tmp_path / "ragged.csv", tmp_path / "ragged.csv")
    (tmp_path / "word.csv").write_text("in_0,out_0\n1,2\n3,abc\n")
    with pytest.raises(ValueError, match="line 3, column out_0: 'abc' is not a number"):
        import_measurements(tmp_path / "word.csv")
    (tmp_path / "gap.csv").write_text("in_0,in_2,out_0\n1,2,3\n")
    with pytest.raises(ValueError, match="missing in_1"):
        import_measurements(tmp_path / "gap.csv")
    (tmp_path / "nohead.csv").write_text("1,2\n3,4\n")
    with pytest.raises(ValueError, match="no header"):
        import_measurements(tmp_path / "nohead.csv")
    with pytest.raises(ValueError, match="expected n_in=4 but the data are 3 wide"):
        import_measurements(tmp_path / "in.csv", tmp_path / "in.csv", n_in=4)
    with pytest.raises(ValueError, match=r"outside the domain \[0, 0.5\]"):
        import_measurements(tmp_path / "in.csv", tmp_path / "in.csv", domain=(0, 0.5))
    np.savez(tmp_path / "k.npz", x=x, y=y)
    with pytest.raises(ValueError, match=r"no array 'inputs'; it holds \['x', 'y'\]"):
        import_measurements(tmp_path / "k.npz")
    np.savez(tmp_path / "flat.npz", inputs=x[:, 0], outputs=y)
    with pytest.raises(ValueError, match="inputs must be 2-D"):
        import_measurements(tmp_path / "flat.npz")
    with pytest.raises(FileNotFoundError):
        import_measurements(tmp_path / "none.csv")
    with pytest.raises(ValueError, match="suffix"):
        import_measurements(tmp_path / "data.xlsx")


def test_import_refuses_bad_files_and_flags(tmp_path, capsys, monkeypatch):
    # issue 18: an empty .npz was an EOFError traceback, a Latin-1 CSV a UnicodeDecodeError
    # without the file's name, --domain a,b a float() error without the flag's name
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty.npz is empty \(0 bytes\)"):
        import_measurements(tmp_path / "empty.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="junk.npz is not a readable .npz file"):
        import_measurements(tmp_path / "junk.npz")
    (tmp_path / "latin1.csv").write_bytes(b"in_0,out_0\n0,1\n1,caf\xe9\n")
    with pytest.raises(ValueError, match=r"latin1.csv is not UTF-8 text: byte 0xe9 at offset 20 "
                                         r"\(line 3\)"):
        import_measurements(tmp_path / "latin1.csv")
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbfin_0,out_0\n0,1\n1,2\n")  # Excel's UTF-8
    assert import_measurements(tmp_path / "bom.csv").inputs.shape == (2, 1)
    cli = {"cwd": tmp_path, "capsys": capsys, "monkeypatch": monkeypatch}
    for flag, value, message in [
        ("--domain", "a,b", "--domain expects two numbers LO,HI with LO < HI (e.g. 0,1), got 'a,b'"),
        ("--domain", "1,0", "--domain expects two numbers LO,HI with LO < HI (e.g. 0,1), got '1,0'"),
        ("--domain", "0,1,2", "--domain expects two numbers LO,HI"),
        ("--domain", "0,inf", "'0,inf' holds a value that is not finite"),
        ("--levels", "0,x", "--levels expects at least two distinct numbers A,B,... (e.g. "
                            "0,1,2,3), got '0,x'"),
        ("--levels", "1", "--levels expects at least two distinct numbers"),
        ("--levels", "0,1,1", "--levels expects at least two distinct numbers"),
        ("--levels", "0,nan", "'0,nan' holds a value that is not finite"),
    ]:
        p = physnn("import", "bom.csv", "--out", "r.h5", "--no-plot", flag, value, **cli)
        assert p.returncode == 2 and p.stderr.startswith("physnn import: error: "), p.stderr
        assert message in p.stderr and len(p.stderr.splitlines()) == 1, p.stderr
    p = physnn("import", "latin1.csv", "--out", "r.h5", "--no-plot", **cli)
    assert p.returncode == 2 and "latin1.csv is not UTF-8 text" in p.stderr


# -- check -----------------------------------------------------------------------------------------


@dataclass
class ChannelOffset(Effect):
    """Moves chosen output channels by a fixed amount (a knocked detector, a bent fibre)."""

    kind: ClassVar[str] = "channel_offset"
    channels: tuple = ()
    offset: float = 0.0

    def __call__(self, y, gen):
        y = y.clone()
        y[:, list(self.channels)] += self.offset
        return y


def test_check_finds_the_channels_that_moved():
    dev = device(0.05, seed=3)
    rec = calibrate(dev, samples=1000, progress=False)
    clean = check(dev, rec, repeats=3)
    assert not clean.drifted and clean.reference == "drift" and clean.n_inputs == 16
    assert np.all(clean.rel_noise < 1.0)
    moved = NonIdealDevice(dev, outputs=[ChannelOffset(channels=(2, 9), offset=0.1)])
    rep = check(moved, rec, repeats=3)
    assert np.flatnonzero(rep.moved).tolist() == [2, 9]
    np.testing.assert_allclose(rep.shift[[2, 9]], 0.1, atol=0.03)
    assert np.all(rep.rel_noise[[2, 9]] > 1.5)
    assert "2 of 16 channels moved" in rep.text()
    assert json.loads(rep.json())["moved_channels"] == [2, 9]


def test_check_sees_drift_accumulate_and_rejects_another_device():
    dev = device(0.05, rate=2e-5, seed=4)
    rec = calibrate(dev, samples=2000, progress=False)
    dev(torch.rand(3000, 16))  # the device keeps drifting after the calibration
    rep = check(dev, rec)
    assert rep.drifted and rep.moved.all()
    assert np.all(rep.shift > 0.05)  # at least 3000 queries * 2e-5
    with pytest.raises(ValueError, match="not the same device"):
        check(make_device({**SMALL, "n_in": 9}), rec)


def test_check_against_imported_pairs_measures_the_noise_now(tmp_path):
    dev = device(0.05, seed=5)
    x = torch.rand(64, 16)
    rec = import_measurements_from(dev, x, tmp_path)
    assert rec.summary()["noise_source"] == "none"
    rep = check(dev, rec, repeats=4)
    assert rep.noise_source.startswith("measured now") and not rep.drifted
    with pytest.raises(ValueError, match="repeats >= 2"):
        check(dev, rec, repeats=1)


def import_measurements_from(dev, x, folder):
    np.savez(folder / "m.npz", inputs=x.numpy(), outputs=dev(x).numpy())
    return import_measurements(folder / "m.npz", domain=(0, 1))


# -- command line ----------------------------------------------------------------------------------


def physnn(*args, cwd, capsys, monkeypatch):
    """Run the command line in this process (as ``physnn ARGS`` in ``cwd``)."""
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)


def test_calibrate_import_check_commands(tmp_path, capsys, monkeypatch):
    cli = {"cwd": tmp_path, "capsys": capsys, "monkeypatch": monkeypatch}
    p = physnn("calibrate", "sim:optical", "--set", "n_in=8", "--set", "camera_shape=[3, 3]",
               "--set", 'outputs=[{kind="readout", sigma=0.05}]', "--samples", "600",
               "--out", "r.h5", "--no-progress", **cli)
    assert p.returncode == 0, p.stderr
    assert "noise floor (repeats" in p.stdout and "r.png" in p.stdout
    rec = read_record(tmp_path / "r.h5")
    assert rec.inputs.shape == (600, 8) and rec.provenance["command"].startswith("physnn calibrate")
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"

    ok = physnn("check", "--against", "r.h5", **cli)  # device rebuilt from the record
    assert ok.returncode == 0, ok.stderr + ok.stdout
    assert "no drift" in ok.stdout
    moved = physnn("check", "--against", "r.h5", "--set", "gain=12", "--json", **cli)
    assert moved.returncode == 1, moved.stderr
    assert json.loads(moved.stdout)["drifted"]

    x, y = pairs(n=30)
    write_csv(tmp_path / "m.csv", np.c_[x, y], header=["in_0", "in_1", "in_2", "out_0", "out_1"])
    imp = physnn("import", "m.csv", "--out", "m.h5", "--domain", "0,1", "--units", "V", **cli)
    assert imp.returncode == 0, imp.stderr
    assert read_record(tmp_path / "m.h5").spec["output_units"] == "V"
    bad = physnn("import", "m.csv", "--out", "m2.h5", "--n-out", "5", **cli)
    assert bad.returncode == 2 and "expected n_out=5" in bad.stderr and "Traceback" not in bad.stderr


# -- issue 19: imports that load but look wrong are warned about; every plot panel has content ---


def import_warnings(tmp_path, caplog, x, y, name="w"):
    np.savez(tmp_path / f"{name}.npz", inputs=x, outputs=y)
    caplog.clear()
    with caplog.at_level("WARNING", logger="physnn.import"):
        rec = import_measurements(tmp_path / f"{name}.npz")
    logged = [r.getMessage() for r in caplog.records if r.name == "physnn.import"]
    stored = rec.provenance["origin"]["warnings"]
    assert len(logged) == len(stored) and all(w in m for w, m in zip(stored, logged, strict=True))
    return stored


def test_import_warns_about_header_and_padding_rows(tmp_path, caplog):  # issue 19
    x, _ = pairs(n=50, n_in=4)
    y = np.c_[x @ [1.0, 2, 3, 4], x[:, :3] ** 2]
    assert import_warnings(tmp_path, caplog, x, y, "clean") == []
    k = np.arange(4.0)  # a header of column numbers, as pandas writes one: all numbers
    w = import_warnings(tmp_path, caplog, np.r_[[k], x], np.r_[[k], y], "header")
    assert len(w) == 2 and "first row of the inputs is 0, 1, 2, .., 3: column numbers" in w[0]
    assert "first row of the outputs" in w[1]
    w = import_warnings(tmp_path, caplog, np.r_[[np.zeros(4)], x], np.r_[[np.zeros(4)], y], "pad")
    assert w == ["the first row is all zeros, inputs and outputs: padding rather than a "
                 "measurement? remove it if so"]
    # a non-numeric first row is a header on purpose (read, not warned about); a non-numeric
    # row further down is an error naming its line
    write_csv(tmp_path / "h.csv", np.c_[x, y], header=[f"in_{i}" for i in range(4)]
              + [f"out_{i}" for i in range(4)])
    assert import_measurements(tmp_path / "h.csv").provenance["origin"]["warnings"] == []
    text = (tmp_path / "h.csv").read_text().splitlines()
    (tmp_path / "h2.csv").write_text("\n".join([*text[:5], text[0], *text[5:]]) + "\n")
    with pytest.raises(ValueError, match="line 6, column in_0: 'in_0' is not a number"):
        import_measurements(tmp_path / "h2.csv")


def test_import_warns_about_duplicate_rows_and_constant_columns(tmp_path, caplog):  # issue 19
    x, y = pairs(n=40, n_in=3, n_out=2)
    xd, yd = np.r_[x, x[[2, 5]]], np.r_[y, y[[2, 5]]]  # rows 40, 41 copy rows 2, 5
    w = import_warnings(tmp_path, caplog, xd, yd, "dup")
    assert w == ["2 of 42 rows repeat an earlier row exactly (inputs and outputs), first row 40 "
                 "= row 2 (0-based data rows): copied data? measured outputs never repeat exactly"]
    # the same inputs with other outputs are repeats (a noise floor), not copies
    assert import_warnings(tmp_path, caplog, xd, yd + np.r_[np.zeros((40, 2)), [[1e-3] * 2] * 2],
                           "rep") == []
    xc, yc = x.copy(), np.c_[y, np.full(40, 2.5)]
    xc[:, 1] = 0.5
    w = import_warnings(tmp_path, caplog, xc, yc, "const")
    assert w == ["1 constant input column(s) (zero spread): 1",
                 "1 constant output column(s) (zero spread): 2"]


def test_every_panel_of_an_import_plot_has_content(tmp_path):  # issue 19
    from physnn.twins.plot import record_figure

    x, y = pairs(n=300, n_in=3, n_out=2)
    y = np.c_[y, 1e-6 * np.random.default_rng(1).normal(size=300)]  # a near-constant channel
    np.savez(tmp_path / "p.npz", inputs=x, outputs=y)
    rec = import_measurements(tmp_path / "p.npz", domain=(0, 1))
    assert rec.response is None and rec.repeats is None and rec.drift is None
    fig = record_figure(rec)
    assert len(fig.axes) == 4
    for ax in fig.axes:  # data drawn, not only a "not measured" caption
        assert ax.lines or ax.collections or ax.images, ax.get_title()
        assert ax.get_title()
    spread = next(ax for ax in fig.axes if ax.get_title().startswith("output spread"))
    assert any("near-constant (1)" in t.get_text() for t in spread.get_legend().get_texts())
    assert plot_record(rec, tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_calibrate_inputs_file_in_each_format(tmp_path, capsys):
    from physnn.twins.sweep import read_inputs_file

    x = np.arange(6.0).reshape(3, 2) / 10
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", inputs=x)
    np.savez(tmp_path / "other.npz", outputs=x)
    np.savetxt(tmp_path / "x.csv", x, delimiter=",")
    for name in ("x.npy", "x.npz", "x.csv"):
        np.testing.assert_allclose(read_inputs_file(tmp_path / name), x)
    with pytest.raises(ValueError, match=r"other.npz has no array 'inputs'; it holds \['outputs'\]"):
        read_inputs_file(tmp_path / "other.npz")
    assert main(["calibrate", "sim:optical", "--inputs", str(tmp_path / "none.csv"),
                 "--out", str(tmp_path / "r.h5")]) == 2
    assert capsys.readouterr().err.strip().endswith("none.csv does not exist")
