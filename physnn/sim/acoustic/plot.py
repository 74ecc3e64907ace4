"""Pictures of the acoustic cavity (matplotlib's object API only, no pyplot state)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .config import resolved

if TYPE_CHECKING:
    from .cavity import AcousticCavity


def plot_layout(
    cavity: AcousticCavity, ax: Any, x: torch.Tensor | None = None, step: int | None = None
) -> Any:
    """Pressure snapshot (when ``x`` is given) with speakers, microphones, membranes, scatterers.

    Draws on the given matplotlib ``Axes`` only (the object API, no pyplot state); ``step``
    defaults to the end of the run. Returns ``ax``.
    """
    import numpy as np
    from matplotlib.patches import Rectangle

    cfg = cavity.config
    h, w = cfg.grid
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)
    if x is not None:
        step = cfg.total_steps if step is None else int(step)
        snap = cavity.field_snapshot(x, step).detach().double().cpu().numpy()
        vmax = max(float(np.abs(snap).max()), 1e-12)
        im = ax.imshow(snap, cmap="RdBu_r", vmin=-vmax, vmax=vmax, extent=extent)
        ax.figure.colorbar(im, ax=ax, label="pressure (Pa)", shrink=0.8)
        ax.set_title(f"pressure after {step} steps ({step * resolved(cfg.dt) * 1e3:.2f} ms)")
    else:
        ax.imshow(np.zeros((h, w)), cmap="Greys", vmin=0, vmax=1, extent=extent)
        ax.set_title(f"acoustic cavity, {h} x {w} cells of {cfg.dx * 100:g} cm")
    solid = np.ma.masked_where(~cavity.solid.cpu().numpy(), np.ones((h, w)))
    ax.imshow(solid, cmap="Greys", vmin=0, vmax=1, extent=extent)
    wall = Rectangle((-0.5, -0.5), w, h, fill=False, lw=3, ec="dimgray",
                     label=f"walls (R = {cfg.wall_reflection:g})")
    ax.add_patch(wall)
    if cavity.scatterer_cells:
        ax.plot([], [], "s", color="black", ls="", label="rigid scatterers")

    def mark(points: list[list[float]], style: str, color: str, label: str) -> None:
        pts = np.asarray(points, dtype=float).reshape(-1, 2)
        if len(pts):
            ax.plot(pts[:, 1], pts[:, 0], style, color=color, ms=9, mec="white", ls="", label=label)

    points = cfg.transducers
    mark(points["speakers"], ">", "tab:red", "speakers")
    mark(points["membranes"], "D", "tab:purple", "Duffing membranes")
    mark(points["microphones"], "o", "tab:green", "microphones")
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_xlabel("column (cells)")
    ax.set_ylabel("row (cells)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize="small")
    return ax
