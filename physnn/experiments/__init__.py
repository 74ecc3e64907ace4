"""Experiments: typed configs and presets, the epoch loop, the job runner, and the commands
built on them (train, compare, continual) with their run logs and reports."""

from .compare import compare
from .config import ExperimentConfig, apply_overrides, load_config, presets
from .continual import continual
from .jobs import Job, run_jobs
from .runner import RunResult, build_network, run
from .summary import Summary, train

__all__ = [
    "ExperimentConfig", "Job", "RunResult", "Summary", "apply_overrides", "build_network",
    "compare", "continual", "load_config", "presets", "run", "run_jobs", "train",
]
