"""The field inside ``sim:acoustic-wave`` for one waveform: snapshots, intensity, probes.

``field_snapshots`` replays one query's time loop with the device's own pieces (``drive``,
the tables with the design region's speed, ``_segment``), so what it shows is the device's
physics, not a copy of it. It advances one time step per ``_segment`` call, the only way to
see every step's pressure without changing the device: the time-integrated intensity
``sum_n p(n dt)^2 dt`` is then exact on every cell (the probe energies' sum, on the whole
grid; at a probe on a cell centre it equals that probe's energy to round-off), not an
estimate from a few sampled steps. The cost is Python's per-call overhead, about three
times a plain query (about a second for the presets' 24 x 24 grid and 4,116 steps): fine
for a picture, which is what this is for. Memory does not grow with the steps: the field,
the running sum and the requested snapshots only.

``plot_wave_field`` draws them on a matplotlib Figure (object API only, no pyplot state).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from .wave_config import NAME

if TYPE_CHECKING:
    from .waveform import WaveformCavity

SNAPSHOTS = 3
"""Pressure snapshots ``plot_wave_field`` draws."""

INTENSITY_RANGE = 1e-4
"""The intensity map's log colour scale spans this fraction of its peak to the peak."""


def field_snapshots(dev: WaveformCavity, x: torch.Tensor, steps: Sequence[int]) -> dict[str, Any]:
    """What the cavity does with waveforms ``x [B, n_in]`` (in [-1, 1]): one no-grad pass of
    the time loop, for a picture of the field (see the module docstring for why step by step).

    Returns ``p`` (``[len(steps), B, rows, cols]``: the pressure after each requested number
    of steps, in Pa; step 0 is the field at rest), ``intensity`` (``[B, rows, cols]``:
    ``sum_n p^2 dt`` over the whole query, Pa^2 s, a running sum), ``energy`` (``[B,
    n_probes]``: the ideal probe energies, as ``dev.simulate``) and ``steps`` (the list).
    """
    total = dev.config.steps
    want = [int(s) for s in steps]
    bad = [s for s in want if not 0 <= s <= total]
    if bad:
        raise ValueError(f"{NAME}: snapshot steps {bad} are outside 0 .. {total} (the query's steps)")
    x = dev.validate(x)
    h, w = dev.config.grid
    dt = dev.config.time_step
    batch = x.shape[0]
    snaps: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        xd = dev.drive(x)
        tb = dev._tab(x.device, x.dtype).with_speed(dev.speed_ratio2(x.device, x.dtype))
        state = dev._initial_state(batch, x.device, x.dtype)
        intensity = torch.zeros(batch, h, w, device=x.device, dtype=x.dtype)
        p = state[0].reshape(batch, h + 2, w + 2)[:, 1:-1, 1:-1]
        if 0 in want:
            snaps[0] = p.clone()
        for n in range(total):
            state = dev._segment(tb, xd, n, n + 1, None, *state)
            p = state[0].reshape(batch, h + 2, w + 2)[:, 1:-1, 1:-1]
            intensity.add_(dt * p.square())
            if n + 1 in want:
                snaps[n + 1] = p.clone()
    empty = torch.zeros(0, batch, h, w, device=x.device, dtype=x.dtype)
    field = torch.stack([snaps[s] for s in want]) if want else empty
    return {"p": field, "intensity": intensity, "energy": state[4], "steps": want}


def snapshot_steps(dev: WaveformCavity, x: torch.Tensor) -> list[int]:
    """``SNAPSHOTS`` steps during the recording (one in the label burst when ``x``'s label
    amplitudes are not all zero): the instants ``plot_wave_field`` shows."""
    cfg = dev.config
    per_step = cfg.sample_rate * cfg.time_step  # input samples a time step
    start, stop = cfg.label_samples, cfg.n_samples
    loud_label = cfg.n_label and bool(x[0, : cfg.n_label].abs().max() > 0)
    n = SNAPSHOTS - 1 if loud_label else SNAPSHOTS
    samples = [start + (stop - start) * (k + 1) / (n + 1) for k in range(n)]
    if loud_label:
        samples.insert(0, start / 2)
    return [min(cfg.steps, max(1, round(s / per_step))) for s in samples]


def plot_wave_field(dev: WaveformCavity, fig: Any, x: torch.Tensor, *, title: str | None = None) -> None:
    """Draw, on a matplotlib Figure, what the cavity does with the first waveform of ``x``:
    the input against time, pressure snapshots, the time-integrated intensity (log scale)
    with the source, probes and design region, the design region's wave speed (when it
    differs from the background) and the probe read-out. A picture of one query, noise-free.
    Reads best at about 13 x 7.5 inches; a figure without a layout engine gets matplotlib's
    constrained layout.
    """
    cfg = dev.config
    if fig.get_layout_engine() is None:
        fig.set_layout_engine("constrained")
    x = dev.validate(x[:1].detach().to(torch.float64))
    steps = snapshot_steps(dev, x)
    out = field_snapshots(dev, x, steps)
    speed = _design_speed(dev)
    gs = fig.add_gridspec(2, SNAPSHOTS + 1, height_ratios=[1, 1.6])
    top = SNAPSHOTS - 1 if speed is not None else SNAPSHOTS
    _plot_input(dev, fig.add_subplot(gs[0, :top]), x, steps)
    _plot_probes(dev, fig.add_subplot(gs[0, top]), out["energy"][0])
    if speed is not None:
        _plot_speed(dev, fig, fig.add_subplot(gs[0, SNAPSHOTS]), speed)
    for k, s in enumerate(steps):
        _plot_snapshot(dev, fig, fig.add_subplot(gs[1, k]), out["p"][k, 0], s, k)
    ax_i = fig.add_subplot(gs[1, SNAPSHOTS])
    _plot_intensity(dev, fig, ax_i, out["intensity"][0])
    handles, labels = ax_i.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize="small")
    h, w = cfg.grid
    fig.suptitle(
        title
        or f"{NAME}: {h} x {w} cells of {cfg.dx * 100:g} cm, {cfg.steps} steps "
        f"of {cfg.time_step * 1e6:.1f} us, one waveform"
    )


def _design_speed(dev: WaveformCavity) -> torch.Tensor | None:
    """The design region's speed as a query uses it (clamped), or None when there is no
    region or it is all the background speed."""
    if not dev.wave_speed.numel():
        return None
    lo, hi = dev.config.speed_range or (dev.config.c, dev.config.c)
    speed = dev.wave_speed.detach().clamp(lo, hi).double().cpu()
    return speed if bool((speed - dev.config.c).abs().max() > 1e-9) else None


def _plot_input(dev: WaveformCavity, ax: Any, x: torch.Tensor, steps: list[int]) -> None:
    """The drive against time: label burst (shaded), recording, tail; snapshot instants."""
    import numpy as np

    cfg = dev.config
    with torch.no_grad():
        drive = dev.drive(x)[0].cpu().numpy()
    t_ms = np.arange(drive.size) / cfg.sample_rate * 1e3
    ax.plot(t_ms, drive, lw=0.7, color="tab:blue")
    if cfg.n_label:
        amps = ", ".join(
            f"{f:g} Hz: {float(a):.2g}"
            for f, a in zip(cfg.label_tones, x[0, : cfg.n_label], strict=True)
        )
        amps = amps if x[0, : cfg.n_label].any() else "silent: no label"
        ax.axvspan(
            0,
            cfg.label_samples / cfg.sample_rate * 1e3,
            color="tab:orange",
            alpha=0.2,
            label=f"label tones ({amps})",
        )
    end_ms = cfg.duration_s * 1e3
    if cfg.tail_s:
        ax.axvspan(cfg.n_samples / cfg.sample_rate * 1e3, end_ms, color="0.85", label="tail")
    for k, s in enumerate(steps):
        t = s * cfg.time_step * 1e3
        ax.axvline(t, color="k", ls=":", lw=0.8)
        ax.annotate(
            f"({chr(97 + k)})",
            (t, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -2),
            textcoords="offset points",
            va="top",
            fontsize="small",
        )
    ax.set(
        xlim=(0, end_ms),
        xlabel="time (ms)",
        ylabel=f"x (x {cfg.volume_velocity:g} m^2/s)",
        title="input waveform: the source's volume velocity",
    )
    if cfg.n_label or cfg.tail_s:
        ax.legend(loc="lower right", fontsize="small")


def _plot_probes(dev: WaveformCavity, ax: Any, energy: torch.Tensor) -> None:
    """Bar chart of the probes' read-out: energies, or each probe's share (``readout``)."""
    import numpy as np

    e = energy.detach().double().cpu().numpy()
    if dev.config.readout == "fraction":
        values, unit = 100 * e / max(float(e.sum()), 1e-300), "share of the probes' energy (%)"
    else:
        values, unit = e, "energy (Pa^2 s)"
    k = np.arange(1, e.size + 1)
    colors = ["tab:green"] * e.size
    colors[int(np.argmax(values))] = "darkgreen"
    ax.bar(k, values, color=colors)
    ax.set(xlabel="probe", ylabel=unit, title="probe read-out (noise-free)")
    ax.set_xticks(k)


def _extent(dev: WaveformCavity) -> tuple[float, float, float, float]:
    h, w = dev.config.grid
    return (-0.5, w - 0.5, h - 0.5, -0.5)


def _plot_snapshot(dev: WaveformCavity, fig: Any, ax: Any, p: torch.Tensor, step: int, k: int) -> None:
    """The pressure after ``step`` steps (snapshot ``k``) on a symmetric colour scale of its
    own (the recording's loudness varies), the geometry on top."""
    snap = p.detach().double().cpu().numpy()
    vmax = max(float(abs(snap).max()), 1e-30)
    im = ax.imshow(snap, cmap="RdBu_r", vmin=-vmax, vmax=vmax, extent=_extent(dev))
    fig.colorbar(im, ax=ax, label="p (Pa)", shrink=0.8)
    ax.set_title(f"({chr(97 + k)}) pressure at {step * dev.config.time_step * 1e3:.1f} ms")
    _overlay(dev, ax, legend=False, ylabel=k == 0)


def _plot_intensity(dev: WaveformCavity, fig: Any, ax: Any, intensity: torch.Tensor) -> None:
    """``sum_n p^2 dt`` on a log colour scale (``INTENSITY_RANGE`` of the peak), geometry on top."""
    import numpy as np
    from matplotlib.colors import LogNorm

    m = intensity.detach().double().cpu().numpy()
    vmax = max(float(m.max()), 1e-300)
    shown = np.ma.masked_less_equal(m, 0.0)
    norm = LogNorm(vmin=vmax * INTENSITY_RANGE, vmax=vmax, clip=True)
    im = ax.imshow(shown, cmap="magma", norm=norm, extent=_extent(dev))
    fig.colorbar(im, ax=ax, label="sum p^2 dt (Pa^2 s)", shrink=0.8)
    ax.set_title(f"intensity, 0-{dev.config.duration_s * 1e3:.0f} ms")
    _overlay(dev, ax, legend=True, ylabel=False)


def _plot_speed(dev: WaveformCavity, fig: Any, ax: Any, speed: torch.Tensor) -> None:
    """The design region's wave speed (m/s) on the grid, the background left blank."""
    import numpy as np

    h, w = dev.config.grid
    r0, c0, r1, c1 = dev.config.design_region or [0, 0, 0, 0]
    grid = np.full((h, w), np.nan)
    grid[r0:r1, c0:c1] = speed.numpy()
    im = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", extent=_extent(dev))
    fig.colorbar(im, ax=ax, label="wave speed (m/s)", shrink=0.8)
    ax.set_title(f"wave speed (background {dev.config.c:g} m/s)")
    _overlay(dev, ax, legend=False)


def _overlay(dev: WaveformCavity, ax: Any, *, legend: bool, ylabel: bool = True) -> None:
    """Scatterers, the sponge's inner edge, the design region, the source and the probes on
    a map in cell coordinates; ``legend``: label them (for the figure's legend) and number
    the probes."""
    import numpy as np
    from matplotlib import patheffects
    from matplotlib.patches import Rectangle

    cfg = dev.config
    h, w = cfg.grid
    lab = (lambda s: s) if legend else (lambda s: "_nolegend_")
    solid = dev.geometry.solid.cpu().numpy()
    if solid.any():
        ax.imshow(
            np.ma.masked_where(~solid, np.ones((h, w))),
            cmap="Greys",
            vmin=0,
            vmax=1,
            extent=_extent(dev),
        )
        ax.plot([], [], "s", color="black", ls="", label=lab("rigid scatterers"))
    s = cfg.sponge_cells
    if s:
        ax.add_patch(
            Rectangle(
                (s - 0.5, s - 0.5),
                w - 2 * s,
                h - 2 * s,
                fill=False,
                ls=":",
                lw=0.8,
                ec="0.5",
                label=lab("sponge's inner edge"),
            )
        )
    if cfg.design_region:
        r0, c0, r1, c1 = cfg.design_region
        ax.add_patch(
            Rectangle(
                (c0 - 0.5, r0 - 0.5),
                c1 - c0,
                r1 - r0,
                fill=False,
                ls="--",
                lw=1.2,
                ec="tab:cyan",
                label=lab("design region"),
            )
        )
    r, col = cfg.source_point
    ax.plot([col], [r], ">", color="tab:red", ms=8, mec="white", ls="", label=lab("source"))
    probes = np.asarray(cfg.probe_points, dtype=float).reshape(-1, 2)
    ax.plot(
        probes[:, 1], probes[:, 0], "o", color="tab:green", ms=5, mec="white", ls="", label=lab("probes")
    )
    for k, (pr, pc) in enumerate(probes if legend else []):
        ax.annotate(
            str(k + 1),
            (pc, pr),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=6,
            color="white",
            fontweight="bold",
            path_effects=[patheffects.withStroke(linewidth=1.5, foreground="black")],
        )
    ax.set(
        xlim=(-0.5, w - 0.5),
        ylim=(h - 0.5, -0.5),
        xlabel="column (cells)",
        ylabel="row (cells)" if ylabel else "",
    )
