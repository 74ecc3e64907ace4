"""From raw calibration measurements to the numbers a lab needs: noise floor, SNR, dynamic
range, saturation and drift, per output channel.

Everything here is a pure function of a record's arrays, so the summary stored in a record can
always be recomputed from them. The record is read through ``RecordView``, a structural
type: the analysis sits below ``physnn.twins.record``, which calls it, and never imports it.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from scipy import stats

from ..core.device import Domain
from .section import Section


class RecordView(Protocol):
    """What the analysis reads from a ``physnn.twins.record.CalibrationRecord``."""

    @property
    def spec(self) -> dict[str, Any]:
        """Name, widths, input domain and output units."""
        ...

    @property
    def sweep(self) -> Section:
        """The sweep: inputs and their outputs."""
        ...

    @property
    def repeats(self) -> Section | None:
        """Repeated passes over a few inputs (the noise floor), if measured."""
        ...

    @property
    def drift(self) -> Section | None:
        """Reference inputs re-measured at checkpoints, if measured."""
        ...

    @property
    def n_in(self) -> int:
        """Input width."""
        ...

    @property
    def n_out(self) -> int:
        """Output width."""
        ...

    @property
    def domain(self) -> Domain:
        """The input domain."""
        ...

    def summary(self) -> dict[str, Any]:
        """The record's (cached) ``summarize``."""
        ...


SATURATION_FRACTION = 0.01
"""A channel counts as saturated when at least this share of sweep samples sits exactly at its
extreme value (clipped). Saturation hidden under noise added after it is not caught this way:
the response curves show it."""
FALSE_ALARM = 0.01
"""Probability, over all channels together, of calling a channel drifting when it is not."""


def noise_from_repeats(outputs: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-channel noise standard deviation from ``[R, M, C]`` repeated measurements.

    Each input's mean is removed, then a linear trend over the passes (shared by all inputs),
    so slow drift during the repeats does not count as noise. Returns (sigma, degrees of
    freedom).
    """
    y = np.asarray(outputs, dtype=np.float64)
    r, m, _ = y.shape
    if r < 2:
        raise ValueError(f"noise needs at least 2 repeated passes, got {r}")
    resid = y - y.mean(0, keepdims=True)
    dof = m * (r - 1)
    if r >= 3:
        t = np.arange(r, dtype=np.float64) - (r - 1) / 2
        slope = np.einsum("r,rmc->c", t, resid) / (m * np.sum(t * t))
        resid = resid - t[:, None, None] * slope[None, None, :]
        dof -= 1
    return np.sqrt(np.sum(resid**2, axis=(0, 1)) / dof), dof


def noise_from_duplicates(inputs: np.ndarray, outputs: np.ndarray) -> tuple[np.ndarray, int] | None:
    """Pooled per-channel noise from rows whose inputs are identical (imported data often has
    them); ``None`` when no input occurs twice."""
    _, inverse, counts = np.unique(inputs, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    dup = counts[inverse] >= 2
    if not dup.any():
        return None
    groups, y = inverse[dup], outputs[dup]
    n_groups = int(np.unique(groups).size)
    sums = np.zeros((counts.size, y.shape[1]))
    np.add.at(sums, groups, y)
    means = sums / np.maximum(counts, 1)[:, None]
    ss = np.sum((y - means[groups]) ** 2, axis=0)
    dof = int(dup.sum()) - n_groups
    return np.sqrt(ss / dof), dof


def linear_trend(t: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slope of ``m[T, C]`` against ``t[T]`` per column, and its standard error
    (NaN with fewer than 3 points)."""
    t = np.asarray(t, dtype=np.float64)
    tc = t - t.mean()
    sxx = float(np.sum(tc * tc))
    if sxx == 0:
        nan = np.full(m.shape[1], np.nan)
        return nan, nan
    mc = m - m.mean(0, keepdims=True)
    slope = tc @ mc / sxx
    if t.size < 3:
        return slope, np.full_like(slope, np.nan)
    resid = mc - tc[:, None] * slope[None, :]
    se = np.sqrt(np.sum(resid**2, axis=0) / (t.size - 2) / sxx)
    return slope, se


def summarize(rec: RecordView) -> dict[str, Any]:
    """The summary stored in a record's ``/summary`` group (see ``calibration/README.md``)."""
    y = rec.sweep.outputs
    out: dict[str, Any] = {"n_samples": int(y.shape[0])}
    out.update(_noise_floor(rec))
    out.update(_levels(y, out["noise_floor"]))
    out.update(_saturation(y))
    out.update(_drift(rec.drift, out["noise_floor"]))
    tpq = rec.spec.get("time_per_query_s", 0.0)
    out["drift_rate_common_per_s"] = out["drift_rate_common"] / tpq if tpq > 0 else float("nan")
    return out


def _noise_floor(rec: RecordView) -> dict[str, Any]:
    """Noise from the repeats, else from duplicated sweep inputs, else unknown (NaN)."""
    y = rec.sweep.outputs
    noise, source, dof = np.full(y.shape[1], np.nan), "none", 0
    if rec.repeats is not None and rec.repeats.outputs.shape[0] >= 2:
        noise, dof = noise_from_repeats(rec.repeats.outputs)
        source = "repeats"
    elif (dup := noise_from_duplicates(rec.sweep.inputs, y)) is not None:
        noise, dof = dup
        source = "duplicate inputs"
    return {"noise_floor": noise, "noise_source": source, "noise_dof": int(dof),
            "noise_floor_rms": float(np.sqrt(np.mean(noise**2)))}


def _median_finite(v: np.ndarray) -> float:
    finite = np.isfinite(v)
    return float(np.median(v[finite])) if finite.any() else float("nan")


def _levels(y: np.ndarray, noise: np.ndarray) -> dict[str, Any]:
    """Signal, SNR and dynamic range: the share of the output spread that is not noise."""
    lo, hi = y.min(0), y.max(0)
    std = y.std(0, ddof=1) if y.shape[0] > 1 else np.zeros(y.shape[1])
    signal = np.sqrt(np.clip(std**2 - noise**2, 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = signal / noise
        snr_db = 20 * np.log10(snr)
        dr_db = 20 * np.log10((hi - lo) / noise)
    return {
        "out_mean": y.mean(0), "out_std": std, "out_min": lo, "out_max": hi,
        "out_p01": np.percentile(y, 1, axis=0), "out_p99": np.percentile(y, 99, axis=0),
        "signal_std": signal, "snr": snr, "snr_db": snr_db, "dynamic_range_db": dr_db,
        "snr_db_median": _median_finite(snr_db), "dynamic_range_db_median": _median_finite(dr_db),
    }


def _saturation(y: np.ndarray) -> dict[str, Any]:
    """Samples clipped at exactly a channel's extreme: a detector or ADC limit."""
    lo, hi = y.min(0), y.max(0)
    span = hi - lo
    tol = 1e-9 * np.maximum(np.maximum(np.abs(hi), np.abs(lo)), 1.0)
    sat_hi = np.mean(y >= hi - tol, axis=0)
    sat_lo = np.mean(y <= lo + tol, axis=0)
    sat_hi[span == 0] = sat_lo[span == 0] = 1.0  # a constant channel says nothing: flag it
    saturated = (sat_hi >= SATURATION_FRACTION) | (sat_lo >= SATURATION_FRACTION)
    return {"saturated_high": sat_hi, "saturated_low": sat_lo, "saturated": saturated,
            "saturated_channels": int(saturated.sum())}


def _drift(d: Section | None, noise: np.ndarray) -> dict[str, Any]:
    """Trend of the reference outputs over the checkpoints, per channel and in common."""
    c = noise.shape[0]
    nan = np.full(c, np.nan)
    rate, se, total = nan, nan, nan
    common, common_se = float("nan"), float("nan")
    drifting = np.zeros(c, dtype=bool)
    if d is not None and d.query_index is not None and d.outputs.shape[0] >= 2:
        q = d.query_index.astype(np.float64)
        m = d.outputs.mean(1)  # [T, C]: mean over the reference inputs
        rate, se = linear_trend(q, m)
        total = rate * (q[-1] - q[0])
        cr, cse = linear_trend(q, m.mean(1, keepdims=True))
        common, common_se = float(cr[0]), float(cse[0])
        if q.size >= 3:
            dof_t = q.size - 2
            crit = stats.t.ppf(1 - FALSE_ALARM / (2 * c), dof_t)
            with np.errstate(divide="ignore", invalid="ignore"):
                drifting = np.abs(rate) > crit * se
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(total) / noise
    return {
        "drift_rate_per_query": rate, "drift_rate_stderr": se, "drift_total": total,
        "drift_rel_noise": rel, "drifting": drifting,
        "drift_rate_common": common, "drift_rate_common_stderr": common_se,
        "drifting_channels": int(drifting.sum()),
    }


def summary_text(rec: RecordView) -> str:
    """A short human-readable account of a record's summary (what ``physnn calibrate`` prints)."""
    s = rec.summary()
    units = rec.spec["output_units"]
    lines = [
        f"device {rec.spec['name']}: {rec.n_in} inputs in {rec.domain.describe()} -> "
        f"{rec.n_out} outputs ({units}); {s['n_samples']:,} sweep samples",
    ]
    if s["noise_source"] == "none":
        lines.append("noise floor: not measured (no repeats and no duplicated inputs)")
    else:
        nf = s["noise_floor"]
        lines.append(
            f"noise floor ({s['noise_source']}, {s['noise_dof']} dof): RMS over channels "
            f"{s['noise_floor_rms']:.4g} {units}; per channel {np.min(nf):.4g} .. {np.max(nf):.4g}"
        )
        lines.append(
            f"SNR: median {s['snr_db_median']:.1f} dB; dynamic range: median "
            f"{s['dynamic_range_db_median']:.1f} dB"
        )
    lines.append(
        f"output range: {np.min(s['out_min']):.4g} .. {np.max(s['out_max']):.4g} {units}; "
        f"saturated channels: {s['saturated_channels']} of {rec.n_out}"
    )
    if np.isfinite(s["drift_rate_common"]):
        per_s = s["drift_rate_common_per_s"]
        extra = f" = {per_s:.4g} {units}/device-second" if np.isfinite(per_s) else ""
        lines.append(
            f"drift (common to all channels): {1000 * s['drift_rate_common']:.4g} ± "
            f"{1000 * s['drift_rate_common_stderr']:.2g} {units} per 1000 queries{extra}; "
            f"drifting channels: {s['drifting_channels']} of {rec.n_out}"
        )
    else:
        lines.append("drift: not measured (no drift checkpoints)")
    return "\n".join(lines)
