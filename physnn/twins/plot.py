"""The response plot of a calibration record: response curves, dynamic range and saturation,
SNR and drift on one PNG (matplotlib Figure API, no pyplot: the caller's backend is left alone).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .record import CalibrationRecord


def plot_record(rec: CalibrationRecord, path: str | Path) -> Path:
    """Write the 2x2 response plot of ``rec`` to ``path`` (PNG) and return the path."""
    from matplotlib.figure import Figure

    s = rec.summary()
    units = rec.spec["output_units"]
    ch = np.arange(rec.n_out)
    fig = Figure(figsize=(12, 8), layout="constrained")
    (ax_r, ax_d), (ax_s, ax_t) = fig.subplots(2, 2)

    # response curves: one input stepped, the most responsive outputs drawn
    resp = rec.response
    if resp is not None and resp.inputs.shape[0]:
        coord, value = resp.extras["coordinate"], resp.extras["value"]
        for j in np.unique(coord):
            sel = coord == j
            y = resp.outputs[sel]
            top = np.argsort(-(y.max(0) - y.min(0)))[:2]
            for c in top:
                ax_r.plot(value[sel], y[:, c], "o-", ms=3, label=f"input {j} -> output {c}")
        ax_r.legend(fontsize=7, ncol=2)
        ax_r.set(xlabel="input value (others held)", ylabel=f"output ({units})",
                 title="response curves (most responsive outputs)")
    else:
        ax_r.text(0.5, 0.5, "no response curves in this record", ha="center", va="center",
                  transform=ax_r.transAxes)
        ax_r.set(title="response curves")

    # dynamic range and saturation per channel
    ax_d.fill_between(ch, s["out_min"], s["out_max"], color="C0", alpha=0.2, label="min .. max")
    ax_d.fill_between(ch, s["out_p01"], s["out_p99"], color="C0", alpha=0.5, label="1 .. 99 %")
    ax_d.plot(ch, s["out_mean"], color="C0", lw=1, label="mean")
    sat = np.asarray(s["saturated"], bool)
    if sat.any():
        ax_d.plot(ch[sat], s["out_max"][sat], "rx", ms=5, label="saturated")
    ax_d.legend(fontsize=8)
    ax_d.set(xlabel="output channel", ylabel=f"output ({units})",
             title=f"dynamic range over the sweep ({s['saturated_channels']} saturated channels)")

    # noise floor and SNR
    if s["noise_source"] != "none":
        snr = np.where(np.isfinite(s["snr_db"]), s["snr_db"], np.nan)
        ax_s.plot(ch, snr, ".", ms=4, label="SNR (dB)")
        ax_s.axhline(s["snr_db_median"], color="gray", ls="--",
                     label=f"median {s['snr_db_median']:.1f} dB")
        ax_s.set(xlabel="output channel", ylabel="SNR (dB)",
                 title=f"SNR; noise floor RMS {s['noise_floor_rms']:.3g} {units} "
                       f"({s['noise_source']})")
        ax_s.legend(fontsize=8)
    else:
        ax_s.text(0.5, 0.5, "noise floor not measured", ha="center", va="center",
                  transform=ax_s.transAxes)
        ax_s.set(title="SNR")

    # drift at the checkpoints
    d = rec.drift
    if d is not None and d.outputs.shape[0] >= 2:
        q = d.query_index.astype(float)
        m = d.outputs.mean(1)
        dm = m - m[0]
        ax_t.fill_between(q, np.percentile(dm, 5, axis=1), np.percentile(dm, 95, axis=1),
                          color="C1", alpha=0.3, label="channels, 5 .. 95 %")
        ax_t.plot(q, dm.mean(1), "o", color="C1", label="mean over channels")
        rate = s["drift_rate_common"]
        ax_t.plot(q, rate * (q - q.mean()) + dm.mean(1).mean(), "k--",
                  label=f"fit: {1000 * rate:.3g} {units} / 1000 queries")
        ax_t.legend(fontsize=8)
        ax_t.set(xlabel="device queries since start", ylabel=f"change of reference outputs ({units})",
                 title=f"drift ({s['drifting_channels']} drifting channels)")
    else:
        ax_t.text(0.5, 0.5, "no drift checkpoints in this record", ha="center", va="center",
                  transform=ax_t.transAxes)
        ax_t.set(title="drift")

    src = rec.provenance.get("source", "?")
    fig.suptitle(f"calibration of {rec.spec['name']} ({rec.n_in} -> {rec.n_out}, {src}, "
                 f"{s['n_samples']:,} samples)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
