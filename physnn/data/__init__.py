"""Data sets. Loaders never download: they read what ships with a package or a path you give."""

from collections.abc import Callable

from .dataset import Dataset, LazyFeatures, make_dataset, stratified_split
from .digits import load_digits
from .images import SLMFrame, load_fashion_mnist, load_mnist, read_idx, read_idx_folder
from .vowels import (
    load_vowels,
    read_hillenbrand_table,
    read_hillenbrand_wav,
    read_peterson_barney,
    synthesize_vowel_table,
)

DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "vowels": load_vowels,
    "mnist": load_mnist,
    "fashion-mnist": load_fashion_mnist,
}

__all__ = [
    "DATASETS",
    "Dataset",
    "LazyFeatures",
    "SLMFrame",
    "load_fashion_mnist",
    "load_mnist",
    "read_idx",
    "read_idx_folder",
    "load_digits",
    "load_vowels",
    "make_dataset",
    "read_hillenbrand_table",
    "read_hillenbrand_wav",
    "read_peterson_barney",
    "stratified_split",
    "synthesize_vowel_table",
]
