"""``example-blobs``: a synthetic data set, as a lab would plug in its own measurements.

A loader is any callable ``loader(seed=..., **keys) -> physnn.data.Dataset``: ``seed`` picks
the train/test split (physnn passes each run's seed), the other keys come from the config's
``[data]`` table, and physnn refuses a key the loader does not take before calling it.
``physnn.data.make_dataset`` does the rest: a stratified split, features scaled to [0, 1]
with training statistics, label slots reserved for PhyLL's label overlay.
"""

from __future__ import annotations

import numpy as np

from physnn.data import Dataset, make_dataset


def load_blobs(
    *,
    seed: int = 0,
    n_samples: int = 600,
    n_features: int = 8,
    n_classes: int = 3,
    spread: float = 1.0,
    test_fraction: float = 0.2,
    reserve_label_slots: bool = True,
) -> Dataset:
    """Gaussian blobs, one per class, around centres 3 units apart on average.

    The samples are the same for every ``seed`` (drawn from a fixed stream, like a file on
    disk); only the split changes with it, as for physnn's own data sets.
    """
    if n_classes < 2 or n_samples < 5 * n_classes:
        raise ValueError(f"example-blobs: need n_classes >= 2 and n_samples >= 5 * n_classes, "
                         f"got {n_classes} and {n_samples}")
    rng = np.random.default_rng(1234)
    centres = rng.normal(0.0, 3.0 / np.sqrt(2), size=(n_classes, n_features))
    y = np.arange(n_samples) % n_classes
    x = centres[y] + rng.normal(0.0, spread, size=(n_samples, n_features))
    return make_dataset(
        "example-blobs", x, y, [f"blob {k}" for k in range(n_classes)],
        test_fraction=test_fraction, seed=seed, reserve_label_slots=reserve_label_slots,
    )
