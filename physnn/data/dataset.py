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


def make_dataset(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    class_names: list[str],
    *,
    test_fraction: float,
    seed: int,
    reserve_label_slots: bool = True,
) -> Dataset:
    """Split, scale features to [0, 1] with the training range and reserve label slots."""
    train, test = stratified_split(y, test_fraction, seed)
    lo, hi = x[train].min(0), x[train].max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    xs = np.clip((x - lo) / span, 0.0, 1.0)
    n_classes = len(class_names)
    slots = n_classes if reserve_label_slots else 0
    if slots:
        xs = np.concatenate([np.zeros((xs.shape[0], slots)), xs], axis=1)
    xt = torch.as_tensor(xs, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    return Dataset(name, xt[train], yt[train], xt[test], yt[test], n_classes, class_names, slots)
