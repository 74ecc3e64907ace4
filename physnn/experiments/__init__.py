"""Experiments: configs (TOML presets), the runner, multi-seed summaries."""

from .compare import compare
from .config import load_config, presets
from .runner import RunResult, Summary, build_network, make_trainer, run, train

__all__ = [
    "RunResult", "Summary", "build_network", "compare", "load_config", "make_trainer", "presets", "run",
    "train",
]
