"""Data sets. Loaders never download: they read what ships with a package or a path you give."""

from .dataset import Dataset, stratified_split
from .digits import load_digits

DATASETS = {"digits": load_digits}

__all__ = ["DATASETS", "Dataset", "load_digits", "stratified_split"]
