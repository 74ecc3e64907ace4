"""A classification data set split into train and test, with features scaled to [0, 1]."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    class_names: list[str]
    label_slots: int = 0
    """Leading input entries reserved (zero) for the label overlay."""

    @property
    def label_width(self) -> int:
        """Inputs per class in the label overlay: 1, or a row per class for images."""
        return max(1, self.label_slots // self.n_classes)

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    def to(self, device: torch.device | str) -> Dataset:
        return Dataset(
            self.name, self.x_train.to(device), self.y_train.to(device),
            self.x_test.to(device), self.y_test.to(device), self.n_classes,
            self.class_names, self.label_slots,
        )


def stratified_split(
    y: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices with each class split in the same proportion, fixed by ``seed``."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        n_test = max(1, int(round(test_fraction * idx.size)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


SCALINGS = ("minmax", "zscore")


def make_dataset(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    class_names: list[str],
    *,
    test_fraction: float,
    seed: int,
    reserve_label_slots: bool = True,
    scaling: str = "minmax",
    pad_to: int | None = None,
    impute_missing: bool = False,
) -> Dataset:
    """Split, scale features to [0, 1] with training statistics, reserve label slots, pad.

    Every statistic comes from the training split only; test values outside the training
    range are clipped into [0, 1].

    ``scaling``:

    - ``"minmax"`` (default): each feature on its own, ``(x - min) / (max - min)``.
    - ``"zscore"``: each feature z-scored with the training mean and standard deviation, then
      the whole z-scored matrix shifted by its single training minimum and divided by its
      single training maximum after the shift (the vowel pipeline of Momeni et al. 2023).
      Shift and scale are shared by all features on purpose: per feature they would undo
      the z-score and give exactly ``"minmax"``; shared, features keep their z-score spread.

    ``impute_missing``: NaN entries (e.g. formants that were not measurable) are replaced
    by the training mean of their feature before scaling; without it a NaN is an error.

    ``pad_to``: total input width; zero columns are appended after the label slots and the
    features (e.g. 7 label slots + 12 formants + 1 zero = 20 inputs for a 20-input device).
    """
    if scaling not in SCALINGS:
        raise ValueError(f"unknown scaling {scaling!r}; allowed: {', '.join(SCALINGS)}")
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] != len(y):
        raise ValueError(f"x must be (n_samples, n_features) with n_samples = len(y) = {len(y)}, "
                         f"got shape {x.shape}")
    train, test = stratified_split(y, test_fraction, seed)
    missing = np.isnan(x)
    if missing.any():
        if not impute_missing:
            rows = np.flatnonzero(missing.any(1))
            raise ValueError(
                f"{name}: {rows.size} samples have missing (NaN) features (first: row "
                f"{rows[0]}); drop them or pass impute_missing=True (training-mean imputation)"
            )
        empty = missing[train].all(0)
        if empty.any():
            col = int(np.flatnonzero(empty)[0])
            raise ValueError(f"{name}: feature {col} is missing in every training sample")
        fill = np.nanmean(x[train], axis=0)
        x = np.where(missing, fill, x)
    if scaling == "minmax":
        lo, hi = x[train].min(0), x[train].max(0)
        span = np.where(hi > lo, hi - lo, 1.0)
        xs = np.clip((x - lo) / span, 0.0, 1.0)
    else:
        mean, std = x[train].mean(0), x[train].std(0)
        z = (x - mean) / np.where(std > 0, std, 1.0)
        shift = z[train].min()
        top = (z[train] - shift).max()
        xs = np.clip((z - shift) / (top if top > 0 else 1.0), 0.0, 1.0)
    n_classes = len(class_names)
    slots = n_classes if reserve_label_slots else 0
    if slots:
        xs = np.concatenate([np.zeros((xs.shape[0], slots)), xs], axis=1)
    if pad_to is not None:
        if int(pad_to) != pad_to or pad_to < xs.shape[1]:
            raise ValueError(
                f"pad_to={pad_to} is smaller than the {slots} label slots + "
                f"{xs.shape[1] - slots} features = {xs.shape[1]} inputs of {name}"
            )
        xs = np.concatenate([xs, np.zeros((xs.shape[0], int(pad_to) - xs.shape[1]))], axis=1)
    xt = torch.as_tensor(xs, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    return Dataset(name, xt[train], yt[train], xt[test], yt[test], n_classes, class_names, slots)
