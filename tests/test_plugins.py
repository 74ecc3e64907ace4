"""Plug-ins: a separately installed package adds a device kind and a data set through entry
points, and physnn lists, builds and trains them without knowing the package.

The example package (examples/physnn-plugin-example) is installed into a temporary folder,
never into the development environment, and each command runs in a subprocess with that
folder on PYTHONPATH so ``importlib.metadata`` finds its dist-info.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from physnn.core import KINDS, make_device
from physnn.data import DATASETS
from physnn.experiments.runlog import read_run
from physnn.experiments.runner import load_data

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "physnn-plugin-example"

BROKEN_ENTRY_POINTS = """\
[physnn.devices]
broken:kind = physnn_no_such_module:Device

[physnn.datasets]
broken-set = physnn_no_such_module:load
"""


@pytest.fixture(scope="session")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plug-in installed offline into a folder of its own (built from a copy, so
    the build leaves nothing in examples/)."""
    tmp = tmp_path_factory.mktemp("plugin")
    src, site = tmp / "src", tmp / "site"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    p = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "-q", "--target", str(site), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert (site / "physnn_plugin_example-0.1.0.dist-info" / "entry_points.txt").is_file()
    return site


@pytest.fixture(scope="session")
def broken_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second 'installed' package whose entry points name a module that does not exist."""
    site = tmp_path_factory.mktemp("broken")
    info = site / "physnn_broken_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: physnn-broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(BROKEN_ENTRY_POINTS)
    return site


def physnn(*args: str, cwd: Path, path: list[Path]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in path),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "physnn", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


CONFIG = """\
name = "{name}"
seed = 0

[data]
name = "{data}"

[device]
kind = "example:tanh-mixer"
n_out = 48

[network]
hidden = [32]

[train]
epochs = 4
eval_every = 4
"""


def test_the_plugin_kind_builds_and_prints_its_spec(plugin_path: Path, tmp_path: Path) -> None:
    p = physnn("device", "example:tanh-mixer", cwd=tmp_path, path=[plugin_path])
    assert p.returncode == 0, p.stderr
    assert '"name": "example:tanh-mixer"' in p.stdout and '"output_units": "V"' in p.stdout
    assert '"noise": 0.01' in p.stdout  # describe(): the defaults filled in


@contextmanager
def installed(*paths: Path) -> Iterator[None]:
    """This process sees the packages in ``paths`` (the registries reread the metadata), and
    forgets them afterwards."""
    before = list(sys.path)
    sys.path[:0] = [str(p) for p in paths]
    KINDS.reload()
    DATASETS.reload()
    try:
        yield
    finally:
        sys.path[:] = before
        KINDS.reload()
        DATASETS.reload()


def test_listing_names_the_plugin_and_its_package(plugin_path: Path, tmp_path: Path) -> None:
    p = physnn("device", "--list", cwd=tmp_path, path=[plugin_path])
    assert p.returncode == 0, p.stderr
    kinds, datasets = p.stdout.split("data sets:")
    assert "example:tanh-mixer" in kinds and "sim:optical" in kinds
    assert "physnn-plugin-example 0.1.0" in kinds
    assert "example-blobs" in datasets and "digits" in datasets
    with installed(plugin_path):  # the Python API and the command line list the same names
        assert list(KINDS) == [ln.split()[0] for ln in kinds.splitlines()[1:] if ln.strip()]
        assert list(DATASETS) == [ln.split()[0] for ln in datasets.splitlines() if ln.strip()]
        assert DATASETS.provider("example-blobs") == "physnn-plugin-example 0.1.0"
        dev = make_device({"kind": "example:tanh-mixer", "n_in": 4, "n_out": 3, "seed": 7})
        x = torch.rand(5, 4, dtype=torch.float64)
        again = make_device(dev.describe())  # the description rebuilds the same device
        assert torch.equal(dev(x), again(x)) and dev.accounting.samples == 5
        y1, y2 = dev(x), dev(x)  # the readout noise is drawn afresh each call
        assert not torch.equal(y1, y2) and (y1 - y2).abs().max() < 0.2
        data = load_data({"data": {"name": "example-blobs", "n_classes": 4}}, seed=1)
        assert data.n_classes == 4 and data.class_names[0] == "blob 0"
        with pytest.raises(ValueError, match=r"unknown key\(s\) \['colour'\] in \[data\] for "
                                             r"data set 'example-blobs'"):
            load_data({"data": {"name": "example-blobs", "colour": "red"}}, seed=0)
    assert "example-blobs" not in DATASETS  # forgotten again


@pytest.mark.parametrize(("data", "chance"), [("digits", 0.1), ("example-blobs", 1 / 3)])
def test_a_config_naming_the_plugin_trains(plugin_path: Path, tmp_path: Path, data: str,
                                           chance: float) -> None:
    name = f"{data}-mixer"
    (tmp_path / "run.toml").write_text(CONFIG.format(name=name, data=data))
    p = physnn("train", "run.toml", "--out", "out", "--no-progress", cwd=tmp_path, path=[plugin_path])
    assert p.returncode == 0, p.stderr
    rec = read_run(tmp_path / "out" / name / "seed0.h5")
    assert rec["status"] == "complete"
    assert rec["devices"][0]["kind"] == "example:tanh-mixer"
    test_acc = rec["metrics"]["test_acc"][~np.isnan(rec["metrics"]["test_acc"])][-1]
    assert test_acc > chance + 0.3, test_acc


def test_a_broken_plugin_is_one_line_and_hides_nothing(plugin_path: Path, broken_path: Path,
                                                       tmp_path: Path) -> None:
    path = [plugin_path, broken_path]
    listing = physnn("device", cwd=tmp_path, path=path)  # no argument: the list
    assert listing.returncode == 0, listing.stderr
    for name in ("broken:kind", "example:tanh-mixer", "sim:optical", "broken-set", "example-blobs"):
        assert name in listing.stdout
    p = physnn("device", "broken:kind", cwd=tmp_path, path=path)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert "Traceback" not in p.stderr
    assert ("device kind 'broken:kind' is registered as 'physnn_no_such_module:Device' by "
            "physnn-broken-plugin 0.1, which cannot be loaded (ModuleNotFoundError") in p.stderr
    with installed(*path), pytest.raises(
        ValueError, match=r"^data set 'broken-set' is registered as 'physnn_no_such_module:load' "
                          r"by physnn-broken-plugin 0.1, which cannot be loaded \(ModuleNotFound"
    ):
        load_data({"data": {"name": "broken-set"}}, seed=0)


def test_a_name_two_packages_claim_is_refused(plugin_path: Path, tmp_path: Path) -> None:
    info = tmp_path / "physnn_rival-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: physnn-rival\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text('[physnn.devices]\nexample:tanh-mixer = rival:Mixer\n')
    with installed(plugin_path, tmp_path), pytest.raises(
        ValueError, match=r"device kind 'example:tanh-mixer' is registered twice .*physnn-plugin-"
                          r"example 0.1.0.*physnn-rival 1.0.*uninstall one"
    ):
        make_device("example:tanh-mixer")
