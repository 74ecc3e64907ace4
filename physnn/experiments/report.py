"""Plots of a run log: learning curves and the test confusion matrix, as PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.atomic import save_figure_atomic
from .runlog import read_run


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts of (true, predicted) label pairs, ``[n_classes, n_classes]``."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return cm


def _plot_device(fig, description: dict) -> bool:
    """Rebuild the first block's device from its stored description and let it draw itself."""
    import torch

    from ..core import make_device

    dev = make_device(description)
    dom = dev.spec.domain
    gen = torch.Generator().manual_seed(0)
    x = dom.from_unit(torch.rand(4, dev.spec.n_in, generator=gen))
    return dev.plot(fig, x)


def report(run_path: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write ``<run>_curves.png``, ``<run>_confusion.png`` and ``<run>_device.png`` (what the
    first block's device does to a few random inputs); return their paths."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    run_path = Path(run_path)
    rec = read_run(run_path)
    out_dir = Path(out_dir) if out_dir is not None else run_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    m = rec["metrics"]
    title = f"{rec.get('name', run_path.stem)} · seed {rec.get('seed', '?')}"
    if rec.get("status") != "complete":
        title += f" · {rec.get('status', 'incomplete')}"
    paths = []

    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_l, ax_a = fig.subplots(1, 2)
    epoch = m["epoch"]
    loss = np.atleast_2d(m["loss"])
    for k in range(loss.shape[1]):
        ax_l.plot(epoch, loss[:, k], label=f"block {k + 1}")
    ax_l.set(xlabel="epoch", ylabel="PhyLL loss (last inner step)", yscale="log", title="loss")
    ax_l.legend()
    for key, label in (("train_acc", "train"), ("test_acc", "test")):
        ok = ~np.isnan(m[key])
        ax_a.plot(epoch[ok], 100 * m[key][ok], "o-", label=label)
    ref = rec["reference"].get("logistic_regression_test_acc")
    if ref is not None:
        ax_a.axhline(100 * ref, color="gray", ls="--", label="logistic regression (test)")
    ax_a.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    ax_a.legend()
    fig.suptitle(title)
    paths.append(out_dir / f"{run_path.stem}_curves.png")
    save_figure_atomic(paths[-1], fig)

    if rec["devices"]:
        fig = Figure(figsize=(11, 4.2), layout="constrained")
        if _plot_device(fig, rec["devices"][0]):
            paths.append(out_dir / f"{run_path.stem}_device.png")
            save_figure_atomic(paths[-1], fig)

    pred = rec["predictions"]
    if "test_true" in pred:
        n = int(max(pred["test_true"].max(), pred["test_pred"].max())) + 1
        cm = confusion_matrix(pred["test_true"], pred["test_pred"], n)
        fig = Figure(figsize=(5.5, 5), layout="constrained")
        ax = fig.subplots()
        im = ax.imshow(cm, cmap="Blues")
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    color = "white" if cm[i, j] > cm.max() / 2 else "black"
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", color=color, fontsize=8)
        acc = np.trace(cm) / cm.sum()
        ax.set(xlabel="predicted", ylabel="true", xticks=range(n), yticks=range(n),
               title=f"test confusion matrix (accuracy {100 * acc:.2f} %)")
        fig.colorbar(im, ax=ax, shrink=0.8)
        paths.append(out_dir / f"{run_path.stem}_confusion.png")
        save_figure_atomic(paths[-1], fig)
    return paths
