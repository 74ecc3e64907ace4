"""The calibration record: what a device did to known inputs, in one HDF5 file.

A calibration (``physnn calibrate``) and an import of measurements made elsewhere
(``physnn import``) produce the same record, so everything downstream (surrogate fitting,
drift checks, plots) reads one format. The layout is documented in ``calibration/README.md``.

Records are written atomically (temporary file in the same folder, then one rename) and carry
a ``status`` attribute that is ``running`` while a calibration is in progress, so an
interrupted calibration never leaves a file that reads as complete.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..core.atomic import atomic_path
from ..core.device import Device, DeviceSpec, Domain
from ..core.registry import make_device
from .analysis import summarize
from .section import Section

FORMAT = "physnn-calibration"
FORMAT_VERSION = 1
SECTIONS = ("sweep", "repeats", "drift", "response")
"""Groups of measurements a record may hold; only ``sweep`` is required."""


def spec_dict(spec: DeviceSpec | Mapping[str, Any]) -> dict[str, Any]:
    """The device facts a record needs, from a ``DeviceSpec`` or a dict."""
    d = dict(spec) if isinstance(spec, Mapping) else spec.to_dict()
    dom = dict(d.get("domain", {}))
    if dom.get("levels") is not None:
        dom["levels"] = [float(v) for v in dom["levels"]]
    else:
        dom.pop("levels", None)
    out = {
        "name": str(d.get("name", "unknown")),
        "n_in": int(d["n_in"]),
        "n_out": int(d["n_out"]),
        "domain": {"lo": float(dom.get("lo", 0.0)), "hi": float(dom.get("hi", 1.0)), **(
            {"levels": dom["levels"]} if "levels" in dom else {})},
        "output_units": str(d.get("output_units", "a.u.")),
        "time_per_query_s": float(d.get("time_per_query_s", 0.0)),
        "energy_per_query_j": float(d.get("energy_per_query_j", 0.0)),
    }
    return out


@dataclass
class CalibrationRecord:
    """A device's measured behaviour plus where it came from.

    ``spec`` holds name, n_in, n_out, input domain and output units; ``device`` the
    description the device was built from (``None`` for imported measurements);
    ``provenance`` who/what/when (created, physnn_version, command, seed, source, settings,
    origin). ``summary`` derives noise floor, SNR, dynamic range, saturation and drift.
    """

    spec: dict[str, Any]
    sweep: Section
    repeats: Section | None = None
    drift: Section | None = None
    response: Section | None = None
    device: dict[str, Any] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    status: str = "complete"
    path: Path | None = None
    """Where the record was read from or last written to (not stored in the file)."""

    def __post_init__(self) -> None:
        self.spec = spec_dict(self.spec)
        self._summary: dict[str, Any] | None = None
        self.validate()

    # -- facts ---------------------------------------------------------------------------------
    @property
    def n_in(self) -> int:
        """Input width of the measured device."""
        return int(self.spec["n_in"])

    @property
    def n_out(self) -> int:
        """Output width (channels) of the measured device."""
        return int(self.spec["n_out"])

    @property
    def domain(self) -> Domain:
        """The input domain, rebuilt from the spec so a record needs no device to be read."""
        return Domain.from_dict(self.spec["domain"])

    @property
    def inputs(self) -> np.ndarray:
        """The sweep inputs: what a twin is fitted on."""
        return self.sweep.inputs

    @property
    def outputs(self) -> np.ndarray:
        """The sweep outputs: what a twin is fitted to."""
        return self.sweep.outputs

    def sections(self) -> dict[str, Section]:
        """The sections this record holds, in ``SECTIONS`` order (the file's order)."""
        return {k: s for k in SECTIONS if (s := getattr(self, k)) is not None}

    def make_device(self, **overrides: Any) -> Device:
        """Rebuild the device this record was measured on from its stored description."""
        if self.device is None:
            raise ValueError(
                "this record holds no device description (imported measurements): name the device"
            )
        return make_device(dict(self.device), **overrides)

    def validate(self) -> None:
        """Raise ValueError if the arrays do not fit the spec or each other."""
        n_in, n_out = self.n_in, self.n_out
        if self.status not in ("running", "complete"):
            raise ValueError(f"record status must be 'running' or 'complete', got {self.status!r}")
        for name, sec in self.sections().items():
            x, y = sec.inputs, sec.outputs
            if x.ndim != 2 or x.shape[1] != n_in:
                raise ValueError(
                    f"calibration record: {name} inputs have shape {x.shape}; expected [rows, {n_in}]"
                )
            stacked = name in ("repeats", "drift")
            want = 3 if stacked else 2
            if y.ndim != want or y.shape[-1] != n_out or y.shape[-2] != x.shape[0]:
                rows = "[passes, rows, " if stacked else "["
                raise ValueError(
                    f"calibration record: {name} outputs have shape {y.shape}; expected "
                    f"{rows}{x.shape[0]}, {n_out}] for {x.shape[0]} input rows"
                )
            if not (np.isfinite(x).all() and np.isfinite(y).all()):
                raise ValueError(f"calibration record: {name} holds NaN or infinite values")
            q = sec.query_index
            if q is not None and q.shape != (y.shape[0],):
                raise ValueError(
                    f"calibration record: {name} query_index has shape {q.shape}; "
                    f"expected ({y.shape[0]},)"
                )
        if self.sweep.inputs.shape[0] < 1:
            raise ValueError("calibration record: the sweep holds no samples")

    def fingerprint(self) -> str:
        """SHA-256 of the spec and every measured array: names a record's content, not its file."""
        h = hashlib.sha256(json.dumps(self.spec, sort_keys=True).encode())
        for name, sec in self.sections().items():
            h.update(name.encode())
            for arr in (sec.inputs, sec.outputs):
                h.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
        return h.hexdigest()

    def summary(self) -> dict[str, Any]:
        """Per-channel noise floor, SNR, dynamic range, saturation and drift (cached)."""
        if self._summary is None:
            self._summary = summarize(self)
        return self._summary


# -- HDF5 ----------------------------------------------------------------------------------------


def write_record(path: str | Path, rec: CalibrationRecord) -> Path:
    """Write ``rec`` to ``path`` atomically (a reader never sees a half-written record)."""
    path = Path(path)
    if path.suffix not in (".h5", ".hdf5"):
        raise ValueError(f"a calibration record is an HDF5 file: use a .h5 path, got {path}")
    rec.validate()
    summary = rec.summary() if rec.status == "complete" else None
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["status"] = rec.status
        f.attrs["spec_json"] = json.dumps(rec.spec)
        f.attrs["device_json"] = json.dumps(rec.device)
        f.attrs["provenance_json"] = json.dumps(rec.provenance, default=str)
        for key in ("created", "physnn_version", "source", "command"):
            if key in rec.provenance:
                f.attrs[key] = str(rec.provenance[key])
        f.attrs["fingerprint"] = rec.fingerprint()
        for name, sec in rec.sections().items():
            g = f.create_group(name)
            g.create_dataset("inputs", data=sec.inputs)
            g.create_dataset("outputs", data=sec.outputs)
            if sec.query_index is not None:
                g.create_dataset("query_index", data=sec.query_index)
            for k, v in sec.extras.items():
                g.create_dataset(k, data=v)
        if summary is not None:
            s = f.create_group("summary")
            for k, v in summary.items():
                if isinstance(v, np.ndarray):
                    s.create_dataset(k, data=v)
                else:
                    s.attrs[k] = v
    rec.path = path
    return path


def is_record(path: str | Path) -> bool:
    """True if ``path`` is an HDF5 file in the calibration record format."""
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == FORMAT
    except OSError:
        return False


def read_record(path: str | Path, *, allow_incomplete: bool = False) -> CalibrationRecord:
    """Read a record; refuses an interrupted one (status ``running``) unless asked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"calibration record {path} does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path} is not a readable HDF5 file: {e}") from None
    with f:
        if f.attrs.get("format") != FORMAT:
            raise ValueError(
                f"{path} is an HDF5 file but not a physnn calibration record (no "
                f"format={FORMAT!r} attribute); to use measured pairs stored in it, run "
                "'physnn import' first"
            )
        version = int(f.attrs["format_version"])
        if version > FORMAT_VERSION:
            raise ValueError(
                f"{path} has calibration format version {version}; this physnn reads up to "
                f"{FORMAT_VERSION}: upgrade physnn"
            )
        status = str(f.attrs["status"])
        if status != "complete" and not allow_incomplete:
            raise ValueError(
                f"{path} is an incomplete calibration (status {status!r}): it was interrupted "
                "before the end; rerun the calibration"
            )
        sections = _read_sections(f)
        if "sweep" not in sections:
            raise ValueError(f"{path}: calibration record without a sweep group")
        rec = CalibrationRecord(
            spec=json.loads(f.attrs["spec_json"]),
            device=json.loads(f.attrs["device_json"]),
            provenance=json.loads(f.attrs["provenance_json"]),
            status=status,
            path=path,
            sweep=sections["sweep"],
            repeats=sections.get("repeats"),
            drift=sections.get("drift"),
            response=sections.get("response"),
        )
    return rec


def _read_sections(f: h5py.File) -> dict[str, Section]:
    """Every section group in an open record file; extra datasets become extras."""
    sections = {}
    for name in SECTIONS:
        if name not in f:
            continue
        g = f[name]
        sections[name] = Section(
            inputs=g["inputs"][()],
            outputs=g["outputs"][()],
            query_index=g["query_index"][()] if "query_index" in g else None,
            extras={k: g[k][()] for k in g if k not in ("inputs", "outputs", "query_index")},
        )
    return sections
