"""A classification data set split into train and test, with features scaled to [0, 1]."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

Index = slice | torch.Tensor | np.ndarray | Sequence[int] | Sequence[bool]
"""What a feature matrix is indexed with: a slice, integer indices or a boolean mask."""


class LazyFeatures:
    """Feature rows built on demand from a compact store (e.g. uint8 images).

    Supports what trainers use on a feature matrix: ``x[index_tensor]``, ``x[a:b]``,
    ``x.shape``, ``len(x)``, ``x.device``, ``x.to(device)``. A batch is materialised only
    when asked for, so memory is bounded by the batch, not the data set (a float32 copy of
    Fashion-MNIST on a 51x51 SLM would take 624 MB; its uint8 store takes 47 MB).
    """

    def __init__(
        self,
        n: int,
        n_features: int,
        build: Callable[[np.ndarray], np.ndarray],
        *,
        plain: Callable[[np.ndarray], np.ndarray] | None = None,
        device: torch.device | str = "cpu",
        transforms: tuple[Callable[[torch.Tensor], torch.Tensor], ...] = (),
    ):
        self.n, self.n_features = int(n), int(n_features)
        self._build, self._plain = build, plain
        self.device = torch.device(device)
        self._transforms = tuple(transforms)

    @property
    def shape(self) -> torch.Size:
        """``(rows, features)``, like a tensor's."""
        return torch.Size((self.n, self.n_features))

    @property
    def dtype(self) -> torch.dtype:
        """Batches are float32, whatever the store holds."""
        return torch.float32

    def __len__(self) -> int:
        return self.n

    def _indices(self, key: Index) -> np.ndarray:
        if isinstance(key, slice):
            return np.arange(self.n)[key]
        if isinstance(key, torch.Tensor):
            key = key.detach().cpu().numpy()
        idx = np.asarray(key)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise TypeError("LazyFeatures supports x[slice], x[int indices] and x[bool mask] only")
        if idx.size and (idx.min() < -self.n or idx.max() >= self.n):
            raise IndexError(f"index out of range for {self.n} rows")
        return idx % self.n if idx.size else idx

    def __getitem__(self, key: Index) -> torch.Tensor:
        rows = torch.as_tensor(self._build(self._indices(key)), dtype=torch.float32)
        rows = rows.to(self.device)
        for t in self._transforms:
            rows = t(rows)
        return rows

    def plain(self, key: Index = slice(None)) -> np.ndarray:
        """The bare features (no label slots, no layout), for digital reference models."""
        if self._plain is None:
            raise ValueError("this feature store has no plain view")
        return self._plain(self._indices(key))

    def _copy(self, **changes: Any) -> LazyFeatures:
        new = LazyFeatures.__new__(LazyFeatures)
        new.__dict__.update(self.__dict__, **changes)
        return new

    def to(self, device: torch.device | str) -> LazyFeatures:
        """The same store, building its batches on ``device``."""
        return self._copy(device=torch.device(device))

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> LazyFeatures:
        """The same store with ``fn`` applied to every batch it builds."""
        return self._copy(_transforms=self._transforms + (fn,))


Features = torch.Tensor | LazyFeatures


@dataclass(frozen=True)
class DigitLayout:
    """Where ``data.digits`` wrote the features (``split_into_digits``): ``n_features`` of them
    right after the label slots, each as ``digits`` base-``levels`` inputs in [0, 1], every
    feature's most significant digit first. What an augmentation needs to change a feature,
    not one of its digits (``physnn.train.augment``)."""

    digits: int
    levels: int
    n_features: int

    @property
    def width(self) -> int:
        """Inputs the digits take."""
        return self.digits * self.n_features

    @property
    def steps(self) -> int:
        """The largest step a feature can take: ``levels ** digits - 1``."""
        return self.levels**self.digits - 1

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """``[n, width]`` digits in [0, 1] -> ``[n, n_features]`` features in [0, 1], on the
        ``steps + 1`` values the digits can write."""
        d = torch.round(x.reshape(x.shape[0], self.digits, self.n_features) * (self.levels - 1))
        place = self.levels ** torch.arange(self.digits - 1, -1, -1, device=x.device)
        return (d * place.to(x.dtype)[:, None]).sum(1) / self.steps

    def encode(self, u: torch.Tensor) -> torch.Tensor:
        """``[n, n_features]`` features in [0, 1] rounded to ``steps`` (half to even) and
        written as digits: what ``split_into_digits`` writes, and ``jitter`` again."""
        step = torch.round(u.clamp(0, 1) * self.steps).long()
        return torch.cat([(step // self.levels**k) % self.levels
                          for k in range(self.digits - 1, -1, -1)], 1).to(u.dtype) / (self.levels - 1)


@dataclass
class Dataset:
    """Train and test features and labels, and what a network needs to know about them."""

    name: str
    x_train: Features
    y_train: torch.Tensor
    x_test: Features
    y_test: torch.Tensor
    n_classes: int
    class_names: list[str]
    label_slots: int = 0
    """Leading input entries reserved (zero) for the label overlay."""
    image_shape: tuple[int, int] | None = None
    """(rows, columns) when the entries after the label slots are an image, row by row (what
    unsupervised PhyLL's hybrid negatives need); None for feature vectors."""
    digit_layout: DigitLayout | None = None
    """How ``data.digits`` wrote the features over several inputs; None when one input each."""

    @property
    def label_width(self) -> int:
        """Inputs per class in the label overlay: 1, or a row per class for images."""
        return max(1, self.label_slots // self.n_classes)

    @property
    def n_features(self) -> int:
        """Input width, label slots and padding included: the first device's ``n_in``."""
        return self.x_train.shape[1]

    def plain_features(self) -> tuple[np.ndarray, np.ndarray]:
        """Train and test features without label slots or layout, for digital baselines."""
        out = []
        for x in (self.x_train, self.x_test):
            if isinstance(x, LazyFeatures):
                out.append(x.plain())
            else:
                out.append(x[:, self.label_slots :].cpu().numpy())
        return out[0], out[1]

    def map_features(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Dataset:
        """The same data set with ``fn`` applied to every feature row (lazily where lazy)."""

        def apply(x: Features) -> Features:
            return x.map(fn) if isinstance(x, LazyFeatures) else fn(x)

        return dataclasses.replace(self, x_train=apply(self.x_train), x_test=apply(self.x_test))

    def to(self, device: torch.device | str) -> Dataset:
        """The same data set on ``device`` (lazy features build their batches there)."""
        return dataclasses.replace(
            self, x_train=self.x_train.to(device), y_train=self.y_train.to(device),
            x_test=self.x_test.to(device), y_test=self.y_test.to(device),
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

DIGIT_LEVELS = 4
"""``digit_levels``' default: the input levels of a 2-bit device (the microwave metasurface)."""


def make_dataset(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    class_names: list[str],
    *,
    test_fraction: float,
    seed: int,
    reserve_label_slots: bool = True,
    label_width: int = 1,
    scaling: str = "minmax",
    pad_to: int | None = None,
    impute_missing: bool = False,
    split: tuple[np.ndarray, np.ndarray] | None = None,
    image_shape: tuple[int, int] | None = None,
    digits: int = 1,
    digit_levels: int = DIGIT_LEVELS,
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

    ``label_width``: entries per class in the reserved label slots (a wider label moves
    more of a device's inputs, e.g. more metasurface elements).

    ``pad_to``: total input width; zero columns are appended after the label slots and the
    features (e.g. 7 label slots + 12 formants + 1 zero = 20 inputs for a 20-input device).

    ``split``: the train and test row indices when the caller fixes them (a group-disjoint
    or a given split, see ``physnn.data.load_table``); None (default) splits with
    ``stratified_split(y, test_fraction, seed)``, so two loaders that pass the same rows in
    the same order get the same split.

    ``image_shape``: (rows, columns) when each row of ``x`` is an image (``Dataset.image_shape``).

    ``digits``: each scaled feature as this many inputs (``split_into_digits``), so a device
    whose inputs have ``digit_levels`` levels (the 2-bit metasurface: 4) sees each feature at
    ``digit_levels ** digits`` levels instead of ``digit_levels``; 1 (default) leaves it.
    """
    if scaling not in SCALINGS:
        raise ValueError(f"unknown scaling {scaling!r}; allowed: {', '.join(SCALINGS)}")
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] != len(y):
        raise ValueError(f"x must be (n_samples, n_features) with n_samples = len(y) = {len(y)}, "
                         f"got shape {x.shape}")
    if split is None:
        train, test = stratified_split(y, test_fraction, seed)
    else:
        train, test = (np.asarray(i, dtype=np.int64) for i in split)
    x = _impute(name, x, train, impute_missing)
    xs = split_into_digits(_scale(x, train, scaling), digits, digit_levels)
    n_classes = len(class_names)
    if int(label_width) != label_width or label_width < 1:
        raise ValueError(f"label_width must be a positive integer, got {label_width}")
    slots = n_classes * int(label_width) if reserve_label_slots else 0
    xs = _layout(name, xs, slots, pad_to)
    xt = torch.as_tensor(xs, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    if image_shape is not None and image_shape[0] * image_shape[1] != x.shape[1]:
        raise ValueError(f"{name}: image_shape {image_shape} does not cover the {x.shape[1]} "
                         "features of a row")
    layout = DigitLayout(int(digits), int(digit_levels), x.shape[1]) if digits != 1 else None
    return Dataset(name, xt[train], yt[train], xt[test], yt[test], n_classes, class_names, slots,
                   image_shape, layout)


def _impute(name: str, x: np.ndarray, train: np.ndarray, impute_missing: bool) -> np.ndarray:
    """NaN entries replaced by their feature's training mean, or a ValueError when not allowed."""
    missing = np.isnan(x)
    if not missing.any():
        return x
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
    return np.where(missing, fill, x)


def _scale(x: np.ndarray, train: np.ndarray, scaling: str) -> np.ndarray:
    """Features into [0, 1] with training statistics (see ``make_dataset``)."""
    if scaling == "minmax":
        lo, hi = x[train].min(0), x[train].max(0)
        span = np.where(hi > lo, hi - lo, 1.0)
        return np.clip((x - lo) / span, 0.0, 1.0)
    mean, std = x[train].mean(0), x[train].std(0)
    z = (x - mean) / np.where(std > 0, std, 1.0)
    shift = z[train].min()
    top = (z[train] - shift).max()
    return np.clip((z - shift) / (top if top > 0 else 1.0), 0.0, 1.0)


def split_into_digits(xs: np.ndarray, digits: int, levels: int) -> np.ndarray:
    """Features in [0, 1] rounded to ``levels ** digits`` steps and written as ``digits``
    base-``levels`` digits, each digit scaled back into [0, 1].

    A device with ``levels`` input levels takes each digit exactly, so a lab spends more
    inputs (metasurface elements) per feature instead of a finer device. Columns: every
    feature's most significant digit, then every feature's next one.
    """
    if int(digits) != digits or digits < 1:
        raise ValueError(f"digits (inputs per feature) must be a whole number >= 1, got {digits}")
    if int(levels) != levels or levels < 2:
        raise ValueError(f"digit_levels (input levels of the device) must be a whole number >= 2, "
                         f"got {levels}")
    if digits == 1:
        return xs
    layout = DigitLayout(int(digits), int(levels), xs.shape[1])
    return layout.encode(torch.from_numpy(np.asarray(xs, dtype=np.float64))).numpy()


def _layout(name: str, xs: np.ndarray, slots: int, pad_to: int | None) -> np.ndarray:
    """Zero label slots in front of the features, zero padding behind them."""
    if slots:
        xs = np.concatenate([np.zeros((xs.shape[0], slots)), xs], axis=1)
    if pad_to is not None:
        if int(pad_to) != pad_to or pad_to < xs.shape[1]:
            raise ValueError(
                f"pad_to={pad_to} is smaller than the {slots} label slots + "
                f"{xs.shape[1] - slots} features = {xs.shape[1]} inputs of {name}"
            )
        xs = np.concatenate([xs, np.zeros((xs.shape[0], int(pad_to) - xs.shape[1]))], axis=1)
    return xs
