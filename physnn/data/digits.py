"""The 8x8 handwritten digits that ship inside scikit-learn (1,797 images, offline)."""

from __future__ import annotations

from .dataset import Dataset, make_dataset


def load_digits(
    *, seed: int = 0, test_fraction: float = 0.2, reserve_label_slots: bool = True
) -> Dataset:
    """Digits split by ``seed``; pixels scaled to [0, 1]; 10 leading label slots by default."""
    from sklearn.datasets import load_digits as _sk_digits

    d = _sk_digits()
    return make_dataset(
        "digits", d.data, d.target, [str(i) for i in range(10)],
        test_fraction=test_fraction, seed=seed, reserve_label_slots=reserve_label_slots,
        image_shape=(8, 8),
    )
