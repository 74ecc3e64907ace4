"""Vowel data: the Hillenbrand reader, the wav reader, Peterson-Barney, the synthetic default."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import HILLENBRAND, needs_hillenbrand
from scipy.io import wavfile

from physnn.data import (
    DATASETS,
    load_vowels,
    read_hillenbrand_table,
    read_hillenbrand_wav,
    read_peterson_barney,
    stratified_split,
    synthesize_vowel_table,
)
from physnn.data.vowels import COLUMNS, FEATURES_12, TABLE_V, VOWELS_7
from physnn.experiments.reference import logistic_regression_accuracy

HEADER = """(c) 1995 James Hillenbrand
col1:  filename
col2:  duration in msec

  1    2   3    4    5    6    7    8    9   10    11  12   13    14  15   16
"""
ROW_W01AE = "w01ae 290 220  669 2349 2972 4240  670 2340 2980  700 2200 2950  760 2000 2900"
ROW_M02IY = "m02iy 250 140  342 2322 3000    0  340 2330 3010  345 2320 3000  350 2300 2990"


def _write(tmp_path: Path, *rows: str, header: str = HEADER, crlf: bool = False) -> Path:
    text = header + "\n".join(rows) + "\n"
    if crlf:
        text = text.replace("\n", " \r\n")
    f = tmp_path / "vowdata.dat"
    f.write_text(text, newline="")
    return f


def _lr(d) -> float:
    s = d.label_slots
    return logistic_regression_accuracy(
        d.x_train[:, s:].numpy(), d.y_train.numpy(), d.x_test[:, s:].numpy(),
        d.y_test.numpy(), 0,
    )


# ------------------------------------------------------------------ the table reader


def test_reader_parses_rows_and_zeros_become_nan(tmp_path):
    f = _write(tmp_path, ROW_W01AE, ROW_M02IY, crlf=True)
    for path in (f, tmp_path, str(tmp_path)):  # the file or the folder
        t = read_hillenbrand_table(path)
        assert len(t) == 2
        assert list(t.token) == ["w01ae", "m02iy"]
        assert list(t.group) == ["w", "m"] and list(t.speaker) == [1, 2]
        assert list(t.vowel) == ["ae", "iy"]
        assert set(t.columns) == set(COLUMNS)
        assert t["duration"][0] == 290 and t["F0"][0] == 220 and t["F4"][0] == 4240
        assert t["F1_20"][0] == 670 and t["F3_80"][0] == 2900
        assert np.isnan(t["F4"][1]) and not np.isnan(t["F4"][0])
        assert t.features().shape == (2, 12)
        assert t.features(["F1", "F2"]).tolist() == [[669, 2349], [342, 2322]]


def test_reader_subset(tmp_path):
    t = read_hillenbrand_table(_write(tmp_path, ROW_W01AE, ROW_M02IY))
    assert list(t.subset(groups="w").token) == ["w01ae"]
    assert list(t.subset(vowels=["iy"]).token) == ["m02iy"]
    assert len(t.subset(groups="w", vowels=["iy"])) == 0


@pytest.mark.parametrize(
    "bad, match",
    [
        (ROW_W01AE.replace(" 2972", ""), "expected a token name and 15 numbers"),
        (ROW_W01AE.replace("2972", "29x2"), "'29x2' is not a number"),
        (ROW_W01AE.replace("w01ae", "x01ae"), "not a token name"),
        (ROW_W01AE.replace(" 2972", " -2972"), ">= 0"),
    ],
)
def test_reader_malformed_line_names_its_line_number(tmp_path, bad, match):
    f = _write(tmp_path, ROW_W01AE, bad, ROW_M02IY)
    bad_line = HEADER.count("\n") + 2
    with pytest.raises(ValueError, match=match) as err:
        read_hillenbrand_table(f)
    assert f"line {bad_line}" in str(err.value)


def test_reader_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        read_hillenbrand_table(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no vowdata.dat"):
        read_hillenbrand_table(tmp_path)


def test_a_missing_relative_data_path_names_the_directory_it_was_looked_up_from(
        tmp_path, monkeypatch):
    """A preset's relative data.path (the wave presets') works only from the repository root."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        read_hillenbrand_table("../shared/data/hillenbrand")
    msg = str(err.value)
    assert f"looked up from {tmp_path}" in msg and "data.path=DIR" in msg and "\n" not in msg
    with pytest.raises(FileNotFoundError) as err:
        read_hillenbrand_table(tmp_path / "nowhere")
    assert "looked up from" not in str(err.value)  # an absolute path needs no directory


def test_reader_rejects_files_that_are_not_the_table(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("just some text\nwith no token lines\n")
    with pytest.raises(ValueError, match="not the Hillenbrand vowdata.dat table"):
        read_hillenbrand_table(f)
    empty = tmp_path / "empty.dat"
    empty.write_text("")
    with pytest.raises(ValueError, match="not the Hillenbrand"):
        read_hillenbrand_table(empty)
    wav = tmp_path / "w01ae.wav"
    wavfile.write(wav, 16000, np.zeros(160, dtype=np.int16))
    with pytest.raises(ValueError, match="binary"):
        read_hillenbrand_table(wav)


# -------------------------------------------------------------------- the wav reader


def test_wav_reader(tmp_path):
    a = (np.arange(400) % 50 * 100 - 2500).astype(np.int16)
    wavfile.write(tmp_path / "w01ae.wav", 16000, a)
    wavfile.write(tmp_path / "m02iy.wav", 16000, a[:200])
    rec = read_hillenbrand_wav(tmp_path)
    assert rec.names == ["m02iy", "w01ae"] and rec.sample_rate == 16000
    assert rec.signals[1].dtype == np.float32
    np.testing.assert_allclose(rec.signals[1], a / 32768.0)
    signals, rate, names = read_hillenbrand_wav(tmp_path, files=["w01ae.wav", "m02iy"])
    assert names == ["w01ae", "m02iy"] and [s.size for s in signals] == [400, 200]
    # a data folder holding wav/ works too
    (tmp_path / "data" / "wav").mkdir(parents=True)
    wavfile.write(tmp_path / "data" / "wav" / "w03uw.wav", 16000, a)
    assert read_hillenbrand_wav(tmp_path / "data").names == ["w03uw"]
    assert read_hillenbrand_wav(tmp_path / "data", files=["w03uw"]).names == ["w03uw"]


def test_wav_reader_rejects_wrong_formats(tmp_path):
    wavfile.write(tmp_path / "stereo.wav", 16000, np.zeros((100, 2), dtype=np.int16))
    with pytest.raises(ValueError, match="16-bit mono"):
        read_hillenbrand_wav(tmp_path, files=["stereo"])
    wavfile.write(tmp_path / "float.wav", 16000, np.zeros(100, dtype=np.float32))
    with pytest.raises(ValueError, match="16-bit mono"):
        read_hillenbrand_wav(tmp_path, files=["float"])
    (tmp_path / "text.wav").write_text("not audio at all")
    with pytest.raises(ValueError, match="not a RIFF/WAVE"):
        read_hillenbrand_wav(tmp_path, files=["text"])
    wavfile.write(tmp_path / "a.wav", 16000, np.zeros(100, dtype=np.int16))
    wavfile.write(tmp_path / "b.wav", 8000, np.zeros(100, dtype=np.int16))
    with pytest.raises(ValueError, match="sample rate"):
        read_hillenbrand_wav(tmp_path, files=["a", "b"])
    with pytest.raises(FileNotFoundError):
        read_hillenbrand_wav(tmp_path, files=["missing"])
    with pytest.raises(FileNotFoundError, match="never downloads"):
        read_hillenbrand_wav(tmp_path / "nowhere")


# ------------------------------------------------------------- loader arguments


def test_registry_and_argument_errors(tmp_path):
    assert DATASETS["vowels"] is load_vowels
    with pytest.raises(ValueError, match="needs path=.*never downloads"):
        load_vowels(source="hillenbrand")
    with pytest.raises(ValueError, match="only used with source='hillenbrand'"):
        load_vowels(path=tmp_path)
    with pytest.raises(ValueError, match="unknown vowel source"):
        load_vowels(source="timit")
    with pytest.raises(ValueError, match="unknown vowel codes"):
        load_vowels(vowels=["ae", "zz"])
    with pytest.raises(ValueError, match="scaling"):
        load_vowels(scaling="robust")
    with pytest.raises(ValueError, match="pad_to=10"):
        load_vowels(pad_to=10)  # 7 label slots + 12 features do not fit
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_vowels(source="hillenbrand", path=tmp_path / "nowhere")


def test_hillenbrand_loader_on_a_small_file(tmp_path):
    rows = []
    rng = np.random.default_rng(0)
    for spk in range(1, 11):
        for v, base in (("ae", (669, 2349, 2972)), ("iy", (437, 2761, 3372))):
            f = np.round(np.array(base) * np.exp(0.03 * rng.standard_normal(3))).astype(int)
            track = " ".join(str(a) for a in f)
            rows.append(f"w{spk:02d}{v} 300 220 {track} 4000 {track} {track} {track}")
    rows[0] = rows[0].replace(" 4000 ", " 0 ")  # F4 is not a feature: the token stays
    parts = rows[1].split()
    parts[4] = "0"  # steady-state F2 missing
    rows[1] = " ".join(parts)
    _write(tmp_path, *rows)
    d = load_vowels(source="hillenbrand", path=tmp_path, vowels=["ae", "iy"], seed=1)
    assert d.name == "vowels-hillenbrand" and d.class_names == ["ae", "iy"]
    assert len(d.y_train) + len(d.y_test) == 19  # one token dropped
    d = load_vowels(
        source="hillenbrand", path=tmp_path, vowels=["ae", "iy"], seed=1, missing="impute"
    )
    assert len(d.y_train) + len(d.y_test) == 20
    assert torch.isfinite(d.x_train).all() and torch.isfinite(d.x_test).all()
    with pytest.raises(ValueError, match="unknown vowel"):
        load_vowels(source="hillenbrand", path=tmp_path, vowels=["ae", "uw"])


# --------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def real_table():
    return read_hillenbrand_table(HILLENBRAND)


@needs_hillenbrand
def test_real_table_counts(real_table):
    t = real_table
    assert len(t) == 1668
    speakers = {g: len(set(t.speaker[t.group == g])) for g in "mwbg"}
    assert speakers == {"m": 45, "w": 48, "b": 27, "g": 19}
    assert sorted(set(t.vowel)) == sorted(
        ["ae", "ah", "aw", "eh", "ei", "er", "ih", "iy", "oa", "oo", "uh", "uw"]
    )
    assert set(Counter(t.vowel).values()) == {139}


@needs_hillenbrand
def test_real_seven_vowel_task_counts(real_table):
    """The file holds 48 women x 7 vowels = 336 tokens, not the 258 (37 per vowel, 36 for uw)
    that the paper reports: no rule on missing values gives 37/37/37/37/37/37/36 (the paper's
    list does: subset="momeni2023", tests/test_table.py). Tokens with an unmeasurable
    feature: 20 (dropped by default)."""
    w7 = real_table.subset(groups="w", vowels=VOWELS_7)
    assert len(w7) == 336 and set(Counter(w7.vowel).values()) == {48}
    incomplete = np.isnan(w7.features(FEATURES_12)).any(1)
    assert Counter(w7.vowel[incomplete]) == {"er": 11, "iy": 5, "aw": 2, "ae": 1, "ah": 1}
    d = load_vowels(source="hillenbrand", path=HILLENBRAND, seed=0)
    y = torch.cat([d.y_train, d.y_test])
    assert torch.bincount(y).tolist() == [47, 47, 46, 37, 48, 43, 48]  # 316
    d = load_vowels(source="hillenbrand", path=HILLENBRAND / "vowdata.dat", missing="impute")
    assert len(d.y_train) + len(d.y_test) == 336


@needs_hillenbrand
def test_real_task_dataset_shape_scaling_and_split():
    d = load_vowels(source="hillenbrand", path=HILLENBRAND, seed=3, pad_to=20)
    assert d.name == "vowels-hillenbrand" and d.class_names == list(VOWELS_7)
    assert d.n_classes == 7 and d.label_slots == 7 and d.n_features == 20
    x = torch.cat([d.x_train, d.x_test])
    assert x.min() >= 0 and x.max() <= 1
    assert (x[:, :7] == 0).all() and (x[:, 19:] == 0).all()  # label slots, padding
    assert d.x_train[:, 7:19].min() == 0 and d.x_train[:, 7:19].max() == 1
    # 80/20 per class, and fixed by the seed
    n_tr, n_te = torch.bincount(d.y_train), torch.bincount(d.y_test)
    frac = n_te.double() / (n_tr + n_te)
    assert ((frac - 0.2).abs() <= 0.011).all()
    again = load_vowels(source="hillenbrand", path=HILLENBRAND, seed=3, pad_to=20)
    assert torch.equal(d.x_train, again.x_train) and torch.equal(d.y_test, again.y_test)
    other = load_vowels(source="hillenbrand", path=HILLENBRAND, seed=4, pad_to=20)
    assert not torch.equal(d.y_train, other.y_train) or not torch.equal(d.x_train, other.x_train)
    bare = load_vowels(source="hillenbrand", path=HILLENBRAND, reserve_label_slots=False)
    assert bare.label_slots == 0 and bare.n_features == 12


@needs_hillenbrand
def test_real_task_logistic_regression(real_table):
    """Logistic regression on the real task. Measured over 20 splits: 0.95 with plain
    z-scored features (scikit-learn defaults), 0.93 on the [0, 1]-scaled inputs that the
    runner's reference uses; not the ~0.98 the paper's 258-token subset gives."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    w7 = real_table.subset(groups="w", vowels=VOWELS_7)
    x = w7.features(FEATURES_12)
    keep = ~np.isnan(x).any(1)
    x, y = x[keep], np.asarray([VOWELS_7.index(v) for v in w7.vowel[keep]])
    zscored = []
    for seed in range(5):
        tr, te = stratified_split(y, 0.2, seed)
        sc = StandardScaler().fit(x[tr])
        m = LogisticRegression(max_iter=2000).fit(sc.transform(x[tr]), y[tr])
        zscored.append((m.predict(sc.transform(x[te])) == y[te]).mean())
    assert np.mean(zscored) >= 0.93
    scaled = [_lr(load_vowels(source="hillenbrand", path=HILLENBRAND, seed=s)) for s in range(5)]
    assert np.mean(scaled) >= 0.88


# ---------------------------------------------------------------------- synthetic


def test_synthetic_is_the_default_and_seeded():
    d = load_vowels()
    assert d.name == "vowels-synthetic" and d.class_names == list(VOWELS_7)
    assert len(d.y_train) + len(d.y_test) == 37 * 7
    assert d.n_features == 7 + 12 and d.label_slots == 7
    same = DATASETS["vowels"](seed=0)
    assert torch.equal(d.x_train, same.x_train) and torch.equal(d.x_test, same.x_test)
    other = load_vowels(seed=1)
    assert not torch.equal(d.x_train, other.x_train)
    t1, t2 = synthesize_vowel_table(seed=5), synthesize_vowel_table(seed=5)
    for c in COLUMNS:
        np.testing.assert_array_equal(t1[c], t2[c])
    assert not np.array_equal(t1.features(), synthesize_vowel_table(seed=6).features())
    x = torch.cat([d.x_train, d.x_test])
    assert x.min() >= 0 and x.max() <= 1
    assert load_vowels(pad_to=20).n_features == 20


def test_synthetic_follows_table_v():
    t = synthesize_vowel_table(seed=0, n_speakers=400, vowels=list(TABLE_V))
    assert set(t.group) == {"w"} and len(t) == 400 * 12
    assert np.isnan(t["F4"]).all() and np.isnan(t["duration"]).all()
    for v, groups in TABLE_V.items():
        s = t.subset(vowels=[v])
        for k, col in enumerate(("F0", "F1", "F2", "F3")):
            assert abs(np.median(s[col]) / groups["w"][k] - 1) < 0.03, (v, col)
    # the formant track glides away from the steady state most at the end of the vowel
    drift = {p: np.median(np.abs(np.log(t[f"F2_{p}"] / t["F2"]))) for p in (20, 50, 80)}
    assert drift[20] < drift[50] < drift[80]
    men = synthesize_vowel_table(seed=0, group="m")
    assert np.median(men["F1"]) < np.median(synthesize_vowel_table(seed=0)["F1"])
    with pytest.raises(ValueError, match="group"):
        synthesize_vowel_table(group="b")


def test_synthetic_is_about_as_hard_as_the_real_task():
    """Logistic regression on the runner's [0, 1] inputs: real (316 tokens) 0.93 and synthetic
    0.92 averaged over 20 splits. Here 5 seeds, a band around that."""
    syn = np.mean([_lr(load_vowels(seed=s)) for s in range(5)])
    assert 0.85 <= syn <= 0.99
    if (HILLENBRAND / "vowdata.dat").is_file():
        real = np.mean(
            [_lr(load_vowels(source="hillenbrand", path=HILLENBRAND, seed=s)) for s in range(5)]
        )
        assert abs(syn - real) <= 0.06


# ----------------------------------------------------------------- Peterson & Barney


def test_peterson_barney_missing_dependency_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "parselmouth", None)
    monkeypatch.setitem(sys.modules, "parselmouth.praat", None)
    with pytest.raises(ImportError, match="pip install praat-parselmouth"):
        read_peterson_barney()
    with pytest.raises(ImportError, match="praat-parselmouth"):
        load_vowels(source="peterson-barney")


def test_peterson_barney():
    pytest.importorskip("parselmouth", reason="praat-parselmouth is not installed")
    t = read_peterson_barney()
    assert len(t) == 1520 and set(t.columns) == {"F0", "F1", "F2", "F3"}
    assert Counter(t.group) == {"m": 660, "w": 560, "c": 300}
    assert sorted(set(t.vowel)) == sorted(
        ["iy", "ih", "eh", "ae", "ah", "aw", "uh", "oo", "uw", "er"]
    )
    w = t.subset(groups="w", vowels=VOWELS_7)
    assert set(Counter(w.vowel).values()) == {56}
    # the code translation: P&B "aa" (hod) has a high F1 and low F2, like Hillenbrand's ah
    ah = t.subset(groups="w", vowels=["ah"])
    assert 800 < np.median(ah["F1"]) < 1000 and np.median(ah["F2"]) < 1400
    d = load_vowels(source="peterson-barney", seed=0, pad_to=20)
    assert d.name == "vowels-peterson-barney" and d.n_features == 20 and d.label_slots == 7
    assert len(d.y_train) + len(d.y_test) == 7 * 56
    assert np.mean([_lr(load_vowels(source="peterson-barney", seed=s)) for s in range(3)]) > 0.8
    d4 = load_vowels(source="peterson-barney", features=["F0", "F1", "F2", "F3"], seed=0)
    assert d4.n_features == 7 + 4
