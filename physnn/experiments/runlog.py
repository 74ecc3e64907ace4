"""The run log: one HDF5 file per run, rewritten atomically after every epoch.

A reader never sees a half-written file: each write goes to a temporary file in the same
folder and replaces the log in one rename. ``status`` is ``running`` until the last epoch
is written, so a crashed or interrupted run never looks complete; its embedded
checkpoint lets the same command resume it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from ..core.atomic import atomic_path

FORMAT_VERSION = 1


def write_run(path: str | Path, record: dict[str, Any]) -> None:
    """Write ``record`` (see ``read_run`` for the keys) atomically to ``path``."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
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


def read_run(path: str | Path, *, checkpoint: bool = False) -> dict[str, Any]:
    """Read a run log back as a dict: attrs, ``config``, ``metrics``, ``accounting``, ..."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"run log {path} does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path} is not a readable HDF5 run log: {e}") from None
    with f:
        if "config_json" not in f.attrs or "metrics" not in f:
            raise ValueError(f"{path} is an HDF5 file but not a physnn run log")
        skip = ("config_json", "devices_json")
        out: dict[str, Any] = {k: _py(v) for k, v in f.attrs.items() if k not in skip}
        out["config"] = json.loads(f.attrs["config_json"])
        out["devices"] = json.loads(f.attrs.get("devices_json", "[]"))
        out["metrics"] = {k: f["metrics"][k][()] for k in f["metrics"]}
        out["accounting"] = {
            k: {a: _py(v) for a, v in g.attrs.items()} for k, g in f["accounting"].items()
        }
        out["reference"] = {k: _py(v) for k, v in f["reference"].attrs.items()}
        out["predictions"] = {k: f["predictions"][k][()] for k in f["predictions"]}
        if checkpoint and "checkpoint" in f:
            raw = f["checkpoint"][()].tobytes()
            out["checkpoint"] = torch.load(io.BytesIO(raw), weights_only=False)
    return out


def _py(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, bytes):
        return v.decode()
    return v
