"""Files written whole or not at all: a crash never leaves a file that looks complete."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def default_file_mode() -> int:
    """The mode a plain ``open()`` would give a new file (0o666 less the umask)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed onto it only when the block succeeds.

    The temporary file lives in the same folder (so the rename is atomic) and gets the mode
    a plain ``open()`` would give; on any error it is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, default_file_mode())  # mkstemp makes it private
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def discard_stale(folder: str | Path, names: tuple[str, ...]) -> None:
    """Remove a command's earlier outputs in ``folder`` (``--overwrite``), so a run that then
    fails leaves no table of the old runs looking current."""
    for name in names:
        (Path(folder) / name).unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_figure_atomic(path: str | Path, fig: Any, dpi: int = 120) -> None:
    """Save a matplotlib Figure to ``path`` (format from the suffix) whole or not at all."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip("."))
