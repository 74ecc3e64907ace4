"""make_dataset: the min-max default (digits), z-score scaling, padding, missing values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from physnn.data import load_digits, make_dataset, stratified_split


def test_digits_minmax_unchanged():
    """The digits pipeline as it was: per-pixel min-max with the training range, clipped."""
    from sklearn.datasets import load_digits as sk_digits

    raw = sk_digits()
    d = load_digits(seed=2)
    train, test = stratified_split(raw.target, 0.2, 2)
    lo, hi = raw.data[train].min(0), raw.data[train].max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    xs = np.clip((raw.data - lo) / span, 0.0, 1.0)
    expect = torch.as_tensor(np.concatenate([np.zeros((len(xs), 10)), xs], 1), dtype=torch.float32)
    assert torch.equal(d.x_train, expect[train]) and torch.equal(d.x_test, expect[test])
    assert d.label_slots == 10 and d.n_features == 74 and d.name == "digits"


def _toy(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1, 2], n // 3)
    x = rng.normal(size=(n, 3)) * [1.0, 10.0, 100.0] + y[:, None] * [1.0, 5.0, 0.0]
    return x, y


def test_zscore_scaling_is_shared_and_in_unit_range():
    x, y = _toy()
    d = make_dataset("toy", x, y, ["a", "b", "c"], test_fraction=0.2, seed=0,
                     scaling="zscore", reserve_label_slots=False)
    train, _ = stratified_split(y, 0.2, 0)
    z = (x - x[train].mean(0)) / x[train].std(0)
    expect = (z - z[train].min()) / (z[train] - z[train].min()).max()
    np.testing.assert_allclose(d.x_train.numpy(), expect[train], atol=1e-6)
    assert d.x_train.min() == 0 and d.x_train.max() == 1
    assert d.x_test.min() >= 0 and d.x_test.max() <= 1  # test values clipped
    # shared shift and scale: a feature's spread is its z-score spread, not a full [0, 1]
    spans = d.x_train.max(0).values - d.x_train.min(0).values
    assert spans.min() < 0.99
    minmax = make_dataset("toy", x, y, ["a", "b", "c"], test_fraction=0.2, seed=0,
                          reserve_label_slots=False)
    assert torch.allclose(minmax.x_train.min(0).values, torch.zeros(3))
    assert torch.allclose(minmax.x_train.max(0).values, torch.ones(3))
    with pytest.raises(ValueError, match="unknown scaling"):
        make_dataset("toy", x, y, ["a", "b", "c"], test_fraction=0.2, seed=0, scaling="x")


def test_pad_to_after_label_slots():
    x, y = _toy()
    d = make_dataset("toy", x, y, ["a", "b", "c"], test_fraction=0.2, seed=0, pad_to=8)
    assert d.n_features == 8 and d.label_slots == 3
    assert (d.x_train[:, :3] == 0).all() and (d.x_train[:, 6:] == 0).all()
    assert (d.x_train[:, 3:6] > 0).any()
    same = make_dataset("toy", x, y, ["a", "b", "c"], test_fraction=0.2, seed=0, pad_to=6)
    assert same.n_features == 6
    with pytest.raises(ValueError, match="pad_to=5"):
        make_dataset("toy", x, y, ["a", "b", "c"], test_fraction=0.2, seed=0, pad_to=5)


def test_missing_values_error_or_training_mean():
    x, y = _toy()
    x[0, 1] = np.nan
    with pytest.raises(ValueError, match="missing"):
        make_dataset("toy", x, y, ["a", "b", "c"], test_fraction=0.2, seed=0)
    d = make_dataset("toy", x, y, ["a", "b", "c"], test_fraction=0.2, seed=0,
                     reserve_label_slots=False, impute_missing=True)
    train, test = stratified_split(y, 0.2, 0)
    filled = x.copy()
    filled[0, 1] = np.nanmean(x[train, 1])
    lo, hi = filled[train].min(0), filled[train].max(0)
    row = np.clip((filled[0] - lo) / (hi - lo), 0, 1)
    where = np.flatnonzero(train == 0) if 0 in train else None
    got = d.x_train[where[0]] if where is not None else d.x_test[np.flatnonzero(test == 0)[0]]
    np.testing.assert_allclose(got.numpy(), row, atol=1e-6)
    x[:, 2] = np.nan
    with pytest.raises(ValueError, match="every training sample"):
        make_dataset("toy", x, y, ["a", "b", "c"], test_fraction=0.2, seed=0,
                     impute_missing=True)


def test_a_feature_split_into_digits_keeps_its_finer_steps():
    """Each feature as base-4 digits on the device's four levels: the digits read back to the
    feature at 4**digits steps (what a 2-bit device alone cannot hold), and a device that
    snaps to its levels changes none of them."""
    from physnn.data.dataset import split_into_digits

    x = np.array([[0.0, 1.0], [0.5, 0.3], [0.49, 0.02]])
    got = split_into_digits(x, 2, 4)
    # round(x * 15) = 0, 15 | 8, 4 | 7, 0; high digits first, then low digits
    want = np.array([[0, 3, 0, 3], [2, 1, 0, 0], [1, 0, 3, 0]]) / 3
    np.testing.assert_allclose(got, want)
    back = (got[:, :2] * 3 * 4 + got[:, 2:] * 3) / 15
    assert np.abs(back - x).max() <= 0.5 / 15 + 1e-12
    three = split_into_digits(np.linspace(0, 1, 64)[:, None], 3, 4)
    assert {round(float(v) * 3, 9) for v in three.ravel()} == {0.0, 1.0, 2.0, 3.0}
    assert len({tuple(r) for r in three}) == 64  # 64 distinct values, none merged
    assert split_into_digits(x, 1, 4) is x


def test_digits_widen_the_inputs_after_the_label_slots():
    x, y = _toy()
    one = make_dataset("toy", x, y, ["a", "b", "c"], test_fraction=0.2, seed=0, pad_to=6)
    two = make_dataset("toy", x, y, ["a", "b", "c"], test_fraction=0.2, seed=0, digits=2,
                       pad_to=10)
    assert one.n_features == 6 and two.n_features == 10 and two.label_slots == 3
    assert torch.equal(two.x_train[:, :3], torch.zeros(len(two.x_train), 3))
    assert torch.equal(two.y_train, one.y_train)
    too_narrow = r"pad_to=8 is smaller than the 3 label slots \+ 6 features = 9"
    with pytest.raises(ValueError, match=too_narrow):
        make_dataset("toy", x, y, ["a", "b", "c"], test_fraction=0.2, seed=0, digits=2, pad_to=8)


def test_the_digit_layout_reads_back_what_split_into_digits_wrote():
    """``Dataset.digit_layout`` (what an augmentation of the features needs) decodes the digit
    inputs to the features on their 4**digits steps and encodes them as split_into_digits
    does; one input per feature has no layout."""
    from physnn.data.dataset import split_into_digits

    x, y = _toy()
    two = make_dataset("toy", x, y, ["a", "b", "c"], test_fraction=0.2, seed=0, digits=2,
                       pad_to=10)
    layout = two.digit_layout
    assert layout is not None and (layout.digits, layout.levels, layout.n_features) == (2, 4, 3)
    assert layout.width == 6 and layout.steps == 15
    digits = two.x_train[:, 3:9]
    u = layout.decode(digits)
    assert torch.equal(u * 15, torch.round(u * 15)) and u.shape == (len(two.x_train), 3)
    assert torch.equal(layout.encode(u), digits)
    fine = torch.rand(200, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    np.testing.assert_allclose(layout.encode(fine).numpy(), split_into_digits(fine.numpy(), 2, 4))
    assert make_dataset("toy", x, y, ["a", "b", "c"], test_fraction=0.2, seed=0).digit_layout is None


@pytest.mark.parametrize(("kw", "message"), [
    ({"digits": 0}, r"digits \(inputs per feature\) must be a whole number >= 1, got 0$"),
    ({"digits": 1.5}, r"digits \(inputs per feature\) must be a whole number >= 1, got 1.5$"),
    ({"digits": 2, "digit_levels": 1},
     r"digit_levels \(input levels of the device\) must be a whole number >= 2, got 1$"),
])
def test_bad_digits_are_one_line(kw, message):
    x, y = _toy()
    with pytest.raises(ValueError, match=message):
        make_dataset("toy", x, y, ["a", "b", "c"], test_fraction=0.2, seed=0, **kw)
