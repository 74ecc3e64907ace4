"""The run log: one HDF5 file per run, rewritten atomically after every epoch.

A reader never sees a half-written file: each write goes to a temporary file in the same
folder and replaces the log in one rename. ``status`` is ``running`` until the last epoch
is written, so a crashed or interrupted run never looks complete; its embedded
checkpoint lets the same command resume it.

A log is trusted only as far as it can be checked. Every write stores a SHA-256 of the
whole content (attributes, metrics, checkpoint), and every read recomputes it, so a flipped
byte is refused instead of resumed or reported. The checkpoint holds only tensors and plain
data and is read with ``weights_only=True``: a log someone sent you cannot run code. One
process at a time writes a log: ``hold_run_log`` takes an exclusive lock for the whole run.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import hashlib
import io
import json
import os
import pickle
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from ..core.atomic import atomic_path

FORMAT_VERSION = 2
"""2: with the ``sha256`` attribute and a weights-only checkpoint. Logs of format 1 (no
checksum) are still read, unverified, for ``report`` and ``compare --from-logs``."""

START_OVER = "delete it or rerun with --overwrite to start this run over"


class RunLogWriteError(OSError):
    """The run log could not be written (full disk, read-only folder, ...); one line."""


class Refused(ValueError):
    """A run log that was read and refused (damaged, foreign, unsafe); one line."""


def write_run(path: str | Path, record: dict[str, Any]) -> None:
    """Write ``record`` (see ``read_run`` for the keys) atomically to ``path``.

    The file is built in memory and written in one go: HDF5 itself never meets a failing
    disk (it crashes the process on a write error at close). A full disk or a folder that
    turned read-only leaves the previous log as it was and raises ``RunLogWriteError``.
    """
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        _write_content(f, record)
        f.flush()
        f.attrs["sha256"] = content_digest(f)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            fh.write(buf.getbuffer())
            fh.flush()
            os.fsync(fh.fileno())  # on disk before the rename makes it the log
    except OSError as e:
        raise RunLogWriteError(
            f"cannot write run log {path}: {_reason(e)}; the previous log (if any) is intact: "
            "fix this and rerun the same command to resume"
        ) from None


def _reason(e: OSError) -> str:
    if e.errno is not None:
        return f"{os.strerror(e.errno)} (errno {e.errno})"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _write_content(f: h5py.File, record: dict[str, Any]) -> None:
    f.attrs["format_version"] = FORMAT_VERSION
    for key in ("status", "physnn_version", "name", "seed", "created", "wall_time_s"):
        if key in record:
            f.attrs[key] = record[key]
    f.attrs["config_json"] = json.dumps(record["config"])
    f.attrs["devices_json"] = json.dumps(record.get("devices", []))
    m = f.create_group("metrics")
    for key, values in record["metrics"].items():
        m.create_dataset(key, data=np.asarray(values, dtype=np.float64))
    acc = f.create_group("accounting")
    for key, values in record.get("accounting", {}).items():
        g = acc.create_group(key)
        for k, v in values.items():
            g.attrs[k] = v
    ref = f.create_group("reference")
    for k, v in record.get("reference", {}).items():
        ref.attrs[k] = v
    pred = f.create_group("predictions")
    for k, v in record.get("predictions", {}).items():
        pred.create_dataset(k, data=np.asarray(v))
    if record.get("checkpoint") is not None:
        buf = io.BytesIO()
        torch.save(record["checkpoint"], buf)
        f.create_dataset("checkpoint", data=np.frombuffer(buf.getvalue(), dtype=np.uint8))


def content_digest(f: h5py.File, datasets: dict[str, Any] | None = None) -> str:
    """SHA-256 of everything in ``f`` but its own ``sha256`` attribute, in a fixed order.

    ``datasets``, if given, receives every dataset's value by name as it is hashed, so a
    reader need not read the file twice.
    """
    h = hashlib.sha256()

    def attrs(node: h5py.Group | h5py.Dataset) -> None:
        for key in sorted(node.attrs):
            if node.name == "/" and key == "sha256":
                continue
            h.update(b"\0a" + key.encode())
            _hash_value(h, node.attrs[key])

    def visit(name: str) -> None:
        node = f[name]
        h.update(b"\0n" + name.encode())
        attrs(node)
        if isinstance(node, h5py.Dataset):
            value = node[()]
            _hash_value(h, value)
            if datasets is not None:
                datasets[name] = value

    attrs(f)
    names: list[str] = []
    f.visit(names.append)
    for name in sorted(names):
        visit(name)
    return h.hexdigest()


def _hash_value(h: Any, value: Any) -> None:
    if isinstance(value, str):
        h.update(b"s" + value.encode())
    elif isinstance(value, bytes):
        h.update(b"b" + value)
    else:
        arr = np.asarray(value)
        if arr.dtype.kind == "O":  # variable-length strings (a list attribute): hash the text,
            items = [v.decode() if isinstance(v, bytes) else str(v) for v in arr.ravel()]
            h.update(f"O{arr.shape}".encode() + json.dumps(items).encode())  # not the pointers
            return
        h.update(f"{arr.dtype.str}{arr.shape}".encode() + np.ascontiguousarray(arr).tobytes())


def read_run(path: str | Path, *, checkpoint: bool = False) -> dict[str, Any]:
    """Read a run log back as a dict: attrs, ``config``, ``metrics``, ``accounting``, ...

    The content is verified against its checksum and the checkpoint must load as weights
    only (it is checked even when ``checkpoint`` is False, so ``report`` refuses what a
    resume would refuse); anything else is a one-line ``ValueError``.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a run log (.h5 file)")
    if not path.is_file():
        raise FileNotFoundError(f"run log {path} does not exist")
    try:
        f = h5py.File(path, "r")
    except (OSError, RuntimeError) as e:
        raise ValueError(f"{path} is not a readable HDF5 run log ({_first_line(e)}); "
                         f"{START_OVER}") from None
    try:
        with f:
            return _read_content(f, path, checkpoint)
    except Refused:
        raise
    except _DAMAGE as e:  # HDF5 reading structures that a bad disk changed
        raise ValueError(f"{path} is damaged ({_first_line(e)}); {START_OVER}") from None


_DAMAGE = (OSError, RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError,
           OverflowError)
"""What h5py and json raise on a file whose structures were damaged."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _read_content(f: h5py.File, path: Path, checkpoint: bool) -> dict[str, Any]:
    if "config_json" not in f.attrs or "metrics" not in f:
        raise Refused(f"{path} is an HDF5 file but not a physnn run log")
    version = _py(f.attrs.get("format_version", 1))
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise Refused(f"{path} has run-log format {version!r}; this physnn reads formats 1.."
                      f"{FORMAT_VERSION}: upgrade physnn")
    read: dict[str, Any] = {}  # the datasets, read once: hashed, then returned
    if version >= 2 and _py(f.attrs.get("sha256", "")) != content_digest(f, read):
        raise Refused(f"{path} is damaged: its content does not match the checksum written "
                      f"with it; {START_OVER}")

    def value(name: str) -> Any:
        return read[name] if name in read else f[name][()]

    skip = ("config_json", "devices_json", "sha256")
    out: dict[str, Any] = {k: _py(v) for k, v in f.attrs.items() if k not in skip}
    out["config"] = json.loads(f.attrs["config_json"])
    out["devices"] = json.loads(f.attrs.get("devices_json", "[]"))
    out["metrics"] = {k: value(f"metrics/{k}") for k in f["metrics"]}
    out["accounting"] = {
        k: {a: _py(v) for a, v in g.attrs.items()} for k, g in f["accounting"].items()
    }
    out["reference"] = {k: _py(v) for k, v in f["reference"].attrs.items()}
    out["predictions"] = {k: value(f"predictions/{k}") for k in f["predictions"]}
    if "checkpoint" in f:
        state = load_checkpoint(value("checkpoint").tobytes(), path)
        if checkpoint:
            out["checkpoint"] = state
    return out


def load_checkpoint(raw: bytes, path: str | Path) -> Any:
    """A stored checkpoint, unpickled with ``weights_only=True`` (tensors and plain data)."""
    try:
        return torch.load(io.BytesIO(raw), weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError,
            AttributeError, ImportError, IndexError, KeyError, OSError) as e:
        raise Refused(
            f"{path}: its checkpoint is damaged or holds objects other than tensors and plain "
            f"data, refused without loading ({_first_line(e)}); {START_OVER}"
        ) from None


def _py(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, bytes):
        return v.decode()
    return v


# -- one writer per log ---------------------------------------------------------------------


def lock_path(path: str | Path) -> Path:
    """The lock file beside a run log (``.NAME.lock``)."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


@contextmanager
def hold_run_log(path: str | Path) -> Iterator[None]:
    """Hold ``path`` for one writer for the whole block; a second one is refused in one line.

    The lock is the kernel's (``flock``) on a file beside the log that names its holder, so
    a holder that died (kill -9, power cut) leaves nothing to clean up: the next run takes
    the lock over. Temporary files a killed writer left behind are removed once the lock is
    held. Also the first write into the folder, so a read-only or missing folder is refused
    before any work. (``flock`` is per host on network file systems: one host per folder.)
    """
    path = Path(path)
    lock = lock_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunLogWriteError(f"cannot create {path.parent}: {_reason(e)}; choose another "
                               "--out") from None
    fd = _acquire(path, lock)
    try:
        _clean_leftovers(path)
        _probe_writable(path.parent)
        yield
    finally:
        lock.unlink(missing_ok=True)  # while still held: a waiter then sees a stale inode
        os.close(fd)


def _acquire(path: Path, lock: Path) -> int:
    """An fd holding the lock on the file now at ``lock`` (retried if it was replaced)."""
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunLogWriteError(f"cannot write into {path.parent}: {_reason(e)}; choose "
                                   "another --out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunLogWriteError(f"cannot lock {lock}: {_reason(e)}") from None
            raise ValueError(
                f"{path} is being written by another run (process {holder}); wait for it to "
                "finish or choose another --out"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed the file as we locked it: lock the new one
    me = f"{os.getpid()} on {socket.gethostname()}".encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, me, 0)
    return fd


def _probe_writable(folder: Path) -> None:
    """A new file in ``folder`` can be made (the lock file may predate a chmod)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".physnn-probe.", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise RunLogWriteError(f"cannot write into {folder}: {_reason(e)}; choose another "
                               "--out") from None


def _clean_leftovers(path: Path) -> None:
    """Remove ``.NAME.*.part`` files of this log that a killed writer left behind."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.part"):
        tmp.unlink(missing_ok=True)
