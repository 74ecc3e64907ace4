"""Every notebook in notebooks/ runs top to bottom without a cell error.

Notebooks are executed, not just stored: an API change that breaks the quickstart fails here.
Each runs in a fresh ``python3`` kernel of *this* interpreter (so it imports the physnn under
test, not one from another environment) with a temporary working directory.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (pip install -e '.[dev]')")
nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (pip install -e '.[dev]')")
ipykernel_kernelspec = pytest.importorskip(
    "ipykernel.kernelspec", reason="ipykernel is not installed (pip install -e '.[dev]')"
)

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL = "python3"
CELL_TIMEOUT_S = 300
_PROBE = "import json, sys\nprint(json.dumps({'prefix': sys.prefix, 'executable': sys.executable}))"


@pytest.fixture(scope="session")
def kernel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Jupyter data dir whose ``python3`` kernel spec launches ``sys.executable``.

    A ``python3`` spec in the user's or the system's Jupyter dirs may point at another
    interpreter; putting this one first on JUPYTER_PATH makes the kernel this environment's.
    """
    prefix = tmp_path_factory.mktemp("jupyter-prefix")
    ipykernel_kernelspec.install(prefix=str(prefix), kernel_name=KERNEL)
    return prefix / "share" / "jupyter"


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in NOTEBOOKS])
def test_notebook_runs(
    path: Path, kernel_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "JUPYTER_PATH", os.pathsep.join(filter(None, [str(kernel_dir), os.environ.get("JUPYTER_PATH")]))
    )
    nb = nbformat.read(path, as_version=4)
    # One extra cell, in memory only, proves the kernel ran in this environment.
    nb.cells.append(nbformat.v4.new_code_cell(_PROBE))
    client = nbclient.NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError, with the cell's traceback, on any error

    probe = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    kernel = json.loads(probe)
    assert kernel["prefix"] == sys.prefix, (
        f"{path.name} ran in {kernel['executable']}, not in this interpreter {sys.executable}"
    )
