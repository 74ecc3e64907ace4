"""The response plot of a calibration record: response curves, dynamic range and saturation,
SNR and drift on one PNG (matplotlib Figure API, no pyplot: the caller's backend is left alone).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .record import CalibrationRecord

if TYPE_CHECKING:  # matplotlib is imported when a plot is drawn, not with physnn.twins
    from matplotlib.axes import Axes


def plot_record(rec: CalibrationRecord, path: str | Path) -> Path:
    """Write the 2x2 response plot of ``rec`` to ``path`` (PNG) and return the path."""
    from matplotlib.figure import Figure

    s = rec.summary()
    units = rec.spec["output_units"]
    fig = Figure(figsize=(12, 8), layout="constrained")
    (ax_r, ax_d), (ax_s, ax_t) = fig.subplots(2, 2)
    _response_curves(ax_r, rec, units)
    _dynamic_range(ax_d, s, rec.n_out, units)
    _snr(ax_s, s, rec.n_out, units)
    _drift(ax_t, rec, s, units)
    src = rec.provenance.get("source", "?")
    fig.suptitle(f"calibration of {rec.spec['name']} ({rec.n_in} -> {rec.n_out}, {src}, "
                 f"{s['n_samples']:,} samples)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _absent(ax: Axes, text: str, title: str) -> None:
    """A panel that says what the record does not hold, rather than an empty frame."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set(title=title)


def _response_curves(ax: Axes, rec: CalibrationRecord, units: str) -> None:
    """One input stepped at a time; the two most responsive outputs of each drawn."""
    resp = rec.response
    if resp is None or not resp.inputs.shape[0]:
        _absent(ax, "no response curves in this record", "response curves")
        return
    coord, value = resp.extras["coordinate"], resp.extras["value"]
    for j in np.unique(coord):
        sel = coord == j
        y = resp.outputs[sel]
        top = np.argsort(-(y.max(0) - y.min(0)))[:2]
        for c in top:
            ax.plot(value[sel], y[:, c], "o-", ms=3, label=f"input {j} -> output {c}")
    ax.legend(fontsize=7, ncol=2)
    ax.set(xlabel="input value (others held)", ylabel=f"output ({units})",
           title="response curves (most responsive outputs)")


def _dynamic_range(ax: Axes, s: dict[str, Any], n_out: int, units: str) -> None:
    """Per channel: the sweep's output range, its 1-99 % band, and saturated channels."""
    ch = np.arange(n_out)
    ax.fill_between(ch, s["out_min"], s["out_max"], color="C0", alpha=0.2, label="min .. max")
    ax.fill_between(ch, s["out_p01"], s["out_p99"], color="C0", alpha=0.5, label="1 .. 99 %")
    ax.plot(ch, s["out_mean"], color="C0", lw=1, label="mean")
    sat = np.asarray(s["saturated"], bool)
    if sat.any():
        ax.plot(ch[sat], s["out_max"][sat], "rx", ms=5, label="saturated")
    ax.legend(fontsize=8)
    ax.set(xlabel="output channel", ylabel=f"output ({units})",
           title=f"dynamic range over the sweep ({s['saturated_channels']} saturated channels)")


def _snr(ax: Axes, s: dict[str, Any], n_out: int, units: str) -> None:
    """SNR per channel against its median, when the record has a noise floor."""
    if s["noise_source"] == "none":
        _absent(ax, "noise floor not measured", "SNR")
        return
    ch = np.arange(n_out)
    snr = np.where(np.isfinite(s["snr_db"]), s["snr_db"], np.nan)
    ax.plot(ch, snr, ".", ms=4, label="SNR (dB)")
    ax.axhline(s["snr_db_median"], color="gray", ls="--", label=f"median {s['snr_db_median']:.1f} dB")
    ax.set(xlabel="output channel", ylabel="SNR (dB)",
           title=f"SNR; noise floor RMS {s['noise_floor_rms']:.3g} {units} ({s['noise_source']})")
    ax.legend(fontsize=8)


def _drift(ax: Axes, rec: CalibrationRecord, s: dict[str, Any], units: str) -> None:
    """Change of the reference outputs over the checkpoints, with the common trend fitted."""
    d = rec.drift
    if d is None or d.query_index is None or d.outputs.shape[0] < 2:
        _absent(ax, "no drift checkpoints in this record", "drift")
        return
    q = d.query_index.astype(float)
    m = d.outputs.mean(1)
    dm = m - m[0]
    ax.fill_between(q, np.percentile(dm, 5, axis=1), np.percentile(dm, 95, axis=1),
                    color="C1", alpha=0.3, label="channels, 5 .. 95 %")
    ax.plot(q, dm.mean(1), "o", color="C1", label="mean over channels")
    rate = s["drift_rate_common"]
    ax.plot(q, rate * (q - q.mean()) + dm.mean(1).mean(), "k--",
            label=f"fit: {1000 * rate:.3g} {units} / 1000 queries")
    ax.legend(fontsize=8)
    ax.set(xlabel="device queries since start", ylabel=f"change of reference outputs ({units})",
           title=f"drift ({s['drifting_channels']} drifting channels)")
