"""Your own data: the table loader (CSV, NPZ, HDF5, spreadsheets), its errors and splits,
and the paper's exact vowel task (``load_vowels(subset="momeni2023")``), which a table
exported from vowdata.dat reproduces tensor for tensor."""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import HILLENBRAND, needs_hillenbrand

from physnn.data import (
    DATASETS,
    load_table,
    load_vowels,
    make_dataset,
    read_hillenbrand_table,
    read_token_list,
    token_rows,
    write_table,
)
from physnn.data.vowels import FEATURES_12, VOWELS_7
from physnn.experiments.runner import load_data

HAS_SHEETS = all(importlib.util.find_spec(m) for m in ("pandas", "openpyxl", "odf"))
needs_sheets = pytest.mark.skipif(
    not HAS_SHEETS, reason="spreadsheets need the optional extra: pip install 'physnn[table]'"
)


def _data(n_per_class: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    """Three classes, 4 features, 6 speakers; the label is a string."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(["b", "a", "c"], n_per_class)
    y = np.asarray([{"a": 0, "b": 1, "c": 2}[v] for v in labels])
    x = rng.normal(size=(len(y), 4)) + y[:, None]
    return {
        "speaker": np.tile([f"s{k}" for k in range(n_per_class)], 3),
        "F1": x[:, 0], "G": x[:, 1], "F2": x[:, 2], "F3": x[:, 3], "vowel": labels,
    }


def _csv(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    f = tmp_path / name
    f.write_text(text, encoding="utf-8")
    return f


def _same(a, b) -> bool:
    return all(torch.equal(getattr(a, k), getattr(b, k))
               for k in ("x_train", "x_test", "y_train", "y_test"))


# ------------------------------------------------------------------------- reading


def test_csv_prefix_features_classes_and_layout(tmp_path):
    cols = _data()
    f = write_table(tmp_path / "t.csv", cols)
    d = load_table(path=f, label="vowel", features="F", pad_to=10)
    assert d.name == "table-t" and d.class_names == ["a", "b", "c"] and d.label_slots == 3
    assert d.n_features == 10 and len(d.y_train) + len(d.y_test) == 18
    x = torch.cat([d.x_train, d.x_test])
    assert (x[:, :3] == 0).all() and (x[:, 6:] == 0).all() and 0 <= x.min() and x.max() <= 1
    # the prefix takes F1 F2 F3 in file order (not G): same as naming them
    named = load_table(path=f, label="vowel", features=["F1", "F2", "F3"], pad_to=10)
    assert _same(d, named)
    # None: every column but label (and group/split); "speaker" is text, so name it as group
    every = load_table(path=f, label="vowel", group="speaker", reserve_label_slots=False)
    assert every.n_features == 4
    ordered = load_table(path=f, label="vowel", features="F", classes=["c", "b", "a"])
    assert ordered.class_names == ["c", "b", "a"]


def test_no_group_split_is_make_datasets_stratified_split(tmp_path):
    """By construction: the same rows, in the same order, split by the same function."""
    cols = _data()
    f = write_table(tmp_path / "t.csv", cols)
    x = np.stack([cols["F1"], cols["F2"], cols["F3"]], 1)
    y = np.asarray([{"a": 0, "b": 1, "c": 2}[v] for v in cols["vowel"]])
    for seed in (0, 5):
        ref = make_dataset("ref", x, y, ["a", "b", "c"], test_fraction=0.25, seed=seed,
                           scaling="zscore", pad_to=8)
        d = load_table(path=f, label="vowel", features="F", seed=seed, test_fraction=0.25,
                       scaling="zscore", pad_to=8)
        assert _same(d, ref)


def test_npz_hdf5_csv_and_semicolon_csv_give_the_same_tensors(tmp_path):
    cols = _data()
    ref = load_table(path=write_table(tmp_path / "t.csv", cols), label="vowel", features="F")
    x = np.stack([cols["F1"], cols["F2"], cols["F3"]], 1)
    np.savez(tmp_path / "t.npz", x=x, vowel=cols["vowel"], speaker=cols["speaker"])
    npz = load_table(path=tmp_path / "t.npz", label="vowel", features="x_")
    with h5py.File(tmp_path / "t.h5", "w") as h5:
        h5["x"] = x
        h5["vowel"] = cols["vowel"].astype("S")  # fixed-width bytes, decoded as UTF-8
        h5["speaker"] = np.asarray(cols["speaker"], dtype=h5py.string_dtype())
    h5 = load_table(path=tmp_path / "t.h5", label="vowel", features="x_")
    text = (tmp_path / "t.csv").read_text().replace(",", ";")
    semi = load_table(path=_csv(tmp_path, text, "semi.csv"), label="vowel", features="F")
    assert _same(ref, npz) and _same(ref, h5) and _same(ref, semi)
    # numeric labels sort numerically: 2 before 10
    np.savez(tmp_path / "n.npz", x=x, y=np.repeat([10, 2, 7], 6))
    assert load_table(path=tmp_path / "n.npz", label="y").class_names == ["2", "7", "10"]


@needs_sheets
@pytest.mark.parametrize("suffix", [".xlsx", ".ods"])
def test_spreadsheets(tmp_path, suffix):
    import pandas as pd

    cols = _data()
    ref = load_table(path=write_table(tmp_path / "t.csv", cols), label="vowel", features="F")
    f = tmp_path / f"t{suffix}"
    pd.DataFrame(cols).to_excel(f, index=False)
    assert _same(ref, load_table(path=f, label="vowel", features="F"))
    frame = pd.DataFrame(cols)
    frame.loc[4, "F2"] = None
    frame.to_excel(f, index=False)
    with pytest.raises(ValueError, match=rf"t{suffix}, row 6, column 'F2': missing value"):
        load_table(path=f, label="vowel", features="F")


def test_spreadsheet_without_pandas_names_the_extra(tmp_path, monkeypatch):
    f = tmp_path / "t.xlsx"
    f.write_bytes(b"PK")
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'physnn\[table\]'"):
        load_table(path=f, label="vowel")


def test_registered_and_checked_by_the_runner(tmp_path):
    f = write_table(tmp_path / "t.csv", _data())
    assert DATASETS["table"] is load_table
    cfg = {"name": "t", "data": {"name": "table", "path": str(f), "label": "vowel",
                                 "features": "F", "group": "speaker"}}
    assert load_data(cfg, seed=1).n_classes == 3
    cfg["data"]["colour"] = "red"
    with pytest.raises(ValueError, match="unknown key"):
        load_data(cfg, seed=1)


# -------------------------------------------------------------------------- errors


def _error(tmp_path, text: str, match: str, name: str = "t.csv", **kw) -> None:
    f = _csv(tmp_path, text, name)
    kw = {"label": "y", **kw}
    with pytest.raises(ValueError, match=match) as e:
        load_table(path=f, **kw)
    assert "\n" not in str(e.value)


GOOD = "a,b,y\n1,2,p\n3,4,p\n5,6,q\n7,8,q\n"


def test_error_missing_values(tmp_path):
    _error(tmp_path, "a,b,y\n1,2,p\n3,,p\n5,6,q\n7,8,q\n", r"t\.csv, line 3, column 'b': missing")
    _error(tmp_path, "a,b,y\n1,2,p\n3,NaN,p\n5,6,q\n7,8,q\n", r"line 3, column 'b': missing")
    _error(tmp_path, "a,b,y\n1,2,p\n3,4,p\n5,6,\n7,8,q\n", r"line 4, column 'y': missing")
    x = np.ones((4, 2))
    x[2, 1] = np.nan
    np.savez(tmp_path / "m.npz", x=x, y=np.asarray(["p", "p", "q", "q"]))
    with pytest.raises(ValueError, match=r"m\.npz, index 2, column 'x_1': missing"):
        load_table(path=tmp_path / "m.npz", label="y")


def test_error_non_numeric_and_non_finite(tmp_path):
    _error(tmp_path, "a,b,y\n1,2,p\n3,x4,p\n5,6,q\n7,8,q\n",
           r"t\.csv, line 3, column 'b': 'x4' is not a number")
    _error(tmp_path, "a,b,y\n1,2,p\n3,inf,p\n5,6,q\n7,8,q\n", r"line 3, column 'b'.*not a finite")
    _error(tmp_path, "a,b,y\n1,2,p\n3,4\n5,6,q\n7,8,q\n", r"line 3: 2 fields, the header names 3")


def test_error_unknown_columns_list_the_available_ones(tmp_path):
    _error(tmp_path, GOOD, r"no column 'vowel'; columns: a, b, y", label="vowel")
    _error(tmp_path, GOOD, r"no column 'c'; columns: a, b, y", features=["a", "c"])
    _error(tmp_path, GOOD, r"no column 'spk'; columns: a, b, y", group="spk")
    _error(tmp_path, GOOD, r"no feature column starts with 'F'; columns: a, b, y", features="F")
    _error(tmp_path, GOOD, r"'y' is the label column, not a feature", features=["a", "y"])
    _error(tmp_path, "a,a,y\n1,2,p\n", r"line 1: column 'a' is named twice")


def test_error_one_member_classes_and_unknown_labels(tmp_path):
    _error(tmp_path, GOOD + "9,9,r\n",
           r"class 'r' \(column 'y'\) has 1 row\(s\) \(line 6\); every class needs >= 2")
    _error(tmp_path, GOOD, r"line 4, column 'y': label 'q' is not one of classes",
           classes=["p", "z"])


def test_error_not_utf8_and_unknown_format(tmp_path):
    f = tmp_path / "latin.csv"
    f.write_bytes("a,b,y\n1,2,p\n3,4,caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.csv is not UTF-8 text \(byte 0xe9 on line 3\)"):
        load_table(path=f, label="y")
    _error(tmp_path, GOOD, r"unknown table format '\.dat'", name="t.dat")
    with pytest.raises(FileNotFoundError):
        load_table(path=tmp_path / "none.csv", label="y")


# -------------------------------------------------------------------------- splits


def test_group_split_is_group_disjoint_and_seeded(tmp_path):
    """One-hot speaker columns as the features tell which speakers each side holds."""
    cols = _data(n_per_class=10)
    spk = sorted(set(cols["speaker"]))
    onehot = {f"S{k}": (cols["speaker"] == s).astype(float) for k, s in enumerate(spk)}
    f = write_table(tmp_path / "t.csv", {**cols, **onehot})
    splits = set()
    for seed in range(6):
        kw = {"path": f, "label": "vowel", "features": "S", "group": "speaker", "seed": seed,
              "test_fraction": 0.3, "reserve_label_slots": False}
        d = load_table(**kw)
        test = {spk[k] for k in d.x_test.argmax(1).tolist()}
        train = {spk[k] for k in d.x_train.argmax(1).tolist()}
        assert not test & train and test | train == set(spk)
        assert len(test) == 3 and len(d.y_test) == 9  # 3 of 10 speakers, 3 rows each
        assert set(d.y_train.tolist()) == set(d.y_test.tolist()) == {0, 1, 2}
        assert _same(d, load_table(**kw))
        splits.add(frozenset(test))
    assert len(splits) > 1


def test_group_split_that_loses_a_class_is_an_error(tmp_path):
    # class q is said by speaker s1 only: wherever s1 goes, q is absent from the other side
    text = "a,y,spk\n1,p,s0\n2,p,s0\n3,p,s1\n4,q,s1\n5,q,s1\n6,p,s2\n7,p,s2\n"
    _error(tmp_path, text, r"the group split \(column 'spk', seed 0.*leaves class\(es\) \['q'\]",
           group="spk", features=["a"])


def test_fixed_split_column(tmp_path):
    text = ("a,y,part,spk\n1,p,train,s0\n2,p,TEST,s1\n3,q,train,s0\n4,q,test,s1\n"
            "5,p,train,s2\n6,q,train,s2\n")
    f = _csv(tmp_path, text)
    d = load_table(path=f, label="y", split="part", features=["a"], group="spk",
                   reserve_label_slots=False)
    assert d.y_train.tolist() == [0, 1, 0, 1] and d.y_test.tolist() == [0, 1]
    assert torch.equal(d.x_test[:, 0], torch.tensor([0.2, 0.6]))  # (2-1)/5, (4-1)/5
    _error(tmp_path, text.replace("TEST,s1\n3", "val,s1\n3"),
           r"line 3, column 'part': 'val' is neither 'train' nor 'test'", split="part",
           features=["a"])
    _error(tmp_path, text.replace("4,q,test,s1", "4,q,test,s0"),
           r"the fixed split \(column 'part'\) puts group\(s\) \['s0'\] in both", split="part",
           group="spk", features=["a"])
    _error(tmp_path, text.replace("4,q,test", "4,q,train"),
           r"leaves class\(es\) \['q'\] out of the test set", split="part", features=["a"])


# ------------------------------------------------------------ the paper's vowel task


def test_token_lists(tmp_path):
    names = read_token_list("momeni2023")
    assert len(names) == 258 and len(set(names)) == 258
    assert Counter(n[3:] for n in names) == {v: 36 if v == "uw" else 37 for v in VOWELS_7}
    assert all(n.startswith("w") for n in names)
    if (HILLENBRAND / "momeni2023_tokens.txt").is_file():
        assert names == read_token_list(HILLENBRAND / "momeni2023_tokens.txt")
    f = _csv(tmp_path, "# mine\nw01ae  # first\n\nw02ae\n", "list.txt")
    assert read_token_list(f) == ["w01ae", "w02ae"]
    with pytest.raises(ValueError, match="more than once: w01ae"):
        read_token_list(_csv(tmp_path, "w01ae\nw01ae\n", "twice.txt"))
    with pytest.raises(FileNotFoundError, match="neither a named subset"):
        read_token_list("momeni2024")
    rows = token_rows(np.asarray(["a", "b", "c"]), ["c", "a"], "x")
    assert rows.tolist() == [2, 0]
    with pytest.raises(ValueError, match=r"2 listed token\(s\) not in x: d, e"):
        token_rows(np.asarray(["a", "b", "c"]), ["c", "d", "e"], "x")
    with pytest.raises(ValueError, match="subset is only used with source='hillenbrand'"):
        load_vowels(subset="momeni2023")


@needs_hillenbrand
def test_momeni2023_subset_and_errors(tmp_path):
    d = load_vowels(source="hillenbrand", path=HILLENBRAND, subset="momeni2023", pad_to=20)
    y = torch.cat([d.y_train, d.y_test])
    assert torch.bincount(y).tolist() == [37] * 6 + [36] and d.class_names == list(VOWELS_7)
    assert d.n_features == 20 and len(d.y_test) == 49  # round(0.2 * 37) = 7 per class
    bad = _csv(tmp_path, "w01ae\nw99zz\nw02ae\n", "bad.txt")
    with pytest.raises(ValueError, match=r"1 listed token\(s\) not in .*: w99zz"):
        load_vowels(source="hillenbrand", path=HILLENBRAND, subset=bad)
    men = _csv(tmp_path, "w01ae\nm01ae\nw02ae\nm02ae\n", "men.txt")
    with pytest.raises(ValueError, match=r"2 token\(s\) outside group 'w'.*first: m01ae"):
        load_vowels(source="hillenbrand", path=HILLENBRAND, subset=men, vowels=["ae", "iy"])


def export_momeni2023(folder: Path, out: Path) -> Path:
    """The docs' recipe (docs/data.md): the paper's 258 tokens as a CSV table."""
    t = read_hillenbrand_table(folder)
    t = t.select(token_rows(t.token, read_token_list("momeni2023"), "vowdata.dat"))
    features = {name: t[name] for name in FEATURES_12}
    speaker = [f"{g}{s:02d}" for g, s in zip(t.group, t.speaker, strict=True)]
    return write_table(out, {"token": t.token, "speaker": speaker, "vowel": t.vowel, **features})


@needs_hillenbrand
def test_table_of_the_258_tokens_reproduces_load_vowels(tmp_path):
    f = export_momeni2023(HILLENBRAND, tmp_path / "momeni2023.csv")
    for seed, kw in ((0, {}), (3, {"scaling": "minmax", "pad_to": 20})):
        ref = load_vowels(source="hillenbrand", path=HILLENBRAND, subset="momeni2023",
                          seed=seed, **kw)
        d = load_table(path=f, label="vowel", features=list(FEATURES_12), seed=seed,
                       **{"scaling": "zscore", **kw})
        assert d.class_names == ref.class_names and _same(d, ref)
    # the same table split by speaker: no woman in both sets, every vowel on both sides
    g = load_table(path=f, label="vowel", features=list(FEATURES_12), group="speaker")
    assert len(g.y_train) + len(g.y_test) == 258 and len(set(g.y_test.tolist())) == 7


def test_example_config_is_vowels_microwave_on_a_table(tmp_path):
    """examples/table-vowels.toml: the vowels-microwave preset with [data] from a table; a
    table of the synthetic vowels (no licence needed) gives load_vowels' tensors."""
    from physnn.data import synthesize_vowel_table
    from physnn.experiments.config import load_config

    example = load_config(Path(__file__).parents[1] / "examples" / "table-vowels.toml")
    preset = load_config("vowels-microwave")
    assert (example.device, example.network, example.train) == (
        preset.device, preset.network, preset.train)
    t = synthesize_vowel_table(seed=2)
    f = write_table(tmp_path / "synthetic.csv", {
        "token": t.token, "speaker": t.speaker, "vowel": t.vowel,
        **{name: t[name] for name in FEATURES_12},
    })
    d = load_data(example.merged({"data": {"path": str(f)}}), seed=2)
    assert _same(d, load_data(preset, seed=2))


@needs_hillenbrand
def test_the_docs_recipe_writes_the_same_table(tmp_path, monkeypatch):
    """docs/data.md's Python block, run as written (DIR -> the reference folder)."""
    import re

    text = (Path(__file__).parents[1] / "docs" / "data.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    monkeypatch.chdir(tmp_path)
    exec(code.replace('"DIR"', repr(str(HILLENBRAND))), {})
    ours = export_momeni2023(HILLENBRAND, tmp_path / "ours.csv")
    assert (tmp_path / "momeni2023.csv").read_text() == ours.read_text()
