"""``check``: has a device moved since it was calibrated?

The record's reference inputs (its drift references, else its repeatability inputs, else the
first sweep rows) are measured again, a few times, and compared channel by channel with what
the record holds. A channel has *moved* when the squared differences exceed what the noise
floor alone explains (a chi-square test at a 1 % false-alarm probability over all channels
together), so a clean device passes whatever its number of channels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from ..core.device import Device
from .analysis import FALSE_ALARM, noise_from_repeats
from .record import CalibrationRecord, read_record


@dataclass
class DriftReport:
    """Per-channel change of a device against a calibration record."""

    device: str
    record: str
    reference: str
    """Which inputs were re-measured: ``drift``, ``repeats`` or ``sweep`` rows."""
    n_inputs: int
    repeats: int
    noise_floor: np.ndarray
    noise_source: str
    shift: np.ndarray
    """Mean change over the reference inputs (an offset), output units."""
    rms_change: np.ndarray
    """Root-mean-square change over the reference inputs (offsets and gain changes alike)."""
    expected_rms: np.ndarray
    """What ``rms_change`` would be from noise alone."""
    moved: np.ndarray
    units: str = "a.u."

    @property
    def rel_noise(self) -> np.ndarray:
        """``rms_change`` in units of the noise floor."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.rms_change / self.noise_floor

    @property
    def drifted(self) -> bool:
        """Whether any channel moved beyond its noise floor."""
        return bool(self.moved.any())

    def as_dict(self) -> dict[str, Any]:
        """Plain types only, for ``--json`` and run logs."""
        return {
            "device": self.device, "record": self.record, "reference": self.reference,
            "n_inputs": self.n_inputs, "repeats": self.repeats, "noise_source": self.noise_source,
            "drifted": self.drifted, "moved_channels": np.flatnonzero(self.moved).tolist(),
            "noise_floor": self.noise_floor.tolist(), "shift": self.shift.tolist(),
            "rms_change": self.rms_change.tolist(), "rel_noise": self.rel_noise.tolist(),
            "expected_rms": self.expected_rms.tolist(), "units": self.units,
        }

    def json(self) -> str:
        """``as_dict`` as indented JSON."""
        return json.dumps(self.as_dict(), indent=2, default=float)

    def text(self, top: int = 10) -> str:
        """The report for a person: a verdict, then the ``top`` channels that moved most."""
        n = self.moved.size
        moved = np.flatnonzero(self.moved)
        rel = self.rel_noise
        lines = [
            f"{self.device} against {self.record}: re-measured {self.n_inputs} reference inputs "
            f"({self.reference}) x {self.repeats}",
            f"noise floor ({self.noise_source}): RMS {np.sqrt(np.mean(self.noise_floor**2)):.4g} "
            f"{self.units}; change RMS over channels {np.sqrt(np.mean(self.rms_change**2)):.4g} "
            f"{self.units} = {np.nanmedian(rel):.2f} x noise floor (median over channels)",
        ]
        if not moved.size:
            lines.append(f"no drift: none of the {n} channels moved beyond its noise floor")
            return "\n".join(lines)
        lines.append(f"DRIFT: {moved.size} of {n} channels moved beyond the noise floor")
        lines.append("| channel | shift | RMS change | x noise floor |")
        lines.append("|---:|---:|---:|---:|")
        for c in moved[np.argsort(-rel[moved])][:top]:
            lines.append(f"| {c} | {self.shift[c]:+.4g} | {self.rms_change[c]:.4g} | {rel[c]:.1f} |")
        if moved.size > top:
            lines.append(f"... and {moved.size - top} more (see --json)")
        return "\n".join(lines)


def _reference(rec: CalibrationRecord, max_rows: int) -> tuple[str, np.ndarray, np.ndarray, int]:
    """Reference inputs, the record's mean outputs for them, and how many passes that mean has."""
    if rec.drift is not None:
        return "drift", rec.drift.inputs, rec.drift.outputs.mean(0), rec.drift.outputs.shape[0]
    if rec.repeats is not None:
        return "repeats", rec.repeats.inputs, rec.repeats.outputs.mean(0), rec.repeats.outputs.shape[0]
    k = min(max_rows, rec.sweep.inputs.shape[0])
    return "sweep", rec.sweep.inputs[:k], rec.sweep.outputs[:k], 1


def check(
    device: Device,
    record: CalibrationRecord | str | Path,
    *,
    repeats: int = 3,
    max_rows: int = 32,
    batch_size: int = 500,
) -> DriftReport:
    """Re-measure the record's reference inputs ``repeats`` times and report drift per channel."""
    rec = record if isinstance(record, CalibrationRecord) else read_record(record)
    spec = device.spec
    if (spec.n_in, spec.n_out) != (rec.n_in, rec.n_out):
        raise ValueError(
            f"{spec.name} has {spec.n_in} inputs and {spec.n_out} outputs but the record "
            f"describes {rec.n_in} -> {rec.n_out}: not the same device"
        )
    if repeats < 1:
        raise ValueError(f"check: repeats must be >= 1, got {repeats}")
    where, x_ref, y_ref, r_old = _reference(rec, max_rows)
    x = torch.as_tensor(x_ref, dtype=torch.float32)
    if spec.domain.violations(x).any():
        raise ValueError(
            f"the record's reference inputs lie outside {spec.name}'s domain "
            f"{spec.domain.describe()}: not the same device"
        )
    passes = []
    for _ in range(repeats):
        ys = [device(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]
        passes.append(torch.cat(ys).double().cpu().numpy())
    y_new = np.stack(passes)  # [R, K, C]

    summary = rec.summary()
    noise, source = summary["noise_floor"], f"record, {summary['noise_source']}"
    if summary["noise_source"] == "none":
        if repeats < 2:
            raise ValueError(
                "the record has no noise floor (no repeats, no duplicated inputs): check needs "
                "repeats >= 2 to measure one now"
            )
        noise, _ = noise_from_repeats(y_new)
        source = "measured now, from the check's repeats"
    scale = np.maximum(np.abs(y_ref).max(0), 1.0)
    noise_eff = np.maximum(noise, 1e-9 * scale)
    d = y_new.mean(0) - y_ref  # [K, C]
    k, c = d.shape
    var_d = noise_eff**2 * (1.0 / repeats + 1.0 / r_old)
    chi2 = np.sum(d**2, axis=0) / var_d
    crit = stats.chi2.ppf(1 - FALSE_ALARM / c, k)
    return DriftReport(
        device=spec.name,
        record=str(rec.path) if rec.path is not None else "(in memory)",
        reference=where,
        n_inputs=k,
        repeats=repeats,
        noise_floor=noise,
        noise_source=source,
        shift=d.mean(0),
        rms_change=np.sqrt(np.mean(d**2, axis=0)),
        expected_rms=np.sqrt(var_d),
        moved=chi2 > crit,
        units=rec.spec["output_units"],
    )
