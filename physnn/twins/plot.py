"""The response plot of a calibration record: response curves, dynamic range and saturation,
SNR and drift on one PNG (matplotlib Figure API, no pyplot: the caller's backend is left alone).

Imported pairs have no response curves, repeats or drift checkpoints; their panels show what
the pairs do hold instead: the strongest input -> output dependences in the sweep, the spread
of each output (near-constant ones marked) and the outputs in file order.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .record import CalibrationRecord
from .twin import NEAR_CONSTANT_FRACTION

if TYPE_CHECKING:  # matplotlib is imported when a plot is drawn, not with physnn.twins
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def plot_record(rec: CalibrationRecord, path: str | Path) -> Path:
    """Write the 2x2 response plot of ``rec`` to ``path`` (PNG) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record_figure(rec).savefig(path, dpi=110)
    return path


def record_figure(rec: CalibrationRecord) -> Figure:
    """The response plot of ``rec`` as a matplotlib Figure (``plot_record`` saves it)."""
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
    return fig


def _response_curves(ax: Axes, rec: CalibrationRecord, units: str) -> None:
    """One input stepped at a time; the two most responsive outputs of each drawn."""
    resp = rec.response
    if resp is None or not resp.inputs.shape[0]:
        _sweep_dependences(ax, rec)
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
        _spread(ax, s, n_out, units)
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
        _file_order(ax, rec)
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


def _standardised(y: np.ndarray) -> np.ndarray:
    """Each column minus its mean over its standard deviation (constant columns: zeros), so
    channels three orders of magnitude apart share an axis."""
    std = y.std(0)
    return (y - y.mean(0)) / np.where(std > 0, std, 1.0)


def _sweep_dependences(ax: Axes, rec: CalibrationRecord, pairs: int = 4) -> None:
    """No response curves (imported pairs): the sweep's most correlated input -> output
    pairs, output against input, with the mean in bins of the input."""
    x, y = rec.sweep.inputs, _standardised(rec.sweep.outputs)
    corr = np.nan_to_num(_standardised(x).T @ y / x.shape[0])  # [n_in, n_out]
    order = np.argsort(-np.abs(corr), axis=None)[:pairs]
    rows = np.random.default_rng(0).permutation(x.shape[0])[:2000]
    for k, flat in enumerate(order):
        i, c = np.unravel_index(flat, corr.shape)
        ax.plot(x[rows, i], y[rows, c], ".", ms=2, alpha=0.25, color=f"C{k}")
        edges = np.unique(np.quantile(x[:, i], np.linspace(0, 1, 11)))
        which = np.clip(np.searchsorted(edges, x[:, i], side="right") - 1, 0, max(edges.size - 2, 0))
        means = [(x[which == b, i].mean(), y[which == b, c].mean())
                 for b in range(max(edges.size - 1, 1)) if (which == b).any()]
        ax.plot(*np.array(means).T, "o-", ms=3, color=f"C{k}",
                label=f"input {i} -> output {c} (r = {corr[i, c]:+.2f})")
    ax.legend(fontsize=7)
    ax.set(xlabel="input value (the others vary)", ylabel="output, standardised",
           title="strongest input -> output dependences in the sweep (no response curves)")


def _spread(ax: Axes, s: dict[str, Any], n_out: int, units: str) -> None:
    """No noise floor (no repeats, no duplicated inputs): each output's spread over the
    sweep, log scale, near-constant outputs (which dominate a per-output mean NMSE) marked."""
    ch = np.arange(n_out)
    std = np.asarray(s["out_std"], dtype=float)
    limit = NEAR_CONSTANT_FRACTION * float(np.median(std))
    near = (std < limit) | (std == 0)
    ax.plot(ch, np.where(std > 0, std, np.nan), "o", ms=4, label="standard deviation")
    if near.any():
        floor = np.where(std[near] > 0, std[near], limit if limit > 0 else 1.0)
        ax.plot(ch[near], floor, "rx", ms=7, label=f"near-constant ({int(near.sum())})")
    if limit > 0:
        ax.axhline(limit, color="gray", ls="--",
                   label=f"{100 * NEAR_CONSTANT_FRACTION:g} % of the median spread")
    if (std > 0).any():
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set(xlabel="output channel", ylabel=f"output spread ({units})",
           title="output spread per channel (noise floor not measured: no repeats)")


def _file_order(ax: Axes, rec: CalibrationRecord, chunks: int = 20) -> None:
    """No drift checkpoints: the standardised outputs' mean in consecutive chunks of rows,
    in file order; a trend is drift when the rows are in measurement order and the inputs
    random."""
    y = _standardised(rec.sweep.outputs)
    parts = np.array_split(np.arange(y.shape[0]), min(chunks, y.shape[0]))
    start = np.array([p[0] for p in parts], dtype=float)
    m = np.stack([y[p].mean(0) for p in parts])  # [chunk, channel]
    ax.fill_between(start, np.percentile(m, 5, axis=1), np.percentile(m, 95, axis=1),
                    color="C1", alpha=0.3, label="channels, 5 .. 95 %")
    ax.plot(start, m.mean(1), "o-", color="C1", ms=3, label="mean over channels")
    ax.axhline(0, color="gray", lw=0.8)
    ax.legend(fontsize=8)
    ax.set(xlabel="row in the file (chunk start)", ylabel="mean output per chunk, standardised",
           title="outputs in file order (no drift checkpoints: a trend is drift if rows are in "
                 "measurement order)")
