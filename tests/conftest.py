import copy
import importlib.util
import io
import os
import subprocess
import traceback
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from physnn.cli import main
from physnn.experiments import run
from physnn.experiments.config import load_config
from physnn.experiments.runlog import read_run
from physnn.experiments.runner import RunResult

HILLENBRAND = Path(__file__).parents[1].parent / "shared" / "data" / "hillenbrand"
"""The Hillenbrand reference data (../shared/data): developers and CI have it, a clone does not."""
needs_hillenbrand = pytest.mark.skipif(
    not (HILLENBRAND / "vowdata.dat").is_file(),
    reason=f"Hillenbrand reference data not found at {HILLENBRAND} (developers and CI have "
    "it in ../shared/data; it may not ship with the repository)",
)


def tiny() -> dict:
    """digits-optical shrunk so a run takes about a second, as plain data (nested dicts, as
    TOML gives them): every entry point takes that as well as an ExperimentConfig."""
    cfg = load_config("digits-optical").to_dict()
    cfg["device"]["camera_shape"] = [8, 8]
    cfg["network"]["hidden"] = [32, 32]
    cfg["train"].update(epochs=4, eval_every=2, inner_steps=3, lr=2e-3)
    return cfg


@pytest.fixture
def tiny_config():
    """``tiny()`` for one test."""
    return tiny()


def cli_here(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``physnn ARGS`` run by ``physnn.cli.main`` in this process, in ``cwd``, returned as the
    subprocess would return it (status, stdout, stderr; an escaping exception is status 1 and
    its traceback). Tests of what a command does use it: a fresh interpreter costs seconds
    of imports. Tests of the entry point itself (tests/test_cli.py) start ``python -m physnn``."""
    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    os.chdir(cwd)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as e:  # argparse's usage errors
                code = e.code if isinstance(e.code, int) else 1
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(["physnn", *args], code, out.getvalue(), err.getvalue())


def whole_and_resumed(cfg: Any, folder: Path) -> tuple[RunResult, RunResult]:
    """The same run uninterrupted, and interrupted after its first epoch then resumed: the
    pair every resume test compares (the interrupted log is checked to be left running)."""
    whole = run(cfg, folder / "whole.h5", progress=False)
    run(cfg, folder / "part.h5", progress=False, stop_after=1)
    assert read_run(folder / "part.h5")["status"] == "running"
    return whole, run(cfg, folder / "part.h5", progress=False)


def refused_in_one_line(cfg: dict, train: dict, message: str) -> None:
    """``cfg`` with ``train`` merged into its ``[train]`` is refused by ``load_config`` with
    one line matching ``message``."""
    cfg = copy.deepcopy(cfg)
    cfg["train"].update(train)
    with pytest.raises(ValueError, match=message) as err:
        load_config(cfg)
    assert "\n" not in str(err.value)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)  # tiny tensors: one thread is faster and steadier


@pytest.fixture
def example() -> Callable[[str], ModuleType]:
    """Load ``examples/NAME.py`` as a module (its ``main`` runs it with small sizes)."""

    def load(name: str) -> ModuleType:
        path = Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"example_{name}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


SHARED_CAVITY = ("mnist", "fashion")
"""Tests whose ids name these build the 2809-mode MNIST cavity: its Haar unitary's QR takes
16 s a device, and ``physnn.sim.optical.haar_unitary`` remembers it per process, so they run
on one xdist worker whatever module they are in (saves about a minute of the suite)."""


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadscope`` (a module per worker, so module fixtures run once), with the
    SHARED_CAVITY tests as one scope of their own."""
    from xdist.scheduler import LoadScopeScheduling

    if config.getoption("dist") != "loadscope" or not hasattr(LoadScopeScheduling, "_split_scope"):
        return None  # xdist's own scheduler (the grouping relies on a private method)

    class CavityScope(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if any(word in nodeid for word in SHARED_CAVITY):
                return "shared-cavity"
            return super()._split_scope(nodeid)

    return CavityScope(config, log)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker per core this process may use, at most 8 (each imports torch
    and some build devices of a few hundred MB; more workers than that buy little)."""
    return max(1, min(8, len(os.sched_getaffinity(0))))
