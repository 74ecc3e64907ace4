"""Data sets. Loaders never download: they read what ships with a package or a path you give."""

from collections.abc import Callable

from .._plugins import EntryPointRegistry
from .audio import AudioDataset, load_hillenbrand_audio, speaker_split
from .dataset import Dataset, DigitLayout, LazyFeatures, make_dataset, stratified_split
from .digits import load_digits
from .images import SLMFrame, load_fashion_mnist, load_mnist, read_idx, read_idx_folder
from .table import Table, load_table, read_table, write_table
from .tokens import SUBSETS, read_token_list, token_rows
from .vowels import (
    load_vowels,
    read_hillenbrand_table,
    read_hillenbrand_wav,
    read_peterson_barney,
    synthesize_vowel_table,
)

DATASET_ENTRY_POINT_GROUP = "physnn.datasets"
"""Entry-point group of data sets a plug-in package adds: ``"my-set" = "mylab.data:load"``."""

DATASETS: EntryPointRegistry[Callable[..., Dataset]] = EntryPointRegistry(
    DATASET_ENTRY_POINT_GROUP, "data set", builtin={
        "digits": load_digits, "vowels": load_vowels, "mnist": load_mnist,
        "fashion-mnist": load_fashion_mnist, "table": load_table,
        "hillenbrand-audio": load_hillenbrand_audio,
    },
)
"""Every data set ``[data] name`` may pick (a read-only mapping name -> loader): physnn's own
and those of plug-ins, imported on first use. A loader takes ``seed`` and its own keyword
arguments (the other keys of ``[data]``) and returns a ``Dataset``."""


def register_dataset(name: str, loader: Callable[..., Dataset], *, replace: bool = False) -> None:
    """Make ``[data] name = name`` call ``loader(seed=..., **keys)``, without a package."""
    DATASETS.register(name, loader, replace=replace)


__all__ = [
    "AudioDataset",
    "DATASETS",
    "DATASET_ENTRY_POINT_GROUP",
    "SUBSETS",
    "Table",
    "Dataset",
    "LazyFeatures",
    "SLMFrame",
    "load_fashion_mnist",
    "load_hillenbrand_audio",
    "load_mnist",
    "load_table",
    "read_idx",
    "read_idx_folder",
    "DigitLayout",
    "load_digits",
    "load_vowels",
    "make_dataset",
    "read_hillenbrand_table",
    "read_hillenbrand_wav",
    "read_peterson_barney",
    "read_table",
    "read_token_list",
    "register_dataset",
    "speaker_split",
    "stratified_split",
    "synthesize_vowel_table",
    "token_rows",
    "write_table",
]
